//! Shutdown: what happens to the goroutines still alive when the last `run` returns.
//!
//! goro **unwinds** them, so nothing leaks: every goroutine of the runtime that started and has
//! not finished is resumed one last time **on the M it is bound to, before that M's thread
//! exits**, with a forced unwind (corosensei's `force_unwind`): its stack's destructors run as
//! if it had panicked where it is suspended, on the thread whose thread-locals they may use, its
//! goroutine-locals are dropped, its slot goes back to the pool and its joiner gets a `Panic`
//! saying it was dropped at shutdown. A goroutine that never started just has its closure
//! dropped.
//!
//! # The protocol
//! 1. **Stop** (the coordinator: the thread whose `run` returns last). `stop` is set, running
//!    goroutines are asked to yield, every M is woken. Each M finishes the goroutine it runs,
//!    leaves its scheduling loop, reports in (`Progress::arrived`) and waits.
//! 2. **Sweep** (the coordinator, once every M has reported, so no P is in use). The Ps'
//!    queues and the global queue are emptied: goroutines that never started are kept for
//!    step 4; started ones (only under `allow_migration` can they sit there) go to the inbox
//!    of the M they last ran on.
//! 3. **Unwind** (every M, on its own thread, all at once). Each M unwinds the goroutines
//!    bound to it: those in its queues and inbox, and the parked ones, found through the slot
//!    headers that carry its tag (a parked goroutine holds its own scheduling reference; the
//!    M takes it as an unpark would). It goes on until none is left: in a round that found
//!    nothing, a goroutine may be in flight (a plain thread or another M woke it and is about
//!    to put it in our inbox), so it waits a little and looks again. Destructors run with no
//!    P: a goroutine they spawn goes to the global queue (each round moves those to step 4),
//!    one they wake goes to its own M's inbox. Then the M's thread exits, so its
//!    thread-locals die after everything that could use them. (Under `allow_migration` a
//!    goroutine may be finished by another M than the one it started on, so an M waits until
//!    no started goroutine of the runtime is left; otherwise until none bound to it is.)
//! 4. **Drop** (the coordinator, after joining every thread). The closures of goroutines
//!    that never started are dropped, on a stand-in M holding P0 (a goroutine their
//!    destructors spawn lands there, and is dropped in the next round), with the G set as
//!    current and dying, so a park or yield returns at once.
//! 5. The Ms' ids go back to the pool (`m::unregister`): no goroutine names them any more.
//!
//! # Invariants
//! - A started, unfinished goroutine's scheduling reference is always in one of: the M
//!   running it, its M's queues or inbox, the G itself (parked), or a thread that just woke it
//!   and is filing it (`sched::ready_elsewhere`). Step 3 reaches all four, so it ends, and no
//!   goroutine outlives its runtime. That is also what keeps `m::registered` sound: a
//!   runtime's Ms are unregistered only after every goroutine bound to them finished.
//! - Only an M finishes the goroutines bound to it, so while it walks the slot headers with
//!   its tag, no other thread frees those goroutines (the walk reads the G behind the tag).
//! - A panic that escapes a forced unwind (a payload whose own destructor panics, a
//!   destructor of a never-started closure) is caught, reported on stderr, and its payload
//!   leaked; `CurrentG` and `StandIn` put the thread's runtime state back on every exit path.
//!
//! Rules for destructors that run this way (stated in the README): a park or yield returns at
//! once (a spurious wake-up, which `park` allows), and joining an unfinished goroutine returns
//! the "dropped at shutdown" error instead of waiting. A destructor that loops until another
//! goroutine does something would spin: do not wait on other goroutines in `Drop`.
//!
//! Rejected: unwinding everything on the thread returning from `run` after the Ms exited (the
//! first design: a destructor that used its thread's thread-locals read freed memory, since the
//! goroutine's M was gone); leaking them (Go's behaviour at the end of `main`, where the
//! process exits; a library runtime that can start again would leak their stacks and
//! everything they own each time); releasing their slots without unwinding (sound only if
//! nothing points into those stacks, which a heap-linked waiter node on a parked stack breaks).

use super::m::{self, M};
use super::p::P_RUNNING;
use super::Runtime;
use crate::g::{GRef, G, NO_M};
use crate::tls;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

