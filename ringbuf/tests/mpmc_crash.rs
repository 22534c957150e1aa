//! Kill trials for the MPMC ring: producers and consumers run as real
//! processes, one or two of them get SIGKILL at a random moment, and the
//! survivors must finish with every message accounted for.
//!
//! What each process records, in a shared log segment that survives its
//! death (each entry is one 8-byte store):
//!
//! - a producer: how many of its messages `send`/`send_batch` has returned
//!   for ("known committed");
//! - a consumer: every message it received, written while it still holds the
//!   slot, and marked DONE after releasing it.
//!
//! So after a trial, with `E` positions claimed by producers and the ring's
//! loss counters `lost_p` (producer died mid-write) and `lost_c` (consumer
//! died holding the message):
//!
//! - every logged message is logged once (exactly-once delivery), and each
//!   consumer saw each producer's messages in order;
//! - `E - lost_p` messages were committed; each was either released by a
//!   consumer (and logged) or recovered from a dead one (`lost_c`). A
//!   consumer killed between logging and releasing is counted in both, and
//!   its entry is not DONE, so
//!   `E - lost_p - lost_c <= logged <= E - lost_p - lost_c + not_done`;
//! - every known-committed message was logged, or is one of the `lost_c`;
//! - `lost_p` and `lost_c` are at most what the killed processes could hold.
//!
//! The delay from a kill to each recovery (seen through the ring's
//! `recovered` counter) is collected; the test prints p50/p99 and asserts a
//! generous bound (timing asserts flake on a loaded machine).
// Tests drive the library from outside: the atomics facade (`src/sync.rs`,
// `clippy.toml`) is the library's rule, not theirs.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
#![cfg(not(loom))]

mod common;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Peer, TempSeg, peer_role, spawn_peer};
use shmring::mpmc::{Consumer, MpmcOptions, Producer};
use shmring::{Location, Segment};

/// Messages per producer per trial.
const PER_PRODUCER: u64 = 300;
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
/// Payload bytes: producer, sequence, check word.
const MSG: usize = 24;
/// Largest batch either side uses.
const BATCH: u64 = 4;
/// Words per child block in the log: see `READY` .. `ENTRIES`.
const BLOCK: usize = ENTRIES + PRODUCERS * PER_PRODUCER as usize;
/// Child block word: non-zero once the child attached.
const READY: usize = 0;
/// Producer block word: messages known committed.
const COMMITTED: usize = 1;
/// Child block word: 1 while the child holds a claimed slot it is working
/// on (a grant or a received message), else 0. Lets a trial aim its kill.
const HOLDING: usize = 2;
/// Consumer block: first log entry.
const ENTRIES: usize = 3;
const DONE: u64 = 1 << 63;

fn msg(p: u64, i: u64) -> [u8; MSG] {
    let mut m = [0u8; MSG];
    m[..8].copy_from_slice(&p.to_le_bytes());
    m[8..16].copy_from_slice(&i.to_le_bytes());
    m[16..].copy_from_slice(&(p.wrapping_mul(0x9E37_79B9) ^ i.wrapping_mul(0x85EB_CA6B) ^ 0x5bd1).to_le_bytes());
    m
}

fn tag_of(m: &[u8]) -> u64 {
    assert_eq!(m.len(), MSG, "message length");
    let p = u64::from_le_bytes(m[..8].try_into().unwrap());
    let i = u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert!(p < PRODUCERS as u64 && i < PER_PRODUCER, "bad tag {p}/{i}");
    assert_eq!(m, &msg(p, i)[..], "message {p}/{i} torn");
    ((p + 1) << 32) | (i + 1)
}

fn untag(t: u64) -> (usize, u64) {
    (((t & !DONE) >> 32) as usize - 1, (t & 0xffff_ffff) - 1)
}

/// The shared log: word 0 is the start flag, then one block per child.
///
/// Every store is Release and every load Acquire: a reader that sees a word
/// also sees what its writer logged before it (the parent reads the logs
/// after the children exited or were killed, which orders them anyway).
struct Log(Segment);

