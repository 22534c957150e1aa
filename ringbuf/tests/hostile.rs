//! A hostile peer scribbles on the segment: the victim must return a typed
//! error, never panic, never read or write out of bounds.
// Tests drive the library from outside: the atomics facade (`src/sync.rs`,
// `clippy.toml`) is the library's rule, not theirs.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
#![cfg(not(loom))]

mod common;

use std::time::Duration;

use common::{Attacker, Peer, TempSeg, assert_corrupted, peer_role, spawn_peer, wait_exit};
use shmring::header::{CONTROL_OFFSET, HEADER_LEN, Header, NotifierKind, SpscControl};
use shmring::spsc::{Consumer, Producer};
use shmring::{Error, EventCount, Segment, SpscOptions, WaitPolicy};

/// Offsets of the SPSC control words.
impl Attacker {
    fn tail(&self) -> usize {
        CONTROL_OFFSET + std::mem::offset_of!(SpscControl, tail)
    }
    fn head(&self) -> usize {
        CONTROL_OFFSET + std::mem::offset_of!(SpscControl, head)
    }
}

fn pair(tag: &str) -> (TempSeg, Producer, Consumer) {
    let seg = TempSeg::new(tag);
    let tx = Producer::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
    let rx = Consumer::open(&seg.0).unwrap();
    (seg, tx, rx)
}

#[test]
fn garbage_header_word_is_corrupted_and_poisons() {
    // The consumer polls the header word at its position; nothing was sent,
    // so the word must be zero. A hostile value there is caught.
    let (seg, _tx, mut rx) = pair("garbage");
    let a = Attacker::new(&seg);
    a.write_u64(HEADER_LEN, 0xdead_beef_0000_0010);
    assert_corrupted(rx.try_recv().map(|_| ()), "garbage header word");
    // Even after repair, the handle stays poisoned.
    a.write_u64(HEADER_LEN, 0);
    assert_corrupted(rx.try_recv().map(|_| ()), "poisoned");
}

#[test]
fn scribbled_tail_is_ignored_by_the_consumer_and_refused_at_attach() {
    // The consumer never waits on `tail`: a hostile value there neither
    // delivers phantom records nor hides real ones.
    let (seg, mut tx, mut rx) = pair("tail");
    let a = Attacker::new(&seg);
    tx.send(b"real").unwrap();
    for bad in [1 << 40, 13, 0] {
        a.write_u64(a.tail(), bad);
        // Nothing received yet (head 0): an impossible tail reads as empty.
        assert_eq!(rx.fill(), if bad <= rx.capacity() { bad } else { 0 }, "tail {bad}");
    }
    assert_eq!(&*rx.try_recv().unwrap().unwrap(), b"real");
    assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { full: false })));

    // A producer attaching to a ring whose positions are impossible refuses it.
    let seg = TempSeg::new("tail-attach");
    drop(shmring::spsc::create_segment(&seg.0, &SpscOptions::new().capacity(4096)).unwrap());
    let a = Attacker::new(&seg);
    a.write_u64(a.tail(), 1 << 40);
    assert_corrupted(Producer::attach(Segment::open(&seg.0).unwrap()), "tail far ahead at attach");
}

#[test]
fn record_length_overrun_is_corrupted() {
    let (seg, mut tx, mut rx) = pair("len");
    tx.send(b"hello").unwrap();
    let a = Attacker::new(&seg);
    a.write_u64(HEADER_LEN, (2u64 << 32) | 1_000_000); // header word of the first record
    assert_corrupted(rx.try_recv().map(|_| ()), "huge length");
}

#[test]
fn unknown_flags_and_bad_padding_are_corrupted() {
    let (seg, mut tx, mut rx) = pair("flags");
    tx.send(b"hello").unwrap();
    let a = Attacker::new(&seg);
    a.write_u64(HEADER_LEN, (0x80u64 << 32) | 5);
    assert_corrupted(rx.try_recv().map(|_| ()), "unknown flag");

    let (seg, mut tx, mut rx) = pair("pad");
    tx.send(b"hello").unwrap();
    let a = Attacker::new(&seg);
    a.write_u64(HEADER_LEN, (1u64 << 32) | 200); // neither to the end nor a cache-line alignment
    assert_corrupted(rx.try_recv().map(|_| ()), "short padding");
}

