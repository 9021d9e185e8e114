//! Shutdown: what happens to the goroutines still alive when the last `run` returns.
//!
//! goro **unwinds** them, so nothing leaks: every goroutine of the runtime that has not
//! finished is resumed one last time on the thread that returns from `run`, with a forced
//! unwind (corosensei's `force_unwind`): its stack's destructors run as if it had panicked
//! where it is suspended, its goroutine-locals are dropped, its slot goes back to the pool and
//! its joiner gets a `Panic` saying it was dropped at shutdown. A goroutine that never started
//! just has its closure dropped.
//!
//! Protocol, after every M has exited (so none of the runtime's goroutines can run anywhere
//! else, and their state only changes here):
//! 1. This thread becomes a stand-in M holding P0, so runtime calls made by destructors work:
//!    a goroutine they spawn or wake lands in P0's queue.
//! 2. Collect every goroutine still alive: all run queues, handoff cells, the global queue and
//!    the Ms' pinned inboxes hold the runnable ones; parked ones hold their own scheduling
//!    reference and are found through the header of every stack slot (`stack::for_each_owner`,
//!    which only reads slots tagged with this runtime's id).
//! 3. Unwind each: mark it dying, force the unwind, `finish`.
//! 4. Repeat while destructors made more goroutines runnable or spawned new ones.
//!
//! Rules for destructors that run this way (stated in the README): a park or yield returns at
//! once (a spurious wake-up, which `park` allows), and joining an unfinished goroutine returns
//! the "dropped at shutdown" error instead of waiting. A destructor that loops until another
//! goroutine does something would spin: do not wait on other goroutines in `Drop`.
//!
//! Rejected: leaking them (Go's behaviour at the end of `main`, where the process exits; a
//! library runtime that can start again would leak their stacks and everything they own each
//! time), and releasing their slots without unwinding (sound only if nothing points into those
//! stacks, which a heap-linked waiter node on a parked stack breaks).

use super::m::M;
use super::p::P_RUNNING;
use super::Runtime;
use crate::g::{GRef, G};
use crate::tls;
use std::sync::atomic::Ordering;

/// Unwinds every goroutine of `rt` still alive; returns how many. Call after all Ms exited.
pub(super) fn unwind_all(rt: &Runtime) -> usize {
    let stand_in = M::stand_in(rt);
    let p0 = rt.p(0);
    {
        // P0 is ours now: off the idle list, where its M may have left it.
        let mut s = rt.lock();
        s.idle_ps.retain(|&id| id != 0);
        rt.npidle.store(s.idle_ps.len(), Ordering::Relaxed);
    }
    p0.set_status(P_RUNNING);
    tls::set_current_m(&stand_in);
    tls::set_current_p(p0);
    let mut n = 0;
    loop {
        let gs = collect(rt);
        if gs.is_empty() {
            break;
        }
        for g in gs {
            g.transition_to_running();
            tls::set_current_g(Some(&g));
            p0.start_running(false);
            // SAFETY: we hold its scheduling reference; CURRENT_G is set just above.
            unsafe { g.force_unwind() };
            p0.stop_running();
            tls::set_current_g(None);
            // SAFETY: this thread ran the G to its (forced) end.
            unsafe { g.finish() };
            n += 1;
        }
    }
    tls::set_current_p(std::ptr::null());
    tls::set_current_m(std::ptr::null());
    n
}

/// Step 2: the scheduling references of every unfinished goroutine of `rt`.
fn collect(rt: &Runtime) -> Vec<GRef> {
    let mut gs = Vec::new();
    for p in rt.allp.iter().filter_map(|p| p.get()) {
        gs.extend(p.drain_all());
    }
    {
        let mut s = rt.lock();
        gs.extend(s.global.drain(..));
        rt.global_len.store(0, Ordering::Relaxed);
    }
    for m in rt.allm.iter().map_while(|m| m.get()) {
        while let Some(g) = m.pop_inbox() {
            gs.push(g);
        }
    }
    crate::stack::for_each_owner(rt.id, |addr| {
        // SAFETY: the slot is tagged with this runtime, whose goroutines nobody else runs
        // now; an owned slot's goroutine is unfinished, so its scheduling reference (in a
        // queue we drained above, or parked in the G itself) keeps the G alive.
        let g = unsafe { &*(addr as *const G) };
        if let Some(r) = g.take_parked() {
            gs.push(r);
        }
    });
    gs
}
