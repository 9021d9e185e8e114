//! The G/M/P scheduler: goroutines across 1-8 processors, `blocking`, `set_max_procs`,
//! `GOMAXPROCS`, schedtrace, and the thread-local rule under forced migration.
//!
//! `run` joins a runtime that is already running, settings unchanged, so the tests in this
//! binary take turns (`serial`) to get the processor count they ask for.

use std::cell::Cell;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod common;

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `GOMAXPROCS` overrides the counts these tests ask for.
fn env_overrides() -> bool {
    std::env::var_os("GOMAXPROCS").is_some()
}

struct Tree {
    ran: Vec<AtomicU8>,
    next: AtomicUsize,
    seed: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One node: marks itself run, yields a random number of times, spawns up to three children
/// from the shared id budget (joining them, nested), yields again; returns its subtree's size.
fn node(t: Arc<Tree>, id: usize) -> usize {
    t.ran[id].fetch_add(1, Ordering::Relaxed);
    let r = mix(t.seed ^ id as u64);
    for _ in 0..r % 4 {
        goro::yield_now();
    }
    let mut kids = Vec::new();
    for k in 0..(r >> 8) % 4 {
        let child = t.next.fetch_add(1, Ordering::Relaxed);
        if child >= t.ran.len() {
            break;
        }
        let t2 = t.clone();
        kids.push(goro::spawn(move || node(t2, child)));
        if (r >> (16 + k)) & 1 == 1 {
            goro::yield_now();
        }
    }
    let mut size = 1;
    for h in kids {
        size += h.join().expect("node panicked");
    }
    size
}

/// `n` goroutines in random trees on `procs` processors: each runs exactly once and every
/// one is counted by its parent.
fn stress(procs: usize, n: usize, seed: u64) {
    let t = Arc::new(Tree {
        ran: (0..n).map(|_| AtomicU8::new(0)).collect(),
        next: AtomicUsize::new(0),
        seed,
    });
    let t2 = t.clone();
    let total = goro::Builder::new().max_procs(procs).run(move || {
        if !env_overrides() {
            assert_eq!(goro::runtime::max_procs(), procs);
        }
        let mut total = 0;
        let mut roots = Vec::new();
        loop {
            let id = t2.next.fetch_add(1, Ordering::Relaxed);
            if id >= n {
                break;
            }
            let t3 = t2.clone();
            roots.push(goro::spawn(move || node(t3, id)));
            if roots.len() == 256 {
                total += roots.drain(..).map(|h| h.join().unwrap()).sum::<usize>();
            }
        }
        total + roots.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    });
    assert_eq!(
        total, n,
        "procs={procs} seed={seed}: goroutines lost or counted twice"
    );
    for (id, r) in t.ran.iter().enumerate() {
        let r = r.load(Ordering::Relaxed);
        assert_eq!(
            r, 1,
            "procs={procs} seed={seed}: goroutine {id} ran {r} times"
        );
    }
}

/// `stress` on 1, 2, 4 and 8 processors with each seed.
fn stress_all(n: usize, seeds: [u64; 3]) {
    let _s = serial();
    for procs in [1, 2, 4, 8] {
        for seed in seeds {
            stress(procs, n, seed);
        }
    }
}

#[test]
fn stress_random_yields_and_nested_spawns_on_1_2_4_8_procs() {
    stress_all(20_000, [1, 2, 3]);
}

/// The full size: 1M goroutines per run (`cargo test --release -- --ignored`).
#[test]
#[ignore]
fn stress_one_million_on_1_2_4_8_procs() {
    stress_all(1_000_000, [11, 12, 13]);
}

#[test]
fn yielding_goroutine_does_not_starve_overflowed_goroutines() {
    // On one P, 5,000 spawns overflow the P's 256-slot ring into the global queue. A goroutine
    // that yields in a loop must not keep the P to itself: like Go's Gosched it goes behind the
    // global queue. (When it went back into the ring, the P reached the global queue only every
    // 61st schedule: ~300,000 yields here.) With more Ps the count means nothing: a yield on a
    // P with an empty queue returns at once while another P runs the goroutines.
    let _s = serial();
    goro::Builder::new().max_procs(1).run(|| {
        let n = 5_000;
        let ran = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let r = ran.clone();
                goro::spawn(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let mut yields = 0;
        while ran.load(Ordering::SeqCst) < n {
            goro::yield_now();
            yields += 1;
        }
        assert!(yields < 2_000, "{yields} yields before {n} goroutines ran");
        for h in hs {
            h.join().unwrap();
        }
    });
}

/// Go's `runnext` inherits the time slice: two goroutines handing off to each other on one P
/// are one slice, asked to yield after 10 ms, so the rest of the queue still runs.
#[test]
fn handing_off_pair_does_not_starve_the_queue_on_one_proc() {
    let _s = serial();
    let (rounds, waited) = common::with_timeout(
        Duration::from_secs(60),
        "a handing-off pair starved the rest of the queue",
        || {
            goro::Builder::new().max_procs(1).run(|| {
                let stop = Arc::new(AtomicBool::new(false));
                // The pair: park/unpark ping-pong until told to stop (each wakes the other
                // into `runnext`, so without the slice rule the ring behind them never runs).
                let s2 = stop.clone();
                let pair = goro::spawn(move || {
                    let turn = Arc::new(AtomicUsize::new(0));
                    let me = goro::current();
                    let (t2, s3) = (turn.clone(), s2.clone());
                    let waiting = move |t: &AtomicUsize, want: usize, s: &AtomicBool| {
                        t.load(Ordering::Acquire) != want && !s.load(Ordering::Relaxed)
                    };
                    let peer = goro::spawn(move || {
                        let mut i = 0;
                        while !s3.load(Ordering::Relaxed) {
                            while waiting(&t2, 2 * i + 1, &s3) {
                                goro::park();
                            }
                            t2.store(2 * i + 2, Ordering::Release);
                            me.unpark();
                            i += 1;
                        }
                        me.unpark();
                    });
                    let pg = peer.goroutine();
                    let mut i = 0;
                    while !s2.load(Ordering::Relaxed) {
                        turn.store(2 * i + 1, Ordering::Release);
                        pg.unpark();
                        while waiting(&turn, 2 * i + 2, &s2) {
                            goro::park();
                        }
                        i += 1;
                    }
                    pg.unpark();
                    peer.join().unwrap();
                    i
                });
                let t = Instant::now();
                goro::yield_now(); // behind the pair: runs only if the queue is not starved
                let waited = t.elapsed();
                stop.store(true, Ordering::Relaxed);
                (pair.join().unwrap(), waited)
            })
        },
    );
    assert!(rounds > 0);
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
}

/// A goroutine spinning without preemption points keeps its P, but the goroutines queued
/// behind it on that P (ring and `runnext`) are taken by the other P.
#[test]
fn goroutines_queued_behind_a_hog_are_stolen() {
    let _s = serial();
    if env_overrides() {
        return;
    }
    let waited = common::with_timeout(
        Duration::from_secs(60),
        "goroutines behind a spinning goroutine were never run",
        || {
            goro::Builder::new().max_procs(2).run(|| {
                let done = Arc::new(AtomicUsize::new(0));
                let d2 = done.clone();
                let hog = goro::spawn(move || {
                    // Queue 300 goroutines on this P (more than the ring holds: some overflow
                    // to the global queue, the last one sits in `runnext`), then spin without
                    // ever reaching a preemption point until they have all run elsewhere.
                    for _ in 0..300 {
                        let d3 = d2.clone();
                        drop(goro::spawn(move || {
                            d3.fetch_add(1, Ordering::SeqCst);
                        }));
                    }
                    let t = Instant::now();
                    while d2.load(Ordering::SeqCst) < 300 {
                        assert!(
                            t.elapsed() < Duration::from_secs(30),
                            "queued goroutines starved"
                        );
                        std::hint::spin_loop();
                    }
                    t.elapsed()
                });
                hog.join().unwrap()
            })
        },
    );
    assert!(waited < Duration::from_secs(30));
}

#[test]
fn blocking_call_does_not_delay_other_goroutines() {
    let _s = serial();
    // One P: without the hand-off, the goroutine below would wait for the whole sleep.
    let (max_gap, slept) = goro::Builder::new().max_procs(1).run(|| {
        let entered = Arc::new(AtomicBool::new(false));
        let e2 = entered.clone();
        let sleeper = goro::spawn(move || {
            goro::blocking(|| {
                e2.store(true, Ordering::Release);
                let t = Instant::now();
                std::thread::sleep(Duration::from_millis(200));
                t.elapsed()
            })
        });
        while !entered.load(Ordering::Acquire) {
            goro::yield_now();
        }
        // Keep running (and spawning) while the sleeper's M is blocked; record the longest
        // time this goroutine was kept off a P.
        let start = Instant::now();
        let mut last = start;
        let mut max_gap = Duration::ZERO;
        while start.elapsed() < Duration::from_millis(150) {
            goro::spawn(|| 1).join().unwrap();
            goro::yield_now();
            let now = Instant::now();
            max_gap = max_gap.max(now - last);
            last = now;
        }
        (max_gap, sleeper.join().unwrap())
    });
    assert!(slept >= Duration::from_millis(200));
    // sysmon retakes the P within about a tick (20 µs); 25 ms leaves room for a loaded
    // machine and is still far from the 200 ms a stall would show.
    assert!(
        max_gap < Duration::from_millis(25),
        "a goroutine waited {max_gap:?} behind a blocking call"
    );
}

#[test]
fn blocking_returns_values_panics_and_runs_plain_thread_code() {
    let _s = serial();
    goro::Builder::new().max_procs(2).run(|| {
        // A value, from code that blocks the thread.
        let v = goro::blocking(|| {
            std::thread::sleep(Duration::from_millis(5));
            42
        });
        assert_eq!(v, 42);
        // Inside, the closure is plain-thread code: no current goroutine, std parking works.
        assert!(goro::blocking(goro::try_current).is_none());
        let me = goro::current();
        goro::blocking(|| {
            let h = goro::spawn(|| 7);
            assert_eq!(h.join().unwrap(), 7); // joins by blocking the thread
        });
        assert_eq!(goro::current(), me);
        // A panic unwinds through the hand-off back into the goroutine.
        let h = goro::spawn(|| goro::blocking(|| panic!("inside blocking")));
        let err = h.join().unwrap_err();
        assert_eq!(err.message(), Some("inside blocking"));
        // Many goroutines blocking at once on few Ps all complete (extra Ms start).
        let hs: Vec<_> = (0..32)
            .map(|i| {
                goro::spawn(move || {
                    goro::blocking(|| std::thread::sleep(Duration::from_millis(20)));
                    i
                })
            })
            .collect();
        let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, (0..32).sum());
    });
    // From a plain thread it is just a call.
    assert_eq!(goro::blocking(|| 5), 5);
}

#[test]
fn set_max_procs_changes_the_count_at_run_time() {
    let _s = serial();
    if env_overrides() {
        return;
    }
    goro::Builder::new().max_procs(2).run(|| {
        assert_eq!(goro::runtime::set_max_procs(1), 2);
        assert_eq!(goro::runtime::max_procs(), 1);
        let hs: Vec<_> = (0..1000).map(|i| goro::spawn(move || i)).collect();
        assert_eq!(
            hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>(),
            499_500
        );
        assert_eq!(goro::runtime::set_max_procs(4), 1);
        let hs: Vec<_> = (0..1000)
            .map(|i| {
                goro::spawn(move || {
                    goro::yield_now();
                    i
                })
            })
            .collect();
        assert_eq!(
            hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>(),
            499_500
        );
        assert_eq!(goro::runtime::set_max_procs(0), 4, "clamped to 1");
        assert_eq!(goro::runtime::max_procs(), 1);
    });
    // No runtime: nothing to change.
    assert_eq!(goro::runtime::max_procs(), 0);
}

#[test]
fn runtime_starts_and_stops_repeatedly_with_different_counts() {
    let _s = serial();
    for round in 0..6 {
        let procs = 1 + round % 3;
        let got = goro::Builder::new()
            .max_procs(procs)
            .thread_name(format!("round{round}"))
            .run(move || {
                let hs: Vec<_> = (0..200).map(|i| goro::spawn(move || i * 2)).collect();
                let s: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
                (s, goro::runtime::max_procs())
            });
        assert_eq!(got.0, 39_800);
        if !env_overrides() {
            assert_eq!(got.1, procs);
        }
    }
}

thread_local! {
    static SLOT: Cell<u64> = const { Cell::new(0) };
}

/// Parks until the waker thread (a plain thread, so the wake-up goes through the global
/// queue to whichever M takes it first) unparks us.
fn park_via(waker: &mpsc::Sender<(goro::Goroutine, Arc<AtomicBool>)>) {
    let flag = Arc::new(AtomicBool::new(false));
    waker.send((goro::current(), flag.clone())).unwrap();
    while !flag.load(Ordering::Acquire) {
        goro::park();
    }
}

/// Goroutines that hold a reference into a thread-local across parks, beside goroutines that
/// do not, on 2 Ps, woken from a plain thread so wake-ups land on either M. Returns how many
/// times one of the latter resumed on another thread than it parked on.
fn tls_reference_across_parks(builder: goro::Builder) -> usize {
    let (tx, rx) = mpsc::channel::<(goro::Goroutine, Arc<AtomicBool>)>();
    let waker = std::thread::spawn(move || {
        for (g, flag) in rx {
            flag.store(true, Ordering::Release);
            g.unpark();
        }
    });
    let moved = builder.max_procs(2).run(move || {
        const ROUNDS: u64 = 200;
        let moved = Arc::new(AtomicUsize::new(0));
        let mut hs = Vec::new();
        for k in 0..4u64 {
            let tx1 = tx.clone();
            hs.push(goro::spawn(move || {
                SLOT.with(|slot| {
                    let tid = std::thread::current().id();
                    for r in 0..ROUNDS {
                        slot.set(slot.get() + k + r);
                        park_via(&tx1);
                        assert_eq!(
                            std::thread::current().id(),
                            tid,
                            "migrated holding a TLS reference"
                        );
                        // (Other goroutines on this thread share the slot; what must hold is
                        // that `slot` is still this thread's.)
                        let here = SLOT.with(|s| s as *const Cell<u64>);
                        assert_eq!(here, slot as *const Cell<u64>);
                    }
                });
            }));
            let (tx, moved) = (tx.clone(), moved.clone());
            hs.push(goro::spawn(move || {
                for _ in 0..ROUNDS {
                    let tid = std::thread::current().id();
                    park_via(&tx);
                    if std::thread::current().id() != tid {
                        moved.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        // Keep both Ms busy part of the time so wake-ups land on either.
        for _ in 0..2 {
            hs.push(goro::spawn(|| {
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(50) {
                    goro::yield_now();
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        moved.load(Ordering::Relaxed)
    });
    waker.join().unwrap();
    moved
}

/// The README's rule: a goroutine runs on the thread it first ran on until it ends, whatever
/// it holds (the goroutines holding a thread-local reference assert it themselves).
#[test]
fn started_goroutines_never_change_thread() {
    let _s = serial();
    let before = goro::runtime::sched_stats();
    let moved = tls_reference_across_parks(goro::Builder::new());
    let after = goro::runtime::sched_stats();
    assert_eq!(moved, 0, "a started goroutine changed thread");
    assert_eq!(after.migrations, before.migrations);
}

/// Under `allow_migration` the scan is the net: a goroutine holding a reference into a
/// thread-local across a park resumes on the same OS thread, even when it would otherwise
/// migrate; one that does not hold one migrates freely.
#[test]
fn with_migration_a_thread_local_reference_pins_its_goroutine() {
    let _s = serial();
    let before = goro::runtime::sched_stats();
    // Whether a resume lands on the other M is up to the scheduling: under load one round can
    // run on one thread throughout, so up to five rounds, until something migrated.
    let mut moved = 0;
    for _ in 0..5 {
        // SAFETY: the goroutines hold thread-bound state only as a reference into a
        // thread-local on the stack, which the scan sees (that is what is tested).
        moved += tls_reference_across_parks(unsafe { goro::Builder::new().allow_migration() });
        if moved > 0 {
            break;
        }
    }
    let after = goro::runtime::sched_stats();
    if env_overrides() {
        return;
    }
    assert!(
        moved > 0,
        "goroutines without TLS references never migrated"
    );
    assert!(
        after.pinned > before.pinned,
        "no resume was ever kept on its thread"
    );
    assert!(after.migrations > before.migrations);
}

#[test]
fn goroutines_without_tls_references_are_rarely_pinned() {
    let _s = serial();
    if env_overrides() {
        return;
    }
    let before = goro::runtime::sched_stats();
    // SAFETY: these goroutines hold no thread-bound state.
    unsafe { goro::Builder::new().allow_migration() }
        .max_procs(4)
        .run(|| {
            let hs: Vec<_> = (0..2000)
                .map(|i| {
                    goro::spawn(move || {
                        let mut x = i as u64;
                        for _ in 0..20 {
                            x = std::hint::black_box(x.wrapping_mul(3) + 1);
                            goro::yield_now();
                        }
                        x
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
    let after = goro::runtime::sched_stats();
    let moved = after.migrations - before.migrations;
    let pinned = after.pinned - before.pinned;
    // A stale word that looks like a TLS address pins conservatively; it must stay rare, or
    // the scan would be serialising the scheduler.
    assert!(
        pinned * 20 <= moved + 20,
        "{pinned} pinned vs {moved} migrations"
    );
}

const CHILD: &str = "GORO_SCHED_TEST_CHILD";

/// Runs this test binary again as a child with `env`, running the named child body.
fn run_child(mode: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env_remove("GOMAXPROCS")
        .env_remove("GORO_DEBUG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Not a test on its own: the body a child process runs (does nothing without `CHILD`).
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    match mode.as_str() {
        "procs" => {
            let n = goro::Builder::new()
                .max_procs(5)
                .run(goro::runtime::max_procs);
            println!("procs={n}");
        }
        "trace" => {
            goro::Builder::new().max_procs(2).run(|| {
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(60) {
                    let hs: Vec<_> = (0..100).map(|_| goro::spawn(goro::yield_now)).collect();
                    hs.into_iter().for_each(|h| h.join().unwrap());
                }
            });
        }
        _ => unreachable!(),
    }
}

#[test]
fn gomaxprocs_env_overrides_the_builder_and_bad_values_are_reported() {
    let out = run_child("procs", &[("GOMAXPROCS", "3")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("procs=3"));
    let out = run_child("procs", &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("procs=5"));
    let out = run_child("procs", &[("GOMAXPROCS", "lots")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("procs=5"));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("goro: ignoring GOMAXPROCS=\"lots\": not a positive integer"));
}

#[test]
fn schedtrace_prints_go_format_lines() {
    let out = run_child("trace", &[("GORO_DEBUG", "schedtrace=10")]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("SCHED ")).collect();
    assert!(
        lines.len() >= 2,
        "expected SCHED lines every 10 ms, got:\n{err}"
    );
    let l = lines[0];
    for field in [
        "ms: gomaxprocs=2 ",
        " idleprocs=",
        " threads=",
        " spinningthreads=",
        " idlethreads=",
        " runqueue=",
    ] {
        assert!(l.contains(field), "{field:?} missing from {l:?}");
    }
    // Per-P queue lengths, one per P, in brackets.
    let q = &l[l.find('[').unwrap() + 1..l.find(']').unwrap()];
    assert_eq!(q.split(' ').count(), 2, "{l}");
}
