//! Producer half of a two-terminal demo: sends COUNT records (default one
//! million) over the ring NAME, then closes it.
//!
//! ```text
//! cargo run --release -p shmring-examples --example consumer -- demo
//! cargo run --release -p shmring-examples --example producer -- demo 1000000
//! ```
//!
//! Start them in either order: whichever comes first creates the segment
//! (`open_or_create`), the other attaches to it. The consumer removes the
//! name when the stream is over.
//!
//! Shows the fast way to send small records: `grant` space in the ring,
//! write the record in place (no intermediate buffer), `stage` it, and
//! publish 64 staged records at a time with one `flush`. Closing (or
//! dropping) the producer publishes the rest and ends the stream.

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use shmring::spsc::Producer;
use shmring::{Location, SpscOptions};
use shmring_examples::{RECORD_LEN, Summary, write_record};

/// Records staged before each flush.
const BATCH: u64 = 64;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(name), count) = (args.next(), args.next()) else {
        return usage();
    };
    let Ok(count) = count.map_or(Ok(1_000_000), |c| c.parse()) else {
        return usage();
    };
    match produce(&name, count) {
        Ok(summary) => {
            println!("producer: sent {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("producer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn produce(name: &str, count: u64) -> Result<Summary, Box<dyn Error>> {
    let mut tx = Producer::open_or_create(&Location::shm(name), &SpscOptions::new())?;
    let start = Instant::now();
    for seq in 0..count {
        // Waits (spins, then sleeps) while the ring is full.
        let mut record = tx.grant(RECORD_LEN)?;
        write_record(&mut record, seq);
        record.stage();
        if (seq + 1).is_multiple_of(BATCH) {
            tx.flush();
        }
    }
    tx.close()?; // says whether the consumer left before reading everything
    Ok(Summary { records: count, elapsed: start.elapsed() })
}

fn usage() -> ExitCode {
    eprintln!("usage: producer NAME [COUNT]");
    ExitCode::from(2)
}
