//! The managed heap: spans of one type each, their side tables, the per-thread allocation
//! cache and the registry the collector walks.
//!
//! ```text
//!   span (64 KiB, 64 KiB-aligned; a large object's span is rounded up to 64 KiB multiples)
//!   ┌──────────────┬───────────────────┬───────────────┬──────┬─────────┬─────────┬───┐
//!   │ Span header  │ alloc bitmap      │ epoch bytes   │ pad  │ slot 0  │ slot 1  │ … │
//!   │ type, slots, │ one bit per slot  │ one per slot: │      │ GcBox<T>: 8-byte    │   │
//!   │ owner flag   │ (tail bits set)   │ 1..=250, DEAD │      │ header + value      │   │
//!   └──────────────┴───────────────────┴───────────────┴──────┴─────────┴─────────┴───┘
//!   object → span: address & !(64 KiB − 1); slot index: (address − first) / stride
//! ```
//!
//! The rule: **only the thread that owns a span (its `owner` flag, taken with a CAS) sets bits
//! in its bitmap**; the collector only reads them, and a free (the finalizer, or the last
//! handle of an escaped dead object) only clears one. So claiming a slot is "find a zero bit,
//! write the slot, set the bit" with no race against another claim. A slot becomes visible to
//! the collector when its bit is set (SeqCst RMW), after its header, value and epoch byte are
//! written (see `publish`).
//!
//! Spans are registered per type (`TypeHeap`, found through a global map keyed by the type's
//! `TypeInfo` address); the collector snapshots the registry at mark start. Each thread keeps a
//! small direct-mapped table type → owned span (`CACHE`), so the fast path is one TLS lookup,
//! one bitmap word scan and one RMW. A full span is handed back (owner cleared); a thread's
//! spans are handed back when it exits. Empty spans are returned to the allocator by the
//! sweeper (`release_empty`).
//!
//! Rejected: size classes shared by all types (Go's). Type information then has to live per
//! object (8 more bytes: a 24-byte node would take 40 instead of 33) or in a per-span table
//! written at each allocation; one type per span keeps it per span for free, at the cost of a
//! partly used span per type per thread.
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::trace::Tracer;

/// Span size and alignment.
pub(crate) const SPAN: usize = 64 * 1024;
/// Objects larger than this get a span of their own.
pub(crate) const LARGE: usize = 32 * 1024;
/// Epoch byte of an object published but not yet given its epoch (see
/// `collector::after_publish`): never an epoch, never white for the sweep.
pub(crate) const NEW_EPOCH: u8 = 0;
/// Epoch byte of an object found dead (set by the sweeper, kept until the slot is reused).
pub(crate) const DEAD_EPOCH: u8 = 255;
/// `Header::count` bit: the object is dead (its value is dropped or being dropped). It lives in
/// the count word so that "this drop took a dead object's count to zero" is one atomic fact:
/// with the flag in another word, a handle dropped just before the sweep flagged its object
/// (count 1 → 0, then the sweep's +1 and DEAD, then the dropper reads DEAD) freed an object its
/// finalization batch still held (found by the torture test: a batch dropped a poisoned value).
pub(crate) const DEAD_BIT: u32 = 1 << 31;
/// The handle count in `Header::count`.
pub(crate) const COUNT_MASK: u32 = DEAD_BIT - 1;

/// The 8 bytes in front of every value.
#[repr(C)]
pub(crate) struct Header {
    /// Every `Gc` handle to the object, wherever it is, plus one per finalization batch (low 31
    /// bits), and `DEAD_BIT`.
    pub(crate) count: AtomicU32,
    /// The collector's tally of handles inside managed objects (written by the collector only).
    pub(crate) internal: AtomicU32,
}

impl Header {
    #[inline]
    pub(crate) fn is_dead(&self) -> bool {
        self.count.load(Ordering::Acquire) & DEAD_BIT != 0
    }
}

