//! Channels: Go's semantics table, closing, timeouts, select, plain threads, stress.

mod common;

use goro::chan::{
    self, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use std::time::{Duration, Instant};

#[test]
fn rendezvous_send_waits_for_a_receiver() {
    goro::run(|| {
        let (tx, rx) = chan::bounded::<u32>(0);
        assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
        let h = goro::spawn(move || {
            let t = Instant::now();
            tx.send(7).unwrap();
            t.elapsed()
        });
        goro::time::sleep(Duration::from_millis(30));
        assert_eq!(rx.recv(), Ok(7));
        let waited = h.join().unwrap();
        assert!(
            waited >= Duration::from_millis(25),
            "send returned after {waited:?}"
        );
    });
}

#[test]
fn buffered_fifo_and_close_drains() {
    goro::run(|| {
        let (tx, rx) = chan::bounded(3);
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        assert!(tx.is_full());
        assert_eq!(tx.try_send(9), Err(TrySendError::Full(9)));
        assert!(tx.close());
        assert!(!tx.close(), "second close reports false");
        assert_eq!(tx.send(5), Err(SendError(5)));
        assert_eq!(tx.try_send(5), Err(TrySendError::Closed(5)));
        assert_eq!(rx.iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(rx.recv(), Err(RecvError::Closed));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    });
}

#[test]
fn close_wakes_blocked_receivers_and_senders() {
    goro::run(|| {
        let (tx, rx) = chan::bounded::<u32>(0);
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                goro::spawn(move || rx.recv())
            })
            .collect();
        let (tx2, _rx2) = chan::bounded::<u32>(0);
        let senders: Vec<_> = (0..4)
            .map(|i| {
                let tx2 = tx2.clone();
                goro::spawn(move || tx2.send(i))
            })
            .collect();
        goro::time::sleep(Duration::from_millis(20));
        tx.close();
        tx2.close();
        for r in receivers {
            assert_eq!(r.join().unwrap(), Err(RecvError::Closed));
        }
        let mut back: Vec<u32> = senders
            .into_iter()
            .map(|s| s.join().unwrap().unwrap_err().into_inner())
            .collect();
        back.sort();
        assert_eq!(back, vec![0, 1, 2, 3], "each sender got its value back");
    });
}

#[test]
fn dropping_senders_closes_and_dropping_receivers_fails_sends() {
    goro::run(|| {
        let (tx, rx) = chan::unbounded::<u32>();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        drop(tx);
        assert!(!rx.is_closed());
        tx2.send(2).unwrap();
        drop(tx2);
        assert!(rx.is_closed());
        assert_eq!(rx.iter().collect::<Vec<_>>(), vec![1, 2]);

        let (tx, rx) = chan::bounded::<u32>(0);
        let h = goro::spawn(move || tx.send(3));
        goro::time::sleep(Duration::from_millis(10));
        drop(rx);
        assert_eq!(h.join().unwrap(), Err(SendError(3)));
    });
}

#[test]
fn timeouts_fire_and_return_the_value() {
    goro::run(|| {
        let (tx, rx) = chan::bounded::<u32>(0);
        let t = Instant::now();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(30)),
            Err(RecvTimeoutError::Timeout)
        );
        let e = t.elapsed();
        assert!(
            e >= Duration::from_millis(30) && e < Duration::from_secs(2),
            "{e:?}"
        );
        assert_eq!(
            tx.send_timeout(4, Duration::from_millis(10)),
            Err(SendTimeoutError::Timeout(4))
        );
        assert_eq!(
            tx.send_deadline(5, Instant::now()),
            Err(SendTimeoutError::Timeout(5))
        );
        let h = goro::spawn(move || tx.send_timeout(6, Duration::from_secs(10)));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(6));
        assert_eq!(h.join().unwrap(), Ok(()));
        drop(rx);
    });
}

