//! The participant table (attach, detach) and recovery of slots whose
//! claimant died. The reasoning is in the module docs of `mpmc`.

use std::sync::Arc;

use super::handle::{Core, Side, Stuck};
use super::layout::{
    CLAIM_NONE, MPMC_MAX_PARTICIPANTS, PARKED_NONE, PARKED_NOT_EMPTY, PARKED_NOT_FULL, PARTICIPANT_ABORTED,
    PARTICIPANT_ATTACHED, PARTICIPANT_ATTACHING, PARTICIPANT_FREE, Participant, participant_fields, participant_word,
};
use super::shared::{CLAIM_RETRIES, SKIP, Shared};
#[cfg(not(loom))]
use super::shared::{STUCK_GRACE, STUCK_POLL, STUCK_POLL_MAX};
use crate::error::{Error, Result};
use crate::liveness::ProcessId;
use crate::sync::Ordering;
use crate::wait::WaitPolicy;

#[cfg(not(loom))]
use std::time::Instant;

impl Core {
    /// Take a participant entry for process `me`: a free one, else one
    /// whose holder aborted or is dead.
    pub(super) fn attach(sh: Arc<Shared>, me: ProcessId, policy: WaitPolicy) -> Result<Core> {
        let ctl = sh.ctl();
        // First pass: free entries only (no liveness checks, which read
        // /proc); second pass: entries of aborted or dead holders (so that
        // `inspect` shows why an aborted one left for as long as it can).
        let passes = (0..2).flat_map(|pass| ctl.participants.iter().enumerate().map(move |(i, e)| (pass, i, e)));
        for (pass, i, e) in passes {
            // Acquire: pairs with the Release stores and CASes of the word in
            // `attach` and `detach`, so the start time read below is the
            // holder's (or newer).
            let w = e.word.load(Ordering::Acquire);
            let (pid, generation, state) = participant_fields(w);
            let free = match state {
                PARTICIPANT_FREE => true,
                _ if pass == 0 => false,
                // Half-attached: only its attacher (the pid in the word) may
                // finish it; take it over only once that process is dead.
                PARTICIPANT_ATTACHING => !sh.is_alive(pid, 0),
                // Acquire: as above.
                PARTICIPANT_ATTACHED => !sh.is_alive(pid, e.start_time.load(Ordering::Acquire)),
                PARTICIPANT_ABORTED => true,
                _ => false, // garbage: leave it alone
            };

            if !free {
                continue;
            }
            let taking = participant_word(me.pid, generation.wrapping_add(1), PARTICIPANT_ATTACHING);
            // Acquire on success: pairs with the Release of the previous
            // holder's last stores; the exact-word CAS fails if anyone took
            // the entry over since we read it.
            if e.word.compare_exchange(w, taking, Ordering::Acquire, Ordering::Relaxed).is_err() {
                continue;
            }
            // The entry is ours: if its dead holder died parked (and no
            // reaper took its registration back already), take it back.
            // Acquire: pairs with the Release stores of the mark in
            // `block_on` (`ParkMark`).
            let parked = e.parked.swap(PARKED_NONE, Ordering::Acquire);
            if state != PARTICIPANT_FREE {
                release_parked(&sh, parked);
            }
            // AcqRel: the Release half pairs with the Acquire load of the
            // high-water mark in `live_claimant` (through our later Release
            // counter CAS): recoverers scan our entry before we claim.
            ctl.shared.high_water.fetch_max(i as u32 + 1, Ordering::AcqRel);
            // Release (all four): pair with the Acquire loads in
            // `live_claimant`, like every store to a claim record.
            e.enq_start.store(CLAIM_NONE, Ordering::Release);
            e.deq_start.store(CLAIM_NONE, Ordering::Release);
            e.enq_count.store(0, Ordering::Release);
            e.deq_count.store(0, Ordering::Release);
            // Release: pairs with the Acquire loads of the start time.
            e.start_time.store(me.start_time, Ordering::Release);
            let attached = participant_word(me.pid, generation.wrapping_add(1), PARTICIPANT_ATTACHED);
            // Release: pairs with the Acquire loads of the word in `attach`
            // and `live_claimant`; publishes the start time and the cleared
            // claim records with our identity.
            if e.word.compare_exchange(taking, attached, Ordering::Release, Ordering::Relaxed).is_err() {
                continue; // taken over under us (only garbage does that): try the next entry
            }
            return Ok(Core {
                sh,
                me: i,
                pid: me.pid,
                word: attached,
                policy,
                health: Default::default(),
                claim_count: 0,
                last_pos: 0,
                stuck: None,
                #[cfg(not(loom))]
                next_classify: Instant::now(),
                quick_look: false,
                #[cfg(loom)]
                dead: false,
            });
        }
        Err(Error::TooManyParticipants { segment: sh.name.clone(), max: MPMC_MAX_PARTICIPANTS })
    }

    /// The process this handle belongs to, for a sibling handle.
    pub(super) fn process(&self) -> ProcessId {
        // Under loom, "processes" are the fake pids of `loom_ring`.
        if cfg!(loom) { ProcessId { pid: self.pid, start_time: 0 } } else { ProcessId::current() }
    }

