//! The segment header: the words at offset 0 of every segment, and the
//! constants of the ABI they follow.

use crate::sync::{AtomicU32, AtomicU64};

/// "SHMRING\0" little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMRING\0");
/// Version of the segment layout and record format. Bumped on any change.
/// Version 2 added the MPMC ring ([`RingKind::Mpmc`]) and SPSC record
/// format 2 (the consumer polls record headers; runs of records). Version 3
/// added the aborted endings ([`ROLE_ABORTED`], [`PARTICIPANT_ABORTED`], a
/// [`Reason`] in every role slot and participant entry), the close seal
/// ([`RoleSlot::seal`]) and the parked word of participant entries
/// ([`Participant::parked`]): a version-2 peer would take an aborted stream
/// for a live one and wait on it, so the two must refuse each other.
pub const ABI_VERSION: u32 = 3;
/// Bytes before the data region of an SPSC segment: header plus control
/// block, one page. Also the number of bytes `ls` and `inspect` read.
pub const HEADER_LEN: usize = 4096;
/// Bytes before the data region of an MPMC segment: header plus control
/// Entries in the MPMC participant table: at most this many handles (in any
/// Entries in the MPMC participant table (shrunk under loom so models stay
/// Bytes of metadata before each MPMC slot's payload: the sequence word and
/// MPMC positions (and so slot sequence numbers) stay below this; a larger
/// one read from shared memory is corruption. Bit 63 of a sequence word marks
/// Bit of the MPMC `enqueue` word set (for good) when the ring is closed:
/// Offset of the control block from the start of the segment.
pub const CONTROL_OFFSET: usize = 256;
/// Smallest data region, in bytes.
pub const MIN_CAPACITY: u64 = 4096;
/// Largest data region, in bytes (record lengths are 32-bit).
pub const MAX_CAPACITY: u64 = 1 << 31;

/// `Header::state` while the creator is still initialising.
pub const STATE_INIT: u32 = 0;
/// `Header::state` once every field is written.
pub const STATE_READY: u32 = 1;

/// `Header::flags` bit: a reader found impossible values and stopped.
/// Every handle checks the flags word at its liveness ticks: this bit set by
/// another process, or any other bit, is [`Error::Corrupted`].
pub const FLAG_POISONED: u32 = 1;

/// Which ring a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RingKind {
    /// Single producer, single consumer, variable-length records.
    Spsc = 1,
    /// Multiple producers, multiple consumers, fixed-size slots.
    Mpmc = 2,
}

impl RingKind {
    /// Decode the header's `kind` word.
    pub fn from_u32(v: u32) -> Option<RingKind> {
        match v {
            1 => Some(RingKind::Spsc),
            2 => Some(RingKind::Mpmc),
            _ => None,
        }
    }

    /// Lower-case name, as `shmring ls` prints it.
    pub fn name(self) -> &'static str {
        match self {
            RingKind::Spsc => "spsc",
            RingKind::Mpmc => "mpmc",
        }
    }
}

/// The segment header at offset 0. Every field is an atomic because other
/// processes may read or write it concurrently; all accesses to the
/// descriptive fields are Relaxed, ordered by `state` (see [`STATE_READY`]).
#[derive(Debug)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`ABI_VERSION`].
    pub abi_version: AtomicU32,
    /// [`RingKind`] as u32.
    pub kind: AtomicU32,
    /// Bytes before the data region: [`HEADER_LEN`] for SPSC,
    /// [`MPMC_HEADER_LEN`] for MPMC.
    pub header_len: AtomicU32,
    /// [`NotifierKind`] as u32.
    pub notifier: AtomicU32,
    /// Data region size in bytes: a power of two for SPSC,
    /// `slot_count * mpmc_slot_stride(slot_size)` for MPMC.
    pub capacity: AtomicU64,
    /// Slot payload size in bytes for slotted rings; 0 for SPSC.
    pub slot_size: AtomicU32,
    /// Slot count for slotted rings; 0 for SPSC.
    pub slot_count: AtomicU32,
    /// Total segment length in bytes: `header_len + capacity`.
    pub total_len: AtomicU64,
    /// Pid of the creating process.
    pub creator_pid: AtomicU32,
    /// [`STATE_INIT`] or [`STATE_READY`].
    pub state: AtomicU32,
    /// Start time of the creating process (clock ticks since boot).
    pub creator_start_time: AtomicU64,
    /// [`FLAG_POISONED`] and future flags.
    pub flags: AtomicU32,
    /// Alignment in bytes of a typed ring's record type; 0 if untyped.
    pub type_align: AtomicU32,
    /// Fingerprint of a typed ring's record type ([`RecordType`]); 0 if untyped.
    pub type_fingerprint: AtomicU64,
    /// Size in bytes of a typed ring's record type; 0 if untyped.
    pub type_size: AtomicU32,
    _reserved0: AtomicU32,
    /// Name of a typed ring's record type: UTF-8, zero-padded, at most
    /// [`RecordType::NAME_MAX`] bytes.
    pub type_name: [AtomicU64; 12],
    _reserved: [AtomicU64; 2],
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<Header>() <= CONTROL_OFFSET);
    assert!(CONTROL_OFFSET.is_multiple_of(128));
};
