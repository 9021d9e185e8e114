//! Releasing the pages of a parked goroutine's stack below its stack pointer.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Recurses until `bytes` of stack below `top` are in use; returns a checksum of every frame.
#[inline(never)]
fn use_stack_from(top: usize, bytes: usize, depth: usize) -> u64 {
    FRAMES.with(|f| f.set(f.get().max(depth + 1)));
    let buf = black_box([depth as u8; 1000]);
    let here = &buf as *const _ as usize;
    let below = if top - here >= bytes {
        0
    } else {
        use_stack_from(top, bytes, depth + 1)
    };
    below + black_box(&buf)[999] as u64
}

/// Uses `kib` KiB of stack and checks every frame's local came back intact: returns 1.
fn use_stack(kib: usize) -> u64 {
    let top = 0u8;
    let top = &top as *const u8 as usize;
    // Count frames first, then check the checksum against them.
    let frames = FRAMES.with(|f| {
        f.set(0);
        let sum = use_stack_from(top, kib << 10, 0);
        (sum, f.get())
    });
    let (sum, n) = frames;
    assert_eq!(
        sum,
        (0..n).map(|d| d as u8 as u64).sum::<u64>(),
        "a frame's local changed"
    );
    1
}

thread_local! {
    static FRAMES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Slot for these goroutines: room for 200 KiB of frames even in debug builds.
const SLOT: usize = 1 << 20;

#[test]
fn release_below_sp_lowers_committed_and_goroutine_still_runs() {
    goro::run(|| {
        let ready = Arc::new(AtomicBool::new(false));
        let result = Arc::new(AtomicU64::new(0));
        let (r2, res2) = (ready.clone(), result.clone());
        let h = goro::SpawnBuilder::new()
            .stack_size(SLOT)
            .spawn(move || {
                // ~200 KiB deep once, then back to a shallow frame.
                let first = use_stack(200);
                r2.store(true, Ordering::Release);
                let local = [9u8; 512]; // a live local above the stack pointer must survive
                goro::park();
                // Grow into the released range again: the pages come back zeroed and work.
                let again = use_stack(200);
                let sum = black_box(&local).iter().map(|&b| b as u64).sum::<u64>();
                res2.store(first + again + sum, Ordering::Release);
            })
            .unwrap();
        let g = h.goroutine();
        while !ready.load(Ordering::Acquire) {
            goro::yield_now();
        }
        // Make sure it has parked (not merely set the flag).
        while goro::stack::release_below_sp(&g).is_none() {
            goro::yield_now();
        }
        let before = goro::stack::committed_bytes(&g);
        // Pages already released by the call above; grow it again to measure a real drop.
        assert!(
            before < 64 << 10,
            "after release a parked goroutine keeps {before} bytes"
        );

        // A second goroutine: measure before and after explicitly.
        let ready2 = Arc::new(AtomicBool::new(false));
        let rr = ready2.clone();
        let h2 = goro::SpawnBuilder::new()
            .stack_size(SLOT)
            .spawn(move || {
                let v = use_stack(200);
                rr.store(true, Ordering::Release);
                goro::park();
                v + use_stack(10)
            })
            .unwrap();
        let g2 = h2.goroutine();
        while !ready2.load(Ordering::Acquire) {
            goro::yield_now();
        }
        goro::yield_now(); // let it reach park()
        let committed = goro::stack::committed_bytes(&g2);
        assert!(
            committed >= 190 << 10,
            "it used ~200 KiB, committed is {committed}"
        );
        let released = goro::stack::release_below_sp(&g2).expect("parked");
        let after = goro::stack::committed_bytes(&g2);
        assert!(released >= 150 << 10, "released {released}");
        assert!(
            after + (150 << 10) <= committed,
            "committed {committed} -> {after}"
        );
        // Running goroutines cannot be released.
        assert!(goro::stack::release_below_sp(&goro::current()).is_none());

        g.unpark();
        g2.unpark();
        h.join().unwrap();
        let v2 = h2.join().unwrap();
        assert_eq!(v2, 2);
        assert_eq!(result.load(Ordering::Acquire), 2 + 9 * 512);
        // Finished goroutines have no stack.
        assert_eq!(goro::stack::committed_bytes(&g2), 0);
    });
}

#[test]
fn stats_and_trim() {
    goro::run(|| {
        // `try_spawn` takes each stack now (`spawn` would wait for the goroutine's first run).
        let hs: Vec<_> = (0..300)
            .map(|i| goro::try_spawn(move || use_stack(i % 64)).unwrap())
            .collect();
        let s = goro::stack::stats();
        assert!(s.reservations >= 1);
        assert!(s.slots >= 300);
        assert!(s.reserved_bytes >= s.slots * (16 << 10));
        for h in hs {
            h.join().unwrap();
        }
        let before = goro::stack::stats().committed_bytes;
        goro::stack::trim();
        let after = goro::stack::stats().committed_bytes;
        assert!(after < before, "trim released nothing: {before} -> {after}");
    });
}