#[test]
fn plain_threads_block_and_interoperate() {
    let (tx, rx) = chan::bounded::<u64>(0);
    let (back_tx, back_rx) = chan::bounded::<u64>(1);
    let t = std::thread::spawn(move || {
        for v in rx.iter() {
            back_tx.send(v * 2).unwrap();
        }
    });
    goro::run(move || {
        for i in 0..100 {
            tx.send(i).unwrap();
            assert_eq!(back_rx.recv(), Ok(i * 2));
        }
    });
    t.join().unwrap();
}

#[test]
fn select_picks_the_ready_arm_and_default() {
    goro::run(|| {
        let (tx1, rx1) = chan::bounded::<u32>(1);
        let (_tx2, rx2) = chan::bounded::<u32>(1);
        let r = goro::select! {
            recv(rx1) -> _v => 1,
            recv(rx2) -> _v => 2,
            default => 0,
        };
        assert_eq!(r, 0);
        tx1.send(5).unwrap();
        let r = goro::select! {
            recv(rx1) -> v => v.unwrap(),
            recv(rx2) -> v => v.unwrap() + 100,
        };
        assert_eq!(r, 5);
        // A send arm on a full channel is not ready; on an empty one it is.
        let r = goro::select! {
            send(tx1, 8) -> res => { res.unwrap(); 1 }
            default => 0,
        };
        assert_eq!(r, 1);
        assert_eq!(rx1.recv(), Ok(8));
    });
}

#[test]
fn select_is_fair_between_ready_arms() {
    goro::run(|| {
        let (tx1, rx1) = chan::bounded::<u32>(1);
        let (tx2, rx2) = chan::bounded::<u32>(1);
        let mut counts = [0u32; 2];
        for _ in 0..4000 {
            let _ = tx1.try_send(1);
            let _ = tx2.try_send(2);
            goro::select! {
                recv(rx1) -> _v => counts[0] += 1,
                recv(rx2) -> _v => counts[1] += 1,
            }
        }
        assert!(counts[0] > 1600 && counts[1] > 1600, "unfair: {counts:?}");
    });
}

#[test]
fn select_blocks_on_many_and_times_out() {
    goro::run(|| {
        let chans: Vec<_> = (0..3).map(|_| chan::bounded::<u32>(0)).collect();
        let t = Instant::now();
        let r = goro::select! {
            recv(chans[0].1) -> _v => 0,
            recv(chans[1].1) -> _v => 1,
            recv(chans[2].1) -> _v => 2,
            after(Duration::from_millis(40)) => 9,
        };
        assert_eq!(r, 9);
        assert!(t.elapsed() >= Duration::from_millis(40));
        let tx = chans[1].0.clone();
        let h = goro::spawn(move || {
            goro::time::sleep(Duration::from_millis(10));
            tx.send(11).unwrap();
        });
        let r = goro::select! {
            recv(chans[0].1) -> v => v.unwrap(),
            recv(chans[1].1) -> v => v.unwrap() + 100,
            recv(chans[2].1) -> v => v.unwrap() + 200,
            default(Duration::from_secs(10)) => 0,
        };
        assert_eq!(r, 111);
        h.join().unwrap();
        // Every waiter was unlinked: a later send on another channel finds no one.
        assert_eq!(chans[0].0.try_send(1), Err(TrySendError::Full(1)));
    });
}

#[test]
fn select_send_and_recv_on_one_channel_does_not_match_itself() {
    goro::run(|| {
        let (tx, rx) = chan::bounded::<u32>(0);
        let r = goro::select! {
            send(tx, 1) -> _r => 1,
            recv(rx) -> _v => 2,
            after(Duration::from_millis(20)) => 0,
        };
        assert_eq!(r, 0);
    });
}

