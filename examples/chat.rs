//! A line-based chat server: every line a client sends goes to all the other clients.
//! Goroutines and channels in the Go style: no locks, one owner per piece of state.
//!
//! `cargo run --release --example chat -- --addr 127.0.0.1:9000 [--queue 256]` (default
//! `127.0.0.1:8080`; port 0 picks a free port), then, in two or more terminals,
//! `nc 127.0.0.1 9000` and type.
//!
//! Prints `listening on <addr>` once it accepts connections. The goroutines:
//! - the **accept loop** (`common/accept.rs`: survives running out of file descriptors) gives
//!   each client a name (its address), registers it with the broadcaster and starts its two
//!   goroutines;
//! - a **reader** per client reads lines (a line longer than 4 KiB is cut into 4 KiB pieces;
//!   empty lines are ignored) and sends each to the broadcaster over one channel; at end of
//!   file or an error it reports that the client left;
//! - the **broadcaster** owns the set of clients: it turns each line into `<name>: <line>`
//!   and puts it in the outgoing queue of every *other* client, and removes clients that
//!   leave. It never waits for a client: it uses `try_send`;
//! - a **writer** per client drains that client's outgoing queue (a
//!   `goro::chan::bounded(queue)`, 256 lines by default) into its socket.
//!
//! Notices start with `* `: a new client gets `* welcome <name>, <n> other(s) here`, the
//! others `* <name> joined`, `* <name> left`, `* <name> was disconnected: too slow`.
//!
//! **Slow clients** (the drop policy): a client that does not read what it is sent fills its
//! socket buffers, then its writer blocks, then its queue fills. When a line finds a
//! client's queue full, that client is **disconnected** (its socket is closed, which wakes its
//! reader and writer; lines still queued for it are dropped) and the others get
//! `* <name> was disconnected: too slow`. So no client ever blocks the broadcaster or the
//! others, and a client that stays connected has received every line, in order, with no
//! gaps. (Dropping just the lines that do not fit would keep the slow client connected but
//! show it a conversation with silent holes.)
//!
//! `serve` returns when the listener is closed, after disconnecting every client.

#[path = "common/accept.rs"]
mod accept;

use goro::chan::{Receiver, Sender, TrySendError};
use goro::net::{TcpListener, TcpStream};
use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;

const USAGE: &str =
    "usage: chat [--addr <ip:port>] [--queue <lines>]   (defaults 127.0.0.1:8080, 256)";

/// Outgoing queue per client, in lines (`--queue`).
pub const DEFAULT_QUEUE: usize = 256;
/// Longer lines are cut into pieces of this many bytes.
pub const MAX_LINE: usize = 4096;
/// Most bytes a writer sends with one write (it gathers what is queued, up to this).
const WRITE_BATCH: usize = 64 * 1024;

/// A line on its way out, shared by every queue it is in.
type Msg = Arc<[u8]>;

/// What the broadcaster hears about.
enum Event {
    Join {
        id: u64,
        name: Arc<str>,
        conn: TcpStream,
        queue: Sender<Msg>,
    },
    Line {
        id: u64,
        text: Vec<u8>,
    },
    Leave {
        id: u64,
    },
    /// The listener was closed: disconnect everyone and stop.
    Shutdown,
}

/// Serves chat on `listener` with outgoing queues of `queue` lines (at least 1) until the
/// listener is closed (`TcpListener::close`); then disconnects every client and returns.
pub fn serve(listener: TcpListener, queue: usize) -> io::Result<()> {
    let (events, inbox) = goro::chan::bounded::<Event>(1024);
    let hub = goro::spawn(move || broadcaster(inbox));
    let mut next_id = 0;
    let served = accept::accept_loop("chat", &listener, |conn, peer| {
        next_id += 1;
        let id = next_id;
        let (tx, rx) = goro::chan::bounded(queue.max(1));
        let join = Event::Join {
            id,
            name: peer.to_string().into(),
            conn: conn.clone(),
            queue: tx,
        };
        // Registered before its reader starts: the broadcaster sees the join first. (Sends
        // fail only once the broadcaster is gone, which happens after this loop.)
        let _ = events.send(join);
        let out = conn.clone();
        goro::spawn(move || writer(out, rx));
        let events = events.clone();
        goro::spawn(move || reader(id, conn, events));
    });
    let _ = events.send(Event::Shutdown);
    let _ = hub.join();
    served
}

