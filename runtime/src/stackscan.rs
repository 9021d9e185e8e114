//! What the garbage collector needs from the scheduler: where a stack root lives, and a visit
//! of every goroutine's stack once per cycle. `goro-gc` is the only intended user; the runtime
//! knows nothing of the collector beyond the function it registers (`set_scanner`).
//!
//! ```text
//!   slot header (top 64 bytes of every slot, `stack::SLOT_HEADER`; words 0–4 shown)
//!   ┌─────────┬─────────┬──────────────────────────┬────────────────────────┬─────────────┐
//!   │ owner G │ M tag   │ rooted: 1 once the       │ scanned: last cycle    │ running: 1  │
//!   │         │         │ goroutine made a root;   │ that scanned this      │ while an M  │
//!   │         │         │ 0 after a scan found none│ stack                  │ runs it     │
//!   └─────────┴─────────┴──────────────────────────┴────────────────────────┴─────────────┘
//!   a root on the stack (the collector's `RootSlot`, `#[repr(C)]`):  [ROOT_MAGIC][object]…
//!   its drop overwrites ROOT_MAGIC, so a scan finds exactly the live roots.
//! ```
//!
//! # The cycle's visit, numbered
//! 1. `begin(c)`: `SCANNING += 1`, `SCAN_CYCLE = c`, then `membarrier::heavy()`.
//! 2. `Session::visit` reads the header of every carved slot (`stack::for_each_owned_slot`,
//!    no `mincore`: see there). A goroutine whose `rooted` word is 0 holds no root the cycle must find
//!    (below): only its used stack is recorded. Otherwise, unless `scanned == c`:
//!    `try_begin_scan` on its descriptor (WAITING → WAITING+SCAN: it cannot resume meanwhile),
//!    a check that the slot is still its own, the scanner over `[sp − switch frames, top)`,
//!    `scanned = c` (and `rooted = 0` if no root was there), `end_scan`. A goroutine that is
//!    running or queued is left *pending*.
//! 3. A pending goroutine is scanned by its own M when it next switches out (`at_switch_out`:
//!    before the park commits or the yield is filed, so the stack is quiescent), or by
//!    `Session::retry`: once it parks, or, if it is runnable but not running (queued; or
//!    bound to an M that is inside `blocking`, which must not wait for it), under SCAN set by
//!    `try_begin_scan_runnable` and checked against the header's `running` word after one
//!    `heavy()` for the batch (the M stores `running = 1` before its SCAN check at resume).
//!    Sysmon asks running Ps to yield meanwhile. One still
//!    running after `SIGNAL_AFTER` is scanned where it stands: `SIGURG` to its M's thread,
//!    whose handler (on the M's alternate signal stack) copies the objects of the live roots
//!    between the interrupted stack pointer and the top into a buffer the visit gave it. So
//!    a loop without safepoints, `blocking`, or a thread asleep in the kernel never holds a
//!    cycle up for long, and neither do the goroutines queued behind such an M. (`collect()`
//!    on a goroutine parks rather than waiting in `blocking` all the same: its M can then run
//!    the goroutines the cycle waits for, which is cheaper than scanning them by SCAN.)
//!    The cost on the scheduler: two plain stores to the slot header per switch (`running`).
//! 4. `Session`'s drop: `SCAN_CYCLE = 0`, `SCANNING -= 1`, and descriptors whose freeing was
//!    deferred meanwhile are freed.
//!
//! # Invariants
//! - **A root the visit skips was shaded.** The collector's root creation stores
//!   `rooted = 1` (plain: no load, so no dependency chain through the word), `light()`, then
//!   loads its marking flag and shades the object if set. A visit that reads `rooted == 0`
//!   after step 1's `heavy()` therefore missed only roots whose creator saw marking on and
//!   shaded (the asymmetric fence, `membarrier.rs`). `rooted` is cleared only by a scan of the
//!   suspended (or interrupted) goroutine that found no live root.
//! - **Roots are in memory.** A root's slot has its address escape when it is made, so the
//!   compiler keeps `[ROOT_MAGIC][object]` in memory until the drop, which overwrites the
//!   magic with a volatile store; the scan reads memory only (registers do not matter).
//! - **A descriptor read from a slot header is not freed under the visit.** A goroutine's slot
//!   owner is cleared when its coroutine finishes, before its descriptor can be freed; the free
//!   (`g::gref::destroy`) does `light()` then reads `SCANNING`, and defers the memory's reuse
//!   while it is non-zero. With step 1's `heavy()`, a visit that read owner `g` either sees the
//!   clearing (and skips) or the free saw `SCANNING` and deferred: the descriptor's memory is
//!   still a descriptor, whose state word `try_begin_scan` may CAS (it fails on DEAD).
//! - **A scanned stack is quiescent.** Under SCAN the goroutine is suspended; at switch-out
//!   its own M runs the scanner; in the signal handler the goroutine's thread is the one
//!   reading. Other threads may still write into a suspended goroutine's frames (a scoped
//!   thread, a channel sender filling a waiter); words are read by assembly loads, as
//!   `sched/pin.rs` reads them, so such a race is a stale word, never undefined behaviour;
//!   roots themselves are not written between their creation and their drop.
//! - A goroutine parked on a stack of its own making (a coroutine the program runs inside it)
//!   has its whole slot, guard excluded, scanned: its frames in the slot may reach anywhere.
//!
//! Rejected: a per-goroutine count of live roots (`+= 1` at creation, `-= 1` at drop, the
//! first version) made "holds no roots" exact for a running goroutine, so it needed no
//! signal; but it cost the same as the flag (2.4–2.6 ns per root in `benches/gc_micro.rs`'s
//! `stack_root_goroutine`, against 2.5 ns for the flag then: the loop is bound by its instruction count,
//! not by the count's dependency chain), could not stop a goroutine that holds roots and
//! never switches out from stalling the cycle, and a root slot moved after arming (safe code
//! can move a local it names) had to remember its address to keep the count honest. Each M
//! scanning its own goroutines between
//! two of them (no descriptor hazard, since an M alone finishes its goroutines): an M inside
//! `blocking`, asleep in the kernel or in a loop without safepoints would hold the cycle, and
//! under `allow_migration` an M's goroutines change hands mid-walk. A descriptor registry
//! (Go's `allgs`) costs a lock or two read-modify-writes per spawn and exit; the slot headers
//! already exist. Reading a running goroutine's stack from the collector's thread: it races
//! with the goroutine's own writes.

