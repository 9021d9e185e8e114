//! Waiter records and wait queues: how every primitive of `goro::sync` blocks and is woken.
//!
//! Each primitive owns one [`WaitQueue`]: a FIFO of [`Waiter`] records under a short internal
//! lock, plus whatever extra state `S` the primitive keeps under the same lock (the barrier's
//! count). The primitive's own atomic state word carries its fast paths; the queue is touched
//! only when someone has to wait. It is `parking_lot_core`'s protocol with the queue kept in
//! the primitive instead of a global table:
//!
//! 1. **Wait.** Under the queue lock the primitive re-checks its condition (the *validate*
//!    step: "the mutex is still locked") and records in its state word that someone waits
//!    (a `PARKED` bit, a waiter count); then [`WaitQueue::push`] appends a `Waiter` (at the
//!    back; at the front for a mutex waiter that already waited, Go's rule) and unlocks.
//!    Because validate and push happen under the lock every waker takes, a waker either sees
//!    the waiter in the queue or the waiter sees the waker's state change: no lost wake-up.
//! 2. **Wake.** Under the queue lock a waker pops waiters and *grants* each a nonzero token
//!    (what it was given: "the lock is yours", "try again", "notified"), stored with release
//!    ordering; it makes the state word match the queue, unlocks, and only then unparks them
//!    ([`Wake`], [`Wakes`]). The waker's `Arc` keeps the record alive for that unpark.
//! 3. **Sleep.** The waiter parks until its token is nonzero, in a loop (parks may return
//!    spuriously). The token is written before the unpark, and an unpark that comes before
//!    the park leaves the parker's token set (std's semantics), so the park returns at once.
//! 4. **Give up.** A waiter whose deadline passed, or whose goroutine is dying (below), takes
//!    the queue lock: if its token is still zero it removes itself and the primitive's
//!    [`Leave::removed`] hook fixes the state word (clears `PARKED` when the queue empties,
//!    or grants what the departure unblocked); if the token is set it was woken meanwhile and
//!    takes it as though it had not given up.
//! 5. **Unwinding.** A goroutine still parked in a wait when its runtime shuts down is
//!    force-unwound out of `park` (`sched/shutdown.rs`). The [`Ticket`]'s destructor then does
//!    step 4, and if a token was granted, [`Leave::abandoned`] hands back what it granted (the
//!    mutex unlocks, the semaphore releases the permit, a notification is passed on), so no
//!    primitive stays locked by a goroutine that no longer exists: primitives can outlive the
//!    runtime (a `static`, or one shared with plain threads).
//!
//! Invariants, each kept under the queue lock:
//! - a `Waiter` is in at most one queue, at most once, and it is queued exactly while its
//!   token is zero: pop-and-grant and remove both happen under the lock;
//! - a token changes once, from zero to a nonzero value chosen by the primitive.
//!
//! **Dying goroutines.** While the runtime's shutdown unwinds a goroutine, `park` returns at
//! once, so a wait would spin. A blocking call made then by a destructor follows the
//! primitive's [`Dying`] policy: [`Dying::GiveUp`] returns at once as if timed out (wait
//! groups, condition variables, timed acquisitions); [`Dying::Grace`] is for calls that cannot
//! give up because they must return a guard or a permit (`Mutex::lock`, `RwLock::read`,
//! `Semaphore::acquire`, a `Once` another caller is running): the holder can only be a plain
//! thread (every other goroutine of that runtime is suspended until this one is done), so it
//! polls for [`DYING_GRACE`] with the OS thread sleeping, then aborts the process with a
//! `fatal error` naming the deadlock, as Go does when all goroutines are asleep. Handing out
//! the guard without the lock would be unsound (the holder's `&mut T` is live on its parked
//! stack), and panicking inside an unwind aborts anyway, with a less useful message.
//!
//! Rejected designs:
//! - **Intrusive records in the waiting frame** (as `chan/waiter.rs` does, relying on stacks
//!   that never move): saves one allocation per wait that actually blocks, and costs unsafe
//!   code, a "waker is done with me" handshake before the frame may return, and an
//!   unwind-safe unlink. A wait that blocks also parks and switches goroutines (or sleeps a
//!   thread in a futex), which costs far more than the allocation; fast paths never get here.
//!   With an `Arc`, the whole protocol is safe Rust.
//! - **A global parking lot** (parking_lot's hash table of queues keyed by address): would
//!   make a `Mutex<()>` 4 bytes instead of 48 (the word, a `std` mutex and a `VecDeque`), at
//!   the price of collisions between unrelated primitives and a table to size; per-primitive
//!   queues keep contention local and need no global state.
//! - **Go's `sema`** (a semaphore beside the state word, with the waiter count in the word
//!   and the queue in the semaphore, not linked under one lock): a waiter cannot leave (a
//!   deadline, an unwind) without racing a waker that already counted it. Go's `Mutex` never
//!   cancels a wait; goro's primitives must (timeouts, shutdown).
//! - **A queue lock that parks goroutines** (a lock of the kind this module builds): the
//!   queue lock is held for a few dozen instructions, never across a park or user code, so
//!   `std::sync::Mutex`, which at worst blocks the OS thread for that long, is the cheap
//!   choice (the chan lock makes the same argument, `chan/lock.rs`).

