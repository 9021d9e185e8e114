//! goro's garbage collector. Placeholder crate: the heap, `Gc<T>`, `Trace`, the write barrier,
//! marker, sweeper and pacer arrive with the GC issue. It will reach the scheduler only through
//! the root/safepoint interface `goro-runtime` exposes (the stack statistics and
//! `goro::stack::release_below_sp` are the first pieces of it).
#![deny(clippy::undocumented_unsafe_blocks)]
