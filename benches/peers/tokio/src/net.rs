//! Network servers of the tokio peer for `benches/compare`'s `http` and `idle_conns`
//! workloads, one task per connection on the multi-thread runtime. Each listens on `--addr`,
//! prints `listening on <addr>` once the listener is bound (later connections queue in its
//! backlog) and serves until killed. Accepted sockets get TCP_NODELAY, as Go sets by default.
//!
//! - `http_hello`: hyper 1.x, HTTP/1.1 only (`hyper::server::conn::http1`, keep-alive on, its
//!   defaults otherwise): 200 `Hello, World!` for every request. hyper reads a pipelined
//!   connection's requests one after another and answers them in order.
//! - `http_raw`: hand-rolled, no HTTP library but `httparse`: read into a buffer, answer every
//!   complete request in it, in order, with one write, keep the incomplete tail for the next
//!   read (pipelining-aware). Request bodies (Content-Length) are skipped; chunked request
//!   bodies are refused (400, close). `Connection: close` and HTTP/1.0 without keep-alive close
//!   after the response.
//! - `echo`: read into a heap buffer of `--buf` bytes (default 4096), write back what was read, until EOF or an error.

use std::cell::RefCell;
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HELLO: &[u8] = b"Hello, World!";

async fn listen(addr: &str) -> TcpListener {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| {
        eprintln!("tokio-peer: listen {addr}: {e}");
        std::process::exit(1);
    });
    println!("listening on {}", listener.local_addr().unwrap());
    listener
}

/// Accept forever, handing every connection to a task running `serve`.
async fn accept_loop<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                conn.set_nodelay(true).ok();
                tokio::spawn(serve(conn));
            }
            Err(e) => {
                // e.g. out of fds: don't spin
                eprintln!("tokio-peer: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut rsp = Response::new(Full::new(Bytes::from_static(HELLO)));
    rsp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(rsp)
}

pub async fn http_hello(addr: &str) {
    accept_loop(listen(addr).await, |conn| async move {
        let served = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(conn), service_fn(hello))
            .await;
        drop(served); // a client going away mid-request is not news
    })
    .await
}

thread_local! {
    /// (unix second, its IMF-fixdate), refreshed when the second changes.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(d.1.as_bytes());
    });
}

fn push_response(out: &mut Vec<u8>, status: &str, body: &[u8], close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\nDate: ");
    push_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// What parsing the front of the buffer gave.
enum Parsed {
    /// A whole request (head and body) of this many bytes; close after answering it?
    Request { len: usize, close: bool },
    /// Not all of the next request is here yet.
    Partial,
    /// Malformed or unsupported: answer 400 and close.
    Bad,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad,
    };
    let mut close = req.version == Some(0);
    let mut body = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok()) {
                Some(n) => body = n,
                None => return Parsed::Bad,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value;
            if v.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if v.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    match head.checked_add(body) {
        Some(len) if len <= buf.len() => Parsed::Request { len, close },
        Some(_) => Parsed::Partial,
        None => Parsed::Bad,
    }
}

/// Most a request head may take before the connection is refused.
const MAX_HEAD: usize = 64 * 1024;

async fn serve_raw(mut conn: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match conn.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Answer every complete request in the buffer, in order, with one write.
        let mut start = 0;
        let mut close = false;
        while !close && start < buf.len() {
            match parse(&buf[start..]) {
                Parsed::Request { len, close: c } => {
                    push_response(&mut out, "200 OK", HELLO, c);
                    start += len;
                    close = c;
                }
                Parsed::Partial if buf.len() - start > MAX_HEAD => {
                    push_response(&mut out, "400 Bad Request", b"", true);
                    close = true;
                }
                Parsed::Partial => break,
                Parsed::Bad => {
                    push_response(&mut out, "400 Bad Request", b"", true);
                    close = true;
                }
            }
        }
        buf.drain(..start); // keep the incomplete tail
        if !out.is_empty() {
            if conn.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if close {
            return;
        }
    }
}

pub async fn http_raw(addr: &str) {
    accept_loop(listen(addr).await, serve_raw).await
}

async fn serve_echo(mut conn: TcpStream, buf: usize) {
    let mut buf = vec![0u8; buf];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

pub async fn echo(addr: &str, buf: usize) {
    accept_loop(listen(addr).await, move |c| serve_echo(c, buf)).await
}
