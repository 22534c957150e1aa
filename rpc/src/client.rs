//! The blocking client: connect (the client's side of the handshake), call,
//! ping.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use shmring::Segment;
use shmring::spsc::{Consumer, Producer};
use shmring::wait::Doorbell;

use crate::addr::Addr;
use crate::error::{Error, Result};
use crate::frame::{self, FLAG_REPLY, Frame, Kind};
use crate::handshake::{self, HANDSHAKE_TIMEOUT, Hello, Mode, Status, VERSION, WAKE_DOORBELL, Welcome, set_timeouts};
use crate::options::{ClientOptions, TRANSPORT_ENV};
use crate::socket::Stream;
use crate::transport::{Link, Rings, TransportKind};

/// A blocking client: one call at a time on one connection, or many
/// pipelined with [`Client::call_all`].
///
/// ```no_run
/// # fn main() -> shmring_rpc::Result<()> {
/// use shmring_rpc::{Addr, Client, ClientOptions};
/// let mut c = Client::connect(&Addr::parse("unix:/tmp/echo.sock")?, &ClientOptions::new())?;
/// let reply = c.call(b"hello")?;
/// println!("{} bytes back over {}", reply.len(), c.transport().name());
/// # Ok(()) }
/// ```
pub struct Client {
    link: Link,
    next_id: u64,
    timeout: Duration,
    /// Ids of calls that timed out: their late replies are skipped.
    abandoned: Abandoned,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.link.peer())
            .field("transport", &self.link.kind())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connect to a server and agree on a transport.
    ///
    /// # Errors
    /// [`Error::Io`] if the address cannot be reached; [`Error::PermissionDenied`],
    /// [`Error::Version`], [`Error::Protocol`] or [`Error::Timeout`] from the
    /// handshake; [`Error::InvalidArgument`] for a transport the address
    /// cannot carry (or a bad `SHMRING_RPC_TRANSPORT`).
    pub fn connect(addr: &Addr, opts: &ClientOptions) -> Result<Client> {
        let link = open_link(addr, opts, Mode::BLOCKING)?;
        Ok(Client { link, next_id: 1, timeout: opts.timeout, abandoned: Abandoned::default() })
    }

    /// Connect over an already connected UNIX socket (one end of a
    /// `socketpair`, say); `name` stands for the peer in error messages.
    ///
    /// # Errors
    /// As [`Client::connect`], but for reaching the address.
    pub fn connect_stream(stream: UnixStream, name: &str, opts: &ClientOptions) -> Result<Client> {
        let link = open_stream_link(stream, name, opts, Mode::BLOCKING)?;
        Ok(Client { link, next_id: 1, timeout: opts.timeout, abandoned: Abandoned::default() })
    }

    /// The transport this connection uses.
    pub fn transport(&self) -> TransportKind {
        self.link.kind()
    }

    /// Call the server with `request`, waiting for its reply at most the
    /// default timeout.
    ///
    /// # Errors
    /// [`Error::Remote`] if the handler failed; [`Error::Timeout`];
    /// [`Error::Closed`] or a ring error (`PeerDied`, ...) if the server went
    /// away; [`Error::Protocol`] if it answered nonsense.
    pub fn call(&mut self, request: &[u8]) -> Result<Vec<u8>> {
        self.call_timeout(request, self.timeout)
    }

    /// [`Client::call`] with its own deadline. A call that times out is
    /// cancelled on the server (a cancel frame), and its late reply, if any,
    /// is skipped.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn call_timeout(&mut self, request: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let id = self.next_id;
        self.next_id += 1;
        // No deadline for a timeout too long to add to the clock.
        let deadline = Instant::now().checked_add(timeout);
        self.link.send(id, Kind::Request, 0, request, deadline)?;
        match self.wait_for(id, deadline) {
            Err(e @ Error::Timeout(_)) => Err(self.abandon(id, e)),
            Ok(f) if f.kind == Kind::Response => Ok(f.payload),
            Ok(f) if f.kind == Kind::Error => Err(Error::Remote(String::from_utf8_lossy(&f.payload).into_owned())),
            Ok(f) => Err(Error::protocol(self.link.peer(), format!("answered request {id} with a {:?} frame", f.kind))),
            Err(e) => Err(e),
        }
    }

    /// Pipelining: send the requests one after another without waiting for
    /// each reply, keeping up to `window` calls in flight (at least one), and
    /// return the replies in the order of the requests. On shared memory a
    /// window of a few dozen small calls lets the client and the server work
    /// at once instead of in turn. Each reply must come within the default
    /// timeout of the one before.
    ///
    /// ```no_run
    /// # fn main() -> shmring_rpc::Result<()> {
    /// use shmring_rpc::{Addr, Client, ClientOptions};
    /// let mut c = Client::connect(&Addr::parse("unix:/tmp/echo.sock")?, &ClientOptions::new())?;
    /// let replies = c.call_all([&b"a"[..], b"b", b"c"], 64)?;
    /// assert_eq!(replies.len(), 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The first call that fails, as [`Client::call`]; the replies of the
    /// others still in flight are then skipped when they come.
    pub fn call_all<R: AsRef<[u8]>>(
        &mut self,
        requests: impl IntoIterator<Item = R>,
        window: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let window = window.max(1);
        let first = self.next_id;
        let mut replies: Vec<Option<Vec<u8>>> = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        let mut requests = requests.into_iter().peekable();
        let (mut sent, mut got) = (0usize, 0usize);
        // Bytes of requests in flight stay under what the way to the server
        // holds (a quarter of its ring, or 64 KiB of socket buffer), so that a
        // send never waits while the server waits for us to take its replies:
        // a larger request goes out only with nothing in flight.
        let cap = self.link.in_flight_cap();
        let mut in_flight = 0usize;
        // Requests sent back to back are published in batches; each batch
        // goes out before the client waits for a reply.
        self.link.set_batch(REQUEST_BATCH);
        let r = 'calls: loop {
            let deadline = Instant::now().checked_add(self.timeout);
            while sent - got < window {
                let Some(len) = requests.peek().map(|r| r.as_ref().len() + frame::HEADER_LEN) else { break };
                if sent > got && in_flight + len > cap {
                    break;
                }
                let Some(req) = requests.next() else { break };
                if let Err(e) = self.link.send(first + sent as u64, Kind::Request, 0, req.as_ref(), deadline) {
                    break 'calls Err(e);
                }
                self.next_id += 1;
                replies.push(None);
                sizes.push(len);
                in_flight += len;
                sent += 1;
            }
            self.link.flush();
            if got == sent {
                break Ok(());
            }
            // One reply, waiting for it; then those already there.
            let mut next = match self.link.recv(deadline) {
                Ok(f) => f,
                Err(e) => break Err(e),
            };
            loop {
                let Some(f) = next else { break 'calls Err(Error::Closed(self.link.peer().to_owned())) };
                let index = f.id.wrapping_sub(first) as usize;
                match self.file_reply(f, first, &mut replies) {
                    Ok(true) => {
                        got += 1;
                        in_flight -= sizes[index];
                    }
                    Ok(false) => {}
                    Err(e) => break 'calls Err(e),
                }
                if got == sent {
                    break;
                }
                next = match self.link.try_recv(deadline) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => break 'calls Err(e),
                };
            }
        };
        self.link.flush();
        self.link.set_batch(0);
        if let Err(e) = r {
            // Calls still in flight: their replies, when they come, are skipped.
            for (i, reply) in replies.iter().enumerate() {
                if reply.is_none() {
                    self.abandoned.insert(first + i as u64);
                }
            }
            return Err(e);
        }
        Ok(replies.into_iter().flatten().collect())
    }

    /// Put a reply of [`Client::call_all`] in its place among `replies`
    /// (request ids from `first`): `Ok(true)` if it answered one of them,
    /// `Ok(false)` for the late reply of an abandoned call.
    fn file_reply(&mut self, f: Frame, first: u64, replies: &mut [Option<Vec<u8>>]) -> Result<bool> {
        let slot = f.id.checked_sub(first).and_then(|i| replies.get_mut(i as usize));
        match (slot, f.kind) {
            (Some(slot @ None), Kind::Response) => {
                *slot = Some(f.payload);
                Ok(true)
            }
            (Some(None), Kind::Error) => Err(Error::Remote(String::from_utf8_lossy(&f.payload).into_owned())),
            (None, _) if self.abandoned.remove(&f.id) => Ok(false),
            _ => Err(Error::protocol(
                self.link.peer(),
                format!("answered request {} with a {:?} frame it did not expect", f.id, f.kind),
            )),
        }
    }

    /// Send a ping with `payload` and wait for its echo: the round trip.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn ping(&mut self, payload: &[u8]) -> Result<Duration> {
        let id = self.next_id;
        self.next_id += 1;
        let start = Instant::now();
        let deadline = start.checked_add(self.timeout);
        self.link.send(id, Kind::Ping, 0, payload, deadline)?;
        let f = match self.wait_for(id, deadline) {
            Err(e @ Error::Timeout(_)) => return Err(self.abandon(id, e)),
            r => r?,
        };
        if f.kind != Kind::Ping || f.flags & FLAG_REPLY == 0 || f.payload != payload {
            return Err(Error::protocol(self.link.peer(), "answered a ping with something else"));
        }
        Ok(start.elapsed())
    }

    /// Give up on request `id` (its deadline passed): cancel it on the
    /// server, and skip its late reply; returns `e`.
    fn abandon(&mut self, id: u64, e: Error) -> Error {
        self.abandoned.insert(id);
        let _ = self.link.send(id, Kind::Cancel, 0, &[], Some(Instant::now() + Duration::from_millis(100)));
        e
    }

    /// The next frame for `id`, skipping late replies to abandoned calls.
    fn wait_for(&mut self, id: u64, deadline: Option<Instant>) -> Result<Frame> {
        loop {
            let Some(f) = self.link.recv(deadline)? else {
                return Err(Error::Closed(self.link.peer().to_owned()));
            };
            if f.id == id {
                return Ok(f);
            }
            if !self.abandoned.remove(&f.id) {
                return Err(Error::protocol(self.link.peer(), format!("sent a reply to request {}, never made", f.id)));
            }
        }
    }
}

