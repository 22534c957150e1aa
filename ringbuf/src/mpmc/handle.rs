//! The state of one handle and the slot protocol: claim positions, commit
//! and release slots, wait. See the `mpmc` module docs for the reasoning.

use std::sync::Arc;
use std::time::Duration;

use super::layout::{
    CLAIM_NONE, MPMC_CLOSED, MPMC_POSITION_LIMIT, MpmcControl, PARKED_NOT_EMPTY, PARKED_NOT_FULL, Participant,
};
#[cfg(loom)]
use super::shared::STUCK_POLL;
use super::shared::{CLAIM_RETRIES, Ec, SKIP, Shared};
use crate::error::{Error, Result};
use crate::header;
use crate::ring::Health;
use crate::sync::{AtomicU64, Ordering};
use crate::wait::{Attempt, Deadline, ParkMark, WaitPolicy, block_on};

#[cfg(not(loom))]
use std::time::Instant;

/// Which counter a claim is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// Producers, on `enqueue`.
    Enq,
    /// Consumers, on `dequeue`.
    Deq,
}

impl Side {
    /// This side's position counter: `enqueue` (with its closed bit) or `dequeue`.
    #[inline]
    pub(super) fn counter(self, ctl: &MpmcControl) -> &AtomicU64 {
        match self {
            Side::Enq => &ctl.enqueue,
            Side::Deq => &ctl.dequeue,
        }
    }

    pub(super) fn claim_words(self, p: &Participant) -> (&AtomicU64, &AtomicU64) {
        match self {
            Side::Enq => (&p.enq_start, &p.enq_count),
            Side::Deq => (&p.deq_start, &p.deq_count),
        }
    }
}

/// What a claim attempt found.
pub(super) enum Claim {
    /// Positions `pos..pos + n` are ours.
    Got { pos: u64, n: u64 },
    /// Nothing to claim yet: the ring is full (producer) or empty (consumer).
    Wait,
    /// The slot needed next is claimed by someone who has not finished: on
    /// the consumers' side for a producer, on the producers' side for a
    /// consumer. `pos` is the claimed position, `seq` the slot's sequence.
    Held { pos: u64, seq: u64 },
    /// Consumers only: the ring is closed and drained.
    End,
    /// The slot needed next is not ready, and the other side's counter was
    /// not read to say why (see `Core::classify_due`). For a producer the
    /// slot still holds the message of the previous lap: full, or held by a
    /// consumer. For a consumer nothing is committed there yet: empty, held
    /// by a producer, or (if the ring was closed) the end. Waiters keep
    /// whatever they know of a stuck slot.
    Unjudged,
    /// Producers only: the ring is closed.
    Closed,
}

/// A slot the waiter found claimed, and when to next check its claimant.
#[derive(Clone, Copy)]
// Under loom only its presence matters (time does not pass in a model).
#[cfg_attr(loom, allow(dead_code))]
pub(super) struct Stuck {
    pub(super) pos: u64,
    pub(super) seq: u64,
    #[cfg(not(loom))]
    pub(super) next_scan: Instant,
    /// How long after `next_scan`'s check the next one comes.
    #[cfg(not(loom))]
    pub(super) poll: Duration,
}

/// How often a producer polling a full ring reads the consumers' counter,
/// and a consumer polling an empty ring the producers' counter (see
/// `Core::classify_due`): far below [`STUCK_GRACE`](super::STUCK_GRACE), so
/// a slot held by a dead claimant is found as soon as before.
#[cfg(not(loom))]
const CLASSIFY_EVERY: Duration = Duration::from_micros(20);

/// The state one handle keeps, for either role.
pub(super) struct Core {
    pub(super) sh: Arc<Shared>,
    /// Index of our participant entry.
    pub(super) me: usize,
    /// Our pid as recorded in the entry.
    pub(super) pid: u32,
    /// Our entry's word as we attached it: checked at every liveness tick.
    pub(super) word: u64,
    pub(super) policy: WaitPolicy,
    /// Poisoned, or the last call failed: then drop leaves the entry
    /// aborted, with the reason.
    pub(super) health: Health,
    /// Last count stored in our entry's claim count word.
    pub(super) claim_count: u64,
    /// Last value seen of our side's counter (counters never go back).
    pub(super) last_pos: u64,
    pub(super) stuck: Option<Stuck>,
    /// When a producer that finds the ring full next reads the consumers'
    /// counter to tell "full" from "held", and a consumer that finds it
    /// empty the producers' counter (see `classify_due`).
    #[cfg(not(loom))]
    pub(super) next_classify: Instant,
    /// Set by `wait` for the attempts that may skip reading the other side's
    /// counter (consumers; see `claim_deq`): every attempt but a liveness
    /// tick, a complete one (before a sleep, or the last at the deadline),
    /// and the one attempt of a call that does not wait.
    pub(super) quick_look: bool,
    /// Under loom: this handle's "process" died; do nothing on drop.
    #[cfg(loom)]
    pub(super) dead: bool,
}

