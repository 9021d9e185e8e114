//! A minimal HTTP/1.1 server answering `Hello, World!` to every request: one goroutine per
//! connection running plain blocking code, with `httparse` for the parsing.
//!
//! `cargo run --release --example http_hello -- --addr 127.0.0.1:9000` (default
//! `127.0.0.1:8080`; port 0 picks a free port), then `curl -i http://127.0.0.1:9000/` or
//! `wrk -t1 -c100 -d10s http://127.0.0.1:9000/`.
//!
//! Prints `listening on <addr>` once it accepts connections. Per connection:
//! - **Keep-alive** as HTTP/1.1 says: the connection stays open unless the request says
//!   `Connection: close`, or is HTTP/1.0 without `Connection: keep-alive` (answered with
//!   `Connection: keep-alive`, as 1.0 clients expect); a closing response says
//!   `Connection: close`.
//! - **Pipelining**: each read goes into one reused buffer; every complete request in it is
//!   answered, in order, into one output buffer, sent with one write; an incomplete request
//!   stays for the next read. Nothing is allocated per request (the buffers only grow: the
//!   read buffer from 4 to 16 KiB for a long request head).
//! - **Bad requests** (what `httparse` rejects, more than 64 headers, a request head over
//!   8 KiB, a bad `Content-Length`, or any `Transfer-Encoding`: request bodies are only
//!   supported with `Content-Length`, and are skipped) get `400 Bad Request` and the
//!   connection closes.
//! - **Closing** shuts down the sending side, then reads and discards what the client still
//!   sends, for up to 500 ms, before closing (Go's `closeWriteAndWait`): closing a socket with
//!   unread data makes the kernel send a reset, which could destroy the response before the
//!   client reads it.
//! - TCP_NODELAY is set, as Go does by default and the peers do.
//!
//! The response is byte for byte the size of the ones from `benches/compare`'s peers (Go
//! net/http's, and tokio's `http_raw`, whose header order it follows):
//! `Content-Type: text/plain`, `Content-Length: 13` and a `Date` header (each connection
//! formats it at most once a second), so the comparison is fair. The accept loop
//! (`common/accept.rs`) survives running out of file descriptors (backs off, logs at most
//! once a second).

#[path = "common/accept.rs"]
mod accept;

use goro::net::{TcpListener, TcpStream};
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: http_hello [--addr <ip:port>]   (default 127.0.0.1:8080)";

const HELLO: &[u8] = b"Hello, World!";
const OK_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n";
const _: () = assert!(HELLO.len() == 13);
const BAD: &[u8] = b"Bad Request";
const BAD_HEAD: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n";
const _: () = assert!(BAD.len() == 11);

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers a request may have.
const MAX_HEADERS: usize = 64;
/// The read buffer's first and largest size (a partial head never exceeds `MAX_HEAD`).
const BUF_MIN: usize = 4 * 1024;
const BUF_MAX: usize = 2 * MAX_HEAD;
/// Closing: how long, and how much, to read and discard after shutting down our side.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;

/// Serves HTTP on `listener` until it is closed (`TcpListener::close`), one goroutine per
/// connection (those keep running after `serve` returns, until their client leaves).
pub fn serve(listener: TcpListener) -> io::Result<()> {
    accept::accept_loop("http_hello", &listener, |conn, _peer| {
        goro::spawn(move || connection(conn));
    })
}

/// What the front of the buffer holds.
enum Parsed {
    /// A request head of `len` bytes, followed by a body of `body` bytes.
    Request { len: usize, body: u64, conn: Conn },
    /// Not all of the next request head is here yet.
    Partial,
    /// Malformed or unsupported: answer 400 and close.
    Bad,
}

/// What the response says about the connection.
#[derive(Clone, Copy, PartialEq)]
enum Conn {
    /// HTTP/1.1 keep-alive: nothing to say.
    KeepAlive,
    /// HTTP/1.0 with `Connection: keep-alive`: say `Connection: keep-alive`.
    KeepAlive10,
    /// Say `Connection: close`, and close.
    Close,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) | Err(_) => return Parsed::Bad,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
    };
    let http10 = req.version == Some(0);
    let (mut close, mut keep_alive) = (false, false);
    let mut body: Option<u64> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match (content_length(h.value), body) {
                (Some(n), None) => body = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Parsed::Bad,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let conn = if close || (http10 && !keep_alive) {
        Conn::Close
    } else if http10 {
        Conn::KeepAlive10
    } else {
        Conn::KeepAlive
    };
    Parsed::Request {
        len,
        body: body.unwrap_or(0),
        conn,
    }
}

