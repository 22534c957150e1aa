//! [`SegmentView`]: everything that can be learnt about a segment without
//! mapping it or writing to it, and what `shmring ls` calls its status.

use std::time::Duration;

use super::participants::Participants;
use super::snapshot::Snapshot;
use crate::error::Result;
use crate::header::{
    Header, MAGIC, MPMC_HEADER_LEN, ROLE_ABORTED, ROLE_ATTACHED, ROLE_CLOSED, RecordType, STATE_READY,
    record_type_problem,
};
use crate::liveness::ProcessId;
use crate::segment::{Location, read_first_page, read_prefix};

/// The record type words of a segment's header, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordTypeInfo {
    /// A ring of bytes: all type words are zero.
    Untyped,
    /// A typed ring of this type (its name escaped, see [`RecordType::name`]).
    Typed(RecordType),
    /// The words cannot describe a type; what is wrong.
    Impossible(String),
}

impl RecordTypeInfo {
    /// Decode the words of `snap`, with the type's name read from `page`
    /// (the segment's first bytes).
    pub fn parse(snap: &Snapshot, page: &[u8]) -> RecordTypeInfo {
        let (size, align, fingerprint) = snap.record_type;
        if let Some(what) = record_type_problem(size, align, fingerprint) {
            return RecordTypeInfo::Impossible(what);
        }
        if fingerprint == 0 {
            return RecordTypeInfo::Untyped;
        }
        let start = std::mem::offset_of!(Header, type_name);
        let mut name = [0u8; RecordType::NAME_MAX];
        let raw = page.get(start..).unwrap_or(&[]);
        let n = raw.len().min(name.len());
        name[..n].copy_from_slice(&raw[..n]);
        RecordTypeInfo::Typed(RecordType::from_parts(size, align, fingerprint, name))
    }

    /// One line for people: `none (a ring of bytes)`, the type, or
    /// `impossible (why)`.
    pub fn describe(&self) -> String {
        match self {
            RecordTypeInfo::Untyped => "none (a ring of bytes)".into(),
            RecordTypeInfo::Typed(t) => format!("{t:?}"),
            RecordTypeInfo::Impossible(what) => format!("impossible ({what})"),
        }
    }
}

/// What `shmring ls` says about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Someone attached is alive.
    Alive,
    /// Nobody attached yet (or the creator is still initialising).
    Waiting,
    /// Everyone recorded is dead or gone: safe to remove.
    Stale,
    /// The segment has problems ([`SegmentView::problems`]).
    Damaged,
}

impl Status {
    /// Lower-case name, as `shmring ls` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Waiting => "waiting",
            Status::Stale => "stale",
            Status::Damaged => "damaged",
        }
    }
}

/// How many times at most [`SegmentView::read`] reads a header whose
/// positions look impossible before it believes them.
pub const POSITION_READS: u32 = 5;

/// The pause between those reads: long enough for a live ring's positions
/// to move on, short enough not to slow a listing down.
const POSITION_REREAD_PAUSE: Duration = Duration::from_millis(1);

/// Everything known about one segment from plain reads of its first bytes.
#[derive(Debug, Clone)]
pub struct SegmentView {
    /// The header and control words.
    pub snapshot: Snapshot,
    /// The record type of a typed ring.
    pub record_type: RecordTypeInfo,
    /// The participant table (MPMC segments with a good magic word only).
    pub participants: Option<Participants>,
}