/// What a span knows about its type. One per monomorphized `T`, a promoted constant (a type
/// may end up with two of them across codegen units; that only costs a second span list).
pub(crate) struct TypeInfo {
    /// `size_of::<GcBox<T>>()`: the slot stride.
    pub(crate) stride: usize,
    /// `align_of::<GcBox<T>>()`.
    pub(crate) align: usize,
    /// Traces the value of the object whose header is at the address.
    pub(crate) trace: unsafe fn(*const Header, &mut Tracer),
    /// Drops the value in place.
    pub(crate) drop: unsafe fn(*mut Header),
    /// `type_name::<T>()`, for reports.
    pub(crate) name: fn() -> &'static str,
}

/// The header at the start of every span.
#[repr(C)]
pub(crate) struct Span {
    info: &'static TypeInfo,
    /// Bytes this span occupies (64 KiB, or more for a large object).
    bytes: usize,
    nslots: usize,
    /// Offset of slot 0 from the span's base.
    first: usize,
    /// Offset of the epoch table.
    epochs: usize,
    words: usize,
    /// Owned by a thread's cache (only the owner sets bitmap bits).
    owner: AtomicBool,
    /// Bitmap word where the owner resumes its scan.
    cursor: AtomicUsize,
    /// `⌊2^64 / stride⌋ + 1`: slot index by a multiply instead of a division (exact for
    /// offsets and strides below 2^32; a span's offsets are below 2^16 for every slot's header).
    div_magic: u64,
    /// In its type's `partial` list (set by whoever pushes it, cleared by whoever pops it).
    listed: AtomicBool,
    /// Frees and give-backs in progress (from clearing a bit or the owner flag to listing the
    /// span): `release_empty` must not take a span one of them is still touching.
    freeing: AtomicUsize,
    /// Its type's heap, for frees that must list it.
    heap: &'static TypeHeap,
}

/// Where the parts of a span go for one type.
struct Geometry {
    bytes: usize,
    nslots: usize,
    words: usize,
    epochs: usize,
    first: usize,
}

