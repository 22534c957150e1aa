//! The handshake: what a client and a server say to each other on a new
//! connection before any frame, and how shared memory is set up.
//!
//! ```text
//! client                                                   server
//! Hello   32 B: magic, version, transports, how the client waits,
//!         service (RPC frames, a byte stream or tarpc messages), max frame ──►
//!                                              SO_PEERCRED: uid allowed?
//!       ◄── Welcome 32 B: magic, version, status, transport, how the server
//!           waits, max frame, ring capacity, fd count, message length
//!           (+ by SCM_RIGHTS when the transport is shm: two sealed memfds,
//!           then the client's doorbell if the client waits on one, then the
//!           server's if the server does;
//!           + the message, UTF-8, when the status is not OK)
//! check seals, map, validate the rings as untrusted segments
//! Ready   16 B: magic, status (0 rings attached, 1 fall back to the socket) ──►
//! frames: over the rings, or over the socket
//! ```
//!
//! All integers are little-endian; reserved fields are zero. Each side
//! reads the other's message with a timeout ([`HANDSHAKE_TIMEOUT`] by
//! default): garbage, a short read, a wrong fd count, version skew or
//! silence ends that connection with an error on both sides, and only that
//! connection.
//!
//! How each side waits for the other is one bit: [`WAKE_FUTEX`] for a
//! thread that sleeps in the ring's own wait (the blocking [`crate::Client`]
//! and [`crate::Server`]), [`WAKE_DOORBELL`] for an async task that sleeps
//! on a doorbell (`shmring::wait::Doorbell`, a datagram socket pair). The
//! server creates every
//! doorbell and passes them with the rings; each side then gives its ring
//! ends the *other* side's doorbell to ring.
//!
//! The rings live in two memfds, one per direction, rather than one: each
//! is then a whole segment, which the core maps and validates as any
//! untrusted segment. Each is sealed against shrinking, growing and further
//! sealing before it is sent (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`):
//! a client cannot truncate it under the server (SIGBUS), and the client
//! refuses a memfd that lacks any of the three.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::error::{Error, Result};
use crate::transport::TransportKind;

/// First 8 bytes of every handshake message.
pub const MAGIC: [u8; 8] = *b"SHMRPC\0\x01";
/// The protocol version this build speaks (2: how each side waits, and
/// doorbells passed with the rings).
pub const VERSION: u16 = 2;
/// How long each side waits for the other's next handshake message.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Service: the connection carries RPC frames (`Client`, `Server`).
pub const SERVICE_FRAMES: u16 = 0;
/// Service: the connection carries a byte stream (`ShmStream`).
pub const SERVICE_BYTES: u16 = 1;
/// Service: the connection carries tarpc messages (`shmring_rpc::tarpc`):
/// frames whose payloads are bincode-encoded tarpc messages.
pub const SERVICE_TARPC: u16 = 2;

/// How one side of a connection works: how it waits, what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mode {
    /// [`WAKE_FUTEX`] or [`WAKE_DOORBELL`].
    pub(crate) wait: u16,
    /// [`SERVICE_FRAMES`], [`SERVICE_BYTES`] or [`SERVICE_TARPC`].
    pub(crate) service: u16,
}

impl Mode {
    /// A blocking client or server of RPC frames.
    pub(crate) const BLOCKING: Mode = Mode { wait: WAKE_FUTEX, service: SERVICE_FRAMES };
    /// An async client or server of RPC frames.
    pub(crate) const ASYNC: Mode = Mode { wait: WAKE_DOORBELL, service: SERVICE_FRAMES };
    /// An async byte stream.
    pub(crate) const BYTES: Mode = Mode { wait: WAKE_DOORBELL, service: SERVICE_BYTES };
    /// An async tarpc transport.
    #[cfg_attr(not(feature = "tarpc"), allow(dead_code))]
    pub(crate) const TARPC: Mode = Mode { wait: WAKE_DOORBELL, service: SERVICE_TARPC };
}

