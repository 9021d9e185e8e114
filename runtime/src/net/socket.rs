//! `Socket`: a mio socket plus its netpoller registration, shared by the handles of one
//! socket (`try_clone`), with the calls every socket type has (timeouts, deadlines, close).

use crate::netpoll::{Dir, Registration};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct Socket<S: mio::event::Source + AsRawFd> {
    io: S,
    reg: Registration,
    /// `set_nonblocking(true)`: calls fail with `WouldBlock` instead of waiting.
    nonblocking: AtomicBool,
}

impl<S: mio::event::Source + AsRawFd> Socket<S> {
    pub(crate) fn new(mut io: S) -> io::Result<Socket<S>> {
        let fd = io.as_raw_fd();
        let reg = Registration::new(&mut io, fd)?;
        Ok(Socket {
            io,
            reg,
            nonblocking: AtomicBool::new(false),
        })
    }

    /// The mio socket, for calls that never block (addresses, options).
    pub(crate) fn get(&self) -> &S {
        &self.io
    }

    /// Runs the non-blocking call `f`, waiting for readiness in `dir` while it would block.
    pub(crate) fn io<R>(&self, dir: Dir, mut f: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        if self.nonblocking.load(Ordering::Relaxed) {
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
        if self.nonblocking.load(Ordering::Relaxed) {
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
        self.nonblocking.store(on, Ordering::Relaxed);
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

impl<S: mio::event::Source + AsRawFd> AsRawFd for Socket<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl<S: mio::event::Source + AsRawFd> Drop for Socket<S> {
    fn drop(&mut self) {
        self.reg.release(&mut self.io);
    }
}
