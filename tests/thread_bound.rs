//! Thread-bound state never crosses threads: a goroutine runs on one M (OS thread) from its
//! first run to its end, so whatever it took from its thread (an `Rc` cloned out of a
//! `thread_local!`, a reference into one kept on the heap, a held `ReentrantLock` guard, a
//! `std::thread::scope` that parks the thread that opened it) is only ever used on that thread.
//! Work stealing still spreads goroutines that have not started yet, and
//! `Builder::allow_migration` brings back moves of started goroutines.
//!
//! Each test switches often (yields, sleeps, timer channels) on 2 and 4 Ps, where goroutines
//! that were free to move would move, and checks values that a move would break: the thread
//! id at every use, counts that a data race would lose, and that a scope ends at all. The checks
//! are plain `assert!`s on values, so they hold in release builds too.
//!
//! `run` joins a runtime that is already running, so the tests take turns (`serial`), and each
//! runtime runs under a watchdog (`watchdog`): a hang ends the whole process with a message,
//! since the hung runtime would otherwise be joined by the next test.

use std::cell::Cell;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long one runtime may take before the test counts it as hung. Every runtime here
/// finishes in well under a second when nothing is wrong.
const LIMIT: Duration = Duration::from_secs(30);

/// Runs `f` (which starts and stops a runtime) on its own thread and returns its value; a panic
/// in it is resumed here. If it gives nothing within `LIMIT`, prints `what` and exits the
/// process: the hung runtime cannot be stopped, and the next test's `run` would join it
/// instead of starting its own. Its threads die with the process.
fn watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(LIMIT) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => {
            // Straight to fd 2: `eprintln!` is captured by the test harness (and lost at
            // `exit`), and `std::io::stderr()` may be locked by the hung goroutines.
            let msg = format!("thread_bound: {what}: hung (no result within {LIMIT:?}); exiting\n");
            // SAFETY: writes `msg`'s bytes, which outlive the call, to the process's stderr.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            std::process::exit(101);
        }
    }
}

/// The processor counts each test runs on.
const PROCS: [usize; 2] = [2, 4];

/// One goroutine switch, of a kind picked by `i`: mostly a yield (in the global queue, or the
/// P's, where another M can take it), every 16th a short sleep (a timer in the P's heap, fired
/// by whichever M runs it), every 64th a receive from a timer channel.
fn switch(i: u64) {
    if i % 64 == 63 {
        goro::time::after(Duration::from_micros(20)).recv().unwrap();
    } else if i % 16 == 15 {
        goro::time::sleep(Duration::from_micros(30));
    } else {
        goro::yield_now();
    }
}

/// A non-atomic increment with a short gap between the read and the write, so that two
/// threads incrementing the same cell lose updates often enough to be seen.
fn bump(c: &Cell<u64>) {
    let v = c.get();
    for k in 0..8u64 {
        std::hint::black_box(k);
    }
    c.set(v + 1);
}

/// Counters of one per-thread state, reset by each run: how many threads made one, how many
/// were dropped (at thread exit), the sum of their final counts, and anything wrong seen.
struct Tally {
    made: AtomicUsize,
    dropped: AtomicUsize,
    sum: AtomicU64,
    wrong_thread: AtomicU64,
    bad: AtomicUsize,
}

impl Tally {
    const fn new() -> Tally {
        Tally {
            made: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            sum: AtomicU64::new(0),
            wrong_thread: AtomicU64::new(0),
            bad: AtomicUsize::new(0),
        }
    }

    fn reset(&self) {
        for a in [&self.made, &self.dropped, &self.bad] {
            a.store(0, Ordering::SeqCst);
        }
        self.sum.store(0, Ordering::SeqCst);
        self.wrong_thread.store(0, Ordering::SeqCst);
    }

