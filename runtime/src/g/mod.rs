//! The goroutine descriptor (G): identity, the state word, the coroutine, and join state.
//!
//! A `G` is the header of a reference-counted [`GCell`] whose tail holds the goroutine's output
//! (`JoinHandle<T>` sees it typed, everyone else through [`GRef`], type-erased). Ownership:
//! - exactly one *scheduling reference* exists from spawn until the goroutine finishes. It is
//!   moved, never cloned: a run queue holds it while the G is queued, the M while it runs, and
//!   the G itself (`parked_ref`) while WAITING. The M stores it there *before* committing the
//!   park; the `unpark` that wins WAITING → RUNNABLE takes it out and queues it. So a goroutine
//!   parked forever is never freed under its own feet: like Go, it stays until woken, or until
//!   its runtime's shutdown unwinds it (`sched/shutdown.rs`). Moving instead of cloning saves two atomic
//!   read-modify-writes per park and per spawn on the hot path;
//! - `Goroutine` and `JoinHandle` handles own one reference each.
//!
//! # The state word
//! ```text
//!   bits 0-2  status: RUNNABLE (queued or running) | WAITING | DEAD
//!   bit  3    NOTIFIED: the unpark token (std::thread::park semantics)
//!   bit  4    SCAN: someone (the collector) is working on the parked stack; do not resume
//! ```
//! Transitions, each by one named method and nowhere else:
//!
//! | method                       | who                    | from → to                               |
//! |------------------------------|------------------------|-----------------------------------------|
//! | `transition_to_running`      | M, before resuming     | none: waits while SCAN (a load)         |
//! | `transition_to_waiting`      | M, after a park switch | RUNNABLE → WAITING, or consumes NOTIFIED|
//! | `try_consume_token`          | the goroutine itself   | clears NOTIFIED                         |
//! | `transition_to_notified`     | `unpark`, any thread   | WAITING → RUNNABLE, else (re)writes NOTIFIED |
//! | `try_begin_scan`/`end_scan`  | collector, any thread  | WAITING → WAITING+SCAN → WAITING        |
//! | `try_begin_scan_runnable`    | collector, any thread  | RUNNABLE → RUNNABLE+SCAN (see below)    |
//! | `transition_to_dead`         | M, after the return    | RUNNABLE → DEAD                         |
//!
//! There is no RUNNING status: whether a RUNNABLE goroutine is queued or running is known to
//! whoever holds its scheduling reference (a queue or an M), and the collector's stack visit,
//! which needs it, reads the slot header's `running` word instead (stored by the M, plain,
//! around each resume). That saves a compare-and-swap per schedule: resuming is a load that
//! checks SCAN. SCAN set on a RUNNABLE goroutine (`try_begin_scan_runnable`) may land under a
//! running one; the collector then sees `running == 1` and clears it without touching the
//! stack, and nothing the running goroutine does looks at SCAN (a park keeps the bit).
//!
//! Park protocol (no lost wake-up): the goroutine first tries to consume a pending token. If
//! there is none it records its stack pointer and switches to its M; only then, with the stack
//! quiescent, does the M try RUNNABLE → WAITING. An `unpark` that raced in between left NOTIFIED
//! set, so that CAS fails, the M consumes the token and runs the goroutine again. An `unpark`
//! that sees WAITING moves it to RUNNABLE and is the one caller that queues the G: a G is in at
//! most one run queue at a time. This mirrors Go's `gopark`, which commits the park on the
//! scheduler stack (`park_m`) for the same reason. The loom model is in `tests` below.
//!
//! A goroutine runs on the M it first ran on until it ends (`sched/pin.rs`; `last_m` names that
//! M), but its state word is touched from any thread (unparks, the collector); the state word
//! and the run queues are the only hand-off points, and both use acquire/release.

mod body;
mod gref;
mod slab;

use body::{Body, BodyKind};
pub(crate) use gref::{new_goroutine, GCell, GRef, TypedGRef};

/// Frees a descriptor cell whose free `stackscan::defer_free` postponed.
///
/// # Safety
/// `ptr` must be a dropped, unreferenced cell from `slab::alloc(layout)`.
pub(crate) unsafe fn free_cell(ptr: NonNull<u8>, layout: std::alloc::Layout) {
    // SAFETY: as the caller guarantees.
    unsafe { slab::free(ptr, layout) }
}

