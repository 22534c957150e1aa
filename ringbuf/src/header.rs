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

/// How a waiting side sleeps: the notifier of every eventcount in a segment,
/// chosen at creation and recorded in the header's `notifier` word (see
/// `wait` for both protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum NotifierKind {
    /// A shared futex on the eventcount's epoch word (the default).
    #[default]
    Futex = 1,
    /// A process-shared POSIX semaphore (`sem_init` with pshared = 1) stored
    /// in the eventcount, next to its epoch word.
    Semaphore = 2,
}

impl NotifierKind {
    /// Decode the header's `notifier` word.
    pub fn from_u32(v: u32) -> Option<NotifierKind> {
        match v {
            1 => Some(NotifierKind::Futex),
            2 => Some(NotifierKind::Semaphore),
            _ => None,
        }
    }

    /// What an eventcount's own notifier word means: anything but
    /// "semaphore" sleeps on the futex (a zeroed eventcount is a futex one).
    pub fn of_eventcount_word(word: u32) -> NotifierKind {
        if word == NotifierKind::Semaphore as u32 { NotifierKind::Semaphore } else { NotifierKind::Futex }
    }

    /// Lower-case name: `futex` or `semaphore`.
    pub fn name(self) -> &'static str {
        match self {
            NotifierKind::Futex => "futex",
            NotifierKind::Semaphore => "semaphore",
        }
    }

    /// Whether an eventcount's own notifier word agrees with this notifier
    /// (the header's): the same value, or 0 (a zeroed eventcount) for the
    /// futex. Any other value is corruption.
    pub fn eventcount_word_matches(self, word: u32) -> bool {
        word == self as u32 || (word == 0 && self == NotifierKind::Futex)
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

/// The header words its creator writes once, before READY (all but the
/// flags word), as a handle saw them when it opened the segment. Compared at
/// every liveness tick: a change is corruption, named by field.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FixedWords([u64; FixedWords::COUNT]);

impl FixedWords {
    const COUNT: usize = 16;
    const NAMES: [&'static str; FixedWords::COUNT] = [
        "magic",
        "ABI version",
        "ring kind",
        "header length",
        "notifier",
        "capacity",
        "slot size",
        "slot count",
        "total length",
        "creator pid",
        "state",
        "creator start time",
        "record type alignment",
        "record type fingerprint",
        "record type size",
        "record type name",
    ];

    /// Read them (Relaxed: after the Acquire load of READY, or to compare).
    pub(crate) fn read(h: &Header) -> FixedWords {
        let r = Ordering::Relaxed;
        let name = h
            .type_name
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |acc, w| (acc ^ w.load(r)).wrapping_mul(0x0100_0000_01b3).rotate_left(29));
        FixedWords([
            h.magic.load(r),
            h.abi_version.load(r).into(),
            h.kind.load(r).into(),
            h.header_len.load(r).into(),
            h.notifier.load(r).into(),
            h.capacity.load(r),
            h.slot_size.load(r).into(),
            h.slot_count.load(r).into(),
            h.total_len.load(r),
            h.creator_pid.load(r).into(),
            h.state.load(r).into(),
            h.creator_start_time.load(r),
            h.type_align.load(r).into(),
            h.type_fingerprint.load(r),
            h.type_size.load(r).into(),
            name,
        ])
    }

    /// What changed in `h` since these were read, if anything; and whether
    /// the flags word is clean (no bit but none: [`FLAG_POISONED`] set by
    /// another process is corruption too, since a handle that poisons stops).
    pub(crate) fn check(&self, h: &Header) -> std::result::Result<(), String> {
        let now = FixedWords::read(h);
        if let Some(i) = (0..FixedWords::COUNT).find(|&i| now.0[i] != self.0[i]) {
            return Err(format!(
                "header {} word changed from {:#x} to {:#x} after the segment was opened",
                FixedWords::NAMES[i],
                self.0[i],
                now.0[i]
            ));
        }
        // Relaxed: a flag read on its own.
        let flags = h.flags.load(Ordering::Relaxed);
        if flags & FLAG_POISONED != 0 {
            return Err(format!(
                "header flags word {flags:#x}: another process found the segment corrupted and poisoned it"
            ));
        }
        if flags != 0 {
            return Err(format!("header flags word {flags:#x} has unknown bits"));
        }
        Ok(())
    }
}

