//! Fuzz target `mpmc_ops`: a sequence of operations on one MPMC ring with
//! one to three producer handles and one to three consumer handles, all in
//! one process and one thread, checked against a model, with "peer writes"
//! that overwrite counters, slot words or participant entries through a
//! second mapping.
//!
//! The operations run one after another, so until the first peer write the
//! ring is a plain FIFO queue of positions: each holds a message or a skip
//! (a dropped grant, or a commit that was too long). The model is that queue.
//! Every received message must be the model's first message, byte for byte,
//! exactly once; a `try_` call says full or empty exactly when the model
//! does; after `close_ring` producers get `Closed` and consumers drain what
//! is left, then end of stream.
//!
//! After a peer write any typed error is fine, but nothing may panic, crash,
//! hang or touch memory outside the mapping. No call blocks: only the `try_`
//! and `_timeout` forms (20 µs) are used after a peer write; `send_batch` and
//! `recv_batch`, which wait for a first slot or message, run only before one,
//! and only when the model says they return at once.
//!
//! The ring lives in a sealed memfd: nothing is left in `/dev/shm`.
#![no_main]

use std::collections::VecDeque;
use std::mem::offset_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shmring::header::{CONTROL_OFFSET, MPMC_HEADER_LEN, MpmcControl, Participant, mpmc_slot_stride};
use shmring::mpmc::{self, Consumer, MpmcOptions, Producer};
use shmring::{Error, Segment, WaitPolicy};

/// The timeout of every `_timeout` call.
const TINY: Duration = Duration::from_micros(20);

#[derive(Arbitrary, Debug)]
struct Input {
    /// Slot count `2 << (slots_shift % 4)`: 2 to 16.
    slots_shift: u8,
    /// Slot size `8 + slot_size % 57` bytes, rounded up to 8: 8 to 64.
    slot_size: u8,
    /// Producers `1 + producers % 3`.
    producers: u8,
    /// Consumers `1 + consumers % 3`.
    consumers: u8,
    /// Bit i set: handle i (producers, then consumers) is attached through
    /// its own mapping of the memfd instead of `new_producer`/`new_consumer`.
    own_mapping: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    TrySend {
        p: u8,
        len: u8,
        fill: u8,
    },
    SendTimeout {
        p: u8,
        len: u8,
        fill: u8,
    },
    /// `send_batch` of `count % 8 + 1` messages.
    SendBatch {
        p: u8,
        count: u8,
        len: u8,
        fill: u8,
    },
    /// `try_grant` (or `grant_timeout`), write `len` bytes, commit `commit` bytes.
    GrantCommit {
        p: u8,
        len: u8,
        commit: u8,
        wait: bool,
        fill: u8,
    },
    /// `try_grant`, write, drop the grant: the position becomes a skip.
    GrantDrop {
        p: u8,
        fill: u8,
    },
    /// Producer `p` holds a grant while producer `q` sends, then commits
    /// (or drops) it; consumer `c` tries to receive in between.
    GrantAround {
        p: u8,
        q: u8,
        c: u8,
        len: u8,
        fill: u8,
        commit: bool,
    },
    TryRecv {
        c: u8,
    },
    RecvTimeout {
        c: u8,
    },
    /// `recv_batch(max)`.
    RecvBatch {
        c: u8,
        max: u8,
    },
    /// `close_ring` from producer (or consumer) handle `h`.
    Close {
        h: u8,
        consumer: bool,
    },
    /// Producer handle `h` aborts, and a new producer takes its place: the
    /// ring stays open and every message it sent stays receivable.
    Abort {
        h: u8,
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
    Enqueue,
    Dequeue,
    /// The sequence word of slot `i % slot_count`.
    Seq(u8),
    /// The length word of slot `i % slot_count`.
    Len(u8),
    /// Field `f % 6` of participant entry `i % 8`.
    Participant(u8, u8),
    /// Any word of the statistics line.
    Shared(u8),
}

/// What a peer write stores.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    Raw(u64),
    /// Only the low 4 bytes.
    Low(u32),
    /// Only the high 4 bytes.
    High(u32),
    /// The current value plus a small signed delta.
    Add(i16),
}

/// The second mapping, as another process would have it.
struct Peer {
    seg: Segment,
    slots: usize,
    stride: usize,
}

