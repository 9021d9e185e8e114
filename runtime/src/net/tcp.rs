//! `TcpListener` and `TcpStream` (std's API; see `net/mod.rs` for what differs).

use super::each_addr;
use super::socket::{socket_handle, stream_read_write, timeouts_and_deadlines, Socket};
use crate::netpoll::Dir;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// A TCP server socket (`std::net::TcpListener`); `accept` parks the goroutine.
///
/// ```
/// # extern crate goro_runtime as goro;
/// use std::io::{Read, Write};
/// goro::run(|| {
///     let l = goro::net::TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = l.local_addr().unwrap();
///     let server = goro::spawn(move || {
///         let (mut s, _) = l.accept().unwrap();
///         let mut buf = [0; 5];
///         s.read_exact(&mut buf).unwrap();
///         s.write_all(&buf).unwrap();
///     });
///     let mut c = goro::net::TcpStream::connect(addr).unwrap();
///     c.write_all(b"hello").unwrap();
///     let mut back = [0; 5];
///     c.read_exact(&mut back).unwrap();
///     assert_eq!(&back, b"hello");
///     server.join().unwrap();
/// });
/// ```
#[derive(Clone)]
pub struct TcpListener(Socket<mio::net::TcpListener>);

/// A TCP connection (`std::net::TcpStream`); reads and writes park the goroutine.
#[derive(Clone)]
pub struct TcpStream(Socket<mio::net::TcpStream>);

impl TcpListener {
    /// Binds to the first of `addr`'s addresses that works (as std does), with
    /// `SO_REUSEADDR` set and, like Go, the system's largest listen backlog
    /// (`net.core.somaxconn`) rather than std's 128: a burst of connections from a thousand
    /// goroutines must queue, not overflow into dropped handshakes.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        each_addr(addr, |a| {
            let l = mio::net::TcpListener::bind(a)?;
            // SAFETY: `l` owns an open, listening socket; calling `listen` again only
            // changes its backlog (Linux allows this).
            if unsafe { libc::listen(l.as_raw_fd(), max_backlog()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(TcpListener(Socket::new(l)?))
        })
    }

    /// Adopts a std listener (made non-blocking).
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(true)?;
        Ok(TcpListener(Socket::new(mio::net::TcpListener::from_std(
            l,
        ))?))
    }

    /// Waits for a connection. Errors such as `EMFILE` (out of file descriptors) are returned
    /// as they are; a server loop should back off briefly and accept again (the examples do).
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, peer) = self.0.io(Dir::Read, |l| l.accept())?;
        Ok((TcpStream(Socket::new(s)?), peer))
    }

    /// An endless iterator of `accept` results.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get().local_addr()
    }

    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.0.get().set_ttl(ttl)
    }

    pub fn ttl(&self) -> io::Result<u32> {
        self.0.get().ttl()
    }

    /// Go's `SetDeadline` for `accept`: after `at`, it fails with `TimedOut`.
    pub fn set_deadline(&self, at: Option<Instant>) -> io::Result<()> {
        self.0.set_deadline(Some(Dir::Read), at)
    }
}

socket_handle!(TcpListener);

/// Go's `maxListenerBacklog`: `net.core.somaxconn`, read once (the kernel caps larger values
/// to it anyway), or 4096 when it cannot be read.
fn max_backlog() -> libc::c_int {
    static BACKLOG: std::sync::OnceLock<libc::c_int> = std::sync::OnceLock::new();
    *BACKLOG.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<libc::c_int>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(4096)
            .min(65535)
    })
}

/// `TcpListener::incoming`.
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

impl TcpStream {
    /// Connects to the first of `addr`'s addresses that accepts (as std does).
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        each_addr(addr, |a| TcpStream::connect_until(a, None))
    }

    /// Connects to `addr`, failing with `TimedOut` after `timeout` (zero is an error, as in std).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        let deadline = Instant::now().checked_add(timeout);
        TcpStream::connect_until(*addr, deadline).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
            } else {
                e
            }
        })
    }

    /// A non-blocking connect, then wait until the socket is writable: connected, or failed
    /// (`SO_ERROR`).
    fn connect_until(addr: SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
        let s = Socket::new(mio::net::TcpStream::connect(addr)?)?;
        loop {
            if let Some(e) = s.get().take_error()? {
                return Err(e);
            }
            match s.get().peer_addr() {
                Ok(_) => return Ok(TcpStream(s)),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                Err(e) => return Err(e),
            }
            s.wait(Dir::Write, deadline)?;
        }
    }

    /// Adopts a connected std stream (made non-blocking).
    pub fn from_std(s: std::net::TcpStream) -> io::Result<TcpStream> {
        s.set_nonblocking(true)?;
        Ok(TcpStream(Socket::new(mio::net::TcpStream::from_std(s))?))
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get().peer_addr()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get().local_addr()
    }

    /// Shuts down reading, writing or both, for every handle of this socket. A goroutine
    /// blocked reading sees end of file.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.check_open()?;
        self.0.get().shutdown(how)
    }

    timeouts_and_deadlines!();

    /// Reads without removing the data from the queue; waits like `read`.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.io(Dir::Read, |s| s.peek(buf))
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.get().set_nodelay(nodelay)
    }

    pub fn nodelay(&self) -> io::Result<bool> {
        self.0.get().nodelay()
    }

    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.0.get().set_ttl(ttl)
    }

    pub fn ttl(&self) -> io::Result<u32> {
        self.0.get().ttl()
    }
}

socket_handle!(TcpStream);

stream_read_write!(TcpStream);

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TcpStream");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        if let Ok(a) = self.peer_addr() {
            d.field("peer", &a);
        }
        d.field("fd", &self.as_raw_fd())
            .field("closed", &self.0.is_closed())
            .finish()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TcpListener");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        d.field("fd", &self.as_raw_fd())
            .field("closed", &self.0.is_closed())
            .finish()
    }
}
