//! Multi-producer multi-consumer ring of fixed-size slots in shared memory.
//!
//! Any number of processes (up to [`MPMC_MAX_PARTICIPANTS`] handles at a
//! time) attach to one ring, each as [`Producer`]s or [`Consumer`]s; any of
//! them may be killed at any instruction without wedging the others.
//!
//! ```
//! # fn main() -> shmring::Result<()> {
//! use shmring::Location;
//! use shmring::mpmc::{Consumer, MpmcOptions, Producer};
//! let loc = Location::shm(format!("doc-mpmc-{}", std::process::id()));
//! let opts = MpmcOptions::new().slot_size(32).slot_count(8);
//! let mut tx = Producer::create(&loc, &opts)?;
//! let mut tx2 = Producer::open(&loc)?;   // typically in another process
//! let mut rx = Consumer::open(&loc)?;
//! loc.unlink()?;
//!
//! tx.send(b"one")?;
//! tx2.send(b"two")?;
//! tx.close_ring();                       // any handle may close
//! assert_eq!(&*rx.recv()?.unwrap(), b"one");
//! assert_eq!(&*rx.recv()?.unwrap(), b"two");
//! assert!(rx.recv()?.is_none());         // closed and drained
//! # Ok(()) }
//! ```
//!
//! # Algorithm
//!
//! This is Dmitry Vyukov's "Bounded MPMC queue" (1024cores.net). Producers
//! and consumers take positions from two shared `u64` counters, `enqueue` and
//! `dequeue` (on separate 128-byte lines), with a compare-and-swap; position
//! `p` lives in slot `p % slot_count`. Each slot starts with a sequence word
//! that says whose turn it is:
//!
//! ```text
//! seq == p               free for the producer of position p
//!                        (or claimed by it, if enqueue > p: being written)
//! seq == p + 1           holds the message of position p, for its consumer
//!                        (or claimed by it, if dequeue > p: being read)
//! seq == (p + 1) | SKIP  position p carries no message; its consumer skips it
//! seq == p + slot_count  released: free for the producer of the next lap
//! ```
//!
//! A producer claims `p` when `seq == p` with a CAS `enqueue: p -> p + 1`,
//! writes the length word and payload, then stores `seq = p + 1` (Release).
//! A consumer claims `p` when `seq == p + 1` with a CAS `dequeue: p -> p + 1`,
//! reads in place, then stores `seq = p + slot_count` (Release). Batches claim
//! several consecutive ready positions with one CAS. A slot is the sequence
//! word, a length word and the payload, padded so it spans as few cache lines
//! as possible ([`mpmc_slot_stride`]).
//!
//! # Crash safety
//!
//! A process killed between its CAS and its sequence store leaves a slot
//! *claimed*: the counter has moved past it but its sequence has not. Without
//! help, every consumer (or producer, one lap later) waits on it for ever.
//!
//! **Claim records.** Every handle owns one entry of the participant table
//! (pid and start time, see [`crate::liveness`]). Before its CAS on a counter,
//! a handle writes the range it is about to claim into its entry
//! (`enq_start`/`enq_count` or `deq_start`/`deq_count`, Release); after its
//! last sequence store for that range it stores `CLAIM_NONE` (Release). The
//! CAS itself is Release, so it also releases the claim record.
//!
//! **Who recovers.** A waiter that finds the slot it needs claimed but
//! unfinished (a consumer at `p` with `seq == p` and `enqueue > p`; a producer
//! at `q` with the slot still holding message `t = q - slot_count` and
//! `dequeue > t`) notes the time. After [`STUCK_GRACE`], and then after
//! [`STUCK_POLL`] doubling up to [`STUCK_POLL_MAX`], it scans the participant table for a claim record covering
//! the position whose holder is alive. If there is none, it recovers the slot
//! with one CAS on its sequence: `p -> (p + 1) | SKIP` for a producer's slot
//! (consumers drop it), `t + 1 -> t + slot_count` for a consumer's (the next
//! producer reuses it). Waiters park with a short timeout while a slot is
//! claimed, so a kill is noticed within a few milliseconds.
//!
//! **Why a live claimant is never robbed.** The waiter read the counter with
//! Acquire and saw it past the position, so it synchronised with the
//! claimant's CAS and sees the claimant's claim record, or a later value of
//! it. The record stays in place until after the claimant's sequence store,
//! so while the claimant is alive and unfinished the waiter sees the record,
//! reads the holder's identity after it (Acquire; it cannot be older than the
//! claimant's), and finds it alive. Liveness is exact: pid plus start time,
//! and a zombie counts as dead. If the waiter instead reads a later value of
//! the record (cleared or moved on), that store was made after the claimant's
//! sequence stores and is Release, so the waiter's CAS sees the new sequence
//! and fails. Every sequence only ever grows, so a CAS from the stale value
//! cannot succeed later either. Two survivors racing to recover the same
//! slot are decided by the same CAS; only the winner counts it.
//!
//! **Reusing entries.** An entry's word packs `pid | generation | state`.
//! Attaching takes a free entry, or the entry of a dead holder, with a CAS on
//! that exact word. The generation changes on every take-over, so a
//! take-over decided on a stale reading fails. An entry left half-attached
//! is taken over only once the pid in its word is dead, so a dead process
//! never writes to it again.
//!
//! **Statistics.** Recoveries count the messages lost to a producer that
//! died mid-write ([`Stats::lost_producer_died`]), to a consumer that died
//! holding one ([`Stats::lost_consumer_died`]), and all recovered slots
//! ([`Stats::recovered`]). A slot left claimed by a dead process that no
//! waiter ever needs (for example the last message of a run) is recovered by
//! [`Producer::recover_dead`] / [`Consumer::recover_dead`].
//!
//! **Closing.** Any handle can close the ring: it sets a sticky bit in the
//! `enqueue` word itself ([`MPMC_CLOSED`]). A producer claims with a CAS that
//! expects the bit clear, so no position is claimed after the close; a
//! consumer that finds its position unclaimed in a value of that same word
//! carrying the bit knows nothing more will arrive: end of stream. One word
//! decides, so no ordering between two variables is involved. Dropping
//! handles does not close the ring (producers come and go; a dead one never
//! says goodbye): end of stream is always an explicit close. Dropping a
//! [`Grant`] without committing commits a skip, so an abandoned grant never
//! wedges the ring.
//!
//! **Untrusted memory.** Counters must stay below 2^62 and never go back;
//! a sequence must be one of the values the slot can hold for the position
//! (checked once the counter is confirmed stable around the read); the
//! counters must stay within `slot_count` of each other; a length word must
//! not exceed the slot size. Anything else returns [`Error::Corrupted`] and
//! poisons the handle. Every wait is bounded by the wait policy's check
//! interval (at most [`STUCK_POLL_MAX`] while a slot is claimed) and every
//! retry loop by a fixed count, so garbage cannot make a call spin for ever.
//!
//! A handle must not be used in a child after `fork`: its claims would carry
//! the parent's identity.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::header::{self, FLAG_POISONED, Geometry, Header, MPMC_CLOSED, MpmcControl, RingKind};
#[cfg(doc)]
use crate::header::{MPMC_MAX_PARTICIPANTS, mpmc_slot_stride};
use crate::liveness::ProcessId;
use crate::region::Region;
use crate::ring;
use crate::segment::{CreateOptions, Location, Segment};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::NotifierKind;
use crate::wait::{EventCount, WaitPolicy};

