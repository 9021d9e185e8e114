//! Timers: one heap per P, run by the scheduler (Go's timers since 1.14, `runtime/time.go`).
//!
//! A timer is a [`TimerEntry`]: a deadline and an action (wake a parked goroutine, or call a
//! function, which is how `goro::time`'s channels get their values). It lives in the heap of
//! the P whose goroutine created it; a thread that holds no P (a plain thread, or an M inside
//! `goro::blocking`) uses the process's one fallback timer thread instead.
//!
//! # Who runs them (no thread per timer, no polling loop)
//! 1. The P's own M, at every schedule: one relaxed load of the heap's `next` deadline, and a
//!    clock read only when a timer is pending (`run_own`). The earliest woken goroutine runs
//!    next (Go's timers ready with `next`); the others go to the ring's tail in deadline order.
//! 2. A spinning M looking for work runs the due timers of every P (`run_all`), as Go's
//!    `stealWork` does, so timers of a P whose M is busy elsewhere still fire.
//! 3. An idle M: the first M to go to sleep while timers are pending becomes the *timer
//!    waiter* (`Sched::timer_waiter`, deadline in `Runtime::timer_until`) and sleeps on its
//!    condition variable exactly until the earliest deadline; then it takes an idle P as a
//!    spinner and runs them (2). Adding a timer earlier than the waiter's deadline wakes it to
//!    look again.
//! 4. sysmon, as a backstop: when no M waits for timers (all are busy, or in the moment a
//!    waiter was handed a P for other work) it sleeps at most until the earliest deadline and
//!    wakes an idle P for a due timer.
//!
//! # Why no timer is forgotten
//! Adding to a P's heap stores the heap's `next` (SeqCst), then reads `timer_until` (SeqCst).
//! A would-be waiter stores `timer_until`, then reads every heap's `next` (both SeqCst, under
//! the scheduler lock). So either the adder sees the waiter's deadline and wakes it when its
//! own is earlier, or the waiter sees the new timer. Without a waiter, the adding M holds the
//! P and evaluates its heap at its next schedule and before it sleeps (1, 3). Only a goroutine
//! that holds its P without reaching a preemption point can delay its P's timers; sysmon's
//! 10 ms preemption request and (4) bound that.
//!
//! # Cancelling
//! An entry's state moves once, by compare-and-swap: `PENDING → FIRED` (whoever pops it due)
//! or `PENDING → CANCELLED` (`cancel`, which reports whether the timer was still pending: Go's
//! `Timer.Stop`). A cancelled entry stays in its heap until it is popped or until the heap
//! has doubled since its last clean-up, when one pass drops all of them (amortised O(1) per
//! add, like Go's deleted-timer count), so a loop of `recv_timeout(1h)` calls that finish
//! early cannot grow a heap without bound.
//!
//! Rejected: a timing wheel (cheaper inserts, but coarse and with a per-tick cost while
//! timers exist; Go moved from buckets to per-P heaps for the same reason), one global heap
//! (one lock for every sleep in the program), a thread per timer.

use super::{Here, Runtime};
use crate::g::{self, GRef};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

const PENDING: u8 = 0;
const FIRED: u8 = 1;
const CANCELLED: u8 = 2;

/// `TimerHeap::next` when the heap is empty.
pub(crate) const NONE: u64 = u64::MAX;

/// The process's time origin: timers keep deadlines as nanoseconds since it. Kept twice: as
/// an `Instant` (to convert callers' deadlines) and as the raw `CLOCK_MONOTONIC` reading taken
/// right after it (std's `Instant` on Linux is that clock), so [`now_nanos`] is one vDSO
/// clock read and a subtraction: it runs at every schedule while timers are pending, and
/// `Instant` arithmetic cost ~150 instructions per sleep. The raw origin is later than the
/// `Instant` one by the few nanoseconds between the two reads, so a deadline converted by
/// [`nanos_at`] fires that much late, never early.
fn epoch() -> &'static (Instant, u64) {
    static EPOCH: OnceLock<(Instant, u64)> = OnceLock::new();
    EPOCH.get_or_init(|| {
        let at = Instant::now();
        (at, raw_monotonic_nanos())
    })
}

/// `CLOCK_MONOTONIC` in nanoseconds.
#[inline]
fn raw_monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds since the process's time origin.
#[inline]
pub(crate) fn now_nanos() -> u64 {
    raw_monotonic_nanos().saturating_sub(epoch().1)
}

