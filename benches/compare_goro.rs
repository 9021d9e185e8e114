//! goro's side of `benches/compare`: one workload per invocation, rows of
//! `workload goro metric value unit` on stdout (the peers under `benches/peers/` print the same).
//!
//! `cargo bench --bench compare_goro -- <workload> [--n N]`
//!
//! - `spawn_idle`: N goroutines that each park; time until all parked, RSS added per goroutine,
//!   time to unpark and join them all; then the same again on the freed slots (`_reuse`).
//! - `spawn_join`: N times, spawn a goroutine returning `i` and join it (ns per spawn+join).
//! - `stack_grow`: recursion 10,923 frames deep with a 64-byte local per frame: 1 MiB at the
//!   96-byte frames rustc makes of it (the row `stack_bytes` reports what was really used).
//!   `fresh`: a new goroutine each iteration, on a slot from the thread cache (how goro runs
//!   such a program); `fresh_cold`: the same after `goro::stack::trim()`, so every page faults
//!   in again (the true first-touch cost); `warm`: one goroutine recursing again and again.
//! - `pingpong`: N round trips of an integer between two goroutines over two rendezvous
//!   channels (`goro::chan::bounded(0)`).
//! - `ring`: 1,000 goroutines in a ring of rendezvous channels pass a token N hops.
//! - `chan_buffered`: 4 producers and 4 consumers move N integers through one channel of
//!   capacity 1,024 (ns per value).
//! - `mutex`: 8 goroutines each lock a `goro::sync::Mutex`, increment, unlock, N/8 times.
//! - `sleep`: N goroutines each sleep 10 ms: wall time until all finished, and RSS added per
//!   goroutine sampled right after the spawn loop; `peak_rss_per_goroutine` uses the process's
//!   peak RSS (`VmHWM`) instead, read after all finished.
//! - `fanout`: N small CPU tasks (1,000 rounds of an LCG each) spawned and waited for, on one
//!   processor and then on two (two runtimes in turn); reports both times and the speed-up.
//! - `imbalance`: 3 CPU-bound goroutines on 2 processors, each N rounds of fanout's LCG with
//!   a `goro::preempt_point()` every 1,000 rounds; `wall` from the first spawn until all are
//!   joined, `first_done` / `last_done` when the first / last of them finished (ms from the
//!   same start), `spread` = last_done / first_done (about 1 when the three share both
//!   processors fairly, about 2 when one had a processor to itself).

use std::hint::black_box;
use std::time::Instant;

fn row(workload: &str, metric: &str, value: f64, unit: &str) {
    println!("{workload} goro {metric} {value:.1} {unit}");
}

#[path = "workloads/gc.rs"]
mod gc_workloads;
#[path = "workloads/spawn_idle.rs"]
mod workloads;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

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
    if std::env::var_os("GORO_BENCH_STATS").is_some() {
        eprintln!("{:?}", goro::runtime::sched_stats());
    }
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

fn pingpong(n: usize) {
    let (a_tx, a_rx) = goro::chan::bounded::<u64>(0);
    let (b_tx, b_rx) = goro::chan::bounded::<u64>(0);
    let peer = goro::spawn(move || {
        for v in a_rx.iter() {
            b_tx.send(v).unwrap();
        }
    });
    let t = Instant::now();
    let mut sum = 0u64;
    for i in 0..n as u64 {
        a_tx.send(i).unwrap();
        sum += b_rx.recv().unwrap();
    }
    let el = t.elapsed();
    drop(a_tx);
    peer.join().unwrap();
    if std::env::var_os("GORO_BENCH_STATS").is_some() {
        eprintln!("{:?}", goro::runtime::sched_stats());
    }
    assert_eq!(sum, (n as u64) * (n as u64 - 1) / 2);
    row(
        "pingpong",
        "round_trip",
        el.as_secs_f64() * 1e9 / n as f64,
        "ns",
    );
}

/// Ring messages: a token with the hops left, or a stop marker with the goroutines left.
const STOP: u64 = 1 << 63;
const RING: usize = 1000;

fn ring(n: usize) {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..RING).map(|_| goro::chan::bounded::<u64>(0)).unzip();
    let (done_tx, done_rx) = goro::chan::bounded::<usize>(0);
    let hs: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(i, rx)| {
            let next = txs[(i + 1) % RING].clone();
            let done = done_tx.clone();
            goro::spawn(move || loop {
                let m = rx.recv().unwrap();
                if m & STOP != 0 {
                    let left = m & !STOP;
                    if left > 1 {
                        next.send(STOP | (left - 1)).unwrap();
                    }
                    return;
                }
                if m == 0 {
                    done.send(i).unwrap();
                    next.send(STOP | (RING as u64 - 1)).unwrap();
                    return;
                }
                next.send(m - 1).unwrap();
            })
        })
        .collect();
    let t = Instant::now();
    txs[0].send(n as u64).unwrap();
    let last = done_rx.recv().unwrap();
    let el = t.elapsed();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(last, n % RING);
    row("ring", "per_hop", el.as_secs_f64() * 1e9 / n as f64, "ns");
}

