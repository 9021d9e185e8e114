//! goro::net over loopback: echo with checksums across many connections, timeouts and
//! deadlines, connect errors, close while blocked, UDP, Unix sockets, plain threads.

use goro::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

fn echo_server(l: TcpListener) {
    goro::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            goro::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

#[test]
fn echo_round_trip() {
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        echo_server(l);
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"hello goro").unwrap();
        let mut back = [0u8; 10];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello goro");
    });
}

/// Thousands of concurrent connections exchanging checksummed data.
#[test]
fn many_connections_checksummed() {
    const CONNS: usize = 2000;
    const BYTES: usize = 64 * 1024;
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        echo_server(l);
        let hs: Vec<_> = (0..CONNS)
            .map(|i| {
                goro::spawn(move || {
                    let c = TcpStream::connect(addr).unwrap();
                    let w = c.try_clone().unwrap();
                    let writer = goro::spawn(move || {
                        let mut w = w;
                        let mut x = (i as u32).wrapping_mul(2_654_435_761) | 1;
                        let mut sum = 0u64;
                        let mut chunk = [0u8; 1000];
                        let mut left = BYTES;
                        while left > 0 {
                            let n = left.min(chunk.len());
                            for b in &mut chunk[..n] {
                                x ^= x << 13;
                                x ^= x >> 17;
                                x ^= x << 5;
                                *b = x as u8;
                                sum = sum.wrapping_mul(31).wrapping_add(*b as u64);
                            }
                            w.write_all(&chunk[..n]).unwrap();
                            left -= n;
                        }
                        w.shutdown(std::net::Shutdown::Write).unwrap();
                        sum
                    });
                    let mut r = c;
                    let mut sum = 0u64;
                    let mut got = 0;
                    let mut buf = [0u8; 1500];
                    loop {
                        let n = r.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        for &b in &buf[..n] {
                            sum = sum.wrapping_mul(31).wrapping_add(b as u64);
                        }
                        got += n;
                    }
                    assert_eq!(got, BYTES);
                    assert_eq!(sum, writer.join().unwrap());
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
}

#[test]
fn read_timeout_and_deadline() {
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let keep = goro::spawn(move || l.accept().unwrap());
        let mut c = TcpStream::connect(addr).unwrap();
        let _server_side = keep.join().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let t = Instant::now();
        let e = c.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(2),
            "{took:?}"
        );
        c.set_read_timeout(None).unwrap();
        c.set_read_deadline(Some(Instant::now() + Duration::from_millis(30)))
            .unwrap();
        let e = c.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
        // Passed deadlines keep failing until moved.
        assert_eq!(
            c.read(&mut [0u8; 8]).unwrap_err().kind(),
            ErrorKind::TimedOut
        );
        assert!(c.set_read_timeout(Some(Duration::ZERO)).is_err());
    });
}

/// Moving a deadline wakes the blocked reader so it uses the new one.
#[test]
fn deadline_moved_while_blocked() {
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let keep = goro::spawn(move || l.accept().unwrap());
        let c = TcpStream::connect(addr).unwrap();
        let _server_side = keep.join().unwrap();
        let c2 = c.try_clone().unwrap();
        let t = Instant::now();
        let reader = goro::spawn(move || (&c2).read(&mut [0u8; 8]).unwrap_err().kind());
        goro::time::sleep(Duration::from_millis(30));
        c.set_read_deadline(Some(Instant::now())).unwrap();
        assert_eq!(reader.join().unwrap(), ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(2));
    });
}

#[test]
fn connect_to_closed_port_fails_promptly() {
    goro::Builder::new().max_procs(2).run(|| {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let t = Instant::now();
        let e = TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        assert!(t.elapsed() < Duration::from_secs(1));
        // Names resolve (off the processor, in `goro::blocking`).
        let l = TcpListener::bind("localhost:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = TcpStream::connect(("localhost", port)).unwrap();
        assert_eq!(c.peer_addr().unwrap().port(), port);
        let c = TcpStream::connect_timeout(&l.local_addr().unwrap(), Duration::from_secs(5));
        assert!(c.is_ok());
        let zero = TcpStream::connect_timeout(&l.local_addr().unwrap(), Duration::ZERO);
        assert_eq!(zero.unwrap_err().kind(), ErrorKind::InvalidInput);
    });
}

#[test]
fn close_wakes_blocked_goroutines() {
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let keep = {
            let c = TcpStream::connect(addr).unwrap();
            let (s, _) = l.accept().unwrap();
            (c, s)
        };
        // Spawned only now: started earlier, it could take the connection above, leaving the
        // accept above waiting for good.
        let l2 = l.clone();
        let acceptor = goro::spawn(move || l2.accept().map(|_| ()).unwrap_err());
        let c = keep.0.clone();
        let reader = goro::spawn(move || (&c).read(&mut [0u8; 8]).unwrap_err());
        goro::time::sleep(Duration::from_millis(20));
        keep.0.close().unwrap();
        let e = reader.join().unwrap();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{e}");
        assert!(keep.0.close().is_err(), "second close");
        // The peer sees the connection shut down.
        let mut s = keep.1;
        assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0);
        l.close().unwrap();
        let e = acceptor.join().unwrap();
        assert_eq!(e.kind(), ErrorKind::NotConnected, "{e}");
    });
}

