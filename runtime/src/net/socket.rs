//! `Socket`: one handle of a mio socket plus its netpoller registration, with the calls every
//! socket type has (timeouts, deadlines, close), and the macros that give each public type the
//! same methods and `Read`/`Write` impls.
//!
//! A socket's handles (`try_clone`, `Clone`) are counted in its netpoller descriptor, not in
//! an `Arc`: a handle is two words, and a connection allocates nothing beyond its descriptor
//! (see "Handles" in `netpoll/desc.rs`). Every handle has its own mio value over the one file
//! descriptor; only the last handle to drop closes it.

use crate::netpoll::{Dir, Registration};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

/// What a socket handle needs of its mio type.
pub(crate) trait Source: mio::event::Source + AsRawFd + FromRawFd {}
impl<S: mio::event::Source + AsRawFd + FromRawFd> Source for S {}

pub(crate) struct Socket<S: Source> {
    /// This handle's view of the descriptor; the last handle drops it (closing it).
    io: ManuallyDrop<S>,
    reg: Registration,
}

impl<S: Source> Socket<S> {
    pub(crate) fn new(mut io: S) -> io::Result<Socket<S>> {
        let fd = io.as_raw_fd();
        let reg = Registration::new(&mut io, fd)?;
        Ok(Socket {
            io: ManuallyDrop::new(io),
            reg,
        })
    }

    /// The mio socket, for calls that never block (addresses, options).
    pub(crate) fn get(&self) -> &S {
        &self.io
    }

    /// Runs the non-blocking call `f`, waiting for readiness in `dir` while it would block.
    pub(crate) fn io<R>(&self, dir: Dir, mut f: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        if self.reg.is_nonblocking() {
            self.reg.check_open()?;
            return f(&self.io);
        }
        self.reg.io(dir, || f(&self.io))
    }

    /// `io` for a read or write of `len` bytes (see `Registration::io_bytes`).
    pub(crate) fn io_bytes(
        &self,
        dir: Dir,
        len: usize,
        mut f: impl FnMut(&S) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.reg.is_nonblocking() {
            self.reg.check_open()?;
            return f(&self.io);
        }
        self.reg.io_bytes(dir, len, || f(&self.io))
    }

    /// Waits until `dir` may be ready, for at most `timeout` (`connect`).
    pub(crate) fn wait(&self, dir: Dir, deadline: Option<Instant>) -> io::Result<()> {
        let d = deadline.map_or(crate::sched::timers::NONE, crate::sched::timers::nanos_at);
        self.reg.wait(dir, d)
    }

    pub(crate) fn check_open(&self) -> io::Result<()> {
        self.reg.check_open()
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.reg.check_open()?;
        self.reg.set_nonblocking(on);
        Ok(())
    }

    pub(crate) fn set_timeout(&self, dir: Dir, t: Option<Duration>) -> io::Result<()> {
        self.reg.check_open()?;
        self.reg.set_timeout(dir, t)
    }

    pub(crate) fn timeout(&self, dir: Dir) -> io::Result<Option<Duration>> {
        self.reg.check_open()?;
        Ok(self.reg.timeout(dir))
    }

    pub(crate) fn set_deadline(&self, dir: Option<Dir>, at: Option<Instant>) -> io::Result<()> {
        self.reg.check_open()?;
        match dir {
            Some(d) => self.reg.set_deadline(d, at),
            None => {
                self.reg.set_deadline(Dir::Read, at);
                self.reg.set_deadline(Dir::Write, at);
            }
        }
        Ok(())
    }

    /// Go's `Close` (see `net/mod.rs`); the descriptor closes when the last handle drops.
    /// Shutting the socket down also wakes plain threads blocked in `poll(2)` on it.
    pub(crate) fn close(&self) -> io::Result<()> {
        if !self.reg.close() {
            return Err(crate::netpoll::closed_error());
        }
        // SAFETY: the descriptor is open: this `Socket` owns it until it drops. Errors
        // (a listener or an unconnected socket) are fine: nothing more to shut down.
        unsafe { libc::shutdown(self.io.as_raw_fd(), libc::SHUT_RDWR) };
        Ok(())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.reg.is_closed()
    }
}

impl<S: Source> AsRawFd for Socket<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl<S: Source> Clone for Socket<S> {
    fn clone(&self) -> Socket<S> {
        let reg = self.reg.share();
        // SAFETY: the descriptor stays open while any handle exists (`self` is one, and the
        // new one was counted above); the new mio value is never dropped but by the last
        // handle, so the descriptor is closed once.
        let io = unsafe { S::from_raw_fd(self.io.as_raw_fd()) };
        Socket {
            io: ManuallyDrop::new(io),
            reg,
        }
    }
}

