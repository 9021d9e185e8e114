//! The scheduler: Ms (OS threads) running Ps' queues of Gs, and the runtime's life cycle.
//!
//! This scheduler runs **one P on one M**: every goroutine runs on the runtime's one
//! scheduler thread, readied goroutines from other threads arrive through the global queue.
//! It already has the G/M/P shape the work-stealing scheduler fills in:
//! - a [`P`] owns a [`RunQueue`](runq::RunQueue): Go's 256-slot lock-free ring with a `runnext`
//!   slot (a goroutine readied by the running one runs next: spawn and unpark hand over the rest
//!   of the time slice, like Go's `runqput(.., next=true)`) and steal-half; when the ring is
//!   full, half of it moves to the global queue in one batch;
//! - the [`Runtime`] owns the global queue, fed by threads that are not Ms, by a full ring's
//!   overflow, and by `yield_now` while it has work (Go's `Gosched`, so a yielding loop cannot
//!   starve it); a P also checks it every 61st schedule (Go's `schedtick%61`);
//! - goroutines the M itself readies between goroutines (a joiner woken by `finish`) go to an
//!   M-local handoff cell, not the stealable `runnext`: the M schedules right after anyway;
//! - an M with no work sleeps on the global queue's condition variable; injecting wakes it.
//!
//! - sysmon ([`sysmon`]) asks a goroutine that has held its P for 10 ms to yield at its next
//!   preemption point.
//!
//! Because goroutines never change thread here, code that keeps a reference into a
//! thread-local across a park is still correct; the multi-P scheduler must keep it so.
//!
//! Life cycle: [`Runtime::enter`] starts a runtime if none is running (the first `run`, or the
//! first `spawn` from a plain thread, which starts a background runtime that lives until the
//! process exits). `run` holds a user count; the last `run` to return stops the runtime it
//! started: its M exits and goroutines still parked or queued are left as they are (like Go's
//! at the end of `main`, they never run again; their slots are not reused). A `spawn` from a
//! plain thread while a `run` owns the runtime makes it the background runtime, since nothing
//! else would keep that goroutine's runtime going.

pub(crate) mod runq;
mod sysmon;

use crate::g::{GRef, Switch};
use crate::signal::AltStack;
use crate::tls;
use runq::RunQueue;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Goroutines readied from outside any M, overflowed from a P's ring, or yielding behind it.
struct GlobalQueue {
    q: VecDeque<GRef>,
    /// An M is asleep on `Runtime::wake`.
    m_idle: bool,
}

/// Settings of a runtime (from `goro::Builder`).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) stack_size: usize,
    pub(crate) thread_name: String,
}

