//! `P`: a processor, the right to run goroutines, with its run queue and what sysmon watches.
//!
//! What a P queues: goroutines that have not started yet (a spawn's, or the global queue's),
//! which any M may steal; a started goroutine is queued on the M it is bound to
//! (`Runtime::file`), unless the runtime allows migration, when it is queued here too.
//!
//! Ownership: a P in status `P_RUNNING` or `P_SYSCALL` belongs to exactly one M; only that M
//! (its scheduling code and the goroutines it runs) uses the owner-only operations (`push*`,
//! `pop`, `handoff`, `schedtick`). Ownership moves with the scheduler lock (idle list), the M's
//! park lock (`startm` handing a P over) or the status CAS `P_SYSCALL → P_IDLE` (sysmon
//! retaking it) / `P_SYSCALL → P_RUNNING` (the blocked M taking it back); each is an
//! acquire/release edge, so the new owner sees everything the old one wrote.
//!
//! ```text
//!   P_IDLE ──pidleget──▶ P_RUNNING ──entersyscall──▶ P_SYSCALL ──exitsyscall (CAS)──▶ P_RUNNING
//!     ▲                      │                           │
//!     └──────pidleput────────┘      sysmon retake (CAS) ─┴──▶ P_IDLE / handed to another M
//!   any ──gomaxprocs shrinks──▶ P_STOPPED ──grows──▶ P_IDLE
//! ```

use super::runq::{self, RunQueue};
use super::Runtime;
use crate::g::GRef;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

pub(crate) const P_IDLE: u32 = 0;
pub(crate) const P_RUNNING: u32 = 1;
pub(crate) const P_SYSCALL: u32 = 2;
pub(crate) const P_STOPPED: u32 = 3;

/// How often a P looks at the global queue before its own (Go's `schedtick%61`): a prime, so
/// it does not fall into step with a program's own periodicity.
const GLOBAL_CHECK_TICKS: u32 = 61;

pub(crate) struct P {
    pub(crate) id: usize,
    status: AtomicU32,
    pub(crate) runq: RunQueue<GRef>,
    /// A goroutine readied by the owning M itself between goroutines (the joiner woken by
    /// `finish`, a token arriving at `commit_park`). The M schedules right after, so no thief
    /// could help it sooner: it skips `runnext` and its atomic swaps, and runs next. Owner
    /// only (relaxed load and store, no read-modify-write); always empty when the P changes
    /// hands, since the M drains it before it schedules or lets the P go.
    handoff: AtomicPtr<()>,
    /// `2 * slices + 1` while a goroutine runs on the P, `2 * slices` between goroutines,
    /// where `slices` counts the time slices started (schedules that did not inherit one):
    /// one store each way tells sysmon both that the P moved on and whether it runs. Only
    /// the owner writes it (`start_running`, `stop_running`).
    pub(crate) schedtick: AtomicU32,
    /// Goroutines run so far, inherited slices included (thieves watch it; owner writes).
    pub(crate) switches: AtomicU32,
    /// Entries into `blocking` so far (sysmon's `syscalltick`).
    pub(crate) syscalltick: AtomicU32,
    /// sysmon asks the running goroutine to yield at its next preemption point.
    pub(crate) preempt: AtomicBool,
    /// Timers armed by goroutines running here (`timers.rs`); any M may run the due ones.
    pub(crate) timers: super::timers::TimerHeap,
}

impl P {
    pub(crate) fn new(id: usize) -> P {
        P {
            id,
            status: AtomicU32::new(P_IDLE),
            runq: RunQueue::new(),
            handoff: AtomicPtr::new(std::ptr::null_mut()),
            schedtick: AtomicU32::new(0),
            switches: AtomicU32::new(0),
            syscalltick: AtomicU32::new(0),
            preempt: AtomicBool::new(false),
            timers: Default::default(),
        }
    }

    pub(crate) fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    pub(crate) fn set_status(&self, s: u32) {
        self.status.store(s, Ordering::Release);
    }