impl Log {
    fn len() -> u64 {
        ((1 + (PRODUCERS + CONSUMERS) * BLOCK) * 8) as u64
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!((i + 1) * 8 <= self.0.len());
        // SAFETY: in bounds (checked), 8-aligned in a page-aligned mapping this Log keeps alive; AtomicU64 has
        // no invalid bit patterns.
        unsafe { &*(self.0.as_ptr().add(i * 8) as *const AtomicU64) }
    }
    fn slot(&self, child: usize, i: usize) -> &AtomicU64 {
        self.word(1 + child * BLOCK + i)
    }
    fn put(&self, child: usize, i: usize, v: u64) {
        // Release: pairs with the Acquire load in `get` (see the type docs).
        self.slot(child, i).store(v, Ordering::Release);
    }
    fn or(&self, child: usize, i: usize, bits: u64) {
        // Release: as in `put`.
        self.slot(child, i).fetch_or(bits, Ordering::Release);
    }
    fn get(&self, child: usize, i: usize) -> u64 {
        // Acquire: pairs with the Release stores in `put` and `or`.
        self.slot(child, i).load(Ordering::Acquire)
    }
    fn start(&self) {
        // Release: pairs with the Acquire load in `started`.
        self.word(0).store(1, Ordering::Release);
    }
    fn started(&self) -> bool {
        // Acquire: pairs with the Release store in `start`.
        self.word(0).load(Ordering::Acquire) != 0
    }
}

