//! Addresses: `unix:PATH` (shared memory, with frames over the socket as the
//! fallback) and `tcp:HOST:PORT` (frames over TCP, for other hosts).

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where a server listens and a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A UNIX socket at this path: the rendezvous, and the fallback
    /// transport when shared memory is refused or fails.
    Unix(PathBuf),
    /// A TCP address (`HOST:PORT`, port 0 to bind any free port).
    Tcp(String),
}

impl Addr {
    /// Parse `unix:PATH` or `tcp:HOST:PORT`.
    ///
    /// ```
    /// use shmring_rpc::Addr;
    /// assert_eq!(Addr::parse("unix:/run/kv.sock").unwrap(), Addr::Unix("/run/kv.sock".into()));
    /// assert_eq!(Addr::parse("tcp:127.0.0.1:7000").unwrap(), Addr::Tcp("127.0.0.1:7000".into()));
    /// assert!(Addr::parse("/run/kv.sock").is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for anything else, saying what is expected.
    pub fn parse(s: &str) -> Result<Addr> {
        match s.split_once(':') {
            Some(("unix", path)) if !path.is_empty() => Ok(Addr::Unix(PathBuf::from(path))),
            Some(("tcp", hostport))
                if hostport.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Ok(Addr::Tcp(hostport.to_owned()))
            }
            _ => Err(Error::InvalidArgument(format!(
                "address {s:?}: expected unix:PATH or tcp:HOST:PORT (for example unix:/tmp/kv.sock, tcp:127.0.0.1:7000)"
            ))),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl std::str::FromStr for Addr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Addr> {
        Addr::parse(s)
    }
}
