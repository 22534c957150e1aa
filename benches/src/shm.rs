//! shmring workloads: the bench thread on one side, a peer thread or a peer
//! process on the other.
//!
//! Each workload uses two rings: `to` (bench to peer) and `from` (peer to
//! bench). The bench creates both, starts the peer and waits for its hello on
//! `from`. From then on both sides have both rings mapped, so the names are
//! removed at once: nothing is left in `/dev/shm` whatever happens next. The
//! names are also removed if setting up fails.
//!
//! Both sides busy-poll ([`WaitPolicy::busy_poll`]), like the rtrb and
//! `ArrayQueue` workloads, which can only spin. The ping-pong producers also
//! demote what they send ([`Producer::set_demote`]), as request/response
//! traffic should.

use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmring::spsc::{Consumer, Producer};
use shmring::{Error, Location, SpscOptions, WaitPolicy};

use crate::affinity::pin_if_some;
use crate::{BoxError, MSG_LEN, RING_ITEMS, Workload, expected_sum, read_u64};

/// Environment variable that turns the bench executable into a peer. Its
/// value is `ROLE:NAME:CPU`: ROLE is `stream` or `echo`, NAME the base name
/// of the two segments, CPU the CPU to pin to or `-`.
pub const PEER_ENV: &str = "SHMRING_BENCH_PEER";

/// Records the streaming producer writes per [`Producer::grant_records`]: an
/// eighth of the ring. Batch size is what decides throughput here (the
/// consumer takes whole runs with [`Consumer::recv_runs`]): with the 32 KiB
/// ring, 256 per grant gave 700 M/s, 512 gave 835 M/s, 1024 gave 750 M/s.
pub const FLUSH_EVERY: u64 = 512;

/// Capacity of the `from` ring (hello, sums, echoed messages).
const FROM_CAPACITY: u64 = 4096;
/// How long the bench waits for a new peer's hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the bench waits for a peer process to exit before killing it.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On another thread of this process.
    InProcess,
    /// In another process: this executable, re-run with [`PEER_ENV`] set.
    CrossProcess,
}

/// What the peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Receive runs of 8-byte records, answer each run with their sum.
    Stream,
    /// Send every record back.
    Echo,
}

impl Role {
    fn tag(self) -> &'static str {
        match self {
            Role::Stream => "stream",
            Role::Echo => "echo",
        }
    }

    fn from_tag(tag: &str) -> Option<Role> {
        [Role::Stream, Role::Echo].into_iter().find(|r| r.tag() == tag)
    }

    /// Capacity of the `to` ring.
    fn to_capacity(self) -> u64 {
        match self {
            // The bytes of rtrb's ring of RING_ITEMS u64s: runs share one
            // header, so it holds about as many records.
            Role::Stream => RING_ITEMS as u64 * 8,
            Role::Echo => 4096,
        }
    }
}

fn locations(base: &str) -> (Location, Location) {
    (Location::shm(format!("{base}-to")), Location::shm(format!("{base}-from")))
}

/// Removes both names when dropped; a name already gone is fine.
struct Names(Location, Location);

impl Drop for Names {
    fn drop(&mut self) {
        let _ = self.0.unlink();
        let _ = self.1.unlink();
    }
}

/// The peer, waited for when dropped.
enum Peer {
    Thread(Option<JoinHandle<Result<(), BoxError>>>),
    Process(Child),
}

impl Peer {
    fn spawn(mode: Mode, role: Role, base: &str, cpu: Option<usize>) -> Result<Peer, BoxError> {
        Ok(match mode {
            Mode::InProcess => {
                let base = base.to_owned();
                let thread = std::thread::Builder::new()
                    .name(format!("peer-{}", role.tag()))
                    .spawn(move || run_peer(role, &base, cpu))?;
                Peer::Thread(Some(thread))
            }
            Mode::CrossProcess => {
                let cpu = cpu.map_or_else(|| "-".to_owned(), |c| c.to_string());
                let child = Command::new(std::env::current_exe()?)
                    .env(PEER_ENV, format!("{}:{base}:{cpu}", role.tag()))
                    .stdin(Stdio::null())
                    .spawn()?;
                Peer::Process(child)
            }
        })
    }

