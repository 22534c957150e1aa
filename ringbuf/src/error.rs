//! The error type every fallible call in this crate returns.

use std::io;

/// Everything that can go wrong with a segment or a ring.
///
/// Errors that come from the peer (`Corrupted`, `PeerDied`, `Closed`) say
/// which segment and what was seen, so a message printed as-is is useful.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed. `op` names the call, `target` the segment name or
    /// path it was made on.
    #[error("{op} {target}: {source}")]
    Io {
        /// The operation that failed, e.g. `shm_open` or `mmap`.
        op: &'static str,
        /// The segment name or path.
        target: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// The segment to create already exists.
    #[error("segment {0} already exists (remove it with `shmring rm`, or open it instead)")]
    AlreadyExists(String),
    /// The segment to open does not exist.
    #[error("segment {0} does not exist")]
    NotFound(String),
    /// The creator never finished initialising the segment within the bound.
    #[error(
        "segment {0} is not ready: its creator did not finish initialising it (stale? remove it with `shmring rm`)"
    )]
    NotReady(String),
    /// The segment's magic number is wrong: it is not a shmring segment.
    #[error("{0} is not a shmring segment (bad magic number)")]
    BadMagic(String),
    /// The segment was written by an incompatible ABI version.
    #[error("segment {segment} has ABI version {found}, this build speaks version {expected}")]
    VersionMismatch {
        /// The segment.
        segment: String,
        /// The version in the header.
        found: u32,
        /// The version this library implements.
        expected: u32,
    },
    /// The segment holds a different kind of ring than the caller asked for.
    #[error("segment {segment} holds a {found} ring, expected {expected}")]
    KindMismatch {
        /// The segment.
        segment: String,
        /// The kind in the header.
        found: String,
        /// The kind the caller asked for.
        expected: &'static str,
    },
    /// A typed ring was opened with another record type than the one it was
    /// created for (or a ring of bytes was opened as a typed one).
    #[error("segment {segment} carries records of type {found}, not {expected}")]
    TypeMismatch {
        /// The segment.
        segment: String,
        /// The record type in the header (or "untyped bytes").
        found: String,
        /// The record type the caller asked for.
        expected: String,
    },
    /// A value read from shared memory is impossible: the peer (or something
    /// else) wrote garbage. The ring is poisoned: every later call on this
    /// handle returns this error again.
    #[error("segment {segment} is corrupted: {what}")]
    Corrupted {
        /// The segment.
        segment: String,
        /// What was wrong, with the offending value.
        what: String,
    },
    /// An argument is out of range (capacity not a power of two, record too
    /// large, name invalid, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The role (producer or consumer) is already held by a live process.
    #[error("segment {segment}: the {role} role is already held by live process {pid}")]
    RoleTaken {
        /// The segment.
        segment: String,
        /// `"producer"` or `"consumer"`.
        role: &'static str,
        /// The holder's pid.
        pid: u32,
    },
    /// The previous holder of the role died without closing it: the stream
    /// is broken and the segment should be removed.
    #[error(
        "segment {segment} is stale: its previous {role} (pid {pid}) died without closing (remove it with `shmring rm`)"
    )]
    Stale {
        /// The segment.
        segment: String,
        /// The role whose holder died.
        role: &'static str,
        /// The dead holder's pid.
        pid: u32,
    },
    /// The process on the other side exited (or was killed) without closing
    /// its end.
    #[error("segment {segment}: the {role} (pid {pid}) died without closing its end")]
    PeerDied {
        /// The segment.
        segment: String,
        /// The dead peer's role.
        role: &'static str,
        /// The dead peer's pid.
        pid: u32,
    },
    /// The process on the other side gave up after an error (or dropped its
    /// handle while a call had failed, or called `abort`): everything it
    /// committed before was delivered, but the stream is incomplete.
    #[error("segment {segment}: the {role} (pid {pid}) aborted the stream: {}", if reason.is_empty() { "no reason given" } else { reason.as_str() })]
    PeerAborted {
        /// The segment.
        segment: String,
        /// The aborting peer's role.
        role: &'static str,
        /// The aborting peer's pid.
        pid: u32,
        /// Its reason (at most 64 bytes, escaped), empty if none was given.
        reason: String,
    },
    /// Every entry of an MPMC ring's participant table is held by a live
    /// handle: no more handles can attach until one is dropped.
    #[error("segment {segment}: all {max} participant entries are held by live handles")]
    TooManyParticipants {
        /// The segment.
        segment: String,
        /// The size of the participant table.
        max: usize,
    },
    /// The other side closed its end (for a producer: the consumer is gone,
    /// nothing more will be read).
    #[error("segment {0}: the other side closed the ring")]
    Closed(String),
    /// A non-blocking call found the ring full (send) or empty (recv).
    #[error("the ring is {}", if *.full { "full" } else { "empty" })]
    WouldBlock {
        /// `true` when full (producer side), `false` when empty.
        full: bool,
    },
    /// A call with a timeout ran out of time.
    #[error("timed out")]
    Timeout,
}

