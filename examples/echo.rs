//! A TCP echo server: one goroutine per connection, written as blocking code.
//!
//! `cargo run --release --example echo -- --addr 127.0.0.1:9000` (default `127.0.0.1:8080`;
//! port 0 picks a free port), then e.g. `nc 127.0.0.1 9000`: every byte sent comes back.
//!
//! Prints `listening on <addr>` once it accepts connections. Each connection's goroutine
//! reads into its own 4 KiB buffer and writes back what it read, until end of file or an
//! error; `read` and `write_all` park the goroutine on the netpoller, so tens of thousands
//! of idle connections cost a parked goroutine (a small stack) and a buffer each, not a
//! thread. The accept loop (`common/accept.rs`) survives running out of file descriptors:
//! it backs off (5 ms doubling to 1 s), logs at most once a second, and resumes when
//! connections close. This is the server `benches/compare` measures for `idle_conns`, next
//! to its Go, may and tokio peers (same 4 KiB buffer, TCP_NODELAY as they set).

#[path = "common/accept.rs"]
mod accept;

use goro::net::{TcpListener, TcpStream};
use std::io::{self, Read, Write};

const USAGE: &str = "usage: echo [--addr <ip:port>]   (default 127.0.0.1:8080)";

/// Serves echo on `listener` until it is closed (`TcpListener::close`), one goroutine per
/// connection (those keep running after `serve` returns, until their client leaves).
pub fn serve(listener: TcpListener) -> io::Result<()> {
    accept::accept_loop("echo", &listener, |conn, _peer| {
        goro::spawn(move || echo(conn));
    })
}

/// Writes back everything read from `conn`, until end of file or an error.
fn echo(mut conn: TcpStream) {
    // Like Go, answer small writes at once (the peers set this too).
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn main() {
    let mut opts = accept::options(USAGE, &["addr"]).into_iter();
    let addr = accept::addr_option(USAGE, opts.next().flatten(), "127.0.0.1:8080");
    goro::run(move || {
        let listener = accept::listen("echo", addr);
        if serve(listener).is_err() {
            std::process::exit(1);
        }
    });
}
