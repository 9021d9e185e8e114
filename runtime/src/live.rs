//! The count of live goroutines (`num_goroutine`), kept per thread.
//!
//! Spawning and finishing a goroutine are the hottest paths in the runtime; a shared atomic
//! counter costs each of them a locked read-modify-write (~5–10 ns, and a contended cache
//! line once several threads spawn). Instead every thread owns a signed counter that only it
//! writes, with a plain relaxed load and store, and [`count`] adds them all up. A goroutine
//! may be counted up on the thread that spawned it and down on the M that finished it, so single
//! counters go negative; only the sum means anything. Counters of exited threads stay in the
//! registry (their final value still belongs in the sum); there are as many as threads that
//! ever spawned or finished a goroutine.
//!
//! The sum is exact when nothing runs concurrently, and otherwise a snapshot that may be off by
//! the spawns and exits racing with it, like Go's `runtime.NumGoroutine`.

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};

static REGISTRY: Mutex<Vec<Arc<AtomicIsize>>> = Mutex::new(Vec::new());

thread_local! {
    static MINE: Arc<AtomicIsize> = {
        let c = Arc::new(AtomicIsize::new(0));
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push(c.clone());
        c
    };
}

/// Adds `delta` to this thread's counter. `#[inline(never)]`: a thread-local read from
/// goroutine code (see `crate::tls`).
#[inline(never)]
pub(crate) fn add(delta: isize) {
    let done = MINE.try_with(|c| c.store(c.load(Ordering::Relaxed) + delta, Ordering::Relaxed));
    if done.is_err() {
        // Thread exiting: its counter is gone from TLS but still registered; use a new one.
        let c = Arc::new(AtomicIsize::new(delta));
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }
}

/// Live goroutines: the sum of every thread's counter.
pub(crate) fn count() -> usize {
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum::<isize>()
        .max(0) as usize
}
