//! Shutdown never touches freed memory or the wrong thread: the goroutines still alive when
//! the runtime stops are unwound on the M they are bound to, before it exits; a panic that
//! escapes such an unwind (or the drop of a closure that never ran) is reported and contained;
//! and plain threads that still hold handles into the runtime (a `Goroutine` to unpark, a
//! channel end) may keep using them while it stops and after.
//!
//! Each case runs in a child process (this binary again, with `CHILD` set, running only that
//! test), so that a crash or an abort is a failed test with the child's output, not a dead test
//! binary. The same children run under valgrind in `.ci/run`:
//! `GORO_SHUTDOWN_SOUND_CHILD=1 valgrind <this binary> --exact <case> --nocapture`. So they stay
//! small: a few goroutines each.

use std::cell::{Cell, RefCell};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Set in a child: the test body runs its scenario instead of starting a child.
const CHILD: &str = "GORO_SHUTDOWN_SOUND_CHILD";

/// How long a child may run before it counts as hung (each takes well under 5 s).
const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// What a child did.
struct Child {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl Child {
    fn report(&self) -> String {
        let how = match (self.status.code(), self.status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}{}", signal_name(s)),
            _ => "unknown status".into(),
        };
        format!(
            "child: {how}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        )
    }

    /// The child exited 0 and printed each of `markers` on stdout.
    fn assert_ok(&self, markers: &[&str]) {
        assert!(self.status.success(), "{}", self.report());
        for m in markers {
            assert!(self.stdout.contains(m), "{m:?} missing\n{}", self.report());
        }
    }

    fn assert_stderr(&self, needles: &[&str]) {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "{n:?} not on stderr\n{}",
                self.report()
            );
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGKILL => " (SIGKILL: hung, killed)",
        libc::SIGILL => " (SIGILL)",
        _ => "",
    }
}

/// In a child (`CHILD` set): runs `scenario` and returns `None`. Otherwise runs the test
/// `name` (the caller) in a child process and returns what it did; a child that hangs is
/// killed after `CHILD_LIMIT`. The children take turns: some cases depend on timing (a
/// sleeper holding the only P, a main goroutine not asked to yield), which a machine loaded
/// with the other children would stretch.
fn case(name: &str, scenario: fn()) -> Option<Child> {
    if std::env::var_os(CHILD).is_some() {
        scenario();
        return None;
    }
    static TURNS: Mutex<()> = Mutex::new(());
    let _turn = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove("GOMAXPROCS")
        .env_remove("GORO_DEBUG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the pipes on threads, so a chatty child cannot block on a full pipe.
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Some(Child {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    })
}

/// Whether this process runs under valgrind (which preloads its own libraries), where
/// everything is some fifty times slower.
fn under_valgrind() -> bool {
    std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("vgpreload"))
}

/// Spawned last on one P by a main goroutine that then returns: it is in `runnext`, so it runs
/// first once main returns, and holds the one P until the shutdown has asked the M to stop;
/// the goroutines spawned before it never run.
fn hold_the_only_p() {
    let d = if under_valgrind() { 3000 } else { 300 };
    goro::spawn(move || std::thread::sleep(Duration::from_millis(d)));
}

/// Makes sure the caller's next few spawns are not preemption points: `spawn` is one, and a
/// main goroutine that sysmon has asked to yield (after 10 ms on its P) would let the
/// goroutines it just spawned run at its next spawn. Under valgrind, which translates code the
/// first time it runs, a first spawn of each closure kind alone takes that long; so spawn and
/// join one of each first, then yield to start a new time slice.
fn fresh_time_slice() {
    let words = [1u64; 8];
    goro::spawn(|| ()).join().unwrap();
    goro::spawn(move || std::hint::black_box(words))
        .join()
        .unwrap();
    goro::yield_now();
}

/// After a case: the runtime starts again on this thread and works, twice.
fn restarts_twice() -> [u32; 2] {
    [0, 1].map(|_| goro::run(|| goro::spawn(|| 41u32 + 1).join().unwrap()))
}

// ---- 5. Plain threads using runtime handles while it shuts down ----

/// Rounds of the racy cases 5a and 5b: each is one runtime stopped under a plain thread's
/// feet, and the race is lost only now and then.
fn rounds() -> usize {
    if under_valgrind() {
        2
    } else {
        10
    }
}

