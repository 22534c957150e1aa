//! The `#[repr(C)]` segment header and the SPSC control block.
//!
//! Layout of a segment (offsets in bytes from the start of the mapping):
//!
//! ```text
//! 0      Header           magic, ABI version, kind, geometry, creator, state
//! 256    SpscControl      tail | head | producer | consumer | 2 eventcounts,
//!                         each on its own 128-byte line
//! 4096   data region      `capacity` bytes (a power of two) of records
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
pub const ABI_VERSION: u32 = 2;
/// Bytes before the data region: header plus control block, one page.
pub const HEADER_LEN: usize = 4096;
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
pub const FLAG_POISONED: u32 = 1;

/// Which ring a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RingKind {
    /// Single producer, single consumer, variable-length records.
    Spsc = 1,
}

impl RingKind {
    /// Decode the header's `kind` word.
    pub fn from_u32(v: u32) -> Option<RingKind> {
        match v {
            1 => Some(RingKind::Spsc),
            _ => None,
        }
    }

    /// Lower-case name, as `shmring ls` prints it.
    pub fn name(self) -> &'static str {
        match self {
            RingKind::Spsc => "spsc",
        }
    }
}

/// How a waiting side sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum NotifierKind {
    /// A shared futex on the eventcount's epoch word.
    Futex = 1,
}

impl NotifierKind {
    /// Decode the header's `notifier` word.
    pub fn from_u32(v: u32) -> Option<NotifierKind> {
        match v {
            1 => Some(NotifierKind::Futex),
            _ => None,
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
    /// Bytes before the data region; [`HEADER_LEN`].
    pub header_len: AtomicU32,
    /// [`NotifierKind`] as u32.
    pub notifier: AtomicU32,
    /// Data region size in bytes, a power of two.
    pub capacity: AtomicU64,
    /// Slot size in bytes for slotted rings; 0 for SPSC.
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
    _reserved0: AtomicU32,
    _reserved: [AtomicU64; 8],
}

/// A role's attachment record (producer or consumer), on its own line.
#[repr(C)]
pub struct RoleSlot {
    /// [`ROLE_FREE`], [`ROLE_ATTACHING`], [`ROLE_ATTACHED`] or [`ROLE_CLOSED`].
    pub state: AtomicU32,
    /// Pid of the holder.
    pub pid: AtomicU32,
    /// Start time of the holder.
    pub start_time: AtomicU64,
}

/// Nobody holds the role yet.
pub const ROLE_FREE: u32 = 0;
/// A process is writing its identity.
pub const ROLE_ATTACHING: u32 = 1;
/// A process holds the role.
pub const ROLE_ATTACHED: u32 = 2;
/// The holder closed its end; the role cannot be taken again.
pub const ROLE_CLOSED: u32 = 3;

impl RoleSlot {
    /// A free slot (used by heap-allocated models and tests).
    pub fn new() -> RoleSlot {
        RoleSlot { state: AtomicU32::new(ROLE_FREE), pid: AtomicU32::new(0), start_time: AtomicU64::new(0) }
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

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<Header>() <= CONTROL_OFFSET);
    assert!(CONTROL_OFFSET % 128 == 0);
    assert!(CONTROL_OFFSET + std::mem::size_of::<SpscControl>() <= HEADER_LEN);
};

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
    /// Control: parked consumers, parked producers.
    pub waiters: (u32, u32),
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
            let waiters = |base: usize| u32_at(page, base + EventCount::WAITERS_OFFSET);
            Snapshot {
                file_len,
                magic: u64_at(page, offset_of!(Header, magic)),
                abi_version: u32_at(page, offset_of!(Header, abi_version)),
                kind: u32_at(page, offset_of!(Header, kind)),
                header_len: u32_at(page, offset_of!(Header, header_len)),
                notifier: u32_at(page, offset_of!(Header, notifier)),
                capacity: u64_at(page, offset_of!(Header, capacity)),
                total_len: u64_at(page, offset_of!(Header, total_len)),
                creator_pid: u32_at(page, offset_of!(Header, creator_pid)),
                creator_start_time: u64_at(page, offset_of!(Header, creator_start_time)),
                state: u32_at(page, offset_of!(Header, state)),
                flags: u32_at(page, offset_of!(Header, flags)),
                tail: u64_at(page, c + offset_of!(SpscControl, tail)),
                head: u64_at(page, c + offset_of!(SpscControl, head)),
                producer: role(c + offset_of!(SpscControl, producer)),
                consumer: role(c + offset_of!(SpscControl, consumer)),
                waiters: (
                    waiters(c + offset_of!(SpscControl, data_ready)),
                    waiters(c + offset_of!(SpscControl, space_free)),
                ),
            }
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
        if self.header_len as usize != HEADER_LEN {
            p.push(format!("header length {} (expected {HEADER_LEN})", self.header_len));
        }
        if check_capacity(self.capacity).is_err() {
            p.push(format!("capacity {} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}", self.capacity));
        } else {
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
            if self.tail % 8 != 0 || self.head % 8 != 0 {
                p.push(format!("positions not 8-byte aligned: head {}, tail {}", self.head, self.tail));
            }
        }
        for (name, (state, _, _)) in [("producer", self.producer), ("consumer", self.consumer)] {
            if state > ROLE_CLOSED {
                p.push(format!("{name} role state {state} is not a known state"));
            }
        }
        if self.flags & FLAG_POISONED != 0 {
            p.push("poisoned: a reader found impossible values and stopped".into());
        }
        p
    }

    /// Bytes committed and not yet released, if the positions are sane.
    pub fn fill(&self) -> Option<u64> {
        let f = self.tail.wrapping_sub(self.head);
        (f <= self.capacity).then_some(f)
    }
}

/// Validate a mapped header against the file length. Called by openers
/// after they saw READY.
pub(crate) fn validate(h: &Header, file_len: u64, segment: &str) -> Result<(RingKind, u64)> {
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
    if header_len as usize != HEADER_LEN {
        return Err(Error::corrupted(segment, format!("header length {header_len}, expected {HEADER_LEN}")));
    }
    let capacity = h.capacity.load(Ordering::Relaxed);
    check_capacity(capacity).map_err(|_| Error::corrupted(segment, format!("capacity {capacity} is invalid")))?;
    let total = h.total_len.load(Ordering::Relaxed);
    if total != spsc_segment_len(capacity) || total != file_len {
        return Err(Error::corrupted(
            segment,
            format!("header says {total} bytes, capacity implies {}, file has {file_len}", spsc_segment_len(capacity)),
        ));
    }
    Ok((kind, capacity))
}
