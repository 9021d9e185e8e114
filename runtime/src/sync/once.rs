//! [`Once`]: run an initialiser exactly once; concurrent callers park until it is done.
//!
//! # The state word
//! ```text
//!   bits 0-1  INCOMPLETE | RUNNING | COMPLETE
//!   bit  2    PARKED: callers are queued waiting for the RUNNING one
//! ```
//! Protocol:
//! 1. `call_once`: an acquire load that sees `COMPLETE` returns at once (the fast path, and
//!    it orders the initialiser's effects before the caller's reads).
//! 2. `INCOMPLETE`: compare-and-swap to `RUNNING` and run the initialiser. A guard then swaps
//!    in `COMPLETE` (release), or `INCOMPLETE` if the initialiser unwound, and if the swap
//!    saw `PARKED`, wakes every queued caller.
//! 3. `RUNNING`: under the queue lock, set `PARKED` in a compare-and-swap that still sees
//!    `RUNNING`, and queue. Woken callers start over at 1, so after a panic one of them runs
//!    the initialiser next.
//!
//! **A panicking initialiser does not poison**: the panic propagates to its caller and the
//! `Once` goes back to incomplete, so the next caller (or a queued one) tries again (std's
//! `OnceLock` rule; std's `Once` poisons instead, Go's `Once` counts a panic as done).
//! Calling `call_once` on the same `Once` from inside its initialiser waits forever.
//!
//! At shutdown, a goroutine being unwound that waits for an initialiser running elsewhere
//! waits up to one second for it (a plain thread's), then aborts with a `fatal error`: it
//! cannot return without the value.

use super::waiter::{Dying, Leave, Queue, WaitQueue, Wakes};
use crate::loom::{AtomicU32, Ordering};
use std::fmt;

const INCOMPLETE: u32 = 0;
const RUNNING: u32 = 1;
const COMPLETE: u32 = 2;
const STATUS: u32 = 3;
const PARKED: u32 = 4;

const WOKEN: u32 = 1;

/// Runs an initialiser exactly once (std's `Once`, Go's `sync.Once`); see the module comment
/// for panics.
///
/// ```
/// # extern crate goro_runtime as goro;
/// use goro::sync::Once;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// static INIT: Once = Once::new();
/// static RUNS: AtomicUsize = AtomicUsize::new(0);
/// goro::run(|| {
///     let hs: Vec<_> = (0..8)
///         .map(|_| goro::spawn(|| INIT.call_once(|| { RUNS.fetch_add(1, Ordering::Relaxed); })))
///         .collect();
///     hs.into_iter().for_each(|h| h.join().unwrap());
///     assert_eq!(RUNS.load(Ordering::Relaxed), 1);
///     assert!(INIT.is_completed());
/// });
/// ```
pub struct Once {
    state: AtomicU32,
    queue: WaitQueue,
}

impl Once {
    /// A `Once` that has not run.
    #[cfg(not(loom))]
    pub const fn new() -> Once {
        Once {
            state: AtomicU32::new(INCOMPLETE),
            queue: WaitQueue::new(()),
        }
    }

    /// A `Once` that has not run.
    #[cfg(loom)]
    pub fn new() -> Once {
        Once {
            state: AtomicU32::new(INCOMPLETE),
            queue: WaitQueue::new(()),
        }
    }

    /// Whether an initialiser has completed (without panicking).
    pub fn is_completed(&self) -> bool {
        self.state.load(Ordering::Acquire) & STATUS == COMPLETE
    }

    /// Runs `f` if no initialiser has completed yet; if one is running, parks until it
    /// finishes. When this returns, an initialiser has completed, and its effects are
    /// visible to the caller.
    pub fn call_once(&self, f: impl FnOnce()) {
        if self.is_completed() {
            return;
        }
        let mut f = Some(f);
        self.call_slow(&mut || (f.take().expect("initialiser runs once"))());
    }

    #[cold]
    fn call_slow(&self, f: &mut dyn FnMut()) {
        loop {
            let s = self.state.load(Ordering::Acquire);
            match s & STATUS {
                COMPLETE => return,
                INCOMPLETE => {
                    if self
                        .state
                        .compare_exchange(
                            s,
                            RUNNING | (s & PARKED),
                            Ordering::Acquire,
                            Ordering::Acquire,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    let mut finish = Finish {
                        once: self,
                        to: INCOMPLETE,
                    };
                    f();
                    finish.to = COMPLETE;
                    return;
                }
                _ => {
                    let q = self.queue.lock();
                    let mut s = self.state.load(Ordering::Acquire);
                    let valid = loop {
                        if s & STATUS != RUNNING {
                            break false;
                        }
                        match self.state.compare_exchange(
                            s,
                            s | PARKED,
                            Ordering::Relaxed,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => break true,
                            Err(x) => s = x,
                        }
                    };
                    if !valid {
                        continue;
                    }
                    let _ = self.queue.push(q, 0, None, false, self).wait(
                        None,
                        Dying::Grace("goro::sync::Once (another caller's initialiser)"),
                    );
                }
            }
        }
    }
}

/// Step 2's guard: publishes the outcome and wakes the queue, also when the initialiser
/// unwinds.
struct Finish<'a> {
    once: &'a Once,
    to: u32,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        // Release: the initialiser's writes happen-before a caller's acquire of COMPLETE.
        let prev = self.once.state.swap(self.to, Ordering::AcqRel);
        if prev & PARKED != 0 {
            let mut q = self.once.queue.lock();
            let all = q.grant_all(WOKEN);
            drop(q);
            all.wake();
        }
    }
}

impl Leave<()> for Once {
    fn removed(&self, _kind: u32, q: &mut Queue<()>) -> Wakes {
        if q.is_empty() {
            self.state.fetch_and(!PARKED, Ordering::Relaxed);
        }
        Wakes::none()
    }

    fn abandoned(&self, _kind: u32, _token: u32) {}
}

impl Default for Once {
    fn default() -> Once {
        Once::new()
    }
}

impl fmt::Debug for Once {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Once")
            .field("completed", &self.is_completed())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;

    /// Two racing callers: the initialiser runs once, and the loser sees its effect.
    #[test]
    fn loom_once_runs_once() {
        loom::model(|| {
            let once = loom::sync::Arc::new(Once::new());
            let runs = loom::sync::Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let (o2, r2) = (once.clone(), runs.clone());
            let t = loom::thread::spawn(move || {
                o2.call_once(|| {
                    r2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
                assert_eq!(r2.load(std::sync::atomic::Ordering::Relaxed), 1);
            });
            once.call_once(|| {
                runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            });
            assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 1);
            t.join().unwrap();
            assert_eq!(once.state.load(Ordering::SeqCst), COMPLETE);
        });
    }
}
