//! `Chan<T>`: one channel's state and the send/receive/close algorithm (Go's `hchan` and
//! `chansend`/`chanrecv`/`closechan`, `runtime/chan.go`).
//!
//! Under the channel's lock (`lock.rs`): the buffer (a ring of `cap` values; none for a
//! rendezvous channel, unlimited for an unbounded one), the `closed` flag, and the queues of
//! blocked senders and receivers (`waiter.rs`). The rules, as in Go:
//! - **send**: closed (or every receiver gone) → the value comes back in an error. A blocked
//!   receiver → the value goes straight into its slot and it is woken (no buffer round trip;
//!   for a rendezvous channel this is the only way). Room in the buffer → append. Else block
//!   in `sendq` with the value in the waiter.
//! - **receive**: a buffered value → take the head; if a sender is blocked (the buffer is
//!   full), its value moves to the tail and it is woken, so FIFO order holds. No buffer and a
//!   blocked sender → take its value directly. Closed and drained → `Closed`. Else block in
//!   `recvq`.
//! - **close**: sets `closed`, then completes every blocked receiver with nothing (they
//!   report `Closed`) and every blocked sender with its value still in its waiter (it gets it
//!   back in an error). Buffered values stay receivable.
//!
//! Completing a waiter = claim its selector, fill or empty its slot, unlink it, and after the
//! unlock wake it; the caller collects the selectors to wake so no wake-up happens under the
//! lock. Values are never dropped under the lock either (a `Drop` may do anything).
//!
//! Invariants (under the lock): `recvq` non-empty ⇒ the buffer is empty; `sendq` non-empty ⇒
//! the buffer is full; `closed` ⇒ both queues are empty (after `close` returns).

use super::lock::ChanLock;
use super::waiter::{Selector, WaitQueue, Waiter};
use crate::loom::{AtomicUsize, Ordering};
use std::cell::UnsafeCell;
use std::collections::VecDeque;

/// Whether to check the invariants above at run time: debug builds, and loom models (which
/// run optimised, without debug assertions).
const CHECK: bool = cfg!(any(debug_assertions, loom));

/// `cap` of an unbounded channel.
pub(crate) const UNBOUNDED: usize = usize::MAX;

pub(crate) struct Inner<T> {
    pub(crate) buf: VecDeque<T>,
    pub(crate) closed: bool,
    /// Every `Receiver` was dropped: sends fail (crossbeam's disconnection).
    pub(crate) no_receivers: bool,
    pub(crate) recvq: WaitQueue<T>,
    pub(crate) sendq: WaitQueue<T>,
}

impl<T> Inner<T> {
    /// Asserts the invariants of the module comment (when `CHECK`): called under the lock at
    /// the start of every operation, where they must hold.
    fn check(&self, cap: usize) {
        if CHECK {
            assert!(
                self.recvq.is_empty() || self.buf.is_empty(),
                "chan: receivers wait while values are buffered"
            );
            assert!(
                self.sendq.is_empty() || self.buf.len() == cap,
                "chan: senders wait while the buffer has room"
            );
            assert!(
                !(self.closed || self.no_receivers)
                    || (self.recvq.is_empty() && self.sendq.is_empty()),
                "chan: parties still wait on a closed channel"
            );
        }
    }
}

pub(crate) struct Chan<T> {
    lock: ChanLock,
    inner: UnsafeCell<Inner<T>>,
    pub(crate) cap: usize,
    pub(crate) senders: AtomicUsize,
    pub(crate) receivers: AtomicUsize,
    /// Under loom, the channel's rank in `select`'s lock order (see [`Chan::id`]).
    #[cfg(loom)]
    seq: usize,
}

/// Under loom, numbers the channels in creation order (see [`Chan::id`]). A plain std
/// atomic on purpose: its values differ between loom's executions, but only their order is
/// used, and a model creates its channels in the same order in every execution.
#[cfg(loom)]
static NEXT_SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: `inner` is only accessed under `lock` (or through `&mut`); the waiters it links to
// are accessed under the same lock (`waiter.rs`). Values of `T` move between threads, hence
// `T: Send`; no `&T` is ever shared, so `T: Sync` is not needed.
unsafe impl<T: Send> Send for Chan<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Chan<T> {}

