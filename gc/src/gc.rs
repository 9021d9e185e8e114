//! `Gc<T>`: the counted handle to a managed object, and its allocation.
//!
//! Every handle counts one in its object's `Header::count` wherever it lives (the root
//! invariant of `DESIGN.md`): clone adds one (and shades while marking), drop subtracts one.
//! A count reaching zero frees nothing by itself unless the object is already DEAD (collected,
//! its value dropped): the collector owns the decision, so the marker never traces memory a
//! mutator freed.
use std::cmp::Ordering as CmpOrdering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, Ordering};

use crate::heap::{self, Header, TypeInfo};
use crate::trace::{Trace, Tracer};

/// What a slot holds: the header, then the value.
#[repr(C)]
pub(crate) struct GcBox<T> {
    pub(crate) header: Header,
    pub(crate) value: T,
}

struct InfoOf<T>(PhantomData<T>);

impl<T: Trace + Send + 'static> InfoOf<T> {
    const INFO: TypeInfo = TypeInfo {
        stride: size_of::<GcBox<T>>(),
        align: align_of::<GcBox<T>>(),
        trace: trace_erased::<T>,
        drop: drop_erased::<T>,
        name: std::any::type_name::<T>,
    };
}

/// # Safety
/// `h` is the header of a live `GcBox<T>` whose value is not being dropped.
unsafe fn trace_erased<T: Trace>(h: *const Header, t: &mut Tracer) {
    // SAFETY: per the contract, `h` heads a `GcBox<T>` (spans hold one type).
    let b = unsafe { &*(h as *const GcBox<T>) };
    b.value.trace(t)
}

/// # Safety
/// `h` heads a `GcBox<T>` whose value is initialised and dropped by nobody else, ever again.
unsafe fn drop_erased<T>(h: *mut Header) {
    // SAFETY: per the contract.
    unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*(h as *mut GcBox<T>)).value)) }
}

/// A shared, garbage-collected pointer to a `T`. Cloning it makes another handle to the same
/// object; the object is freed when no handle can reach it, cycles included.
///
/// `Gc<T>` is `Send`/`Sync` exactly when `Arc<T>` would be. Dereferencing a handle to an object
/// that was collected (possible only from a `Drop` of an object collected in the same cycle, or
/// a handle such a `Drop` stored somewhere) panics instead of reading a dropped value.
pub struct Gc<T: 'static> {
    ptr: NonNull<GcBox<T>>,
    _owns: PhantomData<T>,
}

// SAFETY: as `Arc<T>`: the value is shared between threads (needs `Sync`) and may be dropped on
// another thread (the finalizer, needs `Send`).
unsafe impl<T: Send + Sync> Send for Gc<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Gc<T> {}

impl<T: Trace + Send + 'static> Gc<T> {
    /// Moves `value` into a new managed object.
    pub fn new(value: T) -> Gc<T> {
        let info: &'static TypeInfo = &InfoOf::<T>::INFO;
        let (span, idx) = heap::alloc(info);
        let raw = span.slot(idx & !heap::FLAGS) as *mut GcBox<T>;
        // SAFETY: `alloc` returned a free slot of a span for `T`'s TypeInfo: sized and aligned
        // for a `GcBox<T>`, and not visible to anyone until `publish`.
        unsafe {
            ptr::write(
                raw,
                GcBox {
                    header: Header {
                        count: std::sync::atomic::AtomicU32::new(1),
                        internal: std::sync::atomic::AtomicU32::new(0),
                    },
                    value,
                },
            );
        }
        // NEW until `after_publish`; Release, so a collector that reads NEW (and then shades
        // and traces the object) sees the value written.
        span.epoch(idx & !heap::FLAGS)
            .store(heap::NEW_EPOCH, Ordering::Release);
        heap::publish(span, idx);
        crate::collector::after_publish(span, idx & !heap::FLAGS, raw as *const Header);
        let gc = Gc {
            ptr: NonNull::new(raw).expect("slot"),
            _owns: PhantomData,
        };
        if idx & heap::REFILLED != 0 {
            crate::collector::throttle();
            // Allocation is a safepoint: now and then, let sysmon's preemption request in (an
            // allocating loop would otherwise keep its P from timers and other goroutines).
            goro_runtime::preempt_point();
        }
        gc
    }
}

