//! The main demo: spawn a million goroutines that each park, then wake them all.
//!
//! `cargo run --release --example million [-- --n <count> --rounds <r>]`
//!
//! Prints `name value unit` lines:
//! - `spawn_all_parked`: time from the first spawn until every goroutine has parked;
//! - `rss_per_goroutine`: resident memory added per parked goroutine (stack page, page tables,
//!   descriptor, the handles this program keeps);
//! - `release_all`: time to unpark every goroutine and join it;
//! - the same again with `_reuse` for the second round, whose goroutines reuse the stack slots
//!   the first round freed (no page faults, no guard installation).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

struct Shared {
    parked: AtomicUsize,
    released: AtomicBool,
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).map(|v| v.replace('_', "").parse()) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("usage: million [--n <count>] [--rounds <r>]: {name} needs a number");
                std::process::exit(2);
            }
        },
        None => default,
    }
}

fn round(n: usize, suffix: &str) {
    let shared = Arc::new(Shared {
        parked: AtomicUsize::new(0),
        released: AtomicBool::new(false),
    });
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let s = shared.clone();
        handles.push(goro::spawn(move || {
            s.parked.fetch_add(1, Ordering::Relaxed);
            while !s.released.load(Ordering::Acquire) {
                goro::park();
            }
        }));
    }
    // Every goroutine spawned is queued ahead of us: yielding lets them all run to their park.
    while shared.parked.load(Ordering::Relaxed) < n {
        goro::yield_now();
    }
    let spawn_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rss1 = rss_bytes();
    let per = rss1.saturating_sub(rss0) / n.max(1);
    assert_eq!(
        goro::num_goroutine(),
        n + 1,
        "every goroutine is alive and parked"
    );

    let t1 = Instant::now();
    shared.released.store(true, Ordering::Release);
    for h in &handles {
        h.goroutine().unpark();
    }
    for h in handles {
        h.join().expect("goroutine panicked");
    }
    let release_ms = t1.elapsed().as_secs_f64() * 1e3;
    println!("spawn_all_parked{suffix} {spawn_ms:.1} ms");
    println!("rss_per_goroutine{suffix} {per} B");
    println!("release_all{suffix} {release_ms:.1} ms");
}

fn main() {
    let n = arg("--n", 1_000_000);
    let rounds = arg("--rounds", 2);
    goro::run(move || {
        for r in 0..rounds {
            round(n, if r == 0 { "" } else { "_reuse" });
        }
        let s = goro::stack::stats();
        println!("goroutines {n} count");
        println!("stack_reservations {} count", s.reservations);
        println!("stack_slots {} count", s.slots);
    });
}
