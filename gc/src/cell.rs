//! `GcCell` and `GcMutex`: the only interior mutability through which a `Gc` can be put into
//! (or taken out of) a managed object after it is built, so the write barrier lives here.
//!
//! Both are a `Slot`: a value and a borrow word the collector can see (`collector::WRITER`,
//! marker readers, user readers). The collector reads a slot's contents as a reader holding a
//! marker slot, and comes back later to one a writer holds (DESIGN.md, "Cells and the
//! marker"). The writer side is a `Writer`, the one place the barrier lives: while a cycle is
//! marking, taking it shades the current pointees (Yuasa deletion) and dropping it shades the
//! pointees it leaves (Dijkstra insertion), every time; outside a cycle each end costs one load
//! and a predictable branch.
use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::collector::{self, MARKER_MASK, READER_ONE, WRITER};
use crate::trace::{Trace, Tracer};

/// Returned by [`GcCell::try_borrow`] when the cell is mutably borrowed.
#[derive(Debug)]
pub struct BorrowError;
/// Returned by [`GcCell::try_borrow_mut`] when the cell is borrowed.
#[derive(Debug)]
pub struct BorrowMutError;

impl fmt::Display for BorrowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("already mutably borrowed")
    }
}
impl fmt::Display for BorrowMutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("already borrowed")
    }
}
impl std::error::Error for BorrowError {}
impl std::error::Error for BorrowMutError {}

/// A value and the borrow word that guards it from the collector's reads (and, in `GcCell`,
/// from other borrows).
struct Slot<T> {
    word: AtomicUsize,
    value: UnsafeCell<T>,
}

impl<T> Slot<T> {
    const fn new(value: T) -> Slot<T> {
        Slot {
            word: AtomicUsize::new(0),
            value: UnsafeCell::new(value),
        }
    }
}

impl<T: Trace> Slot<T> {
    /// Takes the writer side if no user borrow holds it (waiting out collector readers: they
    /// hold it for one trace). Taking it is the deletion half of the barrier.
    #[inline]
    fn write(&self) -> Result<Writer<'_, T>, BorrowMutError> {
        loop {
            match self
                .word
                .compare_exchange_weak(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(cur) if cur & !MARKER_MASK != 0 => return Err(BorrowMutError),
                Err(_) => std::hint::spin_loop(),
            }
        }
        if collector::marking() {
            // SAFETY: we hold the writer side: nobody else reads or writes the value.
            shade_value(unsafe { &*self.value.get() });
        }
        Ok(Writer { slot: self })
    }

    /// The collector's (or a nested barrier shade's) read of the contents.
    fn trace(&self, t: &mut Tracer) {
        collector::trace_cell(&self.word, t, |t| {
            // SAFETY: `trace_cell` runs this only while holding a reader slot, which excludes
            // the writer side.
            unsafe { (*self.value.get()).trace(t) }
        })
    }
}

#[cold]
fn shade_value<T: Trace>(v: &T) {
    collector::shade_with(|t| v.trace(t));
}

/// The writer side of a `Slot`; its drop is the insertion half of the barrier.
struct Writer<'a, T: Trace> {
    slot: &'a Slot<T>,
}

impl<T: Trace> Writer<'_, T> {
    fn get(&self) -> &T {
        // SAFETY: the writer side is held.
        unsafe { &*self.slot.value.get() }
    }

    fn get_mut(&mut self) -> &mut T {
        // SAFETY: the writer side is held, and `&mut self` makes this borrow unique.
        unsafe { &mut *self.slot.value.get() }
    }
}

impl<T: Trace> Drop for Writer<'_, T> {
    fn drop(&mut self) {
        if collector::marking() {
            shade_value(self.get());
        }
        // Only we can change the word while the writer bit is set (collector readers back off).
        self.slot.word.store(0, Ordering::Release);
    }
}

/// `RefCell` for managed objects, with the barrier inside.
///
/// Its borrow word is atomic (the collector reads cells concurrently, so it has to be), which
/// also makes it `Sync` when `T: Send + Sync`, like `RwLock`: a borrow that meets a borrow from
/// another goroutine fails (`try_borrow*`) or panics, exactly as a second borrow on one thread
/// does with `RefCell`, never races. To wait for another goroutine, use [`GcMutex`]. (A `!Sync`
/// cell would make every graph built with it `!Send`, so its objects' `Drop`s could not run on
/// the finalizer, which runs them off the thread that built them.)
pub struct GcCell<T> {
    slot: Slot<T>,
}

// SAFETY: as `RwLock<T>`: shared borrows from several threads hand out `&T` concurrently (needs
// `T: Sync`), a mutable borrow hands `&mut T` to one thread at a time, excluded from every
// other borrow by the atomic word (needs `T: Send`).
unsafe impl<T: Send + Sync> Sync for GcCell<T> {}

impl<T> GcCell<T> {
    /// A new cell holding `value`.
    pub const fn new(value: T) -> GcCell<T> {
        GcCell {
            slot: Slot::new(value),
        }
    }

    /// The value, consuming the cell.
    pub fn into_inner(self) -> T {
        self.slot.value.into_inner()
    }

    /// The value through a unique reference (no borrow, no barrier: nobody else, not even the
    /// collector, can be looking, since a cell inside a managed object is never `&mut`).
    pub fn get_mut(&mut self) -> &mut T {
        self.slot.value.get_mut()
    }
}

