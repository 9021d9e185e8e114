//! The netpoller: one `mio::Poll` for the process, polled by the scheduler (Go's `netpoll`).
//!
//! A socket registers once, edge-triggered, for reading and writing (`desc.rs`). A goroutine
//! whose call would block parks on the socket's [`PollDesc`]; a readiness event unparks it
//! and it retries the call. Who polls, in the scheduler (`sched/m.rs`, `sched/sysmon.rs`):
//! 1. An M whose P has nothing to run polls without blocking before it tries to steal, when
//!    some goroutine waits for I/O (`Poller::waiters`). The goroutines it wakes go to its own
//!    run queue (the first runs at once), and an idle P is woken for the rest. A busy P also
//!    polls every 61 goroutines (tokio's `event_interval`; Go does not, and its tail latency
//!    under load shows it), queueing what it wakes behind its own run queue.
//! 2. The idle M that waits for the next timer (the *timer waiter*, `sched/timers.rs`) waits
//!    in `epoll_wait` instead of on its condition variable once the poller exists, with the
//!    timeout of the earliest timer. Handing it a P, an earlier timer or a stop interrupts the
//!    wait through the poller's `mio::Waker` (`Poller::wake`). With events it takes an idle P
//!    and runs the woken goroutines; with no idle P it queues them globally for the busy Ms.
//! 3. sysmon polls without blocking when goroutines wait for I/O and no one has polled for
//!    10 ms (every M is busy with goroutines that do not let their P run dry).
//!
//! No thread per socket and no polling loop: with nothing to do the runtime sleeps in (2).
//!
//! # One poller, polled by one thread at a time
//! `mio::Poll::poll` takes `&mut self`, so the poll state sits behind a mutex. A blocking
//! poller holds it for the whole wait; a non-blocking one only tries it (`try_lock`): if it is
//! held, someone is polling and gets the events. The registry (a clone of the poll's) is
//! shared freely: registering does not take the mutex.
//!
//! # Stale events
//! An event's token is the address of a `PollDesc` tagged with its generation (`desc.rs`).
//! Descriptors are never freed, only recycled with the generation bumped, so an event that
//! was fetched before its socket closed finds either the same generation (a harmless extra
//! wake-up) or another one (ignored): never freed memory.
//!
//! The poller is created on the first socket and lives for the process, across runtimes, like
//! Go's. A socket used from a plain thread does not use it: the thread blocks in `poll(2)` on
//! the one descriptor (`desc.rs`).
//!
//! Rejected: a poller thread that wakes goroutines (a thread hop and a futex wake per
//! readiness event, where the idle M that is about to run the goroutine can wait itself), and
//! level-triggered registration (a readiness event per poll while a goroutine is busy
//! elsewhere, and a re-arm syscall per wait).

mod desc;

pub(crate) use desc::{closed_error, Dir, PollDesc, Registration};

use crate::g::GRef;
use crate::sched::timers::now_nanos;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The waker's token; descriptor tokens are non-null addresses.
const WAKER: mio::Token = mio::Token(0);
/// Events fetched per poll (more wait for the next poll).
const EVENTS: usize = 256;
/// sysmon polls when no one has for this long (Go's 10 ms).
pub(crate) const SYSMON_POLL: u64 = 10_000_000;

pub(crate) struct Poller {
    poll: Mutex<PollState>,
    registry: mio::Registry,
    waker: mio::Waker,
    /// Goroutines parked on a descriptor (Go's `netpollWaiters`): the scheduler polls without
    /// blocking only when this is non-zero.
    waiters: AtomicUsize,
    /// When a poll last returned (`now_nanos`), for sysmon's 10 ms rule.
    last_poll: AtomicU64,
    /// A thread waits in a blocking poll: it will see every event, others need not poll.
    blocked: AtomicBool,
    /// A `wake` not yet seen by a blocking poll (`poll_wait`).
    wake_pending: AtomicBool,
}

struct PollState {
    poll: mio::Poll,
    events: mio::Events,
}

static POLLER: OnceLock<io::Result<Poller>> = OnceLock::new();

/// The poller, created on first use. Fails if the kernel refuses an epoll instance.
pub(crate) fn poller() -> io::Result<&'static Poller> {
    let mut created = false;
    let r = POLLER.get_or_init(|| {
        created = true;
        Poller::new()
    });
    match r {
        Ok(p) => {
            if created {
                // Idle Ms asleep before the poller existed wait on condition variables: have
                // one of them wait in the poller from now on.
                crate::sched::netpoll_started();
            }
            Ok(p)
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("goro netpoller: {e}"))),
    }
}

