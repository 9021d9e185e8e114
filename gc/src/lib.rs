//! goro's garbage collector: `Gc<T>` handles to objects on a managed heap, freed by a
//! concurrent tri-color mark-sweep when unreachable, cycles included.
//!
//! ```
//! use goro_gc::{Gc, GcCell, Trace};
//!
//! #[derive(Trace)]
//! struct Node {
//!     next: GcCell<Option<Gc<Node>>>,
//!     #[gc(skip)]
//!     id: u32,
//! }
//!
//! let a = Gc::new(Node { next: GcCell::new(None), id: 1 });
//! let b = Gc::new(Node { next: GcCell::new(Some(a.clone())), id: 2 });
//! *a.next.borrow_mut() = Some(b.clone()); // a cycle
//! assert_eq!(b.next.borrow().as_ref().unwrap().id, 1);
//! drop((a, b));
//! goro_gc::collect(); // frees both
//! ```
//!
//! Where each concept lives: `heap` (spans, side tables, allocation caches), `gc` (the handle),
//! `trace` (the `Trace` trait and std impls), `cell` (`GcCell`, `GcMutex`: the barrier),
//! `roots` (`root!`: stack roots, and finding them in a visited stack),
//! `collector` (the cycle, shading, finalization), `pacer` (GOGC, goal, trigger), `stats`
//! (`MemStats`, gctrace). `DESIGN.md` has the soundness argument.
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate self as goro_gc;

mod cell;
mod collector;
mod gc;
mod heap;
mod pacer;
mod roots;
mod stats;
pub mod trace;

#[cfg(all(test, loom))]
mod loom_models;

pub use cell::{BorrowError, BorrowMutError, GcCell, GcMutex, GcMutexGuard, GcRef, GcRefMut};
pub use collector::{collect, cycles};
pub use gc::Gc;
pub use goro_gc_derive::Trace;
pub use heap::overhead_per_object;
pub use pacer::{parse_gogc, set_gc_percent};
pub use roots::Root;
pub use stats::{mem_stats, MemStats};
pub use trace::{Trace, Tracer};

/// What `root!` expands to; not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::roots::RootSlot;
}

/// Reads `GOGC` and `GORO_DEBUG` now (otherwise at the first allocation): a bad `GOGC` is
/// reported and the process exits. `#[goro::main]` calls it at start.
pub fn init() {
    pacer::init();
}
