//! Workloads for the criterion benches in `benches/spsc.rs`, comparing
//! shmring with [rtrb](https://docs.rs/rtrb) and crossbeam's `ArrayQueue`.
//!
//! Every workload is a [`Workload`]: a producer side driven by the bench
//! thread and a peer (a thread, or another process) that stays alive across
//! criterion's iterations, so neither thread nor process start-up is timed.
//!
//! - [`shm`]: shmring between two threads or two processes. A cross-process
//!   peer is this same executable, re-run with [`PEER_ENV`] set; the bench's
//!   `main` calls [`run_peer_if_requested`] before anything else.
//! - [`baseline`]: rtrb and `ArrayQueue` between two threads.
//!
//! The two sides are pinned to two different CPUs when the process may run
//! on at least two ([`affinity`]), the same way for every library.
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::time::Duration;

pub mod affinity;
pub mod baseline;
pub mod mpmc;
pub mod shm;

pub use shm::{PEER_ENV, run_peer_if_requested};

/// Slots in every streaming ring: rtrb and `ArrayQueue` get this many `u64`
/// slots, shmring's SPSC ring the same bytes (runs of 8-byte records share
/// one header, so it holds about as many), its MPMC ring this many slots.
pub const RING_ITEMS: usize = 4096;

/// Payload size of a ping-pong message.
pub const MSG_LEN: usize = 64;

/// Error type of the peer side (it may run on another thread).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Something criterion times with `iter_custom`.
pub trait Workload {
    /// Do `iters` units of work (stream `iters` items, or make `iters`
    /// round trips) and return the wall time they took.
    ///
    /// # Panics
    /// If the peer fails or returns wrong data: a bench cannot go on.
    fn run(&mut self, iters: u64) -> Duration;
}

/// Sum of the stream `0..n` with wrapping arithmetic: what the consumer
/// must report back after a run of `n` items.
///
/// ```
/// assert_eq!(shmring_benches::expected_sum(4), 6);
/// assert_eq!(shmring_benches::expected_sum(0), 0);
/// ```
pub fn expected_sum(n: u64) -> u64 {
    // n * (n - 1) / 2, halving whichever factor is even before the multiply.
    if n.is_multiple_of(2) { (n / 2).wrapping_mul(n.wrapping_sub(1)) } else { n.wrapping_mul((n - 1) / 2) }
}

/// First 8 bytes of `bytes` as a little-endian `u64`; `u64::MAX` if shorter,
/// so a bad record shows up as a wrong checksum rather than a panic.
pub fn read_u64(bytes: &[u8]) -> u64 {
    bytes.get(..8).and_then(|b| b.try_into().ok()).map_or(u64::MAX, u64::from_le_bytes)
}

/// A shm name no other bench run uses: pid, a per-thread counter, and `tag`.
pub fn unique_name(tag: &str) -> String {
    thread_local! {
        static NEXT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let n = NEXT.with(|c| c.replace(c.get() + 1));
    format!("shmring-bench-{}-{n}-{tag}", std::process::id())
}
