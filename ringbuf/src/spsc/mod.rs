//! Single-producer single-consumer ring of variable-length records in shared
//! memory.
//!
//! Positions are monotonic `u64` byte counters: `tail` (bytes the producer
//! has written) and `head` (bytes the consumer has released); a byte at
//! position `p` lives at offset `p & (capacity - 1)` of the data region. The
//! producer keeps a private cached copy of `head` and re-reads the shared one
//! only when the cached one says "full".
//!
//! A record is an 8-byte header word `[flags:32 | len:32]` followed by `len`
//! payload bytes, padded to a multiple of 8. A record that would straddle the
//! end of the region is preceded by a padding record (flag [`FLAG_PAD`]) that
//! fills the region to its end, and starts again at offset 0.
//!
//! The consumer does not poll `tail`: it polls the header word at its own
//! position. A header word of zero means "nothing yet". The producer keeps
//! that true by writing a zero end marker after the last record it publishes,
//! and by storing the header of the first record of a batch last, with
//! Release, after every other byte of the batch. So a message costs the
//! consumer one cache-line transfer (the record itself) rather than two (the
//! tail, then the record); `tail` is still stored for `fill` and `inspect`.
//!
//! The producer can write many records and publish them with one store
//! ([`Grant::stage`] then [`Producer::flush`]); the consumer can read many and
//! release them with one store ([`Consumer::recv_batch`]). Records of the same
//! length staged one after another share one header (a run, flag
//! [`FLAG_RUN`], up to 65535 records): a stream of 8-byte records staged in
//! batches costs about 8 bytes of ring per record instead of 16. Receiving,
//! runs are invisible except to [`Consumer::recv_runs`], which passes each
//! run as one slice; the other calls receive one record at a time.
//!
//! Everything read from shared memory is checked: a position out of range, a
//! length that does not fit, an unknown flag returns [`Error::Corrupted`] and
//! poisons the handle. No input makes this module panic or access memory
//! outside the mapping.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::header::{
    self, FLAG_POISONED, Header, NotifierKind, ROLE_ABORTED, ROLE_ATTACHED, ROLE_ATTACHING, ROLE_CLOSED, ROLE_FREE,
    RoleSlot, SpscControl,
};
use crate::liveness::ProcessId;
use crate::region::Region;
use crate::ring;
use crate::segment::{CreateOptions, Location, Segment};
use crate::sync::Ordering;
use crate::wait::{Doorbell, EventCount, Registration, WaitPolicy};

mod consumer;
mod ending;
mod grant;
pub(crate) mod layout;
mod producer;

use ending::Peer;

pub use consumer::{Consumer, Record, RecordRun};
pub use grant::{Grant, Records};
pub use producer::Producer;

/// Record header flag: padding (to the end of the region, or to align the
/// next batch to a cache line); skip `len` bytes, header included.
pub const FLAG_PAD: u32 = 1;
/// Record header flag: a record (set on every record, so that no header
/// word is zero, the value that means "nothing here yet").
pub const FLAG_RECORD: u32 = 2;
/// Record header flag: a run of records of one length, packed without
/// headers of their own. The count is in the top 16 bits of the flags.
pub const FLAG_RUN: u32 = 4;
/// Most records one run header covers.
pub(crate) const MAX_RUN: u32 = 0xffff;
/// Bytes of record header before each payload.
pub const RECORD_HEADER: u64 = 8;

/// Header word of a run of `count` records of `len` payload bytes each.
#[inline]
const fn run_word(len: usize, count: u32) -> u64 {
    (((FLAG_RUN | (count << 16)) as u64) << 32) | len as u64
}

/// Header word of a record of `len` payload bytes.
#[inline]
const fn record_word(len: usize) -> u64 {
    ((FLAG_RECORD as u64) << 32) | len as u64
}

/// Header word of a padding record of `len` bytes (header included).
#[inline]
const fn pad_word(len: u64) -> u64 {
    ((FLAG_PAD as u64) << 32) | len
}

