//! Plain reads of words from bytes copied out of a segment: out-of-range
//! bytes read as zero, so a short or damaged file never panics a reader.

/// The native-endian u32 at byte `off` of `b`, or 0 past its end.
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off.saturating_add(4)).and_then(|s| s.try_into().ok()).map_or(0, u32::from_ne_bytes)
}

/// The native-endian u64 at byte `off` of `b`, or 0 past its end.
pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off.saturating_add(8)).and_then(|s| s.try_into().ok()).map_or(0, u64::from_ne_bytes)
}
