//! [`MpmcOptions`]: how to create or open an MPMC ring.

use crate::error::{Error, Result};
use crate::header::{self, Geometry};
use crate::options::{SegmentOptions, segment_option_setters};

/// How to create or open an MPMC ring: its slot size and count, and what
/// every ring's options have ([`SegmentOptions`]).
///
/// ```
/// let opts = shmring::mpmc::MpmcOptions::new().slot_size(60).slot_count(256);
/// assert_eq!(opts.slot_size_bytes(), 64); // rounded up to a multiple of 8
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MpmcOptions {
    pub(super) slot_size: usize,
    pub(super) slot_count: usize,
    pub(crate) segment: SegmentOptions,
    /// Record type of a typed ring (set by `typed`), checked before attaching.
    pub(crate) record: Option<header::RecordType>,
}

impl Default for MpmcOptions {
    fn default() -> Self {
        MpmcOptions { slot_size: 64, slot_count: 1024, segment: SegmentOptions::default(), record: None }
    }
}

impl MpmcOptions {
    /// Defaults: 1024 slots of 64 bytes, and [`SegmentOptions`]' defaults
    /// (mode 0600, 2 s ready timeout, default wait policy, futex notifier).
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
    segment_option_setters!(self, self.segment, embedded);
    /// The slot size in bytes as the ring will record it (rounded up to 8).
    pub fn slot_size_bytes(&self) -> usize {
        self.slot_size.next_multiple_of(8)
    }

    pub(crate) fn typed(mut self, ty: header::RecordType) -> Self {
        self.record = Some(ty);
        self
    }

    pub(super) fn geometry(&self) -> Result<Geometry> {
        let g = Geometry::mpmc(self.slot_size, self.slot_count)?.with_record(self.record);
        if let Some(r) = &self.record
            && r.size > g.slot_size
        {
            return Err(Error::InvalidArgument(format!("a {r} does not fit a slot of {} bytes", g.slot_size)));
        }
        Ok(g)
    }
}
