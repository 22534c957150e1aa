//! The frame: the unit every transport carries, in both directions.
//!
//! ```text
//! offset  size  field
//! 0       8     request id (u64, little-endian): chosen by the client, echoed by the server
//! 8       4     payload length in bytes (u32) of this frame, or of this chunk of it
//! 12      1     kind: 1 request, 2 response, 3 error, 4 cancel, 5 ping
//! 13      1     flags: bit 0 MORE (more chunks of this frame follow), bit 1 REPLY (a ping's answer)
//! 14      2     reserved, zero
//! 16      len   payload
//! ```
//!
//! Over a socket a frame travels whole: the 16-byte header, then the
//! payload. Through a ring a frame larger than one record is split into
//! chunks, each a record holding a header (same id and kind, `MORE` on all
//! but the last) and a part of the payload, in order; the receiver joins
//! them. Every header read from the peer is checked: an unknown kind or
//! flag, a non-zero reserved field, or a length over the connection's
//! maximum frame size is [`FrameError`], and ends the connection.

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 16;
/// Flag: more chunks of this frame follow (ring transport only).
pub const FLAG_MORE: u8 = 1;
/// Flag: this ping answers one (sent back with the ping's id and payload).
pub const FLAG_REPLY: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_MORE | FLAG_REPLY;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A call: the payload is the request.
    Request = 1,
    /// The answer to the request of the same id.
    Response = 2,
    /// The request of the same id failed on the server: the payload is a
    /// UTF-8 message.
    Error = 3,
    /// The client gave up on the request of the same id (no payload).
    Cancel = 4,
    /// Liveness and latency probe: answered with the same id and payload
    /// and [`FLAG_REPLY`].
    Ping = 5,
}

impl Kind {
    /// Decode a kind byte.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Error,
            4 => Kind::Cancel,
            5 => Kind::Ping,
            _ => return None,
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Request id.
    pub id: u64,
    /// Payload bytes that follow (of this chunk, when chunked).
    pub len: u32,
    /// What the frame is.
    pub kind: Kind,
    /// [`FLAG_MORE`] and [`FLAG_REPLY`].
    pub flags: u8,
}

/// What is wrong with a frame (or chunk) read from the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than [`HEADER_LEN`] bytes where a header must be.
    #[error("frame header of {0} bytes, expected 16")]
    Short(usize),
    /// The kind byte is not one of the five.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// Flag bits outside [`FLAG_MORE`] and [`FLAG_REPLY`], or a flag that
    /// does not fit the kind.
    #[error("frame flags {flags:#04x} impossible for a {kind:?} frame")]
    Flags {
        /// The flags byte.
        flags: u8,
        /// The kind it came with.
        kind: Kind,
    },
    /// The reserved field is not zero.
    #[error("frame reserved field is {0:#06x}, expected 0")]
    Reserved(u16),
    /// The frame (or the frame its chunks add up to) is larger than the
    /// connection allows.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Its length, as far as it was counted.
        len: u64,
        /// The maximum agreed in the handshake.
        max: u64,
    },
    /// A chunk of another frame arrived before the last chunk of this one.
    #[error("chunk of frame {got} (kind {got_kind:?}) inside frame {want} (kind {want_kind:?})")]
    Interleaved {
        /// The id being joined.
        want: u64,
        /// Its kind.
        want_kind: Kind,
        /// The id that arrived.
        got: u64,
        /// Its kind.
        got_kind: Kind,
    },
}

impl Header {
    /// Encode into 16 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12] = self.kind as u8;
        b[13] = self.flags;
        b
    }

    /// Decode and check the first 16 bytes of `b`: a chunk of at most `max`
    /// payload bytes.
    ///
    /// ```
    /// use shmring_rpc::frame::{Header, Kind};
    /// let h = Header { id: 7, len: 3, kind: Kind::Request, flags: 0 };
    /// assert_eq!(Header::decode(&h.encode(), 1024), Ok(h));
    /// assert!(Header::decode(&h.encode(), 2).is_err()); // longer than allowed
    /// ```
    ///
    /// # Errors
    /// [`FrameError`], saying what is wrong.
    pub fn decode(b: &[u8], max: u64) -> Result<Header, FrameError> {
        let Some(b) = b.get(..HEADER_LEN) else { return Err(FrameError::Short(b.len())) };
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[..8]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&b[8..12]);
        let (id, len) = (u64::from_le_bytes(id), u32::from_le_bytes(len));
        let kind = Kind::from_u8(b[12]).ok_or(FrameError::Kind(b[12]))?;
        let flags = b[13];
        let reply_ok = kind == Kind::Ping || flags & FLAG_REPLY == 0;
        if flags & !KNOWN_FLAGS != 0 || !reply_ok {
            return Err(FrameError::Flags { flags, kind });
        }
        let reserved = u16::from_le_bytes([b[14], b[15]]);
        if reserved != 0 {
            return Err(FrameError::Reserved(reserved));
        }
        if u64::from(len) > max {
            return Err(FrameError::TooLarge { len: len.into(), max });
        }
        Ok(Header { id, len, kind, flags })
    }
}

