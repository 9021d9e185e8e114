//! `#[derive(Trace)]` for goro-gc. Placeholder until the GC issue.
#![deny(clippy::undocumented_unsafe_blocks)]
