//! Criterion: spawn a goroutine returning a value and join it, from inside a goroutine.
use criterion::{criterion_group, criterion_main, Criterion};

fn spawn_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("goroutine");
    g.bench_function("spawn_join", |b| {
        b.iter_custom(|iters| {
            goro::run(move || {
                let t = std::time::Instant::now();
                for i in 0..iters {
                    std::hint::black_box(goro::spawn(move || i).join().unwrap());
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, spawn_join);
criterion_main!(benches);