use crate::loom::{AtomicU32, Ordering};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[cfg(loom)]
use loom::sync::{Arc, Mutex as QMutex, MutexGuard as QGuard};
#[cfg(not(loom))]
use std::sync::{Arc, Mutex as QMutex, MutexGuard as QGuard};

/// How long a dying goroutine waits for a plain thread to release what it blocks on before
/// the process aborts (see the module comment). A plain thread's critical section longer
/// than this, at the moment the runtime shuts down, is taken for a deadlock.
pub(crate) const DYING_GRACE: Duration = Duration::from_secs(1);

/// How often a dying goroutine looks at its token while it waits out the grace period.
const DYING_POLL: Duration = Duration::from_micros(200);

/// What a blocking call does when its goroutine is being unwound at shutdown.
#[derive(Clone, Copy)]
pub(crate) enum Dying {
    /// Return [`Outcome::Dying`] at once.
    GiveUp,
    /// Wait up to [`DYING_GRACE`] for a plain thread to grant the token, then abort the
    /// process; the string names the primitive in the fatal message.
    Grace(&'static str),
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A waker granted this token.
    Woken(u32),
    /// The deadline passed first; the waiter is out of the queue.
    TimedOut,
    /// The goroutine is dying and the policy was [`Dying::GiveUp`]; out of the queue.
    Dying,
}

/// Who to unpark.
enum Parker {
    #[cfg(not(loom))]
    Goroutine(crate::Goroutine),
    #[cfg(not(loom))]
    Thread(std::thread::Thread),
    #[cfg(loom)]
    Loom(loom::thread::Thread),
}

impl Parker {
    #[cfg(not(loom))]
    fn current() -> Parker {
        match crate::try_current() {
            Some(g) => Parker::Goroutine(g),
            None => Parker::Thread(std::thread::current()),
        }
    }

    #[cfg(loom)]
    fn current() -> Parker {
        Parker::Loom(loom::thread::current())
    }

    fn unpark(&self) {
        match self {
            #[cfg(not(loom))]
            Parker::Goroutine(g) => g.unpark(),
            #[cfg(not(loom))]
            Parker::Thread(t) => t.unpark(),
            #[cfg(loom)]
            Parker::Loom(t) => t.unpark(),
        }
    }
}

/// The calling goroutine's (or thread's) park, and the other few runtime calls the
/// primitives make, routed to loom's in a loom model.
pub(crate) mod rt {
    use std::time::Duration;

    #[cfg(not(loom))]
    pub(crate) fn park() {
        crate::park();
    }

    #[cfg(not(loom))]
    pub(crate) fn park_timeout(d: Duration) {
        crate::park_timeout(d);
    }