mod consumer;
mod handle;
pub(crate) mod layout;
mod participants;
mod producer;

use handle::{Claim, Core, Ec, Side, Stuck};

pub use consumer::{Consumer, Record};
pub use producer::{Grant, Producer};

/// Bit 63 of a sequence word: the position carries no message.
const SKIP: u64 = 1 << 63;
/// How long a slot must stay claimed before a waiter first checks whether
/// its claimant died.
pub const STUCK_GRACE: Duration = Duration::from_millis(2);
/// How soon a waiter re-checks a claimed slot's claimant after that, and
/// the longest it parks while a slot it needs is claimed. Each check that
/// finds the claimant alive doubles both, up to [`STUCK_POLL_MAX`]: a live
/// holder working on its message for long costs its waiters few wake-ups.
pub const STUCK_POLL: Duration = Duration::from_millis(2);
/// The longest a waiter goes between two checks of a claimed slot's claimant.
pub const STUCK_POLL_MAX: Duration = Duration::from_millis(32);
/// Claim attempts per call before reporting "not now" (bounds the work a
/// garbage counter can cause; many real retries mean others progressed).
const CLAIM_RETRIES: u32 = 256;

/// How to create an MPMC ring.
///
/// ```
/// let opts = shmring::mpmc::MpmcOptions::new().slot_size(60).slot_count(256);
/// assert_eq!(opts.slot_size_bytes(), 64); // rounded up to a multiple of 8
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MpmcOptions {
    slot_size: usize,
    slot_count: usize,
    mode: u32,
    ready_timeout: Duration,
    policy: WaitPolicy,
    notifier: NotifierKind,
    /// Record type of a typed ring (set by `typed`), checked before attaching.
    pub(crate) record: Option<header::RecordType>,
}

