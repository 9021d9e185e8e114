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
//! `init` runs when a runtime starts, before any goroutine exists (every hot side runs on a
//! goroutine or an M): it registers (`MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`), or picks
//! `MEMBARRIER_CMD_GLOBAL` on kernels before 4.14 (an RCU grace period: slower, same
//! guarantee), or, without `membarrier` at all, turns `light()` into a real fence: decided
//! before any hot side runs, so no hot side ever skipped a fence it needed.
//!
//! Users: the collector's stack visit (`crate::stackscan`) against goroutine exits and stack
//! root creation.

use std::sync::atomic::{compiler_fence, fence, AtomicBool, AtomicU8, Ordering};

const CMD_QUERY: libc::c_int = 0;
const CMD_GLOBAL: libc::c_int = 1;
const CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// 0: not set up; 1: private expedited; 2: global; 3: none (the hot side fences).
static MODE: AtomicU8 = AtomicU8::new(0);
static HOT_FENCES: AtomicBool = AtomicBool::new(false);

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

/// Chooses the mechanism. Called by every runtime start (cheap after the first).
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
        HOT_FENCES.store(true, Ordering::SeqCst);
        3
    };
    MODE.store(m, Ordering::Release);
}

/// The hot side's fence: a compiler fence, or a full one on kernels without `membarrier`.
#[inline]
pub fn light() {
    if HOT_FENCES.load(Ordering::Relaxed) {
        fence(Ordering::SeqCst);
    } else {
        compiler_fence(Ordering::SeqCst);
    }
}

/// The rare side's fence: returns once every thread of the process has passed a full barrier.
pub fn heavy() {
    init();
    fence(Ordering::SeqCst);
    let ok = match MODE.load(Ordering::Acquire) {
        1 => membarrier(CMD_PRIVATE_EXPEDITED) == 0 || membarrier(CMD_GLOBAL) == 0,
        2 => membarrier(CMD_GLOBAL) == 0,
        _ => true, // the hot sides fence themselves
    };
    if !ok {
        // The kernel accepted the command at `init` and refuses it now: no protocol built on
        // this fence can be kept, and going on could free memory still in use.
        eprintln!("fatal error: goro: membarrier(2) failed after it was set up");
        std::process::abort();
    }
    fence(Ordering::SeqCst);
}
