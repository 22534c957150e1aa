//! Two real processes on one ring: the test binary re-executes itself as the
//! peer (see `peer_main`). Every test runs once per notifier (futex and
//! semaphore); the blocking ones park, so the notifier does the waking.
#![cfg(not(loom))]

#[macro_use]
mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{Peer, TempSeg, notifier_named, peer_role, record, spawn_peer, wait_exit};
use shmring::header::NotifierKind;
use shmring::spsc::{Consumer, Producer};
use shmring::{Error, Location, Segment, SpscOptions, WaitPolicy};

const N: u64 = 20_000;

fn policy(name: &str) -> WaitPolicy {
    match name {
        "spin" => WaitPolicy::busy_poll(),
        "park" => WaitPolicy::park(),
        _ => WaitPolicy::default(),
    }
}

/// Entry point of peer processes; ignored in a normal run.
#[test]
#[ignore = "peer process for the cross-process tests"]
fn peer_main() {
    let Some((role, arg)) = peer_role() else { return };
    let mut parts = arg.split(',');
    let loc_text = parts.next().unwrap().to_owned();
    let pol = policy(parts.next().unwrap_or("default"));
    let kind = notifier_named(parts.next().unwrap_or("futex"));
    let loc = if let Some(p) = loc_text.strip_prefix("path:") { Location::path(p) } else { Location::shm(&loc_text) };
    let opts = SpscOptions::new().capacity(4096).wait_policy(pol).notifier(kind);
    match role.as_str() {
        // Receive N records and check each one.
        "consume" => {
            let mut rx = Consumer::open_or_create(&loc, &opts).unwrap();
            let mut i = 0;
            while let Some(rec) = rx.recv().unwrap() {
                assert_eq!(&*rec, &record(i)[..], "record {i}");
                i += 1;
            }
            assert_eq!(i, N);
        }
        // Send N records then close.
        "produce" => {
            let mut tx = Producer::open_or_create(&loc, &opts).unwrap();
            for i in 0..N {
                tx.send(&record(i)).unwrap();
            }
        }
        // Send 10 records, then hang until killed.
        "produce-then-hang" => {
            // Opened with default options: the notifier comes from the header.
            let mut tx = Producer::open(&loc).unwrap();
            tx.set_wait_policy(pol);
            for i in 0..10 {
                tx.send(&record(i)).unwrap();
            }
            std::thread::sleep(Duration::from_secs(600));
        }
        // Attach as consumer, then hang until killed.
        "consume-then-hang" => {
            let _rx = Consumer::open(&loc).unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        // Consume from an inherited memfd.
        "consume-fd" => {
            let fd: i32 = loc_text.parse().unwrap();
            // SAFETY: the parent cleared CLOEXEC on this fd and passed its number.
            let seg = Segment::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }, "inherited").unwrap();
            let mut rx = Consumer::attach(seg).unwrap();
            rx.set_wait_policy(pol);
            let mut i = 0;
            while let Some(rec) = rx.recv().unwrap() {
                assert_eq!(&*rec, &record(i)[..]);
                i += 1;
            }
            assert_eq!(i, N);
        }
        other => panic!("unknown role {other}"),
    }
}

fn produce_all(tx: &mut Producer) {
    for i in 0..N {
        tx.send(&record(i)).unwrap();
    }
}

fn opts(kind: NotifierKind) -> SpscOptions {
    SpscOptions::new().capacity(4096).wait_policy(WaitPolicy::park()).notifier(kind)
}

fn stream_to_child(pol: &str, kind: NotifierKind) {
    let seg = TempSeg::new(pol);
    let mut tx = Producer::create(&seg.0, &opts(kind).wait_policy(policy(pol))).unwrap();
    let mut peer = spawn_peer("peer_main", "consume", &format!("{},{pol},{}", seg.name(), kind.name()));
    produce_all(&mut tx);
    drop(tx);
    assert!(wait_exit(&mut peer, 120).success(), "consumer process failed");
}

