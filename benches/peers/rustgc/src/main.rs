//! Rust GC-crate peer for goro's GC benchmarks (the benchmark 4): the workloads of
//! `benches/peers/go/gc.go` (`gc_trees`, `gc_parent_trees`, `gc_list`, `gc_graph`) written once
//! (the `workloads!` macro) and instantiated for six memory managers:
//!
//! - `rc`: `Rc`, `RefCell`, back/parent/prev links as `rc::Weak` (no collector);
//! - `arc`: `Arc`, `Mutex`, back links as `sync::Weak` (no collector);
//! - `gc`: crate `gc` (`Gc`, `GcCell`; single-threaded tracing), `gc::force_collect()`;
//! - `dumpster`: crate `dumpster`, its `sync` flavour (`sync::Gc`, `Mutex`),
//!   `dumpster::sync::collect()`;
//! - `rust_cc`: crate `rust-cc` (`Cc`, `RefCell`; default features, so auto-collect is on),
//!   `rust_cc::collect_cycles()`;
//! - `bacon_rajan_cc`: crate `bacon_rajan_cc` (`Cc`, `RefCell`, hand-written `Trace`),
//!   `bacon_rajan_cc::collect_cycles()`.
//!
//! `rustgc <workload> <impl>` (or `rustgc <workload> --impl <impl>`) prints
//! `<workload> <impl> per_iter <ms> ms`: one warm-up iteration sets the count (about 1.5 s worth,
//! at least 3, at most 101), per_iter is the median. Every iteration ends with the impl's collect
//! call (none for rc/arc), inside the timing. Shapes (the same as gc.go):
//!
//! - `gc_trees`: benchmarks-game binary trees, max depth 11, min depth 4: a stretch tree of
//!   depth 12 built, walked, dropped; a long-lived tree of depth 11; for d = 4, 6, 8, 10,
//!   2^(11-d+4) trees of depth d built, walked (node count checked), dropped; the long-lived
//!   tree walked and dropped. Node: two optional children and an i64.
//! - `gc_parent_trees`: the same with a parent link in every node (a strong pointer for the GC
//!   crates, so cycles; `Weak` for rc/arc), set after the parent is built, checked on the walk.
//! - `gc_list`: 30 doubly linked lists of 4,096 nodes (next strong, prev strong for the GC
//!   crates / `Weak` for rc/arc), all kept, each walked forward (sum and prev links checked),
//!   then all dropped.
//! - `gc_graph`: 2^15 nodes (an id and a cell of edge pointers), 2^15 edges from gc.go's LCG, a
//!   DFS from every unvisited node counting nodes and edges (checked), then all dropped. Not for
//!   rc/arc (the cycles would leak): they print nothing for it and say so on stderr (exit 0).

include!("../../../workloads/gc_timing.rs");

/// The peer's rows of the crate workloads.
fn rustgc_iters(workload: &str, imp: &str, f: impl FnMut()) {
    time_iters(workload, imp, "rustgc", f)
}

const MIN_DEPTH: u32 = 4;
const MAX_DEPTH: u32 = 11;
const N_LISTS: usize = 30;
const LIST_LEN: i64 = 4096;
const GRAPH_NODES: usize = 1 << 15;
const GRAPH_EDGES: usize = 1 << 15;

fn nodes(d: u32) -> usize {
    (1 << (d + 1)) - 1
}

