//! `M`: an OS thread running the scheduler loop, and how Ms find work, spin and sleep.
//!
//! # Two kinds of queue
//! A started goroutine is bound to the M it first ran on (`pin.rs`), so an M has queues of its
//! own besides its P's: a `next` slot and a FIFO that only the M touches (`LocalQueue`), and an
//! inbox where other threads put its goroutines they woke (`push_inbox`). A P's ring and
//! `runnext` hold goroutines that have not started, which any M may steal, as in Go. (Under
//! `allow_migration` started goroutines go through the P's queues too, as they did before.)
//!
//! ```text
//!   spawn ──▶ P.runnext / P.ring ──steal──▶ another P      (not started: any M)
//!   ready from this M ──▶ M.next / M.fifo                   (started here: this M only)
//!   ready from elsewhere ──▶ M.inbox ──(wake if asleep)──▶ M.fifo
//! ```
//!
//! # The loop (Go's `schedule`/`findrunnable`)
//! An M holding a P repeats: find a goroutine, run it until it switches out, file it. Finding
//! one, in order:
//! 1. the inbox moves to the FIFO; every 61st schedule, the global queue first (and, if an M
//!    holding goroutines of its own has waited 10 ms for a P, this M hands it its P);
//! 2. the `next` slots (the M's, then the P's handoff cell and `runnext`), which continue the
//!    time slice; then the M's FIFO and the P's ring, taking turns (after a yield, the shared
//!    work queued ahead of the yielder goes first, as Go's `Gosched` puts it behind);
//! 3. the global queue (a fair share of it moves to the ring);
//! 4. if an idle M waits with goroutines of its own, hand it this P and sleep;
//! 5. steal: become *spinning* (unless half of the busy Ps' worth of Ms already spin) and try
//!    every other P four times in random order, taking half its ring (`runnext` too on the
//!    last try), looking at the inbox between rounds; if `wakep` was called meanwhile (work is
//!    being readied), wait a moment and look again instead of sleeping, so the busy M does not
//!    pay a futex wake per ready; if goroutines bound here are parked, watch the inbox for up
//!    to 20 µs, since only this M can run them when they are woken;
//! 6. give up: under the scheduler lock check the global queue and this M's queues once more,
//!    then put the P on the idle list. A spinning M then stops spinning and looks at every
//!    P's queue once more; if one has work it takes an idle P back and starts again.
//!    Otherwise it sleeps (`stopm`) until `startm` hands it a P, or a goroutine of its own
//!    arrives in its inbox (`wake_bound` hands it an idle P, or lists it in `pinned_ms` for
//!    the next P that frees up).
//!
//! # Waking (no lost work, bounded spinning)
//! Readying a new goroutine calls `wakep`: if a P is idle and no M spins, it claims the single
//! spinning slot (`nmspinning` 0 → 1 by CAS) and `startm` hands an idle P to an idle M (or a
//! new thread). An M that finds work while spinning stops spinning; if it was the last
//! spinner it calls `wakep` again, so work that arrives in bursts spreads one M at a time
//! (Go's "spinning M wakes the next"). Readying a started goroutine wakes no one but its own
//! M: no other M could run it.
//!
//! Why no work is lost: a goroutine in the **global queue** is pushed under the scheduler lock,
//! and an M puts its P on the idle list under the same lock right after checking that queue,
//! so either it sees the goroutine or the pusher's `wakep` (which runs after unlocking) sees
//! the idle P. A goroutine in a **P's queue** is always run by that P's M at the latest; `wakep`
//! there only adds parallelism. (A spinner that decrements `nmspinning` and re-checks the
//! queues can, in a store-buffer race, miss a push whose `wakep` read the old count; that
//! loses parallelism, not the goroutine, and sysmon's starvation check wakes a P for a queue
//! that stops moving.) A goroutine in an **M's inbox**: the pusher stores, then reads
//! `sleeping`; `stopm` sets `sleeping`, then reads the inbox, all `SeqCst` (`push_inbox`): either
//! the M sees the goroutine before it sleeps, or the pusher sees it asleep and wakes it.
//!
//! Rejected: one shared queue with a condition variable (every schedule takes the lock), and
//! waking an M on every push (a futex wake per spawn; Go's numbers show the spinning scheme is
//! what makes cross-P spawn cheap). For bound goroutines, Go's `LockOSThread` mechanics (the
//! locked M sleeps and hands its P off at every park, `startlockedm` wakes it at every ready):
//! two futex wakes per switch, where an M running many bound goroutines needs none.