/// The name of a service, for messages.
pub(crate) fn service_name(service: u16) -> &'static str {
    match service {
        SERVICE_BYTES => "a byte stream",
        SERVICE_TARPC => "tarpc messages",
        _ => "RPC frames",
    }
}

/// Wake-up bit: this side waits in the rings' own eventcount (a shared
/// futex): a blocking thread.
pub const WAKE_FUTEX: u16 = 1;
/// Wake-up bit: this side waits on a doorbell (a socket pair) its peer rings:
/// an async task.
pub const WAKE_DOORBELL: u16 = 2;
/// Most file descriptors a welcome carries: two rings and two doorbells.
pub(crate) const MAX_FDS: usize = 4;
/// Longest refusal message, in bytes.
const MESSAGE_MAX: u32 = 512;

/// The client's opening message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version.
    pub version: u16,
    /// Transports the client accepts, as a bitmask of `TransportKind` bits.
    pub transports: u16,
    /// How the client waits: [`WAKE_FUTEX`] or [`WAKE_DOORBELL`].
    pub wakeups: u16,
    /// What it wants the connection to carry: [`SERVICE_FRAMES`] or
    /// [`SERVICE_BYTES`].
    pub service: u16,
    /// The largest frame payload it will send or accept, in bytes.
    pub max_frame: u32,
}

/// What the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepted: the fields say how.
    Ok = 0,
    /// The client's user is not allowed by the server's policy.
    Denied = 1,
    /// The server does not speak the client's version.
    Version = 2,
    /// No transport both sides accept.
    NoTransport = 3,
}

/// The server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// Protocol version the server speaks.
    pub version: u16,
    /// Accepted, or why not.
    pub status: Status,
    /// The chosen transport's bit.
    pub transport: u16,
    /// How the server waits: [`WAKE_FUTEX`] or [`WAKE_DOORBELL`].
    pub wakeup: u16,
    /// The largest frame payload either side may send.
    pub max_frame: u32,
    /// Bytes of each ring (shm only).
    pub ring_capacity: u32,
    /// File descriptors sent with this message: for shm 2, plus one per
    /// side that waits on a doorbell; else 0.
    pub fds: u32,
    /// Bytes of the UTF-8 message that follows (a refusal's reason).
    pub message_len: u32,
}

impl Hello {
    /// The 32 bytes on the wire.
    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.transports.to_le_bytes());
        b[12..14].copy_from_slice(&self.wakeups.to_le_bytes());
        b[14..16].copy_from_slice(&self.service.to_le_bytes());
        b[16..20].copy_from_slice(&self.max_frame.to_le_bytes());
        b
    }

    /// Decode and check 32 bytes from a client. The version is not checked
    /// here (the server answers skew with [`Status::Version`]).
    ///
    /// # Errors
    /// What is wrong, in words: bad magic, reserved bytes set, no transport.
    pub fn decode(b: &[u8; 32]) -> std::result::Result<Hello, String> {
        if b[..8] != MAGIC {
            return Err(format!("not a shmring-rpc client (hello starts {:02x?})", &b[..8]));
        }
        if b[20..] != [0; 12] {
            return Err("hello has reserved bytes set".into());
        }
        let h = Hello {
            version: u16_at(b, 8),
            transports: u16_at(b, 10),
            wakeups: u16_at(b, 12),
            service: u16_at(b, 14),
            max_frame: u32_at(b, 16),
        };
        if h.service > SERVICE_TARPC {
            return Err(format!("hello asks for an unknown service {}", h.service));
        }
        if h.transports == 0 || h.transports & !7 != 0 {
            return Err(format!("hello offers transports {:#x}", h.transports));
        }
        if h.wakeups != WAKE_FUTEX && h.wakeups != WAKE_DOORBELL {
            return Err(format!("hello says the client waits by {:#x}", h.wakeups));
        }
        Ok(h)
    }
}

