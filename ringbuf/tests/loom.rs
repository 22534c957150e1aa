#![cfg(loom)]
//! loom models of the SPSC ring and the eventcount.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p shmring --test loom --release`
//! (a separate target directory avoids rebuilding the normal one).
//!
//! Capacities are tiny so records wrap after one to three messages. The
//! park policy of `loom_pair` makes every wait go through the eventcount,
//! whose futex is modelled without timeouts: a lost wake-up is a deadlock.
//! The data region has loom shadow cells, so a missing Release/Acquire on the
//! positions shows up as a causality violation. `LOOM_NOTES.md` next to this
//! file records, for each model, an ordering whose weakening it catches.

mod loom_support;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use loom_support::model;
use shmring::EventCount;
use shmring::header::NotifierKind;
use shmring::spsc::{Consumer, Producer, loom_pair, loom_pair_with, record_size};
use shmring::wait::Doorbell;

/// Payload of message `i` with `len` bytes: every byte depends on both the
/// message and its position, so a torn, shifted or stale read is caught.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7 + 1) as u8).collect()
}

/// Send every message of `lens` with `send`, then drop the producer (close).
fn produce(mut tx: Producer, lens: &'static [usize]) {
    for (i, &len) in lens.iter().enumerate() {
        tx.send(&payload(i, len)).expect("send");
    }
}

/// Send `lens` from a producer thread while this one receives them all;
/// returns the consumer once the producer has finished.
fn exchange((tx, mut rx): (Producer, Consumer), lens: &'static [usize]) -> Consumer {
    let producer = thread::spawn(move || produce(tx, lens));
    consume_all(&mut rx, lens);
    producer.join().unwrap();
    rx
}

/// Receive until end of stream and check every message against `lens`.
fn consume_all(rx: &mut Consumer, lens: &'static [usize]) {
    let mut i = 0;
    while let Some(rec) = rx.recv().expect("recv") {
        assert!(i < lens.len(), "record {i} received after the last one sent");
        assert_eq!(&*rec, &payload(i, lens[i])[..], "record {i}");
        i += 1;
    }
    assert_eq!(i, lens.len(), "end of stream before every record arrived");
}

/// Model 1 — wrap-around with padding. In a 32-byte ring the records take
/// 16, 24, 16 and 24 bytes, and each after the first needs a padding record
/// (16, 8, then 16 bytes) before it starts again at offset 0; the last one,
/// with the 8-byte end marker after it, fills the whole ring, so it also
/// waits for the ring to drain completely.
#[test]
fn spsc_wrap_around() {
    const LENS: &[usize] = &[1, 12, 4, 16];
    const _: () =
        assert!(record_size(1) == 16 && record_size(12) == 24 && record_size(4) == 16 && record_size(16) == 24);
    model(|| {
        exchange(loom_pair(32), LENS);
    });
}

/// Model 2 — full ring. A 32-byte ring holds one 24-byte record and its
/// end marker, so the producer blocks for space before every record after
/// the first; the second and fourth also need a padding record first. The
/// third has an empty payload (8 bytes in all).
#[test]
fn spsc_full_blocks_producer() {
    const LENS: &[usize] = &[16, 16, 0, 16];
    model(|| {
        exchange(loom_pair(32), LENS);
    });
}

/// Model 3a — empty ring and close. The consumer starts on an empty ring and
/// parks; the producer sends two records and drops its handle. The consumer
/// must get both, then `Ok(None)`, and never end the stream early.
#[test]
fn spsc_empty_then_close() {
    const LENS: &[usize] = &[5, 2];
    model(|| {
        let mut rx = exchange(loom_pair(64), LENS);
        // End of stream is sticky.
        assert!(rx.recv().expect("recv after end").is_none());
    });
}

/// Model 3c — abort racing a receive. The consumer parks on an empty ring;
/// the producer sends one record, stages another, and aborts with a reason.
/// The consumer must get both records, then `PeerAborted` with that reason
/// (twice: the ending is sticky), and never `Ok(None)`.
#[test]
fn spsc_abort_races_receive() {
    model(|| {
        let (mut tx, mut rx) = loom_pair(64);
        let producer = thread::spawn(move || {
            tx.send(&payload(0, 5)).expect("send");
            let mut g = tx.grant(2).expect("grant");
            g.copy_from_slice(&payload(1, 2));
            g.stage();
            tx.abort("no");
        });
        for i in 0..2 {
            let rec = rx.recv().expect("recv").expect("a record before the abort");
            assert_eq!(&*rec, &payload(i, [5, 2][i])[..], "record {i}");
        }
        for _ in 0..2 {
            match rx.recv() {
                Err(shmring::Error::PeerAborted { reason, .. }) => assert_eq!(reason, "no"),
                Err(e) => panic!("expected PeerAborted, got {e}"),
                Ok(r) => panic!("expected PeerAborted, got a record or end of stream ({})", r.is_some()),
            }
        }
        producer.join().unwrap();
    });
}

