//! `select!`'s engine (Go's `selectgo`, `runtime/select.go`).
//!
//! The macro builds one case object per arm on the caller's stack (a [`RecvCase`] or
//! [`SendCase`], holding the arm's channel, its waiter record and, later, its result) and
//! calls [`select`] with them and a [`Mode`]. The protocol, as in Go:
//! 1. lock every distinct channel, in address order (no deadlock between selects; under loom,
//!    creation order: `Chan::id`);
//! 2. poll the cases in a random order (Go's fairness: of several ready arms, each is equally
//!    likely) and complete the first ready one;
//! 3. none ready: with `default`, unlock and take it. Otherwise link a waiter into every
//!    case's channel queue, all for one [`Selector`], unlock, and park once;
//! 4. whoever claims the selector first (a sender, receiver or closer on any of the
//!    channels; or this goroutine itself at the deadline) decides the arm; the others find the
//!    claim taken and drop our waiter from their queue;
//! 5. relock every channel and unlink the waiters still linked, then report the arm.
//!
//! Because the waiters are linked only while every lock is held, no one can complete one of
//! them before the poll of step 2 has finished, and a select never meets its own waiters (a
//! `select` that sends and receives on one channel cannot match itself). The waiters live in
//! the caller's frame; the argument for that is in `waiter.rs`.

use super::core::{wake, Chan, NotNow, Wake};
use super::error::{RecvError, SendError};
use super::waiter::{Selector, Waiter, ABORTED};
use super::{Receiver, Sender};
use std::time::{Duration, Instant};

/// How a `select` waits when no arm is ready.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// No `default` arm: wait until one is ready.
    Block,
    /// `default => ...`: do not wait.
    NonBlocking,
    /// `default(timeout)` / `after(d)`: wait until the deadline at the latest.
    Deadline(Instant),
}

impl Mode {
    /// `Deadline(now + d)`, or `Block` if that is past the end of time.
    pub fn timeout(d: Duration) -> Mode {
        Instant::now()
            .checked_add(d)
            .map_or(Mode::Block, Mode::Deadline)
    }
}

/// One arm of a `select`, type-erased. Implemented by [`RecvCase`] and [`SendCase`] only.
///
/// # Safety
/// Implementors follow the channel's locking rules: the `unsafe` methods are called with
/// the case's channel locked (by `lock`), and the waiter contract of `waiter.rs` holds for
/// whatever `enqueue` links.
pub unsafe trait Case {
    /// Identifies the channel (`Chan::id`, its address), for the lock order.
    fn chan_id(&self) -> usize;
    fn lock(&self);
    /// # Safety
    /// Locked by the caller.
    unsafe fn unlock(&self);
    /// Completes the arm now if its channel is ready; returns who to wake after unlocking.
    ///
    /// # Safety
    /// Locked by the caller.
    unsafe fn poll(&mut self) -> Option<Wake>;
    /// Links this arm's waiter for `sel` as `case`.
    ///
    /// # Safety
    /// Locked by the caller; the arm is not moved until `dequeue` and `sel` settled.
    unsafe fn enqueue(&mut self, sel: &Selector, case: usize);
    /// Unlinks this arm's waiter if still linked.
    ///
    /// # Safety
    /// Locked by the caller.
    unsafe fn dequeue(&mut self);
    /// This arm was chosen by another party: take the result from the waiter.
    fn settle(&mut self);
    /// The goroutine is being unwound at shutdown: report this arm's channel as closed.
    fn settle_closed(&mut self);
}

/// A `recv(r) -> v` arm.
pub struct RecvCase<'a, T> {
    chan: &'a Chan<T>,
    w: Waiter<T>,
    result: Option<Result<T, RecvError>>,
}

impl<'a, T> RecvCase<'a, T> {
    pub fn new(r: &'a Receiver<T>) -> Self {
        RecvCase {
            chan: r.chan(),
            w: Waiter::new(None),
            result: None,
        }
    }

    /// The arm's result; call once, after `select` chose this arm.
    pub fn into_result(self) -> Result<T, RecvError> {
        self.result.expect("select chose this receive arm")
    }
}

