//! The one place atomics and cells come from.
//!
//! Normal builds re-export `std`'s types; under `--cfg loom` the same names
//! come from [loom](https://docs.rs/loom) so the ring and eventcount
//! algorithms can be model-checked unchanged. Every other module imports its
//! atomics from here (enforced by `clippy.toml`'s `disallowed-types`).

#[cfg(not(loom))]
#[allow(clippy::disallowed_types)]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Spin-loop hint; under loom a yield so the model can make progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Yield the CPU to another thread or process.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}
