//! `num_goroutine` counts live goroutines exactly when nothing else runs concurrently (alone in
//! its binary: other tests' goroutines would start and finish during the count).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn num_goroutine_counts_live_goroutines() {
    goro::run(|| {
        let before = goro::num_goroutine();
        assert_eq!(before, 1, "only main is alive");
        let parked = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..50)
            .map(|_| {
                let p = parked.clone();
                goro::spawn(move || {
                    p.fetch_add(1, Ordering::SeqCst);
                    goro::park();
                })
            })
            .collect();
        while parked.load(Ordering::SeqCst) < 50 {
            goro::yield_now();
        }
        assert_eq!(goro::num_goroutine(), before + 50);
        for h in &hs {
            h.goroutine().unpark();
        }
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(goro::num_goroutine(), before);
    });
    assert_eq!(goro::num_goroutine(), 0, "main finished too");
}