/// `at` in nanoseconds since the time origin (0 for instants before it).
pub(crate) fn nanos_at(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch().0).as_nanos()).unwrap_or(NONE - 1)
}

/// What a timer does when it fires.
pub(crate) enum Action {
    /// Unpark a goroutine (`park_timeout`, `sleep`).
    Wake(GRef),
    /// Call a function on whichever thread runs the timer; it must be short and must not
    /// switch goroutines (it runs on the scheduler's stack).
    Call(Box<dyn Fn() + Send + Sync>),
    /// Nothing: an entry kept for reuse (`park_until`).
    Idle,
}

/// One timer: fires once, or is cancelled first.
pub(crate) struct TimerEntry {
    when: u64,
    state: AtomicU8,
    action: Action,
}

impl TimerEntry {
    pub(crate) fn new(when: u64, action: Action) -> Arc<TimerEntry> {
        Arc::new(TimerEntry {
            when,
            state: AtomicU8::new(PENDING),
            action,
        })
    }

    /// Stops the timer; true if it had not fired (and now never will).
    pub(crate) fn cancel(&self) -> bool {
        self.state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Claims the firing; true for exactly one of `claim_fire` and `cancel`.
    fn claim_fire(&self) -> bool {
        self.state
            .compare_exchange(PENDING, FIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn is_pending(&self) -> bool {
        self.state.load(Ordering::Relaxed) == PENDING
    }

    /// Runs the action; `to_tail` queues a woken goroutine on the caller's P instead.
    fn fire(&self, to_tail: &mut impl FnMut(GRef)) {
        match &self.action {
            Action::Wake(g) => g::unpark_with(g, to_tail),
            Action::Call(f) => f(),
            Action::Idle => {}
        }
    }
}

struct Item(Arc<TimerEntry>);

impl PartialEq for Item {
    fn eq(&self, o: &Item) -> bool {
        self.0.when == o.0.when
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Item) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    /// Reversed: `BinaryHeap` is a max-heap, the earliest deadline must be on top.
    fn cmp(&self, o: &Item) -> CmpOrdering {
        o.0.when.cmp(&self.0.when)
    }
}

#[derive(Default)]
struct HeapInner {
    heap: BinaryHeap<Item>,
    /// Length after the last clean-up of cancelled entries.
    cleaned_len: usize,
}

/// A P's timers (or the fallback thread's).
pub(crate) struct TimerHeap {
    inner: Mutex<HeapInner>,
    /// Earliest pending deadline, or `NONE`: lets the scheduler skip the lock and the clock.
    next: AtomicU64,
}

impl Default for TimerHeap {
    fn default() -> TimerHeap {
        TimerHeap {
            inner: Mutex::new(HeapInner::default()),
            next: AtomicU64::new(NONE),
        }
    }
}

impl TimerHeap {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeapInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The earliest deadline (a hint: it may be a cancelled entry's).
    pub(crate) fn next(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    fn add(&self, e: Arc<TimerEntry>) {
        let mut h = self.lock();
        if h.heap.len() >= 64 && h.heap.len() >= 2 * h.cleaned_len {
            h.heap.retain(|i| i.0.is_pending());
            h.cleaned_len = h.heap.len();
        }
        h.heap.push(Item(e));
        let top = h.heap.peek().map_or(NONE, |i| i.0.when);
        self.next.store(top, Ordering::SeqCst);
    }

    /// Pops up to `out.len()` entries due at `now` (claiming each) into `out`; drops
    /// cancelled ones met on the way. Returns how many it stored.
    fn take_due(&self, now: u64, out: &mut [MaybeUninit<Arc<TimerEntry>>]) -> usize {
        let mut n = 0;
        let mut h = self.lock();
        while let Some(top) = h.heap.peek() {
            if n == out.len() {
                break;
            }
            if top.0.when > now && top.0.is_pending() {
                break;
            }
            let Item(e) = h.heap.pop().expect("peeked");
            if e.when <= now && e.claim_fire() {
                out[n].write(e);
                n += 1;
            }
        }
        let top = h.heap.peek().map_or(NONE, |i| i.0.when);
        self.next.store(top, Ordering::SeqCst);
        n
    }

    /// Runs up to `limit` due timers; returns how many fired.
    fn run_due(&self, now: u64, limit: usize, to_tail: &mut impl FnMut(GRef)) -> usize {
        // Taken in batches into a stack array (no allocation, and no initialising or dropping
        // of unused slots, per schedule), fired outside the lock: an action may add a timer (a
        // ticker re-arming).
        const BATCH: usize = 32;
        let mut fired = 0;
        while fired < limit && self.next.load(Ordering::Relaxed) <= now {
            let mut due = [const { MaybeUninit::<Arc<TimerEntry>>::uninit() }; BATCH];
            let want = (limit - fired).min(BATCH);
            let n = self.take_due(now, &mut due[..want]);
            for slot in &mut due[..n] {
                // SAFETY: `take_due` initialised the first `n` slots, and each is read once.
                // (Should an action panic, the rest leak: never a double drop.)
                let e = unsafe { slot.assume_init_read() };
                e.fire(to_tail);
            }
            fired += n;
            if n < want {
                break;
            }
        }
        fired
    }

    /// Pending entries (for tests and statistics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().heap.len()
    }
}

/// Arms `e`: on this M's P if the caller holds one, else on the fallback thread.
pub(crate) fn add(e: Arc<TimerEntry>) {
    let e = super::with_here(|h| match h {
        Some(Here { rt, p: Some(p), .. }) => {
            let when = e.when;
            p.timers.add(e);
            rt.timer_added(when);
            None
        }
        _ => Some(e),
    });
    if let Some(e) = e {
        fallback().add(e);
    }
}

/// Parks the calling goroutine `me` until it is unparked or `deadline` passes (may return
/// early, like any park). The timer owns the reference it wakes through.
pub(crate) fn park_until(me: GRef, deadline: Instant) {
    let mut e = match take_spare_entry() {
        Some(mut spare) => {
            let fresh = Arc::get_mut(&mut spare).expect("spare entries are unshared");
            fresh.when = nanos_at(deadline);
            *fresh.state.get_mut() = PENDING;
            fresh.action = Action::Wake(me);
            spare
        }
        None => TimerEntry::new(nanos_at(deadline), Action::Wake(me)),
    };
    add(e.clone());
    crate::park();
    e.cancel();
    // Fired (or cancelled and already cleaned out of its heap): nobody else holds it, so keep
    // the allocation for this M's next sleep instead of a free and a malloc per sleep.
    if let Some(inner) = Arc::get_mut(&mut e) {
        inner.action = Action::Idle; // drops the goroutine reference
        put_spare_entry(e);
    }
}

/// Timer entries kept for reuse by `park_until`, per M (a few: one per goroutine that sleeps
/// at a time on this M is what is reused).
const SPARE_ENTRIES: usize = 16;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Arc<TimerEntry>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runtime thread-locals are read through `#[inline(never)]` accessors (`tls.rs`): the
/// goroutine calling these may resume on another thread between the two calls.
#[inline(never)]
fn take_spare_entry() -> Option<Arc<TimerEntry>> {
    SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten()
}

#[inline(never)]
fn put_spare_entry(e: Arc<TimerEntry>) {
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_ENTRIES {
            s.push(e);
        }
    });
}

impl Runtime {
    /// The earliest deadline over all Ps' heaps, or `NONE`.
    pub(crate) fn earliest_timer(&self) -> u64 {
        self.allp
            .iter()
            .map_while(OnceLock::get)
            .map(|p| p.timers.next())
            .min()
            .unwrap_or(NONE)
    }

    /// After a P's heap got a timer at `when`: wake the timer waiter if it sleeps past it.
    fn timer_added(&self, when: u64) {
        let until = self.timer_until.load(Ordering::SeqCst);
        if until != 0 && when < until {
            self.recheck_timer_waiter();
        }
    }

    /// Runs the due timers of `p`, the caller's own P (step 1); woken goroutines are queued
    /// in deadline order where they run (`Runtime::file`: this M's queue, another M's inbox).
    /// At most as many as the P's ring has room for (under migration they go there: an
    /// overflowing ring sends its oldest half to the global queue, which would put the
    /// earliest sleepers behind later ones); the rest stay due in the heap for the next
    /// schedule.
    pub(crate) fn run_own_timers(&self, m: &super::M, p: &super::P) {
        let next = p.timers.next.load(Ordering::Relaxed);
        if next == NONE {
            return;
        }
        let now = now_nanos();
        if next > now {
            return;
        }
        // The earliest woken goroutine runs next (Go's `ready(gp, next=true)` from timers): a
        // sleeper whose P was busy then runs as soon as that P stops, instead of after a whole
        // queue of time slices; the rest go to the tail in deadline order.
        let mut first = true;
        p.timers.run_due(now, p.room(), &mut |g| {
            let next = std::mem::replace(&mut first, false);
            self.file(m, Some(p), g, next)
        });
    }

    /// Runs the due timers of every P (step 2), filing woken goroutines from `m`, holding
    /// `mine`. Returns how many fired.
    pub(crate) fn run_all_timers(&self, m: &super::M, mine: &super::P) -> usize {
        if self.earliest_timer() == NONE {
            return 0;
        }
        let now = now_nanos();
        self.allp
            .iter()
            .map_while(OnceLock::get)
            .map(|p| {
                p.timers.run_due(now, mine.room(), &mut |g| {
                    self.file(m, Some(mine), g, false)
                })
            })
            .sum()
    }
}

/// The fallback timer thread, for timers armed by threads that hold no P.
struct Fallback {
    heap: TimerHeap,
    cv: Condvar,
    lock: Mutex<()>,
}

fn fallback() -> &'static Fallback {
    static FALLBACK: OnceLock<&'static Fallback> = OnceLock::new();
    FALLBACK.get_or_init(|| {
        let f: &'static Fallback = Box::leak(Box::new(Fallback {
            heap: TimerHeap::default(),
            cv: Condvar::new(),
            lock: Mutex::new(()),
        }));
        std::thread::Builder::new()
            .name("goro-timers".into())
            .spawn(move || f.run())
            .expect("goro: cannot start the timer thread");
        f
    })
}

