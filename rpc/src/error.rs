//! The error type of every fallible call in this crate.

use std::io;
use std::time::{Duration, Instant};

use crate::frame::FrameError;

/// Everything that can go wrong with a connection or a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the connection failed; `what` says which and where.
    #[error("{what}: {source}")]
    Io {
        /// The operation and the address, e.g. `connect unix:/run/kv.sock`.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The shared-memory rings failed (the peer died, aborted, or wrote
    /// garbage into them).
    #[error(transparent)]
    Ring(#[from] shmring::Error),
    /// The peer broke the protocol: a garbage or short handshake, a frame
    /// that cannot be decoded, a response to a request never made.
    #[error("protocol error with {peer}: {what}")]
    Protocol {
        /// The address or the peer's description.
        peer: String,
        /// What was wrong.
        what: String,
    },
    /// The server's policy does not let this client's user connect.
    #[error("{0}: permission denied by server policy")]
    PermissionDenied(String),
    /// The two sides speak different protocol versions.
    #[error("{peer} speaks protocol version {theirs}, this build speaks {ours}")]
    Version {
        /// The peer.
        peer: String,
        /// Its version.
        theirs: u16,
        /// Ours.
        ours: u16,
    },
    /// The server's handler failed; its message.
    #[error("the server failed the call: {0}")]
    Remote(String),
    /// The peer closed the connection.
    #[error("{0}: the connection is closed")]
    Closed(String),
    /// A call or a handshake step did not complete in time.
    #[error("{0}: timed out")]
    Timeout(String),
    /// An argument is out of range or an address is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// A copy of the error, for failing every call pending on a connection
/// with the error that ended it. The source of [`Error::Io`] is rebuilt
/// from its OS error code (or its kind and message).
impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::Io { what, source } => {
                let source = match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                };
                Error::Io { what: what.clone(), source }
            }
            Error::Ring(e) => Error::Ring(e.clone()),
            Error::Protocol { peer, what } => Error::Protocol { peer: peer.clone(), what: what.clone() },
            Error::PermissionDenied(s) => Error::PermissionDenied(s.clone()),
            Error::Version { peer, theirs, ours } => {
                Error::Version { peer: peer.clone(), theirs: *theirs, ours: *ours }
            }
            Error::Remote(s) => Error::Remote(s.clone()),
            Error::Closed(s) => Error::Closed(s.clone()),
            Error::Timeout(s) => Error::Timeout(s.clone()),
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }

    pub(crate) fn protocol(peer: &str, what: impl Into<String>) -> Error {
        Error::Protocol { peer: peer.to_owned(), what: what.into() }
    }

    pub(crate) fn frame(peer: &str, e: FrameError) -> Error {
        Error::protocol(peer, e.to_string())
    }
}

/// Time left until `deadline`; `Err(Timeout)` if it passed.
pub(crate) fn time_left(deadline: Option<Instant>, peer: &str) -> Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() { Err(Error::Timeout(peer.to_owned())) } else { Ok(Some(left)) }
        }
    }
}
