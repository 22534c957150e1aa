//! The native RPC: a blocking [`Client`] and a [`Server`] that serves many
//! clients at once, one thread each, with a handler `Fn(&[u8]) -> Vec<u8>`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmring::spsc::{self, Consumer, Producer};
use shmring::{RingOptions, Segment, WaitPolicy};

use crate::access::AccessPolicy;
use crate::addr::Addr;
use crate::error::{Error, Result};
use crate::frame::{FLAG_REPLY, Frame, Kind};
use crate::handshake::{self, HANDSHAKE_TIMEOUT, Hello, Status, VERSION, WAKE_FUTEX, Welcome};
use crate::transport::{Link, Stream, TransportKind};

/// Default largest frame payload: 64 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 64 << 20;
/// Default bytes of each ring of a shared-memory connection: 1 MiB.
pub const DEFAULT_RING_CAPACITY: u32 = 1 << 20;
/// Default deadline of a call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The environment variable that picks the transport: `unix`, `shm` or `tcp`.
pub const TRANSPORT_ENV: &str = "SHMRING_RPC_TRANSPORT";

/// The wait policy of both ends of the rings by default: spin 128 rounds
/// (about a microsecond), yield 8 times, then park, checking the peer every
/// 50 ms, so a dead peer fails the calls waiting on it within about that
/// long. The ring's default spins 1024 rounds; with more threads than cores
/// that costs more than it saves: 8 client processes of `rpc_multi` on 2
/// cores made 38 to 90 thousand calls/s with it and 192 thousand with 128
/// rounds, while one client kept its 600 thousand.
fn default_policy() -> WaitPolicy {
    WaitPolicy::default().spin(128).check_interval(Duration::from_millis(50))
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    transport: Option<TransportKind>,
    max_frame: u32,
    timeout: Duration,
    policy: WaitPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            transport: None,
            max_frame: DEFAULT_MAX_FRAME,
            timeout: DEFAULT_CALL_TIMEOUT,
            policy: default_policy(),
        }
    }
}

impl ClientOptions {
    /// Defaults: shared memory preferred on a `unix:` address, 64 MiB
    /// frames, 10 s calls.
    pub fn new() -> ClientOptions {
        ClientOptions::default()
    }
    /// Ask for this transport only (the default is shared memory with the
    /// socket as the fallback on `unix:`, TCP on `tcp:`). The environment
    /// variable `SHMRING_RPC_TRANSPORT` (`unix`, `shm`, `tcp`) does the same
    /// when this is not set.
    pub fn transport(mut self, t: TransportKind) -> Self {
        self.transport = Some(t);
        self
    }
    /// Largest frame payload in bytes (the smaller of the two sides' wins).
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }
    /// Default deadline of a call.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// How the client waits for a reply on the rings (e.g.
    /// `WaitPolicy::busy_poll()` for the lowest latency).
    pub fn wait_policy(mut self, p: WaitPolicy) -> Self {
        self.policy = p;
        self
    }
}

/// How a server serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    transports: u16,
    max_frame: u32,
    ring_capacity: u32,
    mode: u32,
    access: AccessPolicy,
    policy: WaitPolicy,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            transports: TransportKind::Shm.bit() | TransportKind::Unix.bit() | TransportKind::Tcp.bit(),
            max_frame: DEFAULT_MAX_FRAME,
            ring_capacity: DEFAULT_RING_CAPACITY,
            mode: 0o600,
            access: AccessPolicy::default(),
            policy: default_policy(),
        }
    }
}