use crate::g::G;
use crate::stack::{self, header_word};
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use crate::membarrier::light;

/// The word in front of a live root's object pointer on a stack (an odd value: never an
/// aligned pointer).
pub const ROOT_MAGIC: usize = 0x6f72_6f67_2e52_4f4f | 1;

/// The cycle being visited (0: none).
static SCAN_CYCLE: AtomicU32 = AtomicU32::new(0);
/// Visits in progress.
static SCANNING: AtomicUsize = AtomicUsize::new(0);
/// Descriptors freed during a visit, freed at its end: `(address, layout)`.
static DEFERRED: Mutex<Vec<(usize, Layout)>> = Mutex::new(Vec::new());
/// Set while a visit waits for running goroutines: sysmon asks busy Ps to yield.
static WANT_PREEMPT: AtomicBool = AtomicBool::new(false);
/// How long a visit waits for a goroutine holding roots to switch out before it scans it with
/// a signal.
const SIGNAL_AFTER: Duration = Duration::from_millis(2);

/// The collector's scanner: called with the cycle and a quiescent stack's words; returns the
/// number of roots it found (`None`: not marking for that cycle, try again later).
pub type Scanner = fn(cycle: u32, words: &StackWords) -> Option<usize>;
static SCANNER: OnceLock<Scanner> = OnceLock::new();

