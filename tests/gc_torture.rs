//! Torture: goroutines on 1, 2 and 4 Ps build and mutate random graphs (lists, trees, cycles,
//! shared between goroutines through `GcMutex`) while cycles run back to back (GOGC=1 and
//! `collect()` in a loop). Every reachable node checks its checksum (a freed node reads the
//! debug build's 0xdb poison), no node's `Drop` runs while it is reachable or twice, and at the
//! end everything is freed. Short in CI; `--ignored` runs the long version.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goro::gc::{self, root, Gc, GcMutex, Root, Trace};

const MAX_NODES: usize = 1 << 27;

struct Book {
    /// 0 never made, 1 made, 2 dropped; anything else is a double drop.
    state: Vec<AtomicU8>,
    next: AtomicU64,
    bad: AtomicBool,
}

fn book() -> &'static Book {
    static B: std::sync::OnceLock<Book> = std::sync::OnceLock::new();
    B.get_or_init(|| Book {
        state: (0..MAX_NODES).map(|_| AtomicU8::new(0)).collect(),
        next: AtomicU64::new(1),
        bad: AtomicBool::new(false),
    })
}

fn sum(id: u64) -> u64 {
    id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555
}

#[derive(Trace)]
struct TNode {
    #[gc(skip)]
    id: u64,
    #[gc(skip)]
    check: u64,
    kids: GcMutex<Vec<Gc<TNode>>>,
}

impl TNode {
    fn new(kids: Vec<Gc<TNode>>) -> Gc<TNode> {
        let id = book().next.fetch_add(1, Ordering::Relaxed);
        assert!((id as usize) < MAX_NODES, "raise MAX_NODES");
        book().state[id as usize].store(1, Ordering::Relaxed);
        Gc::new(TNode {
            id,
            check: sum(id),
            kids: GcMutex::new(kids),
        })
    }

    fn verify(&self) {
        let ok = self.check == sum(self.id)
            && book().state[self.id as usize].load(Ordering::Relaxed) == 1;
        if !ok {
            book().bad.store(true, Ordering::Relaxed);
            panic!("node {} is corrupt or was dropped while reachable", self.id);
        }
    }
}

impl Drop for TNode {
    fn drop(&mut self) {
        let s = &book().state[self.id as usize];
        if s.fetch_add(1, Ordering::Relaxed) != 1 {
            book().bad.store(true, Ordering::Relaxed);
            eprintln!("node {} dropped twice", self.id);
        }
    }
}

#[derive(Trace)]
struct World {
    slots: Vec<GcMutex<Option<Gc<TNode>>>>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `GORO_TORTURE_OPS=0,1,7`: only those operations (to narrow down a failure).
fn allowed_ops() -> Option<&'static Vec<usize>> {
    static O: std::sync::OnceLock<Option<Vec<usize>>> = std::sync::OnceLock::new();
    O.get_or_init(|| {
        std::env::var("GORO_TORTURE_OPS")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
    })
    .as_ref()
}

fn walk(n: &Gc<TNode>, depth: usize, rng: &mut Rng) {
    n.verify();
    if depth == 0 {
        return;
    }
    let kids: Vec<_> = n.kids.lock().clone();
    for k in kids.iter().take(3) {
        walk(k, depth - 1, rng);
    }
    if rng.below(8) == 0 {
        goro::yield_now();
    }
}

/// `walk` through stack roots: each level roots one kid and lets go of every counted handle
/// to it first, so the roots on this goroutine's stack are what keeps the path alive when
/// the graph is cut meanwhile (other goroutines cut edges while this one yields).
fn walk_rooted(n: Root<'_, TNode>, depth: usize, rng: &mut Rng) {
    n.verify();
    if depth == 0 {
        return;
    }
    let kids: Vec<_> = n.kids.lock().clone();
    if kids.is_empty() {
        return;
    }
    root!(let k = &kids[rng.below(kids.len())]);
    drop(kids);
    if rng.below(4) == 0 {
        goro::yield_now();
    }
    walk_rooted(k, depth - 1, rng);
    k.verify();
}

