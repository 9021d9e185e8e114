//! A TCP echo server: one goroutine per connection, written as blocking code.
//!
//! `cargo run --release --example echo -- --addr 127.0.0.1:9000` (default `127.0.0.1:8080`;
//! port 0 picks a free port), then e.g. `nc 127.0.0.1 9000`: every byte sent comes back.
//!
//! Prints `listening on <addr>` once it accepts connections. Each connection's goroutine
//! reads into its own buffer (`--buf <bytes>`, default 4096) and writes back what it read,
//! until end of file or an error; `read` and `write_all` park the goroutine on the netpoller,
//! so tens of thousands of idle connections cost a parked goroutine and a buffer each, not a
//! thread. A buffer of up to `STACK_BUF` bytes lives on the goroutine's stack: goro stacks
//! never move, so a local buffer is as good as a heap one, and a small one shares the page
//! every goroutine has anyway (Go's escape analysis puts a buffer handed to `Read` on the heap,
//! next to a 2 KiB stack). Larger buffers are on the heap.
//!
//! The accept loop (`common/accept.rs`) survives running out of file descriptors: it backs off
//! (5 ms doubling to 1 s), logs at most once a second, and resumes when connections close.
//! This is the server `benches/compare` measures for `idle_conns`, next to its Go, may and
//! tokio peers (the same `--buf` for all of them, TCP_NODELAY as they set).

#[path = "common/accept.rs"]
mod accept;

use goro::net::{TcpListener, TcpStream};
use std::io::{self, Read, Write};

const USAGE: &str =
    "usage: echo [--addr <ip:port>] [--buf <bytes>]   (defaults 127.0.0.1:8080, 4096)";

/// The default read buffer.
pub const DEFAULT_BUF: usize = 4096;
/// Buffers up to this size are kept on the goroutine's stack.
const STACK_BUF: usize = 2048;

/// Serves echo on `listener` until it is closed (`TcpListener::close`), one goroutine per
/// connection reading into `buf` bytes (those keep running after `serve` returns, until their
/// client leaves).
pub fn serve(listener: TcpListener, buf: usize) -> io::Result<()> {
    accept::accept_loop("echo", &listener, |conn, _peer| {
        goro::spawn(move || {
            if buf <= STACK_BUF {
                echo(conn, &mut [0u8; STACK_BUF][..buf]);
            } else {
                echo(conn, &mut vec![0u8; buf]);
            }
        });
    })
}

/// Writes back everything read from `conn` through `buf`, until end of file or an error.
fn echo(mut conn: TcpStream, buf: &mut [u8]) {
    // Like Go, answer small writes at once (the peers set this too).
    let _ = conn.set_nodelay(true);
    loop {
        match conn.read(buf) {
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
    let mut opts = accept::options(USAGE, &["addr", "buf"]).into_iter();
    let addr = accept::addr_option(USAGE, opts.next().flatten(), "127.0.0.1:8080");
    let buf = match opts.next().flatten().map(|v| v.parse::<usize>()) {
        None => DEFAULT_BUF,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("--buf needs a positive number of bytes\n{USAGE}");
            std::process::exit(2);
        }
    };
    goro::run(move || {
        let listener = accept::listen("echo", addr);
        if serve(listener, buf).is_err() {
            std::process::exit(1);
        }
    });
}
