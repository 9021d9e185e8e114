//! [`Barrier`]: `n` parties wait until all have arrived; reusable, std's API.
//!
//! The count of arrivals and the generation live under the queue lock (the `S` of
//! `waiter.rs`'s queue): an arrival that is not the `n`th queues; the `n`th resets the count,
//! starts the next generation, and wakes the whole queue, which is exactly the generation it
//! completes (arrivals of the next generation queue after the reset). Returning from `wait`
//! is ordered after every party's arrival by the queue lock and the grant.
//!
//! At shutdown, a goroutine being unwound that calls `wait` counts as arrived but returns at
//! once (it cannot wait for parties that never run again); one unwound while waiting stays
//! counted for its generation.

use super::waiter::{rt, Dying, Leave, Queue, WaitQueue, Wakes};
use std::fmt;

const RELEASED: u32 = 1;

/// Arrivals so far in the current generation.
struct Gen {
    arrived: usize,
}

/// A reusable barrier for `n` goroutines or threads (std's `Barrier`).
///
/// ```
/// # extern crate goro_runtime as goro;
/// use goro::sync::Barrier;
/// use std::sync::Arc;
/// goro::run(|| {
///     let b = Arc::new(Barrier::new(4));
///     let hs: Vec<_> = (0..4)
///         .map(|_| {
///             let b = b.clone();
///             goro::spawn(move || b.wait().is_leader())
///         })
///         .collect();
///     let leaders = hs.into_iter().map(|h| h.join().unwrap()).filter(|&l| l).count();
///     assert_eq!(leaders, 1);
/// });
/// ```
pub struct Barrier {
    n: usize,
    queue: WaitQueue<Gen>,
}

/// What [`Barrier::wait`] returns: whether this caller was the generation's leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// True for exactly one caller per generation (the last to arrive).
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl Barrier {
    /// A barrier for `n` parties (`0` behaves as `1`, as in std).
    #[cfg(not(loom))]
    pub const fn new(n: usize) -> Barrier {
        Barrier {
            n,
            queue: WaitQueue::new(Gen { arrived: 0 }),
        }
    }

    /// A barrier for `n` parties (`0` behaves as `1`, as in std).
    #[cfg(loom)]
    pub fn new(n: usize) -> Barrier {
        Barrier {
            n,
            queue: WaitQueue::new(Gen { arrived: 0 }),
        }
    }

    /// Parks until `n` parties (this one included) have called `wait` in this generation.
    pub fn wait(&self) -> BarrierWaitResult {
        let mut q = self.queue.lock();
        q.state.arrived += 1;
        if q.state.arrived >= self.n {
            q.state.arrived = 0;
            let all = q.grant_all(RELEASED);
            drop(q);
            all.wake();
            return BarrierWaitResult(true);
        }
        if rt::is_dying() {
            return BarrierWaitResult(false); // shutdown: see the module comment
        }
        let _ = self
            .queue
            .push(q, 0, None, false, self)
            .wait(None, Dying::GiveUp);
        BarrierWaitResult(false)
    }
}

impl Leave<Gen> for Barrier {
    fn removed(&self, _kind: u32, _q: &mut Queue<Gen>) -> Wakes {
        Wakes::none() // the arrival stays counted (module comment)
    }

    fn abandoned(&self, _kind: u32, _token: u32) {}
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}