/// Ids of calls given up (timed out, or in flight when a pipeline failed):
/// their late replies are skipped. A server that never answers them (an
/// async server drops a cancelled call) would let the set grow for ever, so
/// it keeps the most recent [`ABANDONED_MAX`] only; a reply to an older one
/// is then a protocol error.
#[derive(Default)]
struct Abandoned(BTreeSet<u64>);

/// Most abandoned ids remembered.
const ABANDONED_MAX: usize = 4096;

impl Abandoned {
    fn insert(&mut self, id: u64) {
        self.0.insert(id);
        if self.0.len() > ABANDONED_MAX {
            self.0.pop_first();
        }
    }

    fn remove(&mut self, id: &u64) -> bool {
        self.0.remove(id)
    }
}

/// Requests [`Client::call_all`] stages before it publishes them.
const REQUEST_BATCH: u32 = 16;

/// Connect to `addr` and agree on a transport; `wait` says how this client
/// waits for the server ([`WAKE_FUTEX`] or [`WAKE_DOORBELL`]).
pub(crate) fn open_link(addr: &Addr, opts: &ClientOptions, mode: Mode) -> Result<Link> {
    let wanted =
        match opts.transport {
            Some(t) => Some(t),
            None => match std::env::var(TRANSPORT_ENV) {
                Ok(v) => Some(TransportKind::from_name(&v).ok_or_else(|| {
                    Error::InvalidArgument(format!("{TRANSPORT_ENV}={v:?}: expected unix, shm or tcp"))
                })?),
                Err(_) => None,
            },
        };
    let peer = addr.to_string();
    let link = match addr {
        Addr::Unix(path) => {
            let offer = match wanted {
                None => TransportKind::Shm.bit() | TransportKind::Unix.bit(),
                Some(t @ (TransportKind::Shm | TransportKind::Unix)) => t.bit(),
                Some(TransportKind::Tcp) => {
                    return Err(Error::InvalidArgument(format!("{peer}: a unix: address cannot carry tcp")));
                }
            };
            let s = UnixStream::connect(path).map_err(|e| Error::io(format!("connect {peer}"), e))?;
            connect_unix(s, offer, opts, mode, peer)?
        }
        Addr::Tcp(hostport) => {
            if wanted.is_some_and(|t| t != TransportKind::Tcp) {
                return Err(Error::InvalidArgument(format!("{peer}: a tcp: address carries tcp only")));
            }
            let s = TcpStream::connect(hostport).map_err(|e| Error::io(format!("connect {peer}"), e))?;
            let _ = s.set_nodelay(true);
            connect_tcp(s, opts, mode, peer)?
        }
    };
    Ok(link)
}

