//! `shmring`: move data between processes through shared-memory rings, look
//! at the segments, and measure them against the kernel's transports.
#![deny(unsafe_op_in_unsafe_fn)]

mod bench;
mod ping;
mod segments;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Lock-free shared-memory rings between processes on one host.
///
/// A ring lives in a segment: a POSIX shared-memory object named NAME (under
/// /dev/shm) or, with --path, an mmap'd file. `send` and `recv` behave like a
/// named pipe whose data never goes through the kernel.
#[derive(Parser, Debug)]
#[command(name = "shmring", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Copy standard input into a ring, as records of up to --chunk bytes.
    ///
    /// Either side may start first; the first one creates the segment. When
    /// standard input ends, the stream is closed and `recv` exits 0 after
    /// draining it. Exits 0 once everything sent can be received.
    ///
    /// Exits 1, saying why, if the receiver died, aborted, or closed before
    /// reading everything, or if reading standard input failed: then the
    /// stream is aborted, and `recv` exits 1 too after writing what was sent.
    /// While the ring is full and no receiver has attached, says so after
    /// 2 s; --timeout gives up.
    ///
    /// Example:  shmring send demo < big.iso     (and elsewhere: shmring recv demo > copy.iso)
    Send(SendArgs),
    /// Copy a ring to standard output until the sender closes it.
    ///
    /// Either side may start first; the first one creates the segment. Exits 0
    /// once the whole stream is written, and removes the segment; also if
    /// standard output is a pipe whose reader went away (the sender then
    /// exits 1, saying so).
    ///
    /// Exits 1, saying why, after writing everything that was sent, if the
    /// sender aborted (for example, reading its input failed) or died
    /// (within about 100 ms), or if the segment is corrupted: a truncated
    /// stream never ends with status 0. Exits 1 and aborts the stream if
    /// writing standard output fails. Says so on stderr if no sender has
    /// attached after 2 s; --timeout gives up.
    ///
    /// Example:  shmring recv demo | sha256sum
    Recv(RecvArgs),
    /// List shmring segments in /dev/shm: name, kind, capacity, fill,
    /// creator, status.
    ///
    /// KIND is `spsc` or `mpmc`. CAPACITY is the data size for SPSC and
    /// `SLOTS x SLOT-SIZE B` for MPMC; FILL is bytes waiting for SPSC and
    /// messages waiting (enqueued - dequeued) for MPMC.
    ///
    /// Status is `alive` (a process is attached), `waiting` (nobody attached
    /// right now: data may be waiting for a reader, or a ring for its first
    /// user), `stale` (an attached process died, or the stream is finished on
    /// both sides) or `damaged` (the header is impossible; see `inspect`).
    /// An MPMC segment is `alive` if any process in its participant table is
    /// alive, `stale` if processes are recorded there but all of them died
    /// without detaching, `waiting` if the table is empty.
    /// Files in /dev/shm that are not shmring segments are not shown; one
    /// that this user may not open is shown as `not readable (owner uid N)`,
    /// since whether it is a segment cannot be told.
    /// With --json, MPMC rows also carry the slot geometry, counters, closed
    /// flag, loss statistics and participant counts.
    Ls(LsArgs),
    /// Print a segment's header, positions and attached processes, and say
    /// plainly what is wrong with it if anything is.
    ///
    /// For both kinds, prints the record type of a typed ring (name, size,
    /// alignment, fingerprint). For MPMC, also the slot size and count, the
    /// enqueue and dequeue counters, the closed flag, the loss statistics
    /// (messages lost because a producer or a consumer died, slots
    /// recovered) and the participant table: every recorded process, alive
    /// or dead, with the positions it is claiming.
    ///
    /// Reads the header with plain reads: never maps, never writes, never
    /// crashes on a damaged segment. Exit status: 0 healthy, 2 damaged,
    /// 1 cannot be read.
    Inspect(InspectArgs),
    /// Remove segments by name or path, or every stale one.
    ///
    /// Stale means what `ls` shows as `stale`: for SPSC, an attached process
    /// died or both sides closed; for MPMC, processes are recorded in the
    /// participant table and none of them is alive (an MPMC ring that
    /// nobody has attached to is `waiting` and is kept).
    /// Refuses to remove something that is not a shmring segment unless
    /// --force. Processes that still have the segment mapped keep working;
    /// the memory is freed when the last one exits.
    Rm(RmArgs),
    /// Measure shmring against a pipe, a FIFO, a UNIX socket, TCP loopback,
    /// a POSIX message queue, a raw futex and a shared cache line, with real
    /// process pairs.
    Bench(bench::BenchArgs),
    /// Connect to an RPC server like a client and measure ping round trips.
    ///
    /// Prints the transport the server and this client agreed on (shm,
    /// unix or tcp), then one line per ping and a summary (min, p50, p99,
    /// max), like ping(8). The first thing to run when a service seems down:
    /// it says whether the server answers, over what, and how fast.
    /// Exits 0 if every ping was answered, 1 otherwise.
    ///
    /// Example:  shmring ping unix:/run/kv.sock --count 10
    Ping(ping::PingArgs),
}

