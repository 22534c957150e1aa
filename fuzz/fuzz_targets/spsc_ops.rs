//! Fuzz target `spsc_ops`: a sequence of operations on one producer/consumer
//! pair in one process, checked against a model, with "peer writes" that
//! overwrite any word of the segment through a second mapping.
//!
//! Until the first peer write the ring must behave exactly like the model: a
//! `VecDeque` of the records finished (committed or staged) and not yet
//! received. Every received record equals the model's front, byte for byte;
//! a send fails only for a record that does not fit (`InvalidArgument`) or
//! with `WouldBlock`/`Timeout` when the ring, as the producer last saw it, has
//! less than twice the record's size free (a record plus the padding that may
//! precede it); `try_recv` says empty only while no record is sure to be
//! published. After a peer write any typed error is fine, but nothing may
//! panic, crash, hang or touch memory outside the mapping.
//!
//! The target relies on the public API only, plus "overwrite any 8-byte
//! word": it assumes nothing about the record layout beyond
//! `spsc::record_size`. No call blocks: sends and receives use the `try_` or
//! `_timeout` forms with tiny timeouts (runs of records too, with
//! `try_grant_records`), and `recv_batch` and `recv_runs` (which wait for a
//! first record) are only called when a record is published or the
//! producer's role word says aborted, so an empty ring ends them at once.
//!
//! At the end the producer closes, or aborts (`Input::abort`), and the
//! consumer drains: a stream whose producer aborted, or found the ring
//! corrupted, never ends in `Ok(None)`, peer writes or not.
//!
//! The ring lives in a sealed memfd: nothing is left in `/dev/shm`.
#![no_main]

use std::collections::VecDeque;
use std::mem::offset_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shmring::header::{CONTROL_OFFSET, HEADER_LEN, ROLE_ABORTED, RoleSlot, SpscControl};
use shmring::spsc::{self, Consumer, Producer};
use shmring::{Error, SpscOptions, Segment, WaitPolicy};

/// The timeout of every `_timeout` call.
const TINY: Duration = Duration::from_micros(20);

#[derive(Arbitrary, Debug)]
struct Input {
    /// Capacity `4096 << (capacity_shift % 5)`: 4 KiB to 64 KiB.
    capacity_shift: u8,
    ops: Vec<Op>,
    /// End with `Producer::abort` instead of dropping the producer.
    abort: bool,
}

/// A payload length: small ones let many records fit, large ones reach the
/// wrap-around and the size limit.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    Small(u8),
    Large(u16),
}

impl Len {
    fn get(self) -> usize {
        match self {
            Len::Small(n) => n.into(),
            Len::Large(n) => n.into(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// `send_timeout` with a tiny timeout.
    Send {
        len: Len,
        fill: u8,
    },
    TrySend {
        len: Len,
        fill: u8,
    },
    /// Grant (`try_grant`, or `grant_timeout` if `wait`), write, commit.
    GrantCommit {
        len: Len,
        fill: u8,
        wait: bool,
    },
    /// Grant, write, stage: finished but not published.
    GrantStage {
        len: Len,
        fill: u8,
    },
    Flush,
    /// Grant, write, truncate to `keep` bytes, commit.
    GrantTruncateCommit {
        len: Len,
        keep: Len,
        fill: u8,
    },
    /// Grant, write, drop the grant: nothing is sent.
    GrantDrop {
        len: Len,
        fill: u8,
    },
    TryRecv,
    RecvTimeout,
    RecvBatch {
        max: u8,
    },
    /// `try_grant_records`: `count` records of `len` bytes, the first
    /// `keep` of them written in place and kept (`RunGrant::truncate`), then
    /// committed, or staged if `stage`.
    GrantRecords {
        len: u8,
        count: u8,
        keep: u8,
        fill: u8,
        stage: bool,
    },
    /// `recv_runs`, checking the shape of every run passed.
    RecvRuns {
        max: u8,
    },
    /// Overwrite a word through the second mapping.
    Peer {
        word: Word,
        value: Value,
    },
}

/// Which word a peer write hits.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Word {
    Tail,
    Head,
    /// The producer's role slot: state (low half) and pid (high half).
    ProducerRole,
    /// The consumer's role slot.
    ConsumerRole,
    /// Any word of the control block (index modulo its size in words).
    Control(u8),
    /// Any word of the first page: header and control block.
    Page(u16),
    /// Any word of the data region (index modulo its size in words).
    Data(u16),
}

/// What a peer write stores.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    /// The whole word.
    Raw(u64),
    /// Only the low 4 bytes (a role state, a record length, ...).
    Low(u32),
    /// Only the high 4 bytes (a pid, record flags, ...).
    High(u32),
    /// The current value plus a signed delta (a position nudged a little).
    Add(i32),
}

/// The second mapping, as another process would have it.
struct Peer {
    seg: Segment,
    capacity: usize,
}

impl Peer {
    fn offset(&self, w: Word) -> usize {
        let ctl = |off: usize| CONTROL_OFFSET + off;
        match w {
            Word::Tail => ctl(offset_of!(SpscControl, tail)),
            Word::Head => ctl(offset_of!(SpscControl, head)),
            Word::ProducerRole => ctl(offset_of!(SpscControl, producer)),
            Word::ConsumerRole => ctl(offset_of!(SpscControl, consumer)),
            Word::Control(i) => ctl(usize::from(i) % (size_of::<SpscControl>() / 8) * 8),
            Word::Page(i) => usize::from(i) % (HEADER_LEN / 8) * 8,
            Word::Data(i) => HEADER_LEN + usize::from(i) % (self.capacity / 8) * 8,
        }
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.seg.len());
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the
        // word is shared memory that other handles access atomically too.
        unsafe { &*(self.seg.as_ptr().add(off) as *const AtomicU64) }
    }