impl Fallback {
    fn add(&self, e: Arc<TimerEntry>) {
        let when = e.when;
        let before = self.heap.next();
        self.heap.add(e);
        if when < before {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.cv.notify_one();
        }
    }

    fn run(&self) {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = now_nanos();
            // Woken goroutines (none are expected here) go through the normal unpark.
            self.heap.run_due(now, usize::MAX, &mut crate::sched::ready);
            let next = self.heap.next();
            let now = now_nanos();
            if next <= now {
                continue;
            }
            let wait = if next == NONE {
                Duration::from_secs(3600)
            } else {
                Duration::from_nanos(next - now)
            };
            guard = self
                .cv
                .wait_timeout(guard, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting(when: u64, n: &Arc<AtomicUsize>) -> Arc<TimerEntry> {
        let n = n.clone();
        TimerEntry::new(
            when,
            Action::Call(Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            })),
        )
    }

    #[test]
    fn heap_fires_due_in_order_and_skips_cancelled() {
        let h = TimerHeap::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        for w in [30u64, 10, 20, 40] {
            let o = order.clone();
            h.add(TimerEntry::new(
                w,
                Action::Call(Box::new(move || o.lock().unwrap().push(w))),
            ));
        }
        let n = Arc::new(AtomicUsize::new(0));
        let c = counting(15, &n);
        h.add(c.clone());
        assert!(c.cancel());
        assert!(!c.cancel(), "cancel reports a pending timer once");
        assert_eq!(h.next(), 10);
        assert_eq!(h.run_due(25, usize::MAX, &mut |_| {}), 2);
        assert_eq!(*order.lock().unwrap(), vec![10, 20]);
        assert_eq!(n.load(Ordering::SeqCst), 0, "a cancelled timer fired");
        assert_eq!(h.next(), 30);
        assert_eq!(h.run_due(100, usize::MAX, &mut |_| {}), 2);
        assert_eq!(*order.lock().unwrap(), vec![10, 20, 30, 40]);
        assert_eq!(h.next(), NONE);
    }

    #[test]
    fn cancelled_entries_are_cleaned_up() {
        let h = TimerHeap::default();
        let n = Arc::new(AtomicUsize::new(0));
        for i in 0..10_000u64 {
            let e = counting(1_000_000 + i, &n);
            h.add(e.clone());
            e.cancel();
        }
        assert!(h.len() < 200, "{} cancelled entries kept", h.len());
    }

    #[test]
    fn fire_and_cancel_race_has_one_winner() {
        for _ in 0..1000 {
            let n = Arc::new(AtomicUsize::new(0));
            let e = counting(0, &n);
            let h = Arc::new(TimerHeap::default());
            h.add(e.clone());
            let h2 = h.clone();
            let t = std::thread::spawn(move || h2.run_due(1, usize::MAX, &mut |_| {}));
            let cancelled = e.cancel();
            let fired = t.join().unwrap();
            assert_eq!(cancelled as usize + fired, 1);
            assert_eq!(n.load(Ordering::SeqCst), fired);
        }
    }
}