pub(crate) struct Runtime {
    global: Mutex<GlobalQueue>,
    /// Length of the global queue, written under its lock, read without it (a hint).
    global_len: AtomicUsize,
    wake: Condvar,
    stop: AtomicBool,
    pub(crate) config: Config,
    /// What sysmon sees of each P (one P in this version).
    ps: Box<[sysmon::PStatus]>,
    /// The runtime's own threads (the M, sysmon), joined when it stops.
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

/// Runs `f` with this thread's P: `Some` on an M (in its scheduling code or in a goroutine it
/// runs), `None` on any other thread. `f` must not switch goroutines (it could resume on
/// another M); none of the callers does.
fn with_p<R>(f: impl FnOnce(Option<&P>) -> R) -> R {
    let p = tls::current_p();
    // SAFETY: a non-null CURRENT_P points at the P in `m_main`'s frame on this thread; it is
    // set after the P is made and cleared before it is dropped, so it is alive for the whole
    // call (`f` runs on this thread and does not switch away).
    f(unsafe { p.as_ref() })
}

/// Runs `f` with the runtime a goroutine or plain thread should use, starting a background one
/// if none runs. On an M this takes no reference count.
pub(crate) fn with_runtime<R>(f: impl FnOnce(&Runtime) -> R) -> R {
    with_p(|p| match p {
        Some(p) => f(&p.rt),
        None => f(&runtime_or_start()),
    })
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
    let rt = Runtime::start(Config {
        stack_size: crate::stack::DEFAULT_STACK_SIZE,
        thread_name: "goro".into(),
    });
    cur.rt = Some(rt.clone());
    cur.users = None;
    rt
}

/// A `run` call's hold on the runtime; the last one stops a runtime that `run` started.
pub(crate) struct Entered {
    pub(crate) rt: Arc<Runtime>,
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
        let rt = Arc::new(Runtime {
            global: Mutex::new(GlobalQueue {
                q: VecDeque::new(),
                m_idle: false,
            }),
            global_len: AtomicUsize::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            config,
            ps: (0..1).map(|_| sysmon::PStatus::default()).collect(),
            threads: Mutex::new(Vec::new()),
        });
        let rt2 = rt.clone();
        let m = std::thread::Builder::new()
            .name(format!("{}-m0", rt.config.thread_name))
            .spawn(move || m_main(rt2))
            .expect("goro: cannot start the scheduler thread");
        let rt3 = rt.clone();
        let mon = std::thread::Builder::new()
            .name(format!("{}-sysmon", rt.config.thread_name))
            .spawn(move || sysmon::run(&rt3))
            .expect("goro: cannot start the sysmon thread");
        *rt.threads.lock().unwrap_or_else(|e| e.into_inner()) = vec![m, mon];
        rt
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GlobalQueue> {
        self.global.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a G readied by a thread that is not an M.
    pub(crate) fn inject(&self, g: GRef) {
        self.inject_batch(std::iter::once(g));
    }

    /// Queues several Gs under one lock (a P's overflow, or readies from outside).
    fn inject_batch(&self, gs: impl IntoIterator<Item = GRef>) {
        let mut gq = self.lock();
        gq.q.extend(gs);
        self.global_len.store(gq.q.len(), Ordering::Relaxed);
        if gq.m_idle {
            gq.m_idle = false;
            self.wake.notify_one();
        }
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
        self.rt.stop.store(true, Ordering::Release);
        {
            let mut gq = self.rt.lock();
            gq.m_idle = false;
            self.rt.wake.notify_all();
        }
        let threads =
            std::mem::take(&mut *self.rt.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            t.thread().unpark(); // sysmon sleeps in park_timeout; the M wakes on `wake`
            let _ = t.join();
        }
    }
}

/// A processor: the right to run goroutines, with its run queue. Its owner-only operations
/// are called only by its M's thread (goroutines running on that M included).
pub(crate) struct P {
    pub(crate) rt: Arc<Runtime>,
    runq: RunQueue<GRef>,
    /// A goroutine readied by this M itself between goroutines (the joiner woken by `finish`,
    /// a token arriving at `commit_park`). The M schedules again right after, so no thief could
    /// help it sooner: it skips `runnext` and its atomic swaps, and runs next.
    handoff: Cell<Option<GRef>>,
    tick: Cell<u32>,
}

/// How often a P looks at the global queue before its own (Go's `schedtick%61`): a prime, so
/// it does not fall into step with a program's own periodicity.
const GLOBAL_CHECK_TICKS: u32 = 61;

impl P {
    /// Queues `g` to run next; the previous `runnext` moves to the ring's tail. Called by the
    /// M between goroutines, it uses the handoff cell instead.
    fn status(&self) -> &sysmon::PStatus {
        &self.rt.ps[0]
    }

    fn push_next(&self, g: GRef) {
        if !self.status().running() {
            if let Some(old) = self.handoff.replace(Some(g)) {
                self.push_tail(old);
            }
            return;
        }
        if let Some(batch) = self.runq.push_next(g) {
            self.rt.inject_batch(batch);
        }
    }

    fn push_tail(&self, g: GRef) {
        if let Some(batch) = self.runq.push(g) {
            self.rt.inject_batch(batch);
        }
    }

    /// Takes one G from the global queue to run, and up to `max - 1` more into the ring.
    fn take_global(&self, max: usize) -> Option<GRef> {
        let mut gq = self.rt.lock();
        let first = gq.q.pop_front()?;
        let room = (runq::CAP - self.runq.len()) as usize;
        let n = gq.q.len().min(max.saturating_sub(1)).min(room);
        for g in gq.q.drain(..n) {
            // Cannot overflow: at most `room` pushes into the ring, and only we push.
            let overflow = self.runq.push(g);
            debug_assert!(overflow.is_none());
        }
        self.rt.global_len.store(gq.q.len(), Ordering::Relaxed);
        Some(first)
    }

