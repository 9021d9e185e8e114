//! sysmon: the runtime's monitor thread (Go's `sysmon`). It holds no P and runs no goroutine.
//!
//! Each round, for every P below `gomaxprocs`:
//! 1. **Preemption request.** A P whose schedule counter has not moved for `FORCE_PREEMPT`
//!    (10 ms, Go's `forcePreemptNS`) while a goroutine runs gets its `preempt` flag set; the
//!    goroutine yields at its next preemption point (`goro::preempt_point()`, `spawn`, ...).
//!    The flag lives in the P, owned by the runtime, never in a G that could be freed. A stale
//!    request costs one spurious yield of the next goroutine: the M clears it at every
//!    schedule.
//! 2. **Starvation.** If such a P has goroutines queued and a P is idle with no M spinning,
//!    wake it (`wakep`): they get stolen instead of waiting behind a goroutine that does not
//!    reach a preemption point.
//! 3. **Retake** (Go's `retake`). A P in `P_SYSCALL` whose `syscalltick` has not moved since
//!    the previous round (so it has been in one `goro::blocking` call for at least a round,
//!    20 µs or more) is taken by CAS `P_SYSCALL → P_IDLE` and handed off (`handoffp`) if it has
//!    queued work, if no P is idle or spinning to pick up new work, or if the call has lasted
//!    10 ms. Otherwise it is left to its M, whose fast path takes it back with no locking.
//!
//! 4. (after the P loop) **Timers no M waits for** (all Ms busy, see `timers.rs`): sysmon
//!    sleeps at most until the earliest one and wakes an idle P for it when it is due.
//!
//! 6. **The netpoller** (`netpoll`, rule 3): when goroutines wait for I/O and no one has
//!    polled for 10 ms, poll without blocking and queue the goroutines it wakes globally.
//!
//! And `GORO_DEBUG=schedtrace=<ms>` prints Go's `SCHED` line every `<ms>` milliseconds.
//!
//! Rhythm (Go's): sleep 20 µs; after 50 rounds with nothing to do, double the sleep up to 10 ms.
//! Entering `goro::blocking` brings it back to 20 µs (as Go's `entersyscall` wakes a sysmon
//! that sleeps), so a blocked P is retaken within about a tick. Shutdown unparks it. Signal-based preemption is not done (interrupting Rust code inside
//! `malloc` or holding a std lock can deadlock).

use super::m::{handoffp, wakep};
use super::p::{P_RUNNING, P_SYSCALL};
use super::timers;
use super::Runtime;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Time a goroutine may hold its P before sysmon asks it to yield.
pub(crate) const FORCE_PREEMPT: Duration = Duration::from_millis(10);
const MIN_SLEEP: Duration = Duration::from_micros(20);
const MAX_SLEEP: Duration = Duration::from_millis(10);
const IDLE_ROUNDS: u32 = 50;
/// Sleeps longer than this make sysmon wakeable by `blocking` (`Runtime::kick_sysmon`).
const KICKABLE: Duration = Duration::from_micros(160);

/// What sysmon remembers of a P between rounds.
#[derive(Clone, Copy)]
struct Seen {
    schedtick: u32,
    sched_since: Instant,
    syscalltick: u32,
    syscall_since: Instant,
}