impl ServerOptions {
    /// Defaults: every transport, 64 MiB frames, 1 MiB rings, socket mode
    /// 0600, only the same user and root may connect.
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }
    /// Refuse shared memory: every UNIX-socket client gets frames over the
    /// socket.
    pub fn no_shm(mut self) -> Self {
        self.transports &= !TransportKind::Shm.bit();
        self
    }
    /// Largest frame payload in bytes.
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }
    /// Bytes of each ring (a power of two from 4 KiB); frames larger than a
    /// ring travel through it in chunks.
    pub fn ring_capacity(mut self, bytes: u32) -> Self {
        self.ring_capacity = bytes;
        self
    }
    /// Permission bits of the UNIX socket file (default 0600).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    /// Who may connect (default: the same user, and root).
    pub fn access(mut self, policy: AccessPolicy) -> Self {
        self.access = policy;
        self
    }
    /// How connection threads wait for requests on the rings (e.g.
    /// `WaitPolicy::busy_poll()` to spin: lowest latency, a core each).
    pub fn wait_policy(mut self, p: WaitPolicy) -> Self {
        self.policy = p;
        self
    }
}

/// A blocking client: one call at a time on one connection.
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
    abandoned: HashSet<u64>,
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
        let wanted = match opts.transport {
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
                connect_unix(s, offer, opts, peer)?
            }
            Addr::Tcp(hostport) => {
                if wanted.is_some_and(|t| t != TransportKind::Tcp) {
                    return Err(Error::InvalidArgument(format!("{peer}: a tcp: address carries tcp only")));
                }
                let s = TcpStream::connect(hostport).map_err(|e| Error::io(format!("connect {peer}"), e))?;
                let _ = s.set_nodelay(true);
                connect_tcp(s, opts, peer)?
            }
        };
        Ok(Client { link, next_id: 1, timeout: opts.timeout, abandoned: HashSet::new() })
    }

    /// Connect over an already connected UNIX socket (one end of a
    /// `socketpair`, say); `name` stands for the peer in error messages.
    ///
    /// # Errors
    /// As [`Client::connect`], but for reaching the address.
    pub fn connect_stream(stream: UnixStream, name: &str, opts: &ClientOptions) -> Result<Client> {
        let offer = match opts.transport {
            None => TransportKind::Shm.bit() | TransportKind::Unix.bit(),
            Some(t @ (TransportKind::Shm | TransportKind::Unix)) => t.bit(),
            Some(TransportKind::Tcp) => {
                return Err(Error::InvalidArgument(format!("{name}: a UNIX socket cannot carry tcp")));
            }
        };
        let link = connect_unix(stream, offer, opts, name.to_owned())?;
        Ok(Client { link, next_id: 1, timeout: opts.timeout, abandoned: HashSet::new() })
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
        let deadline = Instant::now() + timeout;
        self.link.send(id, Kind::Request, 0, request, Some(deadline)).inspect_err(|_| {
            self.abandoned.insert(id);
        })?;
        match self.wait_for(id, Some(deadline)) {
            Err(Error::Timeout(p)) => {
                self.abandoned.insert(id);
                let _ = self.link.send(id, Kind::Cancel, 0, &[], Some(Instant::now() + Duration::from_millis(100)));
                Err(Error::Timeout(p))
            }
            Ok(f) if f.kind == Kind::Response => Ok(f.payload),
            Ok(f) if f.kind == Kind::Error => Err(Error::Remote(String::from_utf8_lossy(&f.payload).into_owned())),
            Ok(f) => Err(Error::protocol(self.link.peer(), format!("answered request {id} with a {:?} frame", f.kind))),
            Err(e) => Err(e),
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
        let deadline = Some(start + self.timeout);
        self.link.send(id, Kind::Ping, 0, payload, deadline)?;
        let f = self.wait_for(id, deadline)?;
        if f.kind != Kind::Ping || f.flags & FLAG_REPLY == 0 || f.payload != payload {
            return Err(Error::protocol(self.link.peer(), "answered a ping with something else"));
        }
        Ok(start.elapsed())
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

/// Connect over a UNIX socket: shared memory if both sides can, else frames
/// over the socket.
fn connect_unix(mut s: UnixStream, offer: u16, opts: &ClientOptions, peer: String) -> Result<Link> {
    set_timeouts(&s, Some(HANDSHAKE_TIMEOUT)).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
    let hello = Hello { version: VERSION, transports: offer, wakeups: WAKE_FUTEX, max_frame: opts.max_frame };
    s.write_all(&hello.encode()).map_err(|e| Error::io(format!("sending the hello to {peer}"), e))?;
    let (bytes, fds) = handshake::recv_with_fds(&mut s, 2, &peer)?;
    let w = welcome(&mut s, &bytes, &peer)?;
    if w.fds as usize != fds.len() {
        return Err(Error::protocol(&peer, format!("announced {} file descriptors and sent {}", w.fds, fds.len())));
    }
    let max_frame = u64::from(w.max_frame.min(opts.max_frame));
    if TransportKind::from_bit(w.transport) == Some(TransportKind::Shm) {
        match attach_rings(fds, &peer, opts) {
            Ok((tx, rx)) => {
                s.write_all(&handshake::ready(true)).map_err(|e| Error::io(format!("sending ready to {peer}"), e))?;
                set_timeouts(&s, None).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
                return Ok(Link::shm(tx, rx, s, peer, max_frame));
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

fn connect_tcp(mut s: TcpStream, opts: &ClientOptions, peer: String) -> Result<Link> {
    let cfg = |s: &TcpStream, t| s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t));
    cfg(&s, Some(HANDSHAKE_TIMEOUT)).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
    let hello = Hello {
        version: VERSION,
        transports: TransportKind::Tcp.bit(),
        wakeups: WAKE_FUTEX,
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
/// (client to server), then ours to consume from.
fn attach_rings(fds: Vec<std::os::fd::OwnedFd>, peer: &str, opts: &ClientOptions) -> Result<(Producer, Consumer)> {
    let mut fds = fds.into_iter();
    let (Some(c2s), Some(s2c)) = (fds.next(), fds.next()) else {
        return Err(Error::protocol(peer, "announced shared memory without its two rings"));
    };
    handshake::check_seals(&c2s, peer)?;
    handshake::check_seals(&s2c, peer)?;
    let mut tx = Producer::attach(Segment::from_fd(c2s, "rpc-c2s")?)?;
    let mut rx = Consumer::attach(Segment::from_fd(s2c, "rpc-s2c")?)?;
    tx.set_wait_policy(opts.policy);
    rx.set_wait_policy(opts.policy);
    Ok((tx, rx))
}

fn set_timeouts(s: &UnixStream, t: Option<Duration>) -> std::io::Result<()> {
    s.set_read_timeout(t)?;
    s.set_write_timeout(t)
}

/// The handler a server runs for each request.
type Handler = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// A bound server; [`Server::serve`] runs it.
///
/// ```no_run
/// # fn main() -> shmring_rpc::Result<()> {
/// use shmring_rpc::{Addr, Server, ServerOptions};
/// let server = Server::bind(&Addr::parse("unix:/tmp/echo.sock")?, &ServerOptions::new())?;
/// server.serve(|request: &[u8]| request.to_vec()) // echo, for ever
/// # }
/// ```
pub struct Server {
    listener: Listener,
    opts: ServerOptions,
    addr: Addr,
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Server {
    /// Bind the address. A `unix:` socket file is created with the
    /// options' mode (0600 by default); a stale socket file left by a dead
    /// server is replaced, a live one is not.
    ///
    /// # Errors
    /// [`Error::Io`] (address in use by a live server, permission, ...).
    pub fn bind(addr: &Addr, opts: &ServerOptions) -> Result<Server> {
        let listener = match addr {
            Addr::Unix(path) => Listener::Unix(bind_unix(path, opts.mode, addr)?),
            Addr::Tcp(hostport) => {
                Listener::Tcp(TcpListener::bind(hostport).map_err(|e| Error::io(format!("bind {addr}"), e))?)
            }
        };
        let addr = match &listener {
            Listener::Tcp(l) => {
                Addr::Tcp(l.local_addr().map_err(|e| Error::io(format!("bind {addr}"), e))?.to_string())
            }
            Listener::Unix(_) => addr.clone(),
        };
        Ok(Server { listener, opts: opts.clone(), addr })
    }

    /// The address bound (with the real port for `tcp:HOST:0`).
    pub fn local_addr(&self) -> &Addr {
        &self.addr
    }

    /// Serve one client already connected to `stream` (accepted elsewhere,
    /// or one end of a `socketpair`) on the calling thread: the handshake,
    /// with `opts`' access policy and transports, then its calls until it
    /// leaves.
    ///
    /// # Errors
    /// The handshake's errors ([`Error::PermissionDenied`] for a refused
    /// user, [`Error::Protocol`], [`Error::Timeout`], ...), and how the
    /// connection ended if not cleanly (the client died, or sent garbage).
    pub fn serve_stream(stream: UnixStream, opts: &ServerOptions, handler: impl Fn(&[u8]) -> Vec<u8>) -> Result<()> {
        serve_one(Stream::Unix(stream), "client", opts, &handler)
    }

    /// Accept clients for ever, each served on its own thread by `handler`.
    /// A client whose handshake fails, or who is refused, is logged (with
    /// `tracing`) and dropped; the others are not affected.
    ///
    /// # Errors
    /// [`Error::Io`] only if accepting fails for good.
    pub fn serve<F>(self, handler: F) -> Result<()>
    where
        F: Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static,
    {
        let handler: Handler = Arc::new(handler);
        loop {
            let accepted = match &self.listener {
                Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), format!("client of {}", self.addr))),
                Listener::Tcp(l) => l.accept().map(|(s, from)| {
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), format!("client {from} of {}", self.addr))
                }),
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) if accept_error_is_transient(&e) => {
                    // Out of descriptors or memory for now, or a client that
                    // gave up while queued: the server goes on.
                    tracing::warn!("accept on {}: {e}", self.addr);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) => return Err(Error::io(format!("accept on {}", self.addr), e)),
            };
            let (opts, handler) = (self.opts.clone(), handler.clone());
            std::thread::spawn(move || match serve_one(stream, &peer, &opts, &*handler) {
                Ok(()) => tracing::debug!("{peer}: connection closed"),
                Err(e) => tracing::warn!("{peer}: {e}"),
            });
        }
    }
}

/// Whether a failed `accept` is worth retrying.
fn accept_error_is_transient(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ConnectionAborted
        || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO))
}

