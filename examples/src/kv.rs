//! The request and reply format of the `kv_server` / `kv_client` examples:
//! a key-value store over shmring-rpc's native calls.
//!
//! ```text
//! request:  op (1 byte: g get, s set, d delete) | key length (u32 LE) | key | value (set only)
//! reply:    status (1 byte: + found or done, - not found, ! bad request) | value (get only)
//! ```

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read a key.
    Get(Vec<u8>),
    /// Write a key.
    Set(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Del(Vec<u8>),
}

impl Request {
    /// The bytes of a call.
    ///
    /// ```
    /// use shmring_examples::kv::Request;
    /// let r = Request::Set(b"k".to_vec(), b"v".to_vec());
    /// assert_eq!(Request::decode(&r.encode()), Some(r));
    /// assert_eq!(Request::decode(b"x"), None);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let (op, key, value): (u8, &[u8], &[u8]) = match self {
            Request::Get(k) => (b'g', k, &[]),
            Request::Set(k, v) => (b's', k, v),
            Request::Del(k) => (b'd', k, &[]),
        };
        let mut b = Vec::with_capacity(5 + key.len() + value.len());
        b.push(op);
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(value);
        b
    }

    /// Decode a call's bytes; `None` if they are not a request.
    pub fn decode(b: &[u8]) -> Option<Request> {
        let (&op, rest) = b.split_first()?;
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let key = rest.get(4..4 + len)?.to_vec();
        let value = &rest[4 + len..];
        match op {
            b'g' if value.is_empty() => Some(Request::Get(key)),
            b's' => Some(Request::Set(key, value.to_vec())),
            b'd' if value.is_empty() => Some(Request::Del(key)),
            _ => None,
        }
    }
}

/// Reply status: found (get), or done (set, delete).
pub const FOUND: u8 = b'+';
/// Reply status: no such key.
pub const NOT_FOUND: u8 = b'-';
/// Reply status: the request did not decode.
pub const BAD_REQUEST: u8 = b'!';
