//! Segment plumbing both rings share: fill in a new segment's header, wait
//! for a creator to finish and validate what it wrote, open with retry.
//!
//! The creator fills every header field, then stores `state = READY` with
//! Release; an opener waits (bounded) for READY with Acquire, then validates
//! every field against the mapping's real length before the ring touches
//! anything else.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::header::{self, FLAG_POISONED, Geometry, Header, MpmcControl, RingKind, SpscControl};
use crate::liveness::ProcessId;
use crate::segment::{Location, Segment};
use crate::sync::Ordering;
use crate::wait::EventCount;
use crate::wait::NotifierKind;

/// The two eventcounts of a segment of kind `kind`.
///
/// # Safety
/// `seg` must be at least as long as the header of `kind` ([`header::HEADER_LEN`]
/// for SPSC, [`header::MPMC_HEADER_LEN`] for MPMC).
unsafe fn eventcounts(seg: &Segment, kind: RingKind) -> [(&'static str, &EventCount); 2] {
    let ctl = seg.as_ptr().wrapping_add(header::CONTROL_OFFSET);
    match kind {
        RingKind::Spsc => {
            // SAFETY: the caller guarantees HEADER_LEN bytes, which hold the control block (const-asserted in
            // header.rs); the offset is 128-aligned and the block is made of atomics and eventcounts.
            let c = unsafe { &*(ctl as *const SpscControl) };
            c.eventcounts()
        }
        RingKind::Mpmc => {
            // SAFETY: as above, with MPMC_HEADER_LEN bytes for the MPMC control block.
            let c = unsafe { &*(ctl as *const MpmcControl) };
            c.eventcounts()
        }
    }
}

/// Fill in the header of a freshly created, zero-filled segment of
/// `g.total_len()` bytes, set up its eventcounts to sleep with `notifier`
/// (for a semaphore, `sem_init` with pshared = 1), and mark it READY.
/// Whatever the ring needs initialised beyond zeroes must be written before
/// this call.
pub(crate) fn init_header(seg: &Segment, g: &Geometry, notifier: NotifierKind) {
    // SAFETY: the segment was created `g.total_len()` bytes long, which includes the header of its kind.
    for (_, ec) in unsafe { eventcounts(seg, g.kind) } {
        ec.init(notifier);
    }
    // SAFETY: the mapping is at least HEADER_LEN bytes (every geometry's header is) and page-aligned; the
    // header is made of atomics.
    let h: &Header = unsafe { &*(seg.as_ptr() as *const Header) };
    let me = ProcessId::current();
    h.magic.store(header::MAGIC, Ordering::Relaxed);
    h.abi_version.store(header::ABI_VERSION, Ordering::Relaxed);
    h.kind.store(g.kind as u32, Ordering::Relaxed);
    h.header_len.store(g.header_len as u32, Ordering::Relaxed);
    h.notifier.store(notifier as u32, Ordering::Relaxed);
    h.capacity.store(g.capacity, Ordering::Relaxed);
    h.slot_size.store(g.slot_size, Ordering::Relaxed);
    h.slot_count.store(g.slot_count, Ordering::Relaxed);
    h.total_len.store(g.total_len(), Ordering::Relaxed);
    h.creator_pid.store(me.pid, Ordering::Relaxed);
    h.creator_start_time.store(me.start_time, Ordering::Relaxed);
    if let Some(record) = &g.record {
        record.store(h);
    }
    // Release: pairs with the opener's Acquire load in `wait_ready`; publishes
    // every field above and whatever the ring initialised before the call.
    h.state.store(header::STATE_READY, Ordering::Release);
}

/// Wait (at most `ready_timeout`) for the segment's creator to mark it READY,
/// then validate the header against the mapping's length, check it holds
/// a ring of kind `expected`, and check that every eventcount sleeps with
/// the notifier the header names (handles use the eventcounts' own words, so
/// the two must agree).
///
/// # Errors
/// [`Error::Corrupted`] for a segment shorter than a header, a header that
/// does not add up (an unknown notifier word included), or an eventcount
/// whose notifier word disagrees with the header's, [`Error::BadMagic`],
/// [`Error::NotReady`],
/// [`Error::VersionMismatch`], [`Error::KindMismatch`].
pub(crate) fn wait_ready(seg: &Segment, ready_timeout: Duration, expected: RingKind) -> Result<Geometry> {
    let len = seg.len() as u64;
    if len < header::HEADER_LEN as u64 {
        return Err(Error::corrupted(seg.name(), format!("segment is {len} bytes, shorter than its header")));
    }
    // SAFETY: the mapping is at least HEADER_LEN bytes and page-aligned; the header is made of atomics
    // valid for any bit pattern.
    let h: &Header = unsafe { &*(seg.as_ptr() as *const Header) };
    let deadline = Instant::now() + ready_timeout;
    // Acquire: pairs with the creator's Release store of STATE_READY in
    // `init_header`, so every field it wrote is visible below.
    while h.state.load(Ordering::Acquire) != header::STATE_READY {
        if h.magic.load(Ordering::Relaxed) != 0 && h.magic.load(Ordering::Relaxed) != header::MAGIC {
            return Err(Error::BadMagic(seg.name().to_owned()));
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady(seg.name().to_owned()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let g = header::validate(h, len, seg.name())?;
    if g.kind != expected {
        return Err(Error::KindMismatch {
            segment: seg.name().to_owned(),
            found: g.kind.name().into(),
            expected: expected.name(),
        });
    }
    // SAFETY: `validate` checked the mapping is `g.total_len()` bytes long,
    // which includes the header of kind `g.kind`.
    let ecs = unsafe { eventcounts(seg, g.kind) };
    header::check_eventcounts(h, ecs).map_err(|what| Error::corrupted(seg.name(), what))?;
    Ok(g)
}

/// Open `loc`, retrying while its creator is still sizing it.
///
/// # Errors
/// As [`Segment::open`]; [`Error::NotReady`] if it stays empty past the deadline.
pub(crate) fn open_segment(loc: &Location, ready_timeout: Duration) -> Result<Segment> {
    let deadline = Instant::now() + ready_timeout;
    loop {
        match Segment::open(loc) {
            Err(Error::NotReady(_)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            other => return other,
        }
    }
}

/// Create the segment with `create`, or open it if it already exists.
///
/// # Errors
/// As `create` (except [`Error::AlreadyExists`]) and [`open_segment`].
pub(crate) fn create_or_open(
    loc: &Location,
    ready_timeout: Duration,
    create: impl FnOnce() -> Result<Segment>,
) -> Result<Segment> {
    match create() {
        Err(Error::AlreadyExists(_)) => open_segment(loc, ready_timeout),
        other => other,
    }
}

/// How a handle is doing: whether it found the ring corrupted (poisoned:
/// every later call fails), and why its last call failed if no call
/// succeeded after it. The fast paths run only while both are clear; a
/// handle that ends with either aborts instead of closing.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub(crate) poisoned: bool,
    pub(crate) failure: Option<String>,
}

impl Health {
    /// Neither poisoned nor failed: the fast paths may run.
    #[inline(always)]
    pub(crate) fn clear(&self) -> bool {
        !self.poisoned && self.failure.is_none()
    }

    /// Remember how a call ended: a failure (not a
    /// [transient](Error::is_transient) one) is kept as the reason to abort
    /// with; a success forgets an earlier failure; a corruption error
    /// poisons.
    #[inline]
    pub(crate) fn note<T>(&mut self, r: Result<T>) -> Result<T> {
        match &r {
            Ok(_) => {
                if self.failure.is_some() {
                    self.failure = None;
                }
            }
            Err(e) if e.is_transient() => {}
            Err(e) => {
                if matches!(e, Error::Corrupted { .. }) {
                    self.poisoned = true;
                }
                self.failure = Some(e.abort_reason());
            }
        }
        r
    }

    /// Poisoned by `e` (a corruption error): returns it.
    pub(crate) fn poisoned_by(&mut self, e: Error) -> Error {
        self.poisoned = true;
        self.failure = Some(e.abort_reason());
        e
    }

    /// The error of a call on a poisoned handle.
    pub(crate) fn poisoned_error(segment: &str) -> Error {
        Error::corrupted(segment, "ring poisoned by an earlier error")
    }

    /// Why the handle ends aborted, if it does: its last failure, its
    /// poisoning, or its thread panicking. `None`: it closes cleanly.
    pub(crate) fn ending_reason(&mut self) -> Option<String> {
        if let Some(why) = self.failure.take() {
            return Some(why);
        }
        if self.poisoned {
            return Some("corrupted: ring poisoned".into());
        }
        std::thread::panicking().then(|| "the thread holding it panicked".into())
    }
}

/// Check a typed opener's record type against the one the segment was
/// created with. `None` (an untyped opener) accepts any segment.
///
/// # Errors
/// [`Error::TypeMismatch`], naming both types.
pub(crate) fn check_record_type(
    seg: &Segment,
    g: &header::Geometry,
    expected: Option<&header::RecordType>,
) -> Result<()> {
    let Some(want) = expected else { return Ok(()) };
    match &g.record {
        Some(found)
            if found.fingerprint == want.fingerprint && found.size == want.size && found.align == want.align =>
        {
            Ok(())
        }
        found => Err(Error::TypeMismatch {
            segment: seg.name().to_owned(),
            found: found.map_or_else(|| "untyped bytes".to_owned(), |f| f.to_string()),
            expected: want.to_string(),
        }),
    }
}

/// Poison a segment: set [`FLAG_POISONED`] in its header (if it has one:
/// the heap rings of loom models have none), so that every other handle
/// stops at its next liveness tick, and return the corruption error for
/// `what`. Every handle that finds impossible values in shared memory ends
/// here; the handle then also remembers it ([`Health::poisoned_by`]).
pub(crate) fn poison(header: Option<&Header>, segment: &str, what: String) -> Error {
    if let Some(h) = header {
        // Relaxed: a flag other handles read at their liveness ticks, on
        // its own.
        h.flags.fetch_or(FLAG_POISONED, Ordering::Relaxed);
    }
    Error::corrupted(segment, what)
}
