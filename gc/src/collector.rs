//! The cycle: the mark state word, shading, the barrier entry points mutators call, the
//! collector thread that runs the steps, `collect()` and the finalizer hand-off.
//!
//! ```text
//!  T0  state: epoch E += 1, MARK on (one RMW)        barrier on: every check reads this word
//!      snapshot the span registry
//!  B   tally   every allocated, non-DEAD object with epoch ≠ E: trace, internal(pointee) += 1
//!              (a cell held by a writer is skipped: its pointees look external)
//!  C   roots   every such object with count > internal is shaded; internal := 0
//!  D   mark    pop grey, trace, shade pointees (epoch byte CAS old → E); mutators' shades
//!              arrive on the shared queue; an object with a cell a writer holds is revisited
//!  T1  term    clear DIRTY, drain, revisit, CAS (MARK, 0 in flight, !DIRTY) → SWEEP; retry
//!              on failure; a cell still held after 50 ms: the cycle ends without a sweep
//!  S   sweep   every allocated object with epoch ∉ {E, DEAD}: count += 1, DEAD; the batch goes
//!              to the finalizer thread, which drops values, then the batch's counts; whoever
//!              takes a DEAD object's count to zero frees its slot
//! ```
//!
//! The state word (`STATE`): bits 0–7 the epoch (1..=250), bit 8 MARK, bit 9 DIRTY, bits 16+
//! mutators in flight. A mutator that saw MARK on its plain load adds one in flight (RMW),
//! re-reads MARK and the epoch from the RMW's result, shades (pushing to `GREY`), sets DIRTY if it
//! pushed, and subtracts one. Termination's CAS fails if anyone is in flight or pushed after the
//! drain, so no shade is lost, and nothing stops the world.
//!
//! Why each barrier entry point exists is argued in `DESIGN.md` ("Barrier"); in short, every
//! operation that can make a white object reachable from somewhere the cycle has already looked
//! shades while marking: `Gc::clone` (`on_new_handle`), a new object (`after_publish`), a cell's
//! `borrow_mut`/`lock` (old pointees) and the guard's drop (new pointees).
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::heap::{self, Header, Span, SpanPtr, DEAD_BIT, DEAD_EPOCH, NEW_EPOCH};
use crate::stats;
use crate::trace::{Mode, Tracer};

const EPOCH_MASK: u64 = 0xff;
const MARK: u64 = 1 << 8;
const DIRTY: u64 = 1 << 9;
const INFLIGHT: u64 = 1 << 16;

static STATE: AtomicU64 = AtomicU64::new(1);
/// A barrier shade passed over a nested cell a writer held: this cycle must free nothing.
static SHADE_SKIPPED: AtomicBool = AtomicBool::new(false);
/// How long termination waits for cells held by writers before the cycle gives up freeing.
const CELL_WAIT: Duration = Duration::from_millis(50);
/// Objects shaded by mutators, waiting for the collector.
static GREY: Mutex<Vec<usize>> = Mutex::new(Vec::new());

#[inline]
pub(crate) fn state() -> u64 {
    STATE.load(Ordering::SeqCst)
}

#[inline]
pub(crate) fn epoch_of(s: u64) -> u8 {
    (s & EPOCH_MASK) as u8
}

/// Whether a cycle is marking (the barrier's one predictable branch).
#[inline]
pub(crate) fn marking() -> bool {
    STATE.load(Ordering::Relaxed) & MARK != 0
}

/// Colours the object at `h` grey for cycle `epoch` unless it is black already or dead.
/// Returns whether this call shaded it (and so must queue it).
#[inline]
pub(crate) fn try_shade(h: *const Header, epoch: u8) -> bool {
    let span = Span::of(h);
    let e = span.epoch(span.index_of(h));
    let mut cur = e.load(Ordering::SeqCst);
    loop {
        if cur == epoch || cur == DEAD_EPOCH {
            return false;
        }
        match e.compare_exchange_weak(cur, epoch, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(c) => cur = c,
        }
    }
}

/// Runs `f` with a shading tracer if a cycle is marking, inside the in-flight protocol.
#[cold]
pub(crate) fn shade_with(f: impl FnOnce(&mut Tracer)) {
    let s = STATE.fetch_add(INFLIGHT, Ordering::SeqCst);
    if s & MARK != 0 {
        let mut t = Tracer::new(Mode::Shade, epoch_of(s));
        f(&mut t);
        if !t.grey.is_empty() {
            GREY.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(t.grey.iter().map(|h| *h as usize));
            STATE.fetch_or(DIRTY, Ordering::SeqCst);
        }
    }
    STATE.fetch_sub(INFLIGHT, Ordering::SeqCst);
}

