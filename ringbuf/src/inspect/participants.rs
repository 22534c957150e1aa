//! The MPMC participant table, decoded from bytes copied out of a segment.

use std::mem::offset_of;

use super::bytes::u64_at;
use crate::header::{CONTROL_OFFSET, MPMC_HEADER_LEN, RawReason};
use crate::liveness::ProcessId;
use crate::mpmc::layout::{
    CLAIM_NONE, MPMC_MAX_PARTICIPANTS, MpmcControl, PARTICIPANT_ABORTED, PARTICIPANT_ATTACHED, PARTICIPANT_ATTACHING,
    PARTICIPANT_FREE, Participant, participant_fields,
};

/// One recorded (non-free) entry of an MPMC participant table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantEntry {
    /// Its index in the table, `0..MPMC_MAX_PARTICIPANTS`.
    pub index: usize,
    /// The holder's pid.
    pub pid: u32,
    /// [`PARTICIPANT_ATTACHING`], [`PARTICIPANT_ATTACHED`] or
    /// [`PARTICIPANT_ABORTED`].
    pub state: u32,
    /// Whether the holder is alive (never for an aborted entry).
    pub alive: bool,
    /// Why its holder aborted (state [`PARTICIPANT_ABORTED`]).
    pub reason: RawReason,
    /// Enqueue positions being claimed: (first, count).
    pub enq: Option<(u64, u64)>,
    /// Dequeue positions being claimed: (first, count).
    pub deq: Option<(u64, u64)>,
}

/// The participant table of an MPMC segment, and what is wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Participants {
    /// The recorded entries, in table order.
    pub entries: Vec<ParticipantEntry>,
    /// Problems found in the table (unknown states, impossible reasons,
    /// unreadable bytes).
    pub problems: Vec<String>,
}

impl Participants {
    /// Entries whose holder is alive.
    pub fn live(&self) -> usize {
        self.entries.iter().filter(|e| e.alive).count()
    }

    /// Entries recorded as attached (or attaching) whose holder is dead.
    pub fn dead(&self) -> usize {
        self.entries.iter().filter(|e| !e.alive && e.state != PARTICIPANT_ABORTED).count()
    }

    /// Entries left by handles that aborted.
    pub fn aborted(&self) -> usize {
        self.entries.iter().filter(|e| e.state == PARTICIPANT_ABORTED).count()
    }

    /// Decode the table from the first [`MPMC_HEADER_LEN`] bytes of an MPMC
    /// segment. Every entry is read (not only those below the high-water
    /// mark, which may be garbage); missing bytes are a problem, not a panic.
    pub fn parse(head: &[u8]) -> Participants {
        let mut out = Participants::default();
        let base = CONTROL_OFFSET + offset_of!(MpmcControl, participants);
        let stride = size_of::<crossbeam_utils::CachePadded<Participant>>();
        if head.len() < base + stride * MPMC_MAX_PARTICIPANTS {
            out.problems.push(format!(
                "participant table unreadable: only {} of the {MPMC_HEADER_LEN} header bytes could be read",
                head.len()
            ));
            return out;
        }
        for index in 0..MPMC_MAX_PARTICIPANTS {
            let at = base + index * stride;
            let word = u64_at(head, at + offset_of!(Participant, word));
            let (pid, _generation, state) = participant_fields(word);
            let start_time = u64_at(head, at + offset_of!(Participant, start_time));
            let reason = RawReason::parse(head, at + offset_of!(Participant, reason));
            let alive = match state {
                PARTICIPANT_FREE => continue,
                // Start time not written yet: the pid alone decides.
                PARTICIPANT_ATTACHING => ProcessId { pid, start_time: 0 }.is_alive(),
                PARTICIPANT_ATTACHED => ProcessId { pid, start_time }.is_alive(),
                // Its holder left (after an error): not alive, not dead.
                PARTICIPANT_ABORTED => {
                    if let Err(what) = reason.text() {
                        out.problems.push(format!("participant entry {index}: {what}"));
                    }
                    false
                }
                other => {
                    out.problems.push(format!("participant entry {index} has unknown state {other}"));
                    continue;
                }
            };
            let claim = |start: usize, count: usize| {
                let (start, count) = (u64_at(head, at + start), u64_at(head, at + count));
                (start != CLAIM_NONE && count != 0).then_some((start, count))
            };
            out.entries.push(ParticipantEntry {
                index,
                pid,
                state,
                alive,
                reason,
                enq: claim(offset_of!(Participant, enq_start), offset_of!(Participant, enq_count)),
                deq: claim(offset_of!(Participant, deq_start), offset_of!(Participant, deq_count)),
            });
        }
        out
    }
}

#[cfg(not(loom))]
const _: () = {
    // The table is the last field of the control block: entries are its
    // padded cells, one after the other.
    let cell = size_of::<crossbeam_utils::CachePadded<Participant>>();
    assert!(offset_of!(MpmcControl, participants) + cell * MPMC_MAX_PARTICIPANTS == size_of::<MpmcControl>());
};