/// Connect over an already connected UNIX socket, waiting as `wait` says.
pub(crate) fn open_stream_link(stream: UnixStream, name: &str, opts: &ClientOptions, mode: Mode) -> Result<Link> {
    let offer = match opts.transport {
        None => TransportKind::Shm.bit() | TransportKind::Unix.bit(),
        Some(t @ (TransportKind::Shm | TransportKind::Unix)) => t.bit(),
        Some(TransportKind::Tcp) => {
            return Err(Error::InvalidArgument(format!("{name}: a UNIX socket cannot carry tcp")));
        }
    };
    connect_unix(stream, offer, opts, mode, name.to_owned())
}

/// Connect over a UNIX socket: shared memory if both sides can, else frames
/// over the socket. `mode` says how this client waits (a blocking thread,
/// or an async task on a doorbell) and what the connection carries.
fn connect_unix(mut s: UnixStream, offer: u16, opts: &ClientOptions, mode: Mode, peer: String) -> Result<Link> {
    let wait = mode.wait;
    set_timeouts(&s, Some(HANDSHAKE_TIMEOUT)).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
    let hello =
        Hello { version: VERSION, transports: offer, wakeups: wait, service: mode.service, max_frame: opts.max_frame };
    s.write_all(&hello.encode()).map_err(|e| Error::io(format!("sending the hello to {peer}"), e))?;
    let (bytes, fds) = handshake::recv_with_fds(&mut s, handshake::MAX_FDS, &peer)?;
    let w = welcome(&mut s, &bytes, &peer)?;
    if w.fds as usize != fds.len() {
        return Err(Error::protocol(&peer, format!("announced {} file descriptors and sent {}", w.fds, fds.len())));
    }
    if w.transport & offer == 0 {
        return Err(Error::protocol(
            &peer,
            format!("chose transport {:#x}, not one offered ({offer:#x})", w.transport),
        ));
    }
    let max_frame = u64::from(w.max_frame.min(opts.max_frame));
    if TransportKind::from_bit(w.transport) == Some(TransportKind::Shm) {
        match attach_rings(fds, &peer, opts, wait, w.wakeup) {
            Ok((tx, rx, bell)) => {
                s.write_all(&handshake::ready(true)).map_err(|e| Error::io(format!("sending ready to {peer}"), e))?;
                set_timeouts(&s, None).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
                return Ok(Link::shm(
                    Rings { tx, rx, socket: s, bell, poll: Rings::polls_for(&opts.policy) },
                    peer,
                    max_frame,
                ));
            }
            Err(e) if offer & TransportKind::Unix.bit() != 0 => {
                tracing::warn!("{peer}: shared memory failed ({e}); falling back to frames over the socket");
            }
            Err(e) => return Err(e),
        }
    }
    s.write_all(&handshake::ready(false)).map_err(|e| Error::io(format!("sending ready to {peer}"), e))?;
    set_timeouts(&s, None).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
    Ok(Link::stream(Stream::Unix(s), peer, max_frame))
}

