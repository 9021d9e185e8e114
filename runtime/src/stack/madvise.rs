//! Page-level operations on batches of slots: guard installation and page release.
//!
//! Guards, best first (the mode is probed once per process and kept):
//! 1. `process_madvise(self, iovecs, MADV_GUARD_INSTALL)`: up to 1,024 slots per system call,
//!    ~0.5 µs a slot on Linux 6.18. Guard markers live in the page tables, so the mapping is not
//!    split: a million slots stay a handful of mappings.
//! 2. `madvise(MADV_GUARD_INSTALL)` one slot at a time (~1 µs), where `process_madvise` refuses
//!    the advice (kernels before 6.13 allow only a few advice values remotely).
//! 3. `mprotect(PROT_NONE)` on the guard page (kernels before 6.13). This splits the mapping in
//!    three per slot, so `vm.max_map_count` (65,530 by default) caps the slot count near 21,000
//!    (guards stop 2,048 mappings short of it, so the rest of the process can still map memory);
//!    when the kernel runs out of mappings, spawning fails with [`GuardError::OutOfMappings`],
//!    whose message says what to do. Never a crash.
//!
//! `GORO_STACK_GUARDS=madvise|mprotect` forces a mode (to see how goro behaves on an older
//! kernel); anything else, or unset, probes.
//!
//! Releasing pages uses `MADV_DONTNEED`, batched through `process_madvise` where allowed. Guard
//! markers survive `MADV_DONTNEED`, and the ranges released never include the guard page anyway.
//!
//! Rejected: populating the top page of each new slot with `MADV_POPULATE_WRITE` in the same
//! batch. Measured here it saves nothing over the first-touch fault the coroutine's initial
//! frame takes anyway (page zeroing dominates both), and it commits memory before use.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

pub(crate) const PAGE: usize = 4096;

const MADV_GUARD_INSTALL: libc::c_int = 102;
/// Pidfd meaning "the calling process" (Linux 6.14+); `pidfd_open(getpid())` where missing.
const PIDFD_SELF_PROCESS: libc::c_int = -10001;
/// `IOV_MAX` on Linux.
pub(crate) const BATCH: usize = 1024;

const MODE_UNKNOWN: u8 = 0;
const MODE_PROCESS_MADVISE: u8 = 1;
const MODE_MADVISE: u8 = 2;
const MODE_MPROTECT: u8 = 3;

static GUARD_MODE: AtomicU8 = AtomicU8::new(MODE_UNKNOWN);
/// Whether `process_madvise` takes `MADV_DONTNEED` for this process: 0 unknown, 1 yes, 2 no.
static DONTNEED_BATCH: AtomicU8 = AtomicU8::new(0);

/// Why guard pages could not be installed.
#[derive(Debug)]
pub enum GuardError {
    /// The kernel ran out of memory mappings (`mprotect` guards split the mapping per slot).
    OutOfMappings,
    /// Any other failure, with the OS error.
    Os(std::io::Error),
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::OutOfMappings => write!(
                f,
                "out of memory mappings for goroutine stack guard pages: this kernel lacks \
                 MADV_GUARD_INSTALL (Linux >= 6.13), so each stack needs its own mappings; \
                 raise `sysctl vm.max_map_count` or run on a newer kernel"
            ),
            GuardError::Os(e) => write!(f, "installing goroutine stack guard pages failed: {e}"),
        }
    }
}

impl std::error::Error for GuardError {}

fn pidfd_self() -> libc::c_int {
    static FD: std::sync::OnceLock<libc::c_int> = std::sync::OnceLock::new();
    *FD.get_or_init(|| {
        // SAFETY: pidfd_open(2) with our own pid and no flags only creates a descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if fd >= 0 {
            fd as libc::c_int
        } else {
            PIDFD_SELF_PROCESS
        }
    })
}

