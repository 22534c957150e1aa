//! [`SpscOptions`]: how to create or open an SPSC ring.

use crate::header;
use crate::options::{SegmentOptions, segment_option_setters};

/// How to create or open an SPSC ring: its capacity, the producer's demote
/// setting, and what every ring's options have ([`SegmentOptions`]).
///
/// ```
/// let opts = shmring::spsc::SpscOptions::new().capacity(1 << 16).mode(0o640);
/// assert_eq!(opts.capacity_bytes(), 65536);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SpscOptions {
    pub(super) capacity: u64,
    pub(crate) segment: SegmentOptions,
    pub(super) demote: bool,
    /// Record type of a typed ring (set by `typed`), checked before a role is claimed.
    pub(crate) record: Option<header::RecordType>,
}

impl Default for SpscOptions {
    fn default() -> Self {
        SpscOptions { capacity: 1 << 20, segment: SegmentOptions::default(), demote: false, record: None }
    }
}

impl SpscOptions {
    /// Defaults: 1 MiB capacity, and [`SegmentOptions`]' defaults (mode
    /// 0600, 2 s ready timeout, default wait policy, futex notifier).
    pub fn new() -> SpscOptions {
        SpscOptions::default()
    }
    /// Data region size in bytes: a power of two from 4 KiB to 2 GiB.
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }
    segment_option_setters!(self, self.segment, embedded);
    /// Initial demote setting of a producer (default off; changeable later
    /// with [`Producer::set_demote`](crate::spsc::Producer::set_demote), which
    /// explains it). Consumers ignore it.
    pub fn demote(mut self, on: bool) -> Self {
        self.demote = on;
        self
    }
    /// The configured capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity
    }
}
