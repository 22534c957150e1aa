//! Waking an async peer: the doorbell under tokio, and the socket whose end
//! of file says the peer is gone.
//!
//! A task never sleeps in the rings' own wait (a futex: it would block the
//! tokio worker). It sleeps on its doorbell (`shmring::wait::Doorbell`: its
//! end of a datagram socket pair; the peer's ring ends send through the
//! other end), registered with the reactor through
//! [`tokio::io::unix::AsyncFd`]:
//!
//! ```text
//! task about to sleep                         peer (thread or task)
//! reg = rx.register_waiter()  // "parked": waiters += 1, fence(SeqCst)
//! re-check rx.try_recv()      // data? drop(reg), take it
//! await our end readable      ◄────────────── publish; notify: fence(SeqCst),
//!   (or the check interval)                   waiters > 0 → ring the doorbell
//! drain it, drop(reg), re-check
//! ```
//!
//! The publisher rings only when the flag is set, so a busy connection
//! makes no system call for wake-ups; a ring stays queued until read, so
//! none that lands before the task polls is lost (the core's loom models
//! `doorbell_*` check both). Before anything parks, the ring is polled for
//! a few microseconds ([`crate::ClientOptions::async_spin`], 5 µs by
//! default): a caller with the only call in flight polls it itself right
//! after sending (holding its worker that long at most), and a reply that
//! comes back within that time costs no task switch and no wake-up; with
//! several calls in flight the connection's task polls instead, yielding to
//! the runtime between polls so the callers keep sending. While a caller
//! polls, the connection's task takes itself off the waiter list, so the
//! server's replies ring nobody.
//!
//! Two tasks of one connection may sleep on the same doorbell (the reader
//! waiting for records, a sender waiting for room). A ring meant for one
//! can be drained by the other; so a sleeper notes the doorbell's drain
//! count before it registers on the ring, and does not sleep if a drain
//! happened since: it re-checks its condition instead.
//!
//! Why a socket pair rather than a futex waited on by a helper thread: the
//! socket goes straight into the reactor's epoll set, with no thread per
//! connection and no hand-off between threads. Rather than an eventfd: a
//! passed eventfd shares its flags with the peer, which could make our
//! rings block (see the core's `wait::doorbell` docs).
//!
//! Liveness: the UNIX socket of the handshake stays open beside the rings,
//! owned by a small task that waits for its end of file. When the peer's
//! process ends, for whatever reason, the kernel closes its end; the task
//! marks the connection gone and wakes every task sleeping on our doorbell
//! (a sleeper checks the mark after it arms that wake-up, so none misses
//! it). A peer that scribbles the waiter count to
//! zero can make us miss a ring; every sleep is bounded by the check
//! interval, so that costs latency, never a hang.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use shmring::wait::Doorbell;
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;

/// Our end of the doorbell, registered with the tokio reactor, and the
/// connection's end-of-socket mark.
pub(crate) struct AsyncBell {
    fd: AsyncFd<Doorbell>,
    /// Drains that took a ring: a sleeper that saw this move since it
    /// registered does not sleep (the ring it waits for may be among them).
    drains: AtomicU64,
    /// The peer's socket closed.
    closed: AtomicBool,
    /// Wakes every sleeper when the socket closes.
    local: tokio::sync::Notify,
    /// The tasks polling ([`AsyncBell::poll_wait`]), one per direction: the
    /// reactor keeps only the last poller's waker, so a poller that drains a
    /// ring wakes the other direction's too (the ring may have been for it),
    /// as does the socket's end.
    pollers: [futures_util::task::AtomicWaker; 2],
}

/// Which side of a stream polls: index into [`AsyncBell`]'s poller slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Waiting for records.
    Read = 0,
    /// Waiting for room.
    Write = 1,
}

