//! Goroutine stacks: slots of reserved memory that grow by page faults and never move.
//!
//! Go copies a goroutine's stack to a bigger one when it overflows and fixes every pointer into
//! it from the compiler's stack maps. Rust has no stack maps, and the conservative alternative
//! (add the move's delta to every word that looks like a pointer into the old stack) corrupts
//! ordinary safe Rust: a `Vec<&T>` of references to locals, a boxed closure borrowing a local,
//! a map keyed by slices of a stack buffer, a scoped thread writing into a local, a pointer cast
//! to an integer, a pinned waiter linked from a heap list. So in goro:
//!
//! **A stack never moves while anything may point into it.**
//!
//! Each goroutine owns a `StackSlot`: a power-of-two range of reserved address space (256 KiB
//! by default) whose pages the kernel commits on first touch. The MMU is the overflow check and
//! growth costs one page fault per 4 KiB, no copy:
//!
//! ```text
//!   lo                                                                           hi = lo + size
//!   ┌────────────┬──────────────────────────────────────────────┬──────────┬─────────────────┐
//!   │ guard page │  never touched: reserved, not committed      │ red zone │ live frames  ◀──│
//!   │ (4 KiB,    │  ◀── the stack grows down into this by page   │ (kept)   │ sp           top │
//!   │  faults)   │      faults; released again below sp - red   │          │  initial frame  │
//!   └────────────┴──────────────────────────────────────────────┴──────────┴─────────────────┘
//! ```
//!
//! - Slots are carved from 16 GiB `MAP_NORESERVE` reservations (`reservation.rs`), so a million
//!   goroutines live in 16 mappings. The guard page is installed with `MADV_GUARD_INSTALL`
//!   (batched, `madvise.rs`), which does not split the mapping; older kernels fall back to
//!   `mprotect` and, when mappings run out, taking a slot fails with an error saying what to do
//!   (`try_spawn` returns it; a `spawn`ed goroutine ends with it, `crate::g::body`).
//! - A goroutine that overruns its slot faults on the guard page; the handler in `crate::signal`
//!   prints `fatal error: stack overflow in goroutine <id> (limit <N> KiB)` and aborts.
//! - Freed slots are reused through per-thread caches and a global list (`pool.rs`), which
//!   also says when their committed pages are given back.
//! - For the garbage collector: [`release_below_sp`] gives back the pages of a *parked*
//!   goroutine below its stack pointer minus a red zone, and [`stats`] reports usage.
//!
//! # Who may still write into a parked stack
//! Other threads can hold pointers into a parked goroutine's live frames and write through
//! them: a `std::thread::scope` thread writing a local of a goroutine parked inside the scope
//! (corosensei#27 is this hole for plain coroutines), a channel sender filling a waiter record
//! on the waiting stack. So no path may reuse or release the live part of a stack before the
//! goroutine has returned past every frame such a pointer names:
//! - a slot goes back to the pool only when its coroutine has finished (`StackSlot`'s drop);
//!   a descriptor whose coroutine is still suspended is never freed (`g::gref::destroy` keeps
//!   it, with the slot);
//! - the shutdown's forced unwind runs the goroutine's own destructors, in order: a scope's
//!   end catches the unwind, waits for its threads, and only then lets it continue (std's
//!   `scope` joins before it resumes a panic), so the frames it lent out outlive the threads;
//! - `release_below_sp` releases only below the recorded stack pointer (minus the red zone):
//!   a scope's threads, and a waiter record's writer, point into frames at or above the frame
//!   that parked, which is above that pointer. A goroutine parked on a stack outside its slot
//!   (a coroutine of the program's own, resumed inside the goroutine) records a pointer
//!   outside the slot, and nothing is released then.

pub(crate) mod madvise;
pub(crate) mod pool;
pub(crate) mod reservation;
mod worker;

pub use madvise::GuardError;

use corosensei::stack::{Stack, StackPointer};
use madvise::PAGE;
use std::num::NonZeroUsize;

/// Bytes kept committed below a parked goroutine's recorded stack pointer when its stack is
/// trimmed. The pointer is recorded in `park`, a few frames above the context switch; those
/// frames (the switch itself, `Yielder::suspend`) and the 128-byte x86-64 red zone need well
/// under 1 KiB, so one page plus rounding down to a page boundary is a wide margin.
pub const RED_ZONE: usize = PAGE;

/// The default slot size: 256 KiB of address space, of which the guard takes one page. Unchecked
/// std calls need far more than Go's 2 KiB (a caught panic ~5.4 KiB, a backtrace ~22 KiB).
pub const DEFAULT_STACK_SIZE: usize = 256 << 10;

