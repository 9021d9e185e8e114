//! `Trace`: how the collector finds the `Gc` handles inside a value, the `Tracer` it passes,
//! and `Trace` for the std types people put in graphs.
//!
//! A `Tracer` has three uses, one per mode:
//! 1. `Tally` (collector, mark step B): each handle found adds one to its target's
//!    `internal` count, so `count > internal` finds the objects named from outside.
//! 2. `Mark` (collector, step D): each handle's target is shaded onto the collector's queue.
//! 3. `Shade` (a mutator's barrier while marking): targets are shaded onto the shared queue.
//!
//! The contract of `Trace` (why implementing it by hand is `unsafe`): `trace` visits every
//! `Gc` the value owns that is not behind a `#[gc(skip)]`-like opaque field, **each exactly
//! once**, and reads nothing that can change without a `&mut` to the value or a `GcCell`/
//! `GcMutex` guard. Visiting a handle twice would over-count it and could free an object a
//! handle outside the heap still names; visiting one too few only keeps objects alive.
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, LinkedList, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;

use crate::heap::Header;

/// Types whose `Gc` handles the collector can find. Derive it (`#[derive(Trace)]`); writing it
/// by hand is `unsafe`: see the module docs of `goro_gc::trace` for the contract.
///
/// # Safety
/// `trace` must call `Trace::trace` on every field that holds a `Gc` (directly or inside other
/// `Trace` values), each exactly once per call, and must not read state that can change through
/// a shared reference other than through `GcCell`/`GcMutex`.
pub unsafe trait Trace {
    /// Visits the `Gc` handles inside `self`.
    fn trace(&self, tracer: &mut Tracer);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Tally,
    Mark,
    Shade,
}

/// Passed to [`Trace::trace`]. Only the collector makes one.
pub struct Tracer {
    pub(crate) mode: Mode,
    pub(crate) epoch: u8,
    /// Objects this tracer shaded, to be traced in turn.
    pub(crate) grey: Vec<*const Header>,
    /// Set when a cell held by a writer was passed over (see `collector::trace_cell`).
    pub(crate) skipped: bool,
}

impl Tracer {
    pub(crate) fn new(mode: Mode, epoch: u8) -> Tracer {
        Tracer {
            mode,
            epoch,
            grey: Vec::new(),
            skipped: false,
        }
    }

    /// One handle to the object whose header is at `h`.
    #[inline]
    pub(crate) fn edge(&mut self, h: *const Header) {
        match self.mode {
            Mode::Tally => {
                // SAFETY: `h` comes from a live handle inside an object being traced, so the
                // object it names is allocated (its count includes that handle).
                let hd = unsafe { &*h };
                // Only the collector thread writes `internal` (no RMW needed). Edges into
                // objects step C does not judge (black, DEAD) are counted too; C resets every
                // object's tally over a span list taken after this pass, so none goes stale.
                hd.internal
                    .store(hd.internal.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            Mode::Mark | Mode::Shade => {
                if crate::collector::try_shade(h, self.epoch) {
                    self.grey.push(h);
                }
            }
        }
    }
}

macro_rules! leaf {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: holds no `Gc`.
        unsafe impl Trace for $t {
            #[inline]
            fn trace(&self, _: &mut Tracer) {}
        }
    )*};
}

leaf!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    str,
    String,
    std::time::Duration,
    std::time::Instant,
    std::time::SystemTime,
    std::num::NonZeroU32,
    std::num::NonZeroU64,
    std::num::NonZeroUsize,
    std::path::PathBuf,
    std::ffi::OsString,
);

// SAFETY: a `&'static` reference cannot own a `Gc` that is freed while the value lives
// (statics are never collected) and it cannot be mutated through.
unsafe impl<T: ?Sized + 'static> Trace for &'static T {
    fn trace(&self, _: &mut Tracer) {}
}

// SAFETY: holds no `T`.
unsafe impl<T: ?Sized> Trace for std::marker::PhantomData<T> {
    fn trace(&self, _: &mut Tracer) {}
}

// SAFETY: a `Copy` type cannot hold a `Gc` (`Gc` has a `Drop`), so the cell's contents hold
// none, whatever `set` does concurrently; nothing is read.
unsafe impl<T: Copy> Trace for Cell<T> {
    fn trace(&self, _: &mut Tracer) {}
}

// SAFETY: a `Box` owns its value; visiting it visits each of its handles once.
unsafe impl<T: Trace + ?Sized> Trace for Box<T> {
    fn trace(&self, t: &mut Tracer) {
        (**self).trace(t)
    }
}

macro_rules! each_element {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: each element once.
        unsafe impl<T: Trace> Trace for $t {
            fn trace(&self, t: &mut Tracer) {
                for x in self {
                    x.trace(t)
                }
            }
        }
    )*};
}

each_element!([T], Vec<T>, VecDeque<T>, LinkedList<T>);

// SAFETY: each element once.
unsafe impl<T: Trace, const N: usize> Trace for [T; N] {
    fn trace(&self, t: &mut Tracer) {
        for x in self {
            x.trace(t)
        }
    }
}

// SAFETY: the value, if any, once.
unsafe impl<T: Trace> Trace for Option<T> {
    fn trace(&self, t: &mut Tracer) {
        if let Some(x) = self {
            x.trace(t)
        }
    }
}

// SAFETY: whichever side is present, once.
unsafe impl<T: Trace, E: Trace> Trace for Result<T, E> {
    fn trace(&self, t: &mut Tracer) {
        match self {
            Ok(x) => x.trace(t),
            Err(e) => e.trace(t),
        }
    }
}

// SAFETY: each key and value once; keys cannot change without `&mut`.
unsafe impl<K: Trace, V: Trace, S: BuildHasher> Trace for HashMap<K, V, S> {
    fn trace(&self, t: &mut Tracer) {
        for (k, v) in self {
            k.trace(t);
            v.trace(t);
        }
    }
}

// SAFETY: each element once.
unsafe impl<K: Trace, S: BuildHasher> Trace for HashSet<K, S> {
    fn trace(&self, t: &mut Tracer) {
        for k in self {
            k.trace(t);
        }
    }
}

// SAFETY: each key and value once.
unsafe impl<K: Trace, V: Trace> Trace for BTreeMap<K, V> {
    fn trace(&self, t: &mut Tracer) {
        for (k, v) in self {
            k.trace(t);
            v.trace(t);
        }
    }
}

// SAFETY: each element once.
unsafe impl<K: Trace> Trace for BTreeSet<K> {
    fn trace(&self, t: &mut Tracer) {
        for k in self {
            k.trace(t);
        }
    }
}

macro_rules! tuple {
    ($($n:tt $t:ident),+) => {
        // SAFETY: each field once.
        unsafe impl<$($t: Trace),+> Trace for ($($t,)+) {
            fn trace(&self, t: &mut Tracer) {
                $( self.$n.trace(t); )+
            }
        }
    };
}
tuple!(0 A);
tuple!(0 A, 1 B);
tuple!(0 A, 1 B, 2 C);
tuple!(0 A, 1 B, 2 C, 3 D);
tuple!(0 A, 1 B, 2 C, 3 D, 4 E);
tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F);
tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G);
tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H);
tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I);
tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J);
tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K);
tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L);
