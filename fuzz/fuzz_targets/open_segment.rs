//! Fuzz target `open_segment`: the input becomes a whole segment file, which
//! is then opened as a producer and as a consumer and used a little.
//!
//! Input: the first byte holds mode bits (see the constants below), the rest
//! is the file. In raw mode the rest is the file, byte for byte. In template
//! mode the file starts as a freshly initialised, valid segment and the rest
//! of the input is XORed over it: first the header, then the first 16 bytes
//! of each control-block field (positions, role slots, eventcounts), then the
//! data region. So an input of zeros is
//! a healthy empty ring, and each non-zero byte damages one field or record.
//!
//! Checked, for every input:
//! - every call returns `Ok` or a typed `shmring::Error`; no panic, crash or
//!   hang, whatever the file holds;
//! - `open` and `inspect` agree: an open succeeds only if
//!   `Snapshot::problems` finds no fault in the header, and a header it finds
//!   healthy, with a free role and sane positions, opens;
//! - after the consumer has drained the ring, a record the producer sends
//!   comes back byte for byte.
//!
//! Segments are temporary files (or memfds), never in `/dev/shm`; each is
//! removed at the end of the iteration.
#![no_main]

use std::io::Write;
use std::mem::offset_of;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmring::inspect::Snapshot;
use shmring::header::{
    self, ABI_VERSION, CONTROL_OFFSET, HEADER_LEN, Header, MAGIC, NotifierKind, ROLE_ATTACHING, ROLE_FREE, RingKind,
    RoleSlot, STATE_READY, SpscControl,
};
use shmring::spsc::{Consumer, Producer};
use shmring::{Error, Location, SpscOptions, Segment, WaitPolicy};

/// Mode bit: start from a valid segment and XOR the input over it.
const TEMPLATE: u8 = 1 << 0;
/// Mode bit: leave the state word as the input has it. Without it the state
/// is forced to READY, so most inputs get past the wait for the creator.
/// Ignored with [`MEMFD`], whose attach waits up to the default 2 s.
const KEEP_STATE: u8 = 1 << 1;
/// Mode bit: put the file in a sealed memfd and map it with
/// `Segment::from_fd` instead of opening a path.
const MEMFD: u8 = 1 << 2;
/// Mode bit: also check that an unsealed memfd is refused by `from_fd`.
const UNSEALED: u8 = 1 << 3;
/// Mode bit, template mode only: the file is as long as the input rather
/// than the template, so it can be too short or too long for its header.
const INPUT_LEN: u8 = 1 << 4;
/// Mode bits 5..=7, template mode only: capacity `4096 << (bits % 5)`.
const CAPACITY_SHIFT: u32 = 5;

/// Template mode: bytes of the header proper that the input covers.
const OVERLAY_HEADER: usize = 128;
/// Template mode: bytes of each control-block field that the input covers.
const OVERLAY_FIELD: usize = 16;

/// How long an opener waits for the state word to say READY.
const READY_TIMEOUT: Duration = Duration::from_millis(2);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut file = if mode & TEMPLATE != 0 { template(mode, rest) } else { rest.to_vec() };
    sanitize(&mut file, mode & KEEP_STATE != 0 && mode & MEMFD == 0);
    if mode & UNSEALED != 0 {
        unsealed_memfd_is_refused();
    }

    let snap = Snapshot::parse(&file[..file.len().min(HEADER_LEN)], file.len() as u64);
    let problems = snap.problems();
    assert!(problems.iter().all(|p| !p.is_empty()));
    let _ = snap.fill();

    let (tx, rx) = if mode & MEMFD != 0 { open_memfd(&file) } else { open_path(&file) };
    check_open(&snap, &problems, &tx, &rx);
    exercise(tx.ok(), rx.ok(), consistent(&snap, &file));
});

/// Whether the ring's contents agree with its positions as the format
/// requires: nothing published (head == tail) and the header word at that
/// position zero. The consumer finds records by their header words, not by
/// the producer's position, so in a ring that breaks this (garbage in the
/// data region) it may read garbage as records or wait at another position
/// than the one the producer writes next: both are allowed outcomes of a
/// corrupted ring, as long as they are typed.
fn consistent(s: &Snapshot, file: &[u8]) -> bool {
    if !header::check_capacity(s.capacity).is_ok() || s.head != s.tail {
        return false;
    }
    let off = HEADER_LEN + (s.head & (s.capacity - 1)) as usize;
    file.get(off..off + 8).is_some_and(|w| w.iter().all(|&b| b == 0))
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_ne_bytes());
    }
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    if let Some(s) = b.get_mut(off..off + 8) {
        s.copy_from_slice(&v.to_ne_bytes());
    }
}

fn get_u32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4).map(|s| u32::from_ne_bytes(s.try_into().unwrap()))
}

