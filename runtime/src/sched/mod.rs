//! The scheduler's shape and the runtime's life cycle: Go's G/M/P model (`runtime/proc.go`).
//!
//! - A **P** ([`P`], `p.rs`) is the right to run goroutines: it owns a 256-slot lock-free run
//!   queue plus a `runnext` slot. There are `GOMAXPROCS` of them (the env var, else
//!   `Builder::max_procs`, else the CPUs this process may use: `num_cpus` honours the affinity
//!   mask and the cgroup quota); [`set_max_procs`] changes the count at run time.
//! - An **M** ([`M`], `m.rs`) is an OS thread running the scheduler loop on its own stack; it
//!   needs a P to run goroutines. Ms are created on demand and never exit before shutdown; an
//!   M with nothing to do puts its P on the idle list and sleeps on its own condition variable
//!   until another thread hands it a P (`startm`/`stopm`).
//! - The **global queue** takes goroutines spawned by threads that are not Ms, the overflow
//!   of a full local ring (half of it, in one batch); under `allow_migration` also goroutines
//!   that yield while it has work (Go's `Gosched`) and those whose M lost its P in a blocking
//!   call. A P looks at it every 61st schedule, so it cannot starve.
//! - **Stealing and spinning**: an M that runs out of work becomes *spinning* (at most half
//!   of the busy Ps' worth of Ms spin at once) and steals half of a random victim's ring;
//!   readying a goroutine wakes an idle P's M only when no M is spinning (`wakep`). An M that
//!   stops spinning after finding work wakes the next spinner. The protocol and its lost
//!   wake-up argument are in `m.rs`.
//! - **sysmon** (`sysmon.rs`) asks long-running goroutines to yield at their next preemption
//!   point, retakes the P of an M stuck in [`blocking`] when other work waits, wakes an idle P
//!   when a busy P's queue is not moving, and prints `GORO_DEBUG=schedtrace=<ms>` lines.
//! - **Goroutines stay on their thread** (`pin.rs`): a goroutine runs on the M it first ran
//!   on until it ends, so thread-locals, `Rc`s from them, std lock guards and scopes work in
//!   goroutines as on plain threads; stealing moves only goroutines that have not started.
//!   [`Runtime::file`] is the one place that decides where a runnable goroutine is queued.
//!   `unsafe Builder::allow_migration` lets started goroutines move, with a scan of the
//!   parked stack for thread-local addresses as a net.
//!
//! The state shared by all Ms lives in [`Runtime`]; the parts that must change together (the
//! global queue, the idle P and M lists) are under one lock, Go's `sched.lock`. Counters that
//! the hot path reads without the lock (`npidle`, `nmspinning`, `global_len`) are written
//! under it, or by the compare-and-swap protocol in `m.rs`.
//!
//! Life cycle: [`Runtime::enter`] starts a runtime if none is running (the first `run`, or the
//! first `spawn` from a plain thread, which starts a background runtime that lives until the
//! process exits). `run` holds a user count; the last `run` to return stops the runtime it
//! started: every M finishes the goroutine it is running (a goroutine in a CPU loop without
//! preemption points, or in a long `blocking` call, delays this, like a tokio task that never
//! yields), then unwinds the goroutines bound to it on its own thread, and the threads are
//! joined (`shutdown.rs`), so nothing leaks. A `spawn` from a plain thread while a `run` owns
//! the runtime makes it the background runtime, since nothing else would keep that
//! goroutine's runtime going.

mod blocking;
mod m;
mod p;
mod pin;
pub(crate) mod runq;
mod shutdown;
mod sysmon;
pub(crate) mod timers;

pub use blocking::blocking;
pub(crate) use m::M;
pub(crate) use p::P;
pub(crate) use pin::switch_depth;

use crate::g::GRef;
use crate::tls;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

/// Go's `_MaxGomaxprocs` is 1024 too.
pub(crate) const MAX_PROCS: usize = 1024;
/// Go's default `maxmcount`: past this many Ms (of all the runtimes alive in the process: their
/// ids are process-wide, `m::registered`) no more threads are created.
pub(crate) const MAX_MS: usize = 10_000;

/// Settings of a runtime (from `goro::Builder`).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) stack_size: usize,
    pub(crate) thread_name: String,
    pub(crate) max_procs: Option<usize>,
    /// Started goroutines may move between Ms (`Builder::allow_migration`; `pin.rs`).
    pub(crate) allow_migration: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            stack_size: crate::stack::DEFAULT_STACK_SIZE,
            thread_name: "goro".into(),
            max_procs: None,
            allow_migration: false,
        }
    }
}

