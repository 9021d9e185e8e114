//! loom models of the collector's two lock-free hand-offs, written against loom's atomics with
//! the same steps, orderings and checks as the code they model (`cfg(loom)` only; `.ci/run`
//! runs them with `LOOM_MAX_PREEMPTIONS` bounded):
//! 1. mark termination against a mutator's shade (`collector::shade_with` and the T1 loop):
//!    an object a mutator shades is drained before the cycle leaves MARK, or not shaded at all;
//! 2. a span's hand-off between its owner giving it back, a free in it and `release_empty`
//!    (`heap::give_back`, `heap::clear_bits`, `heap::list`, `heap::release_empty`): a span with
//!    a free slot and no owner is always on the partial list, and a span is never released
//!    while a free or a give-back still touches it. (Written after the code; it found two
//!    bugs: `release_empty` backing off without listing, and a give-back reading a span the
//!    collector had just released.)
//! 3. a new object's publication (NEW, the bitmap RMW, the epoch CAS in `after_publish`)
//!    against mark start, step C and the sweep: a live new object is never found white.
//! They model the protocols, not the statics the real code uses (loom's atomics cannot be
//! `static`); a change to either protocol must change its model here too.
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};

const MARK: u64 = 1 << 8;
const DIRTY: u64 = 1 << 9;
const INFLIGHT: u64 = 1 << 16;

#[test]
fn loom_termination_never_loses_a_shade() {
    loom::model(|| {
        let state = Arc::new(AtomicU64::new(MARK));
        let grey = Arc::new(Mutex::new(Vec::<u32>::new()));
        let pushed = Arc::new(AtomicBool::new(false));
        let mutator = {
            let (state, grey, pushed) = (state.clone(), grey.clone(), pushed.clone());
            loom::thread::spawn(move || {
                // `on_new_handle`: the plain check, then `shade_with`.
                if state.load(Ordering::Relaxed) & MARK != 0 {
                    let s = state.fetch_add(INFLIGHT, Ordering::SeqCst);
                    if s & MARK != 0 {
                        grey.lock().unwrap().push(7);
                        pushed.store(true, Ordering::SeqCst);
                        state.fetch_or(DIRTY, Ordering::SeqCst);
                    }
                    state.fetch_sub(INFLIGHT, Ordering::SeqCst);
                }
            })
        };
        // The collector's T1 loop.
        let mut drained = Vec::new();
        loop {
            drained.append(&mut grey.lock().unwrap());
            state.fetch_and(!DIRTY, Ordering::SeqCst);
            drained.append(&mut grey.lock().unwrap());
            let s = state.load(Ordering::SeqCst);
            if s & DIRTY == 0
                && s >> 16 == 0
                && state
                    .compare_exchange(s, s & !MARK & !DIRTY, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                break;
            }
            loom::thread::yield_now();
        }
        mutator.join().unwrap();
        if pushed.load(Ordering::SeqCst) {
            assert_eq!(
                drained,
                [7],
                "a shade pushed during marking was not drained"
            );
        }
        assert!(
            grey.lock().unwrap().is_empty(),
            "a shade was pushed after termination"
        );
    });
}

struct Span {
    owner: AtomicBool,
    listed: AtomicBool,
    freeing: AtomicUsize,
    bitmap: AtomicU64,
    released: AtomicBool,
    partial: Mutex<usize>,
}

impl Span {
    /// `heap::list`.
    fn list(&self) {
        assert!(
            !self.released.load(Ordering::SeqCst),
            "a free touched a released span"
        );
        if self.owner.load(Ordering::SeqCst) || self.listed.swap(true, Ordering::SeqCst) {
            return;
        }
        *self.partial.lock().unwrap() += 1;
    }
}