/// A: parked in `join` of B, which parks forever. A plain thread unparks A in a tight loop
/// while the runtime stops, and for a while after, then drops its handle.
fn unpark_from_a_plain_thread_during_shutdown() {
    let mut unparks = 0;
    for round in 0..rounds() {
        unparks += unpark_round();
        assert_eq!(
            goro::num_goroutine(),
            0,
            "round {round}: goroutines left after shutdown"
        );
    }
    let r = restarts_twice();
    println!("case5a: ok ({unparks} unparks) restarts={r:?}");
}

/// One round of case 5a; returns how many unparks the plain thread made.
fn unpark_round() -> u64 {
    let (tx, rx) = mpsc::channel::<goro::Goroutine>();
    let unparks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let unparker = {
        let (unparks, stop) = (unparks.clone(), stop.clone());
        std::thread::spawn(move || {
            let a = rx.recv().unwrap();
            // A tight loop, but one that lets other threads in now and then: under valgrind,
            // which runs one thread at a time, a pure spin would starve the shutdown.
            let unpark = || {
                a.unpark();
                if unparks.fetch_add(1, Ordering::Relaxed) % 16 == 0 {
                    std::thread::yield_now();
                }
            };
            while !stop.load(Ordering::Acquire) {
                unpark();
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(50) {
                unpark();
            }
            drop(a);
        })
    };
    let u2 = unparks.clone();
    goro::Builder::new().max_procs(2).run(move || {
        let b = goro::spawn(|| loop {
            goro::park();
        });
        drop(goro::spawn(move || {
            tx.send(goro::current()).unwrap();
            // Woken over and over by the plain thread; B never ends.
            let _ = b.join();
        }));
        // Return (and stop the runtime) once the plain thread is unparking A.
        while u2.load(Ordering::Relaxed) < 1000 {
            goro::yield_now();
        }
    });
    stop.store(true, Ordering::Release);
    unparker.join().unwrap();
    unparks.load(Ordering::Relaxed)
}

#[test]
fn case5a_plain_thread_unparks_a_goroutine_while_the_runtime_stops() {
    if let Some(c) = case(
        "case5a_plain_thread_unparks_a_goroutine_while_the_runtime_stops",
        unpark_from_a_plain_thread_during_shutdown,
    ) {
        c.assert_ok(&["case5a: ok", "restarts=[42, 42]"]);
    }
}

/// Goroutines parked in `recv` on rendezvous channels (the one waiter of each, linked from
/// the channel), whose senders a plain thread holds: it sends to one in a tight loop from
/// just before the shutdown until after `run` returned, then does a blocking send (refused:
/// the unwind dropped the receiver) and drops it; the other it drops during the shutdown.
fn channel_waiter_linked_at_shutdown() {
    let mut sent = 0;
    for round in 0..rounds() {
        sent += channel_round();
        assert_eq!(
            goro::num_goroutine(),
            0,
            "round {round}: goroutines left after shutdown"
        );
    }
    let r = restarts_twice();
    println!("case5b: ok ({sent} sent) restarts={r:?}");
}

/// One round of case 5b; returns how many values the plain thread's `try_send`s delivered.
fn channel_round() -> u64 {
    let (tx, rx) = goro::chan::bounded::<u64>(0);
    let (tx2, rx2) = goro::chan::bounded::<u64>(0);
    let (began_tx, began_rx) = mpsc::channel::<()>();
    let returned = Arc::new(AtomicBool::new(false));
    let r2 = returned.clone();
    let sender = std::thread::spawn(move || {
        began_rx.recv().unwrap();
        let t = Instant::now();
        let mut sent = 0u64;
        let mut tx2 = Some(tx2);
        let mut after = None;
        while after.is_none_or(|a: Instant| a.elapsed() < Duration::from_millis(20)) {
            if tx.try_send(7).is_ok() {
                sent += 1;
            }
            if t.elapsed() > Duration::from_micros(300) {
                drop(tx2.take());
            }
            if after.is_none() && r2.load(Ordering::SeqCst) {
                after = Some(Instant::now());
            }
        }
        let refused = tx.send(8).is_err();
        drop(tx);
        (sent, refused)
    });
    goro::Builder::new().max_procs(2).run(move || {
        let parked = Arc::new(AtomicUsize::new(0));
        for rx in [rx, rx2] {
            let parked = parked.clone();
            drop(goro::spawn(move || {
                parked.fetch_add(1, Ordering::SeqCst);
                while rx.recv().is_ok() {}
                // Closed: wait here for the unwind.
                loop {
                    goro::park();
                }
            }));
        }
        while parked.load(Ordering::SeqCst) < 2 {
            goro::yield_now();
        }
        goro::time::sleep(Duration::from_millis(5)); // both in `recv` by now
        began_tx.send(()).unwrap();
    });
    returned.store(true, Ordering::SeqCst);
    let (sent, refused) = sender.join().unwrap();
    assert!(refused, "a send after the shutdown was accepted");
    sent
}

#[test]
fn case5b_plain_thread_sends_to_a_waiter_linked_at_shutdown() {
    if let Some(c) = case(
        "case5b_plain_thread_sends_to_a_waiter_linked_at_shutdown",
        channel_waiter_linked_at_shutdown,
    ) {
        c.assert_ok(&["case5b: ok", "restarts=[42, 42]"]);
    }
}

// ---- 6. Destructors of unwound goroutines run on their own thread ----

thread_local! {
    /// The thread's name, recorded at its first use.
    static THREAD_NAME: RefCell<String> = RefCell::new(
        std::thread::current().name().unwrap_or("<unnamed>").to_owned()
    );
}

/// What each `Probe` found when it was dropped.
static PROBES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Made in a goroutine; its `Drop` checks it runs on the same thread, whose TLS is alive.
struct Probe {
    made_on: ThreadId,
    made_tls: String,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            made_on: std::thread::current().id(),
            made_tls: THREAD_NAME.with(|n| n.borrow().clone()),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let same = std::thread::current().id() == self.made_on;
        let tls = THREAD_NAME
            .try_with(|n| n.borrow().clone())
            .unwrap_or_else(|_| "<destroyed>".into());
        let tls_ok = tls == self.made_tls;
        let line = format!(
            "same_thread={same} tls_ok={tls_ok} (made on {:?}, dropped on {:?}, tls {tls:?})",
            self.made_tls,
            std::thread::current().name().unwrap_or("<unnamed>"),
        );
        PROBES.lock().unwrap().push(line);
    }
}

