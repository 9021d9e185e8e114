//! [`Semaphore`]: a counting semaphore with FIFO hand-off (`golang.org/x/sync/semaphore`,
//! tokio's API).
//!
//! # The state word
//! ```text
//!   bit 0     PARKED   the wait queue is not empty
//!   bits 1..  available permits
//! ```
//! Invariant, whenever the queue lock is free: `PARKED` ⇔ the queue is not empty, and then
//! no permit is available (every permit released while someone waits went to a waiter).
//!
//! Protocol:
//! 1. `acquire`: if `PARKED` is clear and a permit is available, take it with one
//!    compare-and-swap. Otherwise, under the queue lock, re-check the same, or set `PARKED`
//!    and queue at the back.
//! 2. `release(n)` (a permit dropped, `add_permits`): with `PARKED` clear, one
//!    compare-and-swap adds the permits. Otherwise, under the queue lock, one compare-and-swap
//!    computes the permits left after handing one to each of the first waiters, and `PARKED`
//!    for whether any remain queued; then those waiters are granted and woken. A woken waiter
//!    owns its permit: it does not compete for it again.
//! 3. A waiter that times out (or gives up while its goroutine is unwound at shutdown) leaves
//!    the queue and clears `PARKED` if it was the last; one that was granted a permit while
//!    unwinding releases it.
//!
//! So the semaphore is **FIFO-fair**: while anyone waits, newcomers queue behind (even
//! `try_acquire` fails), and released permits go to the queue's head. Go's runtime semaphore
//! lets newcomers barge; `x/sync/semaphore` and tokio queue them, which is what a limiter
//! needs to bound every waiter's wait.

use super::waiter::{rt, Dying, Leave, Outcome, Queue, Ticket, WaitQueue, Wakes};
use crate::loom::{AtomicUsize, Ordering};
use std::fmt;
use std::time::{Duration, Instant};

const PARKED: usize = 1;
const ONE: usize = 2;

const GRANTED: u32 = 1;

/// What `queue_up` did.
enum Queued<'a> {
    Took,
    Expired,
    Waiting(Ticket<'a, (), Semaphore>),
}

/// A counting semaphore whose waiters park: `acquire` a permit (waiting in FIFO order while
/// none is free), release it by dropping the [`SemaphorePermit`].
///
/// ```
/// # extern crate goro_runtime as goro;
/// use goro::sync::Semaphore;
/// use std::sync::Arc;
/// goro::run(|| {
///     let sem = Arc::new(Semaphore::new(2));
///     let hs: Vec<_> = (0..10)
///         .map(|_| {
///             let sem = sem.clone();
///             goro::spawn(move || {
///                 let _permit = sem.acquire();
///                 // at most two goroutines here at a time
///             })
///         })
///         .collect();
///     hs.into_iter().for_each(|h| h.join().unwrap());
///     assert_eq!(sem.available_permits(), 2);
/// });
/// ```
pub struct Semaphore {
    /// Available permits (times `ONE`) and `PARKED`.
    state: AtomicUsize,
    queue: WaitQueue,
}

impl Semaphore {
    /// The most permits a semaphore can hold.
    pub const MAX_PERMITS: usize = usize::MAX >> 1;

    /// A semaphore with `permits` available.
    ///
    /// # Panics
    /// If `permits` exceeds [`MAX_PERMITS`](Self::MAX_PERMITS).
    #[cfg(not(loom))]
    pub const fn new(permits: usize) -> Semaphore {
        assert!(
            permits <= Self::MAX_PERMITS,
            "goro::sync::Semaphore: too many permits"
        );
        Semaphore {
            state: AtomicUsize::new(permits * ONE),
            queue: WaitQueue::new(()),
        }
    }

    /// A semaphore with `permits` available.
    #[cfg(loom)]
    pub fn new(permits: usize) -> Semaphore {
        assert!(
            permits <= Self::MAX_PERMITS,
            "goro::sync::Semaphore: too many permits"
        );
        Semaphore {
            state: AtomicUsize::new(permits * ONE),
            queue: WaitQueue::new(()),
        }
    }

