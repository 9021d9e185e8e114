//! `goro::block_on` (futures woken from another thread, from a timer, many times) and
//! `goro::fs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A one-shot value set by someone else, who then wakes the stored waker.
#[derive(Default)]
struct Slot {
    value: Option<u64>,
    waker: Option<Waker>,
    polls: usize,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Slot>>);

impl Shared {
    fn set(&self, v: u64) {
        let w = {
            let mut s = self.0.lock().unwrap();
            s.value = Some(v);
            s.waker.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl Future for Shared {
    type Output = u64;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let mut s = self.0.lock().unwrap();
        s.polls += 1;
        match s.value {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[test]
fn woken_from_another_thread() {
    goro::Builder::new().max_procs(2).run(|| {
        let f = Shared::default();
        let g = f.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            g.set(7);
        });
        // Other goroutines keep running while this one waits.
        let busy = goro::spawn(|| {
            let mut sum = 0u64;
            for i in 0..1000 {
                goro::yield_now();
                sum += i;
            }
            sum
        });
        assert_eq!(goro::block_on(f.clone()), 7);
        assert_eq!(busy.join().unwrap(), 499_500);
        t.join().unwrap();
        assert!(
            f.0.lock().unwrap().polls <= 3,
            "woken, not polled in a loop"
        );
    });
}

#[test]
fn woken_from_a_timer() {
    goro::Builder::new().max_procs(1).run(|| {
        let f = Shared::default();
        let g = f.clone();
        let t0 = Instant::now();
        goro::spawn(move || {
            goro::time::sleep(Duration::from_millis(30));
            g.set(9);
        });
        assert_eq!(goro::block_on(f), 9);
        assert!(t0.elapsed() >= Duration::from_millis(30));
        // A stale token from a late wake-up does not break the next sleep.
        let t1 = Instant::now();
        goro::time::sleep(Duration::from_millis(20));
        assert!(t1.elapsed() >= Duration::from_millis(20));
    });
}

/// The future keeps a reference into the goroutine's stack across parks.
#[test]
fn future_borrows_the_stack_and_waker_called_many_times() {
    goro::Builder::new().max_procs(2).run(|| {
        let local = [1u64, 2, 3, 4];
        let f = Shared::default();
        let wakes = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let f = f.clone();
                let wakes = wakes.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        if let Some(w) = f.0.lock().unwrap().waker.clone() {
                            w.wake_by_ref();
                            wakes.fetch_add(1, Ordering::Relaxed);
                        }
                        std::thread::yield_now();
                    }
                    if i == 3 {
                        f.set(10);
                    }
                })
            })
            .collect();
        let r = &local;
        let sum = goro::block_on(async move { f.await + r.iter().sum::<u64>() });
        assert_eq!(sum, 20);
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn block_on_a_plain_thread() {
    let f = Shared::default();
    let g = f.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        g.set(3);
    });
    assert_eq!(goro::block_on(f), 3);
    t.join().unwrap();
}

#[test]
fn fs_round_trip() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let dir = std::env::temp_dir().join(format!("goro-fs-{}", std::process::id()));
    goro::Builder::new().max_procs(2).run(move || {
        goro::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.txt");
        goro::fs::write(&p, b"hello").unwrap();
        assert_eq!(goro::fs::read(&p).unwrap(), b"hello");
        let mut f =
            goro::fs::File::open_with(std::fs::OpenOptions::new().append(true), &p).unwrap();
        f.write_all(b" world").unwrap();
        f.sync_all().unwrap();
        assert_eq!(goro::fs::read_to_string(&p).unwrap(), "hello world");
        let mut f = goro::fs::File::open(&p).unwrap();
        f.seek(SeekFrom::Start(6)).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "world");
        assert_eq!(goro::fs::metadata(&p).unwrap().len(), 11);
        let q = dir.join("b.txt");
        goro::fs::rename(&p, &q).unwrap();
        assert!(goro::fs::read(&p).is_err());
        goro::fs::remove_file(&q).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    });
}
