//! Placements, cycles, Drop exactly once, finalizer hazards.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use goro_gc::{collect, Gc, GcCell, GcMutex, Trace};

/// Tests share one heap and one collector; run them one at a time so the counts are theirs.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

static DROPS: Mutex<Option<HashMap<u64, usize>>> = Mutex::new(None);
static NEXT: AtomicUsize = AtomicUsize::new(1);

fn dropped(id: u64) -> usize {
    DROPS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(&id).copied())
        .unwrap_or(0)
}

#[derive(Trace)]
struct Node {
    #[gc(skip)]
    id: u64,
    #[gc(skip)]
    check: u64,
    next: GcCell<Option<Gc<Node>>>,
}

impl Node {
    fn new() -> Gc<Node> {
        let id = NEXT.fetch_add(1, Ordering::Relaxed) as u64;
        Gc::new(Node {
            id,
            check: id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            next: GcCell::new(None),
        })
    }
    fn ok(&self) -> bool {
        self.check == self.id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        *DROPS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .entry(self.id)
            .or_default() += 1;
    }
}

fn ring(n: usize) -> (Gc<Node>, Vec<u64>) {
    let first = Node::new();
    let mut ids = vec![first.id];
    let mut cur = first.clone();
    for _ in 1..n {
        let x = Node::new();
        ids.push(x.id);
        *cur.next.borrow_mut() = Some(x.clone());
        cur = x;
    }
    *cur.next.borrow_mut() = Some(first.clone());
    (first, ids)
}

fn alive(ids: &[u64]) -> bool {
    ids.iter().all(|&i| dropped(i) == 0)
}

fn walk(h: &Gc<Node>, n: usize) {
    let mut cur = h.clone();
    for _ in 0..n {
        assert!(cur.ok());
        let nx = cur.next.borrow().clone().unwrap();
        cur = nx;
    }
}

#[test]
fn unreachable_cycles_are_freed_once() {
    let _s = serial();
    let (h, ids) = ring(100);
    collect();
    assert!(alive(&ids));
    walk(&h, 200);
    drop(h);
    collect();
    for &i in &ids {
        assert_eq!(dropped(i), 1, "node {i}");
    }
    collect();
    for &i in &ids {
        assert_eq!(dropped(i), 1, "node {i} dropped twice");
    }
}