const PROBES_N: usize = 4;

fn destructors_run_on_their_thread() {
    goro::Builder::new()
        .max_procs(2)
        .thread_name("sound")
        .run(|| {
            let parked = Arc::new(AtomicUsize::new(0));
            for _ in 0..PROBES_N {
                let parked = parked.clone();
                drop(goro::spawn(move || {
                    let _p = Probe::new();
                    parked.fetch_add(1, Ordering::SeqCst);
                    loop {
                        goro::park();
                    }
                }));
            }
            while parked.load(Ordering::SeqCst) < PROBES_N {
                goro::yield_now();
            }
        });
    println!(); // after the harness's "test ... " prefix
    let probes = std::mem::take(&mut *PROBES.lock().unwrap());
    for l in &probes {
        println!("case6: {l}");
    }
    let r = restarts_twice();
    println!("case6: done restarts={r:?}");
    // Checked here too (not only by the parent), so a run of this child alone, as under
    // valgrind in `.ci/run`, fails as well.
    assert_eq!(probes.len(), PROBES_N, "probes dropped");
    assert!(
        probes
            .iter()
            .all(|l| l.contains("same_thread=true") && l.contains("tls_ok=true")),
        "a destructor ran on another thread than its goroutine's, or without its TLS"
    );
}

#[test]
fn case6_unwound_destructors_run_on_the_goroutines_thread_with_its_tls() {
    if let Some(c) = case(
        "case6_unwound_destructors_run_on_the_goroutines_thread_with_its_tls",
        destructors_run_on_their_thread,
    ) {
        c.assert_ok(&["case6: done restarts=[42, 42]"]);
        let lines: Vec<&str> = c
            .stdout
            .lines()
            .filter(|l| l.starts_with("case6: same_thread="))
            .collect();
        assert_eq!(lines.len(), PROBES_N, "probes dropped\n{}", c.report());
        for l in lines {
            assert!(
                l.contains("same_thread=true") && l.contains("tls_ok=true"),
                "{l}\n{}",
                c.report()
            );
        }
    }
}

