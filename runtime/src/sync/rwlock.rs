//! [`RwLock`]: a reader-writer lock with Go's `RWMutex` fairness and std's guard API.
//!
//! # The state word
//! ```text
//!   bit 0     WRITER          a writer holds the lock
//!   bit 1     WRITER_WAITING  a writer is queued: new readers queue too
//!   bit 2     PARKED          the wait queue is not empty
//!   bits 3..  readers holding the lock
//! ```
//! Invariants, whenever the queue lock is free: `PARKED` ⇔ the queue is not empty;
//! `WRITER_WAITING` ⇔ a writer is queued; `WRITER` ⇒ no readers; a queued reader ⇒ `WRITER` or
//! `WRITER_WAITING` (it has a reason to wait).
//!
//! # Protocol
//! 1. `read` fast path: if neither `WRITER` nor `WRITER_WAITING`, one compare-and-swap adds a
//!    reader. `write` fast path: one compare-and-swap `0 → WRITER`. Unlocks: a reader's
//!    fetch-and-subtract, a writer's compare-and-swap `WRITER → 0`; each goes to the slow path
//!    only when someone is queued (the last reader out, or the writer, sees `PARKED`).
//! 2. Slow acquire, under the queue lock: re-check, set `PARKED` (and, for a writer,
//!    `WRITER_WAITING`) in the same compare-and-swap that observed the lock busy, and queue.
//!    Woken waiters do not retry: the waker granted them the lock (hand-off), so a woken
//!    reader or writer owns it when its token arrives.
//! 3. Grants, under the queue lock (`grant_locked`), in one compare-and-swap on the word:
//!    - a writer unlocking hands the lock to **every queued reader** if any, else to the first
//!      queued writer (Go: readers that waited for a writer go next, so readers cannot starve);
//!    - otherwise (last reader out, a waiter leaving), the first queued writer gets it once no
//!      reader holds it; queued readers get it if no writer is queued or holds it.
//!
//! So **writers are not starved**: once a writer waits, `WRITER_WAITING` stops new readers
//! (they queue behind it), the readers inside drain, and the last one hands the lock to the
//! writer. This is Go's `RWMutex` rule ("if any goroutine calls Lock while the lock is already
//! held by one or more readers, concurrent calls to RLock will block until the writer has
//! acquired (and released) the lock"). As in Go, a reader must not lock again for reading
//! while it holds a read lock (a writer queued in between makes that a deadlock).
//!
//! Rejected: Go's implementation (a writer `Mutex`, reader/writer semaphores and a negative
//! reader count): its semaphores cannot cancel a wait (`waiter.rs`); and the parking_lot
//! scheme where woken waiters retry instead of being handed the lock: each retry can lose
//! to a newcomer, which the `WRITER_WAITING` rule would then have to re-arbitrate.

use super::waiter::{rt, Dying, Leave, Outcome, Queue, Ticket, WaitQueue, Wakes};
use crate::loom::{AtomicUsize, Ordering};
use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};

const WRITER: usize = 1;
const WRITER_WAITING: usize = 2;
const PARKED: usize = 4;
const ONE_READER: usize = 8;
const READERS: usize = !(ONE_READER - 1);

/// Waiter kinds.
const READ: u32 = 0;
const WRITE: u32 = 1;

/// The one token: the lock was granted (the granter updated the word for us).
const GRANTED: u32 = 1;

/// Spin rounds before queueing while only a holder is in the way (as `Mutex`).
#[cfg(not(loom))]
const SPINS: u32 = 4;
#[cfg(loom)]
const SPINS: u32 = 1; // one `yield_now` in loom models

pub(crate) struct RawRwLock {
    state: AtomicUsize,
    queue: WaitQueue,
}

impl RawRwLock {
    #[cfg(not(loom))]
    const fn new() -> RawRwLock {
        RawRwLock {
            state: AtomicUsize::new(0),
            queue: WaitQueue::new(()),
        }
    }