/// The record type of a typed ring (see `typed`): size, alignment, name and
/// a fingerprint, recorded in the header by the creator and compared by
/// every typed opener.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecordType {
    /// `size_of::<T>()` in bytes.
    pub size: u32,
    /// `align_of::<T>()` in bytes.
    pub align: u32,
    /// FNV-1a hash of the name, size and alignment.
    pub fingerprint: u64,
    name: [u8; RecordType::NAME_MAX],
}

impl RecordType {
    /// Longest name kept, in bytes; longer names are cut (at a character
    /// boundary) and still distinguished by the fingerprint.
    pub const NAME_MAX: usize = 96;

    /// Describe a type by its name, size and alignment.
    pub fn new(name: &str, size: usize, align: usize) -> RecordType {
        let (size, align) = (size as u32, align as u32);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes().chain(size.to_le_bytes()).chain(align.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut cut = name.len().min(Self::NAME_MAX);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut buf = [0u8; Self::NAME_MAX];
        buf[..cut].copy_from_slice(&name.as_bytes()[..cut]);
        RecordType { size, align, fingerprint: h.max(1), name: buf }
    }

    /// The type's name as recorded (possibly cut to [`RecordType::NAME_MAX`]
    /// bytes), with control characters escaped: the words come from shared
    /// memory, and the name ends up in error messages and on terminals.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(Self::NAME_MAX);
        match std::str::from_utf8(&self.name[..end]) {
            Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
            Ok(s) => s.escape_debug().to_string(),
            Err(_) => "(not UTF-8)".to_owned(),
        }
    }

    /// Write into a header being initialised (before READY).
    pub(crate) fn store(&self, h: &Header) {
        h.type_size.store(self.size, Ordering::Relaxed);
        h.type_align.store(self.align, Ordering::Relaxed);
        h.type_fingerprint.store(self.fingerprint, Ordering::Relaxed);
        for (word, chunk) in h.type_name.iter().zip(self.name.chunks_exact(8)) {
            word.store(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])), Ordering::Relaxed);
        }
    }

    /// Read from a header: `Ok(None)` if untyped, `Err` with what is wrong if
    /// the words are impossible.
    pub(crate) fn load(h: &Header) -> std::result::Result<Option<RecordType>, String> {
        let size = h.type_size.load(Ordering::Relaxed);
        let align = h.type_align.load(Ordering::Relaxed);
        let fingerprint = h.type_fingerprint.load(Ordering::Relaxed);
        if let Some(what) = record_type_problem(size, align, fingerprint) {
            return Err(what);
        }
        if fingerprint == 0 {
            return Ok(None); // all three zero: untyped
        }
        let mut name = [0u8; Self::NAME_MAX];
        for (word, chunk) in h.type_name.iter().zip(name.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        Ok(Some(RecordType { size, align, fingerprint, name }))
    }
}

/// What is impossible about a header's record type words, if anything
/// (all zero: an untyped ring).
pub fn record_type_problem(size: u32, align: u32, fingerprint: u64) -> Option<String> {
    let untyped = size == 0 && align == 0 && fingerprint == 0;
    let typed = align.is_power_of_two() && size.is_multiple_of(align) && fingerprint != 0;
    (!untyped && !typed)
        .then(|| format!("record type words impossible: size {size}, align {align}, fingerprint {fingerprint:#x}"))
}

impl std::fmt::Debug for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes, align {}, fingerprint {:#018x})", self.name(), self.size, self.align, self.fingerprint)
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes, align {})", self.name(), self.size, self.align)
    }
}

/// Longest reason an aborting handle leaves for its peers, in bytes.
pub const REASON_MAX: usize = 64;