impl Default for MpmcOptions {
    fn default() -> Self {
        MpmcOptions {
            slot_size: 64,
            slot_count: 1024,
            mode: 0o600,
            ready_timeout: Duration::from_secs(2),
            policy: WaitPolicy::default(),
            notifier: NotifierKind::Futex,
            record: None,
        }
    }
}

impl MpmcOptions {
    /// Defaults: 1024 slots of 64 bytes, mode 0600, 2 s ready timeout,
    /// default wait policy, futex notifier.
    pub fn new() -> MpmcOptions {
        MpmcOptions::default()
    }
    /// Largest message in bytes, 1 to 16 MiB; rounded up to a multiple of 8.
    pub fn slot_size(mut self, bytes: usize) -> Self {
        self.slot_size = bytes;
        self
    }
    /// Number of slots: a power of two, at least 2.
    pub fn slot_count(mut self, slots: usize) -> Self {
        self.slot_count = slots;
        self
    }
    crate::ring::segment_option_setters!();
    /// The slot size in bytes as the ring will record it (rounded up to 8).
    pub fn slot_size_bytes(&self) -> usize {
        self.slot_size.next_multiple_of(8)
    }

    fn typed(mut self, ty: header::RecordType) -> Self {
        self.record = Some(ty);
        self
    }

    fn geometry(&self) -> Result<Geometry> {
        let g = Geometry::mpmc(self.slot_size, self.slot_count)?.with_record(self.record);
        if let Some(r) = &self.record
            && r.size > g.slot_size
        {
            return Err(Error::InvalidArgument(format!("a {r} does not fit a slot of {} bytes", g.slot_size)));
        }
        Ok(g)
    }
}

/// Counters of an MPMC ring, shared by all its handles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Positions ever claimed by producers (messages and skipped slots).
    pub enqueued: u64,
    /// Positions ever claimed by consumers.
    pub dequeued: u64,
    /// Messages lost because their producer died between claiming a slot and
    /// committing it.
    pub lost_producer_died: u64,
    /// Messages lost because their consumer died while holding them.
    pub lost_consumer_died: u64,
    /// Slots recovered from dead claimants, of both kinds (including slots
    /// that held no message).
    pub recovered: u64,
}

