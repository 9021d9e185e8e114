//! Waiter records: how a blocked channel operation waits, and how another party completes it
//! (Go's `sudog` and `selectDone`).
//!
//! A blocking operation (`send`, `recv`, or a whole `select`) owns one [`Selector`] and one
//! [`Waiter`] per channel it waits on. Both live **in the waiting frame, on the goroutine's
//! (or thread's) stack**, under this argument:
//! 1. a `Waiter` is reachable from another thread only while it is linked into a channel's
//!    [`WaitQueue`], and every access through the queue happens under that channel's lock;
//! 2. the waiting frame does not return until each of its `Waiter`s is unlinked: the party
//!    that completes it unlinks it, and the waiter unlinks the rest itself, under each lock;
//! 3. the one access that happens outside a lock is the completer's wake-up: it claims the
//!    `Selector` (compare-and-swap `WAITING → case`), transfers the value and unlinks under
//!    the lock, and after unlocking unparks the waiter and only then sets `done`. The waiting
//!    frame does not return before it sees `done` (a spurious wake-up in that window yields
//!    instead of parking, so the completer's unpark cannot be consumed and lost);
//! 4. goroutine stacks never move (the stack design of `crate::stack`), so the addresses stay
//!    valid while the frame is suspended, on whichever M it later resumes;
//! 5. a frame left by unwinding (a goroutine dropped at runtime shutdown is force-unwound at
//!    its park) runs [`Selector`]'s cleanup through the `Waiting` guard of `select.rs`/`mod.rs`,
//!    which claims `ABORTED`, or waits for `done`, and unlinks everything before the frame goes.
//!
//! So nothing writes into a parked stack without its owner knowing: every writer holds a
//! channel lock the owner takes again before leaving, or is the single claimer the owner waits
//! for. This is what Go does with `sudog`s, minus the heap allocation (Go allocates them
//! because its stacks move).
//!
//! Claiming is the only arbitration: a `select` waiting on several channels is completed by
//! whichever party wins the compare-and-swap; the others find the claim taken and drop that
//! `Waiter` from their queue. The waiting party claims `ABORTED` itself to give up (deadline,
//! shutdown).
//!
//! **Solo waits.** A single `send` or `recv` waits on one channel, so every party that can
//! claim its selector holds that channel's lock: completers claim under it, and the owner
//! gives up under it too (it takes the lock, and claims `ABORTED` only if its waiter is still
//! linked, unlinking it in the same critical section). Under that lock a solo selector is
//! `WAITING` exactly while its waiter is linked, so a completer that unlinks it claims it with
//! a plain store instead of a compare-and-swap (one read-modify-write less per hand-off).
//! Points 1-5 hold unchanged: the claim still happens under the lock, before the value moves,
//! and the wake-up and `done` after the unlock.

use crate::g::G;
use crate::loom::{AtomicU8, AtomicUsize, Ordering};
use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};

// Under loom the "threads" are loom's, and so must be their parking (goroutines and
// deadlines are not modelled).
#[cfg(loom)]
use loom::thread::{current as current_thread, Thread};
#[cfg(not(loom))]
use std::thread::{current as current_thread, Thread};

/// `Selector::state` before anyone claimed it.
pub(crate) const WAITING: usize = usize::MAX;
/// The waiting party gave up (deadline passed, or it is being unwound).
pub(crate) const ABORTED: usize = usize::MAX - 1;

/// Who to wake: a goroutine (borrowed: the protocol keeps it alive, point 3) or a thread.
enum Parker {
    Goroutine(NonNull<G>),
    Thread(Thread),
}

/// One blocking operation's claim word and wake-up (public only for `select!`'s expansion).
#[doc(hidden)]
pub struct Selector {
    state: AtomicUsize,
    /// Set by the claimer after its last touch of this selector (its unpark).
    done: AtomicU8,
    /// A single send or receive, not a `select`: its state changes only under its one
    /// channel's lock (see "Solo waits" in the module comment).
    solo: bool,
    parker: Parker,
}

impl Selector {
    /// A selector for the calling goroutine or thread; `solo` for a single send or receive
    /// (its claims, its owner's `ABORTED` included, all happen under the channel's lock).
    #[inline]
    pub(crate) fn current(solo: bool) -> Selector {
        let parker = crate::tls::with_current_g(|g| match g {
            Some(g) => Parker::Goroutine(NonNull::from(g)),
            None => Parker::Thread(current_thread()),
        });
        Selector {
            state: AtomicUsize::new(WAITING),
            done: AtomicU8::new(0),
            solo,
            parker,
        }
    }

