//! The rings of an async connection, in `poll_*` form: what
//! [`crate::ShmStream`] and the tarpc transport share.
//!
//! A poll that finds the ring empty (or full) polls again for a while (a
//! window that widens while the connection is busy: `spin.rs`), yielding
//! to the runtime between polls, then registers on the ring's
//! eventcount and parks on our doorbell, which the peer rings only when it
//! finds us registered. The end of the handshake socket (the peer's death)
//! wakes every parked poll at once, and a liveness check of the ring runs
//! at every check interval while a poll waits.
//!
//! How a connection ends, as the caller sees it: the peer's close is the
//! end of the records (`Ok(None)` from [`RingIo::poll_recv`]); a peer that
//! died or aborted is an error (`ConnectionReset`, `ConnectionAborted`),
//! never an end: a cut stream must not look complete.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use shmring::spsc::{Consumer, Producer};
use shmring::wait::Registration;

use crate::async_link::AsyncWait;
use crate::doorbell::{AsyncBell, Direction, watch_socket};
use crate::error::{Error, Result};
use crate::spin::SpinWindow;
use crate::transport::Rings;

/// A ring error as an I/O error: a dead or aborting peer is never an end of
/// file.
pub(crate) fn ring_io(e: shmring::Error) -> io::Error {
    let kind = match &e {
        shmring::Error::PeerDied { .. } => io::ErrorKind::ConnectionReset,
        shmring::Error::PeerAborted { .. } | shmring::Error::Closed(_) => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

/// A ring call's outcome: `None` if it would block, else its result with
/// ring errors as I/O errors.
fn attempt<R>(r: shmring::Result<R>) -> Option<io::Result<R>> {
    match r {
        Err(shmring::Error::WouldBlock { .. }) => None,
        r => Some(r.map_err(ring_io)),
    }
}

/// `Pending`, with the task woken again once the runtime has run the other
/// ready tasks and polled its I/O driver (tokio's `yield_now`): a poller
/// that woke itself at once would keep a current-thread runtime from
/// polling its `block_on` future (the caller waiting for the very bytes we
/// poll for) until 61 other polls had run.
pub(crate) fn yield_to_runtime<T>(cx: &mut Context<'_>) -> Poll<T> {
    let yielded = std::pin::pin!(tokio::task::yield_now());
    // The first poll of `yield_now` always defers the waker and is Pending.
    let _ = yielded.poll(cx);
    Poll::Pending
}

/// The liveness timers of the two directions.
type Ticks = [Pin<Box<tokio::time::Sleep>>; 2];

/// Both rings of a connection, with our doorbell and the socket watcher.
pub(crate) struct RingIo {
    /// `None` once shut down.
    tx: Option<Producer>,
    rx: Consumer,
    bell: Arc<AsyncBell>,
    watcher: tokio::task::JoinHandle<()>,
    /// Each direction's registration on its ring, with the doorbell's mark
    /// taken before it (index: [`Direction`]).
    regs: [Option<(u64, Registration)>; 2],
    /// Liveness checks while a direction waits.
    ticks: Ticks,
    /// Longest park between liveness checks.
    check: Duration,
    /// How long each direction polls before it parks (index:
    /// [`Direction`]).
    spin: [SpinWindow; 2],
}

impl Drop for RingIo {
    fn drop(&mut self) {
        // The ring is closed first: a peer woken by the socket's end finds
        // the close, not a ring still open.
        drop(self.tx.take());
        // Closes the socket: the peer learns we are gone.
        self.watcher.abort();
    }
}

impl RingIo {
    /// Take over the rings of a connection (on the current runtime): poll
    /// for `wait.spin` before parking (more while the connection is busy:
    /// see [`SpinWindow`]), check the peer every `wait.check` while
    /// parked. On failure both rings are aborted, so that the peer sees an
    /// error rather than an empty stream.
    ///
    /// # Errors
    /// [`Error::Protocol`] for rings without our doorbell; [`Error::Io`] if
    /// the runtime lacks I/O or a timer.
    pub(crate) fn new(rings: Rings, peer: &str, wait: AsyncWait) -> Result<RingIo> {
        let AsyncWait { spin, check } = wait;
        let reactor = |e| Error::io(format!("registering {peer} with the tokio reactor"), e);
        let set_up = |bell: Option<shmring::wait::Doorbell>| -> Result<(Arc<AsyncBell>, Ticks)> {
            let bell = bell.ok_or_else(|| Error::protocol(peer, "shared memory without our doorbell"))?;
            let bell = Arc::new(AsyncBell::new(bell).map_err(reactor)?);
            let ticks =
                std::panic::catch_unwind(|| [Box::pin(tokio::time::sleep(check)), Box::pin(tokio::time::sleep(check))])
                    .map_err(|_| {
                        reactor(io::Error::other("the tokio runtime has no timer (build it with enable_time)"))
                    })?;
            Ok((bell, ticks))
        };
        let (bell, ticks) = match set_up(rings.bell) {
            Ok(parts) => parts,
            Err(e) => {
                rings.tx.abort("the connection could not be set up");
                rings.rx.abort("the connection could not be set up");
                return Err(e);
            }
        };
        let watcher = match watch_socket(rings.socket, bell.clone()) {
            Ok(w) => w,
            Err(e) => {
                rings.tx.abort("the connection could not be set up");
                rings.rx.abort("the connection could not be set up");
                return Err(reactor(e));
            }
        };
        Ok(RingIo {
            tx: Some(rings.tx),
            rx: rings.rx,
            bell,
            watcher,
            regs: [None, None],
            ticks,
            check,
            spin: [SpinWindow::new(spin), SpinWindow::new(spin)],
        })
    }

    /// Largest record our ring takes, in bytes.
    pub(crate) fn max_record_len(&self) -> usize {
        self.tx.as_ref().map_or(0, Producer::max_record_len)
    }

    /// Our producer, to write records without waiting.
    ///
    /// # Errors
    /// `BrokenPipe` once shut down, or once the peer's socket closed.
    pub(crate) fn producer(&mut self) -> io::Result<&mut Producer> {
        if self.bell.is_closed() {
            self.regs[Direction::Write as usize] = None;
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the peer's socket closed"));
        }
        self.tx.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the connection was shut down"))
    }

    /// The next record, handed to `take` where it lies in the ring (the peer
    /// can still write there: copy before you look twice), then released.
    /// `Ready(Ok(None))` once the peer closed its ring and every record
    /// before the close was taken.
    pub(crate) fn poll_recv<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&[u8]) -> R,
    ) -> Poll<io::Result<Option<R>>> {
        let mut looked_after_close = false;
        loop {
            let got = attempt(self.rx.try_recv().map(|rec| rec.map(|rec| take(&rec))));
            if let Some(r) = got {
                self.done(Direction::Read);
                return Poll::Ready(r);
            }
            ready!(self.idle(cx, Direction::Read, &mut looked_after_close))?;
        }
    }

    /// Room for a record of `len` bytes (at most [`RingIo::max_record_len`]):
    /// `fill` writes it where it lies in the ring, and it is published.
    pub(crate) fn poll_put<R>(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        mut fill: impl FnMut(&mut [u8]) -> R,
    ) -> Poll<io::Result<R>> {
        let mut unused = false;
        loop {
            let put = attempt(self.producer()?.try_grant(len).map(|mut g| {
                let r = fill(&mut g);
                g.commit();
                r
            }));
            if let Some(r) = put {
                self.done(Direction::Write);
                return Poll::Ready(r);
            }
            ready!(self.idle(cx, Direction::Write, &mut unused))?;
        }
    }

    /// Close our ring: the peer reads the end after every record before.
    ///
    /// # Errors
    /// The ring's, as an I/O error.
    pub(crate) fn shutdown(&mut self) -> io::Result<()> {
        self.regs[Direction::Write as usize] = None;
        match self.tx.take() {
            Some(tx) => tx.close().map_err(ring_io),
            None => Ok(()),
        }
    }

    /// A direction got what it polled for: the next wait starts afresh,
    /// with a window adapted to how long this one took.
    fn done(&mut self, dir: Direction) {
        let i = dir as usize;
        self.regs[i] = None;
        if self.spin[i].waiting() {
            self.spin[i].finish(Instant::now());
        }
    }

    /// A poll of `dir` found nothing: poll again after a yield while the
    /// spin lasts, then register, look once more, and park.
    /// `Ready(Ok(()))`: look at the ring again; `Pending`: the waker is
    /// registered.
    fn idle(&mut self, cx: &mut Context<'_>, dir: Direction, looked_after_close: &mut bool) -> Poll<io::Result<()>> {
        let i = dir as usize;
        let Some((mark, _)) = &self.regs[i] else {
            if self.spin[i].keep_polling(Instant::now()) {
                return yield_to_runtime(cx);
            }
            // Register, then look again before sleeping.
            let mark = self.bell.mark();
            let reg = match dir {
                Direction::Read => self.rx.register_waiter(),
                Direction::Write => self.producer()?.register_waiter(),
            };
            self.regs[i] = Some((mark, reg));
            return Poll::Ready(Ok(()));
        };
        let mark = *mark;
        if self.bell.is_closed() {
            self.regs[i] = None;
            if dir == Direction::Write {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the peer's socket closed")));
            }
            // Look at the ring once more: a peer that wrote its last records
            // and closed just now left them there, and its close after them.
            if !*looked_after_close {
                *looked_after_close = true;
                return Poll::Ready(Ok(()));
            }
            // Empty and open: the ring's liveness check says how the peer
            // went.
            return Poll::Ready(Err(match self.rx.peer_arrived() {
                Err(e) => ring_io(e),
                Ok(_) => io::Error::new(io::ErrorKind::ConnectionAborted, "the peer's socket closed, its ring did not"),
            }));
        }
        if self.bell.poll_wait(cx, mark, dir).is_ready() {
            self.regs[i] = None;
            return Poll::Ready(Ok(()));
        }
        let tick = &mut self.ticks[i];
        if tick.as_mut().poll(cx).is_ready() {
            tick.as_mut().reset(tokio::time::Instant::now() + self.check);
            self.regs[i] = None;
            let alive = match dir {
                Direction::Read => self.rx.peer_arrived(),
                Direction::Write => match &mut self.tx {
                    Some(tx) => tx.peer_arrived(),
                    None => Ok(true),
                },
            };
            return Poll::Ready(alive.map(drop).map_err(ring_io));
        }
        Poll::Pending
    }
}