    /// The next G to run, or `None` if there is nothing local or global.
    fn find_runnable(&self) -> Option<GRef> {
        let t = self.tick.get().wrapping_add(1);
        self.tick.set(t);
        if t.is_multiple_of(GLOBAL_CHECK_TICKS) {
            if let Some(g) = self.take_global(1) {
                return Some(g);
            }
        }
        if let Some(g) = self.handoff.take() {
            return Some(g);
        }
        if let Some(g) = self.runq.pop() {
            return Some(g);
        }
        self.take_global(runq::CAP as usize / 2)
    }
}

/// Whether sysmon asked the goroutine running on this thread's P to yield; clears the request.
pub(crate) fn take_preempt_request() -> bool {
    with_p(|p| {
        let Some(st) = p.map(P::status) else {
            return false;
        };
        // A plain load first: this is called in CPU loops, and a request is rare.
        st.preempt.load(Ordering::Relaxed)
            && st.running()
            && st.preempt.swap(false, Ordering::Relaxed)
    })
}

/// Makes a runnable G eligible to run: on this M's P if called on an M, else globally.
pub(crate) fn ready(g: GRef) {
    let Some(g) = with_p(|p| match p {
        Some(p) => {
            p.push_next(g);
            None
        }
        None => Some(g),
    }) else {
        return;
    };
    let rt = current().rt.clone();
    match rt {
        Some(rt) => rt.inject(g),
        // No runtime: the G never runs again. Its reference is dropped; handles may keep it.
        None => drop(g),
    }
}

/// Queues a freshly spawned G on `rt`.
pub(crate) fn ready_new(rt: &Runtime, g: GRef) {
    with_p(|p| match p {
        Some(p) if std::ptr::eq(&*p.rt, rt) => p.push_next(g),
        _ => rt.inject(g),
    })
}

/// The scheduler loop of an M.
fn m_main(rt: Arc<Runtime>) {
    let _alt = AltStack::install();
    let p = P {
        rt: rt.clone(),
        runq: RunQueue::new(),
        handoff: Cell::new(None),
        tick: Cell::new(0),
    };
    tls::set_current_p(&p);
    while !rt.stop.load(Ordering::Acquire) {
        let g = match p.find_runnable() {
            Some(g) => g,
            None => {
                let mut gq = rt.lock();
                while gq.q.is_empty() && !rt.stop.load(Ordering::Acquire) {
                    gq.m_idle = true;
                    gq = rt.wake.wait(gq).unwrap_or_else(|e| e.into_inner());
                }
                continue;
            }
        };
        execute(&p, g);
    }
    tls::set_current_p(std::ptr::null());
    // Goroutines still queued never run again (see the module comment).
    drop(p.handoff.take());
    drop(p);
}

/// Runs `g` until it switches out, then files it according to why.
fn execute(p: &P, g: GRef) {
    g.transition_to_running();
    tls::set_current_g(Some(&g));
    let st = p.status();
    // One writer (this M): plain stores. A preemption request was for the previous goroutine.
    if st.preempt.load(Ordering::Relaxed) {
        st.preempt.store(false, Ordering::Relaxed);
    }
    let tick = p.tick.get().wrapping_mul(2);
    st.schedtick.store(tick | 1, Ordering::Relaxed);
    // SAFETY: we just moved the G to RUNNING, which makes this M the owner of its coroutine.
    let r = unsafe { g.resume() };
    st.schedtick.store(tick, Ordering::Relaxed);
    tls::set_current_g(None);
    match r {
        corosensei::CoroutineResult::Yield(Switch::Yield) => {
            g.transition_to_runnable();
            // Like Go's Gosched: behind the global queue when it has work, so a goroutine
            // yielding in a loop cannot starve goroutines that overflowed there (the P would
            // otherwise pop it again and reach the global queue only every 61 schedules).
            if p.rt.global_len.load(Ordering::Relaxed) > 0 {
                p.rt.inject(g);
            } else {
                p.push_tail(g);
            }
        }
        corosensei::CoroutineResult::Yield(Switch::Park) => {
            // WAITING now, holding its own scheduling reference until an unpark takes it; or a
            // token arrived while it was switching out and it runs again at once.
            if let Some(g) = crate::g::commit_park(g) {
                p.push_next(g);
            }
        }
        // SAFETY: this M ran the G to its return.
        corosensei::CoroutineResult::Return(()) => unsafe { g.finish() },
    }
}
