//! The `#[repr(C)]` segment header and the control blocks of both rings.
//!
//! Layout of an SPSC segment (offsets in bytes from the start of the mapping):
//!
//! ```text
//! 0      Header           magic, ABI version, kind, geometry, creator, state
//! 256    SpscControl      tail | head | producer | consumer | 2 eventcounts,
//!                         each on its own 128-byte line
//! 4096   data region      `capacity` bytes (a power of two) of records
//! ```
//!
//! Layout of an MPMC segment:
//!
//! ```text
//! 0      Header           as above; `slot_size` and `slot_count` are set
//! 256    MpmcControl      enqueue (+ closed bit) | dequeue | statistics | 2 eventcounts
//!                         | participant table (64 entries), each on its own
//!                         128-byte line
//! 12288  data region      `slot_count` slots of `mpmc_slot_stride(slot_size)`
//!                         bytes: sequence word, length word, payload
//! ```
//!
//! The creator fills every field, then stores `state = READY` with Release.
//! Openers wait (bounded) for READY with Acquire, then validate every field
//! against the file's real length before touching the ring. Every field is
//! untrusted: another process may write anything at any time.

use crossbeam_utils::CachePadded;

use crate::error::{Error, Result};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::EventCount;
pub use crate::wait::NotifierKind;

mod fixed;
mod reason;
mod record_type;
mod snapshot;

pub(crate) use fixed::FixedWords;
pub use reason::{REASON_MAX, Reason, escape_reason};
pub use record_type::{RecordType, record_type_problem};
pub use snapshot::{MpmcSnapshot, RawReason, Snapshot};

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
/// block with its participant table, three pages.
pub const MPMC_HEADER_LEN: usize = 3 * 4096;
/// Entries in the MPMC participant table: at most this many handles (in any
/// number of processes) can be attached to one MPMC ring at a time.
#[cfg(not(loom))]
pub const MPMC_MAX_PARTICIPANTS: usize = 64;
/// Entries in the MPMC participant table (shrunk under loom so models stay
/// small).
#[cfg(loom)]
pub const MPMC_MAX_PARTICIPANTS: usize = 4;
/// Bytes of metadata before each MPMC slot's payload: the sequence word and
/// the length word.
pub const MPMC_SLOT_META: u64 = 16;
/// Largest MPMC slot payload, in bytes.
pub const MPMC_MAX_SLOT_SIZE: u32 = 1 << 24;
/// MPMC positions (and so slot sequence numbers) stay below this; a larger
/// one read from shared memory is corruption. Bit 63 of a sequence word marks
/// a slot to skip.
pub const MPMC_POSITION_LIMIT: u64 = 1 << 62;
/// Bit of the MPMC `enqueue` word set (for good) when the ring is closed:
/// producers claim with a CAS that expects it clear.
pub const MPMC_CLOSED: u64 = 1 << 62;
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

/// A role's attachment record (producer or consumer), on its own line.
///
/// The state only moves forward: FREE → ATTACHING → ATTACHED → CLOSED or
/// ABORTED. A peer checks the word wherever it reads it: a value outside
/// these five, or a step backwards, is corruption.
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

/// One entry of the MPMC participant table: who holds it, and which
/// positions it is claiming right now. Every MPMC handle holds one entry for
/// its whole life. See the `mpmc` module docs for the protocol.
#[repr(C)]
pub struct Participant {
    /// `pid << 32 | generation << 2 | state`, see [`participant_word`]. The
    /// generation changes on every take-over, so a compare-and-swap on this
    /// word cannot succeed on an entry someone else re-took meanwhile.
    pub word: AtomicU64,
    /// Start time of the holder (clock ticks since boot), written before the
    /// state becomes [`PARTICIPANT_ATTACHED`].
    pub start_time: AtomicU64,
    /// First enqueue position this producer is claiming, or [`CLAIM_NONE`].
    pub enq_start: AtomicU64,
    /// Number of enqueue positions claimed from `enq_start`.
    pub enq_count: AtomicU64,
    /// First dequeue position this consumer is claiming, or [`CLAIM_NONE`].
    pub deq_start: AtomicU64,
    /// Number of dequeue positions claimed from `deq_start`.
    pub deq_count: AtomicU64,
    /// Which eventcount the holder is registered on as a waiter:
    /// [`PARKED_NONE`], [`PARKED_NOT_EMPTY`] or [`PARKED_NOT_FULL`]. Set
    /// after registering and cleared before deregistering, so that whoever
    /// takes over the entry of a holder killed while parked can take its
    /// registration back (else every later notify would pay a wake-up call).
    pub parked: AtomicU32,
    _reserved: AtomicU32,
    /// Why the holder aborted ([`PARTICIPANT_ABORTED`]).
    pub reason: Reason,
}

