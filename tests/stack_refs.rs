//! References into a goroutine's stack survive switches, parks and migration between OS
//! threads: the six safe-Rust patterns a relocating stack would corrupt, each created, then
//! held across yields and parks (on four Ps, so goroutines move between Ms) while other
//! goroutines churn their own stacks, then checked.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Times a goroutine came back from `switch_around` on another OS thread than it left.
static MOVED: AtomicUsize = AtomicUsize::new(0);

/// Lets other goroutines run, both by yielding and by parking (woken by a helper goroutine,
/// which may run on another M: the woken goroutine is then readied there and migrates).
fn switch_around() {
    let tid = std::thread::current().id();
    for _ in 0..3 {
        goro::yield_now();
    }
    let me = goro::current();
    let waker = goro::go!(me.unpark());
    goro::park();
    waker.join().unwrap();
    if std::thread::current().id() != tid {
        MOVED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Goroutines that grow and dirty their own stacks meanwhile.
fn churn() -> Vec<goro::JoinHandle<u64>> {
    (0..8)
        .map(|k| {
            goro::spawn(move || {
                let mut acc = 0u64;
                for _ in 0..5 {
                    let buf = black_box([k as u8 ^ 0x5a; 16 << 10]);
                    acc += buf.iter().map(|&b| b as u64).sum::<u64>();
                    goro::yield_now();
                }
                acc
            })
        })
        .collect()
}

/// Four copies of `f` at once on a runtime of four Ps, among churning goroutines.
fn run_four_among_churn(builder: goro::Builder, f: impl Fn() + Clone + Send + 'static) {
    builder.max_procs(4).run(move || {
        let others = churn();
        let hs: Vec<_> = (0..4).map(|_| goro::spawn(f.clone())).collect();
        for h in hs {
            h.join().unwrap();
        }
        for o in others {
            o.join().unwrap();
        }
    });
}

/// Runs four copies of the pattern `f` at once on four Ps among churning goroutines: once as
/// goroutines run by default (each on one thread), then, with migration allowed, in rounds
/// until some goroutine has migrated between threads across a switch (so the references were
/// held across a move between Ms, not just a switch on one M: stacks never move either way).
fn with_churn(f: impl Fn() + Clone + Send + 'static) {
    // One test at a time: a `run` joins a runtime already running, settings and all.
    static SERIAL: Mutex<()> = Mutex::new(());
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    run_four_among_churn(goro::Builder::new(), f.clone());
    let before = MOVED.load(Ordering::Relaxed);
    for _ in 0..50 {
        // SAFETY: the patterns hold references into their own stacks, no thread-bound state.
        let migrating = unsafe { goro::Builder::new().allow_migration() };
        run_four_among_churn(migrating, f.clone());
        if MOVED.load(Ordering::Relaxed) > before {
            return;
        }
    }
    panic!("no goroutine ever migrated between threads");
}

#[test]
fn vec_of_references_to_locals() {
    with_churn(|| {
        let (a, b, c) = (11u64, 22u64, 33u64);
        let v: Vec<&u64> = vec![&a, &b, &c];
        switch_around();
        assert_eq!(v.iter().copied().sum::<u64>(), 66);
    });
}

#[test]
fn boxed_closure_borrowing_a_local() {
    with_churn(|| {
        let base = String::from("stack");
        let n = 40u32;
        let f: Box<dyn Fn(u32) -> String + '_> = Box::new(|x| format!("{base}-{}", n + x));
        switch_around();
        assert_eq!(f(2), "stack-42");
    });
}

#[test]
fn hashmap_keyed_by_slices_of_a_stack_buffer() {
    with_churn(|| {
        let buf: [u8; 64] = std::array::from_fn(|i| b'a' + (i % 26) as u8);
        let mut m: HashMap<&[u8], usize> = HashMap::new();
        for i in 0..8 {
            m.insert(&buf[i * 8..i * 8 + 8], i);
        }
        switch_around();
        for i in 0..8 {
            assert_eq!(m[&buf[i * 8..i * 8 + 8]], i);
        }
        assert_eq!(m.get(&b"abcdefgh"[..]), Some(&0));
    });
}

#[test]
fn scoped_thread_writes_into_a_local() {
    with_churn(|| {
        let mut local = [0u64; 16];
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                for (i, x) in local.iter_mut().enumerate() {
                    *x = i as u64 * 3;
                }
            });
            // The scope is still open while this goroutine switches (and, under migration,
            // maybe moves to another OS thread). The explicit join is what makes the
            // migrating half of `with_churn` finish: the scope's own implicit join parks the
            // OS thread that opened the scope, which after a move is not ours. By default a
            // goroutine never moves, and `tests/thread_bound.rs` leaves the join to the scope.
            switch_around();
            h.join().unwrap();
        });
        switch_around();
        assert_eq!(local.iter().sum::<u64>(), 3 * (0..16).sum::<u64>());
    });
}