/// Registers the scanner (once per process; later calls are ignored).
pub fn set_scanner(f: Scanner) {
    let _ = SCANNER.set(f);
}

/// The `rooted` word of the goroutine stack that `addr` lies in, or `None` if `addr` is not in
/// a goroutine slot (a plain thread's stack, the heap, a coroutine stack of the program's own).
/// Code running with a local at `addr` inside a slot is that slot's goroutine: nothing else
/// runs on a goroutine's stack.
///
/// `addr` must be the address of a live local of the caller's (then it is above the guard
/// page, which faults, and below the header, which is above the stack's first frame).
#[inline]
pub fn root_home(addr: usize) -> Option<&'static AtomicUsize> {
    let (lo, size) = stack::reservation::find_slot(addr)?;
    Some(header_word(lo + size, 2))
}

/// A quiescent stack range (or a signal scan's copy of its roots), handed to the scanner.
/// Only the runtime makes one.
pub struct StackWords {
    from: usize,
    to: usize,
}

impl StackWords {
    /// Bytes in the range.
    pub fn len(&self) -> usize {
        self.to - self.from
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.to == self.from
    }

    /// Calls `f` with the object word of every live root in the range (the word after each
    /// `ROOT_MAGIC`). Returns how many there were.
    pub fn for_each_root(&self, mut f: impl FnMut(usize)) -> usize {
        let mut n = 0;
        let mut a = self.from;
        while a + 8 < self.to {
            // SAFETY: the runtime made this range from mapped memory (a slot's stack part above
            // its guard page, mapped for the life of the process, or a buffer it owns), 8-byte
            // aligned; each asm block reads one word of it.
            if unsafe { load_word(a) } == ROOT_MAGIC {
                // SAFETY: as above (`a + 8 < to`).
                f(unsafe { load_word(a + 8) });
                n += 1;
                a += 16;
            } else {
                a += 8;
            }
        }
        n
    }
}

/// One machine load: the word may be padding, a dead slot or written by another thread right
/// now (a scoped thread's write into a parked goroutine's local), which Rust code may not read
/// as an integer; a load of mapped memory by assembly is always defined.
///
/// # Safety
/// `a` must be mapped, readable and 8-byte aligned.
#[inline]
unsafe fn load_word(a: usize) -> usize {
    let w: usize;
    // SAFETY: the caller guarantees `a` is readable; the asm reads 8 bytes there.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov {w}, qword ptr [{a}]", a = in(reg) a, w = out(reg) w,
            options(nostack, readonly, preserves_flags));
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("ldr {w}, [{a}]", a = in(reg) a, w = out(reg) w,
            options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: as above; a volatile read is the closest portable load.
    unsafe {
        w = std::ptr::read_volatile(a as *const usize);
    }
    w
}

/// The range to scan of a goroutine suspended with stack pointer `sp` in the slot `[lo, hi)`:
/// from below the switch frames to the top; the whole stack part if `sp` is outside it.
fn suspended_range(lo: usize, hi: usize, sp: usize) -> StackWords {
    let floor = lo + stack::madvise::PAGE;
    let top = stack::stack_top(hi);
    let from = if sp >= floor && sp < top {
        (sp.saturating_sub(crate::sched::switch_depth()) & !7).max(floor)
    } else {
        floor
    };
    StackWords { from, to: top }
}

/// On the M, before it resumes `g`: `running = 1`, then (in `transition_to_running`) the
/// SCAN check; the collector's side is `try_begin_scan_runnable`, `heavy()`, a load of
/// `running`.
#[inline]
pub(crate) fn before_resume(g: &G) {
    let slot = g.stack();
    if slot.is_taken() {
        header_word(slot.hi(), 4).store(1, Ordering::Relaxed);
        light();
    }
}