/// Where a segment is: a shm NAME or --path FILE.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
struct Target {
    /// POSIX shared-memory name (a leading '/' is optional), e.g. `demo`.
    name: Option<String>,
    /// Use an mmap'd file at this path instead of a shm name (persistent,
    /// any filesystem that supports mmap). Symlinks are refused.
    #[arg(long, value_name = "FILE")]
    path: Option<PathBuf>,
}

impl Target {
    fn location(&self) -> shmring::Location {
        match (&self.path, &self.name) {
            (Some(p), _) => shmring::Location::path(p),
            (None, Some(n)) => shmring::Location::shm(n),
            (None, None) => unreachable!("clap requires NAME or --path"),
        }
    }
}

#[derive(Args, Debug)]
struct SendArgs {
    #[command(flatten)]
    target: Target,
    /// Ring data size in bytes if this side creates it: a power of two from
    /// 4096 to 2^31. Suffixes K, M, G (binary) are accepted.
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    capacity: u64,
    /// Largest record in bytes; each read of standard input becomes one
    /// record. Clamped to half the capacity.
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    chunk: u64,
    /// Spin instead of sleeping while the ring is full (lower latency, burns a core).
    #[arg(long)]
    spin: bool,
    /// Give up (exit 1) if the ring is full and no receiver has attached
    /// within SECS seconds. Without it, waits as long as it takes.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
}

#[derive(Args, Debug)]
struct RecvArgs {
    #[command(flatten)]
    target: Target,
    /// Ring data size in bytes if this side creates it (see `send --capacity`).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    capacity: u64,
    /// Spin instead of sleeping while the ring is empty.
    #[arg(long)]
    spin: bool,
    /// Leave the segment in place at the end instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Give up (exit 1) if no sender has attached within SECS seconds.
    /// Without it, waits as long as it takes.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
}

#[derive(Args, Debug)]
struct LsArgs {
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct InspectArgs {
    #[command(flatten)]
    target: Target,
}

#[derive(Args, Debug)]
struct RmArgs {
    /// Segment names to remove.
    names: Vec<String>,
    /// Remove the mmap'd file at this path.
    #[arg(long, value_name = "FILE")]
    path: Vec<PathBuf>,
    /// Remove every segment in /dev/shm whose status is `stale` (see `ls`).
    #[arg(long)]
    stale: bool,
    /// Remove even if it does not look like a shmring segment.
    #[arg(long)]
    force: bool,
}

/// Parse a positive number of seconds, e.g. `10` or `0.5`.
fn parse_secs(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds (examples: 10, 0.5)"))
}

/// Parse `4096`, `64K`, `4M`, `1G` (binary multiples).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("{s:?} is not a size (examples: 4096, 64K, 4M, 1G)"))
}

fn main() -> ExitCode {
    if let Some(code) = bench::maybe_run_child() {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Send(a) => stream::send(&a.target.location(), a.capacity, a.chunk, a.spin, a.timeout),
        Cmd::Recv(a) => stream::recv(&a.target.location(), a.capacity, a.spin, a.keep, a.timeout),
        Cmd::Ls(a) => segments::ls(a.json),
        Cmd::Inspect(a) => segments::inspect(&a.target.location()),
        Cmd::Rm(a) => segments::rm(&a.names, &a.path, a.stale, a.force),
        Cmd::Bench(a) => bench::run(a).map(|()| 0),
        Cmd::Ping(a) => ping::run(&a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("shmring: {msg}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("4m"), Ok(4 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn seconds_parse_and_refuse_nonsense() {
        assert_eq!(parse_secs("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "soon", "inf", "NaN"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
