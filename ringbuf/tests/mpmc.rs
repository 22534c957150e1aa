//! The MPMC ring: single-process behaviour, real processes on one ring, and a
//! hostile process scribbling on it. Peer processes re-execute this binary
//! (see `peer_main`). Every test runs once per notifier (futex and
//! semaphore); peer processes open with default options, so they use the
//! notifier the header names, and park when they wait.
// Tests drive the library from outside: the atomics facade (`src/sync.rs`,
// `clippy.toml`) is the library's rule, not theirs.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
#![cfg(not(loom))]

#[macro_use]
mod common;

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Attacker, Peer, TempSeg, assert_corrupted, peer_role, spawn_peer, wait_exit};
use shmring::header::{self, CONTROL_OFFSET, MPMC_HEADER_LEN, MpmcControl, NotifierKind, mpmc_slot_stride};
use shmring::inspect::Snapshot;
use shmring::mpmc::{self, Consumer, MpmcOptions, Producer};
use shmring::{Error, Location, Segment, SpscOptions, WaitPolicy, spsc};

fn opts(slot_size: usize, slots: usize, kind: NotifierKind) -> MpmcOptions {
    MpmcOptions::new().slot_size(slot_size).slot_count(slots).notifier(kind)
}

/// A producer created with `kind` and a consumer opened with default
/// options (it uses the notifier the header names).
fn ring(tag: &str, slot_size: usize, slots: usize, kind: NotifierKind) -> (TempSeg, Producer, Consumer) {
    let seg = TempSeg::new(tag);
    let tx = Producer::create(&seg.0, &opts(slot_size, slots, kind)).unwrap();
    let rx = Consumer::open(&seg.0).unwrap();
    (seg, tx, rx)
}

/// Message `i` of producer `p`: tag (producer, sequence) then filler, length
/// 16..=slot_size depending on `i`.
fn message(p: u32, i: u64, slot_size: usize) -> Vec<u8> {
    let len = 16 + (i as usize * 7) % (slot_size - 15);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&u64::from(p).to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    v.extend((16..len).map(|j| (i as usize + j) as u8));
    v
}

/// Decode and check a message; returns (producer, sequence).
fn check_message(m: &[u8], slot_size: usize) -> (u32, u64) {
    assert!(m.len() >= 16, "message of {} bytes", m.len());
    let p = u64::from_le_bytes(m[..8].try_into().unwrap()) as u32;
    let i = u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert_eq!(m, &message(p, i, slot_size)[..], "message {p}/{i} damaged");
    (p, i)
}

// ---------------------------------------------------------------------------
// Single process

for_each_notifier! {
    fn fifo_one_producer_one_consumer_with_wrap_around(kind) {
        let (_seg, mut tx, mut rx) = ring("fifo", 64, 8, kind);
        const N: u64 = 20_000;
        let t = std::thread::spawn(move || {
            for i in 0..N {
                tx.send(&message(0, i, 64)).unwrap();
            }
            tx.close_ring();
        });
        let mut next = 0;
        while let Some(m) = rx.recv().unwrap() {
            assert_eq!(check_message(&m, 64), (0, next));
            next += 1;
        }
        assert_eq!(next, N);
        t.join().unwrap();
        let s = rx.stats();
        assert_eq!((s.enqueued, s.dequeued, s.recovered), (N, N, 0));
    }
}

for_each_notifier! {
    fn full_empty_and_the_non_blocking_and_timeout_forms(kind) {
        let (_seg, mut tx, mut rx) = ring("full", 8, 4, kind);
        assert_eq!(rx.slot_size(), 8);
        assert_eq!(rx.slot_count(), 4);
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { full: false })));
        let t = Instant::now();
        assert!(matches!(rx.recv_timeout(Duration::from_millis(30)), Err(Error::Timeout)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        for i in 0..4u8 {
            tx.try_send(&[i; 8]).unwrap();
        }
        assert!(matches!(tx.try_send(b"x"), Err(Error::WouldBlock { full: true })));
        assert!(matches!(tx.try_grant().err(), Some(Error::WouldBlock { full: true })));
        let t = Instant::now();
        assert!(matches!(tx.send_timeout(b"x", Duration::from_millis(30)), Err(Error::Timeout)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert!(matches!(tx.grant_timeout(Duration::from_millis(1)).err(), Some(Error::Timeout)));
        assert!(matches!(tx.send(&[0; 9]), Err(Error::InvalidArgument(_))), "longer than a slot");
        assert_eq!(&*rx.try_recv().unwrap().unwrap(), &[0u8; 8]);
        tx.send_timeout(b"late", Duration::from_secs(5)).unwrap();
        for i in 1..4u8 {
            assert_eq!(&*rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap(), &[i; 8]);
        }
        assert_eq!(&*rx.try_recv().unwrap().unwrap(), b"late");
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { full: false })));
    }
}