/// Go's channel semantics, case by case: {rendezvous, buffered} × {open, closed} × {empty,
/// holding values, full} × {send, recv, select send, select recv}. "blocks" is checked with
/// a short timeout (the operation must time out and hand the value back).
#[test]
fn go_semantics_table() {
    #[derive(Clone, Copy, Debug)]
    enum St {
        Empty,
        OneValue,
        Full,
    }
    goro::run(|| {
        let ms = Duration::from_millis(5);
        for cap in [0usize, 2] {
            for closed in [false, true] {
                for st in [St::Empty, St::OneValue, St::Full] {
                    if cap == 0 && !matches!(st, St::Empty) {
                        continue; // a rendezvous channel holds nothing
                    }
                    let fill = match st {
                        St::Empty => 0,
                        St::OneValue => 1,
                        St::Full => cap,
                    };
                    let make = || {
                        let (tx, rx) = chan::bounded::<u32>(cap);
                        for i in 0..fill {
                            tx.send(100 + i as u32).unwrap();
                        }
                        if closed {
                            tx.close();
                        }
                        (tx, rx)
                    };
                    let case = format!("cap {cap}, closed {closed}, {st:?}");
                    let has_room = !closed && fill < cap;
                    let has_value = fill > 0;

                    // send
                    let (tx, _rx) = make();
                    let r = tx.send_timeout(1, ms);
                    match (closed, has_room) {
                        (true, _) => {
                            assert_eq!(r, Err(SendTimeoutError::Closed(1)), "{case}: send")
                        }
                        (false, true) => assert_eq!(r, Ok(()), "{case}: send"),
                        (false, false) => {
                            assert_eq!(r, Err(SendTimeoutError::Timeout(1)), "{case}: send blocks")
                        }
                    }
                    // recv
                    let (_tx, rx) = make();
                    let r = rx.recv_timeout(ms);
                    match (has_value, closed) {
                        (true, _) => assert_eq!(r, Ok(100), "{case}: recv"),
                        (false, true) => {
                            assert_eq!(r, Err(RecvTimeoutError::Closed), "{case}: recv")
                        }
                        (false, false) => {
                            assert_eq!(r, Err(RecvTimeoutError::Timeout), "{case}: recv blocks")
                        }
                    }
                    // select send / default
                    let (tx, _rx) = make();
                    let r = goro::select! {
                        send(tx, 1) -> res => Some(res.is_ok()),
                        default => None,
                    };
                    let want = if closed {
                        Some(false)
                    } else if has_room {
                        Some(true)
                    } else {
                        None
                    };
                    assert_eq!(r, want, "{case}: select send");
                    // select recv / default
                    let (_tx, rx) = make();
                    let r = goro::select! {
                        recv(rx) -> v => Some(v.ok()),
                        default => None,
                    };
                    let want = if has_value {
                        Some(Some(100))
                    } else if closed {
                        Some(None)
                    } else {
                        None
                    };
                    assert_eq!(r, want, "{case}: select recv");
                    // closed and drained after the buffered values
                    if closed {
                        let (_tx, rx) = make();
                        assert_eq!(rx.iter().count(), fill, "{case}: drain");
                        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed), "{case}: drained");
                    }
                }
            }
        }
    });
}

/// A value fingerprint: count, sum and sum of squares catch a lost or a duplicated value.
#[derive(Default, Clone, Copy, PartialEq, Debug)]
struct Tally(u64, u64, u64);