/// What the scheduler lock protects.
pub(crate) struct Sched {
    global: VecDeque<GRef>,
    /// Ps with nothing to do (status `P_IDLE`).
    idle_ps: Vec<usize>,
    /// Ms asleep in `stopm` waiting to be handed a P.
    idle_ms: Vec<Arc<M>>,
    /// Idle Ms holding goroutines pinned to them (see `pin.rs`), waiting for any P.
    pinned_ms: Vec<Arc<M>>,
    /// The idle M that sleeps until the earliest timer (`timers.rs`).
    timer_waiter: Option<Arc<M>>,
}

pub(crate) struct Runtime {
    me: Weak<Runtime>,
    sched: Mutex<Sched>,
    /// Length of the global queue, written under the lock, read without it (a hint).
    global_len: AtomicUsize,
    /// `idle_ps.len()`, written under the lock.
    npidle: AtomicUsize,
    /// Ms looking for work (see `m.rs`).
    nmspinning: AtomicUsize,
    /// A `wakep` found an M already spinning and did nothing: work is being readied while
    /// the spinner looks, so it keeps looking a while longer (`m.rs`).
    wake_wanted: AtomicBool,
    /// `pinned_ms.len()`, written under the lock.
    npinned: AtomicUsize,
    /// When the M at the head of `pinned_ms` started waiting (`timers::now_nanos`), written
    /// under the lock.
    pinned_since: AtomicU64,
    /// The timer waiter's deadline (`timers::now_nanos` scale), 0 when no M waits for timers.
    /// Written under the lock; read by `timers::add` without it.
    timer_until: AtomicU64,
    gomaxprocs: AtomicUsize,
    /// Ps by id, created when `gomaxprocs` first reaches them and kept for the runtime's life.
    allp: Box<[OnceLock<Box<P>>]>,
    /// This runtime's Ms (never freed before the runtime; their ids are process-wide, see
    /// `m::registered`).
    ms: Mutex<Vec<Arc<M>>>,
    mcount: AtomicUsize,
    /// The shutdown's progress (`shutdown.rs`).
    shut: Mutex<shutdown::Progress>,
    shut_cv: std::sync::Condvar,
    /// sysmon's thread, and whether it has backed off to long sleeps (`blocking` wakes it
    /// then, so a blocked P is retaken within a tick, not after up to 10 ms).
    sysmon: OnceLock<std::thread::Thread>,
    sysmon_idle: AtomicBool,
    stop: AtomicBool,
    pub(crate) config: Config,
    started: Instant,
    /// The runtime's own threads (Ms, sysmon), joined when it stops.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// The running runtime and how many `run` calls use it (`None` users: background runtime).
struct Current {
    rt: Option<Arc<Runtime>>,
    users: Option<usize>,
}

static CURRENT: Mutex<Current> = Mutex::new(Current {
    rt: None,
    users: None,
});

fn current() -> std::sync::MutexGuard<'static, Current> {
    CURRENT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the calling code runs: on an M (with or without a P), or `None` on any other thread.
pub(crate) struct Here<'a> {
    pub(crate) rt: &'a Runtime,
    pub(crate) m: &'a M,
    pub(crate) p: Option<&'a P>,
}

/// Runs `f` with this thread's M and P. `f` must not switch goroutines (it could resume on
/// another M); none of the callers does.
pub(crate) fn with_here<R>(f: impl FnOnce(Option<Here<'_>>) -> R) -> R {
    let (m, p) = tls::current_mp();
    // SAFETY: a non-null CURRENT_M points at the `M` whose `m_main` runs on this thread; it is
    // set after `m_main` took its `Arc<M>` and cleared before it drops it. `f` runs on this
    // thread and does not switch away, so the M outlives the call.
    let m = unsafe { m.as_ref() };
    let here = m.map(|m| Here {
        // SAFETY: we are on this M's thread inside its `m_main` (CURRENT_M is set).
        rt: unsafe { m.runtime() },
        m,
        // SAFETY: a non-null CURRENT_P is a P this M owns (set when it acquires one, cleared
        // when it lets it go); Ps live as long as the runtime, which `m_main` keeps alive.
        p: unsafe { p.as_ref() },
    });
    f(here)
}

/// The runtime for a goroutine spawned from a plain thread. Such a goroutine has no `run` to
/// keep its runtime going, so a runtime that `run` started becomes the background runtime
/// here: the last `run` to return no longer stops it (its goroutine would never run again).
fn runtime_or_start() -> Arc<Runtime> {
    let mut cur = current();
    if let Some(rt) = cur.rt.clone() {
        cur.users = None;
        return rt;
    }
    let rt = Runtime::start(Config::default());
    cur.rt = Some(rt.clone());
    cur.users = None;
    rt
}

/// A `run` call's hold on the runtime; the last one stops a runtime that `run` started.
pub(crate) struct Entered {
    pub(crate) rt: Arc<Runtime>,
}

/// The number of Ps for a new runtime: `GOMAXPROCS`, else the builder's, else the CPUs.
fn resolve_procs(configured: Option<usize>) -> usize {
    if let Ok(v) = std::env::var("GOMAXPROCS") {
        match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => return n.min(MAX_PROCS),
            _ => eprintln!("goro: ignoring GOMAXPROCS={v:?}: not a positive integer"),
        }
    }
    configured.unwrap_or_else(num_cpus::get).clamp(1, MAX_PROCS)
}