// ---- 7. Panics escaping a forced unwind or a closure's drop ----

/// Counts its drops, then panics.
struct DropBomb(&'static AtomicUsize);

impl Drop for DropBomb {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("case7a: closure drop bomb");
    }
}

/// Goroutines of cases 7a and 8 that ran after all (so did not test what they are for).
static RAN: AtomicUsize = AtomicUsize::new(0);

/// On the only P, from a fresh time slice: two goroutines that never run (`hold_the_only_p`),
/// each capturing a value from `make`: one closure small enough to wait inline in its
/// descriptor, one boxed (the value and 64 bytes more).
fn spawn_two_that_never_run<V: Send + 'static>(make: impl Fn() -> V) {
    fresh_time_slice();
    let small = make();
    drop(goro::spawn(move || {
        RAN.fetch_add(1, Ordering::SeqCst);
        drop(small)
    }));
    let big = (make(), [7u64; 8]);
    drop(goro::spawn(move || {
        RAN.fetch_add(1, Ordering::SeqCst);
        drop(big)
    }));
    hold_the_only_p();
}

/// (a) On one P, goroutines that never run capture a value whose drop panics: one inline
/// closure, one boxed.
fn panic_in_a_never_started_closures_drop() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    goro::Builder::new()
        .max_procs(1)
        .run(|| spawn_two_that_never_run(|| DropBomb(&DROPS)));
    let r = restarts_twice();
    println!(
        "case7a: ok drops={} ran={} restarts={r:?}",
        DROPS.load(Ordering::SeqCst),
        RAN.load(Ordering::SeqCst)
    );
}

#[test]
fn case7a_panicking_drop_of_a_never_started_closure_is_contained() {
    if let Some(c) = case(
        "case7a_panicking_drop_of_a_never_started_closure_is_contained",
        panic_in_a_never_started_closures_drop,
    ) {
        c.assert_ok(&["case7a: ok drops=2 ran=0 restarts=[42, 42]"]);
        c.assert_stderr(&["panicked", "case7a: closure drop bomb"]);
    }
}

/// A panic payload whose own drop panics again.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("case7b: the payload's drop panics again");
    }
}

/// A goroutine-local whose destructor panics with a `Bomb`.
struct LocalBomb(&'static AtomicUsize);

impl Drop for LocalBomb {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::panic::panic_any(Bomb);
    }
}

static LOCAL_BOMBS: AtomicUsize = AtomicUsize::new(0);

goro::goroutine_local! {
    static BOMB_LOCAL: LocalBomb = LocalBomb(&LOCAL_BOMBS);
}

/// (b) The goroutine-local's destructor panics with a payload whose drop panics: once as a
/// goroutine returns (detached, so the runtime disposes of the panic), once at shutdown (the
/// goroutine parks forever and is unwound).
fn panic_in_a_goroutine_locals_drop() {
    goro::Builder::new().max_procs(2).run(|| {
        drop(goro::spawn(|| BOMB_LOCAL.with(|_| ())));
        let parked = Arc::new(AtomicBool::new(false));
        let p2 = parked.clone();
        drop(goro::spawn(move || {
            BOMB_LOCAL.with(|_| ());
            p2.store(true, Ordering::SeqCst);
            loop {
                goro::park();
            }
        }));
        let t = Instant::now();
        while !parked.load(Ordering::SeqCst) || LOCAL_BOMBS.load(Ordering::SeqCst) < 1 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "goroutines did not run"
            );
            goro::yield_now();
        }
        goro::time::sleep(Duration::from_millis(20)); // the first one's panic is handled
    });
    let r = restarts_twice();
    println!(
        "case7b: ok drops={} restarts={r:?}",
        LOCAL_BOMBS.load(Ordering::SeqCst)
    );
}

#[test]
fn case7b_panicking_payload_of_a_goroutine_locals_drop_is_contained() {
    if let Some(c) = case(
        "case7b_panicking_payload_of_a_goroutine_locals_drop_is_contained",
        panic_in_a_goroutine_locals_drop,
    ) {
        c.assert_ok(&["case7b: ok drops=2 restarts=[42, 42]"]);
        c.assert_stderr(&["panicked", "case7b: the payload's drop panics again"]);
    }
}

// ---- 8. A never-started closure whose drop uses a goroutine-local ----

