//! Thread-bound state and the one-M rule; the migration scan behind `allow_migration`.
//!
//! # The rule
//! **A goroutine runs on one M (OS thread) from its first run to its end.** Work stealing
//! moves only goroutines that have not started (`Runtime::file` queues a started one on its
//! own M), so everything Rust ties to a thread is as correct in a goroutine as on a plain
//! thread: a `thread_local!` and references into it, an `Rc` cloned from one (rand's
//! `ThreadRng`, any crate's thread-local handles), std's `ReentrantLock` guards
//! (`stdout().lock()`), `std::thread::scope` (which parks and unparks the thread that opened
//! it). This is Go's `LockOSThread`, for every goroutine, without its cost: an M holds any
//! number of bound goroutines and runs them from its own queue, no hand-off of the P per
//! switch.
//!
//! What it costs, measured in `benches/compare` and stated in the README: goroutines stay
//! where they started, so CPU-bound goroutines spread unevenly stay uneven (`imbalance`: 3 on
//! 2 Ps, two share one M while the third has the other), a hand-off between goroutines of two
//! Ms crosses threads instead of moving the woken one to the waker's P (`ring`), and code
//! inside `goro::blocking` holds up the goroutines bound to its thread, which also means it
//! must not wait for one of them.
//!
//! # With `Builder::allow_migration` (unsafe)
//! Started goroutines are queued on the P like new ones, and may resume on another M. The
//! scan below is then the net: **a goroutine whose parked stack holds an address inside the
//! static thread-local block of the M it last ran on resumes on that M.** Checked only when a
//! goroutine is about to run on a different M than last time, by scanning the words of its
//! stack from the recorded stack pointer (minus the switch frames, which hold the callee-saved
//! registers the compiler may keep such an address in) up to the top of its slot.
//! Conservative: a stale word that happens to look like such an address pins too, which costs
//! parallelism, never correctness. A goroutine parked on a stack outside its slot (a coroutine
//! of the program's own run inside it) is never moved: its frames cannot be scanned. A
//! goroutine found pinned goes to its M's inbox (`M::push_inbox` wakes that M). The scan sees
//! only addresses on the stack: an `Rc` from a thread-local, a reference kept on the heap, a
//! std lock guard or a scope are invisible to it, which is why migration is `unsafe`.
//!
//! The TLS block: on x86-64 (TLS variant II) the static blocks of the executable and of the
//! libraries loaded at start sit just below the thread pointer (`fs:0`); on aarch64 (variant I)
//! just above it (`tpidr_el0` + 16). Their size is the sum of the `PT_TLS` segments
//! (`dl_iterate_phdr`), plus slack for alignment. A thread-local of a library loaded later
//! with `dlopen` lives in dynamically allocated TLS and is not detected; on other
//! architectures every goroutine stays on the M it first ran on.
//!
//! Rejected: the scan as the rule (the first design: it cannot see an `Rc` cloned from a
//! thread-local, a reference kept on the heap, a lock guard or a scope; with 32 goroutines on
//! 2 Ps the `ThreadRng` pattern was used from the wrong thread thousands of times a run);
//! scanning at every park (a cost on the hottest path, and blind to the same things);
//! forbidding thread-bound state by documentation only (safe code would have undefined
//! behaviour, and users cannot know which crates keep it).

use super::m::{registered, M};
use super::Runtime;
use crate::g::{GRef, Switch, G};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Resumes kept on their old M because the scan found a thread-local address.
pub(crate) static PINNED: AtomicU64 = AtomicU64::new(0);
/// Goroutines resumed on a different M than last time.
pub(crate) static MIGRATED: AtomicU64 = AtomicU64::new(0);

/// Bytes of alignment padding allowed around the static TLS blocks. Small on purpose: glibc
/// puts a thread's stack right below its TLS area, and the coroutine switch frames hold the
/// M's stack pointer, so a wide margin would pin every goroutine. Past the modules' blocks
/// comes glibc's static TLS surplus (over 1.5 KiB), so this margin stays inside the TLS area.
const TLS_SLACK: usize = 256;

