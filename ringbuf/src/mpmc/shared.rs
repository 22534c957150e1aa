//! What every handle of one MPMC mapping shares: the pointers into it,
//! the geometry, the counters, and creating a segment.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use super::layout::{MPMC_CLOSED, MpmcControl};
use super::options::MpmcOptions;
use crate::error::{Error, Result};
use crate::header::{self, Geometry, Header, RingKind};
#[cfg(not(loom))]
use crate::liveness::ProcessId;
use crate::region::Region;
use crate::ring;
use crate::segment::{CreateOptions, Location, Segment};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::{EventCount, NotifierKind};

/// Bit 63 of a sequence word: the position carries no message.
pub(super) const SKIP: u64 = 1 << 63;
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
pub(super) const CLAIM_RETRIES: u32 = 256;

/// How many positions ahead of the one it fills a producer prefetches (see
/// `Shared::prefetch_for_write`): far enough for a cache line to cross
/// between cores while the producer sends that many messages.
pub(super) const PREFETCH_AHEAD: u64 = 8;

/// Which eventcount a wait parks on.
#[derive(Clone, Copy)]
pub(super) enum Ec {
    NotEmpty,
    NotFull,
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
pub(super) struct Shared {
    pub(super) ctl: NonNull<MpmcControl>,
    pub(super) header: Option<NonNull<Header>>,
    pub(super) region: Region,
    /// Start of the data region (sequence words are read through it).
    #[cfg(not(loom))]
    pub(super) data: *mut u8,
    /// Sequence words under loom, which cannot model atomics in raw memory.
    #[cfg(loom)]
    pub(super) seqs: Vec<AtomicU64>,
    /// Liveness of the fake processes of a loom model, by pid - 1
    /// (0 alive, 1 dead).
    #[cfg(loom)]
    pub(super) dead: Vec<crate::sync::AtomicU32>,
    pub(super) slots: u64,
    pub(super) stride: usize,
    pub(super) slot_size: usize,
    pub(super) name: String,
    /// The header as we opened it (unused under loom, which has no header).
    pub(super) fixed: header::FixedWords,
    pub(super) _keep: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the pointers target a mapping (or heap blocks under loom) owned by `_keep`, which lives as
// long as this struct; every shared word is an atomic and the payload bytes are handed out only as the
// ring protocol allows.
unsafe impl Send for Shared {}
// SAFETY: as above; handles on different threads touch the mapping only through atomics and protocol-owned slots.
unsafe impl Sync for Shared {}

impl Shared {
    #[inline]
    pub(super) fn ctl(&self) -> &MpmcControl {
        // SAFETY: `ctl` points into memory kept alive by `_keep`; the control block is made of atomics, valid
        // for any bits.
        unsafe { self.ctl.as_ref() }
    }

    #[inline]
    pub(super) fn ec(&self, which: Ec) -> &EventCount {
        match which {
            Ec::NotEmpty => &self.ctl().not_empty,
            Ec::NotFull => &self.ctl().not_full,
        }
    }

    /// Byte offset of the slot of `pos` in the data region.
    #[inline]
    pub(super) fn slot_off(&self, pos: u64) -> usize {
        (pos & (self.slots - 1)) as usize * self.stride
    }

    /// Ask the CPU to fetch the first two cache lines of the slot of `pos`
    /// for writing (`prefetchw` on x86-64; nothing elsewhere or under loom).
    /// A hint only: it reads and writes nothing, and cannot fault.
    ///
    /// A producer calls it for the slot [`PREFETCH_AHEAD`] positions on, so
    /// that the lines the consumer wrote when it freed that slot are on their
    /// way before the producer writes them. Otherwise the first store there
    /// waits for the transfer, and so does the next locked instruction (the
    /// claim's compare-and-swap, the notify's fence), which must drain it.
    #[inline(always)]
    pub(super) fn prefetch_for_write(&self, pos: u64) {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            // In bounds: slot_off < slots * stride, and the second line is
            // asked for only when the stride has one.
            let slot = self.data.wrapping_add(self.slot_off(pos)) as *const i8;
            // SAFETY: a prefetch hint neither reads nor writes memory and never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(slot) };
            if self.stride > 64 {
                // SAFETY: as above.
                unsafe { _mm_prefetch::<_MM_HINT_ET0>(slot.wrapping_add(64)) };
            }
        }
        #[cfg(any(not(target_arch = "x86_64"), loom))]
        let _ = pos;
    }

