//! `goro::io`: standard output and error behind a lock that belongs to the goroutine: a
//! holder's record is never split by another goroutine on the same thread, the lock is
//! reentrant, a contended `lock` parks the goroutine instead of blocking its thread, and
//! plain threads and goroutines share it.
//!
//! The record tests write to stdout, so they run in a child process (this binary, re-executed
//! with `GORO_IO_CHILD` set) whose output the parent captures and checks. `run` joins a
//! runtime that is already running, settings unchanged, so the in-process tests take turns
//! (`serial`) to get the processor count they ask for.

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod common;

const LIMIT: Duration = Duration::from_secs(10);

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const CHILD: &str = "GORO_IO_CHILD";
const GOROUTINES: usize = 32;
const ROUNDS: usize = 4;
const DASHES: usize = 8;
const BEGIN: &str = "==records begin==";
const END: &str = "==records end==";

/// Runs this test binary again as a child running `child_entry` in `mode`; returns its exit
/// status and stdout, or panics if it takes longer than [`LIMIT`] (then it is killed).
fn run_child(mode: &str) -> (std::process::ExitStatus, String, String) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env_remove("GOMAXPROCS")
        .env_remove("GORO_DEBUG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: `pid` is our child, not yet reaped (its waiter has not returned).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("child {mode} did not finish within {LIMIT:?}");
        }
    }
}

/// Not a test on its own: the body a child process runs (does nothing without `CHILD`).
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    match mode.as_str() {
        "records1" => write_records(1),
        "records2" => write_records(2),
        _ => unreachable!("{mode}"),
    }
}

/// The record body, formatted by pieces with a yield before each: `writeln!` on the handle
/// must hold goro's lock across all of them.
struct Body;

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("begin")?;
        for _ in 0..DASHES {
            goro::yield_now();
            f.write_str("-")?;
        }
        goro::yield_now();
        f.write_str("end")
    }
}