    /// Takes a permit, parking in FIFO order until one is free. A preemption point.
    ///
    /// At shutdown, a goroutine being unwound waits up to one second for a plain thread to
    /// release a permit, then aborts with a `fatal error` (as `Mutex::lock`).
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        rt::preempt_point();
        if !self.try_take() {
            let out = self.acquire_slow(None, Dying::Grace("goro::sync::Semaphore::acquire"));
            debug_assert_eq!(out, Outcome::Woken(GRANTED));
        }
        SemaphorePermit { sem: self }
    }

    /// Takes a permit if one is free and no one is waiting.
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.try_take().then(|| SemaphorePermit { sem: self })
    }

    /// Takes a permit, waiting at most `timeout`. `None` if it timed out (or, at shutdown,
    /// if the calling goroutine is being unwound).
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphorePermit<'_>> {
        rt::preempt_point();
        if self.try_take() {
            return Some(SemaphorePermit { sem: self });
        }
        match self.acquire_slow(Instant::now().checked_add(timeout), Dying::GiveUp) {
            Outcome::Woken(_) => Some(SemaphorePermit { sem: self }),
            Outcome::TimedOut | Outcome::Dying => None,
        }
    }

    /// Adds `n` permits (handing them to waiters first).
    ///
    /// # Panics
    /// If the total would exceed [`MAX_PERMITS`](Self::MAX_PERMITS).
    pub fn add_permits(&self, n: usize) {
        self.release(n);
    }

    /// Permits available now (a racy snapshot; zero while anyone waits).
    pub fn available_permits(&self) -> usize {
        self.state.load(Ordering::Relaxed) / ONE
    }

    fn try_take(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & PARKED != 0 || s < ONE {
                return false;
            }
            match self
                .state
                .compare_exchange_weak(s, s - ONE, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(x) => s = x,
            }
        }
    }

    #[cold]
    fn acquire_slow(&self, deadline: Option<Instant>, dying: Dying) -> Outcome {
        let expired = deadline.is_some_and(|d| Instant::now() >= d);
        match self.queue_up(expired) {
            Queued::Took => Outcome::Woken(GRANTED),
            Queued::Expired => Outcome::TimedOut,
            Queued::Waiting(ticket) => ticket.wait(deadline, dying),
        }
    }

    /// Step 1 under the queue lock: takes a free permit, or (unless `expired`) sets `PARKED`
    /// and queues the caller.
    fn queue_up(&self, expired: bool) -> Queued<'_> {
        let q = self.queue.lock();
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let (new, took) = if s & PARKED == 0 && s >= ONE {
                (s - ONE, true)
            } else if expired {
                return Queued::Expired;
            } else {
                (s | PARKED, false)
            };
            match self
                .state
                .compare_exchange(s, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) if took => return Queued::Took,
                Ok(_) => break,
                Err(x) => s = x,
            }
        }
        Queued::Waiting(self.queue.push(q, 0, None, false, self))
    }

    /// Step 2.
    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let add = n
            .checked_mul(ONE)
            .expect("goro::sync::Semaphore: too many permits");
        let mut s = self.state.load(Ordering::Relaxed);
        while s & PARKED == 0 {
            let new = s
                .checked_add(add)
                .expect("goro::sync::Semaphore: too many permits");
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(x) => s = x,
            }
        }
        let mut q = self.queue.lock();
        let wakes = self.hand_out(&mut q, add);
        drop(q);
        wakes.wake();
    }

    /// Under the queue lock: adds `add` (times `ONE`) to the permits, hands one to each of
    /// the first waiters, and sets `PARKED` to match the queue, in one compare-and-swap.
    fn hand_out(&self, q: &mut Queue<()>, add: usize) -> Wakes {
        let mut s = self.state.load(Ordering::Relaxed);
        let granted = loop {
            let permits = (s / ONE)
                .checked_add(add / ONE)
                .filter(|&p| p <= Self::MAX_PERMITS)
                .expect("goro::sync::Semaphore: too many permits");
            let granted = permits.min(q.len());
            let new = ((permits - granted) * ONE) | if q.len() > granted { PARKED } else { 0 };
            match self
                .state
                .compare_exchange(s, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break granted,
                Err(x) => s = x,
            }
        };
        let mut wakes = Vec::with_capacity(granted);
        for _ in 0..granted {
            wakes.extend(q.pop_grant(GRANTED));
        }
        Wakes::many(wakes)
    }
}

impl Leave<()> for Semaphore {
    fn removed(&self, _kind: u32, q: &mut Queue<()>) -> Wakes {
        // Permits are zero while PARKED; this only fixes PARKED.
        self.hand_out(q, 0)
    }

    fn abandoned(&self, _kind: u32, _token: u32) {
        self.release(1);
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("permits", &self.available_permits())
            .finish_non_exhaustive()
    }
}

/// One permit of a [`Semaphore`], released when dropped (on any thread).
#[must_use = "the permit is released as soon as it is dropped"]
pub struct SemaphorePermit<'a> {
    sem: &'a Semaphore,
}

impl SemaphorePermit<'_> {
    /// Keeps the permit taken for good (it is not released on drop).
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        self.sem.release(1);
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit").finish_non_exhaustive()
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;

    /// One permit, two takers: the second parks and is handed the permit; none is lost.
    #[test]
    fn loom_semaphore_hand_off() {
        loom::model(|| {
            let sem = loom::sync::Arc::new(Semaphore::new(1));
            let s2 = sem.clone();
            let t = loom::thread::spawn(move || drop(s2.acquire()));
            drop(sem.acquire());
            t.join().unwrap();
            assert_eq!(sem.state.load(Ordering::SeqCst), ONE);
        });
    }

    /// A waiter unwound at its park (its ticket dropped unsettled, as the unwind does; see
    /// `mutex.rs`) either leaves the queue or returns the permit it was handed: the permit is
    /// never lost, and the other side never waits forever.
    #[test]
    fn loom_semaphore_waiter_unwound_at_park() {
        loom::model(|| {
            let sem = loom::sync::Arc::new(Semaphore::new(1));
            let s2 = sem.clone();
            let t = loom::thread::spawn(move || match s2.queue_up(false) {
                Queued::Took => s2.release(1),
                Queued::Expired => unreachable!(),
                Queued::Waiting(ticket) => drop(ticket),
            });
            drop(sem.acquire());
            t.join().unwrap();
            assert_eq!(sem.state.load(Ordering::SeqCst), ONE);
        });
    }
}