/// Step 3, on the goroutine's M right after it switched out with a yield or a park; then
/// `running = 0` (release: the goroutine's writes to its stack come before).
#[inline]
pub(crate) fn at_switch_out(g: &G) {
    let slot = g.stack();
    if !slot.is_taken() {
        return;
    }
    if header_word(slot.hi(), 2).load(Ordering::Relaxed) != 0 {
        scan_switched_out(g);
    }
    header_word(slot.hi(), 4).store(0, Ordering::Release);
}

#[cold]
fn scan_switched_out(g: &G) {
    let c = SCAN_CYCLE.load(Ordering::Acquire);
    let slot = g.stack();
    let done = header_word(slot.hi(), 3);
    if c == 0 || done.load(Ordering::Relaxed) == c as usize {
        return;
    }
    let Some(scan) = SCANNER.get() else { return };
    let (sp, hi) = g.parked_stack();
    if let Some(n) = scan(c, &suspended_range(slot.lo(), hi, sp)) {
        if n == 0 {
            // Suspended, on its own M: nothing writes the word meanwhile.
            header_word(hi, 2).store(0, Ordering::Relaxed);
        }
        done.store(c as usize, Ordering::Release);
    }
}

/// Called by a descriptor's free: whether a visit is in progress, in which case the memory is
/// kept (and freed when the visit ends).
pub(crate) fn defer_free(ptr: NonNull<u8>, layout: Layout) -> bool {
    light();
    if SCANNING.load(Ordering::Relaxed) == 0 {
        return false;
    }
    DEFERRED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((ptr.as_ptr() as usize, layout));
    true
}

/// Whether sysmon should ask running Ps to yield (a visit waits for running goroutines).
pub(crate) fn preempt_wanted() -> bool {
    WANT_PREEMPT.load(Ordering::Relaxed)
}

// ---- the signal scan -----------------------------------------------------------------------

/// Each M's thread id by M tag − 1 (0: none yet), for `tgkill`.
static M_TIDS: [AtomicI32; crate::sched::MAX_MS] =
    [const { AtomicI32::new(0) }; crate::sched::MAX_MS];

/// Called by each M's thread when it starts.
pub(crate) fn record_m_thread(tag: usize) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    if let Some(t) = M_TIDS.get(tag - 1) {
        t.store(tid, Ordering::Release);
    }
}

const IDLE: u8 = 0;
const PENDING: u8 = 1;
const BUSY: u8 = 2;
const DONE: u8 = 3;
const MISSED: u8 = 4;
const OVERFLOW: u8 = 5;

/// The one signal-scan request (the collector makes one at a time, under `REQ_LOCK`).
struct SigReq {
    state: AtomicU8,
    tid: AtomicI32,
    lo: AtomicUsize,
    hi: AtomicUsize,
    buf: AtomicUsize,
    cap: AtomicUsize,
    len: AtomicUsize,
}

static REQ: SigReq = SigReq {
    state: AtomicU8::new(IDLE),
    tid: AtomicI32::new(0),
    lo: AtomicUsize::new(0),
    hi: AtomicUsize::new(0),
    buf: AtomicUsize::new(0),
    cap: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
};
static REQ_LOCK: Mutex<()> = Mutex::new(());
/// The `SIGURG` action before ours (a program's own use of it is chained to).
static OLD_URG: OnceLock<libc::sigaction> = OnceLock::new();

fn install_urg() -> bool {
    OLD_URG
        .get_or_init(|| {
            // SAFETY: a zeroed sigaction is a valid out-value; the new action's handler is an
            // `extern "C"` function with the SA_SIGINFO signature, and the mask is emptied.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_urg as *const () as usize;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
                libc::sigemptyset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGURG, &act, &mut old);
                old
            }
        })
        .sa_sigaction
        != usize::MAX
}

