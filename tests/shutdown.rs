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