fn bind_unix(path: &Path, mode: u32, addr: &Addr) -> Result<UnixListener> {
    let l = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::io(format!("bind {addr}: a server is already listening there"), e));
            }
            // Nobody listens: a socket file left by a dead server.
            std::fs::remove_file(path).map_err(|e| Error::io(format!("removing the stale socket {addr}"), e))?;
            UnixListener::bind(path).map_err(|e| Error::io(format!("bind {addr}"), e))?
        }
        Err(e) => return Err(Error::io(format!("bind {addr}"), e)),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {addr}"), e))?;
    Ok(l)
}

/// Handshake with one client, then answer its frames until it leaves.
fn serve_one(stream: Stream, peer: &str, opts: &ServerOptions, handler: &dyn Fn(&[u8]) -> Vec<u8>) -> Result<()> {
    let mut link = accept(stream, peer, opts)?;
    loop {
        let Some(f) = link.recv(None)? else { return Ok(()) };
        match f.kind {
            Kind::Request => {
                let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&f.payload)));
                match reply {
                    Ok(r) if r.len() as u64 > u64::from(opts.max_frame) => {
                        let msg = format!("the handler's reply of {} bytes exceeds the maximum frame", r.len());
                        link.send(f.id, Kind::Error, 0, msg.as_bytes(), None)?;
                    }
                    Ok(r) => link.send(f.id, Kind::Response, 0, &r, None)?,
                    Err(_) => link.send(f.id, Kind::Error, 0, b"the handler panicked", None)?,
                }
            }
            Kind::Ping if f.flags & FLAG_REPLY == 0 => link.send(f.id, Kind::Ping, FLAG_REPLY, &f.payload, None)?,
            // A blocking handler cannot be interrupted: its reply, when it
            // comes, is skipped by the client.
            Kind::Cancel => {}
            other => return Err(Error::protocol(peer, format!("a client sent a {other:?} frame"))),
        }
    }
}

