//! [`Mutex`]: Go's `sync.Mutex` (normal and starvation modes) with std's guard API.
//!
//! # The state word
//! ```text
//!   bit 0  LOCKED    someone owns the mutex
//!   bit 1  PARKED    the wait queue is not empty
//!   bit 2  STARVING  starvation mode: unlock hands ownership to the queue's head
//! ```
//! Invariants, whenever the queue lock is free: `PARKED` ⇔ the queue is not empty;
//! `STARVING` ⇒ `LOCKED` and `PARKED`. The word changes in three ways only: a locker's
//! compare-and-swap that sets `LOCKED` when `LOCKED` and `STARVING` are clear; the unlock fast
//! path's `LOCKED → 0`; and everything else under the queue lock (`waiter.rs`).
//!
//! # Protocol
//! 1. `lock`: a preemption point, then one compare-and-swap `0 → LOCKED`. `unlock`: one
//!    compare-and-swap `LOCKED → 0`, which fails exactly when someone waits.
//! 2. Slow lock: while the mutex is free and not starving, barge in (set `LOCKED`), whoever
//!    is queued. Otherwise spin a few rounds ([`SPINS`]; not when starving, nor on a runtime
//!    with one processor), then, under the queue lock, re-check that it is still locked, set
//!    `PARKED`, and queue at the back (first wait) or at the front (a waiter woken earlier
//!    that lost the race: it keeps its place, Go's LIFO rule). A waiter that re-queues after
//!    waiting more than [`STARVATION_THRESHOLD`] in all also sets `STARVING`.
//! 3. Slow unlock, under the queue lock: pop the head waiter. In **normal mode** clear
//!    `LOCKED` (`PARKED` stays if more wait) and wake it with `RETRY`: it competes with
//!    newcomers, which usually win, since they are already running. In **starvation mode**
//!    keep `LOCKED` set and wake it with `HANDOFF`: it owns the mutex without touching the
//!    word, and newcomers, seeing `LOCKED`, queue at the tail. The mode ends when the popped
//!    waiter was the last, or had waited less than the threshold (Go's exit rule: starvation
//!    mode is slow, and two goroutines could otherwise stay in lock-step in it).
//!
//! This is Go's `sync/mutex.go` policy. Normal mode is much faster (a goroutine can take the
//! mutex many times in a row); starvation mode bounds the wait of the queue's head.
//!
//! A waiter that leaves (it is unwound at shutdown, the only way to leave a `lock`) clears
//! `PARKED`/`STARVING` if it was the last; one that was handed the mutex unlocks it; one woken
//! to retry passes the wake-up on (it locks and unlocks if the mutex is free).
//!
//! Rejected: Go's `mutexWoken` bit (an unlock does not wake a second waiter while a woken one
//! is on its way): without it a run of unlocks can wake a waiter each, which costs a wake-up,
//! never correctness; a waiter that loses re-queues at the front. Go's counted waiters in the
//! word with a separate semaphore: see `waiter.rs` (it cannot cancel a wait).
//!
//! **No poisoning.** A panic while the guard is held unlocks the mutex and the next `lock`
//! succeeds (parking_lot's and Go's choice): a poisoned lock mostly turns one panic into many,
//! and goroutines that panic are common in a runtime that catches panics per goroutine.

use super::waiter::{rt, Dying, Leave, Outcome, Queue, Ticket, WaitQueue, Wakes};
use crate::loom::{AtomicU32, Ordering};
use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

const LOCKED: u32 = 1;
const PARKED: u32 = 2;
const STARVING: u32 = 4;

/// Wake-up tokens: the mutex is yours (starvation mode); try to lock again (normal mode).
const HANDOFF: u32 = 1;
const RETRY: u32 = 2;

/// A waiter that has waited this long in all switches the mutex to starvation mode when it
/// loses again (Go's `starvationThresholdNs`, 1 ms). Shorter: more hand-offs, each of which
/// costs a full wake-up while the mutex stays idle, cutting throughput; longer: the worst
/// wait of a goroutine grows. Zero in loom models, so they reach the hand-off paths.
#[cfg(not(loom))]
pub(crate) const STARVATION_THRESHOLD: Duration = Duration::from_millis(1);
#[cfg(loom)]
pub(crate) const STARVATION_THRESHOLD: Duration = Duration::ZERO;