static STATIC: Mutex<Option<Gc<Node>>> = Mutex::new(None);
thread_local! {
    static TL: std::cell::RefCell<Option<Gc<Node>>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn placements_keep_objects_alive() {
    let _s = serial();
    let (a, ia) = ring(10);
    #[allow(clippy::useless_vec)] // the placement under test is a Vec
    let v = vec![a];
    let (b, ib) = ring(10);
    let bx = Box::new(b);
    let (c, ic) = ring(10);
    let mut map = HashMap::new();
    map.insert(1, c);
    let (d, id) = ring(10);
    *STATIC.lock().unwrap() = Some(d);
    let (e, ie) = ring(10);
    TL.with(|t| *t.borrow_mut() = Some(e));
    let (f, i_f) = ring(10);
    let leaked: &'static Gc<Node> = Box::leak(Box::new(f));
    let (g, ig) = ring(10);
    let addr = &*g as *const Node as usize;
    std::mem::forget(g);
    let (tx, rx) = std::sync::mpsc::channel();
    let (h, ih) = ring(10);
    tx.send(h).unwrap();
    let (k, ik) = ring(10);
    let th = std::thread::spawn(move || {
        collect();
        collect();
        walk(&k, 30);
        k
    });
    for _ in 0..3 {
        collect();
    }
    let k = th.join().unwrap();
    for ids in [&ia, &ib, &ic, &id, &ie, &i_f, &ig, &ih, &ik] {
        assert!(alive(ids));
    }
    walk(&v[0], 30);
    walk(&bx, 30);
    walk(&map[&1], 30);
    walk(STATIC.lock().unwrap().as_ref().unwrap(), 30);
    TL.with(|t| walk(t.borrow().as_ref().unwrap(), 30));
    walk(leaked, 30);
    // SAFETY: the forgotten handle keeps the object alive forever.
    assert!(unsafe { &*(addr as *const Node) }.ok());
    walk(&rx.recv().unwrap(), 30);
    walk(&k, 30);
}

#[derive(Trace)]
struct Peek {
    other: GcCell<Option<Gc<Peek>>>,
    #[gc(skip)]
    seen: &'static AtomicUsize,
}

impl Drop for Peek {
    fn drop(&mut self) {
        // Dereferences another member of its dead cycle: must panic (reported), never read freed
        // memory.
        if let Some(o) = self.other.borrow().as_ref() {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                o.seen.load(Ordering::Relaxed)
            }));
            if r.is_err() {
                self.seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn drop_that_reads_its_dead_cycle_panics_not_reads_freed_memory() {
    let _s = serial();
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let a = Gc::new(Peek {
        other: GcCell::new(None),
        seen: &SEEN,
    });
    let b = Gc::new(Peek {
        other: GcCell::new(Some(a.clone())),
        seen: &SEEN,
    });
    *a.other.borrow_mut() = Some(b.clone());
    drop((a, b));
    collect();
    assert_eq!(SEEN.load(Ordering::Relaxed), 2);
}

#[derive(Trace)]
struct PeekRoot {
    other: GcCell<Option<Gc<PeekRoot>>>,
    #[gc(skip)]
    seen: &'static AtomicUsize,
}

impl Drop for PeekRoot {
    fn drop(&mut self) {
        // Roots another member of its dead cycle (whose memory its batch frees afterwards):
        // making the root must panic, or the root would outlive what it names.
        let o = self.other.borrow_mut().take();
        if let Some(o) = o {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                goro_gc::root!(let r = &o);
                r.seen.load(Ordering::Relaxed)
            }));
            if r.is_err() {
                self.seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn drop_that_roots_its_dead_cycle_panics() {
    let _s = serial();
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let a = Gc::new(PeekRoot {
        other: GcCell::new(None),
        seen: &SEEN,
    });
    let b = Gc::new(PeekRoot {
        other: GcCell::new(Some(a.clone())),
        seen: &SEEN,
    });
    *a.other.borrow_mut() = Some(b.clone());
    drop((a, b));
    collect();
    assert_eq!(SEEN.load(Ordering::Relaxed), 2);
}

static ESCAPED: Mutex<Vec<Gc<Escape>>> = Mutex::new(Vec::new());

#[derive(Trace)]
struct Escape {
    me: GcCell<Option<Gc<Escape>>>,
}

impl Drop for Escape {
    fn drop(&mut self) {
        // Resurrection attempt (rust-gc #124): store a clone of our own handle in a global.
        if let Some(me) = self.me.borrow_mut().take() {
            ESCAPED.lock().unwrap().push(me);
        }
    }
}

#[test]
fn drop_that_resurrects_cannot_reach_a_dropped_value() {
    let _s = serial();
    let a = Gc::new(Escape {
        me: GcCell::new(None),
    });
    *a.me.borrow_mut() = Some(a.clone());
    drop(a);
    collect();
    let e = ESCAPED.lock().unwrap().pop().expect("the drop ran");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.me.borrow().is_some()));
    assert!(r.is_err(), "a collected object must not be readable");
    drop(e); // frees the slot now
    collect();
}

#[derive(Trace)]
struct Boom(#[gc(skip)] u8);
impl Drop for Boom {
    fn drop(&mut self) {
        panic!("boom {}", self.0);
    }
}

#[test]
fn panicking_drop_is_reported_and_collection_goes_on() {
    let _s = serial();
    drop(Gc::new(Boom(7)));
    collect();
    let (h, ids) = ring(5);
    drop(h);
    collect();
    assert!(ids.iter().all(|&i| dropped(i) == 1));
}

#[test]
fn gc_mutex_shared_between_threads() {
    let _s = serial();
    #[derive(Trace)]
    struct Shared {
        list: GcMutex<Vec<Gc<Node>>>,
    }
    let s = Gc::new(Shared {
        list: GcMutex::new(Vec::new()),
    });
    let ths: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    let n = Node::new();
                    let mut l = s.list.lock();
                    l.push(n);
                    if i % 3 == 0 {
                        l.remove(0);
                    }
                    drop(l);
                    if i % 500 == 0 {
                        collect();
                    }
                }
            })
        })
        .collect();
    for t in ths {
        t.join().unwrap();
    }
    collect();
    for n in s.list.lock().iter() {
        assert!(n.ok());
        assert_eq!(dropped(n.id), 0);
    }
}