impl Peer {
    fn offset(&self, w: Word) -> usize {
        let ctl = |off: usize| CONTROL_OFFSET + off;
        let slot = |i: u8| MPMC_HEADER_LEN + usize::from(i) % self.slots * self.stride;
        match w {
            Word::Enqueue => ctl(offset_of!(MpmcControl, enqueue)),
            Word::Dequeue => ctl(offset_of!(MpmcControl, dequeue)),
            Word::Seq(i) => slot(i),
            Word::Len(i) => slot(i) + 8,
            Word::Participant(i, f) => {
                let entry = offset_of!(MpmcControl, participants) + usize::from(i % 8) * 128;
                debug_assert!(size_of::<Participant>() <= 128);
                ctl(entry + usize::from(f % 6) * 8)
            }
            Word::Shared(i) => ctl(offset_of!(MpmcControl, shared) + usize::from(i % 4) * 8),
        }
    }

    fn write(&self, w: Word, v: Value) {
        let off = self.offset(w);
        assert!(off.is_multiple_of(8) && off + 8 <= self.seg.len());
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the
        // word is shared memory that the handles access atomically too.
        let word = unsafe { &*(self.seg.as_ptr().add(off) as *const AtomicU64) };
        let old = word.load(Ordering::Relaxed);
        let new = match v {
            Value::Raw(x) => x,
            Value::Low(x) => (old & !0xffff_ffff) | u64::from(x),
            Value::High(x) => (old & 0xffff_ffff) | (u64::from(x) << 32),
            Value::Add(d) => old.wrapping_add(d as i64 as u64),
        };
        word.store(new, Ordering::Relaxed);
    }
}

/// What the ring must hold while no peer write has happened.
struct Model {
    /// Positions claimed by producers and not yet by consumers, oldest
    /// first: `Some(message)` or `None` for a skip.
    queue: VecDeque<Option<Vec<u8>>>,
    slots: usize,
    slot_size: usize,
    closed: bool,
    /// Numbers the messages, so a reordering or a repeat shows.
    seq: u64,
    /// Positions ever claimed by producers.
    enqueued: u64,
}

impl Model {
    fn message(&mut self, len: usize, fill: u8) -> Vec<u8> {
        let mut m = vec![fill; len];
        let n = len.min(8);
        m[..n].copy_from_slice(&self.seq.to_le_bytes()[..n]);
        self.seq += 1;
        m
    }

    fn full(&self) -> bool {
        self.queue.len() >= self.slots
    }

    fn push(&mut self, m: Option<Vec<u8>>) {
        assert!(!self.full(), "the ring took more positions than it has slots");
        self.queue.push_back(m);
        self.enqueued += 1;
    }

    /// Drop the skips at the front: a receive passes over them.
    fn drop_skips(&mut self) {
        while matches!(self.queue.front(), Some(None)) {
            self.queue.pop_front();
        }
    }

    fn has_message(&self) -> bool {
        self.queue.iter().any(Option::is_some)
    }

    fn received(&mut self, got: &[u8]) {
        self.drop_skips();
        let want = self.queue.pop_front().flatten().expect("received a message nobody sent");
        assert_eq!(got, &want[..], "received message differs from the one sent next");
    }

    /// What `recv_batch(max)` passes: it claims every ready position up to
    /// `max` (at least 1, at most the slot count) at once, and claims again
    /// while what it claimed held only skips.
    fn batch(&mut self, max: usize) -> Vec<Vec<u8>> {
        let want = max.clamp(1, self.slots);
        while !self.queue.is_empty() {
            let k = want.min(self.queue.len());
            let got: Vec<Vec<u8>> = self.queue.drain(..k).flatten().collect();
            if !got.is_empty() {
                return got;
            }
        }
        Vec::new()
    }

    /// A receive found nothing: every skip is consumed, nothing is left.
    fn empty(&mut self, end: bool) {
        assert!(!self.has_message(), "a receive found nothing while a message was queued");
        assert_eq!(end, self.closed, "end of stream iff closed (and drained)");
        self.queue.clear();
    }
}

struct Harness {
    tx: Vec<Producer>,
    rx: Vec<Consumer>,
    peer: Peer,
    chk: Check,
}

/// The model, and whether it still applies.
struct Check {
    model: Model,
    /// A peer write happened: the model no longer applies.
    damaged: bool,
}

