//! An idle runtime whose goroutines wait for I/O sleeps in the netpoller: no polling loop
//! (its own test binary, so no other test's CPU time is counted), and the wake-up from that
//! sleep is prompt.

use goro::net::TcpListener;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn cpu_time() -> Duration {
    // SAFETY: `getrusage` fills the zeroed struct we pass; RUSAGE_SELF is always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[test]
fn idle_runtime_blocks_in_the_netpoller() {
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