fn round_up(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

fn geometry(info: &TypeInfo) -> Geometry {
    let hdr = size_of::<Span>();
    let align = info.align.max(8);
    let stride = info.stride.max(8);
    if stride > LARGE {
        let words = 1;
        let epochs = hdr + 8;
        let first = round_up(epochs + 1, align);
        let bytes = round_up(first + stride, SPAN);
        return Geometry {
            bytes,
            nslots: 1,
            words,
            epochs,
            first,
        };
    }
    // Largest n with hdr + 8·⌈n/64⌉ + n + pad + n·stride ≤ SPAN.
    let mut n = (SPAN - hdr) / (stride + 1);
    loop {
        let words = n.div_ceil(64);
        let epochs = hdr + 8 * words;
        let first = round_up(epochs + n, align);
        if first + n * stride <= SPAN {
            return Geometry {
                bytes: SPAN,
                nslots: n,
                words,
                epochs,
                first,
            };
        }
        n -= 1;
    }
}

impl Span {
    fn bitmap(&self) -> &[AtomicU64] {
        let base = self as *const Span as *const u8;
        // SAFETY: the bitmap sits right after the header, `words` words long, inside the span's
        // allocation, which lives as long as `self`; AtomicU64 is valid for any bits (zeroed).
        unsafe {
            std::slice::from_raw_parts(base.add(size_of::<Span>()) as *const AtomicU64, self.words)
        }
    }

    pub(crate) fn epoch(&self, idx: usize) -> &AtomicU8 {
        debug_assert!(idx < self.nslots);
        let base = self as *const Span as *const u8;
        // SAFETY: the epoch table has `nslots` bytes at `epochs`, inside the span's allocation.
        unsafe { &*(base.add(self.epochs + idx) as *const AtomicU8) }
    }

    pub(crate) fn slot(&self, idx: usize) -> *mut Header {
        let base = self as *const Span as *mut u8;
        // SAFETY: `first + idx·stride` is inside the span for `idx < nslots` (geometry).
        unsafe { base.add(self.first + idx * self.info.stride.max(8)) as *mut Header }
    }

    pub(crate) fn info(&self) -> &'static TypeInfo {
        self.info
    }

    /// Bytes the span covers (64 KiB, or a large object's multiple of it).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The slot whose bytes contain `addr` (an interior address included), if any.
    pub(crate) fn slot_containing(&self, addr: usize) -> Option<usize> {
        let first = self as *const Span as usize + self.first;
        let idx = addr.checked_sub(first)? / self.stride();
        (idx < self.nslots).then_some(idx)
    }

    /// Whether slot `idx`'s allocation bit is set.
    pub(crate) fn is_allocated(&self, idx: usize) -> bool {
        self.bitmap()[idx / 64].load(Ordering::SeqCst) & (1 << (idx % 64)) != 0
    }

    pub(crate) fn stride(&self) -> usize {
        self.info.stride.max(8)
    }

    /// Allocated slots now (a popcount of the bitmap, tail bits excluded): read at refills and
    /// by `release_empty` only, so allocation and free keep no counter.
    fn used(&self) -> usize {
        let ones: usize = self
            .bitmap()
            .iter()
            .map(|w| w.load(Ordering::Acquire).count_ones() as usize)
            .sum();
        ones - (self.words * 64 - self.nslots)
    }

    /// Calls `f` for every allocated slot index, reading each bitmap word once.
    pub(crate) fn for_each_allocated(&self, mut f: impl FnMut(usize)) {
        for (w, word) in self.bitmap().iter().enumerate() {
            let mut bits = word.load(Ordering::SeqCst);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let idx = w * 64 + b;
                if idx < self.nslots {
                    f(idx);
                }
            }
        }
    }

    /// The span holding the header at `h`.
    pub(crate) fn of(h: *const Header) -> &'static Span {
        let base = (h as usize) & !(SPAN - 1);
        // SAFETY: every header lives in a span's first 64 KiB (slot 0 of a large span starts
        // below 64 KiB), spans are SPAN-aligned, and a span outlives its allocated slots.
        unsafe { &*(base as *const Span) }
    }

    #[inline]
    pub(crate) fn index_of(&self, h: *const Header) -> usize {
        let off = (h as usize - (self as *const Span as usize) - self.first) as u64;
        let idx = ((off as u128 * self.div_magic as u128) >> 64) as usize;
        debug_assert_eq!(idx, off as usize / self.stride());
        idx
    }
}

/// All spans of one type.
pub(crate) struct TypeHeap {
    info: &'static TypeInfo,
    geo: Geometry,
    spans: Mutex<Vec<SpanPtr>>,
    /// Unowned spans that may have free slots (pushed by `give_back` and by frees in an
    /// unowned span; duplicates and full ones are skipped when popped): a refill takes one in
    /// O(1) instead of scanning every span of the type.
    partial: Mutex<Vec<SpanPtr>>,
}

/// Empty 64 KiB spans kept for reuse (their slots are not zeroed again, only the side tables),
/// at most `POOL_MAX`; beyond that they go back to the allocator.
static POOL: Mutex<Vec<usize>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanPtr(pub(crate) NonNull<Span>);
// SAFETY: a span is shared memory made of atomics and slots whose access the collector's
// protocol governs; the pointer itself is just an address.
unsafe impl Send for SpanPtr {}

impl SpanPtr {
    pub(crate) fn get(&self) -> &'static Span {
        // SAFETY: a span stays allocated until `release_empty` takes it, which it does only
        // when it owns it (so no cache holds it), it has no allocated slot (so no object or
        // handle points into it), no free or give-back has it pinned (`freeing`), and after
        // removing it from the registry and the partial list under their locks; the snapshots
        // that hold span pointers belong to the collector thread, the one caller.
        unsafe { self.0.as_ref() }
    }
}

struct Registry {
    by_type: HashMap<usize, &'static TypeHeap>,
    all: Vec<&'static TypeHeap>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| {
        Mutex::new(Registry {
            by_type: HashMap::new(),
            all: Vec::new(),
        })
    })
}

