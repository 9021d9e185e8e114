//! The slot pool: where stack slots come from and go back to.
//!
//! Slots come in power-of-two size classes from 16 KiB to 1 GiB (the guard page is part of the
//! slot). Each class has one global [`ClassPool`] and every thread that spawns or frees
//! goroutines has a small [`ThreadCache`] of the class in front of it:
//!
//! ```text
//!   acquire: thread cache ─empty─▶ warm ─▶ dirty ─▶ ready (prepared) ─▶ cold ─▶ carve a batch
//!   free:    thread cache ─full─▶ half to dirty ─(worker: deep pages released)─▶ warm
//!            warm beyond its bound ─▶ top page released too ─▶ cold
//! ```
//!
//! Memory policy ("release when cached beyond a bound"):
//! - A slot in a thread cache keeps every page it committed: it is the hot path (spawn+join,
//!   a goroutine replaced by another) and costs nothing to reuse.
//! - A slot leaving a thread cache goes on its class's `dirty` list, with no system call. The
//!   stack worker ([`super::worker`]) later releases the pages below each dirty slot's top page
//!   with one batched `MADV_DONTNEED` and moves it to the warm list. That release costs ~0.4 µs a
//!   slot even when there is nothing to release (the kernel walks the slot's page-table
//!   entries), so it runs on the worker's core, not on the thread finishing goroutines; asking
//!   `mincore` first costs the same walk and was rejected.
//! - The top page stays: reusing a slot whose top page is committed costs no page fault, and
//!   page faults (~2 µs here, mostly zeroing) are the whole cost of spawning on a fresh slot.
//! - The warm list holds at most `max(4096, peak slots in use)` slots. Past that, the oldest
//!   warm slots are released completely and become cold. So a program that once ran a million
//!   goroutines keeps one page per slot of that peak committed for reuse (like Go's stack pool
//!   keeps freed spans until its scavenger runs); [`trim`] gives all of it back, and the garbage
//!   collector's scavenger will call it.
//!
//! Carving: a class bump-allocates slots from its current reservation in batches of up to 1,024
//! (one `process_madvise` guard installation per batch), parking the batch on the cold list.
//! Slots are never unmapped. Under sustained spawning the worker also *prepares* slots (guard
//! installed, top page committed) on the `ready` list, so both cores do the page work.
//!
//! Lock order: a class lock is never held while taking another class lock or the worker's.

use super::madvise::{self, GuardError, PAGE};
use super::reservation;
use super::worker;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Mutex;

pub(crate) const MIN_SLOT: usize = 16 << 10;
pub(crate) const MAX_SLOT: usize = 1 << 30;
pub(crate) const NUM_CLASSES: usize = 17; // 2^14 ..= 2^30

/// Slots a thread cache holds per class before half of them go to the global list. 256 slots
/// is 1 MiB of top pages: enough that spawn/exit churn never touches the global lock, small
/// enough that an idle thread does not sit on much memory.
const THREAD_CACHE_CAP: usize = 256;
/// Slots moved between a thread cache and the global list at once.
const TRANSFER: usize = 128;
/// Floor of the global warm list bound, in slots.
const WARM_FLOOR: usize = 4096;

/// The size class for a requested stack size (rounded up to a power of two, clamped).
pub(crate) fn class_of(stack_size: usize) -> u8 {
    let size = stack_size.clamp(MIN_SLOT, MAX_SLOT).next_power_of_two();
    (size.trailing_zeros() - MIN_SLOT.trailing_zeros()) as u8
}

pub(crate) fn class_size(class: u8) -> usize {
    MIN_SLOT << class
}

pub(super) struct ClassState {
    /// Slots whose top page may be committed (deep pages released). Newest at the back.
    pub(super) warm: VecDeque<usize>,
    /// Freed slots whose deep pages may still be committed, waiting for the worker's scrub.
    pub(super) dirty: Vec<usize>,
    /// Fresh slots whose guard is installed and top page committed by the worker.
    pub(super) ready: Vec<usize>,
    /// Slots with no committed pages: fresh from carving, or released past the bound.
    pub(super) cold: Vec<usize>,
    /// Bump pointer into the current reservation, and its end.
    bump: usize,
    end: usize,
}

