//! The two measurements, written once for every message transport.
//!
//! Message format: the first 8 bytes carry a little-endian sequence number; messages of 16
//! bytes or more also carry its bitwise complement in their last 8 bytes, which catches
//! torn or misframed messages. Two sequence values are reserved:
//!
//! * ping-pong: the client sends 1, 2, 3, … and the echo side sends each message back; the
//!   client checks the number and times every round trip. [`END`] stops the echo side.
//! * streaming: the writer sends 0, 1, 2, … during warm-up, then one [`MARK`], then the
//!   measured messages, then [`END`] followed by one message carrying the number of measured
//!   messages. The reader checks every number, times from `MARK` to `END` and checks the count.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::case::{Budget, Case};
use super::guard::Cleanup;
use super::peer::{Child, ChildSpec};

/// Sequence value that ends a run.
pub(crate) const END: u64 = u64::MAX;
/// Sequence value that separates warm-up from measurement in a stream.
pub(crate) const MARK: u64 = u64::MAX - 1;

/// How often (in messages) a streaming writer looks at the clock.
const CLOCK_EVERY: u64 = 64;

/// Sends and receives whole messages of one agreed size.
pub(crate) trait Channel {
    /// Sends one message, blocking as the transport does.
    fn send(&mut self, msg: &[u8]) -> Result<(), String>;
    /// Receives one message and hands it to `f`, blocking as the transport does.
    fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, String>;
}

/// A histogram of round-trip times in nanoseconds, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Writes `seq` into `msg` (see the module docs).
#[inline]
pub(crate) fn stamp(msg: &mut [u8], seq: u64) {
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    let len = msg.len();
    if len >= 16 {
        msg[len - 8..].copy_from_slice(&(!seq).to_le_bytes());
    }
}

/// Reads and checks the sequence number of a message that should be `len` bytes long.
#[inline]
pub(crate) fn read_seq(msg: &[u8], len: usize) -> Result<u64, String> {
    if msg.len() != len {
        return Err(format!("expected a {len}-byte message, got {}", msg.len()));
    }
    let word = |at: usize| u64::from_le_bytes(msg[at..at + 8].try_into().expect("8 bytes"));
    // Every reader, whatever the transport, reads every byte once, as a real
    // consumer would: a ring handing out bytes in place must not win by
    // leaving them untouched while the kernel transports copy them.
    let words = msg.chunks_exact(8);
    let tail = words.remainder().iter().fold(0u64, |a, &b| a.wrapping_add(u64::from(b)));
    let sum = words.fold(tail, |a, c| a.wrapping_add(u64::from_ne_bytes(c.try_into().expect("8 bytes"))));
    std::hint::black_box(sum);
    let seq = word(0);
    if len >= 16 && word(len - 8) != !seq {
        return Err(format!("message {seq} is corrupted (head and tail disagree)"));
    }
    Ok(seq)
}

/// Records round-trip times for a loop that tells it when each round trip has ended: nothing
/// until the warm-up is over, then one sample per round trip, until the budget is spent.
pub(crate) struct RoundTripClock {
    budget: Budget,
    hist: Histogram<u64>,
    start: Instant,
    measuring: Option<Instant>,
    last: Instant,
}

impl RoundTripClock {
    /// Starts the warm-up now.
    pub(crate) fn start(budget: &Budget) -> RoundTripClock {
        let now = Instant::now();
        RoundTripClock { budget: *budget, hist: histogram(), start: now, measuring: None, last: now }
    }

    /// Call right after each round trip; `true` once the budget is spent.
    #[inline]
    pub(crate) fn lap(&mut self) -> bool {
        // One clock read per round trip: each sample runs from the previous reading to this.
        let now = Instant::now();
        let done = match self.measuring {
            Some(since) => {
                self.hist.saturating_record(now.duration_since(self.last).as_nanos() as u64);
                self.budget.finished(self.hist.len(), now.duration_since(since))
            }
            None => {
                if now.duration_since(self.start) >= self.budget.warmup {
                    self.measuring = Some(now);
                }
                false
            }
        };
        self.last = now;
        done
    }

    /// The round-trip times recorded, in nanoseconds.
    pub(crate) fn into_histogram(self) -> Histogram<u64> {
        self.hist
    }
}

