//! Memory for goroutine descriptors (G cells): size classes carved from 1 MiB `mmap` chunks,
//! with per-thread caches in front of one global free list per class.
//!
//! Why not the global allocator: a million spawns allocate a million 128-byte cells, and
//! glibc grows a thread arena with one `mprotect` per page of growth (43,871 calls for 1M
//! goroutines, measured). Each takes the address-space write lock, which stalls the page faults
//! that spawning on fresh stacks is made of, on both cores: fresh 1M spawns took 2.2–3.0 s that
//! way and 1.3 s with the arena pre-grown. Chunks come straight from `mmap` (one call per
//! 1 MiB), and the hot path is a thread-local pop or push.
//!
//! Like Go's `g` structs (which Go never frees), cells are reused, never returned to the
//! kernel: the memory kept is the peak number of live goroutines times the cell size.
//!
//! Layouts larger than the biggest class (a goroutine returning a big value inline) or more
//! aligned than 64 go to the global allocator.

use std::alloc::Layout;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Cell sizes: multiples of 64 (a cache line; also the largest alignment served) up to 1 KiB.
const CLASSES: [usize; 7] = [128, 192, 256, 384, 512, 768, 1024];
const MAX_ALIGN: usize = 64;
const CHUNK: usize = 1 << 20;
/// Cells a thread cache holds per class before half go to the global list.
const CACHE_CAP: usize = 1024;
const TRANSFER: usize = 512;

static GLOBAL: [Mutex<Vec<usize>>; CLASSES.len()] = [const { Mutex::new(Vec::new()) }; 7];

struct Cache {
    free: [Vec<usize>; CLASSES.len()],
}

impl Drop for Cache {
    fn drop(&mut self) {
        for (c, list) in self.free.iter_mut().enumerate() {
            global(c).append(list);
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache { free: [const { Vec::new() }; CLASSES.len()] })
    };
}

fn global(class: usize) -> std::sync::MutexGuard<'static, Vec<usize>> {
    GLOBAL[class].lock().unwrap_or_else(|e| e.into_inner())
}

fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > MAX_ALIGN {
        return None;
    }
    CLASSES.iter().position(|&s| s >= layout.size())
}

/// Fills `out` with free cells of `class`: from the global list, else from a new chunk.
fn refill(class: usize, out: &mut Vec<usize>) -> bool {
    let mut g = global(class);
    if !g.is_empty() {
        let n = g.len().min(TRANSFER);
        let at = g.len() - n;
        out.extend(g.drain(at..));
        return true;
    }
    drop(g);
    // SAFETY: a fresh anonymous private mapping at a kernel-chosen address aliases nothing.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            CHUNK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return false;
    }
    let size = CLASSES[class];
    // Reversed, so cells are handed out in address order (pops come from the back).
    out.extend((0..CHUNK / size).rev().map(|i| base as usize + i * size));
    true
}

/// Allocates memory for `layout` (never zero-sized here: a G cell has a header).
pub(crate) fn alloc(layout: Layout) -> NonNull<u8> {
    debug_assert!(layout.size() > 0);
    let Some(class) = class_of(layout) else {
        // SAFETY: `layout` has a non-zero size (a G cell always has its header).
        let p = unsafe { std::alloc::alloc(layout) };
        return NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
    };
    let cell = CACHE
        .try_with(|c| {
            let mut c = c.borrow_mut();
            let list = &mut c.free[class];
            if list.is_empty() && !refill(class, list) {
                return None;
            }
            list.pop()
        })
        .unwrap_or_else(|_| {
            // Thread exiting: go straight to the global list.
            let mut one = Vec::new();
            if refill(class, &mut one) {
                let cell = one.pop();
                global(class).append(&mut one);
                cell
            } else {
                None
            }
        });
    match cell.and_then(|a| NonNull::new(a as *mut u8)) {
        Some(p) => p,
        None => std::alloc::handle_alloc_error(layout),
    }
}

/// Returns memory from [`alloc`] with the same `layout`.
///
/// # Safety
/// `ptr` must come from `alloc(layout)` and not be used afterwards.
pub(crate) unsafe fn free(ptr: NonNull<u8>, layout: Layout) {
    let Some(class) = class_of(layout) else {
        // SAFETY: by the contract, it came from `std::alloc::alloc(layout)` in `alloc`.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
        return;
    };
    let addr = ptr.as_ptr() as usize;
    let kept = CACHE.try_with(|c| {
        let mut c = c.borrow_mut();
        let list = &mut c.free[class];
        list.push(addr);
        if list.len() > CACHE_CAP {
            let spill: Vec<usize> = list.drain(..TRANSFER).collect();
            drop(c);
            global(class).extend(spill);
        }
    });
    if kept.is_err() {
        global(class).push(addr);
    }
}
