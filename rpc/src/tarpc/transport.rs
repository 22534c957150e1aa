//! [`ShmTransport`]: tarpc messages as frames, encoded by bincode straight
//! into the ring; and [`Incoming`], the server's stream of them.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bincode::Options;
use futures_util::{Sink, Stream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::Framed;

use crate::addr::Addr;
use crate::async_link::AsyncWait;
use crate::error::Result;
use crate::frame::{FLAG_MORE, FrameError, HEADER_LEN, Header, Kind};
use crate::handshake::Mode;
use crate::listen::Acceptor;
use crate::options::{ClientOptions, ServerOptions};
use crate::ring_io::{RingIo, ring_io};
use crate::stream::ShmStream;
use crate::transport::{Link, Path, TransportKind};

use super::codec::{CLIENT, Carries, FrameCodec, Kinds, SERVER, bincode, changed_size, codec_error, too_large};

/// Payload bytes in one chunk of a message too large for one record: the
/// reader copies a chunk out while the writer fills the next.
const CHUNK_MAX: usize = 64 << 10;

/// A receive buffer that grew past this is given back after its message.
const KEEP_MAX: usize = 2 << 20;

/// A tarpc transport over shmring: a `Stream` of `Item`s and a `Sink` of
/// `SinkItem`s (tarpc implements its `Transport` for any such type), made
/// by [`super::connect`] on the client (`Item` = `tarpc::Response<_>`,
/// `SinkItem` = `tarpc::ClientMessage<_>`) and yielded by [`Incoming`] on
/// the server (the other way round).
///
/// Each message is one frame (`shmring_rpc::frame`): kind request from the
/// client, response from the server, the message's number on the
/// connection as its id, and the message encoded by bincode as its payload
/// (see [`super`] for the format). Over the rings a message that fits in
/// one record is encoded straight into it; a larger one is encoded once
/// into a buffer and sent in chunks of 64 KiB. A received message is copied
/// out of the ring before it is decoded: the peer cannot change it under
/// the decoder. Over a socket, frames travel whole.
///
/// Errors are `std::io::Error`s: `InvalidData` for a frame or message that
/// breaks the format, `InvalidInput` for a message over the maximum frame
/// size, `ConnectionReset` or `ConnectionAborted` for a peer that died or
/// aborted, `BrokenPipe` after the peer went away. The stream ends (`None`)
/// only when the peer closed its side; a peer that died ends it with an
/// error, at once (its socket's end wakes the reader).
pub struct ShmTransport<Item, SinkItem> {
    inner: Inner<Item, SinkItem>,
    kind: TransportKind,
    peer: String,
}

enum Inner<Item, SinkItem> {
    Rings(Box<Rings>),
    Socket(Framed<ShmStream, FrameCodec<Item, SinkItem>>),
}

// No field is pinned: the rings and the socket stream are `Unpin`, and the
// type parameters are only what it reads and writes.
impl<Item, SinkItem> Unpin for ShmTransport<Item, SinkItem> {}

impl<Item, SinkItem> std::fmt::Debug for ShmTransport<Item, SinkItem> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTransport").field("peer", &self.peer).field("transport", &self.kind).finish()
    }
}

impl<Item, SinkItem> ShmTransport<Item, SinkItem> {
    /// Take a connected link over (on the current runtime).
    pub(crate) fn from_link(link: Link, wait: AsyncWait, kinds: Kinds) -> Result<Self> {
        let (path, kind, peer, max_frame) = link.into_parts();
        let inner = match path {
            Path::Shm(rings) => {
                let io = RingIo::new(*rings, &peer, wait)?;
                Inner::Rings(Box::new(Rings {
                    io,
                    max_frame,
                    kinds,
                    next_id: 0,
                    out: Vec::new(),
                    out_at: 0,
                    out_id: 0,
                    sending: false,
                    joining: None,
                    inbox: Vec::new(),
                    broken: None,
                }))
            }
            path => {
                let stream = ShmStream::from_link(Link::new(path, kind, peer.clone(), max_frame), wait)?;
                let codec = FrameCodec { max_frame, kinds, next_id: 0, peer: peer.clone(), ghost: PhantomData };
                Inner::Socket(Framed::new(stream, codec))
            }
        };
        Ok(ShmTransport { inner, kind, peer })
    }

