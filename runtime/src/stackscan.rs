//! What the garbage collector needs from the scheduler: where a stack root lives, and a visit
//! of every goroutine's stack once per cycle. `goro-gc` is the only intended user; the runtime
//! knows nothing of the collector beyond the function it registers (`set_scanner`).
//!
//! ```text
//!   slot header (top 32 bytes of every slot, `stack::SLOT_HEADER`)
//!   ┌──────────┬──────────┬───────────────────────────────┬────────────────────────────┐
//!   │ owner G  │ M tag    │ roots: live stack roots here   │ scanned: last cycle that   │
//!   │          │          │ (the goroutine alone writes)   │ scanned this stack          │
//!   └──────────┴──────────┴───────────────────────────────┴────────────────────────────┘
//! ```
//!
//! # The cycle's visit, numbered
//! 1. `begin(c)`: `SCAN_CYCLE = c`, `SCANNING += 1`, then `membarrier::heavy()`.
//! 2. `Session::visit` walks every carved slot with an owner (the mincore'd top page says which
//!    are resident). A goroutine whose `roots` word is 0 holds no stack root the cycle must
//!    find (below), so only its used stack is recorded. Otherwise, unless `scanned == c`:
//!    `try_begin_scan` on its descriptor (WAITING → WAITING+SCAN: it cannot resume meanwhile),
//!    a check that the slot still belongs to it, the scanner over `[sp − switch frames, top)`,
//!    `scanned = c`, `end_scan`. A goroutine that is running or queued is left *pending*.
//! 3. Pending goroutines are scanned by their own M when they next switch out
//!    (`at_switch_out`, before the park commits or the yield is filed: the stack is quiescent,
//!    its registers saved on it), or by `Session::retry` once they park. `request_preemption`
//!    makes sysmon ask every running P to yield at its next preemption point.
//! 4. `Session`'s drop: `SCAN_CYCLE = 0`, `SCANNING -= 1`, and descriptors whose freeing was
//!    deferred meanwhile are freed.
//!
//! # Invariants
//! - **A root the visit skips was shaded.** The collector's root creation is `roots += 1`
//!   (plain), `light()`, then a load of its marking flag, shading the object if set. A visit
//!   that reads `roots == 0` after step 1's `heavy()` therefore missed only roots whose creator
//!   saw marking on and shaded (the asymmetric fence, `membarrier.rs`). So a goroutine that
//!   never reaches a safepoint does not hold up a cycle unless it holds stack roots made before
//!   the cycle began; one that holds some is waited for (and asked to yield).
//! - **A descriptor read from a slot header is not freed under the visit.** A goroutine's slot
//!   owner is cleared when its coroutine finishes, before its descriptor can be freed; the free
//!   (`g::gref::destroy`) does `light()` then reads `SCANNING`, and defers the memory's reuse
//!   while it is non-zero. With step 1's `heavy()`, a visit that read owner `g` either sees the
//!   clearing (and skips) or the free saw `SCANNING` and deferred: the descriptor's memory is
//!   still a descriptor, whose state word `try_begin_scan` may CAS (it fails on DEAD).
//! - **A scanned stack is quiescent.** Under SCAN the goroutine is suspended; at switch-out
//!   its own M runs the scanner, with nothing else able to resume it. Other threads may still
//!   write into its frames (a scoped thread, a channel sender filling a waiter); the words are
//!   read by assembly loads, as `sched/pin.rs` reads them, so such a race is a stale word,
//!   never undefined behaviour; roots themselves are never written after they are made.
//! - A goroutine parked on a stack of its own making (a coroutine the program runs inside it)
//!   has its whole slot, guard excluded, scanned: its frames in the slot may reach anywhere.
//!
//! Rejected: each M scanning its own goroutines between two of them (no descriptor hazard at
//! all, since an M alone finishes its goroutines): an M inside `blocking`, asleep in the
//! kernel or in a loop without safepoints would hold the cycle, and under `allow_migration`
//! an M's goroutines change hands mid-walk. A descriptor registry (Go's `allgs`) costs a lock
//! or two read-modify-writes per spawn and exit; the slot headers already exist.

use crate::g::G;
use crate::stack::{self, header_word};
use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

pub use crate::membarrier::light;

/// The cycle being visited (0: none).
static SCAN_CYCLE: AtomicU32 = AtomicU32::new(0);
/// Visits in progress.
static SCANNING: AtomicUsize = AtomicUsize::new(0);
/// Descriptors freed during a visit, freed at its end: `(address, layout)`.
static DEFERRED: Mutex<Vec<(usize, Layout)>> = Mutex::new(Vec::new());
/// Set while a visit waits for running goroutines: sysmon asks busy Ps to yield.
static WANT_PREEMPT: AtomicBool = AtomicBool::new(false);

/// The collector's scanner: called with the cycle and a quiescent stack's words; returns
/// whether it scanned them for that cycle (false: not marking for it, try again).
pub type Scanner = fn(cycle: u32, words: &StackWords) -> bool;
static SCANNER: OnceLock<Scanner> = OnceLock::new();

