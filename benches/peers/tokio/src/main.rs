//! tokio peer for `benches/compare`: the same workloads as goro's `compare_goro` bench, run on
//! tokio's multi-thread runtime (default: one worker per core).
//!
//! `tokio-peer <spawn_idle|spawn_join|stack_grow> [--n N]`, rows `workload tokio metric value unit`.
//!
//! - `spawn_idle` (N = 1,000,000): spawn N tasks that each bump a counter and await their own
//!   `oneshot` receiver; time until the counter reaches N (`spawn_all_parked`), RSS added per
//!   task (`rss_per_goroutine`, task + its oneshot), then send on every oneshot and await all
//!   join handles (`release_all`).
//! - `spawn_join` (N = 1,000,000): from the main task, N times
//!   `tokio::spawn(async move { i }).await` (`per_op` = ns per spawn+await).
//!
//! Each workload runs in a spawned "main task", so like Go's main goroutine it is on a worker
//! (and a task it spawns lands in that worker's LIFO slot), not in `block_on` on the main thread.
//! - `stack_grow`: not applicable (tasks are stackless state machines); prints nothing and says
//!   so on stderr.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

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
    println!("{workload} tokio {metric} {value:.1} {unit}");
}

async fn spawn_idle(n: usize) {
    let parked = Arc::new(AtomicUsize::new(0));
    let mut txs = Vec::with_capacity(n);
    let mut hs = Vec::with_capacity(n);
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    for _ in 0..n {
        let (tx, rx) = oneshot::channel::<()>();
        let parked = parked.clone();
        txs.push(tx);
        hs.push(tokio::spawn(async move {
            parked.fetch_add(1, Ordering::Release);
            let _ = rx.await;
        }));
    }
    while parked.load(Ordering::Acquire) < n {
        tokio::task::yield_now().await;
    }
    let spawn = t0.elapsed();
    let per = rss_bytes().saturating_sub(rss0) / n;
    let t1 = Instant::now();
    for tx in txs {
        let _ = tx.send(());
    }
    for h in hs {
        h.await.unwrap();
    }
    let release = t1.elapsed();
    row("spawn_idle", "spawn_all_parked", spawn.as_secs_f64() * 1e3, "ms");
    row("spawn_idle", "rss_per_goroutine", per as f64, "B");
    row("spawn_idle", "release_all", release.as_secs_f64() * 1e3, "ms");
}

async fn spawn_join(n: usize) {
    let t0 = Instant::now();
    let mut sum = 0u64;
    for i in 0..n as u64 {
        sum += tokio::spawn(async move { i }).await.unwrap();
    }
    let el = t0.elapsed();
    assert_eq!(sum, (n as u64) * (n as u64 - 1) / 2, "checksum");
    row("spawn_join", "per_op", el.as_secs_f64() * 1e9 / n as f64, "ns");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().cloned().unwrap_or_default();
    let n = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.replace('_', "").parse::<usize>().expect("--n takes a number"))
        .filter(|&n| n > 0);
    // The workload runs in a spawned "main task" on a worker thread, as Go's main goroutine
    // runs on a P, rather than in `block_on`'s future on the main thread.
    let main_task = tokio::spawn(async move {
        match workload.as_str() {
            "spawn_idle" => spawn_idle(n.unwrap_or(1_000_000)).await,
            "spawn_join" => spawn_join(n.unwrap_or(1_000_000)).await,
            "stack_grow" => eprintln!("tokio-peer: stack_grow does not apply (tasks are stackless)"),
            w => {
                eprintln!("tokio-peer: unknown workload {w:?} (spawn_idle, spawn_join, stack_grow)");
                std::process::exit(2);
            }
        }
    });
    main_task.await.unwrap();
}
