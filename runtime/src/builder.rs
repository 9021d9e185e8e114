//! Starting a runtime: `goro::run`, `goro::Builder`.

use crate::sched::{Config, Runtime};
use crate::stack::DEFAULT_STACK_SIZE;

/// Runtime settings. `Builder::new().stack_size(64 << 10).run(main)`.
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            config: Config {
                stack_size: DEFAULT_STACK_SIZE,
                thread_name: "goro".into(),
                max_procs: None,
                allow_migration: false,
            },
        }
    }

    /// Default stack slot size for goroutines of this runtime, in bytes (rounded up to a power
    /// of two from 16 KiB to 1 GiB; the guard page comes out of it). Default 256 KiB.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.config.stack_size = bytes;
        self
    }

    /// Prefix of the runtime's thread names (`<name>-m0`, ...). Default `goro`.
    pub fn thread_name(mut self, name: impl Into<String>) -> Builder {
        self.config.thread_name = name.into();
        self
    }

    /// Number of processors: how many goroutines run in parallel (Go's `GOMAXPROCS`,
    /// clamped to 1..=1024). The `GOMAXPROCS` environment variable, when set to a positive
    /// integer, overrides this; the default is the number of CPUs the process may use (its
    /// affinity mask and cgroup CPU quota). [`crate::runtime::set_max_procs`] changes it later.
    pub fn max_procs(mut self, n: usize) -> Builder {
        self.config.max_procs = Some(n.max(1));
        self
    }

    /// Lets goroutines that have started move between the runtime's OS threads, as Go's do.
    ///
    /// By default a goroutine runs on one thread (M) from its first run to its end: work
    /// stealing moves only goroutines that have not started yet, so everything Rust ties to a
    /// thread stays correct inside a goroutine. With migration, a goroutine parked on one
    /// thread may resume on another, which balances CPU-bound goroutines better (three
    /// goroutines on two processors share both, instead of two sharing one) and lets the
    /// goroutines of a thread blocked in the kernel run elsewhere. The runtime still scans a
    /// parked stack for addresses inside the last thread's static thread-local block before it
    /// moves the goroutine, and keeps the goroutine on that thread if it finds one; that scan
    /// is a safety net, not a guarantee.
    ///
    /// # Safety
    /// No goroutine of this runtime may hold thread-bound state across a switch (a park,
    /// yield, channel operation, lock, sleep, join, socket call, or `spawn`). Each of these is
    /// undefined behaviour after a migration, and the scan cannot see most of them:
    /// - an `Rc` (or other `!Send` handle) cloned from a thread-local and kept across a
    ///   switch: rand's `thread_rng()`/`rng()` handles, and any crate that hands out such
    ///   handles to its thread-local state;
    /// - a reference into a thread-local kept on the heap (`Box<&T>` from `LocalKey::with`)
    ///   or in a register the scan does not see;
    /// - a std lock guard that belongs to the OS thread held across a switch:
    ///   `std::io::stdout().lock()`, `stderr().lock()` (use [`crate::io`] instead), a
    ///   `ReentrantLock`, a `MutexGuard` (unlocking a pthread mutex from another thread);
    /// - a `std::thread::scope` with a switch inside it: std parks the thread that opened the
    ///   scope and the scoped threads unpark that thread, so after a move the goroutine waits
    ///   forever unless every scoped thread is joined explicitly;
    /// - thread-locals of libraries loaded later with `dlopen` (dynamic TLS, not scanned), and
    ///   any thread-local on architectures other than x86-64 and aarch64 (there the scan
    ///   keeps every goroutine on its first thread).
    pub unsafe fn allow_migration(mut self) -> Builder {
        self.config.allow_migration = true;
        self
    }

    /// Runs `f` as the main goroutine and returns its value. Starts the runtime with these
    /// settings if none is running (a runtime already running is joined as it is, settings
    /// unchanged); the last `run` to return stops a runtime that `run` started. Called from a
    /// goroutine, it just calls `f`.
    ///
    /// A panic in `f` is resumed in the caller.
    pub fn run<F, T>(self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if crate::tls::current_g().is_some() {
            return f();
        }
        let entered = Runtime::enter(self.config);
        let main = match crate::SpawnBuilder::new().spawn_on(&entered.rt, f) {
            Ok(h) => h,
            Err(e) => panic!("goro::run: cannot spawn the main goroutine: {e}"),
        };
        let r = main.join();
        drop(entered);
        match r {
            Ok(v) => v,
            Err(p) => p.resume(),
        }
    }
}

/// Runs `f` as the main goroutine of a runtime with default settings and returns its value
/// (see [`Builder::run`]).
///
/// ```
/// # extern crate goro_runtime as goro;
/// let n = goro::run(|| {
///     let hs: Vec<_> = (0..10).map(|i| goro::spawn(move || i * i)).collect();
///     hs.into_iter().map(|h| h.join().unwrap()).sum::<i32>()
/// });
/// assert_eq!(n, 285);
/// ```
pub fn run<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().run(f)
}
