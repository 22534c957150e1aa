//! Two real processes on one ring: the test binary re-executes itself as the
//! peer (see `peer_main`).
#![cfg(not(loom))]

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{Peer, TempSeg, peer_role, record, spawn_peer, wait_exit};
use shmring::spsc::{Consumer, Producer};
use shmring::{Error, Location, RingOptions, Segment, WaitPolicy};

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
    let loc = if let Some(p) = loc_text.strip_prefix("path:") { Location::path(p) } else { Location::shm(&loc_text) };
    let opts = RingOptions::new().capacity(4096).wait_policy(pol);
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
            let mut tx = Producer::open(&loc).unwrap();
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

fn stream_to_child(pol: &str) {
    let seg = TempSeg::new(pol);
    let mut tx = Producer::create(&seg.0, &RingOptions::new().capacity(4096).wait_policy(policy(pol))).unwrap();
    let mut peer = spawn_peer("peer_main", "consume", &format!("{},{pol}", seg.name()));
    produce_all(&mut tx);
    drop(tx);
    assert!(wait_exit(&mut peer, 120).success(), "consumer process failed");
}

#[test]
fn stream_varied_records_to_another_process_parking() {
    stream_to_child("park");
}

#[test]
fn stream_varied_records_to_another_process_spinning() {
    stream_to_child("spin");
}

#[test]
fn consumer_may_start_first_and_producer_may_be_the_child() {
    let seg = TempSeg::new("first");
    let opts = RingOptions::new().capacity(4096);
    let mut rx = Consumer::open_or_create(&seg.0, &opts).unwrap();
    let mut peer = spawn_peer("peer_main", "produce", &format!("{},default", seg.name()));
    let mut i = 0;
    while let Some(rec) = rx.recv().unwrap() {
        assert_eq!(&*rec, &record(i)[..]);
        i += 1;
    }
    assert_eq!(i, N);
    assert!(wait_exit(&mut peer, 60).success());
}

#[test]
fn file_backed_ring_between_processes() {
    let dir = std::env::temp_dir().join(format!("shmring-test-file-{}", std::process::id()));
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
    let mut tx = Producer::create(&loc, &RingOptions::new().capacity(4096)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let mut peer = spawn_peer("peer_main", "consume", &format!("path:{},default", path.display()));
    produce_all(&mut tx);
    drop(tx);
    assert!(wait_exit(&mut peer, 120).success());
}

#[test]
fn memfd_ring_passed_to_child_by_inheritance() {
    let seg = shmring::spsc::create_memfd("inherit", &RingOptions::new().capacity(4096)).unwrap();
    let fd = seg.fd().as_raw_fd();
    // Let the child inherit this one descriptor.
    nix::fcntl::fcntl(seg.fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
    let mut tx = Producer::attach(seg).unwrap();
    let mut peer = spawn_peer("peer_main", "consume-fd", &format!("{fd},default"));
    produce_all(&mut tx);
    drop(tx);
    assert!(wait_exit(&mut peer, 120).success());
}

#[test]
fn killed_producer_is_reported_as_peer_died_quickly() {
    let seg = TempSeg::new("deadprod");
    let mut rx = Consumer::create(&seg.0, &RingOptions::new().capacity(4096)).unwrap();
    let mut peer = spawn_peer("peer_main", "produce-then-hang", &format!("{},default", seg.name()));
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
    // The default policy checks every 100 ms; allow for a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
}

#[test]
fn killed_consumer_is_reported_to_a_blocked_producer() {
    let seg = TempSeg::new("deadcons");
    let mut tx = Producer::create(&seg.0, &RingOptions::new().capacity(4096)).unwrap();
    let mut peer: Peer = spawn_peer("peer_main", "consume-then-hang", &format!("{},default", seg.name()));
    // Fill the ring; it blocks once the hanging consumer has attached.
    let deadline = Instant::now() + Duration::from_secs(60);
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
    match tx.send(&[7u8; 512]) {
        Err(Error::PeerDied { role: "consumer", .. }) => {}
        other => panic!("expected PeerDied, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn producer_sees_closed_when_consumer_drops() {
    let seg = TempSeg::new("closed");
    let opts = RingOptions::new().capacity(4096);
    let mut tx = Producer::create(&seg.0, &opts).unwrap();
    let rx = Consumer::open(&seg.0).unwrap();
    drop(rx);
    let err = loop {
        if let Err(e) = tx.send_timeout(&[1u8; 100], Duration::from_secs(10)) {
            break e;
        }
    };
    assert!(matches!(err, Error::Closed(_)), "{err}");
}
