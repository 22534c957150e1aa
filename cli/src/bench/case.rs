//! What one benchmark case is: a transport, a mode and a payload size, plus how long to run it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A way of moving bytes from one process to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// shmring SPSC rings in a POSIX shared-memory segment.
    Shmring,
    /// shmring MPMC rings (fixed-size slots), one producer and one consumer.
    ShmringMpmc,
    /// shmring SPSC rings whose park mode sleeps on process-shared POSIX semaphores (the
    /// semaphore notifier) instead of futexes; compare it with "semaphore".
    ShmringSem,
    /// Anonymous pipes (two of them for ping-pong).
    Pipe,
    /// Named pipes created with mkfifo in a private temporary directory.
    Fifo,
    /// A connected pair of UNIX stream sockets.
    UnixSocket,
    /// A TCP connection over 127.0.0.1 with TCP_NODELAY.
    TcpLoopback,
    /// POSIX message queues (mq_send / mq_receive).
    PosixMq,
    /// A System V message queue (msgsnd / msgrcv), private to the case.
    SysvMsgq,
    /// A real-time signal each way (sigqueue, taken by sigwaitinfo with the signal blocked),
    /// its value the message's number; the 64 B message itself lies in a shared page.
    Signal,
    /// A regular file in a private temporary directory: one 64 B append per write, the reader
    /// polling with read (stream only).
    File,
    /// Ping-pong on two shared futex words, always sleeping in the kernel: the floor for "park".
    Futex,
    /// Ping-pong on two process-shared POSIX semaphores beside two shared words: the floor for
    /// "park" with the semaphore notifier.
    Semaphore,
    /// Ping-pong on two shared cache lines, busy-polling: the hardware floor for "spin".
    CacheLine,
    /// shmring-rpc calls, blocking client, over shared-memory rings (both sides busy-poll).
    RpcShm,
    /// shmring-rpc calls, tokio client (single-threaded runtime), over shared-memory rings.
    RpcShmAsync,
    /// shmring-rpc calls, blocking client, frames over the server's UNIX socket.
    RpcUnix,
    /// shmring-rpc calls, blocking client, frames over TCP on 127.0.0.1.
    RpcTcp,
    /// tarpc calls over shmring's own tarpc transport (shared-memory rings).
    #[cfg(feature = "tarpc")]
    RpcTarpcShm,
    /// tarpc calls over tarpc's own UNIX-socket transport (bincode).
    #[cfg(feature = "tarpc")]
    RpcTarpcUnix,
    /// tarpc calls over tarpc's own TCP transport on 127.0.0.1 (bincode).
    #[cfg(feature = "tarpc")]
    RpcTarpcTcp,
    /// tarpc calls over tarpc's in-memory channel, client and server in one process.
    #[cfg(feature = "tarpc")]
    RpcTarpcInmemory,
    /// hyper HTTP/1.1 over shmring-rpc's ShmStream (shared-memory rings): a POST echoed.
    #[cfg(feature = "http")]
    HttpShm,
    /// hyper HTTP/1.1 over a plain UNIX socket: a POST echoed.
    #[cfg(feature = "http")]
    HttpUnix,
    /// hyper HTTP/1.1 over TCP on 127.0.0.1: a POST echoed.
    #[cfg(feature = "http")]
    HttpTcp,
    /// tonic gRPC unary calls over shmring-rpc's ShmStream (HTTP/2 on shared-memory rings).
    #[cfg(feature = "grpc")]
    GrpcShm,
    /// tonic gRPC unary calls over TCP on 127.0.0.1.
    #[cfg(feature = "grpc")]
    GrpcTcp,
    /// iceoryx2 publish-subscribe, one service each way.
    #[cfg(feature = "peers")]
    Iceoryx2,
    /// iceoryx2 request-response: a client in this process, a server in the peer.
    #[cfg(feature = "peers")]
    Iceoryx2RequestResponse,
    /// ipc-channel byte channels.
    #[cfg(feature = "peers")]
    IpcChannel,
}

/// The peer libraries (none unless built with the `peers` feature).
#[cfg(feature = "peers")]
pub(crate) const PEERS: &[Transport] =
    &[Transport::Iceoryx2, Transport::Iceoryx2RequestResponse, Transport::IpcChannel];
/// The peer libraries (none unless built with the `peers` feature).
#[cfg(not(feature = "peers"))]
pub(crate) const PEERS: &[Transport] = &[];