for_each_notifier! {
    fn a_blocked_sender_wakes_when_a_slot_frees_and_a_blocked_receiver_when_a_message_comes(kind) {
        let (_seg, mut tx, mut rx) = ring("block", 8, 2, kind);
        tx.send(b"1").unwrap();
        tx.send(b"2").unwrap();
        let mut tx2 = tx.new_producer().unwrap();
        tx2.set_wait_policy(WaitPolicy::park());
        let t = std::thread::spawn(move || tx2.send(b"3").unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"1");
        t.join().unwrap();
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"2");
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"3");
        let mut rx2 = rx.new_consumer().unwrap();
        rx2.set_wait_policy(WaitPolicy::park());
        let t = std::thread::spawn(move || rx2.recv().unwrap().unwrap().to_vec());
        std::thread::sleep(Duration::from_millis(50));
        tx.send(b"4").unwrap();
        assert_eq!(t.join().unwrap(), b"4");
    }
}

for_each_notifier! {
    fn zero_copy_grant_and_commit(kind) {
        let (_seg, mut tx, mut rx) = ring("grant", 20, 4, kind);
        let mut g = tx.grant().unwrap();
        assert_eq!(g.len(), 24, "a grant is the whole slot (20 rounded up to 24)");
        g[..5].copy_from_slice(b"hello");
        g.commit(5).unwrap();
        let mut g = tx.grant().unwrap();
        g.fill(7);
        g.commit(24).unwrap();
        let g = tx.grant().unwrap();
        assert!(matches!(g.commit(25), Err(Error::InvalidArgument(_))));
        tx.grant().unwrap().commit(0).unwrap();
        let m = rx.recv().unwrap().unwrap();
        assert_eq!((&*m, m.len(), m.is_empty()), (&b"hello"[..], 5, false));
        drop(m);
        assert_eq!(&*rx.recv().unwrap().unwrap(), &[7u8; 24]);
        // The over-long commit was published as a skip; the empty message is real.
        assert!(rx.recv().unwrap().unwrap().is_empty());
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
    }
}

for_each_notifier! {
    fn abandoned_grants_never_wedge_the_ring(kind) {
        let (_seg, mut tx, mut rx) = ring("abandon", 8, 4, kind);
        for round in 0..10u8 {
            // More abandoned grants than slots, interleaved with real messages.
            for _ in 0..6 {
                let mut g = tx.grant_timeout(Duration::from_secs(5)).unwrap();
                g[0] = 0xee;
                drop(g);
                // Consumers skip them, freeing the slots.
                assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
            }
            tx.send(&[round]).unwrap();
            assert_eq!(&*rx.recv().unwrap().unwrap(), &[round]);
        }
        assert_eq!(rx.stats().recovered, 0);
    }
}

for_each_notifier! {
    fn batches_claim_several_slots_at_once(kind) {
        let (_seg, mut tx, mut rx) = ring("batch", 8, 8, kind);
        let msgs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1 + usize::from(i) % 8]).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        assert_eq!(tx.send_batch(&[]).unwrap(), 0);
        assert!(matches!(tx.send_batch(&[b"ok", &[0; 9]]), Err(Error::InvalidArgument(_))));
        assert_eq!(tx.send_batch(&refs).unwrap(), 8, "all 8 free slots in one claim");
        assert!(matches!(tx.try_send(b"x"), Err(Error::WouldBlock { full: true })));
        let mut got = Vec::new();
        assert_eq!(rx.recv_batch(3, |m| got.push(m.to_vec())).unwrap(), 3);
        assert_eq!(tx.send_batch(&refs[8..]).unwrap(), 3);
        assert_eq!(rx.recv_batch(100, |m| got.push(m.to_vec())).unwrap(), 8);
        let mut sent = 11;
        while sent < refs.len() {
            sent += tx.send_batch(&refs[sent..]).unwrap();
            rx.recv_batch(2, |m| got.push(m.to_vec())).unwrap();
        }
        tx.close_ring();
        while rx.recv_batch(0, |m| got.push(m.to_vec())).unwrap() > 0 {}
        assert_eq!(got, msgs);
        // Skipped slots inside a batch are not passed to the callback.
        let (_seg, mut tx, mut rx) = ring("batch-skip", 8, 8, kind);
        tx.send(b"a").unwrap();
        drop(tx.grant().unwrap());
        tx.send(b"b").unwrap();
        let mut got = Vec::new();
        assert_eq!(rx.recv_batch(8, |m| got.push(m.to_vec())).unwrap(), 2);
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec()]);
    }
}