/// Bytes at the very top of every slot kept out of the stack: the slot header, one cache line
/// (so the M's and the collector's stores to it share no line with the stack's first frame).
/// While a goroutine owns the slot:
/// - word 0 is the goroutine's descriptor address and word 1 the tag of the M the goroutine is
///   bound to (`M::tag`, unique among the Ms of every runtime alive); both are 0 otherwise. At
///   shutdown each M finds the goroutines bound to it that no queue holds (parked ones)
///   through them;
/// - word 2 (`rooted`) says the goroutine made a collector's stack root since a scan last
///   found none, word 3 is the collection cycle that last scanned it, and word 4 (`running`)
///   is 1 while an M runs the goroutine (`crate::stackscan`); words 5–7 are unused. They are
///   reset when a goroutine takes the slot.
///
/// The header lives in the slot, not in the descriptor, because slot memory is never
/// unmapped: the collector may read the header of any carved slot at any time.
pub(crate) const SLOT_HEADER: usize = 64;

/// Where the stack of the slot ending at `hi` starts (its highest address; it grows down): right
/// below the header.
///
/// Rejected: *colouring* (starting each stack a slot-dependent multiple of 64 bytes lower, up to
/// 2.5 KiB). Every stack top sits at the same offset in its page, so a ring of 1,000 goroutines
/// taking turns crowds the same cache sets; colouring took that benchmark from ~300 to ~220 ns
/// per hop. But it pushes a goroutine's frames down by up to 2.5 KiB, so one that used 2–4 KiB
/// of stack committed a second page: an echo server's idle connection cost 6.4 KB instead of
/// 4.5 KB. Colours spanning 1 KiB or less did not help the ring. Memory per parked goroutine is
/// the promise (a million of them), so stacks start at the header.
#[inline]
pub(crate) fn stack_top(hi: usize) -> usize {
    hi - SLOT_HEADER
}

/// Word `i` (0: owner, 1: M tag, 2: rooted, 3: scanned cycle, 4: running) of the header of
/// the slot ending at `hi`.
pub(crate) fn header_word(hi: usize, i: usize) -> &'static std::sync::atomic::AtomicUsize {
    // SAFETY: `[hi - SLOT_HEADER, hi)` of a carved slot is mapped read-write for the life of
    // the process (reservations are never unmapped), aligned, and used only as these atomics
    // (the stack starts below it).
    unsafe { &*((hi - SLOT_HEADER + 8 * i) as *const std::sync::atomic::AtomicUsize) }
}

/// The stack slot a goroutine runs on. Owned by the goroutine's coroutine; returned to the pool
/// when dropped, which happens only after the coroutine finished (or never ran).
pub(crate) struct StackSlot {
    at: SlotAddr,
}

/// A slot's address and size class in one word: the page-aligned low end with the class in the
/// low bits (one word less in every goroutine's descriptor and coroutine).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SlotAddr(usize);

impl SlotAddr {
    /// No slot: a goroutine that has not started (or models and tests that use a descriptor
    /// without a stack).
    pub(crate) const NONE: SlotAddr = SlotAddr(0);

    fn new(lo: usize, class: u8) -> SlotAddr {
        debug_assert_eq!(lo % PAGE, 0);
        SlotAddr(lo | class as usize)
    }

    /// A slot of the class for `stack_size` bytes, to be taken later (`StackSlot::take`).
    pub(crate) fn deferred(stack_size: usize) -> SlotAddr {
        SlotAddr::new(0, pool::class_of(stack_size))
    }

    /// Whether this names a slot taken from the pool (not `NONE`, not `deferred`).
    pub(crate) fn is_taken(self) -> bool {
        self.lo() != 0
    }

    /// The one-word form, for an atomic.
    pub(crate) fn to_raw(self) -> usize {
        self.0
    }

    pub(crate) fn from_raw(raw: usize) -> SlotAddr {
        SlotAddr(raw)
    }

    pub(crate) fn lo(self) -> usize {
        self.0 & !(PAGE - 1)
    }

    fn class(self) -> u8 {
        (self.0 & (PAGE - 1)) as u8
    }

    pub(crate) fn size(self) -> usize {
        pool::class_size(self.class())
    }

    pub(crate) fn hi(self) -> usize {
        self.lo() + self.size()
    }

    pub(crate) fn view(self) -> SlotView {
        SlotView {
            lo: self.lo(),
            size: self.size(),
        }
    }
}

impl StackSlot {
    /// Takes a slot able to hold `stack_size` bytes (rounded up to a power of two, 16 KiB to
    /// 1 GiB, guard page included).
    pub(crate) fn new(stack_size: usize) -> Result<StackSlot, GuardError> {
        // SAFETY: a deferred address names no slot.
        unsafe { StackSlot::take(SlotAddr::deferred(stack_size)) }
    }