/// What every handle of one mapping shares: pointers into it, kept alive by
/// `_keep`, and the geometry, read once and validated.
struct Shared {
    ctl: NonNull<MpmcControl>,
    header: Option<NonNull<Header>>,
    region: Region,
    /// Start of the data region (sequence words are read through it).
    #[cfg(not(loom))]
    data: *mut u8,
    /// Sequence words under loom, which cannot model atomics in raw memory.
    #[cfg(loom)]
    seqs: Vec<AtomicU64>,
    /// Liveness of the fake processes of a loom model, by pid - 1
    /// (0 alive, 1 dead).
    #[cfg(loom)]
    dead: Vec<crate::sync::AtomicU32>,
    slots: u64,
    stride: usize,
    slot_size: usize,
    name: String,
    /// The header as we opened it (unused under loom, which has no header).
    fixed: header::FixedWords,
    _keep: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the pointers target a mapping (or heap blocks under loom) owned by `_keep`, which lives as long as this struct; every shared word is an atomic and the payload bytes are handed out only as the ring protocol allows.
unsafe impl Send for Shared {}
// SAFETY: as above; handles on different threads touch the mapping only through atomics and protocol-owned slots.
unsafe impl Sync for Shared {}

impl Shared {
    #[inline]
    fn ctl(&self) -> &MpmcControl {
        // SAFETY: `ctl` points into memory kept alive by `_keep`; the control block is made of atomics, valid for any bits.
        unsafe { self.ctl.as_ref() }
    }

    #[inline]
    fn ec(&self, which: Ec) -> &EventCount {
        match which {
            Ec::NotEmpty => &self.ctl().not_empty,
            Ec::NotFull => &self.ctl().not_full,
        }
    }

    /// Byte offset of the slot of `pos` in the data region.
    #[inline]
    fn slot_off(&self, pos: u64) -> usize {
        (pos & (self.slots - 1)) as usize * self.stride
    }

    /// The sequence word of the slot of `pos`.
    #[inline]
    fn seq(&self, pos: u64) -> &AtomicU64 {
        #[cfg(not(loom))]
        {
            // SAFETY: slot_off < slots * stride = capacity, 8-aligned (stride is a multiple of 8, the region page-aligned); the word is an atomic, valid for any bits, in a mapping kept alive by `_keep`.
            unsafe { &*(self.data.add(self.slot_off(pos)) as *const AtomicU64) }
        }
        #[cfg(loom)]
        {
            &self.seqs[(pos & (self.slots - 1)) as usize]
        }
    }

    /// Whether the process `pid` with `start_time` (0: unknown) is alive.
    fn is_alive(&self, pid: u32, start_time: u64) -> bool {
        #[cfg(not(loom))]
        {
            ProcessId { pid, start_time }.is_alive()
        }
        #[cfg(loom)]
        {
            let _ = start_time;
            // Acquire: pairs with the Release store in `loom_die`: whatever
            // the "dead" thread did happens before we act on its death.
            pid != 0 && self.dead.get(pid as usize - 1).is_some_and(|d| d.load(Ordering::Acquire) == 0)
        }
    }

    fn poison(&self, what: String) -> Error {
        if let Some(h) = self.header {
            // SAFETY: as for `ctl`.
            let h = unsafe { h.as_ref() };
            h.flags.fetch_or(FLAG_POISONED, Ordering::Relaxed);
        }
        Error::corrupted(&self.name, what)
    }

    fn stats(&self) -> Stats {
        let c = self.ctl();
        Stats {
            enqueued: c.enqueue.load(Ordering::Relaxed) & !MPMC_CLOSED,
            dequeued: c.dequeue.load(Ordering::Relaxed),
            lost_producer_died: c.shared.lost_producer_died.load(Ordering::Relaxed),
            lost_consumer_died: c.shared.lost_consumer_died.load(Ordering::Relaxed),
            recovered: c.shared.recovered.load(Ordering::Relaxed),
        }
    }

    fn close(&self) {
        // Relaxed: the close is decided by this word alone (see "Closing" in
        // the module docs); as a read-modify-write it also keeps the release
        // sequences of the producers' claim CASes going.
        self.ctl().enqueue.fetch_or(MPMC_CLOSED, Ordering::Relaxed);
        self.ctl().not_empty.notify();
        self.ctl().not_full.notify();
    }

