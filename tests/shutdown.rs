//! What happens to goroutines still alive when the runtime stops: they are unwound on the
//! thread returning from `run` (see `runtime/src/sched/shutdown.rs`). Alone in its binary, and
//! the tests take turns: each must own the runtime it stops.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records, when dropped, the goroutine it was dropped in (0 if none).
struct Guard(&'static AtomicU64);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0
            .store(goro::try_current().map_or(0, |g| g.id()), Ordering::SeqCst);
    }
}

#[test]
fn runnable_and_parked_goroutines_are_unwound_inside_themselves() {
    let _s = serial();
    static RUNNABLE: AtomicU64 = AtomicU64::new(u64::MAX);
    static PARKED: AtomicU64 = AtomicU64::new(u64::MAX);
    let ready = Arc::new(AtomicUsize::new(0));
    let r2 = ready.clone();
    let (ids, parked_handle) = goro::Builder::new()
        .max_procs(2)
        .thread_name("shutdown-test")
        .run(move || {
            let r3 = r2.clone();
            let spinner = goro::spawn(move || {
                let _g = Guard(&RUNNABLE);
                r3.fetch_add(1, Ordering::SeqCst);
                loop {
                    goro::yield_now();
                }
            });
            let r4 = r2.clone();
            let parked = goro::spawn(move || {
                let _g = Guard(&PARKED);
                let _big = vec![7u8; 1 << 20]; // owned by the parked stack: freed by the unwind
                r4.fetch_add(1, Ordering::SeqCst);
                loop {
                    goro::park(); // never unparked
                }
            });
            while r2.load(Ordering::SeqCst) < 2 {
                goro::yield_now();
            }
            let ids = (spinner.goroutine().id(), parked.goroutine().id());
            drop(spinner);
            (ids, parked)
        });
    assert_eq!(
        RUNNABLE.load(Ordering::SeqCst),
        ids.0,
        "the runnable goroutine's destructors did not run inside it"
    );
    assert_eq!(PARKED.load(Ordering::SeqCst), ids.1);
    // The handle outlived the runtime: joining reports the drop.
    let err = parked_handle.join().unwrap_err();
    assert_eq!(
        err.message(),
        Some(format!("goroutine {} was dropped when its runtime shut down", ids.1).as_str())
    );
    assert_eq!(goro::num_goroutine(), 0, "goroutines left after shutdown");
}

#[test]
fn destructors_that_park_or_join_during_shutdown_do_not_hang() {
    let _s = serial();
    static DONE: AtomicBool = AtomicBool::new(false);
    struct Waits(Option<goro::JoinHandle<()>>);
    impl Drop for Waits {
        fn drop(&mut self) {
            goro::park(); // returns at once while unwinding
            goro::yield_now();
            let r = self.0.take().unwrap().join();
            DONE.store(r.is_err(), Ordering::SeqCst);
        }
    }
    goro::Builder::new().max_procs(1).run(|| {
        let other = goro::spawn(|| loop {
            goro::park();
        });
        goro::spawn(move || {
            let _w = Waits(Some(other));
            loop {
                goro::park();
            }
        });
        goro::yield_now();
        goro::yield_now();
    });
    assert!(
        DONE.load(Ordering::SeqCst),
        "the destructor's join did not report the drop"
    );
    assert_eq!(goro::num_goroutine(), 0);
}

#[test]
fn goroutines_spawned_or_woken_by_destructors_are_unwound_too() {
    let _s = serial();
    static SPAWNED_DROPPED: AtomicBool = AtomicBool::new(false);
    struct SpawnsOnDrop;
    impl Drop for SpawnsOnDrop {
        fn drop(&mut self) {
            struct Flag;
            impl Drop for Flag {
                fn drop(&mut self) {
                    SPAWNED_DROPPED.store(true, Ordering::SeqCst);
                }
            }
            let f = Flag;
            drop(goro::spawn(move || {
                let _f = f;
                loop {
                    goro::park();
                }
            }));
        }
    }
    goro::Builder::new().max_procs(2).run(|| {
        goro::spawn(|| {
            let _s = SpawnsOnDrop;
            loop {
                goro::park();
            }
        });
        goro::yield_now();
    });
    assert!(SPAWNED_DROPPED.load(Ordering::SeqCst));
    assert_eq!(goro::num_goroutine(), 0);
}

#[test]
fn many_parked_goroutines_are_reclaimed_and_the_runtime_restarts() {
    let _s = serial();
    for round in 0..3 {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Count;
        impl Drop for Count {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::SeqCst);
            }
        }
        DROPS.store(0, Ordering::SeqCst);
        goro::Builder::new().max_procs(2).run(|| {
            let parked = Arc::new(AtomicUsize::new(0));
            for _ in 0..10_000 {
                let p = parked.clone();
                goro::spawn(move || {
                    let _c = Count;
                    p.fetch_add(1, Ordering::SeqCst);
                    loop {
                        goro::park();
                    }
                });
            }
            while parked.load(Ordering::SeqCst) < 10_000 {
                goro::yield_now();
            }
        });
        assert_eq!(DROPS.load(Ordering::SeqCst), 10_000, "round {round}");
        assert_eq!(goro::num_goroutine(), 0);
    }
}

/// Goroutines that never ran are dropped with the runtime: their closures (kept inline when
/// small, boxed when large) drop what they captured, and they never took a stack.
#[test]
fn goroutines_that_never_ran_drop_their_closures() {
    let _s = serial();
    let shared = Arc::new(AtomicUsize::new(0));
    let s2 = shared.clone();
    let handles = goro::Builder::new().max_procs(1).run(move || {
        let mut hs = Vec::new();
        for i in 0..100usize {
            let small = s2.clone(); // closure of one word: inline
            hs.push(goro::spawn(move || small.fetch_add(i, Ordering::SeqCst)));
            let big = (s2.clone(), [i; 8]); // nine words: boxed
            hs.push(goro::spawn(move || {
                big.0.fetch_add(big.1[7], Ordering::SeqCst)
            }));
            let eager = s2.clone(); // takes its stack at spawn
            hs.push(goro::try_spawn(move || eager.fetch_add(i, Ordering::SeqCst)).unwrap());
        }
        // One P, and main never parks: none of them ran, so none holds a stack yet.
        assert!(hs
            .iter()
            .all(|h| goro::stack::committed_bytes(&h.goroutine()) == 0));
        // Spawned last, so it is in `runnext` and runs first once main returns; it holds the
        // one P until the shutdown has asked the M to stop, so the others never run.
        goro::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        hs
    });
    assert_eq!(shared.load(Ordering::SeqCst), 0, "a goroutine ran");
    assert_eq!(Arc::strong_count(&shared), 1, "a closure was not dropped");
    for h in handles {
        let err = h.join().unwrap_err();
        assert!(err.message().unwrap().contains("dropped"), "{err:?}");
    }
}
