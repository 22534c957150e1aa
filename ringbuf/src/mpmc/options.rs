//! [`MpmcOptions`]: how to create or open an MPMC ring.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::header::{self, Geometry};
use crate::wait::{NotifierKind, WaitPolicy};

/// How to create an MPMC ring.
///
/// ```
/// let opts = shmring::mpmc::MpmcOptions::new().slot_size(60).slot_count(256);
/// assert_eq!(opts.slot_size_bytes(), 64); // rounded up to a multiple of 8
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MpmcOptions {
    pub(super) slot_size: usize,
    pub(super) slot_count: usize,
    pub(super) mode: u32,
    pub(super) ready_timeout: Duration,
    pub(super) policy: WaitPolicy,
    pub(super) notifier: NotifierKind,
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