use super::p::{P, P_IDLE, P_RUNNING, P_STOPPED};
use super::{pin, runq, Runtime, Sched, MAX_MS};
use crate::g::{GRef, Switch};
use crate::signal::AltStack;
use crate::tls;
use std::cell::{Cell, UnsafeCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Steal attempts over all Ps before giving up (Go's `stealTries`).
const STEAL_TRIES: usize = 4;

/// What an M asleep in `stopm` is woken with.
#[derive(Default)]
struct Wake {
    /// The P handed over by `startm`, and whether the M starts spinning.
    next_p: Option<(usize, bool)>,
    /// This M is the timer waiter (`timers.rs`): it sleeps until `Runtime::timer_until`.
    /// Changed under the scheduler lock and this lock both.
    timer_wait: bool,
    /// A timer earlier than `timer_until` was added: look again.
    recheck: bool,
    /// The timer waiter is inside the netpoller's blocking poll: wake it with
    /// `Poller::wake`, not the condition variable.
    in_poll: bool,
}

impl Wake {
    /// Wakes the M that owns this state (its lock is held by the caller).
    fn notify(&self, cv: &Condvar) {
        if self.in_poll {
            if let Some(p) = crate::netpoll::active() {
                p.wake();
            }
        }
        cv.notify_one();
    }
}

pub(crate) struct M {
    /// Unique among the Ms of every runtime alive in the process (`registered`): a started
    /// goroutine's `G::last_m` names its M across runtimes, and the slot header carries
    /// `tag()`.
    pub(crate) id: usize,
    /// The runtime: valid while this M's thread runs (`m_main` holds an `Arc<Runtime>`), and
    /// while any goroutine bound to this M is unfinished (the shutdown waits for those).
    rt: *const Runtime,
    wake: Mutex<Wake>,
    cv: Condvar,
    /// Goroutines bound to this M made runnable by other threads (`push_inbox`).
    inbox: Mutex<VecDeque<GRef>>,
    pub(crate) inbox_len: AtomicUsize,
    /// Runnable goroutines bound to this M, filed by this M itself (`Runtime::file`).
    local: LocalQueue,
    /// This M sleeps in `stopm` or is about to (set under the scheduler lock before it looks
    /// at its queues one last time): a `push_inbox` that sees it wakes the M.
    sleeping: AtomicBool,
    /// Goroutines that started on this M minus those that finished on it; only this M writes
    /// it. Summed over a runtime's Ms it counts the started goroutines not yet finished, which
    /// the shutdown waits for (`shutdown.rs`).
    started: AtomicIsize,
    /// Looking for work (counted in `Runtime::nmspinning`). Only this M writes it.
    spinning: AtomicBool,
    /// Inside `goro::blocking`, with the id of the P it left (for exitsyscall and schedtrace).
    pub(crate) syscall_p: AtomicUsize,
    /// This thread's static thread-local block, for `pin.rs`: `[lo, hi)`.
    pub(crate) tls_lo: AtomicUsize,
    pub(crate) tls_hi: AtomicUsize,
    rng: AtomicU32,
}

/// The runnable goroutines bound to one M that the M filed itself: `next` runs first and
/// continues the time slice (Go's `runnext`, for a goroutine readied by the one running), the
/// FIFO after it. Only the M's own thread touches it (its scheduler loop, the goroutines it
/// runs, code inside their `blocking` calls, its shutdown), so neither needs a lock or an
/// atomic: no thief can take a started goroutine, which is what makes a hand-off to a
/// goroutine on the same M cheaper than Go's (no swap on `runnext`).
struct LocalQueue {
    next: UnsafeCell<Option<GRef>>,
    fifo: UnsafeCell<VecDeque<GRef>>,
    /// Which of this FIFO and the P's ring of new goroutines goes first next time.
    ring_first: Cell<bool>,
    /// Goroutines that yielded, held back until `yield_wait` more goroutines have run here or
    /// nothing else is runnable (`M::yielded`).
    yielded: UnsafeCell<VecDeque<GRef>>,
    yield_wait: Cell<usize>,
}

impl LocalQueue {
    fn new() -> LocalQueue {
        LocalQueue {
            next: UnsafeCell::new(None),
            fifo: UnsafeCell::new(VecDeque::new()),
            ring_first: Cell::new(false),
            yielded: UnsafeCell::new(VecDeque::new()),
            yield_wait: Cell::new(0),
        }
    }
}

pub(crate) const NO_P: usize = usize::MAX;

// SAFETY: `rt` is dereferenced only while the runtime is alive (see the field); `local` only
// on the M's own thread (see `LocalQueue`; every accessor checks it in debug builds);
// everything else is atomics and mutexes.
unsafe impl Send for M {}
// SAFETY: as above.
unsafe impl Sync for M {}

impl M {
    /// # Safety
    /// Only on this M's own thread, while its `m_main` runs (CURRENT_M is set then).
    pub(crate) unsafe fn runtime(&self) -> &Runtime {
        // SAFETY: the caller runs inside `m_main`, whose frame owns an `Arc<Runtime>`.
        unsafe { &*self.rt }
    }

    fn is_spinning(&self) -> bool {
        self.spinning.load(Ordering::Relaxed)
    }

    pub(crate) fn wake_for_stop(&self) {
        let w = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        w.notify(&self.cv);
    }

    fn hand(&self, pid: usize, spinning: bool) {
        let mut w = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        debug_assert!(w.next_p.is_none());
        w.next_p = Some((pid, spinning));
        w.notify(&self.cv);
    }

    /// Tells the timer waiter to look again: a timer earlier than its deadline was added, or
    /// the netpoller started.
    pub(crate) fn recheck_timers(&self) {
        let mut w = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        w.recheck = true;
        w.notify(&self.cv);
    }

    /// Any thread: queues `g`, a runnable goroutine bound to this M, and wakes this M if it
    /// sleeps (with an idle P, or by listing it for the next P that frees up).
    ///
    /// No lost wake-up: this stores the new length and then loads `sleeping`; `stopm` stores
    /// `sleeping` and then loads the length, all `SeqCst`, so one of the two sees the other.
    /// The wake happens under the inbox lock: this M cannot take `g` (and, at shutdown,
    /// finish it and let its runtime go) before we are done with the M and its runtime.
    pub(crate) fn push_inbox(&self, g: GRef) {
        let mut q = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(g);
        self.inbox_len.store(q.len(), Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            // SAFETY: `g` is bound to this M and unfinished, so its runtime has not finished
            // shutting down (it waits for every such goroutine), and it cannot be taken from
            // the inbox while we hold its lock: the runtime outlives this call.
            wake_bound(unsafe { &*self.rt }, self);
        }
    }

    pub(crate) fn pop_inbox(&self) -> Option<GRef> {
        let mut q = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        let g = q.pop_front();
        self.inbox_len.store(q.len(), Ordering::SeqCst);
        g
    }

    /// Owner: moves the inbox into the local FIFO (one lock for all of it).
    fn take_inbox(&self) {
        if self.inbox_len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut q = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        self.inbox_len.store(0, Ordering::SeqCst);
        // SAFETY: we are this M's thread (`fifo_mut`'s contract).
        unsafe { self.fifo_mut() }.extend(q.drain(..));
    }

    /// The local FIFO.
    ///
    /// # Safety
    /// Only on this M's own thread, and no other reference to it may be live (every caller
    /// uses it within one expression, never across a call that could file a goroutine).
    #[allow(clippy::mut_from_ref)]
    unsafe fn fifo_mut(&self) -> &mut VecDeque<GRef> {
        debug_assert!(std::ptr::eq(tls::current_mp().0, self), "another M's queue");
        // SAFETY: as the caller guarantees.
        unsafe { &mut *self.local.fifo.get() }
    }

    /// Owner: files `g`, bound to this M: to run next (continuing the running slice; the one
    /// it displaces goes to the FIFO's tail) or at the FIFO's tail.
    pub(crate) fn push_local(&self, g: GRef, next: bool) {
        debug_assert!(std::ptr::eq(tls::current_mp().0, self), "another M's queue");
        if next {
            // SAFETY: this M's thread (checked above); `next` is used only here and in
            // `take_next`, neither of which lends it out.
            let old = unsafe { (*self.local.next.get()).replace(g) };
            if let Some(old) = old {
                // SAFETY: this M's thread; a single expression.
                unsafe { self.fifo_mut() }.push_back(old);
            }
        } else {
            // SAFETY: this M's thread; a single expression.
            unsafe { self.fifo_mut() }.push_back(g);
        }
    }

    /// Owner: the goroutine filed to run next.
    fn take_next(&self) -> Option<GRef> {
        debug_assert!(std::ptr::eq(tls::current_mp().0, self), "another M's queue");
        // SAFETY: this M's thread (see `push_local`).
        unsafe { (*self.local.next.get()).take() }
    }

    fn pop_fifo(&self) -> Option<GRef> {
        // SAFETY: this M's thread (the callers are its scheduler and shutdown); one expression.
        unsafe { self.fifo_mut() }.pop_front()
    }

    /// Owner: whether goroutines bound to this M are runnable (its queues or inbox).
    fn has_bound_work(&self) -> bool {
        self.inbox_len.load(Ordering::SeqCst) > 0
            // SAFETY: this M's thread (the caller's, `stopm`/`schedule`); read only.
            || unsafe {
                !(*self.local.fifo.get()).is_empty()
                    || (*self.local.next.get()).is_some()
                    || !(*self.local.yielded.get()).is_empty()
            }
    }

    /// Owner, at shutdown: any runnable goroutine bound to this M.
    pub(crate) fn take_runnable(&self) -> Option<GRef> {
        self.take_inbox();
        self.release_yielded();
        self.take_next().or_else(|| self.pop_fifo())
    }

    /// The tag this M's goroutines carry in their slot headers (`stack::for_each_owner`).
    pub(crate) fn tag(&self) -> usize {
        self.id + 1
    }

    /// Owner: a goroutine starts on this M (first run, or moved here under migration).
    pub(crate) fn count_start(&self) {
        let n = self.started.load(Ordering::Relaxed);
        self.started.store(n + 1, Ordering::Relaxed);
    }

    /// Owner: a started goroutine finished on this M.
    pub(crate) fn count_finish(&self) {
        let n = self.started.load(Ordering::Relaxed);
        self.started.store(n - 1, Ordering::Relaxed);
    }

    pub(crate) fn started(&self) -> isize {
        self.started.load(Ordering::Relaxed)
    }

    fn rand(&self) -> u32 {
        // xorshift32; only this M calls it.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.store(x, Ordering::Relaxed);
        x
    }
}

impl M {
    fn new(id: usize, rt: &Runtime) -> M {
        M {
            id,
            rt,
            wake: Mutex::new(Wake::default()),
            cv: Condvar::new(),
            inbox: Mutex::new(VecDeque::new()),
            inbox_len: AtomicUsize::new(0),
            local: LocalQueue::new(),
            sleeping: AtomicBool::new(false),
            started: AtomicIsize::new(0),
            spinning: AtomicBool::new(false),
            syscall_p: AtomicUsize::new(NO_P),
            tls_lo: AtomicUsize::new(0),
            tls_hi: AtomicUsize::new(0),
            rng: AtomicU32::new((id as u32).wrapping_mul(0x9E37_79B9) | 1),
        }
    }

    /// An M for a thread that is not one of the runtime's (shutdown's unwinding thread): not
    /// registered, never woken, gone before the runtime.
    pub(crate) fn stand_in(rt: &Runtime) -> M {
        M::new(MAX_MS, rt)
    }
}

/// Every M of every runtime alive, by id. An id is unique among the Ms of all runtimes that
/// have not finished shutting down, so a started goroutine's `last_m` (and its slot header's
/// tag) names one thread even while an old runtime shuts down beside a new one; a runtime
/// gives its ids back only after every goroutine bound to them has finished (`shutdown.rs`).
static REGISTRY: [AtomicPtr<M>; MAX_MS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_MS];

/// Ids not in use (below `next`), and the next never used.
static IDS: Mutex<(Vec<usize>, usize)> = Mutex::new((Vec::new(), 0));

fn take_id() -> Option<usize> {
    let mut ids = IDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(id) = ids.0.pop() {
        return Some(id);
    }
    let id = ids.1;
    (id < MAX_MS).then(|| {
        ids.1 += 1;
        id
    })
}

/// Takes `m` out of the registry and frees its id: its runtime has finished shutting down.
pub(crate) fn unregister(m: &M) {
    REGISTRY[m.id].store(std::ptr::null_mut(), Ordering::Release);
    IDS.lock().unwrap_or_else(|e| e.into_inner()).0.push(m.id);
}

/// The M registered under `id`.
///
/// # Safety
/// The caller must know the M is alive for as long as it uses the reference: it holds the
/// scheduling reference of an unfinished goroutine bound to that M (whose runtime, and so
/// whose Ms, cannot finish shutting down before that goroutine finishes), or runs on one of
/// that runtime's threads.
pub(crate) unsafe fn registered<'a>(id: usize) -> Option<&'a M> {
    let p = REGISTRY.get(id)?.load(Ordering::Acquire);
    // SAFETY: a registered pointer points into an `Arc<M>` that its runtime keeps (in
    // `Runtime::ms`) until after it unregisters it; the caller guarantees it is still there.
    unsafe { p.as_ref() }
}

impl M {
    /// This M's runtime.
    ///
    /// # Safety
    /// As for [`registered`]: the caller knows the runtime is alive.
    pub(crate) unsafe fn runtime_of(&self) -> &Runtime {
        // SAFETY: as the caller guarantees.
        unsafe { &*self.rt }
    }

    /// This M's runtime's address, for comparing (never dereferenced).
    pub(crate) fn runtime_of_ptr(&self) -> *const Runtime {
        self.rt
    }
}

/// Starts a new M thread, handed P `pid` (or none: it goes straight to sleep).
pub(crate) fn spawn_m(rt: &Runtime, pid: Option<usize>, spinning: bool) -> std::io::Result<()> {
    let Some(arc) = rt.me.upgrade() else {
        return Err(std::io::Error::other("runtime is gone"));
    };
    let Some(id) = take_id() else {
        return Err(std::io::Error::other(format!(
            "more than {MAX_MS} scheduler threads (goroutines blocked in `goro::blocking`?)"
        )));
    };
    let index = rt.mcount.fetch_add(1, Ordering::Relaxed);
    let m = Arc::new(M::new(id, rt));
    // Registered and listed before the thread starts (the shutdown waits for every listed M).
    REGISTRY[id].store(Arc::as_ptr(&m).cast_mut(), Ordering::Release);
    rt.ms
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(m.clone());
    let m2 = m.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("{}-m{index}", rt.config.thread_name))
        .spawn(move || m_main(arc, m2, pid.map(|p| (p, spinning))));
    match spawned {
        Ok(t) => {
            rt.threads.lock().unwrap_or_else(|e| e.into_inner()).push(t);
            Ok(())
        }
        Err(e) => {
            rt.ms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|x| !Arc::ptr_eq(x, &m));
            unregister(&m);
            rt.mcount.fetch_sub(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// The body of an M's thread.
fn m_main(rt: Arc<Runtime>, m: Arc<M>, mut next: Option<(usize, bool)>) {
    let _fatal = PanicIsFatal(m.id);
    let _alt = AltStack::install();
    crate::stackscan::record_m_thread(m.tag());
    pin::record_tls_block(&m);
    tls::set_current_m(&*m);
    loop {
        let (pid, spinning) = match next.take() {
            Some(x) => x,
            None => match stopm(&rt, &m) {
                Some(x) => x,
                None => break,
            },
        };
        acquire(&rt, &m, pid, spinning);
        schedule(&rt, &m);
        if rt.stop.load(Ordering::Acquire) {
            break;
        }
    }
    if m.is_spinning() {
        m.spinning.store(false, Ordering::Relaxed);
        rt.nmspinning.fetch_sub(1, Ordering::SeqCst);
    }
    tls::set_current_p(std::ptr::null());
    // The goroutines bound to this thread are unwound here, before its thread-locals die.
    super::shutdown::on_m_stopped(&rt, &m);
    tls::set_current_m(std::ptr::null());
}

/// A panic in the scheduler loop (never a goroutine's: those are caught inside the goroutine)
/// is a bug in goro. Unwound, it would end the M's thread while it holds a P and perhaps
/// goroutines, and the program would hang without a word; like Go's `throw`, it is fatal.
struct PanicIsFatal(usize);

impl Drop for PanicIsFatal {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fatal error: goro scheduler thread m{} panicked (a bug in goro; the message \
                 is above)",
                self.0
            );
            std::process::abort();
        }
    }
}

/// Makes P `pid` (already `P_RUNNING`, handed to us) this M's.
fn acquire(rt: &Runtime, m: &M, pid: usize, spinning: bool) {
    let p = rt.p(pid);
    debug_assert_eq!(p.status(), P_RUNNING);
    m.spinning.store(spinning, Ordering::Relaxed);
    tls::set_current_p(p);
}

/// Runs goroutines while this M holds a P; returns when it has none (it went idle, handed its
/// P away, or lost it in a blocking call) or the runtime stops.
fn schedule(rt: &Runtime, m: &M) {
    let mut p = tls::current_p();
    loop {
        if p.is_null() || rt.stop.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: CURRENT_P is a P this M owns; Ps live as long as the runtime, which
        // `m_main` keeps alive.
        let held = unsafe { &*p };
        if held.id >= rt.procs() {
            stop_p(rt, m, held);
            return;
        }
        let Some((g, inherit)) = find_runnable(rt, m) else {
            return;
        };
        if m.is_spinning() {
            reset_spinning(rt, m);
        }
        p = execute(rt, m, g, inherit);
    }
}

/// This M lets go of its P, which is past `gomaxprocs`.
fn stop_p(rt: &Runtime, m: &M, p: &P) {
    tls::set_current_p(std::ptr::null());
    if m.is_spinning() {
        reset_spinning(rt, m);
    }
    retire_p(rt, p);
}

/// Stops a P past `gomaxprocs` that the caller holds: its goroutines go to the global queue.
fn retire_p(rt: &Runtime, p: &P) {
    let gs = p.drain_all();
    p.set_status(P_STOPPED);
    if !gs.is_empty() {
        rt.inject_batch(gs);
    }
}

/// This M found work while spinning: stop spinning, and if it was the last spinner, wake
/// another M in case there is more work (Go's `resetspinning`).
fn reset_spinning(rt: &Runtime, m: &M) {
    m.spinning.store(false, Ordering::Relaxed);
    if rt.nmspinning.fetch_sub(1, Ordering::SeqCst) == 1 {
        wakep(rt);
    }
}

fn current_p<'a>() -> &'a P {
    let p = tls::current_p();
    debug_assert!(!p.is_null());
    // SAFETY: called only while this M holds a P (see `schedule`).
    unsafe { &*p }
}

/// Steps 1-6 of the module comment: a goroutine, and whether it inherits the running time
/// slice (taken from a `next` slot). Returns `None` after giving the P up.
fn find_runnable(rt: &Runtime, m: &M) -> Option<(GRef, bool)> {
    'top: loop {
        let p = current_p();
        rt.run_own_timers(m, p);
        if p.switches.load(Ordering::Relaxed) % NETPOLL_TICKS == 0 {
            poll_network_busy(rt, m, p);
        }
        m.take_inbox();
        if p.global_turn() {
            if rt.global_len.load(Ordering::Relaxed) > 0 {
                if let Some(g) = rt.take_global(p, 1) {
                    return Some((g, false));
                }
            }
            // Ms holding goroutines of their own wait for a P while every P is busy (only
            // after a blocking call made more Ms than Ps): take turns once one waited a while.
            if rt.npinned.load(Ordering::Relaxed) > 0
                && super::timers::now_nanos()
                    .saturating_sub(rt.pinned_since.load(Ordering::Relaxed))
                    > PINNED_TURN_NANOS
                && give_p_to_pinned(rt, m, p)
            {
                return None;
            }
        }
        if let Some(found) = pop_runnable(rt, m, p) {
            return Some(found);
        }
        if rt.global_len.load(Ordering::Relaxed) > 0 {
            if let Some(g) = rt.take_global(p, runq::CAP as usize / 2) {
                return Some((g, false));
            }
        }
        if rt.npinned.load(Ordering::Relaxed) > 0 && give_p_to_pinned(rt, m, p) {
            return None;
        }
        if poll_network(rt, m, p) {
            continue 'top;
        }
        let procs = rt.procs();
        let busy = procs.saturating_sub(rt.npidle.load(Ordering::Relaxed));
        if procs > 1 && (m.is_spinning() || 2 * rt.nmspinning.load(Ordering::Relaxed) < busy) {
            if !m.is_spinning() {
                m.spinning.store(true, Ordering::Relaxed);
                rt.nmspinning.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(found) = steal_work(rt, m, p) {
                return Some(found);
            }
        }
        // Readies kept arriving while we looked (each would have woken an M had we not been
        // spinning): linger one more round, paced like Go's runnext wait, instead of going to
        // sleep and having the busy M pay a futex wake for the next one.
        if m.is_spinning() && rt.wake_wanted.swap(false, Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_micros(3));
            continue 'top;
        }
        // Goroutines bound to this M are parked, and the one that wakes one of them is
        // often about to (a reply, a ring's token): only this M can run it, so watch the
        // inbox a while before sleeping, which would cost the waker a futex wake and this
        // thread a wake-up (~10 µs here) for every hand-off between two Ms.
        if m.is_spinning()
            && m.started() > 0
            && !rt.config.allow_migration
            && watch(m, INBOX_WATCH_NANOS, || {
                rt.global_len.load(Ordering::Relaxed) > 0 || rt.wake_wanted.load(Ordering::Relaxed)
            })
        {
            continue 'top;
        }
        // Nothing: give the P up (step 6).
        {
            let mut s = rt.lock();
            if let Some(g) = rt.take_global_locked(&mut s, p, runq::CAP as usize / 2) {
                return Some((g, false));
            }
            if m.has_bound_work() {
                continue 'top; // filed by a timer or a poll above, or arrived in the inbox
            }
            pidleput(rt, &mut s, p);
            tls::set_current_p(std::ptr::null());
        }
        if m.is_spinning() {
            m.spinning.store(false, Ordering::Relaxed);
            rt.nmspinning.fetch_sub(1, Ordering::SeqCst);
            // A goroutine readied while we were giving up might have seen us spinning and not
            // woken anyone: look once more before sleeping.
            let work = rt.global_len.load(Ordering::Relaxed) > 0
                || (0..rt.procs()).any(|id| rt.allp[id].get().is_some_and(|p| p.has_work()));
            if work {
                let mut s = rt.lock();
                if let Some(pid) = pidleget(rt, &mut s) {
                    drop(s);
                    acquire(rt, m, pid, true);
                    rt.nmspinning.fetch_add(1, Ordering::SeqCst);
                    continue 'top;
                }
            }
        }
        return None;
    }
}

