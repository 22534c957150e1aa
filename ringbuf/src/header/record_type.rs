//! The record type of a typed ring, as the header records it.

use super::abi::Header;
use crate::sync::Ordering;

/// The record type of a typed ring (see `typed`): size, alignment, name and
/// a fingerprint, recorded in the header by the creator and compared by
/// every typed opener.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecordType {
    /// `size_of::<T>()` in bytes.
    pub size: u32,
    /// `align_of::<T>()` in bytes.
    pub align: u32,
    /// FNV-1a hash of the name, size and alignment.
    pub fingerprint: u64,
    name: [u8; RecordType::NAME_MAX],
}

impl RecordType {
    /// Longest name kept, in bytes; longer names are cut (at a character
    /// boundary) and still distinguished by the fingerprint.
    pub const NAME_MAX: usize = 96;

    /// Describe a type by its name, size and alignment.
    pub fn new(name: &str, size: usize, align: usize) -> RecordType {
        let (size, align) = (size as u32, align as u32);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes().chain(size.to_le_bytes()).chain(align.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let mut cut = name.len().min(Self::NAME_MAX);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut buf = [0u8; Self::NAME_MAX];
        buf[..cut].copy_from_slice(&name.as_bytes()[..cut]);
        RecordType { size, align, fingerprint: h.max(1), name: buf }
    }

    /// The type's name as recorded (possibly cut to [`RecordType::NAME_MAX`]
    /// bytes), with control characters escaped: the words come from shared
    /// memory, and the name ends up in error messages and on terminals.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(Self::NAME_MAX);
        match std::str::from_utf8(&self.name[..end]) {
            Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
            Ok(s) => s.escape_debug().to_string(),
            Err(_) => "(not UTF-8)".to_owned(),
        }
    }

    /// Rebuild from header words (the name zero-padded, as stored).
    #[cfg(not(loom))]
    pub(crate) fn from_parts(size: u32, align: u32, fingerprint: u64, name: [u8; RecordType::NAME_MAX]) -> RecordType {
        RecordType { size, align, fingerprint, name }
    }

    /// Write into a header being initialised (before READY).
    pub(crate) fn store(&self, h: &Header) {
        h.type_size.store(self.size, Ordering::Relaxed);
        h.type_align.store(self.align, Ordering::Relaxed);
        h.type_fingerprint.store(self.fingerprint, Ordering::Relaxed);
        for (word, chunk) in h.type_name.iter().zip(self.name.chunks_exact(8)) {
            word.store(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])), Ordering::Relaxed);
        }
    }

    /// Read from a header: `Ok(None)` if untyped, `Err` with what is wrong if
    /// the words are impossible.
    pub(crate) fn load(h: &Header) -> std::result::Result<Option<RecordType>, String> {
        let size = h.type_size.load(Ordering::Relaxed);
        let align = h.type_align.load(Ordering::Relaxed);
        let fingerprint = h.type_fingerprint.load(Ordering::Relaxed);
        if let Some(what) = record_type_problem(size, align, fingerprint) {
            return Err(what);
        }
        if fingerprint == 0 {
            return Ok(None); // all three zero: untyped
        }
        let mut name = [0u8; Self::NAME_MAX];
        for (word, chunk) in h.type_name.iter().zip(name.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        Ok(Some(RecordType { size, align, fingerprint, name }))
    }
}

/// What is impossible about a header's record type words, if anything
/// (all zero: an untyped ring).
pub fn record_type_problem(size: u32, align: u32, fingerprint: u64) -> Option<String> {
    let untyped = size == 0 && align == 0 && fingerprint == 0;
    let typed = align.is_power_of_two() && size.is_multiple_of(align) && fingerprint != 0;
    (!untyped && !typed)
        .then(|| format!("record type words impossible: size {size}, align {align}, fingerprint {fingerprint:#x}"))
}

impl std::fmt::Debug for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes, align {}, fingerprint {:#018x})", self.name(), self.size, self.align, self.fingerprint)
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes, align {})", self.name(), self.size, self.align)
    }
}