impl Tally {
    fn add(&mut self, v: u64) {
        self.0 += 1;
        self.1 = self.1.wrapping_add(v);
        self.2 = self.2.wrapping_add(v.wrapping_mul(v));
    }
    fn merge(&mut self, o: Tally) {
        self.0 += o.0;
        self.1 = self.1.wrapping_add(o.1);
        self.2 = self.2.wrapping_add(o.2);
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// `producers` goroutines send `per` unique values each by random means (blocking send,
/// two-arm select, try_send with yields, send_timeout) on four channels of different kinds;
/// as many consumers receive by select or recv until the channels close. Every value sent
/// must be received exactly once.
fn stress(procs: usize, seed: u64, producers: usize, per: usize) {
    goro::Builder::new().max_procs(procs).run(move || {
        let chans: Vec<_> = [Some(0), Some(1), Some(16), None]
            .into_iter()
            .map(|c| match c {
                Some(c) => chan::bounded::<u64>(c),
                None => chan::unbounded::<u64>(),
            })
            .collect();
        let txs: Vec<_> = chans.iter().map(|c| c.0.clone()).collect();
        let rxs: Vec<_> = chans.iter().map(|c| c.1.clone()).collect();
        drop(chans);
        let prod: Vec<_> = (0..producers)
            .map(|p| {
                let txs = txs.clone();
                goro::spawn(move || {
                    let mut r = seed ^ (p as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let mut t = Tally::default();
                    for j in 0..per {
                        let v = (p * per + j) as u64;
                        let a = (xorshift(&mut r) % 4) as usize;
                        let b = (xorshift(&mut r) % 4) as usize;
                        match xorshift(&mut r) % 4 {
                            0 => txs[a].send(v).unwrap(),
                            1 => goro::select! {
                                send(txs[a], v) -> res => res.unwrap(),
                                send(txs[b], v) -> res => res.unwrap(),
                            },
                            2 => {
                                let mut v = v;
                                while let Err(e) = txs[a].try_send(v) {
                                    v = e.into_inner();
                                    goro::yield_now();
                                }
                            }
                            _ => {
                                let mut v = v;
                                while let Err(e) = txs[a].send_timeout(v, Duration::from_micros(50))
                                {
                                    assert!(e.is_timeout());
                                    v = e.into_inner();
                                }
                            }
                        }
                        t.add(v);
                    }
                    t
                })
            })
            .collect();
        let cons: Vec<_> = (0..producers)
            .map(|c| {
                let rxs = rxs.clone();
                goro::spawn(move || {
                    let mut t = Tally::default();
                    if c % 2 == 0 {
                        // Select over all four until one reports closed, then drain each.
                        loop {
                            let got = goro::select! {
                                recv(rxs[0]) -> v => v,
                                recv(rxs[1]) -> v => v,
                                recv(rxs[2]) -> v => v,
                                recv(rxs[3]) -> v => v,
                            };
                            match got {
                                Ok(v) => t.add(v),
                                Err(_) => break,
                            }
                        }
                    } else {
                        // Plain receives with a timeout, round robin, until all are closed.
                        let mut open = [true; 4];
                        let mut i = c;
                        while open.iter().any(|&o| o) {
                            i = (i + 1) % 4;
                            if !open[i] {
                                continue;
                            }
                            match rxs[i].recv_timeout(Duration::from_micros(200)) {
                                Ok(v) => t.add(v),
                                Err(RecvTimeoutError::Closed) => open[i] = false,
                                Err(RecvTimeoutError::Timeout) => {}
                            }
                        }
                    }
                    for rx in &rxs {
                        for v in rx.iter() {
                            t.add(v);
                        }
                    }
                    t
                })
            })
            .collect();
        let mut sent = Tally::default();
        for h in prod {
            sent.merge(h.join().unwrap());
        }
        for tx in &txs {
            tx.close();
        }
        drop(txs);
        let mut got = Tally::default();
        for h in cons {
            got.merge(h.join().unwrap());
        }
        assert_eq!(sent.0, (producers * per) as u64);
        assert_eq!(
            got, sent,
            "procs {procs}, seed {seed}: values lost or duplicated"
        );
    });
}

#[test]
fn stress_ten_thousand_goroutines_random_ops() {
    common::with_timeout(
        Duration::from_secs(240),
        "channel stress deadlocked",
        || {
            for (procs, seed) in [(2, 1), (4, 2), (8, 3), (2, 4)] {
                stress(procs, seed, 5_000, 10);
            }
        },
    );
}