/// Model 3b — batches and runs. The producer stages two 3-byte records,
/// which share one header (a run), and publishes them with one `flush`; then
/// it stages two 9-byte records (another run) that only its drop publishes.
/// The consumer takes whatever is there with `recv_batch` until it returns 0.
#[test]
fn spsc_batch_then_close() {
    const LENS: &[usize] = &[3, 3, 9, 9];
    model(|| {
        let (mut tx, mut rx) = loom_pair(128);
        let producer = thread::spawn(move || {
            for (i, &len) in LENS.iter().enumerate() {
                let mut g = tx.grant(len).expect("grant");
                g.copy_from_slice(&payload(i, len));
                g.stage();
                if i == 1 {
                    tx.flush();
                }
            }
            // Dropping publishes the staged run of 9-byte records, then closes.
            drop(tx);
        });
        let mut got: Vec<Vec<u8>> = Vec::new();
        loop {
            let n = rx.recv_batch(8, |r| got.push(r.to_vec())).expect("recv_batch");
            if n == 0 {
                break;
            }
        }
        let want: Vec<Vec<u8>> = LENS.iter().enumerate().map(|(i, &len)| payload(i, len)).collect();
        assert_eq!(got, want);
        producer.join().unwrap();
    });
}

/// Model 4 — a bare eventcount loses no wake-up. The waiter follows the
/// documented protocol (prepare, re-check, wait) for two successive values;
/// the notifier publishes each with Release and then notifies. A lost
/// wake-up leaves the waiter asleep for ever, which loom reports as a
/// deadlock (the modelled futex has no timeout).
#[test]
fn eventcount_no_lost_wakeup() {
    no_lost_wakeup(NotifierKind::Futex);
}

/// Model 5 — model 4 with the semaphore notifier: `wait` checks the epoch,
/// then sleeps on a counting semaphore (modelled with a mutex and a
/// condition variable, no timeout); `notify` bumps the epoch and posts once
/// per registered waiter. A post the waiter does not consume (it cancelled)
/// leaves a spurious wake-up for later, which the loop absorbs.
#[test]
fn semaphore_no_lost_wakeup() {
    no_lost_wakeup(NotifierKind::Semaphore);
}

/// Model 6 — model 2 (a full ring: the producer parks for space, the
/// consumer for data) with both eventcounts on semaphores.
#[test]
fn spsc_full_blocks_producer_semaphore() {
    const LENS: &[usize] = &[16, 16, 0, 16];
    model(|| {
        exchange(loom_pair_with(32, NotifierKind::Semaphore), LENS);
    });
}

/// Model 7 — the doorbell of an async consumer. The consumer sleeps on
/// its doorbell, not in `recv`: it registers (`register_waiter`),
/// re-checks with `try_recv`, and only then blocks on the doorbell (modelled
/// without a timeout: a lost ring is a deadlock). The producer, given the
/// doorbell, sends two records and closes; each publish and the close ring
/// it if they find the consumer registered. The consumer must get both
/// records, then end of stream.
#[test]
fn doorbell_no_lost_wakeup() {
    model(|| {
        let (mut tx, mut rx) = loom_pair(64);
        let (bell, ringer) = Doorbell::pair().unwrap();
        tx.set_doorbell(Some(ringer));
        let producer = thread::spawn(move || {
            tx.send(&payload(0, 5)).unwrap();
            tx.send(&payload(1, 3)).unwrap();
        });
        let mut got = Vec::new();
        loop {
            let reg = rx.register_waiter();
            match rx.try_recv() {
                Ok(Some(rec)) => got.push(rec.to_vec()),
                Ok(None) => break,
                Err(shmring::Error::WouldBlock { .. }) => {
                    bell.wait(std::time::Duration::MAX);
                    bell.drain();
                }
                Err(e) => panic!("try_recv: {e}"),
            }
            drop(reg);
        }
        assert_eq!(got, [payload(0, 5), payload(1, 3)]);
        producer.join().unwrap();
    });
}

/// Model 8 — a publisher rings nobody's doorbell when nobody registered:
/// the consumer polls with `try_recv` (never registering) until the
/// stream ends; the doorbell must never have been rung.
#[test]
fn doorbell_silent_without_waiter() {
    model(|| {
        let (mut tx, mut rx) = loom_pair(64);
        let (bell, ringer) = Doorbell::pair().unwrap();
        tx.set_doorbell(Some(ringer));
        let producer = thread::spawn(move || {
            tx.send(&payload(0, 5)).unwrap();
        });
        let mut got = 0;
        loop {
            match rx.try_recv() {
                Ok(Some(_)) => got += 1,
                Ok(None) => break,
                Err(shmring::Error::WouldBlock { .. }) => thread::yield_now(),
                Err(e) => panic!("try_recv: {e}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, 1);
        assert_eq!(bell.rung(), 0, "rang with nobody registered");
    });
}

/// The waiter of models 4 and 5 against a notifier publishing two values.
fn no_lost_wakeup(kind: NotifierKind) {
    model(move || {
        let ec = Arc::new(EventCount::with_notifier(kind));
        let value = Arc::new(AtomicU64::new(0));
        let notifier = {
            let (ec, value) = (ec.clone(), value.clone());
            thread::spawn(move || {
                for v in 1..=2 {
                    // Release: pairs with the waiter's Acquire loads.
                    value.store(v, Ordering::Release);
                    ec.notify();
                }
            })
        };
        for want in 1..=2 {
            loop {
                if value.load(Ordering::Acquire) >= want {
                    break;
                }
                let key = ec.prepare_wait();
                if value.load(Ordering::Acquire) >= want {
                    ec.cancel_wait();
                    break;
                }
                ec.wait(key, None);
            }
        }
        // Reaching here at all is the check: a lost wake-up is a deadlock.
        assert!(!ec.has_waiters(), "waiter count not back to zero");
        notifier.join().unwrap();
    });
}