/// [`Participant::parked`]: not registered on any eventcount.
pub const PARKED_NONE: u32 = 0;
/// [`Participant::parked`]: registered on `not_empty` (a consumer).
pub const PARKED_NOT_EMPTY: u32 = 1;
/// [`Participant::parked`]: registered on `not_full` (a producer).
pub const PARKED_NOT_FULL: u32 = 2;

/// Participant state: free.
pub const PARTICIPANT_FREE: u32 = 0;
/// Participant state: a process (whose pid is in the word) is filling in the entry.
pub const PARTICIPANT_ATTACHING: u32 = 1;
/// Participant state: held by the process whose pid is in the word.
pub const PARTICIPANT_ATTACHED: u32 = 2;
/// Participant state: its holder (the pid in the word) ended after an
/// error and left; the entry shows why ([`Participant::reason`]) until it is
/// reused. It claims nothing and does not close the ring for anyone else.
pub const PARTICIPANT_ABORTED: u32 = 3;
/// Claim start meaning "claiming nothing". A zeroed entry (start 0, count 0)
/// claims nothing either.
pub const CLAIM_NONE: u64 = u64::MAX;

/// Pack a participant word: pid in bits 32..64, generation (mod 2^30) in
/// bits 2..32, state in bits 0..2.
pub const fn participant_word(pid: u32, generation: u32, state: u32) -> u64 {
    ((pid as u64) << 32) | (((generation & 0x3fff_ffff) as u64) << 2) | (state as u64 & 3)
}

/// Unpack a participant word into (pid, generation, state).
pub const fn participant_fields(word: u64) -> (u32, u32, u32) {
    ((word >> 32) as u32, ((word >> 2) & 0x3fff_ffff) as u32, (word & 3) as u32)
}

impl Participant {
    /// A free entry (used by heap-allocated models and tests).
    pub fn new() -> Participant {
        Participant {
            word: AtomicU64::new(0),
            start_time: AtomicU64::new(0),
            enq_start: AtomicU64::new(CLAIM_NONE),
            enq_count: AtomicU64::new(0),
            deq_start: AtomicU64::new(CLAIM_NONE),
            deq_count: AtomicU64::new(0),
            parked: AtomicU32::new(PARKED_NONE),
            _reserved: AtomicU32::new(0),
            reason: Reason::new(),
        }
    }
}

impl Default for Participant {
    fn default() -> Self {
        Self::new()
    }
}

/// MPMC words that change rarely: the participant high-water mark and the
/// loss statistics. Statistics are Relaxed counters.
#[repr(C)]
pub struct MpmcShared {
    /// One more than the highest participant index ever taken; recovery scans
    /// only entries below it.
    pub high_water: AtomicU32,
    /// Messages lost because their producer died between claiming and
    /// committing them.
    pub lost_producer_died: AtomicU64,
    /// Messages lost because their consumer died while holding them.
    pub lost_consumer_died: AtomicU64,
    /// Slots recovered from dead claimants (both kinds, including slots that
    /// held no message).
    pub recovered: AtomicU64,
}

/// The MPMC ring's shared words, each group on its own 128-byte line.
#[repr(C)]
pub struct MpmcControl {
    /// Next position a producer claims (positions ever claimed by
    /// producers), plus [`MPMC_CLOSED`] once the ring is closed.
    pub enqueue: CachePadded<AtomicU64>,
    /// Next position a consumer claims (positions ever claimed by consumers).
    pub dequeue: CachePadded<AtomicU64>,
    /// Closed flag, high-water mark, statistics.
    pub shared: CachePadded<MpmcShared>,
    /// Consumers park here waiting for messages.
    pub not_empty: CachePadded<EventCount>,
    /// Producers park here waiting for free slots.
    pub not_full: CachePadded<EventCount>,
    /// Who is attached and what they are claiming.
    pub participants: [CachePadded<Participant>; MPMC_MAX_PARTICIPANTS],
}

