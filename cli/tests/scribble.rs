//! A live scribbler on a streaming segment: `shmring send` and `shmring recv`
//! stream between two real processes while this process writes random bytes
//! at random offsets of their segment (the first 4 KiB, the control words,
//! or anywhere), for a random while. Whatever it hits, both sides must end
//! within 2 s of the scribbler stopping and of each other, neither by a
//! signal, and the receiver may exit 0 only if the sender did: a stream
//! that failed never looks finished.
//!
//! `scribbled_streams_end_cleanly_or_fail_on_both_sides` runs a few trials
//! with every test run; `live_scribbler_trials` (ignored) runs many:
//! `SHMRING_TRIALS=300 cargo test --release -p shmring-cli --test scribble -- --ignored --nocapture`.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shmring::{Location, Segment};

const BIN: &str = env!("CARGO_BIN_EXE_shmring");
/// How long after the scribbler stops, and after each other, both sides
/// must have ended.
const GRACE: Duration = Duration::from_secs(2);

/// xorshift64*: deterministic per trial, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A child killed and reaped on drop, with when it was seen to exit.
struct Side {
    child: Child,
    ended: Option<(Instant, ExitStatus)>,
}

impl Side {
    fn poll(&mut self) {
        if self.ended.is_none()
            && let Some(st) = self.child.try_wait().unwrap()
        {
            self.ended = Some((Instant::now(), st));
        }
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes a file when dropped, even if the trial panics.
struct Remove(String);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What one trial saw (printed whole when a trial fails).
#[derive(Debug)]
#[allow(dead_code)] // some fields are only read through Debug
struct Outcome {
    seed: u64,
    writes: u64,
    send: ExitStatus,
    recv: ExitStatus,
    /// recv's output equals the input.
    intact: bool,
    recv_err: String,
    send_err: String,
}

fn trial(seed: u64) -> Outcome {
    let mut rng = Rng(seed | 1);
    let name = format!("shmring-scribble-{}-{seed}", std::process::id());
    let _remove = Remove(format!("/dev/shm/{name}"));
    let input: Vec<u8> = (0..4 << 20).map(|_| rng.next() as u8).collect();
    let mut recv = Side {
        child: Command::new(BIN).args(["recv", &name]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
        ended: None,
    };
    let mut send = Side {
        child: Command::new(BIN)
            .args(["send", "--capacity", "64K", "--chunk", "4K", &name])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        ended: None,
    };
    // Feed the input over about 0.3 s, so the stream is running while the
    // scribbler writes. A sender that has quit ends the feeding.
    let mut stdin = send.child.stdin.take().unwrap();
    let feed = input.clone();
    // Returns when it stopped feeding: a side may legitimately run until the
    // later of that and the scribbler's end.
    let feeder = std::thread::spawn(move || {
        for piece in feed.chunks(64 << 10) {
            if stdin.write_all(piece).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(stdin);
        Instant::now()
    });
    let mut out = recv.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_of = |c: &mut Child| {
        let mut e = c.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    };
    let (recv_err, send_err) = (err_of(&mut recv.child), err_of(&mut send.child));

    // Scribble for 20 to 400 ms, once the segment exists.
    let start = Instant::now();
    let seg = loop {
        if let Ok(seg) = Segment::open(&Location::shm(&name))
            && seg.len() > 4096
        {
            break Some(seg);
        }
        if start.elapsed() > Duration::from_secs(5) {
            break None;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    // From one write to as many as fit the time: a single stray write
    // usually lands in payload bytes (nothing can tell), many wreck the ring.
    let budget = [1, 4, 32, u64::MAX][rng.below(4) as usize];
    let scribble_for = Duration::from_millis(20 + rng.below(380));
    let mut writes = 0;
    if let Some(seg) = &seg {
        let until = Instant::now() + scribble_for;
        while Instant::now() < until && writes < budget {
            let len = 1 + rng.below(8) as usize;
            let span = match rng.below(3) {
                0 => 4096,             // header and control block
                1 => 1024,             // header and role slots
                _ => seg.len() as u64, // anywhere
            };
            let off = rng.below(span - len as u64) as usize;
            let bytes = rng.next().to_le_bytes();
            for (i, b) in bytes[..len].iter().enumerate() {
                // SAFETY: off + len <= seg.len(): inside our own mapping; racing the two sides is the point.
                unsafe { std::ptr::write_volatile(seg.as_ptr().add(off + i), *b) };
            }
            writes += 1;
            std::thread::sleep(Duration::from_micros(rng.below(300)));
        }
    }
    let stopped = Instant::now();
    drop(seg);

    // Both sides must end in time: poll, and kill what overruns (which fails the trial).
    let limit = stopped + Duration::from_secs(20);
    while (recv.ended.is_none() || send.ended.is_none()) && Instant::now() < limit {
        recv.poll();
        send.poll();
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = |what: &str| format!("seed {seed}: {what}");
    if recv.ended.is_none() || send.ended.is_none() {
        let inspect = Command::new(BIN).args(["inspect", &name]).output().unwrap();
        let stuck: Vec<String> = [&recv, &send]
            .iter()
            .filter(|s| s.ended.is_none())
            .map(|s| {
                let pid = s.child.id();
                let stack = Command::new("gdb")
                    .args(["-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 12"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                format!("pid {pid}:\n{stack}")
            })
            .collect();
        eprintln!("{}\n{}", String::from_utf8_lossy(&inspect.stdout), stuck.join("\n"));
    }
    let (recv_at, recv_st) = recv.ended.unwrap_or_else(|| panic!("{}", report("recv never ended")));
    let (send_at, send_st) = send.ended.unwrap_or_else(|| panic!("{}", report("send never ended")));
    let fed = feeder.join().unwrap();
    let output = reader.join().unwrap();
    let o = Outcome {
        seed,
        writes,
        send: send_st,
        recv: recv_st,
        intact: output == input,
        recv_err: recv_err.join().unwrap(),
        send_err: send_err.join().unwrap(),
    };
    assert!(o.recv.code().is_some() && o.send.code().is_some(), "{}", report(&format!("ended by a signal: {o:?}")));
    for (side, at) in [("recv", recv_at), ("send", send_at)] {
        let late = at.saturating_duration_since(stopped.max(fed));
        assert!(
            late <= GRACE,
            "{}",
            report(&format!("{side} ended {late:?} after the scribbler and the input: {o:?}"))
        );
    }
    let apart = if recv_at > send_at { recv_at - send_at } else { send_at - recv_at };
    assert!(apart <= GRACE, "{}", report(&format!("the sides ended {apart:?} apart: {o:?}")));
    assert!(!o.recv.success() || o.send.success(), "{}", report(&format!("recv exited 0 but send did not: {o:?}")));
    o
}

/// Run `n` trials from `first_seed` and print a summary.
fn trials(first_seed: u64, n: u64) {
    let (mut both_ok, mut both_failed, mut only_send_ok, mut changed_but_ok) = (0, 0, 0, 0);
    let mut writes = 0;
    for seed in first_seed..first_seed + n {
        let o = trial(seed);
        writes += o.writes;
        match (o.send.success(), o.recv.success()) {
            (true, true) => {
                both_ok += 1;
                if !o.intact {
                    changed_but_ok += 1; // payload bytes scribbled on: no checksum can be asked of the ring
                }
            }
            (false, false) => both_failed += 1,
            (true, false) => only_send_ok += 1,
            (false, true) => unreachable!("checked in trial"),
        }
    }
    println!(
        "{n} trials, {writes} scribbles: both exited 0 in {both_ok} ({changed_but_ok} with payload bytes changed), \
         both exited 1 in {both_failed}, send 0 and recv 1 in {only_send_ok}; recv never exited 0 unless send did"
    );
}

#[test]
fn scribbled_streams_end_cleanly_or_fail_on_both_sides() {
    trials(1, 4);
}

#[test]
#[ignore = "many trials; run on demand (see the module docs)"]
fn live_scribbler_trials() {
    let n = std::env::var("SHMRING_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let first = std::env::var("SHMRING_FIRST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    trials(first, n);
}
