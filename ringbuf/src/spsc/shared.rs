//! What both ends of an SPSC ring share: the mapping and its pointers,
//! the notify and poison paths, role claiming, and building an end from a
//! segment (create, open, attach).

use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::{ROLE_ABORTED, ROLE_ATTACHED, ROLE_ATTACHING, ROLE_CLOSED, ROLE_FREE, RoleSlot, SpscControl};
use super::options::SpscOptions;
use crate::error::{Error, Result};
use crate::header::{self, Header};
use crate::liveness::ProcessId;
use crate::region::Region;
use crate::ring::{self};
use crate::segment::{CreateOptions, Location, Segment};
use crate::sync::Ordering;
use crate::wait::{Doorbell, EventCount, Registration};

/// What both handles share: pointers into the mapping, kept alive by `_keep`.
pub(super) struct Shared {
    pub(super) ctl: NonNull<SpscControl>,
    pub(super) header: Option<NonNull<Header>>,
    pub(super) region: Region,
    pub(super) capacity: u64,
    pub(super) name: String,
    /// The header as we opened it (unused under loom, which has no header).
    pub(super) fixed: header::FixedWords,
    /// The peer's doorbell, rung after a notify that finds it parked.
    pub(super) doorbell: Option<Doorbell>,
    pub(super) _keep: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the pointers target a mapping (or a heap block under loom) owned by `_keep`, which lives as
// long as this struct; all shared words are atomics.
unsafe impl Send for Shared {}

impl Shared {
    #[inline]
    pub(super) fn ctl(&self) -> &SpscControl {
        // SAFETY: `ctl` points into memory kept alive by `_keep`; the control block is made of atomics, so
        // shared references are fine.
        unsafe { self.ctl.as_ref() }
    }

    /// Wake whoever waits on `ec`: a parked peer thread (the eventcount's
    /// own notifier) and, if we were given one, the peer's doorbell.
    #[inline(always)]
    pub(super) fn notify(&self, ec: &EventCount) {
        if ec.notify()
            && let Some(bell) = &self.doorbell
        {
            bell.ring();
        }
    }

    /// Register as a waiter on `ec` for a caller that sleeps on a doorbell.
    pub(super) fn register(&self, ec: &EventCount) -> Registration {
        Registration::new(ec, Arc::clone(&self._keep))
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

    /// Take `slot` for this process.
    pub(super) fn claim(&self, slot: &RoleSlot, role: &'static str) -> Result<()> {
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
pub(super) fn shared_from_segment(seg: Segment, opts: &SpscOptions) -> Result<Shared> {
    let g = ring::wait_ready(&seg, opts.segment.ready_timeout, header::RingKind::Spsc)?;
    ring::check_record_type(&seg, &g, opts.record.as_ref())?;
    let capacity = g.capacity;
    let base = seg.as_ptr();
    let name = seg.name().to_owned();
    // SAFETY: CONTROL_OFFSET + size_of::<SpscControl>() <= HEADER_LEN <= len (const-asserted in header.rs)
    // and the offset is 128-aligned.
    let ctl = unsafe { NonNull::new_unchecked(base.add(header::CONTROL_OFFSET) as *mut SpscControl) };
    #[cfg(not(loom))]
    // SAFETY: validate() checked len == HEADER_LEN + capacity, so the data region is in bounds; the
    // mapping lives as long as `_keep`.
    let region = unsafe { Region::new(base.add(header::HEADER_LEN), capacity as usize) };
    #[cfg(loom)]
    let region = {
        let shadow = Region::shadow(capacity as usize);
        // SAFETY: as above; `shadow` has one cell per 8 bytes of the region.
        unsafe { Region::new(base.add(header::HEADER_LEN), capacity as usize, shadow) }
    };
    // SAFETY: the mapping is at least HEADER_LEN bytes (validated by `wait_ready`), page-aligned; the
    // header is made of atomics.
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
pub fn create_segment(loc: &Location, opts: &SpscOptions) -> Result<Segment> {
    let g = header::Geometry::spsc(opts.capacity)?.with_record(opts.record);
    let seg = Segment::create(loc, g.total_len(), CreateOptions { mode: opts.segment.mode })?;
    ring::init_header(&seg, &g, opts.segment.notifier);
    Ok(seg)
}

/// Create an anonymous SPSC segment in a sealed memfd; share it with
/// [`Segment::fd`] and map it elsewhere with [`Segment::from_fd`].
///
/// # Errors
/// As [`Segment::create_memfd`], plus [`Error::InvalidArgument`] for a bad capacity.
pub fn create_memfd(label: &str, opts: &SpscOptions) -> Result<Segment> {
    let g = header::Geometry::spsc(opts.capacity)?.with_record(opts.record);
    let seg = Segment::create_memfd(label, g.total_len())?;
    ring::init_header(&seg, &g, opts.segment.notifier);
    Ok(seg)
}

/// Open `loc`, retrying while its creator is still sizing it.
pub(super) fn open_segment(loc: &Location, ready_timeout: Duration) -> Result<Segment> {
    ring::open_segment(loc, ready_timeout)
}

/// Create the segment, or open it if it already exists.
pub(super) fn open_or_create_segment(loc: &Location, opts: &SpscOptions) -> Result<Segment> {
    ring::create_or_open(loc, opts.segment.ready_timeout, || create_segment(loc, opts))
}

/// What both ends implement to be built from a segment.
pub(crate) trait Role: Sized {
    fn attach_with(seg: Segment, opts: &SpscOptions) -> Result<Self>;
    /// The segment's name, as used in error messages.
    fn name(&self) -> &str;
}

/// Create the segment and attach; a failed attach removes the new segment.
pub(crate) fn create_role<R: Role>(loc: &Location, opts: &SpscOptions) -> Result<R> {
    let seg = create_segment(loc, opts)?;
    let r = R::attach_with(seg, opts);
    if r.is_err() {
        let _ = loc.unlink();
    }
    r
}

pub(super) fn open_role<R: Role>(loc: &Location) -> Result<R> {
    open_role_with(loc, &SpscOptions::default())
}

/// Open with `opts`' ready timeout, wait policy and record type (its
/// capacity and mode are not used).
pub(crate) fn open_role_with<R: Role>(loc: &Location, opts: &SpscOptions) -> Result<R> {
    R::attach_with(open_segment(loc, opts.segment.ready_timeout)?, opts)
}

pub(crate) fn open_or_create_role<R: Role>(loc: &Location, opts: &SpscOptions) -> Result<R> {
    R::attach_with(open_or_create_segment(loc, opts)?, opts)
}
