//! [`OnceLock`]: a cell written once, std's API, on [`Once`].
//!
//! The value lives in an `UnsafeCell<MaybeUninit<T>>` beside a [`Once`]: it is written only by
//! the `Once`'s single running initialiser, and read only after `Once` reports completion
//! with an acquire load (which the initialiser's release publishes). A panicking initialiser
//! leaves the cell empty and the next caller tries again (`once.rs`).

use super::once::Once;
use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// A cell initialised at most once; concurrent initialisers park until the first finishes.
///
/// ```
/// # extern crate goro_runtime as goro;
/// use goro::sync::OnceLock;
/// static CONFIG: OnceLock<String> = OnceLock::new();
/// goro::run(|| {
///     let hs: Vec<_> = (0..4)
///         .map(|i| goro::spawn(move || CONFIG.get_or_init(|| format!("from {i}")).len()))
///         .collect();
///     hs.into_iter().for_each(|h| assert_eq!(h.join().unwrap(), 6));
///     assert!(CONFIG.set("again".into()).is_err());
/// });
/// ```
pub struct OnceLock<T> {
    once: Once,
    value: UnsafeCell<MaybeUninit<T>>,
    /// The cell owns a `T` (for drop checking).
    _owns: PhantomData<T>,
}

// SAFETY: the cell owns a `T`; moving it moves the `T`.
unsafe impl<T: Send> Send for OnceLock<T> {}
// SAFETY: a shared cell hands out `&T` on any thread (`T: Sync`) and may have the `T`
// created on one thread and dropped on another (`T: Send`); std's bounds.
unsafe impl<T: Send + Sync> Sync for OnceLock<T> {}

impl<T> OnceLock<T> {
    /// An empty cell.
    #[cfg(not(loom))]
    pub const fn new() -> OnceLock<T> {
        OnceLock {
            once: Once::new(),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            _owns: PhantomData,
        }
    }

    /// An empty cell.
    #[cfg(loom)]
    pub fn new() -> OnceLock<T> {
        OnceLock {
            once: Once::new(),
            value: UnsafeCell::new(MaybeUninit::uninit()),
            _owns: PhantomData,
        }
    }

    /// The value, if initialised (never waits).
    pub fn get(&self) -> Option<&T> {
        if self.once.is_completed() {
            // SAFETY: completed (acquire): the value was written and is never written again.
            Some(unsafe { self.get_unchecked() })
        } else {
            None
        }
    }

    /// The value, if initialised, through a unique borrow.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        if self.once.is_completed() {
            // SAFETY: completed, so initialised; `&mut self` excludes every other access.
            Some(unsafe { (*self.value.get()).assume_init_mut() })
        } else {
            None
        }
    }

    /// The value, initialising it with `f` if it is empty. If another caller's initialiser is
    /// running, parks until it finishes (then returns its value, or, if it panicked, tries
    /// `f`). A panic in `f` propagates and leaves the cell empty.
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        let mut f = Some(f);
        self.once.call_once(|| {
            let v = (f.take().expect("initialiser runs once"))();
            // SAFETY: we are the `Once`'s single running initialiser: nothing reads the
            // cell before completion, and it was never written (or we would be complete).
            unsafe { (*self.value.get()).write(v) };
        });
        // SAFETY: `call_once` returns only once an initialiser completed, with acquire.
        unsafe { self.get_unchecked() }
    }

    /// Stores `value` if the cell is empty; otherwise hands it back. Parks while another
    /// initialiser runs (std's behaviour).
    pub fn set(&self, value: T) -> Result<(), T> {
        let mut v = Some(value);
        self.get_or_init(|| v.take().expect("taken once"));
        match v {
            None => Ok(()),
            Some(v) => Err(v),
        }
    }

    /// Takes the value out, leaving the cell empty.
    pub fn take(&mut self) -> Option<T> {
        if !self.once.is_completed() {
            return None;
        }
        self.once = Once::new();
        // SAFETY: it was complete, so initialised; the fresh `Once` marks it empty, so the
        // value is read out exactly once and never dropped in place.
        Some(unsafe { (*self.value.get()).assume_init_read() })
    }

    /// The value, consuming the cell.
    pub fn into_inner(mut self) -> Option<T> {
        self.take()
    }

    /// # Safety
    /// The `Once` has completed.
    unsafe fn get_unchecked(&self) -> &T {
        // SAFETY: per the contract the value is initialised and no longer written.
        unsafe { (*self.value.get()).assume_init_ref() }
    }
}

impl<T> Drop for OnceLock<T> {
    fn drop(&mut self) {
        if self.once.is_completed() {
            // SAFETY: initialised, and this is the last access.
            unsafe { (*self.value.get()).assume_init_drop() };
        }
    }
}

impl<T> Default for OnceLock<T> {
    fn default() -> OnceLock<T> {
        OnceLock::new()
    }
}

impl<T> From<T> for OnceLock<T> {
    fn from(value: T) -> OnceLock<T> {
        let cell = OnceLock::new();
        let _ = cell.set(value);
        cell
    }
}

impl<T: Clone> Clone for OnceLock<T> {
    fn clone(&self) -> OnceLock<T> {
        match self.get() {
            Some(v) => OnceLock::from(v.clone()),
            None => OnceLock::new(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for OnceLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("OnceLock");
        match self.get() {
            Some(v) => d.field(v),
            None => d.field(&format_args!("<uninit>")),
        };
        d.finish()
    }
}
