//! goro: Go's runtime as a Rust library.
//!
//! Write plain blocking code, call [`spawn`] (or [`go!`]), and get goroutines: cheap (one page
//! of memory each when idle), on stacks that grow by page faults and never move, parked and
//! woken with [`park`] / [`Goroutine::unpark`].
//!
//! ```
//! #[goro::main]
//! fn main() {
//!     let handles: Vec<_> = (0..1000u64).map(|i| goro::go!(i * 2)).collect();
//!     let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
//!     assert_eq!(sum, 999_000);
//! }
//! # main();
//! ```
//!
//! This crate is the facade: it re-exports `goro-runtime` (stacks, goroutines, scheduler) and
//! `goro-gc` (the garbage collector), and owns the examples and benchmarks.
#![deny(clippy::undocumented_unsafe_blocks)]

pub use goro_macros::{main, select};
pub use goro_runtime::*;

/// The garbage collector (`goro-gc`).
pub use goro_gc as gc;

/// Run-time controls and statistics (Go's `runtime` package): the scheduler's, and the
/// collector's [`mem_stats`](runtime::mem_stats).
pub mod runtime {
    pub use goro_gc::{collect as gc, mem_stats, MemStats};
    pub use goro_runtime::runtime::*;
}
