//! [`RingOptions`]: how to create or open an SPSC ring.

use std::time::Duration;

use crate::header::{self};
use crate::wait::{NotifierKind, WaitPolicy};

/// How to create a ring.
///
/// ```
/// let opts = shmring::RingOptions::new().capacity(1 << 16).mode(0o640);
/// assert_eq!(opts.capacity_bytes(), 65536);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RingOptions {
    pub(super) capacity: u64,
    pub(super) mode: u32,
    pub(super) ready_timeout: Duration,
    pub(super) policy: WaitPolicy,
    pub(super) notifier: NotifierKind,
    pub(super) demote: bool,
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