/// Reads the thread pointer of the calling thread.
#[cfg(target_arch = "x86_64")]
fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: on x86-64 Linux `fs:0` holds the thread control block's self-pointer (the
    // thread pointer); reading it has no side effects.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

#[cfg(target_arch = "aarch64")]
fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reading the thread pointer register has no side effects.
    unsafe {
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags))
    };
    tp
}

/// Total size of the static TLS segments of the modules loaded now.
fn static_tls_size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| {
        unsafe extern "C" fn add(
            info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            data: *mut libc::c_void,
        ) -> libc::c_int {
            // SAFETY: `dl_iterate_phdr` passes a valid `info` whose `dlpi_phdr` points to
            // `dlpi_phnum` program headers, and `data` is the `usize` we passed.
            unsafe {
                let info = &*info;
                let total = &mut *data.cast::<usize>();
                for i in 0..info.dlpi_phnum as usize {
                    let ph = &*info.dlpi_phdr.add(i);
                    if ph.p_type == libc::PT_TLS {
                        let align = (ph.p_align as usize).max(1);
                        *total += (ph.p_memsz as usize).div_ceil(align) * align;
                    }
                }
            }
            0
        }
        let mut total = 0usize;
        // SAFETY: the callback matches the signature and only reads what it is given.
        unsafe { libc::dl_iterate_phdr(Some(add), (&mut total as *mut usize).cast()) };
        total
    })
}

/// Records the calling thread's static TLS block in `m` (called by the M on its thread).
pub(crate) fn record_tls_block(m: &M) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let tp = thread_pointer();
        let size = static_tls_size() + TLS_SLACK;
        #[cfg(target_arch = "x86_64")]
        let (lo, hi) = (tp.saturating_sub(size), tp + 8);
        #[cfg(target_arch = "aarch64")]
        let (lo, hi) = (tp, tp + 16 + size);
        m.tls_lo.store(lo, Ordering::Relaxed);
        m.tls_hi.store(hi, Ordering::Relaxed);
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = m; // unknown layout: `may_run_on` pins everything
}

/// Whether any 8-byte word in `[from, to)` lies in `[lo, lo + len)`.
///
/// # Safety
/// `[from, to)` must be readable memory, 8-byte aligned.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn any_word_in(from: usize, to: usize, lo: usize, len: usize) -> bool {
    // Four words per step with AVX2 where the CPU has it: a goroutine that moves between
    // threads (a server's goroutines, woken by whichever M polled) is scanned at each move, and
    // the scalar loop was a third of such a server's instructions.
    #[cfg(target_arch = "x86_64")]
    if to - from >= 64 && std::arch::is_x86_feature_detected!("avx2") {
        let mid = to - (to - from) % 32;
        // SAFETY: the CPU has AVX2 (checked above); `[from, mid)` is a whole number of 32-byte
        // blocks inside the caller's readable range, and `[mid, to)` is the rest of it.
        return unsafe { any_word_in_avx2(from, mid, lo, len) || any_word_in(mid, to, lo, len) };
    }
    let found: usize;
    // The loads are done by assembly: the words may be padding or dead stack slots, which Rust
    // code may not read as integers, while a machine load of readable memory is always fine.
    // SAFETY: the caller guarantees the range is readable; the asm only reads it.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!(
            "xor {found:e}, {found:e}",
            "2:",
            "cmp {p}, {end}",
            "jae 3f",
            "mov {w}, qword ptr [{p}]",
            "add {p}, 8",
            "sub {w}, {lo}",
            "cmp {w}, {len}",
            "jae 2b",
            "mov {found:e}, 1",
            "3:",
            p = inout(reg) from => _,
            end = in(reg) to,
            w = out(reg) _,
            lo = in(reg) lo,
            len = in(reg) len,
            found = out(reg) found,
            options(nostack, readonly),
        );
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!(
            "mov {found}, #0",
            "2:",
            "cmp {p}, {end}",
            "b.hs 3f",
            "ldr {w}, [{p}], #8",
            "sub {w}, {w}, {lo}",
            "cmp {w}, {len}",
            "b.hs 2b",
            "mov {found}, #1",
            "3:",
            p = inout(reg) from => _,
            end = in(reg) to,
            w = out(reg) _,
            lo = in(reg) lo,
            len = in(reg) len,
            found = out(reg) found,
            options(nostack, readonly),
        );
    }
    found != 0
}