for_each_notifier! {
    fn close_then_drain_then_end_of_stream(kind) {
        let (_seg, mut tx, mut rx) = ring("close", 8, 4, kind);
        tx.send(b"1").unwrap();
        tx.send(b"2").unwrap();
        assert!(!rx.is_closed());
        rx.close_ring(); // any handle may close
        assert!(tx.is_closed());
        assert!(matches!(tx.send(b"3"), Err(Error::Closed(_))));
        assert!(matches!(tx.try_send(b"3"), Err(Error::Closed(_))));
        assert!(matches!(tx.grant().err(), Some(Error::Closed(_))));
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"1");
        assert_eq!(&*rx.try_recv().unwrap().unwrap(), b"2");
        assert!(rx.recv().unwrap().is_none());
        assert!(rx.try_recv().unwrap().is_none());
        assert!(rx.recv_timeout(Duration::from_millis(1)).unwrap().is_none());
        assert_eq!(rx.recv_batch(4, |_| ()).unwrap(), 0);
        // The rejected sends claimed positions and gave them back as skips.
        let s = rx.stats();
        assert_eq!(s.enqueued, s.dequeued);
    }
}

for_each_notifier! {
    fn close_wakes_blocked_senders_and_receivers(kind) {
        let (_seg, tx, rx) = ring("close-wake", 8, 2, kind);
        // Receivers waiting on the empty ring: one parked, one busy-polling
        // (it reads the producers' counter, where the closed bit is, only
        // now and then), one spinning, yielding, then parking.
        let policies = [WaitPolicy::park(), WaitPolicy::busy_poll(), WaitPolicy::default()];
        let waiting_rx: Vec<_> = policies
            .into_iter()
            .map(|policy| {
                let mut rx2 = rx.new_consumer().unwrap();
                rx2.set_wait_policy(policy);
                std::thread::spawn(move || rx2.recv().map(|r| r.is_none()))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        tx.close_ring();
        for (w, policy) in waiting_rx.into_iter().zip(policies) {
            assert!(w.join().unwrap().unwrap(), "end of stream for a receiver with {policy:?}");
        }
        // A sender parked on a full ring.
        let (_seg, mut tx, rx) = ring("close-wake2", 8, 2, kind);
        tx.send(b"a").unwrap();
        tx.send(b"b").unwrap();
        let mut tx2 = tx.new_producer().unwrap();
        tx2.set_wait_policy(WaitPolicy::park());
        let waiting_tx = std::thread::spawn(move || tx2.send(b"c"));
        std::thread::sleep(Duration::from_millis(50));
        rx.close_ring();
        assert!(matches!(waiting_tx.join().unwrap(), Err(Error::Closed(_))));
        drop((rx, tx));
    }
}

for_each_notifier! {
    fn a_wait_that_times_out_still_reports_the_end_of_a_closed_ring(kind) {
        // A consumer polling an empty ring reads the producers' counter, where
        // the closed bit is, only now and then; a wait whose deadline passes
        // before it does must still look there once before it says "timeout".
        for i in 0..20 {
            let (_seg, tx, mut rx) = ring(&format!("close-timeout-{i}"), 8, 4, kind);
            rx.set_wait_policy(WaitPolicy::park());
            // Reads the counter, so the next quick look will not.
            assert!(matches!(rx.recv_timeout(Duration::from_micros(1)), Err(Error::Timeout)));
            tx.close_ring();
            assert!(rx.recv_timeout(Duration::ZERO).unwrap().is_none(), "end of stream, not a timeout (round {i})");
        }
    }
}

for_each_notifier! {
    fn wrong_geometry_and_invalid_options_are_refused(kind) {
        let seg = TempSeg::new("geom");
        let _tx = Producer::create(&seg.0, &opts(32, 8, kind)).unwrap();
        for (size, count) in [(64, 8), (32, 16), (16, 8)] {
            match Consumer::open_or_create(&seg.0, &opts(size, count, kind)) {
                Err(Error::InvalidArgument(m)) => assert!(m.contains("slots"), "{m}"),
                other => panic!("{size}x{count}: expected InvalidArgument, got {:?}", other.err()),
            }
        }
        // Rounding to a multiple of 8 makes 30 the same as 32.
        Consumer::open_or_create(&seg.0, &opts(30, 8, kind)).unwrap();
        let bad = TempSeg::new("geom-bad");
        let geometries = [(0, 8), (8, 3), (8, 1), (8, 0), (1 << 25, 2), (1 << 20, 1 << 12)];
        for o in geometries.map(|(size, count)| opts(size, count, kind)) {
            assert!(matches!(Producer::create(&bad.0, &o), Err(Error::InvalidArgument(_))));
            assert!(!bad.0.exists());
        }
        // A header whose geometry does not add up is corruption.
        let a = Segment::open(&seg.0).unwrap();
        let slot_size_off = std::mem::offset_of!(header::Header, slot_size);
        // SAFETY: in bounds of our own mapping.
        unsafe { std::ptr::write_volatile(a.as_ptr().add(slot_size_off) as *mut u32, 12) };
        assert_corrupted(Consumer::open(&seg.0), "slot size 12");
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(a.as_ptr().add(slot_size_off) as *mut u32, 64) };
        assert_corrupted(Consumer::open(&seg.0), "slot size not matching capacity");
    }
}

for_each_notifier! {
    fn kinds_are_checked_both_ways(kind) {
        let seg = TempSeg::new("kind-s");
        let _s = spsc::Producer::create(&seg.0, &SpscOptions::new().capacity(4096)).unwrap();
        match Consumer::open(&seg.0) {
            Err(Error::KindMismatch { found, expected, .. }) => {
                assert_eq!((found.as_str(), expected), ("spsc", "mpmc"))
            }
            other => panic!("expected KindMismatch, got {:?}", other.err()),
        }
        assert!(matches!(Producer::open_or_create(&seg.0, &opts(8, 4, kind)), Err(Error::KindMismatch { .. })));
        let seg = TempSeg::new("kind-m");
        let _m = Producer::create(&seg.0, &opts(8, 4, kind)).unwrap();
        match spsc::Consumer::open(&seg.0) {
            Err(Error::KindMismatch { found, expected, .. }) => {
                assert_eq!((found.as_str(), expected), ("mpmc", "spsc"))
            }
            other => panic!("expected KindMismatch, got {:?}", other.err()),
        }
    }
}

for_each_notifier! {
    fn snapshot_shows_the_mpmc_counters(kind) {
        let (seg, mut tx, mut rx) = ring("snap", 8, 4, kind);
        tx.send(b"a").unwrap();
        tx.send(b"b").unwrap();
        drop(rx.recv().unwrap());
        let (page, len) = shmring::segment::read_first_page(&seg.0).unwrap();
        let s = Snapshot::parse(&page, len);
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!((s.slot_size, s.slot_count, s.header_len as usize), (8, 4, MPMC_HEADER_LEN));
        let m = s.mpmc.unwrap();
        assert_eq!((m.enqueue, m.dequeue, m.closed, m.high_water), (2, 1, false, 2));
        assert_eq!(m.fill(s.slot_count), Some(1));
        assert_eq!((m.lost_producer_died, m.lost_consumer_died, m.recovered), (0, 0, 0));
        // Impossible counters are reported.
        let a = Segment::open(&seg.0).unwrap();
        let enq = CONTROL_OFFSET + std::mem::offset_of!(MpmcControl, enqueue);
        // SAFETY: in bounds of our own mapping.
        unsafe { std::ptr::write_volatile(a.as_ptr().add(enq) as *mut u64, 100) };
        let (page, len) = shmring::segment::read_first_page(&seg.0).unwrap();
        assert!(Snapshot::parse(&page, len).problems().iter().any(|p| p.contains("exceeds 4 slots")));
    }
}

for_each_notifier! {
    fn file_backing(kind) {
        let dir = std::env::temp_dir().join(format!("shmring-test-mpmc-file-{}-{}", std::process::id(), kind.name()));
        std::fs::create_dir_all(&dir).unwrap();
        struct RmDir(PathBuf);
        impl Drop for RmDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _guard = RmDir(dir.clone());
        let loc = Location::path(dir.join("ring"));
        let mut tx = Producer::create(&loc, &opts(16, 4, kind)).unwrap();
        let mut rx = Consumer::open(&loc).unwrap();
        let total = std::fs::metadata(dir.join("ring")).unwrap().len();
        assert_eq!(total, MPMC_HEADER_LEN as u64 + 4 * mpmc_slot_stride(16));
        for i in 0..10u8 {
            tx.send(&[i; 3]).unwrap();
            assert_eq!(&*rx.recv().unwrap().unwrap(), &[i; 3]);
        }
    }
}

for_each_notifier! {
    fn memfd_backing(kind) {
        let seg = mpmc::create_memfd("mpmc-test", &opts(16, 4, kind)).unwrap();
        let dup = seg.fd().try_clone_to_owned().unwrap();
        let mut tx = Producer::attach(seg).unwrap();
        let mut rx = Consumer::attach(Segment::from_fd(dup, "dup").unwrap()).unwrap();
        tx.send(b"via memfd").unwrap();
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"via memfd");
        assert!(rx.name().starts_with("fd:"));
    }
}