/// A whole frame, received: header fields and the payload, copied out of
/// the transport (the peer cannot change it any more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Request id.
    pub id: u64,
    /// What it is.
    pub kind: Kind,
    /// [`FLAG_REPLY`] for a ping's answer; [`FLAG_MORE`] never appears here.
    pub flags: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Joins chunks into frames: feed each chunk's header and payload in
/// arrival order; a frame is complete when a chunk without [`FLAG_MORE`]
/// arrives.
#[derive(Debug)]
pub struct Joiner {
    max: u64,
    open: Option<Frame>,
}

impl Joiner {
    /// A joiner for frames of at most `max` payload bytes.
    pub fn new(max: u64) -> Joiner {
        Joiner { max, open: None }
    }

    /// Whether a frame is half joined: chunks of it came, its last did not.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Add a chunk; `Ok(Some(frame))` when it completes one.
    ///
    /// ```
    /// use shmring_rpc::frame::{FLAG_MORE, Header, Joiner, Kind};
    /// let mut j = Joiner::new(10);
    /// let h = |len, flags| Header { id: 1, len, kind: Kind::Request, flags };
    /// assert_eq!(j.push(h(3, FLAG_MORE), b"abc"), Ok(None));
    /// assert_eq!(j.push(h(2, 0), b"de").unwrap().unwrap().payload, b"abcde");
    /// assert!(j.push(h(6, FLAG_MORE), b"abcdef").is_ok());
    /// assert!(j.push(h(6, 0), b"ghijkl").is_err()); // 12 bytes > 10
    /// ```
    ///
    /// # Errors
    /// [`FrameError::Interleaved`] for a chunk of another frame than the
    /// open one, [`FrameError::TooLarge`] if the chunks add up to more than
    /// the maximum.
    pub fn push(&mut self, h: Header, payload: &[u8]) -> Result<Option<Frame>, FrameError> {
        self.push_vec(h, payload.to_vec())
    }

    /// [`Joiner::push`] of a payload already copied out: a frame of one
    /// chunk keeps the buffer as it is, with no further copy.
    ///
    /// # Errors
    /// As [`Joiner::push`].
    pub fn push_vec(&mut self, h: Header, payload: Vec<u8>) -> Result<Option<Frame>, FrameError> {
        let frame = match self.open.take() {
            Some(f) if f.id != h.id || f.kind != h.kind => {
                return Err(FrameError::Interleaved { want: f.id, want_kind: f.kind, got: h.id, got_kind: h.kind });
            }
            Some(mut f) => {
                let len = (f.payload.len() + payload.len()) as u64;
                if len > self.max {
                    return Err(FrameError::TooLarge { len, max: self.max });
                }
                f.payload.extend_from_slice(&payload);
                f
            }
            None => {
                if payload.len() as u64 > self.max {
                    return Err(FrameError::TooLarge { len: payload.len() as u64, max: self.max });
                }
                Frame { id: h.id, kind: h.kind, flags: h.flags & FLAG_REPLY, payload }
            }
        };
        if h.flags & FLAG_MORE != 0 {
            self.open = Some(frame);
            return Ok(None);
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_checked() {
        let good = Header { id: u64::MAX, len: 100, kind: Kind::Ping, flags: FLAG_REPLY | FLAG_MORE };
        let b = good.encode();
        assert_eq!(Header::decode(&b, 100), Ok(good));
        assert_eq!(Header::decode(&b[..15], 100), Err(FrameError::Short(15)));
        let mut bad = b;
        bad[12] = 9;
        assert_eq!(Header::decode(&bad, 100), Err(FrameError::Kind(9)));
        let mut bad = b;
        bad[13] = 4;
        assert!(matches!(Header::decode(&bad, 100), Err(FrameError::Flags { .. })));
        let reply_on_request = Header { kind: Kind::Request, ..good }.encode();
        assert!(matches!(Header::decode(&reply_on_request, 100), Err(FrameError::Flags { .. })));
        let mut bad = b;
        bad[15] = 1;
        assert_eq!(Header::decode(&bad, 100), Err(FrameError::Reserved(256)));
        assert_eq!(Header::decode(&b, 99), Err(FrameError::TooLarge { len: 100, max: 99 }));
    }

    #[test]
    fn chunks_of_two_frames_do_not_mix() {
        let mut j = Joiner::new(100);
        let h = |id, flags| Header { id, len: 1, kind: Kind::Response, flags };
        assert_eq!(j.push(h(1, FLAG_MORE), b"a"), Ok(None));
        assert!(matches!(j.push(h(2, 0), b"b"), Err(FrameError::Interleaved { want: 1, got: 2, .. })));
    }
}