/// sysmon's loop; returns when the runtime stops.
pub(crate) fn run(rt: &Runtime) {
    let trace = schedtrace_interval();
    let mut next_trace = trace.map(|d| Instant::now() + d);
    let mut sleep = MIN_SLEEP;
    let mut idle_rounds = 0;
    let mut seen: Vec<Seen> = Vec::new();
    while !rt.stop.load(Ordering::Acquire) {
        let mut nap = match next_trace {
            Some(t) => sleep.min(t.saturating_duration_since(Instant::now())),
            None => sleep,
        };
        if let Some(t) = unwatched_timer(rt) {
            nap = nap.min(Duration::from_nanos(t.saturating_sub(timers::now_nanos())));
        }
        std::thread::park_timeout(nap);
        let now = Instant::now();
        let procs = rt.procs();
        if seen.len() < procs {
            seen.resize(
                procs,
                Seen {
                    schedtick: 0,
                    sched_since: now,
                    syscalltick: 0,
                    syscall_since: now,
                },
            );
        }
        let mut acted = false;
        if crate::stackscan::preempt_wanted() {
            // The collector waits for running goroutines that hold stack roots to switch out.
            for p in rt
                .allp
                .iter()
                .take(procs)
                .filter_map(std::sync::OnceLock::get)
            {
                if p.status() == P_RUNNING {
                    p.preempt.store(true, Ordering::Relaxed);
                }
            }
        }
        for (id, s) in seen.iter_mut().enumerate().take(procs) {
            let Some(p) = rt.allp[id].get() else { continue };
            match p.status() {
                P_RUNNING => {
                    // The slice counter (`schedtick >> 1`), not the running bit: between the
                    // goroutines of one inherited slice the P is briefly not running, and
                    // that must not restart the 10 ms.
                    let t = p.schedtick.load(Ordering::Relaxed);
                    if t >> 1 != s.schedtick >> 1 {
                        s.schedtick = t;
                        s.sched_since = now;
                    } else if now - s.sched_since >= FORCE_PREEMPT {
                        if !p.preempt.load(Ordering::Relaxed) {
                            p.preempt.store(true, Ordering::Relaxed);
                            acted = true;
                        }
                        if p.has_work() && rt.npidle.load(Ordering::Relaxed) > 0 {
                            wakep(rt);
                        }
                    }
                }
                P_SYSCALL => {
                    let t = p.syscalltick.load(Ordering::Relaxed);
                    if t != s.syscalltick {
                        s.syscalltick = t;
                        s.syscall_since = now;
                        continue;
                    }
                    let helpers =
                        rt.nmspinning.load(Ordering::Relaxed) + rt.npidle.load(Ordering::Relaxed);
                    let long = now - s.syscall_since >= FORCE_PREEMPT;
                    if !p.has_work()
                        && rt.global_len.load(Ordering::Relaxed) == 0
                        && helpers > 0
                        && !long
                    {
                        continue;
                    }
                    if p.cas_status(P_SYSCALL, super::p::P_IDLE) {
                        handoffp(rt, p);
                        acted = true;
                    }
                }
                _ => {}
            }
        }
        // 5. Timers no M waits for (`timers.rs`, step 4): wake an idle P for a due one; with
        // none idle, ask each busy P whose own timers are due to stop at its next preemption
        // point (an allocation, a channel operation, `preempt_point`) rather than after its
        // 10 ms slice, so a sleeper on a P kept busy by CPU-bound goroutines wakes on time.
        if let Some(t) = unwatched_timer(rt) {
            let nowns = timers::now_nanos();
            if t <= nowns {
                if rt.npidle.load(Ordering::Relaxed) > 0 {
                    wakep(rt);
                    acted = true;
                } else {
                    for p in rt.allp.iter().take(procs).filter_map(|p| p.get()) {
                        if p.status() == P_RUNNING
                            && p.timers.next() <= nowns
                            && !p.preempt.load(Ordering::Relaxed)
                        {
                            p.preempt.store(true, Ordering::Relaxed);
                            acted = true;
                        }
                    }
                }
            }
        }
        // 6. The netpoller (`netpoll`, rule 3): goroutines wait for I/O and no M has polled
        // for 10 ms (all are busy); poll for them.
        if let Some(poller) = crate::netpoll::active() {
            if poller.overdue(timers::now_nanos()) {
                // Each goes to its own M (`ready_elsewhere`; the global queue under migration).
                if poller.poll_now(&mut super::ready_elsewhere) > 0 {
                    acted = true;
                }
            }
        }
        if let (Some(at), Some(every)) = (next_trace, trace) {
            if now >= at {
                eprintln!("{}", schedtrace_line(rt, now - rt.started));
                next_trace = Some(at + every);
            }
        }
        // `kick_sysmon` clears `sysmon_idle` to bring us back to the short rhythm.
        let kicked = sleep > KICKABLE && !rt.sysmon_idle.load(Ordering::Relaxed);
        if acted || kicked {
            idle_rounds = 0;
            sleep = MIN_SLEEP;
        } else {
            idle_rounds += 1;
            if idle_rounds > IDLE_ROUNDS {
                sleep = (sleep * 2).min(MAX_SLEEP);
            }
        }
        rt.sysmon_idle.store(sleep > KICKABLE, Ordering::Relaxed);
    }
}

/// The earliest timer deadline when no M is the timer waiter (`timers.rs`), else `None`.
fn unwatched_timer(rt: &Runtime) -> Option<u64> {
    if rt.timer_until.load(Ordering::SeqCst) != 0 {
        return None;
    }
    Some(rt.earliest_timer()).filter(|&t| t != timers::NONE)
}

/// `GORO_DEBUG=schedtrace=<ms>` (comma-separated with other settings, like `GODEBUG`).
fn schedtrace_interval() -> Option<Duration> {
    let v = std::env::var("GORO_DEBUG").ok()?;
    for kv in v.split(',') {
        if let Some(ms) = kv.trim().strip_prefix("schedtrace=") {
            match ms.parse::<u64>() {
                Ok(0) => return None,
                Ok(ms) => return Some(Duration::from_millis(ms)),
                Err(_) => eprintln!(
                    "goro: ignoring GORO_DEBUG schedtrace={ms:?}: not a number of milliseconds"
                ),
            }
        }
    }
    None
}

/// Go's format: `SCHED 1004ms: gomaxprocs=2 idleprocs=0 threads=4 spinningthreads=0
/// idlethreads=1 runqueue=0 [3 0]` (threads counts the Ms and sysmon).
pub(crate) fn schedtrace_line(rt: &Runtime, since_start: Duration) -> String {
    let procs = rt.procs();
    let (idle_ms, runqueue) = {
        let s = rt.lock();
        (s.idle_ms.len() + s.pinned_ms.len(), s.global.len())
    };
    let queues: Vec<String> = (0..procs)
        .map(|id| {
            rt.allp[id]
                .get()
                .map_or(0, |p| p.runq.len() as usize + p.runq.has_next() as usize)
        })
        .map(|n| n.to_string())
        .collect();
    format!(
        "SCHED {}ms: gomaxprocs={} idleprocs={} threads={} spinningthreads={} idlethreads={} runqueue={} [{}]",
        since_start.as_millis(),
        procs,
        rt.npidle.load(Ordering::Relaxed),
        rt.mcount.load(Ordering::Relaxed) + 1,
        rt.nmspinning.load(Ordering::Relaxed),
        idle_ms,
        runqueue,
        queues.join(" ")
    )
}