    #[cfg(loom)]
    fn new() -> RawRwLock {
        RawRwLock {
            state: AtomicUsize::new(0),
            queue: WaitQueue::new(()),
        }
    }

    fn read(&self) {
        rt::preempt_point();
        let s = self.state.load(Ordering::Relaxed);
        if s & (WRITER | WRITER_WAITING) == 0 {
            if let Some(n) = s.checked_add(ONE_READER) {
                if self
                    .state
                    .compare_exchange_weak(s, n, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
            }
        }
        self.read_slow();
    }

    fn try_read(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & (WRITER | WRITER_WAITING) != 0 {
                return false;
            }
            let n = s
                .checked_add(ONE_READER)
                .expect("goro::sync::RwLock: too many readers");
            match self
                .state
                .compare_exchange_weak(s, n, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(x) => s = x,
            }
        }
    }

    #[cold]
    fn read_slow(&self) {
        let mut spins = 0;
        loop {
            if self.try_read() {
                return;
            }
            let mut s = self.state.load(Ordering::Relaxed);
            if s & PARKED == 0 && spins < SPINS {
                rt::spin(spins);
                spins += 1;
                continue;
            }
            let q = self.queue.lock();
            s = self.state.load(Ordering::Relaxed);
            let valid = loop {
                if s & (WRITER | WRITER_WAITING) == 0 {
                    break false; // a reader may enter now
                }
                match self.state.compare_exchange(
                    s,
                    s | PARKED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break true,
                    Err(x) => s = x,
                }
            };
            if !valid {
                drop(q);
                continue;
            }
            let ticket = self.queue.push(q, READ, None, false, self);
            match ticket.wait(None, Dying::Grace("goro::sync::RwLock::read")) {
                Outcome::Woken(GRANTED) => return,
                o => unreachable!("{o:?}"),
            }
        }
    }