impl SegmentView {
    /// Read the segment at `loc`: its first page, and for an MPMC segment
    /// its participant table. Never maps the segment, never writes to it.
    /// Positions that look impossible are read again a few times before
    /// they are believed (see [`Snapshot::position_problems`]). The view may
    /// describe something that is not a shmring segment at all: see
    /// [`SegmentView::is_shmring`].
    ///
    /// # Errors
    /// As [`read_first_page`]: [`Error::NotFound`](crate::Error::NotFound),
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (not a regular
    /// file), [`Error::Io`](crate::Error::Io).
    pub fn read(loc: &Location) -> Result<SegmentView> {
        let (snapshot, page) = settled(|| {
            let (page, len) = read_first_page(loc)?;
            Ok((Snapshot::parse(&page, len), page))
        })?;
        let record_type = RecordTypeInfo::parse(&snapshot, &page);
        let participants = match (&snapshot.mpmc, snapshot.magic == MAGIC) {
            (Some(_), true) => Some(match read_prefix(loc, MPMC_HEADER_LEN) {
                Ok((head, _)) => Participants::parse(&head),
                Err(e) => {
                    Participants { entries: Vec::new(), problems: vec![format!("participant table unreadable: {e}")] }
                }
            }),
            _ => None,
        };
        Ok(SegmentView { snapshot, record_type, participants })
    }

    /// Whether the magic word says this is a shmring segment.
    pub fn is_shmring(&self) -> bool {
        self.snapshot.magic == MAGIC
    }

    /// Whether this is an MPMC segment.
    pub fn is_mpmc(&self) -> bool {
        self.snapshot.mpmc.is_some()
    }

    /// Everything wrong with the segment, in plain words: the snapshot's
    /// problems, a record type too big for an MPMC slot, and the
    /// participant table's problems. Empty if healthy.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.snapshot.problems();
        if !self.is_shmring() {
            return p;
        }
        if let RecordTypeInfo::Typed(t) = &self.record_type
            && self.is_mpmc()
            && t.size > self.snapshot.slot_size
        {
            p.push(format!("record type of {} bytes does not fit a slot of {} bytes", t.size, self.snapshot.slot_size));
        }
        if let Some(parts) = &self.participants {
            p.extend(parts.problems.iter().cloned());
        }
        p
    }

    /// Alive, waiting, stale or damaged.
    pub fn status(&self) -> Status {
        let s = &self.snapshot;
        if s.state != STATE_READY && s.magic == MAGIC {
            let creator = ProcessId { pid: s.creator_pid, start_time: s.creator_start_time };
            return if creator.is_alive() { Status::Waiting } else { Status::Stale };
        }
        if !self.problems().is_empty() {
            return Status::Damaged;
        }
        if let Some(parts) = &self.participants {
            // MPMC: alive if anyone recorded is alive; stale if entries are
            // recorded but every holder is dead; waiting if nobody is attached.
            return if parts.live() > 0 {
                Status::Alive
            } else if parts.dead() > 0 {
                Status::Stale
            } else {
                Status::Waiting
            };
        }
        let role_alive = |(state, pid, start_time): (u32, u32, u64)| {
            (state == ROLE_ATTACHED).then(|| ProcessId { pid, start_time }.is_alive())
        };
        let roles = [role_alive(s.producer), role_alive(s.consumer)];
        if roles.contains(&Some(false)) {
            return Status::Stale;
        }
        if roles.contains(&Some(true)) {
            return Status::Alive;
        }
        let ended = |state: u32| state == ROLE_CLOSED || state == ROLE_ABORTED;
        if ended(s.producer.0) && ended(s.consumer.0) {
            return Status::Stale;
        }
        Status::Waiting
    }

    /// MPMC fill in messages; `None` for SPSC or if the positions are
    /// impossible.
    pub fn mpmc_fill(&self) -> Option<u64> {
        self.snapshot.mpmc.as_ref()?.fill(self.snapshot.slot_count)
    }
}

