//! Client of `benches/compare`'s `idle_conns` workload (plain std, blocking).
//!
//! `conn-client --addr IP:PORT [--n N] [--hold-secs S]`: opens N (default 10,000) TCP
//! connections to an echo server, sends one small message on each and reads the echo back
//! (checked), so every connection's server-side goroutine/coroutine/task has run and is parked
//! in its next read. Then prints `connected N` on stdout and holds all of them open until it is
//! killed or S seconds (default 300) have passed; exiting closes them all.
//!
//! Connections are made in windows of `WINDOW` (connect all, then write all, then read all), so
//! at most `WINDOW` wait in the server's accept backlog (may's listener uses std's 128). Every
//! step is bounded by `IO_TIMEOUT`. Needs N + a few file descriptors (`ulimit -n`); failures go
//! to stderr with how many connections were up, exit code 1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::exit;
use std::time::{Duration, Instant};

const WINDOW: usize = 64;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MSG: &[u8] = b"ping 0123456789\n";

fn fail(up: usize, what: &str, e: std::io::Error) -> ! {
    eprintln!("conn-client: {what} failed with {up} connections up: {e}");
    if e.raw_os_error() == Some(24) {
        eprintln!("conn-client: out of file descriptors: raise `ulimit -n` above N");
    }
    exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let Some(addr) = arg("--addr").and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: conn-client --addr IP:PORT [--n N] [--hold-secs S]");
        exit(2);
    };
    let n: usize = arg("--n").map_or(10_000, |v| v.replace('_', "").parse().expect("--n N"));
    let hold = arg("--hold-secs").map_or(300, |v| v.parse().expect("--hold-secs S"));

    let t0 = Instant::now();
    let mut conns: Vec<TcpStream> = Vec::with_capacity(n);
    let mut echo = [0u8; MSG.len()];
    while conns.len() < n {
        let first = conns.len();
        let end = n.min(first + WINDOW);
        for _ in first..end {
            let c = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                .unwrap_or_else(|e| fail(conns.len(), "connect", e));
            c.set_read_timeout(Some(IO_TIMEOUT)).ok();
            c.set_write_timeout(Some(IO_TIMEOUT)).ok();
            conns.push(c);
        }
        for c in &mut conns[first..end] {
            c.write_all(MSG).unwrap_or_else(|e| fail(first, "write", e));
        }
        for c in &mut conns[first..end] {
            c.read_exact(&mut echo).unwrap_or_else(|e| fail(first, "reading the echo", e));
            if echo != MSG {
                eprintln!("conn-client: wrong echo {:?}", String::from_utf8_lossy(&echo));
                exit(1);
            }
        }
    }
    eprintln!("conn-client: {n} connections echoed in {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
    println!("connected {n}");
    std::io::stdout().flush().ok();

    std::thread::sleep(Duration::from_secs(hold));
    eprintln!("conn-client: held {n} connections for {hold}s; exiting");
    drop(conns);
}
