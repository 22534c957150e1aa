//! shmring itself: two SPSC rings for ping-pong (parent→child, child→parent), one for
//! streaming. The parent creates every segment and unlinks its name as soon as the first
//! message proves the child has attached; until then it checks that the child is still there
//! (after that, the ring itself reports a dead peer).
//!
//! The 8-byte stream row batches on both sides — the producer writes [`BATCH`] records at a
//! time in place with `grant_records` and publishes them with one store, the consumer takes
//! everything available per `recv_batch` — since that is how small messages are meant to go
//! through a ring. Every other row sends and receives one message per call.
//!
//! The `shmring-sem` row is the park row with rings created for the semaphore notifier
//! ([`NotifierKind::Semaphore`]); every other row's rings use the default, the futex.

use shmring::spsc::{Consumer, Producer};
use shmring::wait::NotifierKind;
use shmring::{Location, SpscOptions, WaitPolicy};

use super::case::{Budget, Case, Mode, Transport};
use super::guard::{Cleanup, unique_name};
use super::peer::{self, ChildSpec, Launcher, PeerWatch};
use super::protocol::{self, Channel, END, FirstContact, MARK, Outcome, StreamCheck, read_seq};

/// Data bytes per ring.
const CAPACITY: u64 = 1 << 20;
/// Records the batching producer writes per publish (one run, one header).
pub(crate) const BATCH: u64 = 512;

/// Whether `case` is the batched small-message stream.
pub(crate) fn batched(case: &Case) -> bool {
    case.is_stream() && case.payload == 8
}

/// The wait policy of both sides in `mode` (shared with the MPMC rows).
pub(crate) fn policy(mode: Mode) -> WaitPolicy {
    match mode {
        Mode::Spin => WaitPolicy::busy_poll(),
        Mode::Park => WaitPolicy::park(),
        // Streaming uses the library's default: spin briefly, yield, then park. (The RPC
        // modes never reach here: those rows set their own policies.)
        Mode::Blocking | Mode::Stream | Mode::Call | Mode::InFlight => WaitPolicy::default(),
    }
}

/// Whether ping-pong producers demote what they send ([`Producer::set_demote`]): in spin
/// mode, where the peer is polling for it. A parked peer would not notice.
pub(crate) fn demote(mode: Mode) -> bool {
    mode == Mode::Spin
}

fn err(what: &'static str) -> impl Fn(shmring::Error) -> String {
    move |e| format!("shmring: {what}: {e}")
}

pub(crate) fn location(base: &str, suffix: &str) -> Location {
    Location::shm(format!("{base}-{suffix}"))
}

/// Removes the segment name when dropped (or on the emergency path).
pub(crate) fn unlink_later(loc: Location) -> Cleanup {
    Cleanup::new(move || {
        let _ = loc.unlink();
    })
}

struct RingChannel {
    tx: Option<Producer>,
    rx: Option<Consumer>,
    /// The child, until its first message has arrived (parent side).
    before_contact: Option<PeerWatch>,
}

impl Channel for RingChannel {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        let tx = self.tx.as_mut().ok_or("shmring: no ring to send on")?;
        tx.send(msg).map_err(err("send"))
    }

    #[inline]
    fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        let rx = self.rx.as_mut().ok_or("shmring: no ring to receive from")?;
        if let Some(peer) = self.before_contact {
            let got = first_message(rx, peer, f)?;
            self.before_contact = None;
            return Ok(got);
        }
        match rx.recv().map_err(err("recv"))? {
            Some(record) => Ok(f(&record)),
            None => Err("shmring: peer closed the stream early".into()),
        }
    }
}

/// Parent side: receives the child's first message and hands it to `f`, waiting in slices of
/// [`peer::PEER_CHECK`] and checking between them that the child is still there. Until the
/// child has attached, the ring cannot tell that it died and would wait for ever; once it has,
/// `recv` reports a dead producer by itself.
fn first_message<T>(rx: &mut Consumer, peer: PeerWatch, f: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
    loop {
        match rx.recv_timeout(peer::PEER_CHECK) {
            Ok(Some(record)) => return Ok(f(&record)),
            Ok(None) => return Err("shmring: peer closed the stream early".into()),
            Err(shmring::Error::Timeout) if !peer.gone() => {}
            Err(shmring::Error::Timeout) => {
                return Err("shmring: the child process exited before its first message".into());
            }
            Err(e) => return Err(err("recv")(e)),
        }
    }
}

