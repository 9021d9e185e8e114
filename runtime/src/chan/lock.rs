//! `ChanLock`: the lock of one channel (Go's `hchan.lock`), taken and released explicitly so a
//! `select` can hold the locks of all its channels at once, in address order (`select.rs`).
//!
//! A test-and-set lock ([`SpinLock`]) that spins with exponential backoff, then yields the OS
//! thread. A channel's critical sections are a few dozen instructions (no user code runs under
//! it, no value is dropped under it), so a waiter rarely gets past the spinning; Go's runtime
//! lock spins the same way before it sleeps. Rejected: `std::sync::Mutex` (a `select` would
//! have to keep one guard per channel, of different types), a lock that parks the goroutine
//! (the lock is held across the decision to park, it must not itself park).
//!
//! Under loom the channel models use a lock built on loom's `Mutex` instead ([`LoomLock`]):
//! the same mutual exclusion and the same acquire/release edges, but a thread that finds it
//! taken is *blocked* (loom does not schedule it until the holder unlocks), where a spinning
//! thread makes loom explore every interleaving of every failed attempt: the close model alone
//! took more than 10 minutes that way. What the channel code does lock-free (the `Selector`
//! claim, the `done` hand-shake, the parking) is unchanged. `SpinLock` itself gets its own small
//! loom model below (`loom_spin_lock_excludes`).

use crate::loom::{AtomicU8, Ordering};

/// The lock of every channel.
#[cfg(not(loom))]
pub(crate) type ChanLock = SpinLock;
/// The lock of every channel, in loom models (see the module comment).
#[cfg(loom)]
pub(crate) type ChanLock = LoomLock;

/// The test-and-set lock (see the module comment).
#[cfg_attr(all(loom, not(test)), allow(dead_code))]
pub(crate) struct SpinLock {
    locked: AtomicU8,
}

#[cfg_attr(all(loom, not(test)), allow(dead_code))]
impl SpinLock {
    pub(crate) fn new() -> SpinLock {
        SpinLock {
            locked: AtomicU8::new(0),
        }
    }

    #[inline]
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
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        self.locked.store(0, Ordering::Release);
    }
}

/// `ChanLock` in loom models: a loom `Mutex` whose guard is kept inside, so the lock can be
/// taken and released by separate calls like `SpinLock`'s.
#[cfg(loom)]
pub(crate) struct LoomLock {
    /// The guard while the lock is held. Declared before `mutex`, so that it is dropped first
    /// if the lock is dropped while held (it borrows `mutex`).
    guard: std::cell::UnsafeCell<Option<Guard<'static>>>,
    /// Boxed, so its address (which the guard borrows) does not change if the lock moves.
    mutex: Box<loom::sync::Mutex<()>>,
}

#[cfg(loom)]
type Guard<'a> = loom::sync::MutexGuard<'a, ()>;

#[cfg(loom)]
impl LoomLock {
    pub(crate) fn new() -> LoomLock {
        LoomLock {
            guard: std::cell::UnsafeCell::new(None),
            mutex: Box::new(loom::sync::Mutex::new(())),
        }
    }

    pub(crate) fn lock(&self) {
        let guard = self.mutex.lock().unwrap();
        // SAFETY: the guard borrows `*self.mutex`, a heap object that lives as long as `self`
        // and outlives the guard: `unlock` or `self`'s drop (field order) drops it first. The
        // `'static` is never observed: the guard is only stored and dropped.
        let guard = unsafe { std::mem::transmute::<Guard<'_>, Guard<'static>>(guard) };
        // SAFETY: we hold the mutex, so no other thread touches `guard` until we release it.
        unsafe { *self.guard.get() = Some(guard) };
    }

    /// # Safety
    /// The caller holds the lock.
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: the caller holds the mutex, so the stored guard is its own; taking it out
        // before dropping it means the slot is no longer touched once the mutex is released.
        let guard = unsafe { (*self.guard.get()).take() };
        assert!(guard.is_some(), "ChanLock::unlock without the lock");
        drop(guard);
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::SpinLock;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    /// The real (spinning) channel lock: two threads increment a counter under it; loom
    /// checks the accesses to the counter never overlap and that both increments are seen.
    #[test]
    fn loom_spin_lock_excludes() {
        struct Shared {
            lock: SpinLock,
            n: UnsafeCell<u32>,
        }
        // SAFETY: `n` is only accessed under `lock`.
        unsafe impl Sync for Shared {}
        fn incr(s: &Shared) {
            s.lock.lock();
            // SAFETY: under the lock (loom checks it).
            s.n.with_mut(|n| unsafe { *n += 1 });
            // SAFETY: locked above.
            unsafe { s.lock.unlock() };
        }
        loom::model(|| {
            let s = Arc::new(Shared {
                lock: SpinLock::new(),
                n: UnsafeCell::new(0),
            });
            let s2 = s.clone();
            let t = thread::spawn(move || incr(&s2));
            incr(&s);
            t.join().unwrap();
            s.lock.lock();
            // SAFETY: under the lock.
            assert_eq!(s.n.with(|n| unsafe { *n }), 2);
            // SAFETY: locked above.
            unsafe { s.lock.unlock() };
        });
    }
}
