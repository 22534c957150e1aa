//! The record format shared by the `producer`, `consumer` and `pair`
//! examples of [shmring](https://docs.rs/shmring), and their summary line.
//!
//! A record is [`RECORD_LEN`] bytes: a little-endian sequence number, then a
//! payload derived from it, so the consumer can check both order and content.

#[cfg(feature = "grpc")]
pub mod greeter;
pub mod kv;
#[cfg(feature = "http")]
pub mod web;
#[cfg(feature = "tarpc")]
pub mod world;

use std::fmt;
use std::time::Duration;

/// Run an async example's `main` on a multi-threaded tokio runtime: exit 0
/// if `body` succeeds; else print "NAME: ERROR" and exit 1. The usage error
/// (exit 2) is the example's own.
#[cfg(any(feature = "tarpc", feature = "http", feature = "grpc"))]
pub fn run_async_main<E: fmt::Display>(
    name: &str,
    body: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: no tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(body) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Bytes in every record.
pub const RECORD_LEN: usize = 64;

/// Fill `buf` (`RECORD_LEN` bytes) with record number `seq`.
///
/// ```
/// let mut buf = [0u8; shmring_examples::RECORD_LEN];
/// shmring_examples::write_record(&mut buf, 7);
/// assert!(shmring_examples::check_record(&buf, 7).is_ok());
/// assert!(shmring_examples::check_record(&buf, 8).is_err());
/// ```
pub fn write_record(buf: &mut [u8], seq: u64) {
    let (head, payload) = buf.split_at_mut(8);
    head.copy_from_slice(&seq.to_le_bytes());
    payload.fill(seq as u8);
}

/// Check that `buf` is record number `expected`, intact.
///
/// # Errors
/// A message saying what is wrong: length, sequence number, or payload.
pub fn check_record(buf: &[u8], expected: u64) -> Result<(), String> {
    if buf.len() != RECORD_LEN {
        return Err(format!("record {expected}: {} bytes, expected {RECORD_LEN}", buf.len()));
    }
    let seq = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    if seq != expected {
        return Err(format!("out of order: got record {seq}, expected {expected}"));
    }
    if buf[8..].iter().any(|&b| b != seq as u8) {
        return Err(format!("record {seq}: payload damaged"));
    }
    Ok(())
}

/// What one side moved, printed as a one-line summary.
///
/// ```
/// # use std::time::Duration;
/// let s = shmring_examples::Summary { records: 1_000_000, elapsed: Duration::from_millis(100) };
/// assert_eq!(s.to_string(), "1000000 records (64.0 MB) in 100.0ms: 640.0 MB/s, 10.00 M records/s");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Records moved.
    pub records: u64,
    /// Time from the first record to the last.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = (self.records * RECORD_LEN as u64) as f64 / 1e6;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{} records ({mb:.1} MB) in {:.1?}: {:.1} MB/s, {:.2} M records/s",
            self.records,
            self.elapsed,
            mb / secs,
            self.records as f64 / secs / 1e6
        )
    }
}