/// How long a spinning M whose own goroutines are parked watches its inbox before it sleeps.
const INBOX_WATCH_NANOS: u64 = 20_000;

/// Spins for up to `nanos`, until a goroutine arrives in `m`'s inbox (returns true) or `stop`
/// says to (returns false; so does the time running out).
fn watch(m: &M, nanos: u64, stop: impl Fn() -> bool) -> bool {
    let until = super::timers::now_nanos() + nanos;
    loop {
        for _ in 0..64 {
            if m.inbox_len.load(Ordering::Relaxed) > 0 {
                return true;
            }
            std::hint::spin_loop();
        }
        if stop() || super::timers::now_nanos() >= until {
            return false;
        }
    }
}

/// How long an M with goroutines of its own may wait for a P while every P is busy before a
/// busy M gives it its P (Go's time slice).
const PINNED_TURN_NANOS: u64 = 10_000_000;

/// Step 2: the next goroutine from this M's own queue (started goroutines bound to it) or from
/// the P's (goroutines that have not started), and whether it inherits the time slice. The
/// `next` slots (this M's, then the P's handoff cell and `runnext`) go first and inherit;
/// after them the M's FIFO and the P's ring take turns, so neither starves the other. When
/// the slice is used up (sysmon set `preempt` while a chain of inheriting goroutines held the
/// P for 10 ms) a FIFO or ring head goes first, so a pair of goroutines handing off to each
/// other cannot starve the rest.
fn pop_runnable(rt: &Runtime, m: &M, p: &P) -> Option<(GRef, bool)> {
    let expired = p.preempt.load(Ordering::Relaxed);
    if expired {
        p.preempt.store(false, Ordering::Relaxed);
        if let Some(g) = pop_queues(rt, m, p) {
            return Some((g, false));
        }
    }
    if let Some(g) = m.take_next() {
        return Some((g, !expired));
    }
    if let Some(g) = p.pop_inherited() {
        return Some((g, !expired));
    }
    pop_queues(rt, m, p).map(|g| (g, false))
}

