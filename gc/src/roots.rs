//! Stack roots: `root!`, a handle that lives on a goroutine's stack and costs no count, and
//! the collector's half of the stack visit (finding those roots among a stack's words).
//!
//! ```text
//!   goro::gc::root!(let r = &node.next);   // r: Root<'_, Node>, derefs to the Node
//!
//!   expands to (the slot's name is the macro's own: user code cannot move or forget it)
//!   let slot;                                     // a RootSlot, in this frame
//!   let r = match &node.next { src => { slot = RootSlot::new(src); slot.arm() } };
//!
//!   arm(): home = stackscan::root_home(&slot)     // the slot header's roots word, if `slot`
//!          Some(home): home += 1; light();         // lies on a goroutine stack
//!                      if marking { shade }        // (uncounted: found by the stack visit)
//!          None:       count += 1                  // plain thread, async state, own coroutine
//!          black_box(&slot)                        // the address escapes: the pointer stays
//!                                                  // in memory until the slot's drop
//! ```
//!
//! # The invariant
//! **Every object a stack root names is marked in every cycle that overlaps the root's life.**
//! - A root made while a cycle marks shades its object at once (after `roots += 1` and the
//!   light fence, so the visit's `roots == 0` shortcut is sound: `runtime::stackscan`).
//! - A root made earlier is on its goroutine's stack when the cycle's visit (or the goroutine's
//!   own M, at its next switch-out) scans it: the slot is in memory from `arm` to its drop,
//!   because its address escaped (`black_box`), and every switch-out is an opaque call. The
//!   scan is conservative: any word that points into an allocated slot of a span of the cycle's
//!   snapshot shades that object (interior pointers included), so a garbage word can only keep
//!   garbage one more cycle.
//! - A root off every goroutine stack (a plain thread, an `async` block's state in a boxed
//!   future, a coroutine stack of the program's own, a `Vec` — impossible: the slot cannot be
//!   named, so not moved) holds a count instead, as a `Gc` does.
//! - The object is alive when the root is made (the source handle is borrowed until `arm`
//!   returns) and not DEAD (checked: a `Drop` running in a dead cycle gets a panic, not a root
//!   to memory its batch will free).
//!
//! Rejected: a root as a counted handle with a `Pin` (no cheaper than `Gc::clone`, 4–5 ns);
//! registering roots in a per-goroutine list (a store and a load per root and per drop on top
//! of the counter, and the list itself would have to be scanned); `let r = root!(e)` as an
//! expression (the slot would be a temporary whose final address the macro never sees, so the
//! check "is it on a goroutine stack" would have to run at every deref).

use crate::collector;
use crate::gc::{Gc, GcBox};
use crate::heap::{Header, Span, SpanPtr, DEAD_EPOCH};
use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Roots an object on the current stack for the rest of the enclosing block:
/// `root!(let r = expr);` where `expr` is a `Gc<T>` or a `&Gc<T>` (often a field read out of a
/// managed object). `r` is a [`Root`], which dereferences to the `T`. On a goroutine's stack
/// the root costs no atomic operation: the collector finds it when it visits the stack. On a
/// plain thread (or anywhere off a goroutine stack, such as the state of a boxed future) it
/// holds a count, like a `Gc`.
///
/// ```
/// use goro_gc::{root, Gc, GcCell, Trace};
/// #[derive(Trace)]
/// struct Node { next: GcCell<Option<Gc<Node>>>, #[gc(skip)] v: u32 }
/// let a = Gc::new(Node { next: GcCell::new(None), v: 1 });
/// *a.next.borrow_mut() = Some(Gc::new(Node { next: GcCell::new(None), v: 2 }));
/// root!(let b = a.next.borrow().as_ref().unwrap());
/// *a.next.borrow_mut() = None; // b is the only path left to node 2
/// goro_gc::collect();
/// assert_eq!(b.v, 2);
/// ```
#[macro_export]
macro_rules! root {
    (let $name:ident = $e:expr) => {
        let __goro_root_slot;
        let $name = match &$e {
            src => {
                __goro_root_slot = $crate::__private::RootSlot::new(src);
                __goro_root_slot.arm()
            }
        };
    };
    (let mut $name:ident = $e:expr) => {
        compile_error!("a root is immutable: `root!(let name = expr)`");
    };
}

/// A rooted object: what `root!` binds. Dereferences to the value; copy it freely within the
/// block (it borrows the block's hidden root slot).
pub struct Root<'a, T: 'static> {
    slot: &'a RootSlot<T>,
}

impl<T: 'static> Clone for Root<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: 'static> Copy for Root<'_, T> {}

impl<'a, T: 'static> Root<'a, T> {
    /// A counted handle to the rooted object (it outlives the block).
    pub fn to_gc(this: Root<'a, T>) -> Gc<T> {
        // SAFETY: the root keeps the object allocated and live for the block (invariant).
        unsafe { Gc::clone_from_raw(this.slot.ptr) }
    }

    /// Whether the root names the object `g` names.
    pub fn ptr_eq(this: Root<'a, T>, g: &Gc<T>) -> bool {
        this.slot.ptr.as_ptr() as *const Header == g.header_ptr()
    }
}

impl<T: 'static> Deref for Root<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: rooted objects are marked in every cycle the root lives through (module
        // invariant), so never DEAD or freed while the slot exists; values are only shared.
        unsafe { &(*self.slot.ptr.as_ptr()).value }
    }
}

