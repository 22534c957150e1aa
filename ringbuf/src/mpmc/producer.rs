//! The producing end of an MPMC ring: grant, commit, send, batches.

use super::{
    Claim, Consumer, Core, Ec, MpmcOptions, Side, Stats, core_from_segment, create_core, open_core, open_or_create_core,
};
use crate::error::{Error, Result};
use crate::segment::{Location, Segment};
#[cfg(loom)]
use crate::sync::Ordering;
use crate::wait::{Deadline, WaitPolicy};
use std::time::Duration;

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
pub struct Producer {
    pub(super) core: Core,
}

/// A slot claimed by a producer; write the payload through
/// `DerefMut<Target = [u8]>` (all [`Producer::slot_size`] bytes), then
/// [`Grant::commit`] the length used. Dropping it uncommitted publishes an
/// empty slot that consumers skip, so an abandoned grant never blocks them.
pub struct Grant<'a> {
    p: &'a mut Producer,
    pos: u64,
    done: bool,
}

/// The methods producers and consumers share.
macro_rules! handle_common {
    ($T:ident) => {
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
            Ok(Producer { core: Core::attach(self.core.sh.clone(), self.core.process(), self.core.policy)? })
        }

        /// Attach a consumer to the same mapping.
        ///
        /// # Errors
        /// [`Error::TooManyParticipants`] if the table is full.
        pub fn new_consumer(&self) -> Result<Consumer> {
            Ok(Consumer { core: Core::attach(self.core.sh.clone(), self.core.process(), self.core.policy)? })
        }

        /// Create a new ring at `loc` and attach to it.
        ///
        /// # Errors
        /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad
        /// slot size or count, [`Error::Io`].
        pub fn create(loc: &Location, opts: &MpmcOptions) -> Result<$T> {
            Ok($T { core: create_core(loc, opts)? })
        }

        /// Open an existing ring at `loc` (any geometry) and attach to it.
        ///
        /// # Errors
        /// [`Error::NotFound`], [`Error::NotReady`], [`Error::BadMagic`],
        /// [`Error::VersionMismatch`], [`Error::KindMismatch`] (an SPSC
        /// segment), [`Error::Corrupted`], [`Error::TooManyParticipants`],
        /// [`Error::Io`].
        pub fn open(loc: &Location) -> Result<$T> {
            Ok($T { core: open_core(loc)? })
        }

        /// Open the ring at `loc`, creating it with `opts` if it does not
        /// exist, and attach to it.
        ///
        /// # Errors
        /// As `create` and `open`, plus [`Error::InvalidArgument`] if the
        /// existing ring's slot size or count differs from `opts`.
        pub fn open_or_create(loc: &Location, opts: &MpmcOptions) -> Result<$T> {
            Ok($T { core: open_or_create_core(loc, opts)? })
        }

        /// `create` for a ring typed with `ty` (see `typed`).
        pub(crate) fn create_typed(loc: &Location, opts: &MpmcOptions, ty: crate::header::RecordType) -> Result<$T> {
            Ok($T { core: crate::mpmc::create_core(loc, &opts.typed(ty))? })
        }

        /// `open` checking the ring is typed with `ty` before attaching.
        pub(crate) fn open_typed(loc: &Location, ty: crate::header::RecordType) -> Result<$T> {
            Ok($T { core: crate::mpmc::open_core_with(loc, &MpmcOptions::default().typed(ty))? })
        }

        /// `open_or_create` for a ring typed with `ty`.
        pub(crate) fn open_or_create_typed(
            loc: &Location,
            opts: &MpmcOptions,
            ty: crate::header::RecordType,
        ) -> Result<$T> {
            Ok($T { core: crate::mpmc::open_or_create_core(loc, &opts.typed(ty))? })
        }

        /// Attach to an already mapped segment (e.g. a memfd received from
        /// another process, see [`create_memfd`](super::create_memfd)).
        ///
        /// # Errors
        /// As `open`.
        pub fn attach(seg: Segment) -> Result<$T> {
            Ok($T { core: core_from_segment(seg, &MpmcOptions::default(), false)? })
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
    };
}
pub(super) use handle_common;

impl Producer {
    handle_common!(Producer);

    fn check_len(&mut self, len: usize) -> Result<()> {
        if len > self.core.sh.slot_size {
            let e = Error::InvalidArgument(format!(
                "message of {len} bytes does not fit a slot of {} bytes",
                self.core.sh.slot_size
            ));
            return self.core.note(Err(e));
        }
        Ok(())
    }

    /// Claim up to `want` consecutive slots, waiting until `deadline`.
    fn claim(&mut self, want: u64, deadline: Deadline) -> Result<(u64, u64)> {
        let want = want.clamp(1, self.core.sh.slots);
        self.core.wait(Ec::NotFull, deadline, |core| {
            // Twice at most: once more right after recovering a slot.
            for _ in 0..2 {
                match core.claim_enq(want)? {
                    Claim::Got { pos, n } => {
                        core.stuck = None;
                        return Ok(Some((pos, n)));
                    }
                    Claim::Closed => return Err(Error::Closed(core.sh.name.clone())),
                    Claim::Held { pos, seq } if core.on_held(Side::Deq, pos, seq) => continue,
                    Claim::Held { .. } => {}
                    Claim::Wait | Claim::End => core.stuck = None,
                }
                break;
            }
            Ok(None)
        })
    }

