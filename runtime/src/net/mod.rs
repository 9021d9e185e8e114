//! `goro::net`: TCP, UDP and Unix sockets with `std::net`'s API, whose blocking calls park
//! the calling goroutine on the netpoller instead of blocking its thread.
//!
//! Porting std code is changing the import: the types, method names, and error kinds are
//! std's. What differs, and why:
//! - **Timeouts.** `set_read_timeout`/`set_write_timeout` bound each call, as in std; a call
//!   that runs out fails with [`io::ErrorKind::WouldBlock`], which is what std gives on Unix.
//!   Go-style deadlines come on top: `set_deadline`/`set_read_deadline`/`set_write_deadline`
//!   take an absolute [`Instant`](std::time::Instant) after which calls fail with
//!   [`io::ErrorKind::TimedOut`] ("i/o timeout") until the deadline is moved; moving it wakes a
//!   goroutine blocked in a call so it uses the new one. `connect_timeout` fails with
//!   `TimedOut`, as std's does.
//! - **`close(&self)`** (Go's `Close`): every later call on the socket, through any handle,
//!   fails with "use of closed network connection" (kind `NotConnected`), and goroutines
//!   blocked on it wake with that error now. Without it a socket closes when its last handle
//!   drops, as in std.
//! - **`try_clone`** shares the socket (no `dup`): clones are handles to one registration.
//!   `shutdown` and `close` act on all of them, as they would on std's clones of one socket.
//! - **Name resolution** (`ToSocketAddrs`, which may block in `getaddrinfo`) runs inside
//!   [`crate::blocking`], so the goroutine's processor keeps running others meanwhile.
//! - **Plain threads** can use these sockets too: they block in `poll(2)` on the one
//!   descriptor (nothing parks a thread on the netpoller).
//! - **`SIGPIPE`** is ignored from the first socket on (if it had its default action), so a
//!   write to a closed peer fails with `BrokenPipe` in that goroutine and never kills the
//!   process.
//!
//! Design of the waiting itself: `netpoll/` (the poller and its place in the scheduler) and
//! `netpoll/desc.rs` (per-socket wait protocol, deadlines, close).

mod socket;
mod tcp;
mod udp;
mod unix;

pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixIncoming, UnixListener, UnixStream};

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `addr` off the goroutine's processor (`getaddrinfo` may block).
fn resolve<A: ToSocketAddrs>(addr: A) -> io::Result<Vec<SocketAddr>> {
    crate::blocking(|| addr.to_socket_addrs().map(|it| it.collect()))
}

/// Runs `f` on each address in turn until one succeeds (std's rule for `connect`/`bind`):
/// the last error, or std's error when there is no address at all.
fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in resolve(addr)? {
        match f(a) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}
