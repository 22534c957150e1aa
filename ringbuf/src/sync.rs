//! The one place atomics come from.
//!
//! Normal builds wrap `std`'s atomics in types of their own (same layout,
//! every method inlined away); under `--cfg loom` the same names come from
//! [loom](https://docs.rs/loom), so the ring and eventcount algorithms are
//! model-checked unchanged. Being types of their own is what lets
//! `clippy.toml` forbid std's atomics everywhere else (`disallowed-types`):
//! an atomic taken from std directly would escape the models.

// This module is the one place allowed to name std's atomics.
#![allow(clippy::disallowed_types)]

#[cfg(not(loom))]
// `fence` is only used where `full_fence` is not an x86 locked instruction.
#[allow(unused_imports, clippy::disallowed_methods)]
pub(crate) use std::sync::atomic::{Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// A std atomic under this module's name: `#[repr(transparent)]`, so it may
/// sit in `#[repr(C)]` shared-memory structs and be cast from a pointer into
/// a mapping, with the methods the algorithms use (loom's atomics have the
/// same ones).
macro_rules! atomic {
    ($name:ident, $int:ty) => {
        #[cfg(not(loom))]
        #[repr(transparent)]
        #[derive(Default)]
        pub struct $name(std::sync::atomic::$name);

        #[cfg(not(loom))]
        #[allow(missing_docs)]
        impl $name {
            #[inline(always)]
            pub const fn new(v: $int) -> Self {
                Self(std::sync::atomic::$name::new(v))
            }
            #[inline(always)]
            pub fn load(&self, order: Ordering) -> $int {
                self.0.load(order)
            }
            #[inline(always)]
            pub fn store(&self, v: $int, order: Ordering) {
                self.0.store(v, order)
            }
            #[inline(always)]
            pub fn swap(&self, v: $int, order: Ordering) -> $int {
                self.0.swap(v, order)
            }
            #[inline(always)]
            pub fn fetch_add(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_add(v, order)
            }
            #[inline(always)]
            pub fn fetch_sub(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_sub(v, order)
            }
            #[inline(always)]
            pub fn fetch_or(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_or(v, order)
            }
            #[inline(always)]
            pub fn fetch_max(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_max(v, order)
            }
            #[inline(always)]
            pub fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange(current, new, success, failure)
            }
            #[inline(always)]
            pub fn fetch_update(
                &self,
                set: Ordering,
                fetch: Ordering,
                f: impl FnMut($int) -> Option<$int>,
            ) -> Result<$int, $int> {
                self.0.fetch_update(set, fetch, f)
            }
            /// The address of the value, for system calls (`futex`).
            #[inline(always)]
            pub fn as_ptr(&self) -> *mut $int {
                self.0.as_ptr()
            }
        }

        #[cfg(not(loom))]
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // Relaxed: a snapshot for display.
                std::fmt::Debug::fmt(&self.load(Ordering::Relaxed), f)
            }
        }
    };
}

atomic!(AtomicU32, u32);
atomic!(AtomicU64, u64);

/// Spin-loop hint; under loom a yield so the model can make progress.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    #[allow(clippy::disallowed_methods)]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Yield the CPU to another thread or process.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    #[allow(clippy::disallowed_methods)]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// A sequentially consistent fence: `fence(Ordering::SeqCst)` in effect.
///
/// On x86-64 it is a locked no-op on the stack (`lock or [rsp], 0`) rather
/// than the `mfence` the compiler emits for `fence(SeqCst)`: every locked
/// instruction is a full barrier (loads and stores are not reordered with
/// it: Intel SDM vol. 3A, "Memory Ordering in P6 and More Recent Processor
/// Families"), and on the machine we measured it costs about half as much
/// (7 ns against 13 ns in a loop). The Linux kernel's x86 `smp_mb()`
/// is built the same way. The asm block may touch memory, so the compiler
/// keeps every memory access on its side of it. Elsewhere, and under loom,
/// it is `fence(SeqCst)`.
#[inline(always)]
pub(crate) fn full_fence() {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // SAFETY: ORs zero into the word at the top of our own stack: no value changes and the memory is ours;
    // the stack pointer does not move. The `or` writes the flags, so the block does not promise to
    // preserve them.
    unsafe {
        std::arch::asm!("lock or dword ptr [rsp], 0", options(nostack));
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    #[allow(clippy::disallowed_methods)]
    fence(Ordering::SeqCst);
}
