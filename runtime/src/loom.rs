//! The atomics shim: the runtime's lock-free code imports atomics from here so the
//! same code runs under `loom` (`RUSTFLAGS="--cfg loom" cargo test -p goro-runtime --lib loom_`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
