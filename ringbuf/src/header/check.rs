//! The one validation of a segment's header words, shared by every opener
//! (which stops at the first problem) and by [`crate::inspect`] (which lists
//! them all): the words are copied out first ([`HeaderWords`]), from the
//! mapped atomics or from the bytes of a page, and checked as plain values.

use super::abi::{ABI_VERSION, Header, MAGIC, RingKind};
use super::geometry::Geometry;
use super::record_type::record_type_problem;
use crate::error::{Error, Result};
use crate::sync::Ordering;
use crate::wait::{EventCount, NotifierKind};

/// The header words that say what a segment is, copied out as plain values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderWords {
    /// [`MAGIC`] if this is a shmring segment.
    pub magic: u64,
    /// [`ABI_VERSION`] of its creator.
    pub abi_version: u32,
    /// [`RingKind`] as u32.
    pub kind: u32,
    /// Bytes before the data region.
    pub header_len: u32,
    /// [`NotifierKind`] as u32.
    pub notifier: u32,
    /// Data region bytes.
    pub capacity: u64,
    /// Slot payload bytes (MPMC; 0 for SPSC).
    pub slot_size: u32,
    /// Slot count (MPMC; 0 for SPSC).
    pub slot_count: u32,
    /// Total segment length in bytes.
    pub total_len: u64,
    /// Record type words: size, alignment, fingerprint (zeros if untyped).
    pub record_type: (u32, u32, u64),
}

impl HeaderWords {
    /// Copy the words out of a mapped header (Relaxed: after the Acquire
    /// load of READY).
    pub(crate) fn load(h: &Header) -> HeaderWords {
        let r = Ordering::Relaxed;
        HeaderWords {
            magic: h.magic.load(r),
            abi_version: h.abi_version.load(r),
            kind: h.kind.load(r),
            header_len: h.header_len.load(r),
            notifier: h.notifier.load(r),
            capacity: h.capacity.load(r),
            slot_size: h.slot_size.load(r),
            slot_count: h.slot_count.load(r),
            total_len: h.total_len.load(r),
            record_type: (h.type_size.load(r), h.type_align.load(r), h.type_fingerprint.load(r)),
        }
    }
}

/// One thing wrong with a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Not a shmring segment at all (the magic word).
    BadMagic(u64),
    /// A shmring segment of another layout version.
    Version(u32),
    /// Words that contradict each other or the file.
    Corrupt(String),
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::BadMagic(m) => {
                write!(f, "bad magic number {m:#018x} (expected {MAGIC:#018x}): not a shmring segment")
            }
            HeaderProblem::Version(v) => write!(f, "ABI version {v} (this build understands {ABI_VERSION})"),
            HeaderProblem::Corrupt(what) => f.write_str(what),
        }
    }
}

impl HeaderProblem {
    /// The error an opener of `segment` returns for this problem.
    pub(crate) fn into_error(self, segment: &str) -> Error {
        match self {
            HeaderProblem::BadMagic(_) => Error::BadMagic(segment.to_owned()),
            HeaderProblem::Version(found) => {
                Error::VersionMismatch { segment: segment.to_owned(), found, expected: ABI_VERSION }
            }
            HeaderProblem::Corrupt(what) => Error::corrupted(segment, what),
        }
    }
}

/// Check `w` against itself and against a file of `file_len` bytes: the
/// geometry they describe (if they describe one) and every problem found.
/// A bad magic word is the only problem reported then: nothing else about a
/// file that is not a segment means anything.
pub(crate) fn check_words(w: &HeaderWords, file_len: u64) -> (Option<Geometry>, Vec<HeaderProblem>) {
    let mut p = Vec::new();
    if w.magic != MAGIC {
        return (None, vec![HeaderProblem::BadMagic(w.magic)]);
    }
    if w.abi_version != ABI_VERSION {
        p.push(HeaderProblem::Version(w.abi_version));
    }
    let kind = RingKind::from_u32(w.kind);
    if kind.is_none() {
        p.push(HeaderProblem::Corrupt(format!("unknown ring kind {}", w.kind)));
    }
    if NotifierKind::from_u32(w.notifier).is_none() {
        p.push(HeaderProblem::Corrupt(format!("unknown notifier kind {}", w.notifier)));
    }
    let geometry =
        kind.and_then(|kind| match Geometry::from_words(kind, w.header_len, w.capacity, w.slot_size, w.slot_count) {
            Ok(g) => Some(g),
            Err(e) => {
                let what = match e {
                    Error::InvalidArgument(what) => what,
                    other => other.to_string(),
                };
                p.push(HeaderProblem::Corrupt(format!("{} geometry impossible: {what}", kind.name().to_uppercase())));
                None
            }
        });
    if let Some(g) = geometry {
        if w.total_len != g.total_len() {
            p.push(HeaderProblem::Corrupt(format!(
                "total length {} does not match header + capacity = {}",
                w.total_len,
                g.total_len()
            )));
        }
        if file_len != w.total_len {
            p.push(HeaderProblem::Corrupt(format!("file is {file_len} bytes but the header says {}", w.total_len)));
        }
    }
    let (size, align, fingerprint) = w.record_type;
    if let Some(what) = record_type_problem(size, align, fingerprint) {
        p.push(HeaderProblem::Corrupt(what));
    }
    (geometry, p)
}

/// Validate a mapped header against the file length and return its
/// geometry: the first of [`check_words`]'s problems is the error. Called
/// by openers after they saw READY.
pub(crate) fn validate(h: &Header, file_len: u64, segment: &str) -> Result<Geometry> {
    let (geometry, problems) = check_words(&HeaderWords::load(h), file_len);
    if let Some(first) = problems.into_iter().next() {
        return Err(first.into_error(segment));
    }
    let Some(geometry) = geometry else {
        return Err(Error::corrupted(segment, "header describes no geometry"));
    };
    let record = super::record_type::RecordType::load(h).map_err(|what| Error::corrupted(segment, what))?;
    Ok(geometry.with_record(record))
}

/// What is wrong with an eventcount's notifier word, given the header's
/// notifier word: `None` if they agree (or the header's word is unknown,
/// which is a header problem of its own). `name` names the eventcount.
pub fn eventcount_notifier_problem(header_notifier: u32, name: &str, word: u32) -> Option<String> {
    let kind = NotifierKind::from_u32(header_notifier)?;
    (!kind.eventcount_word_matches(word))
        .then(|| format!("eventcount {name}'s notifier word is {word}, the header says {}", kind.name()))
}

/// Check both eventcounts' own notifier words (named, as the control block's
/// `eventcounts` gives them) against the header's notifier word: what an
/// opener checks once and every handle at each liveness tick. `Err` says
/// what is wrong.
pub(crate) fn check_eventcounts(h: &Header, eventcounts: [(&str, &EventCount); 2]) -> std::result::Result<(), String> {
    // Relaxed: a word fixed at creation, checked on its own.
    let notifier = h.notifier.load(Ordering::Relaxed);
    for (name, ec) in eventcounts {
        if let Some(what) = eventcount_notifier_problem(notifier, name, ec.notifier_word()) {
            return Err(what);
        }
    }
    Ok(())
}
