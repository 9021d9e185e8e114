//! Stack roots (`goro::gc::root!`): a root on a goroutine's stack is the only thing keeping
//! its object alive across forced collections, while the goroutine is parked, running,
//! yielding, inside `block_on`, or migrating; off a goroutine stack (a plain thread, a boxed
//! future's state) a root holds a count; a goroutine that never reaches a safepoint does not
//! stall a collection when it holds no roots.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use goro::gc::{self, root, Gc, GcCell, Trace};

static DROPS: AtomicUsize = AtomicUsize::new(0);
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Trace)]
struct Node {
    #[gc(skip)]
    v: u64,
    #[gc(skip)]
    check: u64,
    next: GcCell<Option<Gc<Node>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

fn node(v: u64) -> Gc<Node> {
    Gc::new(Node {
        v,
        check: v.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        next: GcCell::new(None),
    })
}

fn ok(n: &Node, v: u64) {
    assert_eq!(n.v, v);
    assert_eq!(n.check, v.wrapping_mul(0x9e37_79b9_7f4a_7c15));
}

/// A two-node list whose head is only reachable through the root the caller makes.
fn list(v: u64) -> Gc<Node> {
    let a = node(v);
    *a.next.borrow_mut() = Some(node(v + 1));
    a
}

fn collect_n(n: usize) {
    for _ in 0..n {
        gc::collect();
    }
}

/// `n` forced cycles, after which no object may have been dropped since `before` drops.
fn collect_keeping(n: usize, before: usize) {
    collect_n(n);
    assert_eq!(
        DROPS.load(Ordering::Relaxed),
        before,
        "a rooted object was freed"
    );
}

#[test]
fn a_parked_goroutines_root_is_its_objects_only_reference() {
    let _s = serial();
    collect_n(2);
    let before = DROPS.load(Ordering::Relaxed);
    goro::Builder::new().max_procs(2).run(move || {
        let (tx, rx) = goro::chan::bounded::<()>(0);
        let (back_tx, back_rx) = goro::chan::bounded::<()>(0);
        let mut hs = Vec::new();
        for i in 0..200u64 {
            let rx = rx.clone();
            let back = back_tx.clone();
            hs.push(goro::spawn(move || {
                // The handle is a temporary: after this statement only the root holds it.
                root!(let r = list(i * 10));
                let next = r.next.borrow().clone().unwrap();
                root!(let second = &next);
                drop(next);
                back.send(()).unwrap();
                rx.recv().unwrap(); // parked across the collections
                ok(&r, i * 10);
                ok(&second, i * 10 + 1);
                back.send(()).unwrap();
                rx.recv().unwrap(); // parked again: the roots are still there
                ok(&r, i * 10);
            }));
        }
        // Twice: all 200 park holding their roots, cycles run, then they are let go.
        for cycles in [3, 2] {
            for _ in 0..200 {
                back_rx.recv().unwrap();
            }
            collect_keeping(cycles, before);
            for _ in 0..200 {
                tx.send(()).unwrap();
            }
        }
        for h in hs {
            h.join().unwrap();
        }
    });
    collect_n(3);
    assert_eq!(
        DROPS.load(Ordering::Relaxed) - before,
        400,
        "every list freed once"
    );
}

/// A future that is pending once (and wakes itself).
struct PendingOnce(bool);

impl std::future::Future for PendingOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[test]
fn a_root_on_a_goroutine_stack_costs_no_count_and_off_it_holds_one() {
    let _s = serial();
    goro::Builder::new().max_procs(1).run(|| {
        let g = node(1);
        {
            root!(let r = &g);
            assert_eq!(
                Gc::handle_count(&g),
                1,
                "a goroutine stack root is uncounted"
            );
            ok(&r, 1);
        }
        // A boxed future's state lives on the heap: a root there is counted.
        let g2 = g.clone();
        goro::block_on(Box::pin(async move {
            root!(let r = &g2);
            // Held across an await: the slot is part of the future's state, on the heap.
            PendingOnce(false).await;
            assert_eq!(
                Gc::handle_count(&g2),
                3,
                "a root in a boxed future holds a count"
            );
            ok(&r, 1);
        }));
        assert_eq!(Gc::handle_count(&g), 1);
    });
    // A plain thread's stack is never scanned: counted too.
    let g = node(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            root!(let r = &g);
            assert_eq!(Gc::handle_count(&g), 2);
            ok(&r, 2);
            assert!(goro::gc::Root::ptr_eq(r, &g));
            let again = goro::gc::Root::to_gc(r);
            assert_eq!(Gc::handle_count(&g), 3);
            drop(again);
        });
    });
    assert_eq!(Gc::handle_count(&g), 1);
}

