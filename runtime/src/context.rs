//! Cancellation (`goro::context`): Go's `context.Context` for goroutines, without values.
//!
//! A [`Context`] is a node in a tree rooted at [`background`]. [`with_cancel`],
//! [`with_timeout`] and [`with_deadline`] derive a child and return it with its [`Cancel`]
//! handle. Cancelling a context (its handle, its deadline, or any ancestor's cancellation)
//! closes its [`done`](Context::done) channel, which is usable in `select!`, and fixes its
//! [`err`](Context::err); its descendants are cancelled with it, its ancestors are not.
//!
//! This is the documented way to stop goroutines that would otherwise leak: pass a context
//! down, and select on `ctx.done()` next to the channel operations that could wait forever.
//!
//! ```
//! # extern crate goro_runtime as goro;
//! use std::time::Duration;
//! goro::run(|| {
//!     let (ctx, _cancel) = goro::context::with_timeout(&goro::context::background(), Duration::from_millis(10));
//!     let (_tx, rx) = goro::chan::bounded::<u32>(0); // nobody ever sends
//!     let worker = goro::spawn(move || loop {
//!         if ctx.done().try_recv() != Err(goro::chan::TryRecvError::Empty) {
//!             return ctx.err();
//!         }
//!         let _ = rx.recv_timeout(Duration::from_millis(1));
//!     });
//!     assert_eq!(worker.join().unwrap(), Some(goro::context::ContextError::DeadlineExceeded));
//! });
//! ```
//!
//! Rules (Go's): cancelling twice is a no-op; a child of a cancelled parent starts cancelled
//! with the parent's error; a child's deadline is the earlier of its own and its parent's.
//! Dropping a [`Cancel`] handle does **not** cancel (as in Go, where not calling `cancel` only
//! delays releasing the context until its parent is cancelled or its deadline passes): a
//! handle bound to `_` would otherwise cancel at once. Parents keep weak references to their
//! children, pruned as children are dropped, so abandoned contexts do not accumulate.
//!
//! The deadline is a scheduler timer (`sched/timers.rs`) whose action cancels the context; it
//! is disarmed when the context is cancelled earlier.

use crate::chan::{self, Receiver, Sender};
use crate::sched::timers::{self, Action, TimerEntry};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Why a context was cancelled (Go's `context.Canceled` / `context.DeadlineExceeded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// Its `Cancel` handle (or an ancestor's) was called.
    Canceled,
    /// Its deadline (or an ancestor's) passed.
    DeadlineExceeded,
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContextError::Canceled => "context canceled",
            ContextError::DeadlineExceeded => "context deadline exceeded",
        })
    }
}

impl std::error::Error for ContextError {}

struct State {
    err: Option<ContextError>,
    children: Vec<Weak<Node>>,
    timer: Option<Arc<TimerEntry>>,
}

struct Node {
    /// Closed on cancellation (`done_rx` then reports closed forever).
    done_tx: Sender<()>,
    done_rx: Receiver<()>,
    deadline: Option<Instant>,
    state: Mutex<State>,
}

impl Node {
    fn new(deadline: Option<Instant>) -> Arc<Node> {
        let (done_tx, done_rx) = chan::bounded(0);
        Arc::new(Node {
            done_tx,
            done_rx,
            deadline,
            state: Mutex::new(State {
                err: None,
                children: Vec::new(),
                timer: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cancels this node and its descendants with `err` (no-op if already cancelled).
    fn cancel(&self, err: ContextError) {
        let (children, timer) = {
            let mut st = self.lock();
            if st.err.is_some() {
                return;
            }
            st.err = Some(err);
            (std::mem::take(&mut st.children), st.timer.take())
        };
        if let Some(t) = timer {
            t.cancel();
        }
        self.done_tx.close();
        for c in children.iter().filter_map(Weak::upgrade) {
            c.cancel(err);
        }
    }
}

/// A cancellation signal shared by a tree of goroutines. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    node: Arc<Node>,
}

/// Cancels the context it was returned with (Go's `CancelFunc`). Dropping it does not cancel.
#[derive(Clone)]
pub struct Cancel {
    node: Arc<Node>,
}

impl Cancel {
    /// Cancels the context and its descendants with [`ContextError::Canceled`]; later calls do
    /// nothing.
    pub fn cancel(&self) {
        self.node.cancel(ContextError::Canceled);
    }
}

impl fmt::Debug for Cancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("Cancel { .. }")
    }
}

/// The root context: never cancelled, no deadline (Go's `context.Background()`).
pub fn background() -> Context {
    static BACKGROUND: OnceLock<Context> = OnceLock::new();
    BACKGROUND
        .get_or_init(|| Context {
            node: Node::new(None),
        })
        .clone()
}

/// A child of `parent` that is cancelled by the returned handle or with its parent.
pub fn with_cancel(parent: &Context) -> (Context, Cancel) {
    derive(parent, parent.deadline())
}

/// A child of `parent` that is also cancelled at `deadline` (or its parent's, if earlier).
pub fn with_deadline(parent: &Context, deadline: Instant) -> (Context, Cancel) {
    let d = match parent.deadline() {
        Some(p) if p < deadline => p,
        _ => deadline,
    };
    derive(parent, Some(d))
}

/// A child of `parent` that is also cancelled after `timeout`.
pub fn with_timeout(parent: &Context, timeout: Duration) -> (Context, Cancel) {
    match Instant::now().checked_add(timeout) {
        Some(d) => with_deadline(parent, d),
        None => with_cancel(parent),
    }
}

fn derive(parent: &Context, deadline: Option<Instant>) -> (Context, Cancel) {
    let node = Node::new(deadline);
    let inherited = {
        let mut st = parent.node.lock();
        if st.err.is_none() {
            st.children.retain(|c| c.strong_count() > 0);
            st.children.push(Arc::downgrade(&node));
        }
        st.err
    };
    if let Some(err) = inherited {
        node.cancel(err);
    } else if let Some(d) = deadline {
        if d <= Instant::now() {
            node.cancel(ContextError::DeadlineExceeded);
        } else {
            let n2 = node.clone();
            let e = TimerEntry::new(
                timers::nanos_at(d),
                Action::Call(Box::new(move || n2.cancel(ContextError::DeadlineExceeded))),
            );
            node.lock().timer = Some(e.clone());
            timers::add(e);
        }
    }
    (Context { node: node.clone() }, Cancel { node })
}

impl Context {
    /// A channel that is closed when the context is cancelled: `recv` on it returns
    /// `Err(Closed)` from then on. Use it in `select!`: `recv(ctx.done()) -> _ => ...`.
    pub fn done(&self) -> &Receiver<()> {
        &self.node.done_rx
    }

    /// `None` while the context is live; why it was cancelled afterwards.
    pub fn err(&self) -> Option<ContextError> {
        self.node.lock().err
    }

    /// Whether the context is cancelled.
    pub fn is_done(&self) -> bool {
        self.err().is_some()
    }

    /// When the context will be cancelled by a deadline, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.node.deadline
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("deadline", &self.deadline())
            .field("err", &self.err())
            .finish()
    }
}
