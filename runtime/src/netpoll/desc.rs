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
//!
//! # Handles
//! A socket's handles (`try_clone`) share its descriptor and count themselves in it: the last
//! one to drop deregisters and closes the socket. The count lives in [`Rare`], so a socket
//! never cloned has no counter (its one handle is the last); `share` installs `Rare` before
//! it counts, so a second handle always finds it.
//!
//! # Size
//! Every connection has one, so a descriptor is one 64-byte cache line, carved from leaked
//! chunks (no allocator header): each half's lock is one byte ([`SpinLock`]; its critical
//! sections are a few instructions, and waiters are unparked after it is released), and what
//! most sockets never use (deadlines, timeouts, a second handle) lives in a [`Rare`] allocated
//! the first time it is needed. A `Mutex` per half and the times inline made it 128 bytes plus
//! the allocator's 16, and an `Arc` around each socket cost 48 more.

use super::poller;
use crate::chan::lock::SpinLock;
use crate::g::{self, GRef};
use crate::sched::timers::{nanos_at, now_nanos, NONE};
use std::cell::UnsafeCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU16, AtomicU32, AtomicU64, Ordering};
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

/// Aligned to its cache line: the poller and the socket's goroutine touch it from different
/// threads, and a descriptor straddling two lines would share them with its neighbours.
#[repr(align(64))]
pub(crate) struct PollDesc {
    /// Bumped on every release; the token's tag.
    gen: AtomicU16,
    closed: AtomicBool,
    /// `set_nonblocking(true)`: calls fail with `WouldBlock` instead of waiting.
    nonblocking: AtomicBool,
    fd: AtomicI32,
    /// Null until first needed; then kept (reset) across reuses. Through the loom shim: the
    /// install race and the handle count have a model (`loom_socket_handles`).
    rare: crate::loom::AtomicPtr<Rare>,
    read: Half,
    write: Half,
}

/// What most sockets never use (see "Size" in the module comment).
struct Rare {
    read: HalfTimes,
    write: HalfTimes,
    /// The socket's handles (see "Handles").
    handles: crate::loom::AtomicU32,
}

struct HalfTimes {
    /// Go-style deadline, `now_nanos` scale; `NONE` when unset.
    deadline: AtomicU64,
    /// std-style per-call timeout in nanoseconds; 0 when unset.
    timeout: AtomicU64,
}

impl HalfTimes {
    fn new() -> HalfTimes {
        HalfTimes {
            deadline: AtomicU64::new(NONE),
            timeout: AtomicU64::new(0),
        }
    }
}

struct Half {
    /// Guards `ready` and `waiters`.
    lock: SpinLock,
    /// An edge arrived that no waiter has consumed.
    ready: UnsafeCell<bool>,
    /// Goroutines parked on this half (more than one when several share the socket).
    waiters: UnsafeCell<Waiters>,
    /// Readiness edges dispatched to this half so far (bumped before the lock is taken).
    edges: AtomicU32,
    /// A hint: the last call moved fewer bytes than asked and no edge came since, so the next
    /// call waits before it tries (see "Short transfers" in the module comment).
    drained: AtomicBool,
    /// The kernel reported this direction closed or in error (end of file, reset): the next
    /// call returns at once whatever came before, so it must never wait first. Sticky until
    /// the descriptor is recycled.
    hup: AtomicBool,
}

// SAFETY: `ready` and `waiters` are only touched under `lock` (through `Locked`); the rest are
// atomics. `GRef`s are `Send`.
unsafe impl Sync for Half {}

/// A half's lock, held: its `ready` and `waiters`.
struct Locked<'a> {
    half: &'a Half,
    ready: &'a mut bool,
    waiters: &'a mut Waiters,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: `Locked` exists only while its half's lock is held (`Half::lock`), and this
        // drop ends that; the references it holds are not used after it.
        unsafe { self.half.lock.unlock() };
    }
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
    #[allow(clippy::box_collection)]
    fn take_all(&mut self) -> (Option<GRef>, Option<Box<Vec<GRef>>>) {
        (self.one.take(), self.more.take())
    }

    fn len(&self) -> usize {
        usize::from(self.one.is_some()) + self.more.as_ref().map_or(0, |m| m.len())
    }
}