/// Why a handle aborted: up to [`REASON_MAX`] bytes of text, written by the
/// aborting handle before it stores its aborted state (Release), read after
/// that state is seen (Acquire). The bytes are untrusted: readers show them
/// escaped ([`escape_reason`]), and a length above [`REASON_MAX`] is
/// corruption.
#[repr(C)]
pub struct Reason {
    /// Length of the reason in bytes, `0..=REASON_MAX`; 0: none given.
    pub len: AtomicU32,
    _reserved: AtomicU32,
    /// The bytes, 8 to a word, in memory order (as `RawReason::parse` reads them).
    pub bytes: [AtomicU64; REASON_MAX / 8],
}

impl Reason {
    /// No reason (used by heap-allocated models and tests).
    pub fn new() -> Reason {
        Reason {
            len: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            bytes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Write `text`, cut to [`REASON_MAX`] bytes at a character boundary.
    /// Relaxed: the caller publishes it with the Release store of its state.
    pub(crate) fn store(&self, text: &str) {
        let mut cut = text.len().min(REASON_MAX);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let b = &text.as_bytes()[..cut];
        for (i, word) in self.bytes.iter().enumerate().take(cut.div_ceil(8)) {
            let mut w = [0u8; 8];
            let chunk = &b[i * 8..b.len().min(i * 8 + 8)];
            w[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
        self.len.store(cut as u32, Ordering::Relaxed);
    }

    /// Read the reason, escaped for display; `Err` naming the length word
    /// if it is impossible. The caller has seen the aborted state with
    /// Acquire. Relaxed: ordered by that load.
    pub(crate) fn load(&self) -> std::result::Result<String, String> {
        let mut raw = RawReason { len: self.len.load(Ordering::Relaxed), bytes: vec![0; REASON_MAX] };
        for (word, chunk) in self.bytes.iter().zip(raw.bytes.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        raw.text()
    }
}

impl Default for Reason {
    fn default() -> Self {
        Self::new()
    }
}

/// An abort reason as it may be shown on a terminal or in a log: valid
/// UTF-8 is kept but for control characters (escaped as `\n`, `\u{1b}`,
/// ...), and every byte that is not UTF-8 is shown as `\xNN`.
///
/// ```
/// assert_eq!(shmring::header::escape_reason(b"disk full"), "disk full");
/// assert_eq!(shmring::header::escape_reason(b"bad\n\xff\x1b[2J"), "bad\\n\\xff\\u{1b}[2J");
/// ```
pub fn escape_reason(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
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

/// The header fields, copied out of a segment's first page with plain reads.
/// Used by `inspect` and `ls`, which must never write to or crash on a
/// damaged segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bytes actually in the file (from fstat).
    pub file_len: u64,
    /// Header: magic.
    pub magic: u64,
    /// Header: ABI version.
    pub abi_version: u32,
    /// Header: ring kind word.
    pub kind: u32,
    /// Header: bytes before the data region.
    pub header_len: u32,
    /// Header: notifier kind word.
    pub notifier: u32,
    /// Header: data bytes.
    pub capacity: u64,
    /// Header: slot payload size in bytes (MPMC; 0 for SPSC).
    pub slot_size: u32,
    /// Header: slot count (MPMC; 0 for SPSC).
    pub slot_count: u32,
    /// Header: total length.
    pub total_len: u64,
    /// Header: creator pid.
    pub creator_pid: u32,
    /// Header: creator start time.
    pub creator_start_time: u64,
    /// Header: state word.
    pub state: u32,
    /// Header: flags word.
    pub flags: u32,
    /// Control: producer position.
    pub tail: u64,
    /// Control: consumer position.
    pub head: u64,
    /// Control: producer (state, pid, start time).
    pub producer: (u32, u32, u64),
    /// Control: consumer (state, pid, start time).
    pub consumer: (u32, u32, u64),
    /// Control: parked consumers, parked producers (both kinds).
    pub waiters: (u32, u32),
    /// MPMC control words, when the kind word says MPMC.
    pub mpmc: Option<MpmcSnapshot>,
    /// Header: record type words (size, alignment, fingerprint); zeros if untyped.
    pub record_type: (u32, u32, u64),
    /// Control: the notifier words of the two eventcounts.
    pub ec_notifiers: (u32, u32),
    /// Control: the abort reasons in the producer's and the consumer's role
    /// slots (meaningful when their state is [`ROLE_ABORTED`]).
    pub reasons: (RawReason, RawReason),
}

/// A [`Reason`] copied out of a segment with plain reads, not yet checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawReason {
    /// The length word.
    pub len: u32,
    /// All [`REASON_MAX`] bytes (fewer if the page was short).
    pub bytes: Vec<u8>,
}

impl RawReason {
    /// Decode the reason at byte `off` of `page` (missing bytes read as zero).
    #[cfg(not(loom))]
    pub fn parse(page: &[u8], off: usize) -> RawReason {
        let start = off + std::mem::offset_of!(Reason, bytes);
        let bytes = page.get(start..(start + REASON_MAX).min(page.len())).unwrap_or(&[]).to_vec();
        let len = page
            .get(off + std::mem::offset_of!(Reason, len)..)
            .and_then(|b| b.get(..4))
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        RawReason { len, bytes }
    }

    /// The reason escaped for display ([`escape_reason`]), or what is
    /// impossible about its length word.
    pub fn text(&self) -> std::result::Result<String, String> {
        if self.len as usize > REASON_MAX {
            return Err(format!("abort reason length word is {}, more than {REASON_MAX}", self.len));
        }
        Ok(escape_reason(&self.bytes[..(self.len as usize).min(self.bytes.len())]))
    }
}

/// The MPMC control words of a [`Snapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MpmcSnapshot {
    /// Positions claimed by producers (messages and skipped slots), without
    /// the closed bit.
    pub enqueue: u64,
    /// Positions claimed by consumers.
    pub dequeue: u64,
    /// Whether the ring is closed (the [`MPMC_CLOSED`] bit of `enqueue`).
    pub closed: bool,
    /// Participant table high-water mark.
    pub high_water: u32,
    /// Messages lost because their producer died mid-write.
    pub lost_producer_died: u64,
    /// Messages lost because their consumer died holding them.
    pub lost_consumer_died: u64,
    /// Slots recovered from dead claimants.
    pub recovered: u64,
}

impl MpmcSnapshot {
    /// Messages (and skipped slots) in the ring, if the positions are sane.
    pub fn fill(&self, slot_count: u32) -> Option<u64> {
        let f = self.enqueue.wrapping_sub(self.dequeue);
        (f <= u64::from(slot_count)).then_some(f)
    }
}

#[cfg(not(loom))]
mod snapshot_impl {
    use super::*;
    use std::mem::offset_of;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        b.get(off..off + 4).map(|s| u32::from_ne_bytes(s.try_into().unwrap_or([0; 4]))).unwrap_or(0)
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        b.get(off..off + 8).map(|s| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8]))).unwrap_or(0)
    }

    impl Snapshot {
        /// Decode the first page of a segment. Missing bytes read as zero;
        /// nothing is validated here (see [`Snapshot::problems`]).
        pub fn parse(page: &[u8], file_len: u64) -> Snapshot {
            let c = CONTROL_OFFSET;
            let role = |base: usize| {
                (
                    u32_at(page, base + offset_of!(RoleSlot, state)),
                    u32_at(page, base + offset_of!(RoleSlot, pid)),
                    u64_at(page, base + offset_of!(RoleSlot, start_time)),
                )
            };
            let reason = |base: usize| RawReason::parse(page, base + offset_of!(RoleSlot, reason));
            let waiters = |base: usize| u32_at(page, base + EventCount::WAITERS_OFFSET);
            let ec_notifier = |base: usize| u32_at(page, base + EventCount::NOTIFIER_OFFSET);
            let kind = u32_at(page, offset_of!(Header, kind));
            if kind == RingKind::Mpmc as u32 {
                let sh = c + offset_of!(MpmcControl, shared);
                let enqueue = u64_at(page, c + offset_of!(MpmcControl, enqueue));
                let mut snap = Snapshot {
                    file_len,
                    kind,
                    waiters: (
                        waiters(c + offset_of!(MpmcControl, not_empty)),
                        waiters(c + offset_of!(MpmcControl, not_full)),
                    ),
                    ec_notifiers: (
                        ec_notifier(c + offset_of!(MpmcControl, not_empty)),
                        ec_notifier(c + offset_of!(MpmcControl, not_full)),
                    ),
                    mpmc: Some(MpmcSnapshot {
                        enqueue: enqueue & !MPMC_CLOSED,
                        dequeue: u64_at(page, c + offset_of!(MpmcControl, dequeue)),
                        closed: enqueue & MPMC_CLOSED != 0,
                        high_water: u32_at(page, sh + offset_of!(MpmcShared, high_water)),
                        lost_producer_died: u64_at(page, sh + offset_of!(MpmcShared, lost_producer_died)),
                        lost_consumer_died: u64_at(page, sh + offset_of!(MpmcShared, lost_consumer_died)),
                        recovered: u64_at(page, sh + offset_of!(MpmcShared, recovered)),
                    }),
                    ..Snapshot::default()
                };
                snap.parse_header(page);
                return snap;
            }
            let mut snap = Snapshot {
                file_len,
                kind,
                tail: u64_at(page, c + offset_of!(SpscControl, tail)),
                head: u64_at(page, c + offset_of!(SpscControl, head)),
                producer: role(c + offset_of!(SpscControl, producer)),
                consumer: role(c + offset_of!(SpscControl, consumer)),
                waiters: (
                    waiters(c + offset_of!(SpscControl, data_ready)),
                    waiters(c + offset_of!(SpscControl, space_free)),
                ),
                ec_notifiers: (
                    ec_notifier(c + offset_of!(SpscControl, data_ready)),
                    ec_notifier(c + offset_of!(SpscControl, space_free)),
                ),
                reasons: (reason(c + offset_of!(SpscControl, producer)), reason(c + offset_of!(SpscControl, consumer))),
                ..Snapshot::default()
            };
            snap.parse_header(page);
            snap
        }

        fn parse_header(&mut self, page: &[u8]) {
            self.magic = u64_at(page, offset_of!(Header, magic));
            self.abi_version = u32_at(page, offset_of!(Header, abi_version));
            self.header_len = u32_at(page, offset_of!(Header, header_len));
            self.notifier = u32_at(page, offset_of!(Header, notifier));
            self.capacity = u64_at(page, offset_of!(Header, capacity));
            self.slot_size = u32_at(page, offset_of!(Header, slot_size));
            self.slot_count = u32_at(page, offset_of!(Header, slot_count));
            self.total_len = u64_at(page, offset_of!(Header, total_len));
            self.creator_pid = u32_at(page, offset_of!(Header, creator_pid));
            self.creator_start_time = u64_at(page, offset_of!(Header, creator_start_time));
            self.state = u32_at(page, offset_of!(Header, state));
            self.flags = u32_at(page, offset_of!(Header, flags));
            self.record_type = (
                u32_at(page, offset_of!(Header, type_size)),
                u32_at(page, offset_of!(Header, type_align)),
                u64_at(page, offset_of!(Header, type_fingerprint)),
            );
        }
    }
}

