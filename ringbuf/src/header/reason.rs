//! An aborting handle's reason, in its role slot or participant entry,
//! and how it is shown.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Longest reason an aborting handle leaves for its peers, in bytes.
pub const REASON_MAX: usize = 64;

/// Why a handle aborted: up to [`REASON_MAX`] bytes of text, written by the
/// aborting handle before it stores its aborted state (Release), read after
/// that state is seen (Acquire). The bytes are untrusted: readers show them
/// escaped ([`escape_reason`]), and a length above [`REASON_MAX`] is
/// corruption.
#[derive(Debug)]
#[repr(C)]
pub struct Reason {
    /// Length of the reason in bytes, `0..=REASON_MAX`; 0: none given.
    pub len: AtomicU32,
    _reserved: AtomicU32,
    /// The bytes, 8 to a word, in memory order (as `RawReason::parse` reads them).
    pub bytes: [AtomicU64; REASON_MAX / 8],
}

impl Reason {
    /// No reason (used by heap-allocated models and tests).
    pub fn new() -> Reason {
        Reason {
            len: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            bytes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Write `text`, cut to [`REASON_MAX`] bytes at a character boundary.
    /// Relaxed: the caller publishes it with the Release store of its state.
    pub(crate) fn store(&self, text: &str) {
        let mut cut = text.len().min(REASON_MAX);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let b = &text.as_bytes()[..cut];
        for (i, word) in self.bytes.iter().enumerate().take(cut.div_ceil(8)) {
            let mut w = [0u8; 8];
            let chunk = &b[i * 8..b.len().min(i * 8 + 8)];
            w[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
        self.len.store(cut as u32, Ordering::Relaxed);
    }

    /// Read the reason, escaped for display; `Err` naming the length word
    /// if it is impossible. The caller has seen the aborted state with
    /// Acquire. Relaxed: ordered by that load.
    pub(crate) fn load(&self) -> std::result::Result<String, String> {
        let mut raw = RawReason { len: self.len.load(Ordering::Relaxed), bytes: vec![0; REASON_MAX] };
        for (word, chunk) in self.bytes.iter().zip(raw.bytes.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        raw.text()
    }
}

impl Default for Reason {
    fn default() -> Self {
        Self::new()
    }
}

/// An abort reason as it may be shown on a terminal or in a log: valid
/// UTF-8 is kept but for control characters (escaped as `\n`, `\u{1b}`,
/// ...), and every byte that is not UTF-8 is shown as `\xNN`.
///
/// ```
/// assert_eq!(shmring::header::escape_reason(b"disk full"), "disk full");
/// assert_eq!(shmring::header::escape_reason(b"bad\n\xff\x1b[2J"), "bad\\n\\xff\\u{1b}[2J");
/// ```
pub fn escape_reason(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A [`Reason`] copied out of a segment with plain reads, not yet checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawReason {
    /// The length word.
    pub len: u32,
    /// All [`REASON_MAX`] bytes (fewer if the page was short).
    pub bytes: Vec<u8>,
}

impl RawReason {
    /// Decode the reason at byte `off` of `page` (missing bytes read as zero).
    #[cfg(not(loom))]
    pub fn parse(page: &[u8], off: usize) -> RawReason {
        let start = off + std::mem::offset_of!(Reason, bytes);
        let bytes = page.get(start..(start + REASON_MAX).min(page.len())).unwrap_or(&[]).to_vec();
        let len = page
            .get(off + std::mem::offset_of!(Reason, len)..)
            .and_then(|b| b.get(..4))
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        RawReason { len, bytes }
    }

    /// The reason escaped for display ([`escape_reason`]), or what is
    /// impossible about its length word.
    pub fn text(&self) -> std::result::Result<String, String> {
        if self.len as usize > REASON_MAX {
            return Err(format!("abort reason length word is {}, more than {REASON_MAX}", self.len));
        }
        Ok(escape_reason(&self.bytes[..(self.len as usize).min(self.bytes.len())]))
    }
}
