//! [`Snapshot`]: a segment's header and control words copied out with plain
//! reads, for `shmring ls` and `inspect`, which must never write to or crash
//! on a damaged segment; and what is wrong with them, in plain words
//! ([`Snapshot::problems`]).

use super::bytes::{u32_at, u64_at};
use crate::header::check::check_words;
use crate::header::{
    FLAG_POISONED, HEADER_LEN, HeaderWords, MAGIC, MPMC_MAX_PARTICIPANTS, MPMC_POSITION_LIMIT, RawReason, STATE_READY,
    check_capacity, eventcount_notifier_problem,
};
use crate::spsc::layout::ROLE_ABORTED;
#[cfg(not(loom))]
use {
    crate::header::{CONTROL_OFFSET, Header, RingKind},
    crate::mpmc::layout::{MPMC_CLOSED, MpmcControl, MpmcShared},
    crate::spsc::layout::{RoleSlot, SpscControl},
    crate::wait::EventCount,
    std::mem::offset_of,
};

/// The header fields, copied out of a segment's first page with plain reads.
/// Used by `inspect` and `ls`, which must never write to or crash on a
/// damaged segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Bytes actually in the file (from fstat).
    pub file_len: u64,
    /// Header: magic.
    pub magic: u64,
    /// Header: ABI version.
    pub abi_version: u32,
    /// Header: ring kind word.
    pub kind: u32,
    /// Header: bytes before the data region.
    pub header_len: u32,
    /// Header: notifier kind word.
    pub notifier: u32,
    /// Header: data bytes.
    pub capacity: u64,
    /// Header: slot payload size in bytes (MPMC; 0 for SPSC).
    pub slot_size: u32,
    /// Header: slot count (MPMC; 0 for SPSC).
    pub slot_count: u32,
    /// Header: total length.
    pub total_len: u64,
    /// Header: creator pid.
    pub creator_pid: u32,
    /// Header: creator start time.
    pub creator_start_time: u64,
    /// Header: state word.
    pub state: u32,
    /// Header: flags word.
    pub flags: u32,
    /// Control: producer position.
    pub tail: u64,
    /// Control: consumer position.
    pub head: u64,
    /// Control: producer (state, pid, start time).
    pub producer: (u32, u32, u64),
    /// Control: consumer (state, pid, start time).
    pub consumer: (u32, u32, u64),
    /// Control: parked consumers, parked producers (both kinds).
    pub waiters: (u32, u32),
    /// MPMC control words, when the kind word says MPMC.
    pub mpmc: Option<MpmcSnapshot>,
    /// Header: record type words (size, alignment, fingerprint); zeros if untyped.
    pub record_type: (u32, u32, u64),
    /// Control: the notifier words of the two eventcounts.
    pub ec_notifiers: (u32, u32),
    /// Control: the abort reasons in the producer's and the consumer's role
    /// slots (meaningful when their state is [`ROLE_ABORTED`]).
    pub reasons: (RawReason, RawReason),
}

/// The MPMC control words of a [`Snapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MpmcSnapshot {
    /// Positions claimed by producers (messages and skipped slots), without
    /// the closed bit.
    pub enqueue: u64,
    /// Positions claimed by consumers.
    pub dequeue: u64,
    /// Whether the ring is closed (the [`MPMC_CLOSED`] bit of `enqueue`).
    pub closed: bool,
    /// Participant table high-water mark.
    pub high_water: u32,
    /// Messages lost because their producer died mid-write.
    pub lost_producer_died: u64,
    /// Messages lost because their consumer died holding them.
    pub lost_consumer_died: u64,
    /// Slots recovered from dead claimants.
    pub recovered: u64,
}

impl MpmcSnapshot {
    /// Messages (and skipped slots) in the ring, if the positions are sane.
    pub fn fill(&self, slot_count: u32) -> Option<u64> {
        let f = self.enqueue.wrapping_sub(self.dequeue);
        (f <= u64::from(slot_count)).then_some(f)
    }
}