impl Snapshot {
    /// Everything wrong with this segment, in plain words; empty if healthy.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.file_len < HEADER_LEN as u64 {
            p.push(format!("file is {} bytes, shorter than the {HEADER_LEN}-byte header", self.file_len));
        }
        if self.magic != MAGIC {
            p.push(format!("bad magic number {:#018x} (expected {MAGIC:#018x}): not a shmring segment", self.magic));
            return p;
        }
        if self.state != STATE_READY {
            p.push(format!(
                "state word is {} (expected {STATE_READY} = ready): creator pid {} never finished initialising",
                self.state, self.creator_pid
            ));
        }
        if self.abi_version != ABI_VERSION {
            p.push(format!("ABI version {} (this build understands {ABI_VERSION})", self.abi_version));
        }
        if RingKind::from_u32(self.kind).is_none() {
            p.push(format!("unknown ring kind {}", self.kind));
        }
        if NotifierKind::from_u32(self.notifier).is_none() {
            p.push(format!("unknown notifier kind {}", self.notifier));
        }
        match &self.mpmc {
            Some(m) => self.mpmc_problems(m, &mut p),
            None => self.spsc_problems(&mut p),
        }
        for (name, (state, _, _), reason) in
            [("producer", self.producer, &self.reasons.0), ("consumer", self.consumer, &self.reasons.1)]
        {
            if state > ROLE_ABORTED {
                p.push(format!("{name} role state {state} is not a known state"));
            }
            if state == ROLE_ABORTED
                && let Err(what) = reason.text()
            {
                p.push(format!("{name}'s {what}"));
            }
        }
        if self.flags & !FLAG_POISONED != 0 {
            p.push(format!("header flags word {:#x} has unknown bits", self.flags));
        }
        let (size, align, fingerprint) = self.record_type;
        if let Some(what) = record_type_problem(size, align, fingerprint) {
            p.push(what);
        }
        if let Some(n) = NotifierKind::from_u32(self.notifier) {
            for word in [self.ec_notifiers.0, self.ec_notifiers.1] {
                if !n.eventcount_word_matches(word) {
                    p.push(format!("an eventcount's notifier word is {word}, the header says {}", n.name()));
                }
            }
        }
        if self.flags & FLAG_POISONED != 0 {
            p.push("poisoned: a reader found impossible values and stopped".into());
        }
        p
    }

    fn spsc_problems(&self, p: &mut Vec<String>) {
        if self.header_len as usize != HEADER_LEN {
            p.push(format!("header length {} (expected {HEADER_LEN})", self.header_len));
        }
        if check_capacity(self.capacity).is_err() {
            p.push(format!("capacity {} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}", self.capacity));
            return;
        }
        let want = spsc_segment_len(self.capacity);
        if self.total_len != want {
            p.push(format!("total length {} does not match header + capacity = {want}", self.total_len));
        }
        if self.file_len != self.total_len {
            p.push(format!("file is {} bytes but the header says {}", self.file_len, self.total_len));
        }
        let fill = self.tail.wrapping_sub(self.head);
        if fill > self.capacity {
            p.push(format!(
                "positions impossible: tail {} - head {} = {fill} exceeds capacity {}",
                self.tail, self.head, self.capacity
            ));
        }
        if !self.tail.is_multiple_of(8) || !self.head.is_multiple_of(8) {
            p.push(format!("positions not 8-byte aligned: head {}, tail {}", self.head, self.tail));
        }
    }

    fn mpmc_problems(&self, m: &MpmcSnapshot, p: &mut Vec<String>) {
        let g = Geometry::from_words(RingKind::Mpmc, self.header_len, self.capacity, self.slot_size, self.slot_count);
        match g {
            Err(e) => p.push(format!(
                "MPMC geometry impossible (header {} bytes, {} slots of {} bytes, capacity {}): {e}",
                self.header_len, self.slot_count, self.slot_size, self.capacity
            )),
            Ok(g) => {
                if self.total_len != g.total_len() {
                    p.push(format!(
                        "total length {} does not match header + capacity = {}",
                        self.total_len,
                        g.total_len()
                    ));
                }
                if self.file_len != self.total_len {
                    p.push(format!("file is {} bytes but the header says {}", self.file_len, self.total_len));
                }
            }
        }
        if m.enqueue >= MPMC_POSITION_LIMIT || m.dequeue >= MPMC_POSITION_LIMIT {
            p.push(format!("positions impossible: enqueue {}, dequeue {} (limit 2^62)", m.enqueue, m.dequeue));
        } else if m.fill(self.slot_count).is_none() {
            p.push(format!(
                "positions impossible: enqueue {} - dequeue {} exceeds {} slots",
                m.enqueue, m.dequeue, self.slot_count
            ));
        }
        if m.high_water as usize > MPMC_MAX_PARTICIPANTS {
            p.push(format!("participant high-water mark {} exceeds {MPMC_MAX_PARTICIPANTS}", m.high_water));
        }
    }

    /// Bytes committed and not yet released, if the positions are sane
    /// (SPSC; for MPMC see [`MpmcSnapshot::fill`]).
    pub fn fill(&self) -> Option<u64> {
        let f = self.tail.wrapping_sub(self.head);
        (f <= self.capacity).then_some(f)
    }
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