    /// Claims the selector for `case`; true for exactly one claimer.
    #[inline]
    pub(crate) fn try_claim(&self, case: usize) -> bool {
        self.state
            .compare_exchange(WAITING, case, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Claims the selector for `case` on behalf of a waiter just unlinked from a queue, under
    /// that queue's channel lock. A solo selector is claimed by a plain store: its state
    /// changes only under that lock, and a linked solo waiter is unclaimed (the owner's
    /// `ABORTED` unlinks it in the same critical section), so no one can race us.
    #[inline]
    fn claim_unlinked(&self, case: usize) -> bool {
        if self.solo {
            debug_assert_eq!(self.state.load(Ordering::Relaxed), WAITING);
            self.state.store(case, Ordering::Release);
            true
        } else {
            self.try_claim(case)
        }
    }

    /// A solo owner gives up, under the channel lock, having just unlinked its waiter.
    #[inline]
    pub(crate) fn set_aborted(&self) {
        debug_assert!(self.solo);
        debug_assert_eq!(self.state.load(Ordering::Relaxed), WAITING);
        self.state.store(ABORTED, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn state(&self) -> usize {
        self.state.load(Ordering::Acquire)
    }

    /// Settles a `select`'s selector for a waiting frame about to leave (the guard's first
    /// step): claims `ABORTED` if no one claimed it yet, and returns the final state.
    pub(crate) fn give_up(&self) -> usize {
        debug_assert!(!self.solo);
        if self.state() == WAITING {
            let _ = self.try_claim(ABORTED);
        }
        self.state()
    }

    /// The claimer's wake-up, after it released the channel lock (point 3).
    ///
    /// # Safety
    /// `this` was claimed by the caller (`try_claim` returned true) and not woken yet.
    #[inline]
    pub(crate) unsafe fn wake(this: *const Selector) {
        // SAFETY: the waiting frame stays until `done` (point 3), so `this` is valid, and so
        // is the goroutine it names (a goroutine is freed only after it returns).
        unsafe {
            match &(*this).parker {
                Parker::Goroutine(g) => crate::g::unpark(g.as_ref()),
                Parker::Thread(t) => t.unpark(),
            }
            (*this).done.store(1, Ordering::Release);
        }
    }

    /// Whether the owner is a goroutine being unwound at shutdown.
    #[inline]
    fn dying(&self) -> bool {
        match &self.parker {
            // SAFETY: the owner is this goroutine, running this call, so its G is alive.
            Parker::Goroutine(g) => unsafe { g.as_ref() }.is_dying(),
            Parker::Thread(_) => false,
        }
    }

    /// Blocks until claimed, or until `deadline` passes or the goroutine is being unwound at
    /// shutdown: then `abort` tries to give up (true if it claimed `ABORTED`; false if
    /// someone claimed first). Returns the final state; on a case claimed by another party,
    /// only after that party's `wake` is done with us.
    #[inline]
    pub(crate) fn wait(
        &self,
        deadline: Option<std::time::Instant>,
        mut abort: impl FnMut() -> bool,
    ) -> usize {
        loop {
            let s = self.state();
            if s != WAITING {
                self.wait_done(s);
                return s;
            }
            let expired = deadline.is_some_and(|d| std::time::Instant::now() >= d);
            if (expired || self.dying()) && abort() {
                return ABORTED;
            }
            self.park(deadline);
        }
    }

    /// Parks the owner (the calling goroutine or thread), until `deadline` at the latest.
    #[inline]
    fn park(&self, deadline: Option<std::time::Instant>) {
        #[cfg(loom)]
        {
            let _ = deadline;
            loom::thread::park();
        }
        #[cfg(not(loom))]
        match (&self.parker, deadline) {
            // SAFETY: the owner is the calling goroutine, so its G is alive; it stays valid
            // across the switch (see `tls::with_current_g`).
            (Parker::Goroutine(g), None) => crate::g::park_current(unsafe { g.as_ref() }),
            (Parker::Thread(_), None) => std::thread::park(),
            (_, Some(d)) => {
                crate::park_timeout(d.saturating_duration_since(std::time::Instant::now()))
            }
        }
    }

    /// The state is claimed: if by another party, wait until it has woken us.
    #[inline]
    pub(crate) fn wait_done(&self, s: usize) {
        if s == ABORTED {
            return; // our own claim: no one else touches us
        }
        while self.done.load(Ordering::Acquire) == 0 {
            // The claimer is between its unlock and its `done` (a few instructions, unless
            // the OS preempted it). Yield rather than park: our unpark token may already have
            // been consumed by the wake-up that brought us here.
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            crate::yield_now();
        }
    }
}

/// In loom models, a selector's end is checked like a write to it: loom reports any access by
/// another thread that is not ordered before it (a claimer still touching the selector after
/// the waiting frame left, against point 3), which it would otherwise not see.
#[cfg(loom)]
impl Drop for Selector {
    fn drop(&mut self) {
        self.state.with_mut(|_| ());
        self.done.with_mut(|_| ());
    }
}

/// One channel's record of a waiting operation: linked into that channel's send or receive
/// queue while it waits. Every field is accessed under the channel's lock, or by the owner
/// once it is unlinked and its selector settled.
pub(crate) struct Waiter<T> {
    prev: Cell<*const Waiter<T>>,
    next: Cell<*const Waiter<T>>,
    linked: Cell<bool>,
    /// A waiting sender's value (taken by the receiver that completes it; still there if the
    /// channel closed), or the slot a receiver's value is delivered into.
    pub(crate) slot: UnsafeCell<Option<T>>,
    sel: Cell<*const Selector>,
    case: Cell<usize>,
}

impl<T> Waiter<T> {
    pub(crate) fn new(value: Option<T>) -> Waiter<T> {
        Waiter {
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
            linked: Cell::new(false),
            slot: UnsafeCell::new(value),
            sel: Cell::new(ptr::null()),
            case: Cell::new(0),
        }
    }

    /// The owner, once the waiter is settled: the slot's content.
    pub(crate) fn take_slot(&mut self) -> Option<T> {
        self.slot.get_mut().take()
    }
}

/// A channel's queue of waiting senders or receivers (Go's `waitq`): an intrusive doubly
/// linked list of [`Waiter`]s, touched only under the channel's lock.
pub(crate) struct WaitQueue<T> {
    head: *const Waiter<T>,
    tail: *const Waiter<T>,
}

impl<T> WaitQueue<T> {
    pub(crate) const fn new() -> WaitQueue<T> {
        WaitQueue {
            head: ptr::null(),
            tail: ptr::null(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Appends `w`, waiting for `sel` as `case`.
    ///
    /// # Safety
    /// Under the channel's lock; `w` and `sel` stay valid until `w` is unlinked and `sel`
    /// settled (the waiter argument, points 2-3).
    pub(crate) unsafe fn push(&mut self, w: &Waiter<T>, sel: &Selector, case: usize) {
        debug_assert!(!w.linked.get());
        w.sel.set(sel);
        w.case.set(case);
        w.linked.set(true);
        w.next.set(ptr::null());
        w.prev.set(self.tail);
        if self.tail.is_null() {
            self.head = w;
        } else {
            // SAFETY: linked waiters are valid (the caller's contract when they were pushed).
            unsafe { (*self.tail).next.set(w) };
        }
        self.tail = w;
    }

    /// Unlinks `w` if it is linked (to this queue); returns whether it was.
    ///
    /// # Safety
    /// Under the channel's lock, `w` pushed (if ever) onto this queue.
    pub(crate) unsafe fn remove(&mut self, w: &Waiter<T>) -> bool {
        if !w.linked.get() {
            return false;
        }
        let (p, n) = (w.prev.get(), w.next.get());
        if p.is_null() {
            self.head = n;
        } else {
            // SAFETY: linked neighbours are valid.
            unsafe { (*p).next.set(n) };
        }
        if n.is_null() {
            self.tail = p;
        } else {
            // SAFETY: as above.
            unsafe { (*n).prev.set(p) };
        }
        w.linked.set(false);
        w.prev.set(ptr::null());
        w.next.set(ptr::null());
        true
    }

    /// Unlinks waiters from the head until one whose selector the caller claims; returns it
    /// with its selector, for the caller to complete and wake after unlocking. Waiters whose
    /// selector was claimed by someone else (a `select` completed elsewhere, or one that gave
    /// up) are dropped from the queue on the way, like Go's `dequeue`.
    ///
    /// # Safety
    /// Under the channel's lock.
    pub(crate) unsafe fn pop_claimed(&mut self) -> Option<(&Waiter<T>, *const Selector)> {
        while !self.head.is_null() {
            // SAFETY: linked waiters are valid; we hold the lock.
            let w = unsafe { &*self.head };
            // SAFETY: as above.
            unsafe { self.remove(w) };
            let sel = w.sel.get();
            // SAFETY: a linked waiter's selector is valid (point 2); we hold the lock.
            if unsafe { (*sel).claim_unlinked(w.case.get()) } {
                return Some((w, sel));
            }
        }
        None
    }
}