/// The M's FIFO and the P's ring, taking turns, then the global queue; goroutines that
/// yielded join the FIFO once their wait is over or nothing else is left (`M::yielded`).
fn pop_queues(rt: &Runtime, m: &M, p: &P) -> Option<GRef> {
    let wait = m.local.yield_wait.get();
    if wait > 0 {
        m.local.yield_wait.set(wait - 1);
    } else {
        m.release_yielded();
    }
    let ring_first = !m.local.ring_first.get();
    m.local.ring_first.set(ring_first);
    let local = if ring_first {
        p.runq.pop_ring().or_else(|| m.pop_fifo())
    } else {
        m.pop_fifo().or_else(|| p.runq.pop_ring())
    };
    if local.is_some() {
        return local;
    }
    if rt.global_len.load(Ordering::Relaxed) > 0 {
        if let Some(g) = rt.take_global(p, runq::CAP as usize / 2) {
            return Some(g);
        }
    }
    m.release_yielded();
    m.pop_fifo()
}

impl M {
    /// Owner: goroutine `g`, bound here, yielded (`yield_now`, or a preemption point) on P
    /// `p`. Go's `Gosched` puts it on the global queue's tail, behind everything queued; a
    /// bound goroutine cannot go there (another M would take it), so it is held back until as
    /// many goroutines as were queued for the P ahead of it (its ring and the global queue)
    /// have run here, or nothing else is runnable. Only the yielder waits: goroutines already
    /// in the FIFO (woken sleepers, replies) keep taking turns with the ring. A goroutine
    /// yielding in a loop then cannot keep the P from goroutines that overflowed to the global
    /// queue (when it only took turns with the ring, 5,000 of them needed ~300,000 yields on
    /// one P); and when the whole FIFO waited behind the shared work instead, a spawning loop
    /// preempted every 10 ms kept the goroutines it had woken waiting behind up to 100,000 new
    /// ones (1M sleepers: 847 B per goroutine against 177).
    fn yielded(&self, rt: &Runtime, p: &P, g: GRef) {
        let ahead = p.runq.len() as usize + rt.global_len.load(Ordering::Relaxed);
        if ahead == 0 {
            self.push_local(g, false);
            return;
        }
        if ahead > self.local.yield_wait.get() {
            self.local.yield_wait.set(ahead);
        }
        // SAFETY: this M's thread (the caller is its `execute`); one expression.
        unsafe { (*self.local.yielded.get()).push_back(g) };
    }

