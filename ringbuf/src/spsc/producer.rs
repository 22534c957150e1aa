//! The producing end of an SPSC ring: grant, commit, stage, flush.

use super::format::RECORD_HEADER;
use super::options::SpscOptions;
use super::shared::{Role, Shared, create_role, open_or_create_role, open_role, shared_from_segment};
use crate::error::{Error, Result};
use crate::liveness::ProcessId;
use crate::ring::Health;
use crate::segment::{Location, Segment};
use crate::sync::Ordering;
use crate::wait::{Doorbell, Registration, WaitPolicy};

/// The producing end of an SPSC ring.
///
/// ```
/// # fn main() -> shmring::Result<()> {
/// use shmring::{Location, SpscOptions, spsc::{Producer, Consumer}};
/// let loc = Location::shm(format!("doc-producer-{}", std::process::id()));
/// let mut tx = Producer::create(&loc, &SpscOptions::new().capacity(4096))?;
/// let mut rx = Consumer::open(&loc)?;
/// loc.unlink()?; // the name can go as soon as both ends are attached
///
/// tx.send(b"hello")?;
/// let mut g = tx.grant(5)?;           // zero-copy: write in place
/// g.copy_from_slice(b"world");
/// g.commit();
/// drop(tx);                           // closes the stream
///
/// assert_eq!(&*rx.recv()?.unwrap(), b"hello");
/// assert_eq!(&*rx.recv()?.unwrap(), b"world");
/// assert!(rx.recv()?.is_none());      // end of stream
/// # Ok(()) }
/// ```
///
/// # How the stream ends
///
/// - [`Producer::close`], or dropping the producer: the consumer receives
///   everything, then end of stream (`Ok(None)`).
/// - [`Producer::abort`], or dropping the producer while its last call had
///   failed (or it found the ring corrupted, or its thread is panicking): the
///   consumer receives everything committed, then [`Error::PeerAborted`]
///   with the reason, never `Ok(None)`.
/// - The process dies: the consumer receives everything committed, then
///   [`Error::PeerDied`].
pub struct Producer {
    pub(super) sh: Shared,
    /// Private write position (includes staged records).
    pub(super) tail: u64,
    /// Position of the first record not yet published: its header word is
    /// held back in `pending` until [`Producer::flush`].
    pub(super) published: u64,
    /// Header word of the record at `published`, if one is staged.
    pub(super) pending: u64,
    /// The last staged record, whose header is not written yet because
    /// records of the same length staged after it join it as a run.
    pub(super) open: Option<OpenRun>,
    /// Records finished since the last publish.
    pub(super) staged: u32,
    /// Last consumer position read.
    pub(super) cached_head: u64,
    pub(super) policy: WaitPolicy,
    /// Poisoned, or the last call failed: then drop aborts.
    pub(super) health: Health,
    /// The consumer's identity, copied the first time it was seen attached.
    pub(super) consumer: Option<ProcessId>,
    /// The consumer's position when we attached.
    pub(super) attach_head: u64,
    /// Push each record published alone towards the shared cache
    /// ([`Producer::set_demote`]).
    pub(super) demote: bool,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("spsc::Producer")
            .field("segment", &self.sh.name)
            .field("capacity", &self.sh.capacity)
            .field("tail", &self.tail)
            .field("published", &self.published)
            .field("poisoned", &self.health.poisoned)
            .finish_non_exhaustive()
    }
}

/// The last staged record (or run of same-length records) before its header
/// is written: at position `pos`, `count` payloads of `len` bytes each.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpenRun {
    pub(super) pos: u64,
    pub(super) len: usize,
    pub(super) count: u32,
}

impl Role for Producer {
    fn attach_with(seg: Segment, opts: &SpscOptions) -> Result<Producer> {
        let sh = shared_from_segment(seg, opts)?;
        sh.claim(&sh.ctl().producer, "producer")?;
        let mut p = Producer {
            sh,
            tail: 0,
            published: 0,
            pending: 0,
            open: None,
            staged: 0,
            cached_head: 0,
            policy: opts.segment.policy,
            health: Health::default(),
            consumer: None,
            attach_head: 0,
            demote: opts.demote,
        };
        // Relaxed: only the producer role writes `tail`, and we hold it.
        let tail = p.sh.ctl().tail.load(Ordering::Relaxed);
        // Acquire: pairs with the consumer's Release store of `head`.
        let head = p.sh.ctl().head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > p.sh.capacity || !tail.is_multiple_of(8) || !head.is_multiple_of(8) {
            return Err(p.poison(format!("positions impossible at attach: head {head}, tail {tail}")));
        }
        (p.tail, p.published, p.cached_head, p.attach_head) = (tail, tail, head, head);
        Ok(p)
    }

    fn name(&self) -> &str {
        &self.sh.name
    }
}

impl Producer {
    /// Create a new ring at `loc` and attach as its producer.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`], [`Error::Io`].
    pub fn create(loc: &Location, opts: &SpscOptions) -> Result<Producer> {
        create_role(loc, opts)
    }

    /// Open an existing ring at `loc` and attach as its producer.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotReady`], [`Error::BadMagic`],
    /// [`Error::VersionMismatch`], [`Error::KindMismatch`],
    /// [`Error::Corrupted`], [`Error::RoleTaken`], [`Error::Stale`],
    /// [`Error::Closed`], [`Error::Io`].
    pub fn open(loc: &Location) -> Result<Producer> {
        open_role(loc)
    }

    /// Open the ring at `loc`, creating it with `opts` if it does not exist,
    /// and attach as its producer. Whichever side comes first creates.
    ///
    /// # Errors
    /// As [`Producer::create`] and [`Producer::open`].
    pub fn open_or_create(loc: &Location, opts: &SpscOptions) -> Result<Producer> {
        open_or_create_role(loc, opts)
    }

    /// Attach as producer to an already mapped segment (e.g. a memfd
    /// received from another process).
    ///
    /// # Errors
    /// As [`Producer::open`].
    pub fn attach(seg: Segment) -> Result<Producer> {
        Self::attach_with(seg, &SpscOptions::default())
    }

    /// Set how blocking calls wait.
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Ring `bell` (the ringing end of the consumer's doorbell) whenever a
    /// publish finds the consumer
    /// registered as a waiter, besides the eventcount's own wake-up: for a
    /// consumer that sleeps on its doorbell rather than in
    /// [`Consumer::recv`](crate::spsc::Consumer::recv) (an async task).
    /// `None` stops ringing. See [`Doorbell`].
    pub fn set_doorbell(&mut self, bell: Option<Doorbell>) {
        self.sh.doorbell = bell;
    }

    /// Register as waiting for room, for a caller that sleeps on its own
    /// [`Doorbell`] instead of in [`Producer::grant`]: while the returned
    /// registration lives, every release of the consumer notifies (and
    /// rings the doorbell the consumer was given). Re-check with
    /// [`Producer::try_grant`] after registering and before sleeping, or a
    /// release that came in between is missed.
    pub fn register_waiter(&self) -> Registration {
        self.sh.register(&self.sh.ctl().space_free)
    }

    /// Data region size in bytes.
    pub fn capacity(&self) -> u64 {
        self.sh.capacity
    }

    /// Largest payload one record can carry, in bytes: `capacity - 16` (a
    /// record header, and the end marker that always follows the last record).
    pub fn max_record_len(&self) -> usize {
        (self.sh.capacity - 2 * RECORD_HEADER) as usize
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
    /// fails, and dropping the handle aborts the stream.
    pub fn is_poisoned(&self) -> bool {
        self.health.poisoned
    }
}