/// The server's side of the handshake.
fn accept(stream: Stream, peer: &str, opts: &ServerOptions) -> Result<Link> {
    match stream {
        Stream::Unix(s) => accept_unix(s, peer, opts),
        Stream::Tcp(mut s) => {
            let cfg = |s: &TcpStream, t| s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t));
            cfg(&s, Some(HANDSHAKE_TIMEOUT)).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
            let mut b = [0u8; 32];
            s.read_exact(&mut b).map_err(|e| Error::io(format!("reading the hello of {peer}"), e))?;
            let hello = Hello::decode(&b).map_err(|what| Error::protocol(peer, what))?;
            let (w, message) = choose(&hello, opts, TransportKind::Tcp.bit(), None);
            s.write_all(&w.encode())
                .and_then(|()| s.write_all(message.as_bytes()))
                .map_err(|e| Error::io(format!("sending the welcome to {peer}"), e))?;
            refused(&w, &message, peer)?;
            let mut r = [0u8; 16];
            s.read_exact(&mut r).map_err(|e| Error::io(format!("reading ready from {peer}"), e))?;
            handshake::decode_ready(&r).map_err(|what| Error::protocol(peer, what))?;
            cfg(&s, None).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
            Ok(Link::stream(Stream::Tcp(s), peer.to_owned(), u64::from(w.max_frame)))
        }
    }
}