impl<T: 'static> Gc<T> {
    fn header(&self) -> &Header {
        // SAFETY: a handle keeps its object allocated (its count is ≥ 1, and a slot is freed
        // only when a DEAD object's count reaches zero).
        unsafe { &(*self.ptr.as_ptr()).header }
    }

    pub(crate) fn header_ptr(&self) -> *const Header {
        self.ptr.as_ptr() as *const Header
    }

    pub(crate) fn header_ref(&self) -> &Header {
        self.header()
    }

    pub(crate) fn box_ptr(&self) -> NonNull<GcBox<T>> {
        self.ptr
    }

    /// A new counted handle to the object at `ptr`, as `clone` makes.
    ///
    /// # Safety
    /// The object must be allocated and live (something keeps it alive meanwhile).
    pub(crate) unsafe fn clone_from_raw(ptr: NonNull<GcBox<T>>) -> Gc<T> {
        let borrowed = std::mem::ManuallyDrop::new(Gc {
            ptr,
            _owns: PhantomData,
        });
        (*borrowed).clone()
    }

    /// The handle whose count someone took earlier (`clone_from_raw` then `forget`).
    ///
    /// # Safety
    /// One count of the object at `ptr` must be owned by the caller and is given to the result.
    pub(crate) unsafe fn from_raw_counted(ptr: NonNull<GcBox<T>>) -> Gc<T> {
        Gc {
            ptr,
            _owns: PhantomData,
        }
    }

    /// Whether two handles name the same object.
    pub fn ptr_eq(a: &Gc<T>, b: &Gc<T>) -> bool {
        a.ptr == b.ptr
    }

    /// Handles to this object, wherever they are (tests and diagnostics).
    pub fn handle_count(this: &Gc<T>) -> usize {
        (this.header().count.load(Ordering::Relaxed) & heap::COUNT_MASK) as usize
    }

    #[cold]
    pub(crate) fn dead() -> ! {
        panic!(
            "goro: dereferenced a Gc<{}> whose object was collected (a handle that escaped \
             from the Drop of an object collected in the same cycle)",
            std::any::type_name::<T>()
        )
    }
}

impl<T: 'static> Deref for Gc<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        if self.header().is_dead() {
            Self::dead();
        }
        // SAFETY: the object is allocated (see `header`) and not DEAD, so its value is
        // initialised and not dropped; it is only ever shared (`&T`).
        unsafe { &(*self.ptr.as_ptr()).value }
    }
}

impl<T: 'static> Clone for Gc<T> {
    #[inline]
    fn clone(&self) -> Gc<T> {
        let old = self.header().count.fetch_add(1, Ordering::Relaxed);
        if old & heap::COUNT_MASK > (1 << 30) {
            // As `Arc`: a count this high means handles were forgotten in a loop.
            std::process::abort();
        }
        crate::collector::on_new_handle(self.header_ptr());
        Gc {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T: 'static> Drop for Gc<T> {
    #[inline]
    fn drop(&mut self) {
        // Only the drop that takes a DEAD object's count to zero frees it (one RMW decides).
        if self.header().count.fetch_sub(1, Ordering::Release) == heap::DEAD_BIT | 1 {
            fence(Ordering::Acquire);
            heap::free(self.header_ptr());
        }
    }
}

// SAFETY: one edge, the handle itself.
unsafe impl<T: 'static> Trace for Gc<T> {
    #[inline]
    fn trace(&self, t: &mut Tracer) {
        t.edge(self.header_ptr())
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: fmt::Display + 'static> fmt::Display for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: 'static> fmt::Pointer for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&self.ptr, f)
    }
}

impl<T: PartialEq + 'static> PartialEq for Gc<T> {
    fn eq(&self, other: &Gc<T>) -> bool {
        **self == **other
    }
}

impl<T: Eq + 'static> Eq for Gc<T> {}

impl<T: PartialOrd + 'static> PartialOrd for Gc<T> {
    fn partial_cmp(&self, other: &Gc<T>) -> Option<CmpOrdering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: Ord + 'static> Ord for Gc<T> {
    fn cmp(&self, other: &Gc<T>) -> CmpOrdering {
        (**self).cmp(&**other)
    }
}

impl<T: Hash + 'static> Hash for Gc<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl<T: 'static> AsRef<T> for Gc<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: 'static> std::borrow::Borrow<T> for Gc<T> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T: Trace + Send + Default + 'static> Default for Gc<T> {
    fn default() -> Gc<T> {
        Gc::new(T::default())
    }
}

impl<T: Trace + Send + 'static> From<T> for Gc<T> {
    fn from(v: T) -> Gc<T> {
        Gc::new(v)
    }
}
