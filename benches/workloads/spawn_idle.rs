//! The spawn-idle workload, shared by `examples/million.rs` and `benches/compare_goro.rs`
//! (included with `#[path]`): spawn `n` goroutines that each park, wait until all have
//! parked, then unpark and join them all.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct SpawnIdle {
    /// From the first spawn until every goroutine has parked.
    pub spawn_all_parked_ms: f64,
    /// Resident memory added per parked goroutine, in bytes.
    pub rss_per_goroutine: usize,
    /// Unparking and joining every goroutine.
    pub release_all_ms: f64,
}

pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0)
        * 4096
}

include!("proc_status.rs");

/// Peak resident set size of the process so far (`VmHWM`), in bytes.
#[allow(dead_code)] // compare_goro's sleep uses it; the million example, which shares this file, does not
pub fn peak_rss_bytes() -> usize {
    proc_status_bytes("VmHWM:")
}

/// Runs the workload; must be called from a goroutine.
pub fn spawn_idle(n: usize) -> SpawnIdle {
    struct Shared {
        parked: AtomicUsize,
        released: AtomicBool,
    }
    let shared = Arc::new(Shared {
        parked: AtomicUsize::new(0),
        released: AtomicBool::new(false),
    });
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let s = shared.clone();
        handles.push(goro::spawn(move || {
            s.parked.fetch_add(1, Ordering::Relaxed);
            while !s.released.load(Ordering::Acquire) {
                goro::park();
            }
        }));
    }
    // Every goroutine spawned is queued ahead of us: yielding lets them all run to their park.
    while shared.parked.load(Ordering::Relaxed) < n {
        goro::yield_now();
    }
    let spawn_all_parked_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rss_per_goroutine = rss_bytes().saturating_sub(rss0) / n.max(1);
    assert!(
        goro::num_goroutine() > n,
        "every goroutine is alive and parked"
    );

    let t1 = Instant::now();
    shared.released.store(true, Ordering::Release);
    for h in &handles {
        h.goroutine().unpark();
    }
    for h in handles {
        h.join().expect("goroutine panicked");
    }
    SpawnIdle {
        spawn_all_parked_ms,
        rss_per_goroutine,
        release_all_ms: t1.elapsed().as_secs_f64() * 1e3,
    }
}