/// The handler: if the request names this thread and it was interrupted on the requested
/// slot, copy `[ROOT_MAGIC][object]` of each live root from the stack pointer (minus the
/// red zone) to the top into the buffer, and clear `rooted` if there were none (this thread
/// is the goroutine's: nobody else writes the word). Async-signal-safe: atomics, loads and
/// `gettid` only.
extern "C" fn on_urg(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let ours = REQ.tid.load(Ordering::Acquire) == me
        && REQ
            .state
            .compare_exchange(PENDING, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
    if !ours {
        chain_urg(sig, info, ctx);
        return;
    }
    let (lo, hi) = (
        REQ.lo.load(Ordering::Relaxed),
        REQ.hi.load(Ordering::Relaxed),
    );
    let sp = interrupted_sp(ctx);
    let floor = lo + stack::madvise::PAGE;
    let top = stack::stack_top(hi);
    if sp < floor || sp >= top {
        REQ.state.store(MISSED, Ordering::Release);
        return;
    }
    let (buf, cap) = (
        REQ.buf.load(Ordering::Relaxed),
        REQ.cap.load(Ordering::Relaxed),
    );
    let words = StackWords {
        from: (sp.saturating_sub(128) & !7).max(floor),
        to: top,
    };
    let mut len = 0;
    let mut over = false;
    let n = words.for_each_root(|obj| {
        if len + 2 <= cap {
            // SAFETY: `buf` is the collector's buffer of `cap` words, alive until it sees
            // DONE/OVERFLOW (it waits for BUSY to end).
            unsafe {
                *(buf as *mut usize).add(len) = ROOT_MAGIC;
                *(buf as *mut usize).add(len + 1) = obj;
            }
            len += 2;
        } else {
            over = true;
        }
    });
    if n == 0 {
        header_word(hi, 2).store(0, Ordering::Relaxed);
    }
    REQ.len.store(len, Ordering::Relaxed);
    REQ.state
        .store(if over { OVERFLOW } else { DONE }, Ordering::Release);
}

fn chain_urg(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(old) = OLD_URG.get() else { return };
    let h = old.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        return; // SIGURG's default is to ignore it
    }
    if old.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program installed this handler with the SA_SIGINFO signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the program installed this handler with the plain signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn interrupted_sp(ctx: *mut libc::c_void) -> usize {
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
    unsafe {
        (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RSP as usize] as usize
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
fn interrupted_sp(ctx: *mut libc::c_void) -> usize {
    // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
    unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.sp as usize }
}

#[cfg(not(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_os = "linux"
)))]
fn interrupted_sp(_: *mut libc::c_void) -> usize {
    0 // never on a slot: the scan is reported missed
}

/// Step 3's signal: the live roots of the goroutine running on the slot `[lo, hi)`, bound to
/// the M tagged `tag`, copied as `[ROOT_MAGIC][object]` pairs; `None` if it was not running
/// there (it switched out: the visit catches it next time) or did not answer.
fn signal_scan(lo: usize, hi: usize, tag: usize) -> Option<Vec<usize>> {
    let tid = M_TIDS.get(tag.checked_sub(1)?)?.load(Ordering::Acquire);
    if tid == 0 || !install_urg() {
        return None;
    }
    let _one = REQ_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf = vec![0usize; 512];
    loop {
        REQ.tid.store(tid, Ordering::Relaxed);
        REQ.lo.store(lo, Ordering::Relaxed);
        REQ.hi.store(hi, Ordering::Relaxed);
        REQ.buf.store(buf.as_mut_ptr() as usize, Ordering::Relaxed);
        REQ.cap.store(buf.len(), Ordering::Relaxed);
        REQ.state.store(PENDING, Ordering::Release);
        // SAFETY: signalling a thread of this process; a stale tid names no thread of ours
        // (ESRCH) or one whose handler finds the request is not for it.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGURG) };
        let start = Instant::now();
        let state = loop {
            let s = REQ.state.load(Ordering::Acquire);
            if s != PENDING && s != BUSY {
                break s;
            }
            if s == PENDING
                && start.elapsed() > Duration::from_millis(20)
                && REQ
                    .state
                    .compare_exchange(PENDING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                break MISSED; // never delivered (the thread is gone, or blocks the signal)
            }
            std::thread::sleep(Duration::from_micros(20));
        };
        REQ.state.store(IDLE, Ordering::Relaxed);
        match state {
            DONE => {
                buf.truncate(REQ.len.load(Ordering::Relaxed));
                return Some(buf);
            }
            OVERFLOW => buf = vec![0usize; buf.len() * 8],
            _ => return None,
        }
    }
}

