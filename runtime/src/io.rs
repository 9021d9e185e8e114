//! `goro::io`: the process's standard output and error for goroutines, behind a lock that
//! belongs to the **goroutine** that takes it ([`stdout`], [`stderr`], [`Stdout::lock`],
//! [`Stderr::lock`]).
//!
//! # Why not std's lock
//! `std::io::stdout().lock()` is a `ReentrantLock` owned by an OS *thread*, around a `RefCell`
//! with std's line buffer. In goro many goroutines run on one thread (an M) and switch at
//! runtime calls: park, yield, channel operations, locks, sleeps, socket I/O. A goroutine that
//! holds std's lock across such a switch leaves it held by the thread, so the next goroutine
//! that M runs *re-enters* it (std sees the same owner) and writes into the middle of the
//! first one's output; and a goroutine that resumes on another M keeps writing through a
//! lock that thread does not own while the first thread's goroutines re-enter it, so two
//! threads are inside std's `RefCell` at once ("RefCell already borrowed", or worse). std's
//! lock is sound only when held for a stretch of code that cannot switch.
//!
//! # The rule
//! A [`StdoutLock`] (or [`StderrLock`]) belongs to the goroutine that took it; on a plain thread,
//! to the thread (code inside [`crate::blocking`] is plain-thread code, owned by its thread).
//! Contended, `lock` **parks** the goroutine (its M runs others) or blocks the plain thread,
//! through a [`crate::sync::Mutex`], which gives it Go's policy: newcomers may barge, and a
//! waiter that waited more than a millisecond gets the lock handed over. It is **reentrant**
//! for its owner, like std's: a goroutine that holds it and locks again (directly, or through
//! a [`Stdout`] write) gets a second guard at once; the lock is released when the last of
//! them drops, in any order. A holder's output is never interleaved with another holder's.
//! A guard taken inside `blocking` belongs to the thread: keep it inside the closure (which
//! cannot switch goroutines), since `blocking` code of other goroutines later run by that
//! thread would count as the same owner.
//!
//! # Protocol
//! 1. `lock`: compute the caller's owner id (below). If `owner` already holds it, add one to
//!    `depth`. Otherwise lock the goroutine mutex (parking), then store `owner` and set
//!    `depth` to 1, keeping the mutex's guard in `held`.
//! 2. Every `write`/`flush` through a lock takes std's lock of the stream for that one call
//!    and releases it before returning: no goroutine switch can happen while std's lock is
//!    held, so std's owner (the thread) is always the right one, and std's line buffering and
//!    its `ReentrantLock` keep goro's output and plain `println!` from corrupting each other.
//!    They may interleave at call boundaries: `println!` does not take goro's lock (use
//!    `writeln!(goro::io::stdout(), ..)` in goroutines).
//! 3. Dropping a guard subtracts one from `depth`; the one that reaches 0 clears `owner` and
//!    then drops the mutex's guard, unlocking it.
//!
//! Invariants: `owner` is written only by the holder of the mutex (set after locking it,
//! cleared before unlocking it), so a caller that reads its own id there is the holder, and
//! `Relaxed` suffices (std's `ReentrantLock` argument: only we ever store our id, and we read
//! our own latest store); `depth` and `held` are touched only by the owner; `depth > 0` ⇔
//! `owner != 0` ⇔ `held` is `Some`, whenever the owner is not inside steps 1 or 3.
//!
//! A lock's `write_fmt` is `Write`'s default, which formats piece by piece through
//! `write_all`: formatting runs user `Display` code, which may switch goroutines, so std's lock
//! must not be held across it (std's own `StdoutLock::write_fmt` would hold it). [`Stdout`]'s
//! `write_fmt` takes goro's lock once for the whole call, so one `writeln!` is one record.
//!
//! # Owner ids
//! A goroutine's id (`G::id`: counts from 1, never reused, never 0). A plain thread's: a
//! per-thread number from a counter, with bit 63 set, so it cannot equal a goroutine's; a
//! thread whose thread-locals are already destroyed (its exit destructors) uses its
//! `pthread_t` (a user-space address, unique among live threads, below bit 62 on every 64-bit
//! Linux target) with bits 62 and 63 set. Thread-locals are read only in `#[inline(never)]`
//! functions (see `tls.rs`).
//!
//! # Shutdown
//! A goroutine unwound by its runtime's shutdown that prints from a destructor must not wait
//! for a holder that may never run again (the mutex would wait a second and abort): it takes
//! the lock only if it is free (or its own), and otherwise writes without it, each call
//! still under std's lock.
//!
//! # Rejected designs
//! - Wrapping std's `StdoutLock` in a goroutine mutex and holding it across switches: the
//!   mutex keeps other goroutines out, but the std lock underneath still belongs to the
//!   thread: a goroutine resuming on another M holds a lock that thread does not own, and
//!   plain `println!` on the first M re-enters it.
//! - A buffer per thread, written out at each newline: output of two goroutines on one
//!   thread would mix in it, and a goroutine that migrates leaves half a line behind.
//! - A buffer per goroutine flushed on unlock: output appears late (a prompt without a
//!   newline, or a goroutine that is killed at shutdown), and memory grows with the record.
//! - Running every write inside [`crate::blocking`]: most writes only copy into std's
//!   buffer, and the hand-off would cost more than the write; a write that blocks (a full
//!   pipe) blocks its M, as `println!` does.
//!
//! Not built under `--cfg loom`: the two locks are statics, whose `const` constructors loom's
//! primitives lack, and nothing here is lock-free.
#![cfg(not(loom))]