    /// Takes the slot `at` names: the one already taken, or a fresh one of its class if it
    /// is `deferred`.
    ///
    /// # Safety
    /// A taken `at` must come from `into_addr` of a slot no one else owns now.
    pub(crate) unsafe fn take(at: SlotAddr) -> Result<StackSlot, GuardError> {
        if at.is_taken() {
            return Ok(StackSlot { at });
        }
        let lo = pool::acquire(at.class())?;
        Ok(StackSlot {
            at: SlotAddr::new(lo, at.class()),
        })
    }

    /// Gives up the slot without freeing it: `take` makes it a `StackSlot` again.
    pub(crate) fn into_addr(self) -> SlotAddr {
        std::mem::ManuallyDrop::new(self).at
    }

    pub(crate) fn addr(&self) -> SlotAddr {
        self.at
    }

    pub(crate) fn lo(&self) -> usize {
        self.at.lo()
    }

    pub(crate) fn hi(&self) -> usize {
        self.at.hi()
    }

    /// Records the goroutine that owns this slot, and the tag of the M it is bound to, in the
    /// header.
    pub(crate) fn set_owner(&self, g: usize, tag: usize) {
        header_word(self.hi(), 2).store(0, std::sync::atomic::Ordering::Relaxed);
        header_word(self.hi(), 3).store(0, std::sync::atomic::Ordering::Relaxed);
        // Taken by a goroutine that is about to run on it (before the owner is published).
        header_word(self.hi(), 4).store(1, std::sync::atomic::Ordering::Relaxed);
        set_owner(self.hi(), g, tag);
    }
}

fn set_owner(hi: usize, g: usize, tag: usize) {
    use std::sync::atomic::Ordering::Release;
    if g == 0 {
        header_word(hi, 0).store(0, Release);
        header_word(hi, 1).store(0, Release);
    } else {
        header_word(hi, 1).store(tag, Release);
        header_word(hi, 0).store(g, Release);
    }
}

/// Clears the owner of the slot (a goroutine leaked with its slot).
pub(crate) fn clear_owner(slot: SlotAddr) {
    set_owner(slot.hi(), 0, 0);
}

/// Records a new M tag for the owner `g` of `slot` (a goroutine that moved to that M).
pub(crate) fn set_owner_tag(slot: SlotAddr, g: usize, tag: usize) {
    set_owner(slot.hi(), g, tag);
}

/// Calls `f` with the owner recorded in every carved slot whose header carries `tag` (the M
/// the goroutine is bound to, `M::tag`). Slots with other tags may change owner meanwhile:
/// their headers are only compared, as atomics. The caller must make sure the owners tagged `tag`
/// do not change meanwhile (it is that M, which alone finishes them).
pub(crate) fn for_each_owner(tag: usize, mut f: impl FnMut(usize)) {
    for_each_resident_slot(|_, hi| {
        // The tag first: once it is ours, the owner cannot change under us.
        if header_word(hi, 1).load(std::sync::atomic::Ordering::Acquire) != tag {
            return;
        }
        let g = header_word(hi, 0).load(std::sync::atomic::Ordering::Acquire);
        if g != 0 {
            f(g);
        }
    });
}

/// Calls `f(lo, hi, owner)` for every carved slot with an owner, whatever M it is bound to.
/// The owners may change meanwhile (the caller deals with that: `crate::stackscan`).
///
/// It reads every carved slot's header, without `mincore`: the collector does this every
/// cycle, and `mincore` over the carved range (the pool carves ahead: 4,096 slots are 1 GiB of
/// address space) took 0.5 ms a cycle with one goroutine alive, a third of a small cycle. A
/// freed slot keeps its top page (`pool.rs`), so the loads hit resident pages; one whose page
/// was given back maps the shared zero page, once.
pub(crate) fn for_each_owned_slot(mut f: impl FnMut(usize, usize, usize)) {
    for (lo, hi, size) in pool::carved_slot_ranges() {
        let mut a = lo;
        while a < hi {
            let slot_hi = a + size;
            let g = header_word(slot_hi, 0).load(std::sync::atomic::Ordering::Acquire);
            if g != 0 {
                f(a, slot_hi, g);
            }
            a += size;
        }
    }
}

/// Calls `f(lo, hi)` for every carved slot whose top page is resident: one `mincore` per
/// chunk of up to 4,096 slots. An owned slot's header was written, so its page is resident;
/// reading the others' headers would fault zero pages in for nothing.
fn for_each_resident_slot(mut f: impl FnMut(usize, usize)) {
    let mut map = Vec::new();
    for (lo, hi, size) in pool::carved_slot_ranges() {
        let mut a = lo;
        while a < hi {
            let n = ((hi - a) / size).min(4096);
            if madvise::resident_map(a, a + n * size, &mut map) {
                for i in 0..n {
                    if map[(i + 1) * size / PAGE - 1] & 1 != 0 {
                        let slot_hi = a + (i + 1) * size;
                        f(slot_hi - size, slot_hi);
                    }
                }
            }
            a += n * size;
        }
    }
}