/// 4 producers and 4 consumers on one channel of capacity 1,024; producer `p` sends
/// `p*n/4 .. (p+1)*n/4`; the consumers' sum is checked against the sum sent.
fn chan_buffered(n: usize) {
    let (tx, rx) = goro::chan::bounded::<u64>(1024);
    let t = Instant::now();
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let tx = tx.clone();
            let (lo, hi) = (p * n as u64 / 4, (p + 1) * n as u64 / 4);
            goro::spawn(move || {
                for v in lo..hi {
                    tx.send(v).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let rx = rx.clone();
            goro::spawn(move || rx.iter().sum::<u64>())
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let sum: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    let el = t.elapsed();
    assert_eq!(
        sum,
        (n as u64) * (n as u64 - 1) / 2,
        "lost or duplicated values"
    );
    row(
        "chan_buffered",
        "per_value",
        el.as_secs_f64() * 1e9 / n as f64,
        "ns",
    );
}

/// 8 goroutines share a `goro::sync::Mutex<u64>`; worker `w` does `(w+1)*n/8 - w*n/8`
/// rounds of lock, increment, unlock. Reports wall time per lock.
fn mutex(n: usize) {
    let m = Arc::new(goro::sync::Mutex::new(0u64));
    let t = Instant::now();
    let hs: Vec<_> = (0..8)
        .map(|w| {
            let m = m.clone();
            let rounds = (w + 1) * n / 8 - w * n / 8;
            goro::spawn(move || {
                for _ in 0..rounds {
                    *m.lock() += 1;
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let el = t.elapsed();
    assert_eq!(*m.lock(), n as u64);
    row("mutex", "per_lock", el.as_secs_f64() * 1e9 / n as f64, "ns");
}

/// `n` goroutines each sleep 10 ms; wall time from the first spawn until all finished, and
/// the RSS added per goroutine, sampled right after the spawn loop.
fn sleep(n: usize) {
    let rss0 = workloads::rss_bytes();
    let t = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    // A WaitGroup and detached goroutines, as the Go peer does: keeping 1M join handles
    // would keep 1M finished goroutines' descriptors alive, which Go's program does not.
    let wg = Arc::new(goro::sync::WaitGroup::new());
    wg.add(n as isize);
    for _ in 0..n {
        let (done, wg) = (done.clone(), wg.clone());
        goro::spawn(move || {
            goro::time::sleep(std::time::Duration::from_millis(10));
            done.fetch_add(1, Ordering::Relaxed);
            wg.done();
        });
    }
    let spawn_ms = t.elapsed().as_secs_f64() * 1e3;
    let finished = done.load(Ordering::Relaxed);
    let rss = workloads::rss_bytes().saturating_sub(rss0);
    wg.wait();
    let el = t.elapsed();
    assert_eq!(done.load(Ordering::Relaxed), n);
    eprintln!("compare_goro: sleep n={n} spawn_ms {spawn_ms:.1} finished_at_sample {finished}");
    row("sleep", "wall", el.as_secs_f64() * 1e3, "ms");
    row("sleep", "rss_per_goroutine", rss as f64 / n as f64, "B");
    let peak = workloads::peak_rss_bytes().saturating_sub(rss0);
    row(
        "sleep",
        "peak_rss_per_goroutine",
        peak as f64 / n as f64,
        "B",
    );
}

/// One fan-out task: 1,000 rounds of an LCG with a xor-shift (the peers do the same).
fn lcg(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..1000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x ^= x >> 33;
    }
    x
}

/// Spawns `n` tasks and waits for all (a counter and a park: a minimal WaitGroup); returns
/// (milliseconds, checksum). The shared state is borrowed by every task, as Go's closures
/// capture a pointer to their `WaitGroup`: no reference count per task.
fn fanout_once(n: usize, procs: usize) -> (f64, u64) {
    struct Shared {
        sum: AtomicU64,
        left: AtomicUsize,
        main: goro::Goroutine,
    }
    goro::Builder::new().max_procs(procs).run(move || {
        // Leaked on purpose: one small allocation per run, borrowed for 'static by the tasks.
        let sh: &'static Shared = Box::leak(Box::new(Shared {
            sum: AtomicU64::new(0),
            left: AtomicUsize::new(n),
            main: goro::current(),
        }));
        let t = Instant::now();
        for i in 0..n as u64 {
            goro::spawn(move || {
                sh.sum.fetch_add(lcg(i), Ordering::Relaxed);
                if sh.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    sh.main.unpark();
                }
            });
        }
        while sh.left.load(Ordering::Acquire) != 0 {
            goro::park();
        }
        (
            t.elapsed().as_secs_f64() * 1e3,
            sh.sum.load(Ordering::Relaxed),
        )
    })
}

fn fanout(n: usize) {
    let (t1, s1) = fanout_once(n, 1);
    let (t2, s2) = fanout_once(n, 2);
    assert_eq!(s1, s2);
    row("fanout", "procs1", t1, "ms");
    row("fanout", "procs2", t2, "ms");
    row("fanout", "speedup", t1 / t2, "x");
}

/// The imbalance workload's default rounds per goroutine: one of them alone takes about
/// 300 ms (1.67 ns a round on the 2-core AMD EPYC VMs here); benches/compare's `--quick` runs
/// a fifth of it.
const IMBALANCE_N: usize = 180_000_000;
/// Rounds between two preemption points.
const IMBALANCE_CHUNK: u64 = 1000;

/// One imbalance goroutine: `n` rounds of fanout's LCG from `seed`, a preemption point after
/// every `IMBALANCE_CHUNK` of them (the peers do the same; Go's loop has none: it preempts by
/// signal).
fn lcg_long(seed: u64, n: u64) -> u64 {
    let mut x = seed;
    let mut left = n;
    while left > 0 {
        let k = left.min(IMBALANCE_CHUNK);
        for _ in 0..k {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x ^= x >> 33;
        }
        left -= k;
        goro::preempt_point();
    }
    x
}

/// 3 CPU-bound goroutines on 2 processors: how evenly the scheduler shares the processors out
/// among them. Go rotates them over both (each gets about 2/3 of a core, so all finish near
/// 1.5x one alone); a scheduler that keeps a started goroutine on its thread leaves two
/// sharing one processor and one with the other to itself (spread near 2).
fn imbalance(n: usize) {
    const TASKS: u64 = 3;
    let (wall, done, sum, procs) = goro::Builder::new().max_procs(2).run(move || {
        let procs = goro::runtime::max_procs();
        let t = Instant::now();
        let hs: Vec<_> = (0..TASKS)
            .map(|i| {
                goro::spawn(move || {
                    let x = lcg_long(i, n as u64);
                    (x, t.elapsed())
                })
            })
            .collect();
        // Joined in order: each join parks the main goroutine until that one is done.
        let res: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let wall = t.elapsed();
        let sum = res.iter().fold(0u64, |s, r| s.wrapping_add(r.0));
        let done: Vec<f64> = res.iter().map(|r| r.1.as_secs_f64() * 1e3).collect();
        (wall.as_secs_f64() * 1e3, done, sum, procs)
    });
    let first = done.iter().cloned().fold(f64::INFINITY, f64::min);
    let last = done.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "compare_goro: imbalance n={n} procs={procs} checksum {sum} done_ms {}",
        done.iter()
            .map(|d| format!("{d:.1}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    row("imbalance", "wall", wall, "ms");
    row("imbalance", "first_done", first, "ms");
    row("imbalance", "last_done", last, "ms");
    println!("imbalance goro spread {:.2} x", last / first);
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
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<f64>().expect("--secs takes a number"));
    let ballast = args
        .iter()
        .position(|a| a == "--ballast-mib")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<usize>().expect("--ballast-mib takes a number"));
    if workload == "fanout" {
        // Two runtimes in turn (one and two processors), so not inside `goro::run`.
        return fanout(n.unwrap_or(1_000_000));
    }
    if workload == "imbalance" {
        // Its own runtime with two processors, so not inside `goro::run` either.
        return imbalance(n.unwrap_or(IMBALANCE_N));
    }
    goro::run(move || match workload.as_str() {
        "spawn_idle" => {
            let n = n.unwrap_or(1_000_000);
            spawn_idle(n, "");
            spawn_idle(n, "_reuse");
        }
        "spawn_join" => spawn_join(n.unwrap_or(1_000_000)),
        "stack_grow" => stack_grow(n.unwrap_or(200)),
        "pingpong" => pingpong(n.unwrap_or(1_000_000)),
        "ring" => ring(n.unwrap_or(1_000_000)),
        "chan_buffered" => chan_buffered(n.unwrap_or(1_000_000)),
        "sleep" => sleep(n.unwrap_or(1_000_000)),
        "mutex" => mutex(n.unwrap_or(1_000_000)),
        "gc_latency" => gc_workloads::gc_latency(secs.unwrap_or(5.0), ballast.unwrap_or(0)),
        "gc_trees" => gc_workloads::gc_trees(),
        "gc_parent_trees" => gc_workloads::gc_parent_trees(),
        "gc_list" => gc_workloads::gc_list(),
        "gc_graph" => gc_workloads::gc_graph(),
        "" => {} // `cargo bench` with no workload runs nothing
        w => {
            eprintln!("compare_goro: unknown workload {w:?} (spawn_idle, spawn_join, stack_grow, pingpong, ring, chan_buffered, mutex, sleep, fanout, imbalance, gc_latency, gc_trees, gc_parent_trees, gc_list, gc_graph)");
            std::process::exit(2);
        }
    });
}