impl Runtime {
    /// Joins the running runtime, or starts one with `config`.
    pub(crate) fn enter(config: Config) -> Entered {
        let mut cur = current();
        if let Some(rt) = cur.rt.clone() {
            if let Some(n) = cur.users.as_mut() {
                *n += 1;
            }
            return Entered { rt };
        }
        let rt = Runtime::start(config);
        cur.rt = Some(rt.clone());
        cur.users = Some(1);
        Entered { rt }
    }

    fn start(config: Config) -> Arc<Runtime> {
        crate::signal::install_handler();
        // Before any goroutine: the hot sides of its protocols must know whether to fence.
        crate::membarrier::init();
        let procs = resolve_procs(config.max_procs);
        let rt = Arc::new_cyclic(|me| Runtime {
            me: me.clone(),
            sched: Mutex::new(Sched {
                global: VecDeque::new(),
                idle_ps: Vec::new(),
                idle_ms: Vec::new(),
                pinned_ms: Vec::new(),
                timer_waiter: None,
            }),
            global_len: AtomicUsize::new(0),
            npidle: AtomicUsize::new(0),
            nmspinning: AtomicUsize::new(0),
            wake_wanted: AtomicBool::new(false),
            npinned: AtomicUsize::new(0),
            pinned_since: AtomicU64::new(0),
            timer_until: AtomicU64::new(0),
            gomaxprocs: AtomicUsize::new(procs),
            allp: (0..MAX_PROCS).map(|_| OnceLock::new()).collect(),
            ms: Mutex::new(Vec::new()),
            mcount: AtomicUsize::new(0),
            shut: Mutex::new(shutdown::Progress::default()),
            shut_cv: std::sync::Condvar::new(),
            sysmon: OnceLock::new(),
            sysmon_idle: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            config,
            started: Instant::now(),
            threads: Mutex::new(Vec::new()),
        });
        {
            let mut s = rt.lock();
            // P0 goes to the first M; the others wait on the idle list for work.
            for id in (1..procs).rev() {
                rt.make_p(id);
                s.idle_ps.push(id);
            }
            rt.npidle.store(procs - 1, Ordering::Relaxed);
        }
        let p0 = rt.make_p(0);
        p0.set_status(p::P_RUNNING);
        if let Err(e) = m::spawn_m(&rt, Some(0), false) {
            panic!("goro: cannot start the first scheduler thread: {e}");
        }
        let rt2 = rt.clone();
        let mon = std::thread::Builder::new()
            .name(format!("{}-sysmon", rt.config.thread_name))
            .spawn(move || sysmon::run(&rt2))
            .expect("goro: cannot start the sysmon thread");
        let _ = rt.sysmon.set(mon.thread().clone());
        rt.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(mon);
        rt
    }

    /// Brings sysmon back to its 20 µs rhythm if it has backed off.
    fn kick_sysmon(&self) {
        if self.sysmon_idle.load(Ordering::Relaxed)
            && self.sysmon_idle.swap(false, Ordering::Relaxed)
        {
            if let Some(t) = self.sysmon.get() {
                t.unpark();
            }
        }
    }