    /// The transport the connection uses.
    pub fn transport(&self) -> TransportKind {
        self.kind
    }

    /// The peer, as error messages name it.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl<Item: DeserializeOwned, SinkItem> Stream for ShmTransport<Item, SinkItem> {
    type Item = io::Result<Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Item>>> {
        let this = Pin::into_inner(self);
        match &mut this.inner {
            Inner::Rings(r) => r.poll_next(cx, &this.peer),
            Inner::Socket(f) => Pin::new(f).poll_next(cx),
        }
    }
}

impl<Item, SinkItem: Serialize> Sink<SinkItem> for ShmTransport<Item, SinkItem> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = Pin::into_inner(self);
        match &mut this.inner {
            Inner::Rings(r) => r.poll_drain(cx),
            Inner::Socket(f) => Pin::new(f).poll_ready(cx),
        }
    }

    fn start_send(self: Pin<&mut Self>, item: SinkItem) -> io::Result<()> {
        let this = Pin::into_inner(self);
        match &mut this.inner {
            Inner::Rings(r) => r.start_send(&item, &this.peer),
            Inner::Socket(f) => Pin::new(f).start_send(item),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = Pin::into_inner(self);
        match &mut this.inner {
            Inner::Rings(r) => r.poll_drain(cx),
            Inner::Socket(f) => Pin::new(f).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = Pin::into_inner(self);
        match &mut this.inner {
            Inner::Rings(r) => {
                ready!(r.poll_drain(cx))?;
                Poll::Ready(r.io.shutdown())
            }
            Inner::Socket(f) => Pin::new(f).poll_close(cx),
        }
    }
}

/// The ring side of a transport.
struct Rings {
    io: RingIo,
    max_frame: u64,
    kinds: Kinds,
    /// The id of the next message sent.
    next_id: u64,
    /// A message that did not go straight into the ring, encoded; `out_at`
    /// bytes of it are sent.
    out: Vec<u8>,
    out_at: usize,
    out_id: u64,
    /// `out` holds a message still to send (or the rest of one).
    sending: bool,
    /// The id of the message whose chunks are arriving, if one is.
    joining: Option<u64>,
    /// The payload of the message arriving, copied out of the ring.
    inbox: Vec<u8>,
    /// Why the connection is out of step for good, if it is.
    broken: Option<String>,
}

/// A received record, as [`Rings::take`] found it.
#[derive(Debug)]
enum Took {
    /// A whole message is in the inbox.
    Message,
    /// A chunk of one; more follow.
    Chunk,
}

impl Rings {
    fn check_broken(&self) -> io::Result<()> {
        match &self.broken {
            Some(why) => Err(io::Error::new(io::ErrorKind::InvalidData, why.clone())),
            None => Ok(()),
        }
    }

    /// Out of step for good: every later call fails with `e`'s message.
    fn break_with(&mut self, e: io::Error) -> io::Error {
        self.broken = Some(e.to_string());
        e
    }

    fn poll_next<Item: DeserializeOwned>(
        &mut self,
        cx: &mut Context<'_>,
        peer: &str,
    ) -> Poll<Option<io::Result<Item>>> {
        if let Err(e) = self.check_broken() {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let (max, kinds, joining, inbox) = (self.max_frame, self.kinds, &mut self.joining, &mut self.inbox);
            let took = ready!(self.io.poll_recv(cx, |rec| Rings::take(rec, max, kinds.recv, joining, inbox)));
            let took = match took {
                Ok(Some(Ok(took))) => took,
                Ok(Some(Err(why))) => {
                    let e = io::Error::new(io::ErrorKind::InvalidData, format!("bad frame from {peer}: {why}"));
                    return Poll::Ready(Some(Err(self.break_with(e))));
                }
                Ok(None) if self.joining.is_some() => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{peer} closed the connection in the middle of a message"),
                    );
                    return Poll::Ready(Some(Err(self.break_with(e))));
                }
                Ok(None) => return Poll::Ready(None),
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            if let Took::Chunk = took {
                continue;
            }
            let decoded = bincode().deserialize(&self.inbox);
            self.inbox.clear();
            if self.inbox.capacity() > KEEP_MAX {
                self.inbox = Vec::new();
            }
            return Poll::Ready(Some(decoded.map_err(|e| self.break_with(codec_error(peer, "decoding", &e)))));
        }
    }

    /// Copy a record out of the ring and check it: a whole message, or a
    /// chunk of one, added to `inbox`. The error says what is wrong.
    fn take(
        rec: &[u8],
        max: u64,
        want: Kind,
        joining: &mut Option<u64>,
        inbox: &mut Vec<u8>,
    ) -> std::result::Result<Took, String> {
        // The header first, into our memory: the peer can still write the
        // record, and what we checked must be what we use.
        let mut head = [0u8; HEADER_LEN];
        let Some(h) = rec.get(..HEADER_LEN) else {
            return Err(format!("a ring record of {} bytes, shorter than a frame header", rec.len()));
        };
        head.copy_from_slice(h);
        let h = Header::decode(&head, max).map_err(|e| e.to_string())?;
        let body = &rec[HEADER_LEN..];
        if h.len as usize != body.len() {
            return Err(format!("a ring record of {} payload bytes holds a frame header for {}", body.len(), h.len));
        }
        if h.kind != want || h.flags & !FLAG_MORE != 0 {
            return Err(FrameError::Flags { flags: h.flags, kind: h.kind }.to_string());
        }
        if let Some(id) = *joining
            && id != h.id
        {
            return Err(FrameError::Interleaved { want: id, want_kind: want, got: h.id, got_kind: h.kind }.to_string());
        }
        let len = (inbox.len() + body.len()) as u64;
        if len > max {
            return Err(FrameError::TooLarge { len, max }.to_string());
        }
        // The payload, copied out in one go: decoded from our copy only.
        inbox.extend_from_slice(body);
        if h.flags & FLAG_MORE != 0 {
            *joining = Some(h.id);
            return Ok(Took::Chunk);
        }
        *joining = None;
        Ok(Took::Message)
    }

    fn start_send<T: Serialize>(&mut self, item: &T, peer: &str) -> io::Result<()> {
        self.check_broken()?;
        if self.sending {
            return Err(io::Error::other("start_send before poll_ready finished the message before"));
        }
        let opts = bincode();
        let size = opts.serialized_size(item).map_err(|e| codec_error(peer, "encoding", &e))?;
        if size > self.max_frame {
            return Err(too_large(size, self.max_frame));
        }
        // At most the maximum frame, itself a u32.
        let size = size as usize;
        let id = self.next_id;
        let tx = self.io.producer()?;
        if HEADER_LEN + size <= tx.max_record_len() {
            match tx.try_grant(HEADER_LEN + size) {
                Ok(mut g) => {
                    let h = Header { id, len: size as u32, kind: self.kinds.send, flags: 0 };
                    g[..HEADER_LEN].copy_from_slice(&h.encode());
                    let mut rest: &mut [u8] = &mut g[HEADER_LEN..];
                    let written = opts.serialize_into(&mut rest, item);
                    // A `Serialize` that wrote another length than it
                    // measured: the grant is dropped, nothing is published.
                    if let Err(e) = written {
                        return Err(codec_error(peer, "encoding", &e));
                    }
                    if !rest.is_empty() {
                        return Err(changed_size(peer));
                    }
                    g.commit();
                    self.next_id += 1;
                    return Ok(());
                }
                Err(shmring::Error::WouldBlock { .. }) => {}
                Err(e) => return Err(ring_io(e)),
            }
        }
        // No room now, or larger than a record: encoded here, sent by
        // `poll_drain`.
        self.out.clear();
        opts.serialize_into(&mut self.out, item).map_err(|e| codec_error(peer, "encoding", &e))?;
        if self.out.len() != size {
            return Err(changed_size(peer));
        }
        (self.out_at, self.out_id, self.sending) = (0, id, true);
        self.next_id += 1;
        Ok(())
    }

    /// Send what is left of the message in `out`, in chunks.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_broken()?;
        while self.sending {
            let room = self.io.max_record_len().saturating_sub(HEADER_LEN).clamp(1, CHUNK_MAX);
            let left = self.out.len() - self.out_at;
            let n = left.min(room);
            let more = if n < left { FLAG_MORE } else { 0 };
            let h = Header { id: self.out_id, len: n as u32, kind: self.kinds.send, flags: more };
            let chunk = &self.out[self.out_at..self.out_at + n];
            let put = ready!(self.io.poll_put(cx, HEADER_LEN + n, |g| {
                g[..HEADER_LEN].copy_from_slice(&h.encode());
                g[HEADER_LEN..].copy_from_slice(chunk);
            }));
            if let Err(e) = put {
                // Part of the message may be out: the peer would wait for
                // the rest for ever.
                return Poll::Ready(Err(if self.out_at > 0 { self.break_with(e) } else { e }));
            }
            self.out_at += n;
            if more == 0 {
                self.sending = false;
                if self.out.capacity() > KEEP_MAX {
                    self.out = Vec::new();
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The server-side transports of [`super::listen`]: a `Stream` of
/// `io::Result<ShmTransport>`, one per client, as tarpc's own listeners
/// yield. A client whose handshake fails is logged and skipped; the stream
/// ends after the error of a listener that failed for good.
pub struct Incoming<Item, SinkItem> {
    links: Acceptor,
    /// Accepting failed for good (its error was yielded once).
    done: bool,
    ghost: PhantomData<Carries<Item, SinkItem>>,
}

impl<Item, SinkItem> Unpin for Incoming<Item, SinkItem> {}

impl<Item, SinkItem> std::fmt::Debug for Incoming<Item, SinkItem> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").field("addr", self.links.local_addr()).finish()
    }
}

impl<Item, SinkItem> Incoming<Item, SinkItem> {
    pub(crate) fn bind(addr: &Addr, opts: &ServerOptions) -> Result<Self> {
        Ok(Incoming { links: Acceptor::bind(addr, opts, Mode::TARPC)?, done: false, ghost: PhantomData })
    }

    /// The address listened on (with the real port for `tcp:HOST:0`).
    pub fn local_addr(&self) -> &Addr {
        self.links.local_addr()
    }
}

impl<Item, SinkItem> Stream for Incoming<Item, SinkItem> {
    type Item = io::Result<ShmTransport<Item, SinkItem>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = Pin::into_inner(self);
        while !this.done {
            match ready!(this.links.poll_link(cx)) {
                Ok(link) => match ShmTransport::from_link(link, this.links.wait(), SERVER) {
                    Ok(t) => return Poll::Ready(Some(Ok(t))),
                    Err(e) => tracing::warn!("{e}"),
                },
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(io::Error::other(e))));
                }
            }
        }
        Poll::Ready(None)
    }
}

