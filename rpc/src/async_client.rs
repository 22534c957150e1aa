//! The tokio client: many calls in flight on one connection, answered in
//! any order, each with its own deadline, cancelled on the server when its
//! future is dropped.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shmring::wait::Registration;
use tokio::sync::oneshot;

use crate::addr::Addr;
use crate::async_link::{AsyncRx, AsyncTx, AsyncWait, GONE_TRIES, ShmRx, into_async};
use crate::client::{open_link, open_stream_link};
use crate::error::{Error, Result};
use crate::frame::{FLAG_REPLY, Frame, Kind};
use crate::handshake::Mode;
use crate::options::ClientOptions;
use crate::transport::{Link, TransportKind};

/// A tokio client: cheap to clone, and every clone shares one connection;
/// [`AsyncClient::call`] may be awaited from any number of tasks at once.
///
/// On shared memory a task waiting for a reply polls the ring for a few
/// microseconds ([`ClientOptions::async_spin`]), yielding to the runtime
/// between polls, then sleeps on a doorbell the server rings: no tokio
/// worker ever blocks on a futex.
///
/// ```no_run
/// # async fn demo() -> shmring_rpc::Result<()> {
/// use shmring_rpc::{Addr, AsyncClient, ClientOptions};
/// let c = AsyncClient::connect(&Addr::parse("unix:/tmp/echo.sock")?, &ClientOptions::new()).await?;
/// // Two calls in flight at once on one connection.
/// let (a, b) = tokio::join!(c.call(b"one"), c.call(b"two"));
/// println!("{:?} {:?} over {}", a?, b?, c.transport().name());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AsyncClient {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

/// What the calls and the reader task share.
struct Shared {
    tx: AsyncTx,
    state: Mutex<State>,
    next_id: AtomicU64,
    timeout: Duration,
    kind: TransportKind,
    peer: String,
    /// The ring end (shared memory only): polled by the reader task, and by
    /// callers spinning for their reply.
    ring: Option<Mutex<Box<ShmRx>>>,
    /// How long a caller polls the ring for its reply before it leaves the
    /// waiting to the reader task.
    spin: Duration,
    /// Callers polling the ring right now. While there are any, the reader
    /// task stays off the ring's waiter list, so the server's replies ring
    /// nobody's doorbell.
    spinning: AtomicUsize,
    /// The reader task's registration as parked on the ring, while it
    /// sleeps: a caller that starts spinning drops it at once.
    parked: Mutex<Option<Registration>>,
    /// Wakes the reader task when the last spinning caller stops with
    /// calls still pending.
    kick: tokio::sync::Notify,
}

/// Calls waiting for their reply; once the connection failed, why.
#[derive(Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Result<Frame>>>,
    failed: Option<Error>,
}

/// The connection's tasks, stopped when the last clone of the client goes
/// (which closes the socket and the rings: the server sees the client
/// leave).
struct Tasks {
    reader: tokio::task::JoinHandle<()>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

impl AsyncClient {
    /// Connect to a server and agree on a transport (shared memory on a
    /// `unix:` address unless told otherwise, as [`crate::Client::connect`]).
    /// Must be called inside a tokio runtime with I/O and time enabled.
    ///
    /// # Errors
    /// As [`crate::Client::connect`]; [`Error::Io`] if not inside a tokio
    /// runtime.
    pub async fn connect(addr: &Addr, opts: &ClientOptions) -> Result<AsyncClient> {
        let (addr, o) = (addr.clone(), opts.clone());
        let link = blocking(move || open_link(&addr, &o, Mode::ASYNC)).await?;
        AsyncClient::start(link, opts)
    }

    /// Connect over an already connected UNIX socket (one end of a
    /// `socketpair`, say); `name` stands for the peer in error messages.
    ///
    /// # Errors
    /// As [`AsyncClient::connect`], but for reaching the address.
    pub async fn connect_stream(stream: UnixStream, name: &str, opts: &ClientOptions) -> Result<AsyncClient> {
        let (name, o) = (name.to_owned(), opts.clone());
        let link = blocking(move || open_stream_link(stream, &name, &o, Mode::ASYNC)).await?;
        AsyncClient::start(link, opts)
    }