for_each_notifier! {
    fn stream_varied_records_to_another_process_parking(kind) {
        stream_to_child("park", kind);
    }

    fn stream_varied_records_to_another_process_spinning(kind) {
        stream_to_child("spin", kind);
    }

    fn consumer_may_start_first_and_producer_may_be_the_child(kind) {
        let seg = TempSeg::new("first");
        let mut rx = Consumer::open_or_create(&seg.0, &opts(kind)).unwrap();
        let mut peer = spawn_peer("peer_main", "produce", &format!("{},park,{}", seg.name(), kind.name()));
        let mut i = 0;
        while let Some(rec) = rx.recv().unwrap() {
            assert_eq!(&*rec, &record(i)[..]);
            i += 1;
        }
        assert_eq!(i, N);
        assert!(wait_exit(&mut peer, 60).success());
    }

    fn file_backed_ring_between_processes(kind) {
        let dir = std::env::temp_dir().join(format!("shmring-test-file-{}-{}", std::process::id(), kind.name()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ring");
        let loc = Location::path(&path);
        struct RmDir(std::path::PathBuf);
        impl Drop for RmDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _guard = RmDir(dir.clone());
        let mut tx = Producer::create(&loc, &opts(kind)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut peer = spawn_peer("peer_main", "consume", &format!("path:{},park,{}", path.display(), kind.name()));
        produce_all(&mut tx);
        drop(tx);
        assert!(wait_exit(&mut peer, 120).success());
    }

    fn memfd_ring_passed_to_child_by_inheritance(kind) {
        let seg = shmring::spsc::create_memfd("inherit", &opts(kind)).unwrap();
        let fd = seg.fd().as_raw_fd();
        // Let the child inherit this one descriptor.
        nix::fcntl::fcntl(seg.fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
        let mut tx = Producer::attach(seg).unwrap();
        tx.set_wait_policy(WaitPolicy::park());
        let mut peer = spawn_peer("peer_main", "consume-fd", &format!("{fd},park,{}", kind.name()));
        produce_all(&mut tx);
        drop(tx);
        assert!(wait_exit(&mut peer, 120).success());
    }

    fn killed_producer_is_reported_as_peer_died_quickly(kind) {
        let seg = TempSeg::new("deadprod");
        let mut rx = Consumer::create(&seg.0, &opts(kind)).unwrap();
        let mut peer = spawn_peer("peer_main", "produce-then-hang", &format!("{},park,{}", seg.name(), kind.name()));
        for i in 0..10 {
            let rec = rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap();
            assert_eq!(&*rec, &record(i)[..]);
        }
        peer.0.kill().unwrap(); // SIGKILL: no chance to close
        let t = Instant::now();
        match rx.recv() {
            Err(Error::PeerDied { role: "producer", pid, .. }) => assert_eq!(pid, peer.0.id()),
            other => panic!("expected PeerDied, got {:?}", other.map(|r| r.map(|r| r.to_vec()))),
        }
        // The park policy checks every 100 ms; allow for a loaded machine.
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    }

    fn killed_consumer_is_reported_to_a_blocked_producer(kind) {
        let seg = TempSeg::new("deadcons");
        let mut tx = Producer::create(&seg.0, &opts(kind)).unwrap();
        let mut peer: Peer =
            spawn_peer("peer_main", "consume-then-hang", &format!("{},park,{}", seg.name(), kind.name()));
        // Wait for the consumer to attach: killed before that, it would
        // leave the role free, and a free role is no dead peer.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (page, len) = shmring::segment::read_first_page(&seg.0).unwrap();
            if shmring::inspect::Snapshot::parse(&page, len).consumer.0 == shmring::header::ROLE_ATTACHED {
                break;
            }
            assert!(Instant::now() < deadline, "the consumer never attached");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Fill the ring: sends time out once it is full.
        loop {
            match tx.send_timeout(&[7u8; 512], Duration::from_millis(200)) {
                Ok(()) => {}
                Err(Error::Timeout) => break,
                Err(e) => panic!("unexpected {e}"),
            }
            assert!(Instant::now() < deadline);
        }
        peer.0.kill().unwrap();
        let t = Instant::now();
        match tx.send_timeout(&[7u8; 512], Duration::from_secs(30)) {
            Err(Error::PeerDied { role: "consumer", .. }) => {}
            other => panic!("expected PeerDied, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    fn producer_sees_closed_when_consumer_drops(kind) {
        let seg = TempSeg::new("closed");
        let mut tx = Producer::create(&seg.0, &opts(kind)).unwrap();
        let rx = Consumer::open(&seg.0).unwrap();
        drop(rx);
        let err = loop {
            if let Err(e) = tx.send_timeout(&[1u8; 100], Duration::from_secs(10)) {
                break e;
            }
        };
        assert!(matches!(err, Error::Closed(_)), "{err}");
    }
}
