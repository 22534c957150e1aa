//! Building a handle's state from a segment: create, open, attach.

use super::handle::Core;
use super::options::MpmcOptions;
use super::shared::{create_segment, shared_from_segment};
use crate::error::{Error, Result};
use crate::liveness::ProcessId;
use crate::ring;
use crate::segment::{Location, Segment};

/// Attach a handle to the mapping of `seg`; with `expect`, check its geometry.
pub(super) fn core_from_segment(seg: Segment, opts: &MpmcOptions, expect: bool) -> Result<Core> {
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
    Core::attach(sh, ProcessId::current(), opts.segment.policy)
}

/// Create a segment and attach; a failed attach removes the new segment.
pub(super) fn create_core(loc: &Location, opts: &MpmcOptions) -> Result<Core> {
    let seg = create_segment(loc, opts)?;
    let r = core_from_segment(seg, opts, false);
    if r.is_err() {
        let _ = loc.unlink();
    }
    r
}

pub(super) fn open_core(loc: &Location) -> Result<Core> {
    open_core_with(loc, &MpmcOptions::default())
}

/// Open with `opts`' ready timeout, wait policy and record type; any geometry.
pub(super) fn open_core_with(loc: &Location, opts: &MpmcOptions) -> Result<Core> {
    core_from_segment(ring::open_segment(loc, opts.segment.ready_timeout)?, opts, false)
}

pub(super) fn open_or_create_core(loc: &Location, opts: &MpmcOptions) -> Result<Core> {
    let seg = ring::create_or_open(loc, opts.segment.ready_timeout, || create_segment(loc, opts))?;
    core_from_segment(seg, opts, true)
}