    /// Give our entry back: free, or marked aborted with the reason if the
    /// handle ends after an error (see `Health::ending_reason`).
    pub(super) fn detach(&mut self) {
        self.clear_claim(Side::Enq);
        self.clear_claim(Side::Deq);
        let why = self.health.ending_reason();
        let e = self.entry();
        // Relaxed: the word only ever changes by CAS; if it is not ours
        // (garbage), leave it.
        let w = e.word.load(Ordering::Relaxed);
        let (pid, generation, state) = participant_fields(w);
        if pid == self.pid && state == PARTICIPANT_ATTACHED {
            let next = match &why {
                Some(reason) => {
                    e.reason.store(reason);
                    participant_word(pid, generation, PARTICIPANT_ABORTED)
                }
                None => participant_word(0, generation, PARTICIPANT_FREE),
            };
            // Release: pairs with the Acquire loads of the word in `attach`
            // and `live_claimant`: our cleared claims (and the reason) come
            // before FREE or ABORTED.
            let _ = e.word.compare_exchange(w, next, Ordering::Release, Ordering::Relaxed);
        }
    }

    /// Whether a live participant's claim record covers `pos` on `side`.
    /// The caller must have loaded that side's counter with Acquire and seen
    /// it past `pos`.
    fn live_claimant(&self, side: Side, pos: u64) -> bool {
        let ctl = self.ctl();
        // Acquire: pairs with the AcqRel `fetch_max` in `attach`.
        let hw = (ctl.shared.high_water.load(Ordering::Acquire) as usize).min(MPMC_MAX_PARTICIPANTS);
        for e in &ctl.participants[..hw] {
            let (start_w, count_w) = side.claim_words(e);
            // Acquire (both): pair with the Release stores in `set_claim` and
            // `clear_claim`: a record that is over shows its sequence stores.
            let start = start_w.load(Ordering::Acquire);
            if start == CLAIM_NONE {
                continue;
            }
            let count = count_w.load(Ordering::Acquire);
            if pos.wrapping_sub(start) >= count {
                continue;
            }
            // Acquire (all three): pair with the Release stores in `attach`:
            // the identity is the claimant's or a later holder's, and with
            // the word unchanged around it the start time is that holder's.
            let w = e.word.load(Ordering::Acquire);
            let start_time = e.start_time.load(Ordering::Acquire);
            if e.word.load(Ordering::Acquire) != w {
                return true; // changing hands: look again later
            }
            let (pid, _, state) = participant_fields(w);
            let alive = match state {
                // Its holder cleared its claims before leaving.
                PARTICIPANT_FREE | PARTICIPANT_ABORTED => false,
                PARTICIPANT_ATTACHED => self.sh.is_alive(pid, start_time),
                _ => self.sh.is_alive(pid, 0),
            };
            if alive {
                return true;
            }
        }
        false
    }

    /// Recover a slot whose claimant may be dead: `claimant` is the side that
    /// claimed position `pos`, `seq` the slot's sequence as seen. Returns
    /// whether this call recovered it.
    fn recover(&mut self, claimant: Side, pos: u64, seq: u64) -> bool {
        if self.live_claimant(claimant, pos) {
            return false;
        }
        let sh = &*self.sh;
        let st = &sh.ctl().shared;
        match claimant {
            Side::Enq => {
                // AcqRel: the Acquire half orders our claim-record reads
                // before it; the Release half pairs with the consumers'
                // Acquire sequence loads (they skip the slot).
                if sh.seq(pos).compare_exchange(pos, (pos + 1) | SKIP, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                    return false;
                }
                st.lost_producer_died.fetch_add(1, Ordering::Relaxed);
                st.recovered.fetch_add(1, Ordering::Relaxed);
                sh.ctl().not_empty.notify();
            }
            Side::Deq => {
                // AcqRel: as above; the Release half pairs with the next
                // producer's Acquire sequence load.
                let free = pos + sh.slots;
                if sh.seq(pos).compare_exchange(seq, free, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                    return false;
                }
                if seq & SKIP == 0 {
                    st.lost_consumer_died.fetch_add(1, Ordering::Relaxed);
                }
                st.recovered.fetch_add(1, Ordering::Relaxed);
                sh.ctl().not_full.notify();
            }
        }
        true
    }

    /// The slot we need next is claimed by `claimant` at `pos` and not
    /// finished. Checks the claimant once the slot has been stuck for
    /// [`STUCK_GRACE`], then every [`STUCK_POLL`]; returns whether it
    /// recovered the slot (try again at once).
    pub(super) fn on_held(&mut self, claimant: Side, pos: u64, seq: u64) -> bool {
        #[cfg(not(loom))]
        {
            let now = Instant::now();
            match &mut self.stuck {
                Some(st) if st.pos == pos && st.seq == seq => {
                    if now < st.next_scan {
                        return false;
                    }
                }
                _ => {
                    self.stuck = Some(Stuck { pos, seq, next_scan: now + STUCK_GRACE, poll: STUCK_POLL });
                    return false;
                }
            }
        }
        #[cfg(loom)]
        {
            // Time does not pass in a model: check at once, every time.
            self.stuck = Some(Stuck { pos, seq });
        }
        let done = self.recover(claimant, pos, seq);
        if done {
            self.stuck = None;
        } else {
            // The claimant is alive: check again later, a little later each time.
            #[cfg(not(loom))]
            if let Some(st) = &mut self.stuck {
                st.next_scan = Instant::now() + st.poll;
                st.poll = (st.poll * 2).min(STUCK_POLL_MAX);
            }
        }
        done
    }