impl Core {
    #[inline]
    pub(super) fn ctl(&self) -> &MpmcControl {
        self.sh.ctl()
    }

    #[inline]
    pub(super) fn entry(&self) -> &Participant {
        &self.sh.ctl().participants[self.me]
    }

    #[inline]
    pub(super) fn check_poison(&self) -> Result<()> {
        if self.health.poisoned {
            return Err(Health::poisoned_error(&self.sh.name));
        }
        Ok(())
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

    /// Checks made at every liveness tick while waiting: the header words
    /// fixed at creation and the flags word (see `FixedWords::check`), both
    /// eventcounts' notifier words, and our own participant word (nobody may
    /// change it while we hold the entry).
    fn check_shared(&mut self) -> Result<()> {
        if let Some(h) = self.sh.header() {
            if let Err(what) = self.sh.fixed.check(h) {
                return Err(self.poison(what));
            }
            if let Err(what) = header::check_eventcounts(h, self.sh.ctl().eventcounts()) {
                return Err(self.poison(what));
            }
        }
        // Relaxed: only we change our word while we hold the entry.
        let w = self.entry().word.load(Ordering::Relaxed);
        if w != self.word {
            let what = format!("participant entry {} changed from {:#x} to {w:#x} while held", self.me, self.word);
            return Err(self.poison(what));
        }
        Ok(())
    }

    /// Load our side's counter (Acquire) and check it. For producers the
    /// closed bit is returned apart.
    #[inline]
    pub(super) fn load_pos(&mut self, side: Side) -> Result<(u64, bool)> {
        let c = side.counter(self.sh.ctl());
        // Acquire: pairs with the Release CAS of the handle that moved the
        // counter, so its claim record is visible (see `live_claimant`).
        let raw = c.load(Ordering::Acquire);
        let closed = side == Side::Enq && raw & MPMC_CLOSED != 0;
        let p = if side == Side::Enq { raw & !MPMC_CLOSED } else { raw };
        if p >= MPMC_POSITION_LIMIT || p < self.last_pos {
            let name = if side == Side::Enq { "enqueue" } else { "dequeue" };
            return Err(self.poison(format!("{name} counter {p} impossible (last seen {})", self.last_pos)));
        }
        self.last_pos = p;
        Ok((p, closed))
    }

    /// The common case of claiming one position on `side`, small enough to
    /// inline: the position the counter shows, if its slot is ready now
    /// (free for a producer; holding a message, not a skip, for a consumer)
    /// and our CAS wins. `None` for everything else (a poisoned or failed
    /// handle, a closed ring, a counter out of range, a slot not ready, a
    /// lost race), which the general path (`claim_enq`, `claim_deq`)
    /// handles and reports. The same loads, claim record and CAS as there,
    /// in the same order.
    #[inline]
    pub(super) fn try_claim_one(&mut self, side: Side) -> Option<u64> {
        if !self.health.clear() {
            return None;
        }
        // Acquire: as in `load_pos`. A closed bit makes the value exceed
        // the limit: the general path reports it.
        let p = side.counter(self.sh.ctl()).load(Ordering::Acquire);
        if p >= MPMC_POSITION_LIMIT || p < self.last_pos {
            return None;
        }
        // Acquire: as in `claim_enq` (the slot was freed) and `claim_deq`
        // (the message is visible).
        let s = self.sh.seq(p).load(Ordering::Acquire);
        let ready = match side {
            Side::Enq => s == p,
            Side::Deq => s == p + 1,
        };
        if !ready {
            return None;
        }
        self.set_claim(side, p, 1);
        // Release: as in `claim_enq` and `claim_deq`, releases our claim
        // record to recoverers.
        if side.counter(self.sh.ctl()).compare_exchange(p, p + 1, Ordering::Release, Ordering::Relaxed).is_err() {
            self.clear_claim(side);
            return None;
        }
        self.last_pos = p + 1;
        if self.stuck.is_some() {
            self.stuck = None;
        }
        Some(p)
    }

    /// Record in our entry that we are about to claim `pos..pos + n`.
    #[inline]
    pub(super) fn set_claim(&mut self, side: Side, pos: u64, n: u64) {
        let (start, count) = side.claim_words(&self.sh.ctl().participants[self.me]);
        if n != self.claim_count {
            // Release: pairs with the Acquire load in `live_claimant`; a
            // recoverer that reads this count (made after our previous claim
            // was cleared) also sees that claim's sequence stores.
            count.store(n, Ordering::Release);
            self.claim_count = n;
        }
        // Release: pairs with the Acquire load in `live_claimant`, as above
        // for the previous claim's sequence stores. (The new record itself
        // is published by the Release CAS that follows.)
        start.store(pos, Ordering::Release);
    }

    /// Record that we claim nothing; call after the last sequence store of
    /// the claimed range.
    #[inline]
    pub(super) fn clear_claim(&self, side: Side) {
        let (start, _) = side.claim_words(self.entry());
        // Release: pairs with the Acquire load in `live_claimant`: a
        // recoverer that reads the cleared record sees our sequence stores,
        // so its recovery CAS fails.
        start.store(CLAIM_NONE, Ordering::Release);
    }

    /// Producers: try to claim up to `want` (1..=slots) consecutive free slots.
    pub(super) fn claim_enq(&mut self, want: u64) -> Result<Claim> {
        self.check_poison()?;
        let n = self.sh.slots;
        for _ in 0..CLAIM_RETRIES {
            let (q, closed) = self.load_pos(Side::Enq)?;
            if closed {
                return Ok(Claim::Closed);
            }
            // Acquire: pairs with the Release store that freed the slot (a
            // consumer's release, a recovery, or initialisation): reads of
            // the old payload happen before our writes.
            let s = self.sh.seq(q).load(Ordering::Acquire);
            if s == q {
                let mut k = 1;
                // Acquire: as above, for each further slot.
                while k < want && self.sh.seq(q + k).load(Ordering::Acquire) == q + k {
                    k += 1;
                }
                self.set_claim(Side::Enq, q, k);
                // Release: releases our claim record to recoverers (which
                // load the counter with Acquire; later claims' CASes continue
                // the release sequence). Fails if the ring was closed
                // meanwhile (the closed bit is set).
                if self.ctl().enqueue.compare_exchange(q, q + k, Ordering::Release, Ordering::Relaxed).is_ok() {
                    self.last_pos = q + k;
                    return Ok(Claim::Got { pos: q, n: k });
                }
                self.clear_claim(Side::Enq);
                continue;
            }
            // Not free. While the slot still holds the previous lap's message,
            // a producer polling a full ring reads only its sequence word:
            // reading the consumers' counter at every poll would take that
            // line from the consumer about to claim the next message. The
            // counter is read (and the slot's state judged) at most every
            // `CLASSIFY_EVERY`.
            if q >= n && s & !SKIP == q - n + 1 && !self.classify_due() {
                return Ok(Claim::Unjudged);
            }
            // Read the consumers' counter, then ours again: if ours
            // did not move, the sequence and `d` were both read while it was
            // `q`, and the slot's state can be judged.
            // Acquire: pairs with the consumers' Release CAS, so a claim
            // record is visible to `live_claimant`.
            let d = self.ctl().dequeue.load(Ordering::Acquire);
            // Relaxed: the Acquire loads of the sequence and of `dequeue`
            // above already keep this re-read after them.
            if self.ctl().enqueue.load(Ordering::Relaxed) != q {
                continue;
            }
            if d > q || q.saturating_sub(n) > d {
                return Err(self.poison(format!("dequeue counter {d} impossible for enqueue counter {q}")));
            }
            if q >= n && s & !SKIP == q - n + 1 {
                // Message q - n is still in the slot: not taken yet (full),
                // or taken and being read.
                return Ok(if d == q - n { Claim::Wait } else { Claim::Held { pos: q - n, seq: s } });
            }
            if q >= n && s == q - n {
                // The previous lap's producer has not committed yet: full.
                // Consumers recover the slot if it died.
                return Ok(Claim::Wait);
            }
            let slot = q & (n - 1);
            return Err(self.poison(format!("slot {slot} sequence {s:#x} impossible for enqueue position {q}")));
        }
        Ok(Claim::Wait)
    }

    /// Whether a producer that found the ring full (or a consumer that found
    /// it empty) should now read the other side's counter, to tell a full
    /// (empty) ring from a slot held by a claimant that may have died: at the
    /// first look, then at most every [`CLASSIFY_EVERY`]. Always under loom,
    /// where time does not pass.
    fn classify_due(&mut self) -> bool {
        #[cfg(not(loom))]
        {
            let now = Instant::now();
            if now < self.next_classify {
                return false;
            }
            self.next_classify = now + CLASSIFY_EVERY;
        }
        true
    }

    /// Consumers: try to claim up to `want` (1..=slots) consecutive ready
    /// slots (messages or skips).
    pub(super) fn claim_deq(&mut self, want: u64) -> Result<Claim> {
        self.check_poison()?;
        let n = self.sh.slots;
        for _ in 0..CLAIM_RETRIES {
            let (p, _) = self.load_pos(Side::Deq)?;
            // Acquire: pairs with the producer's Release store of the
            // sequence in `commit_slot` (or a recovery's CAS): the length and
            // payload are visible.
            let s = self.sh.seq(p).load(Ordering::Acquire);
            if s & !SKIP == p + 1 {
                let mut k = 1;
                // Acquire: as above, for each further slot.
                while k < want && self.sh.seq(p + k).load(Ordering::Acquire) & !SKIP == p + k + 1 {
                    k += 1;
                }
                self.set_claim(Side::Deq, p, k);
                // Release: releases our claim record to recoverers (which
                // load the counter with Acquire), as in `claim_enq`.
                if self.ctl().dequeue.compare_exchange(p, p + k, Ordering::Release, Ordering::Relaxed).is_ok() {
                    self.last_pos = p + k;
                    return Ok(Claim::Got { pos: p, n: k });
                }
                self.clear_claim(Side::Deq);
                continue;
            }
            // Not committed yet. While a consumer polls an empty ring, reading
            // the producers' counter at every poll would take that line from
            // the producer about to claim the next position (as in
            // `claim_enq`, the other way round). A quick look reads only the
            // sequence word; the counter is read at most every
            // `CLASSIFY_EVERY`, and at every look that is not quick: each
            // liveness tick, the one before a sleep (so a close, a bit in that
            // counter, notified, is never slept through), the last one at a
            // deadline and the one look of a call that does not wait (which
            // must report the end rather than a timeout). Skipping
            // the read only makes an attempt come back sooner: nothing is
            // claimed or changed.
            if s == p && self.quick_look && !self.classify_due() {
                return Ok(Claim::Unjudged);
            }
            // Read the producers' counter, then ours again (as in
            // `claim_enq`). Acquire: pairs with the producers' Release CAS,
            // so a claim record is visible to `live_claimant`.
            let e_word = self.ctl().enqueue.load(Ordering::Acquire);
            // Relaxed: as in `claim_enq`.
            if self.ctl().dequeue.load(Ordering::Relaxed) != p {
                continue;
            }
            let (e, closed) = (e_word & !MPMC_CLOSED, e_word & MPMC_CLOSED != 0);
            if e < p || e - p > n {
                return Err(self.poison(format!("enqueue counter {e} impossible for dequeue counter {p}")));
            }
            if s == p {
                if e > p {
                    return Ok(Claim::Held { pos: p, seq: s });
                }
            } else if !(p >= n && s & !SKIP == p - n + 1) {
                // (That case: the slot still holds message p - n, being
                // read, so the producer of p cannot have claimed it: empty.)
                let slot = p & (n - 1);
                return Err(self.poison(format!("slot {slot} sequence {s:#x} impossible for dequeue position {p}")));
            }
            // Empty. If the same value of `enqueue` says closed, no position
            // will ever be claimed again: end of stream.
            return Ok(if closed && e == p { Claim::End } else { Claim::Wait });
        }
        Ok(Claim::Wait)
    }

    /// Run `step` until it returns a value, waiting on `which` per the wait
    /// policy until `deadline`. While a needed slot is claimed (`stuck`),
    /// wake-ups come at least as often as its claimant is checked.
    pub(super) fn wait<T>(
        &mut self,
        which: Ec,
        deadline: Deadline,
        step: impl FnMut(&mut Core) -> Result<Option<T>>,
    ) -> Result<T> {
        let r = self.wait_inner(which, deadline, step);
        self.note(r)
    }

    fn wait_inner<T>(
        &mut self,
        which: Ec,
        deadline: Deadline,
        mut step: impl FnMut(&mut Core) -> Result<Option<T>>,
    ) -> Result<T> {
        // The first attempt may look quickly if more attempts follow.
        if let Some(v) = self.look(deadline.waits(), &mut step)? {
            return Ok(v);
        }
        if !deadline.waits() {
            return Err(Error::WouldBlock { full: matches!(which, Ec::NotFull) });
        }
        let until = deadline.until();
        let sh = self.sh.clone();
        let ec = sh.ec(which);
        let parked = &sh.ctl().participants[self.me].parked;
        let value = match which {
            Ec::NotEmpty => PARKED_NOT_EMPTY,
            Ec::NotFull => PARKED_NOT_FULL,
        };
        loop {
            let fast = self.stuck_poll();
            let policy = match fast {
                Some(poll) => self.policy.check_interval(poll.min(self.policy.interval())),
                None => self.policy,
            };
            let got = block_on(
                &policy,
                ec,
                Some(ParkMark { word: parked, value }),
                until,
                || Error::Timeout,
                |poll| {
                    if poll.check {
                        self.check_shared()?;
                    }
                    if let Some(v) = self.look(!poll.check && !poll.complete, &mut step)? {
                        return Ok(Attempt::Ready(Some(v)));
                    }
                    // Switch the wake-up cadence when a claimed slot shows up,
                    // goes away, or its check interval grows. (Under loom time
                    // does not pass: never switch.)
                    if !cfg!(loom) && self.stuck_poll() != fast {
                        return Ok(Attempt::Ready(None));
                    }
                    Ok(Attempt::NotYet)
                },
            )?;
            if let Some(v) = got {
                self.stuck = None;
                return Ok(v);
            }
        }
    }

    /// One attempt of a wait, allowed a quick look (see `quick_look`) or not.
    fn look<T>(&mut self, quick: bool, step: &mut impl FnMut(&mut Core) -> Result<Option<T>>) -> Result<Option<T>> {
        self.quick_look = quick;
        let r = step(self);
        self.quick_look = false;
        r
    }

    /// How often the claimant of the slot we wait on is being checked, if
    /// one is.
    fn stuck_poll(&self) -> Option<Duration> {
        #[cfg(not(loom))]
        return self.stuck.as_ref().map(|s| s.poll);
        #[cfg(loom)]
        return self.stuck.as_ref().map(|_| STUCK_POLL);
    }

    /// Write the length word and publish the slot of `pos` to consumers.
    #[inline]
    pub(super) fn commit_slot(&self, pos: u64, len: usize, skip: bool) {
        let off = self.sh.slot_off(pos);
        // SAFETY: `slot_off` is below `slots * stride`, a multiple of 8, and a slot's stride holds its 16
        // bytes of metadata, so the length word is in bounds.
        unsafe { self.sh.region.store_word(off + 8, len as u64, Ordering::Relaxed) };
        let seq = if skip { (pos + 1) | SKIP } else { pos + 1 };
        // Release: pairs with the consumers' Acquire load of the sequence in
        // `claim_deq`: the length word and payload written before are
        // visible to the consumer that sees it.
        self.sh.seq(pos).store(seq, Ordering::Release);
    }

    /// Give the slot of `pos` back to producers (one lap later).
    #[inline]
    pub(super) fn release_slot(&self, pos: u64) {
        // Release: pairs with the Acquire sequence load in `claim_enq` of the
        // producer of `pos + slots`: our reads of the payload happen before
        // it overwrites them.
        self.sh.seq(pos).store(pos + self.sh.slots, Ordering::Release);
    }

    /// The message in the claimed slot of `pos`: `Some((payload offset,
    /// length))`, or `None` for a skipped position.
    pub(super) fn slot_message(&mut self, pos: u64) -> Result<Option<(usize, usize)>> {
        // Relaxed: we read this value with Acquire before our claim, and only
        // its claimant (us) may change it now.
        let s = self.sh.seq(pos).load(Ordering::Relaxed);
        if s == (pos + 1) | SKIP {
            return Ok(None);
        }
        let off = self.sh.slot_off(pos);
        // SAFETY: as in `commit_slot`.
        let len = unsafe { self.sh.region.load_word(off + 8, Ordering::Relaxed) };
        if s != pos + 1 || len > self.sh.slot_size as u64 {
            return Err(self.poison(format!(
                "claimed slot {} has sequence {s:#x} and length {len} (position {pos}, slot size {})",
                pos & (self.sh.slots - 1),
                self.sh.slot_size
            )));
        }
        Ok(Some((off + header::MPMC_SLOT_META as usize, len as usize)))
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        #[cfg(loom)]
        if self.dead {
            return;
        }
        self.detach();
    }
}
