//! The doorbell: an eventfd for a waiter that sleeps outside the ring's own
//! wait loop, typically an async task whose reactor polls the fd.
//!
//! The ring's eventcount already says whether anyone waits (its waiter
//! count is the "parked" flag). A handle given the peer's doorbell
//! ([`crate::spsc::Producer::set_doorbell`],
//! [`crate::spsc::Consumer::set_doorbell`]) rings it after every publish
//! whose notify finds a waiter registered, and only then: a publish that
//! finds nobody parked makes no system call. The waiter's side:
//!
//! ```text
//! waiter (async)                                publisher (peer process)
//! reg = rx.register_waiter()   // waiters += 1; fence(SeqCst)
//! if rx.try_recv() has data { drop(reg); ... }   publish (Release)
//! await doorbell readable; doorbell.drain()      ec.notify(): fence(SeqCst);
//! drop(reg)                    // waiters -= 1     if waiters > 0 { futex wake; doorbell.ring() }
//! ```
//!
//! The two fences are the eventcount's Dekker handshake: either the
//! waiter's re-check sees the record, or the publisher sees the waiter and
//! rings. An eventfd keeps its count until it is read, so a ring that lands
//! before the waiter starts polling is not lost. A ring nobody consumes
//! (the waiter found data on its re-check) costs one spurious wake-up,
//! after which the waiter re-checks and registers again, as after any
//! wake-up. `tests/loom.rs` (`doorbell_*`) checks both properties: no lost
//! wake-up, and no ring when nobody registered.
//!
//! The doorbell is per process (a file descriptor), not in the segment: a
//! peer passes it along with the segment (over a UNIX socket, with
//! `SCM_RIGHTS`). A descriptor received from a peer is untrusted too:
//! [`Doorbell::from_fd`] refuses anything but an eventfd.

use std::io;
#[cfg(not(loom))]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// An eventfd that a parked waiter sleeps on and its peer rings. Clones
/// share one descriptor.
#[derive(Clone, Debug)]
pub struct Doorbell {
    #[cfg(not(loom))]
    fd: Arc<OwnedFd>,
    /// The eventfd, modelled: its counter, and a condition variable for a
    /// waiter blocked until it is non-zero.
    #[cfg(loom)]
    model: Arc<(loom::sync::Mutex<u64>, loom::sync::Condvar)>,
}

#[cfg(not(loom))]
impl Doorbell {
    /// A new eventfd (close-on-exec, non-blocking), not rung.
    ///
    /// # Errors
    /// The OS error of `eventfd(2)` (e.g. `EMFILE`).
    pub fn new() -> io::Result<Doorbell> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Doorbell { fd: Arc::new(OwnedFd::from(efd)) })
    }

    /// Take a descriptor received from a peer as a doorbell, after checking
    /// that it is an eventfd, and make it non-blocking.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if the descriptor is not an eventfd;
    /// the OS error if it cannot be inspected or configured.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Doorbell> {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        if link.as_os_str() != "anon_inode:[eventfd]" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a doorbell must be an eventfd, got {}", link.display()),
            ));
        }
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Doorbell { fd: Arc::new(fd) })
    }

    /// Ring: add one to the counter, waking whoever polls the descriptor.
    /// Never blocks; a counter at its maximum (only if nobody ever reads
    /// it) is already as rung as it gets, and other errors cannot happen on
    /// an eventfd we hold, so the result is ignored.
    pub fn ring(&self) {
        let _ = nix::unistd::write(&*self.fd, &1u64.to_ne_bytes());
    }

    /// Reset the counter; whether it had been rung since the last drain.
    /// Never blocks.
    pub fn drain(&self) -> bool {
        let mut b = [0u8; 8];
        matches!(nix::unistd::read(&*self.fd, &mut b), Ok(8))
    }

    /// Sleep until rung or `timeout` passes (`poll(2)`), without draining;
    /// for a waiter that is not driven by a reactor.
    pub fn wait(&self, timeout: std::time::Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        // EINTR and errors mean "re-check", which every caller does.
        let _ = poll(&mut fds, ms);
    }

    /// A duplicate of the descriptor, to send to the peer or to register
    /// with a reactor.
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
    /// A modelled eventfd, not rung.
    pub fn new() -> io::Result<Doorbell> {
        Ok(Doorbell { model: Arc::new((loom::sync::Mutex::new(0), loom::sync::Condvar::new())) })
    }

    /// Add one to the counter and wake a blocked waiter.
    pub fn ring(&self) {
        let (count, cv) = &*self.model;
        *count.lock().unwrap() += 1;
        cv.notify_all();
    }

    /// Reset the counter; whether it had been rung.
    pub fn drain(&self) -> bool {
        std::mem::take(&mut *self.model.0.lock().unwrap()) != 0
    }

    /// Block until rung (no timeout under loom: a lost ring is a deadlock).
    pub fn wait(&self, _timeout: std::time::Duration) {
        let (count, cv) = &*self.model;
        let mut n = count.lock().unwrap();
        while *n == 0 {
            n = cv.wait(n).unwrap();
        }
    }

    /// Times rung since the last drain (models only).
    pub fn rung(&self) -> u64 {
        *self.model.0.lock().unwrap()
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
    ec: std::ptr::NonNull<super::EventCount>,
    _keep: Arc<dyn std::any::Any + Send + Sync>,
}

impl Registration {
    /// Register on `ec`, which lives in memory kept alive by `keep`.
    pub(crate) fn new(ec: &super::EventCount, keep: Arc<dyn std::any::Any + Send + Sync>) -> Registration {
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

// SAFETY: the pointer targets an eventcount of atomics in memory owned by `_keep` (Send + Sync); the registration only calls `cancel_wait` on it.
unsafe impl Send for Registration {}
// SAFETY: as for Send; no method takes `&self`.
unsafe impl Sync for Registration {}