impl AsyncBell {
    /// Register `bell` with the current runtime's reactor.
    ///
    /// # Errors
    /// Not inside a tokio runtime with I/O enabled; the reactor's error
    /// (`epoll_ctl`).
    pub(crate) fn new(bell: Doorbell) -> io::Result<AsyncBell> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("not inside a tokio runtime"));
        }
        // Registering panics on a runtime built without I/O: an error here.
        let registered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: the doorbell owns its descriptor (shared by its clones, closed with the last), so it stays
            // open and the same for as long as the `AsyncFd` holds the doorbell; a runtime is current (checked
            // above).
            unsafe { AsyncFd::register_with_interest(bell, tokio::io::Interest::READABLE) }
        }))
        .map_err(|_| io::Error::other("the tokio runtime has no I/O driver (build it with enable_io)"))?;
        Ok(AsyncBell {
            fd: registered?,
            drains: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            local: Default::default(),
            pollers: Default::default(),
        })
    }

    /// The drain count, to pass to [`AsyncBell::sleep`]: read it *before*
    /// registering on the ring.
    pub(crate) fn mark(&self) -> u64 {
        // SeqCst: ordered before the registration that follows (itself
        // followed by a SeqCst fence); pairs with the increment in `sleep`.
        self.drains.load(Ordering::SeqCst)
    }

    /// Sleep until the doorbell rings, `max` passes, or the socket closes;
    /// return at once if a drain happened since `mark` (the ring we wait for
    /// may have been taken by another sleeper) or the socket closed. `false`
    /// if `max` passed (time for a liveness check). The caller re-checks its
    /// condition in every case, and registers again before sleeping again.
    pub(crate) async fn sleep(&self, mark: u64, max: Duration) -> bool {
        let closing = self.local.notified();
        tokio::pin!(closing);
        // Armed before the checks below: a close after them still wakes us.
        closing.as_mut().enable();
        if self.drains.load(Ordering::SeqCst) != mark || self.is_closed() {
            return true;
        }
        tokio::time::timeout(max, async {
            tokio::select! {
                ready = self.fd.readable() => match ready {
                    Ok(mut guard) => {
                        let drained = guard.try_io(|fd| {
                            if fd.get_ref().drain() { Ok(()) } else { Err(io::ErrorKind::WouldBlock.into()) }
                        });
                        if let Ok(Ok(())) = drained {
                            // SeqCst: pairs with the load in `mark`.
                            self.drains.fetch_add(1, Ordering::SeqCst);
                            // Cleared only if no ring came after the one
                            // drained (the guard checks).
                            guard.clear_ready();
                        }
                    }
                    // The reactor is going away: wait out `max`.
                    Err(_) => std::future::pending::<()>().await,
                },
                () = &mut closing => {}
            }
        })
        .await
        .is_ok()
    }

    /// [`AsyncBell::sleep`] for `poll_*` methods of one `dir`ection:
    /// `Ready` once the doorbell rang (drained here), a drain happened since
    /// `mark`, or the socket closed; else `Pending`, with `cx` woken by any
    /// of those.
    pub(crate) fn poll_wait(&self, cx: &mut std::task::Context<'_>, mark: u64, dir: Direction) -> std::task::Poll<()> {
        use std::task::Poll;
        self.pollers[dir as usize].register(cx.waker());
        if self.drains.load(Ordering::SeqCst) != mark || self.is_closed() {
            return Poll::Ready(());
        }
        match self.fd.poll_read_ready(cx) {
            Poll::Ready(Ok(mut guard)) => {
                let drained = guard
                    .try_io(|fd| if fd.get_ref().drain() { Ok(()) } else { Err(io::ErrorKind::WouldBlock.into()) });
                if let Ok(Ok(())) = drained {
                    // SeqCst: as in `sleep`.
                    self.drains.fetch_add(1, Ordering::SeqCst);
                    guard.clear_ready();
                    // The ring may have been for the other direction.
                    self.wake_pollers();
                }
                Poll::Ready(())
            }
            // The reactor is going away: the caller's liveness tick decides.
            Poll::Ready(Err(_)) | Poll::Pending => Poll::Pending,
        }
    }

    fn wake_pollers(&self) {
        for p in &self.pollers {
            p.wake();
        }
    }

    /// Whether the peer's socket closed.
    pub(crate) fn is_closed(&self) -> bool {
        // Acquire: pairs with the Release store in `close`.
        self.closed.load(Ordering::Acquire)
    }

    /// Mark the socket closed and wake every sleeper.
    fn close(&self) {
        // Release: pairs with the Acquire load in `is_closed`.
        self.closed.store(true, Ordering::Release);
        self.local.notify_waiters();
        self.wake_pollers();
    }
}

/// Hold `socket` open for the life of the connection, on a task that waits
/// for its end of file (or any byte, which the protocol does not allow once
/// frames go through the rings): then mark the connection closed on `bell`
/// and wake its sleepers. Aborting the task closes the socket, which tells
/// the peer we are gone.
///
/// # Errors
/// The reactor's error registering the socket.
pub(crate) fn watch_socket(socket: UnixStream, bell: Arc<AsyncBell>) -> io::Result<tokio::task::JoinHandle<()>> {
    socket.set_nonblocking(true)?;
    let mut socket = tokio::net::UnixStream::from_std(socket)?;
    Ok(tokio::spawn(async move {
        let mut byte = [0u8; 1];
        let _ = socket.read(&mut byte).await;
        bell.close();
        // Keep the socket open until the task is aborted (when the
        // connection is dropped).
        std::future::pending::<()>().await;
    }))
}