// SAFETY: every `unsafe` method forwards to the channel's locked operations.
unsafe impl<T> Case for RecvCase<'_, T> {
    fn chan_id(&self) -> usize {
        self.chan.id()
    }
    fn lock(&self) {
        self.chan.lock();
    }
    unsafe fn unlock(&self) {
        // SAFETY: the caller locked it.
        unsafe { self.chan.unlock() }
    }
    unsafe fn poll(&mut self) -> Option<Wake> {
        // SAFETY: the caller holds the lock.
        match unsafe { self.chan.recv_now() } {
            Ok((v, w)) => {
                self.result = Some(Ok(v));
                Some(w)
            }
            Err(NotNow::Closed(())) => {
                self.result = Some(Err(RecvError::Closed));
                Some(None)
            }
            Err(NotNow::Block(())) => None,
        }
    }
    unsafe fn enqueue(&mut self, sel: &Selector, case: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.chan.enqueue(false, &self.w, sel, case) }
    }
    unsafe fn dequeue(&mut self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.chan.dequeue(false, &self.w) };
    }
    fn settle(&mut self) {
        self.result = Some(self.w.take_slot().ok_or(RecvError::Closed));
    }
    fn settle_closed(&mut self) {
        self.result = Some(Err(RecvError::Closed));
    }
}

/// A `send(s, v) -> res` arm.
pub struct SendCase<'a, T> {
    chan: &'a Chan<T>,
    /// Holds the value until it is sent (and after, if another arm was chosen).
    w: Waiter<T>,
    result: Option<Result<(), SendError<T>>>,
}

impl<'a, T> SendCase<'a, T> {
    pub fn new(s: &'a Sender<T>, v: T) -> Self {
        SendCase {
            chan: s.chan(),
            w: Waiter::new(Some(v)),
            result: None,
        }
    }

    /// The arm's result; call once, after `select` chose this arm.
    pub fn into_result(self) -> Result<(), SendError<T>> {
        self.result.expect("select chose this send arm")
    }
}

// SAFETY: as for `RecvCase`.
unsafe impl<T> Case for SendCase<'_, T> {
    fn chan_id(&self) -> usize {
        self.chan.id()
    }
    fn lock(&self) {
        self.chan.lock();
    }
    unsafe fn unlock(&self) {
        // SAFETY: the caller locked it.
        unsafe { self.chan.unlock() }
    }
    unsafe fn poll(&mut self) -> Option<Wake> {
        let v = self
            .w
            .take_slot()
            .expect("a send arm holds its value until sent");
        // SAFETY: the caller holds the lock.
        match unsafe { self.chan.send_now(v) } {
            Ok(w) => {
                self.result = Some(Ok(()));
                Some(w)
            }
            Err(NotNow::Closed(v)) => {
                self.result = Some(Err(SendError(v)));
                Some(None)
            }
            Err(NotNow::Block(v)) => {
                *self.w.slot.get_mut() = Some(v);
                None
            }
        }
    }
    unsafe fn enqueue(&mut self, sel: &Selector, case: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.chan.enqueue(true, &self.w, sel, case) }
    }
    unsafe fn dequeue(&mut self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.chan.dequeue(true, &self.w) };
    }
    fn settle(&mut self) {
        self.result = Some(match self.w.take_slot() {
            None => Ok(()),
            Some(v) => Err(SendError(v)), // completed by `close`: the value comes back
        });
    }
    fn settle_closed(&mut self) {
        let v = self.w.take_slot().expect("an unsent value");
        self.result = Some(Err(SendError(v)));
    }
}

/// Indices of `cases`: `poll` in a random order, `lock` sorted by channel with one entry per
/// distinct channel. Small selects keep them on the stack.
struct Orders {
    small: [usize; 2 * SMALL],
    big: Vec<usize>,
    n: usize,
    nlock: usize,
}

const SMALL: usize = 16;