goro::goroutine_local! {
    static TOUCHED: Cell<u32> = Cell::new(0);
}

/// Counts its drops, and those made in a goroutine context; uses `TOUCHED` in its drop.
struct TouchesLocal(&'static AtomicUsize, &'static AtomicUsize);

impl Drop for TouchesLocal {
    fn drop(&mut self) {
        TOUCHED.with(|l| l.set(l.get() + 1));
        assert!(TOUCHED.with(|l| l.get()) >= 1);
        if goro::try_current().is_some() {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn never_started_closure_drop_uses_a_goroutine_local() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    static IN_GOROUTINE: AtomicUsize = AtomicUsize::new(0);
    goro::Builder::new()
        .max_procs(1)
        .run(|| spawn_two_that_never_run(|| TouchesLocal(&DROPS, &IN_GOROUTINE)));
    let r = restarts_twice();
    println!(
        "case8: ok drops={} in_goroutine={} ran={} restarts={r:?}",
        DROPS.load(Ordering::SeqCst),
        IN_GOROUTINE.load(Ordering::SeqCst),
        RAN.load(Ordering::SeqCst)
    );
}

#[test]
fn case8_never_started_closure_drop_uses_a_goroutine_local() {
    if let Some(c) = case(
        "case8_never_started_closure_drop_uses_a_goroutine_local",
        never_started_closure_drop_uses_a_goroutine_local,
    ) {
        c.assert_ok(&["case8: ok drops=2 in_goroutine=2 ran=0 restarts=[42, 42]"]);
    }
}

// ---- 9. A second runtime started while the first is still shutting down ----

const FIRST_N: usize = 6;
const SECOND_N: usize = 6;
static FIRST: [AtomicU8; FIRST_N] = [const { AtomicU8::new(0) }; FIRST_N];
static SECOND: [AtomicU8; SECOND_N] = [const { AtomicU8::new(0) }; SECOND_N];
/// Set by the first destructor of the first runtime's shutdown.
static FIRST_UNWINDING: AtomicBool = AtomicBool::new(false);

/// Counts its drop in its table; the first runtime's take a while (sleep, yield).
struct Unwound {
    table: &'static [AtomicU8],
    index: usize,
    slow: bool,
}

impl Drop for Unwound {
    fn drop(&mut self) {
        self.table[self.index].fetch_add(1, Ordering::SeqCst);
        if self.slow {
            FIRST_UNWINDING.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            goro::yield_now();
        }
    }
}

/// Spawns `n` goroutines that park forever holding an `Unwound`, and waits until all have.
fn park_holding(table: &'static [AtomicU8], slow: bool) {
    let parked = Arc::new(AtomicUsize::new(0));
    for index in 0..table.len() {
        let parked = parked.clone();
        drop(goro::spawn(move || {
            let _u = Unwound { table, index, slow };
            parked.fetch_add(1, Ordering::SeqCst);
            loop {
                goro::park();
            }
        }));
    }
    while parked.load(Ordering::SeqCst) < table.len() {
        goro::yield_now();
    }
}

fn second_runtime_during_the_first_ones_shutdown() {
    let second = std::thread::spawn(|| {
        while !FIRST_UNWINDING.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_micros(100));
        }
        goro::Builder::new().max_procs(2).run(|| {
            park_holding(&SECOND, false);
            let hs: Vec<_> = (0..10u64).map(|i| goro::spawn(move || i * 2)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
    });
    goro::Builder::new()
        .max_procs(2)
        .run(|| park_holding(&FIRST, true));
    let sum = second.join().expect("the second runtime failed");
    let counts = |t: &[AtomicU8]| {
        t.iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    };
    println!(
        "case9: first={:?} second={:?} sum={sum}",
        counts(&FIRST),
        counts(&SECOND)
    );
    let r = restarts_twice();
    println!("case9: done restarts={r:?}");
}

#[test]
fn case9_second_runtime_started_while_the_first_shuts_down() {
    if let Some(c) = case(
        "case9_second_runtime_started_while_the_first_shuts_down",
        second_runtime_during_the_first_ones_shutdown,
    ) {
        c.assert_ok(&[
            "case9: first=[1, 1, 1, 1, 1, 1] second=[1, 1, 1, 1, 1, 1] sum=90",
            "case9: done restarts=[42, 42]",
        ]);
    }
}