impl MpmcControl {
    /// A zeroed control block (used by heap-allocated models and tests).
    pub fn new() -> MpmcControl {
        MpmcControl {
            enqueue: CachePadded::new(AtomicU64::new(0)),
            dequeue: CachePadded::new(AtomicU64::new(0)),
            shared: CachePadded::new(MpmcShared {
                high_water: AtomicU32::new(0),
                lost_producer_died: AtomicU64::new(0),
                lost_consumer_died: AtomicU64::new(0),
                recovered: AtomicU64::new(0),
            }),
            not_empty: CachePadded::new(EventCount::new()),
            not_full: CachePadded::new(EventCount::new()),
            participants: std::array::from_fn(|_| CachePadded::new(Participant::new())),
        }
    }
}

impl Default for MpmcControl {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<Header>() <= CONTROL_OFFSET);
    assert!(CONTROL_OFFSET.is_multiple_of(128));
    assert!(CONTROL_OFFSET + std::mem::size_of::<SpscControl>() <= HEADER_LEN);
    assert!(CONTROL_OFFSET + std::mem::size_of::<MpmcControl>() <= MPMC_HEADER_LEN);
    // Everything `Snapshot::parse` reads of an MPMC segment is in the first page.
    assert!(CONTROL_OFFSET + std::mem::offset_of!(MpmcControl, participants) <= HEADER_LEN);
    assert!(MPMC_HEADER_LEN.is_multiple_of(4096));
    // Role slots and participant entries each fit their 128-byte line.
    assert!(std::mem::size_of::<RoleSlot>() <= 128);
    assert!(std::mem::size_of::<Participant>() <= 128);
    assert!(std::mem::size_of::<Reason>() == 8 + REASON_MAX);
};

/// Bytes one MPMC slot occupies for a payload of `slot_size` bytes (a
/// multiple of 8): 16 bytes of metadata plus the payload, rounded up to a
/// power of two up to 64 bytes and to a multiple of 64 bytes above, so a slot
/// never spans more cache lines than it must.
///
/// ```
/// use shmring::header::mpmc_slot_stride;
/// assert_eq!(mpmc_slot_stride(8), 32);   // two slots per cache line
/// assert_eq!(mpmc_slot_stride(48), 64);  // one line
/// assert_eq!(mpmc_slot_stride(100), 128);
/// ```
pub const fn mpmc_slot_stride(slot_size: u32) -> u64 {
    let s = MPMC_SLOT_META + slot_size as u64;
    if s <= 64 { s.next_power_of_two() } else { s.div_ceil(64) * 64 }
}

/// The shape of a segment, as recorded in (and validated from) its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Which ring.
    pub kind: RingKind,
    /// Bytes before the data region.
    pub header_len: u64,
    /// Data region size in bytes.
    pub capacity: u64,
    /// Slot payload size in bytes (MPMC), 0 for SPSC.
    pub slot_size: u32,
    /// Number of slots (MPMC), 0 for SPSC.
    pub slot_count: u32,
    /// The record type of a typed ring; `None` for a ring of bytes.
    pub record: Option<RecordType>,
}

impl Geometry {
    /// The same geometry for a ring typed with `record` (or untyped).
    pub fn with_record(mut self, record: Option<RecordType>) -> Geometry {
        self.record = record;
        self
    }

    /// An SPSC ring of `capacity` data bytes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `capacity` is a power of two in
    /// `MIN_CAPACITY..=MAX_CAPACITY`.
    pub fn spsc(capacity: u64) -> Result<Geometry> {
        check_capacity(capacity)?;
        Ok(Geometry {
            kind: RingKind::Spsc,
            header_len: HEADER_LEN as u64,
            capacity,
            slot_size: 0,
            slot_count: 0,
            record: None,
        })
    }