/// A valid, empty SPSC segment with the input XORed over it.
fn template(mode: u8, overlay: &[u8]) -> Vec<u8> {
    let capacity = header::MIN_CAPACITY << ((u32::from(mode) >> CAPACITY_SHIFT) % 5);
    let len = header::spsc_segment_len(capacity) as usize;
    let mut img = vec![0u8; len];
    put_u64(&mut img, offset_of!(Header, magic), MAGIC);
    put_u32(&mut img, offset_of!(Header, abi_version), ABI_VERSION);
    put_u32(&mut img, offset_of!(Header, kind), RingKind::Spsc as u32);
    put_u32(&mut img, offset_of!(Header, header_len), HEADER_LEN as u32);
    put_u32(&mut img, offset_of!(Header, notifier), NotifierKind::Futex as u32);
    put_u64(&mut img, offset_of!(Header, capacity), capacity);
    put_u64(&mut img, offset_of!(Header, total_len), len as u64);
    put_u32(&mut img, offset_of!(Header, creator_pid), std::process::id());
    put_u32(&mut img, offset_of!(Header, state), STATE_READY);
    if mode & INPUT_LEN != 0 {
        img.resize(overlay.len(), 0);
    }
    // Where each input byte lands: header, control fields, data region.
    let fields = [
        offset_of!(SpscControl, tail),
        offset_of!(SpscControl, head),
        offset_of!(SpscControl, producer),
        offset_of!(SpscControl, consumer),
        offset_of!(SpscControl, data_ready),
        offset_of!(SpscControl, space_free),
    ];
    let spans = std::iter::once(0..OVERLAY_HEADER)
        .chain(fields.map(|f| CONTROL_OFFSET + f..CONTROL_OFFSET + f + OVERLAY_FIELD))
        .chain(std::iter::once(HEADER_LEN..usize::MAX));
    let mut input = overlay.iter();
    'spans: for span in spans {
        for i in span {
            let Some(x) = input.next() else { break 'spans };
            let Some(b) = img.get_mut(i) else { break 'spans };
            *b ^= x;
        }
    }
    img
}

/// Keep the input from making an opener sleep: force the state word to READY
/// (unless `keep_state`), and turn a role stuck in ATTACHING (whose claim
/// retries for a fixed second) into FREE.
fn sanitize(file: &mut [u8], keep_state: bool) {
    if !keep_state {
        put_u32(file, offset_of!(Header, state), STATE_READY);
    }
    for role in [offset_of!(SpscControl, producer), offset_of!(SpscControl, consumer)] {
        let off = CONTROL_OFFSET + role + offset_of!(RoleSlot, state);
        if get_u32(file, off) == Some(ROLE_ATTACHING) {
            put_u32(file, off, ROLE_FREE);
        }
    }
}

fn unsealed_memfd_is_refused() {
    // SAFETY: the name is a valid C string and the flags are valid for memfd_create.
    let fd = unsafe { libc::memfd_create(c"shmring-fuzz-unsealed".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    match Segment::from_fd(fd, "unsealed") {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("an unsealed memfd must be refused, got {:?}", other.map(|s| s.len())),
    }
}

type Opened = (shmring::Result<Producer>, shmring::Result<Consumer>);

/// Removes the file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn open_path(file: &[u8]) -> Opened {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let tmp = TempFile(std::env::temp_dir().join(format!("shmring-fuzz-{}-{n}", std::process::id())));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp.0)
        .expect("create a temporary segment file");
    f.write_all(file).expect("write the temporary segment file");
    drop(f);
    let loc = Location::path(&tmp.0);

    let (page, len) = shmring::segment::read_first_page(&loc).expect("read_first_page");
    assert_eq!(len, file.len() as u64);
    assert_eq!(page, file[..file.len().min(HEADER_LEN)]);

    let opts = SpscOptions::new().ready_timeout(READY_TIMEOUT).wait_policy(WaitPolicy::park());
    let tx = Producer::open_or_create(&loc, &opts);
    let rx = Consumer::open_or_create(&loc, &opts);
    // The mappings outlive the name; `tmp` removes it here.
    (tx, rx)
}

fn open_memfd(file: &[u8]) -> Opened {
    let seg = match Segment::create_memfd("shmring-fuzz", file.len() as u64) {
        Ok(seg) => seg,
        Err(e) => {
            // Only a zero length is refused (mmap of nothing).
            assert!(file.is_empty(), "create_memfd of {} bytes: {e}", file.len());
            return (Err(Error::NotReady("empty".into())), Err(Error::NotReady("empty".into())));
        }
    };
    // SAFETY: the mapping is `file.len()` bytes long and nothing else uses it yet.
    unsafe { std::ptr::copy_nonoverlapping(file.as_ptr(), seg.as_ptr(), file.len()) };
    let map = || {
        let fd = seg.fd().try_clone_to_owned().expect("dup the memfd");
        Segment::from_fd(fd, "fuzz")
    };
    let tx = map().and_then(Producer::attach).map(|mut p| {
        p.set_wait_policy(WaitPolicy::park());
        p
    });
    let rx = map().and_then(Consumer::attach).map(|mut c| {
        c.set_wait_policy(WaitPolicy::park());
        c
    });
    (tx, rx)
}

/// Whether an SPSC header passes every check an opener and
/// `Snapshot::problems` make.
fn header_ok(s: &Snapshot) -> bool {
    s.magic == MAGIC
        && s.state == STATE_READY
        && s.abi_version == ABI_VERSION
        && RingKind::from_u32(s.kind) == Some(RingKind::Spsc)
        && NotifierKind::from_u32(s.notifier).is_some()
        && s.header_len as usize == HEADER_LEN
        && header::check_capacity(s.capacity).is_ok()
        && s.total_len == header::spsc_segment_len(s.capacity)
        && s.file_len == s.total_len
        && header::record_type_problem(s.record_type.0, s.record_type.1, s.record_type.2).is_none()
        && [s.ec_notifiers.0, s.ec_notifiers.1]
            .iter()
            .all(|&w| NotifierKind::from_u32(s.notifier).is_some_and(|n| n.eventcount_word_matches(w)))
}

/// The positions a producer accepts at attach.
fn positions_ok(s: &Snapshot) -> bool {
    s.tail.wrapping_sub(s.head) <= s.capacity && s.tail.is_multiple_of(8) && s.head.is_multiple_of(8)
}

fn check_open(snap: &Snapshot, problems: &[String], tx: &shmring::Result<Producer>, rx: &shmring::Result<Consumer>) {
    for e in [tx.as_ref().err(), rx.as_ref().err()].into_iter().flatten() {
        assert!(!e.to_string().is_empty());
    }
    if RingKind::from_u32(snap.kind).is_some_and(|k| k != RingKind::Spsc) {
        // Another ring kind, whose header rules differ: it must not open as SPSC.
        assert!(tx.is_err() && rx.is_err(), "a ring of another kind was opened as SPSC: {snap:?}");
        return;
    }
    if !header_ok(snap) {
        assert!(!problems.is_empty(), "inspect finds nothing wrong with a header that open must refuse: {snap:?}");
        assert!(tx.is_err() && rx.is_err(), "a damaged header was accepted: {snap:?}");
        return;
    }
    // The header is fine: only the role words and positions may refuse us.
    for e in [tx.as_ref().err(), rx.as_ref().err()].into_iter().flatten() {
        assert!(
            matches!(e, Error::Corrupted { .. } | Error::RoleTaken { .. } | Error::Stale { .. } | Error::Closed(_)),
            "healthy header refused with {e:?}: {snap:?}"
        );
    }
    if snap.producer.0 == ROLE_FREE && positions_ok(snap) {
        assert!(tx.is_ok(), "producer refused: {:?}; {snap:?}", tx.as_ref().err());
    }
    if snap.consumer.0 == ROLE_FREE && snap.head.is_multiple_of(8) {
        assert!(rx.is_ok(), "consumer refused: {:?}; {snap:?}", rx.as_ref().err());
    }
    if tx.is_ok() {
        assert!(positions_ok(snap), "producer accepted impossible positions: {snap:?}");
    }
}

/// How a bounded drain ended.
#[derive(PartialEq)]
enum Drained {
    Empty,
    Ended,
    Failed,
    Limit,
}

/// Receive up to `max` records, reading every byte of each.
fn drain(rx: &mut Consumer, max: usize) -> Drained {
    for _ in 0..max {
        match rx.try_recv() {
            Ok(Some(rec)) => {
                std::hint::black_box(rec.iter().fold(0u8, |a, &b| a ^ b));
            }
            Ok(None) => return Drained::Ended,
            Err(Error::WouldBlock { full: false }) => return Drained::Empty,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return Drained::Failed;
            }
        }
    }
    Drained::Limit
}

fn exercise(mut tx: Option<Producer>, mut rx: Option<Consumer>, consistent: bool) {
    let drained = rx.as_mut().map(|rx| drain(rx, 16));
    let Some(tx) = tx.as_mut() else { return };
    let max = tx.max_record_len();
    let payload: Vec<u8> = (0..=255u8).cycle().take(max + 1).collect();
    let mut sent = None;
    for len in [5.min(max), 0, 300.min(max), max + 1] {
        let msg = &payload[..len];
        match tx.try_send(msg) {
            Ok(()) => {
                sent.get_or_insert(msg);
            }
            Err(Error::InvalidArgument(_)) => assert!(len > max),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    let Some(rx) = rx.as_mut() else { return };
    if consistent && drained == Some(Drained::Empty) {
        // Head equals tail and the consumer found nothing: the ring is empty,
        // so the first (5-byte) send must have gone in.
        assert!(sent.is_some(), "nothing could be sent into an empty, consistent ring");
    }
    match (drained, sent) {
        (Some(Drained::Empty), Some(first)) if consistent => match rx.try_recv() {
            Ok(Some(rec)) => assert_eq!(&*rec, first, "the first record sent after draining came back changed"),
            Ok(None) => panic!("end of stream while the producer is attached"),
            Err(e) => panic!("a record sent after draining was not received: {e}"),
        },
        _ => {
            drain(rx, 8);
        }
    }
}
