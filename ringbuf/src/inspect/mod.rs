//! Diagnostics: what a segment holds and what is wrong with it, learnt from
//! plain reads of its first bytes, without mapping it or writing to it. A
//! damaged or hostile segment gives problems in plain words, never a panic.
//! `shmring ls` and `shmring inspect` print what this module finds.
//!
//! - [`SegmentView::read`]: header, control words, record type and (MPMC)
//!   participant table of the segment at a [`Location`](crate::Location),
//!   with [`SegmentView::problems`] and [`SegmentView::status`].
//! - [`Snapshot`]: the header and control words of one page;
//!   [`Snapshot::problems`] runs the same header checks as every opener.
//!
//! ```
//! use shmring::{Location, SpscOptions, inspect::{SegmentView, Status}, spsc::Producer};
//! # fn main() -> shmring::Result<()> {
//! let loc = Location::shm(format!("inspect-doc-{}", std::process::id()));
//! let _tx = Producer::create(&loc, &SpscOptions::new())?;
//! let view = SegmentView::read(&loc)?;
//! assert!(view.is_shmring() && view.problems().is_empty());
//! assert_eq!(view.status(), Status::Alive); // its producer is alive
//! loc.unlink()?;
//! # Ok(()) }
//! ```

mod bytes;
mod participants;
mod snapshot;
mod view;

pub use participants::{ParticipantEntry, Participants};
pub use snapshot::{MpmcSnapshot, Snapshot};
pub use view::{POSITION_READS, RecordTypeInfo, SegmentView, Status};