    fn start(link: Link, opts: &ClientOptions) -> Result<AsyncClient> {
        let peer = link.peer().to_owned();
        let wait = AsyncWait { spin: opts.async_spin, check: opts.policy.interval() };
        let parts = into_async(link, wait)?;
        let (ring, stream_rx) = match parts.rx.into_shm() {
            Ok(ring) => (Some(Mutex::new(ring)), None),
            Err(rx) => (None, Some(rx)),
        };
        let shared = Arc::new(Shared {
            tx: parts.tx,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            timeout: opts.timeout,
            kind: parts.kind,
            peer,
            ring,
            spin: opts.async_spin,
            spinning: AtomicUsize::new(0),
            parked: Mutex::new(None),
            kick: tokio::sync::Notify::new(),
        });
        let reader = match stream_rx {
            None => tokio::spawn(read_ring(shared.clone())),
            rx => tokio::spawn(read_replies(rx, shared.clone())),
        };
        Ok(AsyncClient { shared, _tasks: Arc::new(Tasks { reader, watcher: parts.watcher }) })
    }

    /// The transport this connection uses.
    pub fn transport(&self) -> TransportKind {
        self.shared.kind
    }

    /// Call the server with `request`; its reply, within the default
    /// deadline ([`ClientOptions::timeout`], 10 s unless set).
    ///
    /// Dropping the future before the reply cancels the call: a cancel
    /// frame goes to the server, which drops the handler's future (an
    /// async server) or skips its reply (a blocking one).
    ///
    /// # Errors
    /// [`Error::Remote`] if the handler failed; [`Error::Timeout`];
    /// [`Error::Closed`] or a ring error (`PeerDied`, ...) if the server went
    /// away, for every call pending then and after; [`Error::Protocol`] if it
    /// answered nonsense; [`Error::InvalidArgument`] for a request over the
    /// maximum frame size.
    pub async fn call(&self, request: &[u8]) -> Result<Vec<u8>> {
        self.call_timeout(request, self.shared.timeout).await
    }

    /// [`AsyncClient::call`] with its own deadline.
    ///
    /// # Errors
    /// As [`AsyncClient::call`].
    pub async fn call_timeout(&self, request: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let f = self.exchange(Kind::Request, request, timeout).await?;
        match f.kind {
            Kind::Response => Ok(f.payload),
            Kind::Error => Err(Error::Remote(String::from_utf8_lossy(&f.payload).into_owned())),
            other => {
                Err(Error::protocol(&self.shared.peer, format!("answered request {} with a {other:?} frame", f.id)))
            }
        }
    }

    /// Send a ping with `payload` and wait for its echo: the round trip.
    ///
    /// # Errors
    /// As [`AsyncClient::call`].
    pub async fn ping(&self, payload: &[u8]) -> Result<Duration> {
        let start = Instant::now();
        let f = self.exchange(Kind::Ping, payload, self.shared.timeout).await?;
        if f.kind != Kind::Ping || f.flags & FLAG_REPLY == 0 || f.payload != payload {
            return Err(Error::protocol(&self.shared.peer, "answered a ping with something else"));
        }
        Ok(start.elapsed())
    }

    /// Send a frame of `kind` and wait for the frame that answers it.
    async fn exchange(&self, kind: Kind, payload: &[u8], timeout: Duration) -> Result<Frame> {
        let sh = &self.shared;
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut st = lock(&sh.state);
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            st.pending.insert(id, reply_tx);
        }
        let mut guard = Pending { shared: sh.clone(), id, sent: false, answered: false };
        let exchange = async {
            if let Err(e) = sh.tx.send(id, kind, 0, payload).await {
                if sh.tx.is_broken() {
                    // Out of step with the server for good: every call fails.
                    fail(sh, e.clone());
                }
                return Err(e);
            }
            guard.sent = true;
            let mut reply_rx = reply_rx;
            if let Some(r) = spin_for_reply(sh, &mut reply_rx) {
                return r;
            }
            match reply_rx.await {
                Ok(r) => r,
                // The reader went away without answering (the client is
                // being dropped).
                Err(_) => Err(Error::Closed(sh.peer.clone())),
            }
        };
        let r = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(format!("{} (request {id})", sh.peer))),
        };
        // A timed-out call is cancelled like a dropped one (by the guard).
        guard.answered = !matches!(r, Err(Error::Timeout(_)));
        r
    }
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient").field("peer", &self.shared.peer).field("transport", &self.shared.kind).finish()
    }
}

