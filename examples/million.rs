//! The main demo: spawn a million goroutines that each park, then wake them all.
//!
//! `cargo run --release --example million [-- --n <count> --rounds <r>]`
//!
//! Prints `name value unit` lines:
//! - `spawn_all_parked`: time from the first spawn until every goroutine has parked;
//! - `rss_per_goroutine`: resident memory added per parked goroutine (stack page, page tables,
//!   descriptor, the handles this program keeps);
//! - `release_all`: time to unpark every goroutine and join it;
//! - the same again with `_reuse` for the second round, whose goroutines reuse the stack slots
//!   the first round freed (no page faults, no guard installation).

#[path = "../benches/workloads/spawn_idle.rs"]
mod spawn_idle;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => match args.get(i + 1).map(|v| v.replace('_', "").parse()) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("usage: million [--n <count>] [--rounds <r>]: {name} needs a number");
                std::process::exit(2);
            }
        },
        None => default,
    }
}

fn round(n: usize, suffix: &str) {
    let r = spawn_idle::spawn_idle(n);
    println!("spawn_all_parked{suffix} {:.1} ms", r.spawn_all_parked_ms);
    println!("rss_per_goroutine{suffix} {} B", r.rss_per_goroutine);
    println!("release_all{suffix} {:.1} ms", r.release_all_ms);
}

fn main() {
    let n = arg("--n", 1_000_000);
    let rounds = arg("--rounds", 2);
    goro::run(move || {
        for r in 0..rounds {
            round(n, if r == 0 { "" } else { "_reuse" });
        }
        let s = goro::stack::stats();
        println!("goroutines {n} count");
        println!("stack_reservations {} count", s.reservations);
        println!("stack_slots {} count", s.slots);
    });
}