/// A slot's bounds, copied out of the slot for those who inspect a stack they do not own
/// (the fault handler, the collector).
#[derive(Clone, Copy)]
pub(crate) struct SlotView {
    pub(crate) lo: usize,
    pub(crate) size: usize,
}

impl SlotView {
    pub(crate) fn hi(&self) -> usize {
        self.lo + self.size
    }

    /// Resident bytes of this slot (`mincore`).
    pub(crate) fn committed_bytes(&self) -> usize {
        madvise::resident_bytes(self.lo, self.hi())
    }

    /// Releases the pages between the guard and `sp - RED_ZONE` (rounded down to a page).
    /// Returns the length of the range released.
    ///
    /// # Safety
    /// The coroutine on this slot must be suspended with its stack pointer at or above `sp`,
    /// and must stay suspended until this returns: nothing live may be below `sp - RED_ZONE`.
    pub(crate) unsafe fn release_below(&self, sp: usize) -> usize {
        let top = sp.saturating_sub(RED_ZONE) & !(PAGE - 1);
        let bottom = self.lo + PAGE;
        // A pointer outside the stack part of the slot was recorded on another stack (a
        // coroutine of the program's own): the goroutine's own frames in this slot may reach
        // down to anywhere, so release nothing.
        if top <= bottom || sp < bottom || sp >= stack_top(self.hi()) {
            return 0;
        }
        let range = [libc::iovec {
            iov_base: bottom as *mut libc::c_void,
            iov_len: top - bottom,
        }];
        // SAFETY: the caller guarantees the range holds nothing live and no one runs on it.
        unsafe { madvise::release(&range) };
        top - bottom
    }
}

impl Drop for StackSlot {
    fn drop(&mut self) {
        set_owner(self.hi(), 0, 0);
        pool::free(self.at.class(), self.lo());
    }
}

// SAFETY: `base` (below the 16-byte header, `stack_top`, so inside the top page) and `limit` are 16-byte aligned (so `STACK_ALIGNMENT`-aligned), `limit`
// includes the guard page, and the range is mapped read-write (bar the guard) for as long as
// the slot is owned: reservations are never unmapped and a slot is owned by one coroutine at a
// time.
unsafe impl Stack for StackSlot {
    fn base(&self) -> StackPointer {
        NonZeroUsize::new(stack_top(self.hi())).expect("slot address is non-zero")
    }
    fn limit(&self) -> StackPointer {
        NonZeroUsize::new(self.lo()).expect("slot address is non-zero")
    }
}

/// Process-wide stack statistics (see [`stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Reservations mapped (each one mapping, never unmapped).
    pub reservations: usize,
    /// Address space reserved for stacks, in bytes.
    pub reserved_bytes: usize,
    /// Slots carved from the reservations so far (in use or free).
    pub slots: usize,
    /// Slots owned by goroutines now (counted per thread and published every 64 slots, so it
    /// may lag by that much per thread).
    pub slots_in_use: usize,
    /// Address space of the slots in use, in bytes (same lag).
    pub in_use_bytes: usize,
    /// Resident (committed) bytes across all slots, in use or cached, from `mincore`.
    pub committed_bytes: usize,
}

/// Slots goroutines own now and their address space in bytes: `stats()` without the costly
/// resident count (the collector's pacer reads it every cycle). Same lag as `stats()`.
pub fn in_use() -> (usize, usize) {
    (
        pool::SLOTS_IN_USE
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(0) as usize,
        pool::BYTES_IN_USE
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(0) as usize,
    )
}

/// Current statistics. Counting committed bytes walks every carved slot with `mincore`, so this
/// costs about a millisecond per 100,000 slots: call it for monitoring, not in a hot loop.
pub fn stats() -> StackStats {
    let (reservations, reserved_bytes) = reservation::totals();
    let committed_bytes = pool::carved_ranges()
        .into_iter()
        .map(|(lo, hi)| madvise::resident_bytes(lo, hi))
        .sum();
    StackStats {
        reservations,
        reserved_bytes,
        slots: pool::SLOTS_CARVED.load(std::sync::atomic::Ordering::Relaxed),
        slots_in_use: pool::SLOTS_IN_USE
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(0) as usize,
        in_use_bytes: pool::BYTES_IN_USE
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(0) as usize,
        committed_bytes,
    }
}

/// Gives back every committed page of every free slot (global pool and this thread's cache).
/// Returns the number of slots trimmed.
pub fn trim() -> usize {
    pool::trim()
}

pub use crate::g::{committed_bytes, release_below_sp};