#[test]
fn peer_reset_errors_only_that_goroutine() {
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        // SO_LINGER 0 then close: the peer gets a RST.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&c);
        let lg = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a linger struct of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &lg as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        drop(c);
        let mut s2 = s.clone();
        let e = s2.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
        // Writing into a reset connection: an error (EPIPE), no SIGPIPE.
        let mut s3 = s;
        let mut failed = false;
        for _ in 0..10 {
            if s3.write_all(&[0u8; 4096]).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    });
}

#[test]
fn udp_round_trip() {
    goro::Builder::new().max_procs(2).run(|| {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a_addr = a.local_addr().unwrap();
        let echo = goro::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = a.recv_from(&mut buf).unwrap();
            a.send_to(&buf[..n], from).unwrap();
        });
        b.connect(a_addr).unwrap();
        b.send(b"ping").unwrap();
        let mut buf = [0u8; 64];
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        echo.join().unwrap();
        b.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(b.recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    });
}

#[test]
fn unix_sockets() {
    let dir = std::env::temp_dir().join(format!("goro-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let _ = std::fs::remove_file(&path);
    goro::Builder::new().max_procs(2).run(move || {
        let l = UnixListener::bind(&path).unwrap();
        let server = goro::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        server.join().unwrap();
        let (mut x, mut y) = UnixStream::pair().unwrap();
        let t = goro::spawn(move || {
            let mut b = [0u8; 3];
            y.read_exact(&mut b).unwrap();
            b
        });
        x.write_all(b"abc").unwrap();
        assert_eq!(&t.join().unwrap(), b"abc");
        std::fs::remove_file(&path).unwrap();
    });
}

/// Sockets work from plain threads (blocking the thread) while goroutines use them too.
#[test]
fn plain_thread_client() {
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        echo_server(l);
        let t = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            for i in 0..100u32 {
                c.write_all(&i.to_le_bytes()).unwrap();
                let mut b = [0u8; 4];
                c.read_exact(&mut b).unwrap();
                assert_eq!(u32::from_le_bytes(b), i);
            }
            c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            c.read(&mut [0u8; 4]).unwrap_err().kind()
        });
        assert_eq!(t.join().unwrap(), ErrorKind::WouldBlock);
    });
}

/// Several goroutines blocked reading one socket: each byte wakes a reader, none is lost.
#[test]
fn several_readers_share_a_socket() {
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                goro::spawn(move || {
                    let mut b = [0u8; 1];
                    (&c).read_exact(&mut b).unwrap();
                    b[0]
                })
            })
            .collect();
        goro::time::sleep(Duration::from_millis(20)); // let all four block
        for i in 1..=4u8 {
            s.write_all(&[i]).unwrap();
            goro::time::sleep(Duration::from_millis(5));
        }
        let mut got: Vec<u8> = readers.into_iter().map(|h| h.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, [1, 2, 3, 4]);
    });
}

/// A short read followed by end of file: the read after it returns 0 at once (the kernel
/// reported the close before, so no new readiness edge will come for it).
#[test]
fn end_of_file_after_short_reads() {
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for round in 0..50 {
            let mut c = TcpStream::connect(addr).unwrap();
            let (mut s, _) = l.accept().unwrap();
            c.write_all(&[7u8; 10]).unwrap();
            if round % 2 == 0 {
                goro::time::sleep(Duration::from_millis(1));
            }
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut buf = [0u8; 4096];
            let mut got = 0;
            loop {
                match s.read(&mut buf).unwrap() {
                    0 => break,
                    n => got += n,
                }
            }
            assert_eq!(got, 10);
        }
    });
}

/// Handles of one socket share it: the socket stays open until the last one drops, whichever
/// that is, and then the peer sees end of file; its descriptor is then reused safely.
#[test]
fn last_handle_closes_the_socket() {
    goro::Builder::new().max_procs(2).run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for round in 0..50u8 {
            let c = TcpStream::connect(addr).unwrap();
            let (mut s, _) = l.accept().unwrap();
            let clones: Vec<TcpStream> = (0..3).map(|_| c.try_clone().unwrap()).collect();
            // Handles dropped from several goroutines at once, the original first.
            drop(c);
            let last = clones.last().unwrap().try_clone().unwrap();
            let hs: Vec<_> = clones
                .into_iter()
                .map(|mut h| {
                    goro::spawn(move || {
                        h.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        h.write_all(&[round]).unwrap();
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            let mut got = [0u8; 3];
            s.read_exact(&mut got).unwrap();
            assert_eq!(got, [round; 3]);
            // One handle left: still open both ways.
            (&last).write_all(b"x").unwrap();
            s.write_all(b"y").unwrap();
            let mut b = [0u8; 1];
            (&last).read_exact(&mut b).unwrap();
            assert_eq!(&b, b"y");
            s.read_exact(&mut b).unwrap();
            drop(last);
            assert_eq!(
                s.read(&mut b).unwrap(),
                0,
                "round {round}: the last drop closes"
            );
        }
    });
}