for_each_notifier! {
    fn participant_table_full_and_freed(kind) {
        let (_seg, tx, rx) = ring("table", 8, 2, kind);
        let mut more = Vec::new();
        let err = loop {
            match tx.new_consumer() {
                Ok(c) => more.push(c),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::TooManyParticipants { max: 64, .. }), "{err}");
        assert_eq!(more.len(), 62);
        more.pop();
        let _again = rx.new_producer().unwrap();
        assert!(matches!(rx.new_producer(), Err(Error::TooManyParticipants { .. })));
    }
}

// ---------------------------------------------------------------------------
// Real processes

const SLOT: usize = 64;

fn parse_loc(s: &str) -> Location {
    Location::shm(s)
}

/// Entry point of peer processes; ignored in a normal run.
#[test]
#[ignore = "peer process for the MPMC tests"]
fn peer_main() {
    let Some((role, arg)) = peer_role() else { return };
    let parts: Vec<&str> = arg.split(',').collect();
    match role.as_str() {
        // produce LOC ID COUNT: send COUNT tagged messages, batches now and then.
        "produce" => {
            let mut tx = Producer::open(&parse_loc(parts[0])).unwrap();
            tx.set_wait_policy(WaitPolicy::park());
            let (id, n): (u32, u64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
            let mut i = 0;
            while i < n {
                if i % 64 == 0 && i + 4 <= n {
                    let batch: Vec<Vec<u8>> = (i..i + 4).map(|j| message(id, j, SLOT)).collect();
                    let refs: Vec<&[u8]> = batch.iter().map(|m| &m[..]).collect();
                    let mut sent = 0;
                    while sent < 4 {
                        sent += tx.send_batch(&refs[sent..]).unwrap();
                    }
                    i += 4;
                } else {
                    tx.send(&message(id, i, SLOT)).unwrap();
                    i += 1;
                }
            }
        }
        // consume LOC OUTFILE: receive until end of stream, write (producer,
        // sequence) pairs in arrival order to OUTFILE.
        "consume" => {
            let mut rx = Consumer::open(&parse_loc(parts[0])).unwrap();
            rx.set_wait_policy(WaitPolicy::park());
            let mut got: Vec<u8> = Vec::new();
            let mut k = 0u64;
            loop {
                if k.is_multiple_of(50) {
                    let mut batch = Vec::new();
                    let n = rx.recv_batch(8, |m| batch.push(check_message(m, SLOT))).unwrap();
                    if n == 0 {
                        break;
                    }
                    for (p, i) in batch {
                        got.extend_from_slice(&u64::from(p).to_le_bytes());
                        got.extend_from_slice(&i.to_le_bytes());
                    }
                } else {
                    let Some(m) = rx.recv().unwrap() else { break };
                    let (p, i) = check_message(&m, SLOT);
                    got.extend_from_slice(&u64::from(p).to_le_bytes());
                    got.extend_from_slice(&i.to_le_bytes());
                }
                k += 1;
            }
            std::fs::write(parts[1], got).unwrap();
        }
        // hold-grant LOC MS: claim a slot, write, hold it MS ms (alive), commit.
        "hold-grant" => {
            let mut tx = Producer::open(&parse_loc(parts[0])).unwrap();
            let ms: u64 = parts[1].parse().unwrap();
            let mut g = tx.grant().unwrap();
            g[..4].copy_from_slice(b"slow");
            std::thread::sleep(Duration::from_millis(ms));
            g.commit(4).unwrap();
        }
        // grant-then-hang LOC: claim a slot and hang until killed.
        "grant-then-hang" => {
            let mut tx = Producer::open(&parse_loc(parts[0])).unwrap();
            let _g = tx.grant().unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        // recv-then-hang LOC: receive one message and hang holding it.
        "recv-then-hang" => {
            let mut rx = Consumer::open(&parse_loc(parts[0])).unwrap();
            rx.set_wait_policy(WaitPolicy::park());
            let _m = rx.recv().unwrap().unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        // attach-then-hang LOC: take a participant entry and hang.
        "attach-then-hang" => {
            let _rx = Consumer::open(&parse_loc(parts[0])).unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        // consume-fd FD COUNT: receive COUNT messages from an inherited memfd.
        "consume-fd" => {
            let fd: i32 = parts[0].parse().unwrap();
            // SAFETY: the parent cleared CLOEXEC on this fd and passed its number.
            let seg = Segment::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }, "inherited").unwrap();
            let mut rx = Consumer::attach(seg).unwrap();
            rx.set_wait_policy(WaitPolicy::park());
            let n: u64 = parts[1].parse().unwrap();
            for i in 0..n {
                let m = rx.recv().unwrap().unwrap();
                assert_eq!(check_message(&m, SLOT), (7, i));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// A temporary output file, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("shmring-test-mpmc-{tag}-{}-{n}", std::process::id())))
    }
    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read_pairs(f: &TempFile) -> Vec<(u32, u64)> {
    let b = std::fs::read(&f.0).unwrap();
    b.chunks_exact(16)
        .map(|c| {
            (u64::from_le_bytes(c[..8].try_into().unwrap()) as u32, u64::from_le_bytes(c[8..].try_into().unwrap()))
        })
        .collect()
}

/// `producers` producer processes × `consumers` consumer processes; every
/// message exactly once, in order per producer as each consumer sees it.
/// Returns the throughput in messages per second.
fn many_to_many(producers: u32, consumers: usize, per_producer: u64, kind: NotifierKind) -> f64 {
    let seg = TempSeg::new("m2m");
    let mut ctl = Producer::create(&seg.0, &opts(SLOT, 256, kind)).unwrap();
    let outs: Vec<TempFile> = (0..consumers).map(|_| TempFile::new("out")).collect();
    let t0 = Instant::now();
    let mut cons: Vec<Peer> =
        outs.iter().map(|o| spawn_peer("peer_main", "consume", &format!("{},{}", seg.name(), o.path()))).collect();
    let mut prods: Vec<Peer> = (0..producers)
        .map(|id| spawn_peer("peer_main", "produce", &format!("{},{id},{per_producer}", seg.name())))
        .collect();
    for p in &mut prods {
        assert!(wait_exit(p, 120).success(), "producer failed");
    }
    ctl.close_ring();
    for c in &mut cons {
        assert!(wait_exit(c, 120).success(), "consumer failed");
    }
    let elapsed = t0.elapsed();
    let mut seen = HashSet::new();
    for o in &outs {
        let pairs = read_pairs(o);
        let mut last = vec![None::<u64>; producers as usize];
        for (p, i) in pairs {
            assert!(p < producers && i < per_producer, "bad tag {p}/{i}");
            assert!(seen.insert((p, i)), "message {p}/{i} delivered twice");
            let l = &mut last[p as usize];
            assert!(l.is_none_or(|l| l < i), "producer {p}: {i} after {l:?}");
            *l = Some(i);
        }
    }
    assert_eq!(seen.len() as u64, u64::from(producers) * per_producer, "messages lost");
    let s = ctl.stats();
    assert_eq!((s.recovered, s.lost_producer_died, s.lost_consumer_died), (0, 0, 0));
    ctl.recover_dead().unwrap();
    (u64::from(producers) * per_producer) as f64 / elapsed.as_secs_f64()
}

for_each_notifier! {
    fn two_producer_processes_two_consumer_processes_exactly_once_in_order(kind) {
        let rate = many_to_many(2, 2, 50_000, kind);
        eprintln!("mpmc 2p2c across processes: {:.2} M msg/s (64-byte slots, incl. process start)", rate / 1e6);
    }
}

for_each_notifier! {
    fn one_producer_process_one_consumer_process(kind) {
        let rate = many_to_many(1, 1, 100_000, kind);
        eprintln!("mpmc 1p1c across processes: {:.2} M msg/s (64-byte slots, incl. process start)", rate / 1e6);
    }
}

for_each_notifier! {
    fn memfd_ring_passed_to_a_child_by_inheritance(kind) {
        let seg = mpmc::create_memfd("inherit", &opts(SLOT, 8, kind)).unwrap();
        let fd = seg.fd().as_raw_fd();
        nix::fcntl::fcntl(seg.fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
        let mut tx = Producer::attach(seg).unwrap();
        let mut peer = spawn_peer("peer_main", "consume-fd", &format!("{fd},1000"));
        for i in 0..1000 {
            tx.send(&message(7, i, SLOT)).unwrap();
        }
        assert!(wait_exit(&mut peer, 60).success());
    }
}

/// Wait until the ring has `n` more enqueued positions than `base`.
fn wait_enqueued(rx: &Consumer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.stats().enqueued < n {
        assert!(Instant::now() < deadline, "peer never claimed");
        std::thread::sleep(Duration::from_millis(1));
    }
}

for_each_notifier! {
    fn a_slow_but_alive_producer_keeps_its_slot(kind) {
        let (seg, _tx, mut rx) = ring("slow", SLOT, 4, kind);
        let mut peer = spawn_peer("peer_main", "hold-grant", &format!("{},700", seg.name()));
        wait_enqueued(&rx, 1);
        // Far longer than the recovery grace: the claimant is alive, so no theft.
        assert!(matches!(rx.recv_timeout(Duration::from_millis(300)), Err(Error::Timeout)));
        assert_eq!(rx.recover_dead().unwrap(), 0);
        assert_eq!(&*rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap(), b"slow");
        assert_eq!(rx.stats().recovered, 0);
        assert!(wait_exit(&mut peer, 30).success());
    }
}

for_each_notifier! {
    fn a_producer_killed_holding_a_grant_is_recovered_quickly(kind) {
        let (seg, mut tx, mut rx) = ring("kill-prod", SLOT, 4, kind);
        let mut peer = spawn_peer("peer_main", "grant-then-hang", &format!("{},", seg.name()));
        wait_enqueued(&rx, 1);
        tx.send(b"after").unwrap();
        peer.0.kill().unwrap();
        let t = Instant::now();
        assert_eq!(&*rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(), b"after");
        let took = t.elapsed();
        eprintln!("dead producer's slot recovered after {took:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        let s = rx.stats();
        assert_eq!((s.lost_producer_died, s.lost_consumer_died, s.recovered), (1, 0, 1));
        let _ = peer.0.wait();
    }
}

for_each_notifier! {
    fn a_consumer_killed_holding_a_message_is_recovered_quickly(kind) {
        let (seg, mut tx, mut rx) = ring("kill-cons", SLOT, 2, kind);
        let mut peer = spawn_peer("peer_main", "recv-then-hang", &format!("{},", seg.name()));
        tx.send(b"held").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while rx.stats().dequeued < 1 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        tx.send(b"1").unwrap();
        // The ring is full now: slot of "held" is the one the next send needs.
        peer.0.kill().unwrap();
        let t = Instant::now();
        tx.send_timeout(b"2", Duration::from_secs(10)).unwrap();
        let took = t.elapsed();
        eprintln!("dead consumer's slot recovered after {took:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"1");
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"2");
        let s = rx.stats();
        assert_eq!((s.lost_producer_died, s.lost_consumer_died, s.recovered), (0, 1, 1));
        let _ = peer.0.wait();
    }
}

for_each_notifier! {
    fn recover_dead_sweeps_slots_nobody_waits_for_and_dead_entries_are_reused(kind) {
        let (seg, mut tx, mut rx) = ring("sweep", SLOT, 4, kind);
        // Entries: 0 tx, 1 rx, 2 the holder (killed below), 3 a live child.
        let mut holder = spawn_peer("peer_main", "recv-then-hang", &format!("{},", seg.name()));
        tx.send(b"held").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while rx.stats().dequeued < 1 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut live = spawn_peer("peer_main", "attach-then-hang", &format!("{},", seg.name()));
        loop {
            let (page, len) = shmring::segment::read_first_page(&seg.0).unwrap();
            if Snapshot::parse(&page, len).mpmc.unwrap().high_water >= 4 {
                break;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(rx.recover_dead().unwrap(), 0, "alive: nothing to recover");
        holder.0.kill().unwrap();
        let _ = holder.0.wait();
        assert_eq!(rx.recover_dead().unwrap(), 1);
        assert_eq!(rx.recover_dead().unwrap(), 0);
        let s = rx.stats();
        assert_eq!((s.lost_producer_died, s.lost_consumer_died, s.recovered), (0, 1, 1));
        // Fill the table: the dead holder's entry is taken over, the live child's kept.
        let mut more = Vec::new();
        while let Ok(c) = rx.new_consumer() {
            more.push(c);
        }
        assert_eq!(more.len(), 64 - 3);
        live.0.kill().unwrap();
        let _ = live.0.wait();
        more.push(rx.new_consumer().unwrap());
    }
}

// ---------------------------------------------------------------------------
// Hostile

/// Offsets of the MPMC control words and slots.
impl Attacker {
    fn ctl(&self, field: usize) -> usize {
        CONTROL_OFFSET + field
    }
    /// Offset of the sequence word of `slot` for slot size `size`.
    fn seq(&self, slot: usize, size: u32) -> usize {
        MPMC_HEADER_LEN + slot * mpmc_slot_stride(size) as usize
    }
}

for_each_notifier! {
    fn impossible_sequence_numbers_are_corrupted_and_poison(kind) {
        let (seg, mut tx, mut rx) = ring("h-seq", 8, 4, kind);
        let a = Attacker::new(&seg);
        a.write_u64(a.seq(0, 8), 77);
        assert_corrupted(rx.try_recv().map(|_| ()), "sequence far ahead");
        assert_corrupted(tx.try_send(b"x"), "producer sees it too");
        a.write_u64(a.seq(0, 8), 0);
        assert_corrupted(rx.try_recv().map(|_| ()), "poisoned");
        let (page, len) = shmring::segment::read_first_page(&seg.0).unwrap();
        assert!(Snapshot::parse(&page, len).problems().iter().any(|p| p.contains("poisoned")));
        // A sequence that claims the slot is one lap behind: impossible at start.
        let (seg, _tx, mut rx) = ring("h-seq2", 8, 4, kind);
        let a = Attacker::new(&seg);
        a.write_u64(a.seq(0, 8), u64::MAX);
        assert_corrupted(rx.try_recv().map(|_| ()), "sequence with the skip bit and garbage");
    }
}

for_each_notifier! {
    fn overlong_length_word_is_corrupted(kind) {
        let (seg, mut tx, mut rx) = ring("h-len", 8, 4, kind);
        tx.send(b"ok").unwrap();
        let a = Attacker::new(&seg);
        a.write_u64(a.seq(0, 8) + 8, 9);
        assert_corrupted(rx.recv().map(|_| ()), "length 9 in an 8-byte slot");
        // The slot was given back, so producers are not wedged.
        tx.send(b"x").unwrap();
    }
}

for_each_notifier! {
    fn impossible_counters_are_corrupted(kind) {
        let cases: [(&str, usize, u64); 5] = [
            ("enqueue far ahead", std::mem::offset_of!(MpmcControl, enqueue), 1000),
            ("enqueue beyond 2^62", std::mem::offset_of!(MpmcControl, enqueue), 1 << 63),
            ("closed far ahead", std::mem::offset_of!(MpmcControl, enqueue), header::MPMC_CLOSED | 1000),
            ("dequeue beyond 2^62", std::mem::offset_of!(MpmcControl, dequeue), u64::MAX),
            ("dequeue ahead of enqueue", std::mem::offset_of!(MpmcControl, dequeue), 3),
        ];
        for (what, field, v) in cases {
            let (seg, mut tx, mut rx) = ring("h-ctr", 8, 4, kind);
            let a = Attacker::new(&seg);
            a.write_u64(a.ctl(field), v);
            let t = Instant::now();
            let r = rx.recv_timeout(Duration::from_secs(5)).map(|_| ());
            let w =
                tx.send_timeout(b"x", Duration::from_secs(5))
                    .and_then(|_| tx.send_timeout(b"y", Duration::from_secs(5)));
            assert!(t.elapsed() < Duration::from_secs(5), "{what}: took {:?}", t.elapsed());
            assert!(
                matches!(r, Err(Error::Corrupted { .. })) || matches!(w, Err(Error::Corrupted { .. })),
                "{what}: recv {r:?}, send {w:?}"
            );
            let _ = rx.recover_dead();
        }
        // Counters going backwards.
        let (seg, mut tx, mut rx) = ring("h-back", 8, 4, kind);
        tx.send(b"a").unwrap();
        tx.send(b"b").unwrap();
        let a = Attacker::new(&seg);
        a.write_u64(a.ctl(std::mem::offset_of!(MpmcControl, enqueue)), 0);
        assert_corrupted(tx.try_send(b"c"), "enqueue went back");
        drop(rx.recv().unwrap());
    }
}

for_each_notifier! {
    fn garbage_participant_entries_do_not_block_attach_or_recovery(kind) {
        let (seg, mut tx, mut rx) = ring("h-part", 8, 4, kind);
        let a = Attacker::new(&seg);
        let table = std::mem::offset_of!(MpmcControl, participants);
        let entry = |i: usize| a.ctl(table + i * 128);
        a.write_u64(entry(2), 3); // state 3: unknown
        a.write_u64(entry(3), header::participant_word(0, 5, header::PARTICIPANT_ATTACHED));
        let _c = rx.new_consumer().unwrap();
        tx.send(b"ok").unwrap();
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"ok");
        assert_eq!(rx.recover_dead().unwrap(), 0, "nothing was claimed, so nothing to recover");
    }
}

/// Peer entry: scribble random values over the control block and the slots
/// for the given number of milliseconds.
#[test]
#[ignore = "peer process for the hostile tests"]
fn scribbler_main() {
    let Some((_, arg)) = peer_role() else { return };
    let (name, ms) = arg.split_once(',').unwrap();
    let seg = Segment::open(&Location::shm(name)).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ u64::from(std::process::id());
    let end = Instant::now() + Duration::from_millis(ms.parse().unwrap());
    let words = (seg.len() - MPMC_HEADER_LEN) / 8;
    while Instant::now() < end {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = match x % 8 {
            0 => CONTROL_OFFSET + std::mem::offset_of!(MpmcControl, enqueue),
            1 => CONTROL_OFFSET + std::mem::offset_of!(MpmcControl, dequeue),
            2 => CONTROL_OFFSET + std::mem::offset_of!(MpmcControl, participants) + ((x >> 8) as usize % 64) * 128,
            _ => MPMC_HEADER_LEN + ((x >> 8) as usize % words) * 8,
        };
        let v = match (x >> 40) % 4 {
            0 => x >> 3,
            1 => (x >> 20) & 0xff,
            2 => (x >> 20) & 0xffff | (x & (1 << 63)),
            _ => 1000 + ((x >> 30) & 0x3f),
        };
        // SAFETY: off + 8 <= len; scribbling on shared memory is this peer's job.
        unsafe { std::ptr::write_volatile(seg.as_ptr().add(off) as *mut u64, v) };
        std::thread::sleep(Duration::from_micros(20));
    }
}

for_each_notifier! {
    fn random_scribbling_by_another_process_gives_typed_errors_and_no_hang(kind) {
        for round in 0..10u8 {
            let (seg, mut tx, mut rx) = ring("h-scribble", 16, 8, kind);
            let mut peer: Peer = spawn_peer("scribbler_main", "scribble", &format!("{},200", seg.name()));
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut errors = 0;
            while peer.0.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "no progress");
                let t = Instant::now();
                let r = tx.send_timeout(&[round; 16], Duration::from_millis(20));
                let s = rx
                    .recv_timeout(Duration::from_millis(20))
                    .map(|m| m.map(|m| m.iter().map(|&b| u32::from(b)).sum::<u32>()));
                // Each bounded call returns within its timeout plus the recovery
                // checks, whatever was written.
                assert!(t.elapsed() < Duration::from_secs(5), "calls took {:?}", t.elapsed());
                for e in [r.err(), s.err()].into_iter().flatten() {
                    match e {
                        Error::Corrupted { .. } => errors += 1,
                        Error::Timeout | Error::WouldBlock { .. } | Error::Closed(_) => {}
                        e => panic!("unexpected error {e}"),
                    }
                }
                if errors > 0 {
                    break; // both handles are poisoned or will be: nothing more to learn
                }
            }
            // A scribbler that exited on its own must have finished its job,
            // not failed at once (then nothing would have been tested).
            match peer.0.try_wait().unwrap() {
                Some(status) => assert!(status.success(), "the scribbler failed: {status}"),
                None => {
                    peer.0.kill().unwrap();
                    peer.0.wait().unwrap();
                }
            }
            let _ = rx.recover_dead();
            let _ = tx.new_consumer();
        }
    }
}
