//! How a stream ends, and control words that must never make a peer wait
//! for ever: closed, aborted and died are three different endings, only the
//! first is a clean end of stream, and a role word, identity or flags word
//! that a hostile process rewrites while a handle waits is reported as
//! corruption at the next liveness tick. Each test runs once per notifier.
#![cfg(not(loom))]

#[macro_use]
mod common;

use std::mem::offset_of;
use std::time::{Duration, Instant};

use common::{Attacker, Peer, TempSeg, peer_role, spawn_peer};
use shmring::header::{
    self, CONTROL_OFFSET, Header, MpmcControl, NotifierKind, PARTICIPANT_ABORTED, Participant, RoleSlot, SpscControl,
};
use shmring::inspect::Snapshot;
use shmring::mpmc::{self, MpmcOptions};
use shmring::spsc::{Consumer, Producer};
use shmring::{Error, Location, Segment, SpscOptions, WaitPolicy};

/// Long enough never to be reached by a test that passes: a wait that is
/// not ended by the check under test would end here, and fail the test.
const NEVER: Duration = Duration::from_secs(20);
/// How soon the check under test must end a wait: the liveness tick is
/// 100 ms; the rest is room for a busy machine.
const PROMPTLY: Duration = Duration::from_secs(5);

fn opts(kind: NotifierKind) -> SpscOptions {
    SpscOptions::new().capacity(4096).notifier(kind)
}

fn pair(tag: &str, kind: NotifierKind) -> (TempSeg, Producer, Consumer) {
    let seg = TempSeg::new(tag);
    let tx = Producer::create(&seg.0, &opts(kind)).unwrap();
    let rx = Consumer::open(&seg.0).unwrap();
    (seg, tx, rx)
}

fn role_offset(role: usize, field: usize) -> usize {
    CONTROL_OFFSET + role + field
}

const PRODUCER: usize = offset_of!(SpscControl, producer);
const CONSUMER: usize = offset_of!(SpscControl, consumer);

/// Run `f` on another thread after `delay`: a hostile write while the
/// victim waits.
fn later(delay: Duration, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        f()
    })
}

/// `r` is `Error::Corrupted` whose message contains `needle`, and it came
/// within `PROMPTLY` of `start`.
fn assert_corrupted_soon<T>(r: shmring::Result<T>, start: Instant, needle: &str) {
    let took = start.elapsed();
    match r {
        Err(Error::Corrupted { what, .. }) => assert!(what.contains(needle), "{what:?} does not mention {needle:?}"),
        Err(e) => panic!("expected Corrupted ({needle}), got {e}"),
        Ok(_) => panic!("expected Corrupted ({needle}), got Ok"),
    }
    assert!(took < PROMPTLY, "the wait took {took:?}");
}

fn recv_bytes(rx: &mut Consumer) -> shmring::Result<Option<Vec<u8>>> {
    rx.recv_timeout(NEVER).map(|r| r.map(|r| r.to_vec()))
}

