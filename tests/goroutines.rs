//! Spawning, joining, panics, parking: the goroutine core's API.

use std::time::Duration;

mod common;

#[test]
fn spawn_join_values() {
    let r = goro::run(|| {
        let hs: Vec<_> = (0..100u64).map(|i| goro::spawn(move || i * i)).collect();
        let strs = goro::spawn(|| "hello".to_string() + " goro");
        let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        (sum, strs.join().unwrap())
    });
    assert_eq!(
        r,
        ((0..100u64).map(|i| i * i).sum(), "hello goro".to_string())
    );
}

/// Closures of any size run (two words or less are kept inline in the goroutine's descriptor
/// until it runs, larger ones boxed; `runtime/src/g/body.rs`).
#[test]
fn closures_large_and_small() {
    let r = goro::run(|| {
        let big = [3u64; 64];
        let unit = goro::spawn(|| ());
        let word = goro::spawn(move || big[0]);
        let large = goro::spawn(move || big.iter().sum::<u64>());
        let aligned = {
            #[repr(align(64))]
            struct Wide(u8);
            let w = Wide(9);
            goro::spawn(move || w.0 as u64)
        };
        unit.join().unwrap();
        word.join().unwrap() + large.join().unwrap() + aligned.join().unwrap()
    });
    assert_eq!(r, 3 + 3 * 64 + 9);
}

#[test]
fn go_macro_and_ids() {
    goro::run(|| {
        let me = goro::current();
        let x = 20;
        let h = goro::go!(x + 22);
        let child_id = h.goroutine().id();
        assert_ne!(child_id, me.id());
        assert_eq!(h.join().unwrap(), 42);
        let h = goro::go! {
            let a = 1;
            a + goro::current().id()
        };
        let id = h.goroutine().id();
        assert_eq!(h.join().unwrap(), id + 1);
    });
}

#[test]
fn panic_is_reported_through_join_and_runtime_survives() {
    goro::run(|| {
        let h = goro::spawn(|| -> u32 { panic!("boom {}", 7) });
        let err = h.join().unwrap_err();
        assert_eq!(err.message(), Some("boom 7"));
        assert!(err.to_string().contains("boom 7"));
        let h = goro::spawn(|| std::panic::panic_any(5u8));
        let err = h.join().unwrap_err();
        assert_eq!(err.message(), None);
        assert_eq!(*err.into_payload().downcast::<u8>().unwrap(), 5);
        // The runtime still runs goroutines afterwards.
        assert_eq!(goro::spawn(|| 1).join().unwrap(), 1);
    });
}

#[test]
fn panic_in_main_goroutine_resumes_in_caller() {
    let r = std::panic::catch_unwind(|| goro::run(|| panic!("main failed")));
    let payload = r.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"main failed"));
}

fn tree(depth: u32) -> u64 {
    if depth == 0 {
        return 1;
    }
    let a = goro::spawn(move || tree(depth - 1));
    let b = goro::spawn(move || tree(depth - 1));
    goro::yield_now();
    a.join().unwrap() + b.join().unwrap()
}

#[test]
fn many_nested_spawns() {
    // 2^13 leaves, 16,383 goroutines, each joining its two children.
    assert_eq!(goro::run(|| tree(13)), 1 << 13);
}

#[test]
fn unpark_before_park_is_not_lost() {
    goro::run(|| {
        let me = goro::current();
        me.unpark();
        goro::park(); // consumes the token, returns at once
                      // A token from another goroutine while we are runnable.
        let h = goro::go!(me.unpark());
        h.join().unwrap();
        goro::park();
    });
}

#[test]
fn unpark_from_plain_thread_and_join_from_plain_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = goro::spawn(move || {
        tx.send(goro::current()).unwrap();
        let mut wakes = 0;
        while wakes < 3 {
            goro::park();
            wakes += 1;
        }
        wakes
    });
    let g = rx.recv().unwrap();
    assert_eq!(g, h.goroutine());
    let t = std::thread::spawn(move || {
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(5));
            g.unpark();
        }
    });
    // Joined from this plain thread: blocks the thread.
    assert_eq!(h.join().unwrap(), 3);
    t.join().unwrap();
}

#[test]
fn park_outside_goroutine_is_thread_park() {
    assert!(goro::try_current().is_none());
    let me = std::thread::current();
    let t = std::thread::spawn(move || me.unpark());
    goro::park();
    t.join().unwrap();
    goro::yield_now();
}

#[test]
fn wakeups_between_goroutines_never_lost() {
    // Ping-pong by park/unpark, 20,000 rounds, with a counter checked on both sides.
    goro::run(|| common::park_ping_pong(20_000));
}

#[test]
fn runtime_restarts_and_builder_settings_apply() {
    for i in 0..3 {
        let v = goro::Builder::new()
            .stack_size(64 << 10)
            .thread_name("restart")
            .run(move || goro::spawn(move || i * 2).join().unwrap());
        assert_eq!(v, i * 2);
    }
}

#[test]
fn spawn_builder_stack_size() {
    goro::run(|| {
        // 4 MiB stack: use 3 MiB of it.
        let h = goro::SpawnBuilder::new()
            .stack_size(4 << 20)
            .spawn(|| {
                let buf = [7u8; 3 << 20];
                std::hint::black_box(&buf)
                    .iter()
                    .map(|&b| b as u64)
                    .sum::<u64>()
            })
            .unwrap();
        assert_eq!(h.join().unwrap(), 7 * (3 << 20));
    });
}

#[goro::main]
fn attribute_main() -> u32 {
    goro::spawn(|| 5).join().unwrap()
}

#[test]
fn goro_main_attribute() {
    assert_eq!(attribute_main(), 5);
}
