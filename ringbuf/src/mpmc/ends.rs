//! The MPMC handle: one participant of a ring, a producer or a consumer
//! ([`Handle`], with the role as a type parameter). What both roles can do
//! is written once here; `producer.rs` and `consumer.rs` add each role's
//! own calls.

use std::marker::PhantomData;

use super::handle::Core;
use super::open::{core_from_segment, create_core, open_core, open_core_with, open_or_create_core};
use super::options::MpmcOptions;
use super::shared::Stats;
use crate::error::Result;
use crate::segment::{Location, Segment};
#[cfg(loom)]
use crate::sync::Ordering;
use crate::wait::WaitPolicy;

/// One participant of an MPMC ring: it holds an entry of the participant
/// table for its whole life, in the role `R` ([`ProducerRole`] or
/// [`ConsumerRole`]). Use it through its two names, [`Producer`] and
/// [`Consumer`]; the calls below are the ones both roles have.
pub struct Handle<R> {
    pub(super) core: Core,
    role: PhantomData<fn() -> R>,
}

/// The role of a [`Producer`]: sends.
#[derive(Debug)]
pub enum ProducerRole {}

/// The role of a [`Consumer`]: receives.
#[derive(Debug)]
pub enum ConsumerRole {}

/// A producing handle of an MPMC ring. Any number of producers (in any
/// processes) may send concurrently; each message goes to exactly one
/// consumer.
///
/// ```
/// # fn main() -> shmring::Result<()> {
/// use shmring::Location;
/// use shmring::mpmc::{Consumer, MpmcOptions, Producer};
/// let loc = Location::shm(format!("doc-mpmc-producer-{}", std::process::id()));
/// let mut tx = Producer::create(&loc, &MpmcOptions::new().slot_size(16).slot_count(4))?;
/// let mut rx = Consumer::open(&loc)?;
/// loc.unlink()?;
///
/// tx.send(b"hello")?;
/// let mut g = tx.grant()?;              // zero-copy: the whole slot, in place
/// g[..5].copy_from_slice(b"world");
/// g.commit(5)?;
/// assert_eq!(tx.send_batch(&[b"a", b"b", b"c"])?, 2); // only 2 slots were free
///
/// assert_eq!(&*rx.recv()?.unwrap(), b"hello");
/// assert_eq!(&*rx.recv()?.unwrap(), b"world");
/// let mut got = Vec::new();
/// rx.recv_batch(8, |m| got.push(m.to_vec()))?;
/// assert_eq!(got, [b"a".to_vec(), b"b".to_vec()]);
/// # Ok(()) }
/// ```
pub type Producer = Handle<ProducerRole>;

/// A consuming handle of an MPMC ring. Any number of consumers (in any
/// processes) may receive concurrently; each message goes to exactly one of
/// them, and messages from one producer arrive in the order it sent them.
/// See [`Producer`] for an example.
pub type Consumer = Handle<ConsumerRole>;

impl<R> Handle<R> {
    pub(super) fn from_core(core: Core) -> Self {
        Handle { core, role: PhantomData }
    }

