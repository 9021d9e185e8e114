//! `goro::sync`: each primitive's semantics from goroutines and from plain threads sharing it,
//! contention on 1-4 processors, Go's mutex starvation mode, writer preference, FIFO
//! semaphores, and what shutdown does to goroutines blocked in (or blocking from destructors
//! on) a primitive.
//!
//! The tests take turns (`serial`): `run` joins a runtime that is already running, settings
//! unchanged, and the shutdown tests must own the runtime they stop. Each runs under a
//! timeout, so a deadlock fails the test instead of hanging it.

mod common;

use goro::sync::{Barrier, Condvar, Mutex, Once, OnceLock, RwLock, Semaphore, WaitGroup};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(15);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` as the main goroutine of a runtime with `procs` processors, under the timeout.
fn on<T: Send + 'static>(
    procs: usize,
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    on_with(goro::Builder::new(), procs, what, f)
}

fn on_with<T: Send + 'static>(
    builder: goro::Builder,
    procs: usize,
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    common::with_timeout(LIMIT, what, move || builder.max_procs(procs).run(f))
}

/// Sleeps by parking (the goroutine in a goroutine, the thread on a plain thread).
fn sleep(d: Duration) {
    let end = Instant::now() + d;
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        goro::park_timeout(end - now);
    }
}

/// Busy-waits for `d` (a critical section that holds the processor).
fn busy(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Polls `cond` (yielding) until it holds; panics after a few seconds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "never happened: {what}"
        );
        goro::yield_now();
        sleep(Duration::from_micros(200));
    }
}

fn join_all<T: Send + 'static>(hs: Vec<goro::JoinHandle<T>>) -> Vec<T> {
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------
// Mutex

#[test]
fn mutex_basics_and_no_poisoning() {
    let _s = serial();
    static STATIC: Mutex<u32> = Mutex::new(1);
    *STATIC.lock() += 1;
    assert_eq!(*STATIC.lock(), 2);

    let m = Mutex::new(5);
    {
        let mut g = m.lock();
        *g += 1;
        assert!(m.try_lock().is_none());
        assert!(m.is_locked());
        assert_eq!(format!("{m:?}"), "Mutex { data: <locked>, .. }");
        assert_eq!(format!("{g:?} {g}"), "6 6");
    }
    assert!(!m.is_locked());
    assert_eq!(format!("{m:?}"), "Mutex { data: 6, .. }");
    let mut m = m;
    *m.get_mut() += 1;
    assert_eq!(m.into_inner(), 7);
    let d: Mutex<Vec<u8>> = Mutex::default();
    assert!(d.lock().is_empty());
    let unsized_: Box<Mutex<[u8]>> = Box::new(Mutex::new([1, 2, 3]));
    assert_eq!(unsized_.lock().len(), 3);

    // A goroutine panics holding the lock: the next lock succeeds (no poisoning).
    let left = on(1, "mutex after a panic", || {
        let m = Arc::new(Mutex::new(0));
        let m2 = m.clone();
        let r = goro::spawn(move || {
            let mut g = m2.lock();
            *g = 42;
            panic!("inside the critical section");
        })
        .join();
        assert!(r.is_err());
        let v = *m.lock();
        v
    });
    assert_eq!(left, 42);
}

/// 8 goroutines increment a plain integer under the lock, with yields inside the critical
/// section so waiters really park; the total must be exact on every processor count.
#[test]
fn mutex_exact_count_on_1_2_4_procs() {
    let _s = serial();
    for procs in [1, 2, 4] {
        let total = on(procs, "mutex count", move || {
            let m = Arc::new(Mutex::new(0u64));
            let hs = (0..8)
                .map(|_| {
                    let m = m.clone();
                    goro::spawn(move || {
                        for i in 0..5_000 {
                            let mut g = m.lock();
                            let v = *g;
                            if i % 64 == 0 {
                                goro::yield_now(); // others queue behind us
                            }
                            *g = v + 1;
                        }
                    })
                })
                .collect();
            join_all(hs);
            let v = *m.lock();
            v
        });
        assert_eq!(
            total,
            8 * 5_000,
            "procs={procs}: lost or doubled increments"
        );
    }
}

/// Plain threads and goroutines share one mutex: exact count, and a thread blocked on a
/// goroutine's lock waits for it.
#[test]
fn mutex_shared_by_threads_and_goroutines() {
    let _s = serial();
    let m = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    let mut g = m.lock();
                    let v = *g;
                    if i % 128 == 0 {
                        std::thread::yield_now();
                    }
                    *g = v + 1;
                }
            })
        })
        .collect();
    let m2 = m.clone();
    on(2, "mutex shared with threads", move || {
        let hs = (0..4)
            .map(|_| {
                let m = m2.clone();
                goro::spawn(move || {
                    for i in 0..5_000 {
                        let mut g = m.lock();
                        let v = *g;
                        if i % 128 == 0 {
                            goro::yield_now();
                        }
                        *g = v + 1;
                    }
                })
            })
            .collect();
        join_all(hs);
    });
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*m.lock(), 6 * 5_000);

    // A goroutine holds the lock for 30 ms; a plain thread's lock waits for it.
    let m = Arc::new(Mutex::new(0));
    let held = Arc::new(AtomicBool::new(false));
    let (m2, h2) = (m.clone(), held.clone());
    let waited = on(1, "thread waits for a goroutine's lock", move || {
        let g = goro::spawn(move || {
            let mut g = m2.lock();
            h2.store(true, Ordering::SeqCst);
            sleep(Duration::from_millis(30));
            *g = 1;
        });
        let (m3, h3) = (m.clone(), held.clone());
        let t = std::thread::spawn(move || {
            while !h3.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            let t = Instant::now();
            let v = *m3.lock();
            (t.elapsed(), v)
        });
        g.join().unwrap();
        goro::blocking(|| t.join().unwrap())
    });
    assert_eq!(
        waited.1, 1,
        "the thread got the lock before the goroutine's write"
    );
    assert!(waited.0 >= Duration::from_millis(20), "{:?}", waited.0);
}

/// `lock` is a preemption point: on one processor, a goroutine that only locks and unlocks
/// in a loop must let a sleeping goroutine run (without it this times out).
#[test]
fn mutex_lock_is_a_preemption_point() {
    let _s = serial();
    let n = on(
        1,
        "a lock loop starved the runtime's only processor",
        || {
            let m = Arc::new(Mutex::new(0u64));
            let stop = Arc::new(AtomicBool::new(false));
            let (m2, s2) = (m.clone(), stop.clone());
            let hog = goro::spawn(move || {
                while !s2.load(Ordering::Relaxed) {
                    *m2.lock() += 1;
                }
            });
            sleep(Duration::from_millis(30));
            stop.store(true, Ordering::Relaxed);
            hog.join().unwrap();
            let n = *m.lock();
            n
        },
    );
    assert!(n > 0);
}

/// Go's starvation mode: a goroutine re-locks in a tight loop (its critical section holds the
/// processor for 20 µs, its unlocked window is a few nanoseconds), another goroutine or a
/// plain thread waits. A woken waiter loses the race to the re-lock; once it has waited 1 ms
/// it switches the mutex to starvation mode and the next unlock hands the mutex over. So
/// every wait is short, and, for the goroutine waiter (woken onto the hog's processor, it
/// runs only once the other processor steals it, while the hog holds the lock), the mode is
/// entered. Without it that waiter would get the lock only when sysmon preempts the hog
/// (10 ms), and a parked thread waiter, woken only by unlocks it always loses, for as long as
/// the loop runs. A thread waiter is woken by a futex wake that the hog makes after
/// releasing, and often wins while the hog is still in that system call, so for it only long
/// waits must have gone through the mode.
///
/// The runtime lets goroutines migrate here, as Go's do: bound to the hog's thread, the
/// goroutine waiter would run only when sysmon preempts the hog, which tests the scheduler's
/// rule rather than the mutex.
#[test]
fn mutex_starvation_mode_hands_off_to_a_starved_waiter() {
    let _s = serial();
    fn scenario(waiter_is_thread: bool) -> (Vec<Duration>, u64, usize) {
        // SAFETY: the goroutines here hold no thread-bound state across switches.
        let migrating = unsafe { goro::Builder::new().allow_migration() };
        on_with(migrating, 2, "starved mutex waiter", move || {
            let m = Arc::new(Mutex::new(0u64));
            let stop = Arc::new(AtomicBool::new(false));
            let (m2, s2) = (m.clone(), stop.clone());
            let hog = goro::spawn(move || {
                while !s2.load(Ordering::Relaxed) {
                    let mut g = m2.lock();
                    busy(Duration::from_micros(20));
                    *g += 1;
                }
            });
            eventually("the hog runs", || *m.lock() > 10);
            let before = goro::sync::starvation_entries();
            let m3 = m.clone();
            let rounds = move || {
                (0..5)
                    .map(|_| {
                        sleep(Duration::from_millis(2));
                        let t = Instant::now();
                        let g = m3.lock();
                        let waited = t.elapsed();
                        drop(g);
                        waited
                    })
                    .collect::<Vec<_>>()
            };
            let waits = if waiter_is_thread {
                goro::blocking(|| std::thread::spawn(rounds).join().unwrap())
            } else {
                goro::spawn(rounds).join().unwrap()
            };
            let entries = goro::sync::starvation_entries() - before;
            stop.store(true, Ordering::Relaxed);
            hog.join().unwrap();
            (waits, entries, goro::runtime::max_procs())
        })
    }
    for thread in [false, true] {
        let (waits, entries, procs) = scenario(thread);
        let who = if thread { "thread" } else { "goroutine" };
        eprintln!("starvation ({who} waiter): waits {waits:?}, mode entered {entries} times");
        let longest = waits.iter().max().copied().unwrap_or_default();
        assert!(
            longest < Duration::from_millis(100),
            "{who} waiter starved: {waits:?}"
        );
        // (With one processor, `GOMAXPROCS=1`, the goroutine waiter runs only when the hog
        // is preempted, and finds the mutex free then.)
        if (!thread && procs > 1) || longest > Duration::from_millis(3) {
            assert!(
                entries > 0,
                "{who} waiter: starvation mode never entered ({waits:?})"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RwLock

#[test]
fn rwlock_basics() {
    let _s = serial();
    let l = RwLock::new(vec![1]);
    {
        let (a, b) = (l.read(), l.read());
        assert_eq!(a.len() + b.len(), 2);
        assert!(l.try_write().is_none());
        assert!(l.try_read().is_some());
        assert_eq!(format!("{l:?}"), "RwLock { data: [1], .. }");
    }
    {
        let mut w = l.write();
        w.push(2);
        assert!(l.try_read().is_none());
        assert!(l.try_write().is_none());
        assert_eq!(format!("{l:?}"), "RwLock { data: <locked>, .. }");
    }
    assert_eq!(*l.try_write().unwrap(), [1, 2]);
    let mut l = l;
    l.get_mut().push(3);
    assert_eq!(l.into_inner(), [1, 2, 3]);
    let d: RwLock<u8> = RwLock::default();
    assert_eq!(*d.read(), 0);

    // Readers hold the lock together across parks; a writer waits for both.
    on(2, "rwlock readers together", || {
        let l = Arc::new(RwLock::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let hs = (0..4)
            .map(|_| {
                let (l, inside, max) = (l.clone(), inside.clone(), max.clone());
                goro::spawn(move || {
                    let g = l.read();
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    *g
                })
            })
            .collect();
        assert_eq!(join_all(hs), [0; 4]);
        assert!(max.load(Ordering::SeqCst) > 1, "readers never overlapped");
        *l.write() = 1;
        assert_eq!(*l.read(), 1);
    });
}

/// Once a writer waits, a new reader waits behind it (Go's rule): the writer goes first.
#[test]
fn rwlock_waiting_writer_blocks_new_readers() {
    let _s = serial();
    let order = on(2, "rwlock writer preference", || {
        let l = Arc::new(RwLock::new(0));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let r1 = l.read();
        let (l2, o2) = (l.clone(), order.clone());
        let w = goro::spawn(move || {
            let mut g = l2.write();
            o2.lock().unwrap().push("writer".to_string());
            *g = 1;
        });
        // The writer is queued once readers are refused.
        eventually("the writer queues", || l.try_read().is_none());
        let (l3, o3) = (l.clone(), order.clone());
        let r2 = goro::spawn(move || {
            let g = l3.read();
            o3.lock().unwrap().push(format!("reader saw {}", *g));
        });
        sleep(Duration::from_millis(30));
        assert!(
            order.lock().unwrap().is_empty(),
            "a reader got in while a writer waited"
        );
        drop(r1);
        w.join().unwrap();
        r2.join().unwrap();
        let v = order.lock().unwrap().clone();
        v
    });
    assert_eq!(order, ["writer", "reader saw 1"]);
}

/// A continuous stream of overlapping readers does not starve a writer.
#[test]
fn rwlock_writer_not_starved_by_a_stream_of_readers() {
    let _s = serial();
    let (waited, reads) = on(2, "rwlock writer starved", || {
        let l = Arc::new(RwLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let readers = (0..4)
            .map(|_| {
                let (l, stop, reads) = (l.clone(), stop.clone(), reads.clone());
                goro::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let g = l.read();
                        busy(Duration::from_micros(50));
                        reads.fetch_add(1, Ordering::Relaxed);
                        drop(g);
                        if reads.load(Ordering::Relaxed) % 16 == 0 {
                            goro::yield_now();
                        }
                    }
                })
            })
            .collect();
        eventually("readers run", || reads.load(Ordering::Relaxed) > 100);
        let t = Instant::now();
        *l.write() += 1;
        let waited = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        join_all(readers);
        (waited, reads.load(Ordering::Relaxed))
    });
    assert!(reads > 100);
    assert!(
        waited < Duration::from_millis(100),
        "writer waited {waited:?}"
    );
}

#[test]
fn rwlock_shared_by_a_thread_and_goroutines() {
    let _s = serial();
    let l = Arc::new(RwLock::new(0));
    let held = Arc::new(AtomicBool::new(false));
    let (l2, h2) = (l.clone(), held.clone());
    let t = std::thread::spawn(move || {
        let mut g = l2.write();
        h2.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        *g = 7;
    });
    let l3 = l.clone();
    let seen = on(2, "rwlock with a thread writer", move || {
        while !held.load(Ordering::SeqCst) {
            goro::yield_now();
        }
        let hs = (0..4)
            .map(|_| {
                let l = l3.clone();
                goro::spawn(move || *l.read())
            })
            .collect();
        join_all(hs)
    });
    t.join().unwrap();
    assert_eq!(seen, [7; 4]);
    // And a thread reader waits for a goroutine writer.
    let l4 = l.clone();
    on(1, "thread reader waits for goroutine writer", move || {
        let g = l4.write();
        let l5 = l4.clone();
        let t = std::thread::spawn(move || *l5.read());
        sleep(Duration::from_millis(20));
        let mut g = g;
        *g = 8;
        drop(g);
        assert_eq!(goro::blocking(|| t.join().unwrap()), 8);
    });
}

// ---------------------------------------------------------------------------------------------
// Condvar

#[test]
fn condvar_producer_consumer_and_notify_all() {
    let _s = serial();
    on(2, "condvar queue", || {
        let q = Arc::new((Mutex::new(VecDeque::new()), Condvar::new()));
        let q2 = q.clone();
        let consumer = goro::spawn(move || {
            let (m, cv) = &*q2;
            let mut got = Vec::new();
            while got.len() < 1_000 {
                let mut g = cv.wait_while(m.lock(), |q| q.is_empty());
                got.extend(g.drain(..));
            }
            got
        });
        for i in 0..1_000 {
            q.0.lock().push_back(i);
            q.1.notify_one();
            if i % 50 == 0 {
                goro::yield_now();
            }
        }
        assert_eq!(consumer.join().unwrap(), (0..1_000).collect::<Vec<_>>());

        // notify_all wakes every waiter.
        let s = Arc::new((Mutex::new(false), Condvar::new()));
        let waiting = Arc::new(AtomicUsize::new(0));
        let hs = (0..10)
            .map(|_| {
                let (s, waiting) = (s.clone(), waiting.clone());
                goro::spawn(move || {
                    let (m, cv) = &*s;
                    let mut g = m.lock();
                    waiting.fetch_add(1, Ordering::SeqCst);
                    while !*g {
                        g = cv.wait(g);
                    }
                })
            })
            .collect();
        eventually("all wait", || waiting.load(Ordering::SeqCst) == 10);
        *s.0.lock() = true;
        s.1.notify_all();
        join_all(hs);
    });
}

#[test]
fn condvar_wait_timeout_times_out_and_wakes() {
    let _s = serial();
    let check = || {
        let m = Mutex::new(0);
        let cv = Condvar::new();
        let t = Instant::now();
        let (g, r) = cv.wait_timeout(m.lock(), Duration::from_millis(30));
        assert!(r.timed_out());
        assert!(
            t.elapsed() >= Duration::from_millis(30),
            "{:?}",
            t.elapsed()
        );
        drop(g);
        let (g, r) = cv.wait_timeout_while(m.lock(), Duration::from_millis(10), |v| *v == 0);
        assert!(r.timed_out());
        assert_eq!(*g, 0);
    };
    check(); // plain thread
    on(1, "condvar timeout in a goroutine", check);

    // A plain thread waits; a goroutine notifies before the deadline.
    let s = Arc::new((Mutex::new(false), Condvar::new()));
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        let (m, cv) = &*s2;
        let (g, r) = cv.wait_timeout_while(m.lock(), Duration::from_secs(10), |ready| !*ready);
        (*g, r.timed_out())
    });
    on(1, "goroutine notifies a thread", move || {
        sleep(Duration::from_millis(20));
        *s.0.lock() = true;
        s.1.notify_one();
    });
    assert_eq!(t.join().unwrap(), (true, false));
}

// ---------------------------------------------------------------------------------------------
// WaitGroup

#[test]
fn waitgroup_waits_for_1000_goroutines_and_a_thread() {
    let _s = serial();
    let (done, thread_saw) = on(2, "waitgroup of 1000", || {
        let wg = Arc::new(WaitGroup::new());
        let done = Arc::new(AtomicUsize::new(0));
        wg.add(1_000);
        // A plain thread waits too.
        let (wg2, d2) = (wg.clone(), done.clone());
        let t = std::thread::spawn(move || {
            wg2.wait();
            d2.load(Ordering::SeqCst)
        });
        for i in 0..1_000 {
            let (wg, done) = (wg.clone(), done.clone());
            goro::spawn(move || {
                if i % 3 == 0 {
                    goro::yield_now();
                }
                done.fetch_add(1, Ordering::SeqCst);
                wg.done();
            });
        }
        wg.wait();
        assert_eq!(wg.count(), 0);
        let thread_saw = goro::blocking(|| t.join().unwrap());
        // Reusable: a second round, waited on by several goroutines.
        wg.add(2);
        let waiters = (0..3)
            .map(|_| {
                let wg = wg.clone();
                goro::spawn(move || wg.wait())
            })
            .collect();
        sleep(Duration::from_millis(5));
        wg.done();
        wg.done();
        join_all(waiters);
        (done.load(Ordering::SeqCst), thread_saw)
    });
    assert_eq!(done, 1_000);
    assert_eq!(thread_saw, 1_000);
    WaitGroup::default().wait(); // zero: returns at once
}

#[test]
fn waitgroup_negative_counter_panics_with_gos_message() {
    let _s = serial();
    let wg = WaitGroup::new();
    wg.add(1);
    let err = std::panic::catch_unwind(|| wg.add(-2)).unwrap_err();
    assert_eq!(
        err.downcast_ref::<&str>().copied(),
        Some("sync: negative WaitGroup counter")
    );
    assert_eq!(wg.count(), 1, "a failed add leaves the counter unchanged");
    wg.done();
    wg.wait();
}

// ---------------------------------------------------------------------------------------------
// Once, OnceLock

#[test]
fn once_racing_initialisers_run_once() {
    let _s = serial();
    static ONCE: Once = Once::new();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    static VALUE: AtomicUsize = AtomicUsize::new(0);
    let init = || {
        ONCE.call_once(|| {
            RUNS.fetch_add(1, Ordering::SeqCst);
            sleep(Duration::from_millis(20)); // the others park meanwhile
            VALUE.store(42, Ordering::SeqCst);
        });
        assert!(ONCE.is_completed());
        VALUE.load(Ordering::SeqCst)
    };
    let t = std::thread::spawn(init);
    let seen = on(2, "once race", move || {
        let hs = (0..16).map(|_| goro::spawn(init)).collect();
        join_all(hs)
    });
    assert_eq!(seen, [42; 16]);
    assert_eq!(t.join().unwrap(), 42);
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
}

/// A panicking initialiser leaves the `Once` incomplete: a waiter parked behind it runs its
/// own initialiser next.
#[test]
fn once_panicking_initialiser_lets_the_next_caller_try() {
    let _s = serial();
    let runs = on(2, "once after a panic", || {
        let once = Arc::new(Once::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let (o2, r2) = (once.clone(), runs.clone());
        let first = goro::spawn(move || {
            o2.call_once(|| {
                r2.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_millis(20));
                panic!("initialiser fails");
            })
        });
        eventually("the first initialiser runs", || {
            runs.load(Ordering::SeqCst) == 1
        });
        let (o3, r3) = (once.clone(), runs.clone());
        let second = goro::spawn(move || {
            o3.call_once(|| {
                r3.fetch_add(1, Ordering::SeqCst);
            })
        });
        assert!(first.join().is_err());
        second.join().unwrap();
        assert!(once.is_completed());
        once.call_once(|| unreachable!());
        runs.load(Ordering::SeqCst)
    });
    assert_eq!(runs, 2);
}

#[test]
fn once_lock_racing_get_or_init() {
    let _s = serial();
    static CELL: OnceLock<String> = OnceLock::new();
    static INITS: AtomicUsize = AtomicUsize::new(0);
    let addrs = on(2, "oncelock race", || {
        let hs = (0..16)
            .map(|i| {
                goro::spawn(move || {
                    let v = CELL.get_or_init(|| {
                        INITS.fetch_add(1, Ordering::SeqCst);
                        sleep(Duration::from_millis(10));
                        format!("value {i}")
                    });
                    v as *const String as usize
                })
            })
            .collect();
        join_all(hs)
    });
    assert_eq!(INITS.load(Ordering::SeqCst), 1);
    assert!(
        addrs.iter().all(|&a| a == addrs[0]),
        "callers saw different values"
    );
    assert!(CELL.get().unwrap().starts_with("value "));
    assert!(CELL.set("other".into()).is_err());

    // The API, and a panicking initialiser leaving the cell empty.
    let mut c: OnceLock<Vec<u8>> = OnceLock::new();
    assert!(c.get().is_none());
    assert_eq!(format!("{c:?}"), "OnceLock(<uninit>)");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.get_or_init(|| panic!("no value"));
    }));
    assert!(r.is_err());
    assert!(c.get().is_none());
    assert_eq!(c.set(vec![1]), Ok(()));
    assert_eq!(c.set(vec![2]), Err(vec![2]));
    c.get_mut().unwrap().push(3);
    assert_eq!(format!("{c:?}"), "OnceLock([1, 3])");
    assert_eq!(c.clone().into_inner(), Some(vec![1, 3]));
    assert_eq!(c.take(), Some(vec![1, 3]));
    assert!(c.get().is_none());
    assert_eq!(OnceLock::from(5).into_inner(), Some(5));
}

// ---------------------------------------------------------------------------------------------
// Semaphore

/// 32 goroutines and 2 threads take 3 permits: never more than 3 holders at once.
#[test]
fn semaphore_never_exceeds_its_permits() {
    let _s = serial();
    let sem = Arc::new(Semaphore::new(3));
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let work = {
        let (sem, inside, max) = (sem.clone(), inside.clone(), max.clone());
        move |yield_: fn()| {
            for _ in 0..50 {
                let _p = sem.acquire();
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                yield_();
                inside.fetch_sub(1, Ordering::SeqCst);
            }
        }
    };
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let work = work.clone();
            std::thread::spawn(move || work(std::thread::yield_now))
        })
        .collect();
    on(2, "semaphore contention", move || {
        let hs = (0..32)
            .map(|_| {
                let work = work.clone();
                goro::spawn(move || work(goro::yield_now))
            })
            .collect();
        join_all(hs);
    });
    for t in threads {
        t.join().unwrap();
    }
    let max = max.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} holders at once with 3 permits");
    assert_eq!(max, 3, "contention never filled the permits");
    assert_eq!(sem.available_permits(), 3);
}

#[test]
fn semaphore_try_timeout_add_and_fifo() {
    let _s = serial();
    let sem = Semaphore::new(1);
    let p = sem.try_acquire().unwrap();
    assert!(sem.try_acquire().is_none());
    let t = Instant::now();
    assert!(sem.acquire_timeout(Duration::from_millis(20)).is_none());
    assert!(t.elapsed() >= Duration::from_millis(20));
    drop(p);
    assert_eq!(sem.available_permits(), 1);
    sem.add_permits(2);
    assert_eq!(sem.available_permits(), 3);
    sem.acquire().forget();
    assert_eq!(sem.available_permits(), 2);
    assert!(sem.acquire_timeout(Duration::ZERO).is_some());

    // FIFO: waiters queued in order get permits in that order; while they wait, newcomers
    // (even `try_acquire`) queue behind them.
    let order = on(1, "semaphore fifo", || {
        let sem = Arc::new(Semaphore::new(0));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut hs = Vec::new();
        for i in 0..6 {
            let (sem, order) = (sem.clone(), order.clone());
            hs.push(goro::spawn(move || {
                sem.acquire().forget();
                order.lock().unwrap().push(i);
            }));
            sleep(Duration::from_millis(3)); // it runs and queues
        }
        sem.add_permits(1);
        assert!(
            sem.try_acquire().is_none(),
            "a newcomer took a waiter's permit"
        );
        for _ in 0..5 {
            sleep(Duration::from_millis(3));
            sem.add_permits(1);
        }
        join_all(hs);
        let v = order.lock().unwrap().clone();
        v
    });
    assert_eq!(order, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn semaphore_timeout_in_goroutines_and_handoff_to_a_thread() {
    let _s = serial();
    let sem = Arc::new(Semaphore::new(1));
    let s2 = sem.clone();
    on(2, "semaphore timeouts", move || {
        let p = s2.acquire();
        let timers = (0..4)
            .map(|_| {
                let s = s2.clone();
                goro::spawn(move || {
                    let t = Instant::now();
                    let got = s.acquire_timeout(Duration::from_millis(20)).is_some();
                    (got, t.elapsed())
                })
            })
            .collect();
        for (got, waited) in join_all(timers) {
            assert!(!got);
            assert!(waited >= Duration::from_millis(20), "{waited:?}");
        }
        // A thread waits; the goroutine's release hands the permit over.
        let s3 = s2.clone();
        let t = std::thread::spawn(move || s3.acquire().forget());
        sleep(Duration::from_millis(10));
        drop(p);
        goro::blocking(|| t.join().unwrap());
    });
    assert_eq!(sem.available_permits(), 0);
}

// ---------------------------------------------------------------------------------------------
// Barrier

/// 4 goroutines and a plain thread meet 30 times: nobody leaves a generation before all
/// arrived, and each generation has exactly one leader.
#[test]
fn barrier_releases_all_with_one_leader_per_generation() {
    const N: usize = 5;
    const GENS: usize = 30;
    let _s = serial();
    let b = Arc::new(Barrier::new(N));
    let arrived: Arc<Vec<AtomicUsize>> = Arc::new((0..GENS).map(|_| AtomicUsize::new(0)).collect());
    let leaders: Arc<Vec<AtomicUsize>> = Arc::new((0..GENS).map(|_| AtomicUsize::new(0)).collect());
    let party = {
        let (b, arrived, leaders) = (b.clone(), arrived.clone(), leaders.clone());
        move || {
            for g in 0..GENS {
                arrived[g].fetch_add(1, Ordering::SeqCst);
                let r = b.wait();
                assert_eq!(
                    arrived[g].load(Ordering::SeqCst),
                    N,
                    "left generation {g} before everyone arrived"
                );
                if r.is_leader() {
                    leaders[g].fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    };
    let p2 = party.clone();
    let t = std::thread::spawn(party);
    on(2, "barrier", move || {
        let hs = (0..N - 1)
            .map(|_| {
                let p = p2.clone();
                goro::spawn(p)
            })
            .collect();
        join_all(hs);
    });
    t.join().unwrap();
    for (g, l) in leaders.iter().enumerate() {
        assert_eq!(l.load(Ordering::SeqCst), 1, "generation {g}");
    }
    assert!(Barrier::new(0).wait().is_leader());
    assert!(Barrier::new(1).wait().is_leader());
}

// ---------------------------------------------------------------------------------------------
// Shutdown

/// Goroutines parked in every kind of wait when the runtime stops are unwound; the
/// primitives are left consistent and usable from plain threads afterwards.
#[test]
fn shutdown_unwinds_waiters_and_leaves_primitives_usable() {
    let _s = serial();
    let m = Arc::new(Mutex::new(0));
    let l = Arc::new(RwLock::new(0));
    let sem = Arc::new(Semaphore::new(1));
    let wg = Arc::new(WaitGroup::new());
    let cv = Arc::new((Mutex::new(()), Condvar::new()));
    let once = Arc::new(Once::new());
    let (m2, l2, s2, wg2, cv2, o2) = (
        m.clone(),
        l.clone(),
        sem.clone(),
        wg.clone(),
        cv.clone(),
        once.clone(),
    );
    on(2, "shutdown with blocked goroutines", move || {
        let holding = Arc::new(AtomicBool::new(false));
        {
            let (m, l, s, o, h) = (
                m2.clone(),
                l2.clone(),
                s2.clone(),
                o2.clone(),
                holding.clone(),
            );
            goro::spawn(move || {
                let _g = m.lock();
                let _w = l.write();
                let _p = s.acquire();
                o.call_once(|| {
                    h.store(true, Ordering::SeqCst);
                    loop {
                        goro::park(); // holds everything until unwound
                    }
                });
            });
        }
        eventually("the holder holds", || holding.load(Ordering::SeqCst));
        wg2.add(1);
        for i in 0..3 {
            let (m, l, s, wg, cv, o) = (
                m2.clone(),
                l2.clone(),
                s2.clone(),
                wg2.clone(),
                cv2.clone(),
                o2.clone(),
            );
            goro::spawn(move || match i {
                0 => {
                    drop(m.lock());
                    drop(l.read());
                }
                1 => {
                    drop(s.acquire());
                    drop(l.write());
                    o.call_once(|| {});
                }
                _ => {
                    wg.wait();
                    let g = cv.0.lock();
                    drop(cv.1.wait(g));
                }
            });
        }
        sleep(Duration::from_millis(20)); // they all park
                                          // Returning stops the runtime: everyone is unwound.
    });
    assert_eq!(goro::num_goroutine(), 0);
    let check = std::thread::spawn(move || {
        drop(m.try_lock().expect("mutex left locked"));
        drop(l.try_write().expect("rwlock left locked"));
        drop(sem.try_acquire().expect("permit not returned"));
        assert_eq!(sem.available_permits(), 1);
        assert!(!once.is_completed());
        once.call_once(|| {});
        drop(m.lock());
        drop(l.read());
        wg.done();
        wg.wait();
        cv.1.notify_all();
    });
    common::with_timeout(LIMIT, "primitives after shutdown", move || {
        check.join().unwrap()
    });
}

/// Blocking calls in destructors that run while a goroutine is unwound at shutdown return
/// instead of waiting for goroutines that never run again.
#[test]
fn shutdown_destructors_that_wait_return() {
    let _s = serial();
    static DONE: AtomicBool = AtomicBool::new(false);
    struct WaitsOnDrop {
        wg: Arc<WaitGroup>,
        sem: Arc<Semaphore>,
        b: Arc<Barrier>,
        m: Arc<Mutex<u32>>,
    }
    impl Drop for WaitsOnDrop {
        fn drop(&mut self) {
            let t = Instant::now();
            self.wg.wait(); // counter 1: returns at once
            assert!(self.sem.acquire_timeout(Duration::from_secs(5)).is_none());
            assert!(!self.b.wait().is_leader());
            let cv = Condvar::new();
            let (g, r) = cv.wait_timeout(self.m.lock(), Duration::from_secs(5));
            assert!(r.timed_out());
            drop(cv.wait_while(g, |_| true));
            *self.m.lock() += 1; // uncontended: fine
            assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
            DONE.store(true, Ordering::SeqCst);
        }
    }
    let m = Arc::new(Mutex::new(0));
    let m2 = m.clone();
    on(1, "destructors waiting at shutdown", move || {
        let w = WaitsOnDrop {
            wg: Arc::new(WaitGroup::new()),
            sem: Arc::new(Semaphore::new(0)),
            b: Arc::new(Barrier::new(2)),
            m: m2,
        };
        w.wg.add(1);
        goro::spawn(move || {
            let _w = w;
            loop {
                goro::park();
            }
        });
        goro::yield_now();
    });
    assert!(DONE.load(Ordering::SeqCst), "the destructor did not finish");
    assert_eq!(*m.lock(), 1);
}

const CHILD: &str = "GORO_SYNC_CHILD";

/// Child process: a goroutine's destructor locks a mutex that the same goroutine still
/// holds (its guard drops later in the unwind): a deadlock no one can break.
#[test]
fn sync_child_entry() {
    if std::env::var(CHILD).as_deref() != Ok("dying_lock") {
        return;
    }
    struct LocksOnDrop(Arc<Mutex<()>>);
    impl Drop for LocksOnDrop {
        fn drop(&mut self) {
            drop(self.0.lock());
        }
    }
    goro::run(|| {
        let m = Arc::new(Mutex::new(()));
        goro::spawn(move || {
            let _g = m.lock();
            let _d = LocksOnDrop(m.clone());
            loop {
                goro::park();
            }
        });
        goro::yield_now();
    });
    std::process::exit(0); // not reached: the lock in the destructor aborts
}

#[test]
fn shutdown_lock_that_can_never_succeed_aborts_with_a_fatal_error() {
    let _s = serial();
    let t = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sync_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "dying_lock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "child exited successfully: {stderr}");
    assert!(
        stderr.contains("fatal error: goroutine ")
            && stderr.contains("goro::sync::Mutex::lock")
            && stderr.contains("deadlock"),
        "{stderr}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}
