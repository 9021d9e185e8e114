//! The main demo, run in release mode: 100,000 goroutines in CI, a million with `--ignored`.

use std::process::Command;

fn run_million(n: usize) {
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--release", "--example", "million", "--"])
        .args(["--n", &n.to_string()])
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "million failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |name: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{stdout}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 3, "`name value unit`: {line}");
        f[1].parse().unwrap()
    };
    for name in [
        "spawn_all_parked",
        "release_all",
        "spawn_all_parked_reuse",
        "release_all_reuse",
    ] {
        assert!(get(name) > 0.0);
    }
    assert_eq!(get("goroutines"), n as f64);
    // A parked goroutine costs about a page; far more would mean a leak or a second page.
    let per = get("rss_per_goroutine");
    assert!(per > 1000.0 && per < 8192.0, "rss_per_goroutine {per}");
    // A handful of mappings, not one per goroutine.
    assert!(get("stack_reservations") <= (n / 65536 + 2) as f64);
}

#[test]
fn million_demo_100k() {
    run_million(100_000);
}

#[test]
#[ignore = "a million goroutines: ~5 s and 5 GB of RSS; run with --ignored"]
fn million_demo_1m() {
    run_million(1_000_000);
}
