//! [`WaitGroup`]: Go's `sync.WaitGroup`.
//!
//! The state is one 64-bit word, as in Go: the counter in the high 32 bits (an `i32`), the
//! number of queued waiters in the low 32 bits. So `add`/`done` is one atomic add, and only
//! the one that brings the counter to zero with waiters present takes the queue lock.
//!
//! Protocol:
//! 1. `wait`: if the counter is zero, return. Otherwise, under the queue lock, re-check and
//!    increment the waiter count in the same compare-and-swap, and queue.
//! 2. `add(n)`: add to the counter (acquire-release: work before `done` happens-before the
//!    return of `wait`). A negative result panics (Go's message). If it is zero and waiters
//!    are counted: under the queue lock, if the counter is still zero, subtract the queued
//!    waiters from the low bits and wake them all. (If an `add` raised the counter again
//!    meanwhile, which Go calls misuse and panics on, the waiters stay queued for the next
//!    time it reaches zero.)
//! 3. A waiter that leaves (unwound at shutdown) subtracts itself under the queue lock.
//!
//! At shutdown, a goroutine being unwound returns from `wait` at once, whatever the counter.

use super::waiter::{rt, Dying, Leave, Queue, WaitQueue, Wakes};
use crate::loom::{AtomicU64, Ordering};
use std::fmt;

const WOKEN: u32 = 1;
const COUNTER_SHIFT: u32 = 32;
const WAITERS_MASK: u64 = (1 << COUNTER_SHIFT) - 1;

fn counter(s: u64) -> i32 {
    (s >> COUNTER_SHIFT) as u32 as i32
}

/// Waits for a collection of goroutines to finish (Go's `sync.WaitGroup`): `add` the number
/// of tasks, each calls `done`, and `wait` parks until the counter is zero.
///
/// Not `Clone`: share it by reference (`std::thread::scope`-style borrows) or in an `Arc`.
///
/// ```
/// # extern crate goro_runtime as goro;
/// use goro::sync::WaitGroup;
/// use std::sync::Arc;
/// goro::run(|| {
///     let wg = Arc::new(WaitGroup::new());
///     for _ in 0..10 {
///         wg.add(1);
///         let wg = wg.clone();
///         goro::spawn(move || wg.done());
///     }
///     wg.wait();
/// });
/// ```
pub struct WaitGroup {
    /// Counter (high 32 bits, `i32`) and queued waiters (low 32 bits).
    state: AtomicU64,
    queue: WaitQueue,
}

impl WaitGroup {
    /// A wait group with a zero counter.
    #[cfg(not(loom))]
    pub const fn new() -> WaitGroup {
        WaitGroup {
            state: AtomicU64::new(0),
            queue: WaitQueue::new(()),
        }
    }

    /// A wait group with a zero counter.
    #[cfg(loom)]
    pub fn new() -> WaitGroup {
        WaitGroup {
            state: AtomicU64::new(0),
            queue: WaitQueue::new(()),
        }
    }

    /// Adds `delta` (possibly negative) to the counter; when it reaches zero, every `wait`
    /// returns. As in Go, calls with a positive delta that start from zero must happen before
    /// the `wait` they are meant for.
    ///
    /// # Panics
    /// With `sync: negative WaitGroup counter` if the counter would go below zero (the
    /// counter is left unchanged), or if `delta` does not fit the 32-bit counter.
    pub fn add(&self, delta: isize) {
        let d = i32::try_from(delta).expect("sync: WaitGroup delta out of range");
        let inc = (d as i64 as u64) << COUNTER_SHIFT;
        let s = self
            .state
            .fetch_add(inc, Ordering::AcqRel)
            .wrapping_add(inc);
        let v = counter(s);
        if v < 0 {
            // Below zero (or past `i32::MAX`, which wraps to negative, as in Go): undo, panic.
            self.state.fetch_sub(inc, Ordering::AcqRel);
            panic!("sync: negative WaitGroup counter");
        }
        if v > 0 || s & WAITERS_MASK == 0 {
            return;
        }
        let mut q = self.queue.lock();
        let s = self.state.load(Ordering::Acquire);
        if counter(s) != 0 {
            return; // raised again meanwhile: see step 2
        }
        debug_assert_eq!(s & WAITERS_MASK, q.len() as u64);
        self.state.fetch_sub(q.len() as u64, Ordering::Relaxed);
        let all = q.grant_all(WOKEN);
        drop(q);
        all.wake();
    }

    /// Decrements the counter by one (`add(-1)`).
    pub fn done(&self) {
        self.add(-1);
    }

    /// Parks until the counter is zero.
    pub fn wait(&self) {
        if counter(self.state.load(Ordering::Acquire)) == 0 {
            return;
        }
        if rt::is_dying() {
            return; // shutdown: see the module comment
        }
        let q = self.queue.lock();
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if counter(s) == 0 {
                return;
            }
            assert!(
                s & WAITERS_MASK < WAITERS_MASK,
                "goro::sync::WaitGroup: too many waiters"
            );
            match self
                .state
                .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(x) => s = x,
            }
        }
        // The waker's acquire-release add and its grant order the tasks' work before us.
        let _ = self
            .queue
            .push(q, 0, None, false, self)
            .wait(None, Dying::GiveUp);
    }

    /// The counter now (a racy snapshot, for diagnostics).
    pub fn count(&self) -> isize {
        counter(self.state.load(Ordering::Relaxed)) as isize
    }
}

impl Leave<()> for WaitGroup {
    fn removed(&self, _kind: u32, _q: &mut Queue<()>) -> Wakes {
        self.state.fetch_sub(1, Ordering::Relaxed);
        Wakes::none()
    }

    fn abandoned(&self, _kind: u32, _token: u32) {}
}

impl Default for WaitGroup {
    fn default() -> WaitGroup {
        WaitGroup::new()
    }
}

impl fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitGroup")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_field_round_trips() {
        for v in [0i32, 1, -1, i32::MAX, i32::MIN] {
            let s = ((v as i64 as u64) << COUNTER_SHIFT) | 7;
            assert_eq!(counter(s), v);
            assert_eq!(s & WAITERS_MASK, 7);
        }
    }

    /// No lost wake-up between the last `done` and a `wait` that queues.
    #[cfg(loom)]
    #[test]
    fn loom_waitgroup_done_wakes_waiter() {
        loom::model(|| {
            let wg = loom::sync::Arc::new(WaitGroup::new());
            let flag = loom::sync::Arc::new(loom::sync::atomic::AtomicBool::new(false));
            wg.add(1);
            let (wg2, f2) = (wg.clone(), flag.clone());
            let t = loom::thread::spawn(move || {
                f2.store(true, std::sync::atomic::Ordering::Relaxed);
                wg2.done();
            });
            wg.wait();
            assert!(flag.load(std::sync::atomic::Ordering::Relaxed));
            t.join().unwrap();
            assert_eq!(wg.state.load(Ordering::SeqCst), 0);
        });
    }
}
