//! `PollDesc`: one socket's registration with the netpoller, and how callers wait on it
//! (Go's `pollDesc` and `netpollblock`).
//!
//! A descriptor has two halves, read and write, each with a `ready` flag and the goroutines
//! waiting on it, under a small mutex. Every I/O call goes through [`Registration::io`]:
//! try the non-blocking system call; on `WouldBlock`, wait for the half; retry.
//!
//! # No lost wake-up
//! Registration is edge-triggered: the kernel reports a change once. A waiter checks `ready`
//! and, if it is not set, adds itself to the half's waiters, both under the half's lock; the
//! poller, for an event, takes the waiters under the same lock and unparks them, or, with no
//! waiter, sets `ready`. An edge that comes after the failed call and before the waiter
//! registers is therefore either in `ready` or finds the waiter. A `ready` left over from an
//! edge no one waited for costs one extra call that fails with `WouldBlock` (spurious
//! readiness is retried, never trusted). A goroutine's park can also return spuriously (a late
//! unpark meant for an earlier wait): it retries the call too.
//!
//! # Short transfers
//! A read that returns fewer bytes than asked emptied the socket's receive buffer (a write
//! that moved fewer filled the send buffer), so the next call would fail with `WouldBlock`.
//! If no edge was dispatched to the half since just before the call (`Half::edges`), `ready`
//! is cleared and the next call waits first (`Registration::io_bytes`). Safe: data that
//! arrives after the call makes a new edge, which is either dispatched later (and wakes the
//! waiter) or was dispatched already (and the counter moved, so nothing was cleared). An end
//! of file or error the kernel reported (`Half::hup`, sticky) turns this off: the call after a
//! short read then returns 0 or the error at once, and no edge would ever come for it. It saves
//! one failing system call per request-response exchange, as tokio's readiness clearing does.
//!
//! # Deadlines, timeouts, close
//! Each half has a Go-style absolute deadline (`set_deadline`, an error of kind `TimedOut`
//! once passed) and a std-style per-call timeout (`set_timeout`, measured from the start of
//! each call; an error of kind `WouldBlock`, as std's `set_read_timeout` gives on Unix). A
//! waiting goroutine parks with a timer at the earlier of the two. Changing a deadline, or
//! [`Registration::close`], wakes the half's waiters so they look again; after `close` every
//! call fails with "use of closed network connection" (Go's `ErrNetClosing`).
//!
//! # Plain threads
//! A thread that is not running a goroutine does not use the poller (nothing may be polling
//! it): it waits in `poll(2)` on the one descriptor, in slices of at most 50 ms so it notices
//! a new deadline or a close.
//!
//! # Lifetime
//! Descriptors are leaked and recycled through a free list, never freed: the poller reads the
//! descriptor named by a stale event safely. Each reuse bumps the generation carried in the
//! top 16 bits of the token (the address takes the low 48 bits on every Linux target), and
//! the poller ignores an event whose generation is not the current one.

use super::poller;
use crate::g::{self, GRef};
use crate::sched::timers::{nanos_at, now_nanos, NONE};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which half of a descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Dir {
    Read,
    Write,
}

const ADDR_BITS: u32 = 48;
const ADDR_MASK: usize = (1 << ADDR_BITS) - 1;
/// Longest single `poll(2)` of a plain thread, so it notices deadlines and closes.
const THREAD_SLICE: Duration = Duration::from_millis(50);

pub(crate) struct PollDesc {
    /// Bumped on every release; the token's tag (its low 16 bits).
    gen: AtomicU32,
    fd: AtomicI32,
    closed: AtomicBool,
    read: Half,
    write: Half,
}

struct Half {
    state: Mutex<HalfState>,
    /// Readiness edges dispatched to this half so far (bumped before `state` is taken).
    edges: AtomicU32,
    /// A hint: the last call moved fewer bytes than asked and no edge came since, so the next
    /// call waits before it tries (see "Short transfers" in the module comment).
    drained: AtomicBool,
    /// The kernel reported this direction closed or in error (end of file, reset): the next
    /// call returns at once whatever came before, so it must never wait first. Sticky until
    /// the descriptor is recycled.
    hup: AtomicBool,
    /// Go-style deadline, `now_nanos` scale; `NONE` when unset.
    deadline: AtomicU64,
    /// std-style per-call timeout in nanoseconds; 0 when unset.
    timeout: AtomicU64,
}

