//! The consuming end of an MPMC ring: receive in place, batches, end of
//! stream.

use std::time::Duration;

use super::ends::Consumer;
use super::handle::{Claim, Core, Side};
use super::shared::Ec;
use crate::error::Result;
use crate::wait::Deadline;

/// A message received in place; derefs to its payload bytes. Dropping it
/// frees the slot for producers.
///
/// The bytes live in shared memory: a misbehaving process could change them
/// while you read. Copy them out before validating if peers are untrusted.
pub struct Record<'a> {
    c: &'a mut Consumer,
    pos: u64,
    off: usize,
    len: usize,
}

/// Releases claimed slots when dropped, even if a callback panics.
struct Release<'a> {
    core: &'a mut Core,
    pos: u64,
    n: u64,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.core.finish_deq(self.pos, self.n);
    }
}

impl Core {
    /// Give back `pos..pos + n` after reading them.
    #[inline]
    fn finish_deq(&mut self, pos: u64, n: u64) {
        for i in 0..n {
            self.release_slot(pos + i);
        }
        self.clear_claim(Side::Deq);
        self.ctl().not_full.notify();
    }
}

impl Consumer {
    /// Claim up to `want` consecutive ready slots, waiting until `deadline`;
    /// `None` at end of stream.
    fn claim(&mut self, want: u64, deadline: Deadline) -> Result<Option<(u64, u64)>> {
        let want = want.clamp(1, self.core.sh.slots);
        self.core.wait(Ec::NotEmpty, deadline, |core| {
            // Twice at most: once more right after recovering a slot.
            for _ in 0..2 {
                match core.claim_deq(want)? {
                    Claim::Got { pos, n } => {
                        core.stuck = None;
                        return Ok(Some(Some((pos, n))));
                    }
                    Claim::End => {
                        core.stuck = None;
                        return Ok(Some(None));
                    }
                    Claim::Held { pos, seq } if core.on_held(Side::Enq, pos, seq) => continue,
                    Claim::Held { .. } | Claim::Unjudged => {}
                    Claim::Wait | Claim::Closed => core.stuck = None,
                }
                break;
            }
            Ok(None)
        })
    }

    /// The next message: (position, payload offset, length), skipping
    /// positions that carry none; `None` at end of stream.
    fn next(&mut self, deadline: Deadline) -> Result<Option<(u64, usize, usize)>> {
        loop {
            let Some((pos, _)) = self.claim(1, deadline)? else {
                return Ok(None);
            };
            match self.core.slot_message(pos) {
                Ok(Some((off, len))) => return Ok(Some((pos, off, len))),
                Ok(None) => self.core.finish_deq(pos, 1),
                Err(e) => {
                    self.core.finish_deq(pos, 1);
                    return Err(e);
                }
            }
        }
    }

    fn record(&mut self, r: Option<(u64, usize, usize)>) -> Option<Record<'_>> {
        r.map(|(pos, off, len)| Record { c: self, pos, off, len })
    }

    /// Receive the next message in place, waiting per the wait policy.
    /// `Ok(None)` means end of stream: the ring was closed and everything
    /// sent before has been received.
    ///
    /// # Errors
    /// [`Error::Corrupted`] if the shared counters, sequence numbers or
    /// length words are impossible.
    #[inline]
    pub fn recv(&mut self) -> Result<Option<Record<'_>>> {
        self.recv_with(Deadline::Never)
    }

    /// A receive waiting until `deadline`.
    #[inline]
    pub(crate) fn recv_with(&mut self, deadline: Deadline) -> Result<Option<Record<'_>>> {
        // The common case, inlined: a message ready, claimed at the first try.
        if let Some(pos) = self.core.try_claim_one(Side::Deq) {
            match self.core.slot_message(pos) {
                Ok(Some((off, len))) => return Ok(Some(Record { c: self, pos, off, len })),
                // Changed under us (only a hostile writer does that): give
                // the slot back and let the general path judge.
                Ok(None) => self.core.finish_deq(pos, 1),
                Err(e) => {
                    self.core.finish_deq(pos, 1);
                    return self.core.note(Err(e));
                }
            }
        }
        self.recv_slow(deadline)
    }

    /// [`Consumer::recv_with`] when the first try did not claim a message:
    /// wait until `deadline`, skip empty slots, and report errors.
    #[inline(never)]
    fn recv_slow(&mut self, deadline: Deadline) -> Result<Option<Record<'_>>> {
        let r = self.next(deadline.fixed())?;
        Ok(self.record(r))
    }

    /// [`Consumer::recv`] without waiting.
    ///
    /// # Errors
    /// As [`Consumer::recv`], plus [`Error::WouldBlock`] if the ring is empty
    /// (and not closed).
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Record<'_>>> {
        self.recv_with(Deadline::Now)
    }

    /// [`Consumer::recv`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Consumer::recv`], plus [`Error::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Record<'_>>> {
        self.recv_with(Deadline::After(timeout))
    }

    /// Wait for at least one message, then claim up to `max` (at least 1)
    /// consecutive ready slots with one CAS, pass their messages to `f` in
    /// order, and free the slots. Returns how many messages were passed;
    /// 0 means end of stream.
    ///
    /// # Errors
    /// As [`Consumer::recv`]. Messages already passed to `f` stay consumed.
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize> {
        let want = max.max(1) as u64;
        loop {
            let Some((pos, n)) = self.claim(want, Deadline::Never)? else {
                return Ok(0);
            };
            let guard = Release { core: &mut self.core, pos, n };
            let mut passed = 0;
            for i in 0..n {
                if let Some((off, len)) = guard.core.slot_message(pos + i)? {
                    // SAFETY: slot_message checked off + len lies inside the slot's payload; we claimed the slot and
                    // release it only when `guard` drops.
                    f(unsafe { guard.core.sh.region.bytes(off, len) });
                    passed += 1;
                }
            }
            drop(guard);
            if passed > 0 {
                return Ok(passed);
            }
        }
    }
}

impl std::ops::Deref for Record<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: slot_message checked the payload lies inside the slot; the slot is ours until `drop`.
        unsafe { self.c.core.sh.region.bytes(self.off, self.len) }
    }
}

impl Drop for Record<'_> {
    #[inline]
    fn drop(&mut self) {
        self.c.core.finish_deq(self.pos, 1);
    }
}

impl std::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mpmc::Record").field("position", &self.pos).field("len", &self.len).finish_non_exhaustive()
    }
}
