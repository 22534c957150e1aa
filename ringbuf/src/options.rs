//! [`SegmentOptions`]: what creating or opening any ring's segment takes,
//! whatever the ring (embedded in [`SpscOptions`](crate::spsc::SpscOptions)
//! and [`MpmcOptions`](crate::mpmc::MpmcOptions)).

use std::time::Duration;

use crate::wait::{NotifierKind, WaitPolicy};

/// What every ring's options share: the new segment's permission bits and
/// notifier, how long an opener waits for its creator, and the handle's
/// initial wait policy. Each ring's options embed one and have a builder
/// method for each field.
///
/// ```
/// use std::time::Duration;
/// use shmring::{SegmentOptions, WaitPolicy, mpmc::MpmcOptions, spsc::SpscOptions};
/// let common = SegmentOptions::new().mode(0o640).wait_policy(WaitPolicy::busy_poll());
/// let spsc = SpscOptions::new().segment(common).capacity(1 << 16);
/// let mpmc = MpmcOptions::new().segment(common).slot_count(64);
/// assert_eq!(spsc.segment_options(), mpmc.segment_options());
/// assert_eq!(common.ready_timeout_value(), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentOptions {
    pub(crate) mode: u32,
    pub(crate) ready_timeout: Duration,
    pub(crate) policy: WaitPolicy,
    pub(crate) notifier: NotifierKind,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            mode: 0o600,
            ready_timeout: Duration::from_secs(2),
            policy: WaitPolicy::default(),
            notifier: NotifierKind::Futex,
        }
    }
}

impl SegmentOptions {
    /// Defaults: mode 0600, 2 s ready timeout, default wait policy, futex
    /// notifier.
    pub fn new() -> SegmentOptions {
        SegmentOptions::default()
    }
    segment_option_setters!(self, self);
    /// The configured ready timeout.
    pub fn ready_timeout_value(&self) -> Duration {
        self.ready_timeout
    }
    /// The configured wait policy.
    pub fn wait_policy_value(&self) -> WaitPolicy {
        self.policy
    }
    /// The configured permission bits.
    pub fn mode_value(&self) -> u32 {
        self.mode
    }
}

/// The builder methods of [`SegmentOptions`], written once for it and for
/// each ring's options (which embed one as `segment`): `$opts` is the
/// expression that reaches the `SegmentOptions` from `self`.
macro_rules! segment_option_setters {
    // A ring's options, which embed a `SegmentOptions` at `$opts`: the setters, and the
    // whole of it at once.
    ($self:ident, $opts:expr, embedded) => {
        $crate::options::segment_option_setters!($self, $opts);
        /// Replace everything [`SegmentOptions`](crate::SegmentOptions) covers at once.
        pub fn segment(mut $self, segment: $crate::options::SegmentOptions) -> Self {
            $opts = segment;
            $self
        }
        /// What every ring's options have: mode, ready timeout, wait policy, notifier.
        pub fn segment_options(&$self) -> $crate::options::SegmentOptions {
            $opts
        }
    };
    ($self:ident, $opts:expr) => {
        /// Permission bits for a newly created segment (default 0o600).
        pub fn mode(mut $self, mode: u32) -> Self {
            $opts.mode = mode;
            $self
        }
        /// How long an opener waits for a creator to finish initialising
        /// (default 2 s).
        pub fn ready_timeout(mut $self, t: std::time::Duration) -> Self {
            $opts.ready_timeout = t;
            $self
        }
        /// Initial wait policy of the handle (changeable later).
        pub fn wait_policy(mut $self, p: $crate::wait::WaitPolicy) -> Self {
            $opts.policy = p;
            $self
        }
        /// How parked handles sleep and are woken, for a newly created segment
        /// (default [`NotifierKind::Futex`](crate::wait::NotifierKind::Futex)).
        /// Recorded in the header; every handle, whatever its own options,
        /// uses what the segment's header says, so this has no effect when
        /// opening an existing segment.
        pub fn notifier(mut $self, kind: $crate::wait::NotifierKind) -> Self {
            $opts.notifier = kind;
            $self
        }
        /// The configured notifier.
        pub fn notifier_kind(&$self) -> $crate::wait::NotifierKind {
            $opts.notifier
        }
    };
}
pub(crate) use segment_option_setters;
