//! The server: bind, accept, the server's side of the handshake, and
//! answering calls, one thread per client.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::accept::accept;
use crate::addr::Addr;
use crate::error::{Error, Result};
use crate::frame::{FLAG_REPLY, Kind};
use crate::handshake::Mode;
use crate::options::ServerOptions;
use crate::ring_frames::Out;
use crate::socket::Stream;

/// The handler a server runs for each request: one that returns its reply,
/// or one that writes it in place ([`Server::serve_in_place`]).
#[derive(Clone)]
enum Handler {
    Returns(Arc<ReturnsReply>),
    InPlace(Arc<WritesReply>),
    /// As `InPlace`, with requests borrowed from the ring.
    Borrows(Arc<WritesReply>),
}

/// A handler that returns its reply.
type ReturnsReply = dyn Fn(&[u8]) -> Vec<u8> + Send + Sync;
/// A handler that writes its reply in place.
type WritesReply = dyn Fn(&[u8], &mut Reply<'_>) + Send + Sync;

/// Where a handler of [`Server::serve_in_place`] writes its reply: once,
/// with [`Reply::write`]. A handler that returns without writing one sends
/// an empty reply.
pub struct Reply<'a> {
    out: &'a mut dyn Out,
    id: u64,
    sent: bool,
    /// Why a reply was refused (too large): sent to the client instead.
    refused: Option<String>,
}

impl std::fmt::Debug for Reply<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").field("id", &self.id).field("sent", &self.sent).finish_non_exhaustive()
    }
}

impl Reply<'_> {
    /// Reply with `len` bytes that `fill` writes. Over shared memory, when
    /// the reply fits in one ring record (the ring's capacity less a few
    /// bytes), `fill` writes straight into the ring: no buffer, no copy.
    /// Larger replies, and replies over a socket, are written into a buffer
    /// and sent from it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a second reply, or one over the
    /// connection's maximum frame size (the client then gets an error
    /// reply); the connection's errors.
    pub fn write(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        if self.sent {
            return Err(Error::InvalidArgument(format!("request {} already has its reply", self.id)));
        }
        if len as u64 > self.out.max_frame() {
            let what = format!(
                "a reply of {len} bytes exceeds the connection's maximum frame of {} bytes",
                self.out.max_frame()
            );
            self.refused = Some(what.clone());
            return Err(Error::InvalidArgument(what));
        }
        let mut fill = Some(fill);
        let mut fill_once = |b: &mut [u8]| {
            if let Some(f) = fill.take() {
                f(b);
            }
        };
        // Marked sent once sent: if `fill` panics, the server sends the
        // client an error reply instead.
        self.out.send_with(self.id, Kind::Response, len, &mut fill_once)?;
        self.sent = true;
        Ok(())
    }

    /// Run `handler` for `request` with a reply to `id` through `out`; then
    /// send what the handler did not: an empty reply, the reason a reply was
    /// refused, or that the handler panicked.
    fn run(out: &mut dyn Out, id: u64, request: &[u8], handler: &dyn Fn(&[u8], &mut Reply<'_>)) -> Result<()> {
        let mut reply = Reply { out, id, sent: false, refused: None };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(request, &mut reply)));
        let (sent, refused) = (reply.sent, reply.refused.take());
        let (kind, what): (Kind, &[u8]) = match (r, sent, &refused) {
            (_, true, _) => return Ok(()),
            (Ok(()), false, None) => (Kind::Response, &[]),
            (Ok(()), false, Some(what)) => (Kind::Error, what.as_bytes()),
            (Err(_), false, _) => (Kind::Error, b"the handler panicked"),
        };
        reply.out.send_with(id, kind, what.len(), &mut |b: &mut [u8]| b.copy_from_slice(what))
    }
}

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
    pub(crate) listener: Listener,
    pub(crate) opts: ServerOptions,
    pub(crate) addr: Addr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).field("options", &self.opts).finish_non_exhaustive()
    }
}

pub(crate) enum Listener {
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
    pub fn serve_stream(
        stream: UnixStream,
        opts: &ServerOptions,
        handler: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static,
    ) -> Result<()> {
        serve_one(Stream::Unix(stream), "client", opts, &Handler::Returns(Arc::new(handler)))
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
        self.serve_with(Handler::Returns(Arc::new(handler)))
    }