/// Connect with `opts`: the client's transport.
pub(crate) async fn connect<Item, SinkItem>(addr: &Addr, opts: &ClientOptions) -> Result<ShmTransport<Item, SinkItem>> {
    let (a, o) = (addr.clone(), opts.clone());
    let link = crate::async_client::blocking(move || crate::client::open_link(&a, &o, Mode::TARPC)).await?;
    ShmTransport::from_link(link, opts.stream_wait(), CLIENT)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;

    fn record(id: u64, kind: Kind, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut r = Header { id, len: body.len() as u32, kind, flags }.encode().to_vec();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn every_record_from_the_peer_is_checked() {
        let take = |rec: &[u8], joining: &mut Option<u64>, inbox: &mut Vec<u8>| {
            Rings::take(rec, 10, Kind::Request, joining, inbox)
        };
        let (mut joining, mut inbox) = (None, Vec::new());
        // Short, lying about its length, the wrong kind, a reply flag, too large.
        assert!(take(&[0; 15], &mut joining, &mut inbox).unwrap_err().contains("shorter than a frame header"));
        let mut lying = record(0, Kind::Request, 0, b"abc");
        lying.pop();
        assert!(take(&lying, &mut joining, &mut inbox).unwrap_err().contains("holds a frame header for 3"));
        assert!(take(&record(0, Kind::Response, 0, b"a"), &mut joining, &mut inbox).is_err());
        assert!(take(&record(0, Kind::Ping, 2, b"a"), &mut joining, &mut inbox).is_err());
        assert!(take(&record(0, Kind::Request, 0, &[1; 11]), &mut joining, &mut inbox).is_err());
        assert!(inbox.is_empty(), "nothing taken from a bad record");
        // Chunks join; another message's chunk in between is refused; the
        // total is bounded.
        assert!(matches!(
            take(&record(4, Kind::Request, FLAG_MORE, b"abcd"), &mut joining, &mut inbox),
            Ok(Took::Chunk)
        ));
        assert!(
            take(&record(5, Kind::Request, 0, b"x"), &mut joining, &mut inbox).unwrap_err().contains("inside frame 4")
        );
        assert!(matches!(take(&record(4, Kind::Request, 0, b"ef"), &mut joining, &mut inbox), Ok(Took::Message)));
        assert_eq!((inbox.as_slice(), joining), (&b"abcdef"[..], None));
        inbox.clear();
        assert!(take(&record(6, Kind::Request, FLAG_MORE, b"abcdefgh"), &mut joining, &mut inbox).is_ok());
        assert!(take(&record(6, Kind::Request, 0, b"ijk"), &mut joining, &mut inbox).unwrap_err().contains("exceeds"));
    }

    #[test]
    fn a_socket_frame_is_checked_and_decoded_whole() {
        let mut codec: FrameCodec<String, String> =
            FrameCodec { max_frame: 64, kinds: SERVER, next_id: 0, peer: "peer".into(), ghost: PhantomData };
        let mut client: FrameCodec<String, String> =
            FrameCodec { max_frame: 64, kinds: CLIENT, next_id: 0, peer: "peer".into(), ghost: PhantomData };
        let mut buf = BytesMut::new();
        client.encode("hello".to_owned(), &mut buf).unwrap();
        let whole = buf.clone();
        // Half a frame waits for the rest.
        let mut half = BytesMut::from(&whole[..whole.len() - 1]);
        assert!(codec.decode(&mut half).unwrap().is_none());
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("hello"));
        assert!(buf.is_empty());
        // A response where a request must be, and a chunk flag, are errors.
        let mut wrong = BytesMut::from(&record(0, Kind::Response, 0, &whole[HEADER_LEN..])[..]);
        assert!(codec.decode(&mut wrong).is_err());
        let mut chunk = BytesMut::from(&record(0, Kind::Request, FLAG_MORE, &whole[HEADER_LEN..])[..]);
        assert!(codec.decode(&mut chunk).is_err());
        // Garbage where the message must be.
        let mut garbage = BytesMut::from(&record(0, Kind::Request, 0, &[0xff; 9])[..]);
        assert!(codec.decode(&mut garbage).unwrap_err().to_string().contains("decoding a message"));
        // Too large to send.
        assert_eq!(client.encode("x".repeat(100), &mut buf).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(buf.is_empty(), "nothing of a refused message is left to send");
    }
}