struct ClassPool {
    state: Mutex<ClassState>,
}

static POOLS: [ClassPool; NUM_CLASSES] = [const {
    ClassPool {
        state: Mutex::new(ClassState {
            warm: VecDeque::new(),
            dirty: Vec::new(),
            ready: Vec::new(),
            cold: Vec::new(),
            bump: 0,
            end: 0,
        }),
    }
}; NUM_CLASSES];

/// Counters for [`super::StackStats`]. Relaxed: they are statistics, read without a snapshot.
/// The in-use counts are kept per thread and added here every `FLUSH` slots (and when a thread
/// exits), so spawn and exit do no atomic read-modify-write on them; they lag by at most
/// `FLUSH` slots per thread.
pub(crate) static SLOTS_CARVED: AtomicUsize = AtomicUsize::new(0);
pub(crate) static SLOTS_IN_USE: AtomicIsize = AtomicIsize::new(0);
pub(crate) static BYTES_IN_USE: AtomicIsize = AtomicIsize::new(0);
static PEAK_IN_USE: AtomicUsize = AtomicUsize::new(0);
const FLUSH: isize = 64;

fn add_in_use(slots: isize, bytes: isize) {
    let n = SLOTS_IN_USE.fetch_add(slots, Ordering::Relaxed) + slots;
    BYTES_IN_USE.fetch_add(bytes, Ordering::Relaxed);
    if n > 0 {
        PEAK_IN_USE.fetch_max(n as usize, Ordering::Relaxed);
    }
}

pub(super) fn lock(class: u8) -> std::sync::MutexGuard<'static, ClassState> {
    POOLS[class as usize]
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Claims the address range of up to `max` fresh slots from the class's reservation (reserving
/// a new one if needed). Returns the slots' base addresses, lowest first.
pub(super) fn claim(class: u8, st: &mut ClassState, max: usize) -> Result<Vec<usize>, GuardError> {
    let size = class_size(class);
    if st.bump == st.end {
        let r = reservation::reserve(size).map_err(GuardError::Os)?;
        st.bump = r.base;
        st.end = r.base + r.len;
    }
    let n = ((st.end - st.bump) / size).min(max);
    let slots: Vec<usize> = (0..n).map(|i| st.bump + i * size).collect();
    st.bump += n * size;
    Ok(slots)
}

/// Carves a batch of fresh slots into `st.cold` (guards installed, nothing committed).
fn carve(class: u8, st: &mut ClassState) -> Result<(), GuardError> {
    let slots = claim(class, st, madvise::BATCH)?;
    madvise::install_guards(&slots)?;
    SLOTS_CARVED.fetch_add(slots.len(), Ordering::Relaxed);
    // Popped from the back: hand out the lowest addresses first.
    st.cold.extend(slots.into_iter().rev());
    Ok(())
}

/// Takes up to `want` slots from the global pool into `out`.
fn take_global(class: u8, want: usize, out: &mut Vec<usize>) -> Result<(), GuardError> {
    let mut st = lock(class);
    while out.len() < want {
        // Dirty slots first, newest first: reusing a slot before the worker scrubs it saves
        // the scrub (a `MADV_DONTNEED` costs ~0.4 µs even on pages never touched), and its
        // pages are the likeliest to be in cache. When one thread frees what another spawns
        // (a fan-out across Ps), slots then flow between them without the worker.
        if let Some(lo) = st.dirty.pop() {
            out.push(lo);
        } else if let Some(lo) = st.warm.pop_back() {
            out.push(lo);
        } else if let Some(lo) = st.ready.pop() {
            out.push(lo);
        } else if let Some(lo) = st.cold.pop() {
            out.push(lo);
        } else if out.is_empty() {
            carve(class, &mut st)?;
        } else {
            break;
        }
    }
    // Sustained demand only: the class has no warm slots, has used up most of the batch it
    // carved inline, and its prepared stock is low. One spawn of an unusual stack size carves
    // one batch (address space and guards, nothing committed) and prepares nothing.
    let low = st.warm.is_empty()
        && st.dirty.is_empty()
        && st.cold.len() < COLD_LOW
        && st.ready.len() < worker::READY_LOW;
    drop(st);
    if low {
        worker::request(worker::Job::Prepare, class);
    }
    Ok(())
}

