//! What a goroutine runs: its closure until an M first runs it, then its coroutine.
//!
//! A goroutine takes its stack slot when it first runs, not when it is spawned. Go does the
//! opposite (`newproc` allocates the stack at once), but Go's first stack is 2 KiB of heap;
//! ours is a slot whose top page is committed on first touch, which costs a page fault and
//! 4 KiB of memory. Deferring it:
//! - a spawned goroutine that has not run yet holds no stack, so a program that spawns faster
//!   than it runs (a million sleepers, a fan-out) keeps only the slots of goroutines that ran;
//! - the slot comes from the cache of the M that runs the goroutine, so one freed by the
//!   previous goroutine on that M is reused while its top page is still resident and in cache,
//!   and the spawning M does not pay every page fault of the fan-out;
//! - the cost is one branch per resume and a copy of the closure at first run.
//!
//! # Layout and invariants
//! `G::body` is a union, and `G::body_kind` says which field is live:
//! - `Start`: the closure, inline when it fits two words (most do: a channel and a counter),
//!   else boxed; and the slot: one taken at spawn (`try_spawn` and `SpawnBuilder::spawn`, so
//!   an exhausted address space is an error at the call) or only its size class (`spawn`).
//! - `Coro`: the coroutine, created at first run. The closure moved onto the new stack as the
//!   coroutine's initial frame; the slot belongs to the coroutine.
//! - `Empty`: neither (finished, unwound, or failed to start).
//!
//! Only the holder of the scheduling reference reads or changes the body (and `Drop`, which
//! has the G to itself), so both fields are plain cells.
//!
//! # First run (`G::start`, on the M)
//! 1. take the slot (a fresh one of the class if none was taken at spawn);
//! 2. record it in `G::stack` (atomic: `committed_bytes` reads it from any thread) and in the
//!    slot header (the shutdown's walk over parked goroutines);
//! 3. build the coroutine around the closure and store it in the body.
//!
//! If step 1 fails the closure is dropped and the goroutine ends at once with a [`Panic`]
//! that says why, which its joiner receives; the message is also printed, since a detached
//! goroutine has no joiner. Nothing else is disturbed: `spawn` cannot report the error to its
//! caller any more, and killing the process for it (Go's "out of memory") would turn an
//! address-space limit into a crash of every other goroutine.
//!
//! Rejected: keeping the closure in the cell's tail, typed (`GCell<T, F>`): a closure of more
//! than a word or two would move every such goroutine's cell to the 192-byte slab class.
//!
//! [`Panic`]: crate::Panic

use super::{Coro, GCell, Switch, G};
use crate::stack::{SlotAddr, StackSlot};
use corosensei::Yielder;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

/// Which field of [`Body`] is live (see the module comment).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum BodyKind {
    Start,
    Coro,
    Empty,
}

pub(crate) union Body {
    start: ManuallyDrop<Start>,
    coro: ManuallyDrop<Coro>,
}

/// A goroutine before its first run: its closure and its slot (or the slot's size class).
pub(crate) struct Start {
    /// `launch::<F, T>` for this goroutine's closure and output types.
    launch: unsafe fn(NonNull<G>, Launch),
    /// Taken at spawn, or `SlotAddr::deferred`.
    slot: SlotAddr,
    /// The closure if `inline::<F>()`, else a `Box<F>`'s pointer in the first word.
    data: [MaybeUninit<*mut ()>; 2],
}

/// What `launch` does with a goroutine's closure.
enum Launch {
    /// Start it on the M whose slot-header tag this is (`M::tag`).
    Run { tag: usize },
    /// Drop it: the goroutine is dropped (shutdown) before it ran.
    Drop,
}

const fn inline<F>() -> bool {
    std::mem::size_of::<F>() <= std::mem::size_of::<[*mut (); 2]>()
        && std::mem::align_of::<F>() <= std::mem::align_of::<*mut ()>()
}

impl Body {
    /// The body of a goroutine that will run `f`, with output `T`, on `slot`.
    pub(crate) fn new<F, T>(f: F, slot: SlotAddr) -> Body
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let mut data = [MaybeUninit::<*mut ()>::uninit(); 2];
        if inline::<F>() {
            // SAFETY: `inline` checked that `F` fits the two words and their alignment.
            unsafe { data.as_mut_ptr().cast::<F>().write(f) };
        } else {
            data[0] = MaybeUninit::new(Box::into_raw(Box::new(f)).cast());
        }
        Body {
            start: ManuallyDrop::new(Start {
                launch: launch::<F, T>,
                slot,
                data,
            }),
        }
    }
}