fn connect_tcp(mut s: TcpStream, opts: &ClientOptions, mode: Mode, peer: String) -> Result<Link> {
    let cfg = |s: &TcpStream, t| s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t));
    cfg(&s, Some(HANDSHAKE_TIMEOUT)).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
    let hello = Hello {
        version: VERSION,
        transports: TransportKind::Tcp.bit(),
        wakeups: mode.wait,
        service: mode.service,
        max_frame: opts.max_frame,
    };
    s.write_all(&hello.encode()).map_err(|e| Error::io(format!("sending the hello to {peer}"), e))?;
    let mut bytes = [0u8; 32];
    s.read_exact(&mut bytes).map_err(|e| Error::io(format!("reading the welcome from {peer}"), e))?;
    let w = welcome(&mut s, &bytes, &peer)?;
    s.write_all(&handshake::ready(false)).map_err(|e| Error::io(format!("sending ready to {peer}"), e))?;
    cfg(&s, None).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
    Ok(Link::stream(Stream::Tcp(s), peer, u64::from(w.max_frame.min(opts.max_frame))))
}

/// Decode a welcome and turn a refusal into its error (reading the
/// refusal's message from `s`).
fn welcome(s: &mut impl Read, bytes: &[u8; 32], peer: &str) -> Result<Welcome> {
    let w = Welcome::decode(bytes).map_err(|what| Error::protocol(peer, what))?;
    let mut message = vec![0u8; w.message_len as usize];
    s.read_exact(&mut message).map_err(|e| Error::io(format!("reading the welcome from {peer}"), e))?;
    let message = String::from_utf8_lossy(&message).into_owned();
    match w.status {
        Status::Ok if w.version == VERSION => Ok(w),
        Status::Ok | Status::Version => Err(Error::Version { peer: peer.to_owned(), theirs: w.version, ours: VERSION }),
        Status::Denied => Err(Error::PermissionDenied(peer.to_owned())),
        Status::NoTransport => Err(Error::protocol(peer, format!("no transport in common: {message}"))),
    }
}

