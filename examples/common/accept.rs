//! Shared by the server examples (`#[path = "common/accept.rs"] mod accept;`): command-line
//! options, binding and announcing the listener, and an accept loop that survives accept
//! errors.
//!
//! The accept loop follows Go's `http.Server.Serve`: when `accept` fails for lack of
//! resources (`EMFILE`/`ENFILE`: out of file descriptors; `ENOBUFS`/`ENOMEM`) it sleeps 5 ms,
//! doubling on each further failure up to 1 s, and tries again; the first success resets
//! the delay. Meanwhile new connections wait in the listen backlog, and the server keeps
//! serving the ones it has (which, as they finish, free the descriptors it needs). Errors
//! that concern one connection only (`ECONNABORTED`: the client gave up while queued,
//! `EPROTO`, `EPERM` from a firewall rule, ...) are retried at once. Every error goes to
//! stderr, at most one line a second (with the count of those not printed): a server out of
//! descriptors must not also flood its log. The loop ends when the listener is closed
//! (`TcpListener::close`), or on an error that says the listener itself is unusable.

use goro::net::{TcpListener, TcpStream};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// First and largest pause after a resource error (Go's `http.Server`: 5 ms to 1 s).
const MIN_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1);
/// At most one log line per this interval.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Parses `--<name> <value>` (or `--<name>=<value>`) options, each of `names` at most once,
/// into their values in `names`' order. `-h`/`--help` prints `usage` and exits 0; anything
/// else is a usage error: `usage` on stderr, exit status 2.
pub fn options(usage: &str, names: &[&str]) -> Vec<Option<String>> {
    let fail = |msg: String| -> ! {
        eprintln!("{msg}\n{usage}");
        std::process::exit(2);
    };
    let mut values = vec![None; names.len()];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{usage}");
            std::process::exit(0);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let Some(i) = names
            .iter()
            .position(|n| name.strip_prefix("--") == Some(n))
        else {
            fail(format!("unexpected argument {arg:?}"));
        };
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => fail(format!("{name} needs a value")),
        };
        if values[i].replace(value).is_some() {
            fail(format!("{name} given twice"));
        }
    }
    values
}

/// `--addr`'s value (`default` when absent) as a socket address, or a usage error (exit 2).
pub fn addr_option(usage: &str, value: Option<String>, default: &str) -> SocketAddr {
    let v = value.unwrap_or_else(|| default.to_string());
    v.parse().unwrap_or_else(|e| {
        eprintln!("--addr {v:?}: {e} (expected <ip>:<port>, e.g. 127.0.0.1:8080)\n{usage}");
        std::process::exit(2);
    })
}

/// Binds `addr` and prints `listening on <addr>` (the bound address: with port 0, the port
/// the system chose) on stdout, flushed. Exits the process (status 1) if it cannot bind.
pub fn listen(prog: &str, addr: SocketAddr) -> TcpListener {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("{prog}: listen on {addr}: {e}");
        std::process::exit(1);
    });
    let bound = listener.local_addr().unwrap_or(addr);
    let mut out = io::stdout().lock();
    // Nothing to do if stdout is gone: the server still serves.
    let _ = writeln!(out, "listening on {bound}").and_then(|()| out.flush());
    listener
}

/// What to do about an `accept` error.
enum Verdict {
    /// The listener was closed: stop serving.
    Closed,
    /// The listener is unusable (not a listening socket, ...): stop, with this error.
    Fatal,
    /// Concerns one queued connection only: accept again now.
    Retry,
    /// Out of descriptors or memory, or unknown: pause, then accept again.
    Backoff,
}

fn verdict(e: &io::Error) -> Verdict {
    match e.raw_os_error() {
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT) => {
            Verdict::Fatal
        }
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR) => Verdict::Retry,
        Some(_) => Verdict::Backoff,
        // goro's "use of closed network connection" (after `TcpListener::close`).
        None if e.kind() == io::ErrorKind::NotConnected => Verdict::Closed,
        None => Verdict::Backoff,
    }
}

/// Accepts connections until the listener is closed, handing each to `handle` (which
/// should spawn a goroutine for it: the loop waits for it to return). Returns `Ok` once the
/// listener is closed, or the error that made it unusable.
pub fn accept_loop(
    prog: &str,
    listener: &TcpListener,
    mut handle: impl FnMut(TcpStream, SocketAddr),
) -> io::Result<()> {
    let mut delay: Option<Duration> = None;
    let mut last_log: Option<Instant> = None;
    let mut unlogged = 0u64;
    loop {
        let e = match listener.accept() {
            Ok((conn, peer)) => {
                delay = None;
                handle(conn, peer);
                continue;
            }
            Err(e) => e,
        };
        let v = verdict(&e);
        let pause = match v {
            Verdict::Closed => return Ok(()),
            Verdict::Fatal => {
                eprintln!("{prog}: accept: {e}; stopping");
                return Err(e);
            }
            Verdict::Retry => None,
            Verdict::Backoff => {
                let d = delay.map_or(MIN_DELAY, |d| (d * 2).min(MAX_DELAY));
                delay = Some(d);
                Some(d)
            }
        };
        let now = Instant::now();
        if !matches!(last_log, Some(t) if now.duration_since(t) < LOG_EVERY) {
            last_log = Some(now);
            let more = match unlogged {
                0 => String::new(),
                n => format!(" ({n} more accept errors since the last report)"),
            };
            match pause {
                Some(d) => eprintln!("{prog}: accept: {e}; retrying in {d:?}{more}"),
                None => eprintln!("{prog}: accept: {e}{more}"),
            }
            unlogged = 0;
        } else {
            unlogged += 1;
        }
        if let Some(d) = pause {
            goro::time::sleep(d);
        }
    }
}