fn type_heap(info: &'static TypeInfo) -> &'static TypeHeap {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    let key = info as *const TypeInfo as usize;
    if let Some(h) = r.by_type.get(&key) {
        return h;
    }
    let h: &'static TypeHeap = Box::leak(Box::new(TypeHeap {
        info,
        geo: geometry(info),
        spans: Mutex::new(Vec::new()),
        partial: Mutex::new(Vec::new()),
    }));
    r.by_type.insert(key, h);
    r.all.push(h);
    h
}

/// Bytes of spans mapped now (heap_sys / heap_inuse).
pub(crate) static SPAN_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Of those, bytes of empty spans in the pool (heap_sys counts them, heap_inuse does not).
pub(crate) static POOLED_BYTES: AtomicUsize = AtomicUsize::new(0);

impl TypeHeap {
    fn new_span(&'static self) -> SpanPtr {
        let g = &self.geo;
        let layout = Layout::from_size_align(g.bytes, SPAN).expect("span layout");
        let pooled = if g.bytes == SPAN {
            POOL.lock().unwrap_or_else(|e| e.into_inner()).pop()
        } else {
            None
        };
        if pooled.is_some() {
            POOLED_BYTES.fetch_sub(SPAN, Ordering::Relaxed);
        }
        let base = match pooled {
            Some(b) => {
                // SAFETY: a pooled span is an unused SPAN-byte allocation nobody references; its
                // header and side tables (below `first`) are zeroed here, its slots need not be
                // (every slot is written before its bit is set).
                unsafe { ptr::write_bytes(b as *mut u8, 0, g.first) };
                b as *mut u8
            }
            // SAFETY: the layout has a non-zero size.
            None => unsafe { alloc_zeroed(layout) },
        };
        let Some(base) = NonNull::new(base) else {
            std::alloc::handle_alloc_error(layout)
        };
        let span = base.as_ptr() as *mut Span;
        // SAFETY: `base` is a SPAN-aligned allocation of `g.bytes` bytes (fresh and zeroed, or
        // pooled with its side tables zeroed), large enough for the header (geometry), and
        // nobody else knows it yet.
        unsafe {
            ptr::write(
                span,
                Span {
                    info: self.info,
                    bytes: g.bytes,
                    nslots: g.nslots,
                    first: g.first,
                    epochs: g.epochs,
                    words: g.words,
                    // Born owned by its creator: published in the list below before
                    // `take_span` returns it, so another thread must not claim it meanwhile.
                    owner: AtomicBool::new(true),
                    cursor: AtomicUsize::new(0),
                    div_magic: (u64::MAX / self.info.stride.max(8) as u64).wrapping_add(1),
                    listed: AtomicBool::new(false),
                    freeing: AtomicUsize::new(0),
                    heap: self,
                },
            );
        }
        // SAFETY: just initialised.
        let s = unsafe { &*span };
        // Bits past the last slot are set forever, so the claim scan never returns them.
        let tail = g.nslots % 64;
        if tail != 0 {
            s.bitmap()[g.words - 1].store(!0u64 << tail, Ordering::Relaxed);
        }
        if pooled.is_none() {
            SPAN_BYTES.fetch_add(g.bytes, Ordering::Relaxed);
        }
        let p = SpanPtr(NonNull::new(span).expect("non-null"));
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        p
    }

    /// A span with free slots, owned by the caller from now on.
    fn take_span(&'static self) -> SpanPtr {
        loop {
            let p = self.partial.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(p) = p else { break };
            let s = p.get();
            s.listed.store(false, Ordering::SeqCst);
            if s.owner
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue; // a duplicate entry of a span someone owns now
            }
            if s.used() < s.nslots {
                s.cursor.store(0, Ordering::Relaxed);
                return p;
            }
            // Full: unowned again, and listed by the next free in it (or now, if one came in
            // between); pinned meanwhile, as in `give_back`.
            s.freeing.fetch_add(1, Ordering::SeqCst);
            s.owner.store(false, Ordering::SeqCst);
            if s.used() < s.nslots {
                list(p);
            }
            s.freeing.fetch_sub(1, Ordering::SeqCst);
        }
        self.new_span()
    }
}