/// The poller if a socket ever needed it.
pub(crate) fn active() -> Option<&'static Poller> {
    POLLER.get().and_then(|r| r.as_ref().ok())
}

impl Poller {
    fn new() -> io::Result<Poller> {
        crate::signal::ignore_sigpipe();
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(&registry, WAKER)?;
        Ok(Poller {
            poll: Mutex::new(PollState {
                poll,
                events: mio::Events::with_capacity(EVENTS),
            }),
            registry,
            waker,
            waiters: AtomicUsize::new(0),
            last_poll: AtomicU64::new(now_nanos()),
            blocked: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
        })
    }

    pub(crate) fn registry(&self) -> &mio::Registry {
        &self.registry
    }

    /// Some goroutine waits for I/O.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn add_waiters(&self, n: usize) {
        self.waiters.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub_waiters(&self, n: usize) {
        self.waiters.fetch_sub(n, Ordering::Relaxed);
    }

    /// Interrupts a blocking poll (or makes the next one return at once).
    ///
    /// The eventfd's event alone is not enough: between the waiter deciding to poll and its
    /// `epoll_wait`, a non-blocking `poll_now` on another thread may hold the poller and take
    /// the event, and the waiter then blocks with nothing left to wake it (an M handed a P
    /// while it sat there stayed asleep for good, its own goroutines with it). So the wake is
    /// also a flag, which `poll_wait` reads once it holds the poller, when no one else can
    /// take the event any more.
    pub(crate) fn wake(&self) {
        self.wake_pending.store(true, Ordering::SeqCst);
        // An error here means the eventfd is gone, which only happens at process exit.
        let _ = self.waker.wake();
    }

    /// sysmon's rule (3): goroutines wait for I/O, no one blocks in the poller, and no one
    /// has polled for `SYSMON_POLL`.
    pub(crate) fn overdue(&self, now: u64) -> bool {
        self.has_waiters()
            && !self.blocked.load(Ordering::Relaxed)
            && now.saturating_sub(self.last_poll.load(Ordering::Relaxed)) > SYSMON_POLL
    }

    /// Polls without blocking, unless another thread is polling (then returns 0 at once: it
    /// gets the events). Each goroutine an event wakes goes to `queue`.
    pub(crate) fn poll_now(&self, queue: &mut impl FnMut(GRef)) -> usize {
        let Ok(mut st) = self.poll.try_lock() else {
            return 0;
        };
        self.poll_locked(&mut st, Some(Duration::ZERO), queue)
    }

    /// Waits for events up to `timeout` (`None`: until an event or `wake`).
    pub(crate) fn poll_wait(
        &self,
        timeout: Option<Duration>,
        queue: &mut impl FnMut(GRef),
    ) -> usize {
        let mut st = self.poll.lock().unwrap_or_else(|e| e.into_inner());
        // A wake that came before we held the poller may have been taken by `poll_now`: do
        // not block then. One that comes later finds us in `epoll_wait` or about to enter
        // it, with its event still there (only the holder of the poller takes events).
        let timeout = if self.wake_pending.swap(false, Ordering::SeqCst) {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        self.blocked.store(true, Ordering::Relaxed);
        let n = self.poll_locked(&mut st, timeout, queue);
        self.blocked.store(false, Ordering::Relaxed);
        // The wake, if any, was for this poll.
        self.wake_pending.store(false, Ordering::SeqCst);
        n
    }

    fn poll_locked(
        &self,
        st: &mut PollState,
        timeout: Option<Duration>,
        queue: &mut impl FnMut(GRef),
    ) -> usize {
        let PollState { poll, events } = st;
        match poll.poll(events, timeout) {
            Ok(()) => {}
            // EINTR: as if woken. Anything else (EBADF, EINVAL) cannot happen with mio's own
            // epoll instance; treat it as an empty poll rather than failing the scheduler.
            Err(_) => events.clear(),
        }
        self.last_poll.store(now_nanos(), Ordering::Relaxed);
        let mut woken = 0;
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let Some(desc) = PollDesc::from_token(ev.token()) else {
                continue;
            };
            let read_hup = ev.is_read_closed() || ev.is_error();
            let write_hup = ev.is_write_closed() || ev.is_error();
            if ev.is_readable() || read_hup {
                woken += desc.ready(Dir::Read, read_hup, &mut *queue);
            }
            if ev.is_writable() || write_hup {
                woken += desc.ready(Dir::Write, write_hup, &mut *queue);
            }
        }
        woken
    }
}
