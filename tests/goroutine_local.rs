//! `goroutine_local!`: one value per goroutine, created lazily, dropped when the goroutine
//! returns (inside it), kept across parks and yields; a thread-local on plain threads.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

goro::goroutine_local! {
    static COUNTER: Cell<u64> = Cell::new(0);
    static NAME: RefCell<String> = RefCell::new(format!("g{}", goro::try_current().map_or(0, |g| g.id())));
}

#[test]
fn each_goroutine_has_its_own_value_across_switches() {
    goro::run(|| {
        let hs: Vec<_> = (0..200u64)
            .map(|i| {
                goro::spawn(move || {
                    for _ in 0..=i % 7 {
                        COUNTER.with(|c| c.set(c.get() + 1));
                        goro::yield_now();
                    }
                    let me = goro::current();
                    let waker = goro::go!(me.unpark());
                    goro::park();
                    waker.join().unwrap();
                    (i % 7 + 1, COUNTER.with(|c| c.get()))
                })
            })
            .collect();
        for h in hs {
            let (want, got) = h.join().unwrap();
            assert_eq!(got, want, "a goroutine saw another's counter");
        }
    });
}

#[test]
fn initialiser_runs_per_goroutine_and_can_use_the_runtime() {
    goro::run(|| {
        let h = goro::spawn(|| (goro::current().id(), NAME.with(|n| n.borrow().clone())));
        let (id, name) = h.join().unwrap();
        assert_eq!(name, format!("g{id}"));
        // Nested use of two keys, and of the same key, inside `with`.
        NAME.with(|n| {
            COUNTER.with(|c| c.set(5));
            NAME.with(|n2| assert_eq!(*n2.borrow(), *n.borrow()));
        });
    });
}

#[test]
fn values_drop_inside_the_goroutine_when_it_returns() {
    struct Probe(Arc<AtomicUsize>);
    impl Drop for Probe {
        fn drop(&mut self) {
            // Runs in goroutine context: the runtime is usable here.
            assert!(goro::try_current().is_some());
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    goro::goroutine_local! {
        static PROBE: RefCell<Option<Probe>> = RefCell::new(None);
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let d2 = drops.clone();
    goro::run(move || {
        let hs: Vec<_> = (0..10)
            .map(|_| {
                let d = d2.clone();
                goro::spawn(move || PROBE.with(|p| *p.borrow_mut() = Some(Probe(d))))
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    assert_eq!(drops.load(Ordering::SeqCst), 10);
}

#[test]
fn a_panicking_destructor_becomes_the_goroutines_panic() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb");
        }
    }
    goro::goroutine_local! {
        static BOMB: RefCell<Option<Bomb>> = RefCell::new(None);
    }
    goro::run(|| {
        let h = goro::spawn(|| BOMB.with(|b| *b.borrow_mut() = Some(Bomb)));
        assert_eq!(h.join().unwrap_err().message(), Some("bomb"));
    });
}

#[test]
fn plain_threads_get_thread_local_behaviour() {
    COUNTER.with(|c| c.set(3));
    let other = std::thread::spawn(|| COUNTER.with(|c| c.get()))
        .join()
        .unwrap();
    assert_eq!(other, 0);
    assert_eq!(COUNTER.with(|c| c.get()), 3);
}