impl<S: Source> Drop for Socket<S> {
    fn drop(&mut self) {
        if self.reg.drop_handle() {
            self.reg.release(&mut *self.io);
            // SAFETY: the last handle: no other handle uses the descriptor, and `self.io` is
            // not used after this.
            unsafe { ManuallyDrop::drop(&mut self.io) };
        }
    }
}

/// The per-call timeouts and Go-style deadlines every connected socket type has (the type wraps a
/// `Socket<_>` as field 0), inside its `impl` block.
macro_rules! timeouts_and_deadlines {
    () => {
        /// Bounds each read or receive (`None`: no bound); one that runs out fails with
        /// `WouldBlock`, as std's does on Unix. Zero is an error, as in std.
        pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
            self.0.set_timeout(Dir::Read, t)
        }

        /// Bounds each write or send (`None`: no bound); one that runs out fails with
        /// `WouldBlock`.
        pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
            self.0.set_timeout(Dir::Write, t)
        }

        pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
            self.0.timeout(Dir::Read)
        }

        pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
            self.0.timeout(Dir::Write)
        }

        /// Go's `SetDeadline`: reads and writes fail with `TimedOut` after `at` (`None`
        /// clears it); moving it wakes a goroutine blocked on the socket.
        pub fn set_deadline(&self, at: Option<Instant>) -> io::Result<()> {
            self.0.set_deadline(None, at)
        }

        /// Go's `SetReadDeadline`.
        pub fn set_read_deadline(&self, at: Option<Instant>) -> io::Result<()> {
            self.0.set_deadline(Some(Dir::Read), at)
        }

        /// Go's `SetWriteDeadline`.
        pub fn set_write_deadline(&self, at: Option<Instant>) -> io::Result<()> {
            self.0.set_deadline(Some(Dir::Write), at)
        }
    };
}

/// `Read` and `Write` for a stream type `$t` and for `&$t` (so goroutines sharing a stream can
/// read and write it at once), through `Socket::io_bytes`.
macro_rules! stream_read_write {
    ($t:ty) => {
        impl Read for &$t {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.io_bytes(Dir::Read, buf.len(), |mut s| s.read(buf))
            }

            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                let len = bufs.iter().map(|b| b.len()).sum();
                self.0
                    .io_bytes(Dir::Read, len, |mut s| s.read_vectored(bufs))
            }
        }

        impl Write for &$t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.io_bytes(Dir::Write, buf.len(), |mut s| s.write(buf))
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                let len = bufs.iter().map(|b| b.len()).sum();
                self.0
                    .io_bytes(Dir::Write, len, |mut s| s.write_vectored(bufs))
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        impl Read for $t {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }

            fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
                (&*self).read_vectored(bufs)
            }
        }

        impl Write for $t {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                (&*self).write_vectored(bufs)
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
    };
}

/// What every socket type has, for a type `$t` wrapping a `Socket<_>` as field 0: another
/// impl block with `try_clone`, `take_error`, `set_nonblocking` and Go's `close`, and
/// `AsRawFd`.
macro_rules! socket_handle {
    ($t:ty) => {
        impl $t {
            /// Another handle to the same socket: shared, not `dup`ed (see `net/mod.rs`); the
            /// socket closes when the last handle drops.
            pub fn try_clone(&self) -> io::Result<$t> {
                Ok(self.clone())
            }

            /// The socket's pending error (`SO_ERROR`), cleared by reading it.
            pub fn take_error(&self) -> io::Result<Option<io::Error>> {
                self.0.get().take_error()
            }

            /// With `true`, calls (`accept` on a listener) fail with `WouldBlock` instead of
            /// waiting. For every handle of the socket.
            pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
                self.0.set_nonblocking(nonblocking)
            }

            /// Go's `Close`: goroutines blocked on the socket (in `accept`, a read or a write)
            /// wake with "use of closed network connection", every later call fails the same
            /// way, and a connected peer sees the connection shut down. The descriptor (and a
            /// listener's port) is released when the last handle drops.
            pub fn close(&self) -> io::Result<()> {
                self.0.close()
            }
        }

        impl AsRawFd for $t {
            fn as_raw_fd(&self) -> RawFd {
                self.0.as_raw_fd()
            }
        }
    };
}

pub(crate) use {socket_handle, stream_read_write, timeouts_and_deadlines};
