//! Typed channels: values round-trip, the header's record type is enforced,
//! and a record of the wrong size is an error, not a bad value.
#![cfg(not(loom))]

mod common;

use common::{TempSeg, peer_role, spawn_peer, wait_exit};
use shmring::spsc::{Consumer, Producer};
use shmring::typed::{Receiver, Sender};
use shmring::{Error, Location, SpscOptions};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Pair {
    seq: u64,
    check: u64,
}

/// 12 bytes: records are padded to a 16-byte stride in a run.
#[derive(Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Triple([u32; 3]);

fn pair(i: u64) -> Pair {
    Pair { seq: i, check: i.wrapping_mul(0x9E37_79B9_7F4A_7C15) }
}

#[test]
fn values_round_trip_singly_and_in_batches() {
    let seg = TempSeg::new("typed");
    let mut tx: Sender<Triple> = Sender::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
    let mut rx: Receiver<Triple> = Receiver::open(&seg.0).unwrap();
    let values: Vec<Triple> = (0..5000u32).map(|i| Triple([i, !i, i.rotate_left(7)])).collect();
    let mut got = Vec::new();
    // This thread also receives, so a chunk must fit the 4096-byte ring even
    // behind a padding record: 1 record + a run of 99 (16-byte stride).
    for chunk in values.chunks(100) {
        tx.send(&chunk[0]).unwrap();
        tx.send_batch(&chunk[1..]).unwrap();
        while got.len() < values.len() {
            match rx.try_recv() {
                Ok(Some(v)) => got.push(v),
                Err(Error::WouldBlock { .. }) => break,
                other => panic!("{other:?}"),
            }
        }
    }
    drop(tx);
    while rx.recv_batch(100, |v| got.push(v)).unwrap() > 0 {}
    assert_eq!(got, values);
    assert_eq!(rx.recv().unwrap(), None);
}

#[test]
fn another_type_is_refused_and_claims_nothing() {
    let seg = TempSeg::new("typed-mismatch");
    let _tx: Sender<Pair> = Sender::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
    match Receiver::<Triple>::open(&seg.0) {
        Err(Error::TypeMismatch { found, expected, .. }) => {
            assert!(found.contains("Pair") && found.contains("16 bytes"), "{found}");
            assert!(expected.contains("Triple") && expected.contains("12 bytes"), "{expected}");
        }
        other => panic!("expected TypeMismatch, got {:?}", other.err()),
    }
    // Same size and alignment, different type: still refused.
    assert!(matches!(Receiver::<[u64; 2]>::open(&seg.0), Err(Error::TypeMismatch { .. })));
    let msg = Receiver::<u8>::open(&seg.0).err().unwrap().to_string();
    assert!(msg.contains("Pair") && msg.contains("u8") && msg.contains(&seg.name()), "{msg}");
    // The refused openers did not take the consumer role.
    let _rx: Receiver<Pair> = Receiver::open(&seg.0).unwrap();

    // A name scribbled with a terminal escape comes back escaped.
    common::Attacker::new(&seg).write_u64(std::mem::offset_of!(shmring::header::Header, type_name), 0x5b1b);
    let msg = Receiver::<u8>::open(&seg.0).err().unwrap().to_string();
    assert!(!msg.contains('\x1b') && msg.contains("\\u{1b}["), "{msg}");
}