#[test]
fn a_ring_of_padding_or_of_records_chasing_each_other_is_corrupted_not_a_hang() {
    // Padding in every word: each one alone looks fine, and skipping them
    // would go round the ring for ever.
    let (seg, mut tx, mut rx) = pair("padloop");
    tx.send(b"hello").unwrap();
    let a = Attacker::new(&seg);
    for w in 0..4096 / 8 {
        a.write_u64(HEADER_LEN + w * 8, (1u64 << 32) | 8);
    }
    assert_corrupted(rx.recv_timeout(Duration::from_millis(100)).map(|_| ()), "a ring of padding");

    // Two records that fill the ring between them, each in bounds: taking
    // them in one batch would pass the same bytes round and round.
    let (seg, mut tx, mut rx) = pair("recloop");
    tx.send(b"hello").unwrap();
    let a = Attacker::new(&seg);
    a.write_u64(HEADER_LEN, (2u64 << 32) | (4096 - 24));
    a.write_u64(HEADER_LEN + 4096 - 16, (2u64 << 32) | 8);
    let mut passed = 0;
    assert_corrupted(rx.recv_batch(usize::MAX, |_| passed += 1), "records round the ring");
    assert_eq!(passed, 1, "only the first record fits what a producer can have published");
}

#[test]
fn impossible_runs_are_corrupted() {
    // A run of zero records, and a run whose records would run past the end.
    for word in [(4u64 << 32) | 8, ((4u64 | (600 << 16)) << 32) | 8] {
        let (seg, mut tx, mut rx) = pair("run");
        tx.send(b"hello").unwrap();
        let a = Attacker::new(&seg);
        a.write_u64(HEADER_LEN, word);
        assert_corrupted(rx.try_recv().map(|_| ()), &format!("run header {word:#x}"));
    }
}

#[test]
fn head_beyond_tail_is_corrupted_for_the_producer() {
    let (seg, mut tx, rx) = pair("head");
    let a = Attacker::new(&seg);
    // Fill the ring so the producer must re-read head.
    while tx.try_send(&[0; 500]).is_ok() {}
    a.write_u64(a.head(), 1 << 50);
    assert_corrupted(tx.try_send(&[0; 500]), "head beyond tail");
    drop(rx);
}

fn reopen_err(seg: &TempSeg) -> Error {
    Consumer::open(&seg.0).expect_err("open must fail")
}

#[test]
fn damaged_headers_are_refused_on_open() {
    // (offset, value, check)
    type Check = fn(&Error) -> bool;
    let cases: [(usize, u64, bool, Check); 6] = [
        (0, 0x1234, true, |e| matches!(e, Error::BadMagic(_))),
        (8, 99, false, |e| matches!(e, Error::VersionMismatch { found: 99, .. })),
        (12, 77, false, |e| matches!(e, Error::Corrupted { .. })),
        (24, 5000, true, |e| matches!(e, Error::Corrupted { .. })),
        (24, 1 << 20, true, |e| matches!(e, Error::Corrupted { .. })),
        (40, 123, true, |e| matches!(e, Error::Corrupted { .. })),
    ];
    for (off, value, wide, check) in cases {
        let seg = TempSeg::new("hdr");
        let tx = Producer::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
        let a = Attacker::new(&seg);
        if wide {
            a.write_u64(off, value)
        } else {
            a.write_u32(off, value as u32)
        }
        let e = reopen_err(&seg);
        assert!(check(&e), "offset {off} = {value}: got {e}");
        drop(tx);
    }
}

#[test]
fn truncated_segment_is_refused_on_open() {
    let seg = TempSeg::new("trunc");
    let _tx = Producer::create(&seg.0, &SpscOptions::new().capacity(8192)).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm{}", seg.name())).unwrap();
    f.set_len(4096 + 4096).unwrap();
    assert!(matches!(reopen_err(&seg), Error::Corrupted { .. }));
    f.set_len(100).unwrap();
    assert!(matches!(reopen_err(&seg), Error::Corrupted { .. }));
}