    fn write(&self, w: Word, v: Value) {
        let word = self.word(self.offset(w));
        let old = word.load(Ordering::Relaxed);
        let new = match v {
            Value::Raw(x) => x,
            Value::Low(x) => (old & !0xffff_ffff) | u64::from(x),
            Value::High(x) => (old & 0xffff_ffff) | (u64::from(x) << 32),
            Value::Add(d) => old.wrapping_add(d as i64 as u64),
        };
        word.store(new, Ordering::Relaxed);
    }

    /// The producer's role state word.
    fn producer_state(&self) -> &AtomicU32 {
        let off = CONTROL_OFFSET + offset_of!(SpscControl, producer) + offset_of!(RoleSlot, state);
        assert!(off.is_multiple_of(4) && off + 4 <= self.seg.len());
        // SAFETY: in bounds and 4-aligned; shared memory accessed atomically.
        unsafe { &*(self.seg.as_ptr().add(off) as *const AtomicU32) }
    }
}

/// What the ring must hold, while no peer write has happened.
#[derive(Default)]
struct Model {
    /// Records finished (committed or staged) and not yet received, oldest first.
    queue: VecDeque<Vec<u8>>,
    /// How many at the front of `queue` are certainly published. Staged
    /// records may be published earlier than `flush` (a send that finds the
    /// ring full publishes them), so this is a lower bound.
    published: usize,
    /// Numbers the records, so a reordering or a repeat shows.
    seq: u64,
}

impl Model {
    fn record(&mut self, len: usize, fill: u8) -> Vec<u8> {
        let mut r = vec![fill; len];
        let n = len.min(8);
        r[..n].copy_from_slice(&self.seq.to_le_bytes()[..n]);
        self.seq += 1;
        r
    }

    /// Bytes the unreceived records take in the ring, padding not counted.
    /// Payload bytes held, each record padded to 8 (a lower bound of the
    /// ring bytes they take: runs share one header).
    fn payload_bytes(&self) -> u64 {
        self.queue.iter().map(|r| spsc::record_size(r.len()) - spsc::RECORD_HEADER).sum()
    }

    fn received(&mut self, got: &[u8]) {
        let want = self.queue.pop_front().expect("received a record the producer never finished");
        assert_eq!(got, &want[..], "received record differs from the one sent");
        self.published = self.published.saturating_sub(1);
    }
}

/// What happens to a granted record.
#[derive(Clone, Copy)]
enum Fate {
    /// Committed: published with everything staged before it.
    Commit,
    /// Staged: finished, published later.
    Stage,
    /// The grant is dropped: nothing is sent.
    Drop,
}

