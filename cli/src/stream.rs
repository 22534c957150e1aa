//! `send` and `recv`: a named pipe through a shared-memory ring.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use shmring::spsc::{Consumer, Producer};
use shmring::{Error, Location, SpscOptions, WaitPolicy};

fn policy(spin: bool) -> WaitPolicy {
    if spin { WaitPolicy::busy_poll() } else { WaitPolicy::default() }
}

/// Standard input or output as a plain `File`: no line buffering, no lock.
fn std_fd(fd: i32) -> ManuallyDrop<File> {
    // SAFETY: fds 0 and 1 are open for the life of the process (or reads and writes on them fail with
    // EBADF, which we report); ManuallyDrop keeps us from closing them.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

/// A broken stream leaves a segment nobody can use: remove it, then report.
fn fail_and_remove(loc: &Location, e: Error) -> String {
    if matches!(e, Error::PeerDied { .. } | Error::PeerAborted { .. } | Error::Corrupted { .. }) {
        let _ = loc.unlink();
        return format!("{e}; removed {loc}");
    }
    e.to_string()
}

/// How long a side waits for its peer before saying so on stderr.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(2);

/// Waiting for the other side to attach: says so once after
/// [`SAY_WAITING_AFTER`], and gives up after `timeout`.
struct PeerWait<'a> {
    loc: &'a Location,
    /// "producer" or "consumer".
    peer: &'static str,
    started: Instant,
    timeout: Option<Duration>,
    said: bool,
}

impl<'a> PeerWait<'a> {
    fn new(loc: &'a Location, peer: &'static str, timeout: Option<Duration>) -> PeerWait<'a> {
        PeerWait { loc, peer, started: Instant::now(), timeout, said: false }
    }

    /// The peer has not arrived yet: `Err` with the message to exit with
    /// if the time is up.
    fn still_waiting(&mut self) -> Result<(), String> {
        let waited = self.started.elapsed();
        if let Some(t) = self.timeout
            && waited >= t
        {
            return Err(format!("no {} attached to {} within {} s; gave up", self.peer, self.loc, t.as_secs_f64()));
        }
        if !self.said && waited >= SAY_WAITING_AFTER {
            self.said = true;
            let other = if self.peer == "producer" { "send" } else { "recv" };
            eprintln!(
                "shmring: waiting for a {} on {} (start `shmring {other}` on it; --timeout SECS gives up)",
                self.peer, self.loc
            );
        }
        Ok(())
    }
}

pub fn send(loc: &Location, capacity: u64, chunk: u64, spin: bool, timeout: Option<Duration>) -> Result<u8, String> {
    let opts = SpscOptions::new().capacity(capacity).wait_policy(policy(spin));
    let mut tx = Producer::open_or_create(loc, &opts).map_err(|e| e.to_string())?;
    let chunk = chunk.clamp(1, tx.capacity() / 2) as usize;
    let mut input = std_fd(0);
    let mut wait = PeerWait::new(loc, "consumer", timeout);
    let mut arrived = false;
    loop {
        // A full ring is where a missing consumer shows: until one has come,
        // wait for room a slice at a time, and between slices see whether it
        // has. Once it has, wait as long as it takes (checking it is alive).
        let granted = if arrived { tx.grant(chunk) } else { tx.grant_timeout(chunk, Duration::from_millis(100)) };
        let mut g = match granted {
            Ok(g) => g,
            Err(Error::Timeout) => {
                arrived = arrived || tx.peer_arrived().map_err(|e| fail_and_remove(loc, e))?;
                if !arrived && let Err(msg) = wait.still_waiting() {
                    tx.abort("gave up waiting for a consumer");
                    let _ = loc.unlink();
                    return Err(msg);
                }
                continue;
            }
            Err(e) => return Err(fail_and_remove(loc, e)),
        };
        let n = loop {
            match input.read(&mut g) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        match n {
            Ok(0) => break, // grant dropped: nothing sent
            Ok(n) => {
                g.truncate(n);
                g.commit();
            }
            Err(e) => {
                // What was sent is delivered, then the receiver fails too:
                // a truncated stream must not look complete.
                tx.abort(&format!("reading standard input: {e}"));
                return Err(format!("reading standard input: {e}; aborted the stream"));
            }
        }
    }
    tx.close().map_err(|e| fail_and_remove(loc, e))?;
    Ok(0)
}

pub fn recv(loc: &Location, capacity: u64, spin: bool, keep: bool, timeout: Option<Duration>) -> Result<u8, String> {
    let opts = SpscOptions::new().capacity(capacity).wait_policy(policy(spin));
    let mut rx = Consumer::open_or_create(loc, &opts).map_err(|e| e.to_string())?;
    let mut wait = PeerWait::new(loc, "producer", timeout);
    while !rx.peer_arrived().map_err(|e| fail_and_remove(loc, e))? {
        if let Err(msg) = wait.still_waiting() {
            rx.abort("gave up waiting for a producer");
            if !keep {
                let _ = loc.unlink();
            }
            return Err(msg);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = std_fd(1);
    let mut write_err = None;
    loop {
        let n = rx
            .recv_batch(64, |rec| {
                if write_err.is_none()
                    && let Err(e) = out.write_all(rec)
                {
                    write_err = Some(e);
                }
            })
            .map_err(|e| fail_and_remove(loc, e))?;
        if let Some(e) = write_err {
            if e.kind() == ErrorKind::BrokenPipe {
                // The reader of our output went away: the user's choice, not
                // a failure here. Close (the producer sees the consumer gone).
                break;
            }
            rx.abort(&format!("writing standard output: {e}"));
            return Err(format!("writing standard output: {e}; aborted the stream"));
        }
        if n == 0 {
            break;
        }
    }
    drop(rx);
    if !keep {
        let _ = loc.unlink();
    }
    Ok(0)
}
