//! The message encoding of the tarpc transport (bincode, as tarpc's own
//! `Bincode::default()`), its errors, and [`FrameCodec`]: frames over a
//! socket, a 16-byte header then the bincode payload.

use std::io;
use std::marker::PhantomData;

use bincode::Options;
use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{FrameError, HEADER_LEN, Header, Kind};

/// The bincode configuration of every message: bincode 1's
/// `DefaultOptions` (variable-length integers, little-endian, trailing
/// bytes refused), the configuration of
/// `tarpc::tokio_serde::formats::Bincode::default()`. It sets no byte
/// limit, which would cost a check per value decoded: a message is decoded from a slice of its frame's length, which
/// bincode checks every length field against, and serde preallocates at
/// most 1 MiB for a sequence whatever its length field says, so a hostile
/// message cannot make the decoder allocate much beyond its own size.
pub(crate) fn bincode() -> impl Options + Copy {
    bincode::DefaultOptions::new()
}

/// A bincode error, in `what` a message from or to `peer`, as an I/O
/// error.
pub(crate) fn codec_error(peer: &str, what: &str, e: &bincode::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what} a message {peer}: {e}"))
}

/// A frame that breaks the rules, from `peer`.
pub(crate) fn frame_error(peer: &str, e: &FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad frame from {peer}: {e}"))
}

/// A message larger than the connection allows.
pub(crate) fn too_large(size: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a message of {size} bytes exceeds the connection's maximum frame of {max} bytes"),
    )
}

/// What each side sends, and what it takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kinds {
    pub(crate) send: Kind,
    pub(crate) recv: Kind,
}

/// The client sends requests and takes responses.
pub(crate) const CLIENT: Kinds = Kinds { send: Kind::Request, recv: Kind::Response };
/// The server takes requests and sends responses.
pub(crate) const SERVER: Kinds = Kinds { send: Kind::Response, recv: Kind::Request };

/// What a transport reads and writes (it holds neither).
pub(crate) type Carries<Item, SinkItem> = (fn() -> Item, fn(SinkItem));

/// A `Serialize` that wrote another number of bytes than it measured.
pub(crate) fn changed_size(peer: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("encoding a message to {peer}: its size changed while it was written"),
    )
}

/// Frames over a socket: a 16-byte header, then the bincode payload.
pub(crate) struct FrameCodec<Item, SinkItem> {
    pub(crate) max_frame: u64,
    pub(crate) kinds: Kinds,
    pub(crate) next_id: u64,
    pub(crate) peer: String,
    pub(crate) ghost: PhantomData<Carries<Item, SinkItem>>,
}

impl<Item: DeserializeOwned, SinkItem> Decoder for FrameCodec<Item, SinkItem> {
    type Item = Item;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Item>> {
        if src.len() < HEADER_LEN {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        }
        let h = Header::decode(&src[..HEADER_LEN], self.max_frame).map_err(|e| frame_error(&self.peer, &e))?;
        // Frames travel whole over a socket: no chunk flag.
        if h.kind != self.kinds.recv || h.flags != 0 {
            return Err(frame_error(&self.peer, &FrameError::Flags { flags: h.flags, kind: h.kind }));
        }
        let end = HEADER_LEN + h.len as usize;
        if src.len() < end {
            src.reserve(end - src.len());
            return Ok(None);
        }
        let item = bincode().deserialize(&src[HEADER_LEN..end]).map_err(|e| codec_error(&self.peer, "decoding", &e))?;
        src.advance(end);
        Ok(Some(item))
    }
}

impl<Item, SinkItem: Serialize> Encoder<SinkItem> for FrameCodec<Item, SinkItem> {
    type Error = io::Error;

    fn encode(&mut self, item: SinkItem, dst: &mut BytesMut) -> io::Result<()> {
        let opts = bincode();
        let size = opts.serialized_size(&item).map_err(|e| codec_error(&self.peer, "encoding", &e))?;
        if size > self.max_frame {
            return Err(too_large(size, self.max_frame));
        }
        let start = dst.len();
        dst.reserve(HEADER_LEN + size as usize);
        let h = Header { id: self.next_id, len: size as u32, kind: self.kinds.send, flags: 0 };
        dst.put_slice(&h.encode());
        let mut w = dst.writer();
        let written = opts.serialize_into(&mut w, &item);
        let dst = w.into_inner();
        if let Err(e) = written {
            dst.truncate(start);
            return Err(codec_error(&self.peer, "encoding", &e));
        }
        if dst.len() - start != HEADER_LEN + size as usize {
            dst.truncate(start);
            return Err(changed_size(&self.peer));
        }
        self.next_id += 1;
        Ok(())
    }
}
