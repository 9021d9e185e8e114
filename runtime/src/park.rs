//! The parking primitive every blocking operation is built on, with `std::thread`'s semantics,
//! and the goroutine handle.

use crate::g::{self, GRef, Switch};
use crate::tls;
use std::fmt;

/// A handle to a goroutine: its id, and `unpark`.
#[derive(Clone)]
pub struct Goroutine {
    pub(crate) inner: GRef,
}

impl Goroutine {
    /// The goroutine's id: unique in the process, never reused, counting from 1.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Makes the goroutine's unpark token available (`std::thread::Thread::unpark`): if it is
    /// parked it wakes; otherwise its next `park` returns at once. Callable from any thread.
    pub fn unpark(&self) {
        g::unpark(&self.inner);
    }
}

impl PartialEq for Goroutine {
    fn eq(&self, other: &Goroutine) -> bool {
        self.id() == other.id()
    }
}
impl Eq for Goroutine {}

impl fmt::Debug for Goroutine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Goroutine").field("id", &self.id()).finish()
    }
}

/// The calling goroutine's handle.
///
/// # Panics
/// When called outside a goroutine; see [`try_current`].
pub fn current() -> Goroutine {
    try_current().expect("goro::current() called outside a goroutine")
}

/// The calling goroutine's handle, or `None` on a plain thread.
pub fn try_current() -> Option<Goroutine> {
    tls::current_g().map(|inner| Goroutine { inner })
}

/// Blocks until the current goroutine's token is made available (by [`Goroutine::unpark`]),
/// consuming it. Like `std::thread::park`, it may also return spuriously: call it in a loop
/// that checks a condition. In a goroutine it parks the goroutine (its M runs others); on a
/// plain thread it is `std::thread::park`.
pub fn park() {
    let parked = tls::with_current_g(|g| {
        g.map(|g| {
            // `park_current` switches out; the G stays valid (see `tls::with_current_g`).
            g::park_current(g);
        })
    });
    if parked.is_none() {
        std::thread::park();
    }
}

/// Like [`park`], but returns after `dur` at the latest (`std::thread::park_timeout`). In a
/// goroutine the deadline is a timer in the scheduler (no thread sleeps for it); on a plain
/// thread it is `std::thread::park_timeout`. May return early, spuriously or by an unpark:
/// check the condition and the time in a loop.
pub fn park_timeout(dur: std::time::Duration) {
    let deadline = std::time::Instant::now().checked_add(dur);
    if !park_in_goroutine(deadline) {
        std::thread::park_timeout(dur);
    }
}

/// The goroutine half of `park_timeout`, for a deadline the caller already has (`None`:
/// none); `false` on a plain thread, where it does nothing.
pub(crate) fn park_in_goroutine(deadline: Option<std::time::Instant>) -> bool {
    let parked = tls::with_current_g(|g| {
        g.map(|g| {
            if g.try_consume_token() {
                return;
            }
            match deadline {
                Some(d) => {
                    // SAFETY: `g` is the running goroutine's G, alive while it runs (its M
                    // holds the scheduling reference); no second thread-local read needed.
                    let me = unsafe { GRef::clone_from_ptr(std::ptr::NonNull::from(g)) };
                    crate::sched::timers::park_until(me, d);
                }
                None => g::park_current(g),
            }
        })
    });
    parked.is_some()
}

/// Lets other goroutines run: the current one goes to the back of the run queue. On a plain
/// thread it is `std::thread::yield_now`.
pub fn yield_now() {
    let yielded = tls::with_current_g(|g| g.map(|g| g::switch_out(g, Switch::Yield)));
    if yielded.is_none() {
        std::thread::yield_now();
    }
}

/// A preemption point for CPU-bound loops: yields if the runtime's monitor (sysmon) has asked
/// the current goroutine to, because it has held its processor for more than 10 ms; otherwise
/// returns at once (one relaxed load). Every runtime call that switches goroutines (park,
/// yield, join) and `spawn` are preemption points too. goro does not preempt by signal:
/// interrupting Rust code that holds a lock or is inside `malloc` can deadlock.
///
/// ```
/// # extern crate goro_runtime as goro;
/// goro::run(|| {
///     let mut x = 0u64;
///     for i in 0..1_000_000u64 {
///         x = x.wrapping_mul(31).wrapping_add(i);
///         goro::preempt_point();
///     }
///     std::hint::black_box(x);
/// });
/// ```
pub fn preempt_point() {
    if crate::sched::take_preempt_request() {
        yield_now();
    }
}

/// Number of goroutines that exist now (spawned and not yet finished), like Go's
/// `runtime.NumGoroutine`.
pub fn num_goroutine() -> usize {
    crate::live::count()
}
