//! The `mprotect` guard fallback (kernels before 6.13): each slot splits its mapping, so the
//! process runs out of mappings near `vm.max_map_count / 2` slots. Spawning must then fail with
//! an error that says what to do, and the goroutines already running must be fine.
//! Runs in a subprocess (this binary again) because the mode is per process.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const CHILD: &str = "GORO_GUARD_FALLBACK_CHILD";

#[test]
fn fallback_child_entry() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let (spawned, err) = goro::Builder::new().stack_size(16 << 10).run(|| {
        let release = Arc::new(AtomicBool::new(false));
        let mut hs = Vec::with_capacity(200_000);
        let err = loop {
            let r = release.clone();
            match goro::SpawnBuilder::new().spawn(move || {
                while !r.load(Ordering::Acquire) {
                    goro::park();
                }
                7u8
            }) {
                Ok(h) => hs.push(h),
                Err(e) => break e.to_string(),
            }
            if hs.len() == 200_000 {
                break String::from("no error after 200000 goroutines");
            }
        };
        // `spawn` takes its stack at first run, so the same error ends such a goroutine at
        // once and reaches its joiner; the runtime carries on. (Other mappings of the process
        // come and go, so the first few may still find room: they park like the rest.)
        let mut deferred = String::from("no deferred spawn failed after 1000");
        for _ in 0..1000 {
            let r = release.clone();
            let h = goro::spawn(move || {
                while !r.load(Ordering::Acquire) {
                    goro::park();
                }
                7u8
            });
            let t = std::time::Instant::now();
            while !h.is_finished() && goro::stack::committed_bytes(&h.goroutine()) == 0 {
                assert!(t.elapsed().as_secs() < 10, "a deferred spawn never ran");
                goro::yield_now();
            }
            if h.is_finished() {
                deferred = match h.join() {
                    Ok(_) => String::from("a deferred spawn finished without being released"),
                    Err(p) => p.message().unwrap_or("no message").to_string(),
                };
                break;
            }
            hs.push(h); // it found a slot and parked
        }
        let n = hs.len();
        release.store(true, Ordering::Release);
        for h in &hs {
            h.goroutine().unpark();
        }
        let sum: usize = hs.into_iter().map(|h| h.join().unwrap() as usize).sum();
        assert_eq!(sum, 7 * n, "goroutines spawned before the error still run");
        (n, format!("{err}\nDEFERRED {deferred}"))
    });
    println!("SPAWNED {spawned}");
    println!("ERROR {err}");
}

#[test]
fn mprotect_guards_fail_spawn_cleanly_when_mappings_run_out() {
    let max_map: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530);
    if max_map > 1_000_000 {
        eprintln!("vm.max_map_count is {max_map}: the limit is out of reach, skipping");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fallback_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("GORO_STACK_GUARDS", "mprotect")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spawned: usize = stdout
        .lines()
        .find_map(|l| l.split("SPAWNED ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {stdout}"));
    let err = stdout
        .lines()
        .find_map(|l| l.split("ERROR ").nth(1))
        .unwrap();
    assert!(err.contains("vm.max_map_count"), "{err}");
    let deferred = stdout
        .lines()
        .find_map(|l| l.split("DEFERRED ").nth(1))
        .unwrap();
    assert!(deferred.contains("could not start"), "{deferred}");
    assert!(deferred.contains("vm.max_map_count"), "{deferred}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not start"), "not printed: {stderr}");
    assert!(err.contains("newer kernel"), "{err}");
    assert!(
        spawned > max_map / 4,
        "only {spawned} goroutines before running out"
    );
}