/// A new handle to `h` was made (clone).
#[inline]
pub(crate) fn on_new_handle(h: *const Header) {
    if marking() {
        shade_with(|t| t.edge(h));
    }
}

/// A new object at slot `idx` of `span` was published with the epoch byte `NEW_EPOCH`. Now it
/// takes the current epoch, by CAS from NEW: if the collector got there first (mark step C
/// shades NEW objects), the object is already black and queued. While its byte is NEW the
/// tally skips it (its handles count as external, so what they name is a root), step C shades
/// it and the sweep keeps it: however long the allocating thread is descheduled between
/// publishing and this store, no cycle can find the object white. (The first version stamped
/// the epoch before publishing and re-stamped after: a sweep that ran in between freed a live
/// object; the 2-goroutine latency bench crashed once in eight runs.)
#[inline]
pub(crate) fn after_publish(span: &Span, idx: usize, h: *const Header) {
    let s = state();
    let e = span.epoch(idx);
    let won = e
        .compare_exchange(NEW_EPOCH, epoch_of(s), Ordering::SeqCst, Ordering::Relaxed)
        .is_ok();
    if won && s & MARK != 0 {
        let trace = span.info().trace;
        // SAFETY: the object is initialised and we hold its only handle.
        shade_with(|t| unsafe { trace(h, t) });
    }
}

// ---- cells ---------------------------------------------------------------------------------

/// A cell's borrow word: a user writer, collector/barrier readers, user readers.
pub(crate) const WRITER: usize = 1;
pub(crate) const MARKER_ONE: usize = 2;
pub(crate) const MARKER_MASK: usize = 0xfe;
pub(crate) const READER_ONE: usize = 0x100;

/// Traces a cell's contents for the collector (or a nested cell for the barrier), unless a
/// writer holds it: then the tracer is told (`skipped`), and what happens next depends on the
/// mode (DESIGN.md, "Cells and the marker").
pub(crate) fn trace_cell(word: &AtomicUsize, t: &mut Tracer, f: impl FnOnce(&mut Tracer)) {
    let mut cur = word.load(Ordering::Acquire);
    loop {
        if cur & WRITER != 0 {
            // The tally may pass it over (its pointees then count as external: roots). Marking
            // and the barrier must come back to it: the owner object is traced again before
            // termination (`Mode::Mark`), or the cycle frees nothing (`Mode::Shade`).
            t.skipped = true;
            if t.mode == Mode::Shade {
                SHADE_SKIPPED.store(true, Ordering::SeqCst);
            }
            return;
        }
        match word.compare_exchange_weak(
            cur,
            cur + MARKER_ONE,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(c) => cur = c,
        }
    }
    struct Release<'a>(&'a AtomicUsize);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(MARKER_ONE, Ordering::Release);
        }
    }
    let _r = Release(word);
    f(t)
}

// ---- control ------------------------------------------------------------------------------

struct Ctl {
    /// Cycles started / swept / finalized (numbered from 1).
    started: u64,
    swept: u64,
    finalized: u64,
    /// A cycle was asked for (trigger or `collect()`), and whether it was forced.
    requested: bool,
    forced: bool,
    /// Goroutines waiting in `collect`, unparked whenever the counters move.
    waiters: Vec<goro_runtime::Goroutine>,
}

static CTL: Mutex<Ctl> = Mutex::new(Ctl {
    started: 0,
    swept: 0,
    finalized: 0,
    requested: false,
    forced: false,
    waiters: Vec::new(),
});
static CTL_CV: Condvar = Condvar::new();
static COLLECTOR: OnceLock<()> = OnceLock::new();
/// The pacer's trigger (bytes of `stats::heap_alloc()`); `usize::MAX` while a cycle runs or GC is off.
pub(crate) static TRIGGER: AtomicUsize = AtomicUsize::new(usize::MAX);
static TRIGGER_INIT: OnceLock<()> = OnceLock::new();

