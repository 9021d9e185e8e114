//! Allocation counters, `MemStats` (Go's `runtime.MemStats` fields that exist here), pause
//! history and the `GORO_DEBUG=gctrace=1` line.
//!
//! Allocation is counted per thread with single-writer atomics (a plain load and store, no
//! shared cache line), summed when read; frees are counted globally (they happen on the
//! finalizer thread). Reading never stops anything.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::collector::CycleReport;

/// One thread's allocation counters (single writer: a load and a store each, no RMW).
#[derive(Default)]
pub(crate) struct Counters {
    mallocs: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    #[inline]
    pub(crate) fn bump(&self, bytes: usize) -> u64 {
        let n = self.mallocs.load(Ordering::Relaxed) + 1;
        self.mallocs.store(n, Ordering::Relaxed);
        self.bytes.store(
            self.bytes.load(Ordering::Relaxed) + bytes as u64,
            Ordering::Relaxed,
        );
        n
    }
}

static RETIRED_MALLOCS: AtomicU64 = AtomicU64::new(0);
static RETIRED_BYTES: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);
static GC_CPU_NS: AtomicU64 = AtomicU64::new(0);
static TRACE: AtomicBool = AtomicBool::new(false);

fn threads() -> &'static Mutex<Vec<Arc<Counters>>> {
    static T: Mutex<Vec<Arc<Counters>>> = Mutex::new(Vec::new());
    &T
}

fn process_start() -> Instant {
    static S: OnceLock<Instant> = OnceLock::new();
    *S.get_or_init(Instant::now)
}

/// A new thread's counters, registered so readers sum them.
pub(crate) fn register() -> Arc<Counters> {
    process_start();
    let c = Arc::new(Counters::default());
    threads()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(c.clone());
    c
}

/// A thread's counters at its exit: folded into the retired totals (readers may see them twice
/// for an instant, never lose them).
pub(crate) fn retire(c: Arc<Counters>) {
    RETIRED_MALLOCS.fetch_add(c.mallocs.load(Ordering::Relaxed), Ordering::Relaxed);
    RETIRED_BYTES.fetch_add(c.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    threads()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|x| !Arc::ptr_eq(x, &c));
}

