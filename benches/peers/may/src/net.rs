//! Network servers of the may peer for `benches/compare`'s `http` and `idle_conns` workloads.
//! Each listens on `--addr`, prints `listening on <addr>` once the listener is bound (later
//! connections queue in its backlog) and serves until killed.

use std::io::{self, Read, Write};

use may::go;
use may::net::TcpListener;
use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request, rsp: &mut Response) -> io::Result<()> {
        rsp.header("Content-Type: text/plain").body("Hello, World!");
        Ok(())
    }
}

/// `http_hello`: may_minihttp, a coroutine per connection; it parses every complete request in
/// its read buffer and answers them in order with one write (pipelining-safe), keep-alive.
pub fn http_hello(addr: &str) {
    let server = HttpServer(Hello).start(addr).unwrap_or_else(|e| {
        eprintln!("may-peer: listen {addr}: {e}");
        std::process::exit(1);
    });
    println!("listening on {addr}");
    server.join().ok();
}

/// `echo`: one coroutine per connection, reading into its own buffer of `buf` bytes (`--buf`,
/// default 4096; on the coroutine's stack up to 4 KiB, like goro's up to 2 KiB, else on the
/// heap) and writing back what it read, until EOF or an error.
pub fn echo(addr: &str, buf: usize) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("may-peer: listen {addr}: {e}");
        std::process::exit(1);
    });
    println!("listening on {}", listener.local_addr().unwrap());
    let acceptor = go!(move || {
        for conn in listener.incoming() {
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("may-peer: accept: {e}");
                    may::coroutine::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            go!(move || {
                let mut stack = [0u8; 4096];
                let mut heap = Vec::new();
                let buf: &mut [u8] = if buf <= stack.len() {
                    &mut stack[..buf]
                } else {
                    heap.resize(buf, 0);
                    &mut heap
                };
                loop {
                    match conn.read(buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    acceptor.join().ok();
}
