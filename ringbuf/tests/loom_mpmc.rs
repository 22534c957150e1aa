#![cfg(loom)]
//! loom models of the MPMC ring.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmring --test loom_mpmc --release`
//! (a separate target directory avoids rebuilding the normal one).
//!
//! Rings have two slots (four in model 1), so most models wrap or fill,
//! and each model runs two to four messages. Handles use the park
//! policy, so every wait goes through the eventcounts, whose futex is
//! modelled without timeouts: a lost wake-up is a deadlock. Payload bytes
//! have loom shadow cells, so a missing Release/Acquire on a sequence word
//! shows up as a causality violation. Under loom a waiter that finds a slot
//! claimed checks its claimant at once (time does not pass), so every model
//! also checks that a live claimant is never robbed. `LOOM_NOTES.md` next to
//! this file records, for each model, an ordering whose weakening it catches.

mod loom_support;

use loom::thread;
use loom_support::model;
use shmring::mpmc::{Consumer, Producer, loom_ring};

/// Message `i` of producer `p`: 8 bytes, every one depending on both.
fn payload(p: u8, i: u8) -> [u8; 8] {
    std::array::from_fn(|j| p.wrapping_mul(61) ^ i.wrapping_mul(17) ^ (j as u8).wrapping_mul(5) ^ 0xa5)
}

/// Decode a message back to (producer, index), checking every byte.
fn decode(m: &[u8]) -> (u8, u8) {
    for p in 0..4 {
        for i in 0..8 {
            if m == payload(p, i) {
                return (p, i);
            }
        }
    }
    panic!("message {m:?} is no payload: torn or stale");
}

fn send_all(tx: &mut Producer, p: u8, n: u8) {
    send_all_from(tx, p, 0, n);
}

/// Send messages `from..to` of producer `p`.
fn send_all_from(tx: &mut Producer, p: u8, from: u8, to: u8) {
    for i in from..to {
        tx.send(&payload(p, i)).expect("send");
    }
}

/// Receive `n` messages; check each producer's arrive in order.
fn recv_n(rx: &mut Consumer, n: usize) -> Vec<(u8, u8)> {
    let mut got: Vec<(u8, u8)> = Vec::new();
    for _ in 0..n {
        let m = rx.recv().expect("recv").expect("end of stream too early");
        let (p, i) = decode(&m);
        assert!(got.iter().filter(|g| g.0 == p).all(|g| g.1 < i), "producer {p}: {i} out of order in {got:?}");
        got.push((p, i));
    }
    got
}

/// Model 1 — two producers, one consumer, four slots. Producer 0 sends two
/// messages, producer 1 one. The claims race and either producer may commit
/// first, so the consumer can find the position it needs claimed but not yet
/// committed: it checks the claimant, must leave it alone, and waits. It
/// receives all three intact, each producer's in order.
#[test]
fn mpmc_two_producers_one_consumer() {
    model(|| {
        let (mut ps, mut cs) = loom_ring(8, 4, 2, 1);
        let mut rx = cs.pop().unwrap();
        let mut p1 = ps.pop().unwrap();
        let mut p0 = ps.pop().unwrap();
        let t0 = thread::spawn(move || send_all(&mut p0, 0, 2));
        let t1 = thread::spawn(move || send_all(&mut p1, 1, 1));
        let mut got = recv_n(&mut rx, 3);
        got.sort();
        assert_eq!(got, [(0, 0), (0, 1), (1, 0)]);
        t0.join().unwrap();
        t1.join().unwrap();
        assert_eq!(rx.stats().recovered, 0);
    });
}

/// Model 2 — one producer, two consumers, two slots. The producer sends
/// two messages, then closes the ring; each consumer receives until end of
/// stream. Together they get each message exactly once, each in order.
#[test]
fn mpmc_one_producer_two_consumers() {
    model(|| {
        let (mut ps, mut cs) = loom_ring(8, 2, 1, 2);
        let mut tx = ps.pop().unwrap();
        let mut c1 = cs.pop().unwrap();
        let mut c0 = cs.pop().unwrap();
        let producer = thread::spawn(move || {
            send_all(&mut tx, 0, 2);
            tx.close_ring();
        });
        let other = thread::spawn(move || drain(&mut c1));
        let mut got = drain(&mut c0);
        got.extend(other.join().unwrap());
        got.sort();
        assert_eq!(got, [(0, 0), (0, 1)]);
        producer.join().unwrap();
    });
}

/// Receive until end of stream, checking order.
fn drain(rx: &mut Consumer) -> Vec<(u8, u8)> {
    let mut got = Vec::new();
    while let Some(m) = rx.recv().expect("recv") {
        let (p, i) = decode(&m);
        assert!(got.iter().all(|&(_, j)| j < i), "{i} after {got:?}");
        got.push((p, i));
    }
    got
}

