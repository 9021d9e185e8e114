//! What happens to goroutines when the runtime stops (alone in its binary: it must own the
//! runtime it stops).

use std::sync::atomic::Ordering;
use std::sync::Arc;

#[test]
fn goroutines_left_at_shutdown_are_not_unwound() {
    // A goroutine still runnable when main returns, whose handle is gone: the runtime stops
    // without running it again and without unwinding it (its destructors never run, as in
    // Go, rather than running on some other thread outside any goroutine).
    static DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            DROPPED.store(true, Ordering::SeqCst);
        }
    }
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = started.clone();
    goro::Builder::new()
        .thread_name("shutdown-test")
        .run(move || {
            drop(goro::spawn(move || {
                let _g = Guard;
                s2.store(true, Ordering::SeqCst);
                loop {
                    goro::yield_now();
                }
            }));
            while !started.load(Ordering::SeqCst) {
                goro::yield_now();
            }
        });
    assert!(
        !DROPPED.load(Ordering::SeqCst),
        "a goroutine was unwound at shutdown"
    );
}

#[test]
fn plain_thread_goroutine_outlives_the_run_it_joined() {
    // A plain thread spawns while another thread's `run` owns the runtime; that `run` returns
    // first. The plain thread's goroutine must still run to completion.
    let (in_run_tx, in_run_rx) = std::sync::mpsc::channel::<()>();
    let (spawned_tx, spawned_rx) = std::sync::mpsc::channel::<()>();
    let runner = std::thread::spawn(move || {
        goro::run(move || {
            in_run_tx.send(()).unwrap();
            spawned_rx.recv().unwrap(); // blocks this goroutine's M; fine for the test
        });
    });
    in_run_rx.recv().unwrap();
    let go_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let g2 = go_on.clone();
    let h = goro::spawn(move || {
        while !g2.load(Ordering::Acquire) {
            goro::park();
        }
        42
    });
    spawned_tx.send(()).unwrap();
    runner.join().unwrap(); // the `run` has returned
    go_on.store(true, Ordering::Release);
    h.goroutine().unpark();
    assert_eq!(h.join().unwrap(), 42);
}