/// A copy of the error, for reporting one failure to several waiters. The
/// source of [`Error::Io`] is rebuilt from its OS error code (or its kind
/// and message), as `std::io::Error` is not `Clone`.
impl Clone for Error {
    fn clone(&self) -> Self {
        use Error::*;
        match self {
            Io { op, target, source } => Io { op, target: target.clone(), source: clone_io(source) },
            AlreadyExists(s) => AlreadyExists(s.clone()),
            NotFound(s) => NotFound(s.clone()),
            NotReady(s) => NotReady(s.clone()),
            BadMagic(s) => BadMagic(s.clone()),
            VersionMismatch { segment, found, expected } => {
                VersionMismatch { segment: segment.clone(), found: *found, expected: *expected }
            }
            KindMismatch { segment, found, expected } => {
                KindMismatch { segment: segment.clone(), found: found.clone(), expected }
            }
            TypeMismatch { segment, found, expected } => {
                TypeMismatch { segment: segment.clone(), found: found.clone(), expected: expected.clone() }
            }
            Corrupted { segment, what } => Corrupted { segment: segment.clone(), what: what.clone() },
            InvalidArgument(s) => InvalidArgument(s.clone()),
            RoleTaken { segment, role, pid } => RoleTaken { segment: segment.clone(), role, pid: *pid },
            Stale { segment, role, pid } => Stale { segment: segment.clone(), role, pid: *pid },
            PeerDied { segment, role, pid } => PeerDied { segment: segment.clone(), role, pid: *pid },
            PeerAborted { segment, role, pid, reason } => {
                PeerAborted { segment: segment.clone(), role, pid: *pid, reason: reason.clone() }
            }
            TooManyParticipants { segment, max } => TooManyParticipants { segment: segment.clone(), max: *max },
            Closed(s) => Closed(s.clone()),
            WouldBlock { full } => WouldBlock { full: *full },
            Timeout => Timeout,
        }
    }
}

/// A copy of an I/O error: the same OS error code, or the same kind and
/// message.
fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, target: impl std::fmt::Display, source: impl Into<io::Error>) -> Self {
        Error::Io { op, target: target.to_string(), source: source.into() }
    }

    pub(crate) fn corrupted(segment: &str, what: impl Into<String>) -> Self {
        Error::Corrupted { segment: segment.to_owned(), what: what.into() }
    }

    /// The reason a handle that failed with this error leaves for its peers
    /// when it ends: short (the role slot keeps 64 bytes) and without the
    /// segment name, which the peer knows.
    pub(crate) fn abort_reason(&self) -> String {
        match self {
            Error::Corrupted { what, .. } => format!("corrupted: {what}"),
            Error::PeerDied { role, pid, .. } => format!("its {role} (pid {pid}) died"),
            Error::PeerAborted { role, .. } => format!("its {role} aborted"),
            Error::Closed(_) => "the other side closed".into(),
            Error::Io { op, source, .. } => format!("{op}: {source}"),
            Error::InvalidArgument(what) => format!("invalid argument: {what}"),
            other => other.to_string(),
        }
    }

    /// `true` for errors that mean "try again later" rather than failure:
    /// [`Error::WouldBlock`] and [`Error::Timeout`].
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::WouldBlock { .. } | Error::Timeout)
    }
}
