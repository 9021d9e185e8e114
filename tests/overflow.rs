//! Stack overflow in a goroutine: a subprocess (this test binary, re-run with an env var)
//! overflows, and the parent checks Go's fatal message and a non-zero exit. A fault that is not
//! on a guard page still goes to the previous handler.

use std::process::Command;

const CHILD: &str = "GORO_OVERFLOW_CHILD";

#[inline(never)]
#[allow(unconditional_recursion)] // overflowing is the point
fn recurse_forever(n: u64) -> u64 {
    let buf = std::hint::black_box([n as u8; 256]);
    recurse_forever(n + 1) + std::hint::black_box(&buf)[0] as u64
}

fn child(mode: &str) {
    match mode {
        "default" => {
            goro::run(|| goro::spawn(|| recurse_forever(0)).join().ok());
        }
        "small" => {
            goro::Builder::new().stack_size(64 << 10).run(|| {
                goro::spawn(|| recurse_forever(0)).join().ok();
            });
        }
        "segv" => {
            goro::run(|| {
                goro::spawn(|| {
                    // SAFETY: deliberately invalid, to check that a fault that is not on a
                    // guard page reaches the previous handler (the process dies by SIGSEGV).
                    unsafe { std::ptr::write_volatile(16 as *mut u64, 1) };
                })
                .join()
                .ok();
            });
        }
        _ => unreachable!(),
    }
    std::process::exit(0); // not reached if the fault works as designed
}

#[test]
fn overflow_child_entry() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
    }
}

fn run_child(mode: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "overflow_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn overflow_prints_fatal_message_and_exits_non_zero() {
    let (status, stderr) = run_child("default");
    assert!(!status.success(), "child exited successfully: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("fatal error: stack overflow in goroutine "))
        .unwrap_or_else(|| panic!("no fatal message in: {stderr}"));
    assert!(line.ends_with("(limit 252 KiB)"), "{line}");
    assert!(
        stderr.contains("hint: give the goroutine a larger stack"),
        "{stderr}"
    );
}

#[test]
fn overflow_limit_follows_stack_size() {
    let (status, stderr) = run_child("small");
    assert!(!status.success());
    assert!(stderr.contains("(limit 60 KiB)"), "{stderr}");
}

#[test]
fn other_faults_reach_the_previous_handler() {
    use std::os::unix::process::ExitStatusExt;
    let (status, stderr) = run_child("segv");
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{stderr}");
    assert!(!stderr.contains("stack overflow in goroutine"), "{stderr}");
}
