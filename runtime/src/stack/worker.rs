//! The stack worker: one background thread per process that does the page work of the slot
//! pool off the goroutines' critical path, on demand.
//!
//! Jobs, each requested per size class by setting its bit (a request for a class already
//! pending is a no-op):
//! 1. **Prepare** (`Job::Prepare`): a fresh slot costs its spawner ~0.5 µs of guard installation
//!    and a ~2–4 µs first-touch page fault (zeroing): kernel work, the floor of spawning on fresh
//!    slots. When spawning outruns the free lists, the worker claims batches of 256 slots
//!    *outside the class lock*, installs their guards, commits each top page and puts them on
//!    the class's `ready` list, up to `READY_HIGH`. Spawners take ready slots before cold ones
//!    and carve inline only when the stock is empty, so during a burst both cores do page work.
//! 2. **Scrub** (`Job::Scrub`): freed slots arrive on the `dirty` list; the worker releases the
//!    pages below their top page with batched `MADV_DONTNEED` and moves them to the warm list
//!    (`pool::settle_warm`), so finishing a goroutine costs no system call.
//! 3. **Unstock**: when no prepare request has come for `UNSTOCK_AFTER` (1 s, the burst is
//!    over), the prepared slots still on a class's `ready` list release their top pages and go
//!    back to its `cold` list (Go's background scavenger returns idle memory the same way).
//!
//! Protocol: a slot is on at most one list at a time, and the worker takes the slots it works
//! on *off* the lists (under the class lock) before touching their pages, then publishes them
//! again. So no spawner can be handed a slot whose pages are being released or prepared.
//!
//! The thread starts on the first request and then sleeps on a condition variable while there
//! is nothing to do. If it cannot be started, spawners carve inline and freeing threads scrub
//! inline: slower, same behaviour.
//!
//! Rejected: preparing eagerly at start-up (memory for goroutines that may never exist), and
//! committing top pages with `MADV_POPULATE_WRITE` batches (measured no cheaper than a fault).

use super::madvise::{self, PAGE};
use super::pool::{self, class_size, NUM_CLASSES, SLOTS_CARVED};
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, OnceLock};

/// Prepared stock per class: refill below `READY_LOW`, up to `READY_HIGH` slots. 1,024 top
/// pages is 4 MiB at 256 KiB slots: enough to keep a spawn burst supplied while the worker
/// works one batch ahead (a million-goroutine burst spawned no slower than with 4,096), and
/// what is left lying around after a burst is counted in every connection of a server that
/// accepted them in one (it was 0.8 KB per connection of 10,000 with 4,096).
pub(super) const READY_LOW: usize = 512;
const READY_HIGH: usize = 1024;
/// A class's prepared stock is released when no spawn asked for more for this long.
const UNSTOCK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// Slots per preparation batch: one `process_madvise` for their guards.
const PREPARE_BATCH: usize = 256;
/// Dirty slots that make a scrub worth waking the worker for, and the most it takes at once.
pub(super) const SCRUB_BATCH: usize = 256;
const SCRUB_MAX: usize = madvise::BATCH;

#[derive(Clone, Copy)]
pub(super) enum Job {
    Prepare,
    Scrub,
}

#[derive(Default)]
struct Pending {
    /// Bit `c`: class `c` wants its ready stock refilled / its dirty list scrubbed.
    prepare: u32,
    scrub: u32,
}

struct Worker {
    pending: Mutex<Pending>,
    cv: Condvar,
    running: bool,
}

static WORKER: OnceLock<Worker> = OnceLock::new();

fn worker() -> &'static Worker {
    WORKER.get_or_init(|| {
        let running = std::thread::Builder::new()
            .name("goro-stacks".into())
            .spawn(run)
            .is_ok();
        Worker {
            pending: Mutex::new(Pending::default()),
            cv: Condvar::new(),
            running,
        }
    })
}

/// Asks the worker to do `job` for `class`. Returns false if there is no worker thread (the
/// caller then does the work itself, or does without).
pub(super) fn request(job: Job, class: u8) -> bool {
    let w = worker();
    if !w.running {
        return false;
    }
    let mut p = w.pending.lock().unwrap_or_else(|e| e.into_inner());
    let bits = match job {
        Job::Prepare => &mut p.prepare,
        Job::Scrub => &mut p.scrub,
    };
    if *bits & (1 << class) == 0 {
        *bits |= 1 << class;
        w.cv.notify_one();
    }
    true
}