    fn exited(&mut self) -> bool {
        match self {
            Peer::Thread(t) => t.as_ref().is_none_or(JoinHandle::is_finished),
            Peer::Process(child) => !matches!(child.try_wait(), Ok(None)),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        match self {
            Peer::Thread(t) => match t.take().map(JoinHandle::join) {
                Some(Ok(Err(e))) => eprintln!("bench peer thread failed: {e}"),
                Some(Err(_)) => eprintln!("bench peer thread panicked"),
                _ => {}
            },
            Peer::Process(child) => {
                let deadline = Instant::now() + EXIT_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    eprintln!("bench peer process {} did not exit; killing it", child.id());
                    let _ = child.kill();
                }
                match child.wait() {
                    Ok(status) if !status.success() => {
                        eprintln!("bench peer process failed: {status}")
                    }
                    Err(e) => eprintln!("bench peer process: {e}"),
                    Ok(_) => {}
                }
            }
        }
    }
}

/// Both rings, bench side, and the peer at their other ends.
struct Link {
    // Fields drop in order: both rings close first, so the peer sees the end
    // of its stream and returns, then `peer` waits for it.
    tx: Producer,
    rx: Consumer,
    peer: Peer,
}

impl Link {
    fn connect(mode: Mode, role: Role, cpu: Option<usize>) -> Result<Link, BoxError> {
        let base = crate::unique_name(role.tag());
        let (to, from) = locations(&base);
        // Ping-pong is request/response: its producers demote what they send.
        let opts = SpscOptions::new().wait_policy(WaitPolicy::busy_poll()).demote(role == Role::Echo);
        let tx = Producer::create(&to, &opts.capacity(role.to_capacity()))?;
        let names = Names(to, from);
        let rx = Consumer::create(&names.1, &opts.capacity(FROM_CAPACITY))?;
        let peer = Peer::spawn(mode, role, &base, cpu)?;
        let mut link = Link { tx, rx, peer };
        // Returning, with the link or an error, drops `names`: by then both
        // sides have mapped the rings (or never will), so the names can go.
        let deadline = Instant::now() + HELLO_TIMEOUT;
        loop {
            match link.rx.recv_timeout(Duration::from_millis(10)) {
                Ok(Some(_hello)) => break,
                Ok(None) => return Err("the peer closed its ring before saying hello".into()),
                Err(Error::Timeout) if !link.peer.exited() && Instant::now() < deadline => {}
                Err(Error::Timeout) => return Err("the peer did not attach".into()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(link)
    }
}

/// Panic with `what` and the error: a bench cannot go on after a failure.
fn must<T>(r: shmring::Result<T>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Streaming 8-byte items: each run sends its length, then the items
/// `0..n`, [`FLUSH_EVERY`] at a time, each batch one
/// [`Producer::grant_records`] written in place and committed. The peer takes them a run at a time with [`Consumer::recv_runs`] and
/// answers with their sum, which ends the timed run.
pub struct ShmStream(Link);

impl ShmStream {
    /// Create the rings and start the peer (pinned to `cpu`, if given).
    ///
    /// # Errors
    /// Creating the segments, starting the peer, or its hello failing.
    pub fn new(mode: Mode, cpu: Option<usize>) -> Result<ShmStream, BoxError> {
        Link::connect(mode, Role::Stream, cpu).map(ShmStream)
    }
}

impl Workload for ShmStream {
    fn run(&mut self, iters: u64) -> Duration {
        let Link { tx, rx, .. } = &mut self.0;
        let start = Instant::now();
        must(tx.send(&iters.to_le_bytes()), "send run length");
        let mut i = 0;
        while i < iters {
            let n = (iters - i).min(FLUSH_EVERY);
            let mut run = must(tx.grant_records(8, n as usize), "grant records");
            for (k, rec) in run.chunks_exact_mut(8).enumerate() {
                rec.copy_from_slice(&(i + k as u64).to_le_bytes());
            }
            run.commit();
            i += n;
        }
        let sum = read_u64(&must(rx.recv(), "receive sum").expect("the peer closed mid-run"));
        let elapsed = start.elapsed();
        assert_eq!(sum, expected_sum(iters), "sum of a run of {iters} items");
        elapsed
    }
}

/// Round trips of a [`MSG_LEN`]-byte message: `send`, then `recv` of the
/// peer's copy. The first 8 bytes carry the iteration number and are
/// checked on return.
pub struct ShmPingPong {
    link: Link,
    msg: [u8; MSG_LEN],
}

impl ShmPingPong {
    /// Create the rings and start the echoing peer (pinned to `cpu`, if given).
    ///
    /// # Errors
    /// As [`ShmStream::new`].
    pub fn new(mode: Mode, cpu: Option<usize>) -> Result<ShmPingPong, BoxError> {
        Ok(ShmPingPong { link: Link::connect(mode, Role::Echo, cpu)?, msg: [0x5a; MSG_LEN] })
    }
}

impl Workload for ShmPingPong {
    fn run(&mut self, iters: u64) -> Duration {
        let ShmPingPong { link: Link { tx, rx, .. }, msg } = self;
        let start = Instant::now();
        for i in 0..iters {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            must(tx.send(msg), "send");
            let back = must(rx.recv(), "receive").expect("the peer closed mid-run");
            assert_eq!(read_u64(&back), i, "echoed message");
        }
        start.elapsed()
    }
}

/// If [`PEER_ENV`] is set, run as the peer it describes and exit the
/// process; otherwise return at once. Call it first thing in `main`.
pub fn run_peer_if_requested() {
    let Some(spec) = std::env::var_os(PEER_ENV) else {
        return;
    };
    let spec = spec.to_string_lossy();
    let parts: Vec<&str> = spec.split(':').collect();
    let parsed = match parts[..] {
        [role, base, cpu] => {
            let cpu = if cpu == "-" { Some(None) } else { cpu.parse().ok().map(Some) };
            Role::from_tag(role).zip(cpu).map(|(role, cpu)| (role, base, cpu))
        }
        _ => None,
    };
    let Some((role, base, cpu)) = parsed else {
        eprintln!("{PEER_ENV}={spec:?}: expected ROLE:NAME:CPU");
        std::process::exit(2);
    };
    if let Err(e) = run_peer(role, base, cpu) {
        eprintln!("bench peer ({}): {e}", role.tag());
        std::process::exit(1);
    }
    std::process::exit(0);
}

/// The peer side, on a thread or in a process: attach to both rings, say
/// hello, then serve until the bench closes its ring.
fn run_peer(role: Role, base: &str, cpu: Option<usize>) -> Result<(), BoxError> {
    pin_if_some(cpu);
    let (to, from) = locations(base);
    let mut rx = Consumer::open(&to)?;
    let mut tx = Producer::open(&from)?;
    rx.set_wait_policy(WaitPolicy::busy_poll());
    tx.set_wait_policy(WaitPolicy::busy_poll());
    tx.set_demote(role == Role::Echo);
    tx.send(b"hello")?;
    match role {
        Role::Stream => sum_runs(&mut rx, &mut tx),
        Role::Echo => {
            while let Some(msg) = rx.recv()? {
                tx.send(&msg)?;
            }
            Ok(())
        }
    }
}

/// Receive runs (a length, then that many items) and answer each with the
/// sum of its items.
fn sum_runs(rx: &mut Consumer, tx: &mut Producer) -> Result<(), BoxError> {
    loop {
        let n = match rx.recv()? {
            Some(len) => read_u64(&len),
            None => return Ok(()),
        };
        let (mut left, mut sum) = (n, 0u64);
        while left > 0 {
            let max = left.min(RING_ITEMS as u64) as usize;
            let got = rx.recv_runs(max, |run| {
                if run.stride() == 8 {
                    sum = run.as_bytes().chunks_exact(8).fold(sum, |s, item| s.wrapping_add(read_u64(item)));
                } else {
                    sum = run.iter().fold(sum, |s, item| s.wrapping_add(read_u64(item)));
                }
            })?;
            if got == 0 {
                return Err(format!("the stream ended {left} items short of a run of {n}").into());
            }
            left -= got as u64;
        }
        tx.send(&sum.to_le_bytes())?;
    }
}
