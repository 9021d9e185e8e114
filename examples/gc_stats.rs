//! The seeds' ReadMemStats program (001): allocate 100,000 short-lived 1 KiB objects, force a
//! cycle, and print Alloc, TotalAlloc, NumGC and PauseTotalNs before and after.
use goro::gc::Gc;
use goro::runtime::{mem_stats, MemStats};

fn allocate_junk() {
    for _ in 0..100_000 {
        let junk = Gc::new([0u8; 1024]);
        std::hint::black_box(&junk);
    }
}

fn print_stats(label: &str, ms: &MemStats) {
    println!("=== {label} ===");
    println!(" Alloc (live heap): {} KB", ms.heap_alloc / 1024);
    println!(" TotalAlloc (cumul): {} KB", ms.total_alloc / 1024);
    println!(" NumGC: {}", ms.num_gc);
    println!(" PauseTotalNs: {} ns", ms.pause_total_ns);
}

#[goro::main]
fn main() {
    let ms = mem_stats();
    print_stats("Before allocations", &ms);
    allocate_junk();
    // Force a cycle so we can see the stats after collection.
    goro::gc::collect();
    let ms = mem_stats();
    print_stats("After GC", &ms);
}