/// Reads `conn`'s lines into `Line` events, then says `Leave`.
fn reader(id: u64, conn: TcpStream, events: Sender<Event>) {
    let mut input = BufReader::with_capacity(MAX_LINE, &conn);
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        match (&mut input)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.is_empty() {
            continue;
        }
        let text = line.clone();
        if events.send(Event::Line { id, text }).is_err() {
            return;
        }
    }
    let _ = events.send(Event::Leave { id });
}

/// Writes what the broadcaster queues for this client, gathering queued lines into one
/// write. Ends when the queue is closed (the client was removed) or a write fails.
fn writer(conn: TcpStream, queue: Receiver<Msg>) {
    let mut out = Vec::with_capacity(4096);
    while let Ok(msg) = queue.recv() {
        out.clear();
        out.extend_from_slice(&msg);
        while out.len() < WRITE_BATCH {
            match queue.try_recv() {
                Ok(msg) => out.extend_from_slice(&msg),
                Err(_) => break,
            }
        }
        if (&conn).write_all(&out).is_err() {
            // The client is gone: closing wakes its reader, which reports it.
            let _ = conn.close();
            return;
        }
    }
}

struct Client {
    name: Arc<str>,
    conn: TcpStream,
    queue: Sender<Msg>,
}

impl Client {
    /// Closes the queue (its writer ends once the queue is drained) and the socket (its
    /// reader and a blocked writer wake with an error).
    fn disconnect(&self) {
        self.queue.close();
        let _ = self.conn.close();
    }
}

/// Owns the clients; fans lines out; never blocks on a client (see the top comment).
fn broadcaster(inbox: Receiver<Event>) {
    let mut clients: HashMap<u64, Client> = HashMap::new();
    for event in inbox.iter() {
        match event {
            Event::Join {
                id,
                name,
                conn,
                queue,
            } => {
                let others = clients.len();
                let welcome = format!(
                    "* welcome {name}, {others} other{} here\n",
                    if others == 1 { "" } else { "s" }
                );
                // A fresh queue has room (its capacity is at least 1).
                let _ = queue.try_send(welcome.into_bytes().into());
                let joined = format!("* {name} joined\n").into_bytes().into();
                broadcast(&mut clients, Some(id), joined);
                clients.insert(id, Client { name, conn, queue });
            }
            Event::Line { id, text } => {
                // Lines from a client already removed (too slow) are dropped.
                let Some(c) = clients.get(&id) else { continue };
                let mut msg = Vec::with_capacity(c.name.len() + 2 + text.len() + 1);
                msg.extend_from_slice(c.name.as_bytes());
                msg.extend_from_slice(b": ");
                msg.extend_from_slice(&text);
                msg.push(b'\n');
                broadcast(&mut clients, Some(id), msg.into());
            }
            Event::Leave { id } => {
                if let Some(c) = clients.remove(&id) {
                    c.disconnect();
                    let left = format!("* {} left\n", c.name).into_bytes().into();
                    broadcast(&mut clients, None, left);
                }
            }
            Event::Shutdown => break,
        }
    }
    for c in clients.values() {
        c.disconnect();
    }
}

/// Queues `msg` for every client but `from`; disconnects those whose queue is full and
/// tells the rest (which may find more full queues, hence the work list).
fn broadcast(clients: &mut HashMap<u64, Client>, from: Option<u64>, msg: Msg) {
    let mut work = VecDeque::from([(from, msg)]);
    let mut slow = Vec::new();
    while let Some((from, msg)) = work.pop_front() {
        for (&id, c) in clients.iter() {
            if Some(id) == from {
                continue;
            }
            match c.queue.try_send(msg.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => slow.push(id),
                // Its writer ended (write error): its reader reports the leave.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        for id in slow.drain(..) {
            if let Some(c) = clients.remove(&id) {
                c.disconnect();
                let notice = format!("* {} was disconnected: too slow\n", c.name);
                work.push_back((None, notice.into_bytes().into()));
            }
        }
    }
}

fn main() {
    let mut opts = accept::options(USAGE, &["addr", "queue"]).into_iter();
    let addr = accept::addr_option(USAGE, opts.next().flatten(), "127.0.0.1:8080");
    let queue = match opts.next().flatten().map(|v| v.parse::<usize>()) {
        None => DEFAULT_QUEUE,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("--queue needs a positive number of lines\n{USAGE}");
            std::process::exit(2);
        }
    };
    goro::run(move || {
        let listener = accept::listen("chat", addr);
        if serve(listener, queue).is_err() {
            std::process::exit(1);
        }
    });
}