/// Bytes a record of `len` payload bytes occupies in the ring.
///
/// ```
/// assert_eq!(shmring::spsc::record_size(0), 8);
/// assert_eq!(shmring::spsc::record_size(1), 16);
/// assert_eq!(shmring::spsc::record_size(64), 72);
/// ```
pub const fn record_size(len: usize) -> u64 {
    RECORD_HEADER + ((len as u64 + 7) & !7)
}

/// How to create a ring.
///
/// ```
/// let opts = shmring::RingOptions::new().capacity(1 << 16).mode(0o640);
/// assert_eq!(opts.capacity_bytes(), 65536);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RingOptions {
    capacity: u64,
    mode: u32,
    ready_timeout: Duration,
    policy: WaitPolicy,
    notifier: NotifierKind,
    demote: bool,
    /// Record type of a typed ring (set by `typed`), checked before a role is claimed.
    pub(crate) record: Option<header::RecordType>,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            capacity: 1 << 20,
            mode: 0o600,
            ready_timeout: Duration::from_secs(2),
            policy: WaitPolicy::default(),
            notifier: NotifierKind::Futex,
            demote: false,
            record: None,
        }
    }
}

impl RingOptions {
    /// Defaults: 1 MiB capacity, mode 0600, 2 s ready timeout, default wait
    /// policy, futex notifier.
    pub fn new() -> RingOptions {
        RingOptions::default()
    }
    /// Data region size in bytes: a power of two from 4 KiB to 2 GiB.
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }
    crate::ring::segment_option_setters!();
    /// Initial demote setting of a producer (default off; changeable later
    /// with [`Producer::set_demote`], which explains it). Consumers ignore it.
    pub fn demote(mut self, on: bool) -> Self {
        self.demote = on;
        self
    }
    /// The configured capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity
    }
}

/// What both handles share: pointers into the mapping, kept alive by `_keep`.
struct Shared {
    ctl: NonNull<SpscControl>,
    header: Option<NonNull<Header>>,
    region: Region,
    capacity: u64,
    name: String,
    /// The header as we opened it (unused under loom, which has no header).
    fixed: header::FixedWords,
    /// The peer's doorbell, rung after a notify that finds it parked.
    doorbell: Option<Doorbell>,
    _keep: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the pointers target a mapping (or a heap block under loom) owned by `_keep`, which lives as long as this struct; all shared words are atomics.
unsafe impl Send for Shared {}

impl Shared {
    #[inline]
    fn ctl(&self) -> &SpscControl {
        // SAFETY: `ctl` points into memory kept alive by `_keep`; the control block is made of atomics, so shared references are fine.
        unsafe { self.ctl.as_ref() }
    }

    /// Wake whoever waits on `ec`: a parked peer thread (the eventcount's
    /// own notifier) and, if we were given one, the peer's doorbell.
    #[inline(always)]
    fn notify(&self, ec: &EventCount) {
        if ec.notify()
            && let Some(bell) = &self.doorbell
        {
            bell.ring();
        }
    }

    /// Register as a waiter on `ec` for a caller that sleeps on a doorbell.
    fn register(&self, ec: &EventCount) -> Registration {
        Registration::new(ec, Arc::clone(&self._keep))
    }

    fn poison(&self, what: String) -> Error {
        if let Some(h) = self.header {
            // SAFETY: as for `ctl`.
            let h = unsafe { h.as_ref() };
            h.flags.fetch_or(FLAG_POISONED, Ordering::Relaxed);
        }
        Error::corrupted(&self.name, what)
    }