    /// Set how blocking calls wait.
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.core.policy = policy;
    }

    /// Largest message in bytes.
    pub fn slot_size(&self) -> usize {
        self.core.sh.slot_size
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.core.sh.slots as usize
    }

    /// The segment's name, as used in error messages.
    pub fn name(&self) -> &str {
        &self.core.sh.name
    }

    /// The ring's counters and loss statistics (shared by every handle).
    pub fn stats(&self) -> Stats {
        self.core.sh.stats()
    }

    /// Close the ring for everyone: later sends fail with
    /// [`Error::Closed`]; consumers receive what is left, then `Ok(None)`.
    /// A send racing with the close either lands before it (and is
    /// received) or fails.
    pub fn close_ring(&self) {
        self.core.sh.close();
    }

    /// Whether some handle closed the ring.
    pub fn is_closed(&self) -> bool {
        self.core.sh.is_closed()
    }

    /// Whether an earlier call found the ring corrupted: every later
    /// call fails.
    pub fn is_poisoned(&self) -> bool {
        self.core.health.poisoned
    }

    /// Leave after an error: detach, leaving this handle's participant
    /// entry marked aborted with `reason` (cut to 64 bytes), which
    /// `shmring inspect` shows until the entry is reused. The ring stays
    /// open for every other handle. Dropping a handle whose last call
    /// failed (or that found the ring corrupted, or whose thread is
    /// panicking) does the same with the error as the reason; dropping
    /// it otherwise just detaches.
    pub fn abort(mut self, reason: &str) {
        self.core.health.failure = Some(reason.to_owned());
    }

    /// Recover every slot left claimed by a dead process, wherever it is
    /// (waiters recover the slots they need by themselves; this finds the
    /// rest, e.g. after a run). Returns how many were recovered. Also
    /// takes back the waiter registration of every process that was
    /// killed while parked, which would otherwise make every later
    /// notify pay for a wake-up call (attaching in a dead process's
    /// entry does that too).
    ///
    /// # Errors
    /// [`Error::Corrupted`] if the ring's counters are impossible.
    pub fn recover_dead(&mut self) -> Result<usize> {
        self.core.recover_dead()
    }

    /// Attach another producer to the same mapping (a new participant
    /// entry, e.g. for another thread).
    ///
    /// # Errors
    /// [`Error::TooManyParticipants`] if the table is full.
    pub fn new_producer(&self) -> Result<Producer> {
        Ok(Handle::from_core(Core::attach(self.core.sh.clone(), self.core.process(), self.core.policy)?))
    }

    /// Attach a consumer to the same mapping.
    ///
    /// # Errors
    /// [`Error::TooManyParticipants`] if the table is full.
    pub fn new_consumer(&self) -> Result<Consumer> {
        Ok(Handle::from_core(Core::attach(self.core.sh.clone(), self.core.process(), self.core.policy)?))
    }

    /// Create a new ring at `loc` and attach to it.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad
    /// slot size or count, [`Error::Io`].
    pub fn create(loc: &Location, opts: &MpmcOptions) -> Result<Self> {
        Ok(Handle::from_core(create_core(loc, opts)?))
    }

    /// Open an existing ring at `loc` (any geometry) and attach to it.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotReady`], [`Error::BadMagic`],
    /// [`Error::VersionMismatch`], [`Error::KindMismatch`] (an SPSC
    /// segment), [`Error::Corrupted`], [`Error::TooManyParticipants`],
    /// [`Error::Io`].
    pub fn open(loc: &Location) -> Result<Self> {
        Ok(Handle::from_core(open_core(loc)?))
    }

    /// Open the ring at `loc`, creating it with `opts` if it does not
    /// exist, and attach to it.
    ///
    /// # Errors
    /// As `create` and `open`, plus [`Error::InvalidArgument`] if the
    /// existing ring's slot size or count differs from `opts`.
    pub fn open_or_create(loc: &Location, opts: &MpmcOptions) -> Result<Self> {
        Ok(Handle::from_core(open_or_create_core(loc, opts)?))
    }

    /// `create` for a ring typed with `ty` (see `typed`).
    pub(crate) fn create_typed(loc: &Location, opts: &MpmcOptions, ty: crate::header::RecordType) -> Result<Self> {
        Ok(Handle::from_core(create_core(loc, &opts.typed(ty))?))
    }

    /// `open` checking the ring is typed with `ty` before attaching.
    pub(crate) fn open_typed(loc: &Location, ty: crate::header::RecordType) -> Result<Self> {
        Ok(Handle::from_core(open_core_with(loc, &MpmcOptions::default().typed(ty))?))
    }

    /// `open_or_create` for a ring typed with `ty`.
    pub(crate) fn open_or_create_typed(
        loc: &Location,
        opts: &MpmcOptions,
        ty: crate::header::RecordType,
    ) -> Result<Self> {
        Ok(Handle::from_core(open_or_create_core(loc, &opts.typed(ty))?))
    }

    /// Attach to an already mapped segment (e.g. a memfd received from
    /// another process, see [`create_memfd`](super::create_memfd)).
    ///
    /// # Errors
    /// As `open`.
    pub fn attach(seg: Segment) -> Result<Self> {
        Ok(Handle::from_core(core_from_segment(seg, &MpmcOptions::default(), false)?))
    }

    /// Under loom: this handle's "process" dies now. It keeps whatever
    /// it claimed, never touches the ring again, and is reported dead to
    /// recoverers; the wake-up a real waiter gets from its park timeout
    /// is modelled by a notify.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn loom_die(&mut self) {
        self.core.dead = true;
        // Release: pairs with the Acquire load in `Shared::is_alive`.
        self.core.sh.dead[self.core.pid as usize - 1].store(1, Ordering::Release);
        self.core.ctl().not_empty.notify();
        self.core.ctl().not_full.notify();
    }
}

impl<R> std::fmt::Debug for Handle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = std::any::type_name::<R>().rsplit("::").next().unwrap_or("?");
        f.debug_struct("mpmc::Handle")
            .field("role", &role)
            .field("segment", &self.core.sh.name)
            .field("entry", &self.core.me)
            .field("slot_size", &self.core.sh.slot_size)
            .field("slot_count", &self.core.sh.slots)
            .field("poisoned", &self.core.health.poisoned)
            .finish_non_exhaustive()
    }
}
