//! A minimal rendezvous channel for the scheduler benchmarks (ping-pong, ring) until
//! `goro::chan` exists: Go's unbuffered-channel semantics for one sender and one receiver at
//! a time. A send to a waiting receiver hands the value over and returns (the receiver is
//! readied, Go's direct hand-off); otherwise the sender leaves the value and parks until a
//! receiver takes it. One lock per operation, like Go's `hchan.lock`.

use std::sync::Mutex;

pub struct Rendezvous<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    value: Option<T>,
    receiver: Option<goro::Goroutine>,
    sender: Option<goro::Goroutine>,
}

impl<T> Default for Rendezvous<T> {
    fn default() -> Self {
        Rendezvous {
            inner: Mutex::new(Inner {
                value: None,
                receiver: None,
                sender: None,
            }),
        }
    }
}

impl<T> Rendezvous<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap()
    }

    pub fn send(&self, v: T) {
        let mut c = self.lock();
        assert!(c.value.is_none(), "one sender at a time");
        c.value = Some(v);
        if let Some(r) = c.receiver.take() {
            drop(c);
            r.unpark();
            return;
        }
        c.sender = Some(goro::current());
        drop(c);
        loop {
            goro::park();
            if self.lock().sender.is_none() {
                return; // taken
            }
        }
    }

    pub fn recv(&self) -> T {
        let mut c = self.lock();
        if let Some(v) = c.value.take() {
            let s = c.sender.take();
            drop(c);
            if let Some(s) = s {
                s.unpark();
            }
            return v;
        }
        c.receiver = Some(goro::current());
        drop(c);
        loop {
            goro::park();
            let mut c = self.lock();
            if let Some(v) = c.value.take() {
                return v; // handed over by a sender that did not wait
            }
        }
    }
}
