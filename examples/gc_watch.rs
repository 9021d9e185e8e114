//! The seeds' deterministic GC program (000): four booleans that hold on any machine.
use goro::gc::Gc;
use goro::runtime::mem_stats;

#[goro::main]
fn main() {
    let before = mem_stats();
    // Allocate a few MiB of immediate garbage (unreferenced → collectable): 16 objects of
    // 1 MiB each on the managed heap (large objects, a span each), dropped immediately.
    for _ in 0..16 {
        let big: Gc<Vec<u8>> = Gc::new(vec![0u8; 1 << 20]);
        std::hint::black_box(&big);
    }
    goro::gc::collect(); // force exactly one full cycle
    let after = mem_stats();
    // NumGC is monotonic, so this delta is stable everywhere.
    println!("at least one GC ran: {}", after.num_gc > before.num_gc);
    // TotalAlloc is cumulative and never decreases.
    println!(
        "allocated more after the loop: {}",
        after.total_alloc > before.total_alloc
    );
    // GCCPUFraction is a fraction in [0,1].
    println!("GC CPU fraction <= 1: {}", after.gc_cpu_fraction <= 1.0);
    // After a forced GC, the next-GC heap goal is set (non-zero).
    println!("next-GC goal is set: {}", after.next_gc > 0);
}