fn lcg(x: u64) -> u64 {
    x.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

/// One benchmarks-game iteration; `build(d)` builds a tree of depth d and returns its walk.
fn binary_trees<F: FnOnce() -> usize>(name: &str, build: impl Fn(u32) -> F) {
    if build(MAX_DEPTH + 1)() != nodes(MAX_DEPTH + 1) {
        die(format!("{name}: stretch tree"));
    }
    let long = build(MAX_DEPTH);
    let mut d = MIN_DEPTH;
    while d <= MAX_DEPTH {
        let iters = 1usize << (MAX_DEPTH - d + MIN_DEPTH);
        let c: usize = (0..iters).map(|_| build(d)()).sum();
        if c != iters * nodes(d) {
            die(format!("{name}: depth {d} check {c}"));
        }
        d += 2;
    }
    if long() != nodes(MAX_DEPTH) {
        die(format!("{name}: long-lived tree"));
    }
}

/// The workloads, over the module's `P<T>` (strong pointer), `C<T>` (cell), `Bk<T>` (back link),
/// `cnew`, `with` (mutable access to a cell), `down` (strong -> back link), `is` (does a back link
/// point at this node) and `collect`; `$a` are the node structs' attributes (Trace derives).
macro_rules! workloads {
    ($imp:literal $(, #[$a:meta])*) => {
        $(#[$a])*
        pub struct Tree {
            l: Option<P<Tree>>,
            r: Option<P<Tree>>,
            v: i64,
        }
        $(#[$a])*
        pub struct PTree {
            parent: C<Option<Bk<PTree>>>,
            l: Option<P<PTree>>,
            r: Option<P<PTree>>,
            v: i64,
        }
        $(#[$a])*
        pub struct LNode {
            next: C<Option<P<LNode>>>,
            prev: C<Option<Bk<LNode>>>,
            v: i64,
        }
        $(#[$a])*
        #[allow(dead_code)]
        pub struct GNode {
            id: usize,
            edges: C<Vec<P<GNode>>>,
        }

        fn tree(d: u32) -> P<Tree> {
            if d == 0 {
                return P::new(Tree { l: None, r: None, v: 0 });
            }
            P::new(Tree { l: Some(tree(d - 1)), r: Some(tree(d - 1)), v: d as i64 })
        }
        fn check(t: &Tree) -> usize {
            match (&t.l, &t.r) {
                (Some(l), Some(r)) => 1 + check(l) + check(r),
                _ => 1 + (t.v as usize & 0),
            }
        }
        fn ptree(d: u32) -> P<PTree> {
            if d == 0 {
                return P::new(PTree { parent: cnew(None), l: None, r: None, v: 0 });
            }
            let n = P::new(PTree {
                parent: cnew(None),
                l: Some(ptree(d - 1)),
                r: Some(ptree(d - 1)),
                v: d as i64,
            });
            with(&n.l.as_ref().unwrap().parent, |p| *p = Some(down(&n)));
            with(&n.r.as_ref().unwrap().parent, |p| *p = Some(down(&n)));
            n
        }
        fn pcheck(t: &PTree) -> usize {
            match (&t.l, &t.r) {
                (Some(l), Some(r)) => {
                    for c in [l, r] {
                        if !with(&c.parent, |p| p.as_ref().map_or(false, |p| is(p, t))) {
                            crate::die(format!("gc_parent_trees {}: bad parent link", $imp));
                        }
                    }
                    1 + pcheck(l) + pcheck(r)
                }
                _ => 1 + (t.v as usize & 0),
            }
        }

        pub fn trees() {
            crate::rustgc_iters("gc_trees", $imp, || {
                crate::binary_trees("gc_trees", |d| {
                    let t = tree(d);
                    move || check(&t)
                });
                collect();
            });
        }
        pub fn parent_trees() {
            crate::rustgc_iters("gc_parent_trees", $imp, || {
                crate::binary_trees("gc_parent_trees", |d| {
                    let t = ptree(d);
                    move || pcheck(&t)
                });
                collect();
            });
        }
        pub fn list() {
            crate::rustgc_iters("gc_list", $imp, || {
                let mut heads = Vec::with_capacity(crate::N_LISTS);
                for _ in 0..crate::N_LISTS {
                    let head = P::new(LNode { next: cnew(None), prev: cnew(None), v: 0 });
                    let mut tail = head.clone();
                    for i in 1..crate::LIST_LEN {
                        let n = P::new(LNode { next: cnew(None), prev: cnew(Some(down(&tail))), v: i });
                        with(&tail.next, |x| *x = Some(n.clone()));
                        tail = n;
                    }
                    heads.push(head);
                }
                for h in &heads {
                    // SAFETY (the deref below): `heads` keeps every node alive for the whole walk
                    // and nothing is mutated while it runs, so `cur` always points to a live node.
                    let mut cur: *const LNode = &**h;
                    let (mut s, mut c) = (0i64, 0i64);
                    while !cur.is_null() {
                        let n = unsafe { &*cur };
                        s += n.v;
                        c += 1;
                        cur = with(&n.next, |x| match x {
                            Some(m) => {
                                if !with(&m.prev, |p| p.as_ref().map_or(false, |p| is(p, n))) {
                                    crate::die(format!("gc_list {}: bad prev link", $imp));
                                }
                                &**m as *const LNode
                            }
                            None => std::ptr::null(),
                        });
                    }
                    if c != crate::LIST_LEN || s != crate::LIST_LEN * (crate::LIST_LEN - 1) / 2 {
                        crate::die(format!("gc_list {}: count {c} sum {s}", $imp));
                    }
                }
                drop(heads);
                collect();
            });
        }
        #[allow(dead_code)]
        pub fn graph() {
            crate::rustgc_iters("gc_graph", $imp, || {
                let ns: Vec<P<GNode>> =
                    (0..crate::GRAPH_NODES).map(|id| P::new(GNode { id, edges: cnew(Vec::new()) })).collect();
                let mut x = 1u64;
                for _ in 0..crate::GRAPH_EDGES {
                    x = crate::lcg(x);
                    let from = ((x >> 33) % crate::GRAPH_NODES as u64) as usize;
                    x = crate::lcg(x);
                    let to = ((x >> 33) % crate::GRAPH_NODES as u64) as usize;
                    with(&ns[from].edges, |e| e.push(ns[to].clone()));
                }
                let mut visited = vec![false; crate::GRAPH_NODES];
                let (mut seen, mut edges) = (0usize, 0usize);
                let mut stack: Vec<usize> = Vec::new();
                for root in 0..crate::GRAPH_NODES {
                    if visited[root] {
                        continue;
                    }
                    visited[root] = true;
                    stack.push(root);
                    while let Some(i) = stack.pop() {
                        seen += 1;
                        with(&ns[i].edges, |es| {
                            for m in es.iter() {
                                edges += 1;
                                if !visited[m.id] {
                                    visited[m.id] = true;
                                    stack.push(m.id);
                                }
                            }
                        });
                    }
                }
                if seen != crate::GRAPH_NODES || edges != crate::GRAPH_EDGES {
                    crate::die(format!("gc_graph {}: seen {seen} edges {edges}", $imp));
                }
                drop(ns);
                collect();
            });
        }
    };
}

mod rc {
    use std::cell::RefCell;
    use std::rc::{Rc, Weak};
    type P<T> = Rc<T>;
    type C<T> = RefCell<T>;
    type Bk<T> = Weak<T>;
    fn cnew<T>(v: T) -> C<T> {
        RefCell::new(v)
    }
    fn with<T, R>(c: &C<T>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut c.borrow_mut())
    }
    fn down<T>(p: &P<T>) -> Bk<T> {
        Rc::downgrade(p)
    }
    fn is<T>(b: &Bk<T>, t: &T) -> bool {
        std::ptr::eq(b.as_ptr(), t)
    }
    fn collect() {}
    workloads!("rc");
}

mod arc {
    use std::sync::{Arc, Mutex, Weak};
    type P<T> = Arc<T>;
    type C<T> = Mutex<T>;
    type Bk<T> = Weak<T>;
    fn cnew<T>(v: T) -> C<T> {
        Mutex::new(v)
    }
    fn with<T, R>(c: &C<T>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut c.lock().unwrap())
    }
    fn down<T>(p: &P<T>) -> Bk<T> {
        Arc::downgrade(p)
    }
    fn is<T>(b: &Bk<T>, t: &T) -> bool {
        std::ptr::eq(b.as_ptr(), t)
    }
    fn collect() {}
    workloads!("arc");
}

#[allow(non_local_definitions)] // gc_derive 0.5 wraps its impls in consts
mod gc_crate {
    use gc::{Gc, GcCell};
    type P<T> = Gc<T>;
    type C<T> = GcCell<T>;
    type Bk<T> = Gc<T>;
    fn cnew<T: gc::Trace>(v: T) -> C<T> {
        GcCell::new(v)
    }
    fn with<T: gc::Trace, R>(c: &C<T>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut c.borrow_mut())
    }
    fn down<T: gc::Trace>(p: &P<T>) -> Bk<T> {
        p.clone()
    }
    fn is<T: gc::Trace>(b: &Bk<T>, t: &T) -> bool {
        std::ptr::eq(&**b, t)
    }
    fn collect() {
        gc::force_collect();
    }
    workloads!("gc", #[derive(gc::Trace, gc::Finalize)]);
}

mod dumpster_sync {
    use dumpster::sync::Gc;
    use std::sync::Mutex;
    type P<T> = Gc<T>;
    type C<T> = Mutex<T>;
    type Bk<T> = Gc<T>;
    fn cnew<T>(v: T) -> C<T> {
        Mutex::new(v)
    }
    fn with<T, R>(c: &C<T>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut c.lock().unwrap())
    }
    fn down<T: dumpster::Trace + Send + Sync + 'static>(p: &P<T>) -> Bk<T> {
        p.clone()
    }
    fn is<T: dumpster::Trace + Send + Sync + 'static>(b: &Bk<T>, t: &T) -> bool {
        std::ptr::eq(&**b, t)
    }
    fn collect() {
        dumpster::sync::collect();
    }
    workloads!("dumpster");
    // dumpster's #[derive(Trace)] loses its hygiene inside `workloads!` (its generated body
    // can't see `self`/`visitor`), so the same impls are written out by hand.
    // SAFETY (the four impls): each visits every field that holds a dumpster `Gc`, and only those.
    use dumpster::{Trace, Visitor};
    unsafe impl Trace for Tree {
        fn accept<V: Visitor>(&self, v: &mut V) -> Result<(), ()> {
            self.l.accept(v)?;
            self.r.accept(v)
        }
    }
    unsafe impl Trace for PTree {
        fn accept<V: Visitor>(&self, v: &mut V) -> Result<(), ()> {
            self.parent.accept(v)?;
            self.l.accept(v)?;
            self.r.accept(v)
        }
    }
    unsafe impl Trace for LNode {
        fn accept<V: Visitor>(&self, v: &mut V) -> Result<(), ()> {
            self.next.accept(v)?;
            self.prev.accept(v)
        }
    }
    unsafe impl Trace for GNode {
        fn accept<V: Visitor>(&self, v: &mut V) -> Result<(), ()> {
            self.edges.accept(v)
        }
    }
}

mod rust_cc_crate {
    use rust_cc::Cc;
    use std::cell::RefCell;
    type P<T> = Cc<T>;
    type C<T> = RefCell<T>;
    type Bk<T> = Cc<T>;
    fn cnew<T>(v: T) -> C<T> {
        RefCell::new(v)
    }
    fn with<T, R>(c: &C<T>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut c.borrow_mut())
    }
    fn down<T: rust_cc::Trace + 'static>(p: &P<T>) -> Bk<T> {
        p.clone()
    }
    fn is<T: rust_cc::Trace + 'static>(b: &Bk<T>, t: &T) -> bool {
        std::ptr::eq(&**b, t)
    }
    fn collect() {
        rust_cc::collect_cycles();
    }
    workloads!("rust_cc", #[derive(rust_cc::Trace, rust_cc::Finalize)]);
}

