//! goro's side of `benches/compare`: one workload per invocation, rows of
//! `workload goro metric value unit` on stdout (the peers under `benches/peers/` print the same).
//!
//! `cargo bench --bench compare_goro -- <spawn_idle|spawn_join|stack_grow> [--n N]`
//!
//! - `spawn_idle`: N goroutines that each park; time until all parked, RSS added per goroutine,
//!   time to unpark and join them all; then the same again on the freed slots (`_reuse`).
//! - `spawn_join`: N times, spawn a goroutine returning `i` and join it (ns per spawn+join).
//! - `stack_grow`: recursion 10,923 frames deep with a 64-byte local per frame: 1 MiB at the
//!   96-byte frames rustc makes of it (the row `stack_bytes` reports what was really used).
//!   `fresh`: a new goroutine each iteration, on a slot from the thread cache (how goro runs
//!   such a program); `fresh_cold`: the same after `goro::stack::trim()`, so every page faults
//!   in again (the true first-touch cost); `warm`: one goroutine recursing again and again.

use std::hint::black_box;
use std::time::Instant;

fn row(workload: &str, metric: &str, value: f64, unit: &str) {
    println!("{workload} goro {metric} {value:.1} {unit}");
}

#[path = "workloads/spawn_idle.rs"]
mod workloads;

fn spawn_idle(n: usize, suffix: &str) {
    let r = workloads::spawn_idle(n);
    row(
        "spawn_idle",
        &format!("spawn_all_parked{suffix}"),
        r.spawn_all_parked_ms,
        "ms",
    );
    if suffix.is_empty() {
        row(
            "spawn_idle",
            "rss_per_goroutine",
            r.rss_per_goroutine as f64,
            "B",
        );
    }
    row(
        "spawn_idle",
        &format!("release_all{suffix}"),
        r.release_all_ms,
        "ms",
    );
}

fn spawn_join(n: usize) {
    let t0 = Instant::now();
    let mut sum = 0u64;
    for i in 0..n as u64 {
        sum += goro::spawn(move || i).join().unwrap();
    }
    let el = t0.elapsed();
    assert_eq!(sum, (n as u64) * (n as u64 - 1) / 2);
    row(
        "spawn_join",
        "per_op",
        el.as_secs_f64() * 1e9 / n as f64,
        "ns",
    );
}

/// 1 MiB / 96 bytes a frame. The peers use the same depth.
const DEPTH: usize = 10_923;

/// One frame with a 64-byte local, the same work as the peers' frames: the array is zeroed,
/// the depth written at a variable index and read back after the recursive call. Returns the
/// address of the deepest frame's array.
#[inline(never)]
fn recurse(depth: usize) -> usize {
    let mut buf = [0u8; 64];
    buf[depth & 63] = depth as u8;
    // The frame really holds the array: the compiler must assume this reads and writes it.
    // SAFETY: an empty asm block; it only receives the pointer and touches nothing.
    unsafe { std::arch::asm!("/* {0} */", in(reg) buf.as_mut_ptr(), options(nostack)) };
    let deepest = if depth == 0 {
        buf.as_ptr() as usize
    } else {
        recurse(depth - 1)
    };
    deepest + usize::from(buf[depth & 63] != depth as u8) // read back after the call
}

fn stack_grow(n: usize) {
    const SLOT: usize = 2 << 20;
    let grow = || {
        let top = black_box(0u8);
        let top = &top as *const u8 as usize;
        top - recurse(DEPTH)
    };
    let fresh = |trim: bool| {
        let mut total = 0.0;
        let mut used = 0;
        for _ in 0..n {
            if trim {
                goro::stack::trim();
            }
            let t = Instant::now();
            used = goro::SpawnBuilder::new()
                .stack_size(SLOT)
                .spawn(grow)
                .unwrap()
                .join()
                .unwrap();
            total += t.elapsed().as_secs_f64();
        }
        (total * 1e6 / n as f64, used)
    };
    let (fresh_us, used) = fresh(false);
    let (cold_us, _) = fresh(true);
    let warm_us = goro::SpawnBuilder::new()
        .stack_size(SLOT)
        .spawn(move || {
            grow();
            let t = Instant::now();
            for _ in 0..n {
                black_box(grow());
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .unwrap()
        .join()
        .unwrap();
    row("stack_grow", "fresh", fresh_us, "us");
    row("stack_grow", "fresh_cold", cold_us, "us");
    row("stack_grow", "warm", warm_us, "us");
    row("stack_grow", "stack_bytes", used as f64, "B");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let workload = args.first().cloned().unwrap_or_default();
    let n = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.replace('_', "")
                .parse::<usize>()
                .expect("--n takes a number")
        });
    goro::run(move || match workload.as_str() {
        "spawn_idle" => {
            let n = n.unwrap_or(1_000_000);
            spawn_idle(n, "");
            spawn_idle(n, "_reuse");
        }
        "spawn_join" => spawn_join(n.unwrap_or(1_000_000)),
        "stack_grow" => stack_grow(n.unwrap_or(200)),
        "" => {} // `cargo bench` with no workload runs nothing
        w => {
            eprintln!("compare_goro: unknown workload {w:?} (spawn_idle, spawn_join, stack_grow)");
            std::process::exit(2);
        }
    });
}
