//! goro's side of the collector workloads of `benches/compare` (the shapes of
//! `benches/peers/go/gc.go` and `benches/peers/rustgc`, which document them): gc_latency,
//! gc_trees, gc_parent_trees, gc_list, gc_graph. Each prints `workload goro metric value unit`.
// The payload fields (`v`, `a`, `b`) exist for the objects' sizes, as in the Go peer.
#![allow(dead_code)]
use goro::gc::{self, Gc, GcCell, Trace};
use std::time::{Duration, Instant};

fn gc_row(workload: &str, metric: &str, value: f64, unit: &str, prec: usize) {
    println!("{workload} goro {metric} {value:.prec$} {unit}");
}

fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut s = xs.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((p * s.len() as f64 + 0.999999) as usize).clamp(1, s.len()) - 1;
    s[i]
}

fn max_of(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(0.0, f64::max)
}

// ---- gc_latency ----

#[derive(Trace)]
struct LatNode {
    left: Option<Gc<LatNode>>,
    right: Option<Gc<LatNode>>,
    #[gc(skip)]
    v: i64,
}

fn lat_tree(d: i64) -> Option<Gc<LatNode>> {
    if d == 0 {
        return None;
    }
    Some(Gc::new(LatNode {
        left: lat_tree(d - 1),
        right: lat_tree(d - 1),
        v: d,
    }))
}

fn lat_count(t: &Option<Gc<LatNode>>) -> usize {
    match t {
        None => 0,
        Some(n) => 1 + lat_count(&n.left) + lat_count(&n.right),
    }
}

/// 48 bytes, as Go's: next (8) + a Vec (24) + two ints.
#[derive(Trace)]
struct LatObj {
    next: Option<Gc<LatObj>>,
    buf: Vec<u8>,
    #[gc(skip)]
    a: i64,
    #[gc(skip)]
    b: i64,
}

/// `ballast_mib`: that much ordinary Rust heap (`Vec<u8>`, written once, holding no `Gc`) is
/// kept for the whole run (the "1 GiB of plain Rust heap" variant: the collector must
/// not pay for memory it does not manage).
pub fn gc_latency(secs: f64, ballast_mib: usize) {
    let ballast: Vec<u8> = vec![1u8; ballast_mib << 20];
    std::hint::black_box(&ballast);
    let tree = lat_tree(20);
    let ms0 = gc::mem_stats();
    let dur = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let deadline = t0 + dur;
    let workers: Vec<_> = (0..2i64)
        .map(|g| {
            goro::spawn(move || {
                let mut ring: Vec<Option<Gc<LatObj>>> = (0..256).map(|_| None).collect();
                let mut n: i64 = 0;
                while Instant::now() < deadline {
                    for _ in 0..256 {
                        let mut head: Option<Gc<LatObj>> = None;
                        for j in 0..3 {
                            head = Some(Gc::new(LatObj {
                                next: head,
                                buf: Vec::new(),
                                a: j,
                                b: g,
                            }));
                        }
                        let head = Gc::new(LatObj {
                            next: head,
                            buf: vec![0u8; 128],
                            a: 3,
                            b: g,
                        });
                        ring[(n & 255) as usize] = Some(head);
                        n += 1;
                    }
                }
                if ring[0].is_none() {
                    n = -1;
                }
                n
            })
        })
        .collect();
    let sleeper = goro::spawn(move || {
        let mut l = Vec::new();
        while Instant::now() < deadline {
            let t = Instant::now();
            goro::time::sleep(Duration::from_millis(1));
            l.push((t.elapsed().as_secs_f64() - 1e-3) * 1e3);
        }
        l
    });
    let total: i64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    let late = sleeper.join().unwrap();
    let el = t0.elapsed();
    let ms1 = gc::mem_stats();
    if lat_count(&tree) != (1 << 20) - 1 {
        eprintln!("gc_latency: tree lost nodes");
        std::process::exit(1);
    }
    let cycles = (ms1.num_gc - ms0.num_gc) as usize;
    let mut first = ms0.num_gc as usize + 1;
    if cycles > 256 {
        eprintln!(
            "compare_goro: gc_latency: {cycles} cycles ran, only the last 256 pauses are known"
        );
        first = ms1.num_gc as usize - 255;
    }
    let pauses: Vec<f64> = (first..=ms1.num_gc as usize)
        .map(|i| ms1.pause_ns[(i + 255) % 256] as f64 / 1e3)
        .collect();
    eprintln!(
        "compare_goro: gc_latency cycles {cycles} sleeps {} elapsed_s {:.2} heap_sys_mb {} heap_alloc_mb {}",
        late.len(),
        el.as_secs_f64(),
        ms1.heap_sys >> 20,
        ms1.heap_alloc >> 20,
    );
    gc_row(
        "gc_latency",
        "pause_p99",
        percentile(&pauses, 0.99),
        "us",
        1,
    );
    gc_row("gc_latency", "pause_max", max_of(&pauses), "us", 1);
    gc_row("gc_latency", "gc_cpu_fraction", ms1.gc_cpu_fraction, "x", 3);
    gc_row(
        "gc_latency",
        "peak_rss",
        super::workloads::peak_rss_bytes() as f64 / (1 << 20) as f64,
        "MB",
        1,
    );
    gc_row(
        "gc_latency",
        "lists_per_s",
        total as f64 / el.as_secs_f64(),
        "lists/s",
        0,
    );
    gc_row(
        "gc_latency",
        "sleeper_late_p99",
        percentile(&late, 0.99),
        "ms",
        2,
    );
    gc_row("gc_latency", "sleeper_late_max", max_of(&late), "ms", 2);
}