impl Welcome {
    /// The 32 bytes on the wire.
    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&(self.status as u16).to_le_bytes());
        b[12..14].copy_from_slice(&self.transport.to_le_bytes());
        b[14..16].copy_from_slice(&self.wakeup.to_le_bytes());
        b[16..20].copy_from_slice(&self.max_frame.to_le_bytes());
        b[20..24].copy_from_slice(&self.ring_capacity.to_le_bytes());
        b[24..28].copy_from_slice(&self.fds.to_le_bytes());
        b[28..32].copy_from_slice(&self.message_len.to_le_bytes());
        b
    }

    /// Decode and check 32 bytes from a server.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn decode(b: &[u8; 32]) -> std::result::Result<Welcome, String> {
        if b[..8] != MAGIC {
            return Err(format!("not a shmring-rpc server (welcome starts {:02x?})", &b[..8]));
        }
        let status = match u16_at(b, 10) {
            0 => Status::Ok,
            1 => Status::Denied,
            2 => Status::Version,
            3 => Status::NoTransport,
            other => return Err(format!("welcome has unknown status {other}")),
        };
        let w = Welcome {
            version: u16_at(b, 8),
            status,
            transport: u16_at(b, 12),
            wakeup: u16_at(b, 14),
            max_frame: u32_at(b, 16),
            ring_capacity: u32_at(b, 20),
            fds: u32_at(b, 24),
            message_len: u32_at(b, 28),
        };
        if w.message_len > MESSAGE_MAX {
            return Err(format!("welcome announces a message of {} bytes", w.message_len));
        }
        if w.status == Status::Ok {
            if w.wakeup != WAKE_FUTEX && w.wakeup != WAKE_DOORBELL {
                return Err(format!("welcome says the server waits by {:#x}", w.wakeup));
            }
            let shm = TransportKind::from_bit(w.transport) == Some(TransportKind::Shm);
            if TransportKind::from_bit(w.transport).is_none()
                || (shm && !(2..=4).contains(&w.fds))
                || (!shm && w.fds != 0)
            {
                return Err(format!("welcome chose transport {:#x} with {} fds", w.transport, w.fds));
            }
        }
        Ok(w)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The client's last message: whether it attached the rings.
pub(crate) fn ready(mapped: bool) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&MAGIC);
    b[8] = if mapped { 0 } else { 1 };
    b
}

/// Decode a Ready message: `Ok(true)` if the client attached the rings,
/// `Ok(false)` if it falls back to frames over the socket.
pub(crate) fn decode_ready(b: &[u8; 16]) -> std::result::Result<bool, String> {
    if b[..8] != MAGIC || b[9..] != [0; 7] {
        return Err("garbage instead of the ready message".into());
    }
    match b[8] {
        0 => Ok(true),
        1 => Ok(false),
        other => Err(format!("ready message has unknown status {other}")),
    }
}

/// Set both timeouts of a handshake socket (`None`: none).
pub(crate) fn set_timeouts(s: &UnixStream, t: Option<Duration>) -> std::io::Result<()> {
    s.set_read_timeout(t)?;
    s.set_write_timeout(t)
}

/// Read exactly `buf.len()` bytes of handshake from `s`.
pub(crate) fn read_msg(s: &mut UnixStream, buf: &mut [u8], peer: &str, what: &str) -> Result<()> {
    s.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            Error::Timeout(format!("{peer} (waiting for its {what})"))
        }
        std::io::ErrorKind::UnexpectedEof => Error::protocol(peer, format!("closed before sending its {what}")),
        _ => Error::io(format!("reading the {what} from {peer}"), e),
    })
}

/// Seal a memfd against shrinking, growing and further sealing.
pub(crate) fn seal(fd: impl AsFd, peer: &str) -> Result<()> {
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(fd, FcntlArg::F_ADD_SEALS(seals))
        .map(drop)
        .map_err(|e| Error::io(format!("sealing the rings for {peer}"), e.into()))
}

/// Check a memfd received from the server carries all three seals.
pub(crate) fn check_seals(fd: impl AsFd, peer: &str) -> Result<()> {
    let bits = fcntl(fd, FcntlArg::F_GET_SEALS)
        .map_err(|e| Error::io(format!("reading the seals of {peer}'s ring"), e.into()))?;
    let seals = SealFlag::from_bits_truncate(bits);
    let want = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    if !seals.contains(want) {
        return Err(Error::protocol(peer, format!("a ring memfd is not sealed (seals {bits:#x})")));
    }
    Ok(())
}

