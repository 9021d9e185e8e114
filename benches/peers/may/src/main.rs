//! may peer for `benches/compare`: the same workloads as goro's `compare_goro` bench, run on
//! `may`'s stackful coroutines.
//!
//! `may-peer <spawn_idle|spawn_join|stack_grow|pingpong|ring|fanout|imbalance|chan_buffered|
//! mutex|sleep> [--n N] [--procs P]`, rows
//! `workload may metric value unit`.
//!
//! `may-peer <http_hello|echo> --addr IP:PORT`: the servers of benches/compare's `http` and
//! `idle_conns` workloads (`net.rs`, may_minihttp for `http_hello`); they print
//! `listening on <addr>` and serve until killed, the script does the measuring.
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
//! - `pingpong` (N = 1,000,000): inside a coroutine ("main"), it and one spawned coroutine bounce
//!   an integer over two `may::sync::mpsc::channel()`s: main sends i on a, the peer receives it
//!   and sends it back on b, main receives it; values summed and checked. `round_trip` = ns per
//!   round trip. may 0.3 has no rendezvous or bounded channel: its channels (`sync::mpsc`,
//!   `sync::mpmc`, `sync::spsc`) are all unbounded, senders never block; `sync::mpsc`, the
//!   default one, is used. With one message in flight at a time the exchange is the same, only
//!   the sender doesn't wait for the receiver to take the value. Dropping a's sender ends the
//!   peer, which is then joined.
//! - `ring` (N = 1,000,000 hops): 1,000 coroutines in a ring of `sync::mpsc` channels (as
//!   above), coroutine i receiving from channel i and sending to channel (i+1)%1000. Main (a
//!   coroutine) injects `Token(N)` into channel 0; a coroutine receiving `Token(t)`, t>0, passes
//!   `Token(t-1)` on, the one receiving `Token(0)` tells main (a done channel) and sends
//!   `Stop(999)` on; one receiving `Stop(k)` passes `Stop(k-1)` on if k>1 and exits. `per_hop`
//!   = ns from the injection to main getting done, divided by N. All 1,000 are then joined
//!   (outside the timing).
//! - `fanout` (N = 1,000,000 coroutines): a spawner coroutine starts N coroutines that each run
//!   1,000 rounds of x = x*6364136223846793005 + 1442695040888963407; x ^= x >> 33 (wrapping
//!   u64) from x = their index and add x to a shared `AtomicU64` (relaxed); the last one to
//!   finish (a countdown of remaining ones, i.e. a wait group) wakes the spawner over a channel.
//!   Wall time from the first spawn to that wake-up. may's worker count is fixed once its
//!   scheduler has started, so one process measures one count: `--procs P` runs with P workers
//!   and prints `fanout may procsP <ms> ms` (benches/compare runs it with 1 and 2 and works out
//!   the speed-up). Without `--procs` the peer runs itself twice that way and prints `procs1`,
//!   `procs2` and `speedup` like the other peers. The sum goes to stderr
//!   (`may-peer: fanout n=N procs=P checksum C`) so runs can be compared.
//!   may allocates a coroutine's stack when it is spawned (two mappings each, see spawn_idle),
//!   so N coroutines can't all exist at once: the spawner keeps at most `FANOUT_MAX_LIVE`
//!   (1,000, may's stack pool size, so every stack is a recycled one) started-but-unfinished
//!   coroutines, parking on a `may::sync::Semphore` while at that limit (each coroutine posts
//!   it when done). Go, tokio and goro put no such limit on their spawner.
//! - `imbalance` (N = 180,000,000 rounds): with 2 workers (always: set before the scheduler
//!   starts, whatever `--procs` or `MAY_WORKERS` say), a main coroutine spawns 3 coroutines
//!   that each run N rounds of fanout's LCG from x = their index (0, 1, 2), with a
//!   `coroutine::yield_now()` after every 1,000 rounds (may does not preempt), and return their
//!   result and when they finished (time since the first spawn); main joins the three.
//!   `wall` = ms from the first spawn to the last join, `first_done` / `last_done` = the
//!   earliest / latest finish, `spread` = last_done / first_done. The sum of the results goes
//!   to stderr (the same in every implementation).
//!
//! may's defaults are used (one worker per core, pinned). `MAY_WORKERS=k` overrides the worker
//! count, for exploring (with 2 workers an idle worker steals the child in `spawn_join`, so
//! every join is a cross-thread wake-up).

mod net;

use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine;
use may::go;
// may 0.3's default channel; unbounded (it has no rendezvous or bounded channel).
use may::sync::mpsc;
// MPMC (unbounded too), for chan_buffered's 4 consumers.
use may::sync::mpmc;
use may::sync::Semphore;

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