/// `any_word_in` four words at a time: `(w - lo) < len` unsigned, as a signed compare of both
/// sides with the top bit flipped (AVX2 has only signed 64-bit compares).
///
/// # Safety
/// The CPU has AVX2; `[from, to)` is readable memory, 8-byte aligned, `to - from` a multiple
/// of 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn any_word_in_avx2(from: usize, to: usize, lo: usize, len: usize) -> bool {
    const BIAS: u64 = 1 << 63;
    let found: u8;
    // As in `any_word_in`, the loads are the assembly's own (unaligned `vmovdqu`).
    // SAFETY: the caller guarantees AVX2 and a readable range of whole 32-byte blocks; the asm
    // only reads it and clears the upper halves of the vector registers before returning.
    unsafe {
        std::arch::asm!(
            "vmovq {vlo:x}, {lo}",
            "vpbroadcastq {vlo}, {vlo:x}",
            "vmovq {vlen:x}, {lenb}",
            "vpbroadcastq {vlen}, {vlen:x}",
            "vmovq {vbias:x}, {bias}",
            "vpbroadcastq {vbias}, {vbias:x}",
            "vpxor {acc}, {acc}, {acc}",
            "2:",
            "cmp {p}, {end}",
            "jae 3f",
            "vmovdqu {v}, ymmword ptr [{p}]",
            "add {p}, 32",
            "vpsubq {v}, {v}, {vlo}",
            "vpxor {v}, {v}, {vbias}",
            "vpcmpgtq {v}, {vlen}, {v}",
            "vpor {acc}, {acc}, {v}",
            "jmp 2b",
            "3:",
            "vptest {acc}, {acc}",
            "setnz {found}",
            "vzeroupper",
            p = inout(reg) from => _,
            end = in(reg) to,
            lo = in(reg) lo,
            lenb = in(reg) (len as u64) ^ BIAS,
            bias = in(reg) BIAS,
            vlo = out(ymm_reg) _,
            vlen = out(ymm_reg) _,
            vbias = out(ymm_reg) _,
            acc = out(ymm_reg) _,
            v = out(ymm_reg) _,
            found = out(reg_byte) found,
            options(nostack, readonly),
        );
    }
    found != 0
}

