//! What the other end's role slot says, checked wherever it is read.

use super::layout::{CLOSE_SEAL, ROLE_ABORTED, ROLE_ATTACHED, ROLE_ATTACHING, ROLE_CLOSED, ROLE_FREE, RoleSlot};
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::header::check::check_eventcounts;
use crate::liveness::ProcessId;
use crate::ring::Health;
use crate::sync::Ordering;
use crate::wait::EventCount;

/// What the other side's role slot says (see `Shared::peer`).
pub(super) enum Peer {
    /// Nobody has taken the role yet.
    NotYet,
    /// Attached (and alive, if liveness was checked).
    Attached,
    /// Closed; a producer's seal says it closed at position `at`.
    Closed { at: u64 },
    /// Aborted: the error to report once everything committed is delivered.
    Aborted(Error),
}

impl Shared {
    /// What the other side's role `slot` says, checked: every state value
    /// outside the known set, a step backwards, or an identity other than
    /// the one first seen attached (`seen`, filled in here the first time) is
    /// corruption (`Err` with what is wrong; the caller poisons). A role
    /// still free although the ring `moved` (the other side released or
    /// published something since we attached, so it was there) is too. With
    /// `liveness`, also checks that the holder is alive, on the private copy
    /// of its identity, and that no other process poisoned the segment.
    pub(super) fn peer(
        &self,
        slot: &RoleSlot,
        role: &'static str,
        seen: &mut Option<ProcessId>,
        moved: bool,
        liveness: bool,
    ) -> Result<Peer> {
        if liveness {
            self.check_header()?;
        }
        // Acquire: pairs with the Release stores of the state word in
        // `claim`, `close` and `abort`: the identity, the seal and the
        // reason written before are visible.
        let state = slot.state.load(Ordering::Acquire);
        let id = match state {
            ROLE_FREE | ROLE_ATTACHING => {
                if let Some(was) = seen {
                    return Err(
                        self.corrupt(format!("{role} role state went back to {state} after pid {} attached", was.pid))
                    );
                }
                if moved {
                    return Err(self.corrupt(format!(
                        "{role} role state is {state} (not attached yet), but the ring moved since we attached"
                    )));
                }
                return Ok(Peer::NotYet);
            }
            ROLE_ATTACHED | ROLE_CLOSED | ROLE_ABORTED => {
                // Relaxed: ordered by the Acquire load of the state.
                ProcessId { pid: slot.pid.load(Ordering::Relaxed), start_time: slot.start_time.load(Ordering::Relaxed) }
            }
            other => return Err(self.corrupt(format!("{role} role state word is {other}, not a known state"))),
        };
        let first = *seen.get_or_insert(id);
        if first != id {
            return Err(self.corrupt(format!(
                "{role} role slot now names pid {} (start time {}), but pid {} (start time {}) attached",
                id.pid, id.start_time, first.pid, first.start_time
            )));
        }
        match state {
            ROLE_CLOSED => {
                // Relaxed: ordered by the Acquire load of the state.
                Ok(Peer::Closed { at: slot.seal.load(Ordering::Relaxed) ^ CLOSE_SEAL })
            }
            ROLE_ABORTED => {
                let reason = slot.reason.load().map_err(|what| self.corrupt(format!("{role}'s {what}")))?;
                Ok(Peer::Aborted(Error::PeerAborted { segment: self.name.clone(), role, pid: first.pid, reason }))
            }
            _ if liveness && !first.is_alive() => {
                Err(Error::PeerDied { segment: self.name.clone(), role, pid: first.pid })
            }
            _ => Ok(Peer::Attached),
        }
    }

    /// Checks made at every liveness tick: the header words fixed at
    /// creation are as we opened them, the flags word is clean (see
    /// [`header::FixedWords::check`]), and both eventcounts still name the
    /// segment's notifier.
    pub(super) fn check_header(&self) -> Result<()> {
        let Some(h) = self.header() else { return Ok(()) };
        self.fixed.check(h).map_err(|what| self.corrupt(what))?;
        check_eventcounts(h, self.ctl().eventcounts()).map_err(|what| self.corrupt(what))
    }

    /// `r`, having poisoned the segment and the handle's `health` if it is
    /// a corruption error.
    pub(super) fn poison_on_corruption<T>(&self, health: &mut Health, r: Result<T>) -> Result<T> {
        match r {
            Err(Error::Corrupted { what, .. }) => Err(health.poisoned_by(self.poison(what))),
            other => other,
        }
    }

    /// A corruption error (the caller poisons its handle).
    pub(super) fn corrupt(&self, what: String) -> Error {
        Error::corrupted(&self.name, what)
    }

    /// End our role in `slot`: aborted if `health` gives a reason (see
    /// `Health::ending_reason`), else closed (and sealed at `seal`, for a
    /// producer); then wake the peer if it is parked on `peer_waits`.
    pub(super) fn end_role(&self, slot: &RoleSlot, health: &mut Health, seal: Option<u64>, peer_waits: &EventCount) {
        match health.ending_reason() {
            Some(why) => self.abort(slot, &why),
            None => self.close(slot, seal),
        }
        self.notify(peer_waits);
    }

    /// End our role cleanly. A producer passes its final position, which
    /// seals the close ([`RoleSlot::seal`]).
    pub(super) fn close(&self, slot: &RoleSlot, at: Option<u64>) {
        if let Some(pos) = at {
            // Relaxed: published by the Release store of the state below.
            slot.seal.store(pos ^ CLOSE_SEAL, Ordering::Relaxed);
        }
        // Release: pairs with the peer's Acquire load of the role state in
        // `peer`; all our position stores and the seal happen before it sees
        // CLOSED.
        slot.state.store(ROLE_CLOSED, Ordering::Release);
    }

    /// End our role after an error, leaving `reason` for the peer.
    pub(super) fn abort(&self, slot: &RoleSlot, reason: &str) {
        slot.reason.store(reason);
        // Release: pairs with the peer's Acquire load of the role state in
        // `peer`: our position stores and the reason happen before it sees
        // ABORTED.
        slot.state.store(ROLE_ABORTED, Ordering::Release);
    }
}
