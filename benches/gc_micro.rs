//! Collector micro-benchmarks (criterion), each next to its Rust counterpart measured in the
//! same run: a 48-byte `Gc::new` against `Box::new`, `Gc` clone+drop against `Arc`'s, and
//! `GcCell::borrow_mut` outside a cycle against `RefCell::borrow_mut`.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use goro::gc::{Gc, GcCell};
use std::cell::RefCell;
use std::sync::Arc;

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
    g.finish();
}

criterion_group!(benches, micro);
criterion_main!(benches);