/// Times round trips until the budget is spent, after an unrecorded warm-up.
/// `round_trip(seq)` must return only once the peer has answered message `seq` (1, 2, …).
pub(crate) fn time_round_trips(
    budget: &Budget,
    mut round_trip: impl FnMut(u64) -> Result<(), String>,
) -> Result<Histogram<u64>, String> {
    let mut clock = RoundTripClock::start(budget);
    let mut seq = 0u64;
    loop {
        seq += 1;
        round_trip(seq)?;
        if clock.lap() {
            return Ok(clock.into_histogram());
        }
    }
}

/// Ping-pong client: times round trips of `payload`-byte messages; stops the echo side.
pub(crate) fn ping_pong(ch: &mut impl Channel, payload: usize, budget: &Budget) -> Result<Histogram<u64>, String> {
    let mut msg = vec![0u8; payload];
    let mut round_trip = |seq: u64| -> Result<(), String> {
        stamp(&mut msg, seq);
        ch.send(&msg)?;
        let back = ch.recv_with(|m| read_seq(m, payload))??;
        if back != seq {
            return Err(format!("sent message {seq}, got {back} back"));
        }
        Ok(())
    };
    let hist = time_round_trips(budget, &mut round_trip)?;
    round_trip(END)?;
    Ok(hist)
}

/// Ping-pong server: sends every message back until [`END`].
pub(crate) fn echo(ch: &mut impl Channel, payload: usize) -> Result<(), String> {
    let mut msg = vec![0u8; payload];
    loop {
        let seq = ch.recv_with(|m| {
            let seq = read_seq(m, payload)?;
            msg.copy_from_slice(m);
            Ok::<_, String>(seq)
        })??;
        ch.send(&msg)?;
        if seq == END {
            return Ok(());
        }
    }
}

/// Messages received in a measured interval.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Throughput {
    pub msgs: u64,
    pub elapsed: Duration,
}

/// Streaming writer: warm-up, [`MARK`], measured messages, [`END`], count.
pub(crate) fn stream_writer(ch: &mut impl Channel, payload: usize, budget: &Budget) -> Result<(), String> {
    let mut msg = vec![0u8; payload];
    let mut seq = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget.warmup {
        send_run(ch, &mut msg, &mut seq, CLOCK_EVERY)?;
    }
    let mut marker = vec![0u8; payload];
    stamp(&mut marker, MARK);
    ch.send(&marker)?;
    let start = Instant::now();
    let mut sent = 0u64;
    while !budget.finished(sent, start.elapsed()) {
        let n = budget.next_chunk(sent, CLOCK_EVERY);
        send_run(ch, &mut msg, &mut seq, n)?;
        sent += n;
    }
    stamp(&mut marker, END);
    ch.send(&marker)?;
    stamp(&mut marker, sent);
    ch.send(&marker)
}

/// Sends `n` consecutive messages starting at `*seq`.
fn send_run(ch: &mut impl Channel, msg: &mut [u8], seq: &mut u64, n: u64) -> Result<(), String> {
    for _ in 0..n {
        stamp(msg, *seq);
        ch.send(msg)?;
        *seq += 1;
    }
    Ok(())
}

/// Tracks a stream's sequence numbers and markers; shared by every streaming reader.
#[derive(Default)]
pub(crate) struct StreamCheck {
    expected: u64,
    mark: Option<(Instant, u64)>,
    end: Option<(Instant, u64)>,
    result: Option<Throughput>,
}

impl StreamCheck {
    /// Feeds one sequence number; `Ok(true)` once the stream is complete and verified.
    #[inline]
    pub(crate) fn feed(&mut self, seq: u64) -> Result<bool, String> {
        if self.end.is_none() && seq == self.expected {
            self.expected += 1;
            return Ok(false);
        }
        if let Some((at, base)) = self.end {
            let measured = base - self.mark.map_or(0, |(_, m)| m);
            if seq != measured {
                return Err(format!("writer sent {seq} messages, reader counted {measured}"));
            }
            let (since, _) = self.mark.ok_or("stream ended without a start marker")?;
            self.result = Some(Throughput { msgs: measured, elapsed: at.duration_since(since) });
            return Ok(true);
        }
        match seq {
            MARK if self.mark.is_none() => self.mark = Some((Instant::now(), self.expected)),
            END => self.end = Some((Instant::now(), self.expected)),
            _ => {
                return Err(format!("expected message {}, got {seq}: lost or reordered", self.expected));
            }
        }
        Ok(false)
    }

