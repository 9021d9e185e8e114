//! The slot pool's memory policy: slots freed beyond a thread's cache have the pages below
//! their top page released (by the stack worker), and reused slots run correctly.
//! Alone in its binary so other tests' stacks do not move the committed-bytes figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Recurses until `kib` KiB are in use; returns (frames, sum of every frame's local).
#[inline(never)]
fn use_kib(top: usize, kib: usize) -> (u64, u64) {
    let buf = black_box([3u8; 1024]);
    let here = &buf as *const _ as usize;
    let (frames, sum) = if top - here >= kib << 10 {
        (0, 0)
    } else {
        use_kib(top, kib)
    };
    (frames + 1, sum + black_box(&buf)[0] as u64)
}

/// Uses ~100 KiB of stack; true if every frame's local was intact.
fn deep_goroutine() -> bool {
    let top = 0u8;
    let (frames, sum) = use_kib(&top as *const u8 as usize, 100);
    sum == 3 * frames
}

#[test]
fn deep_pages_of_cached_slots_are_released_and_slots_reused() {
    // One P: each M keeps its own thread cache of slots, and the bound below counts one.
    goro::Builder::new().max_procs(1).run(|| {
        let base = goro::stack::stats().committed_bytes;
        // 1,000 goroutines alive at once (so 1,000 distinct slots), each committing ~100 KiB:
        // ~100 MiB, far beyond what one thread's cache keeps.
        let hs: Vec<_> = (0..1000).map(|_| goro::spawn(deep_goroutine)).collect();
        for h in hs {
            assert!(h.join().unwrap());
        }
        let slots = goro::stack::stats().slots;
        // The thread cache keeps at most 256 slots' pages (~30 MiB in debug builds) and the
        // worker's prepared stock is at most 16 MiB of top pages; the rest (~750 slots, ~75
        // MiB) goes back to the kernel below the top page once the worker has scrubbed it.
        // Unscrubbed, the figure stays above 100 MiB.
        let deadline = Instant::now() + Duration::from_secs(20);
        let committed = loop {
            let c = goro::stack::stats().committed_bytes.saturating_sub(base);
            if c < 64 << 20 || Instant::now() > deadline {
                break c;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            committed < 64 << 20,
            "{committed} bytes still committed after the churn"
        );
        // The slots are reused, not carved afresh, and still work.
        let hs: Vec<_> = (0..100).map(|_| goro::spawn(deep_goroutine)).collect();
        for h in hs {
            assert!(h.join().unwrap());
        }
        assert_eq!(
            goro::stack::stats().slots,
            slots,
            "freed slots were not reused"
        );
    });
}