    #[cfg(not(loom))]
    pub(crate) fn is_dying() -> bool {
        crate::tls::current_is_dying()
    }

    #[cfg(not(loom))]
    pub(crate) fn preempt_point() {
        crate::preempt_point();
    }

    /// A short busy wait before parking: `1 << n` pause instructions, at most 64.
    #[cfg(not(loom))]
    pub(crate) fn spin(n: u32) {
        for _ in 0..(1u32 << n.min(6)) {
            std::hint::spin_loop();
        }
    }

    /// Whether busy-waiting for another party can pay: not in a goroutine of a runtime with
    /// one processor, where that party cannot run until we switch out.
    #[cfg(not(loom))]
    pub(crate) fn may_spin() -> bool {
        crate::tls::with_current_g(|g| g.is_none()) || crate::sched::max_procs() > 1
    }

    #[cfg(loom)]
    pub(crate) fn park() {
        loom::thread::park();
    }

    /// loom has no clock: a timed park is a park (models do not use deadlines).
    #[cfg(loom)]
    pub(crate) fn park_timeout(_: Duration) {
        loom::thread::park();
    }

    #[cfg(loom)]
    pub(crate) fn is_dying() -> bool {
        false
    }

    #[cfg(loom)]
    pub(crate) fn preempt_point() {}

    #[cfg(loom)]
    pub(crate) fn spin(_: u32) {
        loom::thread::yield_now();
    }

    #[cfg(loom)]
    pub(crate) fn may_spin() -> bool {
        true
    }
}

/// One waiting goroutine or thread.
pub(crate) struct Waiter {
    /// 0 while queued; the token it was granted once popped (see the invariants).
    token: AtomicU32,
    parker: Parker,
    /// The primitive's tag for this waiter (the rwlock's reader or writer).
    pub(crate) kind: u32,
    /// When the owner began waiting for what it waits for (across re-queues); the mutex's
    /// starvation rule reads it.
    pub(crate) since: Option<Instant>,
}

/// The queue and the primitive's extra state, as seen under the queue lock.
pub(crate) struct Queue<S> {
    waiters: VecDeque<Arc<Waiter>>,
    /// State the primitive keeps under the queue lock.
    pub(crate) state: S,
}

impl<S> Queue<S> {
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.waiters.iter().map(|w| &**w)
    }

    pub(crate) fn front(&self) -> Option<&Waiter> {
        self.waiters.front().map(|w| &**w)
    }

    /// Pops the front waiter and grants it `token`; wake it after unlocking.
    pub(crate) fn pop_grant(&mut self, token: u32) -> Option<Wake> {
        let w = self.waiters.pop_front()?;
        grant(&w, token);
        Some(Wake(w))
    }

    /// Pops the first waiter for which `pick` holds and grants it `token`.
    pub(crate) fn pop_first_grant(
        &mut self,
        mut pick: impl FnMut(&Waiter) -> bool,
        token: u32,
    ) -> Option<Wake> {
        let i = self.waiters.iter().position(|w| pick(w))?;
        let w = self.waiters.remove(i)?;
        grant(&w, token);
        Some(Wake(w))
    }

    /// Pops every waiter and grants each `token`; wake them after unlocking.
    pub(crate) fn grant_all(&mut self, token: u32) -> Wakes {
        let all = std::mem::take(&mut self.waiters);
        for w in &all {
            grant(w, token);
        }
        Wakes(all)
    }

    /// Pops every waiter for which `pick` holds (keeping the others in order) and grants
    /// each `token`.
    pub(crate) fn grant_where(
        &mut self,
        mut pick: impl FnMut(&Waiter) -> bool,
        token: u32,
    ) -> Wakes {
        let mut picked = VecDeque::new();
        let mut kept = VecDeque::with_capacity(self.waiters.len());
        for w in self.waiters.drain(..) {
            if pick(&w) {
                grant(&w, token);
                picked.push_back(w);
            } else {
                kept.push_back(w);
            }
        }
        self.waiters = kept;
        Wakes(picked)
    }