/// Unprepared slots left below which a class counts as spawning faster than it frees.
const COLD_LOW: usize = 256;

/// Returns slots to the global pool's dirty list; the worker scrubs them (or, if there is no
/// worker thread, this thread does, at once).
fn give_global(class: u8, slots: &[usize]) {
    let mut st = lock(class);
    st.dirty.extend_from_slice(slots);
    let pending = st.dirty.len();
    drop(st);
    if pending >= worker::SCRUB_BATCH && !worker::request(worker::Job::Scrub, class) {
        worker::scrub(class);
    }
}

/// Moves scrubbed slots (deep pages released) to the warm list, and releases the top pages of
/// the oldest warm slots beyond the bound. Runs on the worker (or a thread without one).
pub(super) fn settle_warm(class: u8, scrubbed: Vec<usize>) {
    let bound = WARM_FLOOR.max(PEAK_IN_USE.load(Ordering::Relaxed));
    let mut st = lock(class);
    st.warm.extend(scrubbed);
    if st.warm.len() > bound {
        let excess = st.warm.len() - bound;
        let old: Vec<usize> = st.warm.drain(..excess).collect();
        drop(st);
        // SAFETY: these slots are free and were taken off every list above.
        unsafe { make_cold(class, old) };
    }
}

/// Releases the top pages of free slots (the only pages they still have committed) and puts
/// them on the class's cold list, lowest address handed out first.
///
/// # Safety
/// The slots are free and on no list: nothing runs on them or points into them, and no one
/// can hand them out until this publishes them.
pub(super) unsafe fn make_cold(class: u8, mut slots: Vec<usize>) {
    let size = class_size(class);
    let tops: Vec<libc::iovec> = slots
        .iter()
        .map(|&lo| libc::iovec {
            iov_base: (lo + size - PAGE) as *mut libc::c_void,
            iov_len: PAGE,
        })
        .collect();
    // SAFETY: the caller guarantees no one uses these slots; the ranges are their top pages,
    // inside the slots.
    unsafe { madvise::release(&tops) };
    // Popped from the back.
    slots.sort_unstable_by(|a, b| b.cmp(a));
    lock(class).cold.extend(slots);
}

/// A thread's cache of free slots, one list per class. Returned to the global pool when the
/// thread exits.
struct ThreadCache {
    classes: [Vec<usize>; NUM_CLASSES],
    /// Slots and bytes acquired minus freed by this thread since the last flush.
    delta_slots: isize,
    delta_bytes: isize,
}