#[test]
fn running_and_yielding_goroutines_keep_their_roots() {
    let _s = serial();
    collect_n(2);
    let before = DROPS.load(Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    goro::Builder::new().max_procs(2).run(move || {
        let mut hs = Vec::new();
        for i in 0..4u64 {
            let stop = stop.clone();
            hs.push(goro::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    root!(let r = list(i * 1000 + rounds));
                    // Garbage, so cycles keep coming, and a preemption point per step.
                    for _ in 0..64 {
                        drop(node(7));
                    }
                    goro::preempt_point();
                    ok(&r, i * 1000 + rounds);
                    ok(r.next.borrow().as_ref().unwrap(), i * 1000 + rounds + 1);
                    rounds = (rounds + 1) % 1000;
                    if rounds.is_multiple_of(16) {
                        goro::yield_now();
                    }
                }
            }));
        }
        let before = gc::cycles();
        for _ in 0..6 {
            gc::collect();
        }
        assert!(gc::cycles() >= before + 6);
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
    });
    collect_n(3);
    assert!(DROPS.load(Ordering::Relaxed) > before);
}

#[test]
fn a_goroutine_without_roots_that_never_yields_does_not_stall_a_collection() {
    let _s = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let spinning = Arc::new(AtomicBool::new(false));
    let (stop2, spin2) = (stop.clone(), spinning.clone());
    // The spinner is the runtime's main goroutine; the collections come from this thread.
    let rt = std::thread::spawn(move || {
        goro::Builder::new().max_procs(1).run(move || {
            let held = node(5); // a counted handle: fine, it is no stack root
            spin2.store(true, Ordering::Relaxed);
            while !stop2.load(Ordering::Relaxed) {
                std::hint::spin_loop(); // no safepoint at all
            }
            ok(&held, 5);
        })
    });
    while !spinning.load(Ordering::Relaxed) {
        std::thread::yield_now();
    }
    let start = std::time::Instant::now();
    let before = gc::cycles();
    collect_n(3);
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    rt.join().unwrap();
    assert!(gc::cycles() >= before + 3);
    assert!(
        took < std::time::Duration::from_secs(20),
        "collections stalled for {took:?}"
    );
}

#[test]
fn roots_survive_migration() {
    let _s = serial();
    collect_n(2);
    let before = DROPS.load(Ordering::Relaxed);
    // SAFETY: these goroutines keep no thread-bound state across switches.
    let b = unsafe { goro::Builder::new().max_procs(2).allow_migration() };
    b.run(|| {
        let hs: Vec<_> = (0..64u64)
            .map(|i| {
                goro::spawn(move || {
                    root!(let r = list(i));
                    for _ in 0..50 {
                        goro::yield_now();
                        drop(node(9));
                        ok(&r, i);
                    }
                })
            })
            .collect();
        for _ in 0..5 {
            gc::collect();
        }
        for h in hs {
            h.join().unwrap();
        }
    });
    collect_n(3);
    let freed = DROPS.load(Ordering::Relaxed) - before;
    assert_eq!(freed, 64 * 2 + 64 * 50, "every object freed once");
}