    /// Recover every slot held by a dead claimant, wherever it is in the
    /// ring; returns how many.
    pub(super) fn recover_dead(&mut self) -> Result<usize> {
        self.check_poison()?;
        let n = self.sh.slots;
        let sh = self.sh.clone();
        let ctl = sh.ctl();
        // Read the counters with `dequeue` stable around `enqueue`, so they
        // are consistent: d <= e <= d + n.
        let mut stable = None;
        for _ in 0..CLAIM_RETRIES {
            // Acquire (all three): pair with the handles' Release counter
            // CASes, so their claim records are visible to `live_claimant`.
            let d = ctl.dequeue.load(Ordering::Acquire);
            let e = ctl.enqueue.load(Ordering::Acquire) & !crate::header::MPMC_CLOSED;
            if ctl.dequeue.load(Ordering::Acquire) == d {
                stable = Some((d, e));
                break;
            }
        }
        let Some((d, e)) = stable else { return Ok(0) };
        if e >= crate::header::MPMC_POSITION_LIMIT || d > e || e - d > n {
            return Err(self.poison(format!("counters impossible: enqueue {e}, dequeue {d}")));
        }
        let mut done = 0;
        // Positions a consumer may still hold: the last lap before `d`.
        for t in d.saturating_sub(n)..d {
            // Relaxed: only compared; the recovery CAS decides.
            let s = sh.seq(t).load(Ordering::Relaxed);
            if s & !SKIP == t + 1 && self.recover(Side::Deq, t, s) {
                done += 1;
            }
        }
        // Positions a producer may still hold: claimed but not committed.
        for t in d..e {
            // Relaxed: as above.
            if sh.seq(t).load(Ordering::Relaxed) == t && self.recover(Side::Enq, t, t) {
                done += 1;
            }
        }
        self.reap_dead();
        Ok(done)
    }

    /// Take back the eventcount registrations of holders that died parked.
    /// Their entries stay as they are, so that `inspect` and `ls` still show
    /// the dead processes.
    fn reap_dead(&self) {
        let ctl = self.ctl();
        // Acquire: pairs with the AcqRel `fetch_max` in `attach`.
        let hw = (ctl.shared.high_water.load(Ordering::Acquire) as usize).min(MPMC_MAX_PARTICIPANTS);
        for e in &ctl.participants[..hw] {
            // Only an entry marked parked can need this; reading the mark
            // first spares a /proc read per live entry. Acquire: as in `attach`.
            if e.parked.load(Ordering::Acquire) == PARKED_NONE {
                continue;
            }
            // Acquire: as in `attach`.
            let w = e.word.load(Ordering::Acquire);
            let (pid, _, state) = participant_fields(w);
            let dead = match state {
                PARTICIPANT_ATTACHING => !self.sh.is_alive(pid, 0),
                // Acquire: as in `attach`.
                PARTICIPANT_ATTACHED => !self.sh.is_alive(pid, e.start_time.load(Ordering::Acquire)),
                _ => false,
            };
            if dead {
                reap_parked(&self.sh, e, w);
            }
        }
    }
}

/// Take back the registration of the dead holder of entry `e` (whose word
/// was `w`), if it died parked.
///
/// The mark is cleared with a CAS, so two reapers take it back once. A
/// process attaching to the entry meanwhile swaps the mark out after its
/// take-over (in `attach`), so the registration is taken back by whichever
/// comes first: this reaper counts it only if the word is still `w` after
/// its CAS (no take-over yet: the mark was the dead holder's, and the
/// attacher will find none). If a take-over lands between the CAS and that
/// re-read, neither counts it, and the count stays one too high: a wake-up
/// call too many per notify, never a missed one.
fn reap_parked(sh: &Shared, e: &Participant, w: u64) {
    // Acquire: as in `attach`.
    let parked = e.parked.load(Ordering::Acquire);
    if parked == PARKED_NONE {
        return;
    }
    // Acquire: pairs with the Release stores of the mark in `block_on`.
    if e.parked.compare_exchange(parked, PARKED_NONE, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return;
    }
    // Acquire: pairs with the Release CASes of the word in `attach`.
    if e.word.load(Ordering::Acquire) == w {
        release_parked(sh, parked);
    }
}

/// Take back the eventcount registration of a holder that died parked
/// ([`Participant::parked`] was `parked`).
fn release_parked(sh: &Shared, parked: u32) {
    match parked {
        PARKED_NOT_EMPTY => sh.ctl().not_empty.deregister_dead(),
        PARKED_NOT_FULL => sh.ctl().not_full.deregister_dead(),
        _ => {} // none, or garbage: nothing we can take back
    }
}