// ---- the GC-crate workloads ----

include!("gc_timing.rs");

/// goro's rows of the crate workloads.
fn goro_iters(workload: &str, f: impl FnMut()) {
    time_iters(workload, "goro", "compare_goro", f)
}

#[derive(Trace)]
struct TreeNode {
    left: Option<Gc<TreeNode>>,
    right: Option<Gc<TreeNode>>,
    #[gc(skip)]
    v: i64,
}

fn bottom_up(d: i64) -> Gc<TreeNode> {
    if d == 0 {
        return Gc::new(TreeNode {
            left: None,
            right: None,
            v: 0,
        });
    }
    Gc::new(TreeNode {
        left: Some(bottom_up(d - 1)),
        right: Some(bottom_up(d - 1)),
        v: d,
    })
}

fn check(t: &TreeNode) -> usize {
    match (&t.left, &t.right) {
        (Some(l), Some(r)) => 1 + check(l) + check(r),
        _ => 1,
    }
}

#[derive(Trace)]
struct PTreeNode {
    parent: GcCell<Option<Gc<PTreeNode>>>,
    left: Option<Gc<PTreeNode>>,
    right: Option<Gc<PTreeNode>>,
    #[gc(skip)]
    v: i64,
}

fn bottom_up_p(d: i64) -> Gc<PTreeNode> {
    if d == 0 {
        return Gc::new(PTreeNode {
            parent: GcCell::new(None),
            left: None,
            right: None,
            v: 0,
        });
    }
    let n = Gc::new(PTreeNode {
        parent: GcCell::new(None),
        left: Some(bottom_up_p(d - 1)),
        right: Some(bottom_up_p(d - 1)),
        v: d,
    });
    *n.left.as_ref().unwrap().parent.borrow_mut() = Some(n.clone());
    *n.right.as_ref().unwrap().parent.borrow_mut() = Some(n.clone());
    n
}

fn check_p(t: &Gc<PTreeNode>) -> usize {
    match (&t.left, &t.right) {
        (Some(l), Some(r)) => {
            let ok =
                |c: &Gc<PTreeNode>| c.parent.borrow().as_ref().is_some_and(|p| Gc::ptr_eq(p, t));
            if !ok(l) || !ok(r) {
                die("gc_parent_trees: bad parent link".into());
            }
            1 + check_p(l) + check_p(r)
        }
        _ => 1,
    }
}

const MIN_DEPTH: i64 = 4;
const MAX_DEPTH: i64 = 11;