    /// Owner: the goroutines held back by `yielded` join the FIFO's tail.
    fn release_yielded(&self) {
        // SAFETY: this M's thread (its scheduler); no other reference to either is live.
        unsafe {
            let y = &mut *self.local.yielded.get();
            if !y.is_empty() {
                self.fifo_mut().extend(y.drain(..));
            }
        }
        self.local.yield_wait.set(0);
    }
}

/// Every this many goroutines a busy P polls the network too (`netpoll`, rule 1), like
/// tokio's `event_interval`: Go polls only when a P runs dry or after sysmon's 10 ms, which
/// leaves connections whose data arrived waiting behind a busy queue (a p99 of several ms
/// under load where a periodic poll gives under one).
const NETPOLL_TICKS: u32 = 61;

/// The periodic poll of a busy P: goroutines woken go to the tail of their queues (behind the
/// ones already waiting); under migration, an idle P is woken to steal them.
fn poll_network_busy(rt: &Runtime, m: &M, p: &P) {
    let Some(poller) = crate::netpoll::active() else {
        return;
    };
    if !poller.has_waiters() {
        return;
    }
    if poller.poll_now(&mut |g| rt.file(m, Some(p), g, false)) > 0 && rt.config.allow_migration {
        wakep(rt);
    }
}

/// Step 4½ (`netpoll`, rule 1): goroutines wait for I/O and this P ran dry: poll without
/// blocking. Each goroutine woken goes to its own M's queue (this one's, or another's inbox);
/// returns whether any was filed here.
fn poll_network(rt: &Runtime, m: &M, p: &P) -> bool {
    let Some(poller) = crate::netpoll::active() else {
        return false;
    };
    if !poller.has_waiters() {
        return false;
    }
    let n = poller.poll_now(&mut |g| rt.file(m, Some(p), g, false));
    if n > 1 && rt.config.allow_migration {
        wakep(rt);
    }
    n > 0 && (m.has_bound_work() || p.has_work())
}

/// Step 5: tries every other P `STEAL_TRIES` times, in a random order, taking goroutines that
/// have not started (the only ones a ring holds, unless the runtime allows migration); between
/// rounds, looks at this M's inbox, where goroutines bound to it arrive.
fn steal_work(rt: &Runtime, m: &M, p: &P) -> Option<(GRef, bool)> {
    // Timers of Ps whose Ms are busy elsewhere or asleep (`timers.rs`, step 2).
    if rt.run_all_timers(m, p) > 0 {
        if let Some(found) = pop_runnable(rt, m, p) {
            return Some(found);
        }
    }
    let procs = rt.procs();
    for attempt in 0..STEAL_TRIES {
        if m.inbox_len.load(Ordering::Acquire) > 0 {
            if let Some(g) = m.pop_inbox() {
                return Some((g, false));
            }
        }
        let last = attempt == STEAL_TRIES - 1;
        let start = m.rand() as usize % procs;
        for i in 0..procs {
            let v = (start + i) % procs;
            if v == p.id {
                continue;
            }
            let Some(victim) = rt.allp[v].get() else {
                continue;
            };
            if victim.status() == P_IDLE {
                continue;
            }
            // On the last try, `runnext` too; but a victim whose M holds it (P_RUNNING: running
            // a goroutine, or between two) is about to run it, warm in its cache: give it a
            // moment first (Go's `usleep(3)` in `runqgrab`, which also keeps this M counted as
            // spinning meanwhile, so readies do not wake more Ms). Unlike Go, take it only if
            // the victim has not scheduled meanwhile: a victim that keeps scheduling (a
            // goroutine handing off to the one it readied, spawn+join, ping-pong, a ring of
            // them) runs its `runnext` itself, and taking it would move the chain to this
            // thread, cold; a victim stuck in one goroutine gets it taken. (Waiting only while a
            // goroutine runs, not between two, let a ring of 1,000 goroutines passing a token
            // on 2 Ps migrate on ~20% of its hops; now on ~0.1%.)
            let mut take_next = last && victim.runq.len() == 0 && victim.runq.has_next();
            if take_next && victim.status() == P_RUNNING {
                let switches = victim.switches.load(Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_micros(3));
                take_next = victim.switches.load(Ordering::Relaxed) == switches;
            }
            if let Some(g) = victim.runq.steal_into(&p.runq, take_next) {
                return Some((g, false));
            }
        }
        if rt.global_len.load(Ordering::Relaxed) > 0 {
            if let Some(g) = rt.take_global(p, runq::CAP as usize / 2) {
                return Some((g, false));
            }
        }
    }
    None
}