impl Check {
    /// Check the outcome of a send of `msg` (or of a grant, with `msg` the
    /// message the commit will publish) against the model.
    fn sent(&mut self, r: shmring::Result<()>, msg: Option<Vec<u8>>, len: usize) {
        if self.damaged {
            return;
        }
        match r {
            Ok(()) => {
                assert!(!self.model.closed, "a send succeeded on a closed ring");
                assert!(len <= self.model.slot_size, "a message longer than a slot was sent");
                self.model.push(msg);
            }
            Err(Error::InvalidArgument(_)) => assert!(len > self.model.slot_size, "a fitting message was refused"),
            Err(Error::Closed(_)) => assert!(self.model.closed, "Closed on an open ring"),
            Err(e) if not_now(&e) => {
                assert!(self.model.full() && !self.model.closed, "a send would block on a ring with room: {e}")
            }
            Err(e) => panic!("send failed on an undamaged ring: {e}"),
        }
    }

    /// Check the outcome of a receive against the model.
    fn got(&mut self, r: shmring::Result<Option<Vec<u8>>>) {
        if self.damaged {
            return;
        }
        match r {
            Ok(Some(m)) => self.model.received(&m),
            Ok(None) => self.model.empty(true),
            Err(e) if not_now(&e) => self.model.empty(false),
            Err(e) => panic!("receive failed on an undamaged ring: {e}"),
        }
    }
}

fuzz_target!(|input: Input| {
    let slots = 2usize << (input.slots_shift % 4);
    let opts = MpmcOptions::new().slot_count(slots).slot_size(8 + usize::from(input.slot_size % 57));
    let seg = mpmc::create_memfd("shmring-fuzz-mpmc", &opts).expect("create a memfd ring");
    let map = || Segment::from_fd(seg.fd().try_clone_to_owned().expect("dup the memfd"), "fuzz").expect("map");
    let peer_seg = map();
    let (np, nc) = (1 + usize::from(input.producers % 3), 1 + usize::from(input.consumers % 3));
    let own = |i: usize| input.own_mapping & (1 << i) != 0;
    let mut tx = Vec::new();
    let mut rx = Vec::new();
    let first = Producer::attach(map()).expect("attach the first producer");
    for i in 1..np {
        tx.push(if own(i) { Producer::attach(map()) } else { first.new_producer() }.expect("attach a producer"));
    }
    for i in 0..nc {
        rx.push(if own(np + i) { Consumer::attach(map()) } else { first.new_consumer() }.expect("attach a consumer"));
    }
    tx.insert(0, first);
    drop(seg);
    for h in &mut tx {
        h.set_wait_policy(WaitPolicy::park());
    }
    for h in &mut rx {
        h.set_wait_policy(WaitPolicy::park());
    }
    let (slot_size, slot_count) = (tx[0].slot_size(), tx[0].slot_count());
    assert_eq!(slot_count, slots);
    assert_eq!(slot_size, opts.slot_size_bytes());
    let stride = mpmc_slot_stride(slot_size as u32) as usize;
    let peer = Peer { seg: peer_seg, slots, stride };
    let model = Model { queue: VecDeque::new(), slots, slot_size, closed: false, seq: 0, enqueued: 0 };
    let mut h = Harness { tx, rx, peer, chk: Check { model, damaged: false } };
    for op in input.ops {
        h.apply(op);
    }
    h.finish();
});

/// Whether `e` is what a `try_`/`_timeout` call returns when it cannot go on now.
fn not_now(e: &Error) -> bool {
    matches!(e, Error::WouldBlock { .. } | Error::Timeout)
}

impl Harness {
    fn p(&self, i: u8) -> usize {
        usize::from(i) % self.tx.len()
    }

