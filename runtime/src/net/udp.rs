//! `UdpSocket` (std's API; see `net/mod.rs` for what differs).

use super::socket::{socket_handle, timeouts_and_deadlines, Socket};
use super::{each_addr, resolve};
use crate::netpoll::Dir;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// A UDP socket (`std::net::UdpSocket`); receiving, and sending into a full buffer, park the
/// goroutine.
#[derive(Clone)]
pub struct UdpSocket(Socket<mio::net::UdpSocket>);

impl UdpSocket {
    /// Binds to the first of `addr`'s addresses that works.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        each_addr(addr, |a| {
            Ok(UdpSocket(Socket::new(mio::net::UdpSocket::bind(a)?)?))
        })
    }

    /// Adopts a std socket (made non-blocking).
    pub fn from_std(s: std::net::UdpSocket) -> io::Result<UdpSocket> {
        s.set_nonblocking(true)?;
        Ok(UdpSocket(Socket::new(mio::net::UdpSocket::from_std(s))?))
    }

    /// Sends to `addr`: its first address, as std does.
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let to = resolve(addr)?.into_iter().next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")
        })?;
        self.0.io(Dir::Write, |s| s.send_to(buf, to))
    }

    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.io(Dir::Read, |s| s.recv_from(buf))
    }

    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.io(Dir::Read, |s| s.peek_from(buf))
    }

    /// Sets the default peer (the first of `addr`'s addresses that works) for `send`/`recv`.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        self.0.check_open()?;
        each_addr(addr, |a| self.0.get().connect(a))
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.io(Dir::Write, |s| s.send(buf))
    }

    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.io(Dir::Read, |s| s.recv(buf))
    }

    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.io(Dir::Read, |s| s.peek(buf))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get().local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get().peer_addr()
    }

    timeouts_and_deadlines!();

    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.0.get().set_broadcast(on)
    }

    pub fn broadcast(&self) -> io::Result<bool> {
        self.0.get().broadcast()
    }

    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.0.get().set_ttl(ttl)
    }

    pub fn ttl(&self) -> io::Result<u32> {
        self.0.get().ttl()
    }

    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.0.get().set_multicast_loop_v4(on)
    }

    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.0.get().set_multicast_ttl_v4(ttl)
    }

    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        self.0.get().set_multicast_loop_v6(on)
    }

    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.0.get().join_multicast_v4(multiaddr, interface)
    }

    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.0.get().join_multicast_v6(multiaddr, interface)
    }

    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.0.get().leave_multicast_v4(multiaddr, interface)
    }

    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.0.get().leave_multicast_v6(multiaddr, interface)
    }
}

socket_handle!(UdpSocket);

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UdpSocket");
        if let Ok(a) = self.local_addr() {
            d.field("addr", &a);
        }
        d.field("fd", &self.as_raw_fd()).finish()
    }
}
