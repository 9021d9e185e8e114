//! sysmon: the runtime's monitor thread (Go's `sysmon`), and the per-P status it watches.
//!
//! What it does now: **preemption requests.** A goroutine that keeps its P for more than
//! `FORCE_PREEMPT` (10 ms, Go's `forcePreemptNS`) without a schedule gets its P's `preempt`
//! flag set; the goroutine yields at its next preemption point (`goro::preempt_point()`, and
//! `spawn`). Like Go's, the check compares the P's schedule counter between rounds
//! (`schedtick`/`schedwhen`), so the scheduler itself never reads a clock.
//!
//! The flag lives in the P's [`PStatus`], owned by the runtime, never in a G: a G may finish
//! and be freed while sysmon looks at it. A stale request (the goroutine switched out just as
//! the flag was set) costs one spurious yield of whichever goroutine runs next: the M clears the
//! flag at every schedule, so that is at most one.
//!
//! Rhythm (Go's): sleep 20 µs; after 50 rounds with nothing to do, double the sleep up to 10 ms.
//! Shutdown unparks it.
//!
//! Not done yet (the multi-P scheduler): retaking the P of an M stuck in a blocking call,
//! polling the network, and signal-based preemption, which goro will not do (interrupting Rust
//! code inside `malloc` or holding a std lock can deadlock).

use super::Runtime;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Time a goroutine may hold its P before sysmon asks it to yield.
pub(crate) const FORCE_PREEMPT: Duration = Duration::from_millis(10);
const MIN_SLEEP: Duration = Duration::from_micros(20);
const MAX_SLEEP: Duration = Duration::from_millis(10);
const IDLE_ROUNDS: u32 = 50;

/// What sysmon can see of a P. Written by the P's M with plain stores (one writer), read by
/// sysmon; `preempt` is set by sysmon and cleared by the M or the preempted goroutine.
#[derive(Default)]
pub(crate) struct PStatus {
    /// `2 * schedule count + 1` while a goroutine runs on the P, `2 * count` between
    /// goroutines: one store each way tells sysmon both that the P moved on and whether it runs.
    pub(crate) schedtick: AtomicU32,
    /// sysmon asks the running goroutine to yield at its next preemption point.
    pub(crate) preempt: AtomicBool,
}

impl PStatus {
    pub(crate) fn running(&self) -> bool {
        self.schedtick.load(Ordering::Relaxed) & 1 == 1
    }
}

/// sysmon's loop; returns when the runtime stops.
pub(crate) fn run(rt: &Runtime) {
    let mut sleep = MIN_SLEEP;
    let mut idle_rounds = 0;
    let mut seen: Vec<(u32, Instant)> = rt.ps.iter().map(|_| (0, Instant::now())).collect();
    while !rt.stop.load(Ordering::Acquire) {
        std::thread::park_timeout(sleep);
        let now = Instant::now();
        let mut acted = false;
        for (st, (tick, since)) in rt.ps.iter().zip(seen.iter_mut()) {
            let t = st.schedtick.load(Ordering::Relaxed);
            if t != *tick || t & 1 == 0 {
                *tick = t;
                *since = now;
            } else if now - *since >= FORCE_PREEMPT && !st.preempt.load(Ordering::Relaxed) {
                st.preempt.store(true, Ordering::Relaxed);
                acted = true;
            }
        }
        if acted {
            idle_rounds = 0;
            sleep = MIN_SLEEP;
        } else {
            idle_rounds += 1;
            if idle_rounds > IDLE_ROUNDS {
                sleep = (sleep * 2).min(MAX_SLEEP);
            }
        }
    }
}
