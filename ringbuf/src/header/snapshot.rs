//! [`Snapshot`]: a segment's header and control words copied out with plain
//! reads, for `shmring ls` and `inspect`, which must never write to or crash
//! on a damaged segment; and what is wrong with them, in plain words
//! ([`Snapshot::problems`]).

use super::*;

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

/// A [`Reason`] copied out of a segment with plain reads, not yet checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawReason {
    /// The length word.
    pub len: u32,
    /// All [`REASON_MAX`] bytes (fewer if the page was short).
    pub bytes: Vec<u8>,
}

impl RawReason {
    /// Decode the reason at byte `off` of `page` (missing bytes read as zero).
    #[cfg(not(loom))]
    pub fn parse(page: &[u8], off: usize) -> RawReason {
        let start = off + std::mem::offset_of!(Reason, bytes);
        let bytes = page.get(start..(start + REASON_MAX).min(page.len())).unwrap_or(&[]).to_vec();
        let len = page
            .get(off + std::mem::offset_of!(Reason, len)..)
            .and_then(|b| b.get(..4))
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        RawReason { len, bytes }
    }

    /// The reason escaped for display ([`escape_reason`]), or what is
    /// impossible about its length word.
    pub fn text(&self) -> std::result::Result<String, String> {
        if self.len as usize > REASON_MAX {
            return Err(format!("abort reason length word is {}, more than {REASON_MAX}", self.len));
        }
        Ok(escape_reason(&self.bytes[..(self.len as usize).min(self.bytes.len())]))
    }
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
mod snapshot_impl {
    use super::*;
    use std::mem::offset_of;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        b.get(off..off + 4).map(|s| u32::from_ne_bytes(s.try_into().unwrap_or([0; 4]))).unwrap_or(0)
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        b.get(off..off + 8).map(|s| u64::from_ne_bytes(s.try_into().unwrap_or([0; 8]))).unwrap_or(0)
    }

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
}

impl Snapshot {
    /// Everything wrong with this segment, in plain words; empty if healthy.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.file_len < HEADER_LEN as u64 {
            p.push(format!("file is {} bytes, shorter than the {HEADER_LEN}-byte header", self.file_len));
        }
        if self.magic != MAGIC {
            p.push(format!("bad magic number {:#018x} (expected {MAGIC:#018x}): not a shmring segment", self.magic));
            return p;
        }
        if self.state != STATE_READY {
            p.push(format!(
                "state word is {} (expected {STATE_READY} = ready): creator pid {} never finished initialising",
                self.state, self.creator_pid
            ));
        }
        if self.abi_version != ABI_VERSION {
            p.push(format!("ABI version {} (this build understands {ABI_VERSION})", self.abi_version));
        }
        if RingKind::from_u32(self.kind).is_none() {
            p.push(format!("unknown ring kind {}", self.kind));
        }
        if NotifierKind::from_u32(self.notifier).is_none() {
            p.push(format!("unknown notifier kind {}", self.notifier));
        }
        match &self.mpmc {
            Some(m) => self.mpmc_problems(m, &mut p),
            None => self.spsc_problems(&mut p),
        }
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
        let (size, align, fingerprint) = self.record_type;
        if let Some(what) = record_type_problem(size, align, fingerprint) {
            p.push(what);
        }
        if let Some(n) = NotifierKind::from_u32(self.notifier) {
            for word in [self.ec_notifiers.0, self.ec_notifiers.1] {
                if !n.eventcount_word_matches(word) {
                    p.push(format!("an eventcount's notifier word is {word}, the header says {}", n.name()));
                }
            }
        }
        if self.flags & FLAG_POISONED != 0 {
            p.push("poisoned: a reader found impossible values and stopped".into());
        }
        p
    }

    fn spsc_problems(&self, p: &mut Vec<String>) {
        if self.header_len as usize != HEADER_LEN {
            p.push(format!("header length {} (expected {HEADER_LEN})", self.header_len));
        }
        if check_capacity(self.capacity).is_err() {
            p.push(format!("capacity {} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}", self.capacity));
            return;
        }
        let want = spsc_segment_len(self.capacity);
        if self.total_len != want {
            p.push(format!("total length {} does not match header + capacity = {want}", self.total_len));
        }
        if self.file_len != self.total_len {
            p.push(format!("file is {} bytes but the header says {}", self.file_len, self.total_len));
        }
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

    fn mpmc_problems(&self, m: &MpmcSnapshot, p: &mut Vec<String>) {
        let g = Geometry::from_words(RingKind::Mpmc, self.header_len, self.capacity, self.slot_size, self.slot_count);
        match g {
            Err(e) => p.push(format!(
                "MPMC geometry impossible (header {} bytes, {} slots of {} bytes, capacity {}): {e}",
                self.header_len, self.slot_count, self.slot_size, self.capacity
            )),
            Ok(g) => {
                if self.total_len != g.total_len() {
                    p.push(format!(
                        "total length {} does not match header + capacity = {}",
                        self.total_len,
                        g.total_len()
                    ));
                }
                if self.file_len != self.total_len {
                    p.push(format!("file is {} bytes but the header says {}", self.file_len, self.total_len));
                }
            }
        }
        if m.enqueue >= MPMC_POSITION_LIMIT || m.dequeue >= MPMC_POSITION_LIMIT {
            p.push(format!("positions impossible: enqueue {}, dequeue {} (limit 2^62)", m.enqueue, m.dequeue));
        } else if m.fill(self.slot_count).is_none() {
            p.push(format!(
                "positions impossible: enqueue {} - dequeue {} exceeds {} slots",
                m.enqueue, m.dequeue, self.slot_count
            ));
        }
        if m.high_water as usize > MPMC_MAX_PARTICIPANTS {
            p.push(format!("participant high-water mark {} exceeds {MPMC_MAX_PARTICIPANTS}", m.high_water));
        }
    }

    /// Bytes committed and not yet released, if the positions are sane
    /// (SPSC; for MPMC see [`MpmcSnapshot::fill`]).
    pub fn fill(&self) -> Option<u64> {
        let f = self.tail.wrapping_sub(self.head);
        (f <= self.capacity).then_some(f)
    }
}
