//! [`Condvar`]: a condition variable for [`Mutex`](super::Mutex), std's API.
//!
//! Protocol (the wait queue of `waiter.rs`, token `NOTIFIED`):
//! 1. `wait`: queue a waiter **before** unlocking the mutex, then unlock, park until
//!    notified (or the deadline), and lock again. A notifier that changed the condition under
//!    the mutex locked it after our unlock, so it finds us queued: no lost notification.
//! 2. `notify_one` pops the queue's head and grants it `NOTIFIED`; `notify_all` pops everyone.
//!    Both skip the queue lock when the waiter count (changed under the queue lock, read
//!    without it) is zero; the count is read after the notifier's own use of the mutex,
//!    which orders it after the increment of any waiter that checked the condition first.
//! 3. A timed-out waiter removes itself; a waiter unwound at shutdown after being notified
//!    passes the notification on (`notify_one`), so it is not lost on a dead goroutine.
//!
//! Waiters are woken in FIFO order. Spurious wake-ups do not happen in normal operation but
//! are allowed (std's contract), and do happen in one case: during a runtime's shutdown a
//! goroutine being unwound returns from `wait` at once without waiting (`wait_while` and
//! `wait_timeout_while` return with the condition possibly still true, `wait_timeout` reports
//! a timeout), since nothing could notify it.
//!
//! Rejected: Go's ticket-based `notifyList` (waiters take a ticket number, notifiers advance
//! a counter): it exists so Go's `Cond` can wait without allocating; here a waiter already
//! has its queue record, and FIFO order falls out of the queue.

use super::mutex::MutexGuard;
use super::waiter::{rt, Dying, Leave, Outcome, Queue, WaitQueue, Wakes};
use crate::loom::{AtomicUsize, Ordering};
use std::fmt;
use std::time::{Duration, Instant};

const NOTIFIED: u32 = 1;

/// A condition variable: goroutines (or threads) wait until notified, releasing a
/// [`Mutex`](super::Mutex) meanwhile.
///
/// ```
/// # extern crate goro_runtime as goro;
/// use goro::sync::{Condvar, Mutex};
/// use std::sync::Arc;
/// goro::run(|| {
///     let pair = Arc::new((Mutex::new(false), Condvar::new()));
///     let p2 = pair.clone();
///     goro::spawn(move || {
///         *p2.0.lock() = true;
///         p2.1.notify_one();
///     });
///     let (m, cv) = &*pair;
///     let ready = cv.wait_while(m.lock(), |ready| !*ready);
///     assert!(*ready);
/// });
/// ```
pub struct Condvar {
    queue: WaitQueue,
    /// Waiters in the queue: changed under the queue lock, read without it by notifiers.
    waiters: AtomicUsize,
}

/// Whether a timed wait ended because its time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait timed out (std's meaning: for the `_while` forms, the condition still
    /// held when the time ran out).
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// A condition variable with no waiters.
    #[cfg(not(loom))]
    pub const fn new() -> Condvar {
        Condvar {
            queue: WaitQueue::new(()),
            waiters: AtomicUsize::new(0),
        }
    }

    /// A condition variable with no waiters.
    #[cfg(loom)]
    pub fn new() -> Condvar {
        Condvar {
            queue: WaitQueue::new(()),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Unlocks the guard's mutex, parks until notified, and locks it again.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait_until(guard, None).0
    }

    /// Waits while `condition` holds (checked first, and after each wake-up).
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> MutexGuard<'a, T> {
        while condition(&mut *guard) {
            if rt::is_dying() {
                break; // shutdown: see the module comment
            }
            guard = self.wait(guard);
        }
        guard
    }

    /// Like [`wait`](Self::wait), but for at most `dur`.
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let (g, timed_out) = self.wait_until(guard, Instant::now().checked_add(dur));
        (g, WaitTimeoutResult(timed_out))
    }

    /// Waits while `condition` holds, for at most `dur` in all.
    pub fn wait_timeout_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        dur: Duration,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let deadline = Instant::now().checked_add(dur);
        loop {
            if !condition(&mut *guard) {
                return (guard, WaitTimeoutResult(false));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || rt::is_dying() {
                return (guard, WaitTimeoutResult(true));
            }
            guard = self.wait_until(guard, deadline).0;
        }
    }

    /// Wakes the longest-waiting waiter, if any.
    pub fn notify_one(&self) {
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut q = self.queue.lock();
        let w = q.pop_grant(NOTIFIED);
        if w.is_some() {
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        }
        drop(q);
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut q = self.queue.lock();
        self.waiters.fetch_sub(q.len(), Ordering::SeqCst);
        let all = q.grant_all(NOTIFIED);
        drop(q);
        all.wake();
    }

    /// Step 1. Returns the guard and whether the wait ended without a notification.
    fn wait_until<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        if rt::is_dying() {
            return (guard, true); // shutdown: see the module comment
        }
        let mutex = guard.mutex;
        let q = self.queue.lock();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let ticket = self.queue.push(q, 0, None, false, self);
        std::mem::forget(guard);
        // SAFETY: the guard we just forgot owned the lock; we lock again below before
        // making a new guard.
        unsafe { mutex.raw.unlock() };
        let out = ticket.wait(deadline, Dying::GiveUp);
        mutex.raw.lock();
        (MutexGuard::new(mutex), out != Outcome::Woken(NOTIFIED))
    }
}

impl Leave<()> for Condvar {
    fn removed(&self, _kind: u32, _q: &mut Queue<()>) -> Wakes {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        Wakes::none()
    }

    fn abandoned(&self, _kind: u32, _token: u32) {
        self.notify_one();
    }
}

impl Default for Condvar {
    fn default() -> Condvar {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use crate::sync::Mutex;

    /// The notifier sets the flag under the mutex and notifies (possibly skipping the queue
    /// lock when it sees no waiter): the waiter never misses it.
    #[test]
    fn loom_condvar_no_lost_notification() {
        loom::model(|| {
            let pair = loom::sync::Arc::new((Mutex::new(false), Condvar::new()));
            let p2 = pair.clone();
            let t = loom::thread::spawn(move || {
                *p2.0.lock() = true;
                p2.1.notify_one();
            });
            let (m, cv) = &*pair;
            assert!(*cv.wait_while(m.lock(), |ready| !*ready));
            t.join().unwrap();
        });
    }
}