use crate::loom::{AtomicU32, AtomicU8, Ordering};
use crate::stack::{SlotAddr, StackSlot};
use corosensei::{Coroutine, Yielder};
use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::Ordering as StdOrdering;
use std::sync::atomic::{AtomicU32 as AtomicU32Std, AtomicU64, AtomicUsize};

pub(crate) const RUNNABLE: u32 = 1;
pub(crate) const WAITING: u32 = 3;
pub(crate) const DEAD: u32 = 4;
pub(crate) const STATUS_MASK: u32 = 0b111;
pub(crate) const NOTIFIED: u32 = 1 << 3;
pub(crate) const SCAN: u32 = 1 << 4;

/// `G::last_m` of a goroutine that never ran.
pub(crate) const NO_M: u32 = u32::MAX;

/// Join state bits (`G::join`): the goroutine finished and published its output; a joiner
/// wrote `waiter`; the completer is done with the joiner (its last touch of `waiter`).
const COMPLETE: u8 = 1;
const WAITER: u8 = 2;
const WOKEN: u8 = 4;

/// Why a goroutine switched back to its M.
pub(crate) enum Switch {
    /// `yield_now`: requeue at the tail.
    Yield,
    /// `park`: commit the park unless a token arrived.
    Park,
}

pub(crate) type Coro = Coroutine<(), Switch, (), StackSlot>;

/// What a running goroutine keeps in its coroutine's initial frame (which stays put: stacks
/// never move) rather than in its `G`, because only the goroutine itself uses it: the `G`
/// stays one 128-byte cell.
pub(crate) struct Frame {
    /// The coroutine's yielder, for switching out.
    yielder: *const Yielder<(), Switch>,
    /// Goroutine-local values (`crate::local`), created on first use.
    pub(crate) locals: UnsafeCell<Option<Box<crate::local::LocalMap>>>,
}

impl Frame {
    pub(crate) fn new(yielder: &Yielder<(), Switch>) -> Frame {
        Frame {
            yielder,
            locals: UnsafeCell::new(None),
        }
    }
}

/// A joiner: a goroutine (borrowed: see the join protocol in `join`) or a plain thread.
pub(crate) enum Joiner {
    Goroutine(NonNull<G>),
    Thread(std::thread::Thread),
}

pub(crate) struct G {
    pub(crate) id: u64,
    state: AtomicU32,
    join: AtomicU8,
    /// The stack slot's bounds (a `SlotAddr`), copied from the slot for the collector's and
    /// `committed_bytes`'s use; `SlotAddr::NONE` until the goroutine first runs (`body.rs`).
    stack: AtomicUsize,
    /// Stack pointer recorded when the goroutine last switched out (for `release_below_sp`).
    /// Written by the goroutine before switching, read under SCAN while WAITING.
    saved_sp: AtomicUsize,
    /// The closure, then the coroutine (`body.rs`). Owned by the holder of the scheduling
    /// reference while the G is not WAITING (the M that runs it).
    body: UnsafeCell<Body>,
    /// Which of `body`'s fields is live; owned with it.
    body_kind: UnsafeCell<BodyKind>,
    /// The goroutine's `Frame`, set when it first runs; read only by the goroutine itself.
    frame: UnsafeCell<*const Frame>,
    /// Written by the joiner before it sets WAITER; taken by the completer after it sees WAITER.
    waiter: UnsafeCell<Option<Joiner>>,
    /// The scheduling reference while WAITING (see the module comment): written by the M
    /// before it commits the park, taken by the unparker that moves the G to RUNNABLE.
    parked_ref: UnsafeCell<Option<GRef>>,
    /// The M this goroutine is bound to (`NO_M` before its first run): written by that M when
    /// it first runs it (or, under migration, when another M takes it over), read by whoever
    /// readies it, to queue it there (`Runtime::file`).
    last_m: AtomicU32Std,
    /// Set by the runtime's shutdown before it unwinds the goroutine: switches return at once.
    dying: std::sync::atomic::AtomicBool,
    /// References to this G's cell (`GRef`s); the last one out calls `destroy`.
    refs: AtomicU32Std,
    /// Drops the cell (typed by the goroutine's output) and frees its memory.
    destroy: unsafe fn(NonNull<G>),
}

