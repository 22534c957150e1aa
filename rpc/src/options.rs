//! How clients connect and servers serve: the options, and their defaults.

use std::time::Duration;

use shmring::WaitPolicy;

use crate::access::AccessPolicy;
use crate::async_link::AsyncWait;
use crate::transport::TransportKind;

/// Default largest frame payload: 64 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 64 << 20;
/// Default bytes of each ring of a shared-memory connection: 1 MiB.
pub const DEFAULT_RING_CAPACITY: u32 = 1 << 20;
/// Default deadline of a call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The environment variable that picks the transport: `unix`, `shm` or `tcp`.
pub const TRANSPORT_ENV: &str = "SHMRING_RPC_TRANSPORT";

/// The wait policy of both ends of the rings by default: spin 128 rounds
/// (about a microsecond), yield 8 times, then park, checking the peer every
/// 50 ms, so a dead peer fails the calls waiting on it within about that
/// long. The ring's default spins 1024 rounds; with more threads than cores
/// that costs more than it saves: 8 client processes of `rpc_multi` on 2
/// cores made 38 to 90 thousand calls/s with it and 192 thousand with 128
/// rounds, while one client kept its 600 thousand.
pub(crate) fn default_policy() -> WaitPolicy {
    WaitPolicy::default().spin(128).check_interval(Duration::from_millis(50))
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub(crate) transport: Option<TransportKind>,
    pub(crate) max_frame: u32,
    pub(crate) timeout: Duration,
    pub(crate) policy: WaitPolicy,
    pub(crate) async_spin: Duration,
    pub(crate) stream_spin: Duration,
}

/// How long an async task polls an empty ring before it parks on its
/// doorbell, by default: 5 µs.
pub const DEFAULT_ASYNC_SPIN: Duration = Duration::from_micros(5);

/// The longest `async_spin` or `stream_spin` taken (longer is cut to it): a
/// millisecond.
const MAX_ASYNC_SPIN: Duration = Duration::from_millis(1);

/// How long a byte stream ([`crate::ShmStream`]) or a tarpc transport polls
/// an empty ring (or a full one) before it parks on its doorbell, at least,
/// by default: 50 µs. The window widens to 8× this while the connection is
/// busy, and falls back to it after an idle gap of that long (see
/// `stream_spin` on [`ClientOptions`] and [`ServerOptions`]). The task
/// yields to the runtime between polls (its worker runs other tasks
/// meanwhile), so the window can be longer than the async client's
/// blocking poll: a protocol on top (tarpc's dispatch, say) takes tens of
/// microseconds to answer, and a reply within the window costs no wake-up.
/// Measured with tarpc over a stream, 64 B round trip: 57 µs with a 5 µs
/// window, 12.8 µs with 50 µs; 4.5 µs once each poll yielded as tokio's
/// `yield_now` does rather than waking itself at once.
pub const DEFAULT_STREAM_SPIN: Duration = Duration::from_micros(50);

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            transport: None,
            max_frame: DEFAULT_MAX_FRAME,
            timeout: DEFAULT_CALL_TIMEOUT,
            policy: default_policy(),
            async_spin: DEFAULT_ASYNC_SPIN,
            stream_spin: DEFAULT_STREAM_SPIN,
        }
    }
}

impl ClientOptions {
    /// Defaults: shared memory preferred on a `unix:` address, 64 MiB
    /// frames, 10 s calls.
    pub fn new() -> ClientOptions {
        ClientOptions::default()
    }
    /// Ask for this transport only (the default is shared memory with the
    /// socket as the fallback on `unix:`, TCP on `tcp:`). The environment
    /// variable `SHMRING_RPC_TRANSPORT` (`unix`, `shm`, `tcp`) does the same
    /// when this is not set.
    pub fn transport(mut self, t: TransportKind) -> Self {
        self.transport = Some(t);
        self
    }
    /// Largest frame payload in bytes (the smaller of the two sides' wins).
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }
    /// Default deadline of a call.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// How the blocking client waits for a reply on the rings (e.g.
    /// `WaitPolicy::busy_poll()` for the lowest latency). Its check interval
    /// also bounds every park of the async client.
    pub fn wait_policy(mut self, p: WaitPolicy) -> Self {
        self.policy = p;
        self
    }
    /// How long the async client polls an empty ring for a reply before it
    /// parks on its doorbell (default [`DEFAULT_ASYNC_SPIN`]). With one call
    /// in flight the caller polls right after sending, holding its worker at
    /// most this long, and a reply within that time costs no task switch and
    /// no wake-up; with several, the connection's task polls, yielding to the
    /// runtime between polls. Zero parks at once; more than a millisecond is
    /// cut to one.
    pub fn async_spin(mut self, t: Duration) -> Self {
        self.async_spin = t.min(MAX_ASYNC_SPIN);
        self
    }
    /// How long a [`crate::ShmStream`] or a tarpc transport connected with
    /// these options polls an empty ring (or a full one) before it parks on
    /// its doorbell, at least (default [`DEFAULT_STREAM_SPIN`]). While the
    /// connection is busy the window widens to twice its longest recent
    /// wait, up to 8× this, so that a peer working through a batch is
    /// polled for rather than slept through; an idle gap longer than that
    /// brings it back. Less saves CPU time on connections whose messages
    /// come a little apart, at the price of a wake-up (tens of
    /// microseconds) for each. Zero parks at once; more than a millisecond
    /// is cut to one.
    pub fn stream_spin(mut self, t: Duration) -> Self {
        self.stream_spin = t.min(MAX_ASYNC_SPIN);
        self
    }
    /// How a stream or a tarpc transport connected with these options waits.
    pub(crate) fn stream_wait(&self) -> AsyncWait {
        AsyncWait { spin: self.stream_spin, check: self.policy.interval() }
    }
}