    /// Take `slot` for this process.
    fn claim(&self, slot: &RoleSlot, role: &'static str) -> Result<()> {
        let me = ProcessId::current();
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            // Acquire on failure: pairs with the Release stores of the state
            // word in `claim` and `close`, so a holder's pid is visible.
            match slot.state.compare_exchange(ROLE_FREE, ROLE_ATTACHING, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => {
                    slot.pid.store(me.pid, Ordering::Relaxed);
                    slot.start_time.store(me.start_time, Ordering::Relaxed);
                    // Release: pairs with the Acquire loads in `peer`
                    // and `claim`; publishes pid and start time.
                    slot.state.store(ROLE_ATTACHED, Ordering::Release);
                    return Ok(());
                }
                Err(ROLE_ATTACHING) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(ROLE_ATTACHING) => {
                    return Err(Error::NotReady(format!("{} ({role} role stuck mid-attach)", self.name)));
                }
                Err(ROLE_ATTACHED) => {
                    let id = ProcessId {
                        pid: slot.pid.load(Ordering::Relaxed),
                        start_time: slot.start_time.load(Ordering::Relaxed),
                    };
                    return Err(if id.is_alive() {
                        Error::RoleTaken { segment: self.name.clone(), role, pid: id.pid }
                    } else {
                        Error::Stale { segment: self.name.clone(), role, pid: id.pid }
                    });
                }
                Err(ROLE_CLOSED | ROLE_ABORTED) => {
                    return Err(Error::Closed(format!("{} (its {role} already finished)", self.name)));
                }
                Err(other) => return Err(self.poison(format!("{role} role state word is {other}"))),
            }
        }
    }
}

/// Build the shared view of an initialised, validated SPSC segment; if
/// `opts` names a record type, the segment must have been created for it.
fn shared_from_segment(seg: Segment, opts: &RingOptions) -> Result<Shared> {
    let g = ring::wait_ready(&seg, opts.ready_timeout, header::RingKind::Spsc)?;
    ring::check_record_type(&seg, &g, opts.record.as_ref())?;
    let capacity = g.capacity;
    let base = seg.as_ptr();
    let name = seg.name().to_owned();
    // SAFETY: CONTROL_OFFSET + size_of::<SpscControl>() <= HEADER_LEN <= len (const-asserted in header.rs) and the offset is 128-aligned.
    let ctl = unsafe { NonNull::new_unchecked(base.add(header::CONTROL_OFFSET) as *mut SpscControl) };
    #[cfg(not(loom))]
    // SAFETY: validate() checked len == HEADER_LEN + capacity, so the data region is in bounds; the mapping lives as long as `_keep`.
    let region = unsafe { Region::new(base.add(header::HEADER_LEN), capacity as usize) };
    #[cfg(loom)]
    let region = {
        let shadow = Region::shadow(capacity as usize);
        // SAFETY: as above; `shadow` has one cell per 8 bytes of the region.
        unsafe { Region::new(base.add(header::HEADER_LEN), capacity as usize, shadow) }
    };
    // SAFETY: the mapping is at least HEADER_LEN bytes (validated by `wait_ready`), page-aligned; the header is made of atomics.
    let fixed = header::FixedWords::read(unsafe { &*(base as *const Header) });
    Ok(Shared {
        ctl,
        header: NonNull::new(base as *mut Header),
        region,
        capacity,
        name,
        fixed,
        doorbell: None,
        _keep: Arc::new(seg),
    })
}

/// Create and initialise an SPSC segment at `loc`. Neither role is claimed;
/// attach with [`Producer::attach`] / [`Consumer::attach`], here or in
/// another process.
///
/// # Errors
/// As [`Segment::create`], plus [`Error::InvalidArgument`] for a bad capacity.
pub fn create_segment(loc: &Location, opts: &RingOptions) -> Result<Segment> {
    let g = header::Geometry::spsc(opts.capacity)?.with_record(opts.record);
    let seg = Segment::create(loc, g.total_len(), CreateOptions { mode: opts.mode })?;
    ring::init_header(&seg, &g, opts.notifier);
    Ok(seg)
}

/// Create an anonymous SPSC segment in a sealed memfd; share it with
/// [`Segment::fd`] and map it elsewhere with [`Segment::from_fd`].
///
/// # Errors
/// As [`Segment::create_memfd`], plus [`Error::InvalidArgument`] for a bad capacity.
pub fn create_memfd(label: &str, opts: &RingOptions) -> Result<Segment> {
    let g = header::Geometry::spsc(opts.capacity)?.with_record(opts.record);
    let seg = Segment::create_memfd(label, g.total_len())?;
    ring::init_header(&seg, &g, opts.notifier);
    Ok(seg)
}