for_each_notifier! {
    /// A producer that aborts: the consumer gets everything it committed
    /// (staged records too), then `PeerAborted` with the reason, never
    /// `Ok(None)`, and again on every later call.
    fn abort_with_a_reason_delivers_then_fails(kind) {
        let (_s, mut tx, mut rx) = pair("abort-reason", kind);
        tx.send(b"one").unwrap();
        let mut g = tx.grant(3).unwrap();
        g.copy_from_slice(b"two");
        g.stage();
        tx.abort("disk on fire\n\x1b[2J");
        assert_eq!(recv_bytes(&mut rx).unwrap().unwrap(), b"one");
        assert_eq!(recv_bytes(&mut rx).unwrap().unwrap(), b"two");
        for _ in 0..2 {
            match recv_bytes(&mut rx) {
                Err(Error::PeerAborted { role: "producer", pid, reason, .. }) => {
                    assert_eq!(pid, std::process::id());
                    assert_eq!(reason, "disk on fire\\n\\u{1b}[2J", "shown escaped");
                }
                other => panic!("expected PeerAborted, got {other:?}"),
            }
        }
        assert!(matches!(rx.recv_batch(8, |_| ()), Err(Error::PeerAborted { .. })));
    }

    /// Dropped right after a failed call: aborted, with the error as the
    /// reason; an empty explicit reason is "no reason given".
    fn drop_after_a_failed_send_aborts(kind) {
        let (_s, mut tx, mut rx) = pair("abort-failed", kind);
        tx.send(b"kept").unwrap();
        assert!(matches!(tx.send(&[0; 8192]), Err(Error::InvalidArgument(_))));
        drop(tx);
        assert_eq!(recv_bytes(&mut rx).unwrap().unwrap(), b"kept");
        match recv_bytes(&mut rx) {
            Err(Error::PeerAborted { reason, .. }) => assert!(reason.starts_with("invalid argument"), "{reason}"),
            other => panic!("expected PeerAborted, got {other:?}"),
        }

        // A failure followed by a success is forgotten: a clean close.
        let (_s, mut tx, mut rx) = pair("abort-forgotten", kind);
        assert!(tx.send(&[0; 8192]).is_err());
        tx.send(b"fine").unwrap();
        drop(tx);
        assert_eq!(recv_bytes(&mut rx).unwrap().unwrap(), b"fine");
        assert!(recv_bytes(&mut rx).unwrap().is_none());

        let (_s, tx, mut rx) = pair("abort-empty", kind);
        tx.abort("");
        let e = recv_bytes(&mut rx).unwrap_err();
        assert!(matches!(&e, Error::PeerAborted { reason, .. } if reason.is_empty()), "{e}");
        assert!(e.to_string().contains("no reason given"), "{e}");
    }

    /// A reason longer than 64 bytes is cut at a character boundary.
    fn long_reasons_are_cut_to_64_bytes(kind) {
        let (_s, tx, mut rx) = pair("abort-long", kind);
        tx.abort(&"é".repeat(40)); // 80 bytes
        match recv_bytes(&mut rx) {
            Err(Error::PeerAborted { reason, .. }) => assert_eq!(reason, "é".repeat(32)),
            other => panic!("expected PeerAborted, got {other:?}"),
        }
    }

    /// A consumer that aborts: the producer's next wait for space, and its
    /// `close`, say so.
    fn a_consumer_abort_reaches_the_producer(kind) {
        let (_s, mut tx, rx) = pair("abort-consumer", kind);
        rx.abort("out of disk");
        let r = loop {
            match tx.send_timeout(&[7; 1000], NEVER) {
                Ok(()) => continue, // still room in the ring
                other => break other,
            }
        };
        assert!(matches!(&r, Err(Error::PeerAborted { role: "consumer", reason, .. }) if reason == "out of disk"), "{r:?}");
        let (_s, tx, rx) = pair("abort-consumer-close", kind);
        rx.abort("gave up");
        assert!(matches!(tx.close(), Err(Error::PeerAborted { .. })));
    }

    /// `close` says whether what was sent can still be received.
    fn close_reports_a_consumer_that_left_early(kind) {
        let (_s, mut tx, rx) = pair("close-early", kind);
        tx.send(b"never read").unwrap();
        drop(rx);
        assert!(matches!(tx.close(), Err(Error::Closed(_))));

        let (_s, mut tx, mut rx) = pair("close-read", kind);
        tx.send(b"read").unwrap();
        drop(rx.recv().unwrap());
        drop(rx);
        tx.close().unwrap();

        // Nobody attached yet: the records wait in the ring for a consumer.
        let seg = TempSeg::new("close-alone");
        let mut tx = Producer::create(&seg.0, &opts(kind)).unwrap();
        tx.send(b"for later").unwrap();
        tx.close().unwrap();
        let mut rx = Consumer::open(&seg.0).unwrap();
        assert_eq!(recv_bytes(&mut rx).unwrap().unwrap(), b"for later");
        assert!(recv_bytes(&mut rx).unwrap().is_none());
    }

    /// The producer's role word set to CLOSED by someone else is not a
    /// close: the seal does not match, and the consumer says so.
    fn a_forged_close_is_corrupted_not_end_of_stream(kind) {
        let (seg, mut tx, mut rx) = pair("forged-close", kind);
        tx.send(b"one").unwrap();
        let a = Attacker::new(&seg);
        a.write_u32(role_offset(PRODUCER, offset_of!(RoleSlot, state)), header::ROLE_CLOSED);
        assert_eq!(recv_bytes(&mut rx).unwrap().unwrap(), b"one");
        let start = Instant::now();
        assert_corrupted_soon(recv_bytes(&mut rx), start, "closed at position");
        assert!(rx.is_poisoned());
        drop(tx);
    }

    /// A role word outside the known set, written while the peer waits:
    /// corruption at the next tick, on both sides, never an endless wait.
    fn garbage_role_words_end_waits(kind) {
        let (seg, tx, mut rx) = pair("garbage-role-c", kind);
        let a = Attacker::new(&seg);
        let w = later(Duration::from_millis(150), move || {
            a.write_u32(role_offset(PRODUCER, offset_of!(RoleSlot, state)), 0xad00_beef)
        });
        let start = Instant::now();
        assert_corrupted_soon(recv_bytes(&mut rx), start, "producer role state word is 2902507247");
        w.join().unwrap();
        drop(tx);

        let (seg, mut tx, rx) = pair("garbage-role-p", kind);
        let a = Attacker::new(&seg);
        let w = later(Duration::from_millis(150), move || {
            a.write_u32(role_offset(CONSUMER, offset_of!(RoleSlot, state)), 9)
        });
        let start = Instant::now();
        let r = loop {
            match tx.send_timeout(&[1; 1000], NEVER) {
                Ok(()) => continue,
                other => break other,
            }
        };
        assert_corrupted_soon(r, start, "consumer role state word is 9");
        w.join().unwrap();
        drop(rx);
    }

    /// A role going back to FREE after its holder was seen attached is
    /// corruption too (roles only move forward).
    fn a_role_going_back_is_corrupted(kind) {
        let (seg, tx, mut rx) = pair("role-back", kind);
        assert!(rx.peer_arrived().unwrap());
        Attacker::new(&seg).write_u32(role_offset(PRODUCER, offset_of!(RoleSlot, state)), header::ROLE_FREE);
        let start = Instant::now();
        assert_corrupted_soon(recv_bytes(&mut rx), start, "went back");
        drop(tx);
    }

    /// The peer's pid or start time rewritten while we wait: liveness is
    /// checked on the identity first seen, and the change is corruption,
    /// not a wait on whatever process the word now names.
    fn an_identity_swapped_while_waiting_is_corrupted(kind) {
        for field in [offset_of!(RoleSlot, pid), offset_of!(RoleSlot, start_time)] {
            let (seg, tx, mut rx) = pair("swap-id", kind);
            // The consumer copies the identity now, before the rewrite.
            assert!(rx.peer_arrived().unwrap());
            let a = Attacker::new(&seg);
            let w = later(Duration::from_millis(150), move || {
                // pid 1 is alive; a start time of 1 is nobody's.
                if field == offset_of!(RoleSlot, pid) {
                    a.write_u32(role_offset(PRODUCER, field), 1)
                } else {
                    a.write_u64(role_offset(PRODUCER, field), 1)
                }
            });
            let start = Instant::now();
            assert_corrupted_soon(recv_bytes(&mut rx), start, "now names pid");
            w.join().unwrap();
            drop(tx);
        }
    }

    /// The header's poisoned flag set by another process ends a wait with
    /// corruption; so does an unknown flag bit.
    fn a_poisoned_flag_set_by_the_peer_ends_waits(kind) {
        for (flags, needle) in [(header::FLAG_POISONED, "poisoned it"), (0x40, "unknown bits")] {
            let (seg, tx, mut rx) = pair("flag", kind);
            let a = Attacker::new(&seg);
            let w = later(Duration::from_millis(150), move || a.write_u32(offset_of!(Header, flags), flags));
            let start = Instant::now();
            assert_corrupted_soon(recv_bytes(&mut rx), start, needle);
            w.join().unwrap();
            drop(tx);
        }
    }

    /// MPMC: a handle that aborts (explicitly, or dropped after a failed
    /// call) is visible in its participant entry with the reason, and the
    /// ring stays open for everyone else.
    fn mpmc_abort_is_visible_and_closes_nothing(kind) {
        let seg = TempSeg::new("mpmc-abort");
        let mo = MpmcOptions::new().slot_size(16).slot_count(8).notifier(kind);
        let mut a = mpmc::Producer::create(&seg.0, &mo).unwrap();
        let mut b = a.new_producer().unwrap();
        let mut rx = a.new_consumer().unwrap();
        a.send(b"from a").unwrap();
        a.abort("a's input broke");
        assert!(matches!(b.send(&[0; 17]), Err(Error::InvalidArgument(_))));
        drop(b);
        let mut c = mpmc::Producer::open(&seg.0).unwrap();
        c.send(b"from c").unwrap();
        assert!(!rx.is_closed());
        assert_eq!(&*rx.recv_timeout(NEVER).unwrap().unwrap(), b"from a");
        assert_eq!(&*rx.recv_timeout(NEVER).unwrap().unwrap(), b"from c");
        let table = mpmc_entries(&seg.0);
        let aborted: Vec<String> = table
            .iter()
            .filter(|(state, _)| *state == PARTICIPANT_ABORTED)
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(aborted.len(), 2, "{table:?}");
        assert!(aborted.contains(&"a's input broke".to_owned()), "{aborted:?}");
        assert!(aborted.iter().any(|r| r.starts_with("invalid argument")), "{aborted:?}");
    }

    /// MPMC: the poisoned flag, or our own participant word, rewritten while
    /// we wait ends the wait with corruption.
    fn mpmc_control_words_rewritten_while_waiting(kind) {
        for target in ["flags", "entry"] {
            let seg = TempSeg::new("mpmc-words");
            let mo = MpmcOptions::new().slot_size(16).slot_count(8).notifier(kind);
            let tx = mpmc::Producer::create(&seg.0, &mo).unwrap();
            let mut rx = tx.new_consumer().unwrap();
            let a = Attacker::new(&seg);
            let w = later(Duration::from_millis(150), move || {
                if target == "flags" {
                    a.write_u32(offset_of!(Header, flags), header::FLAG_POISONED);
                } else {
                    // Entry 1 is the consumer's (the producer took entry 0).
                    let at = CONTROL_OFFSET + offset_of!(MpmcControl, participants) + STRIDE;
                    a.write_u64(at, header::participant_word(4242, 7, header::PARTICIPANT_ATTACHED));
                }
            });
            let start = Instant::now();
            let r = rx.recv_timeout(NEVER).map(|r| r.map(|r| r.to_vec()));
            assert_corrupted_soon(r, start, if target == "flags" { "poisoned it" } else { "participant entry 1" });
            w.join().unwrap();
            drop(tx);
        }
    }

    /// MPMC: a consumer SIGKILLed while parked leaves its registration on
    /// `not_empty`; recovery takes it back, so notifies stop paying for a
    /// wake-up nobody waits for.
    fn mpmc_killed_parked_waiter_is_deregistered_by_recovery(kind) {
        let seg = TempSeg::new("mpmc-parked");
        let mo = MpmcOptions::new().slot_size(16).slot_count(8).notifier(kind);
        let mut tx = mpmc::Producer::create(&seg.0, &mo).unwrap();
        let mut child: Peer = spawn_peer("peer_main", "park", &seg.name());
        let deadline = Instant::now() + NEVER;
        // Registered as a waiter, and its entry (1: the producer has 0) says
        // on which eventcount.
        let parked_at = CONTROL_OFFSET + offset_of!(MpmcControl, participants) + STRIDE + offset_of!(Participant, parked);
        let view = Segment::open(&seg.0).unwrap();
        // SAFETY: inside the MPMC header of the mapping, 4-aligned; a plain read of a word another process writes.
        let parked = || unsafe { std::ptr::read_volatile(view.as_ptr().add(parked_at) as *const u32) };
        while snapshot(&seg.0).waiters.0 != 1 || parked() != header::PARKED_NOT_EMPTY {
            assert!(Instant::now() < deadline, "the child never parked");
            assert!(child.0.try_wait().unwrap().is_none(), "the child exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        assert_eq!(snapshot(&seg.0).waiters.0, 1, "the dead child's registration stays until recovery");
        assert_eq!(tx.recover_dead().unwrap(), 0, "no slot was held");
        assert_eq!(snapshot(&seg.0).waiters.0, 0, "recovery took the registration back");
        assert_eq!(parked(), header::PARKED_NONE);
        assert_eq!(tx.recover_dead().unwrap(), 0);
        assert_eq!(snapshot(&seg.0).waiters.0, 0, "and only once");
        tx.send(b"still works").unwrap();
    }
}

/// Bytes between two participant entries.
const STRIDE: usize = size_of::<crossbeam_utils::CachePadded<Participant>>();

fn snapshot(loc: &Location) -> Snapshot {
    let (page, len) = shmring::segment::read_first_page(loc).unwrap();
    Snapshot::parse(&page, len)
}

/// (state, reason) of every participant entry that is neither free nor
/// attached (attaching or aborted ones).
fn mpmc_entries(loc: &Location) -> Vec<(u32, String)> {
    let seg = Segment::open(loc).unwrap();
    let base = CONTROL_OFFSET + offset_of!(MpmcControl, participants);
    let mut out = Vec::new();
    for i in 0..header::MPMC_MAX_PARTICIPANTS {
        let at = base + i * STRIDE;
        // SAFETY: the table lies inside the MPMC header of the mapping; plain reads of words others may write.
        let (word, reason) = unsafe {
            let p = seg.as_ptr().add(at);
            let word = std::ptr::read_volatile(p.add(offset_of!(Participant, word)) as *const u64);
            let page = std::slice::from_raw_parts(p, 128);
            (word, header::RawReason::parse(page, offset_of!(Participant, reason)))
        };
        let (_, _, state) = header::participant_fields(word);
        if state != header::PARTICIPANT_FREE && state != header::PARTICIPANT_ATTACHED {
            out.push((state, reason.text().unwrap()));
        }
    }
    out
}

/// Peer entry. `park LOC`: attach an MPMC consumer and wait for a message
/// that never comes (until killed).
#[test]
#[ignore = "peer process for the endings tests"]
fn peer_main() {
    let Some((role, arg)) = peer_role() else { return };
    match role.as_str() {
        "park" => {
            let mut rx = mpmc::Consumer::open(&Location::shm(&arg)).unwrap();
            rx.set_wait_policy(WaitPolicy::park());
            let _ = rx.recv_timeout(NEVER);
        }
        other => panic!("unknown peer role {other}"),
    }
}

/// A peer that dies is a third ending, reported as `PeerDied`, not as an
/// abort or a close.
#[test]
fn a_dead_producer_is_neither_closed_nor_aborted() {
    let seg = TempSeg::new("died");
    let mut rx = Consumer::create(&seg.0, &opts(NotifierKind::Futex)).unwrap();
    // Attach the producer role in the name of a process that then exits
    // without closing.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    let a = Attacker::new(&seg);
    a.write_u32(role_offset(PRODUCER, offset_of!(RoleSlot, pid)), pid);
    a.write_u32(role_offset(PRODUCER, offset_of!(RoleSlot, state)), header::ROLE_ATTACHED);
    assert!(child.wait().unwrap().success());
    let start = Instant::now();
    match recv_bytes(&mut rx) {
        Err(Error::PeerDied { role: "producer", pid: p, .. }) => assert_eq!(p, pid),
        other => panic!("expected PeerDied, got {other:?}"),
    }
    assert!(start.elapsed() < PROMPTLY);
}