#[cfg(not(loom))]
impl Snapshot {
    /// Decode the first page of a segment. Missing bytes read as zero;
    /// nothing is validated here (see [`Snapshot::problems`]).
    pub fn parse(page: &[u8], file_len: u64) -> Snapshot {
        let c = CONTROL_OFFSET;
        let role = |base: usize| {
            (
                u32_at(page, base + offset_of!(RoleSlot, state)),
                u32_at(page, base + offset_of!(RoleSlot, pid)),
                u64_at(page, base + offset_of!(RoleSlot, start_time)),
            )
        };
        let reason = |base: usize| RawReason::parse(page, base + offset_of!(RoleSlot, reason));
        let waiters = |base: usize| u32_at(page, base + EventCount::WAITERS_OFFSET);
        let ec_notifier = |base: usize| u32_at(page, base + EventCount::NOTIFIER_OFFSET);
        let kind = u32_at(page, offset_of!(Header, kind));
        if kind == RingKind::Mpmc as u32 {
            let sh = c + offset_of!(MpmcControl, shared);
            let enqueue = u64_at(page, c + offset_of!(MpmcControl, enqueue));
            let mut snap = Snapshot {
                file_len,
                kind,
                waiters: (
                    waiters(c + offset_of!(MpmcControl, not_empty)),
                    waiters(c + offset_of!(MpmcControl, not_full)),
                ),
                ec_notifiers: (
                    ec_notifier(c + offset_of!(MpmcControl, not_empty)),
                    ec_notifier(c + offset_of!(MpmcControl, not_full)),
                ),
                mpmc: Some(MpmcSnapshot {
                    enqueue: enqueue & !MPMC_CLOSED,
                    dequeue: u64_at(page, c + offset_of!(MpmcControl, dequeue)),
                    closed: enqueue & MPMC_CLOSED != 0,
                    high_water: u32_at(page, sh + offset_of!(MpmcShared, high_water)),
                    lost_producer_died: u64_at(page, sh + offset_of!(MpmcShared, lost_producer_died)),
                    lost_consumer_died: u64_at(page, sh + offset_of!(MpmcShared, lost_consumer_died)),
                    recovered: u64_at(page, sh + offset_of!(MpmcShared, recovered)),
                }),
                ..Snapshot::default()
            };
            snap.parse_header(page);
            return snap;
        }
        let mut snap = Snapshot {
            file_len,
            kind,
            tail: u64_at(page, c + offset_of!(SpscControl, tail)),
            head: u64_at(page, c + offset_of!(SpscControl, head)),
            producer: role(c + offset_of!(SpscControl, producer)),
            consumer: role(c + offset_of!(SpscControl, consumer)),
            waiters: (
                waiters(c + offset_of!(SpscControl, data_ready)),
                waiters(c + offset_of!(SpscControl, space_free)),
            ),
            ec_notifiers: (
                ec_notifier(c + offset_of!(SpscControl, data_ready)),
                ec_notifier(c + offset_of!(SpscControl, space_free)),
            ),
            reasons: (reason(c + offset_of!(SpscControl, producer)), reason(c + offset_of!(SpscControl, consumer))),
            ..Snapshot::default()
        };
        snap.parse_header(page);
        snap
    }

    fn parse_header(&mut self, page: &[u8]) {
        self.magic = u64_at(page, offset_of!(Header, magic));
        self.abi_version = u32_at(page, offset_of!(Header, abi_version));
        self.header_len = u32_at(page, offset_of!(Header, header_len));
        self.notifier = u32_at(page, offset_of!(Header, notifier));
        self.capacity = u64_at(page, offset_of!(Header, capacity));
        self.slot_size = u32_at(page, offset_of!(Header, slot_size));
        self.slot_count = u32_at(page, offset_of!(Header, slot_count));
        self.total_len = u64_at(page, offset_of!(Header, total_len));
        self.creator_pid = u32_at(page, offset_of!(Header, creator_pid));
        self.creator_start_time = u64_at(page, offset_of!(Header, creator_start_time));
        self.state = u32_at(page, offset_of!(Header, state));
        self.flags = u32_at(page, offset_of!(Header, flags));
        self.record_type = (
            u32_at(page, offset_of!(Header, type_size)),
            u32_at(page, offset_of!(Header, type_align)),
            u64_at(page, offset_of!(Header, type_fingerprint)),
        );
    }
}

