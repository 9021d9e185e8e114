//! `Panic`: a goroutine's panic, carried to whoever joins it.

use std::any::Any;
use std::fmt;

/// The payload of a panic that ended a goroutine. `JoinHandle::join` returns it instead of
/// taking the runtime down; the panic message was already printed by the panic hook, as for
/// threads.
pub struct Panic {
    /// Boxed twice so a `Panic` is one word: a goroutine's output slot, `Option<Result<T,
    /// Panic>>`, then fits in its 128-byte descriptor cell for small `T`. Panics are rare; the
    /// extra allocation is not.
    payload: Box<Box<dyn Any + Send + 'static>>,
}

impl Panic {
    pub(crate) fn new(payload: Box<dyn Any + Send + 'static>) -> Panic {
        Panic {
            payload: Box::new(payload),
        }
    }

    /// What a joiner gets from a goroutine its runtime dropped at shutdown (unwound, or never
    /// started).
    pub(crate) fn dropped(id: u64) -> Panic {
        Panic::new(Box::new(format!(
            "goroutine {id} was dropped when its runtime shut down"
        )))
    }

    /// The panic message, when the payload is a string (as with `panic!("...")`).
    pub fn message(&self) -> Option<&str> {
        if let Some(s) = self.payload.downcast_ref::<&'static str>() {
            Some(s)
        } else {
            self.payload.downcast_ref::<String>().map(String::as_str)
        }
    }

    /// The raw payload, as `std::thread::JoinHandle::join` would return it.
    pub fn into_payload(self) -> Box<dyn Any + Send + 'static> {
        *self.payload
    }

    /// Continues the panic in the caller (`std::panic::resume_unwind`).
    pub fn resume(self) -> ! {
        std::panic::resume_unwind(*self.payload)
    }
}

impl fmt::Debug for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Panic")
            .field("message", &self.message())
            .finish()
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(m) => write!(f, "goroutine panicked: {m}"),
            None => write!(f, "goroutine panicked"),
        }
    }
}

impl std::error::Error for Panic {}

/// Drops `v` (a panic payload, or a result that may hold one) where a panic from its
/// destructor must not propagate: inside a goroutine's body after its function returned, and
/// in the shutdown. A second panic is reported on stderr, and its own payload is leaked, since
/// dropping it could panic again.
pub(crate) fn drop_contained<T>(goroutine: u64, v: T) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(v))) {
        report_escaped(goroutine, "dropping a panic payload", p);
    }
}

/// Reports a panic that would otherwise escape where nothing can take it (see
/// [`drop_contained`]); the payload is leaked, not dropped.
pub(crate) fn report_escaped(goroutine: u64, during: &str, p: Box<dyn Any + Send>) {
    let msg = Panic::new(p);
    let text = msg.message().unwrap_or("(a non-string payload)").to_owned();
    std::mem::forget(msg);
    eprintln!("goro: goroutine {goroutine} panicked while {during}: {text}; the runtime goes on");
}
