//! Producer and consumer in two processes, from one command: this program
//! re-runs itself as the consumer, sends it COUNT records (default one
//! million), and exits 0 once the consumer has received and checked them all.
//!
//! ```text
//! cargo run --release -p shmring-examples --example pair -- [COUNT]
//! ```
//!
//! Shows a parent and a child meeting on a private segment: the child
//! creates it (`Consumer::create`), the parent opens it as soon as it exists
//! and removes the name at once. Both keep their mapping, and nothing is left
//! in `/dev/shm` even if one of them crashes. If the consumer dies, the
//! producer's next wait for space fails with `PeerDied` instead of hanging.

use std::error::Error;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use shmring::spsc::{Consumer, Producer};
use shmring::{Location, SpscOptions};
use shmring_examples::{RECORD_LEN, Summary, check_record, write_record};

/// First argument that makes this program the consumer: `--consumer NAME COUNT`.
const CHILD: &str = "--consumer";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (who, result) = match &args[..] {
        [flag, name, count] if flag == CHILD => ("consumer", consumer(name, count)),
        [] => ("producer", producer(1_000_000)),
        [count] => match count.parse() {
            Ok(count) => ("producer", producer(count)),
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{who}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: pair [COUNT]");
    ExitCode::from(2)
}

/// The parent: start the consumer, send `count` records, wait for it.
fn producer(count: u64) -> Result<(), Box<dyn Error>> {
    let name = format!("shmring-pair-{}", std::process::id());
    let loc = Location::shm(&name);
    let mut child = Command::new(std::env::current_exe()?).args([CHILD, &name, &count.to_string()]).spawn()?;
    let tx = open_when_created(&loc, &mut child);
    // Both sides have it mapped by now (or never will): the name can go.
    let _ = loc.unlink();
    let sent = tx.and_then(|tx| send(tx, count));
    if sent.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    println!("producer: sent {}", sent?);
    if !status.success() {
        return Err(format!("the consumer failed ({status})").into());
    }
    println!("pair: ok");
    Ok(())
}

/// Open `loc` as its producer once the child has created it.
fn open_when_created(loc: &Location, child: &mut Child) -> Result<Producer, Box<dyn Error>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Producer::open(loc) {
            Err(shmring::Error::NotFound(_)) if Instant::now() < deadline => {
                if let Some(status) = child.try_wait()? {
                    return Err(format!("the consumer exited before creating {loc} ({status})").into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return Ok(other?),
        }
    }
}

/// Send `count` records, publishing 64 per flush, then close the stream.
fn send(mut tx: Producer, count: u64) -> Result<Summary, Box<dyn Error>> {
    let start = Instant::now();
    for seq in 0..count {
        let mut record = tx.grant(RECORD_LEN)?;
        write_record(&mut record, seq);
        record.stage();
        if (seq + 1).is_multiple_of(64) {
            tx.flush();
        }
    }
    tx.close()?;
    Ok(Summary { records: count, elapsed: start.elapsed() })
}

/// The child: create the ring `name`, receive until the producer closes it,
/// and check that exactly `count` records came, in order and intact.
fn consumer(name: &str, count: &str) -> Result<(), Box<dyn Error>> {
    let count: u64 = count.parse()?;
    let mut rx = Consumer::create(&Location::shm(name), &SpscOptions::new())?;
    let mut records = 0;
    let mut start = None;
    while let Some(record) = rx.recv()? {
        start.get_or_insert_with(Instant::now);
        check_record(&record, records)?;
        records += 1;
    }
    if records != count {
        return Err(format!("the stream ended after {records} of {count} records").into());
    }
    let elapsed = start.map_or(Duration::ZERO, |t| t.elapsed());
    println!("consumer: received {}; all in order and intact", Summary { records, elapsed });
    Ok(())
}