thread_local! {
    static ON_FINALIZER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn ctl() -> std::sync::MutexGuard<'static, Ctl> {
    CTL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wakes everyone waiting on the counters: threads on the condvar, goroutines by unpark.
fn notify(c: &mut Ctl) {
    CTL_CV.notify_all();
    for g in c.waiters.drain(..) {
        g.unpark();
    }
}

fn ensure_collector() {
    COLLECTOR.get_or_init(|| {
        goro_runtime::stackscan::set_scanner(crate::roots::scan_at_switch);
        std::thread::Builder::new()
            .name("goro-gc".into())
            .spawn(collector_main)
            .expect("goro: cannot start the collector thread");
    });
}

/// Called at each span refill: starts a cycle when the heap reached the trigger.
pub(crate) fn on_refill() {
    TRIGGER_INIT.get_or_init(|| {
        crate::pacer::init();
        TRIGGER.store(crate::pacer::initial_trigger(), Ordering::Relaxed);
    });
    let t = TRIGGER.load(Ordering::Relaxed);
    if t != usize::MAX && stats::heap_alloc() >= t {
        request(false);
    }
}

fn request(forced: bool) -> u64 {
    ensure_collector();
    let mut c = ctl();
    if !forced && (c.requested || c.started > c.swept) {
        return c.started;
    }
    TRIGGER.store(usize::MAX, Ordering::Relaxed);
    c.requested = true;
    c.forced |= forced;
    CTL_CV.notify_all();
    // The cycle that will satisfy this request: the next one to start.
    c.started + 1
}

/// Runs a full collection (Go's `runtime.GC()`): returns once a cycle that started after the
/// call has swept, and its finalizers (the `Drop`s of what it collected) have run, unless called
/// from such a `Drop`. A `Drop` that blocks does not hang the caller: after `DROP_WAIT` of
/// waiting for them, `collect` says so on stderr and returns (the sweep is done; the rest of
/// the `Drop`s run when they can). On a goroutine the wait parks it, so its M runs the other
/// goroutines bound to it meanwhile (the cycle may be waiting for one of them to switch out:
/// waiting in `goro::blocking` would hold them all).
pub fn collect() {
    crate::pacer::init();
    let target = request(true);
    let on_finalizer = ON_FINALIZER.with(|f| f.get());
    let me = goro_runtime::try_current();
    let deadline = Instant::now() + DROP_WAIT;
    let mut c = ctl();
    loop {
        let done = c.swept >= target && (on_finalizer || c.finalized >= target);
        if done {
            return;
        }
        if c.swept >= target && Instant::now() >= deadline {
            eprintln!(
                "goro: collect(): the Drops of collected objects have not finished after {} s \
                 (a Drop that blocks?); returning with the cycle swept",
                DROP_WAIT.as_secs()
            );
            return;
        }
        match &me {
            Some(g) => {
                c.waiters.push(g.clone());
                drop(c);
                // Woken by `notify`, or spuriously (park allows it), or by the timeout.
                goro_runtime::park_timeout(Duration::from_millis(100));
                c = ctl();
            }
            None => {
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                c = CTL_CV
                    .wait_timeout(c, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

/// How long `collect` waits for the `Drop`s of what its cycle collected.
const DROP_WAIT: Duration = Duration::from_secs(10);

/// Cycles completed so far (swept).
pub fn cycles() -> u64 {
    ctl().swept
}

fn collector_main() {
    loop {
        let forced = {
            let mut c = ctl();
            while !c.requested {
                c = CTL_CV.wait(c).unwrap_or_else(|e| e.into_inner());
            }
            c.requested = false;
            c.started += 1;
            std::mem::take(&mut c.forced)
        };
        let r = catch_unwind(AssertUnwindSafe(|| run_cycle(forced)));
        if let Err(p) = r {
            // A bug in the collector itself: say so loudly, keep the process alive but stop
            // collecting (freeing anything after a broken cycle could be unsound).
            eprintln!(
                "goro: the garbage collector panicked: {}; collection is now off",
                panic_msg(&*p)
            );
            crate::pacer::disable_forever();
            let mut c = ctl();
            c.swept = u64::MAX / 2;
            c.finalized = u64::MAX / 2;
            notify(&mut c);
            return;
        }
    }
}

pub(crate) fn panic_msg(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Next epoch after `e` (1..=250; 0 and 251..=255 are never epochs).
fn next_epoch(e: u8) -> u8 {
    if e >= 250 {
        1
    } else {
        e + 1
    }
}

/// What one cycle measured, for the pacer, stats and gctrace.
pub(crate) struct CycleReport {
    pub(crate) n: u64,
    pub(crate) forced: bool,
    pub(crate) start: Instant,
    pub(crate) t0: Duration,
    pub(crate) mark: Duration,
    pub(crate) t1: Duration,
    pub(crate) mark_cpu: Duration,
    pub(crate) heap_start: usize,
    pub(crate) heap_end: usize,
    pub(crate) marked: usize,
    pub(crate) goal: usize,
    pub(crate) stacks: usize,
    /// The cycle freed nothing: a cell stayed held by a writer through termination.
    pub(crate) abandoned: bool,
}

fn run_cycle(forced: bool) {
    let n = ctl().started;
    let start = Instant::now();
    let cpu0 = stats::thread_cpu();
    let heap_start = stats::heap_alloc();
    let goal = crate::pacer::goal();

    // Previous cycle's emptied spans go back first (no snapshot is alive now).
    heap::release_empty();

    // T0: barrier on.
    let t0s = Instant::now();
    let old = STATE.load(Ordering::SeqCst);
    let epoch = next_epoch(epoch_of(old));
    let mut cur = old;
    loop {
        let new = (cur & !EPOCH_MASK) | epoch as u64 | MARK;
        match STATE.compare_exchange(cur, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => break,
            Err(c) => cur = c,
        }
    }
    let t0 = t0s.elapsed();
    let spans = heap::snapshot();
    // The stack visit starts now (its fence orders T0 before every `roots == 0` it reads).
    let sid = (n as u32).max(1);
    let index = Arc::new(crate::roots::SpanIndex::new(&spans));
    *crate::roots::INDEX
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((sid, index.clone()));
    let visitor = goro_runtime::stackscan::begin(sid);

    // B: tally.
    let mut tally = Tracer::new(Mode::Tally, epoch);
    for_each_old(
        &spans,
        epoch,
        |_, _, h, info| {
            // SAFETY: `h` is allocated, not DEAD (so not being dropped: the previous cycle's DEAD
            // objects were flagged before it ended), and a span holds only objects of its type.
            unsafe { (info.trace)(h, &mut tally) };
        },
        |_, _, _| {},
    );

    // C: roots. Every allocated object's tally is reset here, not only the old ones': the
    // tally also counts edges into black objects (some in spans created after the snapshot:
    // hence a fresh span list here, a superset of the tallied one), and a stale count would
    // make a later cycle see fewer external handles than exist (the torture test found an
    // object collected under a live handle that way).
    let mut mark = Tracer::new(Mode::Mark, epoch);
    for p in &heap::snapshot() {
        let s = p.get();
        s.for_each_allocated(|idx| {
            let h = s.slot(idx);
            // The epoch first: the bitmap word was read earlier, and the slot may have been
            // freed (DEAD) or reused since (NEW, then an epoch stored after the header).
            let e = s.epoch(idx).load(Ordering::SeqCst);
            if e == DEAD_EPOCH {
                return;
            }
            // SAFETY: a slot whose epoch is not DEAD holds a published object (its header was
            // written before its bit and its epoch), which nobody frees during this cycle.
            let hd = unsafe { &*h };
            let root = if e == NEW_EPOCH {
                // Published, epoch not yet stored: its allocator holds a handle.
                true
            } else {
                let raw = hd.internal.load(Ordering::Relaxed);
                if raw != 0 {
                    hd.internal.store(0, Ordering::Relaxed);
                }
                e != epoch && hd.count.load(Ordering::SeqCst) > raw
            };
            if root && try_shade(h, epoch) {
                mark.grey.push(h);
            }
        });
    }

    // The stacks: parked ones now; running ones scan at their next switch-out (or here once
    // they park), and T1 waits for those that hold roots.
    let mut visit = visitor.visit(&mut |w| index.scan(w, epoch, |h| mark.grey.push(h)));
    let mut stack_nap = Duration::from_micros(20);

    // D: mark, then T1: terminate. Objects whose cells a writer held while they were traced
    // are traced again (`retry`) until none is left; if a cell stays held for `CELL_WAIT`, the
    // cycle ends without freeing anything (the next one tries again).
    let mut t1 = Duration::ZERO;
    let mut retry: Vec<*const Header> = Vec::new();
    let mut waiting_since: Option<Instant> = None;
    let mut abandon = false;
    loop {
        drain(&mut mark, &mut retry);
        let t1s = Instant::now();
        STATE.fetch_and(!DIRTY, Ordering::SeqCst);
        drain(&mut mark, &mut retry);
        if !retry.is_empty() {
            for h in std::mem::take(&mut retry) {
                mark.skipped = false;
                // SAFETY: as in `drain`: a shaded object stays allocated until the sweep.
                unsafe { (Span::of(h).info().trace)(h, &mut mark) };
                if mark.skipped {
                    retry.push(h);
                }
            }
            if !retry.is_empty() {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() < CELL_WAIT {
                    t1 += t1s.elapsed();
                    std::thread::yield_now();
                    continue;
                }
                abandon = true;
            }
            drain(&mut mark, &mut retry);
            if !retry.is_empty() && !abandon {
                t1 += t1s.elapsed();
                continue;
            }
        }
        if !abandon && visit.pending() > 0 {
            let left = visitor.retry(&mut visit, &mut |w| {
                index.scan(w, epoch, |h| mark.grey.push(h))
            });
            if left > 0 {
                // Goroutines holding stack roots are running (or in `blocking`): wait for
                // their next switch-out, with sysmon asking them to yield.
                visitor.request_preemption();
                t1 += t1s.elapsed();
                std::thread::sleep(stack_nap);
                stack_nap = (stack_nap * 2).min(Duration::from_millis(1));
                continue;
            }
            continue; // drain what the retry shaded
        }
        let s = STATE.load(Ordering::SeqCst);
        if s & DIRTY == 0 && s >> 16 == 0 {
            let done = (s & !MARK) & !DIRTY;
            if STATE
                .compare_exchange(s, done, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                t1 += t1s.elapsed();
                break;
            }
        }
        t1 += t1s.elapsed();
        std::thread::yield_now();
    }
    // Marking is over (no switch-out scan can be in flight: T1 saw none): the visit ends.
    *crate::roots::INDEX
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = None;
    drop(visitor);
    drop(index);
    let mark_end = Instant::now();
    let mark_cpu = stats::thread_cpu().saturating_sub(cpu0);
    let heap_end = stats::heap_alloc();

    // S: sweep (unless the cycle gave up: then nothing is freed and the objects it did not
    // mark keep their older epochs, which a later cycle treats as old, or, after a wrap, as
    // already marked: kept either way).
    if SHADE_SKIPPED.swap(false, Ordering::SeqCst) {
        abandon = true;
    }
    let mut dead: Vec<usize> = Vec::new();
    let mut dead_bytes = 0usize;
    for_each_old(
        if abandon { &[] } else { &spans[..] },
        epoch,
        |span, idx, h, _| {
            // SAFETY: an allocated slot's header; nobody holds a handle to a white object (the
            // cycle's invariant), so the only concurrent access is none.
            let hd = unsafe { &*h };
            // The batch's count and the DEAD flag in one RMW (see `heap::DEAD_BIT`).
            let old = hd.count.fetch_add(DEAD_BIT | 1, Ordering::AcqRel);
            debug_assert!(
                old & DEAD_BIT == 0,
                "goro-gc: sweeping a dead or freed slot"
            );
            // A plain store: only the collector writes dead objects' epochs, and the batch
            // reaches the finalizer through a channel (happens-before).
            span.epoch(idx).store(DEAD_EPOCH, Ordering::Relaxed);
            dead_bytes += span.stride();
            dead.push(h as usize);
        },
        |_, _, _| {},
    );
    // The pacer's live heap: bytes this cycle traced (what was reachable at its start, plus
    // the few objects shaded while new). Objects allocated black during the cycle are not in
    // it: counting them made the goal grow with every long cycle (the latency bench's goal
    // ran away from a 33 MB live heap to 300 MB); those that survive count in the next one.
    let marked = MARKED_BYTES.swap(0, Ordering::Relaxed);
    // Go's scannable stack bytes: what the visit found used (stack pointer to top).
    let stacks = visit.used_bytes;
    STACK_INUSE.store(visit.inuse_bytes, Ordering::Relaxed);
    STACK_VISITED.store(true, Ordering::Release);
    let report = CycleReport {
        n,
        forced,
        start,
        t0,
        mark: mark_end.duration_since(t0s).saturating_sub(t0 + t1),
        t1,
        mark_cpu,
        heap_start,
        heap_end,
        marked,
        goal,
        stacks,
        abandoned: abandon,
    };
    crate::pacer::after_cycle(&report);
    stats::after_cycle(&report);
    {
        let mut c = ctl();
        c.swept = n;
        notify(&mut c);
    }
    finalize_later(n, dead, dead_bytes);
}

/// `MemStats::stack_inuse`: what the last cycle's stack visit found (each goroutine's used
/// stack in whole pages); before the first cycle, two pages per goroutine slot in use.
pub(crate) fn stacks_estimate() -> usize {
    if STACK_VISITED.load(Ordering::Acquire) {
        return STACK_INUSE.load(Ordering::Relaxed);
    }
    let (slots, bytes) = goro_runtime::stack::in_use();
    (slots * 8192).min(bytes)
}

/// The last stack visit's `inuse_bytes`, and whether there was one.
static STACK_INUSE: AtomicUsize = AtomicUsize::new(0);
static STACK_VISITED: AtomicBool = AtomicBool::new(false);

fn drain(mark: &mut Tracer, retry: &mut Vec<*const Header>) {
    loop {
        while let Some(h) = mark.grey.pop() {
            let span = Span::of(h);
            let info = span.info();
            MARKED_BYTES.fetch_add(span.stride(), Ordering::Relaxed);
            mark.skipped = false;
            // SAFETY: `h` was shaded this cycle, so it is allocated and not DEAD (a DEAD object
            // is never shaded: `try_shade` refuses epoch DEAD), and not freed before the sweep.
            unsafe { (info.trace)(h, mark) };
            if mark.skipped {
                retry.push(h);
            }
        }
        let mut g = GREY.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_empty() {
            return;
        }
        mark.grey.extend(g.drain(..).map(|h| h as *const Header));
    }
}

/// Every allocated slot of `spans` whose epoch is neither `epoch` nor DEAD nor NEW (`f`), and
/// the NEW ones (`on_new`: objects between publication and their epoch store).
fn for_each_old(
    spans: &[SpanPtr],
    epoch: u8,
    mut f: impl FnMut(&Span, usize, *const Header, &'static heap::TypeInfo),
    mut on_new: impl FnMut(&Span, usize, *const Header),
) {
    for p in spans {
        let s = p.get();
        let info = s.info();
        s.for_each_allocated(|idx| {
            let e = s.epoch(idx).load(Ordering::SeqCst);
            if e != epoch && e != DEAD_EPOCH && e != NEW_EPOCH {
                f(s, idx, s.slot(idx), info);
            } else if e == NEW_EPOCH {
                on_new(s, idx, s.slot(idx));
            }
        });
    }
}

// ---- finalization --------------------------------------------------------------------------

/// Finalization work: the dead objects of the cycles swept so far, in chunks that the
/// finalizer threads (one per CPU, at most 4) take in turn. Chunks are independent: an object
/// whose `Drop` another chunk is still running holds handles, so what they name is not freed
/// (its count stays above the batch's one), and a `Drop` that reaches into its dead cycle
/// reads allocated memory and panics on the DEAD flag.
struct FinQueue {
    chunks: std::collections::VecDeque<(u64, Vec<usize>)>,
    /// Chunks not yet finished, per cycle.
    outstanding: std::collections::BTreeMap<u64, usize>,
    /// The last cycle whose batch was queued.
    queued: u64,
}

static FINQ: Mutex<FinQueue> = Mutex::new(FinQueue {
    chunks: std::collections::VecDeque::new(),
    outstanding: std::collections::BTreeMap::new(),
    queued: 0,
});
static FINQ_CV: Condvar = Condvar::new();
/// Signalled after every finished chunk (allocation throttling waits on it).
static FIN_DONE: Condvar = Condvar::new();
static FIN_THREADS: OnceLock<()> = OnceLock::new();
/// Bytes traced by this cycle's marking (`drain`).
static MARKED_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Bytes of dead objects queued and not yet finalized.
pub(crate) static PENDING_BYTES: AtomicUsize = AtomicUsize::new(0);
const CHUNK: usize = 2048;

fn finq() -> std::sync::MutexGuard<'static, FinQueue> {
    FINQ.lock().unwrap_or_else(|e| e.into_inner())
}

fn finalize_later(n: u64, dead: Vec<usize>, bytes: usize) {
    FIN_THREADS.get_or_init(|| {
        let k = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        for i in 0..k {
            std::thread::Builder::new()
                .name(format!("goro-gc-finalizer-{i}"))
                .spawn(finalizer_main)
                .expect("goro: cannot start a finalizer thread");
        }
    });
    PENDING_BYTES.fetch_add(bytes, Ordering::Relaxed);
    let mut q = finq();
    q.queued = n;
    let mut chunks = 0;
    let mut rest = dead;
    // From the end: each split copies one chunk, not the remainder.
    while rest.len() > CHUNK {
        let tail = rest.split_off(rest.len() - CHUNK);
        q.chunks.push_back((n, tail));
        chunks += 1;
    }
    if !rest.is_empty() {
        q.chunks.push_back((n, rest));
        chunks += 1;
    }
    if chunks > 0 {
        q.outstanding.insert(n, chunks);
    }
    let done = finalized_upto(&q);
    drop(q);
    FINQ_CV.notify_all();
    mark_finalized(done);
}

/// Every cycle up to the returned one has had all its `Drop`s run.
fn finalized_upto(q: &FinQueue) -> u64 {
    match q.outstanding.keys().next() {
        Some(&k) => k - 1,
        None => q.queued,
    }
}

fn mark_finalized(done: u64) {
    let mut c = ctl();
    if done > c.finalized {
        c.finalized = done;
        notify(&mut c);
    }
}

fn finalizer_main() {
    ON_FINALIZER.with(|f| f.set(true));
    loop {
        let (n, chunk) = {
            let mut q = finq();
            loop {
                if let Some(c) = q.chunks.pop_front() {
                    break c;
                }
                q = FINQ_CV.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let bytes = run_chunk(&chunk);
        PENDING_BYTES.fetch_sub(bytes, Ordering::Relaxed);
        let done = {
            let mut q = finq();
            if let Some(left) = q.outstanding.get_mut(&n) {
                *left -= 1;
                if *left == 0 {
                    q.outstanding.remove(&n);
                }
            }
            finalized_upto(&q)
        };
        FIN_DONE.notify_all();
        mark_finalized(done);
    }
}

/// Drops the values of one chunk of dead objects, then releases the batch's count on each;
/// returns the chunk's bytes.
fn run_chunk(dead: &[usize]) -> usize {
    let cpu0 = stats::thread_cpu();
    let mut bytes = 0;
    for &h in dead {
        let h = h as *mut Header;
        let span = Span::of(h);
        let info = span.info();
        bytes += span.stride();
        // SAFETY: the object is DEAD (flagged by the sweep, never shaded or traced again), its
        // value is initialised and this is the only drop of it: the batch holds one count, so
        // the slot is not freed under us, and a DEAD object is never dropped twice (the sweep
        // skips DEAD slots).
        let r = catch_unwind(AssertUnwindSafe(|| unsafe { (info.drop)(h) }));
        if let Err(p) = r {
            eprintln!(
                "goro: panic in Drop of a collected {}: {}",
                (info.name)(),
                panic_msg(&*p)
            );
        }
    }
    let mut free = Vec::with_capacity(dead.len());
    for &h in dead {
        // SAFETY: the batch's count keeps the slot allocated until this decrement.
        let hd = unsafe { &*(h as *const Header) };
        if hd.count.fetch_sub(1, Ordering::AcqRel) == DEAD_BIT | 1 {
            free.push(h);
        }
    }
    heap::free_batch(&free);
    stats::add_gc_cpu(stats::thread_cpu().saturating_sub(cpu0));
    bytes
}

/// Allocation's back-pressure on finalization: while more dead bytes wait for their `Drop`s
/// than the heap goal, an allocating thread waits (at most 10 ms per call, so a `Drop` that
/// needs a lock the allocator holds delays it, never deadlocks it) for the finalizers.
pub(crate) fn throttle() {
    if ON_FINALIZER.with(|f| f.get()) {
        return;
    }
    let goal = crate::pacer::goal();
    if goal == usize::MAX {
        return;
    }
    // Marking has not finished by the goal, or more dead bytes wait for their `Drop`s than the
    // goal: the allocator gives the collector its CPU. It sleeps in short steps (a goroutine
    // parks, so the others on its thread run meanwhile), 10 ms at most per call. Go's assists
    // do mark work instead; here one thread marks, so the allocator waits (see DESIGN.md).
    let behind = || {
        (marking() && stats::heap_alloc() > goal)
            || PENDING_BYTES.load(Ordering::Relaxed) > goal.max(8 << 20)
    };
    if !behind() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(10);
    while behind() && Instant::now() < deadline {
        goro_runtime::time::sleep(Duration::from_micros(200));
    }
}
