//! An idle runtime whose goroutines wait for I/O sleeps in the netpoller: no polling loop
//! (its own test binary, so no other test's CPU time is counted), and the wake-up from that
//! sleep is prompt.

mod common;

use common::cpu_time;
use goro::net::TcpListener;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The tests here run one at a time: the CPU test counts the whole process, and a `run`
/// started while another runs joins that runtime (with its processor count).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn idle_runtime_blocks_in_the_netpoller() {
    let _s = serial();
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = goro::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            (b[0], Instant::now())
        });
        // A plain thread connects after 300 ms of idleness and writes one byte.
        let client = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(&[42]).unwrap();
            let sent = Instant::now();
            std::thread::sleep(Duration::from_millis(50));
            sent
        });
        goro::time::sleep(Duration::from_millis(20)); // let start-up settle
        let cpu0 = cpu_time();
        let (byte, got) = server.join().unwrap();
        let cpu = cpu_time() - cpu0;
        let sent = client.join().unwrap();
        assert_eq!(byte, 42);
        assert!(
            cpu < Duration::from_millis(60),
            "idle runtime used {cpu:?} of CPU"
        );
        let lag = got.saturating_duration_since(sent);
        assert!(
            lag < Duration::from_millis(50),
            "woke {lag:?} after the write"
        );
    });
}

/// A goroutine readied from a plain thread while the only idle M waits in `epoll_wait` (the
/// runtime has a socket, so its idle M waits in the netpoller) runs promptly: handing that M a
/// P interrupts the poll through the poller's waker.
#[test]
fn ready_from_a_thread_interrupts_the_poll() {
    let _s = serial();
    goro::Builder::new().max_procs(1).run(|| {
        let _l = TcpListener::bind("127.0.0.1:0").unwrap(); // the netpoller exists
        for _ in 0..5 {
            let (tx, rx) = goro::chan::bounded::<Instant>(0);
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                tx.send(Instant::now()).unwrap();
            });
            let sent = rx.recv().unwrap();
            let lag = sent.elapsed();
            t.join().unwrap();
            assert!(
                lag < Duration::from_millis(20),
                "ran {lag:?} after being readied"
            );
        }
    });
}

/// With `SIGPIPE` at its default action (which kills the process), writing to a connection
/// the peer has closed is an error in that goroutine: the first socket set it to ignored.
/// Runs in a child process (this binary, re-executed), since Rust's own start-up already
/// ignores `SIGPIPE` and the test must put the default back first.
#[test]
fn sigpipe_never_kills_the_process() {
    if std::env::var_os("GORO_SIGPIPE_CHILD").is_some() {
        return sigpipe_child();
    }
    let _s = serial();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigpipe_never_kills_the_process", "--nocapture"])
        .env("GORO_SIGPIPE_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("write failed: "),
        "child: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sigpipe_child() {
    // SAFETY: resetting a signal disposition to its default is always valid.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = goro::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(s);
        goro::time::sleep(Duration::from_millis(20));
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = c.write_all(&[0u8; 1024]) {
                err = Some(e);
                break;
            }
            goro::time::sleep(Duration::from_millis(1));
        }
        let e = err.expect("writes to a closed peer kept succeeding");
        println!("write failed: {e}");
    });
}
