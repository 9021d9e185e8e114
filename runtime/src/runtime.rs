//! Run-time controls and statistics of the scheduler (Go's `runtime` package functions).

pub use crate::sched::{max_procs, set_max_procs};

/// Scheduler counters since the process started (all runtimes together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStats {
    /// Goroutines resumed on a different OS thread (M) than the one they last ran on.
    pub migrations: u64,
    /// Times a goroutine about to move to another M was kept on its own instead, because its
    /// stack held an address inside that M's thread-locals (see the README's rule).
    pub pinned: u64,
}

/// The current [`SchedStats`].
pub fn sched_stats() -> SchedStats {
    crate::sched::stats()
}
