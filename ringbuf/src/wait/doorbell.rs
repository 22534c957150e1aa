//! The doorbell: one end of a datagram socket pair, for a waiter that
//! sleeps outside the ring's own wait loop (typically an async task whose
//! reactor polls the socket); the peer rings it through the other end.
//!
//! The ring's eventcount already says whether anyone waits (its waiter
//! count is the "parked" flag). A handle given the peer's end
//! ([`crate::spsc::Producer::set_doorbell`],
//! [`crate::spsc::Consumer::set_doorbell`]) rings it after every publish
//! whose notify finds a waiter registered, and only then: a publish that
//! finds nobody parked makes no system call. The waiter's side:
//!
//! ```text
//! waiter (async)                                publisher (peer process)
//! reg = rx.register_waiter()   // waiters += 1; fence(SeqCst)
//! if rx.try_recv() has data { drop(reg); ... }   publish (Release)
//! await our end readable; drain it               ec.notify(): fence(SeqCst);
//! drop(reg)                    // waiters -= 1     if waiters > 0 { futex wake; ring the other end }
//! ```
//!
//! The two fences are the eventcount's Dekker handshake: either the
//! waiter's re-check sees the record, or the publisher sees the waiter and
//! rings. A ring is a one-byte datagram, which stays queued until read, so
//! a ring that lands before the waiter starts polling is not lost. A ring
//! nobody consumes (the waiter found data on its re-check) costs one
//! spurious wake-up, after which the waiter re-checks and registers again,
//! as after any wake-up. `tests/loom.rs` (`doorbell_*`) checks both
//! properties: no lost wake-up, and no ring when nobody registered.
//!
//! Why a socket pair and not an eventfd: a descriptor passed to another
//! process shares its open file description, flags included. A peer given
//! our eventfd could clear its `O_NONBLOCK` and fill its counter, and our
//! next ring (a `write(2)` on that same description) would block for ever.
//! Each end of a socket pair is a description of its own: each process keeps
//! one end and never passes it on, and every send and receive here says
//! `MSG_DONTWAIT` for itself. A full queue means "rung" already; a flood of
//! rings from a hostile peer is drained a bounded number at a time.
//!
//! The doorbell is per process (a file descriptor), not in the segment: a
//! peer passes its end along with the segment (over a UNIX socket, with
//! `SCM_RIGHTS`). A descriptor received from a peer is untrusted too:
//! [`Doorbell::from_fd`] refuses anything but a UNIX datagram socket.

use std::io;
#[cfg(not(loom))]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// One end of a doorbell: the waiter polls its end for readability and
/// drains it; the ringer rings through the other end. Clones share one
/// descriptor.
#[derive(Clone, Debug)]
pub struct Doorbell {
    #[cfg(not(loom))]
    fd: Arc<OwnedFd>,
    /// The pair, modelled: rings queued at each end (this end's index),
    /// and a condition variable for a waiter blocked until its end has one.
    #[cfg(loom)]
    model: Arc<(loom::sync::Mutex<[u64; 2]>, loom::sync::Condvar)>,
    #[cfg(loom)]
    end: usize,
}

/// Rings a waiter takes off its end per drain, at most: a flood from a
/// hostile peer cannot keep it draining.
#[cfg(not(loom))]
const DRAIN_MAX: usize = 64;