#[derive(Default)]
struct HalfState {
    /// An edge arrived that no waiter has consumed.
    ready: bool,
    /// Goroutines parked on this half (more than one when several share the socket).
    waiters: Waiters,
}

/// A half's waiters: almost always one, kept inline (no allocation per connection); more
/// when goroutines share a socket.
#[derive(Default)]
struct Waiters {
    one: Option<GRef>,
    /// Boxed: one word per half instead of three, in a descriptor every connection has
    /// (the extra allocation is paid only by sockets that several goroutines wait on).
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<GRef>>>,
}

impl Waiters {
    fn is_empty(&self) -> bool {
        self.one.is_none()
    }

    fn push(&mut self, g: GRef) {
        match self.one {
            None => self.one = Some(g),
            Some(_) => self.more.get_or_insert_with(Default::default).push(g),
        }
    }

    /// Removes the waiter whose G is `key`; whether it was there.
    fn remove(&mut self, key: std::ptr::NonNull<crate::g::G>) -> bool {
        let more = self.more.as_deref_mut();
        if self.one.as_ref().is_some_and(|g| g.as_ptr() == key) {
            self.one = more.and_then(|m| m.pop());
            return true;
        }
        let Some(more) = more else {
            return false;
        };
        match more.iter().position(|g| g.as_ptr() == key) {
            Some(i) => {
                more.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Takes every waiter.
    fn take(&mut self) -> impl Iterator<Item = GRef> {
        let more = self.more.take().map(|b| *b).unwrap_or_default();
        self.one.take().into_iter().chain(more)
    }
}

impl Half {
    fn new() -> Half {
        Half {
            state: Mutex::new(HalfState::default()),
            edges: AtomicU32::new(0),
            drained: AtomicBool::new(false),
            hup: AtomicBool::new(false),
            deadline: AtomicU64::new(NONE),
            timeout: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HalfState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unparks every waiter (they look at the state again); returns how many.
    fn wake_all(&self, queue: &mut impl FnMut(GRef)) -> usize {
        let mut st = self.lock();
        let mut n = 0;
        for w in st.waiters.take() {
            g::unpark_with(&w, queue);
            n += 1;
        }
        drop(st);
        if n > 0 {
            if let Some(p) = super::active() {
                p.sub_waiters(n);
            }
        }
        n
    }
}

/// Free descriptors (leaked, recycled).
static FREE: Mutex<Vec<&'static PollDesc>> = Mutex::new(Vec::new());

impl PollDesc {
    fn alloc() -> &'static PollDesc {
        let free = FREE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let d = free.unwrap_or_else(|| {
            Box::leak(Box::new(PollDesc {
                gen: AtomicU32::new(0),
                fd: AtomicI32::new(-1),
                closed: AtomicBool::new(false),
                read: Half::new(),
                write: Half::new(),
            }))
        });
        assert_eq!(
            d as *const PollDesc as usize & !ADDR_MASK,
            0,
            "heap address beyond 48 bits"
        );
        d
    }

    fn token(&'static self) -> mio::Token {
        let tag = (self.gen.load(Ordering::Relaxed) as usize) << ADDR_BITS;
        mio::Token(self as *const PollDesc as usize | tag)
    }

    /// The descriptor an event's token names, if that registration is still current.
    pub(crate) fn from_token(t: mio::Token) -> Option<&'static PollDesc> {
        let addr = t.0 & ADDR_MASK;
        if addr == 0 {
            return None;
        }
        // SAFETY: tokens are made only by `token` from descriptors that are leaked (never
        // freed, see the module comment), so the address is a live `PollDesc` forever.
        let d = unsafe { &*(addr as *const PollDesc) };
        let tag = (d.gen.load(Ordering::Relaxed) as usize) << ADDR_BITS;
        (tag == t.0 & !ADDR_MASK).then_some(d)
    }

    fn half(&self, dir: Dir) -> &Half {
        match dir {
            Dir::Read => &self.read,
            Dir::Write => &self.write,
        }
    }

    /// A readiness edge for `dir` (called by the poller; `hup`: the direction is closed or in
    /// error): wakes the half's waiters, or remembers it for the next one. Returns how many
    /// goroutines it woke.
    pub(crate) fn ready(&self, dir: Dir, hup: bool, queue: &mut impl FnMut(GRef)) -> usize {
        let half = self.half(dir);
        if hup {
            half.hup.store(true, Ordering::Release);
        }
        half.edges.fetch_add(1, Ordering::AcqRel);
        let mut st = half.lock();
        if st.waiters.is_empty() {
            st.ready = true;
            return 0;
        }
        drop(st);
        half.wake_all(queue)
    }
}

/// A socket's registration: owned by the socket, released when it drops.
pub(crate) struct Registration {
    desc: &'static PollDesc,
}

impl Registration {
    /// Registers `source` (whose descriptor is `fd`) with the poller, edge-triggered, for
    /// reading and writing.
    pub(crate) fn new(source: &mut impl mio::event::Source, fd: RawFd) -> io::Result<Registration> {
        let poller = poller()?;
        let desc = PollDesc::alloc();
        desc.fd.store(fd, Ordering::Relaxed);
        desc.closed.store(false, Ordering::Relaxed);
        for half in [&desc.read, &desc.write] {
            half.lock().ready = false;
            half.deadline.store(NONE, Ordering::Relaxed);
            half.timeout.store(0, Ordering::Relaxed);
            half.drained.store(false, Ordering::Relaxed);
            half.hup.store(false, Ordering::Relaxed);
        }
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        if let Err(e) = poller.registry().register(source, desc.token(), interest) {
            FREE.lock().unwrap_or_else(|e| e.into_inner()).push(desc);
            return Err(e);
        }
        Ok(Registration { desc })
    }

    /// Deregisters `source` (the socket is being dropped: no one else uses it) and recycles
    /// the descriptor.
    pub(crate) fn release(&self, source: &mut impl mio::event::Source) {
        if let Some(p) = super::active() {
            let _ = p.registry().deregister(source);
        }
        let d = self.desc;
        d.gen.fetch_add(1, Ordering::Relaxed);
        d.fd.store(-1, Ordering::Relaxed);
        for half in [&d.read, &d.write] {
            // No one can be waiting: waiters borrow the socket, and leave the list before
            // their frame ends (`Unlist`).
            let mut st = half.lock();
            st.ready = false;
            let stale = st.waiters.take().count();
            drop(st);
            if stale > 0 {
                if let Some(p) = super::active() {
                    p.sub_waiters(stale);
                }
            }
        }
        FREE.lock().unwrap_or_else(|e| e.into_inner()).push(d);
    }

    /// Runs the non-blocking call `f` until it does not fail with `WouldBlock`, waiting for
    /// readiness in `dir` in between (see the module comment for deadlines and timeouts).
    pub(crate) fn io<R>(&self, dir: Dir, mut f: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        let timeout = self.desc.half(dir).timeout.load(Ordering::Relaxed);
        let call_deadline = if timeout == 0 {
            NONE
        } else {
            now_nanos().saturating_add(timeout)
        };
        loop {
            self.check_open()?;
            match f() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
            self.wait(dir, call_deadline)?;
        }
    }

    /// `io` for a read or write of `len` bytes that returns how many it moved. A transfer
    /// shorter than asked emptied the receive buffer (or filled the send buffer): if no edge
    /// came during it, the half's `ready` is stale and the next call waits before it tries,
    /// saving the system call that would fail with `WouldBlock` (tokio does the same).
    pub(crate) fn io_bytes(
        &self,
        dir: Dir,
        len: usize,
        mut f: impl FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let half = self.desc.half(dir);
        if len == 0 {
            return self.io(dir, f);
        }
        if half.drained.swap(false, Ordering::Relaxed) && !half.hup.load(Ordering::Acquire) {
            let timeout = half.timeout.load(Ordering::Relaxed);
            let call_deadline = if timeout == 0 {
                NONE
            } else {
                now_nanos().saturating_add(timeout)
            };
            self.check_open()?;
            self.wait(dir, call_deadline)?;
        }
        let mut seen = 0;
        let n = self.io(dir, || {
            seen = half.edges.load(Ordering::Acquire);
            f()
        })?;
        if n > 0 && n < len && !half.hup.load(Ordering::Acquire) {
            let mut st = half.lock();
            if half.edges.load(Ordering::Acquire) == seen {
                st.ready = false;
                half.drained.store(true, Ordering::Relaxed);
            }
        }
        Ok(n)
    }

    /// Fails once `close` was called.
    pub(crate) fn check_open(&self) -> io::Result<()> {
        if self.desc.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        Ok(())
    }

    /// Waits until `dir` may be ready (a readiness edge, a deadline change, a close, or a
    /// spurious wake-up: the caller retries its call). Fails when the Go-style deadline or
    /// `call_deadline` (the per-call timeout) has passed, or after `close`.
    pub(crate) fn wait(&self, dir: Dir, call_deadline: u64) -> io::Result<()> {
        let half = self.desc.half(dir);
        let deadline = || {
            let d = half.deadline.load(Ordering::Relaxed);
            (d.min(call_deadline), d <= call_deadline)
        };
        let Some(me) = crate::tls::current_g() else {
            return self.wait_thread(dir, deadline);
        };
        let key = me.as_ptr();
        let mut st = half.lock();
        if self.desc.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        if std::mem::take(&mut st.ready) {
            return Ok(());
        }
        let (until, go_style) = deadline();
        let now = if until == NONE { 0 } else { now_nanos() };
        if until <= now {
            return Err(timeout_error(go_style));
        }
        // Counted before it can be taken (the taker subtracts).
        if let Some(p) = super::active() {
            p.add_waiters(1);
        }
        st.waiters.push(me);
        drop(st);
        // Leaves the list however this frame ends: a goroutine unwound at shutdown never
        // returns from its park, and a stale entry would be woken for someone else's wait.
        let _unlist = Unlist { half, key };
        if until == NONE {
            crate::park();
        } else {
            crate::park_timeout(Duration::from_nanos(until - now));
        }
        Ok(())
    }

    /// `wait` on a plain thread: `poll(2)` on the descriptor.
    fn wait_thread(&self, dir: Dir, deadline: impl Fn() -> (u64, bool)) -> io::Result<()> {
        let fd = self.desc.fd.load(Ordering::Relaxed);
        let events = match dir {
            Dir::Read => libc::POLLIN | libc::POLLRDHUP,
            Dir::Write => libc::POLLOUT,
        };
        loop {
            self.check_open()?;
            let (until, go_style) = deadline();
            let now = now_nanos();
            if until <= now {
                return Err(timeout_error(go_style));
            }
            let slice = Duration::from_nanos(until - now).min(THREAD_SLICE);
            // Round up: a 0 ms poll for a 0.5 ms remainder would spin.
            let ms = slice.as_nanos().div_ceil(1_000_000) as libc::c_int;
            let mut pfd = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call;
            // `fd` stays open while the socket that owns this registration is borrowed.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                return Ok(());
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    /// Sets the Go-style deadline for `dir` (`None` clears it) and wakes its waiters so they
    /// use the new one.
    pub(crate) fn set_deadline(&self, dir: Dir, at: Option<Instant>) {
        let half = self.desc.half(dir);
        half.deadline
            .store(at.map_or(NONE, nanos_at), Ordering::Relaxed);
        half.wake_all(&mut crate::sched::ready);
    }

    /// Sets the std-style per-call timeout for `dir`, as std does: `Some(0)` is an error.
    pub(crate) fn set_timeout(&self, dir: Dir, t: Option<Duration>) -> io::Result<()> {
        let nanos = match t {
            Some(d) if d.is_zero() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot set a 0 duration timeout",
                ))
            }
            Some(d) => u64::try_from(d.as_nanos()).unwrap_or(NONE / 2).max(1),
            None => 0,
        };
        self.desc.half(dir).timeout.store(nanos, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn timeout(&self, dir: Dir) -> Option<Duration> {
        match self.desc.half(dir).timeout.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// Go's `Close` for a shared socket: every later call fails, and goroutines blocked on it
    /// now wake with that error. The descriptor itself is closed when the last handle drops
    /// (closing it under a thread that is inside a call could close a reused number).
    /// Returns `false` if it was closed already.
    pub(crate) fn close(&self) -> bool {
        if self.desc.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.desc.read.wake_all(&mut crate::sched::ready);
        self.desc.write.wake_all(&mut crate::sched::ready);
        true
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.desc.closed.load(Ordering::Acquire)
    }
}

/// Takes a waiting goroutine off its half's list, unless the poller (or a close or deadline
/// change) already took it.
struct Unlist<'a> {
    half: &'a Half,
    key: std::ptr::NonNull<crate::g::G>,
}

impl Drop for Unlist<'_> {
    fn drop(&mut self) {
        let mut st = self.half.lock();
        if st.waiters.remove(self.key) {
            drop(st);
            if let Some(p) = super::active() {
                p.sub_waiters(1);
            }
        }
    }
}

/// The error of a call on a socket after `close` (Go's `net.ErrClosed`).
pub(crate) fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "use of closed network connection",
    )
}

fn timeout_error(go_style: bool) -> io::Error {
    if go_style {
        io::Error::new(io::ErrorKind::TimedOut, "i/o timeout")
    } else {
        io::Error::from(io::ErrorKind::WouldBlock)
    }
}