/// The tarpc transports (none unless built with the `tarpc` feature).
#[cfg(feature = "tarpc")]
pub(crate) const TARPC: &[Transport] =
    &[Transport::RpcTarpcShm, Transport::RpcTarpcUnix, Transport::RpcTarpcTcp, Transport::RpcTarpcInmemory];
/// The tarpc transports (none unless built with the `tarpc` feature).
#[cfg(not(feature = "tarpc"))]
pub(crate) const TARPC: &[Transport] = &[];

/// The HTTP and gRPC transports (those of the `http` and `grpc` features that are on).
pub(crate) const WEB: &[Transport] = &[
    #[cfg(feature = "http")]
    Transport::HttpShm,
    #[cfg(feature = "http")]
    Transport::HttpUnix,
    #[cfg(feature = "http")]
    Transport::HttpTcp,
    #[cfg(feature = "grpc")]
    Transport::GrpcShm,
    #[cfg(feature = "grpc")]
    Transport::GrpcTcp,
];

/// Payload sizes of the tarpc `call` rows (request and reply each).
pub(crate) const TARPC_SIZES: [usize; 2] = [64, 1 << 20];

impl Transport {
    /// The name used in the output (identical to the `--only` value).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Shmring => "shmring",
            Transport::ShmringMpmc => "shmring-mpmc",
            Transport::ShmringSem => "shmring-sem",
            Transport::Pipe => "pipe",
            Transport::Fifo => "fifo",
            Transport::UnixSocket => "unix-socket",
            Transport::TcpLoopback => "tcp-loopback",
            Transport::PosixMq => "posix-mq",
            Transport::SysvMsgq => "sysv-msgq",
            Transport::Signal => "signal",
            Transport::File => "file",
            Transport::Futex => "futex",
            Transport::Semaphore => "semaphore",
            Transport::CacheLine => "cache-line",
            Transport::RpcShm => "rpc-shm",
            Transport::RpcShmAsync => "rpc-shm-async",
            Transport::RpcUnix => "rpc-unix",
            Transport::RpcTcp => "rpc-tcp",
            #[cfg(feature = "tarpc")]
            Transport::RpcTarpcShm => "rpc-tarpc-shm",
            #[cfg(feature = "tarpc")]
            Transport::RpcTarpcUnix => "rpc-tarpc-unix",
            #[cfg(feature = "tarpc")]
            Transport::RpcTarpcTcp => "rpc-tarpc-tcp",
            #[cfg(feature = "tarpc")]
            Transport::RpcTarpcInmemory => "rpc-tarpc-inmemory",
            #[cfg(feature = "http")]
            Transport::HttpShm => "http-shm",
            #[cfg(feature = "http")]
            Transport::HttpUnix => "http-unix",
            #[cfg(feature = "http")]
            Transport::HttpTcp => "http-tcp",
            #[cfg(feature = "grpc")]
            Transport::GrpcShm => "grpc-shm",
            #[cfg(feature = "grpc")]
            Transport::GrpcTcp => "grpc-tcp",
            #[cfg(feature = "peers")]
            Transport::Iceoryx2 => "iceoryx2",
            #[cfg(feature = "peers")]
            Transport::Iceoryx2RequestResponse => "iceoryx2-request-response",
            #[cfg(feature = "peers")]
            Transport::IpcChannel => "ipc-channel",
        }
    }

    /// Whether this row makes RPC calls, with shmring-rpc, tarpc, hyper or tonic: a client
    /// here, a server in the peer (for rpc-tarpc-inmemory, on the client's own runtime).
    pub fn is_rpc(self) -> bool {
        matches!(self, Transport::RpcShm | Transport::RpcShmAsync | Transport::RpcUnix | Transport::RpcTcp)
            || self.is_tarpc()
            || self.is_web()
    }

    /// Whether this is an HTTP or gRPC transport.
    pub fn is_web(self) -> bool {
        WEB.contains(&self)
    }

    /// Whether this is a tarpc transport.
    pub fn is_tarpc(self) -> bool {
        TARPC.contains(&self)
    }
}

/// How a case waits, or whether it streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Ping-pong where both sides busy-poll shared memory.
    Spin,
    /// Ping-pong where both sides sleep in the kernel until woken (on a futex, a semaphore or
    /// a signal wait).
    Park,
    /// Ping-pong through blocking system calls of a kernel transport.
    Blocking,
    /// One-way streaming: one process writes, the other reads and verifies.
    Stream,
    /// RPC calls one at a time: each call (request out, echoed reply back) is one round trip.
    Call,
    /// RPC calls with [`IN_FLIGHT`] of them outstanding on one connection: calls per second.
    #[serde(rename = "64-in-flight")]
    InFlight,
}