impl ThreadCache {
    fn account(&mut self, slots: isize, bytes: isize) {
        self.delta_slots += slots;
        self.delta_bytes += bytes;
        if self.delta_slots.abs() >= FLUSH {
            add_in_use(self.delta_slots, self.delta_bytes);
            self.delta_slots = 0;
            self.delta_bytes = 0;
        }
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        add_in_use(self.delta_slots, self.delta_bytes);
        for (class, list) in self.classes.iter_mut().enumerate() {
            if !list.is_empty() {
                give_global(class as u8, list);
                list.clear();
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = const {
        RefCell::new(ThreadCache {
            classes: [const { Vec::new() }; NUM_CLASSES],
            delta_slots: 0,
            delta_bytes: 0,
        })
    };
}

/// Runs `f` on this thread's cache. `#[inline(never)]`: goroutines migrate between threads, and
/// the thread-local's address must be computed afresh on every call (see `crate::tls`).
#[inline(never)]
fn with_cache<R>(f: impl FnOnce(&mut ThreadCache) -> R) -> Option<R> {
    CACHE.try_with(|c| f(&mut c.borrow_mut())).ok()
}

/// Takes a free slot of `class` (its base address).
pub(crate) fn acquire(class: u8) -> Result<usize, GuardError> {
    let size = class_size(class) as isize;
    let fast = with_cache(|c| {
        c.account(1, size);
        c.classes[class as usize].pop()
    });
    if fast.is_none() {
        add_in_use(1, size); // thread exiting: no cache to account in
    }
    let lo = match fast.flatten() {
        Some(lo) => lo,
        None => {
            let mut batch = Vec::with_capacity(TRANSFER / 2);
            take_global(class, TRANSFER / 2, &mut batch)?;
            let lo = batch
                .pop()
                .expect("take_global returns at least one slot or an error");
            if !batch.is_empty() {
                let rest = with_cache(|c| c.classes[class as usize].append(&mut batch));
                if rest.is_none() {
                    give_global(class, &batch);
                }
            }
            lo
        }
    };
    Ok(lo)
}

/// Gives a slot back. Its coroutine must have finished: nothing may point into it any more.
pub(crate) fn free(class: u8, lo: usize) {
    let size = class_size(class) as isize;
    let overflow = with_cache(|c| {
        c.account(-1, -size);
        let list = &mut c.classes[class as usize];
        list.push(lo);
        if list.len() > THREAD_CACHE_CAP {
            // The oldest half goes: the newest slots are the likeliest to be warm in cache.
            Some(list.drain(..TRANSFER).collect::<Vec<_>>())
        } else {
            None
        }
    });
    match overflow {
        Some(Some(batch)) => give_global(class, &batch),
        Some(None) => {}
        None => {
            // Thread exiting: account globally, straight to the global list.
            add_in_use(-1, -size);
            give_global(class, &[lo]);
        }
    }
}

/// Releases every page of every free slot, in the global pool and this thread's cache.
pub(crate) fn trim() -> usize {
    let mut released = 0;
    with_cache(|c| {
        for (class, list) in c.classes.iter_mut().enumerate() {
            let batch: Vec<usize> = std::mem::take(list);
            if !batch.is_empty() {
                give_global(class as u8, &batch);
            }
        }
    });
    for class in 0..NUM_CLASSES as u8 {
        let size = class_size(class);
        let mut st = lock(class);
        let mut warm: Vec<usize> = st.warm.drain(..).collect();
        warm.append(&mut st.dirty);
        warm.append(&mut st.ready);
        drop(st);
        let ranges: Vec<libc::iovec> = warm
            .iter()
            .map(|&lo| libc::iovec {
                iov_base: (lo + PAGE) as *mut libc::c_void,
                iov_len: size - PAGE,
            })
            .collect();
        // SAFETY: free slots taken off every list; nothing runs on them or points into them,
        // and no one can hand them out until they are published below. Guard excluded.
        unsafe { madvise::release(&ranges) };
        released += warm.len();
        lock(class).cold.extend(warm);
    }
    released
}

/// Carved address ranges of every class, for resident-memory accounting.
pub(crate) fn carved_ranges() -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    reservation::for_each(|base, len, _| {
        out.push((base, base + len));
    });
    out
}

/// Carved slots of every class as `(first slot, end of carving, slot size)`: whole
/// reservations, except each class's current one, carved up to its bump pointer.
pub(crate) fn carved_slot_ranges() -> Vec<(usize, usize, usize)> {
    let mut regions = Vec::new();
    reservation::for_each(|base, len, size| regions.push((base, len, size)));
    regions
        .into_iter()
        .map(|(base, len, size)| {
            let st = lock(class_of(size));
            let end = if st.bump >= base && st.bump < base + len {
                st.bump
            } else {
                base + len
            };
            (base, end, size)
        })
        .collect()
}