    /// The verified result, once [`StreamCheck::feed`] has returned `Ok(true)`.
    pub(crate) fn result(&self) -> Option<Throughput> {
        self.result
    }
}

/// Streaming reader: receives and verifies everything up to the count; times the middle.
pub(crate) fn stream_reader(ch: &mut impl Channel, payload: usize) -> Result<Throughput, String> {
    let mut check = StreamCheck::default();
    loop {
        let seq = ch.recv_with(|m| read_seq(m, payload))??;
        if check.feed(seq)? {
            return Ok(check.result().expect("complete"));
        }
    }
}

/// What a case measured.
pub(crate) enum Outcome {
    /// Round-trip times of a ping-pong case, in nanoseconds.
    Rtt(Histogram<u64>),
    /// Verified messages of a streaming case.
    Stream(Throughput),
    /// The case cannot run here; the reason says why.
    NotMeasured(String),
}

/// How long a child may take to exit after its part is done.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Parent side of every message transport: measures through `ch`, then checks that the child
/// finished cleanly.
pub(crate) fn drive(ch: &mut impl Channel, case: &Case, budget: &Budget, child: Child) -> Result<Outcome, String> {
    let result = if case.is_stream() {
        stream_reader(ch, case.payload).map(Outcome::Stream)
    } else {
        ping_pong(ch, case.payload, budget).map(Outcome::Rtt)
    };
    conclude(result, child)
}

/// Parent side, last step of every case: on success, waits for the child to exit cleanly;
/// on failure, adds what is known about the child to the error.
pub(crate) fn conclude(result: Result<Outcome, String>, mut child: Child) -> Result<Outcome, String> {
    match result {
        Ok(outcome) => child.finish(EXIT_GRACE).map(|()| outcome),
        Err(e) => Err(child.explain(e)),
    }
}

/// Child side of every message transport: the writer of a stream, or the echo of a ping-pong.
pub(crate) fn serve(ch: &mut impl Channel, spec: &ChildSpec) -> Result<(), String> {
    if spec.case.is_stream() { stream_writer(ch, spec.case.payload, &spec.budget) } else { echo(ch, spec.case.payload) }
}

/// Runs clean-ups (such as unlinking names) once the first message has arrived, which proves
/// that the peer has opened everything it needs.
pub(crate) struct FirstContact<C> {
    inner: C,
    pending: Vec<Cleanup>,
}

impl<C> FirstContact<C> {
    pub(crate) fn new(inner: C, pending: Vec<Cleanup>) -> Self {
        FirstContact { inner, pending }
    }
}

impl<C: Channel> Channel for FirstContact<C> {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        self.inner.send(msg)
    }

    #[inline]
    fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, String> {
        let r = self.inner.recv_with(f)?;
        if !self.pending.is_empty() {
            self.pending.clear();
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_catch_damage() {
        for len in [8, 16, 64, 65536] {
            let mut msg = vec![0u8; len];
            stamp(&mut msg, 42);
            assert_eq!(read_seq(&msg, len), Ok(42));
            assert!(read_seq(&msg[..len - 1], len).is_err());
            if len >= 16 {
                msg[len - 1] ^= 1;
                assert!(read_seq(&msg, len).is_err());
            }
        }
    }

    fn feed_all(check: &mut StreamCheck, seqs: &[u64]) -> Result<bool, String> {
        let mut done = false;
        for &s in seqs {
            done = check.feed(s)?;
        }
        Ok(done)
    }

    #[test]
    fn stream_check_counts_only_the_measured_part() {
        let mut check = StreamCheck::default();
        assert_eq!(feed_all(&mut check, &[0, 1, MARK, 2, 3, 4, END, 3]), Ok(true));
        assert_eq!(check.result().unwrap().msgs, 3);
    }

    #[test]
    fn stream_check_rejects_gaps_and_wrong_counts() {
        assert!(feed_all(&mut StreamCheck::default(), &[0, 2]).is_err());
        assert!(feed_all(&mut StreamCheck::default(), &[0, MARK, 1, END, 2]).is_err());
        assert!(feed_all(&mut StreamCheck::default(), &[0, 1, END, 0]).is_err());
    }
}