/// Spin rounds before queueing (`1, 2, 4, .., 64` pause instructions, 127 in all, about
/// 1.8 µs here; Go spins 4 × 30), unless the mutex is starving or the runtime has one
/// processor (the holder cannot run while we spin). A park costs far more than that: the
/// unlocker's slow path, a wake-up, and when a processor runs out of goroutines a thread's.
/// Measured with 8 goroutines on 2 processors (benches/compare's `mutex`), under background
/// load: 4 rounds (15 pauses) parked thousands of times per million locks, 78 ns per lock;
/// 7 rounds, 40 ns (10 rounds: 35). The price is paid by a pair of goroutines on 2
/// processors, where the loser parking early lets the winner run alone: 18 → 22 ns. Spins
/// also while others are queued, as Go does: the head is woken by the next unlock anyway.
#[cfg(not(loom))]
const SPINS: u32 = 7;
#[cfg(loom)]
const SPINS: u32 = 1; // one `yield_now` in loom models

/// Times any mutex entered starvation mode (for tests and diagnostics).
static STARVATION_ENTRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times a [`Mutex`] of this process switched to starvation mode. Not a stable
/// API: for tests and diagnostics.
#[doc(hidden)]
pub fn starvation_entries() -> u64 {
    STARVATION_ENTRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// The lock without the data: the state word and the wait queue (also used by `Condvar`).
pub(crate) struct RawMutex {
    state: AtomicU32,
    queue: WaitQueue,
}

impl RawMutex {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> RawMutex {
        RawMutex {
            state: AtomicU32::new(0),
            queue: WaitQueue::new(()),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> RawMutex {
        RawMutex {
            state: AtomicU32::new(0),
            queue: WaitQueue::new(()),
        }
    }

    pub(crate) fn lock(&self) {
        rt::preempt_point();
        if self
            .state
            .compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
    }

    pub(crate) fn try_lock(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (LOCKED | STARVING) != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                s | LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(x) => s = x,
            }
        }
    }

    /// # Safety
    /// The caller owns the lock (it locked it, or took over a guard that did).
    pub(crate) unsafe fn unlock(&self) {
        if self
            .state
            .compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
    }

    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    #[cold]
    fn lock_slow(&self) {
        let mut since: Option<Instant> = None;
        let mut spins = 0;
        let mut may_spin = None;
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            // Step 2: barge in while free and not starving.
            if s & (LOCKED | STARVING) == 0 {
                match self.state.compare_exchange_weak(
                    s,
                    s | LOCKED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return,
                    Err(x) => {
                        s = x;
                        continue;
                    }
                }
            }
            if s & STARVING == 0 && spins < SPINS && *may_spin.get_or_insert_with(rt::may_spin) {
                rt::spin(spins);
                spins += 1;
                s = self.state.load(Ordering::Relaxed);
                continue;
            }
            // Queue. A waiter that already waited goes to the front, and after the threshold
            // switches the mutex to starvation mode.
            let start = since.unwrap_or_else(Instant::now);
            let Some(ticket) = self.queue_up(start, since.is_some()) else {
                s = self.state.load(Ordering::Relaxed);
                continue; // freed meanwhile: barge again
            };
            since = Some(start);
            match ticket.wait(None, Dying::Grace("goro::sync::Mutex::lock")) {
                // LOCKED was kept set for us; the unlocker's critical section happens-before
                // our acquire load of the token.
                Outcome::Woken(HANDOFF) => return,
                Outcome::Woken(_) => {
                    spins = 0;
                    s = self.state.load(Ordering::Relaxed);
                }
                Outcome::TimedOut | Outcome::Dying => unreachable!("no deadline; Grace"),
            }
        }
    }

    /// Step 2's queueing, under the queue lock: if the mutex is still locked, sets `PARKED`
    /// (and `STARVING` for a re-queued waiter whose wait since `start` passed the threshold)
    /// and queues the caller; `None` if it was freed meanwhile.
    fn queue_up(&self, start: Instant, requeue: bool) -> Option<Ticket<'_, (), RawMutex>> {
        let starving = requeue && start.elapsed() >= STARVATION_THRESHOLD;
        let q = self.queue.lock();
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & LOCKED == 0 {
                return None; // STARVING ⇒ LOCKED, so it is free to barge into
            }
            let new = s | PARKED | if starving { STARVING } else { 0 };
            match self
                .state
                .compare_exchange(s, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => s = x,
            }
        }
        if starving && s & STARVING == 0 {
            STARVATION_ENTRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Some(self.queue.push(q, 0, Some(start), requeue, self))
    }

    /// Step 3. We own the lock and `PARKED` was set (the fast path failed), so until we
    /// store, no one else changes the word: lockers see `LOCKED` and queue under the queue
    /// lock, which we hold, and a leaving waiter takes that lock too.
    #[cold]
    fn unlock_slow(&self) {
        let mut q = self.queue.lock();
        let s = self.state.load(Ordering::Relaxed);
        debug_assert_ne!(s & LOCKED, 0, "unlock of an unlocked goro::sync::Mutex");
        let starving = s & STARVING != 0;
        let Some(head_since) = q.front().map(|w| w.since) else {
            // The last waiter left between our fast path and here, clearing PARKED.
            debug_assert_eq!(s, LOCKED);
            self.state.store(0, Ordering::Release);
            return;
        };
        let more = q.len() > 1;
        let parked = if more { PARKED } else { 0 };
        let wake = if starving {
            let stay = more && head_since.is_some_and(|t| t.elapsed() >= STARVATION_THRESHOLD);
            let new = LOCKED | parked | if stay { STARVING } else { 0 };
            self.state.store(new, Ordering::Release);
            q.pop_grant(HANDOFF)
        } else {
            self.state.store(parked, Ordering::Release);
            q.pop_grant(RETRY)
        };
        #[cfg(debug_assertions)]
        self.check_invariants(&q);
        drop(q);
        if let Some(w) = wake {
            w.wake();
        }
    }
}

