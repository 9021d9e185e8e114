//! `goro::block_on`: runs a `Future` to completion inside a goroutine, parking the goroutine
//! (not its thread) while the future is pending, so async crates can be called from goroutine
//! code.
//!
//! The waker unparks the goroutine (`Goroutine::unpark`); on a plain thread it unparks the
//! thread. It may be cloned, sent anywhere, and called any number of times from any thread,
//! also after `block_on` returned: an unpark token left over is a spurious wake-up of some
//! later park, which every park in goro already tolerates (they all re-check their condition).
//! A wake between a `Pending` poll and the park is not lost: the token makes the park return.
//!
//! The future is pinned on the goroutine's stack. It may hold references into that stack
//! across the park: goroutine stacks never move, and a parked goroutine's pages are never
//! released (only the pages below its stack pointer are given back, and those hold no frame).
//!
//! Rejected: a waker that wakes by polling on another thread (the future would migrate off
//! its goroutine), and a per-`block_on` reactor (goro's netpoller already owns I/O; futures
//! that need tokio's reactor should run inside a tokio runtime's `block_on` on a thread of
//! their own, via `goro::blocking`).

use crate::Goroutine;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Runs `fut` to completion on the calling goroutine and returns its output. While the future
/// is pending the goroutine is parked and its processor runs other goroutines; the future's
/// waker makes it runnable again. On a plain thread it blocks the thread the same way.
///
/// ```
/// # extern crate goro_runtime as goro;
/// goro::run(|| {
///     let v = goro::block_on(async { 40 + 2 });
///     assert_eq!(v, 42);
/// });
/// ```
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let unparker = match crate::try_current() {
        Some(g) => Unparker::Goroutine(g),
        None => Unparker::Thread(std::thread::current()),
    };
    let waker = Waker::from(Arc::new(unparker));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        // `park` parks the goroutine, or the thread outside one; a wake that came after the
        // poll left a token, so this returns at once.
        crate::park();
    }
}

enum Unparker {
    Goroutine(Goroutine),
    Thread(std::thread::Thread),
}

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match &**self {
            Unparker::Goroutine(g) => g.unpark(),
            Unparker::Thread(t) => t.unpark(),
        }
    }
}
