//! The stack-overflow handler: turns a fault on a stack slot's guard page into Go's message.
//!
//! 1. The first runtime to start installs a `SIGSEGV`/`SIGBUS` handler (`SA_ONSTACK |
//!    SA_SIGINFO`), remembering the previous one. Every M installs an alternate signal stack
//!    ([`AltStack`]): a goroutine that overflowed has no stack left to run a handler on.
//! 2. On a fault the handler looks the address up in the reservation table (lock-free, no
//!    allocation). If it lies in the lowest page of a slot, it writes
//!    `fatal error: stack overflow in goroutine <id> (limit <N> KiB)` and a hint to stderr with
//!    `write(2)` and aborts, like Go's `runtime: goroutine stack exceeds limit`.
//! 3. Any other fault goes to the previous handler (Rust's own overflow reporter for thread
//!    stacks, or the default action, which kills the process with the signal as before).
//!
//! Rejected: recovering from the overflow (longjmp out of the goroutine). The overflowing code
//! may hold locks or be half way through a destructor; Go does not recover either.

use crate::stack::{madvise::PAGE, reservation};
use std::cell::UnsafeCell;
use std::sync::Once;

struct PrevActions(UnsafeCell<[libc::sigaction; 2]>);
// SAFETY: written once inside `INSTALL.call_once` before our handler is installed, read-only
// afterwards (by the handler).
unsafe impl Sync for PrevActions {}

// SAFETY: sigaction is plain old data; all-zero is a valid (SIG_DFL) value.
static PREV: PrevActions = PrevActions(UnsafeCell::new(unsafe { std::mem::zeroed() }));
static INSTALL: Once = Once::new();

/// Installs the fault handler once per process.
pub(crate) fn install_handler() {
    INSTALL.call_once(|| {
        for (i, sig) in [libc::SIGSEGV, libc::SIGBUS].into_iter().enumerate() {
            // SAFETY: we build a valid sigaction for a handler with the SA_SIGINFO signature,
            // and store the previous action into PREV before the new handler can run (PREV is
            // written only here, under the Once).
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = handler as *const () as usize;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut act.sa_mask);
                let prev = &mut (*PREV.0.get())[i];
                libc::sigaction(sig, &act, prev);
            }
        }
    });
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some((lo, size)) = reservation::find_slot(addr) {
        if addr < lo + PAGE {
            report_overflow(tls_goid(), (size - PAGE) / 1024);
        }
    }
    // Not ours: hand it to whoever was there before.
    let i = if sig == libc::SIGSEGV { 0 } else { 1 };
    // SAFETY: PREV was fully written before this handler was installed and is never written
    // again.
    let prev = unsafe { &(*PREV.0.get())[i] };
    if prev.sa_sigaction == libc::SIG_DFL || prev.sa_sigaction == libc::SIG_IGN {
        // Restore the default and return: the faulting instruction runs again and the kernel
        // applies the default action (terminate with this signal), as if we were never here.
        // SAFETY: resetting a signal to SIG_DFL is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this signature;
        // we pass it the arguments the kernel gave us.
        unsafe {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(prev.sa_sigaction);
            f(sig, info, ctx);
        }
    } else {
        // SAFETY: a non-SA_SIGINFO handler takes just the signal number.
        unsafe {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev.sa_sigaction);
            f(sig);
        }
    }
}

fn tls_goid() -> u64 {
    crate::tls::current_goid()
}

/// Writes the fatal message with `write(2)` only (async-signal-safe) and aborts.
fn report_overflow(goid: u64, limit_kib: usize) -> ! {
    let mut buf = [0u8; 320];
    let mut n = 0;
    let mut put = |s: &[u8]| {
        let k = s.len().min(buf.len() - n);
        buf[n..n + k].copy_from_slice(&s[..k]);
        n += k;
    };
    put(b"fatal error: stack overflow in goroutine ");
    put(fmt_u64(goid, &mut [0u8; 20]));
    put(b" (limit ");
    put(fmt_u64(limit_kib as u64, &mut [0u8; 20]));
    put(
        b" KiB)\nhint: give the goroutine a larger stack with goro::Builder::stack_size \
          (all goroutines) or goro::SpawnBuilder::stack_size (one goroutine)\n",
    );
    // SAFETY: write(2) on stderr with a valid buffer, then abort(3): both async-signal-safe.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::abort();
    }
}

fn fmt_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Bytes of an M's alternate signal stack: the handler formats into a 320-byte buffer, and a
/// chained handler (Rust's own) needs a few KiB.
const ALT_STACK: usize = 64 << 10;

/// An alternate signal stack owned by one M thread, removed when the M exits.
pub(crate) struct AltStack {
    mem: *mut libc::c_void,
}

impl AltStack {
    /// Installs an alternate signal stack on this thread unless one of at least `ALT_STACK`
    /// bytes is already there.
    pub(crate) fn install() -> Option<AltStack> {
        // SAFETY: querying sigaltstack with a null new value only reads the current setting.
        let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: `old` is a valid out-pointer.
        unsafe { libc::sigaltstack(std::ptr::null(), &mut old) };
        if old.ss_flags & libc::SS_DISABLE == 0 && old.ss_size >= ALT_STACK {
            return None;
        }
        // SAFETY: a fresh anonymous mapping with a guard page below the usable range.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ALT_STACK + PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: `mem` is our mapping; protecting its first page makes it a guard.
        unsafe { libc::mprotect(mem, PAGE, libc::PROT_NONE) };
        let st = libc::stack_t {
            // SAFETY: inside the mapping just created.
            ss_sp: unsafe { mem.add(PAGE) },
            ss_flags: 0,
            ss_size: ALT_STACK,
        };
        // SAFETY: `st` describes memory that stays mapped until `drop` disables it first.
        unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) };
        Some(AltStack { mem })
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let st = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: disable the alternate stack before unmapping it; this thread is not in a
        // signal handler here (drop runs on the M's own stack at exit).
        unsafe {
            libc::sigaltstack(&st, std::ptr::null_mut());
            libc::munmap(self.mem, ALT_STACK + PAGE);
        }
    }
}

/// Sets `SIGPIPE` to be ignored if it has its default action (which kills the process), so a
/// write to a socket whose peer has gone fails with `BrokenPipe` in that goroutine instead.
/// Rust's `main` already does this; this covers programs whose entry point is not Rust's and
/// test harnesses. A handler the program installed itself is left alone. Called when the
/// netpoller starts (the first socket).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: `sigaction` with a null new action only reads the current one into `old`, a
    // valid, zeroed sigaction; installing SIG_IGN takes a valid, zeroed sigaction whose
    // handler field is SIG_IGN. Racing another thread's `sigaction` only changes whose
    // disposition wins, never memory safety.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_DFL
        {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_IGN;
            libc::sigaction(libc::SIGPIPE, &act, std::ptr::null_mut());
        }
    }
}