    fn grant_inner(&mut self, deadline: Deadline) -> Result<Grant<'_>> {
        let (pos, _) = self.claim(1, deadline)?;
        Ok(Grant { p: self, pos, done: false })
    }

    /// Claim a slot to write in place, waiting for one per the wait policy.
    ///
    /// # Errors
    /// [`Error::Closed`] if the ring is closed; [`Error::Corrupted`] if the
    /// shared counters or sequence numbers are impossible.
    pub fn grant(&mut self) -> Result<Grant<'_>> {
        self.grant_inner(Deadline::Never)
    }

    /// [`Producer::grant`] without waiting.
    ///
    /// # Errors
    /// As [`Producer::grant`], plus [`Error::WouldBlock`] if the ring is full.
    pub fn try_grant(&mut self) -> Result<Grant<'_>> {
        self.grant_inner(Deadline::Now)
    }

    /// [`Producer::grant`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Producer::grant`], plus [`Error::Timeout`].
    pub fn grant_timeout(&mut self, timeout: Duration) -> Result<Grant<'_>> {
        self.grant_inner(Deadline::After(timeout).fixed())
    }

    pub(crate) fn send_with(&mut self, data: &[u8], deadline: Deadline) -> Result<()> {
        self.check_len(data.len())?;
        let (pos, _) = self.claim(1, deadline)?;
        self.write(pos, data);
        self.core.commit_slot(pos, data.len(), false);
        self.core.clear_claim(Side::Enq);
        self.core.ctl().not_empty.notify();
        Ok(())
    }

    /// Copy `data` into the claimed slot of `pos`.
    #[inline]
    fn write(&mut self, pos: u64, data: &[u8]) {
        let off = self.core.sh.slot_off(pos) + crate::header::MPMC_SLOT_META as usize;
        // SAFETY: check_len bounded data.len() by the slot size, so the bytes are inside the slot; we claimed it and have not committed it, so nobody else touches them.
        unsafe { self.core.sh.region.bytes_mut(off, data.len()) }.copy_from_slice(data);
    }

    /// Send one message (at most [`Producer::slot_size`] bytes), waiting for
    /// a free slot per the wait policy.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `data` is longer than a slot; otherwise
    /// as [`Producer::grant`].
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data, Deadline::Never)
    }

    /// [`Producer::send`] without waiting.
    ///
    /// # Errors
    /// As [`Producer::send`], plus [`Error::WouldBlock`] if the ring is full.
    pub fn try_send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data, Deadline::Now)
    }

    /// [`Producer::send`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Producer::send`], plus [`Error::Timeout`].
    pub fn send_timeout(&mut self, data: &[u8], timeout: Duration) -> Result<()> {
        self.send_with(data, Deadline::After(timeout).fixed())
    }

    /// Send a prefix of `msgs`, in order: wait (per the wait policy) until
    /// at least one slot is free, then claim as many consecutive free slots
    /// as there are (up to `msgs.len()`) with one CAS, fill them and publish
    /// them. Returns how many messages were sent; call again with the rest.
    /// An empty `msgs` returns 0 at once.
    ///
    /// # Errors
    /// As [`Producer::send`], for any message of `msgs` (checked before
    /// anything is sent).
    pub fn send_batch(&mut self, msgs: &[&[u8]]) -> Result<usize> {
        if msgs.is_empty() {
            return Ok(0);
        }
        for m in msgs {
            self.check_len(m.len())?;
        }
        let (pos, k) = self.claim(msgs.len() as u64, Deadline::Never)?;
        for (i, m) in msgs.iter().take(k as usize).enumerate() {
            self.write(pos + i as u64, m);
            self.core.commit_slot(pos + i as u64, m.len(), false);
        }
        self.core.clear_claim(Side::Enq);
        self.core.ctl().not_empty.notify();
        Ok(k as usize)
    }
}

impl Grant<'_> {
    /// Publish the first `len` bytes of the slot as one message.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `len` exceeds the slot size; the slot is
    /// then published empty, as if the grant had been dropped.
    pub fn commit(mut self, len: usize) -> Result<()> {
        let size = self.p.core.sh.slot_size;
        if len > size {
            self.finish(0, true);
            return Err(Error::InvalidArgument(format!("commit of {len} bytes in a slot of {size} bytes")));
        }
        self.finish(len, false);
        Ok(())
    }

    /// Under loom: the producer's "process" dies holding this slot,
    /// claimed and not committed (see `Producer::loom_die`).
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn loom_die(mut self) {
        self.done = true;
        self.p.loom_die();
    }

    fn finish(&mut self, len: usize, skip: bool) {
        self.done = true;
        let core = &self.p.core;
        core.commit_slot(self.pos, len, skip);
        core.clear_claim(Side::Enq);
        core.ctl().not_empty.notify();
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(0, true);
        }
    }
}

impl std::ops::Deref for Grant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let sh = &self.p.core.sh;
        let off = sh.slot_off(self.pos) + crate::header::MPMC_SLOT_META as usize;
        // SAFETY: the payload of a slot is slot_size bytes inside the region (stride >= 16 + slot_size); we claimed the slot and have not committed it.
        unsafe { sh.region.bytes(off, sh.slot_size) }
    }
}

impl std::ops::DerefMut for Grant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let sh = &self.p.core.sh;
        let off = sh.slot_off(self.pos) + crate::header::MPMC_SLOT_META as usize;
        // SAFETY: as for Deref; `&mut self` makes this the only live slice.
        unsafe { sh.region.bytes_mut(off, sh.slot_size) }
    }
}