/// Exit 3 (after a `<workload> may failed_at <max> count` row) if n default-size coroutines
/// might not fit under `vm.max_map_count`: may would panic in mmap and the process die or hang.
fn check_coroutines_fit(workload: &str, n: usize) {
    if let Some(max) = coroutines_that_fit() {
        if n > max {
            eprintln!(
                "may-peer: {workload}: {n} coroutines do not fit: each may stack takes 2 memory \
                 mappings and vm.max_map_count allows about {max} more coroutines; not attempted \
                 (may would panic in mmap and the process die)"
            );
            println!("{workload} may failed_at {max} count");
            std::process::exit(3);
        }
    }
}

fn spawn_idle(n: usize) {
    check_coroutines_fit("spawn_idle", n);
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

fn pingpong(n: usize) {
    let round_trip = go!(move || {
        // Unbounded channels: may 0.3 has no rendezvous/bounded one (see the module docs).
        let (a_tx, a_rx) = mpsc::channel::<u64>();
        let (b_tx, b_rx) = mpsc::channel::<u64>();
        let peer = go!(move || {
            while let Ok(v) = a_rx.recv() {
                b_tx.send(v).unwrap();
            }
        });
        let t0 = Instant::now();
        let mut sum = 0u64;
        for i in 0..n as u64 {
            a_tx.send(i).unwrap();
            sum += b_rx.recv().unwrap();
        }
        let el = t0.elapsed();
        drop(a_tx);
        peer.join().unwrap();
        assert_eq!(sum, (n as u64) * (n as u64 - 1) / 2, "checksum");
        el.as_secs_f64() * 1e9 / n as f64
    })
    .join()
    .unwrap();
    row("pingpong", "round_trip", round_trip, "ns");
}

const RING_SIZE: usize = 1000;

enum RingMsg {
    Token(u64),
    /// Stop countdown: the receiver forwards `Stop(k - 1)` if k > 1, then exits.
    Stop(usize),
}

fn ring(n: usize) {
    let per_hop = go!(move || {
        // Unbounded channels: may 0.3 has no rendezvous/bounded one (see the module docs).
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..RING_SIZE).map(|_| mpsc::channel::<RingMsg>()).unzip();
        // Whichever coroutine sees Token(0) reports on `done` (every one holds a sender).
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let mut hs = Vec::with_capacity(RING_SIZE);
        for (i, rx) in rxs.into_iter().enumerate() {
            let out = txs[(i + 1) % RING_SIZE].clone();
            let done = done_tx.clone();
            hs.push(go!(move || loop {
                match rx.recv().expect("ring channel closed") {
                    RingMsg::Token(0) => {
                        done.send(()).unwrap();
                        out.send(RingMsg::Stop(RING_SIZE - 1)).unwrap();
                        return;
                    }
                    RingMsg::Token(t) => out.send(RingMsg::Token(t - 1)).unwrap(),
                    RingMsg::Stop(k) => {
                        if k > 1 {
                            out.send(RingMsg::Stop(k - 1)).unwrap();
                        }
                        return;
                    }
                }
            }));
        }
        drop(done_tx);
        let inject = txs[0].clone();
        drop(txs);
        let t0 = Instant::now();
        inject.send(RingMsg::Token(n as u64)).unwrap();
        done_rx.recv().unwrap();
        let el = t0.elapsed();
        for h in hs {
            h.join().unwrap();
        }
        el.as_secs_f64() * 1e9 / n as f64
    })
    .join()
    .unwrap();
    row("ring", "per_hop", per_hop, "ns");
}

/// At most this many fanout coroutines exist at once: may's stack pool size (see the docs).
const FANOUT_MAX_LIVE: usize = 1000;

#[inline]
fn fanout_work(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..1000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        x ^= x >> 33;
    }
    x
}

/// One fanout run on may's scheduler as configured (`procs` workers): prints the row.
fn fanout_procs(n: usize, procs: usize) {
    let max_live = FANOUT_MAX_LIVE.min(may::config().get_pool_capacity().max(1));
    let (el, sum) = go!(move || {
        let sum = Arc::new(AtomicU64::new(0));
        let remaining = Arc::new(AtomicUsize::new(n));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        // One permit per coroutine that may exist; a finishing coroutine hands its back.
        let slots = Arc::new(Semphore::new(max_live));
        let t0 = Instant::now();
        for i in 0..n {
            // Parks (rather than yields: a yielded coroutine goes back on the worker's local
            // queue, which the worker drains before it looks at the global queue that `go!`
            // pushes to, so with one worker a yield loop never lets them run).
            slots.wait();
            let (sum, remaining, done_tx, slots) =
                (sum.clone(), remaining.clone(), done_tx.clone(), slots.clone());
            go!(move || {
                sum.fetch_add(fanout_work(i as u64), Ordering::Relaxed);
                slots.post();
                if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    done_tx.send(()).unwrap();
                }
            });
        }
        done_rx.recv().unwrap();
        let el = t0.elapsed();
        (el, sum.load(Ordering::Relaxed))
    })
    .join()
    .unwrap();
    // The exact time too, for fanout_both's speed-up.
    eprintln!("may-peer: fanout n={n} procs={procs} checksum {sum} ns {}", el.as_nanos());
    row("fanout", &format!("procs{procs}"), el.as_secs_f64() * 1e3, "ms");
}

