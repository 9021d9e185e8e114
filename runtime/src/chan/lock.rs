//! `ChanLock`: the lock of one channel (Go's `hchan.lock`), taken and released explicitly so a
//! `select` can hold the locks of all its channels at once, in address order (`select.rs`).
//!
//! A test-and-set lock that spins with exponential backoff, then yields the OS thread. A
//! channel's critical sections are a few dozen instructions (no user code runs under it, no
//! value is dropped under it), so a waiter rarely gets past the spinning; Go's runtime lock
//! spins the same way before it sleeps. Rejected: `std::sync::Mutex` (a `select` would have to
//! keep one guard per channel, of different types), a lock that parks the goroutine (the lock
//! is held across the decision to park, it must not itself park).

use crate::loom::{AtomicU8, Ordering};

pub(crate) struct ChanLock {
    locked: AtomicU8,
}

impl ChanLock {
    pub(crate) fn new() -> ChanLock {
        ChanLock {
            locked: AtomicU8::new(0),
        }
    }

    pub(crate) fn lock(&self) {
        if self
            .locked
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        self.lock_slow();
    }

    #[cold]
    fn lock_slow(&self) {
        #[cfg(not(loom))]
        let mut spins = 0u32;
        loop {
            if self.locked.load(Ordering::Relaxed) == 0
                && self
                    .locked
                    .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            if spins < 10 {
                for _ in 0..(1 << spins) {
                    std::hint::spin_loop();
                }
                spins += 1;
            } else {
                // The holder was descheduled by the OS: let it run.
                std::thread::yield_now();
            }
        }
    }

    /// # Safety
    /// The caller holds the lock.
    pub(crate) unsafe fn unlock(&self) {
        self.locked.store(0, Ordering::Release);
    }
}
