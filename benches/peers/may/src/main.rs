//! may peer for `benches/compare`: the same workloads as goro's `compare_goro` bench, run on
//! `may`'s stackful coroutines.
//!
//! `may-peer <spawn_idle|spawn_join|stack_grow> [--n N]`, rows `workload may metric value unit`.
//!
//! - `spawn_idle` (N = 1,000,000): spawn N coroutines that each bump a counter and
//!   `coroutine::park()`; time until the counter reaches N (`spawn_all_parked`), RSS added per
//!   coroutine (`rss_per_goroutine`), then unpark every handle and join all (`release_all`).
//!   Each may stack is its own mmap plus a guard page (two kernel mappings), so past roughly
//!   `vm.max_map_count / 2` coroutines (~32,700 at the default 65,530) the mmap fails, may
//!   panics and the process then dies in malloc or hangs. So the count that fits is worked out
//!   first: if N does not fit, nothing is spawned, `spawn_idle may failed_at <max> count` is
//!   printed (max = the most coroutines that fit) and the exit code is 3. sysctls are left alone.
//! - `spawn_join` (N = 1,000,000): inside a coroutine, N times `go!(move || i).join()`
//!   (`per_op` = ns per spawn+join).
//! - `stack_grow` (N = 200): recursion 8,192 frames deep with a 64-byte local per frame (~1 MiB)
//!   on coroutines with a 2 MiB stack (may stacks are fixed-size, they never grow). `fresh`: a
//!   new coroutine per iteration (non-default stack sizes are not pooled, so a fresh mmap each
//!   time), us per spawn+recurse+join; `warm`: one coroutine recursing again, us per recursion.
//!
//! may's defaults are used (one worker per core, pinned). `MAY_WORKERS=k` overrides the worker
//! count, for exploring (with 2 workers an idle worker steals the child in `spawn_join`, so
//! every join is a cross-thread wake-up).

use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use may::coroutine;
use may::go;

/// Resident set size, from `VmRSS` in /proc/self/status (kB there, so no page size needed).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .unwrap_or(0)
        * 1024
}

fn row(workload: &str, metric: &str, value: f64, unit: &str) {
    println!("{workload} may {metric} {value:.1} {unit}");
}

/// How many default-size coroutine stacks still fit under `vm.max_map_count`.
fn coroutines_that_fit() -> Option<usize> {
    let max_maps: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let maps_now = std::fs::read_to_string("/proc/self/maps").ok()?.lines().count();
    // Headroom for malloc arenas, thread stacks and the like; two mappings per stack.
    const HEADROOM: usize = 2_000;
    Some(max_maps.saturating_sub(maps_now + HEADROOM) / 2)
}

fn spawn_idle(n: usize) {
    if let Some(max) = coroutines_that_fit() {
        if n > max {
            eprintln!(
                "may-peer: spawn_idle: {n} coroutines do not fit: each may stack takes 2 memory \
                 mappings and vm.max_map_count allows about {max} more coroutines; not attempted \
                 (may would panic in mmap and the process die)"
            );
            println!("spawn_idle may failed_at {max} count");
            std::process::exit(3);
        }
    }
    struct Shared {
        parked: AtomicUsize,
        released: AtomicBool,
    }
    let shared = Arc::new(Shared {
        parked: AtomicUsize::new(0),
        released: AtomicBool::new(false),
    });
    let mut hs = Vec::with_capacity(n);
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let spawned = catch_unwind(AssertUnwindSafe(|| {
        for _ in 0..n {
            let s = shared.clone();
            hs.push(go!(move || {
                s.parked.fetch_add(1, Ordering::Release);
                while !s.released.load(Ordering::Acquire) {
                    coroutine::park();
                }
            }));
        }
    }));
    let failed = spawned.is_err();
    let target = hs.len();
    while shared.parked.load(Ordering::Acquire) < target {
        std::thread::yield_now();
    }
    let spawn = t0.elapsed();
    let per = rss_bytes().saturating_sub(rss0) / target.max(1);
    let t1 = Instant::now();
    shared.released.store(true, Ordering::Release);
    for h in &hs {
        h.coroutine().unpark();
    }
    let count = hs.len();
    for h in hs {
        h.join().unwrap();
    }
    let release = t1.elapsed();
    if failed {
        // Only if the estimate above was wrong and may's mmap failed anyway.
        eprintln!("may-peer: spawn_idle: coroutine spawn failed after {count} of {n}");
        row("spawn_idle", "failed_at", count as f64, "count");
        std::process::exit(1);
    }
    row("spawn_idle", "spawn_all_parked", spawn.as_secs_f64() * 1e3, "ms");
    row("spawn_idle", "rss_per_goroutine", per as f64, "B");
    row("spawn_idle", "release_all", release.as_secs_f64() * 1e3, "ms");
}

fn spawn_join(n: usize) {
    let per_op = go!(move || {
        let t0 = Instant::now();
        let mut sum = 0u64;
        for i in 0..n as u64 {
            sum += go!(move || i).join().unwrap();
        }
        let el = t0.elapsed();
        assert_eq!(sum, (n as u64) * (n as u64 - 1) / 2, "checksum");
        el.as_secs_f64() * 1e9 / n as f64
    })
    .join()
    .unwrap();
    row("spawn_join", "per_op", per_op, "ns");
}

const DEPTH: usize = 8192;
/// Coroutine stack for `stack_grow`, in words (may's unit): 2 MiB.
const GROW_STACK_WORDS: usize = (2 << 20) / std::mem::size_of::<usize>();

/// One frame with a 64-byte local that really lives on the stack across the call.
#[inline(never)]
fn recurse(depth: usize) -> usize {
    let buf = black_box([depth as u8; 64]);
    let below = if depth == 0 { 0 } else { recurse(depth - 1) };
    below + black_box(&buf)[depth & 63] as usize
}

fn stack_grow(n: usize) {
    let mut total = 0.0;
    for _ in 0..n {
        let t = Instant::now();
        let r = go!(
            coroutine::Builder::new().stack_size(GROW_STACK_WORDS),
            || recurse(DEPTH)
        )
        .expect("spawn")
        .join()
        .unwrap();
        total += t.elapsed().as_secs_f64();
        black_box(r);
    }
    let fresh = total * 1e6 / n as f64;
    let warm = go!(
        coroutine::Builder::new().stack_size(GROW_STACK_WORDS),
        move || {
            black_box(recurse(DEPTH));
            let t = Instant::now();
            for _ in 0..n {
                black_box(recurse(black_box(DEPTH)));
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        }
    )
    .expect("spawn")
    .join()
    .unwrap();
    row("stack_grow", "fresh", fresh, "us");
    row("stack_grow", "warm", warm, "us");
}

fn main() {
    if let Some(w) = std::env::var("MAY_WORKERS").ok().and_then(|w| w.parse().ok()) {
        may::config().set_workers(w);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().cloned().unwrap_or_default();
    let n = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.replace('_', "").parse::<usize>().expect("--n takes a number"))
        .filter(|&n| n > 0);
    match workload.as_str() {
        "spawn_idle" => spawn_idle(n.unwrap_or(1_000_000)),
        "spawn_join" => spawn_join(n.unwrap_or(1_000_000)),
        "stack_grow" => stack_grow(n.unwrap_or(200)),
        w => {
            eprintln!("may-peer: unknown workload {w:?} (spawn_idle, spawn_join, stack_grow)");
            std::process::exit(2);
        }
    }
}