/// Lets go of `p` (under the scheduler lock): to the M that has waited longest with
/// goroutines of its own and no P, else onto the idle list. Every P that frees up goes
/// through here, so a waiting M cannot be left asleep beside an idle P (`wake_bound` lists an
/// M only when no P is idle).
fn pidleput(rt: &Runtime, s: &mut Sched, p: &P) {
    debug_assert!(!p.has_work() || p.id >= rt.procs());
    if !s.pinned_ms.is_empty() && p.id < rt.procs() && !rt.stop.load(Ordering::Acquire) {
        let m = s.pinned_ms.remove(0);
        update_pinned(rt, s, true);
        p.set_status(P_RUNNING);
        m.hand(p.id, false);
        return;
    }
    p.set_status(P_IDLE);
    s.idle_ps.push(p.id);
    rt.npidle.store(s.idle_ps.len(), Ordering::Relaxed);
}

/// Takes an idle P (under the scheduler lock); it is `P_RUNNING` and the caller's to give.
pub(crate) fn pidleget(rt: &Runtime, s: &mut Sched) -> Option<usize> {
    let id = s.idle_ps.pop()?;
    rt.npidle.store(s.idle_ps.len(), Ordering::Relaxed);
    rt.p(id).set_status(P_RUNNING);
    Some(id)
}

/// Step 4: an idle M holds goroutines pinned to it and waits for a P; give it ours.
fn give_p_to_pinned(rt: &Runtime, m: &M, p: &P) -> bool {
    let target = {
        let mut s = rt.lock();
        // The longest waiting first (the list is in arrival order).
        let t = (!s.pinned_ms.is_empty()).then(|| s.pinned_ms.remove(0));
        update_pinned(rt, &mut s, true);
        t
    };
    let Some(target) = target else {
        return false;
    };
    if m.is_spinning() {
        reset_spinning(rt, m);
    }
    tls::set_current_p(std::ptr::null());
    target.hand(p.id, false);
    true
}

/// Puts this M to sleep until `startm` hands it a P; `None` when the runtime stops. The first
/// M to sleep while timers are pending becomes the timer waiter (`timers.rs`, step 3): it
/// wakes at the earliest deadline and takes an idle P, as a spinner, to run them.
fn stopm(rt: &Runtime, m: &Arc<M>) -> Option<(usize, bool)> {
    let r = stopm_inner(rt, m);
    m.sleeping.store(false, Ordering::SeqCst);
    r
}

fn stopm_inner(rt: &Runtime, m: &Arc<M>) -> Option<(usize, bool)> {
    {
        let mut s = rt.lock();
        if rt.stop.load(Ordering::Acquire) {
            return None;
        }
        // Before the last look at our own queues (`push_inbox`'s no-lost-wake-up argument).
        m.sleeping.store(true, Ordering::SeqCst);
        if m.has_bound_work() {
            // Goroutines bound here: run them on any idle P, else wait for one.
            if let Some(pid) = pidleget(rt, &mut s) {
                return Some((pid, false));
            }
            push_pinned(rt, &mut s, m);
        } else {
            s.idle_ms.push(m.clone());
            if s.timer_waiter.is_none() {
                update_timer_wait(rt, &mut s, m);
            }
        }
    }
    let mut w = m.wake.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(x) = w.next_p.take() {
            let was_waiter = std::mem::take(&mut w.timer_wait);
            drop(w);
            if was_waiter {
                pass_timer_wait(rt, m);
            }
            return Some(x);
        }
        if rt.stop.load(Ordering::Acquire) {
            return None;
        }
        if !w.timer_wait {
            w = m.cv.wait(w).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let until = rt.timer_until.load(Ordering::SeqCst);
        let now = super::timers::now_nanos();
        if now < until && !w.recheck {
            let d = (until != super::timers::NONE)
                .then(|| std::time::Duration::from_nanos(until - now));
            if let Some(poller) = crate::netpoll::active() {
                w.in_poll = true;
                drop(w);
                let mut woken = Vec::new();
                poller.poll_wait(d, &mut |g| woken.push(g));
                w = m.wake.lock().unwrap_or_else(|e| e.into_inner());
                w.in_poll = false;
                if !woken.is_empty() {
                    drop(w);
                    if let Some(x) = run_polled(rt, m, woken) {
                        return Some(x);
                    }
                    w = m.wake.lock().unwrap_or_else(|e| e.into_inner());
                }
                continue;
            }
            let d = d.expect("without the netpoller, a timer waiter waits for a timer");
            w = m.cv.wait_timeout(w, d).unwrap_or_else(|e| e.into_inner()).0;
            continue;
        }
        w.recheck = false;
        drop(w);
        {
            let mut s = rt.lock();
            // Still idle? (A `startm` may have taken us off the list to hand us a P.)
            let listed = s.idle_ms.iter().position(|x| Arc::ptr_eq(x, m));
            if let Some(i) = listed {
                if rt.earliest_timer() <= super::timers::now_nanos() {
                    // Due: run them on an idle P, as a spinner (`steal_work` runs all heaps).
                    if let Some(pid) = pidleget(rt, &mut s) {
                        s.idle_ms.swap_remove(i);
                        leave_timer_wait(rt, &mut s, m);
                        rt.nmspinning.fetch_add(1, Ordering::SeqCst);
                        return Some((pid, true));
                    }
                    // Every P is busy, and each M runs its own P's timers: stop waiting.
                    resign_timer_wait(rt, &mut s, m);
                } else {
                    update_timer_wait(rt, &mut s, m);
                }
            }
        }
        w = m.wake.lock().unwrap_or_else(|e| e.into_inner());
    }
}