    /// Records a use of state owned by `owner`: one from another thread is the bug.
    fn check_thread(&self, owner: ThreadId) {
        if std::thread::current().id() != owner {
            self.wrong_thread.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// After the runtime stopped (its Ms exited, their thread-locals dropped): no use from a
    /// wrong thread, every per-thread state accounted for, and no increment lost. All are
    /// checked before failing, so a failure shows each of them.
    fn assert_sound(&self, what: &str, expected: u64) {
        let mut wrong = Vec::new();
        let n = self.wrong_thread.load(Ordering::SeqCst);
        if n != 0 {
            wrong.push(format!("{n} uses from another thread than the state's"));
        }
        let (made, dropped) = (
            self.made.load(Ordering::SeqCst),
            self.dropped.load(Ordering::SeqCst),
        );
        if made == 0 || made != dropped {
            wrong.push(format!(
                "{made} threads made the state, {dropped} dropped it by the end of `run`"
            ));
        }
        let bad = self.bad.load(Ordering::SeqCst);
        if bad != 0 {
            wrong.push(format!("{bad} thread-locals dropped in a bad state"));
        }
        let sum = self.sum.load(Ordering::SeqCst);
        if sum != expected {
            wrong.push(format!("{sum} increments counted of {expected} made"));
        }
        assert!(wrong.is_empty(), "{what}: {}", wrong.join("; "));
    }
}

// ---- 1. The `ThreadRng` pattern: an `Rc` cloned out of a thread-local ----

/// A thread's state, shared by `Rc` with the goroutines that clone it.
struct RcState {
    count: Cell<u64>,
    owner: ThreadId,
}

/// The thread-local's value; at thread exit it adds its count to `RC`.
struct RcHolder(Rc<RcState>);

impl Drop for RcHolder {
    fn drop(&mut self) {
        // Every clone was dropped by now: a strong count other than one means the
        // (non-atomic) count was updated from two threads at once.
        if Rc::strong_count(&self.0) != 1 || self.0.owner != std::thread::current().id() {
            RC.bad.fetch_add(1, Ordering::SeqCst);
        }
        RC.sum.fetch_add(self.0.count.get(), Ordering::SeqCst);
        RC.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

static RC: Tally = Tally::new();

thread_local! {
    static RC_STATE: RcHolder = {
        RC.made.fetch_add(1, Ordering::SeqCst);
        RcHolder(Rc::new(RcState {
            count: Cell::new(0),
            owner: std::thread::current().id(),
        }))
    };
}

#[test]
fn rc_cloned_from_a_thread_local_is_used_only_on_its_thread() {
    let _s = serial();
    const GOROUTINES: u64 = 32;
    const ITERS: u64 = 2000;
    for procs in PROCS {
        RC.reset();
        let what = format!("Rc from a thread-local, {procs} Ps");
        watchdog(&what, move || {
            goro::Builder::new().max_procs(procs).run(|| {
                let hs: Vec<_> = (0..GOROUTINES)
                    .map(|_| {
                        goro::spawn(|| {
                            let rc = RC_STATE.with(|h| h.0.clone());
                            for i in 0..ITERS {
                                RC.check_thread(rc.owner);
                                bump(&rc.count);
                                switch(i);
                                RC.check_thread(rc.owner);
                                bump(&rc.count);
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
            })
        });
        RC.assert_sound(&what, GOROUTINES * ITERS * 2);
    }
}

// ---- 2. A reference into a thread-local, kept on the heap across switches ----

/// The thread-local's value; at thread exit it adds its count to `REF`.
struct Counter {
    count: Cell<u64>,
    owner: ThreadId,
}

impl Drop for Counter {
    fn drop(&mut self) {
        if self.owner != std::thread::current().id() {
            REF.bad.fetch_add(1, Ordering::SeqCst);
        }
        REF.sum.fetch_add(self.count.get(), Ordering::SeqCst);
        REF.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

static REF: Tally = Tally::new();

thread_local! {
    static REF_STATE: Counter = {
        REF.made.fetch_add(1, Ordering::SeqCst);
        Counter { count: Cell::new(0), owner: std::thread::current().id() }
    };
}

#[test]
fn thread_local_reference_kept_on_the_heap_is_used_only_on_its_thread() {
    let _s = serial();
    const GOROUTINES: u64 = 32;
    const ITERS: u64 = 2000;
    for procs in PROCS {
        REF.reset();
        let what = format!("boxed thread-local reference, {procs} Ps");
        watchdog(&what, move || {
            goro::Builder::new().max_procs(procs).run(|| {
                let hs: Vec<_> = (0..GOROUTINES)
                    .map(|_| {
                        goro::spawn(|| {
                            REF_STATE.with(|x| {
                                // The stack keeps only the box's (heap) address: each use
                                // reads the reference back out of the box (`black_box`, so
                                // the compiler cannot keep it in a register instead).
                                let h: Box<&Counter> = Box::new(x);
                                let get = || -> &Counter { **std::hint::black_box(&h) };
                                for i in 0..ITERS {
                                    REF.check_thread(get().owner);
                                    bump(&get().count);
                                    switch(i);
                                    REF.check_thread(get().owner);
                                    bump(&get().count);
                                }
                            })
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
            })
        });
        REF.assert_sound(&what, GOROUTINES * ITERS * 2);
    }
}

// ---- 3. std's `ReentrantLock` (`stderr().lock()`) held across switches ----

/// Its owner is the thread that locked it: a guard that moved to another thread would let
/// that thread's goroutines in beside it, and unlock from a thread that does not own it.
#[test]
fn stderr_lock_held_across_switches_stays_on_its_thread() {
    let _s = serial();
    for procs in PROCS {
        let what = format!("stderr lock held across switches, {procs} Ps");
        let wrong = watchdog(&what, move || {
            goro::Builder::new().max_procs(procs).run(|| {
                let wrong = Arc::new(AtomicU64::new(0));
                let hs: Vec<_> = (0..16)
                    .map(|_| {
                        let wrong = wrong.clone();
                        goro::spawn(move || {
                            let mut guard = std::io::stderr().lock();
                            let tid = std::thread::current().id();
                            for i in 0..300 {
                                guard.write_all(b"").unwrap();
                                switch(i);
                                if std::thread::current().id() != tid {
                                    wrong.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            guard.flush().unwrap();
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
                wrong.load(Ordering::SeqCst)
            })
        });
        assert_eq!(
            wrong, 0,
            "{what}: {wrong} switches resumed on another thread"
        );
    }
}

// ---- 4. `std::thread::scope` with switches inside and no explicit joins ----

/// The scope parks the thread that opened it until its threads finish, and they unpark that
/// thread: a goroutine that moved meanwhile would park another thread and never wake.
#[test]
fn thread_scope_without_joins_ends_after_switches_inside_it() {
    let _s = serial();
    // Goroutines that changed thread inside their scope, over all rounds (checked at the
    // end, so that every round gets its chance to hang first).
    let mut wrong = Vec::new();
    for procs in PROCS {
        for round in 0..5 {
            let what = format!("thread::scope without joins, {procs} Ps, round {round}");
            let n = watchdog(&what, move || {
                goro::Builder::new().max_procs(procs).run(|| {
                    let hs: Vec<_> = (0..64u64)
                        .map(|k| {
                            goro::spawn(move || {
                                let tid = std::thread::current().id();
                                let mut out = 0u64;
                                std::thread::scope(|s| {
                                    s.spawn(|| {
                                        // Still running when the scope ends, most times:
                                        // the goroutine's thread then parks until it is done.
                                        std::thread::sleep(Duration::from_millis(2));
                                        out = k * 3 + 1;
                                    });
                                    goro::yield_now();
                                    goro::time::sleep(Duration::from_millis(1));
                                });
                                assert_eq!(out, k * 3 + 1, "the scoped thread's write is missing");
                                std::thread::current().id() != tid
                            })
                        })
                        .collect();
                    hs.into_iter()
                        .map(|h| h.join().expect("scope goroutine panicked") as u64)
                        .sum::<u64>()
                })
            });
            if n > 0 {
                wrong.push(format!("{what}: {n} of 64"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "goroutines changed thread inside their scope:\n{}",
        wrong.join("\n")
    );
}

// ---- 5. `allow_migration`: the opt-in keeps the old behaviour ----

/// With migration allowed, started goroutines still move between Ms: the migration count
/// grows and some goroutine sees two threads over its life.
#[test]
fn allow_migration_lets_started_goroutines_move() {
    let _s = serial();
    let before = goro::runtime::sched_stats().migrations;
    let mut moved = 0;
    for round in 0..20 {
        let what = format!("allow_migration, round {round}");
        let (procs, m) = watchdog(&what, || {
            // SAFETY: the goroutines hold nothing thread-bound across their switches.
            unsafe { goro::Builder::new().allow_migration() }
                .max_procs(2)
                .run(|| {
                    let hs: Vec<_> = (0..16)
                        .map(|_| {
                            goro::spawn(|| {
                                let first = std::thread::current().id();
                                let mut moved = false;
                                for i in 0..200 {
                                    switch(i);
                                    moved |= std::thread::current().id() != first;
                                }
                                moved
                            })
                        })
                        .collect();
                    let n: usize = hs.into_iter().map(|h| h.join().unwrap() as usize).sum();
                    (goro::runtime::max_procs(), n)
                })
        });
        if procs < 2 {
            return; // GOMAXPROCS=1 in the environment: one M, nothing to move between
        }
        moved += m;
        if moved > 0 {
            break;
        }
    }
    let after = goro::runtime::sched_stats().migrations;
    assert!(
        moved > 0,
        "no goroutine changed thread with migration allowed"
    );
    assert!(after > before, "sched_stats().migrations did not grow");
}

// ---- 6. Default mode: unstarted goroutines are still stolen, started ones never move ----

/// A burst of spawns from one goroutine spreads over the Ms before the goroutines first run
/// (some first run on another thread than their spawner), and none changes thread after.
#[test]
fn unstarted_goroutines_are_stolen_and_started_ones_stay() {
    let _s = serial();
    for procs in PROCS {
        let what = format!("burst of spawns, {procs} Ps");
        let (max_procs, elsewhere, wrong) = watchdog(&what, move || {
            goro::Builder::new().max_procs(procs).run(|| {
                let wrong = Arc::new(AtomicU64::new(0));
                let stolen = Arc::new(AtomicBool::new(false));
                // Until some goroutine has first run away from its spawner, each one holds its
                // M (no switch): the queue behind the spawner's P stays full until another M
                // wakes and steals from it, however late the OS runs that M's thread. Bounded,
                // so that a runtime that never steals fails the check below instead of hanging.
                let deadline = Instant::now() + Duration::from_secs(2);
                let hs: Vec<_> = (0..256u64)
                    .map(|_| {
                        let spawner = std::thread::current().id();
                        let (wrong, stolen) = (wrong.clone(), stolen.clone());
                        goro::spawn(move || {
                            let first = std::thread::current().id();
                            if first != spawner {
                                stolen.store(true, Ordering::Relaxed);
                            }
                            while !stolen.load(Ordering::Relaxed) && Instant::now() < deadline {
                                std::hint::spin_loop();
                            }
                            for i in 0..64 {
                                switch(i);
                                if std::thread::current().id() != first {
                                    wrong.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            first != spawner
                        })
                    })
                    .collect();
                let elsewhere: usize = hs.into_iter().map(|h| h.join().unwrap() as usize).sum();
                (
                    goro::runtime::max_procs(),
                    elsewhere,
                    wrong.load(Ordering::SeqCst),
                )
            })
        });
        assert_eq!(
            wrong, 0,
            "{what}: {wrong} switches resumed on another thread"
        );
        if max_procs >= 2 {
            assert!(
                elsewhere > 0,
                "{what}: every goroutine first ran on its spawner's thread (no stealing)"
            );
        }
    }
}
