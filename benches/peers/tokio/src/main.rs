//! tokio peer for `benches/compare`: the same workloads as goro's `compare_goro` bench, run on
//! tokio's multi-thread runtime (default: one worker per core).
//!
//! `tokio-peer <spawn_idle|spawn_join|stack_grow|pingpong|ring|fanout|imbalance|chan_buffered|
//! mutex|sleep> [--n N]`, rows
//! `workload tokio metric value unit`.
//!
//! `tokio-peer <http_hello|http_raw|echo> --addr IP:PORT`: the servers of benches/compare's
//! `http` (hyper: impl `tokio`; hand-rolled on httparse: impl `tokio_raw`) and `idle_conns`
//! workloads (`net.rs`); they print `listening on <addr>` and serve until killed, the script
//! does the measuring.
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
//! - `pingpong` (N = 1,000,000): the main task and one spawned task bounce an integer over two
//!   `tokio::sync::mpsc::channel(1)`s (tokio has no zero-capacity / rendezvous channel; capacity
//!   1 is the closest): main sends i on a, the peer receives it and sends it back on b, main
//!   receives it; values summed and checked. `round_trip` = ns per round trip. Dropping a's
//!   sender ends the peer, which is then joined.
//! - `ring` (N = 1,000,000 hops): 1,000 tasks in a ring of `mpsc::channel(1)`s (as above), task
//!   i receiving from channel i and sending to channel (i+1)%1000. Main injects `Token(N)` into
//!   channel 0; a task receiving `Token(t)`, t>0, passes `Token(t-1)` on, the one receiving
//!   `Token(0)` tells main (oneshot) and sends `Stop(999)` on; a task receiving `Stop(k)` passes
//!   `Stop(k-1)` on if k>1 and exits. `per_hop` = ns from the injection to main getting the
//!   oneshot, divided by N. All 1,000 tasks are then joined (outside the timing).
//! - `fanout` (N = 1,000,000 tasks): spawn N tasks that each run 1,000 rounds of
//!   x = x*6364136223846793005 + 1442695040888963407; x ^= x >> 33 (wrapping u64) from x = their
//!   index and add x to a shared `AtomicU64` (relaxed); the last one to finish (a countdown of
//!   remaining tasks) wakes main through a `Notify`. Wall time from the first spawn to main
//!   being woken, on a fresh multi-thread runtime with `worker_threads(1)` (`procs1`), then on
//!   another with `worker_threads(2)` (`procs2`), spawned from a main task on that runtime;
//!   `speedup` = procs1/procs2. The two sums must match (also printed on stderr).
//! - `imbalance` (N = 180,000,000 rounds): on a fresh multi-thread runtime with
//!   `worker_threads(2)`, a main task spawns 3 tasks that each run N rounds of fanout's LCG from
//!   x = their index (0, 1, 2), with a `tokio::task::yield_now().await` after every 1,000 rounds
//!   (tokio does not preempt: a task runs until it returns `Pending`), and return their result
//!   and when they finished (time since the first spawn); main awaits the three join handles.
//!   `wall` = ms from the first spawn to the last join, `first_done` / `last_done` = the
//!   earliest / latest finish, `spread` = last_done / first_done. The sum of the results goes to
//!   stderr (the same in every implementation).
//! - `chan_buffered` (N = 1,000,000 values): one bounded channel of capacity 1,024, 4 producer
//!   tasks and 4 consumer tasks. `tokio::sync::mpsc` has a single receiver, so the channel is
//!   `async_channel::bounded(1024)` (crate `async-channel`, multi-producer multi-consumer).
//!   Producer p sends p*N/4 .. (p+1)*N/4-1 (N values in all, 0..N-1) and drops its sender;
//!   consumers receive until the channel is closed (all senders gone) and empty, each returning
//!   its sum. Main joins them all; the sum must equal N(N-1)/2. `per_value` = ns from the first
//!   spawn to the last join, divided by N.
//! - `mutex` (N = 1,000,000 locks): 8 tasks share an `Arc<tokio::sync::Mutex<u64>>` (the async
//!   mutex, what tasks that contend across awaits use); task w does (w+1)*N/8 - w*N/8 iterations
//!   of `*m.lock().await += 1`. Main joins them; the count must equal N. `per_lock` = ns from
//!   the first spawn to the last join, divided by N.
//! - `sleep` (N = 1,000,000 tasks): spawn N tasks that each `tokio::time::sleep(10 ms).await` and
//!   finish; the last one to finish (a countdown) wakes main through a `Notify` (as in fanout: no
//!   join handle per task, like Go's WaitGroup). `wall` = ms from the first spawn to main being
//!   woken. `rss_per_goroutine` = current RSS read right after the spawn loop minus RSS before
//!   it, over N; how many tasks had already finished then goes to stderr
//!   (`tokio-peer: sleep n=N spawn_ms S finished_at_sample F`).

