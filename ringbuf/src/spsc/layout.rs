//! The SPSC ring's control block: where the producer's and consumer's
//! positions, roles and eventcounts live in the segment.
//!
//! ```text
//! 0      Header           (crate::header)
//! 256    SpscControl      tail | head | producer | consumer | 2 eventcounts,
//!                         each on its own 128-byte line
//! 4096   data region      `capacity` bytes (a power of two) of records
//! ```

use crossbeam_utils::CachePadded;

use crate::header::reason::Reason;
use crate::sync::{AtomicU32, AtomicU64};
use crate::wait::EventCount;

/// A role's attachment record (producer or consumer), on its own line.
///
/// The state only moves forward: FREE → ATTACHING → ATTACHED → CLOSED or
/// ABORTED. A peer checks the word wherever it reads it: a value outside
/// these five, or a step backwards, is corruption.
#[derive(Debug)]
#[repr(C)]
pub struct RoleSlot {
    /// [`ROLE_FREE`], [`ROLE_ATTACHING`], [`ROLE_ATTACHED`], [`ROLE_CLOSED`]
    /// or [`ROLE_ABORTED`].
    pub state: AtomicU32,
    /// Pid of the holder.
    pub pid: AtomicU32,
    /// Start time of the holder.
    pub start_time: AtomicU64,
    /// Written by a producer that closes, before [`ROLE_CLOSED`]: its final
    /// position XOR [`CLOSE_SEAL`]. The consumer ends the stream cleanly only
    /// if it has received exactly up to that position, so a stray write of
    /// the state word alone cannot pass for a close.
    pub seal: AtomicU64,
    /// Why the holder aborted ([`ROLE_ABORTED`]).
    pub reason: Reason,
}

/// Nobody holds the role yet.
pub const ROLE_FREE: u32 = 0;
/// A process is writing its identity.
pub const ROLE_ATTACHING: u32 = 1;
/// A process holds the role.
pub const ROLE_ATTACHED: u32 = 2;
/// The holder closed its end; the role cannot be taken again.
pub const ROLE_CLOSED: u32 = 3;
/// The holder gave up after an error, or was dropped while a call had
/// failed: its peer gets what was committed, then
/// [`Error::PeerAborted`], never a clean end of stream. The role cannot be
/// taken again.
pub const ROLE_ABORTED: u32 = 4;
/// XORed with a closing producer's final position to make
/// [`RoleSlot::seal`] ("SHMCLOSE" as little-endian bytes).
pub const CLOSE_SEAL: u64 = u64::from_le_bytes(*b"SHMCLOSE");

impl RoleSlot {
    /// A free slot (used by heap-allocated models and tests).
    pub fn new() -> RoleSlot {
        RoleSlot {
            state: AtomicU32::new(ROLE_FREE),
            pid: AtomicU32::new(0),
            start_time: AtomicU64::new(0),
            seal: AtomicU64::new(0),
            reason: Reason::new(),
        }
    }
}

impl Default for RoleSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// The SPSC ring's shared words. Each field sits on its own 128-byte line so
/// the producer's and consumer's writes never share a cache line.
#[derive(Debug)]
#[repr(C)]
pub struct SpscControl {
    /// Producer position: bytes ever published. Written only by the producer.
    pub tail: CachePadded<AtomicU64>,
    /// Consumer position: bytes ever released. Written only by the consumer.
    pub head: CachePadded<AtomicU64>,
    /// Who produces.
    pub producer: CachePadded<RoleSlot>,
    /// Who consumes.
    pub consumer: CachePadded<RoleSlot>,
    /// The consumer parks here waiting for records.
    pub data_ready: CachePadded<EventCount>,
    /// The producer parks here waiting for space.
    pub space_free: CachePadded<EventCount>,
}

impl SpscControl {
    /// Both eventcounts, named as diagnostics name them.
    pub(crate) fn eventcounts(&self) -> [(&'static str, &EventCount); 2] {
        [("data_ready", &self.data_ready), ("space_free", &self.space_free)]
    }

    /// A zeroed control block (used by heap-allocated models and tests).
    pub fn new() -> SpscControl {
        SpscControl {
            tail: CachePadded::new(AtomicU64::new(0)),
            head: CachePadded::new(AtomicU64::new(0)),
            producer: CachePadded::new(RoleSlot::new()),
            consumer: CachePadded::new(RoleSlot::new()),
            data_ready: CachePadded::new(EventCount::new()),
            space_free: CachePadded::new(EventCount::new()),
        }
    }
}

impl Default for SpscControl {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(loom))]
const _: () = {
    use crate::header::abi::{CONTROL_OFFSET, HEADER_LEN};
    assert!(CONTROL_OFFSET + std::mem::size_of::<SpscControl>() <= HEADER_LEN);
    // A role slot fits its 128-byte line.
    assert!(std::mem::size_of::<RoleSlot>() <= 128);
};