use crate::sync::{Mutex, MutexGuard};
use std::cell::Cell;
use std::fmt;
use std::io::{self, IoSlice, Write};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Set in every plain thread's owner id; goroutine ids count up from 1 and never reach it.
const THREAD_BIT: u64 = 1 << 63;
/// Also set for threads whose thread-locals are gone (their id is then their `pthread_t`).
const TEARDOWN_BIT: u64 = 1 << 62;

/// A lock owned by a goroutine (or a thread), reentrant for its owner.
struct GoroutineLock {
    /// Held by the owner while `depth > 0` (its guard is in `held`).
    mutex: Mutex<()>,
    /// The owner's id, 0 when free. Written only by the mutex's holder (`Relaxed`: see the
    /// module comment).
    owner: AtomicU64,
    /// How many guards the owner holds. Touched only by the owner.
    depth: AtomicUsize,
    /// The mutex's guard while the lock is owned. Touched only by the owner, in steps 1 and
    /// 3, so never contended; a std mutex because it never parks and never yields.
    held: std::sync::Mutex<Option<MutexGuard<'static, ()>>>,
}

impl GoroutineLock {
    const fn new() -> GoroutineLock {
        GoroutineLock {
            mutex: Mutex::new(()),
            owner: AtomicU64::new(0),
            depth: AtomicUsize::new(0),
            held: std::sync::Mutex::new(None),
        }
    }

    /// Step 1. Returns whether the caller now owns the lock (false only for a goroutine being
    /// unwound at shutdown that found it held by someone else).
    fn acquire(&'static self) -> bool {
        let me = owner_id();
        if self.owner.load(Ordering::Relaxed) == me {
            let depth = self.depth.load(Ordering::Relaxed);
            let depth = depth.checked_add(1).expect("goro::io lock depth overflow");
            self.depth.store(depth, Ordering::Relaxed);
            return true;
        }
        let guard = if crate::tls::current_is_dying() {
            match self.mutex.try_lock() {
                Some(g) => g,
                None => return false,
            }
        } else {
            self.mutex.lock()
        };
        self.owner.store(me, Ordering::Relaxed);
        self.depth.store(1, Ordering::Relaxed);
        *self.slot() = Some(guard);
        true
    }