mod net;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};

include!("../../../workloads/proc_status.rs");

/// Resident set size (`VmRSS`), in bytes.
fn rss_bytes() -> usize {
    proc_status_bytes("VmRSS:")
}

/// Peak resident set size of the process so far (`VmHWM`), in bytes.
fn peak_rss_bytes() -> usize {
    proc_status_bytes("VmHWM:")
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

async fn pingpong(n: usize) {
    // tokio has no zero-capacity channel: capacity 1 is the closest to Go's unbuffered chan.
    let (a_tx, mut a_rx) = mpsc::channel::<u64>(1);
    let (b_tx, mut b_rx) = mpsc::channel::<u64>(1);
    let peer = tokio::spawn(async move {
        while let Some(v) = a_rx.recv().await {
            b_tx.send(v).await.unwrap();
        }
    });
    let t0 = Instant::now();
    let mut sum = 0u64;
    for i in 0..n as u64 {
        a_tx.send(i).await.unwrap();
        sum += b_rx.recv().await.unwrap();
    }
    let el = t0.elapsed();
    drop(a_tx);
    peer.await.unwrap();
    assert_eq!(sum, (n as u64) * (n as u64 - 1) / 2, "checksum");
    row("pingpong", "round_trip", el.as_secs_f64() * 1e9 / n as f64, "ns");
}

const RING_SIZE: usize = 1000;

#[derive(Debug)]
enum RingMsg {
    Token(u64),
    /// Stop countdown: the receiver forwards `Stop(k - 1)` if k > 1, then exits.
    Stop(usize),
}

async fn ring(n: usize) {
    // Capacity-1 channels: tokio has no rendezvous channel (see pingpong).
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..RING_SIZE).map(|_| mpsc::channel::<RingMsg>(1)).unzip();
    // Whichever task sees Token(0) reports on `done` (every task holds a sender).
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut hs = Vec::with_capacity(RING_SIZE);
    for (i, mut rx) in rxs.into_iter().enumerate() {
        let out = txs[(i + 1) % RING_SIZE].clone();
        let done = done_tx.clone();
        hs.push(tokio::spawn(async move {
            loop {
                match rx.recv().await.expect("ring channel closed") {
                    RingMsg::Token(0) => {
                        done.send(()).await.unwrap();
                        out.send(RingMsg::Stop(RING_SIZE - 1)).await.unwrap();
                        return;
                    }
                    RingMsg::Token(t) => out.send(RingMsg::Token(t - 1)).await.unwrap(),
                    RingMsg::Stop(k) => {
                        if k > 1 {
                            out.send(RingMsg::Stop(k - 1)).await.unwrap();
                        }
                        return;
                    }
                }
            }
        }));
    }
    drop(done_tx);
    let inject = txs[0].clone();
    drop(txs);
    let t0 = Instant::now();
    inject.send(RingMsg::Token(n as u64)).await.unwrap();
    done_rx.recv().await.unwrap();
    let el = t0.elapsed();
    for h in hs {
        h.await.unwrap();
    }
    row("ring", "per_hop", el.as_secs_f64() * 1e9 / n as f64, "ns");
}

#[inline]
fn fanout_work(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..1000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        x ^= x >> 33;
    }
    x
}

/// One fanout run on a fresh runtime with `procs` worker threads: wall time and the sum.
fn fanout_once(n: usize, procs: usize) -> (Duration, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(procs)
        .enable_all()
        .build()
        .expect("runtime");
    let res = rt.block_on(async move {
        // Spawned from a main task on a worker, as in the other workloads.
        tokio::spawn(async move {
            let sum = Arc::new(AtomicU64::new(0));
            let remaining = Arc::new(AtomicUsize::new(n));
            let all_done = Arc::new(Notify::new());
            let t0 = Instant::now();
            for i in 0..n as u64 {
                let (sum, remaining, all_done) = (sum.clone(), remaining.clone(), all_done.clone());
                tokio::spawn(async move {
                    sum.fetch_add(fanout_work(i), Ordering::Relaxed);
                    if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        all_done.notify_one(); // stores a permit if main isn't waiting yet
                    }
                });
            }
            all_done.notified().await;
            let el = t0.elapsed();
            assert_eq!(remaining.load(Ordering::Acquire), 0);
            (el, sum.load(Ordering::Relaxed))
        })
        .await
        .unwrap()
    });
    drop(rt);
    res
}

