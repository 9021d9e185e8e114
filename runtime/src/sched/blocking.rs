//! `goro::blocking`: run a call that blocks its OS thread without holding up other goroutines
//! (Go's `entersyscall`/`exitsyscall`).
//!
//! Protocol:
//! 1. Enter: the goroutine's P goes `P_RUNNING → P_SYSCALL` (a release store; only the owner
//!    leaves `P_RUNNING`) with its `syscalltick` bumped, and the M forgets it (CURRENT_P null)
//!    and the running goroutine (CURRENT_G null): the closure runs as plain-thread code.
//! 2. While the call blocks (sysmon is woken if it had backed off to long sleeps), it may retake the P by CAS `P_SYSCALL → P_IDLE` once it has
//!    been in the same call for a sysmon tick and other work waits (see `sysmon.rs`), and hand
//!    it to another M, which runs the queued goroutines.
//! 3. Exit: CAS `P_SYSCALL → P_RUNNING` takes the P back if sysmon did not; else an idle P is
//!    taken; else the goroutine switches out with no P, and its M keeps it (it is bound to
//!    this thread, `pin.rs`) and waits for a P with it (`stopm`: an idle one, or the next busy
//!    M's turn). Under `allow_migration` it goes to the global queue instead and whichever M
//!    picks it up runs the rest of it.
//!
//! What a handoff hands over: the P's queue of goroutines that have not started, its timers,
//! and the chance to run the global queue and the poller. The goroutines bound to this M
//! wait until the call returns, since no other thread may run them: so code inside
//! `blocking` must not wait for one of them (a std channel filled by a goroutine of the same
//! thread would wait forever); goro's channels and locks, used outside `blocking`, park
//! instead.
//!
//! The call runs on the goroutine's own stack and thread, so it may borrow anything the
//! goroutine has. Inside it, code behaves as on a plain thread: `goro::park`, channels and
//! joins block the thread (they still work), `goro::current()` panics and goroutine-locals are
//! the thread's. A panic in the closure goes through step 3 before it reaches the caller.
//! Outside a goroutine, `blocking(f)` is just `f()`.

use super::m::pidleget;
use super::p::{P_RUNNING, P_SYSCALL};
use super::with_here;
use crate::g::{Switch, G};
use crate::tls;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

/// Runs `f`, a call that may block its OS thread (file I/O, DNS, a C library, a long
/// computation without preemption points), letting the runtime run other goroutines on
/// another thread meanwhile. See the module documentation of the scheduler for what the
/// closure may do; from a plain thread this is `f()`.
///
/// ```
/// # extern crate goro_runtime as goro;
/// goro::run(|| {
///     let n = goro::blocking(|| std::fs::read("/proc/self/stat").map(|b| b.len()));
///     assert!(n.unwrap() > 0);
/// });
/// ```
pub fn blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R,
{
    let Some(g) = enter() else {
        return f();
    };
    let _exit = Exit { g };
    f()
}

/// Step 1. Returns the goroutine taken out of CURRENT_G, or `None` off a goroutine.
fn enter() -> Option<NonNull<G>> {
    with_here(|h| {
        let h = h?;
        let p = h.p?;
        let g = tls::take_current_g()?;
        p.syscalltick.store(
            p.syscalltick.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        h.m.syscall_p.store(p.id, Ordering::Relaxed);
        p.set_status(P_SYSCALL);
        tls::set_current_p(std::ptr::null());
        h.rt.kick_sysmon();
        Some(g)
    })
}

/// Runs step 3 when the call returns or unwinds.
struct Exit {
    g: NonNull<G>,
}

impl Drop for Exit {
    /// Step 3.
    fn drop(&mut self) {
        tls::restore_current_g(Some(self.g));
        let got_p = with_here(|h| {
            let h = h.expect("goro::blocking returns on the M it entered on");
            let pid = h.m.syscall_p.swap(super::m::NO_P, Ordering::Relaxed);
            let p = h.rt.p(pid);
            if p.cas_status(P_SYSCALL, P_RUNNING) {
                tls::set_current_p(p);
                return true;
            }
            let mut s = h.rt.lock();
            let Some(id) = pidleget(h.rt, &mut s) else {
                return false;
            };
            drop(s);
            let p = h.rt.p(id);
            p.start_running(false);
            tls::set_current_p(p);
            true
        });
        if !got_p {
            // No P: the M files us on the global queue (it sees CURRENT_P null).
            tls::with_current_g(|g| {
                crate::g::switch_out(g.expect("restored above"), Switch::Yield)
            });
        }
    }
}