mod bacon {
    use bacon_rajan_cc::{Cc, Trace, Tracer};
    use std::cell::RefCell;
    type P<T> = Cc<T>;
    type C<T> = RefCell<T>;
    type Bk<T> = Cc<T>;
    fn cnew<T>(v: T) -> C<T> {
        RefCell::new(v)
    }
    fn with<T, R>(c: &C<T>, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut c.borrow_mut())
    }
    fn down<T: Trace + 'static>(p: &P<T>) -> Bk<T> {
        p.clone()
    }
    fn is<T: Trace + 'static>(b: &Bk<T>, t: &T) -> bool {
        std::ptr::eq(&**b, t)
    }
    fn collect() {
        bacon_rajan_cc::collect_cycles();
    }
    workloads!("bacon_rajan_cc");
    // bacon_rajan_cc 0.4 has no derive: trace every owned Cc by hand.
    impl Trace for Tree {
        fn trace(&self, t: &mut Tracer) {
            self.l.trace(t);
            self.r.trace(t);
        }
    }
    impl Trace for PTree {
        fn trace(&self, t: &mut Tracer) {
            self.parent.trace(t);
            self.l.trace(t);
            self.r.trace(t);
        }
    }
    impl Trace for LNode {
        fn trace(&self, t: &mut Tracer) {
            self.next.trace(t);
            self.prev.trace(t);
        }
    }
    impl Trace for GNode {
        fn trace(&self, t: &mut Tracer) {
            self.edges.trace(t);
        }
    }
}