#[test]
fn typed_and_untyped_rings_do_not_mix_silently() {
    // A typed opener refuses a ring of bytes...
    let seg = TempSeg::new("typed-bytes");
    let mut raw = Producer::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
    match Receiver::<Pair>::open(&seg.0) {
        Err(Error::TypeMismatch { found, .. }) => assert_eq!(found, "untyped bytes"),
        other => panic!("expected TypeMismatch, got {:?}", other.err()),
    }
    // ...an untyped opener may attach to a typed ring (it sees bytes), and a
    // record of the wrong size reaching a typed receiver is an error.
    let seg = TempSeg::new("typed-short");
    let mut rx: Receiver<Pair> = Receiver::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
    drop(raw);
    raw = Producer::open(&seg.0).unwrap();
    raw.send(pair(7).as_bytes()).unwrap();
    raw.send(b"short").unwrap();
    assert_eq!(rx.recv().unwrap(), Some(pair(7)));
    match rx.recv() {
        Err(Error::Corrupted { what, .. }) => assert!(what.contains("5 bytes") && what.contains("Pair"), "{what}"),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // `rx` holds the consumer role.
    assert!(matches!(Consumer::open(&seg.0), Err(Error::RoleTaken { role: "consumer", .. })));

    // The same through `recv_batch`, with the records arriving as runs: the
    // values before the bad run are passed on, then the error.
    let seg = TempSeg::new("typed-shortrun");
    let mut rx: Receiver<Pair> = Receiver::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
    let mut raw = Producer::open(&seg.0).unwrap();
    let mut run = raw.grant_records(size_of::<Pair>(), 3).unwrap();
    for (i, rec) in run.chunks_exact_mut(size_of::<Pair>()).enumerate() {
        rec.copy_from_slice(pair(i as u64).as_bytes());
    }
    run.stage();
    raw.grant_records(5, 2).unwrap().commit();
    let mut got = Vec::new();
    match rx.recv_batch(100, |v| got.push(v)) {
        Err(Error::Corrupted { what, .. }) => assert!(what.contains("5 bytes") && what.contains("Pair"), "{what}"),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert_eq!(got, [pair(0), pair(1), pair(2)]);
}

/// Peer entry: open the typed ring named in the argument and send N values.
#[test]
#[ignore = "peer process for the typed tests"]
fn typed_peer_main() {
    let Some((_, arg)) = peer_role() else { return };
    let (name, n) = arg.split_once(',').unwrap();
    let n: u64 = n.parse().unwrap();
    let mut tx: Sender<Pair> = Sender::open(&Location::shm(name)).unwrap();
    let values: Vec<Pair> = (0..n).map(pair).collect();
    for chunk in values.chunks(1000) {
        tx.send(&chunk[0]).unwrap();
        tx.send_batch(&chunk[1..]).unwrap();
    }
}

#[test]
fn values_cross_processes() {
    let seg = TempSeg::new("typed-xproc");
    let n = 100_000u64;
    let mut rx: Receiver<Pair> = Receiver::create(&seg.0, &SpscOptions::new().capacity(1 << 14)).unwrap();
    let mut peer = spawn_peer("typed_peer_main", "send", &format!("{},{n}", seg.name()));
    let mut next = 0u64;
    while rx
        .recv_batch(4096, |v| {
            assert_eq!(v, pair(next));
            next += 1;
        })
        .unwrap()
        > 0
    {}
    assert_eq!(next, n);
    assert!(wait_exit(&mut peer, 60).success());
}

#[test]
fn send_iter_writes_in_place_whatever_the_iterator_says_of_its_length() {
    // A 12-byte type (16-byte stride), on a ring a receiving thread drains:
    // iterators of exact, unknown (filter) and lying-low (`size_hint` 0) lengths,
    // empty ones, and runs longer than one grant can hold.
    let seg = TempSeg::new("typed-iter");
    let mut tx: Sender<Triple> = Sender::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
    let mut rx: Receiver<Triple> = Receiver::open(&seg.0).unwrap();
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        while rx.recv_batch(usize::MAX, |v| got.push(v)).unwrap() > 0 {}
        got
    });
    let t = |i: u32| Triple([i, !i, i.rotate_left(7)]);
    let mut want = Vec::new();
    let mut next = 0u32;
    for round in 0..60u32 {
        let n = round * 37 % 700;
        let range = next..next + n;
        next += n;
        match round % 4 {
            0 => tx.send_iter(range.clone().map(t)).unwrap(),
            1 => tx.send_iter(range.clone().filter(|_| true).map(t)).unwrap(),
            2 => tx
                .send_iter(std::iter::from_fn({
                    let mut r = range.clone();
                    move || r.next().map(t)
                }))
                .unwrap(),
            _ => tx.send_iter(std::iter::empty()).unwrap(),
        }
        if round % 4 != 3 {
            want.extend(range.map(t));
        }
    }
    drop(tx);
    assert_eq!(receiver.join().unwrap(), want);
}

#[test]
fn typed_channels_over_mpmc() {
    use shmring::mpmc::{self, MpmcOptions};
    let seg = TempSeg::new("typed-mpmc");
    let opts = MpmcOptions::new().slot_size(16).slot_count(64);
    assert!(matches!(Sender::<[u64; 3], mpmc::Producer>::create(&seg.0, &opts), Err(Error::InvalidArgument(_))));
    assert!(!seg.0.exists(), "a refused create leaves nothing behind");
    let mut tx: Sender<Pair, mpmc::Producer> = Sender::create(&seg.0, &opts).unwrap();
    let mut tx2: Sender<Pair, mpmc::Producer> = Sender::open(&seg.0).unwrap();
    let mut rx: Receiver<Pair, mpmc::Consumer> = Receiver::open(&seg.0).unwrap();
    assert!(matches!(Receiver::<Triple, mpmc::Consumer>::open(&seg.0), Err(Error::TypeMismatch { .. })));
    let mut got = Vec::new();
    for i in 0..1000 {
        if i % 2 == 0 { tx.send(&pair(i)) } else { tx2.send_batch(&[pair(i)]) }.unwrap();
        got.push(rx.recv().unwrap().unwrap());
    }
    // A batch larger than one send_batch call (64) but within the 64 slots'
    // reach once the receiver drains: 40 now, then 100 through a thread.
    tx.send_batch(&(1000..1040).map(pair).collect::<Vec<_>>()).unwrap();
    while got.len() < 1040 {
        got.push(rx.recv().unwrap().unwrap());
    }
    let receiver = std::thread::spawn(move || {
        let mut more = Vec::new();
        while let Some(v) = rx.recv().unwrap() {
            more.push(v);
        }
        more
    });
    tx.send_batch(&(1040..1140).map(pair).collect::<Vec<_>>()).unwrap();
    tx.send_iter((1140..1300).map(pair)).unwrap();
    tx.send_iter((1300..1310).filter(|_| true).map(pair)).unwrap();
    tx.get_mut().close_ring();
    got.extend(receiver.join().unwrap());
    assert_eq!(got, (0..1310).map(pair).collect::<Vec<_>>());
}