/// Send `bytes` with `fds` attached.
pub(crate) fn send_with_fds(s: &UnixStream, bytes: &[u8], fds: &[RawFd], peer: &str) -> Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    let n = loop {
        match sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(|e| Error::io(format!("sending the welcome to {peer}"), e.into()))?,
        }
    };
    // The fds went with the first byte; the rest, if any, follows plainly.
    let mut s = s;
    s.write_all(&bytes[n..]).map_err(|e| Error::io(format!("sending the welcome to {peer}"), e))
}

/// Receive a 32-byte message and the fds sent with it (at most `max_fds`;
/// more, or a truncated control message, is a protocol error, and every fd
/// received is closed).
pub(crate) fn recv_with_fds(s: &mut UnixStream, max_fds: usize, peer: &str) -> Result<([u8; 32], Vec<OwnedFd>)> {
    let mut buf = [0u8; 32];
    // Room for as many descriptors as the kernel passes in one message
    // (SCM_MAX_FD): a truncated control message would leave the ones it did
    // install unowned, and so leaked.
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let (n, fds, truncated) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => {
                    return Err(Error::Timeout(format!("{peer} (waiting for its welcome)")));
                }
                Err(e) => return Err(Error::io(format!("receiving the welcome from {peer}"), e.into())),
                Ok(msg) => break msg,
            }
        };
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just installed these descriptors in our table for us; nothing else owns them.
                    fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        (msg.bytes, fds, msg.flags.contains(MsgFlags::MSG_CTRUNC))
    };
    if truncated || fds.len() > max_fds {
        return Err(Error::protocol(
            peer,
            format!("sent {} file descriptors or more with its welcome", fds.len().max(max_fds + 1)),
        ));
    }
    if n == 0 {
        return Err(Error::protocol(peer, "closed before sending its welcome"));
    }
    read_msg(s, &mut buf[n..], peer, "welcome")?;
    Ok((buf, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let h =
            Hello { version: VERSION, transports: 3, wakeups: WAKE_FUTEX, service: SERVICE_FRAMES, max_frame: 1 << 26 };
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(Hello::decode(&bad).unwrap_err().contains("not a shmring-rpc client"));
        let mut bad = h.encode();
        bad[31] = 1;
        assert!(Hello::decode(&bad).is_err());
        let none = Hello { transports: 0, ..h };
        assert!(Hello::decode(&none.encode()).is_err());

        let w = Welcome {
            version: VERSION,
            status: Status::Ok,
            transport: 1,
            wakeup: 1,
            max_frame: 1 << 20,
            ring_capacity: 1 << 20,
            fds: 2,
            message_len: 0,
        };
        assert_eq!(Welcome::decode(&w.encode()), Ok(w));
        assert!(Welcome::decode(&Welcome { fds: 1, ..w }.encode()).is_err(), "shm comes with two fds or more");
        assert!(Welcome::decode(&Welcome { fds: 5, ..w }.encode()).is_err(), "and at most four");
        assert!(Welcome::decode(&Welcome { wakeup: 3, ..w }.encode()).is_err(), "one way of waiting");
        assert!(Hello::decode(&Hello { wakeups: 0, ..h }.encode()).is_err());
        assert!(Hello::decode(&Hello { service: 3, ..h }.encode()).is_err());
        for service in [SERVICE_BYTES, SERVICE_TARPC] {
            let other = Hello { service, ..h };
            assert_eq!(Hello::decode(&other.encode()), Ok(other));
        }
        assert!(Welcome::decode(&Welcome { transport: 8, fds: 0, ..w }.encode()).is_err());
        assert!(Welcome::decode(&Welcome { message_len: 100_000, ..w }.encode()).is_err());
        assert_eq!(decode_ready(&ready(true)), Ok(true));
        assert_eq!(decode_ready(&ready(false)), Ok(false));
        assert!(decode_ready(&[0; 16]).is_err());
    }
}
