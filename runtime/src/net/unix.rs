//! `UnixListener` and `UnixStream` (std's `std::os::unix::net` API; see `net/mod.rs` for what
//! differs).

use super::socket::{socket_handle, stream_read_write, timeouts_and_deadlines, Socket};
use crate::netpoll::Dir;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A Unix-domain server socket; `accept` parks the goroutine.
#[derive(Clone)]
pub struct UnixListener(Socket<mio::net::UnixListener>);

/// A Unix-domain stream; reads and writes park the goroutine.
#[derive(Clone)]
pub struct UnixStream(Socket<mio::net::UnixStream>);

impl UnixListener {
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        Ok(UnixListener(Socket::new(mio::net::UnixListener::bind(
            path,
        )?)?))
    }

    /// Adopts a std listener (made non-blocking).
    pub fn from_std(l: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        l.set_nonblocking(true)?;
        Ok(UnixListener(Socket::new(
            mio::net::UnixListener::from_std(l),
        )?))
    }

    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (s, peer) = self.0.io(Dir::Read, |l| l.accept())?;
        Ok((UnixStream(Socket::new(s)?), peer))
    }

    /// An endless iterator of `accept` results.
    pub fn incoming(&self) -> UnixIncoming<'_> {
        UnixIncoming { listener: self }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get().local_addr()
    }

    /// Go's `SetDeadline` for `accept`.
    pub fn set_deadline(&self, at: Option<Instant>) -> io::Result<()> {
        self.0.set_deadline(Some(Dir::Read), at)
    }
}

socket_handle!(UnixListener);

/// `UnixListener::incoming`.
pub struct UnixIncoming<'a> {
    listener: &'a UnixListener,
}

impl Iterator for UnixIncoming<'_> {
    type Item = io::Result<UnixStream>;
    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

impl UnixStream {
    /// Connects to the socket at `path`. A listener whose backlog is full makes a
    /// non-blocking connect fail with `WouldBlock`; like std's blocking connect, this waits
    /// (retrying every millisecond) until there is room.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        loop {
            match mio::net::UnixStream::connect(path.as_ref()) {
                Ok(s) => return Ok(UnixStream(Socket::new(s)?)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    crate::time::sleep(Duration::from_millis(1))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((UnixStream(Socket::new(a)?), UnixStream(Socket::new(b)?)))
    }

    /// Adopts a std stream (made non-blocking).
    pub fn from_std(s: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        s.set_nonblocking(true)?;
        Ok(UnixStream(Socket::new(mio::net::UnixStream::from_std(s))?))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get().local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get().peer_addr()
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.check_open()?;
        self.0.get().shutdown(how)
    }

    timeouts_and_deadlines!();
}

socket_handle!(UnixStream);

stream_read_write!(UnixStream);

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}