/// Open `loc`, retrying while its creator is still sizing it.
fn open_segment(loc: &Location, ready_timeout: Duration) -> Result<Segment> {
    ring::open_segment(loc, ready_timeout)
}

/// Create the segment, or open it if it already exists.
fn open_or_create_segment(loc: &Location, opts: &RingOptions) -> Result<Segment> {
    ring::create_or_open(loc, opts.ready_timeout, || create_segment(loc, opts))
}

/// What both ends implement to be built from a segment.
pub(crate) trait Role: Sized {
    fn attach_with(seg: Segment, opts: &RingOptions) -> Result<Self>;
}

/// Create the segment and attach; a failed attach removes the new segment.
pub(crate) fn create_role<R: Role>(loc: &Location, opts: &RingOptions) -> Result<R> {
    let seg = create_segment(loc, opts)?;
    let r = R::attach_with(seg, opts);
    if r.is_err() {
        let _ = loc.unlink();
    }
    r
}

fn open_role<R: Role>(loc: &Location) -> Result<R> {
    open_role_with(loc, &RingOptions::default())
}

/// Open with `opts`' ready timeout, wait policy and record type (its
/// capacity and mode are not used).
pub(crate) fn open_role_with<R: Role>(loc: &Location, opts: &RingOptions) -> Result<R> {
    R::attach_with(open_segment(loc, opts.ready_timeout)?, opts)
}

pub(crate) fn open_or_create_role<R: Role>(loc: &Location, opts: &RingOptions) -> Result<R> {
    R::attach_with(open_or_create_segment(loc, opts)?, opts)
}

/// A producer/consumer pair on a heap-allocated ring, for loom models.
/// Roles are marked attached (by the calling process) without pid checks
/// mattering: liveness is never consulted without timeouts under loom.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_pair(capacity: u64) -> (Producer, Consumer) {
    loom_pair_with(capacity, NotifierKind::Futex)
}

/// As [`loom_pair`], with eventcounts that sleep with `notifier`.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_pair_with(capacity: u64, notifier: NotifierKind) -> (Producer, Consumer) {
    struct Heap {
        ctl: Box<SpscControl>,
        _data: Vec<u64>,
    }
    // SAFETY: only touched through the ring protocol (for both impls).
    unsafe impl Send for Heap {}
    // SAFETY: see above.
    unsafe impl Sync for Heap {}
    let words = (capacity / 8) as usize;
    let mut data = vec![0u64; words];
    let base = data.as_mut_ptr() as *mut u8;
    let shadow = Region::shadow(capacity as usize);
    let ctl = SpscControl {
        data_ready: crossbeam_utils::CachePadded::new(crate::wait::EventCount::with_notifier(notifier)),
        space_free: crossbeam_utils::CachePadded::new(crate::wait::EventCount::with_notifier(notifier)),
        ..SpscControl::new()
    };
    let heap = Arc::new(Heap { ctl: Box::new(ctl), _data: data });
    let ctl = NonNull::from(&*heap.ctl);
    let mk = |keep: Arc<Heap>| Shared {
        ctl,
        header: None,
        // SAFETY: the Vec's buffer lives as long as `keep`.
        region: unsafe { Region::new(base, capacity as usize, shadow.clone()) },
        capacity,
        name: "loom".into(),
        fixed: header::FixedWords::default(),
        doorbell: None,
        _keep: keep,
    };
    let (ps, cs) = (mk(heap.clone()), mk(heap));
    ps.ctl().producer.state.store(ROLE_ATTACHED, Ordering::Relaxed);
    ps.ctl().consumer.state.store(ROLE_ATTACHED, Ordering::Relaxed);
    let policy = WaitPolicy::park();
    (
        Producer {
            sh: ps,
            tail: 0,
            published: 0,
            pending: 0,
            open: None,
            staged: 0,
            cached_head: 0,
            policy,
            health: ring::Health::default(),
            consumer: None,
            attach_head: 0,
            demote: false,
        },
        Consumer {
            sh: cs,
            head: 0,
            published: 0,
            run: consumer::Run::default(),
            policy,
            health: ring::Health::default(),
            producer: None,
            attach_head: 0,
            backoff: 0,
        },
    )
}
