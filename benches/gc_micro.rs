//! Collector micro-benchmarks (criterion), each next to its Rust counterpart measured in the
//! same run: a 48-byte `Gc::new` against `Box::new`, `Gc` clone+drop against `Arc`'s, and
//! `GcCell::borrow_mut` outside a cycle against `RefCell::borrow_mut`, and a stack root
//! (`root!`: make, read, drop) on a goroutine stack (uncounted) and on a plain thread (counted).
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use goro::gc::{root, Gc, GcCell};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn micro(c: &mut Criterion) {
    let mut g = c.benchmark_group("gc_micro");
    g.bench_function("box_new_48", |b| b.iter(|| black_box(Box::new([1u64; 6]))));
    g.bench_function("gc_new_48", |b| b.iter(|| black_box(Gc::new([1u64; 6]))));
    let a = Arc::new([1u64; 6]);
    g.bench_function("arc_clone_drop", |b| b.iter(|| drop(black_box(a.clone()))));
    let h = Gc::new([1u64; 6]);
    g.bench_function("gc_clone_drop", |b| b.iter(|| drop(black_box(h.clone()))));
    let r = RefCell::new(1u64);
    g.bench_function("refcell_borrow_mut", |b| {
        b.iter(|| *black_box(&r).borrow_mut() += 1)
    });
    let cell = GcCell::new(1u64);
    g.bench_function("gccell_borrow_mut", |b| {
        b.iter(|| *black_box(&cell).borrow_mut() += 1)
    });
    let h2 = h.clone();
    g.bench_function("stack_root_goroutine", |b| {
        b.iter_custom(|iters| {
            on_goroutine(h2.clone(), move |h| {
                for _ in 0..iters {
                    root!(let r = black_box(h));
                    black_box(r[0]);
                }
            })
        })
    });
    let h3 = h.clone();
    g.bench_function("gc_deref_goroutine", |b| {
        b.iter_custom(|iters| {
            on_goroutine(h3.clone(), move |h| {
                for _ in 0..iters {
                    let r: &Gc<[u64; 6]> = black_box(h);
                    black_box(r[0]);
                }
            })
        })
    });
    g.bench_function("stack_root_thread", |b| {
        b.iter(|| {
            root!(let r = black_box(&h));
            black_box(r[0]);
        })
    });
    g.finish();
}

/// Times `f` on a goroutine (a root is uncounted only on a goroutine's stack).
fn on_goroutine(h: Gc<[u64; 6]>, f: impl FnOnce(&Gc<[u64; 6]>) + Send + 'static) -> Duration {
    goro::spawn(move || {
        let t = Instant::now();
        f(&h);
        t.elapsed()
    })
    .join()
    .unwrap()
}

criterion_group!(benches, micro);
criterion_main!(benches);