#[test]
fn never_ready_segment_times_out_with_not_ready() {
    let seg = TempSeg::new("notready");
    let _raw = Segment::create(&seg.0, 8192, Default::default()).unwrap();
    // Zero-filled: magic 0, state INIT, as if the creator died half-way.
    let t = std::time::Instant::now();
    assert!(matches!(reopen_err(&seg), Error::NotReady(_)));
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn garbage_role_state_is_corrupted() {
    let seg = TempSeg::new("role");
    let tx = Producer::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
    let a = Attacker::new(&seg);
    a.write_u32(CONTROL_OFFSET + std::mem::offset_of!(SpscControl, consumer), 42);
    assert!(matches!(reopen_err(&seg), Error::Corrupted { .. }));
    drop(tx);
}

/// Peer entry: scribble random values over the control block and data region
/// for the given number of milliseconds.
#[test]
#[ignore = "peer process for the hostile tests"]
fn scribbler_main() {
    let Some((_, arg)) = peer_role() else { return };
    let (name, ms) = arg.split_once(',').unwrap();
    let seg = Segment::open(&shmring::Location::shm(name)).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id());
    let end = std::time::Instant::now() + Duration::from_millis(ms.parse().unwrap());
    while std::time::Instant::now() < end {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly positions and record headers, sometimes anywhere after the header.
        let off = match x % 4 {
            0 => CONTROL_OFFSET + std::mem::offset_of!(SpscControl, tail),
            1 => CONTROL_OFFSET + std::mem::offset_of!(SpscControl, head),
            _ => HEADER_LEN + (((x >> 8) as usize % (seg.len() - HEADER_LEN)) & !7),
        };
        let v = match (x >> 40) % 4 {
            0 => x >> 3,
            1 => (x >> 20) & 0xffff,
            2 => ((x >> 20) & 0xff) << 3,
            _ => ((x & 3) << 32) | ((x >> 30) & 0x1fff),
        };
        // SAFETY: off + 8 <= len; scribbling on shared memory is this peer's job.
        unsafe { std::ptr::write_volatile(seg.as_ptr().add(off) as *mut u64, v) };
        std::hint::spin_loop();
    }
}

#[test]
fn random_scribbling_by_another_process_never_crashes_either_side() {
    for round in 0..20 {
        let seg = TempSeg::new("scribble");
        let mut tx = Producer::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
        let mut rx = Consumer::open(&seg.0).unwrap();
        let mut peer: Peer = spawn_peer("scribbler_main", "scribble", &format!("{},300", seg.name()));
        let mut errors = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while peer.0.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            match tx.try_send(&[round as u8; 200]) {
                Ok(()) | Err(Error::WouldBlock { .. }) => {}
                Err(Error::Corrupted { .. }) => errors += 1,
                Err(e) => panic!("unexpected producer error {e}"),
            }
            match rx.try_recv() {
                Ok(Some(r)) => {
                    let _sum: u32 = r.iter().map(|&b| u32::from(b)).sum();
                }
                Ok(None) | Err(Error::WouldBlock { .. }) => {}
                Err(Error::Corrupted { .. }) => errors += 1,
                Err(e) => panic!("unexpected consumer error {e}"),
            }
            if errors > 0 && rx.try_recv().is_err() && tx.try_send(b"x").is_err() {
                break; // both sides poisoned: nothing more to learn this round
            }
        }
        assert!(wait_exit(&mut peer, 60).success());
    }
}

#[test]
fn unknown_notifier_word_is_corrupted() {
    for bad in [0, 3, 0xffff_ffff] {
        let seg = TempSeg::new("notifier");
        let tx = Producer::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
        Attacker::new(&seg).write_u32(std::mem::offset_of!(Header, notifier), bad);
        match reopen_err(&seg) {
            Error::Corrupted { what, .. } => assert!(what.contains("notifier"), "{what}"),
            e => panic!("notifier word {bad}: expected Corrupted, got {e}"),
        }
        drop(tx);
    }
}

#[test]
fn eventcounts_disagreeing_with_the_header_notifier_are_corrupted() {
    let ec_word = |field: usize| CONTROL_OFFSET + field + EventCount::NOTIFIER_OFFSET;
    let data_ready = std::mem::offset_of!(SpscControl, data_ready);
    let space_free = std::mem::offset_of!(SpscControl, space_free);
    // (created with, eventcount field changed, value written)
    let cases = [
        (NotifierKind::Futex, data_ready, NotifierKind::Semaphore as u32),
        (NotifierKind::Semaphore, space_free, NotifierKind::Futex as u32),
        (NotifierKind::Semaphore, data_ready, 0),
    ];
    for (kind, field, value) in cases {
        let seg = TempSeg::new("ecword");
        let tx = Producer::create(&seg.0, &SpscOptions::new().capacity(4096).notifier(kind)).unwrap();
        Attacker::new(&seg).write_u32(ec_word(field), value);
        match reopen_err(&seg) {
            Error::Corrupted { what, .. } => assert!(what.contains("notifier"), "{what}"),
            e => panic!("{kind:?} ring, eventcount word {value}: expected Corrupted, got {e}"),
        }
        drop(tx);
    }
}

