//! Helpers shared by the integration tests: unique names, cleanup on drop,
//! re-executing the test binary as a peer process, deterministic payloads.
// Tests drive the library from outside: the atomics facade (`src/sync.rs`,
// `clippy.toml`) is the library's rule, not theirs.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use shmring::Location;

/// A unique shm location, unlinked when dropped (even if the test panics).
pub struct TempSeg(pub Location);

impl TempSeg {
    pub fn new(tag: &str) -> TempSeg {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempSeg(Location::shm(format!("shmring-test-{tag}-{}-{n}", std::process::id())))
    }
    pub fn name(&self) -> String {
        self.0.to_string()
    }
}

impl Drop for TempSeg {
    fn drop(&mut self) {
        let _ = self.0.unlink();
    }
}

/// A second, independent mapping of a segment: what another (hostile)
/// process sees and writes.
pub struct Attacker(pub shmring::Segment);

impl Attacker {
    pub fn new(seg: &TempSeg) -> Attacker {
        Attacker(shmring::Segment::open(&seg.0).unwrap())
    }
    pub fn write_u64(&self, off: usize, v: u64) {
        assert!(off + 8 <= self.0.len());
        // SAFETY: in bounds of our own mapping; racing with the victim is the point.
        unsafe { std::ptr::write_volatile(self.0.as_ptr().add(off) as *mut u64, v) }
    }
    pub fn write_u32(&self, off: usize, v: u32) {
        assert!(off + 4 <= self.0.len());
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(self.0.as_ptr().add(off) as *mut u32, v) }
    }
}

/// `r` must be `Error::Corrupted` with a message; `what` names the case.
pub fn assert_corrupted<T>(r: shmring::Result<T>, what: &str) {
    match r {
        Err(shmring::Error::Corrupted { what: w, .. }) => assert!(!w.is_empty()),
        Err(e) => panic!("{what}: expected Corrupted, got {e}"),
        Ok(_) => panic!("{what}: expected Corrupted, got Ok"),
    }
}

/// A child process killed and reaped when dropped.
pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Re-run this test binary as a peer: only the test named `entry` runs, with
/// `SHMRING_PEER_ROLE=role` and `SHMRING_PEER_ARG=arg` in its environment.
pub fn spawn_peer(entry: &str, role: &str, arg: &str) -> Peer {
    let exe = std::env::current_exe().expect("test binary path");
    let child = Command::new(exe)
        .args([entry, "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"])
        .env("SHMRING_PEER_ROLE", role)
        .env("SHMRING_PEER_ARG", arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null()) // the harness's summary lines; failures go to stderr
        .spawn()
        .expect("spawn peer process");
    Peer(child)
}

/// The role this process was started with, if it is a peer.
pub fn peer_role() -> Option<(String, String)> {
    let role = std::env::var("SHMRING_PEER_ROLE").ok()?;
    Some((role, std::env::var("SHMRING_PEER_ARG").unwrap_or_default()))
}

/// Deterministic record `i`: length varies from 0 to ~1.5 KiB, bytes derived from `i`.
pub fn record(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let len = (x % 1531) as usize;
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&i.to_le_bytes());
    while v.len() < len.max(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// Wait for a child with a generous bound; panics (and the Peer guard kills
/// it) if it does not exit in time.
pub fn wait_exit(peer: &mut Peer, secs: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(st) = peer.0.try_wait().expect("try_wait") {
            return st;
        }
        assert!(std::time::Instant::now() < deadline, "peer did not exit within {secs} s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Define each test once per notifier: `fn name(kind) { body }` becomes a
/// module `name` with tests `futex` and `semaphore` that run `body` with
/// `kind` set to that [`shmring::header::NotifierKind`]. Attributes (docs)
/// go on the module.
#[allow(unused_macros)]
macro_rules! for_each_notifier {
    ($($(#[$attr:meta])* fn $name:ident($kind:ident) $body:block)*) => {$(
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($kind: shmring::header::NotifierKind) $body

            #[test]
            fn futex() {
                run(shmring::header::NotifierKind::Futex)
            }

            #[test]
            fn semaphore() {
                run(shmring::header::NotifierKind::Semaphore)
            }
        }
    )*};
}

/// Parse a notifier name as [`shmring::header::NotifierKind::name`] prints it.
pub fn notifier_named(name: &str) -> shmring::header::NotifierKind {
    match name {
        "semaphore" => shmring::header::NotifierKind::Semaphore,
        "futex" => shmring::header::NotifierKind::Futex,
        other => panic!("unknown notifier {other}"),
    }
}