impl Half {
    fn new() -> Half {
        Half {
            lock: SpinLock::new(),
            ready: UnsafeCell::new(false),
            waiters: UnsafeCell::new(Waiters::default()),
            edges: AtomicU32::new(0),
            drained: AtomicBool::new(false),
            hup: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> Locked<'_> {
        self.lock.lock();
        // SAFETY: we hold the lock, which guards these two cells; the references live in the
        // guard, which releases the lock when it drops.
        unsafe {
            Locked {
                half: self,
                ready: &mut *self.ready.get(),
                waiters: &mut *self.waiters.get(),
            }
        }
    }

    /// Unparks every waiter (they look at the state again); returns how many. They are taken
    /// off the list under the lock and unparked after it is released.
    fn wake_all(&self, queue: &mut impl FnMut(GRef)) -> usize {
        let st = self.lock();
        let (one, more) = st.waiters.take_all();
        drop(st);
        let mut n = 0;
        for w in one.into_iter().chain(more.into_iter().flat_map(|b| *b)) {
            g::unpark_with(&w, queue);
            n += 1;
        }
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

/// Descriptors carved at once when the free list is empty.
const CHUNK: usize = 64;

impl PollDesc {
    fn new() -> PollDesc {
        PollDesc {
            gen: AtomicU16::new(0),
            closed: AtomicBool::new(false),
            nonblocking: AtomicBool::new(false),
            fd: AtomicI32::new(-1),
            rare: crate::loom::AtomicPtr::new(std::ptr::null_mut()),
            read: Half::new(),
            write: Half::new(),
        }
    }

    fn alloc() -> &'static PollDesc {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        if free.is_empty() {
            let chunk: &'static [PollDesc] = (0..CHUNK)
                .map(|_| PollDesc::new())
                .collect::<Vec<_>>()
                .leak();
            free.extend(chunk.iter().rev());
        }
        let d = free.pop().expect("just refilled");
        drop(free);
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

    /// The descriptor's `Rare` part, if it was ever needed.
    fn rare(&self) -> Option<&Rare> {
        // SAFETY: a non-null `rare` came from `Box::into_raw` in `rare_mut` and is never freed
        // (it stays with the leaked descriptor).
        unsafe { self.rare.load(Ordering::Acquire).as_ref() }
    }

    /// The descriptor's `Rare` part, allocated on first use (with one handle: the socket had
    /// only one until a `Rare` existed, see "Handles").
    fn rare_mut(&self) -> &Rare {
        if let Some(r) = self.rare() {
            return r;
        }
        let fresh = Box::into_raw(Box::new(Rare {
            read: HalfTimes::new(),
            write: HalfTimes::new(),
            handles: crate::loom::AtomicU32::new(1),
        }));
        if let Err(_other) = self.rare.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: `fresh` lost the race, so no one else ever saw it.
            drop(unsafe { Box::from_raw(fresh) });
        }
        self.rare().expect("set above")
    }

    /// The deadline and timeout of `dir`, if any was ever set on this descriptor.
    fn times(&self, dir: Dir) -> Option<&HalfTimes> {
        let r = self.rare()?;
        Some(match dir {
            Dir::Read => &r.read,
            Dir::Write => &r.write,
        })
    }

    /// The deadline and timeout of `dir`, allocated on first use.
    fn times_mut(&self, dir: Dir) -> &HalfTimes {
        let r = self.rare_mut();
        match dir {
            Dir::Read => &r.read,
            Dir::Write => &r.write,
        }
    }

    /// `dir`'s Go-style deadline (`NONE`: unset).
    fn deadline(&self, dir: Dir) -> u64 {
        self.times(dir)
            .map_or(NONE, |t| t.deadline.load(Ordering::Relaxed))
    }

    /// `dir`'s per-call timeout in nanoseconds (0: unset).
    fn timeout(&self, dir: Dir) -> u64 {
        self.times(dir)
            .map_or(0, |t| t.timeout.load(Ordering::Relaxed))
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
        let st = half.lock();
        if st.waiters.is_empty() {
            *st.ready = true;
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
        desc.nonblocking.store(false, Ordering::Relaxed);
        if let Some(r) = desc.rare() {
            r.handles.store(1, Ordering::Relaxed);
        }
        for dir in [Dir::Read, Dir::Write] {
            if let Some(t) = desc.times(dir) {
                t.deadline.store(NONE, Ordering::Relaxed);
                t.timeout.store(0, Ordering::Relaxed);
            }
            let half = desc.half(dir);
            *half.lock().ready = false;
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

    /// Another handle to the same registration (see "Handles" in the module comment).
    pub(crate) fn share(&self) -> Registration {
        self.desc.rare_mut().handles.fetch_add(1, Ordering::Relaxed);
        Registration { desc: self.desc }
    }

    /// Drops a handle; whether it was the last one (which must then `release`).
    pub(crate) fn drop_handle(&self) -> bool {
        match self.desc.rare() {
            // No `Rare`: the socket was never shared, this is its one handle.
            None => true,
            Some(r) => r.handles.fetch_sub(1, Ordering::AcqRel) == 1,
        }
    }

    /// `set_nonblocking` for every handle of the socket.
    pub(crate) fn set_nonblocking(&self, on: bool) {
        self.desc.nonblocking.store(on, Ordering::Relaxed);
    }

    pub(crate) fn is_nonblocking(&self) -> bool {
        self.desc.nonblocking.load(Ordering::Relaxed)
    }

    /// Deregisters `source` (the last handle of the socket is being dropped: no one else uses
    /// it) and recycles the descriptor.
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
            let st = half.lock();
            *st.ready = false;
            let stale = st.waiters.len();
            let taken = st.waiters.take_all();
            drop(st);
            drop(taken);
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
    pub(crate) fn io<R>(&self, dir: Dir, f: impl FnMut() -> io::Result<R>) -> io::Result<R> {
        self.io_until(dir, self.call_deadline(dir), f)
    }

    /// When a call on `dir` that starts now must end: its per-call timeout from now, or `NONE`.
    fn call_deadline(&self, dir: Dir) -> u64 {
        match self.desc.timeout(dir) {
            0 => NONE,
            t => now_nanos().saturating_add(t),
        }
    }

    /// `io` with the call's deadline already computed.
    fn io_until<R>(
        &self,
        dir: Dir,
        call_deadline: u64,
        mut f: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
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
    /// saving the system call that would fail with `WouldBlock` (tokio does the same). The
    /// per-call timeout covers that first wait and the call's own, together.
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
        let call_deadline = self.call_deadline(dir);
        if half.drained.swap(false, Ordering::Relaxed) && !half.hup.load(Ordering::Acquire) {
            self.check_open()?;
            self.wait(dir, call_deadline)?;
        }
        let mut seen = 0;
        let n = self.io_until(dir, call_deadline, || {
            seen = half.edges.load(Ordering::Acquire);
            f()
        })?;
        if n > 0 && n < len && !half.hup.load(Ordering::Acquire) {
            let st = half.lock();
            if half.edges.load(Ordering::Acquire) == seen {
                *st.ready = false;
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
        let desc = self.desc;
        let deadline = || {
            let d = desc.deadline(dir);
            (d.min(call_deadline), d <= call_deadline)
        };
        let Some(me) = crate::tls::current_g() else {
            return self.wait_thread(dir, deadline);
        };
        let key = me.as_ptr();
        let st = half.lock();
        if self.desc.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        if std::mem::take(st.ready) {
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
        let at = at.map_or(NONE, nanos_at);
        if at != NONE || self.desc.times(dir).is_some() {
            self.desc
                .times_mut(dir)
                .deadline
                .store(at, Ordering::Relaxed);
        }
        self.desc.half(dir).wake_all(&mut crate::sched::ready);
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
        if nanos != 0 || self.desc.times(dir).is_some() {
            self.desc
                .times_mut(dir)
                .timeout
                .store(nanos, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(crate) fn timeout(&self, dir: Dir) -> Option<Duration> {
        match self.desc.timeout(dir) {
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
        let st = self.half.lock();
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

#[cfg(test)]
mod tests {
    /// Every connection has one (see "Size" in the module comment).
    #[cfg(not(loom))]
    #[test]
    fn descriptor_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<super::PollDesc>(), 64);
    }

    /// "Handles": a socket shared from two threads at once (one of them also setting a
    /// timeout, which installs `Rare` too: three racing installs), then its handles dropped on
    /// different threads: exactly one drop is the last.
    #[cfg(loom)]
    #[test]
    fn loom_socket_handles() {
        use super::{Dir, PollDesc, Registration};
        use loom::sync::atomic::{AtomicUsize, Ordering};
        loom::model(|| {
            let desc: &'static PollDesc = Box::leak(Box::new(PollDesc::new()));
            // The socket's first handle, borrowed by two threads (its drop is below).
            let first: &'static Registration = Box::leak(Box::new(Registration { desc }));
            let t1 = loom::thread::spawn(move || first.share());
            let t2 = loom::thread::spawn(move || {
                first
                    .set_timeout(Dir::Read, Some(std::time::Duration::from_secs(1)))
                    .unwrap();
                first.share()
            });
            let b = t1.join().unwrap();
            let c = t2.join().unwrap();
            // Each handle leaves `alive` before it drops; the last drop must find it at 0.
            let alive = loom::sync::Arc::new(AtomicUsize::new(3));
            let drop_one = |h: Registration, alive: &AtomicUsize| {
                alive.fetch_sub(1, Ordering::Relaxed);
                let last = h.drop_handle();
                assert!(
                    !last || alive.load(Ordering::Relaxed) == 0,
                    "closed under a live handle"
                );
                last
            };
            let a3 = alive.clone();
            let t3 = loom::thread::spawn(move || drop_one(b, &a3));
            let lasts = [
                drop_one(c, &alive),
                drop_one(Registration { desc }, &alive),
                t3.join().unwrap(),
            ];
            assert_eq!(
                lasts.iter().filter(|&&l| l).count(),
                1,
                "exactly one last handle"
            );
            let count = desc.rare().expect("shared").handles.load(Ordering::Relaxed);
            assert_eq!(count, 0, "every handle counted once");
        });
    }
}
