//! The asymmetric fence: a free `light()` on hot paths, a costly `heavy()` on rare ones.
//!
//! Some protocols are Dekker's: side A stores X then loads Y, side B stores Y then loads X, and
//! at least one of them must see the other's store. On x86-64 that needs a full fence on *both*
//! sides (`mfence`, 20–40 cycles), because each store may wait in its core's store buffer past
//! the following load. When one side runs millions of times a second (a goroutine's exit, a
//! stack root's creation) and the other a few times per collection, the fence moves: the hot
//! side keeps only a compiler fence, and the rare side calls `membarrier(2)`
//! (`MEMBARRIER_CMD_PRIVATE_EXPEDITED`), which makes every running thread of the process execute
//! a full barrier before it returns (a thread that is not running passed one when it was
//! switched out). The argument, for a hot side H (`store X; light(); load Y`) and the rare side
//! R (`store Y; heavy(); load X`): H's barrier point from `heavy` falls either before its load
//! of Y (then the load sees R's store, which preceded the call) or after it (then H's store of
//! X, earlier in program order, is visible to R's load after the call). So not both miss.
//!
//! `init` registers (`MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`), or picks
//! `MEMBARRIER_CMD_GLOBAL` on kernels before 4.14 (an RCU grace period: slower, same
//! guarantee); without `membarrier` at all (before 4.3), `heavy` changes the protection of a
//! page it has touched, which makes the kernel flush that page from the TLB of every CPU
//! running a thread of the process, by an interrupt that serialises each of them: the trick
//! .NET's `FlushProcessWriteBuffers` and folly's `asymmetricHeavyBarrier` use. `light` stays a
//! compiler fence in every case (one predictable nothing on the hot paths).
//!
//! Users: the collector's stack visit (`crate::stackscan`) against goroutine exits and stack
//! root creation.

use std::sync::atomic::{compiler_fence, fence, AtomicU8, Ordering};

const CMD_QUERY: libc::c_int = 0;
const CMD_GLOBAL: libc::c_int = 1;
const CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// 0: not set up; 1: private expedited; 2: global; 3: the mprotect flush.
static MODE: AtomicU8 = AtomicU8::new(0);

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_uint,
            0 as libc::c_int,
        )
    }
}

/// Chooses the mechanism (cheap after the first call).
pub(crate) fn init() {
    if MODE.load(Ordering::Acquire) != 0 {
        return;
    }
    let q = membarrier(CMD_QUERY);
    let m = if q >= 0
        && q & CMD_PRIVATE_EXPEDITED as libc::c_long != 0
        && membarrier(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    {
        1
    } else if q >= 0 && q & CMD_GLOBAL as libc::c_long != 0 {
        2
    } else {
        3
    };
    MODE.store(m, Ordering::Release);
}

/// The hot side's fence: only the compiler's (the rare side makes it a full one).
#[inline]
pub fn light() {
    compiler_fence(Ordering::SeqCst);
}

/// The rare side's fence: returns once every thread of the process has passed a full barrier.
pub fn heavy() {
    init();
    fence(Ordering::SeqCst);
    let ok = match MODE.load(Ordering::Acquire) {
        1 => membarrier(CMD_PRIVATE_EXPEDITED) == 0 || membarrier(CMD_GLOBAL) == 0,
        2 => membarrier(CMD_GLOBAL) == 0,
        _ => flush_by_mprotect(),
    };
    if !ok {
        // The kernel accepted the command at `init` and refuses it now: no protocol built on
        // this fence can be kept, and going on could free memory still in use.
        eprintln!("fatal error: goro: the process-wide memory barrier failed");
        std::process::abort();
    }
    fence(Ordering::SeqCst);
}

/// The TLB-shootdown barrier, for kernels without `membarrier`.
fn flush_by_mprotect() -> bool {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let page = *PAGE.get_or_init(|| {
        // SAFETY: a fresh private anonymous page, never unmapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            0
        } else {
            p as usize
        }
    });
    if page == 0 {
        return false;
    }
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the page is ours; it is made present (written) then its protection changes,
    // which flushes it from every CPU that may hold it, by interrupt.
    unsafe {
        std::ptr::write_volatile(page as *mut u8, 1);
        libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_READ) == 0
            && libc::mprotect(
                page as *mut libc::c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
            ) == 0
    }
}
