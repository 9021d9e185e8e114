//! `GRef`: the counted reference to a goroutine's descriptor, and the cell it points to.
//!
//! A goroutine's descriptor is a [`GCell<T>`]: the untyped header [`G`] followed by the slot
//! for its output `T`. Everything but `JoinHandle<T>` sees it through a [`GRef`], one word (a
//! pointer to the header), which the work-stealing scheduler needs to swap run-queue entries
//! atomically. `Arc` cannot serve: `Arc<GCell<dyn ..>>` is two words, and `Arc` allocates from
//! the global allocator, which cells must avoid (see `slab`).
//!
//! Counting follows `Arc`: clones add one with relaxed ordering (a clone is made from a live
//! reference, so the count cannot be zero); a drop subtracts one with release, and the drop that
//! reaches zero fences with acquire before destroying the cell, so every use of the cell by
//! other threads happens before it is freed. The header carries `destroy`, instantiated for
//! the cell's `T`, which drops the cell and returns its memory to the slab.

use super::{slab, Body, G};
use crate::stack::{GuardError, SlotAddr, StackSlot};
use std::alloc::Layout;
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

/// Output of a goroutine: written once by the goroutine before it finishes, read once by the
/// joiner after it observed COMPLETE.
pub(crate) struct OutputSlot<T>(pub(super) UnsafeCell<Option<Result<T, crate::Panic>>>);

/// A goroutine's descriptor: header, then output. `repr(C)` puts the header at offset 0, so a
/// pointer to the cell is a pointer to its `G`.
#[repr(C)]
pub(crate) struct GCell<T> {
    pub(crate) g: G,
    pub(crate) out: OutputSlot<T>,
}

/// A counted reference to a goroutine's descriptor (see the module comment).
pub(crate) struct GRef {
    ptr: NonNull<G>,
}

// SAFETY: `G` is `Send + Sync` (its own argument); a GRef only hands out `&G` and counts with
// atomics, like `Arc<G>`.
unsafe impl Send for GRef {}
// SAFETY: as above.
unsafe impl Sync for GRef {}

/// Past this many references something is leaking them in a loop; abort like `Arc` does
/// rather than let the count wrap.
const MAX_REFS: u32 = i32::MAX as u32;

impl GRef {
    /// Adds a reference to the G at `ptr`.
    ///
    /// # Safety
    /// `ptr` must point to a live G, kept alive by some reference for the duration of the call.
    pub(crate) unsafe fn clone_from_ptr(ptr: NonNull<G>) -> GRef {
        // SAFETY: the caller guarantees the G is alive.
        let g = unsafe { ptr.as_ref() };
        if g.refs.fetch_add(1, Ordering::Relaxed) > MAX_REFS {
            std::process::abort();
        }
        GRef { ptr }
    }

    pub(crate) fn as_ptr(&self) -> NonNull<G> {
        self.ptr
    }
}

impl std::ops::Deref for GRef {
    type Target = G;
    fn deref(&self) -> &G {
        // SAFETY: a GRef holds a reference: the G is alive while the GRef exists.
        unsafe { self.ptr.as_ref() }
    }
}

impl Clone for GRef {
    fn clone(&self) -> GRef {
        // SAFETY: `self` keeps the G alive.
        unsafe { GRef::clone_from_ptr(self.ptr) }
    }
}

impl Drop for GRef {
    fn drop(&mut self) {
        if self.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        // SAFETY: that was the last reference; `destroy` was set at creation for this cell's
        // type and is called exactly once, here.
        unsafe { (self.destroy)(self.ptr) };
    }
}

/// A `GRef` that knows the cell's output type (what a `JoinHandle<T>` holds).
pub(crate) struct TypedGRef<T> {
    r: GRef,
    _out: PhantomData<T>,
}

impl<T> TypedGRef<T> {
    pub(crate) fn cell(&self) -> &GCell<T> {
        // SAFETY: created by `new_goroutine::<_, T>` as a `GCell<T>`, whose header is at offset
        // 0 (`repr(C)`); alive while `self.r` is.
        unsafe { self.r.as_ptr().cast::<GCell<T>>().as_ref() }
    }

