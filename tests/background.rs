//! A goroutine spawned from a plain thread keeps its runtime going (alone in its binary: it
//! turns the runtime into the process's background runtime).

use std::sync::atomic::Ordering;
use std::sync::Arc;

#[test]
fn plain_thread_goroutine_outlives_the_run_it_joined() {
    // A plain thread spawns while another thread's `run` owns the runtime; that `run` returns
    // first. The plain thread's goroutine must still run to completion.
    let (in_run_tx, in_run_rx) = std::sync::mpsc::channel::<()>();
    let (spawned_tx, spawned_rx) = std::sync::mpsc::channel::<()>();
    let runner = std::thread::spawn(move || {
        goro::run(move || {
            in_run_tx.send(()).unwrap();
            spawned_rx.recv().unwrap(); // blocks this goroutine's M; fine for the test
        });
    });
    in_run_rx.recv().unwrap();
    let go_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let g2 = go_on.clone();
    let h = goro::spawn(move || {
        while !g2.load(Ordering::Acquire) {
            goro::park();
        }
        42
    });
    spawned_tx.send(()).unwrap();
    runner.join().unwrap(); // the `run` has returned
    go_on.store(true, Ordering::Release);
    h.goroutine().unpark();
    assert_eq!(h.join().unwrap(), 42);
}