impl Snapshot {
    /// The header words that say what the segment is.
    pub fn header_words(&self) -> HeaderWords {
        HeaderWords {
            magic: self.magic,
            abi_version: self.abi_version,
            kind: self.kind,
            header_len: self.header_len,
            notifier: self.notifier,
            capacity: self.capacity,
            slot_size: self.slot_size,
            slot_count: self.slot_count,
            total_len: self.total_len,
            record_type: self.record_type,
        }
    }

    /// Everything wrong with this segment, in plain words; empty if healthy.
    /// The header words go through the same checks as every opener's
    /// (an opener reports the first of them as its error).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.file_len < HEADER_LEN as u64 {
            p.push(format!("file is {} bytes, shorter than the {HEADER_LEN}-byte header", self.file_len));
        }
        if self.magic != MAGIC {
            p.extend(check_words(&self.header_words(), self.file_len).1.iter().map(|e| e.to_string()));
            return p;
        }
        if self.state != STATE_READY {
            p.push(format!(
                "state word is {} (expected {STATE_READY} = ready): creator pid {} never finished initialising",
                self.state, self.creator_pid
            ));
        }
        p.extend(check_words(&self.header_words(), self.file_len).1.iter().map(|e| e.to_string()));
        p.extend(self.position_problems());
        let names = match &self.mpmc {
            Some(m) => {
                if m.high_water as usize > MPMC_MAX_PARTICIPANTS {
                    p.push(format!("participant high-water mark {} exceeds {MPMC_MAX_PARTICIPANTS}", m.high_water));
                }
                ["not_empty", "not_full"]
            }
            None => ["data_ready", "space_free"],
        };
        for (name, (state, _, _), reason) in
            [("producer", self.producer, &self.reasons.0), ("consumer", self.consumer, &self.reasons.1)]
        {
            if state > ROLE_ABORTED {
                p.push(format!("{name} role state {state} is not a known state"));
            }
            if state == ROLE_ABORTED
                && let Err(what) = reason.text()
            {
                p.push(format!("{name}'s {what}"));
            }
        }
        if self.flags & !FLAG_POISONED != 0 {
            p.push(format!("header flags word {:#x} has unknown bits", self.flags));
        }
        for (name, word) in names.into_iter().zip([self.ec_notifiers.0, self.ec_notifiers.1]) {
            p.extend(eventcount_notifier_problem(self.notifier, name, word));
        }
        if self.flags & FLAG_POISONED != 0 {
            p.push("poisoned: a reader found impossible values and stopped".into());
        }
        p
    }

    /// What is impossible about the positions (SPSC head and tail, MPMC
    /// enqueue and dequeue counters); empty if they are possible. Read with
    /// plain reads of a live ring, they can be torn (one word older than
    /// the other): [`crate::inspect::SegmentView::read`] reads again before
    /// it believes them.
    pub fn position_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match &self.mpmc {
            Some(m) if m.enqueue >= MPMC_POSITION_LIMIT || m.dequeue >= MPMC_POSITION_LIMIT => {
                p.push(format!("positions impossible: enqueue {}, dequeue {} (limit 2^62)", m.enqueue, m.dequeue));
            }
            Some(m) if m.fill(self.slot_count).is_none() => p.push(format!(
                "positions impossible: enqueue {} - dequeue {} exceeds {} slots",
                m.enqueue, m.dequeue, self.slot_count
            )),
            Some(_) => {}
            None if check_capacity(self.capacity).is_err() => {}
            None => {
                let fill = self.tail.wrapping_sub(self.head);
                if fill > self.capacity {
                    p.push(format!(
                        "positions impossible: tail {} - head {} = {fill} exceeds capacity {}",
                        self.tail, self.head, self.capacity
                    ));
                }
                if !self.tail.is_multiple_of(8) || !self.head.is_multiple_of(8) {
                    p.push(format!("positions not 8-byte aligned: head {}, tail {}", self.head, self.tail));
                }
            }
        }
        p
    }

    /// Bytes committed and not yet released, if the positions are sane
    /// (SPSC; for MPMC see [`MpmcSnapshot::fill`]).
    pub fn fill(&self) -> Option<u64> {
        let f = self.tail.wrapping_sub(self.head);
        (f <= self.capacity).then_some(f)
    }
}
