//! Collections while goroutines hold `Gc`s in every state the scheduler has: spawned and not
//! yet run (their closures own the handles), parked in a channel, inside `goro::blocking`,
//! and values in flight in channel buffers. Every object must survive the cycles and read back
//! intact; afterwards all of them are freed.
use std::sync::atomic::{AtomicUsize, Ordering};

use goro::gc::{self, root, Gc, GcMutex, Root, Trace};

static DROPS: AtomicUsize = AtomicUsize::new(0);
/// The tests count drops: one at a time, each collecting its garbage before it ends.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Trace)]
struct Obj {
    #[gc(skip)]
    v: u64,
    next: GcMutex<Option<Gc<Obj>>>,
}

impl Drop for Obj {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

fn obj(v: u64) -> Gc<Obj> {
    // A two-object cycle per value: only the collector can free it.
    let a = Gc::new(Obj {
        v,
        next: GcMutex::new(None),
    });
    let b = Gc::new(Obj {
        v: v + 1,
        next: GcMutex::new(Some(a.clone())),
    });
    *a.next.lock() = Some(b);
    a
}

fn check(o: &Gc<Obj>, v: u64) {
    assert_eq!(o.v, v);
    let b = o.next.lock().clone().unwrap();
    assert_eq!(b.v, v + 1);
}

#[test]
fn collections_across_every_goroutine_state() {
    across_states(goro::Builder::new().max_procs(2));
}

#[test]
fn collections_across_every_goroutine_state_with_migration() {
    // SAFETY: the goroutines here keep no thread-local state across their switches (they hold
    // only `Gc` handles and channel ends, which are `Send`).
    across_states(unsafe { goro::Builder::new().max_procs(2).allow_migration() });
}

fn across_states(builder: goro::Builder) {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = DROPS.load(Ordering::Relaxed) as u64;
    let made = builder.run(|| {
        let n = 2_000u64;
        // Not yet run: spawned in a burst (some are stolen by the other P before they start).
        let (go_tx, go_rx) = goro::chan::bounded::<()>(0);
        let mut hs = Vec::new();
        for i in 0..n {
            let o = obj(i * 10);
            let rx = go_rx.clone();
            hs.push(goro::spawn(move || {
                // Parked in a channel with the handle on its stack.
                rx.recv().unwrap();
                check(&o, i * 10);
                // Inside `blocking`, holding it.
                goro::blocking(|| std::thread::sleep(std::time::Duration::from_micros(50)));
                check(&o, i * 10);
                o
            }));
        }
        // Values in a channel buffer.
        let (tx, rx) = goro::chan::bounded::<Gc<Obj>>(64);
        for i in 0..64 {
            tx.send(obj(1_000_000 + i * 10)).unwrap();
        }
        for _ in 0..3 {
            gc::collect();
        }
        for _ in 0..n {
            go_tx.send(()).unwrap();
        }
        let mut back = Vec::new();
        for (i, h) in hs.into_iter().enumerate() {
            if i % 500 == 0 {
                gc::collect();
            }
            let o = h.join().unwrap();
            check(&o, i as u64 * 10);
            back.push(o);
        }
        for i in 0..64 {
            check(&rx.recv().unwrap(), 1_000_000 + i * 10);
        }
        drop(back);
        2 * (n + 64)
    });
    gc::collect();
    gc::collect();
    // Every object it made is dropped exactly once by now.
    let freed = DROPS.load(Ordering::Relaxed) as u64 - before;
    assert_eq!(freed, made, "{freed} of {made} objects freed");
}

#[test]
fn objects_outlive_a_runtime_and_its_restart() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Made inside one runtime, collected with no runtime running, used inside the next one.
    let kept = goro::Builder::new().max_procs(2).run(|| {
        let hs: Vec<_> = (0..100u64)
            .map(|i| goro::spawn(move || obj(i * 10)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    gc::collect();
    gc::collect();
    let sum = goro::Builder::new().max_procs(2).run(move || {
        let hs: Vec<_> = kept
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                goro::spawn(move || {
                    gc::collect();
                    check(&o, i as u64 * 10);
                    o.v
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, (0..100u64).map(|i| i * 10).sum::<u64>());
    gc::collect();
    gc::collect();
}

fn parked_collection(n: usize) {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    goro::Builder::new().max_procs(2).run(move || {
        let (tx, rx) = goro::chan::bounded::<()>(0);
        let started = std::sync::Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..n as u64)
            .map(|i| {
                let rx = rx.clone();
                let o = obj(i * 10);
                let started = started.clone();
                goro::spawn(move || {
                    started.fetch_add(1, Ordering::Relaxed);
                    if i % 2 == 0 {
                        rx.recv().unwrap();
                        check(&o, i * 10);
                    } else {
                        // Odd ones: the object's only handle is a root on the parked stack.
                        root!(let r = &o);
                        drop(o);
                        rx.recv().unwrap();
                        check(&Root::to_gc(r), i * 10);
                    }
                })
            })
            .collect();
        // All started (so each has a stack; most parked on the channel), each holding its own
        // two-object cycle.
        while started.load(Ordering::Relaxed) < n {
            goro::yield_now();
        }
        let t = std::time::Instant::now();
        gc::collect();
        gc::collect();
        let took = t.elapsed();
        // The visit summed every goroutine's used stack, in pages: at least one each.
        let inuse = goro::runtime::mem_stats().stack_inuse as usize;
        eprintln!(
            "{n} parked goroutines (half of them holding their object only by a stack root): \
             two forced cycles in {took:?}; stack_inuse {} KiB ({} B per goroutine)",
            inuse / 1024,
            inuse / n
        );
        assert!(inuse >= n * 4096, "stack_inuse {inuse} for {n} goroutines");
        for _ in 0..n {
            tx.send(()).unwrap();
        }
        for h in hs {
            h.join().unwrap();
        }
    });
    gc::collect();
    gc::collect();
}

#[test]
fn collections_while_100k_goroutines_are_parked() {
    parked_collection(100_000);
}

#[test]
#[ignore = "a million parked goroutines: ~5 GB of RSS"]
fn collections_while_1m_goroutines_are_parked() {
    parked_collection(1_000_000);
}
