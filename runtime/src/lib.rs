//! goro's runtime: stack slots, goroutines, the scheduler and the parking primitive.
//!
//! Module map (each file opens with the design of what it owns):
//! - [`stack`]: slots of reserved memory that grow by page faults and never move;
//! - `g`: the goroutine descriptor and its state word (park/unpark protocol);
//! - `sched`: the G/M/P scheduler (Ms running Ps' run queues, stealing, sysmon, `blocking`,
//!   migration safety), runtime start and stop;
//! - [`runtime`]: run-time controls and scheduler statistics (`set_max_procs`, ...);
//! - `netpoll`: the netpoller (one `mio::Poll`, polled by the scheduler) and the socket
//!   descriptors goroutines park on; [`net`]: sockets with `std::net`'s API on top of it;
//! - `signal`: the guard-page fault handler (`fatal error: stack overflow ...`);
//! - `tls`: the runtime's thread-locals, behind `#[inline(never)]` accessors;
//! - `live`: the per-thread live-goroutine counters behind `num_goroutine`;
//! - [`stackscan`]: what the garbage collector needs (stack roots' homes, the per-cycle visit
//!   of goroutine stacks); `membarrier`: the asymmetric fence it rests on;
//! - `local`: goroutine-local storage (`goroutine_local!`);
//! - [`fs`]: file calls inside `blocking`; `block_on`: a `Future` run on a goroutine;
//! - `spawn`, `park`, `builder`, `panic`: the public API.
#![deny(clippy::undocumented_unsafe_blocks)]

mod block_on;
mod builder;
pub mod chan;
pub mod context;
pub mod fs;
mod g;
pub mod io;
mod live;
mod local;
mod loom;
mod membarrier;
pub mod net;
mod netpoll;
mod panic;
mod park;
pub mod runtime;
mod sched;
mod signal;
mod spawn;
pub mod stack;
pub mod stackscan;
pub mod sync;
pub mod time;
mod tls;

pub use block_on::block_on;
pub use builder::{run, Builder};
pub use local::GoroutineLocalKey;
pub use panic::Panic;
pub use park::{
    current, num_goroutine, park, park_timeout, preempt_point, try_current, yield_now, Goroutine,
};
pub use sched::blocking;
pub use spawn::{spawn, try_spawn, JoinHandle, SpawnBuilder, SpawnError};