impl RawMutex {
    /// Asserts the word's invariants (module comment); call under the queue lock.
    #[cfg(any(test, debug_assertions))]
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    fn check_invariants(&self, q: &Queue<()>) {
        let s = self.state.load(Ordering::Relaxed);
        assert_eq!(
            s & PARKED != 0,
            !q.is_empty(),
            "PARKED ⇔ waiters (state {s:#b})"
        );
        if s & STARVING != 0 {
            assert_eq!(
                s & (LOCKED | PARKED),
                LOCKED | PARKED,
                "STARVING ⇒ LOCKED, PARKED"
            );
        }
    }
}

impl Leave<()> for RawMutex {
    fn removed(&self, _kind: u32, q: &mut Queue<()>) -> Wakes {
        if q.is_empty() {
            // Atomic: a barging locker may set LOCKED meanwhile.
            self.state
                .fetch_and(!(PARKED | STARVING), Ordering::Relaxed);
        }
        #[cfg(debug_assertions)]
        self.check_invariants(q);
        Wakes::none()
    }

    fn abandoned(&self, _kind: u32, token: u32) {
        if token == HANDOFF {
            // SAFETY: the hand-off made us the owner.
            unsafe { self.unlock() };
        } else if self.try_lock() {
            // Woken to retry: pass the wake-up on to the next waiter, if the mutex is free
            // (if it is not, its owner's unlock wakes the next).
            // SAFETY: just locked.
            unsafe { self.unlock() };
        }
    }
}

/// A mutual-exclusion lock that parks the calling goroutine (Go's `sync.Mutex` with std's
/// `Mutex<T>` API, without poisoning).
///
/// ```
/// # extern crate goro_runtime as goro;
/// use goro::sync::Mutex;
/// use std::sync::Arc;
/// goro::run(|| {
///     let m = Arc::new(Mutex::new(0));
///     let hs: Vec<_> = (0..8)
///         .map(|_| {
///             let m = m.clone();
///             goro::spawn(move || *m.lock() += 1)
///         })
///         .collect();
///     hs.into_iter().for_each(|h| h.join().unwrap());
///     assert_eq!(*m.lock(), 8);
/// });
/// ```
pub struct Mutex<T: ?Sized> {
    pub(super) raw: RawMutex,
    data: UnsafeCell<T>,
}

// SAFETY: the mutex owns a `T`, so moving it moves a `T`.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: only the one lock owner gets at the data, and the lock's acquire/release orders
// successive owners; owners on different threads each get `&mut T`, so `T: Send` is needed
// (as for std's `Mutex`), not `T: Sync`.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    /// A new unlocked mutex holding `value`.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            raw: RawMutex::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// A new unlocked mutex holding `value`.
    #[cfg(loom)]
    pub fn new(value: T) -> Mutex<T> {
        Mutex {
            raw: RawMutex::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// The data, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks the mutex, parking the goroutine (or blocking the thread) until it is free. A
    /// preemption point. Locking a mutex the caller already holds waits forever, as in Go.
    ///
    /// During a runtime's shutdown, a goroutine being unwound whose destructor locks a mutex
    /// held elsewhere waits up to one second for a plain thread to release it, then aborts
    /// the process with a `fatal error` (the holder is a goroutine that cannot run again).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.raw.lock();
        MutexGuard::new(self)
    }

    /// Locks the mutex if it is free now. Fails in starvation mode even if it is momentarily
    /// free: the queue's head is owed the lock.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.raw.try_lock().then(|| MutexGuard::new(self))
    }

    /// Whether someone holds the lock now (a racy snapshot).
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// The data, through a unique borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Mutex<T> {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