    fn write(&self) {
        rt::preempt_point();
        if self
            .state
            .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.write_slow();
        }
    }

    /// Free for a writer: no holder and no queued writer (a lone `PARKED` is a grant in
    /// progress; it does not block).
    fn try_write(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & !PARKED != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                s | WRITER,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(x) => s = x,
            }
        }
    }

    #[cold]
    fn write_slow(&self) {
        let mut spins = 0;
        loop {
            if self.try_write() {
                return;
            }
            if self.state.load(Ordering::Relaxed) & PARKED == 0 && spins < SPINS {
                rt::spin(spins);
                spins += 1;
                continue;
            }
            let Some(ticket) = self.write_queue_up() else {
                return; // acquired under the queue lock
            };
            match ticket.wait(None, Dying::Grace("goro::sync::RwLock::write")) {
                Outcome::Woken(GRANTED) => return,
                o => unreachable!("{o:?}"),
            }
        }
    }

    /// A writer's step 2: under the queue lock, takes the lock if it is free, or sets
    /// `WRITER_WAITING | PARKED` and queues the caller.
    fn write_queue_up(&self) -> Option<Ticket<'_, (), RawRwLock>> {
        let q = self.queue.lock();
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let (new, acquired) = if s & !PARKED == 0 {
                (s | WRITER, true)
            } else {
                (s | WRITER_WAITING | PARKED, false)
            };
            match self
                .state
                .compare_exchange(s, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) if acquired => return None,
                Ok(_) => break,
                Err(x) => s = x,
            }
        }
        Some(self.queue.push(q, WRITE, None, false, self))
    }

    /// # Safety
    /// The caller holds a read lock.
    unsafe fn read_unlock(&self) {
        // Release: our reads happen-before the next writer's writes; acquire: the slow path
        // then sees the other readers' releases.
        let prev = self.state.fetch_sub(ONE_READER, Ordering::AcqRel);
        debug_assert_ne!(prev & READERS, 0, "read unlock of an unread RwLock");
        if prev & READERS == ONE_READER && prev & PARKED != 0 {
            self.unlock_slow(false);
        }
    }

    /// # Safety
    /// The caller holds the write lock.
    unsafe fn write_unlock(&self) {
        if self
            .state
            .compare_exchange(WRITER, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.unlock_slow(true);
        }
    }

    #[cold]
    fn unlock_slow(&self, writer: bool) {
        let mut q = self.queue.lock();
        let wakes = self.grant_locked(&mut q, writer);
        drop(q);
        wakes.wake();
    }

    /// Step 3, under the queue lock: grants what can be granted and makes the word match the
    /// queue, in one compare-and-swap (lock-free readers and unlockers may race with it).
    /// `release_writer`: the caller is the writer unlocking; its `WRITER` bit goes in the
    /// same update.
    fn grant_locked(&self, q: &mut Queue<()>, release_writer: bool) -> Wakes {
        #[derive(Clone, Copy)]
        enum Grant {
            Nothing,
            Readers,
            Writer,
        }
        let writers = q.iter().filter(|w| w.kind == WRITE).count();
        let readers = q.len() - writers;
        let mut s = self.state.load(Ordering::Acquire);
        let grant = loop {
            debug_assert!(!release_writer || s & WRITER != 0);
            let base = if release_writer { s & !WRITER } else { s };
            let grant = if base & WRITER != 0 {
                Grant::Nothing // another writer holds it; its unlock grants
            } else if readers > 0 && (release_writer || writers == 0) {
                Grant::Readers
            } else if writers > 0 && base & READERS == 0 {
                Grant::Writer
            } else {
                Grant::Nothing
            };
            let (holders, left, writers_left) = match grant {
                Grant::Nothing => (base & (WRITER | READERS), q.len(), writers),
                Grant::Readers => (
                    (base & READERS)
                        .checked_add(readers * ONE_READER)
                        .expect("goro::sync::RwLock: too many readers"),
                    writers,
                    writers,
                ),
                Grant::Writer => (WRITER, q.len() - 1, writers - 1),
            };
            let new = holders
                | if writers_left > 0 { WRITER_WAITING } else { 0 }
                | if left > 0 { PARKED } else { 0 };
            match self
                .state
                .compare_exchange(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break grant,
                Err(x) => s = x,
            }
        };
        match grant {
            Grant::Nothing => Wakes::none(),
            Grant::Readers => q.grant_where(|w| w.kind == READ, GRANTED),
            Grant::Writer => Wakes::one(q.pop_first_grant(|w| w.kind == WRITE, GRANTED)),
        }
    }
}

impl Leave<()> for RawRwLock {
    fn removed(&self, _kind: u32, q: &mut Queue<()>) -> Wakes {
        // A leaving writer may unblock queued readers; anyone leaving may empty the queue.
        self.grant_locked(q, false)
    }

    fn abandoned(&self, kind: u32, _token: u32) {
        // SAFETY: the grant made us a holder of this kind.
        unsafe {
            if kind == WRITE {
                self.write_unlock();
            } else {
                self.read_unlock();
            }
        }
    }
}

/// A reader-writer lock that parks the calling goroutine: many readers or one writer
/// (Go's `sync.RWMutex` fairness, std's `RwLock<T>` API, no poisoning).
///
/// ```
/// # extern crate goro_runtime as goro;
/// use goro::sync::RwLock;
/// goro::run(|| {
///     let l = RwLock::new(vec![1]);
///     {
///         let (a, b) = (l.read(), l.read());
///         assert_eq!(a.len() + b.len(), 2);
///         assert!(l.try_write().is_none());
///     }
///     l.write().push(2);
///     assert_eq!(*l.read(), [1, 2]);
/// });
/// ```
pub struct RwLock<T: ?Sized> {
    raw: RawRwLock,
    data: UnsafeCell<T>,
}

// SAFETY: the lock owns a `T`.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: readers on several threads share `&T` (needs `T: Sync`); a writer gets `&mut T` on
// any thread (needs `T: Send`); the word's acquire/release orders holders. std's bounds.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