fn fanout(n: usize) {
    let (d1, s1) = fanout_once(n, 1);
    let (d2, s2) = fanout_once(n, 2);
    eprintln!("tokio-peer: fanout n={n} checksum {s1}");
    if s1 != s2 {
        eprintln!("tokio-peer: fanout: checksum {s1} with 1 worker, {s2} with 2");
        std::process::exit(1);
    }
    row("fanout", "procs1", d1.as_secs_f64() * 1e3, "ms");
    row("fanout", "procs2", d2.as_secs_f64() * 1e3, "ms");
    println!("fanout tokio speedup {:.2} x", d1.as_secs_f64() / d2.as_secs_f64());
}

/// Rounds between two yields in `imbalance`.
const IMBALANCE_CHUNK: u64 = 1000;

/// One imbalance task: `n` rounds of fanout's LCG from `seed`, yielding every 1,000.
async fn lcg_long(seed: u64, n: u64) -> u64 {
    let mut x = seed;
    let mut left = n;
    while left > 0 {
        let k = left.min(IMBALANCE_CHUNK);
        for _ in 0..k {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x ^= x >> 33;
        }
        left -= k;
        tokio::task::yield_now().await;
    }
    x
}

/// 3 CPU-bound tasks on 2 worker threads (see the docs at the top).
fn imbalance(n: usize) {
    const TASKS: u64 = 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (wall, done, sum) = rt.block_on(async move {
        // Spawned from a main task on a worker, as in the other workloads.
        tokio::spawn(async move {
            let t0 = Instant::now();
            let hs: Vec<_> = (0..TASKS)
                .map(|i| {
                    tokio::spawn(async move {
                        let x = lcg_long(i, n as u64).await;
                        (x, t0.elapsed())
                    })
                })
                .collect();
            let mut res = Vec::new();
            for h in hs {
                res.push(h.await.unwrap());
            }
            let wall = t0.elapsed();
            let sum = res.iter().fold(0u64, |s, r| s.wrapping_add(r.0));
            let done: Vec<f64> = res.iter().map(|r| r.1.as_secs_f64() * 1e3).collect();
            (wall.as_secs_f64() * 1e3, done, sum)
        })
        .await
        .unwrap()
    });
    drop(rt);
    let first = done.iter().cloned().fold(f64::INFINITY, f64::min);
    let last = done.iter().cloned().fold(0.0, f64::max);
    let list: Vec<String> = done.iter().map(|d| format!("{d:.1}")).collect();
    eprintln!("tokio-peer: imbalance n={n} workers=2 checksum {sum} done_ms {}", list.join(","));
    row("imbalance", "wall", wall, "ms");
    row("imbalance", "first_done", first, "ms");
    row("imbalance", "last_done", last, "ms");
    println!("imbalance tokio spread {:.2} x", last / first);
}

async fn chan_buffered(n: usize) {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 4;
    let (tx, rx) = async_channel::bounded::<u64>(1024);
    let t0 = Instant::now();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut s = 0u64;
                while let Ok(v) = rx.recv().await {
                    s += v;
                }
                s
            })
        })
        .collect();
    drop(rx);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            let (lo, hi) = (p * n / PRODUCERS, (p + 1) * n / PRODUCERS);
            tokio::spawn(async move {
                for i in lo as u64..hi as u64 {
                    tx.send(i).await.unwrap();
                }
            })
        })
        .collect();
    drop(tx); // the channel closes when the last producer drops its sender
    for h in producers {
        h.await.unwrap();
    }
    let mut sum = 0u64;
    for h in consumers {
        sum += h.await.unwrap();
    }
    let el = t0.elapsed();
    let want = (n as u64) * (n as u64 - 1) / 2;
    if sum != want {
        eprintln!("tokio-peer: chan_buffered: checksum {sum}, want {want}");
        std::process::exit(1);
    }
    row("chan_buffered", "per_value", el.as_secs_f64() * 1e9 / n as f64, "ns");
}

