//! Consumer half of a two-terminal demo: receives records from the ring NAME
//! until the producer closes it, checks that they arrived in order and
//! intact, and prints how fast they came.
//!
//! ```text
//! cargo run --release -p shmring-examples --example consumer -- demo
//! cargo run --release -p shmring-examples --example producer -- demo 1000000
//! ```
//!
//! Start them in either order: whichever comes first creates the segment
//! (`open_or_create`). Each `recv` lends the record in place, in shared
//! memory; dropping it hands the space back to the producer. `Ok(None)` means
//! the producer closed and everything it sent has been read. The consumer
//! then removes the segment's name (also after an error).

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shmring::spsc::Consumer;
use shmring::{Location, SpscOptions};
use shmring_examples::{Summary, check_record};

fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: consumer NAME");
        return ExitCode::from(2);
    };
    let loc = Location::shm(&name);
    let received = Consumer::open_or_create(&loc, &SpscOptions::new()).map_err(Into::into).and_then(consume);
    // The stream is over (or broken): remove the name, whatever happened.
    let _ = loc.unlink();
    match received {
        Ok(summary) => {
            println!("consumer: received {summary}; all in order and intact");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("consumer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn consume(mut rx: Consumer) -> Result<Summary, Box<dyn Error>> {
    let mut records = 0;
    let mut start = None;
    // Waits (spins, then sleeps) while the ring is empty.
    while let Some(record) = rx.recv()? {
        start.get_or_insert_with(Instant::now);
        check_record(&record, records)?;
        records += 1;
    }
    Ok(Summary { records, elapsed: start.map_or(Duration::ZERO, |t| t.elapsed()) })
}