impl<T> RwLock<T> {
    /// A new unlocked lock holding `value`.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> RwLock<T> {
        RwLock {
            raw: RawRwLock::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// A new unlocked lock holding `value`.
    #[cfg(loom)]
    pub fn new(value: T) -> RwLock<T> {
        RwLock {
            raw: RawRwLock::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// The data, consuming the lock.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading, parking while a writer holds the lock or waits for it. A
    /// preemption point. At shutdown, as [`Mutex::lock`](super::Mutex::lock).
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.raw.read();
        RwLockReadGuard { lock: self }
    }

    /// Locks for writing, parking until no one else holds the lock. A preemption point. At
    /// shutdown, as [`Mutex::lock`](super::Mutex::lock).
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.raw.write();
        RwLockWriteGuard { lock: self }
    }

    /// Locks for reading if no writer holds or waits for the lock now.
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        self.raw.try_read().then(|| RwLockReadGuard { lock: self })
    }

    /// Locks for writing if no one holds or waits for the lock now.
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        self.raw
            .try_write()
            .then(|| RwLockWriteGuard { lock: self })
    }

    /// The data, through a unique borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> RwLock<T> {
        RwLock::new(T::default())
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(value: T) -> RwLock<T> {
        RwLock::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        match self.try_read() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

/// A read lock on a [`RwLock`]; unlocks when dropped (on any thread).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
}

/// The write lock on a [`RwLock`]; unlocks when dropped (on any thread).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read lock is held: no writer, so shared access is fine.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard holds a read lock.
        unsafe { self.lock.raw.read_unlock() };
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write lock is held: no one else has access.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard holds the write lock.
        unsafe { self.lock.raw.write_unlock() };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    //! loom model: a reader and a writer against a reader, through the hand-off grants.
    use super::*;

    #[test]
    fn state_bits_do_not_overlap() {
        assert_eq!(WRITER & WRITER_WAITING, 0);
        assert_eq!((WRITER | WRITER_WAITING) & PARKED, 0);
        assert_eq!((WRITER | WRITER_WAITING | PARKED) & READERS, 0);
    }

    #[cfg(loom)]
    #[test]
    fn loom_rwlock_writer_and_readers() {
        loom::model(|| {
            let l = loom::sync::Arc::new(RwLock::new(loom::cell::UnsafeCell::new(0u32)));
            let l2 = l.clone();
            let w = loom::thread::spawn(move || {
                let g = l2.write();
                // SAFETY: the write guard gives exclusive access; loom checks it.
                g.with_mut(|p| unsafe { *p += 1 });
            });
            let seen = {
                let g = l.read();
                // SAFETY: a read guard: shared access only.
                g.with(|p| unsafe { *p })
            };
            assert!(seen <= 1);
            w.join().unwrap();
            let g = l.read();
            // SAFETY: as above.
            assert_eq!(g.with(|p| unsafe { *p }), 1);
            assert_eq!(l.raw.state.load(Ordering::SeqCst), ONE_READER);
        });
    }

    /// A writer queued behind a reader is unwound at its park (its ticket dropped unsettled,
    /// see `mutex.rs`) while a second reader may be queued behind it. The departure must let
    /// that reader in at once (it waited only because of the writer): here the first reader
    /// keeps its lock until the second is done, so anything else deadlocks. Three threads:
    /// the preemption bound is capped at 3.
    #[cfg(loom)]
    #[test]
    fn loom_rwlock_writer_unwound_unblocks_readers() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let l = loom::sync::Arc::new(RwLock::new(()));
            let r1 = l.read();
            let l2 = l.clone();
            let w = loom::thread::spawn(move || {
                let ticket = l2.raw.write_queue_up().expect("a reader holds the lock");
                drop(ticket);
            });
            let l3 = l.clone();
            let r2 = loom::thread::spawn(move || drop(l3.read()));
            w.join().unwrap();
            r2.join().unwrap();
            drop(r1);
            assert_eq!(l.raw.state.load(Ordering::SeqCst), 0);
        });
    }
}