    fn remove(&mut self, w: &Arc<Waiter>) {
        let i = self.waiters.iter().position(|x| Arc::ptr_eq(x, w));
        debug_assert!(i.is_some(), "a waiter with no token must be queued");
        if let Some(i) = i {
            self.waiters.remove(i);
        }
    }
}

/// Release: everything the waker did before granting (its critical section, a value it
/// published) happens-before the waiter's acquire load of the token.
fn grant(w: &Waiter, token: u32) {
    debug_assert_ne!(token, 0);
    debug_assert_eq!(w.token.load(Ordering::Relaxed), 0, "granted twice");
    w.token.store(token, Ordering::Release);
}

/// A granted waiter to unpark once the queue lock is released.
#[must_use = "a granted waiter must be woken"]
pub(crate) struct Wake(Arc<Waiter>);

impl Wake {
    pub(crate) fn wake(self) {
        self.0.parker.unpark();
    }
}

/// Granted waiters to unpark once the queue lock is released.
#[must_use = "granted waiters must be woken"]
pub(crate) struct Wakes(VecDeque<Arc<Waiter>>);

impl Wakes {
    pub(crate) fn none() -> Wakes {
        Wakes(VecDeque::new())
    }

    pub(crate) fn one(w: Option<Wake>) -> Wakes {
        Wakes(w.map(|w| w.0).into_iter().collect())
    }

    pub(crate) fn many(ws: Vec<Wake>) -> Wakes {
        Wakes(ws.into_iter().map(|w| w.0).collect())
    }

    pub(crate) fn wake(self) {
        for w in self.0 {
            w.parker.unpark();
        }
    }
}

/// What a primitive does when one of its waiters leaves without acting on a wake-up (steps
/// 4 and 5 of the module comment).
pub(crate) trait Leave<S> {
    /// Under the queue lock, just after a waiter of `kind` that was never granted left the
    /// queue: make the state word match the queue, and grant what the departure unblocked
    /// (returned, to be woken after the unlock).
    fn removed(&self, kind: u32, q: &mut Queue<S>) -> Wakes;

    /// Outside the queue lock: a waiter of `kind` granted `token` is unwinding and will not
    /// act on it; hand back what the token gave it.
    fn abandoned(&self, kind: u32, token: u32);
}

/// The lock-protected queue of one primitive.
pub(crate) struct WaitQueue<S = ()> {
    inner: QMutex<Queue<S>>,
}

pub(crate) type QueueGuard<'a, S> = QGuard<'a, Queue<S>>;

impl<S> WaitQueue<S> {
    #[cfg(not(loom))]
    pub(crate) const fn new(state: S) -> WaitQueue<S> {
        WaitQueue {
            inner: QMutex::new(Queue {
                waiters: VecDeque::new(),
                state,
            }),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new(state: S) -> WaitQueue<S> {
        WaitQueue {
            inner: QMutex::new(Queue {
                waiters: VecDeque::new(),
                state,
            }),
        }
    }

    /// Takes the queue lock. No code under it panics or parks (the primitives' hooks are
    /// bookkeeping), so poisoning cannot mean a broken queue and is ignored (a `Ticket`
    /// dropped while unwinding takes the lock, which poisons a `std` mutex).
    #[cfg(not(loom))]
    pub(crate) fn lock(&self) -> QueueGuard<'_, S> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(loom)]
    pub(crate) fn lock(&self) -> QueueGuard<'_, S> {
        self.inner.lock().unwrap()
    }

    /// Step 1: appends a waiter for the caller (at the front if `front`), then releases the
    /// queue lock `q`. The caller then waits with [`Ticket::wait`].
    pub(crate) fn push<'a, L: Leave<S>>(
        &'a self,
        mut q: QueueGuard<'a, S>,
        kind: u32,
        since: Option<Instant>,
        front: bool,
        leave: &'a L,
    ) -> Ticket<'a, S, L> {
        let w = Arc::new(Waiter {
            token: AtomicU32::new(0),
            parker: Parker::current(),
            kind,
            since,
        });
        if front {
            q.waiters.push_front(w.clone());
        } else {
            q.waiters.push_back(w.clone());
        }
        drop(q);
        Ticket {
            queue: self,
            w,
            leave,
            settled: false,
        }
    }
}