/// Hands a span back: another thread (or this one, later) may own it.
fn give_back(p: SpanPtr) {
    let s = p.get();
    // Pinned like a free (see `clear_bits`): once the owner flag is clear `release_empty` may
    // take the span, and `list` still reads it (the loom model found this).
    s.freeing.fetch_add(1, Ordering::SeqCst);
    s.owner.store(false, Ordering::SeqCst);
    list(p);
    s.freeing.fetch_sub(1, Ordering::SeqCst);
}

/// Puts an unowned span on its type's partial list unless it is there already. Called after
/// a free in it (SeqCst after the bit is cleared) and when its owner gives it back: whichever
/// of "owner cleared" and "slot freed" comes last sees the other, so a span with a free slot
/// never stays unlisted and unowned.
fn list(p: SpanPtr) {
    let s = p.get();
    if s.owner.load(Ordering::SeqCst) || s.listed.swap(true, Ordering::SeqCst) {
        return;
    }
    s.heap
        .partial
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(p);
}

const CACHE_WAYS: usize = 32;

struct Cache {
    ways: [Option<(usize, SpanPtr)>; CACHE_WAYS],
    /// This thread's allocation counters (registered with `stats` at the first allocation).
    counters: Option<std::sync::Arc<crate::stats::Counters>>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        for (_, p) in self.ways.iter_mut().filter_map(|w| w.take()) {
            give_back(p);
        }
        if let Some(c) = self.counters.take() {
            crate::stats::retire(c);
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const { RefCell::new(Cache { ways: [None; CACHE_WAYS], counters: None }) };
}

/// Claims a free slot of `span` (owned by the caller) or returns `None` if it is full.
fn claim(s: &Span) -> Option<usize> {
    let bm = s.bitmap();
    let start = s.cursor.load(Ordering::Relaxed);
    for k in 0..bm.len() {
        let w = (start + k) % bm.len();
        let bits = bm[w].load(Ordering::Relaxed);
        if bits != !0 {
            let b = (!bits).trailing_zeros() as usize;
            s.cursor.store(w, Ordering::Relaxed);
            return Some(w * 64 + b);
        }
    }
    None
}

/// A slot for one object of `info`'s type: `(span, index)`. The slot is not yet visible to
/// the collector; `publish` makes it so. Refills check the pacer's trigger.
pub(crate) fn alloc(info: &'static TypeInfo) -> (&'static Span, usize) {
    let key = info as *const TypeInfo as usize;
    let way = (key >> 4) % CACHE_WAYS;
    let fast = CACHE.try_with(|c| {
        let mut c = c.borrow_mut();
        if let Some((k, p)) = c.ways[way] {
            if k == key {
                if let Some(i) = claim(p.get()) {
                    if let Some(n) = &c.counters {
                        // Every 256th allocation is a safepoint (see `REFILLED`).
                        let tick = if n.bump(info.stride) % 256 == 0 {
                            REFILLED
                        } else {
                            0
                        };
                        return Some((p.get(), i | tick));
                    }
                }
            }
        }
        c.counters
            .get_or_insert_with(crate::stats::register)
            .bump(info.stride);
        // Refill: hand back the way's span, take one of this type.
        if let Some((_, old)) = c.ways[way].take() {
            give_back(old);
        }
        let (p, i) = refill(info);
        c.ways[way] = Some((key, p));
        Some((p.get(), i | REFILLED))
    });
    match fast {
        Ok(Some(r)) => r,
        // The thread is exiting (its cache is gone): own a span for this one allocation.
        _ => {
            crate::stats::on_alloc_unregistered(info.stride);
            let (p, i) = refill(info);
            // The owner flag is released in `publish_unowned` after the bit is set.
            (p.get(), i | UNOWNED)
        }
    }
}

/// Flag on an index from `alloc` when the span must be handed back after `publish`.
pub(crate) const UNOWNED: usize = 1 << (usize::BITS - 1);
/// Flag on an index from `alloc` on a refill and on every 256th allocation: the caller then
/// offers the scheduler a preemption point (allocation is a safepoint; freed slots are reused
/// in place, so refills alone can be rare).
pub(crate) const REFILLED: usize = 1 << (usize::BITS - 2);
/// Both flags.
pub(crate) const FLAGS: usize = UNOWNED | REFILLED;

/// A span of `info`'s type, owned by the caller, and a free slot in it.
fn refill(info: &'static TypeInfo) -> (SpanPtr, usize) {
    let h = type_heap(info);
    let (p, i) = loop {
        let p = h.take_span();
        match claim(p.get()) {
            Some(i) => break (p, i),
            // Its count was lower than its bits for an instant (a free in progress).
            None => give_back(p),
        }
    };
    crate::collector::on_refill();
    (p, i)
}

/// Makes slot `idx` of `s` visible to the collector: its header, value and epoch byte are
/// written. The SeqCst RMW is the publication point (see the collector's mark start).
pub(crate) fn publish(s: &Span, idx: usize) {
    let (idx, unowned) = (idx & !FLAGS, idx & UNOWNED != 0);
    let old = s.bitmap()[idx / 64].fetch_or(1 << (idx % 64), Ordering::SeqCst);
    assert!(
        old & (1 << (idx % 64)) == 0,
        "goro-gc: slot {idx} claimed twice"
    );
    debug_assert!(
        s.owner.load(Ordering::Relaxed),
        "goro-gc: publish into an unowned span"
    );
    if unowned {
        give_back(SpanPtr(NonNull::from(s)));
    }
}

/// Frees the slot of a dead object whose value was dropped.
pub(crate) fn free(h: *const Header) {
    let s = Span::of(h);
    let idx = s.index_of(h);
    debug_assert_eq!(
        s.epoch(idx).load(Ordering::Relaxed),
        DEAD_EPOCH,
        "goro-gc: free of a live slot"
    );
    let stride = s.stride();
    if cfg!(debug_assertions) {
        // Poison: a use after free reads 0xdb, and `Header::count` 0xdbdbdbdb trips asserts.
        // SAFETY: the slot is ours (its count reached zero on a DEAD object): nobody else
        // reads or writes it until its bit is cleared below.
        unsafe { ptr::write_bytes(h as *mut u8, 0xdb, stride) };
    }
    crate::stats::on_free(stride);
    clear_bits(s, idx / 64, 1 << (idx % 64));
}

/// Clears freed slots' bits and lists the span, pinned against `release_empty` meanwhile: the
/// pin is taken while the slots are still allocated (so the span cannot be released before
/// it), and a release that sees the bits clear sees the pin too (SeqCst).
fn clear_bits(s: &Span, word: usize, mask: u64) {
    s.freeing.fetch_add(1, Ordering::SeqCst);
    s.bitmap()[word].fetch_and(!mask, Ordering::SeqCst);
    list(SpanPtr(NonNull::from(s)));
    s.freeing.fetch_sub(1, Ordering::SeqCst);
}

/// Frees the slots of a finalization batch whose values were dropped and whose counts reached
/// zero: `free` for many, with one bitmap RMW per word and one counter update per batch (the
/// sweep lists objects span by span, so neighbours share words).
pub(crate) fn free_batch(hs: &[usize]) {
    let (mut n, mut bytes) = (0usize, 0usize);
    let mut pending: Option<(&'static Span, usize, u64)> = None;
    let flush = |p: Option<(&'static Span, usize, u64)>| {
        if let Some((s, w, mask)) = p {
            clear_bits(s, w, mask);
        }
    };
    for &h in hs {
        let h = h as *const Header;
        let s = Span::of(h);
        let idx = s.index_of(h);
        let stride = s.stride();
        debug_assert_eq!(
            s.epoch(idx).load(Ordering::Relaxed),
            DEAD_EPOCH,
            "goro-gc: free of a live slot"
        );
        debug_assert!(
            s.bitmap()[idx / 64].load(Ordering::Relaxed) & (1 << (idx % 64)) != 0,
            "goro-gc: double free"
        );
        if cfg!(debug_assertions) {
            // SAFETY: as in `free`: the slot is ours until its bit is cleared.
            unsafe { ptr::write_bytes(h as *mut u8, 0xdb, stride) };
        }
        n += 1;
        bytes += stride;
        let (w, bit) = (idx / 64, 1u64 << (idx % 64));
        match &mut pending {
            Some((ps, pw, mask)) if std::ptr::eq(*ps, s) && *pw == w => *mask |= bit,
            _ => {
                flush(pending.take());
                pending = Some((s, w, bit));
            }
        }
    }
    flush(pending);
    crate::stats::on_free_many(n, bytes);
}

/// Every span of every type, for a cycle.
pub(crate) fn snapshot() -> Vec<SpanPtr> {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for h in &r.all {
        out.extend(
            h.spans
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .copied(),
        );
    }
    out
}

/// Returns spans with no allocated slot and no owner to the allocator. Called by the collector
/// thread only, between cycles' uses of their snapshots.
pub(crate) fn release_empty() {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    for h in &r.all {
        let mut spans = h.spans.lock().unwrap_or_else(|e| e.into_inner());
        let mut partial = h.partial.lock().unwrap_or_else(|e| e.into_inner());
        let mut released = Vec::new();
        let mut backed_off = Vec::new();
        spans.retain(|p| {
            let s = p.get();
            if s.used() != 0
                || s.owner
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
            {
                return true;
            }
            if s.used() != 0 || s.freeing.load(Ordering::SeqCst) != 0 {
                // A free or a give-back that ran while we held the owner flag did not list it
                // (the loom model found this): list it once the locks are released.
                s.owner.store(false, Ordering::SeqCst);
                backed_off.push(*p);
                return true;
            }
            released.push(*p);
            false
        });
        // Out of the partial list too (the lock is held: nobody pops a released span).
        partial.retain(|p| !released.contains(p));
        drop(partial);
        drop(spans);
        for p in backed_off {
            list(p);
        }
        for p in released {
            let bytes = p.get().bytes;
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if bytes == SPAN && pool.len() < POOL_MAX {
                pool.push(p.0.as_ptr() as usize);
                POOLED_BYTES.fetch_add(SPAN, Ordering::Relaxed);
                continue;
            }
            drop(pool);
            SPAN_BYTES.fetch_sub(bytes, Ordering::Relaxed);
            let layout = Layout::from_size_align(bytes, SPAN).expect("span layout");
            // SAFETY: the span is empty (no slot, so no handle or object points into it), owned
            // by us (no cache can claim from it), out of the registry and the partial list (no
            // snapshot outlives this call: the collector, the only holder, is the caller).
            unsafe { dealloc(p.0.as_ptr() as *mut u8, layout) };
        }
    }
}

/// Per-object overhead for a value of `size` bytes and alignment ≤ 8, in bytes (for docs/tests).
pub fn overhead_per_object(size: usize) -> f64 {
    fn nop(_: *const Header, _: &mut Tracer) {}
    fn nodrop(_: *mut Header) {}
    let info = TypeInfo {
        stride: round_up(size + 8, 8),
        align: 8,
        trace: nop,
        drop: nodrop,
        name: || "",
    };
    let g = geometry(&info);
    g.bytes as f64 / g.nslots as f64 - size as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_by_multiply_matches_division() {
        for stride in (8..=40_000usize).step_by(8) {
            let magic = (u64::MAX / stride as u64).wrapping_add(1);
            for off in (0..65_536usize).step_by(stride).chain([65_535]) {
                let q = ((off as u128 * magic as u128) >> 64) as usize;
                assert_eq!(q, off / stride, "stride {stride} off {off}");
            }
        }
    }

    #[test]
    fn a_24_byte_node_takes_under_twice_its_size() {
        let o = overhead_per_object(24);
        assert!(o > 8.0 && o < 10.0, "overhead {o}");
    }
}