#[test]
fn loom_span_hand_off_lists_free_spans_and_never_releases_under_a_free() {
    loom::model(|| {
        // Two slots, both allocated; the owner holds the span.
        let s = Arc::new(Span {
            owner: AtomicBool::new(true),
            listed: AtomicBool::new(false),
            freeing: AtomicUsize::new(0),
            bitmap: AtomicU64::new(0b11),
            released: AtomicBool::new(false),
            partial: Mutex::new(0),
        });
        // The finalizer frees both slots (`clear_bits`, one word).
        let freer = {
            let s = s.clone();
            loom::thread::spawn(move || {
                s.freeing.fetch_add(1, Ordering::SeqCst);
                s.bitmap.fetch_and(!0b11, Ordering::SeqCst);
                s.list();
                s.freeing.fetch_sub(1, Ordering::SeqCst);
            })
        };
        // The owner gives it back (`give_back`).
        let owner = {
            let s = s.clone();
            loom::thread::spawn(move || {
                s.freeing.fetch_add(1, Ordering::SeqCst);
                s.owner.store(false, Ordering::SeqCst);
                s.list();
                s.freeing.fetch_sub(1, Ordering::SeqCst);
            })
        };
        // The collector's `release_empty`, once.
        if s.owner
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            if s.bitmap.load(Ordering::SeqCst) == 0 && s.freeing.load(Ordering::SeqCst) == 0 {
                s.released.store(true, Ordering::SeqCst);
            } else {
                s.owner.store(false, Ordering::SeqCst);
                s.list();
            }
        }
        freer.join().unwrap();
        owner.join().unwrap();
        if !s.released.load(Ordering::SeqCst) {
            // Free slots and no owner: it must be findable by a refill.
            assert!(
                s.owner.load(Ordering::SeqCst) || s.listed.load(Ordering::SeqCst),
                "an unowned span with free slots is not on the partial list"
            );
        }
    });
}

#[test]
fn loom_new_object_is_never_swept() {
    use loom::sync::atomic::AtomicU8;
    const NEW: u8 = 0;
    const DEAD: u8 = 255;
    loom::model(|| {
        // The cycle's epoch is 2 (the previous one was 1); the object's slot and bit.
        let state = Arc::new(AtomicU64::new(1));
        let epoch = Arc::new(AtomicU8::new(DEAD)); // the slot's previous occupant was freed
        let bit = Arc::new(AtomicBool::new(false));
        let allocator = {
            let (state, epoch, bit) = (state.clone(), epoch.clone(), bit.clone());
            loom::thread::spawn(move || {
                // `Gc::new`: NEW, publish, then the epoch by CAS (`after_publish`).
                epoch.store(NEW, Ordering::Release);
                bit.swap(true, Ordering::SeqCst); // the bitmap RMW
                                                  // The code's SeqCst load of the state, as an RMW here: loom treats SeqCst as
                                                  // AcqRel, which loses the single total order this step relies on (T0 before
                                                  // C's bitmap read before this publication before this read).
                let e = (state.fetch_add(0, Ordering::SeqCst) & 0xff) as u8;
                let _ = epoch.compare_exchange(NEW, e, Ordering::SeqCst, Ordering::Relaxed);
            })
        };
        // The collector: T0 (an RMW in the code), step C over the slot, then the sweep.
        state.swap(2 | MARK, Ordering::SeqCst);
        let shade = |epoch: &AtomicU8| {
            let mut cur = epoch.load(Ordering::SeqCst);
            while cur != 2 && cur != DEAD {
                match epoch.compare_exchange(cur, 2, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => break,
                    Err(c) => cur = c,
                }
            }
        };
        // C's bitmap read (a SeqCst load in the code; an RMW here, see above).
        if bit.fetch_or(false, Ordering::SeqCst) {
            let e = epoch.load(Ordering::SeqCst);
            // NEW: a root (its allocator holds a handle); an old epoch: count 1 > tally 0.
            if e != DEAD {
                shade(&epoch);
            }
        }
        state.store(2, Ordering::SeqCst); // termination
        let swept = bit.load(Ordering::SeqCst) && {
            let e = epoch.load(Ordering::SeqCst);
            e != 2 && e != NEW && e != DEAD
        };
        allocator.join().unwrap();
        assert!(!swept, "a live new object was found white");
    });
}