fn nodes(d: i64) -> usize {
    (1 << (d + 1)) - 1
}

fn binary_trees(name: &str, build: impl Fn(i64) -> Box<dyn Fn() -> usize>) {
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

pub fn gc_trees() {
    goro_iters("gc_trees", || {
        binary_trees("gc_trees", |d| {
            let t = bottom_up(d);
            Box::new(move || check(&t))
        });
        gc::collect();
    });
}

pub fn gc_parent_trees() {
    goro_iters("gc_parent_trees", || {
        binary_trees("gc_parent_trees", |d| {
            let t = bottom_up_p(d);
            Box::new(move || check_p(&t))
        });
        gc::collect();
    });
}

#[derive(Trace)]
struct ListNode {
    next: GcCell<Option<Gc<ListNode>>>,
    prev: Option<Gc<ListNode>>,
    #[gc(skip)]
    v: usize,
}

const N_LISTS: usize = 30;
const LIST_LEN: usize = 4096;

pub fn gc_list() {
    goro_iters("gc_list", || {
        let mut heads = Vec::with_capacity(N_LISTS);
        for _ in 0..N_LISTS {
            let head = Gc::new(ListNode {
                next: GcCell::new(None),
                prev: None,
                v: 0,
            });
            let mut tail = head.clone();
            for i in 1..LIST_LEN {
                let n = Gc::new(ListNode {
                    next: GcCell::new(None),
                    prev: Some(tail.clone()),
                    v: i,
                });
                *tail.next.borrow_mut() = Some(n.clone());
                tail = n;
            }
            heads.push(head);
        }
        for h in &heads {
            let (mut s, mut c) = (0, 0);
            let mut cur = Some(h.clone());
            while let Some(n) = cur {
                let next = n.next.borrow().clone();
                if let Some(nx) = &next {
                    if !nx.prev.as_ref().is_some_and(|p| Gc::ptr_eq(p, &n)) {
                        die("gc_list: bad prev link".into());
                    }
                }
                s += n.v;
                c += 1;
                cur = next;
            }
            if c != LIST_LEN || s != LIST_LEN * (LIST_LEN - 1) / 2 {
                die(format!("gc_list: count {c} sum {s}"));
            }
        }
        drop(heads);
        gc::collect();
    });
}

#[derive(Trace)]
struct GraphNode {
    #[gc(skip)]
    id: usize,
    edges: GcCell<Vec<Gc<GraphNode>>>,
}

const GRAPH_NODES: u64 = 1 << 15;
const GRAPH_EDGES: usize = 1 << 15;

fn lcg(x: u64) -> u64 {
    x.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

pub fn gc_graph() {
    goro_iters("gc_graph", || {
        let ns: Vec<Gc<GraphNode>> = (0..GRAPH_NODES as usize)
            .map(|id| {
                Gc::new(GraphNode {
                    id,
                    edges: GcCell::new(Vec::new()),
                })
            })
            .collect();
        let mut x = 1u64;
        for _ in 0..GRAPH_EDGES {
            x = lcg(x);
            let from = (x >> 33) % GRAPH_NODES;
            x = lcg(x);
            let to = (x >> 33) % GRAPH_NODES;
            ns[from as usize]
                .edges
                .borrow_mut()
                .push(ns[to as usize].clone());
        }
        let mut visited = vec![false; GRAPH_NODES as usize];
        let (mut seen, mut edges) = (0, 0);
        let mut stack: Vec<Gc<GraphNode>> = Vec::new();
        for root in &ns {
            if visited[root.id] {
                continue;
            }
            visited[root.id] = true;
            stack.clear();
            stack.push(root.clone());
            while let Some(n) = stack.pop() {
                seen += 1;
                for m in n.edges.borrow().iter() {
                    edges += 1;
                    if !visited[m.id] {
                        visited[m.id] = true;
                        stack.push(m.clone());
                    }
                }
            }
        }
        if seen != GRAPH_NODES as usize || edges != GRAPH_EDGES {
            die(format!("gc_graph: seen {seen} edges {edges}"));
        }
        drop(ns);
        gc::collect();
    });
}