impl Drop for G {
    /// A goroutine that started and did not finish is never dropped: `gref::destroy` keeps
    /// its whole cell (see there), and the runtime's shutdown unwinds every goroutine on its
    /// own M before it lets go of the runtime, so that is a last resort. If one were dropped
    /// anyway, its coroutine and slot would be leaked, not unwound here on whatever thread
    /// dropped the last reference.
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no one else uses the body. A closure that never ran is dropped
        // on this thread, which is what dropping an unspawned closure would do.
        if unsafe { self.drop_body() } {
            // The slot stays with the leaked coroutine (and the goroutine-locals in its
            // frame: their destructors expect to run inside it); its header must not name us.
            crate::stack::clear_owner(self.stack());
        }
    }
}

// SAFETY: every cell in `G` has one owner at a time, handed over through the state word or the
// join word with acquire/release (see the field comments). The coroutine may hold values that
// are not `Send` on its stack; they are only touched by the goroutine, which runs on one thread
// at a time, and the spawned closure itself is `Send`.
unsafe impl Send for G {}
// SAFETY: as above; shared access goes through atomics, cells only by their owner.
unsafe impl Sync for G {}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl G {
    /// A RUNNABLE goroutine that will run `body`, not yet started.
    fn new(body: Body, destroy: unsafe fn(NonNull<G>)) -> G {
        G {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            state: AtomicU32::new(RUNNABLE),
            join: AtomicU8::new(0),
            stack: AtomicUsize::new(SlotAddr::NONE.to_raw()),
            saved_sp: AtomicUsize::new(0),
            body: UnsafeCell::new(body),
            body_kind: UnsafeCell::new(BodyKind::Start),
            frame: UnsafeCell::new(std::ptr::null()),
            waiter: UnsafeCell::new(None),
            parked_ref: UnsafeCell::new(None),
            last_m: AtomicU32Std::new(NO_M),
            dying: std::sync::atomic::AtomicBool::new(false),
            // The `JoinHandle`'s reference and the scheduling reference (`new_goroutine`).
            refs: AtomicU32Std::new(2),
            destroy,
        }
    }

    /// The goroutine's stack slot: `SlotAddr::NONE` until it first runs.
    pub(crate) fn stack(&self) -> SlotAddr {
        SlotAddr::from_raw(self.stack.load(StdOrdering::Acquire))
    }

    fn status(s: u32) -> u32 {
        s & STATUS_MASK
    }