impl<T: std::fmt::Debug + 'static> std::fmt::Debug for Root<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// The hidden local behind a `root!`. Not for direct use (hence the `__private` path).
pub struct RootSlot<T: 'static> {
    ptr: NonNull<GcBox<T>>,
    /// The slot header word counting this goroutine's roots (uncounted root), or `None`.
    home: Cell<Option<&'static AtomicUsize>>,
    /// Holds a count (off a goroutine stack). Set by `arm`.
    counted: Cell<bool>,
    _not_send: PhantomData<*const T>,
}

impl<T: 'static> RootSlot<T> {
    /// Not yet a root: the caller keeps `src` borrowed until `arm` returns.
    #[inline]
    pub fn new(src: &Gc<T>) -> RootSlot<T> {
        if src.header_ref().is_dead() {
            Gc::<T>::dead();
        }
        RootSlot {
            ptr: src.box_ptr(),
            home: Cell::new(None),
            counted: Cell::new(false),
            _not_send: PhantomData,
        }
    }

    /// Makes this slot, now in its final place, a root.
    #[inline]
    pub fn arm(&self) -> Root<'_, T> {
        let me = self as *const RootSlot<T> as usize;
        match goro_runtime::stackscan::root_home(me) {
            Some(home) => {
                // Only this goroutine writes its slot's counter: a plain increment.
                home.store(home.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                self.home.set(Some(home));
                goro_runtime::stackscan::light();
                collector::on_new_handle(self.ptr.as_ptr() as *const Header);
            }
            None => {
                // SAFETY: the source handle is borrowed by the caller, so the object is live.
                std::mem::forget(unsafe { Gc::clone_from_raw(self.ptr) });
                self.counted.set(true);
            }
        }
        std::hint::black_box(self);
        Root { slot: self }
    }
}

impl<T: 'static> Drop for RootSlot<T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(home) = self.home.get() {
            // The pointer stays in the slot's memory up to here.
            std::hint::black_box(&self.ptr);
            home.store(home.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
        } else if self.counted.get() {
            // SAFETY: `arm` took a count for this slot; this gives it back.
            drop(unsafe { Gc::from_raw_counted(self.ptr) });
        }
    }
}

// ---- the collector's half of the visit -----------------------------------------------------

/// The spans of a cycle's snapshot by address, for the conservative scan: a stack word is a
/// root if it points into an allocated slot of one of them. Spans made after the snapshot
/// hold only objects allocated black (or NEW, which step C shades), so they need no entry;
/// snapshot spans stay allocated until the next cycle's `release_empty`.
pub(crate) struct SpanIndex {
    spans: Vec<(usize, usize, SpanPtr)>,
    lo: usize,
    hi: usize,
}

// SAFETY: span pointers are addresses of spans shared by design (see `heap::SpanPtr`).
unsafe impl Send for SpanIndex {}
// SAFETY: as above; the index is read-only.
unsafe impl Sync for SpanIndex {}

impl SpanIndex {
    pub(crate) fn new(snapshot: &[SpanPtr]) -> SpanIndex {
        let mut spans: Vec<(usize, usize, SpanPtr)> = snapshot
            .iter()
            .map(|p| {
                let s = p.get();
                let base = s as *const Span as usize;
                (base, base + s.bytes(), *p)
            })
            .collect();
        spans.sort_unstable_by_key(|e| e.0);
        let lo = spans.first().map_or(0, |e| e.0);
        let hi = spans.last().map_or(0, |e| e.1);
        SpanIndex { spans, lo, hi }
    }

    /// The object whose slot contains `addr`, if it is allocated and not DEAD.
    fn find(&self, addr: usize) -> Option<*const Header> {
        let i = self.spans.partition_point(|e| e.0 <= addr).checked_sub(1)?;
        let (_, end, p) = self.spans[i];
        if addr >= end {
            return None;
        }
        let s = p.get();
        let idx = s.slot_containing(addr)?;
        // As step C reads a slot: the bit, then the epoch (a slot freed and reused since the
        // bit was read is NEW, with its value written before its epoch byte).
        if !s.is_allocated(idx) || s.epoch(idx).load(Ordering::SeqCst) == DEAD_EPOCH {
            return None;
        }
        Some(s.slot(idx) as *const Header)
    }

    /// Shades every object a word of `words` points into; `push` gets the newly grey ones.
    pub(crate) fn scan(
        &self,
        words: &goro_runtime::stackscan::StackWords,
        epoch: u8,
        mut push: impl FnMut(*const Header),
    ) {
        words.for_each_in(self.lo, self.hi - self.lo, |w| {
            if let Some(h) = self.find(w) {
                if collector::try_shade(h, epoch) {
                    push(h);
                }
            }
        });
    }
}

/// The current cycle's index, with the visit's cycle id; `None` outside the stack phase.
pub(crate) static INDEX: Mutex<Option<(u32, Arc<SpanIndex>)>> = Mutex::new(None);

/// The scanner the runtime calls on an M whose goroutine switched out unscanned.
pub(crate) fn scan_at_switch(cycle: u32, words: &goro_runtime::stackscan::StackWords) -> bool {
    let mut done = false;
    collector::shade_with(|t| {
        let idx = INDEX.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((c, index)) = idx {
            if c == cycle {
                let epoch = t.epoch;
                let mut grey = Vec::new();
                index.scan(words, epoch, |h| grey.push(h));
                t.grey.extend(grey);
                done = true;
            }
        }
    });
    done
}
