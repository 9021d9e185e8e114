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