/// How a server serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub(crate) transports: u16,
    pub(crate) max_frame: u32,
    pub(crate) ring_capacity: u32,
    pub(crate) mode: u32,
    pub(crate) access: AccessPolicy,
    pub(crate) policy: WaitPolicy,
    pub(crate) async_spin: Duration,
    pub(crate) stream_spin: Duration,
    pub(crate) max_in_flight: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            transports: TransportKind::Shm.bit() | TransportKind::Unix.bit() | TransportKind::Tcp.bit(),
            max_frame: DEFAULT_MAX_FRAME,
            ring_capacity: DEFAULT_RING_CAPACITY,
            mode: 0o600,
            access: AccessPolicy::default(),
            policy: default_policy(),
            async_spin: DEFAULT_ASYNC_SPIN,
            stream_spin: DEFAULT_STREAM_SPIN,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Requests of one client [`crate::Server::serve_async`] handles at once by
/// default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

impl ServerOptions {
    /// Defaults: every transport, 64 MiB frames, 1 MiB rings, socket mode
    /// 0600, only the same user and root may connect.
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }
    /// Refuse shared memory: every UNIX-socket client gets frames over the
    /// socket.
    pub fn no_shm(mut self) -> Self {
        self.transports &= !TransportKind::Shm.bit();
        self
    }
    /// Largest frame payload in bytes.
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }
    /// Bytes of each ring (a power of two from 4 KiB); frames larger than a
    /// ring travel through it in chunks.
    pub fn ring_capacity(mut self, bytes: u32) -> Self {
        self.ring_capacity = bytes;
        self
    }
    /// Permission bits of the UNIX socket file (default 0600).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    /// Who may connect (default: the same user, and root).
    pub fn access(mut self, policy: AccessPolicy) -> Self {
        self.access = policy;
        self
    }
    /// How connection threads wait for requests on the rings (e.g.
    /// `WaitPolicy::busy_poll()` to spin: lowest latency, a core each). Its
    /// check interval also bounds every park of [`crate::Server::serve_async`].
    pub fn wait_policy(mut self, p: WaitPolicy) -> Self {
        self.policy = p;
        self
    }
    /// Requests of one client that [`crate::Server::serve_async`] runs at
    /// once (default [`DEFAULT_MAX_IN_FLIGHT`]); beyond that it stops
    /// reading the client's requests until one finishes, so a client that
    /// never reads its replies cannot pile up tasks and memory.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests.max(1);
        self
    }
    /// How long [`crate::Server::serve_async`] polls an empty ring for
    /// requests, yielding between polls, before it parks on its doorbell
    /// (default [`DEFAULT_ASYNC_SPIN`]).
    pub fn async_spin(mut self, t: Duration) -> Self {
        self.async_spin = t.min(MAX_ASYNC_SPIN);
        self
    }
    /// How long the [`crate::ShmStream`]s a [`crate::ShmListener`] accepts
    /// with these options, and the tarpc transports of `tarpc::listen`, poll
    /// an empty ring (or a full one) before they park, at least: as
    /// [`ClientOptions::stream_spin`] (default [`DEFAULT_STREAM_SPIN`]).
    pub fn stream_spin(mut self, t: Duration) -> Self {
        self.stream_spin = t.min(MAX_ASYNC_SPIN);
        self
    }
    /// How the streams and tarpc transports accepted with these options wait.
    pub(crate) fn stream_wait(&self) -> AsyncWait {
        AsyncWait { spin: self.stream_spin, check: self.policy.interval() }
    }
}