fn run() {
    // `worker()` is still initialising the cell while this thread starts.
    let w = loop {
        match WORKER.get() {
            Some(w) => break w,
            None => std::thread::yield_now(),
        }
    };
    // Classes with prepared stock that no spawn has asked for since (job 3).
    let mut stocked = 0u32;
    loop {
        let mut p = w.pending.lock().unwrap_or_else(|e| e.into_inner());
        while p.prepare == 0 && p.scrub == 0 {
            if stocked == 0 {
                p = w.cv.wait(p).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let (q, timeout) =
                w.cv.wait_timeout(p, UNSTOCK_AFTER)
                    .unwrap_or_else(|e| e.into_inner());
            p = q;
            if timeout.timed_out() && p.prepare == 0 && p.scrub == 0 {
                drop(p);
                for class in (0..NUM_CLASSES as u8).filter(|c| stocked & (1 << c) != 0) {
                    unstock(class);
                }
                stocked = 0;
                p = w.pending.lock().unwrap_or_else(|e| e.into_inner());
            }
        }
        let Pending { prepare, scrub } = std::mem::take(&mut *p);
        drop(p);
        stocked |= prepare;
        // Preparing first: a spawner waiting on fresh slots is on the critical path.
        for class in (0..NUM_CLASSES as u8).filter(|c| prepare & (1 << c) != 0) {
            refill(class);
        }
        for class in (0..NUM_CLASSES as u8).filter(|c| scrub & (1 << c) != 0) {
            self::scrub(class);
        }
    }
}

/// Prepares batches until the class's ready stock reaches `READY_HIGH`.
fn refill(class: u8) {
    let size = class_size(class);
    loop {
        let slots = {
            let mut st = pool::lock(class);
            if st.ready.len() >= READY_HIGH {
                return;
            }
            match pool::claim(class, &mut st, PREPARE_BATCH) {
                Ok(s) => s,
                Err(_) => return, // spawners will meet and report the error themselves
            }
        };
        if madvise::install_guards(&slots).is_err() {
            return; // as above; the claimed range stays unused
        }
        for &lo in &slots {
            // SAFETY: the slot was just claimed by this thread from a live reservation and is
            // on no list, so no one else uses it until it is published below; its top page is
            // mapped read-write. Writing one byte commits the page.
            unsafe { std::ptr::write_volatile((lo + size - 8) as *mut u8, 0) };
        }
        SLOTS_CARVED.fetch_add(slots.len(), Ordering::Relaxed);
        pool::lock(class).ready.extend(slots.into_iter().rev());
    }
}

/// Job 3: the burst is over (no request for `UNSTOCK_AFTER`): the class's prepared slots give
/// their top pages back and become cold again (guards kept), so a server that accepted
/// thousands of connections in one burst does not keep megabytes of stacks no one uses.
fn unstock(class: u8) {
    let slots: Vec<usize> = std::mem::take(&mut pool::lock(class).ready);
    if !slots.is_empty() {
        // SAFETY: prepared slots have never been handed out (nothing runs on them or points
        // into them), and they were taken off the ready list just now.
        unsafe { pool::make_cold(class, slots) };
    }
}

/// Releases the deep pages of the class's dirty slots and moves them to the warm list.
pub(super) fn scrub(class: u8) {
    let size = class_size(class);
    loop {
        let batch: Vec<usize> = {
            let mut st = pool::lock(class);
            let n = st.dirty.len().min(SCRUB_MAX);
            if n == 0 {
                return;
            }
            // The oldest: the newest are the likeliest to be reused (warm in cache) first.
            st.dirty.drain(..n).collect()
        };
        let deep: Vec<libc::iovec> = batch
            .iter()
            .map(|&lo| libc::iovec {
                iov_base: (lo + PAGE) as *mut libc::c_void,
                iov_len: size - 2 * PAGE,
            })
            .collect();
        // SAFETY: these slots are free (freed only after their coroutine finished, so nothing
        // points into them) and were taken off the dirty list above, so no one can be handed
        // them until `settle_warm` publishes them. The ranges exclude guard and top page.
        unsafe { madvise::release(&deep) };
        pool::settle_warm(class, batch);
    }
}