    /// `from → to` if the status is `from`; the ownership edges in the module comment.
    pub(crate) fn cas_status(&self, from: u32, to: u32) -> bool {
        self.status
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn running(&self) -> bool {
        self.schedtick.load(Ordering::Relaxed) & 1 == 1
    }

    /// Owner: queues `g` to run next; the previous `runnext` moves to the ring's tail. Called
    /// by the M between goroutines, it uses the handoff cell instead. Wakes an idle P when a
    /// goroutine is running (it keeps its P; someone else may take the new one).
    pub(crate) fn push_next(&self, rt: &Runtime, g: GRef) {
        use super::runq::Thin;
        if !self.running() {
            let old = self.handoff.load(Ordering::Relaxed);
            self.handoff.store(g.into_raw(), Ordering::Relaxed);
            if !old.is_null() {
                // SAFETY: a non-null handoff came from `into_raw` and only the owner takes it.
                self.push_tail(rt, unsafe { GRef::from_raw(old) });
            }
            return;
        }
        if let Some(batch) = self.runq.push_next(g) {
            rt.inject_batch(batch);
        }
        super::m::wakep(rt);
    }

    /// Owner: queues `g` at the ring's tail (half the ring to the global queue if full).
    pub(crate) fn push_tail(&self, rt: &Runtime, g: GRef) {
        if let Some(batch) = self.runq.push(g) {
            rt.inject_batch(batch);
        }
    }

    /// Owner: moves goroutines from the global queue into the ring; the caller bounds the
    /// count by the room left (`take_global` asks for at most half a ring).
    pub(crate) fn fill_from(&self, gs: impl Iterator<Item = GRef>) {
        for g in gs {
            let overflow = self.runq.push(g);
            debug_assert!(
                overflow.is_none(),
                "global batch larger than the ring's room"
            );
        }
    }

    /// Owner: the goroutine readied to run next, which inherits the time slice (a goroutine
    /// readied by the running one continues its slice, as in Go): the handoff cell, then
    /// `runnext`. The ring is the caller's to take turns with (`m::pop_runnable`).
    pub(crate) fn pop_inherited(&self) -> Option<GRef> {
        use super::runq::Thin;
        let h = self.handoff.load(Ordering::Relaxed);
        if !h.is_null() {
            self.handoff.store(std::ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: as in `push_next`.
            return Some(unsafe { GRef::from_raw(h) });
        }
        self.runq.take_next()
    }

    /// Owner (the running goroutine, at a preemption point): whether sysmon asked it to
    /// yield; clears the request. Honouring it ends the slice: a new one starts, so sysmon's
    /// 10 ms count restarts.
    pub(crate) fn take_preempt_request(&self) -> bool {
        // A plain load first: this is called in CPU loops, and a request is rare.
        let asked = self.preempt.load(Ordering::Relaxed)
            && self.running()
            && self.preempt.swap(false, Ordering::Relaxed);
        if asked {
            self.start_running(true);
        }
        asked
    }

    /// Owner: whether this schedule should look at the global queue first (every 61st
    /// slice, Go's `schedtick%61`).
    pub(crate) fn global_turn(&self) -> bool {
        (self.schedtick.load(Ordering::Relaxed) >> 1).is_multiple_of(GLOBAL_CHECK_TICKS)
    }

    /// Owner: a goroutine runs on the P now, in a new time slice or continuing the current one.
    pub(crate) fn start_running(&self, new_slice: bool) {
        let slices = (self.schedtick.load(Ordering::Relaxed) >> 1).wrapping_add(new_slice as u32);
        self.schedtick
            .store(slices.wrapping_mul(2) | 1, Ordering::Relaxed);
    }

    /// Owner: the goroutine switched out; the slice count stays.
    pub(crate) fn stop_running(&self) {
        let t = self.schedtick.load(Ordering::Relaxed);
        self.schedtick.store(t & !1, Ordering::Relaxed);
    }

    /// Owner (or sysmon holding a retaken P): everything queued here, for the global queue.
    pub(crate) fn drain_all(&self) -> Vec<GRef> {
        use super::runq::Thin;
        let mut v = Vec::new();
        let h = self.handoff.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if !h.is_null() {
            // SAFETY: as in `push_next`.
            v.push(unsafe { GRef::from_raw(h) });
        }
        v.extend(self.runq.drain());
        v
    }

    /// Whether the P has local work (a snapshot).
    pub(crate) fn has_work(&self) -> bool {
        self.runq.len() > 0 || self.runq.has_next()
    }

    /// Space left in the ring (a snapshot; exact for the owner, which alone adds).
    pub(crate) fn room(&self) -> usize {
        (runq::CAP - self.runq.len()) as usize
    }
}

impl Drop for P {
    fn drop(&mut self) {
        drop(self.drain_all());
    }
}
