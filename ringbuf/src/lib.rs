//! # shmring
//!
//! Lock-free rings in shared memory for moving messages between processes on
//! one host, with no system call on the hot path.
//!
//! - [`Segment`]: a mapping over a POSIX shm object, a file, or a memfd.
//! - [`spsc`]: a single-producer single-consumer ring of variable-length
//!   records, zero-copy on both sides ([`spsc::Producer::grant`],
//!   [`spsc::Consumer::recv`]), with batching.
//! - [`mpmc`]: a multi-producer multi-consumer ring of fixed-size slots that
//!   any number of processes attach to; a process killed mid-message does not
//!   wedge the others ([`mpmc::Producer`], [`mpmc::Consumer`]).
//! - [`typed`]: [`typed::Sender<T>`] / [`typed::Receiver<T>`] of plain-data
//!   values (`zerocopy` types) over a ring; the header records the type, and
//!   opening a ring with another type is an error.
//! - [`WaitPolicy`]: spin, yield, then park on a shared futex through an
//!   eventcount ([`EventCount`]); a sender wakes nobody unless a receiver is
//!   actually asleep.
//! - Everything read from shared memory is treated as hostile, wherever it
//!   is read: impossible values give [`Error::Corrupted`], never a panic, an
//!   out-of-bounds access or a wait for ever.
//! - A stream ends in one of three ways that never look alike: the producer
//!   closed (everything, then `Ok(None)`), aborted (everything it committed,
//!   then [`Error::PeerAborted`] with its reason; also what dropping a handle
//!   after a failed call does), or died (everything it committed, then
//!   [`Error::PeerDied`], within about 100 ms).
//!
//! ## Two processes
//!
//! ```no_run
//! use shmring::{Location, SpscOptions, spsc::{Consumer, Producer}};
//! # fn main() -> shmring::Result<()> {
//! let loc = Location::shm("demo");
//! if std::env::args().nth(1).as_deref() == Some("produce") {
//!     // Whichever side starts first creates the segment.
//!     let mut tx = Producer::open_or_create(&loc, &SpscOptions::new())?;
//!     for i in 0..1000u32 {
//!         tx.send(&i.to_le_bytes())?;
//!     }
//!     // Dropping the producer ends the stream.
//! } else {
//!     let mut rx = Consumer::open_or_create(&loc, &SpscOptions::new())?;
//!     while let Some(rec) = rx.recv()? {
//!         println!("{:?}", &*rec);
//!     }
//!     loc.unlink()?;
//! }
//! # Ok(()) }
//! ```
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks, missing_debug_implementations)]

mod error;
pub mod header;
#[cfg(not(loom))]
pub mod inspect;
pub mod liveness;
pub mod mpmc;
mod options;
mod region;
mod ring;
pub mod segment;
pub mod spsc;
mod sync;
pub mod typed;
pub mod wait;

pub use error::{Error, Result};

/// The README's code blocks, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
pub use liveness::{Liveness, ProcessId};
pub use mpmc::MpmcOptions;
pub use options::SegmentOptions;
pub use segment::{Location, Segment};
pub use spsc::SpscOptions;
/// The SPSC ring's options under their old name.
#[deprecated(
    since = "0.1.0",
    note = "renamed `SpscOptions` (`spsc::SpscOptions`): options say which ring they are for"
)]
pub type RingOptions = SpscOptions;
pub use wait::{EventCount, WaitPolicy};