    /// An MPMC ring of `slot_count` slots of `slot_size` payload bytes
    /// (rounded up to a multiple of 8).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `slot_size` is 0 or above
    /// [`MPMC_MAX_SLOT_SIZE`], `slot_count` is not a power of two of at least
    /// 2, or the data region would exceed [`MAX_CAPACITY`] bytes.
    pub fn mpmc(slot_size: usize, slot_count: usize) -> Result<Geometry> {
        if slot_size == 0 || slot_size > MPMC_MAX_SLOT_SIZE as usize {
            return Err(Error::InvalidArgument(format!(
                "slot size {slot_size} bytes: must be between 1 and {MPMC_MAX_SLOT_SIZE}"
            )));
        }
        let size = slot_size.next_multiple_of(8) as u32;
        if !slot_count.is_power_of_two() || slot_count < 2 {
            return Err(Error::InvalidArgument(format!("slot count {slot_count}: must be a power of two, at least 2")));
        }
        let capacity = (slot_count as u64).checked_mul(mpmc_slot_stride(size)).filter(|&c| c <= MAX_CAPACITY);
        let Some(capacity) = capacity else {
            return Err(Error::InvalidArgument(format!(
                "{slot_count} slots of {size} bytes need more than {MAX_CAPACITY} bytes"
            )));
        };
        Ok(Geometry {
            kind: RingKind::Mpmc,
            header_len: MPMC_HEADER_LEN as u64,
            capacity,
            slot_size: size,
            slot_count: slot_count as u32,
            record: None,
        })
    }

    /// Total segment length in bytes.
    pub fn total_len(&self) -> u64 {
        self.header_len + self.capacity
    }

    /// Rebuild the geometry from raw header words, checking every one.
    fn from_words(kind: RingKind, header_len: u32, capacity: u64, slot_size: u32, slot_count: u32) -> Result<Geometry> {
        let want = match kind {
            RingKind::Spsc => Geometry::spsc(capacity)?,
            RingKind::Mpmc => {
                let g = Geometry::mpmc(slot_size as usize, slot_count as usize)?;
                if g.slot_size != slot_size {
                    return Err(Error::InvalidArgument(format!("slot size {slot_size} is not a multiple of 8")));
                }
                g
            }
        };
        if header_len as u64 != want.header_len {
            return Err(Error::InvalidArgument(format!(
                "header length {header_len}, expected {} for {}",
                want.header_len,
                kind.name()
            )));
        }
        if capacity != want.capacity {
            return Err(Error::InvalidArgument(format!(
                "capacity {capacity} bytes does not match the geometry ({} bytes)",
                want.capacity
            )));
        }
        Ok(want)
    }
}

/// Total segment length for an SPSC ring of `capacity` data bytes.
pub fn spsc_segment_len(capacity: u64) -> u64 {
    HEADER_LEN as u64 + capacity
}

/// Check a requested capacity: a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
pub fn check_capacity(capacity: u64) -> Result<()> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(Error::InvalidArgument(format!(
            "capacity {capacity} bytes: must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}"
        )));
    }
    Ok(())
}

/// Validate a mapped header against the file length and return its
/// geometry. Called by openers after they saw READY.
pub(crate) fn validate(h: &Header, file_len: u64, segment: &str) -> Result<Geometry> {
    let magic = h.magic.load(Ordering::Relaxed);
    if magic != MAGIC {
        return Err(Error::BadMagic(segment.to_owned()));
    }
    let version = h.abi_version.load(Ordering::Relaxed);
    if version != ABI_VERSION {
        return Err(Error::VersionMismatch { segment: segment.to_owned(), found: version, expected: ABI_VERSION });
    }
    let kind_word = h.kind.load(Ordering::Relaxed);
    let kind = RingKind::from_u32(kind_word)
        .ok_or_else(|| Error::corrupted(segment, format!("unknown ring kind {kind_word}")))?;
    let notifier = h.notifier.load(Ordering::Relaxed);
    if NotifierKind::from_u32(notifier).is_none() {
        return Err(Error::corrupted(segment, format!("unknown notifier kind {notifier}")));
    }
    let header_len = h.header_len.load(Ordering::Relaxed);
    let capacity = h.capacity.load(Ordering::Relaxed);
    let slot_size = h.slot_size.load(Ordering::Relaxed);
    let slot_count = h.slot_count.load(Ordering::Relaxed);
    let g = Geometry::from_words(kind, header_len, capacity, slot_size, slot_count).map_err(|e| {
        let what = match e {
            Error::InvalidArgument(w) => w,
            other => other.to_string(),
        };
        Error::corrupted(segment, format!("{} geometry invalid: {what}", kind.name()))
    })?;
    let total = h.total_len.load(Ordering::Relaxed);
    if total != g.total_len() || total != file_len {
        return Err(Error::corrupted(
            segment,
            format!("header says {total} bytes, its geometry implies {}, file has {file_len}", g.total_len()),
        ));
    }
    let record = RecordType::load(h).map_err(|what| Error::corrupted(segment, what))?;
    Ok(g.with_record(record))
}