impl Start {
    /// Moves the closure out.
    ///
    /// # Safety
    /// `F` must be the type `Body::new` was called with, and this must be the only call.
    unsafe fn take_closure<F>(&self) -> F {
        if inline::<F>() {
            // SAFETY: `new` wrote an `F` there (the caller guarantees the type), read once.
            unsafe { self.data.as_ptr().cast::<F>().read() }
        } else {
            // SAFETY: `new` stored `Box::<F>::into_raw` in the first word; taken back once.
            *unsafe { Box::from_raw(self.data[0].assume_init().cast::<F>()) }
        }
    }
}

/// Starts or drops the closure of the goroutine `g`, whose body is `Start` (see the module
/// comment); afterwards the body is `Coro`, or `Empty` if it was dropped or failed to start.
///
/// # Safety
/// `g` must be a `GCell<T>` made with `Body::new::<F, T>`, and the caller must own its body
/// (hold the scheduling reference, or be its `Drop`).
unsafe fn launch<F, T>(g: NonNull<G>, how: Launch)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: the caller guarantees `g` is alive and that its body is ours; the body is
    // `Start`, which we move out and mark gone before anything can observe it.
    let gr = unsafe { g.as_ref() };
    // SAFETY: as above.
    let start = unsafe {
        *gr.body_kind.get() = BodyKind::Empty;
        ManuallyDrop::take(&mut (*gr.body.get()).start)
    };
    // SAFETY: `launch::<F, T>` is stored only by `Body::new::<F, T>`; this is the one take.
    let f = unsafe { start.take_closure::<F>() };
    let tag = match how {
        Launch::Run { tag } => tag,
        Launch::Drop => {
            if start.slot.is_taken() {
                // SAFETY: a taken slot in a `Start` belongs to it, and we own the `Start` now.
                drop(unsafe { StackSlot::take(start.slot) });
            }
            // The closure's destructors run here, outside any goroutine body: a panic in one
            // is reported, not let out into the shutdown or the thread dropping the handle.
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(f))) {
                crate::panic::report_escaped(gr.id, "dropping its closure before it ran", p);
            }
            return;
        }
    };
    // SAFETY: as above; a deferred one is taken from the pool here.
    let slot = match unsafe { StackSlot::take(start.slot) } {
        Ok(slot) => slot,
        Err(e) => {
            drop(f);
            let msg = format!("goroutine {} could not start: {e}", gr.id);
            eprintln!("goro: {msg}");
            let cell = g.cast::<GCell<T>>();
            // SAFETY: the output is written once, here or by the coroutine (which will not
            // exist), before the M publishes COMPLETE; no one reads it earlier.
            unsafe { *(*cell.as_ptr()).out.0.get() = Some(Err(crate::Panic::new(Box::new(msg)))) };
            return;
        }
    };
    gr.stack
        .store(slot.addr().to_raw(), std::sync::atomic::Ordering::Release);
    slot.set_owner(g.as_ptr() as usize, tag);
    let coro = coroutine::<F, T>(slot, g, f);
    // SAFETY: the body is ours (above), and `Empty`: nothing to drop in it.
    unsafe {
        (*gr.body.get()).coro = ManuallyDrop::new(coro);
        *gr.body_kind.get() = BodyKind::Coro;
    }
}

/// The coroutine that runs `f` on `slot` as the goroutine `g` and publishes its output.
fn coroutine<F, T>(slot: StackSlot, g: NonNull<G>, f: F) -> Coro
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let gp: *const G = g.as_ptr();
    // SAFETY: `g` is alive (the M running it holds a reference).
    let id = unsafe { g.as_ref() }.id;
    let out = g.cast::<GCell<T>>().as_ptr();
    Coro::with_stack(slot, move |yielder: &Yielder<(), Switch>, ()| {
        let frame = super::Frame::new(yielder);
        // SAFETY: `gp` points into the cell, which the M running us keeps alive; we are the
        // goroutine, and `frame` lives in this coroutine's initial frame, which stays put
        // (stacks never move) until the coroutine returns.
        unsafe { (*gp).set_frame(&frame) };
        let mut result = catch_unwind(AssertUnwindSafe(f)).map_err(crate::Panic::new);
        // SAFETY: as above.
        if unsafe { (*gp).is_dying() } {
            // Unwound by the runtime's shutdown (corosensei's forced unwind, caught here).
            let unwound = std::mem::replace(&mut result, Err(crate::Panic::dropped(id)));
            crate::panic::drop_contained(id, unwound);
        }
        // Goroutine-locals die inside the goroutine, before its result is published.
        if let Some(p) = crate::local::drop_goroutine_locals(&frame.locals) {
            if result.is_ok() {
                let value = std::mem::replace(&mut result, Err(crate::Panic::new(p)));
                crate::panic::drop_contained(id, value);
            } else {
                // A payload's own destructor may panic: that must not escape the coroutine.
                crate::panic::drop_contained(id, p);
            }
        }
        // SAFETY: the output is written once, here, before the coroutine returns and the M
        // publishes COMPLETE with release; no one reads it before that.
        unsafe { *(*out).out.0.get() = Some(result) };
    })
}

