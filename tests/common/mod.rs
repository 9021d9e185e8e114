//! Helpers shared by the integration tests (`mod common;` in each test file that uses them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Ping-pong between the calling goroutine and a new one by park/unpark, `n` round trips.
/// A shared turn counter is checked on both sides, so a lost or doubled wake-up shows up as a
/// hang (or a wrong turn), never as a silently passing test.
pub fn park_ping_pong(n: usize) {
    let turn = Arc::new(AtomicUsize::new(0));
    let main_g = goro::current();
    let t2 = turn.clone();
    let pong = goro::spawn(move || {
        for i in 0..n {
            while t2.load(Ordering::Acquire) != 2 * i + 1 {
                goro::park();
            }
            t2.store(2 * i + 2, Ordering::Release);
            main_g.unpark();
        }
    });
    let peer = pong.goroutine();
    for i in 0..n {
        turn.store(2 * i + 1, Ordering::Release);
        peer.unpark();
        while turn.load(Ordering::Acquire) != 2 * i + 2 {
            goro::park();
        }
    }
    pong.join().unwrap();
}