#[test]
fn pointer_cast_to_integer() {
    with_churn(|| {
        let value = 0xdead_beef_u64;
        let addr = &value as *const u64 as usize;
        switch_around();
        // SAFETY: `addr` came from a live local of this frame, which has not moved.
        let back = unsafe { *(addr as *const u64) };
        assert_eq!(back, 0xdead_beef);
    });
}

#[test]
fn pinned_waiter_linked_from_a_heap_list() {
    // A waiter node lives on the waiting goroutine's stack; its address sits in a heap list;
    // another goroutine writes through it while the owner is parked (an intrusive wait queue).
    struct Waiter {
        slot: AtomicU64,
        goroutine: goro::Goroutine,
    }
    static LIST: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    with_churn(|| {
        let node = std::pin::pin!(Waiter {
            slot: AtomicU64::new(0),
            goroutine: goro::current()
        });
        LIST.lock().unwrap().push(&*node as *const Waiter as usize);
        let waker = goro::spawn(|| {
            let addr = LIST.lock().unwrap().pop().unwrap();
            // SAFETY: the owner stays parked in this frame until `slot` is set, and the node
            // is pinned there: the address is valid for as long as we use it.
            let w = unsafe { &*(addr as *const Waiter) };
            let g = w.goroutine.clone();
            w.slot.store(42, Ordering::Release);
            g.unpark();
        });
        let tid = std::thread::current().id();
        while node.slot.load(Ordering::Acquire) == 0 {
            goro::park();
        }
        if std::thread::current().id() != tid {
            MOVED.fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(node.slot.load(Ordering::Relaxed), 42);
        waker.join().unwrap();
        switch_around();
    });
}

/// Recursion 200 KiB deep, passing a reference to each caller's local down the chain; every
/// frame checks its parent's value on the way back up (after yields along the way down).
fn deep(depth: usize, top: usize, parent: &AtomicUsize, sum: &AtomicUsize) -> (usize, usize) {
    let mine = AtomicUsize::new(depth);
    let here = &mine as *const AtomicUsize as usize;
    let pad = black_box([depth as u8; 128]);
    if depth.is_multiple_of(64) {
        goro::yield_now();
    }
    let (frames, deepest) = if top - here >= 200 << 10 {
        (depth, here)
    } else {
        deep(depth + 1, top, &mine, sum)
    };
    assert_eq!(
        parent.load(Ordering::Relaxed),
        if depth == 0 { 1000 } else { depth - 1 }
    );
    sum.fetch_add(mine.load(Ordering::Relaxed), Ordering::Relaxed);
    black_box(&pad);
    (frames, deepest)
}

#[test]
fn recursion_to_200_kib_with_references_to_caller_locals() {
    let used = goro::run(|| {
        let h = goro::spawn(|| {
            let top = 0u8;
            let top = &top as *const u8 as usize;
            let root = AtomicUsize::new(1000);
            let sum = AtomicUsize::new(0);
            let (frames, deepest) = deep(0, top, &root, &sum);
            assert_eq!(sum.load(Ordering::Relaxed), (0..=frames).sum::<usize>());
            top - deepest
        });
        h.join().unwrap()
    });
    assert!(
        used >= 200 << 10,
        "recursion used only {used} bytes of stack"
    );
}