    /// [`Server::serve`] with a handler that writes its reply in place
    /// ([`Reply::write`]): over shared memory a reply that fits in one ring
    /// record is written straight into the ring, with no buffer and no copy.
    /// The request is still copied out of the ring before the handler sees
    /// it (the client could change it under the handler's feet otherwise);
    /// [`Server::serve_borrowed`] opts out of that copy.
    ///
    /// ```no_run
    /// # fn main() -> shmring_rpc::Result<()> {
    /// use shmring_rpc::{Addr, Reply, Server, ServerOptions};
    /// let server = Server::bind(&Addr::parse("unix:/tmp/upper.sock")?, &ServerOptions::new())?;
    /// server.serve_in_place(|req: &[u8], reply: &mut Reply<'_>| {
    ///     let _ = reply.write(req.len(), |out| {
    ///         for (o, i) in out.iter_mut().zip(req) {
    ///             *o = i.to_ascii_uppercase();
    ///         }
    ///     });
    /// })
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Server::serve`].
    pub fn serve_in_place<F>(self, handler: F) -> Result<()>
    where
        F: Fn(&[u8], &mut Reply<'_>) + Send + Sync + 'static,
    {
        self.serve_with(Handler::InPlace(Arc::new(handler)))
    }

    /// [`Server::serve_in_place`] without copying requests either: a request
    /// that came whole in one ring record is handed to the handler where it
    /// lies in shared memory, and the ring slot is freed when the handler
    /// returns. Saves a copy (and an allocation) per request.
    ///
    /// The client can still write those bytes while the handler reads them:
    /// read each byte once, and copy out whatever must not change between a
    /// check and its use (a length, an index, a key). Requests larger than a
    /// record, and requests over a socket, are copied as for
    /// [`Server::serve_in_place`].
    ///
    /// # Errors
    /// As [`Server::serve`].
    pub fn serve_borrowed<F>(self, handler: F) -> Result<()>
    where
        F: Fn(&[u8], &mut Reply<'_>) + Send + Sync + 'static,
    {
        self.serve_with(Handler::Borrows(Arc::new(handler)))
    }

    fn serve_with(self, handler: Handler) -> Result<()> {
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
                match serve_one(stream, &peer, &opts, &handler) {
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
pub(crate) fn accept_error_is_transient(e: &std::io::Error) -> bool {
    // Besides running out of descriptors or memory: the network errors
    // accept(2) passes on for a pending connection, which its manual page says
    // to treat like EAGAIN.
    e.kind() == std::io::ErrorKind::ConnectionAborted
        || matches!(
            e.raw_os_error(),
            Some(
                libc::EMFILE
                    | libc::ENFILE
                    | libc::ENOBUFS
                    | libc::ENOMEM
                    | libc::EPROTO
                    | libc::EPERM
                    | libc::ENETDOWN
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::ENONET
                    | libc::EHOSTUNREACH
                    | libc::EOPNOTSUPP
                    | libc::ENETUNREACH
            )
        )
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
fn serve_one(stream: Stream, peer: &str, opts: &ServerOptions, handler: &Handler) -> Result<()> {
    let mut link = accept(stream, peer, opts, Mode::BLOCKING)?;
    loop {
        let f = match handler {
            // A request that came whole in one ring record is served where
            // it lies; anything else comes back copied.
            Handler::Borrows(handler) => {
                match link.recv_borrowing(|id, request, out| Reply::run(out, id, request, &**handler))? {
                    Some(Some(f)) => f,
                    Some(None) => continue,
                    None => return Ok(()),
                }
            }
            _ => match link.recv(None)? {
                Some(f) => f,
                None => return Ok(()),
            },
        };
        match (f.kind, handler) {
            (Kind::Request, Handler::InPlace(handler) | Handler::Borrows(handler)) => {
                Reply::run(&mut link, f.id, &f.payload, &**handler)?
            }
            (Kind::Request, Handler::Returns(handler)) => {
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
            (Kind::Ping, _) if f.flags & FLAG_REPLY == 0 => {
                link.send(f.id, Kind::Ping, FLAG_REPLY, &f.payload, None)?
            }
            // A blocking handler cannot be interrupted: its reply, when it
            // comes, is skipped by the client.
            (Kind::Cancel, _) => {}
            (other, _) => return Err(Error::protocol(peer, format!("a client sent a {other:?} frame"))),
        }
    }
}