/// A call in flight. Dropped before its reply (the caller's future was
/// dropped, or its deadline passed): forget it, and if its request went out,
/// tell the server to cancel it.
struct Pending {
    shared: Arc<Shared>,
    id: u64,
    /// The request went out whole.
    sent: bool,
    /// The call ended with its answer (or the connection's failure).
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        lock(&self.shared.state).pending.remove(&self.id);
        if self.answered || !self.sent {
            return;
        }
        let (shared, id) = (self.shared.clone(), self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // Best effort, and bounded: a server too busy to take a
                // cancel soon answers the call anyway, and the reply is
                // skipped.
                let cancel = shared.tx.send(id, Kind::Cancel, 0, &[]);
                let _ = tokio::time::timeout(Duration::from_millis(100), cancel).await;
            });
        }
    }
}

/// Hand a reply to its call.
///
/// # Errors
/// [`Error::Protocol`] for a reply to a request never made.
fn dispatch(sh: &Shared, f: Frame) -> Result<()> {
    let waiter = lock(&sh.state).pending.remove(&f.id);
    match waiter {
        Some(w) => {
            // The call may have been dropped since: nobody to tell.
            let _ = w.send(Ok(f));
            Ok(())
        }
        // A call given up (its reply skipped).
        None if f.id < sh.next_id.load(Ordering::Relaxed) => Ok(()),
        None => Err(Error::protocol(&sh.peer, format!("sent a reply to request {}, never made", f.id))),
    }
}