/// Bytes between the stack pointer a switch-out records and the lowest word the switch
/// writes (the context-switch frames), measured once by running a probe coroutine on a stack
/// filled with a pattern; plus a margin.
pub(crate) fn switch_depth() -> usize {
    static DEPTH: OnceLock<usize> = OnceLock::new();
    *DEPTH.get_or_init(|| measure_switch_depth().unwrap_or(crate::stack::RED_ZONE) + 64)
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn measure_switch_depth() -> Option<usize> {
    use crate::stack::StackSlot;
    const PATTERN: usize = 0x5A5A_5A5A_5A5A_5A5A;
    let slot = StackSlot::new(16 << 10).ok()?;
    // The stack part of the slot: above the guard, below the header.
    let (lo, hi) = (
        slot.lo() + crate::stack::madvise::PAGE,
        crate::stack::stack_top(slot.hi()),
    );
    // SAFETY: the slot's stack range is ours (nothing runs on it yet) and writable.
    unsafe { std::ptr::write_bytes(lo as *mut u8, 0x5A, hi - lo) };
    let sp = std::sync::Arc::new(AtomicUsize::new(0));
    let sp2 = sp.clone();
    let mut probe: crate::g::Coro = corosensei::Coroutine::with_stack(slot, move |y, ()| {
        crate::g::suspend_recording_sp(y, &sp2, Switch::Yield);
    });
    let _ = probe.resume(());
    // Lowest word the coroutine wrote: everything below still holds the pattern.
    let mut lowest = hi;
    let mut a = lo;
    while a < hi {
        // SAFETY: `[lo, hi)` is readable; the asm load reads one word of it.
        if !unsafe { any_word_in(a, a + 8, PATTERN, 1) } {
            lowest = a;
            break;
        }
        a += 8;
    }
    let _ = probe.resume(());
    let sp = sp.load(Ordering::Relaxed);
    (sp > lowest).then(|| sp - lowest)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn measure_switch_depth() -> Option<usize> {
    None
}

/// Whether `g`, which last ran on M `last`, may resume on the calling M. The caller owns `g`
/// (dequeued, not running).
pub(crate) fn may_run_on(_rt: &Runtime, last: usize, g: &G) -> bool {
    // SAFETY: the caller owns `g`, started and unfinished, bound to M `last` (`registered`).
    let Some(old) = (unsafe { registered(last) }) else {
        return true;
    };
    let (lo, hi) = (
        old.tls_lo.load(Ordering::Relaxed),
        old.tls_hi.load(Ordering::Relaxed),
    );
    let ok = scan_ok(g, lo, hi);
    if ok {
        MIGRATED.fetch_add(1, Ordering::Relaxed);
    } else {
        PINNED.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn scan_ok(g: &G, lo: usize, hi: usize) -> bool {
    if lo == hi {
        return false;
    }
    let (sp, slot_hi) = g.parked_stack();
    // Up to where the stack starts (the slot header above it is the runtime's).
    let top = crate::stack::stack_top(slot_hi);
    let floor = g.stack().lo() + crate::stack::madvise::PAGE; // above the guard page
    if sp < floor || sp >= top {
        // Parked on another stack (a coroutine of the program's own, run inside the
        // goroutine): its frames are not in the slot, so nothing here can be checked.
        return false;
    }
    let from = (sp.saturating_sub(switch_depth()) & !7).max(floor);
    if from >= top {
        return true;
    }
    // SAFETY: `[from, top)` lies in the goroutine's slot above its guard page, so it is mapped
    // (pages released by `release_below_sp` read as zero); the goroutine is not running (the
    // caller owns it), so nothing writes it meanwhile.
    !unsafe { any_word_in(from, top, lo, hi - lo) }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn scan_ok(_: &G, _: usize, _: usize) -> bool {
    false
}

/// Sends `g` back to M `target`, which it must run on: to its inbox, which wakes the M if it
/// sleeps (`M::push_inbox`).
pub(crate) fn send_back(rt: &Runtime, target: usize, g: GRef) {
    // SAFETY: `g` is started and unfinished, bound to `target`, and we hold its scheduling
    // reference (`registered`).
    match unsafe { registered(target) } {
        Some(t) => t.push_inbox(g),
        None => rt.inject(g),
    }
}

#[cfg(all(test, not(loom), any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::any_word_in;

    /// The word scan (vector and scalar paths) against a plain loop, over every offset and
    /// length near the vector block size and a range edge at each word.
    #[test]
    fn any_word_in_matches_a_plain_loop() {
        let mut words = vec![0usize; 96];
        let base = 0x7f00_0000_1000usize;
        let len = 0x2000usize;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for w in words.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly far from the range, some just below, inside and at its ends.
            *w = match x % 8 {
                0 => base - 8,
                1 => base + len,
                2 => base + len - 8,
                _ => x as usize,
            };
        }
        for hit in [None, Some(0), Some(3), Some(31), Some(64), Some(95)] {
            let mut ws = words.clone();
            if let Some(i) = hit {
                ws[i] = base + 16;
            }
            for from in 0..8 {
                for to in (from..ws.len()).step_by(3) {
                    let want = ws[from..to].iter().any(|&w| w.wrapping_sub(base) < len);
                    let p = ws.as_ptr() as usize;
                    // SAFETY: `[from, to)` words of a live vector: readable and aligned.
                    let got = unsafe { any_word_in(p + 8 * from, p + 8 * to, base, len) };
                    assert_eq!(got, want, "hit {hit:?} words {from}..{to}");
                }
            }
        }
    }
}
