//! [`Deadline`]: how long one call may wait, the same for every ring.

use std::time::{Duration, Instant};

/// How long a call may wait for its ring: not at all, without bound, for a
/// while, or until an instant. Every blocking call of the SPSC, MPMC and
/// typed handles comes in three forms (`send`, `try_send`,
/// `send_timeout`; `recv`, …) that are this, spelled out.
///
/// A relative wait ([`Deadline::After`]) starts when the call finds it has
/// to wait: the clock is read only then, never on the fast path.
///
/// ```
/// use std::time::Duration;
/// use shmring::wait::Deadline;
/// assert_eq!(Deadline::Now.waits(), false);
/// assert_eq!(Deadline::After(Duration::from_millis(5)).waits(), true);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Do not wait: a call that would have to fails with
    /// [`Error::WouldBlock`](crate::Error::WouldBlock).
    Now,
    /// Wait as long as it takes (per the wait policy; a dead or aborted peer
    /// still ends the wait).
    Never,
    /// Wait at most this long, then fail with
    /// [`Error::Timeout`](crate::Error::Timeout).
    After(Duration),
    /// Wait until this instant, then fail with
    /// [`Error::Timeout`](crate::Error::Timeout).
    At(Instant),
}

impl Deadline {
    /// Whether a call may wait at all.
    pub fn waits(self) -> bool {
        self != Deadline::Now
    }

    /// The same deadline with a relative wait made absolute, starting now:
    /// for a call that may wait several times and must not restart its
    /// clock each time.
    pub(crate) fn fixed(self) -> Deadline {
        match self {
            Deadline::After(d) => Instant::now().checked_add(d).map_or(Deadline::Never, Deadline::At),
            other => other,
        }
    }

    /// The instant the wait ends, read from the clock now for a relative
    /// wait: `None` for [`Deadline::Never`] and [`Deadline::Now`] (check
    /// [`Deadline::waits`] first).
    pub(crate) fn until(self) -> Option<Instant> {
        match self {
            Deadline::Now | Deadline::Never => None,
            Deadline::After(d) => Instant::now().checked_add(d),
            Deadline::At(t) => Some(t),
        }
    }
}