struct Harness {
    tx: Producer,
    rx: Consumer,
    peer: Peer,
    model: Model,
    /// A peer write happened: the model no longer applies.
    damaged: bool,
    /// The producer's last call failed (not just full): dropping it aborts.
    tx_failed: bool,
}

fuzz_target!(|input: Input| {
    let capacity = 4096u64 << (input.capacity_shift % 5);
    let seg =
        spsc::create_memfd("shmring-fuzz-spsc", &SpscOptions::new().capacity(capacity)).expect("create a memfd ring");
    let map = || Segment::from_fd(seg.fd().try_clone_to_owned().expect("dup the memfd"), "fuzz").expect("map");
    let (cseg, pseg) = (map(), map());
    let mut tx = Producer::attach(seg).expect("attach the producer");
    let mut rx = Consumer::attach(cseg).expect("attach the consumer");
    tx.set_wait_policy(WaitPolicy::park());
    rx.set_wait_policy(WaitPolicy::park());
    assert_eq!(tx.capacity(), capacity);
    let peer = Peer { seg: pseg, capacity: capacity as usize };
    let mut h = Harness { tx, rx, peer, model: Model::default(), damaged: false, tx_failed: false };
    for op in input.ops {
        h.apply(op);
    }
    h.finish(input.abort);
});

impl Harness {
    fn apply(&mut self, op: Op) {
        match op {
            Op::Send { len, fill } => {
                let r = self.model.record(len.get(), fill);
                let res = self.tx.send_timeout(&r, TINY);
                self.sent(r.len(), r, res, Fate::Commit);
            }
            Op::TrySend { len, fill } => {
                let r = self.model.record(len.get(), fill);
                let res = self.tx.try_send(&r);
                self.sent(r.len(), r, res, Fate::Commit);
            }
            Op::GrantCommit { len, fill, wait } => {
                let r = self.model.record(len.get(), fill);
                let g = if wait { self.tx.grant_timeout(r.len(), TINY) } else { self.tx.try_grant(r.len()) };
                let res = g.map(|mut g| {
                    g.copy_from_slice(&r);
                    g.commit();
                });
                self.sent(r.len(), r, res, Fate::Commit);
            }
            Op::GrantStage { len, fill } => {
                let r = self.model.record(len.get(), fill);
                let res = self.tx.try_grant(r.len()).map(|mut g| {
                    g.copy_from_slice(&r);
                    g.stage();
                });
                self.sent(r.len(), r, res, Fate::Stage);
            }
            Op::Flush => {
                self.tx.flush();
                self.model.published = self.model.queue.len();
            }
            Op::GrantTruncateCommit { len, keep, fill } => {
                let mut r = self.model.record(len.get(), fill);
                let keep = keep.get();
                let res = self.tx.try_grant(r.len()).map(|mut g| {
                    g.copy_from_slice(&r);
                    g.truncate(keep);
                    assert_eq!(g.len(), keep.min(r.len()));
                    g.commit();
                });
                let len = r.len();
                r.truncate(keep);
                self.sent(len, r, res, Fate::Commit);
            }
            Op::GrantDrop { len, fill } => {
                let r = self.model.record(len.get(), fill);
                let res = self.tx.try_grant(r.len()).map(|mut g| g.copy_from_slice(&r));
                self.sent(r.len(), r, res, Fate::Drop);
            }
            Op::TryRecv => {
                let res = self.rx.try_recv().map(|r| r.map(|rec| rec.to_vec()));
                self.got(res);
            }
            Op::RecvTimeout => {
                let res = match self.rx.recv_timeout(TINY) {
                    Err(Error::Timeout) => Err(Error::WouldBlock { full: false }),
                    other => other.map(|r| r.map(|rec| rec.to_vec())),
                };
                self.got(res);
            }
            Op::RecvBatch { max } => self.recv_batch(max.into(), false),
            Op::RecvRuns { max } => self.recv_batch(max.into(), true),
            Op::GrantRecords { len, count, keep, fill, stage } => {
                let (len, count, keep) = (usize::from(len), usize::from(count), usize::from(keep));
                let stride = len.next_multiple_of(8);
                let recs: Vec<Vec<u8>> =
                    (0..count.min(keep)).map(|i| self.model.record(len, fill.wrapping_add(i as u8))).collect();
                let res = self.tx.try_grant_records(len, count).map(|mut run| {
                    assert_eq!((run.count(), run.stride(), run.len()), (count, stride, count * stride));
                    if stride > 0 {
                        for (dst, src) in run.chunks_mut(stride).zip(&recs) {
                            dst[..len].copy_from_slice(src);
                        }
                    }
                    run.truncate(keep);
                    assert_eq!(run.count(), recs.len());
                    if stage { run.stage() } else { run.commit() }
                });
                self.sent_run(len, count, recs, res, if stage { Fate::Stage } else { Fate::Commit });
            }
            Op::Peer { word, value } => {
                self.damaged = true;
                self.peer.write(word, value);
            }
        }
    }

