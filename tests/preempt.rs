//! With one processor (GOMAXPROCS=1), a CPU-bound goroutine that calls
//! `goro::preempt_point()` must not starve others: sysmon asks it to yield after 10 ms.
//! Alone in its binary: the hog holds the runtime's only processor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

#[test]
fn cpu_loop_with_preempt_point_does_not_starve_ping_pong() {
    // Without preemption the hog never yields and this times out instead of hanging.
    let spins = common::with_timeout(
        Duration::from_secs(60),
        "ping-pong starved by a CPU loop that calls preempt_point",
        || {
            goro::Builder::new().max_procs(1).run(|| {
                let stop = Arc::new(AtomicBool::new(false));
                let s2 = stop.clone();
                let hog = goro::spawn(move || {
                    let mut spins = 0u64;
                    while !s2.load(Ordering::Relaxed) {
                        spins = spins.wrapping_add(1);
                        goro::preempt_point();
                    }
                    spins
                });
                goro::yield_now(); // the hog now holds the only P
                common::park_ping_pong(1_000); // must not starve behind the hog
                stop.store(true, Ordering::Relaxed);
                hog.join().unwrap()
            })
        },
    );
    assert!(spins > 0);
}
