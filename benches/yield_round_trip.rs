//! Criterion: two goroutines alternating through `yield_now` (one round trip = two switches
//! through the scheduler), and a lone goroutine yielding to itself.
use criterion::{criterion_group, criterion_main, Criterion};

fn yields(c: &mut Criterion) {
    let mut g = c.benchmark_group("goroutine");
    g.bench_function("yield_round_trip", |b| {
        b.iter_custom(|iters| {
            goro::run(move || {
                let other = goro::spawn(move || {
                    for _ in 0..iters {
                        goro::yield_now();
                    }
                });
                let t = std::time::Instant::now();
                for _ in 0..iters {
                    goro::yield_now();
                }
                let el = t.elapsed();
                other.join().unwrap();
                el
            })
        })
    });
    g.bench_function("yield_alone", |b| {
        b.iter_custom(|iters| {
            goro::run(move || {
                let t = std::time::Instant::now();
                for _ in 0..iters {
                    goro::yield_now();
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, yields);
criterion_main!(benches);
