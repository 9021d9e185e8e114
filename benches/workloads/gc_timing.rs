// The collector workloads' timing loop, shared by goro's side (`workloads/gc.rs`) and the Rust
// GC crates' peer (`peers/rustgc`), each of which `include!`s this file (the peer stays a
// standalone crate): one warm-up iteration sets the count (about 1.5 s worth, 3..=101), then
// the median per-iteration time is printed as `<workload> <impl> per_iter <ms> ms`, the spread
// on stderr after `tag`.

fn time_iters(workload: &str, imp: &str, tag: &str, mut f: impl FnMut()) {
    let t = std::time::Instant::now();
    f();
    let warm = t.elapsed().as_nanos() as f64;
    let n = ((1.5e9 / (warm + 1.0)) as usize).clamp(3, 101);
    let mut ts: Vec<f64> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / 1e6
        })
        .collect();
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!("{tag}: {workload} {imp} iterations {n} min {:.2} max {:.2} ms", ts[0], ts[n - 1]);
    println!("{workload} {imp} per_iter {:.2} ms", ts[n / 2]);
}

/// A workload's self-check failed: say what, and exit 1 (the comparison then skips the impl).
fn die(msg: String) -> ! {
    eprintln!("{msg}");
    std::process::exit(1)
}