/// Check, map and attach the two rings the server sent: ours to produce on
/// (client to server), then ours to consume from; then our doorbell if we
/// wait on one (`ours`), then the server's if it does (`theirs`), which our
/// ends ring.
fn attach_rings(
    fds: Vec<std::os::fd::OwnedFd>,
    peer: &str,
    opts: &ClientOptions,
    ours: u16,
    theirs: u16,
) -> Result<(Producer, Consumer, Option<Doorbell>)> {
    let want = 2 + usize::from(ours == WAKE_DOORBELL) + usize::from(theirs == WAKE_DOORBELL);
    if fds.len() != want {
        return Err(Error::protocol(
            peer,
            format!("sent {} file descriptors for shared memory, expected {want}", fds.len()),
        ));
    }
    let mut fds = fds.into_iter();
    let (Some(c2s), Some(s2c)) = (fds.next(), fds.next()) else {
        return Err(Error::protocol(peer, "announced shared memory without its two rings"));
    };
    let bell = |fd: Option<std::os::fd::OwnedFd>| -> Result<Doorbell> {
        let fd = fd.ok_or_else(|| Error::protocol(peer, "a doorbell is missing"))?;
        Doorbell::from_fd(fd).map_err(|e| Error::protocol(peer, format!("sent a bad doorbell: {e}")))
    };
    let own = if ours == WAKE_DOORBELL { Some(bell(fds.next())?) } else { None };
    let server = if theirs == WAKE_DOORBELL { Some(bell(fds.next())?) } else { None };
    handshake::check_seals(&c2s, peer)?;
    handshake::check_seals(&s2c, peer)?;
    let mut tx = Producer::attach(Segment::from_fd(c2s, "rpc-c2s")?)?;
    let mut rx = Consumer::attach(Segment::from_fd(s2c, "rpc-s2c")?)?;
    tx.set_wait_policy(opts.policy);
    rx.set_wait_policy(opts.policy);
    tx.set_doorbell(server.clone());
    rx.set_doorbell(server);
    Ok((tx, rx, own))
}