    fn c(&self, i: u8) -> usize {
        usize::from(i) % self.rx.len()
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::TrySend { p, len, fill } => {
                let msg = self.chk.model.message(usize::from(len % 80), fill);
                let i = self.p(p);
                let r = self.tx[i].try_send(&msg);
                self.chk.sent(r, Some(msg.clone()), msg.len());
            }
            Op::SendTimeout { p, len, fill } => {
                let msg = self.chk.model.message(usize::from(len % 80), fill);
                let i = self.p(p);
                let r = self.tx[i].send_timeout(&msg, TINY);
                self.chk.sent(r, Some(msg.clone()), msg.len());
            }
            Op::SendBatch { p, count, len, fill } => {
                // Waits for a first free slot: only when the model has one,
                // or the call fails at once (closed, too long).
                let len = usize::from(len % 80);
                let closed_or_long = self.chk.model.closed || len > self.chk.model.slot_size;
                if self.chk.damaged || (self.chk.model.full() && !closed_or_long) {
                    return;
                }
                let msgs: Vec<Vec<u8>> = (0..count % 8 + 1).map(|_| self.chk.model.message(len, fill)).collect();
                let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                let i = self.p(p);
                match self.tx[i].send_batch(&refs) {
                    Ok(n) => {
                        assert!(!closed_or_long, "send_batch sent on a closed ring or too long messages");
                        let room = self.chk.model.slots - self.chk.model.queue.len();
                        assert_eq!(n, room.min(msgs.len()), "send_batch takes every free slot it can use");
                        for m in msgs.into_iter().take(n) {
                            self.chk.model.push(Some(m));
                        }
                    }
                    Err(Error::InvalidArgument(_)) => assert!(len > self.chk.model.slot_size),
                    Err(Error::Closed(_)) => assert!(self.chk.model.closed && len <= self.chk.model.slot_size),
                    Err(e) => panic!("send_batch failed on an undamaged ring: {e}"),
                }
            }
            Op::GrantCommit { p, len, commit, wait, fill } => {
                let i = self.p(p);
                let msg = self.chk.model.message(usize::from(len) % (self.chk.model.slot_size + 1), fill);
                let commit = usize::from(commit % 80);
                let tx = &mut self.tx[i];
                let r = if wait { tx.grant_timeout(TINY) } else { tx.try_grant() };
                match r {
                    Ok(mut g) => {
                        // The whole slot gets known bytes, so a commit longer
                        // than the message publishes known bytes too.
                        g.fill(!fill);
                        g[..msg.len()].copy_from_slice(&msg);
                        let fits = commit <= g.len();
                        let published = fits.then(|| g[..commit].to_vec());
                        let r = g.commit(commit);
                        if self.chk.damaged {
                            return;
                        }
                        assert_eq!(r.is_ok(), fits, "commit of {commit} bytes: {r:?}");
                        // A refused commit publishes a skip.
                        self.chk.sent(Ok(()), published, 0);
                    }
                    Err(e) => self.chk.sent(Err(e), None, 0),
                }
            }
            Op::GrantDrop { p, fill } => {
                let i = self.p(p);
                match self.tx[i].try_grant() {
                    Ok(mut g) => {
                        g.fill(fill);
                        drop(g);
                        self.chk.sent(Ok(()), None, 0);
                    }
                    Err(e) => self.chk.sent(Err(e), None, 0),
                }
            }
            Op::GrantAround { p, q, c, len, fill, commit } => {
                let (i, j, k) = (self.p(p), self.p(q), self.c(c));
                if i == j {
                    return;
                }
                let msg = self.chk.model.message(usize::from(len) % (self.chk.model.slot_size + 1), fill);
                let other = self.chk.model.message(usize::from(len / 2) % (self.chk.model.slot_size + 1), !fill);
                let (a, b) = if i < j {
                    let (l, r) = self.tx.split_at_mut(j);
                    (&mut l[i], &mut r[0])
                } else {
                    let (l, r) = self.tx.split_at_mut(i);
                    (&mut r[0], &mut l[j])
                };
                let mut g = match a.try_grant() {
                    Ok(g) => g,
                    Err(e) => return self.chk.sent(Err(e), None, 0),
                };
                g[..msg.len()].copy_from_slice(&msg);
                let r = b.try_send(&other);
                // Messages before the held position come out; then the
                // consumer must find the held position not ready.
                let before = self.chk.model.queue.iter().filter(|m| m.is_some()).count();
                let got = self.rx[k].try_recv().map(|o| o.map(|r| r.to_vec()));
                let r2 = if commit { g.commit(msg.len()) } else { Ok(drop(g)) };
                if self.chk.damaged {
                    return;
                }
                assert!(r2.is_ok());
                // The positions claimed before the held one, then the held
                // one, then the other producer's; the receive saw only the first.
                let ahead = self.chk.model.queue.len();
                self.chk.model.push(commit.then(|| msg.clone()));
                self.chk.sent(r, Some(other.clone()), other.len());
                match got {
                    Ok(Some(m)) => {
                        assert!(before > 0, "a message came out past a held grant");
                        self.chk.model.received(&m);
                    }
                    Ok(None) => panic!("end of stream with a grant held"),
                    Err(e) if not_now(&e) => {
                        assert_eq!(before, 0, "try_recv found nothing while a message was ready: {e}");
                        // The skips before the held position were consumed.
                        for _ in 0..ahead {
                            assert!(self.chk.model.queue.pop_front().is_some_and(|m| m.is_none()));
                        }
                    }
                    Err(e) => panic!("receive failed on an undamaged ring: {e}"),
                }
            }
            Op::TryRecv { c } => {
                let k = self.c(c);
                let r = self.rx[k].try_recv().map(|o| o.map(|r| r.to_vec()));
                self.chk.got(r);
            }
            Op::RecvTimeout { c } => {
                let k = self.c(c);
                let r = self.rx[k].recv_timeout(TINY).map(|o| o.map(|r| r.to_vec()));
                self.chk.got(r);
            }
            Op::RecvBatch { c, max } => {
                // Waits for a first message: only when the model has one, or
                // the ring is closed (then it returns at once).
                if self.chk.damaged || !(self.chk.model.has_message() || self.chk.model.closed) {
                    return;
                }
                let k = self.c(c);
                let mut out = Vec::new();
                let r = self.rx[k].recv_batch(usize::from(max), |m| out.push(m.to_vec()));
                let n = r.unwrap_or_else(|e| panic!("recv_batch failed on an undamaged ring: {e}"));
                assert_eq!(n, out.len(), "recv_batch counts what it passed");
                let want = self.chk.model.batch(usize::from(max));
                assert_eq!(out, want, "recv_batch passes the messages of the ready positions it claims");
                if n == 0 {
                    self.chk.model.empty(true);
                }
                assert!(n <= usize::from(max).max(1), "recv_batch passed more than asked");
            }
            Op::Close { h, consumer } => {
                if consumer {
                    let k = self.c(h);
                    self.rx[k].close_ring();
                } else {
                    let i = self.p(h);
                    self.tx[i].close_ring();
                }
                self.chk.model.closed = true;
                assert!(self.tx[0].is_closed() || self.chk.damaged);
            }
            Op::Abort { h } => {
                let i = self.p(h);
                let closed = self.chk.model.closed;
                match self.tx[i].new_producer() {
                    Ok(fresh) => {
                        let old = std::mem::replace(&mut self.tx[i], fresh);
                        old.abort("fuzz: producer aborted");
                        assert!(self.chk.damaged || self.tx[i].is_closed() == closed, "an abort closes nothing");
                    }
                    Err(e) => assert!(self.chk.damaged, "attaching a producer failed on an undamaged ring: {e}"),
                }
            }
            Op::Peer { word, value } => {
                self.peer.write(word, value);
                self.chk.damaged = true;
            }
        }
    }

    /// Close the ring and drain it from every consumer in turn.
    fn finish(mut self) {
        let expect_enqueued = self.chk.model.enqueued;
        if !self.chk.damaged {
            let stats = self.tx[0].stats();
            assert_eq!(stats.enqueued, expect_enqueued, "positions claimed by producers");
        }
        self.tx[0].close_ring();
        self.chk.model.closed = true;
        let slots = self.chk.model.slots;
        // Each round receives a message or ends; bounded even if damaged.
        for round in 0..2 * slots + 4 {
            let k = round % self.rx.len();
            let r = self.rx[k].recv_timeout(TINY).map(|o| o.map(|r| r.to_vec()));
            let end = matches!(r, Ok(None));
            let failed = r.is_err();
            self.chk.got(r);
            if end || (self.chk.damaged && failed) {
                break;
            }
        }
        if !self.chk.damaged {
            assert!(self.chk.model.queue.is_empty(), "messages left after the drain");
            let stats = self.tx[0].stats();
            assert_eq!(stats.dequeued, stats.enqueued, "consumers passed every position");
            assert_eq!(stats.recovered, 0, "nothing to recover in a live ring");
        }
    }
}