/// Rounds between two yields in `imbalance`.
const IMBALANCE_CHUNK: u64 = 1000;

/// One imbalance coroutine: `n` rounds of fanout's LCG from `seed`, yielding every 1,000.
fn lcg_long(seed: u64, n: u64) -> u64 {
    let mut x = seed;
    let mut left = n;
    while left > 0 {
        let k = left.min(IMBALANCE_CHUNK);
        for _ in 0..k {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x ^= x >> 33;
        }
        left -= k;
        coroutine::yield_now();
    }
    x
}

/// 3 CPU-bound coroutines on 2 workers (see the docs at the top; main() sets the 2 workers).
fn imbalance(n: usize) {
    const TASKS: u64 = 3;
    let (wall, done, sum) = go!(move || {
        let t0 = Instant::now();
        let hs: Vec<_> = (0..TASKS)
            .map(|i| {
                go!(move || {
                    let x = lcg_long(i, n as u64);
                    (x, t0.elapsed())
                })
            })
            .collect();
        // Joining from a coroutine parks it until that one is done.
        let res: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let wall = t0.elapsed();
        let sum = res.iter().fold(0u64, |s, r| s.wrapping_add(r.0));
        let done: Vec<f64> = res.iter().map(|r| r.1.as_secs_f64() * 1e3).collect();
        (wall.as_secs_f64() * 1e3, done, sum)
    })
    .join()
    .unwrap();
    let first = done.iter().cloned().fold(f64::INFINITY, f64::min);
    let last = done.iter().cloned().fold(0.0, f64::max);
    let list: Vec<String> = done.iter().map(|d| format!("{d:.1}")).collect();
    eprintln!(
        "may-peer: imbalance n={n} workers={} checksum {sum} done_ms {}",
        may::config().get_workers(),
        list.join(",")
    );
    row("imbalance", "wall", wall, "ms");
    row("imbalance", "first_done", first, "ms");
    row("imbalance", "last_done", last, "ms");
    println!("imbalance may spread {:.2} x", last / first);
}

/// `fanout` without `--procs`: run this program again with `--procs 1` and `--procs 2` (may's
/// worker count can't change once its scheduler runs) and print all three rows.
fn fanout_both(n: usize) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut ns = [0.0f64; 2];
    let mut sums = [0u64; 2];
    for (k, procs) in [1usize, 2].into_iter().enumerate() {
        let out = std::process::Command::new(&exe)
            .args(["fanout", "--n", &n.to_string(), "--procs", &procs.to_string()])
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("running may-peer fanout --procs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stderr}");
        if !out.status.success() {
            eprintln!("may-peer: fanout --procs {procs} failed: {}", out.status);
            std::process::exit(1);
        }
        // "may-peer: fanout n=N procs=P checksum C ns E"
        let f: Vec<&str> = stderr
            .lines()
            .find(|l| l.starts_with("may-peer: fanout n="))
            .expect("fanout checksum line")
            .split_whitespace()
            .collect();
        sums[k] = f[5].parse().expect("checksum");
        ns[k] = f[7].parse().expect("ns");
    }
    if sums[0] != sums[1] {
        eprintln!("may-peer: fanout: checksum {} with 1 worker, {} with 2", sums[0], sums[1]);
        std::process::exit(1);
    }
    row("fanout", "procs1", ns[0] / 1e6, "ms");
    row("fanout", "procs2", ns[1] / 1e6, "ms");
    println!("fanout may speedup {:.2} x", ns[0] / ns[1].max(1.0));
}