/// A queued wait, from [`WaitQueue::push`]: [`wait`](Ticket::wait) for the token. If the
/// waiting goroutine is unwound instead, dropping the ticket takes it out of the queue or
/// hands back what it was granted (step 5).
pub(crate) struct Ticket<'a, S, L: Leave<S>> {
    queue: &'a WaitQueue<S>,
    w: Arc<Waiter>,
    leave: &'a L,
    /// The wait returned normally: the outcome is the caller's to act on.
    settled: bool,
}

impl<S, L: Leave<S>> Ticket<'_, S, L> {
    /// Step 3: waits until granted, or until `deadline`, or (dying) per `dying`.
    pub(crate) fn wait(mut self, deadline: Option<Instant>, dying: Dying) -> Outcome {
        let out = self.wait_inner(deadline, dying);
        self.settled = true;
        out
    }

    fn token(&self) -> u32 {
        self.w.token.load(Ordering::Acquire)
    }

    fn wait_inner(&self, deadline: Option<Instant>, dying: Dying) -> Outcome {
        if rt::is_dying() {
            return match dying {
                Dying::GiveUp => self.give_up(Outcome::Dying),
                Dying::Grace(what) => self.wait_dying(what, deadline),
            };
        }
        loop {
            let t = self.token();
            if t != 0 {
                return Outcome::Woken(t);
            }
            match deadline {
                None => rt::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return self.give_up(Outcome::TimedOut);
                    }
                    rt::park_timeout(d - now);
                }
            }
        }
    }

    /// Step 4: leaves the queue, unless a waker granted the token meanwhile.
    fn give_up(&self, why: Outcome) -> Outcome {
        let mut q = self.queue.lock();
        let t = self.token();
        if t != 0 {
            return Outcome::Woken(t);
        }
        q.remove(&self.w);
        let wakes = self.leave.removed(self.w.kind, &mut q);
        drop(q);
        wakes.wake();
        why
    }

    /// A dying goroutine under [`Dying::Grace`]: `park` returns at once, so sleep the thread
    /// between looks at the token; abort once the grace period is over.
    fn wait_dying(&self, what: &str, deadline: Option<Instant>) -> Outcome {
        let grace = Instant::now() + DYING_GRACE;
        loop {
            let t = self.token();
            if t != 0 {
                return Outcome::Woken(t);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return self.give_up(Outcome::TimedOut);
            }
            if now >= grace {
                fatal_dying(what);
            }
            std::thread::sleep(DYING_POLL);
        }
    }
}

impl<S, L: Leave<S>> Drop for Ticket<'_, S, L> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Unwinding out of `wait` (step 5).
        let mut q = self.queue.lock();
        let t = self.token();
        if t == 0 {
            q.remove(&self.w);
            let wakes = self.leave.removed(self.w.kind, &mut q);
            drop(q);
            wakes.wake();
        } else {
            drop(q);
            self.leave.abandoned(self.w.kind, t);
        }
    }
}

/// Go's `fatal error` for a dying goroutine that would wait forever.
#[cold]
fn fatal_dying(what: &str) -> ! {
    #[cfg(not(loom))]
    let id = crate::try_current().map_or(0, |g| g.id());
    #[cfg(loom)]
    let id = 0;
    eprintln!(
        "fatal error: goroutine {id}, unwound at runtime shutdown, blocks in {what} \
         on something no one released within {DYING_GRACE:?}: the holder is another goroutine, \
         which never runs again (all goroutines are asleep - deadlock!)"
    );
    std::process::abort();
}