fn mutator(world: Gc<World>, seed: u64, until: Instant) -> u64 {
    let mut rng = Rng(seed | 1);
    let mut local: Vec<Gc<TNode>> = Vec::new();
    let mut ops = 0;
    while Instant::now() < until {
        ops += 1;
        let slots = world.slots.len();
        let mut op = rng.below(10);
        if let Some(allowed) = allowed_ops() {
            while !allowed.contains(&op) {
                op = rng.below(10);
            }
        }
        match op {
            // A list of new nodes.
            0 | 1 => {
                let mut head = TNode::new(Vec::new());
                for _ in 0..rng.below(8) {
                    head = TNode::new(vec![head]);
                }
                *world.slots[rng.below(slots)].lock() = Some(head);
            }
            // A small tree holding a random existing node.
            2 => {
                let old = world.slots[rng.below(slots)].lock().clone();
                let leaves: Vec<_> = (0..rng.below(4)).map(|_| TNode::new(Vec::new())).collect();
                let mut kids = leaves;
                kids.extend(old);
                local.push(TNode::new(kids));
            }
            // A cycle: link a slot's node to another slot's node, or to itself.
            3 | 4 => {
                let a = world.slots[rng.below(slots)].lock().clone();
                let b = world.slots[rng.below(slots)].lock().clone();
                if let (Some(a), Some(b)) = (a, b) {
                    a.kids.lock().push(b);
                }
            }
            // Cut edges.
            5 => {
                if let Some(a) = world.slots[rng.below(slots)].lock().clone() {
                    let mut k = a.kids.lock();
                    if !k.is_empty() {
                        let i = rng.below(k.len());
                        k.swap_remove(i);
                    }
                }
            }
            // Move between local roots and slots.
            6 => {
                if let Some(n) = local.pop() {
                    *world.slots[rng.below(slots)].lock() = Some(n);
                } else if let Some(n) = world.slots[rng.below(slots)].lock().take() {
                    local.push(n);
                }
            }
            // Take a node out of the world, walk it through stack roots, put it back.
            9 => {
                let i = rng.below(slots);
                let taken = world.slots[i].lock().take();
                if let Some(t) = taken {
                    root!(let r = &t);
                    drop(t);
                    walk_rooted(r, 8, &mut rng);
                    *world.slots[i].lock() = Some(Root::to_gc(r));
                }
            }
            // Walk and verify.
            _ => {
                let s = world.slots[rng.below(slots)].lock().clone();
                if let Some(s) = s {
                    walk(&s, 6, &mut rng);
                }
                for n in &local {
                    n.verify();
                }
            }
        }
        if local.len() > 32 {
            local.drain(..16);
        }
    }
    ops
}

fn run(procs: usize, seed: u64, dur: Duration) {
    // The book is large (slow to build in debug): before the clock starts, not in a mutator.
    book();
    let before = gc::mem_stats().num_gc;
    let old = gc::set_gc_percent(1);
    let world = Gc::new(World {
        slots: (0..64).map(|_| GcMutex::new(None)).collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                gc::collect();
            }
        })
    };
    let until = Instant::now() + dur;
    let w = world.clone();
    let ops: u64 = goro::Builder::new().max_procs(procs).run(move || {
        let hs: Vec<_> = (0..procs as u64 * 2)
            .map(|i| {
                let w = w.clone();
                goro::spawn(move || mutator(w, seed.wrapping_mul(31).wrapping_add(i), until))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    stop.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    assert!(!book().bad.load(Ordering::Relaxed));
    assert!(ops > 0);
    let cycles = gc::mem_stats().num_gc - before;
    assert!(cycles >= 3, "only {cycles} cycles ran");
    drop(world);
    gc::collect();
    gc::collect();
    gc::set_gc_percent(old);
    eprintln!("procs {procs} seed {seed}: {ops} ops, {cycles} cycles");
}

static SERIAL: Mutex<()> = Mutex::new(());

fn check_all_freed() {
    // Everything made so far is unreachable now: every node dropped exactly once.
    let n = book().next.load(Ordering::Relaxed) as usize;
    let alive = (1..n)
        .filter(|&i| book().state[i].load(Ordering::Relaxed) != 2)
        .count();
    assert_eq!(alive, 0, "{alive} of {} nodes not freed", n - 1);
    assert!(!book().bad.load(Ordering::Relaxed));
}

#[test]
fn torture_short() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let only: Option<usize> = std::env::var("GORO_TORTURE_PROCS")
        .ok()
        .and_then(|v| v.parse().ok());
    for (procs, seed) in [(1, 1), (2, 2), (4, 3), (2, 4)] {
        if only.is_some_and(|p| p != procs) {
            continue;
        }
        run(procs, seed, Duration::from_millis(400));
    }
    check_all_freed();
}

#[test]
#[ignore = "long: half a minute of torture over 12 seeds"]
fn torture_long() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for seed in 10..22 {
        run([1, 2, 4][seed as usize % 3], seed, Duration::from_secs(2));
    }
    check_all_freed();
}
