//! Stack roots: `root!`, a handle that lives on a goroutine's stack and costs no count, and
//! the collector's half of the stack visit (finding those roots in a visited stack).
//!
//! ```text
//!   goro::gc::root!(let r = &node.next);   // r: Root<'_, Node>, derefs to the Node
//!
//!   expands to (the slot's name is the macro's own: user code cannot name it)
//!   let slot;                                     // a RootSlot, #[repr(C)], in this frame
//!   let r = match &node.next { src => { slot = RootSlot::new(src); slot.arm() } };
//!
//!   arm(): rooted = stackscan::root_home(&slot)   // the slot header's `rooted` word, if the
//!          Some: slot = [ROOT_MAGIC][object]       // RootSlot lies on a goroutine stack
//!                rooted = 1; light();              // (uncounted: found by the stack visit)
//!                if marking { shade(object) }
//!          None: count += 1                        // plain thread, async state on the heap,
//!                                                  // the program's own coroutine stack
//!          escape(&slot)                          // an empty asm takes the address: the words stay in
//!                                                  // memory until the drop
//!   drop:  uncounted: magic = 0 (volatile)         counted: count -= 1
//! ```
//!
//! # The invariant
//! **Every object a stack root names is marked in every cycle that overlaps the root's life.**
//! - A root made while a cycle marks shades its object at once (after `rooted = 1` and the
//!   light fence, so the visit's `rooted == 0` shortcut is sound: `runtime::stackscan`).
//! - A root made earlier is in its goroutine's stack memory when the cycle's visit scans it:
//!   parked (under the SCAN bit), at its next switch-out (by its M), or where it stands (a
//!   `SIGURG` handler on its own thread, for one that does not switch out). The scan reads
//!   `[ROOT_MAGIC][object]` pairs from the stack pointer to the top; the object word is
//!   checked against the cycle's span snapshot (allocated slot, not DEAD) before it is
//!   shaded, so a stale or forged magic can only keep garbage one more cycle.
//! - A root off every goroutine stack holds a count instead, as a `Gc` does.
//! - The object is alive when the root is made (the source handle is borrowed until `arm`
//!   returns) and not DEAD (checked: a `Drop` running in a dead cycle gets a panic, not a root
//!   to memory its batch will free).
//!
//! Rejected: a root as a counted handle with a `Pin` (no cheaper than `Gc::clone`, 4.2 ns);
//! a conservative scan of every stack word (finds garbage pointers in dead slots of live
//! frames, and cannot tell a goroutine whose roots are all gone: the magic word can, so the
//! visit clears `rooted` and skips that stack from then on); a live-root count per goroutine
//! (exact, no cheaper, and no help with a goroutine that holds roots and never switches out:
//! see `runtime::stackscan`); `let r = root!(e)` as an expression
//! (the slot would be a temporary whose final address the macro never sees, so "is it on a
//! goroutine stack" would have to be asked at every deref).

use crate::collector;
use crate::gc::{Gc, GcBox};
use crate::heap::{Header, Span, SpanPtr, DEAD_EPOCH};
use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
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
///
/// Safe to misuse: a slot never armed holds nothing; a second `arm` panics; a slot moved
/// after `arm` (safe code can move one it names) cannot be armed again, so nothing
/// dereferences it (the copy left behind on the stack keeps the object alive a while
/// longer, which is only conservative).
#[repr(C)]
pub struct RootSlot<T: 'static> {
    /// What the slot is: `UNARMED`, `COUNTED` (off a goroutine stack: holds a count), or
    /// `ROOT_MAGIC` (an uncounted root on a goroutine stack: what the stack visit looks for,
    /// with the object in the next word). Written through raw pointers only: the scanner
    /// reads it (by assembly) while the slot is shared.
    magic: Cell<usize>,
    ptr: NonNull<GcBox<T>>,
    _not_send: PhantomData<*const T>,
}

const UNARMED: usize = 0;
const COUNTED: usize = 2;