/// Model 3 — wrap-around with batches. Two slots, one producer sending five
/// messages as a batch of two (one CAS), then one by one; one consumer
/// taking them with `recv_batch` of up to two. Positions 0..5 go round the
/// two slots two and a half times, so the producer waits for a free slot and
/// the consumer for a message.
#[test]
fn mpmc_wrap_around_two_slots() {
    model(|| {
        let (mut ps, mut cs) = loom_ring(8, 2, 1, 1);
        let mut tx = ps.pop().unwrap();
        let mut rx = cs.pop().unwrap();
        let producer = thread::spawn(move || {
            let (a, b) = (payload(0, 0), payload(0, 1));
            let batch: [&[u8]; 2] = [&a, &b];
            let mut sent = 0;
            while sent < 2 {
                sent += tx.send_batch(&batch[sent..]).expect("send_batch");
            }
            for i in 2..5 {
                tx.send(&payload(0, i)).expect("send");
            }
        });
        let mut got = Vec::new();
        while got.len() < 5 {
            rx.recv_batch(2, |m| got.push(decode(m))).expect("recv_batch");
        }
        assert_eq!(got, [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]);
        producer.join().unwrap();
    });
}

/// Model 4 — recovery. One producer claims a slot, writes into it and dies
/// without committing (its liveness is answered by the loom hook); another,
/// alive, sends one message. The consumer receives the live message, then
/// closes the ring and drains: it must recover the dead producer's slot if
/// it lies before the end, never deliver the dead one's bytes, and never take
/// the live producer's slot, whatever the interleaving.
#[test]
fn mpmc_recovery_of_a_dead_producers_slot() {
    model(|| {
        let (mut ps, mut cs) = loom_ring(8, 2, 2, 1);
        let mut rx = cs.pop().unwrap();
        let mut live = ps.pop().unwrap();
        let mut dead = ps.pop().unwrap();
        let t_dead = thread::spawn(move || {
            let mut g = dead.grant().expect("grant");
            g[..8].copy_from_slice(&payload(3, 3));
            g.loom_die();
        });
        let t_live = thread::spawn(move || send_all(&mut live, 1, 1));
        let m = rx.recv().expect("recv").expect("a message");
        assert_eq!(decode(&m), (1, 0));
        drop(m);
        t_live.join().unwrap();
        t_dead.join().unwrap();
        rx.close_ring();
        assert!(rx.recv().expect("recv after close").is_none(), "the dead producer's message was delivered");
        let s = rx.stats();
        assert_eq!((s.lost_producer_died, s.recovered, s.enqueued, s.dequeued), (1, 1, 2, 2));
    });
}

/// Model 5 — close racing a send. One producer sends one message while
/// another handle closes the ring; the consumer drains until end of stream.
/// A send that returned `Ok` must be received: the consumer must never
/// conclude "closed and drained" while a message can still be committed.
#[test]
fn mpmc_close_racing_a_send() {
    model(|| {
        let (mut ps, mut cs) = loom_ring(8, 2, 1, 2);
        let mut tx = ps.pop().unwrap();
        let closer = cs.pop().unwrap();
        let mut rx = cs.pop().unwrap();
        let producer = thread::spawn(move || tx.send(&payload(0, 0)).is_ok());
        let closing = thread::spawn(move || closer.close_ring());
        let got = drain(&mut rx);
        let sent = producer.join().unwrap();
        closing.join().unwrap();
        assert_eq!(got.len(), usize::from(sent), "sent {sent}, received {got:?}");
        assert!(rx.recv().expect("recv after end").is_none());
    });
}

/// Model 6 — recovery from a dead consumer, and no theft from a live one.
/// Two slots. One consumer receives message 0 and dies holding it (before
/// the threads start). Then the producer sends messages 1 to 3 while the
/// other consumer receives them: message 2 needs the dead consumer's slot,
/// so the producer must find its holder dead and recover it; message 3
/// needs the slot the live consumer may still be reading message 1 from, so
/// the producer must find that holder alive and wait. The held message is
/// counted lost exactly once.
#[test]
fn mpmc_recovery_of_a_dead_consumers_slot() {
    model(|| {
        let (mut ps, mut cs) = loom_ring(8, 2, 1, 2);
        let mut tx = ps.pop().unwrap();
        let mut dead = cs.pop().unwrap();
        let mut rx = cs.pop().unwrap();
        tx.send(&payload(0, 0)).expect("send");
        let m = dead.recv().expect("recv").expect("a message");
        assert_eq!(decode(&m), (0, 0));
        std::mem::forget(m);
        dead.loom_die();
        let producer = thread::spawn(move || send_all_from(&mut tx, 0, 1, 4));
        let got = recv_n(&mut rx, 3);
        assert_eq!(got, [(0, 1), (0, 2), (0, 3)]);
        producer.join().unwrap();
        let s = rx.stats();
        assert_eq!((s.lost_consumer_died, s.recovered), (1, 1));
        assert_eq!(rx.recover_dead().expect("recover_dead"), 0);
    });
}