    pub(crate) fn untyped(&self) -> &GRef {
        &self.r
    }
}

/// Drops a `GCell<T>` and frees its memory.
///
/// # Safety
/// `ptr` must be the header of a `GCell<T>` made by `new_goroutine`, with no references left.
unsafe fn destroy<T>(ptr: NonNull<G>) {
    // SAFETY: no references are left, so the body is ours to look at.
    if unsafe { ptr.as_ref().is_suspended() } {
        // A goroutine that started and never finished (its runtime could not unwind it):
        // its stack, and heap records linked from elsewhere (a channel's waiter list, a
        // joiner's pointer), may still name this descriptor, so it is kept, with the stack.
        return;
    }
    let cell = ptr.cast::<GCell<T>>();
    // An output nobody joined may hold a panic payload (or a value) whose destructor panics;
    // the last reference may be dropped by an M between two goroutines, or by any thread:
    // contain it there (std aborts the process for a thread's result).
    // SAFETY: unreferenced, so the output is ours to take.
    let (id, out) = unsafe {
        (
            (*cell.as_ptr()).g.id,
            (*(*cell.as_ptr()).out.0.get()).take(),
        )
    };
    crate::panic::drop_contained(id, out);
    // SAFETY: the caller guarantees it is an unreferenced `GCell<T>` from `slab::alloc`.
    unsafe { std::ptr::drop_in_place(cell.as_ptr()) };
    // The collector's stack visit may be reading this descriptor's state word (it found the
    // address in a slot header before the slot was freed): then the memory waits for the
    // visit's end (`crate::stackscan`).
    let layout = Layout::new::<GCell<T>>();
    if !crate::stackscan::defer_free(cell.cast(), layout) {
        // SAFETY: as above; dropped, and no visit can reach it.
        unsafe { slab::free(cell.cast(), layout) };
    }
}

/// Creates a goroutine running `f` and returns its cell, not yet queued, with its scheduling
/// reference (the cell starts with both references counted: one read-modify-write less than
/// cloning on every spawn). The goroutine takes a slot for `stack_size` bytes when it first
/// runs, or now if `slot_now` (so that running out of address space is an error here).
pub(crate) fn new_goroutine<F, T>(
    f: F,
    stack_size: usize,
    slot_now: bool,
) -> Result<(TypedGRef<T>, GRef), GuardError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let slot = if slot_now {
        StackSlot::new(stack_size)?.into_addr()
    } else {
        SlotAddr::deferred(stack_size)
    };
    let header = G::new(Body::new(f, slot), destroy::<T>);
    let mem = slab::alloc(Layout::new::<GCell<T>>()).cast::<GCell<T>>();
    // SAFETY: fresh memory of the right layout, written once before anything reads it.
    unsafe {
        mem.as_ptr().write(GCell {
            g: header,
            out: OutputSlot(UnsafeCell::new(None)),
        })
    };
    let r = TypedGRef {
        r: GRef { ptr: mem.cast() },
        _out: PhantomData,
    };
    crate::live::add(1);
    let sched = GRef { ptr: mem.cast() }; // the second reference `G::new` counted
    Ok((r, sched))
}

// SAFETY: `into_raw` gives the (non-null) header pointer and forgets the reference without
// touching the count; `from_raw` rebuilds that same reference.
unsafe impl crate::sched::runq::Thin for GRef {
    fn into_raw(self) -> *mut () {
        std::mem::ManuallyDrop::new(self).ptr.as_ptr().cast()
    }
    unsafe fn from_raw(p: *mut ()) -> GRef {
        // SAFETY: the caller passes a pointer from `into_raw`, which is a live G's header.
        let ptr = unsafe { NonNull::new_unchecked(p.cast()) };
        GRef { ptr }
    }
}

#[cfg(test)]
mod size_tests {
    /// A goroutine returning `()` or a word fits the slab's 128-byte class (see `slab.rs`):
    /// a million idle goroutines cost 128 MB of descriptors, not 192.
    #[test]
    fn cell_fits_128_bytes() {
        assert!(std::mem::size_of::<super::GCell<()>>() <= 128);
        assert!(std::mem::size_of::<super::GCell<u64>>() <= 128);
    }
}
