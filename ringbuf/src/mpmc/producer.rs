//! The producing end of an MPMC ring: grant, commit, send, batches.

use std::time::Duration;

use super::ends::Producer;
use super::handle::{Claim, Side};
use super::shared::{Ec, PREFETCH_AHEAD};
use crate::error::{Error, Result};
use crate::wait::Deadline;

/// A slot claimed by a producer; write the payload through
/// `DerefMut<Target = [u8]>` (all [`Producer::slot_size`] bytes), then
/// [`Grant::commit`] the length used. Dropping it uncommitted publishes an
/// empty slot that consumers skip, so an abandoned grant never blocks them.
#[must_use = "dropping a grant uncommitted publishes an empty slot"]
pub struct Grant<'a> {
    p: &'a mut Producer,
    pos: u64,
    done: bool,
}

impl Producer {
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
                    Claim::Held { .. } | Claim::Unjudged => {}
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

    #[inline]
    pub(crate) fn send_with(&mut self, data: &[u8], deadline: Deadline) -> Result<()> {
        // The common case, inlined: a free slot, claimed at the first try.
        if data.len() <= self.core.sh.slot_size
            && let Some(pos) = self.core.try_claim_one(Side::Enq)
        {
            self.core.sh.prefetch_for_write(pos + PREFETCH_AHEAD);
            self.write(pos, data);
            self.core.commit_slot(pos, data.len(), false);
            self.core.clear_claim(Side::Enq);
            self.core.ctl().not_empty.notify();
            return Ok(());
        }
        self.send_slow(data, deadline)
    }

    /// [`Producer::send_with`] when the first try did not claim a slot (or
    /// the message does not fit): wait until `deadline`, and report errors.
    #[inline(never)]
    fn send_slow(&mut self, data: &[u8], deadline: Deadline) -> Result<()> {
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
        // SAFETY: check_len bounded data.len() by the slot size, so the bytes are inside the slot; we claimed
        // it and have not committed it, so nobody else touches them.
        unsafe { self.core.sh.region.bytes_mut(off, data.len()) }.copy_from_slice(data);
    }

    /// Send one message (at most [`Producer::slot_size`] bytes), waiting for
    /// a free slot per the wait policy.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `data` is longer than a slot; otherwise
    /// as [`Producer::grant`].
    #[inline]
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data, Deadline::Never)
    }

    /// [`Producer::send`] without waiting.
    ///
    /// # Errors
    /// As [`Producer::send`], plus [`Error::WouldBlock`] if the ring is full.
    #[inline]
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
        // SAFETY: the payload of a slot is slot_size bytes inside the region (stride >= 16 + slot_size); we
        // claimed the slot and have not committed it.
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

impl std::fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpmc::Grant").field("position", &self.pos).finish_non_exhaustive()
    }
}
