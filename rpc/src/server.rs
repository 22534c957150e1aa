//! The server: bind, accept, the server's side of the handshake, and
//! answering calls, one thread per client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shmring::spsc::{self, Consumer, Producer};
use shmring::{RingOptions, Segment};

use crate::addr::Addr;
use crate::error::{Error, Result};
use crate::frame::{FLAG_REPLY, Kind};
use crate::handshake::{self, HANDSHAKE_TIMEOUT, Hello, Status, VERSION, WAKE_FUTEX, Welcome, set_timeouts};
use crate::options::ServerOptions;
use crate::transport::{Link, Stream, TransportKind};

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
            let spawned = std::thread::Builder::new().name("shmring-rpc".into()).spawn(move || {
                match serve_one(stream, &peer, &opts, &*handler) {
                    Ok(()) => tracing::debug!("{peer}: connection closed"),
                    Err(e) => tracing::warn!("{peer}: {e}"),
                }
            });
            if let Err(e) = spawned {
                // Out of threads for now: this client is dropped, the server goes on.
                tracing::warn!("accept on {}: no thread for a client: {e}", self.addr);
                std::thread::sleep(Duration::from_millis(10));
            }
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
            let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            });
            if !is_socket {
                return Err(Error::io(format!("bind {addr}: something that is not a socket is there"), e));
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
                    Ok(r) if r.len() as u64 > link.max_frame() => {
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
    let fds: Vec<_> = rings.iter().flat_map(|(c2s, s2c, ..)| [c2s.as_raw_fd(), s2c.as_raw_fd()]).collect();
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
fn make_rings(opts: &ServerOptions, peer: &str) -> Result<(OwnedFd, OwnedFd, Producer, Consumer)> {
    let ro = RingOptions::new().capacity(u64::from(opts.ring_capacity));
    let c2s = spsc::create_memfd("rpc-c2s", &ro)?;
    let s2c = spsc::create_memfd("rpc-s2c", &ro)?;
    handshake::seal(c2s.fd(), peer)?;
    handshake::seal(s2c.fd(), peer)?;
    // Descriptors to send; the segments themselves become our ends.
    let dup = |s: &Segment| s.fd().try_clone_to_owned().map_err(|e| Error::io(format!("dup of a ring for {peer}"), e));
    let (c2s_fd, s2c_fd) = (dup(&c2s)?, dup(&s2c)?);
    let mut rx = Consumer::attach(c2s)?;
    let mut tx = Producer::attach(s2c)?;
    rx.set_wait_policy(opts.policy);
    tx.set_wait_policy(opts.policy);
    Ok((c2s_fd, s2c_fd, tx, rx))
}
