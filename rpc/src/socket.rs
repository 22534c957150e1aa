//! Frames over a socket (the UNIX-socket fallback and TCP): the 16-byte
//! header, then the payload.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, time_left};
use crate::frame::{self, Header};

/// A connected byte stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

pub(crate) fn stream_error(peer: &str, doing: &str, e: std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => Error::Closed(peer.to_owned()),
        _ => Error::io(format!("{doing} {peer}"), e),
    }
}

/// Read exactly `buf.len()` bytes before `deadline`. `Ok(false)`: end of
/// stream before the first byte (only if `at_boundary`).
pub(crate) fn read_full(
    s: &mut Stream,
    buf: &mut [u8],
    deadline: Option<Instant>,
    at_boundary: bool,
    peer: &str,
) -> Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let left = match time_left(deadline, peer) {
            Ok(left) => left,
            Err(e) if got == 0 && at_boundary => return Err(e),
            Err(_) => return Err(Error::protocol(peer, "timed out in the middle of a frame")),
        };
        s.set_read_timeout(left).map_err(|e| Error::io(format!("receiving from {peer}"), e))?;
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 && at_boundary => return Ok(false),
            Ok(0) => return Err(Error::protocol(peer, "the connection closed in the middle of a frame")),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if got == 0 && at_boundary {
                    return Err(Error::Timeout(peer.to_owned()));
                }
                return Err(Error::protocol(peer, "timed out in the middle of a frame"));
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset && got == 0 && at_boundary => return Ok(false),
            Err(e) => return Err(stream_error(peer, "receiving from", e)),
        }
    }
    Ok(true)
}

/// The next frame from a socket.
pub(crate) fn stream_recv(
    s: &mut Stream,
    deadline: Option<Instant>,
    max: u64,
    peer: &str,
) -> Result<Option<(Header, Vec<u8>)>> {
    let mut hb = [0u8; frame::HEADER_LEN];
    if !read_full(s, &mut hb, deadline, true, peer)? {
        return Ok(None);
    }
    let h = Header::decode(&hb, max).map_err(|e| Error::frame(peer, e))?;
    let mut payload = vec![0u8; h.len as usize];
    read_full(s, &mut payload, deadline, false, peer)?;
    Ok(Some((h, payload)))
}