/// The timer waiter `m` got goroutines from the netpoller (`netpoll`, rule 2). Those bound to
/// other Ms go to their inboxes. The rest (bound here, or any under migration) are run here:
/// `m` takes an idle P and queues them (no round trip through the global queue and its lock),
/// and runs them as a spinner (so it wakes another M if there is more than it can run). With
/// no idle P, this M waits for one with its goroutines (under migration they go to the global
/// queue for the Ms that have Ps). Returns the P, or `None` to keep waiting (or to take a P
/// handed over meanwhile).
fn run_polled(rt: &Runtime, m: &Arc<M>, woken: Vec<GRef>) -> Option<(usize, bool)> {
    let migrate = rt.config.allow_migration;
    let mut here = Vec::with_capacity(woken.len());
    for g in woken {
        if migrate || g.last_m() as usize == m.id {
            here.push(g);
        } else {
            super::ready_elsewhere(g);
        }
    }
    if here.is_empty() {
        return None;
    }
    let mut s = rt.lock();
    let listed = s.idle_ms.iter().position(|x| Arc::ptr_eq(x, m));
    let Some((i, pid)) = listed.and_then(|i| Some((i, pidleget(rt, &mut s)?))) else {
        if migrate {
            s.global.extend(here);
            rt.global_len.store(s.global.len(), Ordering::Relaxed);
            return None;
        }
        drop(s);
        for g in here {
            m.push_local(g, false);
        }
        let mut s = rt.lock();
        if let Some(i) = s.idle_ms.iter().position(|x| Arc::ptr_eq(x, m)) {
            // Still idle, now with work and no P: wait for one as a pinned M.
            s.idle_ms.swap_remove(i);
            leave_timer_wait(rt, &mut s, m);
            push_pinned(rt, &mut s, m);
        }
        return None;
    };
    s.idle_ms.swap_remove(i);
    leave_timer_wait(rt, &mut s, m);
    drop(s);
    // `pidleget` made the P ours (RUNNING, and no other M runs it), so we may fill its ring
    // before `acquire` records it as this thread's.
    let p = rt.p(pid);
    for g in here {
        if migrate {
            p.push_tail(rt, g);
        } else {
            m.push_local(g, false);
        }
    }
    rt.nmspinning.fetch_add(1, Ordering::SeqCst);
    Some((pid, true))
}

/// Under the scheduler lock: `m`, holding runnable goroutines of its own, waits for a P.
fn push_pinned(rt: &Runtime, s: &mut Sched, m: &Arc<M>) {
    if !s.pinned_ms.iter().any(|x| Arc::ptr_eq(x, m)) {
        s.pinned_ms.push(m.clone());
        update_pinned(rt, s, s.pinned_ms.len() == 1);
    }
}

/// Under the scheduler lock, after the pinned list changed: `npinned`, and when the M at its
/// head started waiting (`head_changed`: now; an M moved to the head counts from now, which
/// can only make it wait longer than `PINNED_TURN_NANOS`, never starve).
fn update_pinned(rt: &Runtime, s: &mut Sched, head_changed: bool) {
    if head_changed {
        rt.pinned_since
            .store(super::timers::now_nanos(), Ordering::Relaxed);
    }
    rt.npinned.store(s.pinned_ms.len(), Ordering::Relaxed);
}

/// `push_inbox` found `t` asleep: hand it an idle P, or list it to wait for the next P that
/// frees up (`find_runnable` hands one over). Called under `t`'s inbox lock.
fn wake_bound(rt: &Runtime, t: &M) {
    let mut s = rt.lock();
    if !t.sleeping.load(Ordering::SeqCst) {
        return;
    }
    if let Some(i) = s.idle_ms.iter().position(|x| std::ptr::eq(&**x, t)) {
        let m = s.idle_ms.swap_remove(i);
        match pidleget(rt, &mut s) {
            Some(pid) => {
                drop(s);
                m.hand(pid, false);
            }
            None => {
                leave_timer_wait(rt, &mut s, &m);
                push_pinned(rt, &mut s, &m);
            }
        }
    } else if let Some(i) = s.pinned_ms.iter().position(|x| std::ptr::eq(&**x, t)) {
        if let Some(pid) = pidleget(rt, &mut s) {
            let m = s.pinned_ms.remove(i);
            update_pinned(rt, &mut s, i == 0);
            drop(s);
            m.hand(pid, false);
        }
    }
    // Otherwise it was handed a P already and will look at its inbox.
}

/// The netpoller has just started: if an idle M waits for timers on its condition variable,
/// or none waits at all, have one wait in the poller (`netpoll`, rule 2).
pub(crate) fn netpoll_started(rt: &Runtime) {
    let mut s = rt.lock();
    match s.timer_waiter.clone() {
        Some(w) => w.recheck_timers(),
        None => {
            if let Some(next) = s.idle_ms.last().cloned() {
                update_timer_wait(rt, &mut s, &next);
                next.recheck_timers();
            }
        }
    }
}

/// Under the scheduler lock: makes `m` (idle, listed) the timer waiter for the earliest
/// deadline, or no one's if there are no timers and no netpoller (with the netpoller, the
/// waiter waits in it, for as long as there is no timer). The store-then-load order against
/// `timers::add` is the no-forgotten-timer argument in `timers.rs`.
fn update_timer_wait(rt: &Runtime, s: &mut Sched, m: &Arc<M>) {
    let mut until = rt.earliest_timer();
    if until == super::timers::NONE && crate::netpoll::active().is_none() {
        resign_timer_wait(rt, s, m);
        return;
    }
    rt.timer_until.store(until, Ordering::SeqCst);
    let again = rt.earliest_timer();
    if again < until {
        until = again;
        rt.timer_until.store(until, Ordering::SeqCst);
    }
    s.timer_waiter = Some(m.clone());
    m.wake.lock().unwrap_or_else(|e| e.into_inner()).timer_wait = true;
}

/// Under the scheduler lock: `m` stops being the timer waiter.
fn resign_timer_wait(rt: &Runtime, s: &mut Sched, m: &Arc<M>) {
    if s.timer_waiter.as_ref().is_some_and(|w| Arc::ptr_eq(w, m)) {
        s.timer_waiter = None;
        rt.timer_until.store(0, Ordering::SeqCst);
    }
    m.wake.lock().unwrap_or_else(|e| e.into_inner()).timer_wait = false;
}

/// The timer waiter `m` was handed a P for other work: another idle M takes over the wait.
fn pass_timer_wait(rt: &Runtime, m: &Arc<M>) {
    let mut s = rt.lock();
    leave_timer_wait(rt, &mut s, m);
}

/// Under the scheduler lock: `m` stops waiting for timers (it got a P, or it waits for one
/// as a pinned M); if it was the timer waiter, the next idle M takes the wait over. (Another
/// M may be the waiter: then there is nothing to pass on.)
fn leave_timer_wait(rt: &Runtime, s: &mut Sched, m: &Arc<M>) {
    let was_waiter = s.timer_waiter.as_ref().is_some_and(|w| Arc::ptr_eq(w, m));
    resign_timer_wait(rt, s, m);
    if was_waiter {
        pass_timer_wait_locked(rt, s);
    }
}