/// What a completed operation must do after unlocking: wake this claimed selector.
pub type Wake = Option<*const Selector>;

/// Why an operation could not complete now.
pub(crate) enum NotNow<T> {
    /// Would block (send: buffer full and no receiver; receive: nothing to take).
    Block(T),
    /// Closed (send: also when every receiver is gone).
    Closed(T),
}

impl<T> Chan<T> {
    pub(crate) fn new(cap: usize) -> Chan<T> {
        Chan {
            lock: ChanLock::new(),
            inner: UnsafeCell::new(Inner {
                buf: VecDeque::with_capacity(if cap == UNBOUNDED { 0 } else { cap.min(1024) }),
                closed: false,
                no_receivers: false,
                recvq: WaitQueue::new(),
                sendq: WaitQueue::new(),
            }),
            cap,
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
            #[cfg(loom)]
            seq: NEXT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Identifies the channel and ranks it in the order `select` takes channel locks: its
    /// address. Under loom, its creation rank instead: addresses come from the heap and
    /// differ between loom's executions, and a lock order that flips from one execution to
    /// the next makes the model nondeterministic (loom then replays a recorded schedule on
    /// different operations, and fails with causality violations that are not in the code).
    pub(crate) fn id(&self) -> usize {
        #[cfg(loom)]
        return self.seq;
        #[cfg(not(loom))]
        return self as *const Chan<T> as usize;
    }

    #[inline]
    pub(crate) fn lock(&self) {
        self.lock.lock();
    }

    /// # Safety
    /// The caller holds the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: forwarded.
        unsafe { self.lock.unlock() }
    }

    /// # Safety
    /// The caller holds the lock, and drops the reference before unlocking.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn inner(&self) -> &mut Inner<T> {
        // SAFETY: the lock gives exclusive access.
        unsafe { &mut *self.inner.get() }
    }

    /// Runs `f` under the lock.
    pub(crate) fn locked<R>(&self, f: impl FnOnce(&mut Inner<T>) -> R) -> R {
        self.lock();
        // SAFETY: we hold the lock; `f`'s borrow ends before we unlock.
        let r = f(unsafe { self.inner() });
        // SAFETY: we hold the lock.
        unsafe { self.unlock() };
        r
    }

    /// Sends `v` now if it can (lock held).
    ///
    /// # Safety
    /// The caller holds the lock; it wakes the returned selector after unlocking.
    #[inline]
    pub(crate) unsafe fn send_now(&self, v: T) -> Result<Wake, NotNow<T>> {
        // SAFETY: the caller holds the lock.
        let inner = unsafe { self.inner() };
        inner.check(self.cap);
        if inner.closed || inner.no_receivers {
            return Err(NotNow::Closed(v));
        }
        // SAFETY: lock held.
        if let Some((w, sel)) = unsafe { inner.recvq.pop_claimed() } {
            // SAFETY: we claimed the waiter: its slot is ours to fill until we wake it.
            unsafe { *w.slot.get() = Some(v) };
            return Ok(Some(sel));
        }
        if inner.buf.len() < self.cap {
            inner.buf.push_back(v);
            return Ok(None);
        }
        Err(NotNow::Block(v))
    }

    /// Receives now if it can (lock held).
    ///
    /// # Safety
    /// As for `send_now`.
    #[inline]
    pub(crate) unsafe fn recv_now(&self) -> Result<(T, Wake), NotNow<()>> {
        // SAFETY: the caller holds the lock.
        let inner = unsafe { self.inner() };
        inner.check(self.cap);
        if let Some(v) = inner.buf.pop_front() {
            // A sender blocked on the full buffer: its value takes the freed place.
            // SAFETY: lock held.
            if let Some((w, sel)) = unsafe { inner.sendq.pop_claimed() } {
                // SAFETY: claimed: the sender's slot is ours until we wake it.
                let sv = unsafe { (*w.slot.get()).take() }.expect("a blocked sender's value");
                inner.buf.push_back(sv);
                return Ok((v, Some(sel)));
            }
            return Ok((v, None));
        }
        // SAFETY: lock held.
        if let Some((w, sel)) = unsafe { inner.sendq.pop_claimed() } {
            // SAFETY: as above.
            let v = unsafe { (*w.slot.get()).take() }.expect("a blocked sender's value");
            return Ok((v, Some(sel)));
        }
        if inner.closed {
            return Err(NotNow::Closed(()));
        }
        Err(NotNow::Block(()))
    }

