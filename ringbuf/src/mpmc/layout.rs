//! The MPMC ring's control block: the enqueue and dequeue counters, the
//! participant table and its word packing, and the slot geometry.
//!
//! ```text
//! 0      Header           (crate::header); `slot_size` and `slot_count` are set
//! 256    MpmcControl      enqueue (+ closed bit) | dequeue | statistics | 2 eventcounts
//!                         | participant table (64 entries), each on its own
//!                         128-byte line
//! 12288  data region      `slot_count` slots of `mpmc_slot_stride(slot_size)`
//!                         bytes: sequence word, length word, payload
//! ```

use crossbeam_utils::CachePadded;

use crate::header::reason::Reason;
use crate::sync::{AtomicU32, AtomicU64};
use crate::wait::EventCount;

/// block with its participant table, three pages.
pub const MPMC_HEADER_LEN: usize = 3 * 4096;
/// number of processes) can be attached to one MPMC ring at a time.
#[cfg(not(loom))]
pub const MPMC_MAX_PARTICIPANTS: usize = 64;
/// small).
#[cfg(loom)]
pub const MPMC_MAX_PARTICIPANTS: usize = 4;
/// the length word.
pub const MPMC_SLOT_META: u64 = 16;
/// Largest MPMC slot payload, in bytes.
pub const MPMC_MAX_SLOT_SIZE: u32 = 1 << 24;
/// a slot to skip.
pub const MPMC_POSITION_LIMIT: u64 = 1 << 62;
/// producers claim with a CAS that expects it clear.
pub const MPMC_CLOSED: u64 = 1 << 62;

/// One entry of the MPMC participant table: who holds it, and which
/// positions it is claiming right now. Every MPMC handle holds one entry for
/// its whole life. See the `mpmc` module docs for the protocol.
#[derive(Debug)]
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
#[derive(Debug)]
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
#[derive(Debug)]
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
    /// Both eventcounts, named as diagnostics name them.
    pub(crate) fn eventcounts(&self) -> [(&'static str, &EventCount); 2] {
        [("not_empty", &self.not_empty), ("not_full", &self.not_full)]
    }

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

#[cfg(not(loom))]
const _: () = {
    use crate::header::abi::{CONTROL_OFFSET, HEADER_LEN};
    use crate::header::reason::REASON_MAX;
    use crate::wait::MAX_WAITERS;
    assert!(CONTROL_OFFSET + std::mem::size_of::<MpmcControl>() <= MPMC_HEADER_LEN);
    // Everything `Snapshot::parse` reads of an MPMC segment is in the first page.
    assert!(CONTROL_OFFSET + std::mem::offset_of!(MpmcControl, participants) <= HEADER_LEN);
    assert!(MPMC_HEADER_LEN.is_multiple_of(4096));
    // A participant entry fits its 128-byte line.
    assert!(std::mem::size_of::<Participant>() <= 128);
    assert!(std::mem::size_of::<Reason>() == 8 + REASON_MAX);
    // A notifier that wakes sleepers one at a time wakes every participant.
    assert!(MPMC_MAX_PARTICIPANTS <= MAX_WAITERS as usize);
};
