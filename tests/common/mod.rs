//! Helpers shared by the integration tests (`mod common;` in each test file that uses them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Runs `f` on its own thread and returns its value, or panics with `what` if it takes longer
/// than `limit`: a starvation bug then fails the test instead of hanging it.
#[allow(dead_code)] // not every test binary that declares `mod common` uses it
pub fn with_timeout<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} (no result within {limit:?})"))
}

#[allow(dead_code)]
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

/// CPU time (user + system) the whole process has used so far: tests that check an idle
/// runtime burns none (no polling loop) compare two readings.
#[allow(dead_code)] // not every test binary that declares `mod common` uses it
pub fn cpu_time() -> Duration {
    // SAFETY: `getrusage` fills the zeroed struct we pass; RUSAGE_SELF is always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
