//! `send` and `recv`: a named pipe through a shared-memory ring.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

use shmring::spsc::{Consumer, Producer};
use shmring::{Error, Location, RingOptions, WaitPolicy};

fn policy(spin: bool) -> WaitPolicy {
    if spin { WaitPolicy::busy_poll() } else { WaitPolicy::default() }
}

/// Standard input or output as a plain `File`: no line buffering, no lock.
fn std_fd(fd: i32) -> ManuallyDrop<File> {
    // SAFETY: fds 0 and 1 are open for the life of the process (or reads and writes on them fail with EBADF, which we report); ManuallyDrop keeps us from closing them.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

/// A broken stream leaves a segment nobody can use: remove it, then report.
fn fail_and_remove(loc: &Location, e: Error) -> String {
    if matches!(e, Error::PeerDied { .. } | Error::Corrupted { .. }) {
        let _ = loc.unlink();
        return format!("{e}; removed {loc}");
    }
    e.to_string()
}

pub fn send(loc: &Location, capacity: u64, chunk: u64, spin: bool) -> Result<u8, String> {
    let opts = RingOptions::new().capacity(capacity).wait_policy(policy(spin));
    let mut tx = Producer::open_or_create(loc, &opts).map_err(|e| e.to_string())?;
    let chunk = chunk.clamp(1, tx.capacity() / 2) as usize;
    let mut input = std_fd(0);
    loop {
        let mut g = tx.grant(chunk).map_err(|e| fail_and_remove(loc, e))?;
        let n = loop {
            match input.read(&mut g) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading standard input: {e}")),
            }
        };
        if n == 0 {
            break; // grant dropped: nothing sent
        }
        g.truncate(n);
        g.commit();
    }
    tx.close();
    Ok(0)
}

pub fn recv(loc: &Location, capacity: u64, spin: bool, keep: bool) -> Result<u8, String> {
    let opts = RingOptions::new().capacity(capacity).wait_policy(policy(spin));
    let mut rx = Consumer::open_or_create(loc, &opts).map_err(|e| e.to_string())?;
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
            return Err(format!("writing standard output: {e}"));
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