    fn update(&self, mut f: impl FnMut(u32) -> Option<u32>) -> Result<u32, u32> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let next = match f(cur) {
                Some(n) => n,
                None => return Err(cur),
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(prev) => return Ok(prev),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Before resuming: waits until no one scans the stack. An unpark can make a G RUNNABLE
    /// while the collector still holds SCAN from its WAITING days, or the stack visit can set
    /// it on a queued one. Apart from that transient case (see the module comment) SCAN is never set on a
    /// RUNNABLE G, so once this load sees it clear it stays clear while the G runs. Acquire
    /// pairs with `end_scan`, so the collector's work on the stack happens before we run on it.
    pub(crate) fn transition_to_running(&self) {
        loop {
            let s = self.state.load(Ordering::Acquire);
            debug_assert_eq!(G::status(s), RUNNABLE, "resuming a G that is not runnable");
            if s & SCAN == 0 {
                return;
            }
            // The collector is releasing pages of this stack; it holds SCAN for one madvise.
            #[cfg(not(loom))]
            std::hint::spin_loop();
            #[cfg(loom)]
            loom::thread::yield_now();
        }
    }

    /// Commits a park. Returns false if a token was pending: it is consumed and the G is
    /// RUNNABLE again, to be resumed at once.
    pub(crate) fn transition_to_waiting(&self) -> bool {
        let prev = self
            .update(|s| {
                debug_assert_eq!(G::status(s), RUNNABLE);
                if s & NOTIFIED != 0 {
                    Some((s & !(STATUS_MASK | NOTIFIED)) | RUNNABLE)
                } else {
                    Some((s & !STATUS_MASK) | WAITING)
                }
            })
            .unwrap_or_else(|s| s);
        prev & NOTIFIED == 0
    }

    pub(crate) fn try_consume_token(&self) -> bool {
        self.update(|s| (s & NOTIFIED != 0).then_some(s & !NOTIFIED))
            .is_ok()
    }

    /// Delivers an unpark token. Returns true if the G was WAITING and is now RUNNABLE: the
    /// caller must queue it (it is the only one who will).
    pub(crate) fn transition_to_notified(&self) -> bool {
        let prev = self
            .update(|s| match G::status(s) {
                WAITING => Some((s & !STATUS_MASK) | RUNNABLE),
                // Already notified: still write (the same value), never just load. The
                // waker's stores before this unpark (the flag the parker re-checks) must
                // happen before the `try_consume_token` that clears the token: with a bare
                // load this is the store-buffering pattern, and the parker can consume a
                // stale token, read the flag stale and park for good while this unpark did
                // nothing (tests/sched.rs hung one run in six that way). std's thread parker
                // swaps on every unpark for the same reason.
                _ if s & NOTIFIED != 0 => Some(s),
                _ => Some(s | NOTIFIED),
            })
            .unwrap_or_else(|s| s);
        G::status(prev) == WAITING
    }

    pub(crate) fn try_begin_scan(&self) -> bool {
        self.update(|s| (G::status(s) == WAITING && s & SCAN == 0).then_some(s | SCAN))
            .is_ok()
    }

    /// The collector's stack visit on a goroutine that is RUNNABLE (queued, or running):
    /// sets SCAN unless it is finished or already held. The caller then checks the slot's
    /// `running` word after `membarrier::heavy()` and touches the stack only if it is 0: an M
    /// that stored `running = 1` before this CAS is seen; one that stores it after sees SCAN
    /// in `transition_to_running` and waits (`crate::stackscan`).
    pub(crate) fn try_begin_scan_runnable(&self) -> bool {
        self.update(|s| (G::status(s) == RUNNABLE && s & SCAN == 0).then_some(s | SCAN))
            .is_ok()
    }

    pub(crate) fn end_scan(&self) {
        self.state.fetch_and(!SCAN, Ordering::AcqRel);
    }

    /// A plain store: only the M running the G writes its status while it runs, a SCAN the
    /// collector set meanwhile is one it will drop (it sees `running`, then DEAD), and a
    /// NOTIFIED bit an `unpark` races in means nothing to a dead goroutine.
    pub(crate) fn transition_to_dead(&self) {
        debug_assert_eq!(G::status(self.state.load(Ordering::Relaxed)), RUNNABLE);
        self.state.store(DEAD, Ordering::Release);
    }

    /// Relaxed: the run queue or state-word hand-off that gave the G to its next M orders it.
    pub(crate) fn last_m(&self) -> u32 {
        self.last_m.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_last_m(&self, m: u32) {
        self.last_m.store(m, std::sync::atomic::Ordering::Relaxed);
    }

    /// The parked stack's extent for a scan: the stack pointer recorded at the last switch-out
    /// and the slot's top. Meaningful only while the caller owns the G (not running).
    pub(crate) fn parked_stack(&self) -> (usize, usize) {
        (
            self.saved_sp.load(std::sync::atomic::Ordering::Relaxed),
            self.stack().hi(),
        )
    }

    /// The goroutine's `Frame`, or `None` before it started (a closure dropped unstarted, with
    /// the G set as current for its destructors). Only the goroutine itself, or whoever runs
    /// such destructors in its name, may call this.
    pub(crate) fn try_frame(&self) -> Option<&Frame> {
        // SAFETY: set when the goroutine started, before any of its code ran; the frame lives
        // in its initial frame until it returns, and only the goroutine calls this. Null
        // before it started.
        unsafe { (*self.frame.get()).as_ref() }
    }

    /// Moves the slot header's tag to M `tag` (the goroutine migrated there, under
    /// `Builder::allow_migration`): the shutdown finds a parked goroutine through it.
    pub(crate) fn retag_slot(&self, tag: usize) {
        let slot = self.stack();
        if slot.is_taken() {
            crate::stack::set_owner_tag(slot, self as *const G as usize, tag);
        }
    }

    /// Records the goroutine's `Frame` (the goroutine itself, first thing).
    ///
    /// # Safety
    /// Called by the goroutine, on its own stack, with a frame that outlives all its code.
    pub(crate) unsafe fn set_frame(&self, frame: &Frame) {
        // SAFETY: only the goroutine touches `frame`, per the caller's contract.
        unsafe { *self.frame.get() = frame };
    }

    pub(crate) fn is_dying(&self) -> bool {
        self.dying.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.join.load(Ordering::Acquire) & COMPLETE != 0
    }
}

mod live {
    use super::*;
    use crate::tls;

    impl G {
        /// Resumes the goroutine on the calling M (of the runtime `runtime`) until it yields,
        /// parks or finishes. The first resume takes its stack slot (`body.rs`); if that fails
        /// the goroutine has finished.
        ///
        /// # Safety
        /// The caller must hold the G's scheduling reference, taken from a queue (it owns the
        /// body then), and have called `transition_to_running`.
        pub(crate) unsafe fn resume(&self, tag: usize) -> corosensei::CoroutineResult<Switch, ()> {
            // SAFETY: the scheduling reference gives the caller exclusive use of the body.
            unsafe {
                if self.body_kind() != BodyKind::Coro && !self.start(tag) {
                    return corosensei::CoroutineResult::Return(());
                }
                self.coro_mut().resume(())
            }
        }

        /// Called by the M after the coroutine returned: frees the stack, publishes completion
        /// and wakes the joiner. The M then drops the scheduling reference.
        ///
        /// # Safety
        /// The caller must be the M that ran the G to its return.
        pub(crate) unsafe fn finish(&self) {
            // SAFETY: the G still runs on this M: the body is ours. The coroutine returned (or
            // never existed), so dropping it unwinds nothing and returns the slot, which
            // nothing points into.
            let leaked = unsafe { self.drop_body() };
            debug_assert!(!leaked);
            self.transition_to_dead();
            crate::live::add(-1);
            let prev = self.join.fetch_or(COMPLETE, Ordering::AcqRel);
            if prev & WAITER != 0 {
                // SAFETY: the joiner wrote `waiter` before setting WAITER (we saw it with
                // acquire) and does not touch it again until WOKEN.
                match unsafe { (*self.waiter.get()).take() } {
                    // SAFETY: the joiner stays in `join` until WOKEN, so its G is alive.
                    Some(Joiner::Goroutine(g)) => unpark(unsafe { g.as_ref() }),
                    Some(Joiner::Thread(t)) => t.unpark(),
                    None => {}
                }
                // Only we write the word now (WAITER and COMPLETE are both set).
                self.join
                    .store(COMPLETE | WAITER | WOKEN, Ordering::Release);
            }
        }
    }

    impl G {
        /// Shutdown: takes the scheduling reference of a parked goroutine (as `unpark` does,
        /// without queueing it). `None` if it is not parked.
        pub(crate) fn take_parked(&self) -> Option<GRef> {
            if !self.transition_to_notified() {
                return None;
            }
            // SAFETY: we won WAITING → RUNNABLE, which makes us the owner of `parked_ref`.
            unsafe { (*self.parked_ref.get()).take() }
        }

        /// Shutdown: unwinds the goroutine's stack on the calling thread (destructors run as
        /// if the goroutine panicked where it is suspended), or drops its closure if it never
        /// started. The caller then calls `finish`.
        ///
        /// # Safety
        /// As for `resume`, and CURRENT_G must be set to it.
        pub(crate) unsafe fn force_unwind(&self) {
            self.dying.store(true, std::sync::atomic::Ordering::Relaxed);
            // SAFETY: the scheduling reference gives the caller exclusive use of the body.
            unsafe {
                match self.body_kind() {
                    BodyKind::Coro => self.coro_mut().force_unwind(),
                    BodyKind::Start => {
                        self.drop_body();
                    }
                    BodyKind::Empty => {}
                }
            }
        }
    }

    /// Called by the M after the goroutine switched out to park: commits the park, handing
    /// the scheduling reference `me` to the G. Returns it back if a token was pending (the G
    /// is RUNNABLE again and must run at once).
    pub(crate) fn commit_park(me: GRef) -> Option<GRef> {
        let g: *const G = &*me;
        // SAFETY: the G runs on this M, so no one else touches `parked_ref`; it must be
        // in place before WAITING becomes visible, since the unparker that sees WAITING takes it.
        unsafe { *(*g).parked_ref.get() = Some(me) };
        // SAFETY: `g` is alive: `parked_ref` holds a reference to it.
        if unsafe { (*g).transition_to_waiting() } {
            None
        } else {
            // SAFETY: still RUNNABLE-and-ours: no unparker took it (it was never WAITING).
            unsafe { (*(*g).parked_ref.get()).take() }
        }
    }

    /// Address just below the caller's frame: the recorded stack pointer of a parking goroutine.
    #[inline(never)]
    fn approx_sp() -> usize {
        let marker = 0u8;
        std::hint::black_box(&marker) as *const u8 as usize
    }

    /// Switches from the running goroutine `g` back to its M.
    pub(crate) fn switch_out(g: &G, why: Switch) {
        if g.is_dying() {
            // Being unwound at shutdown: nothing will resume us, so a park or yield in a
            // destructor returns at once (a spurious wake-up, which `park` allows).
            return;
        }
        // SAFETY: `frame` was set when this goroutine started and lives in its initial frame,
        // which stays put until it returns; we are that goroutine (only the running goroutine
        // calls `switch_out` on its own G), and the yielder lives as long as the coroutine.
        let yielder = unsafe { &*(**g.frame.get()).yielder };
        suspend_recording_sp(yielder, &g.saved_sp, why);
    }

    /// Records the stack pointer, then suspends. Every switch-out goes through this one
    /// function, so the depth of the frames below the recorded pointer is the same each time;
    /// `sched/pin.rs` measures it once with a probe coroutine.
    #[inline(never)]
    pub(crate) fn suspend_recording_sp(
        yielder: &Yielder<(), Switch>,
        sp: &std::sync::atomic::AtomicUsize,
        why: Switch,
    ) {
        sp.store(approx_sp(), std::sync::atomic::Ordering::Relaxed);
        yielder.suspend(why);
    }

    /// Parks the current goroutine (see the park protocol above).
    pub(crate) fn park_current(g: &G) {
        if g.try_consume_token() {
            return;
        }
        switch_out(g, Switch::Park);
        // Resumed: by an unpark, or a token consumed by the M. Both count as the wake-up.
    }

    pub(crate) fn unpark(g: &G) {
        unpark_with(g, &mut crate::sched::ready);
    }

    /// `unpark`, handing the scheduling reference of a goroutine it woke to `queue` instead of
    /// the default (`runnext` of the caller's P): timers queue in deadline order.
    pub(crate) fn unpark_with(g: &G, queue: &mut impl FnMut(GRef)) {
        if g.transition_to_notified() {
            // SAFETY: we won WAITING → RUNNABLE, which makes us the one owner of the parked
            // scheduling reference (the M stored it before committing the park).
            let me = unsafe { (*g.parked_ref.get()).take() };
            queue(me.expect("a WAITING goroutine holds its scheduling reference"));
        }
    }

    /// Waits until the goroutine finished; returns its output.
    ///
    /// Protocol: the joiner writes `waiter` (for a goroutine, a bare pointer to its own G: no
    /// reference count, which saves two atomic read-modify-writes per join) and sets WAITER.
    /// The completer sets COMPLETE; if it saw WAITER it unparks the joiner and then sets
    /// WOKEN. The joiner leaves only once it sees WOKEN (or COMPLETE without WAITER having
    /// been seen), so its G outlives the completer's use of the pointer. Between COMPLETE and
    /// WOKEN it yields instead of parking: the completer's unpark may already have been
    /// consumed by a wake-up that found WOKEN not yet set.
    pub(crate) fn join<T: Send>(cell: &GCell<T>) -> Result<T, crate::Panic> {
        let g = &cell.g;
        if !g.is_complete() {
            let me = tls::with_current_g(|me| me.map(NonNull::from));
            if me.is_some_and(|me| std::ptr::eq(me.as_ptr(), g)) {
                panic!("goro: a goroutine cannot join itself (it would wait forever)");
            }
            let w = match me {
                Some(me) => Joiner::Goroutine(me),
                None => Joiner::Thread(std::thread::current()),
            };
            // SAFETY: WAITER is not set yet, so the completer does not read `waiter`.
            unsafe { *g.waiter.get() = Some(w) };
            let prev = g.join.fetch_or(WAITER, Ordering::AcqRel);
            if prev & COMPLETE != 0 {
                // The completer finished before it could see WAITER: it never reads `waiter`.
                // SAFETY: as just argued, the cell is ours again.
                drop(unsafe { (*g.waiter.get()).take() });
            } else {
                loop {
                    let j = g.join.load(Ordering::Acquire);
                    if j & WOKEN != 0 {
                        break;
                    }
                    if j & COMPLETE != 0 {
                        crate::yield_now(); // the completer is inside its unpark
                        continue;
                    }
                    if tls::with_current_g(|me| me.is_some_and(G::is_dying)) {
                        // Joining from a destructor during shutdown: our own switches return
                        // at once, so do not wait. Take the pointer back first. Other Ms
                        // unwind their goroutines meanwhile, so the completer may have set
                        // COMPLETE first: then it has seen WAITER and is inside its unpark of
                        // us, and we must let it finish with the pointer (it sets WOKEN).
                        let prev = g.join.fetch_and(!WAITER, Ordering::AcqRel);
                        if prev & COMPLETE == 0 {
                            // SAFETY: WAITER is cleared before COMPLETE: the completer will
                            // not read `waiter`.
                            drop(unsafe { (*g.waiter.get()).take() });
                            return Err(crate::Panic::dropped(g.id));
                        }
                        while g.join.load(Ordering::Acquire) & WOKEN == 0 {
                            std::thread::yield_now();
                        }
                        break;
                    }
                    crate::park();
                }
            }
        }
        // SAFETY: COMPLETE was observed with acquire, after the goroutine wrote its output;
        // `join` consumes the handle, so this is the only read. A goroutine dropped before
        // it started never wrote one.
        unsafe { (*cell.out.0.get()).take() }.unwrap_or_else(|| Err(crate::Panic::dropped(g.id)))
    }

    /// See [`crate::stack::release_below_sp`].
    pub(crate) fn release_below_sp(g: &G) -> Option<usize> {
        if !g.try_begin_scan() {
            return None;
        }
        let slot = g.stack().view();
        let sp = g.saved_sp.load(std::sync::atomic::Ordering::Relaxed);
        // SAFETY: SCAN is held, so the goroutine stays suspended (an unpark makes it RUNNABLE
        // but no M resumes it until SCAN clears); it parked with its stack pointer below `sp`
        // by at most the switch frames, which `RED_ZONE` covers.
        let n = unsafe { slot.release_below(sp) };
        g.end_scan();
        Some(n)
    }
}

pub(crate) use live::*;

/// Releases the committed pages of a **parked** goroutine's stack below its stack pointer,
/// keeping a red zone ([`crate::stack::RED_ZONE`]). Returns the bytes of address range released,
/// or `None` if the goroutine is not parked (running, runnable or finished). The goroutine runs
/// normally afterwards: the pages fault back in, zeroed, if it grows into them again.
///
/// This is what the garbage collector calls on idle goroutines; it is public so programs and
/// tests can do the same.
pub fn release_below_sp(g: &crate::Goroutine) -> Option<usize> {
    live::release_below_sp(&g.inner)
}

/// Resident bytes of a goroutine's stack slot (`mincore`), or 0 once it has finished.
pub fn committed_bytes(g: &crate::Goroutine) -> usize {
    let gi: &G = &g.inner;
    if G::status(gi.state.load(Ordering::Acquire)) == DEAD {
        return 0;
    }
    let slot = gi.stack();
    if !slot.is_taken() {
        return 0; // not started yet
    }
    slot.view().committed_bytes()
}

#[cfg(test)]
mod tests {
    //! loom model of the park protocol: no lost wake-up, at most one enqueue per park, and the
    //! collector's SCAN bit never lets a resume through.
    use super::*;
    #[cfg(loom)]
    use loom::sync::{atomic::AtomicUsize as LAtomic, Arc as LArc};

    /// A G as its M sees it while running it (no slot, no cell: only the state word is used).
    #[cfg(loom)]
    fn g() -> G {
        let g = G::new(Body::new(|| (), SlotAddr::NONE), |_| {});
        g.transition_to_running();
        g
    }

    #[cfg(loom)]
    #[test]
    fn loom_park_unpark_no_lost_wakeup() {
        loom::model(|| {
            let g = LArc::new(g());
            let queued = LArc::new(LAtomic::new(0));
            let (g2, q2) = (g.clone(), queued.clone());
            let waker = loom::thread::spawn(move || {
                if g2.transition_to_notified() {
                    q2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            // The goroutine parks: fast path, else switch out and let its M commit.
            let parked = !g.try_consume_token() && g.transition_to_waiting();
            waker.join().unwrap();
            let s = g.state.load(Ordering::SeqCst);
            let q = queued.load(std::sync::atomic::Ordering::SeqCst);
            if parked {
                // Committed to WAITING: the unpark must have found it and queued it once.
                assert_eq!(q, 1, "lost wake-up");
                assert_eq!(s & STATUS_MASK, RUNNABLE);
            } else {
                // Token consumed: nobody queued it, and the token is gone.
                assert_eq!(q, 0);
                assert_eq!(s & NOTIFIED, 0);
            }
        });
    }

    /// `park_via`'s pattern (tests/sched.rs): the waker publishes a flag, then unparks; the
    /// goroutine loops "flag set? else park", and a token from an earlier round is still
    /// pending. The unpark that finds that token must still publish the flag to whoever
    /// consumes it (the bug: it only loaded the word, and the goroutine consumed the stale
    /// token, read the flag unset, and parked for good).
    #[cfg(loom)]
    #[test]
    fn loom_stale_token_does_not_hide_a_published_flag() {
        use loom::sync::atomic::AtomicBool as LBool;
        loom::model(|| {
            let g = LArc::new(g());
            g.transition_to_notified(); // the stale token (the goroutine was running)
            let flag = LArc::new(LBool::new(false));
            let woke = LArc::new(LAtomic::new(0));
            let (g2, f2, w2) = (g.clone(), flag.clone(), woke.clone());
            let waker = loom::thread::spawn(move || {
                f2.store(true, std::sync::atomic::Ordering::Release);
                if g2.transition_to_notified() {
                    w2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            let mut parked = false;
            for _ in 0..2 {
                if flag.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                if g.try_consume_token() {
                    continue; // as park() returning at once: look at the flag again
                }
                parked = g.transition_to_waiting();
                break;
            }
            waker.join().unwrap();
            if parked {
                assert_eq!(
                    woke.load(std::sync::atomic::Ordering::SeqCst),
                    1,
                    "parked for good with the flag set: lost wake-up"
                );
            }
        });
    }

    #[cfg(loom)]
    #[test]
    fn loom_scan_blocks_resume() {
        loom::model(|| {
            let g = LArc::new(g());
            assert!(g.transition_to_waiting());
            let resumed = LArc::new(loom::sync::atomic::AtomicBool::new(false));
            let (g2, r2) = (g.clone(), resumed.clone());
            let scanner = loom::thread::spawn(move || {
                if g2.try_begin_scan() {
                    // While SCAN is held the stack must stay suspended.
                    assert!(
                        !r2.load(std::sync::atomic::Ordering::SeqCst),
                        "resumed under SCAN"
                    );
                    g2.end_scan();
                }
            });
            if g.transition_to_notified() {
                g.transition_to_running();
                resumed.store(true, std::sync::atomic::Ordering::SeqCst);
                assert_eq!(g.state.load(Ordering::SeqCst) & SCAN, 0);
            }
            scanner.join().unwrap();
        });
    }

    #[test]
    fn state_bits_do_not_overlap() {
        for s in [RUNNABLE, WAITING, DEAD] {
            assert_eq!(s & !STATUS_MASK, 0);
        }
        assert_eq!(NOTIFIED & STATUS_MASK, 0);
        assert_eq!(SCAN & (STATUS_MASK | NOTIFIED), 0);
    }
}