/// Under the scheduler lock, with no timer waiter: the next idle M becomes it, so the timers
/// of the Ps that stay idle keep being watched while the old waiter runs goroutines. Only for
/// timers: waking an M just to wait in the netpoller would cost a thread wake-up per batch of
/// events; the next M to go idle takes that wait up (and until then Ps that run dry and
/// sysmon poll), as in Go, where whichever M sleeps next blocks in `netpoll`.
fn pass_timer_wait_locked(rt: &Runtime, s: &mut Sched) {
    debug_assert!(s.timer_waiter.is_none());
    if rt.earliest_timer() == super::timers::NONE {
        return;
    }
    if let Some(next) = s.idle_ms.last().cloned() {
        update_timer_wait(rt, s, &next);
        next.recheck_timers();
    }
}

/// Wakes an idle P for newly runnable work, unless an M is already looking (Go's `wakep`).
pub(crate) fn wakep(rt: &Runtime) {
    if rt.npidle.load(Ordering::Relaxed) == 0 {
        return;
    }
    if rt.nmspinning.load(Ordering::Relaxed) != 0 {
        // Tell the spinner work keeps coming (a plain store, and only when not already set,
        // so a busy M does not keep stealing the cache line back).
        if !rt.wake_wanted.load(Ordering::Relaxed) {
            rt.wake_wanted.store(true, Ordering::Relaxed);
        }
        return;
    }
    if rt.stop.load(Ordering::Relaxed) {
        return; // shutting down: no new Ms (the shutdown runs what is queued itself)
    }
    if rt
        .nmspinning
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    startm(rt, None, true);
}

/// Runs P `pid` (or an idle P if `None`) on an idle M, or a new one (Go's `startm`). With
/// `spinning`, the caller has counted the M in `nmspinning` already.
pub(crate) fn startm(rt: &Runtime, pid: Option<usize>, spinning: bool) {
    let (pid, m) = {
        let mut s = rt.lock();
        let pid = match pid.or_else(|| pidleget(rt, &mut s)) {
            Some(p) if !rt.stop.load(Ordering::Acquire) => p,
            other => {
                if let Some(p) = other {
                    pidleput(rt, &mut s, rt.p(p));
                }
                drop(s);
                if spinning {
                    rt.nmspinning.fetch_sub(1, Ordering::SeqCst);
                }
                return;
            }
        };
        (pid, s.idle_ms.pop())
    };
    match m {
        Some(m) => m.hand(pid, spinning),
        None => {
            if let Err(e) = spawn_m(rt, Some(pid), spinning) {
                // Keep running on the Ms we have; the P waits idle for one of them.
                report_spawn_failure(&e);
                let mut s = rt.lock();
                pidleput(rt, &mut s, rt.p(pid));
                drop(s);
                if spinning {
                    rt.nmspinning.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }
}

fn report_spawn_failure(e: &std::io::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| eprintln!("goro: cannot start another scheduler thread: {e}"));
}

/// Hands a P retaken from an M in a blocking call to whoever should run it (Go's `handoffp`).
pub(crate) fn handoffp(rt: &Runtime, p: &P) {
    if p.id >= rt.procs() {
        retire_p(rt, p);
        return;
    }
    if p.has_work() || rt.global_len.load(Ordering::Relaxed) > 0 {
        p.set_status(P_RUNNING);
        startm(rt, Some(p.id), false);
        return;
    }
    if rt.nmspinning.load(Ordering::Relaxed) + rt.npidle.load(Ordering::Relaxed) == 0
        && rt
            .nmspinning
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    {
        p.set_status(P_RUNNING);
        startm(rt, Some(p.id), true);
        return;
    }
    let mut s = rt.lock();
    if rt.global_len.load(Ordering::Relaxed) > 0 {
        drop(s);
        p.set_status(P_RUNNING);
        startm(rt, Some(p.id), false);
        return;
    }
    pidleput(rt, &mut s, p);
}

/// Runs `g` until it switches out, then files it according to why.
/// Returns this M's P afterwards (the goroutine may have changed it in `blocking`).
fn execute(rt: &Runtime, m: &M, g: GRef, inherit: bool) -> *const P {
    let last = g.last_m();
    if last != m.id as u32 {
        if last == crate::g::NO_M {
            // First run: bound to this M from now on (`Runtime::file`).
            g.set_last_m(m.id as u32);
            m.count_start();
        } else if rt.config.allow_migration && pin::may_run_on(rt, last as usize, &g) {
            g.set_last_m(m.id as u32);
            g.retag_slot(m.tag());
        } else {
            // Under migration: the scan found a reference into the old M's thread-locals.
            // Otherwise routing never brings a started goroutine here; if it did, running it
            // would break the rule, so it goes where it belongs.
            debug_assert!(
                rt.config.allow_migration,
                "goroutine bound to m{last} on m{}",
                m.id
            );
            pin::send_back(rt, last as usize, g);
            return tls::current_p();
        }
    }
    // `running = 1` before the SCAN check, for the collector's visit of runnable goroutines.
    crate::stackscan::before_resume(&g);
    g.transition_to_running();
    tls::set_current_g(Some(&g));
    let p = current_p();
    // A goroutine from a `next` slot continues the time slice (Go's `inheritTime`): the tick
    // sysmon watches does not move, so a chain of goroutines handing off to each other is asked
    // to yield after 10 ms like one goroutine would be. Otherwise a new slice starts, and a
    // preemption request was for the previous one.
    if !inherit && p.preempt.load(Ordering::Relaxed) {
        p.preempt.store(false, Ordering::Relaxed);
    }
    p.start_running(!inherit);
    p.switches.store(
        p.switches.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
    // SAFETY: we hold the G's scheduling reference (from a queue) and no one scans its stack.
    let r = unsafe { g.resume(m.tag()) };
    // The goroutine may have left its P in `blocking` and come back with another, or none.
    let p_now = tls::leave_goroutine();
    // SAFETY: as in `schedule`.
    let p = unsafe { p_now.as_ref() };
    if let Some(p) = p {
        p.stop_running();
    }
    if !matches!(r, corosensei::CoroutineResult::Return(())) {
        // Quiescent until filed: the collector's stack visit may need it scanned now.
        crate::stackscan::at_switch_out(&g);
    }
    match r {
        corosensei::CoroutineResult::Yield(Switch::Yield) => {
            if !rt.config.allow_migration {
                // Behind this M's other runnable goroutines and the shared work queued now;
                // with no P (back from `blocking` with none free), this M waits for one with
                // it (`stopm`).
                match p {
                    Some(p) => m.yielded(rt, p, g),
                    None => m.push_local(g, false),
                }
            } else {
                match p {
                    // Like Go's Gosched: behind the global queue when it has work, so a
                    // goroutine yielding in a loop cannot starve goroutines that overflowed
                    // there.
                    Some(p) if rt.global_len.load(Ordering::Relaxed) == 0 => p.push_tail(rt, g),
                    _ => rt.inject(g),
                }
            }
        }
        corosensei::CoroutineResult::Yield(Switch::Park) => {
            // WAITING now, holding its own scheduling reference until an unpark takes it; or a
            // token arrived while it was switching out and it runs again at once.
            if let Some(g) = crate::g::commit_park(g) {
                rt.file(m, p, g, true);
            }
        }
        corosensei::CoroutineResult::Return(()) => {
            // SAFETY: this M ran the G to its return.
            unsafe { g.finish() };
            m.count_finish();
        }
    }
    p_now
}