fn accept_unix(mut s: UnixStream, peer: &str, opts: &ServerOptions) -> Result<Link> {
    set_timeouts(&s, Some(HANDSHAKE_TIMEOUT)).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
    let cred = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| Error::io(format!("SO_PEERCRED of {peer}"), e.into()))?;
    let peer = format!("{peer} (pid {}, uid {})", cred.pid(), cred.uid());
    let mut b = [0u8; 32];
    handshake::read_msg(&mut s, &mut b, &peer, "hello")?;
    let hello = Hello::decode(&b).map_err(|what| Error::protocol(&peer, what))?;
    let uid = (cred.uid(), cred.gid());
    let allowed = opts.access.allows(uid.0, uid.1);
    let offered = TransportKind::Shm.bit() | TransportKind::Unix.bit();
    let (mut w, mut message) = choose(&hello, opts, offered, Some(allowed));
    // Shared memory: two rings, each in its own sealed memfd. If that
    // fails, fall back to frames over the socket (if the client takes them).
    let mut rings = None;
    if w.status == Status::Ok && TransportKind::from_bit(w.transport) == Some(TransportKind::Shm) {
        match make_rings(opts, &peer) {
            Ok(r) => rings = Some(r),
            Err(e) if hello.transports & TransportKind::Unix.bit() != 0 => {
                tracing::warn!("{peer}: shared memory failed ({e}); serving frames over the socket");
                (w.transport, w.fds, w.ring_capacity) = (TransportKind::Unix.bit(), 0, 0);
            }
            Err(e) => {
                message = format!("the server could not set up shared memory: {e}");
                (w.status, w.transport, w.fds, w.message_len) = (Status::NoTransport, 0, 0, message.len() as u32);
            }
        }
    }
    let fds: Vec<_> = rings.iter().flat_map(|(c2s, s2c, ..)| [c2s.fd().as_raw_fd(), s2c.fd().as_raw_fd()]).collect();
    let mut bytes = w.encode().to_vec();
    bytes.extend_from_slice(message.as_bytes());
    handshake::send_with_fds(&s, &bytes, &fds, &peer)?;
    refused(&w, &message, &peer)?;
    let mut r = [0u8; 16];
    handshake::read_msg(&mut s, &mut r, &peer, "ready")?;
    let mapped = handshake::decode_ready(&r).map_err(|what| Error::protocol(&peer, what))?;
    set_timeouts(&s, None).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
    let max_frame = u64::from(w.max_frame);
    match rings {
        Some((_c2s, _s2c, tx, rx)) if mapped => Ok(Link::shm(tx, rx, s, peer, max_frame)),
        // The client could not map them: frames over the socket.
        _ => Ok(Link::stream(Stream::Unix(s), peer, max_frame)),
    }
}