    /// Check the outcome of a grant of `len` bytes that sends `r` (shorter
    /// than `len` if the grant was truncated).
    fn sent(&mut self, len: usize, r: Vec<u8>, res: shmring::Result<()>, fate: Fate) {
        self.note(&res);
        if self.damaged {
            if let Err(e) = res {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
        let cap = self.tx.capacity();
        match res {
            Ok(()) => match fate {
                Fate::Commit => {
                    self.model.queue.push_back(r);
                    self.model.published = self.model.queue.len();
                }
                Fate::Stage => self.model.queue.push_back(r),
                Fate::Drop => {}
            },
            Err(Error::InvalidArgument(_)) => {
                assert!(len > self.tx.max_record_len(), "a grant of {len} bytes refused");
            }
            Err(Error::WouldBlock { full: true }) | Err(Error::Timeout) => {
                assert!(len <= self.tx.max_record_len());
                // The producer re-read the consumer's position before giving
                // up, so its fill is current.
                let free = cap.saturating_sub(self.tx.fill());
                // Refused: the record and the 8-byte end marker after it do
                // not fit, after padding to the end of the ring if it wraps.
                assert!(
                    free < 2 * spsc::record_size(len) + 8,
                    "a grant of {len} bytes refused with {free} of {cap} bytes free"
                );
            }
            Err(e) => panic!("a grant of {len} bytes failed on a healthy ring: {e}"),
        }
        self.check_fill();
    }

    /// Track, as the producer does, whether its last call failed.
    fn note(&mut self, res: &shmring::Result<()>) {
        match res {
            Ok(()) => self.tx_failed = false,
            Err(e) if e.is_transient() => {}
            Err(_) => self.tx_failed = true,
        }
    }

    /// The producer's fill is within the ring and covers what the model holds.
    fn check_fill(&self) {
        let cap = self.tx.capacity();
        let fill = self.tx.fill();
        assert!(fill <= cap, "producer fill {fill} exceeds capacity {cap}");
        // Records of one length staged together share a header (a run), so
        // each record takes at least its padded payload.
        assert!(
            fill >= self.model.payload_bytes(),
            "producer fill {fill} below the {} payload bytes held",
            self.model.payload_bytes()
        );
    }

    /// Check the outcome of `try_grant_records` of `count` records of `len`
    /// bytes each, of which `recs` were kept.
    fn sent_run(&mut self, len: usize, count: usize, recs: Vec<Vec<u8>>, res: shmring::Result<()>, fate: Fate) {
        self.note(&res);
        if self.damaged {
            if let Err(e) = res {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
        let cap = self.tx.capacity();
        // The run's bytes: one header, then the records `stride` apart.
        let total = 8 + (count * len.next_multiple_of(8)) as u64;
        match res {
            Ok(()) => {
                self.model.queue.extend(recs);
                // Committing even an empty run publishes what was staged.
                if matches!(fate, Fate::Commit) {
                    self.model.published = self.model.queue.len();
                }
            }
            Err(Error::InvalidArgument(_)) => {
                assert!(count == 0 || total > cap - 8, "a run of {count} records of {len} bytes refused");
            }
            Err(Error::WouldBlock { full: true }) => {
                let free = cap.saturating_sub(self.tx.fill());
                assert!(free < 2 * total + 8, "a run of {total} bytes refused with {free} of {cap} bytes free");
            }
            Err(e) => panic!("a run of {count} records of {len} bytes failed on a healthy ring: {e}"),
        }
        self.check_fill();
    }

    /// Check the outcome of a receive.
    fn got(&mut self, res: shmring::Result<Option<Vec<u8>>>) {
        if self.damaged {
            if let Err(e) = res {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
        match res {
            Ok(Some(rec)) => self.model.received(&rec),
            Ok(None) => panic!("end of stream while the producer is attached"),
            Err(Error::WouldBlock { full: false }) => {
                assert_eq!(self.model.published, 0, "ring said empty with published records")
            }
            Err(e) => panic!("receive failed on a healthy ring: {e}"),
        }
    }

    /// `recv_batch`, or `recv_runs` if `runs`.
    fn recv_batch(&mut self, max: usize, runs: bool) {
        // With nothing surely published, make the producer's role word say
        // aborted for the duration of the call: an empty ring then ends the
        // call with `PeerAborted` instead of waiting.
        let state = self.peer.producer_state();
        let guard = (self.damaged || self.model.published == 0).then(|| state.swap(ROLE_ABORTED, Ordering::Relaxed));
        let mut got = Vec::new();
        let res = if runs {
            self.rx.recv_runs(max, |run| {
                let (len, stride) = (run.record_len(), run.stride());
                assert!(!run.is_empty());
                assert_eq!(stride, len.next_multiple_of(8));
                assert_eq!(run.as_bytes().len(), (run.len() - 1) * stride + len);
                assert_eq!(run.get(run.len()), None);
                for (i, rec) in run.iter().enumerate() {
                    assert_eq!(run.get(i), Some(rec));
                    got.push(rec.to_vec());
                }
            })
        } else {
            self.rx.recv_batch(max, |b| got.push(b.to_vec()))
        };
        if let Some(old) = guard {
            state.store(old, Ordering::Relaxed);
        }
        // The guard's doing: nothing was there.
        let res = match res {
            Err(Error::PeerAborted { .. }) if guard.is_some() => {
                assert!(got.is_empty(), "records passed, then PeerAborted");
                Ok(0)
            }
            other => other,
        };
        if self.damaged {
            if let Err(e) = res {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
        let published = self.model.published;
        let n = res.unwrap_or_else(|e| panic!("recv_batch failed on a healthy ring: {e}"));
        assert_eq!(n, got.len(), "recv_batch returned {n} but passed {} records", got.len());
        assert!(n <= max.max(1), "recv_batch passed {n} records, max {max}");
        assert!(n >= max.max(1).min(published), "recv_batch passed {n} of {published} published records");
        for rec in &got {
            self.model.received(rec);
        }
    }

    /// Close (or abort) the producer and drain: every record finished must
    /// come out, in order, then end of stream; after an abort, or if the
    /// producer found the ring corrupted, an error and never end of stream.
    fn finish(self, abort: bool) {
        let Harness { tx, mut rx, peer, mut model, damaged, tx_failed } = self;
        // Dropped after a failed call, the producer aborts too.
        let failed = abort || tx_failed || tx.is_poisoned();
        if abort {
            tx.abort("fuzz: aborted");
        } else {
            drop(tx);
        }
        let limit = model.queue.len() + peer.capacity / 8 + 2;
        for _ in 0..limit {
            match rx.try_recv() {
                Ok(Some(rec)) if !damaged => model.received(&rec),
                Ok(Some(rec)) => {
                    std::hint::black_box(rec.iter().fold(0u8, |a, &b| a ^ b));
                }
                Ok(None) => {
                    assert!(!failed, "a stream whose producer aborted (or was poisoned) ended cleanly");
                    assert!(
                        damaged || model.queue.is_empty(),
                        "end of stream with {} records unreceived",
                        model.queue.len()
                    );
                    return;
                }
                Err(Error::PeerAborted { reason, .. }) if failed && !damaged => {
                    if abort {
                        assert_eq!(reason, "fuzz: aborted");
                    }
                    assert!(model.queue.is_empty(), "aborted with {} records unreceived", model.queue.len());
                    return;
                }
                Err(e) => {
                    assert!(damaged || failed, "draining a closed healthy ring failed: {e}");
                    return;
                }
            }
        }
        assert!(damaged, "a closed healthy ring never reached end of stream");
    }
}
