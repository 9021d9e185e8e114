//! Time (`goro::time`): sleeping and timer channels, on the scheduler's per-P timer heaps
//! (`sched/timers.rs`): no thread per timer, and an idle M sleeps exactly until the next one.
//!
//! - [`sleep`] / [`sleep_until`] park the goroutine (a plain thread sleeps);
//! - [`after`] and [`Timer`] deliver one `Instant` on a channel; [`tick`] and [`Ticker`]
//!   deliver one per period. Their channels hold one value: a slow receiver misses ticks
//!   rather than queueing them (Go's rule).
//! - [`Timer::stop`] / [`Timer::reset`] follow Go 1.23: once they return, no value from the
//!   old schedule is received (a value already buffered is drained).
//!
//! A timer armed by a goroutine lives in its P's heap and fires on whichever M runs it; one
//! armed by a plain thread lives on the process's single fallback timer thread.

use crate::chan::{self, Receiver, Sender};
use crate::sched::timers::{self, Action, TimerEntry};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Parks the calling goroutine for `d` (a plain thread sleeps). Like Go's `time.Sleep`, it
/// returns no earlier than `d` from now.
pub fn sleep(d: Duration) {
    match Instant::now().checked_add(d) {
        Some(deadline) if !d.is_zero() => sleep_until_after_now(deadline),
        Some(_) => {}
        None => loop {
            crate::park(); // "forever"
            if crate::tls::current_is_dying() {
                return;
            }
        },
    }
}

/// Parks the calling goroutine until `deadline` (a plain thread sleeps).
pub fn sleep_until(deadline: Instant) {
    if Instant::now() < deadline {
        sleep_until_after_now(deadline);
    }
}

/// `sleep_until` for a deadline known to be in the future: parks first, then checks (one
/// clock read less per sleep).
fn sleep_until_after_now(deadline: Instant) {
    loop {
        if !crate::park::park_in_goroutine(Some(deadline)) {
            // A plain thread.
            let now = Instant::now();
            if deadline > now {
                std::thread::sleep(deadline - now);
            }
            return;
        }
        if Instant::now() >= deadline || crate::tls::current_is_dying() {
            return;
        }
    }
}

/// A channel that receives the time once, after `d` (Go's `time.After`).
pub fn after(d: Duration) -> Receiver<Instant> {
    let (shared, rx) = Shared::new(None);
    shared.arm(&mut shared.lock(), deadline_after(d));
    rx
}

/// A channel that receives the time every `period` until the receiver is dropped (Go's
/// `time.Tick`, which cannot be stopped otherwise).
///
/// # Panics
/// If `period` is zero.
pub fn tick(period: Duration) -> Receiver<Instant> {
    assert!(!period.is_zero(), "goro::time::tick: zero period");
    let (shared, rx) = Shared::new(Some(period));
    shared.arm(&mut shared.lock(), deadline_after(period));
    rx
}

fn deadline_after(d: Duration) -> Instant {
    // Far enough to never fire, for "forever".
    Instant::now()
        .checked_add(d)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600))
}

struct State {
    /// The armed heap entry; `None` when stopped or fired (one-shot).
    entry: Option<Arc<TimerEntry>>,
    period: Option<Duration>,
    /// Counts arms: an entry that fires after a stop or reset finds a newer generation.
    generation: u64,
}

/// What a timer's heap entry and its handle share.
struct Shared {
    tx: Sender<Instant>,
    state: Mutex<State>,
}

impl Shared {
    /// A stopped timer (`period` for a ticker) and its channel, which holds one value.
    fn new(period: Option<Duration>) -> (Arc<Shared>, Receiver<Instant>) {
        let (tx, rx) = chan::bounded(1);
        let state = Mutex::new(State {
            entry: None,
            period,
            generation: 0,
        });
        (Arc::new(Shared { tx, state }), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms a heap entry at `when` (the caller holds the state lock).
    fn arm(self: &Arc<Shared>, st: &mut State, when: Instant) {
        st.generation += 1;
        let (me, generation) = (self.clone(), st.generation);
        let e = TimerEntry::new(
            timers::nanos_at(when),
            Action::Call(Box::new(move || me.fire(generation))),
        );
        st.entry = Some(e.clone());
        timers::add(e);
    }

    /// The heap entry armed as `generation` fired: send the time unless it was stopped or
    /// replaced since, and re-arm a ticker. Runs on the scheduler's stack: nothing here blocks.
    fn fire(self: &Arc<Shared>, generation: u64) {
        let mut st = self.lock();
        if st.generation != generation || st.entry.is_none() {
            return; // stopped or reset meanwhile
        }
        st.entry = None;
        let now = Instant::now();
        let sent = self.tx.try_send(now);
        let closed = matches!(sent, Err(chan::TrySendError::Closed(_)));
        if let (Some(period), false) = (st.period, closed) {
            self.arm(&mut st, now + period);
        }
    }

    /// Disarms; true if a timer was pending. Drains a value already sent (Go 1.23 rule).
    fn stop(&self, drain: &Receiver<Instant>) -> bool {
        let mut st = self.lock();
        let was = st.entry.take().is_some_and(|e| e.cancel());
        while drain.try_recv().is_ok() {}
        was
    }
}

/// A single event (Go's `time.Timer`): the time is sent on [`receiver`](Timer::receiver) once,
/// after the duration, unless stopped first.
pub struct Timer {
    shared: Arc<Shared>,
    rx: Receiver<Instant>,
}

impl Timer {
    /// A timer that fires after `d`.
    pub fn new(d: Duration) -> Timer {
        let (shared, rx) = Shared::new(None);
        shared.arm(&mut shared.lock(), deadline_after(d));
        Timer { shared, rx }
    }

    /// The channel the time is sent on (Go's `t.C`); usable in `select!`.
    pub fn receiver(&self) -> &Receiver<Instant> {
        &self.rx
    }

    /// Prevents the timer from firing; true if it was still pending. Once it returns, no
    /// value is received from this timer until it is reset.
    pub fn stop(&self) -> bool {
        self.shared.stop(&self.rx)
    }

    /// Re-arms the timer to fire after `d`; true if it was still pending.
    pub fn reset(&self, d: Duration) -> bool {
        let was = self.shared.stop(&self.rx);
        self.shared.arm(&mut self.shared.lock(), deadline_after(d));
        was
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A periodic event (Go's `time.Ticker`): the time is sent every period on
/// [`receiver`](Ticker::receiver); a slow receiver misses ticks instead of queueing them.
pub struct Ticker {
    shared: Arc<Shared>,
    rx: Receiver<Instant>,
}

impl Ticker {
    /// # Panics
    /// If `period` is zero.
    pub fn new(period: Duration) -> Ticker {
        assert!(!period.is_zero(), "goro::time::Ticker: zero period");
        let (shared, rx) = Shared::new(Some(period));
        shared.arm(&mut shared.lock(), deadline_after(period));
        Ticker { shared, rx }
    }

    /// The channel the ticks are sent on (Go's `t.C`).
    pub fn receiver(&self) -> &Receiver<Instant> {
        &self.rx
    }

    /// Stops the ticks; none is received after it returns.
    pub fn stop(&self) {
        self.shared.stop(&self.rx);
    }

    /// Stops and restarts with a new period.
    ///
    /// # Panics
    /// If `period` is zero.
    pub fn reset(&self, period: Duration) {
        assert!(!period.is_zero(), "goro::time::Ticker: zero period");
        self.shared.stop(&self.rx);
        let mut st = self.shared.lock();
        st.period = Some(period);
        self.shared.arm(&mut st, deadline_after(period));
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}