/// Turn a refusal sent to the client into the server's own error.
fn refused(w: &Welcome, message: &str, peer: &str) -> Result<()> {
    if w.status == Status::Ok {
        return Ok(());
    }
    tracing::warn!("refused {peer}: {message}");
    Err(match w.status {
        Status::Denied => Error::PermissionDenied(peer.to_owned()),
        _ => Error::protocol(peer, message.to_owned()),
    })
}

/// The server's answer to `hello`, given the transports this socket can
/// carry and (UNIX sockets) whether the client's user is allowed.
fn choose(hello: &Hello, opts: &ServerOptions, possible: u16, allowed: Option<bool>) -> (Welcome, String) {
    let mut w = Welcome {
        version: VERSION,
        status: Status::Ok,
        transport: 0,
        wakeup: WAKE_FUTEX,
        max_frame: hello.max_frame.min(opts.max_frame).max(1),
        ring_capacity: 0,
        fds: 0,
        message_len: 0,
    };
    let common = hello.transports & opts.transports & possible;
    let (status, message) = if allowed == Some(false) {
        (Status::Denied, "permission denied by server policy".to_owned())
    } else if hello.version != VERSION {
        (Status::Version, format!("the server speaks protocol version {VERSION}, the client {}", hello.version))
    } else if hello.wakeups & WAKE_FUTEX == 0 {
        (Status::NoTransport, "no wake-up method in common".to_owned())
    } else if common == 0 {
        (
            Status::NoTransport,
            format!(
                "the client offers transports {:#x}, the server {:#x}",
                hello.transports,
                opts.transports & possible
            ),
        )
    } else {
        let t = [TransportKind::Shm, TransportKind::Unix, TransportKind::Tcp]
            .into_iter()
            .find(|t| common & t.bit() != 0)
            .unwrap_or(TransportKind::Unix);
        w.transport = t.bit();
        if t == TransportKind::Shm {
            (w.fds, w.ring_capacity) = (2, opts.ring_capacity);
        }
        (Status::Ok, String::new())
    };
    w.status = status;
    w.message_len = message.len() as u32;
    if status != Status::Ok {
        (w.transport, w.fds, w.ring_capacity) = (0, 0, 0);
    }
    (w, message)
}

/// Two sealed memfd rings and the server's ends of them: it consumes the
/// client-to-server ring and produces on the other.
fn make_rings(opts: &ServerOptions, peer: &str) -> Result<(Segment, Segment, Producer, Consumer)> {
    let ro = RingOptions::new().capacity(u64::from(opts.ring_capacity)).wait_policy(opts.policy);
    let c2s = spsc::create_memfd("rpc-c2s", &ro)?;
    let s2c = spsc::create_memfd("rpc-s2c", &ro)?;
    handshake::seal(c2s.fd(), peer)?;
    handshake::seal(s2c.fd(), peer)?;
    let dup = |s: &Segment| -> Result<Segment> {
        let fd = s.fd().try_clone_to_owned().map_err(|e| Error::io(format!("dup of a ring for {peer}"), e))?;
        Ok(Segment::from_fd(fd, s.name())?)
    };
    let mut rx = Consumer::attach(dup(&c2s)?)?;
    let mut tx = Producer::attach(dup(&s2c)?)?;
    rx.set_wait_policy(opts.policy);
    tx.set_wait_policy(opts.policy);
    Ok((c2s, s2c, tx, rx))
}