    /// Closes the channel; false if it was closed already. Wakes every blocked party.
    pub(crate) fn close(&self) -> bool {
        let mut wake = Vec::new();
        let first = self.locked(|inner| {
            if inner.closed {
                return false;
            }
            inner.closed = true;
            Self::complete_all(inner, &mut wake);
            true
        });
        for sel in wake {
            // SAFETY: each was claimed by `complete_all` and is woken once.
            unsafe { Selector::wake(sel) };
        }
        first
    }

    /// Every receiver is gone: sends fail from now on; blocked senders get their values back
    /// and buffered values are dropped (no one can receive them).
    pub(crate) fn disconnect_receivers(&self) {
        let mut wake = Vec::new();
        let dropped = self.locked(|inner| {
            inner.no_receivers = true;
            Self::complete_all(inner, &mut wake);
            std::mem::take(&mut inner.buf)
        });
        for sel in wake {
            // SAFETY: as in `close`.
            unsafe { Selector::wake(sel) };
        }
        drop(dropped);
    }

    /// Claims every waiter, leaving slots as they are: receivers find nothing (`Closed`),
    /// senders find their value still there (they get it back).
    fn complete_all(inner: &mut Inner<T>, wake: &mut Vec<*const Selector>) {
        // SAFETY: the callers hold the lock.
        unsafe {
            while let Some((_, sel)) = inner.recvq.pop_claimed() {
                wake.push(sel);
            }
            while let Some((_, sel)) = inner.sendq.pop_claimed() {
                wake.push(sel);
            }
        }
    }

    /// Links `w` into the send queue (`send`) or receive queue, for `sel` as `case`.
    ///
    /// # Safety
    /// Lock held; the waiter contract of `WaitQueue::push`.
    #[inline]
    pub(crate) unsafe fn enqueue(&self, send: bool, w: &Waiter<T>, sel: &Selector, case: usize) {
        // SAFETY: forwarded.
        unsafe {
            let inner = self.inner();
            if send {
                inner.sendq.push(w, sel, case)
            } else {
                inner.recvq.push(w, sel, case)
            }
        }
    }

    /// Unlinks `w` if it is still linked; returns whether it was.
    ///
    /// # Safety
    /// Lock held; `w` was enqueued (if ever) on this channel's queue of that kind.
    pub(crate) unsafe fn dequeue(&self, send: bool, w: &Waiter<T>) -> bool {
        // SAFETY: forwarded.
        unsafe {
            let inner = self.inner();
            if send {
                inner.sendq.remove(w)
            } else {
                inner.recvq.remove(w)
            }
        }
    }

    /// The buffer's capacity; `None` for an unbounded channel.
    pub(crate) fn capacity(&self) -> Option<usize> {
        (self.cap != UNBOUNDED).then_some(self.cap)
    }

    pub(crate) fn len(&self) -> usize {
        self.locked(|i| i.buf.len())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.locked(|i| i.closed)
    }
}

impl<T> Drop for Chan<T> {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        if CHECK {
            assert!(
                inner.recvq.is_empty() && inner.sendq.is_empty(),
                "chan: dropped with parties waiting"
            );
        }
    }
}

/// Wakes `w` (after the unlock) if there is one.
#[inline]
pub(crate) fn wake(w: Wake) {
    if let Some(sel) = w {
        // SAFETY: `Wake`s come from a claim that nobody woke yet.
        unsafe { Selector::wake(sel) };
    }
}

/// Counts a clone of a sender or receiver handle.
pub(crate) fn add_ref(n: &AtomicUsize) {
    n.fetch_add(1, Ordering::Relaxed);
}

/// Drops a handle's count; true for the last one.
pub(crate) fn release(n: &AtomicUsize) -> bool {
    n.fetch_sub(1, Ordering::AcqRel) == 1
}