/// The connection ended with `failure`: fail every pending call, and every
/// later one.
fn fail(sh: &Shared, failure: Error) {
    tracing::debug!("{}: connection ended: {failure}", sh.peer);
    let pending = {
        let mut st = lock(&sh.state);
        if st.failed.is_some() {
            return;
        }
        st.failed = Some(failure.clone());
        std::mem::take(&mut st.pending)
    };
    for (_, w) in pending {
        let _ = w.send(Err(failure.clone()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A caller polls the ring itself for up to `spin`, right after sending:
/// a reply that comes back within that time reaches it with no task
/// switch and no wake-up. Frames for other calls it meets are handed on.
/// Blocks the worker for at most `spin` (a few microseconds). `None`: no
/// reply yet; the reader task takes over.
fn spin_for_reply(sh: &Shared, reply: &mut oneshot::Receiver<Result<Frame>>) -> Option<Result<Frame>> {
    let ring = sh.ring.as_ref()?;
    // With other calls in flight our reply comes after theirs: spinning
    // would only hold up the tasks that send the next ones. The reader task
    // polls the ring then, yielding between polls.
    if sh.spin.is_zero() || lock(&sh.state).pending.len() > 1 {
        return None;
    }
    // SeqCst, with the load in `read_ring` after it stores its
    // registration: either it sees us spinning and drops the registration,
    // or we see the registration here and drop it.
    sh.spinning.fetch_add(1, Ordering::SeqCst);
    drop(lock(&sh.parked).take());
    let until = Instant::now().checked_add(sh.spin);
    let mut round = 0u32;
    let outcome = loop {
        match reply.try_recv() {
            Ok(r) => break Some(r),
            Err(oneshot::error::TryRecvError::Closed) => break Some(Err(Error::Closed(sh.peer.clone()))),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        if let Ok(mut r) = ring.try_lock() {
            let got = r.try_frame();
            drop(r);
            match got {
                Ok(Some(Some(f))) => {
                    if let Err(e) = dispatch(sh, f) {
                        fail(sh, e);
                    }
                    continue;
                }
                Ok(Some(None)) => fail(sh, Error::Closed(sh.peer.clone())),
                Ok(None) => {}
                Err(e) => fail(sh, e),
            }
        }
        // The clock is read every 32 rounds only (on a VM a read costs a
        // good part of a round trip).
        round = round.wrapping_add(1);
        if round.is_multiple_of(32) && until.is_some_and(|u| Instant::now() >= u) {
            break None;
        }
        std::hint::spin_loop();
    };
    // The last spinner out wakes the reader: we may have taken its
    // registration, and calls may be waiting (ours, if we leave without it,
    // or others about to be made). A stale wake-up costs it one look.
    if sh.spinning.fetch_sub(1, Ordering::SeqCst) == 1 {
        sh.kick.notify_one();
    }
    outcome
}

/// The reader task of a socket: hand each reply to its call; when the
/// connection ends, fail every pending call (and every later one) with why.
async fn read_replies(rx: Option<AsyncRx>, shared: Arc<Shared>) {
    let Some(mut rx) = rx else { return };
    let failure = loop {
        match rx.recv().await {
            Ok(Some(f)) => {
                if let Err(e) = dispatch(&shared, f) {
                    break e;
                }
            }
            Ok(None) => break Error::Closed(shared.peer.clone()),
            Err(e) => break e,
        }
    };
    fail(&shared, failure);
}

/// What the reader task found on one look at the ring.
enum Look {
    /// This many frames, handed on; the ring is empty now.
    Took(usize),
    /// The connection is over.
    Ended(Error),
}

/// Take every whole frame in the ring and hand it on.
fn drain(sh: &Shared, ring: &Mutex<Box<ShmRx>>) -> Look {
    let mut took = 0;
    loop {
        let got = lock(ring).try_frame();
        match got {
            Ok(Some(Some(f))) => {
                if let Err(e) = dispatch(sh, f) {
                    return Look::Ended(e);
                }
                took += 1;
            }
            Ok(Some(None)) => return Look::Ended(Error::Closed(sh.peer.clone())),
            Ok(None) => return Look::Took(took),
            Err(e) => return Look::Ended(e),
        }
    }
}

/// The reader task of a shared-memory connection. It watches the ring while
/// no caller does: takes what is there, then parks on the doorbell
/// (registered as a waiter, so the server rings it), waking at every check
/// interval and when the server's socket closes. While callers spin on the
/// ring it stays off the waiter list and waits for the last of them.
async fn read_ring(sh: Arc<Shared>) {
    let Some(ring) = &sh.ring else { return };
    let (bell, wait) = {
        let r = lock(ring);
        (r.bell(), r.wait())
    };
    let mut spin_until = None;
    let failure = 'conn: loop {
        if lock(&sh.state).failed.is_some() {
            return;
        }
        match drain(&sh, ring) {
            Look::Ended(e) => break e,
            Look::Took(0) => {}
            Look::Took(_) => spin_until = None,
        }
        if sh.spinning.load(Ordering::SeqCst) > 0 {
            let _ = tokio::time::timeout(wait.check, sh.kick.notified()).await;
            continue;
        }
        // Calls in flight (several, or callers have stopped spinning): poll
        // a while, letting the other tasks run between polls, then park.
        let now = Instant::now();
        if now < *spin_until.get_or_insert(now.checked_add(wait.spin).unwrap_or(now)) {
            tokio::task::yield_now().await;
            continue;
        }
        spin_until = None;
        let mark = bell.mark();
        let closed = {
            let mut r = lock(ring);
            let reg = r.register();
            match r.try_frame() {
                Ok(Some(Some(f))) => {
                    drop(r);
                    drop(reg);
                    if let Err(e) = dispatch(&sh, f) {
                        break e;
                    }
                    continue;
                }
                Ok(Some(None)) => break Error::Closed(sh.peer.clone()),
                Ok(None) => {}
                Err(e) => break e,
            }
            *lock(&sh.parked) = Some(reg);
            r.socket_closed()
        };
        // SeqCst: see `spin_for_reply`.
        if sh.spinning.load(Ordering::SeqCst) > 0 {
            drop(lock(&sh.parked).take());
            continue;
        }
        if closed {
            drop(lock(&sh.parked).take());
            for _ in 0..GONE_TRIES {
                let step = lock(ring).gone_step();
                match step {
                    Ok(Some(Some(f))) => {
                        if let Err(e) = dispatch(&sh, f) {
                            break 'conn e;
                        }
                        continue 'conn;
                    }
                    Ok(Some(None)) => break 'conn Error::Closed(sh.peer.clone()),
                    Ok(None) => {}
                    Err(e) => break 'conn e,
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            break lock(ring).gone_for_good();
        }
        let rung = tokio::select! {
            rung = bell.sleep(mark, wait.check) => rung,
            _ = sh.kick.notified() => true,
        };
        drop(lock(&sh.parked).take());
        if !rung && let Err(e) = lock(ring).check_peer() {
            break e;
        }
    };
    fail(&sh, failure);
}

/// Run blocking connection set-up off the runtime's workers.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::io("connect", std::io::Error::other("not inside a tokio runtime")));
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("connect", std::io::Error::other(format!("the connecting thread failed: {e}"))))?
}
