//! The runtime's own thread-locals, read only through `#[inline(never)]` accessors.
//!
//! A goroutine can switch out on one OS thread and resume on another. LLVM may compute a
//! thread-local's address once and keep it across a call it believes returns on the same thread;
//! after a switch that address belongs to the old thread. Every read of runtime state therefore
//! goes through a function that is never inlined, so the address is computed on the thread that
//! makes the call. No accessor hands out a reference that outlives the call.

use crate::g::{GRef, G};
use crate::sched::{M, P};
use std::cell::Cell;
use std::ptr::{self, NonNull};

type GPtr = Option<NonNull<G>>;

thread_local! {
    /// The goroutine this thread is running, set by its M around each resume.
    static CURRENT_G: Cell<GPtr> = const { Cell::new(None) };
    /// The P this thread's M holds (null on threads that are not Ms, and on an M without a
    /// P: idle, or inside `goro::blocking`).
    static CURRENT_P: Cell<*const P> = const { Cell::new(ptr::null()) };
    /// This thread's M (null on threads that are not Ms).
    static CURRENT_M: Cell<*const M> = const { Cell::new(ptr::null()) };
}

/// The running goroutine, or `None` on a plain thread (or on an M between goroutines).
#[inline(never)]
pub(crate) fn current_g() -> Option<GRef> {
    let p = CURRENT_G.try_with(|c| c.get()).ok().flatten()?;
    // SAFETY: the pointer came from a GRef that the M keeps alive for as long as it is set
    // (it is cleared before the M drops its reference), so adding a reference is fine.
    Some(unsafe { GRef::clone_from_ptr(p) })
}

/// The running goroutine's pointer. Its own function, so the thread-local's address exists
/// only in this frame, which is gone before a caller switches out: a parked stack must not
/// hold it, or `sched/pin.rs` would pin the goroutine to its thread.
#[inline(never)]
fn current_g_ptr() -> GPtr {
    CURRENT_G.try_with(|c| c.get()).ok().flatten()
}

/// Unoptimised builds materialise a thread-local's address in the accessor's frame; that dead
/// frame's words can survive in unused slots of the frames that `f` then builds in the same
/// place before switching out. Overwriting the area first keeps parked stacks free of them
/// (optimised builds read the thread-local with one `fs`-relative load and need nothing).
#[cfg(debug_assertions)]
#[inline(never)]
fn scrub_below() {
    std::hint::black_box([0usize; 64]);
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn scrub_below() {}

/// Runs `f` with the running goroutine's cell without touching its reference count.
#[inline(never)]
pub(crate) fn with_current_g<R>(f: impl FnOnce(Option<&G>) -> R) -> R {
    let p = current_g_ptr();
    scrub_below();
    // SAFETY: the caller is this goroutine, and a G is freed only after its goroutine has
    // finished, which cannot happen inside this call. `f` may switch out (park, yield) and
    // resume later: meanwhile the scheduling reference is held by the G itself while parked,
    // by a run queue while runnable and by an M while running, so the reference stays valid.
    // The pointer was read before `f` runs, on the thread that runs the goroutine now.
    f(p.map(|p| unsafe { &*p.as_ptr() }))
}

#[inline(never)]
pub(crate) fn set_current_g(g: Option<&GRef>) {
    CURRENT_G.set(g.map(GRef::as_ptr));
}

/// The running goroutine's id for the fault handler (0 if none). Async-signal-safe: the
/// thread-local is const-initialised and has no destructor, so this is a plain TLS load, and
/// the G it points to is alive while it runs (its M holds the scheduling reference).
#[inline(never)]
pub(crate) fn current_goid() -> u64 {
    match CURRENT_G.try_with(|c| c.get()) {
        // SAFETY: see above: set only while the G runs on this thread, which is when a fault
        // on its stack can happen.
        Ok(Some(p)) => unsafe { (*p.as_ptr()).id },
        _ => 0,
    }
}

#[inline(never)]
pub(crate) fn current_p() -> *const P {
    CURRENT_P.try_with(|c| c.get()).unwrap_or(ptr::null())
}

#[inline(never)]
pub(crate) fn set_current_p(p: *const P) {
    let _ = CURRENT_P.try_with(|c| c.set(p));
}

/// This thread's M and the P it holds (either may be null), read together.
#[inline(never)]
pub(crate) fn current_mp() -> (*const M, *const P) {
    (
        CURRENT_M.try_with(|c| c.get()).unwrap_or(ptr::null()),
        CURRENT_P.try_with(|c| c.get()).unwrap_or(ptr::null()),
    )
}

#[inline(never)]
pub(crate) fn set_current_m(m: *const M) {
    let _ = CURRENT_M.try_with(|c| c.set(m));
}

/// Takes the running goroutine out of this thread's state (for `goro::blocking`, whose closure
/// runs as plain-thread code), returning it for [`restore_current_g`].
#[inline(never)]
pub(crate) fn take_current_g() -> GPtr {
    CURRENT_G.try_with(|c| c.replace(None)).ok().flatten()
}

#[inline(never)]
pub(crate) fn restore_current_g(g: GPtr) {
    let _ = CURRENT_G.try_with(|c| c.set(g));
}

/// After a goroutine switched back to its M: clears the running goroutine and returns the P
/// the M holds now (one accessor call for both, on the scheduler's hottest path).
#[inline(never)]
pub(crate) fn leave_goroutine() -> *const P {
    let _ = CURRENT_G.try_with(|c| c.set(None));
    CURRENT_P.try_with(|c| c.get()).unwrap_or(ptr::null())
}

/// Whether the running goroutine is being unwound by its runtime's shutdown (false on a
/// plain thread): blocking calls made by its destructors must give up instead of waiting.
pub(crate) fn current_is_dying() -> bool {
    with_current_g(|g| g.is_some_and(G::is_dying))
}

thread_local! {
    static RNG: Cell<u32> = const { Cell::new(0) };
}

/// A cheap per-thread pseudo-random number (xorshift32), for `select`'s poll order (a fixed
/// order under loom, where the models must be deterministic: then unused).
#[cfg_attr(loom, allow(dead_code))]
#[inline(never)]
pub(crate) fn fastrand() -> u32 {
    RNG.try_with(|c| {
        let mut x = c.get();
        if x == 0 {
            // Seed from the cell's address and the clock: distinct per thread.
            x = (c as *const Cell<u32> as usize as u32)
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.subsec_nanos()))
                | 1;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c.set(x);
        x
    })
    .unwrap_or(4)
}