fn chan_buffered(n: usize) {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 4;
    let (el, sum) = go!(move || {
        // Unbounded: may 0.3 has no bounded channel (see the module docs).
        let (tx, rx) = mpmc::channel::<u64>();
        let t0 = Instant::now();
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let rx = rx.clone();
                go!(move || {
                    let mut s = 0u64;
                    while let Ok(v) = rx.recv() {
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
                go!(move || {
                    for i in lo as u64..hi as u64 {
                        tx.send(i).unwrap();
                    }
                })
            })
            .collect();
        drop(tx); // closed once the last producer drops its sender
        for h in producers {
            h.join().unwrap();
        }
        let sum: u64 = consumers.into_iter().map(|h| h.join().unwrap()).sum();
        (t0.elapsed(), sum)
    })
    .join()
    .unwrap();
    let want = (n as u64) * (n as u64 - 1) / 2;
    if sum != want {
        eprintln!("may-peer: chan_buffered: checksum {sum}, want {want}");
        std::process::exit(1);
    }
    row("chan_buffered", "per_value", el.as_secs_f64() * 1e9 / n as f64, "ns");
}

fn mutex(n: usize) {
    const WORKERS: usize = 8;
    let (el, count) = go!(move || {
        let m = Arc::new(may::sync::Mutex::new(0u64));
        let t0 = Instant::now();
        let hs: Vec<_> = (0..WORKERS)
            .map(|w| {
                let m = m.clone();
                let iters = (w + 1) * n / WORKERS - w * n / WORKERS;
                go!(move || {
                    for _ in 0..iters {
                        *m.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let el = t0.elapsed();
        let count = *m.lock().unwrap();
        (el, count)
    })
    .join()
    .unwrap();
    if count != n as u64 {
        eprintln!("may-peer: mutex: count {count}, want {n}");
        std::process::exit(1);
    }
    row("mutex", "per_lock", el.as_secs_f64() * 1e9 / n as f64, "ns");
}

fn sleep(n: usize) {
    check_coroutines_fit("sleep", n);
    let (el, spawn, rss0, rss, finished) = go!(move || {
        let remaining = Arc::new(AtomicUsize::new(n));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let rss0 = rss_bytes();
        let t0 = Instant::now();
        for _ in 0..n {
            let (remaining, done_tx) = (remaining.clone(), done_tx.clone());
            go!(move || {
                coroutine::sleep(Duration::from_millis(10));
                if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    done_tx.send(()).unwrap();
                }
            });
        }
        let spawn = t0.elapsed();
        let rss = rss_bytes();
        let finished = n - remaining.load(Ordering::Acquire);
        done_rx.recv().unwrap();
        (t0.elapsed(), spawn, rss0, rss, finished)
    })
    .join()
    .unwrap();
    eprintln!(
        "may-peer: sleep n={n} spawn_ms {:.1} finished_at_sample {finished}",
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
    let procs = args
        .iter()
        .position(|a| a == "--procs")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<usize>().expect("--procs takes a number"))
        .filter(|&p| p > 0);
    if let Some(p) = procs {
        may::config().set_workers(p); // before anything starts may's scheduler
    }
    if workload == "imbalance" {
        may::config().set_workers(2); // 3 coroutines on 2 workers, whatever else was asked
    }
    match workload.as_str() {
        "spawn_idle" => spawn_idle(n.unwrap_or(1_000_000)),
        "spawn_join" => spawn_join(n.unwrap_or(1_000_000)),
        "stack_grow" => stack_grow(n.unwrap_or(200)),
        "pingpong" => pingpong(n.unwrap_or(1_000_000)),
        "ring" => ring(n.unwrap_or(1_000_000)),
        "fanout" => match procs {
            Some(p) => fanout_procs(n.unwrap_or(1_000_000), p),
            None => fanout_both(n.unwrap_or(1_000_000)),
        },
        "imbalance" => imbalance(n.unwrap_or(180_000_000)),
        "chan_buffered" => chan_buffered(n.unwrap_or(1_000_000)),
        "mutex" => mutex(n.unwrap_or(1_000_000)),
        "sleep" => sleep(n.unwrap_or(1_000_000)),
        "http_hello" | "echo" => {
            let Some(addr) = args.iter().position(|a| a == "--addr").and_then(|i| args.get(i + 1))
            else {
                eprintln!("may-peer: {workload} needs --addr IP:PORT");
                std::process::exit(2);
            };
            if workload == "echo" {
                net::echo(addr, buf_arg(&args))
            } else {
                net::http_hello(addr)
            }
        }
        w => {
            eprintln!(
                "may-peer: unknown workload {w:?} (spawn_idle, spawn_join, stack_grow, \
                 pingpong, ring, fanout, imbalance, chan_buffered, mutex, sleep, http_hello, \
                 echo)"
            );
            std::process::exit(2);
        }
    }
}

/// `--buf BYTES` (echo's read buffer), default 4096.
fn buf_arg(args: &[String]) -> usize {
    match args.iter().position(|a| a == "--buf").and_then(|i| args.get(i + 1)) {
        None => 4096,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("may-peer: --buf takes a positive number of bytes");
                std::process::exit(2);
            }
        },
    }
}
