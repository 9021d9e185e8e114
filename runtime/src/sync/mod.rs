//! Synchronisation primitives (`goro::sync`): Go's `sync` package with std's API.
//!
//! | type | what | from |
//! |---|---|---|
//! | [`Mutex`] | mutual exclusion; normal and starvation modes | Go's `sync.Mutex` |
//! | [`RwLock`] | readers or one writer; a waiting writer stops new readers | Go's `sync.RWMutex` |
//! | [`Condvar`] | wait for a condition under a `Mutex` | std's `Condvar` |
//! | [`WaitGroup`] | wait for a counter to reach zero | Go's `sync.WaitGroup` |
//! | [`Once`], [`OnceLock`] | one-time initialisation | std's |
//! | [`Semaphore`] | counting semaphore, FIFO | `x/sync/semaphore`, tokio's API |
//! | [`Barrier`] | `n` parties meet, reusable | std's `Barrier` |
//!
//! Every blocking call parks the calling **goroutine**, never its OS thread: the M runs other
//! goroutines meanwhile. Called from a plain thread (or inside `goro::blocking`), it blocks
//! the thread, and goroutines and threads can share one primitive. Nothing depends on thread
//! identity: a goroutine may lock on one OS thread and unlock on another after migrating, and
//! guards may be dropped by a different goroutine or thread than the one that locked.
//!
//! **No poisoning.** `lock`, `read` and `write` return the guard directly: a panic while a
//! guard is held unlocks it, and the data stays as the panicking code left it (parking_lot's
//! and Go's behaviour). In goro a panic is caught per goroutine and the program keeps
//! running, so poisoning would turn one failed goroutine into a cascade of `unwrap` panics.
//! Check invariants yourself if a critical section can panic half-way.
//!
//! **Shutdown.** When a runtime shuts down it unwinds the goroutines still alive
//! (`sched/shutdown.rs`). One parked in a wait leaves the primitive consistent on its way out
//! (it leaves the queue, or hands back the lock or permit it was just given), so primitives
//! may outlive the runtime. A destructor that blocks while being unwound cannot wait for
//! other goroutines (none of them runs again): calls that can give up return at once
//! (`WaitGroup::wait`, `Condvar::wait*` (a spurious wake-up), `Barrier::wait` (counted, not
//! waiting), `Semaphore::acquire_timeout`); calls that must return a guard or permit
//! (`Mutex::lock`, `RwLock::read`/`write`, `Semaphore::acquire`, waiting on a running
//! `Once`) wait one second for a plain-thread holder, then abort with a `fatal error`, since
//! the holder is a goroutine that never runs again (`waiter.rs`).
//!
//! Files: `waiter.rs` (waiter records, the wait queue and its protocol, shared by all),
//! then one file per primitive, each opening with its state word and protocol.

mod barrier;
mod condvar;
mod mutex;
mod once;
mod once_lock;
mod rwlock;
mod semaphore;
mod waiter;
mod waitgroup;

pub use barrier::{Barrier, BarrierWaitResult};
pub use condvar::{Condvar, WaitTimeoutResult};
#[doc(hidden)]
pub use mutex::starvation_entries;
pub use mutex::{Mutex, MutexGuard};
pub use once::Once;
pub use once_lock::OnceLock;
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use semaphore::{Semaphore, SemaphorePermit};
pub use waitgroup::WaitGroup;