/// Take snapshots with `read` until one shows possible positions, at most
/// [`POSITION_READS`] of them, `POSITION_REREAD_PAUSE` apart; return that
/// one, or the last one read if none does.
///
/// The positions are read with plain reads of the page, one word after the
/// other, while a busy ring's processes keep moving them: the second word
/// read may be newer than the first, so one read of a healthy ring can show
/// a tail ahead of its head by more than the capacity, or behind it. A later
/// read then shows a consistent pair; damaged positions stay impossible in
/// every read. Only a first read fails the whole; an error on a re-read
/// (the segment removed meanwhile) keeps what was read before.
fn settled<T>(mut read: impl FnMut() -> Result<(Snapshot, T)>) -> Result<(Snapshot, T)> {
    let mut got = read()?;
    for _ in 1..POSITION_READS {
        if got.0.position_problems().is_empty() {
            break;
        }
        std::thread::sleep(POSITION_REREAD_PAUSE);
        match read() {
            Ok(again) => got = again,
            Err(_) => break,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    /// A snapshot of a live, healthy ring of each kind, each made in a file
    /// that is removed again before anything is checked.
    fn healthy_snapshots() -> (Snapshot, Snapshot) {
        let loc = Location::path(std::env::temp_dir().join(format!("shmring-inspect-test-{}", std::process::id())));
        let read = || read_first_page(&loc).map(|(page, len)| Snapshot::parse(&page, len));
        let opts = crate::SpscOptions::new().capacity(4096);
        let spsc = crate::spsc::Producer::create(&loc, &opts).and_then(|_ring| read());
        let _ = loc.unlink();
        let opts = crate::mpmc::MpmcOptions::new().slot_size(8).slot_count(8);
        let mpmc = crate::mpmc::Producer::create(&loc, &opts).and_then(|_ring| read());
        let _ = loc.unlink();
        let (spsc, mpmc) = (spsc.unwrap(), mpmc.unwrap());
        for snap in [&spsc, &mpmc] {
            assert_eq!(snap.problems(), Vec::<String>::new(), "{snap:?}");
        }
        (spsc, mpmc)
    }

    /// `settled` over `reads`, in order (then errors); also how many were taken.
    fn settle(reads: &[&Snapshot]) -> (Result<Snapshot>, usize) {
        let mut taken = 0;
        let got = settled(|| {
            taken += 1;
            match reads.get(taken - 1) {
                Some(s) => Ok(((*s).clone(), ())),
                None => Err(Error::NotFound("/gone".into())),
            }
        });
        (got.map(|(s, ())| s), taken)
    }

    #[test]
    fn torn_positions_are_read_again_and_reported_only_if_every_read_shows_them() {
        let (spsc, mpmc) = healthy_snapshots();
        let cap = spsc.capacity;
        let torn_spsc = [
            // Tail read after the producer moved on, head before the consumer did.
            Snapshot { head: 64, tail: 64 + cap + 8, ..spsc.clone() },
            // Head read after the consumer caught up with a newer tail.
            Snapshot { head: 128, tail: 64, ..spsc.clone() },
        ];
        let mut m = mpmc.mpmc.unwrap();
        m.dequeue = m.enqueue + 1;
        let torn_mpmc = Snapshot { mpmc: Some(m), ..mpmc.clone() };
        for (torn, good) in torn_spsc.iter().map(|t| (t, &spsc)).chain([(&torn_mpmc, &mpmc)]) {
            assert!(!torn.position_problems().is_empty(), "{:?}", torn.problems());
            // A consistent read clears it.
            let (got, taken) = settle(&[torn, torn, good]);
            assert_eq!((got.unwrap(), taken), (good.clone(), 3));
            // Impossible in every read: reported, from the last read.
            let (got, taken) = settle(&[torn; POSITION_READS as usize + 1]);
            assert_eq!(taken, POSITION_READS as usize);
            assert!(got.unwrap().problems().iter().any(|p| p.contains("positions impossible")));
            // A first read that is fine is not repeated.
            assert_eq!(settle(&[good, torn]).1, 1);
            // Removed during the re-reads: what was read stands; a first read that fails, fails.
            assert_eq!(settle(&[torn]).0.unwrap(), torn.clone());
            assert!(matches!(settle(&[]).0, Err(Error::NotFound(_))));
        }
    }
}