/// A `Content-Length` value: 1 to 18 ASCII digits.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The `Date` header's value, formatted again only when the second changes.
struct Date {
    secs: u64,
    text: [u8; 29],
}

impl Date {
    /// Brings the text up to date (once per read: a `clock_gettime` through the vDSO).
    fn refresh(&mut self) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.secs = secs;
            self.text = http_date(secs);
        }
    }
}

/// `secs` since the Unix epoch as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let sod = secs % 86_400;
    // Howard Hinnant's civil_from_days, for days >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + u64::from(month <= 2)).min(9999);
    let mut t = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    t[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |t: &mut [u8; 29], at: usize, v: u64| {
        t[at] = b'0' + (v / 10) as u8;
        t[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut t, 5, day);
    t[8..11].copy_from_slice(MONTHS[month as usize - 1]);
    two(&mut t, 12, year / 100);
    two(&mut t, 14, year % 100);
    two(&mut t, 17, sod / 3600);
    two(&mut t, 20, sod / 60 % 60);
    two(&mut t, 23, sod % 60);
    t
}

fn push_response(out: &mut Vec<u8>, head: &[u8], conn: Conn, date: &[u8], body: &[u8]) {
    out.extend_from_slice(head);
    match conn {
        Conn::KeepAlive => {}
        Conn::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Conn::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Serves one connection until the client leaves, an error, or a response that closes.
fn connection(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = vec![0u8; BUF_MIN];
    let mut filled = 0; // buf[..filled] holds unparsed input
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut skip: u64 = 0; // body bytes still to discard
    let mut date = Date {
        secs: u64::MAX,
        text: [0; 29],
    };
    loop {
        if filled == buf.len() {
            // Only an incomplete head (at most MAX_HEAD bytes) is ever kept.
            buf.resize((buf.len() * 2).min(BUF_MAX), 0);
        }
        match (&conn).read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        date.refresh();
        // Answer every complete request in the buffer, in order.
        let mut start = 0;
        let mut close = false;
        while !close {
            if skip > 0 {
                let k = skip.min((filled - start) as u64);
                start += k as usize;
                skip -= k;
                if skip > 0 {
                    break;
                }
            }
            if start == filled {
                break;
            }
            match parse(&buf[start..filled]) {
                Parsed::Request { len, body, conn } => {
                    push_response(&mut out, OK_HEAD, conn, &date.text, HELLO);
                    start += len;
                    skip = body;
                    close = conn == Conn::Close;
                }
                Parsed::Partial if filled - start <= MAX_HEAD => break,
                Parsed::Partial | Parsed::Bad => {
                    push_response(&mut out, BAD_HEAD, Conn::Close, &date.text, BAD);
                    close = true;
                }
            }
        }
        // Keep the incomplete tail, at the front.
        buf.copy_within(start..filled, 0);
        filled -= start;
        if !out.is_empty() {
            if (&conn).write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        if close {
            linger_close(&conn, &mut buf);
            return;
        }
    }
}

/// Shuts down our side, then discards what the client still sends (see the top comment)
/// until it closes too, `LINGER` passes or `LINGER_BYTES` were read. The socket closes when
/// the caller drops it.
fn linger_close(conn: &TcpStream, scratch: &mut [u8]) {
    if conn.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let _ = conn.set_read_deadline(Some(Instant::now() + LINGER));
    let (mut conn, mut read) = (conn, 0);
    while read < LINGER_BYTES {
        match conn.read(scratch) {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

fn main() {
    let mut opts = accept::options(USAGE, &["addr"]).into_iter();
    let addr = accept::addr_option(USAGE, opts.next().flatten(), "127.0.0.1:8080");
    goro::run(move || {
        let listener = accept::listen("http_hello", addr);
        if serve(listener).is_err() {
            std::process::exit(1);
        }
    });
}