const USAGE: &str = "usage: rustgc <gc_trees|gc_parent_trees|gc_list|gc_graph> \
                     [--impl] <rc|arc|gc|dumpster|rust_cc|bacon_rajan_cc>";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--impl").collect();
    if args.len() != 2 {
        die(USAGE.to_string());
    }
    let (w, imp) = (args[0].as_str(), args[1].as_str());
    macro_rules! run {
        ($m:ident, $graph:expr) => {
            match w {
                "gc_trees" => $m::trees(),
                "gc_parent_trees" => $m::parent_trees(),
                "gc_list" => $m::list(),
                "gc_graph" => $graph,
                _ => die(format!("unknown workload {w:?}\n{USAGE}")),
            }
        };
    }
    match imp {
        "rc" => run!(
            rc,
            eprintln!("rustgc: gc_graph rc: not applicable (Rc cannot reclaim the graph's cycles)")
        ),
        "arc" => run!(
            arc,
            eprintln!(
                "rustgc: gc_graph arc: not applicable (Arc cannot reclaim the graph's cycles)"
            )
        ),
        "gc" => run!(gc_crate, gc_crate::graph()),
        "dumpster" => run!(dumpster_sync, dumpster_sync::graph()),
        "rust_cc" => run!(rust_cc_crate, rust_cc_crate::graph()),
        "bacon_rajan_cc" => run!(bacon, bacon::graph()),
        _ => die(format!("unknown impl {imp:?}\n{USAGE}")),
    }
}