    /// Wakes the timer waiter to look at the heaps again (a timer earlier than its deadline).
    fn recheck_timer_waiter(&self) {
        let s = self.lock();
        if let Some(m) = &s.timer_waiter {
            m.recheck_timers();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn make_p(&self, id: usize) -> &P {
        self.allp[id].get_or_init(|| Box::new(P::new(id)))
    }

    /// The P with this id; it must exist (ids below `gomaxprocs` ever reached).
    fn p(&self, id: usize) -> &P {
        self.allp[id].get().expect("a P that was never created")
    }

    fn procs(&self) -> usize {
        self.gomaxprocs.load(Ordering::Relaxed)
    }

    /// Queues a G readied by a thread that holds no P.
    pub(crate) fn inject(&self, g: GRef) {
        self.inject_batch(std::iter::once(g));
    }

    /// Queues several Gs on the global queue under one lock, and wakes an idle P for them.
    fn inject_batch(&self, gs: impl IntoIterator<Item = GRef>) {
        {
            let mut s = self.lock();
            s.global.extend(gs);
            self.global_len.store(s.global.len(), Ordering::Relaxed);
        }
        m::wakep(self);
    }

    /// Takes one G from the global queue to run, and up to `max - 1` more into `p`'s ring
    /// (Go's `globrunqget`: at most a fair share, `len / gomaxprocs + 1`).
    fn take_global(&self, p: &P, max: usize) -> Option<GRef> {
        let mut s = self.lock();
        self.take_global_locked(&mut s, p, max)
    }

    fn take_global_locked(&self, s: &mut Sched, p: &P, max: usize) -> Option<GRef> {
        let first = s.global.pop_front()?;
        let fair = s.global.len() / self.procs() + 1;
        let n = s
            .global
            .len()
            .min(max.saturating_sub(1))
            .min(fair)
            .min(p.room());
        p.fill_from(s.global.drain(..n));
        self.global_len.store(s.global.len(), Ordering::Relaxed);
        Some(first)
    }

    /// Changes the number of Ps; returns the previous number. See [`set_max_procs`].
    fn set_procs(&self, n: usize) -> usize {
        let n = n.clamp(1, MAX_PROCS);
        let old;
        {
            let mut s = self.lock();
            old = self.procs();
            for id in old..n {
                let p = self.make_p(id);
                if p.status() == p::P_STOPPED {
                    p.set_status(p::P_IDLE);
                    s.idle_ps.push(id);
                }
            }
            // Idle Ps past the new count stop now; running ones when their M next schedules.
            s.idle_ps.retain(|&id| {
                let keep = id < n;
                if !keep {
                    self.p(id).set_status(p::P_STOPPED);
                }
                keep
            });
            self.npidle.store(s.idle_ps.len(), Ordering::Relaxed);
            self.gomaxprocs.store(n, Ordering::Relaxed);
        }
        for _ in old..n {
            m::wakep(self);
        }
        old
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut cur = current();
        let last = match cur.users.as_mut() {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if !last || !cur.rt.as_ref().is_some_and(|rt| Arc::ptr_eq(rt, &self.rt)) {
            return;
        }
        cur.rt = None;
        cur.users = None;
        drop(cur);
        shutdown::run(&self.rt);
    }
}

/// Whether sysmon asked the goroutine running on this thread's P to yield; clears the request.
pub(crate) fn take_preempt_request() -> bool {
    // One thread-local read (every channel operation is a preemption point): the P only.
    let p = tls::current_p();
    // SAFETY: a non-null CURRENT_P is the P this thread's M holds while it runs goroutines;
    // Ps live as long as their runtime, which outlives every goroutine running on it.
    !p.is_null() && unsafe { &*p }.take_preempt_request()
}

/// Spawns: `make` builds the goroutine on the runtime this thread should use (starting a
/// background one if none runs), and the new G is queued on this M's P (`runnext`), or
/// globally off an M. One look at the thread's M and P serves the whole spawn, including its
/// preemption point: if sysmon asked, the spawner yields afterwards.
pub(crate) fn spawn_with<R, E>(
    make: impl FnOnce(&Runtime) -> Result<(R, GRef), E>,
) -> Result<R, E> {
    let (r, yield_now) = with_here(|h| match h {
        Some(Here { rt, p: Some(p), .. }) => {
            let (r, g) = make(rt)?;
            p.push_next(rt, g);
            Ok((r, p.take_preempt_request()))
        }
        Some(Here { rt, p: None, .. }) => {
            let (r, g) = make(rt)?;
            rt.inject(g);
            Ok((r, false))
        }
        None => {
            let rt = runtime_or_start();
            let (r, g) = make(&rt)?;
            rt.inject(g);
            Ok((r, false))
        }
    })?;
    if yield_now {
        crate::yield_now();
    }
    Ok(r)
}

/// Makes a runnable (started) G eligible to run, on the M it is bound to (`Runtime::file`).
pub(crate) fn ready(g: GRef) {
    with_here(|h| match h {
        Some(h) => h.rt.file(h.m, h.p, g, true),
        None => ready_elsewhere(g),
    })
}

/// A started goroutine made runnable by a thread other than its M: to its M's inbox (which
/// wakes that M if it sleeps). Under migration, a goroutine of another runtime, or readied
/// off any M, goes to its runtime's global queue instead, for any of its Ms to take.
pub(crate) fn ready_elsewhere(g: GRef) {
    // SAFETY: we hold the scheduling reference of `g`, started and unfinished, bound to that
    // M: its runtime cannot finish shutting down before `g` finishes (`m::registered`).
    let Some(t) = (unsafe { m::registered(g.last_m() as usize) }) else {
        // Cannot happen: a runtime unregisters its Ms only once every goroutine that started
        // on them has finished. Keep the goroutine (and everything that points into it)
        // rather than free it.
        debug_assert!(false, "a started goroutine whose M is gone");
        std::mem::forget(g);
        return;
    };
    // SAFETY: as above, the runtime outlives this call.
    let rt = unsafe { t.runtime_of() };
    if rt.config.allow_migration {
        rt.inject(g);
    } else {
        t.push_inbox(g);
    }
}

impl Runtime {
    /// The one place a runnable goroutine is queued by the M `m` (this thread's), holding P
    /// `p` or none: `next` runs it next, continuing the running time slice, else at the tail.
    ///
    /// **A goroutine runs on one M from its first run to its end** (unless the runtime allows
    /// migration, `pin.rs`). So a goroutine that has not started goes to the P's queue, where
    /// any M may steal it (the global queue without a P); a started one goes to the queue of
    /// the M it is bound to: this M's own (no thief can take from it), or another M's inbox.
    /// Under migration, started goroutines of this runtime are queued on the P like new ones,
    /// and the scan in `execute` decides whether they may run where they land.
    pub(crate) fn file(&self, m: &M, p: Option<&P>, g: GRef, next: bool) {
        let last = g.last_m();
        if last as usize == m.id && !self.config.allow_migration {
            m.push_local(g, next);
            return;
        }
        let shared = last == crate::g::NO_M
            || (self.config.allow_migration
                // SAFETY: `g` is started and unfinished, and we hold its scheduling reference
                // (see `ready_elsewhere`).
                && unsafe { m::registered(last as usize) }
                    .is_some_and(|t| std::ptr::eq(t.runtime_of_ptr(), self)));
        if !shared {
            ready_elsewhere(g);
            return;
        }
        match p {
            Some(p) if next => p.push_next(self, g),
            Some(p) => p.push_tail(self, g),
            None => self.inject(g),
        }
    }
}

/// The netpoller has just started (`netpoll`): tell the running runtime's idle Ms.
pub(crate) fn netpoll_started() {
    let rt = with_here(|h| h.map(|h| h.rt.me.upgrade())).flatten();
    if let Some(rt) = rt.or_else(|| current().rt.clone()) {
        m::netpoll_started(&rt);
    }
}

/// The runtime `set_max_procs`/`max_procs` talk to: this M's, else the running one.
fn runtime_in_use<R>(f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    with_here(|h| match h {
        Some(h) => Some(f(h.rt)),
        None => current().rt.clone().map(|rt| f(&rt)),
    })
}

/// Sets the number of processors (Go's `runtime.GOMAXPROCS(n)`) of the running runtime and
/// returns the previous value; `n` is clamped to 1..=1024. With fewer processors, a processor
/// past the new count stops when its current goroutine next switches out, and its queue moves
/// to the global queue. With no runtime running it changes nothing and returns 0 (the count of
/// the next runtime comes from `GOMAXPROCS`, `Builder::max_procs` or the CPU count).
pub fn set_max_procs(n: usize) -> usize {
    runtime_in_use(|rt| rt.set_procs(n)).unwrap_or(0)
}

/// The running runtime's number of processors (Go's `runtime.GOMAXPROCS(0)`), or 0 if no
/// runtime is running.
pub fn max_procs() -> usize {
    runtime_in_use(Runtime::procs).unwrap_or(0)
}

pub(crate) fn stats() -> crate::runtime::SchedStats {
    crate::runtime::SchedStats {
        migrations: pin::MIGRATED.load(Ordering::Relaxed),
        pinned: pin::PINNED.load(Ordering::Relaxed),
    }
}