    /// Step 3, for a caller that owns the lock.
    fn release(&self) {
        let depth = self.depth.load(Ordering::Relaxed) - 1;
        self.depth.store(depth, Ordering::Relaxed);
        if depth == 0 {
            let guard = self.slot().take();
            self.owner.store(0, Ordering::Relaxed);
            drop(guard);
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<MutexGuard<'static, ()>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

static STDOUT_LOCK: GoroutineLock = GoroutineLock::new();
static STDERR_LOCK: GoroutineLock = GoroutineLock::new();

/// The caller's owner id: its goroutine's, else its thread's.
#[inline(never)]
fn owner_id() -> u64 {
    crate::tls::with_current_g(|g| g.map(|g| g.id)).unwrap_or_else(thread_owner_id)
}

/// This plain thread's owner id (see "Owner ids" in the module comment).
#[inline(never)]
fn thread_owner_id() -> u64 {
    thread_local! {
        static ID: Cell<u64> = const { Cell::new(0) };
    }
    static NEXT: AtomicU64 = AtomicU64::new(1);
    ID.try_with(|id| {
        if id.get() == 0 {
            id.set(NEXT.fetch_add(1, Ordering::Relaxed) | THREAD_BIT);
        }
        id.get()
    })
    .unwrap_or_else(|_| {
        // SAFETY: `pthread_self` has no preconditions and cannot fail.
        let me = unsafe { libc::pthread_self() } as u64;
        me | THREAD_BIT | TEARDOWN_BIT
    })
}

/// Which standard stream a lock writes to.
#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

impl Stream {
    fn lock(self) -> &'static GoroutineLock {
        match self {
            Stream::Out => &STDOUT_LOCK,
            Stream::Err => &STDERR_LOCK,
        }
    }

    /// Step 2: runs `f` under std's lock of the stream, held for this call only.
    fn with_std<R>(self, f: impl FnOnce(&mut dyn Write) -> R) -> R {
        match self {
            Stream::Out => f(&mut io::stdout().lock()),
            Stream::Err => f(&mut io::stderr().lock()),
        }
    }
}

/// One guard of a stream's goroutine lock (the body of [`StdoutLock`] and [`StderrLock`]).
struct Guard {
    stream: Stream,
    /// False for a goroutine unwound at shutdown that writes without the lock.
    owned: bool,
}

impl Guard {
    fn new(stream: Stream) -> Guard {
        Guard {
            stream,
            owned: stream.lock().acquire(),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.with_std(|w| w.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.with_std(|w| w.write_vectored(bufs))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.stream.with_std(|w| w.write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.with_std(|w| w.flush())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.owned {
            self.stream.lock().release();
        }
    }
}

/// A handle to the process's standard output for goroutines; see [`stdout`].
///
/// Each `Write` call takes the goroutine lock for that call (so one `writeln!` is one whole
/// record); [`lock`](Stdout::lock) holds it across many.
#[derive(Clone)]
pub struct Stdout {
    _private: (),
}

/// A handle to the process's standard error for goroutines; see [`stderr`].
///
/// Each `Write` call takes the goroutine lock for that call; [`lock`](Stderr::lock) holds it
/// across many. Like std's stderr, nothing is buffered.
#[derive(Clone)]
pub struct Stderr {
    _private: (),
}

/// Standard output, with a lock that belongs to the goroutine that takes it (see the
/// [module documentation](crate::io)): a goroutine may hold [`Stdout::lock`] across yields,
/// sleeps, channel operations and locks, and no other goroutine's output gets in between.
///
/// ```
/// # extern crate goro_runtime as goro;
/// use std::io::Write;
/// goro::run(|| {
///     let hs: Vec<_> = (0..4)
///         .map(|i| {
///             goro::spawn(move || {
///                 let mut out = goro::io::stdout().lock();
///                 write!(out, "goroutine {i}:").unwrap();
///                 goro::yield_now(); // others run, but cannot write to stdout
///                 writeln!(out, " done").unwrap();
///             })
///         })
///         .collect();
///     hs.into_iter().for_each(|h| h.join().unwrap());
/// });
/// ```
pub fn stdout() -> Stdout {
    Stdout { _private: () }
}

/// Standard error, with a lock that belongs to the goroutine that takes it (see [`stdout`]).
///
/// ```
/// # extern crate goro_runtime as goro;
/// use std::io::Write;
/// goro::run(|| {
///     writeln!(goro::io::stderr(), "one whole line").unwrap();
/// });
/// ```
pub fn stderr() -> Stderr {
    Stderr { _private: () }
}

impl Stdout {
    /// Locks standard output for the calling goroutine (or plain thread) until the guard is
    /// dropped: parks while another goroutine or thread holds it; returns at once if the
    /// caller already does (the lock is reentrant).
    ///
    /// ```
    /// # extern crate goro_runtime as goro;
    /// use std::io::Write;
    /// goro::run(|| {
    ///     let mut out = goro::io::stdout().lock();
    ///     let mut again = goro::io::stdout().lock(); // same goroutine: no deadlock
    ///     again.write_all(b"a whole ").unwrap();
    ///     goro::time::sleep(std::time::Duration::from_millis(1));
    ///     out.write_all(b"record\n").unwrap();
    /// });
    /// ```
    pub fn lock(&self) -> StdoutLock<'static> {
        StdoutLock {
            guard: Guard::new(Stream::Out),
            _marker: PhantomData,
        }
    }
}

impl Stderr {
    /// Locks standard error for the calling goroutine (or plain thread) until the guard is
    /// dropped; reentrant, parks while someone else holds it (see [`Stdout::lock`]).
    ///
    /// ```
    /// # extern crate goro_runtime as goro;
    /// use std::io::Write;
    /// goro::run(|| {
    ///     let mut err = goro::io::stderr().lock();
    ///     write!(err, "warning: ").unwrap();
    ///     goro::yield_now();
    ///     writeln!(err, "one line, whoever else writes to stderr").unwrap();
    /// });
    /// ```
    pub fn lock(&self) -> StderrLock<'static> {
        StderrLock {
            guard: Guard::new(Stream::Err),
            _marker: PhantomData,
        }
    }
}

/// A goroutine's hold on standard output, from [`Stdout::lock`]; unlocks when the last guard
/// of its owner drops.
///
/// Not `Send`: it belongs to the goroutine (or thread) that took it. Each `write` or `flush`
/// goes through std's handle, under std's lock for that call only.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct StdoutLock<'a> {
    guard: Guard,
    /// `!Send` and `!Sync`: the guard must stay with its owner.
    _marker: PhantomData<(&'a (), *const ())>,
}

/// A goroutine's hold on standard error, from [`Stderr::lock`]; see [`StdoutLock`].
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct StderrLock<'a> {
    guard: Guard,
    /// `!Send` and `!Sync`: the guard must stay with its owner.
    _marker: PhantomData<(&'a (), *const ())>,
}

/// `Write` for the locks: each call under std's lock, `write_fmt` piece by piece (the
/// default: see the module comment).
macro_rules! write_through_guard {
    ($($t:ty),*) => {$(
        impl Write for $t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.guard.write(buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.guard.write_vectored(bufs)
            }

            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                self.guard.write_all(buf)
            }

            fn flush(&mut self) -> io::Result<()> {
                self.guard.flush()
            }
        }
    )*};
}

write_through_guard!(StdoutLock<'_>, StderrLock<'_>);

/// `Write` for the handles: each call takes the goroutine lock for its duration.
macro_rules! write_through_lock {
    ($($t:ty),*) => {$(
        impl Write for $t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.lock().write(buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.lock().write_vectored(bufs)
            }

            fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
                self.lock().write_all(buf)
            }

            fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
                self.lock().write_fmt(args)
            }

            fn flush(&mut self) -> io::Result<()> {
                self.lock().flush()
            }
        }
    )*};
}

write_through_lock!(Stdout, &Stdout, Stderr, &Stderr);

impl fmt::Debug for Stdout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stdout").finish_non_exhaustive()
    }
}

impl fmt::Debug for Stderr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stderr").finish_non_exhaustive()
    }
}

impl fmt::Debug for StdoutLock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdoutLock").finish_non_exhaustive()
    }
}

impl fmt::Debug for StderrLock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StderrLock").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_id_spaces_do_not_overlap() {
        let id = thread_owner_id();
        assert_ne!(id & THREAD_BIT, 0);
        assert_eq!(id & TEARDOWN_BIT, 0, "counter ids stay below bit 62");
        assert_eq!(id, thread_owner_id(), "stable per thread");
        let other = std::thread::spawn(thread_owner_id).join().unwrap();
        assert_ne!(id, other);
        assert_eq!(THREAD_BIT & TEARDOWN_BIT, 0);
    }

    #[test]
    fn handles_are_send_sync_clone_debug() {
        fn check<T: Send + Sync + Clone + fmt::Debug>() {}
        check::<Stdout>();
        check::<Stderr>();
    }
}
