//! [`Geometry`]: the shape of a segment, and the validation of a mapped
//! header against it and against the file.

use super::abi::{HEADER_LEN, MAX_CAPACITY, MIN_CAPACITY, RingKind};
use super::record_type::RecordType;
use crate::error::{Error, Result};
use crate::mpmc::layout::{MPMC_HEADER_LEN, MPMC_MAX_SLOT_SIZE, mpmc_slot_stride};

/// The shape of a segment, as recorded in (and validated from) its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Which ring.
    pub kind: RingKind,
    /// Bytes before the data region.
    pub header_len: u64,
    /// Data region size in bytes.
    pub capacity: u64,
    /// Slot payload size in bytes (MPMC), 0 for SPSC.
    pub slot_size: u32,
    /// Number of slots (MPMC), 0 for SPSC.
    pub slot_count: u32,
    /// The record type of a typed ring; `None` for a ring of bytes.
    pub record: Option<RecordType>,
}

impl Geometry {
    /// The same geometry for a ring typed with `record` (or untyped).
    pub fn with_record(mut self, record: Option<RecordType>) -> Geometry {
        self.record = record;
        self
    }

    /// An SPSC ring of `capacity` data bytes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `capacity` is a power of two in
    /// `MIN_CAPACITY..=MAX_CAPACITY`.
    pub fn spsc(capacity: u64) -> Result<Geometry> {
        check_capacity(capacity)?;
        Ok(Geometry {
            kind: RingKind::Spsc,
            header_len: HEADER_LEN as u64,
            capacity,
            slot_size: 0,
            slot_count: 0,
            record: None,
        })
    }

    /// An MPMC ring of `slot_count` slots of `slot_size` payload bytes
    /// (rounded up to a multiple of 8).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `slot_size` is 0 or above
    /// [`MPMC_MAX_SLOT_SIZE`], `slot_count` is not a power of two of at least
    /// 2, or the data region would exceed [`MAX_CAPACITY`] bytes.
    pub fn mpmc(slot_size: usize, slot_count: usize) -> Result<Geometry> {
        if slot_size == 0 || slot_size > MPMC_MAX_SLOT_SIZE as usize {
            return Err(Error::InvalidArgument(format!(
                "slot size {slot_size} bytes: must be between 1 and {MPMC_MAX_SLOT_SIZE}"
            )));
        }
        let size = slot_size.next_multiple_of(8) as u32;
        if !slot_count.is_power_of_two() || slot_count < 2 {
            return Err(Error::InvalidArgument(format!("slot count {slot_count}: must be a power of two, at least 2")));
        }
        let capacity = (slot_count as u64).checked_mul(mpmc_slot_stride(size)).filter(|&c| c <= MAX_CAPACITY);
        let Some(capacity) = capacity else {
            return Err(Error::InvalidArgument(format!(
                "{slot_count} slots of {size} bytes need more than {MAX_CAPACITY} bytes"
            )));
        };
        Ok(Geometry {
            kind: RingKind::Mpmc,
            header_len: MPMC_HEADER_LEN as u64,
            capacity,
            slot_size: size,
            slot_count: slot_count as u32,
            record: None,
        })
    }

    /// Total segment length in bytes.
    pub fn total_len(&self) -> u64 {
        self.header_len + self.capacity
    }

    /// Rebuild the geometry from raw header words, checking every one.
    pub(crate) fn from_words(
        kind: RingKind,
        header_len: u32,
        capacity: u64,
        slot_size: u32,
        slot_count: u32,
    ) -> Result<Geometry> {
        let want = match kind {
            RingKind::Spsc => Geometry::spsc(capacity)?,
            RingKind::Mpmc => {
                let g = Geometry::mpmc(slot_size as usize, slot_count as usize)?;
                if g.slot_size != slot_size {
                    return Err(Error::InvalidArgument(format!("slot size {slot_size} is not a multiple of 8")));
                }
                g
            }
        };
        if header_len as u64 != want.header_len {
            return Err(Error::InvalidArgument(format!(
                "header length {header_len}, expected {} for {}",
                want.header_len,
                kind.name()
            )));
        }
        if capacity != want.capacity {
            return Err(Error::InvalidArgument(format!(
                "capacity {capacity} bytes does not match the geometry ({} bytes)",
                want.capacity
            )));
        }
        Ok(want)
    }
}

/// Total segment length for an SPSC ring of `capacity` data bytes.
pub fn spsc_segment_len(capacity: u64) -> u64 {
    HEADER_LEN as u64 + capacity
}

/// Check a requested capacity: a power of two in `MIN_CAPACITY..=MAX_CAPACITY`.
pub fn check_capacity(capacity: u64) -> Result<()> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(Error::InvalidArgument(format!(
            "capacity {capacity} is not a power of two between {MIN_CAPACITY} and {MAX_CAPACITY} bytes"
        )));
    }
    Ok(())
}
