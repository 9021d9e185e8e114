//! Reservations: the large `MAP_NORESERVE` mappings that stack slots are carved from, and the
//! lock-free table of them that the fault handler reads.
//!
//! A reservation is one anonymous private mapping of `slots_per_reservation(slot_size) *
//! slot_size` bytes, mapped readable and writable but with `MAP_NORESERVE` (no commit charge) and
//! `MADV_NOHUGEPAGE` (a stack touched one page at a time must not be backed by 2 MiB pages).
//! Nothing is ever unmapped: slots are reused, and their pages are given back with
//! `MADV_DONTNEED`, so an address that was once a stack slot stays one for the life of the
//! process. That is what lets the fault handler read the table without locks.
//!
//! Invariants:
//! - `REGIONS[i]` for `i < REGION_COUNT` is fully written before `REGION_COUNT` is raised
//!   (release store; the handler loads with acquire).
//! - Every reservation holds slots of one size, and its base is page aligned; slot `k` covers
//!   `[base + k*size, base + (k+1)*size)`.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Upper bound on reservations in one process. At 256 KiB slots a reservation holds 65,536
/// slots (16 GiB of address space), so this is 268 M slots: far past any memory this runs in.
const MAX_REGIONS: usize = 4096;

/// Virtual bytes one reservation aims at. 16 GiB keeps a million 256 KiB goroutines in 16
/// mappings (may's two mappings per coroutine hit `vm.max_map_count` at 32,740) while leaving
/// the 128 TiB user address space plenty of room. Larger slot classes get at least 16 slots.
const RESERVATION_BYTES: usize = 16 << 30;

struct Region {
    base: AtomicUsize,
    len: AtomicUsize,
    slot_size: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_REGION: Region = Region {
    base: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    slot_size: AtomicUsize::new(0),
};

static REGIONS: [Region; MAX_REGIONS] = [EMPTY_REGION; MAX_REGIONS];
static REGION_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Serialises writers of `REGIONS` (readers are lock-free).
static REGION_WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One mapped reservation handed to a slot pool, which bump-allocates slots from it.
pub(crate) struct Reservation {
    pub(crate) base: usize,
    pub(crate) len: usize,
}

pub(crate) fn slots_per_reservation(slot_size: usize) -> usize {
    (RESERVATION_BYTES / slot_size).max(16)
}

/// Maps a new reservation for slots of `slot_size` bytes and publishes it to the fault handler.
pub(crate) fn reserve(slot_size: usize) -> io::Result<Reservation> {
    let len = slots_per_reservation(slot_size) * slot_size;
    let _guard = REGION_WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let idx = REGION_COUNT.load(Ordering::Relaxed);
    if idx == MAX_REGIONS {
        return Err(io::Error::other("goro: stack reservation table is full"));
    }
    // SAFETY: an anonymous private mapping at a kernel-chosen address aliases nothing; the
    // arguments are valid constants and the result is checked against MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `base..base+len` is the mapping just created; the advice only changes how the
    // kernel backs it. Failure (a kernel without THP) is harmless and ignored.
    unsafe { libc::madvise(base, len, libc::MADV_NOHUGEPAGE) };
    let r = &REGIONS[idx];
    // `len` last, with release: `find_slot`'s fast path reads region 0 without the count.
    r.base.store(base as usize, Ordering::Relaxed);
    r.slot_size.store(slot_size, Ordering::Relaxed);
    r.len.store(len, Ordering::Release);
    REGION_COUNT.store(idx + 1, Ordering::Release);
    Ok(Reservation {
        base: base as usize,
        len,
    })
}

/// Where an address falls among the stack slots: `(slot_base, slot_size)`.
///
/// Async-signal-safe: atomics only, no allocation, no locks. Slot sizes are powers of two,
/// so the slot is found with a mask (the collector's stack roots call this on every root).
#[inline]
pub(crate) fn find_slot(addr: usize) -> Option<(usize, usize)> {
    // Region 0 first, without the count (a program with one stack size has one region for
    // its first 65,536 goroutines): its `len` is stored last, with release.
    let r = &REGIONS[0];
    let len = r.len.load(Ordering::Acquire);
    let base = r.base.load(Ordering::Relaxed);
    if addr.wrapping_sub(base) < len {
        let size = r.slot_size.load(Ordering::Relaxed);
        debug_assert!(size.is_power_of_two());
        return Some((base + ((addr - base) & !(size - 1)), size));
    }
    find_slot_rest(addr)
}

fn find_slot_rest(addr: usize) -> Option<(usize, usize)> {
    let n = REGION_COUNT.load(Ordering::Acquire);
    for r in REGIONS[..n].iter().skip(1) {
        let base = r.base.load(Ordering::Relaxed);
        let len = r.len.load(Ordering::Relaxed);
        if addr >= base && addr - base < len {
            let size = r.slot_size.load(Ordering::Relaxed);
            debug_assert!(size.is_power_of_two());
            return Some((base + ((addr - base) & !(size - 1)), size));
        }
    }
    None
}

/// `(reservations, reserved bytes)` for statistics.
pub(crate) fn totals() -> (usize, usize) {
    let n = REGION_COUNT.load(Ordering::Acquire);
    let bytes = REGIONS[..n]
        .iter()
        .map(|r| r.len.load(Ordering::Relaxed))
        .sum();
    (n, bytes)
}

/// Calls `f(base, len, slot_size)` for every reservation.
pub(crate) fn for_each(mut f: impl FnMut(usize, usize, usize)) {
    let n = REGION_COUNT.load(Ordering::Acquire);
    for r in &REGIONS[..n] {
        f(
            r.base.load(Ordering::Relaxed),
            r.len.load(Ordering::Relaxed),
            r.slot_size.load(Ordering::Relaxed),
        );
    }
}