/// Calls outstanding at once in [`Mode::InFlight`] rows (the number in the mode's name).
pub const IN_FLIGHT: usize = 64;

impl Mode {
    /// The name used in the output.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::Park => "park",
            Mode::Blocking => "blocking",
            Mode::Stream => "stream",
            Mode::Call => "call",
            Mode::InFlight => "64-in-flight",
        }
    }
}

/// One row of the results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// What carries the messages.
    pub transport: Transport,
    /// Ping-pong flavour, or streaming.
    pub mode: Mode,
    /// Bytes per message.
    pub payload: usize,
}

impl Case {
    /// Whether this is a one-way streaming case (otherwise it is a ping-pong case).
    pub fn is_stream(&self) -> bool {
        self.mode == Mode::Stream
    }

    /// Whether the row reports a rate (msgs/s, bytes/s) rather than round-trip times.
    pub fn measures_rate(&self) -> bool {
        matches!(self.mode, Mode::Stream | Mode::InFlight)
    }

    /// Whether a process busy-polls, which only makes sense on two CPUs: both sides in spin
    /// mode, the RPC server (and the blocking client) on shared memory, the file's reader.
    pub fn needs_two_cpus(&self) -> bool {
        self.mode == Mode::Spin
            || matches!(self.transport, Transport::RpcShm | Transport::RpcShmAsync | Transport::File)
    }

    /// A short human description, e.g. `pipe blocking 64 B ping-pong`, `rpc-tcp 4 KiB calls,
    /// one at a time`.
    pub fn label(&self) -> String {
        let (transport, size) = (self.transport.name(), bytes(self.payload as u64));
        match self.mode {
            Mode::Stream => format!("{transport} {size} stream"),
            Mode::Call => format!("{transport} {size} calls, one at a time"),
            Mode::InFlight => format!("{transport} {size} calls, {IN_FLIGHT} in flight"),
            mode => format!("{transport} {} {size} ping-pong", mode.name()),
        }
    }
}

/// When a measured phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Length {
    /// After this much time.
    Time(Duration),
    /// After this many round trips or messages.
    Count(u64),
}

/// How long each case warms up and is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Unmeasured run before the measurement starts.
    pub warmup: Duration,
    /// The measured run.
    pub length: Length,
}

impl Budget {
    /// Whether the measured phase is over after `done` operations taking `elapsed`.
    #[inline]
    pub fn finished(&self, done: u64, elapsed: Duration) -> bool {
        match self.length {
            Length::Time(limit) => elapsed >= limit,
            Length::Count(n) => done >= n,
        }
    }

    /// How many operations to do before looking at the clock again, at most `chunk`.
    #[inline]
    pub fn next_chunk(&self, done: u64, chunk: u64) -> u64 {
        match self.length {
            Length::Time(_) => chunk,
            Length::Count(n) => n.saturating_sub(done).min(chunk),
        }
    }

    /// E.g. `0.25 s warm-up + 1.50 s measured per case`.
    pub fn describe(&self) -> String {
        let warmup = self.warmup.as_secs_f64();
        match self.length {
            Length::Time(d) => format!("{warmup:.2} s warm-up + {:.2} s measured per case", d.as_secs_f64()),
            Length::Count(n) => {
                format!("{warmup:.2} s warm-up + {n} round trips, messages or calls per case")
            }
        }
    }

    /// A generous upper bound on the wall time of a case whose messages are `payload` bytes,
    /// for the watchdog, which gives up on a case that runs longer (see `guard::Deadline`);
    /// `None` if too large to represent.
    ///
    /// When counting, 60 s (starting the peer and setting up, on a loaded machine) plus 1 ms
    /// per round trip, message or call of up to 64 KiB, and in proportion above that (16 ms
    /// for 1 MiB): no row needs more than a small fraction of that (64 KiB messages and round
    /// trips through the kernel take microseconds to tens of microseconds, an RPC call of
    /// 1 MiB hundreds of microseconds), so only a peer that never made contact or stopped
    /// answering runs into it.
    pub fn deadline(&self, payload: usize) -> Option<Duration> {
        match self.length {
            Length::Time(limit) => Some((self.warmup + limit) * 3 + Duration::from_secs(15)),
            Length::Count(n) => {
                let per_item_ms = payload.div_ceil(64 << 10).max(1) as u64;
                let items = Duration::from_millis(n.checked_mul(per_item_ms)?);
                (self.warmup * 3 + Duration::from_secs(60)).checked_add(items)
            }
        }
    }
}

/// `64 B`, `64 KiB`: sizes as people write them.
pub(crate) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}