/// Registers the scanner (once per process; later calls are ignored).
pub fn set_scanner(f: Scanner) {
    let _ = SCANNER.set(f);
}

/// The roots counter of the goroutine stack that `addr` lies in, or `None` if `addr` is not in
/// the stack part of a goroutine slot (a plain thread's stack, the heap, a coroutine stack of
/// the program's own). Code running with a local at `addr` inside a slot is that slot's
/// goroutine: nothing else runs on a goroutine's stack.
#[inline]
pub fn root_home(addr: usize) -> Option<&'static AtomicUsize> {
    let (lo, size) = stack::reservation::find_slot(addr)?;
    let hi = lo + size;
    if addr < lo + stack::madvise::PAGE || addr >= stack::stack_top(hi) {
        return None;
    }
    Some(header_word(hi, 2))
}

/// A quiescent stack range, handed to the scanner. Only the runtime makes one.
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

    /// Calls `f` with every word `w` of the range for which `w - lo < len` (unsigned).
    pub fn for_each_in(&self, lo: usize, len: usize, mut f: impl FnMut(usize)) {
        let mut a = self.from;
        while a < self.to {
            // SAFETY: the runtime made this range from a slot's stack part, above its guard
            // page: mapped for the life of the process (released pages read as zero), 8-byte
            // aligned; the asm only reads one word.
            let w = unsafe { load_word(a) };
            if w.wrapping_sub(lo) < len {
                f(w);
            }
            a += 8;
        }
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

/// The range to scan of a goroutine suspended with stack pointer `sp` in the slot ending at
/// `hi`: from below the switch frames (they hold the callee-saved registers) to the top; the
/// whole stack part if `sp` is outside it.
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

/// Step 3, on the goroutine's M right after it switched out with a yield or a park.
#[inline]
pub(crate) fn at_switch_out(g: &G) {
    let slot = g.stack();
    if !slot.is_taken() || header_word(slot.hi(), 2).load(Ordering::Relaxed) == 0 {
        return;
    }
    scan_switched_out(g);
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
    if scan(c, &suspended_range(slot.lo(), hi, sp)) {
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

/// What one visit found.
#[derive(Default, Debug, Clone)]
pub struct Visit {
    /// Goroutines with a stack.
    pub goroutines: usize,
    /// Of those, goroutines holding stack roots.
    pub with_roots: usize,
    /// Stacks scanned (by this visit, or already by their M, this cycle).
    pub scanned: usize,
    /// Bytes scanned by this visit.
    pub scanned_bytes: usize,
    /// Used stack (stack pointer to top) of the parked goroutines seen.
    pub used_bytes: usize,
    /// Slots `(lo, hi)` whose goroutine holds roots and was running or queued.
    pending: Vec<(usize, usize)>,
}

impl Visit {
    /// Goroutines with roots not yet scanned this cycle.
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
    /// Step 2: every goroutine stack once.
    pub fn visit(&self, scan: &mut dyn FnMut(&StackWords)) -> Visit {
        let mut v = Visit::default();
        stack::for_each_owned_slot(|lo, hi, owner| {
            v.goroutines += 1;
            self.visit_slot(lo, hi, owner, scan, &mut v, true);
        });
        v
    }

    /// Step 3: the pending goroutines again. Returns how many remain.
    pub fn retry(&self, v: &mut Visit, scan: &mut dyn FnMut(&StackWords)) -> usize {
        for (lo, hi) in std::mem::take(&mut v.pending) {
            let owner = header_word(hi, 0).load(Ordering::Acquire);
            if owner != 0 {
                self.visit_slot(lo, hi, owner, scan, v, false);
            }
        }
        WANT_PREEMPT.store(!v.pending.is_empty(), Ordering::Relaxed);
        v.pending.len()
    }

    /// Asks sysmon to make running goroutines yield at their next preemption point.
    pub fn request_preemption(&self) {
        WANT_PREEMPT.store(true, Ordering::Relaxed);
    }

    fn visit_slot(
        &self,
        lo: usize,
        hi: usize,
        owner: usize,
        scan: &mut dyn FnMut(&StackWords),
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
            // The stack pointer of the last switch-out (a running goroutine's is stale).
            let (sp, _) = g.parked_stack();
            if sp > lo && sp < top {
                v.used_bytes += top - sp;
            }
        }
        let roots = header_word(hi, 2).load(Ordering::Acquire);
        if roots == 0 {
            return;
        }
        if first {
            v.with_roots += 1;
        }
        if header_word(hi, 3).load(Ordering::Acquire) == c {
            v.scanned += 1;
            return;
        }
        if !g.try_begin_scan() {
            v.pending.push((lo, hi));
            return;
        }
        // Under SCAN the goroutine stays suspended; check it still owns this slot (the slot
        // may have been freed and retaken between the header read and the CAS).
        let slot = g.stack();
        if slot.is_taken() && slot.hi() == hi && header_word(hi, 0).load(Ordering::Acquire) == owner
        {
            let (sp, _) = g.parked_stack();
            let words = suspended_range(lo, hi, sp);
            v.scanned_bytes += words.len();
            scan(&words);
            header_word(hi, 3).store(c, Ordering::Release);
            v.scanned += 1;
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