/// Parent side: creates the ring(s), starts the child, measures.
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let base = unique_name();
    let mut opts = SpscOptions::new().capacity(CAPACITY);
    if case.transport == Transport::ShmringSem {
        // Recorded in the segment: the child's handles use it too.
        opts = opts.notifier(NotifierKind::Semaphore);
    }
    let policy = policy(case.mode);
    if case.is_stream() {
        let loc = location(&base, "data");
        let mut rx = Consumer::create(&loc, &opts).map_err(err("creating ring"))?;
        let unlink = unlink_later(loc);
        rx.set_wait_policy(policy);
        let child = launcher.spawn(case, budget, vec![base], vec![])?;
        if batched(case) {
            let result = batched_reader(&mut rx, unlink, child.watch()).map(Outcome::Stream);
            return protocol::conclude(result, child);
        }
        let ch = RingChannel { tx: None, rx: Some(rx), before_contact: Some(child.watch()) };
        protocol::drive(&mut FirstContact::new(ch, vec![unlink]), case, budget, child)
    } else {
        let (ping, pong) = (location(&base, "ping"), location(&base, "pong"));
        let mut tx = Producer::create(&ping, &opts).map_err(err("creating ring"))?;
        let unlink_ping = unlink_later(ping);
        let mut rx = Consumer::create(&pong, &opts).map_err(err("creating ring"))?;
        let unlink_pong = unlink_later(pong);
        tx.set_wait_policy(policy);
        tx.set_demote(demote(case.mode));
        rx.set_wait_policy(policy);
        let child = launcher.spawn(case, budget, vec![base], vec![])?;
        let ch = RingChannel { tx: Some(tx), rx: Some(rx), before_contact: Some(child.watch()) };
        let mut ch = FirstContact::new(ch, vec![unlink_ping, unlink_pong]);
        protocol::drive(&mut ch, case, budget, child)
    }
}

/// Child side: opens the ring(s) the parent created and plays its part.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    let base = peer::name(spec, 0)?;
    let policy = policy(spec.case.mode);
    if spec.case.is_stream() {
        let mut tx = Producer::open(&location(base, "data")).map_err(err("opening ring"))?;
        tx.set_wait_policy(policy);
        if batched(&spec.case) {
            return batched_writer(&mut tx, &spec.budget);
        }
        let mut ch = RingChannel { tx: Some(tx), rx: None, before_contact: None };
        protocol::serve(&mut ch, spec)
    } else {
        let mut rx = Consumer::open(&location(base, "ping")).map_err(err("opening ring"))?;
        let mut tx = Producer::open(&location(base, "pong")).map_err(err("opening ring"))?;
        tx.set_wait_policy(policy);
        tx.set_demote(demote(spec.case.mode));
        rx.set_wait_policy(policy);
        let mut ch = RingChannel { tx: Some(tx), rx: Some(rx), before_contact: None };
        protocol::serve(&mut ch, spec)
    }
}

/// Stages one 8-byte record holding `value`.
#[inline]
fn put(tx: &mut Producer, value: u64) -> Result<(), String> {
    let mut grant = tx.grant(8).map_err(err("grant"))?;
    grant.copy_from_slice(&value.to_le_bytes());
    grant.stage();
    Ok(())
}

/// Writes the next `n` sequence numbers as one run of 8-byte records, in place, and
/// publishes them (with anything staged before).
#[inline]
fn put_run(tx: &mut Producer, seq: &mut u64, n: u64) -> Result<(), String> {
    let mut run = tx.grant_records(8, n as usize).map_err(err("grant_records"))?;
    for rec in run.chunks_exact_mut(8) {
        rec.copy_from_slice(&seq.to_le_bytes());
        *seq += 1;
    }
    run.commit();
    Ok(())
}

/// The batching writer: same message sequence as `protocol::stream_writer`, published
/// [`BATCH`] records at a time, each batch one run written in place.
fn batched_writer(tx: &mut Producer, budget: &Budget) -> Result<(), String> {
    let mut seq = 0u64;
    let start = std::time::Instant::now();
    while start.elapsed() < budget.warmup {
        put_run(tx, &mut seq, BATCH)?;
    }
    put(tx, MARK)?;
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    while !budget.finished(sent, start.elapsed()) {
        let n = budget.next_chunk(sent, BATCH);
        if n > 0 {
            put_run(tx, &mut seq, n)?;
        }
        sent += n;
    }
    put(tx, END)?;
    put(tx, sent)?;
    tx.flush();
    Ok(())
}

/// The batching reader: verifies every record in place, releasing once per batch (the first
/// record, which proves that the child has attached, on its own).
fn batched_reader(rx: &mut Consumer, unlink: Cleanup, peer: PeerWatch) -> Result<protocol::Throughput, String> {
    let mut check = StreamCheck::default();
    let first = first_message(rx, peer, |m| read_seq(m, 8))??;
    // The child has attached: the name can go.
    drop(unlink);
    let mut complete = check.feed(first)?;
    let mut failure: Option<String> = None;
    while !complete {
        let n = rx
            .recv_batch(usize::MAX, |m| {
                if complete || failure.is_some() {
                    return;
                }
                match read_seq(m, 8).and_then(|seq| check.feed(seq)) {
                    Ok(done) => complete = done,
                    Err(e) => failure = Some(e),
                }
            })
            .map_err(err("recv_batch"))?;
        if let Some(e) = failure {
            return Err(e);
        }
        if n == 0 && !complete {
            return Err("shmring: peer closed the stream early".into());
        }
    }
    Ok(check.result().expect("complete"))
}
