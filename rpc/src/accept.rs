//! The server's side of the handshake: check the client's user, choose a
//! transport, and for shared memory make the rings and doorbells and pass
//! them to the client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use shmring::SpscOptions;
use shmring::spsc::{self, Consumer, Producer};
use shmring::wait::Doorbell;

use crate::error::{Error, Result};
use crate::handshake::{self, HANDSHAKE_TIMEOUT, Hello, Mode, Status, VERSION, WAKE_DOORBELL, Welcome, set_timeouts};
use crate::options::ServerOptions;
use crate::socket::Stream;
use crate::transport::{Link, Rings, TransportKind};

/// The server's side of the handshake; `mode` says how this server waits
/// for the client and what the connection carries.
pub(crate) fn accept(stream: Stream, peer: &str, opts: &ServerOptions, mode: Mode) -> Result<Link> {
    match stream {
        Stream::Unix(s) => accept_unix(s, peer, opts, mode),
        Stream::Tcp(mut s) => {
            let cfg = |s: &TcpStream, t| s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t));
            cfg(&s, Some(HANDSHAKE_TIMEOUT)).map_err(|e| Error::io(format!("configuring {peer}"), e))?;
            let mut b = [0u8; 32];
            s.read_exact(&mut b).map_err(|e| Error::io(format!("reading the hello of {peer}"), e))?;
            let hello = Hello::decode(&b).map_err(|what| Error::protocol(peer, what))?;
            let (w, message) = choose(&hello, opts, TransportKind::Tcp.bit(), None, mode);
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

fn accept_unix(mut s: UnixStream, peer: &str, opts: &ServerOptions, mode: Mode) -> Result<Link> {
    let wait = mode.wait;
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
    let (mut w, mut message) = choose(&hello, opts, offered, Some(allowed), mode);
    // Shared memory: two rings, each in its own sealed memfd. If that
    // fails, fall back to frames over the socket (if the client takes them).
    let mut rings = None;
    if w.status == Status::Ok && TransportKind::from_bit(w.transport) == Some(TransportKind::Shm) {
        match make_rings(opts, &peer, hello.wakeups == WAKE_DOORBELL, wait == WAKE_DOORBELL) {
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
    let fds: Vec<_> = rings.iter().flat_map(|r| r.fds.iter().map(|fd| fd.as_raw_fd())).collect();
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
        Some(r) if mapped => {
            let rings = Rings { tx: r.tx, rx: r.rx, socket: s, bell: r.bell, poll: Rings::polls_for(&opts.policy) };
            Ok(Link::shm(rings, peer, max_frame))
        }
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
/// carry, (UNIX sockets) whether the client's user is allowed, and how the
/// server waits.
fn choose(hello: &Hello, opts: &ServerOptions, possible: u16, allowed: Option<bool>, mode: Mode) -> (Welcome, String) {
    let wait = mode.wait;
    let mut w = Welcome {
        version: VERSION,
        status: Status::Ok,
        transport: 0,
        wakeup: wait,
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
    } else if hello.service != mode.service {
        (
            Status::NoTransport,
            format!(
                "the server serves {}, the client asks for {}",
                handshake::service_name(mode.service),
                handshake::service_name(hello.service)
            ),
        )
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
            let bells = u32::from(hello.wakeups == WAKE_DOORBELL) + u32::from(wait == WAKE_DOORBELL);
            (w.fds, w.ring_capacity) = (2 + bells, opts.ring_capacity);
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

/// What the server makes for a shared-memory client.
struct ServerRings {
    /// To send, in order: the two memfds (client to server, server to
    /// client), the client's doorbell if it waits on one, ours if we do.
    fds: Vec<OwnedFd>,
    /// Our ends: we produce on the server-to-client ring...
    tx: Producer,
    /// ...and consume the client-to-server one.
    rx: Consumer,
    /// Our doorbell, if we wait on one.
    bell: Option<Doorbell>,
}

/// Two sealed memfd rings and the server's ends of them (it consumes the
/// client-to-server ring and produces on the other), and the doorbells of
/// the sides that wait on one: each side's ends ring the other's.
fn make_rings(opts: &ServerOptions, peer: &str, client_bell: bool, server_bell: bool) -> Result<ServerRings> {
    let ro = SpscOptions::new().capacity(u64::from(opts.ring_capacity));
    let c2s = spsc::create_memfd("rpc-c2s", &ro)?;
    let s2c = spsc::create_memfd("rpc-s2c", &ro)?;
    handshake::seal(c2s.fd(), peer)?;
    handshake::seal(s2c.fd(), peer)?;
    // Each doorbell is a socket pair: the waiter keeps one end, the ringer
    // the other, and neither end is held by both processes.
    let pair = |wanted: bool| -> Result<Option<(Doorbell, Doorbell)>> {
        wanted.then(Doorbell::pair).transpose().map_err(|e| Error::io(format!("doorbell for {peer}"), e))
    };
    // (the client's end, ours to ring it) and (our end, the client's to ring us).
    let (client_bell, server_bell) = (pair(client_bell)?, pair(server_bell)?);
    // Descriptors to send; the segments themselves become our ends. The
    // doorbell ends sent are closed here once sent.
    let dup = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().map_err(|e| Error::io(format!("dup for {peer}"), e));
    let mut fds = vec![dup(c2s.fd())?, dup(s2c.fd())?];
    if let Some((theirs, _)) = &client_bell {
        fds.push(dup(theirs.as_fd())?);
    }
    if let Some((_, theirs)) = &server_bell {
        fds.push(dup(theirs.as_fd())?);
    }
    let ring_client = client_bell.map(|(_, ours)| ours);
    let mut rx = Consumer::attach(c2s)?;
    let mut tx = Producer::attach(s2c)?;
    rx.set_wait_policy(opts.policy);
    tx.set_wait_policy(opts.policy);
    rx.set_doorbell(ring_client.clone());
    tx.set_doorbell(ring_client);
    Ok(ServerRings { fds, tx, rx, bell: server_bell.map(|(ours, _)| ours) })
}