#[test]
fn concurrent_allocation_never_shares_a_slot() {
    let _s = serial();
    // Threads allocating one fresh type at once: each span has one owner, each slot one object.
    #[derive(Trace)]
    struct Tagged(#[gc(skip)] u64, #[gc(skip)] u64);
    let ths: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let v: Vec<Gc<Tagged>> = (0..50_000).map(|i| Gc::new(Tagged(t, i))).collect();
                v
            })
        })
        .collect();
    let all: Vec<Vec<Gc<Tagged>>> = ths.into_iter().map(|t| t.join().unwrap()).collect();
    collect();
    let mut seen = std::collections::HashSet::new();
    for (t, v) in all.iter().enumerate() {
        for (i, g) in v.iter().enumerate() {
            assert_eq!((g.0, g.1), (t as u64, i as u64));
            assert!(
                seen.insert(&**g as *const Tagged as usize),
                "two objects share a slot"
            );
        }
    }
}

#[test]
fn epochs_wrap_without_losing_objects() {
    let _s = serial();
    // More cycles than there are epochs (250), with live objects of every age.
    let (h, ids) = ring(50);
    let mut extra = Vec::new();
    for i in 0..600 {
        if i % 7 == 0 {
            extra.push(ring(3));
        }
        if i % 11 == 0 && !extra.is_empty() {
            extra.remove(0);
        }
        collect();
    }
    walk(&h, 100);
    assert!(alive(&ids));
    for (x, xi) in &extra {
        walk(x, 6);
        assert!(alive(xi));
    }
}

#[test]
#[ignore = "takes the 10 s collect() waits for Drops before it gives up"]
fn a_blocking_drop_does_not_hang_collect() {
    let _s = serial();
    static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    #[derive(Trace)]
    struct Stuck;
    impl Drop for Stuck {
        fn drop(&mut self) {
            while !RELEASE.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    drop(Gc::new(Stuck));
    let t = std::time::Instant::now();
    collect();
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    RELEASE.store(true, Ordering::Relaxed);
    collect();
}

#[derive(Trace)]
enum Tree<T: Send + 'static> {
    Leaf(#[gc(skip)] u32),
    Node {
        left: Gc<Tree<T>>,
        right: Gc<Tree<T>>,
        payload: T,
    },
    Empty,
}

#[derive(Trace)]
struct Holder<T, const N: usize>
where
    T: Send + 'static,
{
    items: [Option<T>; N],
    back: GcMutex<Option<Gc<Holder<T, N>>>>,
}

#[test]
fn derive_on_generic_structs_and_enums() {
    let _s = serial();
    let leaf = Gc::new(Tree::<Gc<Node>>::Leaf(1));
    let (h, ids) = ring(3);
    let t = Gc::new(Tree::Node {
        left: leaf.clone(),
        right: leaf,
        payload: h.clone(),
    });
    drop(h);
    let holder = Gc::new(Holder::<Gc<Tree<Gc<Node>>>, 2> {
        items: [Some(t.clone()), None],
        back: GcMutex::new(None),
    });
    *holder.back.lock() = Some(holder.clone()); // a cycle through a generic type
    drop(t);
    collect();
    // The ring is reachable only through the enum's generic payload inside the holder.
    assert!(alive(&ids));
    match &**holder.items[0].as_ref().unwrap() {
        Tree::Node { payload, left, .. } => {
            walk(payload, 6);
            assert!(matches!(**left, Tree::Leaf(1)));
        }
        _ => panic!("wrong variant"),
    }
    let _ = Tree::<u8>::Empty;
    drop(holder);
    collect();
    assert!(
        ids.iter().all(|&i| dropped(i) == 1),
        "the generic cycle was not freed"
    );
}
