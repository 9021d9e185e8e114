//! goro's runtime: stack slots, goroutines, the scheduler and the parking primitive.
//!
//! Module map (each file opens with the design of what it owns):
//! - [`stack`]: slots of reserved memory that grow by page faults and never move;
//! - `g`: the goroutine descriptor and its state word (park/unpark protocol);
//! - `sched`: Ms running Ps' run queues, runtime start and stop;
//! - `signal`: the guard-page fault handler (`fatal error: stack overflow ...`);
//! - `tls`: the runtime's thread-locals, behind `#[inline(never)]` accessors;
//! - `live`: the per-thread live-goroutine counters behind `num_goroutine`;
//! - `local`: goroutine-local storage (`goroutine_local!`);
//! - `spawn`, `park`, `builder`, `panic`: the public API.
#![deny(clippy::undocumented_unsafe_blocks)]

mod builder;
mod g;
mod live;
mod local;
mod loom;
mod panic;
mod park;
mod sched;
mod signal;
mod spawn;
pub mod stack;
mod tls;

pub use builder::{run, Builder};
pub use local::GoroutineLocalKey;
pub use panic::Panic;
pub use park::{current, num_goroutine, park, preempt_point, try_current, yield_now, Goroutine};
pub use spawn::{spawn, try_spawn, JoinHandle, SpawnBuilder, SpawnError};