#[cfg(not(loom))]
impl Doorbell {
    /// A new doorbell: the waiter's end and the ringer's end (close-on-exec,
    /// non-blocking). Keep one, pass the other to the peer.
    ///
    /// # Errors
    /// The OS error of `socketpair(2)` (e.g. `EMFILE`).
    pub fn pair() -> io::Result<(Doorbell, Doorbell)> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
        let (a, b) = socketpair(AddressFamily::Unix, SockType::Datagram, None, flags)?;
        Ok((Doorbell { fd: Arc::new(a) }, Doorbell { fd: Arc::new(b) }))
    }

    /// Take a descriptor received from a peer as our end of a doorbell,
    /// after checking that it is a UNIX datagram socket, and make it
    /// non-blocking (the description is ours alone once the peer closed its
    /// copy; every call here is non-blocking in any case).
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if the descriptor is not a UNIX
    /// datagram socket; the OS error if it cannot be inspected.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Doorbell> {
        use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, getsockname, getsockopt, sockopt};
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let kind = getsockopt(&fd, sockopt::SockType)
            .map_err(|e| invalid(format!("a doorbell must be a UNIX datagram socket: {e}")))?;
        let family = getsockname::<nix::sys::socket::SockaddrStorage>(fd.as_raw_fd())?.family();
        if kind != SockType::Datagram || family != Some(AddressFamily::Unix) {
            return Err(invalid(format!("a doorbell must be a UNIX datagram socket, got {kind:?} {family:?}")));
        }
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Doorbell { fd: Arc::new(fd) })
    }

    /// Ring the other end: queue a one-byte datagram there, waking whoever
    /// polls it. Never blocks: a full queue is already as rung as it gets,
    /// and a peer that closed its end needs no ring, so the result is
    /// ignored.
    pub fn ring(&self) {
        use nix::sys::socket::{MsgFlags, send};
        let _ = send(self.fd.as_raw_fd(), &[1], MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL);
    }

    /// Take the rings queued at this end (a bounded number of them);
    /// whether there was any. Never blocks.
    pub fn drain(&self) -> bool {
        use nix::sys::socket::{MsgFlags, recv};
        let mut byte = [0u8; 1];
        let mut any = false;
        for _ in 0..DRAIN_MAX {
            match recv(self.fd.as_raw_fd(), &mut byte, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => any = true,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        any
    }

    /// Sleep until this end is rung or `timeout` passes (`poll(2)`),
    /// without draining; for a waiter that is not driven by a reactor.
    pub fn wait(&self, timeout: std::time::Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        // EINTR and errors mean "re-check", which every caller does.
        let _ = poll(&mut fds, ms);
    }

    /// A duplicate of the descriptor, to send to the peer.
    ///
    /// # Errors
    /// The OS error of `dup(2)`.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

#[cfg(not(loom))]
impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The same descriptor for the life of the doorbell (and of every clone):
/// clones share it, and it closes when the last one drops.
#[cfg(not(loom))]
impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(loom)]
impl Doorbell {
    /// A modelled pair of ends.
    pub fn pair() -> io::Result<(Doorbell, Doorbell)> {
        let model = Arc::new((loom::sync::Mutex::new([0, 0]), loom::sync::Condvar::new()));
        Ok((Doorbell { model: model.clone(), end: 0 }, Doorbell { model, end: 1 }))
    }

    /// Queue a ring at the other end and wake a waiter blocked there.
    pub fn ring(&self) {
        let (queued, cv) = &*self.model;
        queued.lock().unwrap()[1 - self.end] += 1;
        cv.notify_all();
    }

    /// Take the rings queued at this end; whether there was any.
    pub fn drain(&self) -> bool {
        std::mem::take(&mut self.model.0.lock().unwrap()[self.end]) != 0
    }

    /// Block until this end is rung (no timeout under loom: a lost ring is
    /// a deadlock).
    pub fn wait(&self, _timeout: std::time::Duration) {
        let (queued, cv) = &*self.model;
        let mut q = queued.lock().unwrap();
        while q[self.end] == 0 {
            q = cv.wait(q).unwrap();
        }
    }

    /// Rings queued at this end (models only).
    pub fn rung(&self) -> u64 {
        self.model.0.lock().unwrap()[self.end]
    }
}

/// A waiter registered on one of a ring's eventcounts by a caller that
/// sleeps on a [`Doorbell`] (see the module docs): while it lives, every
/// publish of the peer notifies, and rings the doorbell the peer was given.
/// Dropping it deregisters. Get one from
/// [`crate::spsc::Consumer::register_waiter`] (waiting for records) or
/// [`crate::spsc::Producer::register_waiter`] (waiting for room), then
/// re-check the ring before sleeping.
#[must_use = "dropping the registration deregisters the waiter at once"]
pub struct Registration {
    ec: std::ptr::NonNull<super::eventcount::EventCount>,
    _keep: Arc<dyn std::any::Any + Send + Sync>,
}

impl Registration {
    /// Register on `ec`, which lives in memory kept alive by `keep`.
    pub(crate) fn new(ec: &super::eventcount::EventCount, keep: Arc<dyn std::any::Any + Send + Sync>) -> Registration {
        // The key is not needed: the doorbell, not the epoch, tells the
        // waiter a notify happened. `prepare_wait` makes the fence.
        let _key = ec.prepare_wait();
        Registration { ec: std::ptr::NonNull::from(ec), _keep: keep }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: the eventcount lives in the mapping (or heap block) that `_keep` keeps alive until after this.
        unsafe { self.ec.as_ref() }.cancel_wait();
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").finish_non_exhaustive()
    }
}

// SAFETY: the pointer targets an eventcount of atomics in memory owned by `_keep` (Send + Sync); the
// registration only calls `cancel_wait` on it.
unsafe impl Send for Registration {}
// SAFETY: as for Send; no method takes `&self`.
unsafe impl Sync for Registration {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_ring_crosses_the_pair_and_is_drained_once() {
        let (waiter, ringer) = Doorbell::pair().unwrap();
        assert!(!waiter.drain(), "not rung yet");
        ringer.ring();
        ringer.ring();
        assert!(!ringer.drain(), "a ring lands at the other end");
        assert!(waiter.drain());
        assert!(!waiter.drain(), "drained");
        // Rings never block, however many.
        for _ in 0..100_000 {
            ringer.ring();
        }
        assert!(waiter.drain());
    }

    #[test]
    fn only_a_unix_datagram_socket_is_taken_as_a_doorbell() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let e = Doorbell::from_fd(OwnedFd::from(file)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let (stream, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = Doorbell::from_fd(OwnedFd::from(stream)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let (a, b) = Doorbell::pair().unwrap();
        let mine = Doorbell::from_fd(a.try_clone_fd().unwrap()).unwrap();
        drop(a);
        b.ring();
        assert!(mine.drain());
    }
}