/// How far the shutdown has come (under `Runtime::shut`).
#[derive(Default)]
pub(crate) struct Progress {
    /// Ms that left their scheduling loop (step 1).
    arrived: usize,
    /// Step 3 may begin.
    unwinding: bool,
    /// Goroutines that never started, for step 4.
    unstarted: Vec<GRef>,
}

impl Runtime {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.shut.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ms(&self) -> Vec<Arc<M>> {
        self.ms.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Started goroutines of this runtime not yet finished (a snapshot that can only
    /// overstate: during step 3 every count only falls).
    fn unfinished(&self) -> isize {
        self.ms().iter().map(|m| m.started()).sum()
    }
}

/// Stops `rt` and unwinds every goroutine still alive (the protocol above). Called by the
/// coordinator, on a thread that is not one of `rt`'s.
pub(super) fn run(rt: &Runtime) {
    // Step 1.
    rt.stop.store(true, Ordering::Release);
    loop {
        for p in rt.allp.iter().filter_map(std::sync::OnceLock::get) {
            p.preempt.store(true, Ordering::Relaxed);
        }
        let ms = rt.ms();
        for m in &ms {
            m.wake_for_stop();
        }
        let st = rt.progress();
        if st.arrived == ms.len() && rt.ms().len() == ms.len() {
            break;
        }
        // An M busy in a long goroutine, or in `blocking`, arrives later; Ms started
        // meanwhile are woken in the next round.
        drop(rt.shut_cv.wait_timeout(st, Duration::from_millis(10)));
    }
    // Step 2: no M uses a P now (sysmon only retakes Ps in system calls: none is).
    let mut queued = Vec::new();
    for p in rt.allp.iter().filter_map(std::sync::OnceLock::get) {
        queued.extend(p.drain_all());
    }
    sweep_global(rt, queued);
    rt.progress().unwinding = true;
    rt.shut_cv.notify_all();
    // Step 3 runs on the Ms; their threads end after it (sysmon's when it sees `stop`).
    loop {
        let threads = std::mem::take(&mut *rt.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if threads.is_empty() {
            break;
        }
        for t in threads {
            t.thread().unpark(); // sysmon sleeps in park_timeout
            let _ = t.join();
        }
    }
    drop_unstarted(rt);
    // Step 5.
    for m in rt.ms() {
        m::unregister(&m);
    }
}

/// The M `m` left its scheduling loop because `rt` stops: report in, wait for step 3, and
/// unwind the goroutines bound to `m` (on `m`'s own thread).
pub(super) fn on_m_stopped(rt: &Runtime, m: &M) {
    let mut st = rt.progress();
    st.arrived += 1;
    rt.shut_cv.notify_all();
    while !st.unwinding {
        st = rt.shut_cv.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    drop(st);
    unwind_bound(rt, m);
}

/// Step 3 for M `m`.
fn unwind_bound(rt: &Runtime, m: &M) {
    let migration = rt.config.allow_migration;
    let mut parked = Vec::new();
    let mut walked = false;
    let mut pause = Duration::from_micros(20);
    loop {
        sweep_global(rt, Vec::new());
        let mut n = 0;
        while let Some(g) = m.take_runnable() {
            unwind_one(m, g);
            n += 1;
        }
        if n == 0 || !walked {
            crate::stack::for_each_owner(m.tag(), |addr| {
                // SAFETY: a header tagged with this M names a started, unfinished goroutine
                // bound to it; only this M finishes those, and it is busy here, so the G is
                // alive (its scheduling reference is held by the G itself, a queue, or a
                // thread filing it to us).
                let g = unsafe { &*(addr as *const G) };
                if let Some(r) = g.take_parked() {
                    parked.push(r);
                }
            });
            walked = true;
            for g in parked.drain(..) {
                unwind_one(m, g);
                n += 1;
            }
        }
        if n > 0 {
            continue;
        }
        let left = if migration {
            rt.unfinished()
        } else {
            m.started()
        };
        if left <= 0 {
            return;
        }
        // In flight to our inbox (or, under migration, somewhere another M will reach).
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(1));
    }
}

/// Empties the global queue (plus `more`): started goroutines to their Ms' inboxes, the
/// others to step 4's list.
fn sweep_global(rt: &Runtime, mut gs: Vec<GRef>) {
    if rt.global_len.load(Ordering::Relaxed) > 0 {
        let mut s = rt.lock();
        gs.extend(s.global.drain(..));
        rt.global_len.store(0, Ordering::Relaxed);
    }
    if gs.is_empty() {
        return;
    }
    let mut unstarted = Vec::new();
    for g in gs {
        if g.last_m() == NO_M {
            unstarted.push(g);
            continue;
        }
        // SAFETY: we hold the scheduling reference of a started, unfinished goroutine (see
        // `m::registered`).
        match unsafe { m::registered(g.last_m() as usize) } {
            Some(t) => t.push_inbox(g),
            None => keep_forever(g),
        }
    }
    rt.progress().unstarted.extend(unstarted);
}

/// A started goroutine nothing can unwind any more (cannot happen: see the invariants): its
/// descriptor and stack are kept rather than freed under whatever still points into them.
fn keep_forever(g: GRef) {
    debug_assert!(false, "goroutine {} outlived its M", g.id);
    std::mem::forget(g);
}

/// Force-unwinds the started goroutine `g`, bound to `m` (this thread's M), and finishes it.
fn unwind_one(m: &M, g: GRef) {
    // It runs again (its destructors): the collector's stack visit must see it running.
    crate::stackscan::before_resume(&g);
    g.transition_to_running();
    {
        let _current = CurrentG::set(&g);
        // SAFETY: we hold its scheduling reference (from a queue, or taken from the parked G)
        // and CURRENT_G is set to it.
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| unsafe { g.force_unwind() })) {
            crate::panic::report_escaped(g.id, "being unwound at shutdown", p);
        }
    }
    // SAFETY: this thread ran the G to its (forced) end.
    unsafe { g.finish() };
    m.count_finish();
}

/// Step 4.
fn drop_unstarted(rt: &Runtime) {
    let stand_in = M::stand_in(rt);
    let p0 = rt.p(0);
    {
        // P0 is ours now: off the idle list, where its M may have left it.
        let mut s = rt.lock();
        s.idle_ps.retain(|&id| id != 0);
        rt.npidle.store(s.idle_ps.len(), Ordering::Relaxed);
    }
    p0.set_status(P_RUNNING);
    let _state = StandIn::enter(&stand_in, p0);
    loop {
        let mut gs = std::mem::take(&mut rt.progress().unstarted);
        for p in rt.allp.iter().filter_map(std::sync::OnceLock::get) {
            gs.extend(p.drain_all());
        }
        {
            let mut s = rt.lock();
            gs.extend(s.global.drain(..));
            rt.global_len.store(0, Ordering::Relaxed);
        }
        if gs.is_empty() {
            break;
        }
        for g in gs {
            if g.last_m() != NO_M {
                keep_forever(g);
                continue;
            }
            g.transition_to_running();
            {
                let _current = CurrentG::set(&g);
                p0.start_running(false);
                // SAFETY: we hold its scheduling reference; CURRENT_G is set just above.
                // Dropping the closure catches its own panics (`body.rs`); this is a net.
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| unsafe { g.force_unwind() })) {
                    crate::panic::report_escaped(g.id, "being dropped at shutdown", p);
                }
                p0.stop_running();
            }
            // SAFETY: the G never ran; it has ended here.
            unsafe { g.finish() };
        }
    }
}

/// CURRENT_G set to a goroutine being unwound, and cleared however the unwind ends.
struct CurrentG;

impl CurrentG {
    fn set(g: &GRef) -> CurrentG {
        tls::set_current_g(Some(g));
        CurrentG
    }
}

impl Drop for CurrentG {
    fn drop(&mut self) {
        tls::set_current_g(None);
    }
}

/// The coordinator's thread as a stand-in M holding P0, for step 4; put back however it ends.
struct StandIn;

impl StandIn {
    fn enter(m: &M, p0: &super::P) -> StandIn {
        tls::set_current_m(m);
        tls::set_current_p(p0);
        StandIn
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        tls::set_current_g(None);
        tls::set_current_p(std::ptr::null());
        tls::set_current_m(std::ptr::null());
    }
}