/// `GOROUTINES` goroutines write `ROUNDS` records `rec <g>.<r>:begin--------end` each, in
/// pieces with yields and sleeps between them: half through a held `lock()`, half through
/// one `writeln!` on the handle whose formatting yields.
fn write_records(procs: usize) {
    goro::Builder::new().max_procs(procs).run(|| {
        writeln!(goro::io::stdout(), "\n{BEGIN}").unwrap();
        let hs: Vec<_> = (0..GOROUTINES)
            .map(|g| {
                goro::spawn(move || {
                    for r in 0..ROUNDS {
                        if g % 2 == 0 {
                            let mut out = goro::io::stdout().lock();
                            write!(out, "rec {g}.{r}:").unwrap();
                            goro::yield_now();
                            out.write_all(b"begin").unwrap();
                            for d in 0..DASHES {
                                if d == DASHES / 2 {
                                    goro::time::sleep(Duration::from_millis(1));
                                } else {
                                    goro::yield_now();
                                }
                                out.write_all(b"-").unwrap();
                            }
                            goro::yield_now();
                            out.write_all(b"end\n").unwrap();
                        } else {
                            writeln!(goro::io::stdout(), "rec {g}.{r}:{Body}").unwrap();
                        }
                        goro::yield_now();
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        writeln!(goro::io::stdout(), "{END}").unwrap();
        goro::io::stdout().flush().unwrap();
    });
}

/// Every line between the markers is one whole record, and every record is there once.
fn check_records(mode: &str) {
    let (status, stdout, stderr) = run_child(mode);
    assert!(
        status.success(),
        "child {mode}: {status:?}\n{stdout}\n{stderr}"
    );
    let start = stdout.find(BEGIN).expect("no begin marker") + BEGIN.len();
    let len = stdout[start..].find(END).expect("no end marker");
    let body = "begin".to_string() + &"-".repeat(DASHES) + "end";
    let mut seen = [false; GOROUTINES * ROUNDS];
    for line in stdout[start..start + len].lines().filter(|l| !l.is_empty()) {
        let rec = line
            .strip_prefix("rec ")
            .and_then(|l| l.split_once(':'))
            .filter(|(_, b)| *b == body)
            .and_then(|(id, _)| id.split_once('.'))
            .and_then(|(g, r)| Some((g.parse::<usize>().ok()?, r.parse::<usize>().ok()?)))
            .filter(|&(g, r)| g < GOROUTINES && r < ROUNDS);
        let Some((g, r)) = rec else {
            panic!("child {mode}: a split record: {line:?}\n{stdout}");
        };
        assert!(
            !std::mem::replace(&mut seen[g * ROUNDS + r], true),
            "child {mode}: record {g}.{r} twice\n{stdout}"
        );
    }
    assert!(
        seen.iter().all(|&s| s),
        "child {mode}: records missing\n{stdout}"
    );
}

/// Test 1, on one processor: all 32 goroutines share one thread, which std's lock would let
/// every one of them re-enter.
#[test]
fn records_are_never_split_on_one_processor() {
    check_records("records1");
}

/// Test 1, on two processors: goroutines also migrate while holding the lock.
#[test]
fn records_are_never_split_on_two_processors() {
    check_records("records2");
}

/// Test 2: locking again while holding the lock returns at once, in a goroutine (and through
/// the handle's own per-call lock), and guards may drop in any order: the lock is released
/// when the last one goes.
#[test]
fn lock_is_reentrant_in_a_goroutine() {
    let _s = serial();
    common::with_timeout(LIMIT, "a nested lock in a goroutine deadlocked", || {
        goro::Builder::new().max_procs(2).run(|| {
            let first = goro::io::stdout().lock();
            let mut second = goro::io::stdout().lock();
            second.flush().unwrap();
            goro::io::stdout().flush().unwrap();
            goro::io::stdout().lock().write_all(b"").unwrap();
            goro::yield_now();
            drop(first);
            // Still held through `second`: another goroutine must wait.
            let took = Arc::new(AtomicBool::new(false));
            let t2 = took.clone();
            let other = goro::spawn(move || {
                let _l = goro::io::stdout().lock();
                t2.store(true, Ordering::SeqCst);
            });
            goro::time::sleep(Duration::from_millis(20));
            assert!(
                !took.load(Ordering::SeqCst),
                "the lock was released while a guard remained"
            );
            second.flush().unwrap();
            drop(second);
            other.join().unwrap();
            assert!(took.load(Ordering::SeqCst));

            let e1 = goro::io::stderr().lock();
            let mut e2 = goro::io::stderr().lock();
            e2.write_all(b"").unwrap();
            goro::io::stderr().flush().unwrap();
            drop(e2);
            drop(e1);
        });
    });
}

/// Test 2 on a plain thread: the thread owns the lock and may take it again.
#[test]
fn lock_is_reentrant_on_a_plain_thread() {
    common::with_timeout(LIMIT, "a nested lock on a plain thread deadlocked", || {
        let _a = goro::io::stdout().lock();
        let mut b = goro::io::stdout().lock();
        b.flush().unwrap();
        goro::io::stdout().flush().unwrap();
        let _e1 = goro::io::stderr().lock();
        let _e2 = goro::io::stderr().lock();
    });
}

/// Test 3: on one processor, A holds the lock across a 50 ms sleep, B asks for it, and C
/// only counts and yields. B must park: if it blocked the only M, neither C nor A's timer
/// would run again (a deadlock, which the timeout reports).
#[test]
fn contended_lock_parks_the_goroutine() {
    let _s = serial();
    let (counted, waited) = common::with_timeout(
        LIMIT,
        "a goroutine waiting for the lock blocked the only thread",
        || {
            goro::Builder::new().max_procs(1).run(|| {
                if goro::runtime::max_procs() != 1 {
                    goro::runtime::set_max_procs(1); // GOMAXPROCS overrode the builder
                }
                let held = Arc::new(AtomicBool::new(false));
                let released = Arc::new(AtomicBool::new(false));
                let done = Arc::new(AtomicBool::new(false));
                let count = Arc::new(AtomicUsize::new(0));
                let (h, r) = (held.clone(), released.clone());
                let a = goro::spawn(move || {
                    let l = goro::io::stdout().lock();
                    h.store(true, Ordering::SeqCst);
                    goro::time::sleep(Duration::from_millis(50));
                    r.store(true, Ordering::SeqCst);
                    drop(l);
                });
                let (d, n) = (done.clone(), count.clone());
                let c = goro::spawn(move || {
                    while !d.load(Ordering::SeqCst) {
                        n.fetch_add(1, Ordering::SeqCst);
                        goro::yield_now();
                    }
                });
                while !held.load(Ordering::SeqCst) {
                    goro::yield_now();
                }
                let before = count.load(Ordering::SeqCst);
                let t = Instant::now();
                let l = goro::io::stdout().lock();
                let waited = t.elapsed();
                assert!(
                    released.load(Ordering::SeqCst),
                    "B got the lock while A held it"
                );
                let counted = count.load(Ordering::SeqCst) - before;
                drop(l);
                done.store(true, Ordering::SeqCst);
                a.join().unwrap();
                c.join().unwrap();
                (counted, waited)
            })
        },
    );
    assert!(
        waited >= Duration::from_millis(30),
        "B waited only {waited:?}"
    );
    assert!(
        counted >= 10,
        "C counted {counted} while B waited {waited:?}: B did not park"
    );
}

/// Test 4: a plain thread holding the lock makes a goroutine wait, and a goroutine holding
/// it makes a plain thread wait (also one inside `goro::blocking`, which is plain-thread
/// code).
#[test]
fn plain_threads_and_goroutines_share_the_lock() {
    let _s = serial();
    common::with_timeout(LIMIT, "sharing the lock with a plain thread hung", || {
        goro::Builder::new().max_procs(2).run(|| {
            // A plain thread holds it; a goroutine waits.
            let held = Arc::new(AtomicBool::new(false));
            let released = Arc::new(AtomicBool::new(false));
            let (h, r) = (held.clone(), released.clone());
            let t = std::thread::spawn(move || {
                let l = goro::io::stderr().lock();
                h.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                r.store(true, Ordering::SeqCst);
                drop(l);
            });
            while !held.load(Ordering::SeqCst) {
                goro::time::sleep(Duration::from_millis(1));
            }
            drop(goro::io::stderr().lock());
            assert!(
                released.load(Ordering::SeqCst),
                "a goroutine got the lock while a thread held it"
            );
            goro::blocking(|| t.join()).unwrap();

            // A goroutine holds it; a plain thread waits. (Not `blocking` code of a goroutine
            // on the holder's thread: a goroutine runs only on the thread it started on, so
            // that thread, blocked, could never run the holder to release it.)
            let held = Arc::new(AtomicBool::new(false));
            let released = Arc::new(AtomicBool::new(false));
            let (h, r) = (held.clone(), released.clone());
            let g = goro::spawn(move || {
                let l = goro::io::stderr().lock();
                h.store(true, Ordering::SeqCst);
                goro::time::sleep(Duration::from_millis(50));
                r.store(true, Ordering::SeqCst);
                drop(l);
            });
            while !held.load(Ordering::SeqCst) {
                goro::yield_now();
            }
            let r = released.clone();
            let t = std::thread::spawn(move || {
                drop(goro::io::stderr().lock());
                r.load(Ordering::SeqCst)
            });
            g.join().unwrap();
            assert!(
                goro::blocking(|| t.join()).unwrap(),
                "a thread got the lock while a goroutine held it"
            );
        });
    });
}