#[test]
fn a_scribbled_semaphore_count_costs_wake_ups_never_safety() {
    // The consumer parks on the semaphore while another mapping keeps
    // overwriting the semaphore's count word and padding (and the waiter
    // count) with garbage: the consumer may wake spuriously or sleep until
    // its check interval, but every record still arrives, in order. (glibc's
    // flags word is left alone here: see the next test.)
    let seg = TempSeg::new("semgarbage");
    let opts = SpscOptions::new()
        .capacity(4096)
        .notifier(NotifierKind::Semaphore)
        .wait_policy(WaitPolicy::park().check_interval(Duration::from_millis(10)));
    let mut tx = Producer::create(&seg.0, &opts).unwrap();
    let mut rx = Consumer::open(&seg.0).unwrap();
    rx.set_wait_policy(WaitPolicy::park().check_interval(Duration::from_millis(10)));
    let a = Attacker::new(&seg);
    let sem = CONTROL_OFFSET + std::mem::offset_of!(SpscControl, data_ready) + SEM_OFFSET;
    let consumer = std::thread::spawn(move || {
        let mut n = 0u32;
        while let Some(r) = rx.recv_timeout(Duration::from_secs(60)).unwrap() {
            assert_eq!(&*r, &n.to_le_bytes());
            n += 1;
        }
        n
    });
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for n in 0..200u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // glibc (64-bit): count and waiter count at 0..8, flags at 8..12, padding after.
        a.write_u64(sem, x);
        a.write_u32(sem + 12, (x >> 7) as u32);
        a.write_u64(sem + 16, x.rotate_left(17));
        a.write_u64(sem + 24, x.rotate_left(31));
        if n % 16 == 0 {
            a.write_u32(sem - SEM_OFFSET + EventCount::WAITERS_OFFSET, (x >> 40) as u32);
        }
        tx.send(&n.to_le_bytes()).unwrap();
        if n % 8 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(tx);
    assert_eq!(consumer.join().unwrap(), 200);
}

/// Offset of the semaphore inside an eventcount.
const SEM_OFFSET: usize = 16;

/// Peer entry: open the ring as its consumer, park waiting for a record,
/// and exit 0 once it arrives.
#[test]
#[ignore = "peer process for the hostile tests"]
fn semaphore_victim_main() {
    let Some((_, name)) = peer_role() else { return };
    let mut rx = Consumer::open(&shmring::Location::shm(&name)).unwrap();
    rx.set_wait_policy(WaitPolicy::park().check_interval(Duration::from_millis(5)));
    let got = rx.recv_timeout(Duration::from_secs(30)).unwrap().map(|r| r.to_vec());
    assert_eq!(got.as_deref(), Some(&b"still here"[..]));
}

#[test]
fn a_scribbled_semaphore_flags_word_is_not_handed_to_glibc() {
    // glibc passes the semaphore's flags word to the futex call as is, and
    // aborts the process on an error it does not expect from the kernel
    // (EINVAL, ENOSYS for a garbage operation). The notifier checks the word
    // before every call and polls instead: the parked waiter and the
    // notifying producer both survive, and the record still arrives.
    let seg = TempSeg::new("semflags");
    let opts = SpscOptions::new().capacity(4096).notifier(NotifierKind::Semaphore);
    let mut tx = Producer::create(&seg.0, &opts).unwrap();
    let a = Attacker::new(&seg);
    let sem = CONTROL_OFFSET + std::mem::offset_of!(SpscControl, data_ready) + SEM_OFFSET;
    a.write_u32(sem + 8, 0xffff_ffff);
    let mut peer: Peer = spawn_peer("semaphore_victim_main", "victim", &seg.name());
    // Wait until it is registered as a waiter: only then does our send go
    // through the semaphore with the scribbled word.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (page, len) = shmring::segment::read_first_page(&seg.0).unwrap();
        if shmring::inspect::Snapshot::parse(&page, len).waiters.0 > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the victim never parked");
        std::thread::sleep(Duration::from_millis(2));
    }
    tx.send(b"still here").unwrap();
    let status = wait_exit(&mut peer, 60);
    assert!(status.success(), "victim exit: {status:?}");
    drop(tx); // notifies with the flags still scribbled: must not abort us either
}

#[test]
fn positions_ahead_of_an_empty_ring_are_reported_while_waiting() {
    // A ring whose data region was wiped under a published record: the
    // consumer finds no record where the producer's position says there is
    // one. Waiting would never end (the producer waits for space the
    // consumer cannot free), so the periodic check reports it.
    let (seg, mut tx, mut rx) = pair("wiped");
    rx.set_wait_policy(WaitPolicy::park().check_interval(Duration::from_millis(5)));
    tx.send(b"gone").unwrap();
    let a = Attacker::new(&seg);
    a.write_u64(HEADER_LEN, 0);
    assert_corrupted(rx.recv_timeout(Duration::from_secs(30)).map(|_| ()), "wiped record");
}