    /// The sequence word of the slot of `pos`.
    #[inline]
    pub(super) fn seq(&self, pos: u64) -> &AtomicU64 {
        #[cfg(not(loom))]
        {
            // SAFETY: slot_off < slots * stride = capacity, 8-aligned (stride is a multiple of 8, the region
            // page-aligned); the word is an atomic, valid for any bits, in a mapping kept alive by `_keep`.
            unsafe { &*(self.data.add(self.slot_off(pos)) as *const AtomicU64) }
        }
        #[cfg(loom)]
        {
            &self.seqs[(pos & (self.slots - 1)) as usize]
        }
    }

    /// Whether the process `pid` with `start_time` (0: unknown) is alive.
    pub(super) fn is_alive(&self, pid: u32, start_time: u64) -> bool {
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

    /// The segment's header (none for the heap rings of loom models).
    pub(super) fn header(&self) -> Option<&Header> {
        // SAFETY: as for `ctl`: the header lies in the mapping kept alive by
        // `_keep`, and is made of atomics.
        self.header.map(|h| unsafe { h.as_ref() })
    }

    /// Poison the segment (see [`ring::poison`]) and return the error.
    pub(super) fn poison(&self, what: String) -> Error {
        ring::poison(self.header(), &self.name, what)
    }

    pub(super) fn stats(&self) -> Stats {
        let c = self.ctl();
        Stats {
            enqueued: c.enqueue.load(Ordering::Relaxed) & !MPMC_CLOSED,
            dequeued: c.dequeue.load(Ordering::Relaxed),
            lost_producer_died: c.shared.lost_producer_died.load(Ordering::Relaxed),
            lost_consumer_died: c.shared.lost_consumer_died.load(Ordering::Relaxed),
            recovered: c.shared.recovered.load(Ordering::Relaxed),
        }
    }

    pub(super) fn close(&self) {
        // Relaxed: the close is decided by this word alone (see "Closing" in
        // the module docs); as a read-modify-write it also keeps the release
        // sequences of the producers' claim CASes going.
        self.ctl().enqueue.fetch_or(MPMC_CLOSED, Ordering::Relaxed);
        self.ctl().not_empty.notify();
        self.ctl().not_full.notify();
    }

    pub(super) fn is_closed(&self) -> bool {
        // Relaxed: a snapshot for the caller.
        self.ctl().enqueue.load(Ordering::Relaxed) & MPMC_CLOSED != 0
    }
}

/// Build the shared view of an initialised, validated MPMC segment.
pub(super) fn shared_from_segment(seg: Segment, opts: &MpmcOptions) -> Result<Arc<Shared>> {
    let g = ring::wait_ready(&seg, opts.segment.ready_timeout, RingKind::Mpmc)?;
    ring::check_record_type(&seg, &g, opts.record.as_ref())?;
    let base = seg.as_ptr();
    let capacity = g.capacity as usize;
    // SAFETY: wait_ready validated the mapping is header_len + capacity bytes with header_len =
    // MPMC_HEADER_LEN >= CONTROL_OFFSET + size_of::<MpmcControl>() (const-asserted in header.rs); the
    // offset is 128-aligned.
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
                // SAFETY: slot `i` of the validated data region is in bounds and 8-aligned; under loom nobody else
                // runs yet.
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
        // SAFETY: the segment was created `g.total_len()` bytes long, so slot `i` of the data region is in
        // bounds and 8-aligned; nobody else has it yet.
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
    let seg = Segment::create(loc, g.total_len(), CreateOptions { mode: opts.segment.mode })?;
    init(&seg, &g, opts.segment.notifier);
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
    init(&seg, &g, opts.segment.notifier);
    Ok(seg)
}