/// Applies `advice` to every `(addr, len)` range with as few `process_madvise` calls as the
/// kernel allows. Returns false if the kernel refused the advice outright (nothing applied).
///
/// # Safety
/// Every range must lie inside a stack reservation and be one the caller may change: no live
/// data may be in it (guard pages of fresh slots, or pages below a stack's live part).
unsafe fn process_madvise(ranges: &[libc::iovec], advice: libc::c_int) -> std::io::Result<bool> {
    let mut done = 0;
    while done < ranges.len() {
        let chunk = &ranges[done..(done + BATCH).min(ranges.len())];
        // SAFETY: the iovecs describe ranges the caller vouches for; the kernel only reads the
        // iovec array, which lives for the duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd_self(),
                chunk.as_ptr(),
                chunk.len(),
                advice,
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINVAL | libc::ENOSYS | libc::EPERM | libc::EBADF) if done == 0 => {
                    Ok(false)
                }
                _ => Err(e),
            };
        }
        // A short count means a range failed part way; finish that chunk one range at a time.
        let mut advised = r as usize;
        let mut i = 0;
        while i < chunk.len() && advised >= chunk[i].iov_len {
            advised -= chunk[i].iov_len;
            i += 1;
        }
        for v in &chunk[i..] {
            // SAFETY: same ranges, same contract, one at a time.
            if unsafe { libc::madvise(v.iov_base, v.iov_len, advice) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        done += chunk.len();
    }
    Ok(true)
}

fn guard_iovecs(slots: &[usize]) -> Vec<libc::iovec> {
    slots
        .iter()
        .map(|&lo| libc::iovec {
            iov_base: lo as *mut libc::c_void,
            iov_len: PAGE,
        })
        .collect()
}

/// The mode forced by `GORO_STACK_GUARDS`, if any.
fn forced_mode() -> Option<u8> {
    match std::env::var("GORO_STACK_GUARDS").as_deref() {
        Ok("madvise") => Some(MODE_MADVISE),
        Ok("mprotect") => Some(MODE_MPROTECT),
        _ => None,
    }
}

/// Installs a guard on the lowest page of each fresh slot (`slots` are slot base addresses).
pub(crate) fn install_guards(slots: &[usize]) -> Result<(), GuardError> {
    if GUARD_MODE.load(Ordering::Relaxed) == MODE_UNKNOWN {
        if let Some(m) = forced_mode() {
            GUARD_MODE.store(m, Ordering::Relaxed);
        }
    }
    loop {
        match GUARD_MODE.load(Ordering::Relaxed) {
            MODE_UNKNOWN | MODE_PROCESS_MADVISE => {
                let iov = guard_iovecs(slots);
                // SAFETY: each range is the guard page of a fresh slot carved from a
                // reservation: nothing lives there.
                match unsafe { process_madvise(&iov, MADV_GUARD_INSTALL) } {
                    Ok(true) => {
                        GUARD_MODE.store(MODE_PROCESS_MADVISE, Ordering::Relaxed);
                        return Ok(());
                    }
                    Ok(false) => GUARD_MODE.store(MODE_MADVISE, Ordering::Relaxed),
                    Err(e) => return Err(GuardError::Os(e)),
                }
            }
            MODE_MADVISE => {
                for (i, &lo) in slots.iter().enumerate() {
                    // SAFETY: the guard page of a fresh slot; nothing lives there.
                    if unsafe { libc::madvise(lo as *mut libc::c_void, PAGE, MADV_GUARD_INSTALL) }
                        != 0
                    {
                        if i == 0 {
                            GUARD_MODE.store(MODE_MPROTECT, Ordering::Relaxed);
                            break;
                        }
                        return Err(GuardError::Os(std::io::Error::last_os_error()));
                    }
                    if i + 1 == slots.len() {
                        return Ok(());
                    }
                }
                if slots.is_empty() {
                    return Ok(());
                }
            }
            _ => {
                for &lo in slots {
                    // Leave the rest of the process room to map memory: taking the last
                    // mappings would make the next `malloc` that needs one (a new thread's
                    // arena, a thread stack) abort the process instead of failing a spawn.
                    if MPROTECT_GUARDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 2
                        + MAPPING_HEADROOM
                        >= max_map_count()
                    {
                        MPROTECT_GUARDS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(GuardError::OutOfMappings);
                    }
                    // SAFETY: the guard page of a fresh slot; nothing lives there, and making
                    // it inaccessible is the point.
                    if unsafe { libc::mprotect(lo as *mut libc::c_void, PAGE, libc::PROT_NONE) }
                        != 0
                    {
                        let e = std::io::Error::last_os_error();
                        return Err(if e.raw_os_error() == Some(libc::ENOMEM) {
                            GuardError::OutOfMappings
                        } else {
                            GuardError::Os(e)
                        });
                    }
                }
                return Ok(());
            }
        }
    }
}

