//! Waking an async peer: the doorbell under tokio, and the socket whose end
//! of file says the peer is gone.
//!
//! A task never sleeps in the rings' own wait (a futex: it would block the
//! tokio worker). It sleeps on its doorbell, an eventfd the peer's ring ends
//! ring (`shmring::wait::Doorbell`), registered with the reactor through
//! [`tokio::io::unix::AsyncFd`]:
//!
//! ```text
//! task about to sleep                         peer (thread or task)
//! reg = rx.register_waiter()  // "parked": waiters += 1, fence(SeqCst)
//! re-check rx.try_recv()      // data? drop(reg), take it
//! await the eventfd readable  ◄────────────── publish; notify: fence(SeqCst),
//!   (or the check interval)                   waiters > 0 → ring the eventfd
//! drain it, drop(reg), re-check
//! ```
//!
//! The publisher rings only when the flag is set, so a busy connection
//! makes no system call for wake-ups; the eventfd keeps a ring that lands
//! before the task polls, so none is lost (the core's loom models
//! `doorbell_*` check both). Before anything parks, the ring is polled for
//! a few microseconds ([`crate::ClientOptions::async_spin`], 10 µs by
//! default): a caller with the only call in flight polls it itself right
//! after sending (holding its worker that long at most), and a reply that
//! comes back within that time costs no task switch and no wake-up; with
//! several calls in flight the connection's task polls instead, yielding to
//! the runtime between polls so the callers keep sending. While a caller
//! polls, the connection's task takes itself off the waiter list, so the
//! server's replies ring nobody.
//!
//! Why an eventfd and not a futex waited on by a helper thread: the
//! eventfd goes straight into the reactor's epoll set, with no thread per
//! connection and no hand-off between threads; and a peer that cannot
//! write our process's memory cannot make our reactor spin (the eventfd's
//! counter lives in the kernel, not in the shared segment).
//!
//! Liveness: the UNIX socket of the handshake stays open beside the rings,
//! owned by a small task that waits for its end of file. When the peer's
//! process ends, for whatever reason, the kernel closes its end; the task
//! marks the connection gone and rings our own doorbell, so every waiter
//! wakes at once and finds out. A peer that scribbles the waiter count to
//! zero can make us miss a ring; every sleep is bounded by the check
//! interval, so that costs latency, never a hang.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shmring::wait::Doorbell;
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;

/// Our doorbell, registered with the tokio reactor.
pub(crate) struct AsyncBell {
    fd: AsyncFd<Doorbell>,
}

impl AsyncBell {
    /// Register `bell` with the current runtime's reactor.
    ///
    /// # Errors
    /// Not inside a tokio runtime; the reactor's error (`epoll_ctl`).
    pub(crate) fn new(bell: Doorbell) -> io::Result<AsyncBell> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("not inside a tokio runtime"));
        }
        // SAFETY: the doorbell owns its descriptor (shared by its clones, closed with the last), so it stays open and the same for as long as the `AsyncFd` holds the doorbell; a runtime is current (checked above).
        let fd = unsafe { AsyncFd::register_with_interest(bell, tokio::io::Interest::READABLE) }?;
        Ok(AsyncBell { fd })
    }

    /// Sleep until the doorbell rings, `max` passes, or another waiter on
    /// the same doorbell took the ring; drain it. `false` if `max` passed
    /// (time for a liveness check). The caller re-checks its condition in
    /// every case (and registers again before sleeping again).
    pub(crate) async fn sleep(&self, max: Duration) -> bool {
        tokio::time::timeout(max, async {
            let Ok(mut guard) = self.fd.readable().await else { return };
            // On "nothing to drain" `try_io` clears the readiness, unless a
            // new ring arrived meanwhile: the next sleep waits for the next
            // ring, and none is lost.
            let _ =
                guard.try_io(|fd| if fd.get_ref().drain() { Ok(()) } else { Err(io::ErrorKind::WouldBlock.into()) });
        })
        .await
        .is_ok()
    }

    /// Ring our own doorbell: wake every task of this side that sleeps on
    /// it (to tell them the connection is gone).
    pub(crate) fn ring(&self) {
        self.fd.get_ref().ring();
    }
}

/// Whether the peer's end of the socket closed.
#[derive(Default)]
pub(crate) struct Gone(AtomicBool);

impl Gone {
    pub(crate) fn get(&self) -> bool {
        // Acquire: pairs with the Release store in `watch_socket`; nothing
        // else is published with it, but a waiter that sees it must not see
        // an older ring state than the watcher saw.
        self.0.load(Ordering::Acquire)
    }
}

/// Hold `socket` open for the life of the connection, on a task that waits
/// for its end of file (or any byte, which the protocol does not allow once
/// frames go through the rings): then mark the connection `gone` and ring
/// `bell`. Aborting the task closes the socket, which tells the peer we are
/// gone.
///
/// # Errors
/// The reactor's error registering the socket.
pub(crate) fn watch_socket(
    socket: UnixStream,
    bell: Arc<AsyncBell>,
    gone: Arc<Gone>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    socket.set_nonblocking(true)?;
    let mut socket = tokio::net::UnixStream::from_std(socket)?;
    Ok(tokio::spawn(async move {
        let mut byte = [0u8; 1];
        let _ = socket.read(&mut byte).await;
        // Release: pairs with the Acquire load in `Gone::get`.
        gone.0.store(true, Ordering::Release);
        bell.ring();
        // Keep the socket open until the task is aborted (when the
        // connection is dropped).
        std::future::pending::<()>().await;
    }))
}