// ---- the visit -----------------------------------------------------------------------------

/// What one visit found.
#[derive(Default, Debug, Clone)]
pub struct Visit {
    /// Goroutines with a stack.
    pub goroutines: usize,
    /// Used stack (stack pointer to top) of the goroutines seen, at their last switch-out.
    pub used_bytes: usize,
    /// The pages those used stacks span (each goroutine's used part rounded up to whole
    /// pages, the slot header's page included): what their stacks need resident.
    pub inuse_bytes: usize,
    /// Slots `(lo, hi, since)` whose goroutine may hold roots and was running or queued.
    pending: Vec<(usize, usize, Instant)>,
}

impl Visit {
    /// Goroutines that may hold roots not yet scanned this cycle.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// A visit in progress (steps 1–4).
pub struct Session {
    cycle: u32,
}

/// Step 1. `cycle` must not be 0, and differ from the last visit's.
pub fn begin(cycle: u32) -> Session {
    assert_ne!(cycle, 0, "cycle 0 means none");
    SCANNING.fetch_add(1, Ordering::SeqCst);
    SCAN_CYCLE.store(cycle, Ordering::SeqCst);
    crate::membarrier::heavy();
    Session { cycle }
}

impl Session {
    /// Step 2: every goroutine stack once. `scan` gets each stack to scan and returns the
    /// number of roots it found.
    pub fn visit(&self, scan: &mut dyn FnMut(&StackWords) -> usize) -> Visit {
        let mut v = Visit::default();
        let now = Instant::now();
        stack::for_each_owned_slot(|lo, hi, owner| {
            v.goroutines += 1;
            self.visit_slot(lo, hi, owner, now, scan, &mut v, true);
        });
        v
    }

    /// Step 3: the pending goroutines again: parked ones under SCAN; runnable ones that are
    /// not running (queued, or behind an M inside `blocking`) under SCAN after one `heavy()`
    /// for all of them; those still running after `SIGNAL_AFTER`, by a signal. Returns how
    /// many remain.
    pub fn retry(&self, v: &mut Visit, scan: &mut dyn FnMut(&StackWords) -> usize) -> usize {
        let mut runnable = Vec::new();
        for (lo, hi, since) in std::mem::take(&mut v.pending) {
            let owner = header_word(hi, 0).load(Ordering::Acquire);
            if owner == 0 {
                continue;
            }
            let before = v.pending.len();
            self.visit_slot(lo, hi, owner, since, scan, v, false);
            if v.pending.len() > before {
                // SAFETY: as in `visit_slot`: read from the header during the session.
                let g: &G = unsafe { &*(owner as *const G) };
                if g.try_begin_scan_runnable() {
                    v.pending.pop();
                    runnable.push((lo, hi, since, owner));
                }
            }
        }
        if !runnable.is_empty() {
            crate::membarrier::heavy();
        }
        for (lo, hi, since, owner) in runnable {
            // SAFETY: as above.
            let g: &G = unsafe { &*(owner as *const G) };
            let slot = g.stack();
            let ours = slot.is_taken()
                && slot.hi() == hi
                && header_word(hi, 0).load(Ordering::Acquire) == owner;
            if ours && header_word(hi, 4).load(Ordering::Acquire) == 0 {
                // Not running, and it cannot start while SCAN is held: quiescent.
                self.scan_suspended(lo, hi, g, scan);
                g.end_scan();
                continue;
            }
            g.end_scan();
            if !ours {
                continue;
            }
            if since.elapsed() < SIGNAL_AFTER {
                v.pending.push((lo, hi, since));
                continue;
            }
            let tag = header_word(hi, 1).load(Ordering::Acquire);
            match signal_scan(lo, hi, tag) {
                Some(pairs) => {
                    let p = pairs.as_ptr() as usize;
                    scan(&StackWords {
                        from: p,
                        to: p + pairs.len() * 8,
                    });
                    header_word(hi, 3).store(self.cycle as usize, Ordering::Release);
                }
                None => v.pending.push((lo, hi, since)),
            }
        }
        WANT_PREEMPT.store(!v.pending.is_empty(), Ordering::Relaxed);
        v.pending.len()
    }