impl G {
    /// The coroutine, after the first run.
    ///
    /// # Safety
    /// The caller must own the body (see the module comment), and it must be `Coro`.
    // The body is an `UnsafeCell` with one owner at a time (the module comment), like a
    // `RefCell` borrowed mutably through `&self`.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn coro_mut(&self) -> &mut Coro {
        // SAFETY: as the caller guarantees.
        unsafe {
            debug_assert_eq!(*self.body_kind.get(), BodyKind::Coro);
            &mut (*self.body.get()).coro
        }
    }

    pub(super) fn body_kind(&self) -> BodyKind {
        // SAFETY: read by the body's owner only (every caller is; see the module comment).
        unsafe { *self.body_kind.get() }
    }

    /// First run: takes the slot and builds the coroutine. Returns false if the goroutine
    /// could not start (it has ended: its output holds why).
    ///
    /// # Safety
    /// The caller must hold the scheduling reference, and the body must not be `Coro`.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn start(&self, tag: usize) -> bool {
        // A finished goroutine is never queued again; if one were, reading its body as a
        // `Start` would be undefined: stop here instead (off the hot path, which saw `Coro`).
        assert_eq!(
            self.body_kind(),
            BodyKind::Start,
            "resumed a finished goroutine"
        );
        // SAFETY: as the caller guarantees; `launch` was stored with this G's types.
        unsafe {
            let start: &ManuallyDrop<Start> = &(*self.body.get()).start;
            (start.launch)(NonNull::from(self), Launch::Run { tag });
        }
        self.body_kind() == BodyKind::Coro
    }

    /// Whether the body is a coroutine that started and has not finished.
    ///
    /// # Safety
    /// The caller must own the body.
    pub(super) unsafe fn is_suspended(&self) -> bool {
        // SAFETY: the caller owns the body; it is read as `Coro` only when it is one.
        self.body_kind() == BodyKind::Coro
            && unsafe {
                let c = self.coro_mut();
                c.started() && !c.done()
            }
    }

    /// Empties the body: drops a closure that never ran (and its slot), or a coroutine that
    /// finished or never started. A coroutine suspended mid-run is leaked with its slot,
    /// which is sound (see `Drop for G`); returns true then.
    ///
    /// # Safety
    /// The caller must own the body.
    pub(super) unsafe fn drop_body(&self) -> bool {
        match self.body_kind() {
            // SAFETY: the caller owns the body; it is `Start`, so `launch` is valid.
            BodyKind::Start => unsafe {
                let start: &ManuallyDrop<Start> = &(*self.body.get()).start;
                (start.launch)(NonNull::from(self), Launch::Drop);
                false
            },
            BodyKind::Coro => {
                // SAFETY: the caller owns the body; it is `Coro`, and is marked empty before
                // the coroutine is dropped or leaked.
                let coro = unsafe {
                    *self.body_kind.get() = BodyKind::Empty;
                    ManuallyDrop::take(&mut (*self.body.get()).coro)
                };
                if coro.started() && !coro.done() {
                    std::mem::forget(coro);
                    true
                } else {
                    drop(coro);
                    false
                }
            }
            BodyKind::Empty => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_fits_in_the_coroutines_place() {
        // The union costs the G nothing over the coroutine alone.
        assert!(std::mem::size_of::<Start>() <= std::mem::size_of::<Coro>());
        assert_eq!(std::mem::size_of::<Body>(), std::mem::size_of::<Coro>());
    }

    fn inline_of<F>(_: &F) -> bool {
        inline::<F>()
    }

    #[test]
    fn closures_of_two_words_are_inline() {
        let (a, b) = (1u64, std::sync::Arc::new(2u8));
        let small = move || a + *b as u64;
        assert!(inline_of(&small));
        let big = [7u64; 3];
        let large = move || big[2];
        assert!(!inline_of(&large));
    }
}
