//! The consuming end of an SPSC ring: recv in place, batches, end of stream.

use super::options::SpscOptions;
use super::shared::{Role, Shared, create_role, open_or_create_role, open_role, shared_from_segment};
use crate::error::{Error, Result};
use crate::liveness::ProcessId;
use crate::ring::Health;
use crate::segment::{Location, Segment};
use crate::sync::Ordering;
use crate::wait::{Doorbell, Registration, WaitPolicy};

/// The consuming end of an SPSC ring. See [`Producer`] for an example, and
/// for how a stream ends.
///
/// Dropping the consumer closes its end (the producer's later sends fail
/// with [`Error::Closed`]); [`Consumer::abort`], or dropping it while its
/// last call had failed, aborts it ([`Error::PeerAborted`] for the
/// producer).
///
/// [`Producer`]: super::Producer
pub struct Consumer {
    pub(super) sh: Shared,
    /// Private read position.
    pub(super) head: u64,
    /// Last value stored to the shared head.
    pub(super) published: u64,
    /// The rest of the run being received, if any.
    pub(super) run: Run,
    pub(super) policy: WaitPolicy,
    /// Poisoned, or the last call failed: then drop aborts.
    pub(super) health: Health,
    /// The producer's identity, copied the first time it was seen attached.
    pub(super) producer: Option<ProcessId>,
    /// Our position when we attached.
    pub(super) attach_head: u64,
    /// CPU pause hints after each empty poll: set while `recv_batch` waits.
    pub(super) backoff: u32,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("spsc::Consumer")
            .field("segment", &self.sh.name)
            .field("capacity", &self.sh.capacity)
            .field("head", &self.head)
            .field("poisoned", &self.health.poisoned)
            .finish_non_exhaustive()
    }
}

impl Role for Consumer {
    fn attach_with(seg: Segment, opts: &SpscOptions) -> Result<Consumer> {
        let sh = shared_from_segment(seg, opts)?;
        sh.claim(&sh.ctl().consumer, "consumer")?;
        // Relaxed: only the consumer role writes `head`, and we hold it.
        let head = sh.ctl().head.load(Ordering::Relaxed);
        let mut c = Consumer {
            sh,
            head,
            published: head,
            run: Run::default(),
            policy: opts.segment.policy,
            health: Health::default(),
            producer: None,
            attach_head: head,
            backoff: 0,
        };
        if head % 8 != 0 {
            return Err(c.poison(format!("consumer position {head} not 8-byte aligned")));
        }
        Ok(c)
    }

    fn name(&self) -> &str {
        &self.sh.name
    }
}

/// Pause hints between two polls of an empty ring inside `recv_batch`.
pub(super) const BATCH_BACKOFF: u32 = 8;

/// A record found at the consumer's position: the payload's offset, its
/// length, and how far `head` moves when it is released (0 for every record
/// of a run but the last: the run is released as a whole).
pub(super) type Found = (usize, usize, u64);

/// The records of a run not yet received: `left` payloads of `len` bytes,
/// the next at offset `next`, `stride` bytes apart; `total` is the size of
/// the whole run, released with its last record.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Run {
    pub(super) next: usize,
    pub(super) left: u32,
    pub(super) len: usize,
    pub(super) stride: usize,
    pub(super) total: u64,
}

impl Consumer {
    /// Create a new ring at `loc` and attach as its consumer.
    ///
    /// # Errors
    /// As [`Producer::create`](super::Producer::create).
    pub fn create(loc: &Location, opts: &SpscOptions) -> Result<Consumer> {
        create_role(loc, opts)
    }

    /// Open an existing ring at `loc` and attach as its consumer.
    ///
    /// # Errors
    /// As [`Producer::open`](super::Producer::open).
    pub fn open(loc: &Location) -> Result<Consumer> {
        open_role(loc)
    }

    /// Open the ring at `loc`, creating it with `opts` if it does not exist,
    /// and attach as its consumer.
    ///
    /// # Errors
    /// As [`Producer::open_or_create`](super::Producer::open_or_create).
    pub fn open_or_create(loc: &Location, opts: &SpscOptions) -> Result<Consumer> {
        open_or_create_role(loc, opts)
    }

    /// Attach as consumer to an already mapped segment.
    ///
    /// # Errors
    /// As [`Producer::open`](super::Producer::open).
    pub fn attach(seg: Segment) -> Result<Consumer> {
        Self::attach_with(seg, &SpscOptions::default())
    }

    /// Set how blocking calls wait.
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Ring `bell` (the producer's) whenever a release of room finds the
    /// producer registered as a waiter, besides the eventcount's own
    /// wake-up, and when this end closes or aborts. `None` stops ringing.
    /// See [`Doorbell`].
    pub fn set_doorbell(&mut self, bell: Option<Doorbell>) {
        self.sh.doorbell = bell;
    }

    /// Register as waiting for records, for a caller that sleeps on its own
    /// [`Doorbell`] instead of in [`Consumer::recv`]: while the returned
    /// registration lives, every publish of the producer notifies (and rings
    /// the doorbell the producer was given), as does its close or abort.
    /// Re-check with [`Consumer::try_recv`] after registering and before
    /// sleeping, or a record published in between is missed.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use shmring::{Location, SpscOptions, spsc::{Consumer, Producer}, wait::Doorbell};
    /// let loc = Location::shm(format!("doc-doorbell-{}", std::process::id()));
    /// let mut tx = Producer::create(&loc, &SpscOptions::new().capacity(4096))?;
    /// let mut rx = Consumer::open(&loc)?;
    /// loc.unlink()?;
    /// let (bell, ringer) = Doorbell::pair()?; // the consumer keeps one end, the producer's process gets the other
    /// tx.set_doorbell(Some(ringer));
    ///
    /// tx.send(b"early")?;                  // nobody registered: no ring
    /// assert!(!bell.drain());
    /// let reg = rx.register_waiter();      // about to sleep: register...
    /// assert!(rx.try_recv()?.is_some());   // ...re-check: "early" was there
    /// tx.send(b"late")?;                   // registered: the producer rings
    /// assert!(bell.drain());
    /// drop(reg);
    /// # Ok(()) }
    /// ```
    pub fn register_waiter(&self) -> Registration {
        self.sh.register(&self.sh.ctl().data_ready)
    }

    /// Data region size in bytes.
    pub fn capacity(&self) -> u64 {
        self.sh.capacity
    }

    /// The segment's name, as used in error messages.
    pub fn name(&self) -> &str {
        &self.sh.name
    }

    pub(super) fn poison(&mut self, what: String) -> Error {
        let e = self.sh.poison(what);
        self.health.poisoned_by(e)
    }

    /// Remember how a call ended, for `Drop` (see `Health::note`).
    #[inline]
    pub(super) fn note<T>(&mut self, r: Result<T>) -> Result<T> {
        self.health.note(r)
    }

    /// Whether an earlier call found the ring corrupted: every later call
    /// fails, and dropping the handle aborts its end.
    pub fn is_poisoned(&self) -> bool {
        self.health.poisoned
    }
}