/// Proof of holding a [`Mutex`]: derefs to the data; unlocks when dropped. It may be dropped
/// on another OS thread than the one that locked (goroutines migrate), and even sent to
/// another goroutine.
#[must_use = "the mutex unlocks as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    pub(super) mutex: &'a Mutex<T>,
    /// `Sync` only if `T: Sync` (a shared guard hands out `&T`).
    _marker: PhantomData<&'a mut T>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    pub(super) fn new(mutex: &'a Mutex<T>) -> MutexGuard<'a, T> {
        MutexGuard {
            mutex,
            _marker: PhantomData,
        }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we own the lock, so no one else touches the data.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard owns the lock.
        unsafe { self.mutex.raw.unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    //! loom models of the state-word protocol with the real wait queue, parking on loom's
    //! threads: mutual exclusion (loom's `UnsafeCell` checks every access is ordered), no
    //! lost wake-up (a lost one deadlocks the model, which loom reports), and both unlock
    //! modes (the starvation threshold is zero under loom, so a waiter that loses once
    //! switches the mutex to hand-off).
    use super::*;

    #[test]
    fn state_bits_do_not_overlap() {
        assert_eq!(LOCKED & PARKED, 0);
        assert_eq!((LOCKED | PARKED) & STARVING, 0);
        assert_ne!(HANDOFF, RETRY);
    }

    #[cfg(loom)]
    fn locker(m: &Mutex<loom::cell::UnsafeCell<u32>>, times: usize) {
        for _ in 0..times {
            let g = m.lock();
            // SAFETY: the guard gives exclusive access; loom checks it.
            g.with_mut(|p| unsafe { *p += 1 });
            drop(g);
            m.raw.check_invariants(&m.raw.queue.lock());
        }
    }

    #[cfg(loom)]
    fn final_state(m: &Mutex<loom::cell::UnsafeCell<u32>>) -> (u32, u32) {
        let s = m.raw.state.load(Ordering::SeqCst);
        let g = m.lock();
        // SAFETY: as above.
        (s, g.with(|p| unsafe { *p }))
    }

    #[cfg(loom)]
    #[test]
    fn loom_mutex_two_lockers() {
        loom::model(|| {
            let m = loom::sync::Arc::new(Mutex::new(loom::cell::UnsafeCell::new(0u32)));
            let m2 = m.clone();
            let t = loom::thread::spawn(move || locker(&m2, 1));
            locker(&m, 1);
            t.join().unwrap();
            assert_eq!(
                final_state(&m),
                (0, 2),
                "state word left dirty, or a lost increment"
            );
        });
    }

    /// One side locks twice: the other can be woken to retry, lose to the re-lock, re-queue
    /// at the front in starvation mode, and get the mutex handed off.
    #[cfg(loom)]
    #[test]
    fn loom_mutex_relock_and_handoff() {
        loom::model(|| {
            let m = loom::sync::Arc::new(Mutex::new(loom::cell::UnsafeCell::new(0u32)));
            let m2 = m.clone();
            let t = loom::thread::spawn(move || locker(&m2, 1));
            locker(&m, 2);
            t.join().unwrap();
            assert_eq!(final_state(&m), (0, 3));
        });
    }

    /// A waiter unwound at its park (a goroutine still waiting when its runtime shuts down):
    /// the model queues it as `lock` does and then drops its ticket unsettled, which is what
    /// the unwind does, at any point relative to the owner's unlocks. It must leave the queue,
    /// or pass on the hand-off or retry it was given: the owner never waits forever, and the
    /// word ends clean. (A real panic would unwind across loom's thread switches, which share
    /// one OS thread's panic count.)
    #[cfg(loom)]
    #[test]
    fn loom_mutex_waiter_unwound_at_park() {
        loom::model(|| {
            let m = loom::sync::Arc::new(Mutex::new(loom::cell::UnsafeCell::new(0u32)));
            let m2 = m.clone();
            let t = loom::thread::spawn(move || {
                // First wait, then a re-queue that switches to starvation mode (threshold 0).
                for requeue in [false, true] {
                    if let Some(ticket) = m2.raw.queue_up(Instant::now(), requeue) {
                        drop(ticket);
                    }
                    m2.raw.check_invariants(&m2.raw.queue.lock());
                }
            });
            locker(&m, 2);
            t.join().unwrap();
            assert_eq!(final_state(&m), (0, 2));
        });
    }

    /// Two waiters at once (one side re-locking): PARKED must stay set while one remains
    /// queued. Three threads: the preemption bound is capped at 3.
    #[cfg(loom)]
    #[test]
    fn loom_mutex_three_lockers() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let m = loom::sync::Arc::new(Mutex::new(loom::cell::UnsafeCell::new(0u32)));
            let ts: Vec<_> = (0..2)
                .map(|_| {
                    let m2 = m.clone();
                    loom::thread::spawn(move || locker(&m2, 1))
                })
                .collect();
            locker(&m, 2);
            for t in ts {
                t.join().unwrap();
            }
            assert_eq!(final_state(&m), (0, 4));
        });
    }
}