async fn mutex(n: usize) {
    const WORKERS: usize = 8;
    let m = Arc::new(tokio::sync::Mutex::new(0u64));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..WORKERS)
        .map(|w| {
            let m = m.clone();
            let iters = (w + 1) * n / WORKERS - w * n / WORKERS;
            tokio::spawn(async move {
                for _ in 0..iters {
                    *m.lock().await += 1;
                }
            })
        })
        .collect();
    for h in hs {
        h.await.unwrap();
    }
    let el = t0.elapsed();
    let count = *m.lock().await;
    if count != n as u64 {
        eprintln!("tokio-peer: mutex: count {count}, want {n}");
        std::process::exit(1);
    }
    row("mutex", "per_lock", el.as_secs_f64() * 1e9 / n as f64, "ns");
}

async fn sleep(n: usize) {
    let remaining = Arc::new(AtomicUsize::new(n));
    let all_done = Arc::new(Notify::new());
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    for _ in 0..n {
        let (remaining, all_done) = (remaining.clone(), all_done.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                all_done.notify_one(); // stores a permit if main isn't waiting yet
            }
        });
    }
    let spawn = t0.elapsed();
    let rss = rss_bytes();
    let finished = n - remaining.load(Ordering::Acquire);
    all_done.notified().await;
    let el = t0.elapsed();
    eprintln!(
        "tokio-peer: sleep n={n} spawn_ms {:.1} finished_at_sample {finished}",
        spawn.as_secs_f64() * 1e3
    );
    row("sleep", "wall", el.as_secs_f64() * 1e3, "ms");
    row("sleep", "rss_per_goroutine", (rss.saturating_sub(rss0) / n) as f64, "B");
    row(
        "sleep",
        "peak_rss_per_goroutine",
        (peak_rss_bytes().saturating_sub(rss0) / n) as f64,
        "B",
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workload = args.first().cloned().unwrap_or_default();
    let n = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.replace('_', "").parse::<usize>().expect("--n takes a number"))
        .filter(|&n| n > 0);
    let addr = args.iter().position(|a| a == "--addr").and_then(|i| args.get(i + 1)).cloned();
    if workload == "fanout" {
        // Builds its own runtimes (1 worker, then 2).
        return fanout(n.unwrap_or(1_000_000));
    }
    if workload == "imbalance" {
        // Builds its own runtime (2 workers).
        return imbalance(n.unwrap_or(180_000_000));
    }
    // What #[tokio::main] builds: a multi-thread runtime, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The workload runs in a spawned "main task" on a worker thread, as Go's main goroutine
    // runs on a P, rather than in `block_on`'s future on the main thread.
    rt.block_on(async move {
        let main_task = tokio::spawn(async move {
            match workload.as_str() {
                "spawn_idle" => spawn_idle(n.unwrap_or(1_000_000)).await,
                "spawn_join" => spawn_join(n.unwrap_or(1_000_000)).await,
                "stack_grow" => {
                    eprintln!("tokio-peer: stack_grow does not apply (tasks are stackless)")
                }
                "pingpong" => pingpong(n.unwrap_or(1_000_000)).await,
                "ring" => ring(n.unwrap_or(1_000_000)).await,
                "chan_buffered" => chan_buffered(n.unwrap_or(1_000_000)).await,
                "mutex" => mutex(n.unwrap_or(1_000_000)).await,
                "sleep" => sleep(n.unwrap_or(1_000_000)).await,
                "http_hello" | "http_raw" | "echo" => {
                    let Some(addr) = addr else {
                        eprintln!("tokio-peer: {workload} needs --addr IP:PORT");
                        std::process::exit(2);
                    };
                    match workload.as_str() {
                        "http_hello" => net::http_hello(&addr).await,
                        "http_raw" => net::http_raw(&addr).await,
                        _ => net::echo(&addr, buf_arg(&args)).await,
                    }
                }
                w => {
                    eprintln!(
                        "tokio-peer: unknown workload {w:?} (spawn_idle, spawn_join, \
                         stack_grow, pingpong, ring, fanout, imbalance, chan_buffered, mutex, \
                         sleep, \
                         http_hello, http_raw, echo)"
                    );
                    std::process::exit(2);
                }
            }
        });
        main_task.await.unwrap();
    });
}

/// `--buf BYTES` (echo's read buffer), default 4096.
fn buf_arg(args: &[String]) -> usize {
    match args.iter().position(|a| a == "--buf").and_then(|i| args.get(i + 1)) {
        None => 4096,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("tokio-peer: --buf takes a positive number of bytes");
                std::process::exit(2);
            }
        },
    }
}