/// Wait for the parent's start flag.
fn ready_and_wait(log: &Log, child: usize) {
    log.put(child, READY, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.started() {
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// Busy for `us` microseconds (sleeping would take far longer).
fn spin(us: u64) {
    let end = Instant::now() + Duration::from_micros(us);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Entry point of the trial processes; ignored in a normal run.
/// Argument: `ring,log,child,id,batch,seed`.
#[test]
#[ignore = "peer process for the crash trials"]
fn crash_peer() {
    let Some((role, arg)) = peer_role() else { return };
    let a: Vec<&str> = arg.split(',').collect();
    let log = Log(Segment::open(&Location::shm(a[1])).unwrap());
    let child: usize = a[2].parse().unwrap();
    let id: u64 = a[3].parse().unwrap();
    let batch = a[4] == "1";
    let mut rng = Rng(a[5].parse::<u64>().unwrap() | 1);
    match role.as_str() {
        "produce" => {
            let mut tx = Producer::open(&Location::shm(a[0])).unwrap();
            ready_and_wait(&log, child);
            let mut i = 0;
            while i < PER_PRODUCER {
                // A burst of sends, then a short pause.
                for _ in 0..1 + rng.below(16) {
                    if i == PER_PRODUCER {
                        break;
                    }
                    if batch && rng.below(2) == 0 {
                        let k = BATCH.min(PER_PRODUCER - i);
                        let ms: Vec<[u8; MSG]> = (i..i + k).map(|j| msg(id, j)).collect();
                        let refs: Vec<&[u8]> = ms.iter().map(|m| &m[..]).collect();
                        i += tx.send_batch(&refs).unwrap() as u64;
                    } else if rng.below(4) != 0 {
                        // Work on the message in place for a while: a wide
                        // window between claim and commit.
                        let mut g = tx.grant().unwrap();
                        log.put(child, HOLDING, 1);
                        g[..MSG].copy_from_slice(&msg(id, i));
                        spin(rng.below(40));
                        g.commit(MSG).unwrap();
                        log.put(child, HOLDING, 0);
                        i += 1;
                    } else {
                        tx.send(&msg(id, i)).unwrap();
                        i += 1;
                    }
                    log.put(child, COMMITTED, i);
                }
                if rng.below(8) == 0 {
                    std::thread::sleep(Duration::from_micros(rng.below(40)));
                }
            }
        }
        "consume" => {
            let mut rx = Consumer::open(&Location::shm(a[0])).unwrap();
            ready_and_wait(&log, child);
            let mut n = 0;
            loop {
                let first = n;
                if batch && rng.below(2) == 0 {
                    let got = rx
                        .recv_batch(BATCH as usize, |m| {
                            log.put(child, ENTRIES + n, tag_of(m));
                            n += 1;
                        })
                        .unwrap();
                    if got == 0 {
                        break;
                    }
                } else {
                    let Some(m) = rx.recv_timeout(Duration::from_secs(60)).unwrap() else { break };
                    log.put(child, ENTRIES + n, tag_of(&m));
                    n += 1;
                    // Work on it in place for a while before releasing it.
                    if rng.below(4) != 0 {
                        log.put(child, HOLDING, 1);
                        spin(rng.below(40));
                    }
                    drop(m);
                    log.put(child, HOLDING, 0);
                }
                // Released: mark the entries done.
                for j in first..n {
                    log.or(child, ENTRIES + j, DONE);
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Figures gathered over all trials.
#[derive(Default)]
struct Totals {
    trials: u64,
    kills: u64,
    lost_p: u64,
    lost_c: u64,
    recovered: u64,
    swept: u64,
    /// Kill to recovery, in trials with one victim.
    delays: Vec<Duration>,
    /// First kill to recovery, in trials with two victims (an upper bound).
    delays_upper: Vec<Duration>,
}

/// Which processes a trial kills: children 0..PRODUCERS are producers, the
/// rest consumers.
fn victims(kind: u64, rng: &mut Rng) -> Vec<usize> {
    let p = rng.below(PRODUCERS as u64) as usize;
    let c = PRODUCERS + rng.below(CONSUMERS as u64) as usize;
    match kind % 3 {
        0 => vec![p],
        1 => vec![c],
        _ => {
            if rng.below(2) == 0 {
                vec![p, c]
            } else {
                vec![c, p]
            }
        }
    }
}

fn trial(t: u64, rng: &mut Rng, totals: &mut Totals) {
    let batch = t % 2 == 1;
    let ring = TempSeg::new(&format!("crash{t}"));
    let logseg = TempSeg::new(&format!("crashlog{t}"));
    let mut ctl = Producer::create(&ring.0, &MpmcOptions::new().slot_size(MSG).slot_count(8)).unwrap();
    let log = Log(Segment::create(&logseg.0, Log::len(), Default::default()).unwrap());
    let mut kids: Vec<Option<Peer>> = (0..PRODUCERS + CONSUMERS)
        .map(|child| {
            let (role, id) = if child < PRODUCERS { ("produce", child) } else { ("consume", 0) };
            let arg = format!("{},{},{child},{id},{},{}", ring.name(), logseg.name(), u8::from(batch), rng.next());
            Some(spawn_peer("crash_peer", role, &arg))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..kids.len()).any(|c| log.get(c, READY) == 0) {
        assert!(Instant::now() < deadline, "trial {t}: children never got ready");
        std::thread::sleep(Duration::from_micros(100));
    }
    let victims = victims(t, rng);
    log.start();
    // A run takes a few milliseconds: kill somewhere inside it.
    // Half the trials aim: after the delay, wait (briefly) until the victim
    // is working on a claimed slot.
    let aim = rng.below(2) == 0;
    let mut first_kill = None;
    for &v in &victims {
        std::thread::sleep(Duration::from_micros(rng.below(4000)));
        let until = Instant::now() + Duration::from_millis(20);
        while aim && log.get(v, HOLDING) == 0 && Instant::now() < until {
            std::hint::spin_loop();
        }
        kids[v].as_mut().unwrap().0.kill().unwrap();
        first_kill.get_or_insert_with(Instant::now);
    }
    totals.kills += victims.len() as u64;

    // Let the survivors finish; watch recoveries as they happen.
    let first_kill = first_kill.unwrap();
    let mut seen = 0; // a new ring: nothing recovered before the kills
    let mut watch = |ctl: &Producer| {
        let r = ctl.stats().recovered;
        while seen < r {
            let d = first_kill.elapsed();
            if victims.len() == 1 {
                totals.delays.push(d)
            } else {
                totals.delays_upper.push(d)
            }
            seen += 1;
        }
    };
    let mut closed = false;
    loop {
        watch(&ctl);
        let mut running = (false, false);
        for (c, k) in kids.iter_mut().enumerate() {
            if victims.contains(&c) {
                continue;
            }
            if let Some(p) = k
                && let Some(st) = p.0.try_wait().unwrap()
            {
                assert!(st.success(), "trial {t}: survivor {c} failed (victims {victims:?})");
                *k = None;
            }
            if k.is_some() {
                if c < PRODUCERS { running.0 = true } else { running.1 = true }
            }
        }
        if !running.0 && !closed {
            ctl.close_ring();
            closed = true;
        }
        if !running.0 && !running.1 {
            watch(&ctl);
            break;
        }
        assert!(Instant::now() < deadline, "trial {t}: survivors did not finish (victims {victims:?})");
        std::thread::sleep(Duration::from_micros(200));
    }
    for &v in &victims {
        // Killed, or finished before the kill landed; never failed on its own
        // (a victim that saw a torn or unknown message panics).
        let status = kids[v].take().unwrap().0.wait().unwrap();
        assert!(
            status.success() || status.signal() == Some(9),
            "trial {t}: victim {v} exited with {status} before it was killed"
        );
    }
    // Slots that no waiter needed (e.g. a dead consumer's last message).
    let swept = ctl.recover_dead().unwrap() as u64;
    assert_eq!(ctl.recover_dead().unwrap(), 0);
    let s = ctl.stats();
    assert_eq!(s.enqueued, s.dequeued, "trial {t}: ring not drained");
    assert!(s.recovered >= s.lost_producer_died + s.lost_consumer_died);

    // Read the logs.
    let committed: Vec<u64> = (0..PRODUCERS).map(|c| log.get(c, COMMITTED)).collect();
    let mut delivered = HashSet::new();
    let mut not_done = 0;
    for c in PRODUCERS..PRODUCERS + CONSUMERS {
        let mut last = [None::<u64>; PRODUCERS];
        for j in 0..BLOCK - ENTRIES {
            let e = log.get(c, ENTRIES + j);
            if e == 0 {
                break;
            }
            if e & DONE == 0 {
                assert!(victims.contains(&c), "trial {t}: a surviving consumer left an entry not done");
                not_done += 1;
            }
            let (p, i) = untag(e);
            assert!(delivered.insert((p, i)), "trial {t}: message {p}/{i} delivered twice");
            assert!(last[p].is_none_or(|l| l < i), "trial {t}: consumer {c} got {p}/{i} after {:?}", last[p]);
            last[p] = Some(i);
        }
    }
    let (lost_p, lost_c) = (s.lost_producer_died, s.lost_consumer_died);
    let committed_total = s.enqueued - lost_p;
    let logged = delivered.len() as u64;
    let ctx = format!(
        "trial {t} (victims {victims:?}, batch {batch}, aimed {aim}): enqueued {}, lost_p {lost_p}, lost_c {lost_c}, \
         logged {logged}, not done {not_done}, committed {committed:?}",
        s.enqueued
    );
    assert!(committed_total >= lost_c && committed_total - lost_c <= logged, "{ctx}");
    assert!(logged <= committed_total - lost_c + not_done, "{ctx}");
    let most = if batch { BATCH } else { 1 };
    if std::env::var_os("CRASH_DEBUG").is_some() {
        eprintln!("{ctx}");
    }
    let mut missing_known = 0;
    for (p, &n) in committed.iter().enumerate() {
        let killed = victims.contains(&p);
        if !killed {
            assert_eq!(n, PER_PRODUCER, "{ctx}");
        }
        for i in 0..PER_PRODUCER {
            let got = delivered.contains(&(p, i));
            if i < n && !got {
                missing_known += 1;
            }
            // A killed producer's in-flight messages may have been committed
            // without being logged as such, never more.
            assert!(!got || i < n + if killed { most } else { 0 }, "{ctx}: {p}/{i} delivered");
        }
    }
    assert!(missing_known <= lost_c, "{ctx}: {missing_known} known-committed messages missing");
    let killed_p = victims.iter().filter(|&&v| v < PRODUCERS).count() as u64;
    let killed_c = victims.len() as u64 - killed_p;
    assert!(lost_p <= killed_p * most && lost_c <= killed_c * most, "{ctx}");
    totals.trials += 1;
    totals.lost_p += lost_p;
    totals.lost_c += lost_c;
    totals.recovered += s.recovered;
    totals.swept += swept;
}

fn run_trials(first: u64, count: u64) -> Totals {
    let seed = u64::from(std::process::id()) << 20 ^ first ^ 0x9E37_79B9_7F4A_7C15;
    eprintln!("crash trials {first}..{}: seed {seed:#x}", first + count);
    let mut rng = Rng(seed | 1);
    let mut totals = Totals::default();
    for t in first..first + count {
        trial(t, &mut rng, &mut totals);
    }
    totals
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn two_hundred_kill_trials_lose_nothing_unaccounted() {
    let t0 = Instant::now();
    // Two threads of trials: the machine has two cores.
    let a = std::thread::spawn(|| run_trials(0, 100));
    let b = run_trials(100, 100);
    let a = a.join().unwrap();
    let mut delays: Vec<Duration> = a.delays.iter().chain(&b.delays).copied().collect();
    delays.sort();
    let mut upper: Vec<Duration> = a.delays_upper.iter().chain(&b.delays_upper).copied().collect();
    upper.sort();
    let sum = |f: fn(&Totals) -> u64| f(&a) + f(&b);
    eprintln!(
        "mpmc crash trials: {} trials, {} kills in {:.1?}; lost by producer death {}, by consumer death {}; \
         {} slots recovered ({} by the final sweep); kill to recovery (one victim): {} samples, p50 {:?}, \
         p99 {:?}, max {:?}; first kill to recovery (two victims): {} samples, max {:?}",
        sum(|t| t.trials),
        sum(|t| t.kills),
        t0.elapsed(),
        sum(|t| t.lost_p),
        sum(|t| t.lost_c),
        sum(|t| t.recovered),
        sum(|t| t.swept),
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or_default(),
        upper.len(),
        upper.last().copied().unwrap_or_default(),
    );
    assert_eq!(sum(|t| t.trials), 200);
    assert!(sum(|t| t.recovered) > 0, "no kill ever hit a claimed slot: the trials test nothing");
    let slowest = delays.last().max(upper.last()).copied().unwrap_or_default();
    assert!(slowest < Duration::from_secs(2), "a recovery took {slowest:?}");
}