impl<T: 'static> RootSlot<T> {
    /// Not yet a root: the caller keeps `src` borrowed until `arm` returns.
    #[inline]
    pub fn new(src: &Gc<T>) -> RootSlot<T> {
        if src.header_ref().is_dead() {
            Gc::<T>::dead();
        }
        RootSlot {
            magic: Cell::new(UNARMED),
            ptr: src.box_ptr(),
            _not_send: PhantomData,
        }
    }

    /// Makes this slot, now in its final place, a root.
    #[inline]
    pub fn arm(&self) -> Root<'_, T> {
        if self.magic.get() != UNARMED {
            armed_twice();
        }
        let me = self as *const RootSlot<T> as usize;
        match goro_runtime::stackscan::root_home(me) {
            Some(rooted) => {
                self.magic.set(goro_runtime::stackscan::ROOT_MAGIC);
                // A plain store, no load: no dependency chain through the word.
                rooted.store(1, Ordering::Relaxed);
                goro_runtime::stackscan::light();
                collector::on_new_handle(self.ptr.as_ptr() as *const Header);
            }
            None => {
                // SAFETY: the source handle is borrowed by the caller, so the object is live.
                std::mem::forget(unsafe { Gc::clone_from_raw(self.ptr) });
                self.magic.set(COUNTED);
            }
        }
        escape(self as *const RootSlot<T> as *const u8);
        Root { slot: self }
    }
}

/// Lets `p` escape to code the compiler cannot see (an empty `asm!` that takes it and may read
/// or write any memory): from here to the slot's drop, the slot's words are in memory at every
/// call the compiler cannot see through, such as a goroutine's switch-out. `black_box` does
/// the same, by storing the reference and passing its address.
#[inline(always)]
fn escape(p: *const u8) {
    // SAFETY: the asm is empty: it reads and writes nothing; the input only stops the
    // compiler from assuming otherwise.
    unsafe { std::arch::asm!("/* {0} */", in(reg) p, options(nostack, preserves_flags)) };
}

#[cold]
fn armed_twice() -> ! {
    panic!("goro: a root slot was armed twice (use `root!`)")
}

impl<T: 'static> Drop for RootSlot<T> {
    #[inline]
    fn drop(&mut self) {
        let m = self.magic.get();
        if m == goro_runtime::stackscan::ROOT_MAGIC {
            // The scan must not find it any more (the memory becomes other locals' next).
            // SAFETY: our own field, written as the word it is.
            unsafe { std::ptr::write_volatile(self.magic.as_ptr(), UNARMED) }
        } else if m == COUNTED {
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

    /// Shades the object of every root in `words`; `push` gets the newly grey ones. Returns
    /// how many roots there were.
    pub(crate) fn scan(
        &self,
        words: &goro_runtime::stackscan::StackWords,
        epoch: u8,
        mut push: impl FnMut(*const Header),
    ) -> usize {
        words.for_each_root(|w| {
            if w.wrapping_sub(self.lo) >= self.hi - self.lo {
                return;
            }
            if let Some(h) = self.find(w) {
                if collector::try_shade(h, epoch) {
                    push(h);
                }
            }
        })
    }
}

/// The current cycle's index, with the visit's cycle id; `None` outside the stack phase.
pub(crate) static INDEX: Mutex<Option<(u32, Arc<SpanIndex>)>> = Mutex::new(None);

/// The scanner the runtime calls on an M whose goroutine switched out unscanned.
pub(crate) fn scan_at_switch(
    cycle: u32,
    words: &goro_runtime::stackscan::StackWords,
) -> Option<usize> {
    let mut found = None;
    collector::shade_with(|t| {
        let idx = INDEX.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((c, index)) = idx {
            if c == cycle {
                let epoch = t.epoch;
                let mut grey = Vec::new();
                found = Some(index.scan(words, epoch, |h| grey.push(h)));
                t.grey.extend(grey);
            }
        }
    });
    found
}