impl Orders {
    fn new(cases: &[&mut dyn Case]) -> Orders {
        let n = cases.len();
        let mut o = Orders {
            small: [0; 2 * SMALL],
            big: if n > SMALL {
                vec![0; 2 * n]
            } else {
                Vec::new()
            },
            n,
            nlock: 0,
        };
        let slots = if n > SMALL {
            &mut o.big[..]
        } else {
            &mut o.small[..2 * n]
        };
        let (poll, lock) = slots.split_at_mut(n);
        // Fisher-Yates.
        for i in 0..n {
            // Under loom the model must be deterministic: a fixed order.
            #[cfg(loom)]
            let j = i;
            #[cfg(not(loom))]
            let j = crate::tls::fastrand() as usize % (i + 1);
            poll[i] = poll[j];
            poll[j] = i;
        }
        for (i, l) in lock.iter_mut().enumerate() {
            *l = i;
        }
        lock.sort_by_key(|&i| cases[i].chan_id());
        // One entry per channel (a select may use a channel in several arms).
        let mut k = 0;
        for i in 0..n {
            if k == 0 || cases[lock[k - 1]].chan_id() != cases[lock[i]].chan_id() {
                lock[k] = lock[i];
                k += 1;
            }
        }
        o.nlock = k;
        o
    }

    fn slots(&self) -> &[usize] {
        if self.n > SMALL {
            &self.big
        } else {
            &self.small[..2 * self.n]
        }
    }

    fn poll(&self, i: usize) -> usize {
        self.slots()[i]
    }

    fn lock(&self, i: usize) -> usize {
        self.slots()[self.n + i]
    }

    fn lock_all(&self, cases: &[&mut dyn Case]) {
        for k in 0..self.nlock {
            cases[self.lock(k)].lock();
        }
    }

    fn unlock_all(&self, cases: &[&mut dyn Case]) {
        for k in (0..self.nlock).rev() {
            // SAFETY: `lock_all` locked each of these once.
            unsafe { cases[self.lock(k)].unlock() };
        }
    }
}

/// Unlinks every arm's waiter on every exit from the wait, unwinding included (`waiter.rs`,
/// point 5).
struct Waiting<'a, 'b> {
    cases: &'a mut [&'b mut dyn Case],
    orders: &'a Orders,
    sel: &'a Selector,
}

impl Drop for Waiting<'_, '_> {
    fn drop(&mut self) {
        let s = self.sel.give_up();
        // Unlink what is still linked (a claimer unlinked the arm it chose), then wait for
        // a claimer's wake-up to be done with the selector.
        self.orders.lock_all(self.cases);
        for c in self.cases.iter_mut() {
            // SAFETY: every channel is locked.
            unsafe { c.dequeue() };
        }
        self.orders.unlock_all(self.cases);
        self.sel.wait_done(s);
    }
}

/// Runs a select over `cases` (see the module comment); returns the chosen arm's index, or
/// `cases.len()` for the `default` / timeout arm.
pub fn select(cases: &mut [&mut dyn Case], mode: Mode) -> usize {
    let n = cases.len();
    let orders = Orders::new(cases);
    orders.lock_all(cases);
    for k in 0..n {
        let i = orders.poll(k);
        // SAFETY: every channel is locked.
        if let Some(w) = unsafe { cases[i].poll() } {
            orders.unlock_all(cases);
            wake(w);
            crate::preempt_point();
            return i;
        }
    }
    let deadline = match mode {
        Mode::NonBlocking => None,
        Mode::Block => Some(None),
        Mode::Deadline(d) if Instant::now() < d => Some(Some(d)),
        Mode::Deadline(_) => None,
    };
    let Some(deadline) = deadline else {
        orders.unlock_all(cases);
        crate::preempt_point();
        return n;
    };
    let sel = Selector::current(false);
    for (i, c) in cases.iter_mut().enumerate() {
        // SAFETY: every channel is locked; the `Waiting` guard below unlinks every waiter
        // and settles `sel` before this frame (or the caller's cases) can go.
        unsafe { c.enqueue(&sel, i) };
    }
    orders.unlock_all(cases);
    let s = {
        let guard = Waiting {
            cases,
            orders: &orders,
            sel: &sel,
        };
        let s = sel.wait(deadline, || sel.try_claim(ABORTED));
        drop(guard);
        s
    };
    if s == ABORTED {
        if crate::tls::current_is_dying() && n > 0 {
            let i = orders.poll(0);
            cases[i].settle_closed();
            return i;
        }
        return n;
    }
    cases[s].settle();
    s
}