/// An allocation by a thread whose cache is gone (it is exiting).
pub(crate) fn on_alloc_unregistered(bytes: usize) {
    RETIRED_MALLOCS.fetch_add(1, Ordering::Relaxed);
    RETIRED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

pub(crate) fn on_free_many(n: usize, bytes: usize) {
    FREES.fetch_add(n as u64, Ordering::Relaxed);
    FREED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

pub(crate) fn on_free(bytes: usize) {
    FREES.fetch_add(1, Ordering::Relaxed);
    FREED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

fn totals() -> (u64, u64) {
    let mut m = RETIRED_MALLOCS.load(Ordering::Relaxed);
    let mut b = RETIRED_BYTES.load(Ordering::Relaxed);
    for c in threads().lock().unwrap_or_else(|e| e.into_inner()).iter() {
        m += c.mallocs.load(Ordering::Relaxed);
        b += c.bytes.load(Ordering::Relaxed);
    }
    (m, b)
}

/// Bytes of allocated objects (live or not yet freed).
pub(crate) fn heap_alloc() -> usize {
    let (_, b) = totals();
    b.saturating_sub(FREED_BYTES.load(Ordering::Relaxed)) as usize
}

/// CPU time of the calling thread.
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub(crate) fn add_gc_cpu(d: Duration) {
    GC_CPU_NS.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}

/// Go's `runtime.MemStats`, the fields that exist in goro's collector, in snake case.
#[derive(Debug, Clone)]
pub struct MemStats {
    /// Bytes of allocated heap objects (reachable, or unreachable and not yet freed).
    pub heap_alloc: u64,
    /// Cumulative bytes allocated for heap objects.
    pub total_alloc: u64,
    /// Bytes of heap memory obtained from the OS (spans).
    pub heap_sys: u64,
    /// Bytes in spans in use (holding objects or owned by an allocation cache): `heap_sys` less
    /// the empty spans pooled for reuse.
    pub heap_inuse: u64,
    /// Allocated heap objects.
    pub heap_objects: u64,
    /// Cumulative heap objects allocated.
    pub mallocs: u64,
    /// Cumulative heap objects freed.
    pub frees: u64,
    /// Bytes of goroutine stacks in use, as the last cycle's visit of every goroutine stack
    /// summed them (each one's used part, stack pointer to top, in whole pages); before the
    /// first cycle, two pages per goroutine. `goro::stack::stats()` has the exact resident
    /// figure, at the cost of a `mincore` walk.
    pub stack_inuse: u64,
    /// Heap size at which the next cycle aims to end (`u64::MAX` when GOGC is off).
    pub next_gc: u64,
    /// Completed cycles.
    pub num_gc: u32,
    /// Cycles forced by `collect()`.
    pub num_forced_gc: u32,
    /// Total time of the synchronisation phases (mark start + mark termination) since start.
    pub pause_total_ns: u64,
    /// The last 256 cycles' pause times, `pause_ns[(num_gc + 255) % 256]` the latest (Go's layout).
    pub pause_ns: [u64; 256],
    /// When each of those pauses ended, nanoseconds since the Unix epoch.
    pub pause_end: [u64; 256],
    /// When the last cycle ended, nanoseconds since the Unix epoch (0: none yet).
    pub last_gc: u64,
    /// Fraction of the available CPU (elapsed × procs) spent in the collector since the first
    /// allocation.
    pub gc_cpu_fraction: f64,
}

struct History {
    num_gc: u32,
    num_forced_gc: u32,
    pause_total_ns: u64,
    pause_ns: [u64; 256],
    pause_end: [u64; 256],
    last_gc: u64,
}

static HISTORY: Mutex<History> = Mutex::new(History {
    num_gc: 0,
    num_forced_gc: 0,
    pause_total_ns: 0,
    pause_ns: [0; 256],
    pause_end: [0; 256],
    last_gc: 0,
});

fn procs() -> usize {
    let p = goro_runtime::runtime::max_procs();
    if p > 0 {
        p
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// The current statistics. Costs a walk of the per-thread counters; stops nothing.
pub fn mem_stats() -> MemStats {
    let (mallocs, total) = totals();
    let frees = FREES.load(Ordering::Relaxed);
    let freed = FREED_BYTES.load(Ordering::Relaxed);
    let h = HISTORY.lock().unwrap_or_else(|e| e.into_inner());
    let sys = crate::heap::SPAN_BYTES.load(Ordering::Relaxed) as u64;
    let idle = crate::heap::POOLED_BYTES.load(Ordering::Relaxed) as u64;
    let elapsed = process_start().elapsed().as_secs_f64() * procs() as f64;
    let goal = crate::pacer::goal();
    MemStats {
        heap_alloc: total.saturating_sub(freed),
        total_alloc: total,
        heap_sys: sys,
        heap_inuse: sys.saturating_sub(idle),
        heap_objects: mallocs.saturating_sub(frees),
        mallocs,
        frees,
        stack_inuse: crate::collector::stacks_estimate() as u64,
        next_gc: if goal == usize::MAX {
            u64::MAX
        } else {
            goal as u64
        },
        num_gc: h.num_gc,
        num_forced_gc: h.num_forced_gc,
        pause_total_ns: h.pause_total_ns,
        pause_ns: h.pause_ns,
        pause_end: h.pause_end,
        last_gc: h.last_gc,
        gc_cpu_fraction: if elapsed > 0.0 {
            GC_CPU_NS.load(Ordering::Relaxed) as f64 / 1e9 / elapsed
        } else {
            0.0
        },
    }
}

pub(crate) fn init_trace() {
    if let Ok(v) = std::env::var("GORO_DEBUG") {
        for kv in v.split(',') {
            if let Some(val) = kv.trim().strip_prefix("gctrace=") {
                match val {
                    "0" => {}
                    "1" => TRACE.store(true, Ordering::Relaxed),
                    _ => eprintln!("goro: ignoring GORO_DEBUG gctrace={val:?}: want 0 or 1"),
                }
            }
        }
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

pub(crate) fn after_cycle(r: &CycleReport) {
    add_gc_cpu(r.mark_cpu);
    let pause = (r.t0 + r.t1).as_nanos() as u64;
    let now = unix_ns();
    {
        let mut h = HISTORY.lock().unwrap_or_else(|e| e.into_inner());
        let i = h.num_gc as usize % 256;
        h.pause_ns[i] = pause;
        h.pause_end[i] = now;
        h.num_gc += 1;
        if r.forced {
            h.num_forced_gc += 1;
        }
        h.pause_total_ns += pause;
        h.last_gc = now;
    }
    if TRACE.load(Ordering::Relaxed) {
        let since = r.start.duration_since(process_start());
        let elapsed = process_start().elapsed().as_secs_f64() * procs() as f64;
        let pct = if elapsed > 0.0 {
            (GC_CPU_NS.load(Ordering::Relaxed) as f64 / 1e9 / elapsed * 100.0) as u64
        } else {
            0
        };
        const MB: usize = 1 << 20;
        let goal = if r.goal == usize::MAX { 0 } else { r.goal / MB };
        eprintln!(
            "gc {} @{:.3}s {}%: {}+{}+{} ms clock, {}+0/{}/0+{} ms cpu, {}->{}->{} MB, {} MB goal, {} MB stacks, 0 MB globals, {} P{}",
            r.n,
            since.as_secs_f64(),
            pct,
            ms(r.t0),
            ms(r.mark),
            ms(r.t1),
            ms(r.t0),
            ms(r.mark_cpu),
            ms(r.t1),
            r.heap_start / MB,
            r.heap_end / MB,
            r.marked / MB,
            goal,
            r.stacks / MB,
            procs(),
            if r.forced { " (forced)" } else { "" },
        );
        if r.abandoned {
            eprintln!(
                "gc {}: freed nothing: a GcCell/GcMutex stayed held by a writer through mark \
                 termination (50 ms); the next cycle tries again",
                r.n
            );
        }
    }
}