impl<T: Trace> GcCell<T> {
    /// Borrows the value; panics if it is mutably borrowed.
    #[track_caller]
    pub fn borrow(&self) -> GcRef<'_, T> {
        self.try_borrow().expect("GcCell already mutably borrowed")
    }

    /// Borrows the value, or `Err` if it is mutably borrowed.
    pub fn try_borrow(&self) -> Result<GcRef<'_, T>, BorrowError> {
        let word = &self.slot.word;
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            if cur & WRITER != 0 {
                return Err(BorrowError);
            }
            match word.compare_exchange_weak(
                cur,
                cur + READER_ONE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(GcRef { cell: self }),
                Err(c) => cur = c,
            }
        }
    }

    /// Mutably borrows the value; panics if it is borrowed.
    #[track_caller]
    pub fn borrow_mut(&self) -> GcRefMut<'_, T> {
        self.try_borrow_mut().expect("GcCell already borrowed")
    }

    /// Mutably borrows the value, or `Err` if it is borrowed.
    pub fn try_borrow_mut(&self) -> Result<GcRefMut<'_, T>, BorrowMutError> {
        Ok(GcRefMut {
            w: self.slot.write()?,
        })
    }

    /// Replaces the value, returning the old one.
    pub fn replace(&self, v: T) -> T {
        std::mem::replace(&mut *self.borrow_mut(), v)
    }
}

// SAFETY: the contents are traced under the collector's reader slot (never while a writer
// holds the cell), each handle once (the value's own `Trace`).
unsafe impl<T: Trace> Trace for GcCell<T> {
    fn trace(&self, t: &mut Tracer) {
        self.slot.trace(t)
    }
}

impl<T: Trace + Default> Default for GcCell<T> {
    fn default() -> Self {
        GcCell::new(T::default())
    }
}

impl<T: Trace + fmt::Debug> fmt::Debug for GcCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_borrow() {
            Ok(v) => f.debug_struct("GcCell").field("value", &*v).finish(),
            Err(_) => f.write_str("GcCell { <borrowed> }"),
        }
    }
}

/// A shared borrow of a [`GcCell`].
pub struct GcRef<'a, T> {
    cell: &'a GcCell<T>,
}

impl<T> Deref for GcRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a reader slot is held: no writer exists.
        unsafe { &*self.cell.slot.value.get() }
    }
}

impl<T> Drop for GcRef<'_, T> {
    fn drop(&mut self) {
        self.cell.slot.word.fetch_sub(READER_ONE, Ordering::Release);
    }
}

/// A mutable borrow of a [`GcCell`]; its drop is the insertion half of the barrier.
pub struct GcRefMut<'a, T: Trace> {
    w: Writer<'a, T>,
}

impl<T: Trace> Deref for GcRefMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.w.get()
    }
}

impl<T: Trace> DerefMut for GcRefMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.w.get_mut()
    }
}

/// A mutex for managed objects shared between goroutines, with the barrier inside. A contended
/// `lock` parks the goroutine (`goro::sync::Mutex`) or blocks a plain thread.
pub struct GcMutex<T> {
    lock: goro_runtime::sync::Mutex<()>,
    slot: Slot<T>,
}

// SAFETY: as `std::sync::Mutex<T>`: the value moves between threads with the lock (`Send`),
// and only the lock holder touches it, besides the collector's reads under a reader slot,
// which exclude the holder.
unsafe impl<T: Send> Send for GcMutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for GcMutex<T> {}

impl<T> GcMutex<T> {
    /// A new mutex holding `value`.
    pub fn new(value: T) -> GcMutex<T> {
        GcMutex {
            lock: goro_runtime::sync::Mutex::new(()),
            slot: Slot::new(value),
        }
    }

    /// The value, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.slot.value.into_inner()
    }

    /// The value through a unique reference.
    pub fn get_mut(&mut self) -> &mut T {
        self.slot.value.get_mut()
    }
}

impl<T: Trace> GcMutex<T> {
    /// Locks, parking the goroutine (or blocking the thread) while another holds it.
    pub fn lock(&self) -> GcMutexGuard<'_, T> {
        let g = self.lock.lock();
        self.enter(g)
    }

    /// Locks if nobody holds it.
    pub fn try_lock(&self) -> Option<GcMutexGuard<'_, T>> {
        self.lock.try_lock().map(|g| self.enter(g))
    }

    fn enter<'a>(&'a self, g: goro_runtime::sync::MutexGuard<'a, ()>) -> GcMutexGuard<'a, T> {
        // The lock excludes other users; only collector readers can be in the word.
        let w = self
            .slot
            .write()
            .expect("GcMutex's word is only taken under its lock");
        GcMutexGuard { w, _g: g }
    }
}

// SAFETY: as `GcCell`'s.
unsafe impl<T: Trace> Trace for GcMutex<T> {
    fn trace(&self, t: &mut Tracer) {
        self.slot.trace(t)
    }
}

impl<T: Trace + Default> Default for GcMutex<T> {
    fn default() -> Self {
        GcMutex::new(T::default())
    }
}

impl<T> fmt::Debug for GcMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GcMutex { .. }")
    }
}

/// The holder of a [`GcMutex`]; its drop is the insertion half of the barrier. (Fields drop
/// in order: the writer side, with its barrier, before the lock.)
pub struct GcMutexGuard<'a, T: Trace> {
    w: Writer<'a, T>,
    _g: goro_runtime::sync::MutexGuard<'a, ()>,
}

impl<T: Trace> Deref for GcMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.w.get()
    }
}

impl<T: Trace> DerefMut for GcMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.w.get_mut()
    }
}
