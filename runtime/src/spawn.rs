//! Spawning goroutines and joining them: `spawn`, `go!`, `SpawnBuilder`, `JoinHandle`.

use crate::g::{self, TypedGRef};
use crate::sched;
use crate::stack::GuardError;
use crate::{Goroutine, Panic};
use std::fmt;

/// Spawns a goroutine running `f` and returns a handle to join it.
///
/// Works from a goroutine or from a plain thread; from a plain thread with no runtime running
/// it starts a background runtime with default settings.
///
/// The goroutine takes its stack when it first runs. If no stack slot can be had then (see
/// [`SpawnError`]), it ends at once: its [`JoinHandle::join`] returns a [`Panic`] saying why,
/// and the reason is printed to stderr. [`try_spawn`] takes the stack at the call and returns
/// the error instead, at the cost of holding the stack while the goroutine waits to run.
///
/// ```
/// # extern crate goro_runtime as goro;
/// let h = goro::run(|| goro::spawn(|| 6 * 7).join().unwrap());
/// assert_eq!(h, 42);
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let deferred = SpawnBuilder {
        slot_now: false,
        ..SpawnBuilder::new()
    };
    match deferred.spawn(f) {
        Ok(h) => h,
        Err(e) => unreachable!("a spawn that defers its stack has nothing to fail on: {e}"),
    }
}

/// Like [`spawn`], but takes the goroutine's stack now, and returns an error if none can be had.
pub fn try_spawn<F, T>(f: F) -> Result<JoinHandle<T>, SpawnError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    SpawnBuilder::new().spawn(f)
}

/// Spawns a goroutine, Go style: `go!(work(x))` or `go! { a(); b() }` runs the expression or
/// block in a new goroutine (a `move` closure) and evaluates to its [`JoinHandle`].
///
/// ```
/// # extern crate goro_runtime as goro;
/// goro::run(|| {
///     let x = 20;
///     let h = goro::go!(x + 22);
///     assert_eq!(h.join().unwrap(), 42);
/// });
/// ```
#[macro_export]
macro_rules! go {
    ($($body:tt)*) => {
        $crate::spawn(move || { $($body)* })
    };
}

/// Options for one goroutine (std's `thread::Builder` for goroutines).
///
/// A goroutine spawned through a builder takes its stack at the call (as [`try_spawn`] does).
#[derive(Debug, Clone)]
pub struct SpawnBuilder {
    stack_size: Option<usize>,
    /// Take the stack slot at spawn rather than at first run (see [`spawn`]).
    slot_now: bool,
}

impl Default for SpawnBuilder {
    fn default() -> SpawnBuilder {
        SpawnBuilder::new()
    }
}

impl SpawnBuilder {
    pub fn new() -> SpawnBuilder {
        SpawnBuilder {
            stack_size: None,
            slot_now: true,
        }
    }

    /// Stack size for this goroutine in bytes, rounded up to a power of two between 16 KiB
    /// and 1 GiB; the guard page comes out of it. Defaults to the runtime's setting.
    pub fn stack_size(mut self, bytes: usize) -> SpawnBuilder {
        self.stack_size = Some(bytes);
        self
    }

    pub fn spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // spawn is a preemption point: `spawn_with` yields afterwards if sysmon asked.
        sched::spawn_with(|rt| self.make(rt, f))
    }

    /// Spawns on `rt` from a thread that holds none of its Ps (what `run` uses for its main
    /// goroutine: `run` holds its runtime, and runs on a plain thread).
    pub(crate) fn spawn_on<F, T>(
        self,
        rt: &sched::Runtime,
        f: F,
    ) -> Result<JoinHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (h, sched_ref) = self.make(rt, f)?;
        rt.inject(sched_ref);
        Ok(h)
    }

    /// Builds the goroutine on `rt`; returns its handle and its scheduling reference.
    fn make<F, T>(
        self,
        rt: &sched::Runtime,
        f: F,
    ) -> Result<(JoinHandle<T>, crate::g::GRef), SpawnError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let size = self.stack_size.unwrap_or(rt.config.stack_size);
        let (cell, sched_ref) = g::new_goroutine(f, size, self.slot_now).map_err(SpawnError)?;
        Ok((JoinHandle { cell }, sched_ref))
    }
}

/// Why a goroutine could not be spawned: no stack slot could be made (address space, or guard
/// pages on a kernel without `MADV_GUARD_INSTALL` that ran out of mappings). The message says
/// what to do.
#[derive(Debug)]
pub struct SpawnError(GuardError);

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// An owned permission to join a goroutine (wait for it and take its result). Dropping it
/// detaches the goroutine, which keeps running.
pub struct JoinHandle<T> {
    cell: TypedGRef<T>,
}

impl<T: Send + 'static> JoinHandle<T> {
    /// Waits for the goroutine to finish and returns its result, or the [`Panic`] that ended
    /// it. From a goroutine this parks the goroutine; from a plain thread it blocks the thread.
    pub fn join(self) -> Result<T, Panic> {
        g::join(self.cell.cell())
    }

    /// Whether the goroutine has finished (so `join` would not wait).
    pub fn is_finished(&self) -> bool {
        self.cell.cell().g.is_complete()
    }

    /// The goroutine's handle (its id, `unpark`).
    pub fn goroutine(&self) -> Goroutine {
        Goroutine {
            inner: self.cell.untyped().clone(),
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.cell.cell().g.id)
            .finish()
    }
}