    fn is_closed(&self) -> bool {
        // Relaxed: a snapshot for the caller.
        self.ctl().enqueue.load(Ordering::Relaxed) & MPMC_CLOSED != 0
    }
}

/// Build the shared view of an initialised, validated MPMC segment.
fn shared_from_segment(seg: Segment, opts: &MpmcOptions) -> Result<Arc<Shared>> {
    let g = ring::wait_ready(&seg, opts.ready_timeout, RingKind::Mpmc)?;
    ring::check_record_type(&seg, &g, opts.record.as_ref())?;
    let base = seg.as_ptr();
    let capacity = g.capacity as usize;
    // SAFETY: wait_ready validated the mapping is header_len + capacity bytes with header_len = MPMC_HEADER_LEN >= CONTROL_OFFSET + size_of::<MpmcControl>() (const-asserted in header.rs); the offset is 128-aligned.
    let ctl = unsafe { NonNull::new_unchecked(base.add(header::CONTROL_OFFSET) as *mut MpmcControl) };
    // SAFETY: the data region starts after the validated header and is `capacity` bytes long.
    let data = unsafe { base.add(g.header_len as usize) };
    #[cfg(not(loom))]
    // SAFETY: `data..data + capacity` is inside the mapping, which lives as long as `_keep`; page-aligned.
    let region = unsafe { Region::new(data, capacity) };
    #[cfg(loom)]
    let region = {
        let shadow = Region::shadow(capacity);
        // SAFETY: as above; `shadow` has one cell per 8 bytes of the region.
        unsafe { Region::new(data, capacity, shadow) }
    };
    let stride = header::mpmc_slot_stride(g.slot_size) as usize;
    Ok(Arc::new(Shared {
        ctl,
        header: NonNull::new(base as *mut Header),
        #[cfg(not(loom))]
        data,
        #[cfg(loom)]
        seqs: (0..g.slot_count as usize)
            .map(|i| {
                // SAFETY: slot `i` of the validated data region is in bounds and 8-aligned; under loom nobody else runs yet.
                AtomicU64::new(unsafe { std::ptr::read(data.add(i * stride) as *const u64) })
            })
            .collect(),
        #[cfg(loom)]
        dead: Vec::new(),
        region,
        slots: u64::from(g.slot_count),
        stride,
        slot_size: g.slot_size as usize,
        name: seg.name().to_owned(),
        // SAFETY: `wait_ready` validated the mapping holds the header; page-aligned, made of atomics.
        fixed: header::FixedWords::read(unsafe { &*(base as *const Header) }),
        _keep: Arc::new(seg),
    }))
}

/// Write the initial sequence numbers and the header of a new segment whose
/// eventcounts sleep with `notifier`.
fn init(seg: &Segment, g: &Geometry, notifier: NotifierKind) {
    let stride = header::mpmc_slot_stride(g.slot_size) as usize;
    let data = seg.as_ptr().wrapping_add(g.header_len as usize);
    for i in 1..g.slot_count as usize {
        // SAFETY: the segment was created `g.total_len()` bytes long, so slot `i` of the data region is in bounds and 8-aligned; nobody else has it yet.
        let w = unsafe { &*(data.add(i * stride) as *const AtomicU64) };
        // Relaxed: published by the Release store of READY in `init_header`.
        w.store(i as u64, Ordering::Relaxed);
    }
    ring::init_header(seg, g, notifier);
}

/// Create and initialise an MPMC segment at `loc`, attaching nobody. Attach
/// with [`Producer::attach`] / [`Consumer::attach`], here or elsewhere.
///
/// # Errors
/// As [`Segment::create`], plus [`Error::InvalidArgument`] for a bad slot
/// size or count.
pub fn create_segment(loc: &Location, opts: &MpmcOptions) -> Result<Segment> {
    let g = opts.geometry()?;
    let seg = Segment::create(loc, g.total_len(), CreateOptions { mode: opts.mode })?;
    init(&seg, &g, opts.notifier);
    Ok(seg)
}

/// Create an anonymous MPMC segment in a sealed memfd; share it with
/// [`Segment::fd`] and map it elsewhere with [`Segment::from_fd`].
///
/// # Errors
/// As [`Segment::create_memfd`], plus [`Error::InvalidArgument`] for a bad
/// slot size or count.
pub fn create_memfd(label: &str, opts: &MpmcOptions) -> Result<Segment> {
    let g = opts.geometry()?;
    let seg = Segment::create_memfd(label, g.total_len())?;
    init(&seg, &g, opts.notifier);
    Ok(seg)
}

/// Attach a handle to the mapping of `seg`; with `expect`, check its geometry.
fn core_from_segment(seg: Segment, opts: &MpmcOptions, expect: bool) -> Result<Core> {
    let sh = shared_from_segment(seg, opts)?;
    if expect {
        let g = opts.geometry()?;
        if u64::from(g.slot_count) != sh.slots || g.slot_size as usize != sh.slot_size {
            return Err(Error::InvalidArgument(format!(
                "segment {} has {} slots of {} bytes, asked for {} slots of {} bytes",
                sh.name, sh.slots, sh.slot_size, g.slot_count, g.slot_size
            )));
        }
    }
    Core::attach(sh, ProcessId::current(), opts.policy)
}

/// Create a segment and attach; a failed attach removes the new segment.
fn create_core(loc: &Location, opts: &MpmcOptions) -> Result<Core> {
    let seg = create_segment(loc, opts)?;
    let r = core_from_segment(seg, opts, false);
    if r.is_err() {
        let _ = loc.unlink();
    }
    r
}

fn open_core(loc: &Location) -> Result<Core> {
    open_core_with(loc, &MpmcOptions::default())
}

/// Open with `opts`' ready timeout, wait policy and record type; any geometry.
fn open_core_with(loc: &Location, opts: &MpmcOptions) -> Result<Core> {
    core_from_segment(ring::open_segment(loc, opts.ready_timeout)?, opts, false)
}

fn open_or_create_core(loc: &Location, opts: &MpmcOptions) -> Result<Core> {
    let seg = ring::create_or_open(loc, opts.ready_timeout, || create_segment(loc, opts))?;
    core_from_segment(seg, opts, true)
}

/// Producers and consumers on a heap-allocated ring of `slot_count` slots
/// of `slot_size` bytes, for loom models. Handle `i` (producers first) is
/// fake process `i + 1`, alive until its `loom_die`.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_ring(
    slot_size: usize,
    slot_count: usize,
    producers: usize,
    consumers: usize,
) -> (Vec<Producer>, Vec<Consumer>) {
    struct Heap {
        ctl: Box<MpmcControl>,
        _data: Vec<u64>,
    }
    // SAFETY: only touched through the ring protocol (for both impls).
    unsafe impl Send for Heap {}
    // SAFETY: see above.
    unsafe impl Sync for Heap {}
    let g = Geometry::mpmc(slot_size, slot_count).expect("loom_ring geometry");
    let stride = header::mpmc_slot_stride(g.slot_size) as usize;
    let capacity = g.capacity as usize;
    let mut data = vec![0u64; capacity / 8];
    let base = data.as_mut_ptr() as *mut u8;
    let heap = Arc::new(Heap { ctl: Box::new(MpmcControl::new()), _data: data });
    let sh = Arc::new(Shared {
        ctl: NonNull::from(&*heap.ctl),
        header: None,
        // SAFETY: the Vec's buffer lives as long as `heap`, kept by `_keep`.
        region: unsafe { Region::new(base, capacity, Region::shadow(capacity)) },
        seqs: (0..slot_count as u64).map(AtomicU64::new).collect(),
        dead: (0..producers + consumers).map(|_| crate::sync::AtomicU32::new(0)).collect(),
        slots: slot_count as u64,
        stride,
        slot_size: g.slot_size as usize,
        name: "loom".into(),
        fixed: header::FixedWords::default(),
        _keep: heap,
    });
    let policy = WaitPolicy::park();
    let mut pid = 0;
    let mut core = || {
        pid += 1;
        Core::attach(sh.clone(), ProcessId { pid, start_time: 0 }, policy).expect("loom attach")
    };
    let ps = (0..producers).map(|_| Producer { core: core() }).collect();
    let cs = (0..consumers).map(|_| Consumer { core: core() }).collect();
    (ps, cs)
}