/// Guards installed with `mprotect` (each splits a mapping in three: two more mappings).
/// Slots are never unmapped, so this only grows.
static MPROTECT_GUARDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Mappings `mprotect` guards leave to the rest of the process.
const MAPPING_HEADROOM: usize = 2048;

/// `vm.max_map_count`, read once (65,530, the kernel's default, if it cannot be read).
fn max_map_count() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65_530)
    })
}

/// Gives the pages of each `(addr, len)` range back to the kernel; they read as zero next time.
///
/// # Safety
/// No live data may be in any range, and no one may use the pages concurrently (see
/// [`process_madvise`]).
pub(crate) unsafe fn release(ranges: &[libc::iovec]) {
    if ranges.is_empty() {
        return;
    }
    if DONTNEED_BATCH.load(Ordering::Relaxed) != 2 {
        // SAFETY: forwarded caller contract.
        match unsafe { process_madvise(ranges, libc::MADV_DONTNEED) } {
            Ok(true) => {
                DONTNEED_BATCH.store(1, Ordering::Relaxed);
                return;
            }
            Ok(false) => DONTNEED_BATCH.store(2, Ordering::Relaxed),
            Err(_) => {} // fall through to the one-at-a-time path
        }
    }
    for v in ranges {
        // SAFETY: forwarded caller contract. MADV_DONTNEED on private anonymous memory cannot
        // fail for a valid range; a failure would only leave memory committed.
        unsafe { libc::madvise(v.iov_base, v.iov_len, libc::MADV_DONTNEED) };
    }
}

/// Bytes of `[lo, hi)` resident in memory (`mincore`).
pub(crate) fn resident_bytes(lo: usize, hi: usize) -> usize {
    let pages = (hi - lo) / PAGE;
    let mut total = 0;
    let mut vec = vec![0u8; pages.min(1 << 16)];
    let mut at = lo;
    while at < hi {
        let n = ((hi - at) / PAGE).min(vec.len());
        // SAFETY: `[at, at + n pages)` lies inside a live reservation (never unmapped) and
        // `vec` has room for `n` entries.
        let r = unsafe { libc::mincore(at as *mut libc::c_void, n * PAGE, vec.as_mut_ptr()) };
        if r == 0 {
            total += vec[..n].iter().filter(|&&b| b & 1 != 0).count() * PAGE;
        }
        at += n * PAGE;
    }
    total
}

/// Fills `vec` with one residency byte per page of `[lo, hi)` (bit 0 set: resident), one
/// `mincore` call. Returns false if the call failed.
pub(crate) fn resident_map(lo: usize, hi: usize, vec: &mut Vec<u8>) -> bool {
    let pages = (hi - lo) / PAGE;
    vec.clear();
    vec.resize(pages, 0);
    // SAFETY: `[lo, hi)` lies inside a live reservation (never unmapped) and `vec` has one
    // entry per page of it.
    unsafe { libc::mincore(lo as *mut libc::c_void, pages * PAGE, vec.as_mut_ptr()) == 0 }
}