    /// Scans the stack of `g`, which owns `[lo, hi)` and cannot run (the caller holds SCAN
    /// and knows it is not running).
    fn scan_suspended(
        &self,
        lo: usize,
        hi: usize,
        g: &G,
        scan: &mut dyn FnMut(&StackWords) -> usize,
    ) {
        let (sp, _) = g.parked_stack();
        let words = suspended_range(lo, hi, sp);
        if scan(&words) == 0 {
            header_word(hi, 2).store(0, Ordering::Relaxed);
        }
        header_word(hi, 3).store(self.cycle as usize, Ordering::Release);
    }

    /// Asks sysmon to make running goroutines yield at their next preemption point.
    pub fn request_preemption(&self) {
        WANT_PREEMPT.store(true, Ordering::Relaxed);
    }

    #[allow(clippy::too_many_arguments)]
    fn visit_slot(
        &self,
        lo: usize,
        hi: usize,
        owner: usize,
        since: Instant,
        scan: &mut dyn FnMut(&StackWords) -> usize,
        v: &mut Visit,
        first: bool,
    ) {
        let c = self.cycle as usize;
        // SAFETY: `owner` was read from the slot header after `begin`'s fence, so the
        // descriptor is not freed while this session lives (module invariants); its atomics
        // may be read and its state word CASed.
        let g: &G = unsafe { &*(owner as *const G) };
        let top = stack::stack_top(hi);
        if first {
            let (sp, _) = g.parked_stack();
            let page = stack::madvise::PAGE;
            if sp > lo && sp < top {
                v.used_bytes += top - sp;
                v.inuse_bytes += hi - (sp & !(page - 1));
            } else {
                v.inuse_bytes += page; // not started, or on a stack of its own: its top page
            }
        }
        if header_word(hi, 2).load(Ordering::Acquire) == 0 {
            return;
        }
        if header_word(hi, 3).load(Ordering::Acquire) == c {
            return;
        }
        if !g.try_begin_scan() {
            v.pending.push((lo, hi, since));
            return;
        }
        // Under SCAN the goroutine stays suspended; check it still owns this slot (the slot
        // may have been freed and retaken between the header read and the CAS).
        let slot = g.stack();
        if slot.is_taken() && slot.hi() == hi && header_word(hi, 0).load(Ordering::Acquire) == owner
        {
            self.scan_suspended(lo, hi, g, scan);
        }
        g.end_scan();
    }
}

impl Drop for Session {
    /// Step 4.
    fn drop(&mut self) {
        WANT_PREEMPT.store(false, Ordering::Relaxed);
        let _ = SCAN_CYCLE.compare_exchange(self.cycle, 0, Ordering::SeqCst, Ordering::SeqCst);
        if SCANNING.fetch_sub(1, Ordering::SeqCst) == 1 {
            let cells = std::mem::take(&mut *DEFERRED.lock().unwrap_or_else(|e| e.into_inner()));
            for (p, layout) in cells {
                // SAFETY: each was an unreferenced descriptor cell from `slab::alloc` whose
                // free `defer_free` postponed; no visit can hold its address any more (the
                // last session ended, and the next one reads only live owners).
                unsafe {
                    crate::g::free_cell(NonNull::new(p as *mut u8).expect("non-null"), layout)
                };
            }
        }
    }
}
