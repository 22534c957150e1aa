//! The SPSC record format: header words, flags and sizes.

/// Record header flag: padding (to the end of the region, or to align the
/// next batch to a cache line); skip `len` bytes, header included.
pub const FLAG_PAD: u32 = 1;
/// Record header flag: a record (set on every record, so that no header
/// word is zero, the value that means "nothing here yet").
pub const FLAG_RECORD: u32 = 2;
/// Record header flag: a run of records of one length, packed without
/// headers of their own. The count is in the top 16 bits of the flags.
pub const FLAG_RUN: u32 = 4;
/// Most records one run header covers.
pub(crate) const MAX_RUN: u32 = 0xffff;
/// Bytes of record header before each payload.
pub const RECORD_HEADER: u64 = 8;

/// Header word of a run of `count` records of `len` payload bytes each.
#[inline]
pub(super) const fn run_word(len: usize, count: u32) -> u64 {
    (((FLAG_RUN | (count << 16)) as u64) << 32) | len as u64
}

/// Header word of a record of `len` payload bytes.
#[inline]
pub(super) const fn record_word(len: usize) -> u64 {
    ((FLAG_RECORD as u64) << 32) | len as u64
}

/// Header word of a padding record of `len` bytes (header included).
#[inline]
pub(super) const fn pad_word(len: u64) -> u64 {
    ((FLAG_PAD as u64) << 32) | len
}

/// Bytes a record of `len` payload bytes occupies in the ring.
///
/// ```
/// assert_eq!(shmring::spsc::record_size(0), 8);
/// assert_eq!(shmring::spsc::record_size(1), 16);
/// assert_eq!(shmring::spsc::record_size(64), 72);
/// ```
pub const fn record_size(len: usize) -> u64 {
    RECORD_HEADER + ((len as u64 + 7) & !7)
}
