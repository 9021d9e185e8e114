//! The collector's examples run as programs: `gc_watch` prints Go's four booleans, all true;
//! `gc_stats` prints the before/after `ReadMemStats` lines; `GORO_DEBUG=gctrace=1` lines parse
//! with the pattern Go's own tools use; a bad `GOGC` is an error at start naming the variable.
use std::process::Command;

fn example(name: &str) -> Command {
    // cargo builds the examples next to the test binaries (target/<profile>/examples/<name>)
    // when it builds all targets; when this test was built alone, build the one needed.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    if !path.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--example", name]);
        if dir.parent().is_some_and(|p| p.ends_with("release")) {
            cmd.arg("--release");
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "cargo build --example {name} failed");
    }
    assert!(path.exists(), "{} not built", path.display());
    Command::new(path)
}

#[test]
fn gc_watch_prints_four_trues() {
    let out = example("gc_watch").env_remove("GOGC").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "at least one GC ran: true",
            "allocated more after the loop: true",
            "GC CPU fraction <= 1: true",
            "next-GC goal is set: true",
        ]
    );
}

fn field(text: &str, section: &str, name: &str) -> u64 {
    let sec = text
        .split("=== ")
        .find(|s| s.starts_with(section))
        .expect(section);
    let line = sec
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .expect(name);
    line.split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn gc_stats_before_and_after() {
    let out = example("gc_stats").env_remove("GOGC").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let t = String::from_utf8(out.stdout).unwrap();
    // 100,000 objects of 1 KiB (1 KiB + the 8-byte header each) were allocated.
    assert!(
        field(&t, "After GC", "TotalAlloc") >= 100_000 * 1032 / 1024,
        "{t}"
    );
    assert!(
        field(&t, "After GC", "NumGC") > field(&t, "Before", "NumGC"),
        "{t}"
    );
    // They were all garbage: after the forced cycle the live heap is far below what was made.
    assert!(field(&t, "After GC", "Alloc") < 10 * 1024, "{t}");
}

/// Go's gctrace line, field by field (the shape `go tool trace`-era scripts match).
fn parse_gctrace(line: &str) -> Option<()> {
    let rest = line.strip_prefix("gc ")?;
    let (n, rest) = rest.split_once(" @")?;
    n.parse::<u64>().ok()?;
    let (t, rest) = rest.split_once("s ")?;
    t.parse::<f64>().ok()?;
    let (pct, rest) = rest.split_once("%: ")?;
    pct.parse::<u64>().ok()?;
    let (clock, rest) = rest.split_once(" ms clock, ")?;
    let c: Vec<&str> = clock.split('+').collect();
    (c.len() == 3 && c.iter().all(|x| x.parse::<f64>().is_ok())).then_some(())?;
    let (cpu, rest) = rest.split_once(" ms cpu, ")?;
    let parts: Vec<&str> = cpu.split('+').collect();
    (parts.len() == 3 && parts[1].split('/').count() == 3).then_some(())?;
    let (heap, rest) = rest.split_once(" MB, ")?;
    let h: Vec<&str> = heap.split("->").collect();
    (h.len() == 3 && h.iter().all(|x| x.parse::<u64>().is_ok())).then_some(())?;
    let (goal, rest) = rest.split_once(" MB goal, ")?;
    goal.parse::<u64>().ok()?;
    let (stacks, rest) = rest.split_once(" MB stacks, ")?;
    stacks.parse::<u64>().ok()?;
    let rest = rest.strip_prefix("0 MB globals, ")?;
    let (p, tail) = rest.split_once(" P")?;
    p.parse::<u64>().ok()?;
    (tail.is_empty() || tail == " (forced)").then_some(())
}

#[test]
fn gctrace_lines_have_gos_format() {
    let out = example("gc_watch")
        .env("GORO_DEBUG", "gctrace=1")
        .env_remove("GOGC")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("gc ")).collect();
    assert!(!lines.is_empty(), "no gctrace lines: {err}");
    for l in &lines {
        assert!(parse_gctrace(l).is_some(), "not Go's format: {l}");
    }
    assert!(
        lines.iter().any(|l| l.ends_with(" (forced)")),
        "collect() is marked forced: {err}"
    );
}

#[test]
fn bad_gogc_is_named_at_start() {
    let out = example("gc_watch").env("GOGC", "fast").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "the program must not have run");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("GOGC") && err.contains("fast"), "{err}");
}

#[test]
fn gogc_off_runs_no_automatic_cycle() {
    // gc_watch forces exactly one cycle; with GOGC=off no other may run.
    let out = example("gc_watch")
        .env("GOGC", "off")
        .env("GORO_DEBUG", "gctrace=1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    let cycles: Vec<&str> = err.lines().filter(|l| l.starts_with("gc ")).collect();
    assert!(cycles.iter().all(|l| l.ends_with("(forced)")), "{err}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("next-GC goal is set: true"), "{text}");
}
