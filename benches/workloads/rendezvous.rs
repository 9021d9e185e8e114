//! A minimal rendezvous channel for the scheduler benchmarks (ping-pong, ring) until
//! `goro::chan` exists: Go's unbuffered-channel semantics for **one sender and one receiver at
//! a time** (each benchmark channel has exactly one of each). A send to a waiting receiver
//! hands the value over and returns (the receiver is readied: Go's direct hand-off); otherwise
//! the sender leaves the value and parks until a receiver takes it.
//!
//! One atomic state word instead of a lock, so an operation costs one compare-and-swap or
//! store besides the park/unpark itself:
//!
//! ```text
//!   EMPTY ──send: value + sender handle──▶ SENDER_WAITING ──recv takes both──▶ EMPTY (sender woken)
//!   EMPTY ──recv: receiver handle────────▶ RECEIVER_WAITING ──send: value────▶ DELIVERED (receiver woken)
//!   DELIVERED ──receiver takes the value──▶ EMPTY   (a new send waits for this)
//! ```
//! Cell ownership follows the state: `value` and `sender` belong to the sender until it
//! publishes SENDER_WAITING (then to the receiver); `receiver` belongs to the receiver until it
//! publishes RECEIVER_WAITING (then to the sender); `value` belongs to the receiver once it
//! sees DELIVERED. Each publication is a release, each observation an acquire.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const SENDER_WAITING: u8 = 1;
const RECEIVER_WAITING: u8 = 2;
const DELIVERED: u8 = 3;

pub struct Rendezvous<T> {
    state: AtomicU8,
    value: UnsafeCell<Option<T>>,
    sender: UnsafeCell<Option<goro::Goroutine>>,
    receiver: UnsafeCell<Option<goro::Goroutine>>,
}

// SAFETY: the cells are handed between the one sender and the one receiver by the state
// word's release/acquire edges (module comment); `T: Send` lets the value cross threads.
unsafe impl<T: Send> Sync for Rendezvous<T> {}

impl<T> Default for Rendezvous<T> {
    fn default() -> Self {
        Rendezvous {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(None),
            sender: UnsafeCell::new(None),
            receiver: UnsafeCell::new(None),
        }
    }
}

impl<T> Rendezvous<T> {
    pub fn send(&self, v: T) {
        // Our previous value may still be waiting for its receiver to run and take it (rare:
        // the benchmarks wait for an answer before sending again).
        while self.state.load(Ordering::Acquire) == DELIVERED {
            goro::yield_now();
        }
        // SAFETY: in EMPTY or RECEIVER_WAITING (acquired above), `value` is the sender's
        // until it publishes SENDER_WAITING or DELIVERED.
        unsafe { *self.value.get() = Some(v) };
        if self.state.load(Ordering::Acquire) == EMPTY {
            // SAFETY: `sender` is ours until we publish SENDER_WAITING.
            unsafe { *self.sender.get() = Some(goro::current()) };
            match self.state.compare_exchange(
                EMPTY,
                SENDER_WAITING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // The receiver takes the value, then sets EMPTY and wakes us.
                    while self.state.load(Ordering::Acquire) == SENDER_WAITING {
                        goro::park();
                    }
                    return;
                }
                Err(_) => {
                    // A receiver registered first: hand over directly instead.
                    // SAFETY: not published, still ours.
                    drop(unsafe { (*self.sender.get()).take() });
                }
            }
        }
        debug_assert_eq!(self.state.load(Ordering::Relaxed), RECEIVER_WAITING);
        // SAFETY: RECEIVER_WAITING (acquired) makes the receiver's handle ours.
        let r = unsafe { (*self.receiver.get()).take() }.expect("a waiting receiver");
        self.state.store(DELIVERED, Ordering::Release);
        r.unpark();
    }

    pub fn recv(&self) -> T {
        if self.state.load(Ordering::Acquire) == EMPTY {
            // SAFETY: `receiver` is ours until we publish RECEIVER_WAITING.
            unsafe { *self.receiver.get() = Some(goro::current()) };
            match self.state.compare_exchange(
                EMPTY,
                RECEIVER_WAITING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    while self.state.load(Ordering::Acquire) != DELIVERED {
                        goro::park();
                    }
                    // SAFETY: DELIVERED (acquired) makes the value ours.
                    let v = unsafe { (*self.value.get()).take() }.expect("a delivered value");
                    self.state.store(EMPTY, Ordering::Release);
                    return v;
                }
                Err(_) => {
                    // SAFETY: not published, still ours.
                    drop(unsafe { (*self.receiver.get()).take() });
                }
            }
        }
        debug_assert_eq!(self.state.load(Ordering::Relaxed), SENDER_WAITING);
        // SAFETY: SENDER_WAITING (acquired) makes the value and the sender's handle ours.
        let (v, s) = unsafe { ((*self.value.get()).take(), (*self.sender.get()).take()) };
        self.state.store(EMPTY, Ordering::Release);
        s.expect("a waiting sender").unpark();
        v.expect("a sent value")
    }
}