#[test]
fn roots_of_goroutines_that_never_switch_out_are_scanned_where_they_stand() {
    let _s = serial();
    collect_n(2);
    let before = DROPS.load(Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let (stop2, ready2) = (stop.clone(), ready.clone());
    // Two Ps: one goroutine spins holding a root, one sleeps in `blocking` holding one.
    let rt = std::thread::spawn(move || {
        goro::Builder::new().max_procs(2).run(move || {
            let (stop3, ready3) = (stop2.clone(), ready2.clone());
            let sleeper = goro::spawn(move || {
                root!(let r = list(500));
                ready3.fetch_add(1, Ordering::Relaxed);
                goro::blocking(|| {
                    while !stop3.load(Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                });
                ok(&r, 500);
                ok(r.next.borrow().as_ref().unwrap(), 501);
            });
            root!(let r = list(700));
            ready2.fetch_add(1, Ordering::Relaxed);
            while !stop2.load(Ordering::Relaxed) {
                std::hint::spin_loop(); // no safepoint
            }
            ok(&r, 700);
            ok(r.next.borrow().as_ref().unwrap(), 701);
            sleeper.join().unwrap();
        })
    });
    while ready.load(Ordering::Relaxed) < 2 {
        std::thread::yield_now();
    }
    let start = std::time::Instant::now();
    collect_keeping(4, before);
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    rt.join().unwrap();
    assert!(
        took < std::time::Duration::from_secs(20),
        "collections stalled for {took:?}"
    );
    collect_n(3);
    assert_eq!(
        DROPS.load(Ordering::Relaxed) - before,
        4,
        "both lists freed once"
    );
}

/// A future pending until `open`, then ready (wakes the waiter it stored).
struct Gate {
    open: AtomicBool,
    arrived: AtomicBool,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

impl std::future::Future for &Gate {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        self.arrived.store(true, Ordering::Release);
        if self.open.load(Ordering::Acquire) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

#[test]
fn a_root_held_across_an_await_in_block_on_is_on_the_parked_stack() {
    let _s = serial();
    collect_n(2);
    let before = DROPS.load(Ordering::Relaxed);
    let gate = Arc::new(Gate {
        open: AtomicBool::new(false),
        arrived: AtomicBool::new(false),
        waker: std::sync::Mutex::new(None),
    });
    let g2 = gate.clone();
    goro::Builder::new().max_procs(2).run(move || {
        let h = goro::spawn(move || {
            // The future is pinned in block_on's frame, on this goroutine's stack: the root
            // inside it is uncounted, and the goroutine parks while the future is pending.
            goro::block_on(async {
                root!(let r = list(900));
                (&*g2).await;
                ok(&r, 900);
                ok(r.next.borrow().as_ref().unwrap(), 901);
            });
        });
        while !gate.arrived.load(Ordering::Acquire) {
            goro::yield_now();
        }
        collect_keeping(3, before);
        gate.open.store(true, Ordering::Release);
        if let Some(w) = gate.waker.lock().unwrap().take() {
            w.wake();
        }
        h.join().unwrap();
    });
    collect_n(3);
    assert_eq!(
        DROPS.load(Ordering::Relaxed) - before,
        2,
        "the list freed once"
    );
}

#[test]
fn a_goroutine_queued_behind_an_m_in_blocking_does_not_hold_a_cycle() {
    let _s = serial();
    collect_n(2);
    let before = DROPS.load(Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let (stop2, ready2) = (stop.clone(), ready.clone());
    let rt = std::thread::spawn(move || {
        goro::Builder::new().max_procs(1).run(move || {
            let (tx, rx) = goro::chan::bounded::<()>(1);
            let a = goro::spawn(move || {
                root!(let r = list(300));
                rx.recv().unwrap();
                ok(&r, 300);
            });
            goro::yield_now(); // a runs on this M (so is bound to it) and parks in recv
            tx.send(()).unwrap(); // a is runnable, queued behind this M
            ready2.store(true, Ordering::Release);
            // This M now sits in `blocking`: only it may run `a`, so `a` cannot switch out.
            let waited = goro::blocking(|| {
                let t = std::time::Instant::now();
                while !stop2.load(Ordering::Acquire) && t.elapsed().as_secs() < 20 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                t.elapsed()
            });
            a.join().unwrap();
            waited
        })
    });
    while !ready.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    collect_keeping(3, before);
    stop.store(true, Ordering::Release);
    let waited = rt.join().unwrap();
    assert!(
        waited.as_secs() < 20,
        "the cycle waited for the goroutine queued behind `blocking`"
    );
    collect_n(3);
    assert_eq!(
        DROPS.load(Ordering::Relaxed) - before,
        2,
        "the list freed once"
    );
}
