//! shmring-rpc: this process is the client, the peer runs a server whose handler echoes every
//! request, with a busy-polling wait policy.
//!
//! The peer binds the address the parent chose (a `unix:` socket in a private temporary
//! directory, or `tcp:127.0.0.1:0`) and writes the address it really bound, one line, on a
//! control socket the two share; it serves until the parent closes its end of that socket,
//! and then exits. Messages carry sequence numbers as everywhere in the bench
//! ([`protocol::stamp`]); every reply is checked against the call it answers: its length,
//! its leading sequence number and its trailing stamp.
//!
//! * mode `call`: one call at a time, one sample per call, as the ping-pong rows.
//! * mode `64-in-flight`: [`IN_FLIGHT`] calls outstanding on the one connection, counted per
//!   second. The blocking client pipelines ([`Client::call_all`]); the async client runs
//!   [`IN_FLIGHT`] tasks that each call in a loop.

use std::fs::DirBuilder;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shmring::WaitPolicy;
use shmring_rpc::{Addr, AsyncClient, Client, ClientOptions, Server, ServerOptions, TransportKind};

use super::case::{Budget, Case, IN_FLIGHT, Length, Mode, Transport};
use super::guard::{Cleanup, unique_name};
use super::peer::{self, ChildSpec, Launcher};
use super::protocol::{self, Outcome, RoundTripClock, Throughput, read_seq, stamp};

/// Payload sizes of the `call` rows (request and reply each).
pub(crate) const SIZES: [usize; 3] = [64, 4 << 10, 1 << 20];

/// Calls in the first batch a pipelining client sends; batches double from there until one
/// takes [`BATCH_TIME`], so that refilling the pipeline after each batch costs next to
/// nothing, while a slow transport still looks at the clock often enough.
const FIRST_BATCH: u64 = 256;
/// See [`FIRST_BATCH`].
const BATCH_TIME: Duration = Duration::from_millis(10);
/// The largest batch.
const MAX_BATCH: u64 = 1 << 16;

/// How long the async client polls its ring for a reply before it sleeps on its doorbell
/// (set here, not left to the library's default, since the reading guide states it).
const ASYNC_SPIN: Duration = Duration::from_micros(5);

/// Longest line the peer may send for its address.
const MAX_ADDR_LINE: u64 = 4096;

/// The transport a row asks the client for.
fn wanted(transport: Transport) -> Result<TransportKind, String> {
    match transport {
        Transport::RpcShm | Transport::RpcShmAsync => Ok(TransportKind::Shm),
        Transport::RpcUnix => Ok(TransportKind::Unix),
        Transport::RpcTcp => Ok(TransportKind::Tcp),
        other => Err(format!("{} is not an rpc transport", other.name())),
    }
}

/// Parent side: starts the server in the peer, connects, measures, and lets the peer go.
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let kind = wanted(case.transport)?;
    with_server(case, budget, launcher, kind == TransportKind::Tcp, |addr| client(case, budget, kind, addr))
}

/// Parent side of every row with a server in the peer: has the peer listen on TCP
/// (`tcp:127.0.0.1:0`) or on a UNIX socket in a private temporary directory, runs `client`
/// with the address it bound, then lets the peer go.
pub(crate) fn with_server(
    case: &Case,
    budget: &Budget,
    launcher: &Launcher,
    tcp: bool,
    client: impl FnOnce(&Addr) -> Result<Outcome, String>,
) -> Result<Outcome, String> {
    // Removed once the case is over (the peer is gone by then), or on the emergency path.
    let (listen, _dir) = if tcp {
        ("tcp:127.0.0.1:0".to_owned(), None)
    } else {
        let (dir, cleanup) = private_dir()?;
        let socket = dir.join("rpc.sock");
        let socket = socket.to_str().ok_or("rpc: temporary directory path is not UTF-8")?;
        (format!("unix:{socket}"), Some(cleanup))
    };
    let (control, theirs) = UnixStream::pair().map_err(|e| format!("rpc: socketpair for the control socket: {e}"))?;
    let child = launcher.spawn(case, budget, vec![listen], vec![theirs.into()])?;
    let result = server_addr(&control).and_then(|addr| client(&addr));
    // The client is gone (it lived in `client`); closing this tells the peer to exit.
    drop(control);
    protocol::conclude(result, child)
}

/// A new directory only this user may enter, and its removal.
fn private_dir() -> Result<(PathBuf, Cleanup), String> {
    let dir = std::env::temp_dir().join(unique_name());
    DirBuilder::new().mode(0o700).create(&dir).map_err(|e| format!("rpc: creating {}: {e}", dir.display()))?;
    let removed = dir.clone();
    let cleanup = Cleanup::new(move || {
        let _ = std::fs::remove_dir_all(&removed);
    });
    Ok((dir, cleanup))
}

/// Parent side: the address the peer's server listens on, once it does. If the peer exits
/// first, its end of the control socket closes and this fails at once.
fn server_addr(control: &UnixStream) -> Result<Addr, String> {
    let mut line = String::new();
    BufReader::new(control.take(MAX_ADDR_LINE))
        .read_line(&mut line)
        .map_err(|e| format!("rpc: reading the server's address from the peer: {e}"))?;
    let Some(addr) = line.strip_suffix('\n') else {
        return Err("rpc: the peer process exited before its server was listening".into());
    };
    Addr::parse(addr).map_err(|e| format!("rpc: the peer reported a bad address: {e}"))
}

/// Both sides of the shared-memory rows busy-poll (the async client only for [`ASYNC_SPIN`]
/// after each request); over a socket the policy does not apply.
fn options(kind: TransportKind) -> ClientOptions {
    ClientOptions::new().transport(kind).wait_policy(WaitPolicy::busy_poll()).async_spin(ASYNC_SPIN)
}

pub(crate) fn check_transport(got: TransportKind, kind: TransportKind) -> Result<(), String> {
    if got == kind {
        Ok(())
    } else {
        Err(format!("rpc: asked for transport {}, the connection uses {}", kind.name(), got.name()))
    }
}

/// Checks that `reply` is the echo of call `seq`, `payload` bytes long, reading every byte.
pub(crate) fn check_echo(reply: &[u8], payload: usize, seq: u64) -> Result<(), String> {
    let back = read_seq(reply, payload).map_err(|e| format!("rpc: reply to call {seq}: {e}"))?;
    if back == seq { Ok(()) } else { Err(format!("rpc: call {seq} was answered with the echo of call {back}")) }
}

pub(crate) fn not_an_rpc_mode(mode: Mode) -> String {
    format!("rpc: the rpc rows measure calls (modes call and {IN_FLIGHT}-in-flight), not mode {}", mode.name())
}

/// Parent side: connects and measures what `case.mode` says.
fn client(case: &Case, budget: &Budget, kind: TransportKind, addr: &Addr) -> Result<Outcome, String> {
    if case.transport == Transport::RpcShmAsync {
        return async_client(case, budget, kind, addr);
    }
    let mut client = Client::connect(addr, &options(kind)).map_err(|e| format!("rpc: connecting: {e}"))?;
    check_transport(client.transport(), kind)?;
    match case.mode {
        Mode::Call => one_at_a_time(&mut client, case.payload, budget).map(Outcome::Rtt),
        Mode::InFlight => pipelined(&mut client, case.payload, budget).map(Outcome::Stream),
        other => Err(not_an_rpc_mode(other)),
    }
}

/// One blocking call after another: one sample per call.
fn one_at_a_time(client: &mut Client, payload: usize, budget: &Budget) -> Result<Histogram<u64>, String> {
    let mut msg = vec![0u8; payload];
    protocol::time_round_trips(budget, |seq| {
        stamp(&mut msg, seq);
        let reply = client.call(&msg).map_err(|e| format!("rpc: call {seq}: {e}"))?;
        check_echo(&reply, payload, seq)
    })
}

/// Pipelined blocking calls, [`IN_FLIGHT`] outstanding, in batches (see [`FIRST_BATCH`]).
fn pipelined(client: &mut Client, payload: usize, budget: &Budget) -> Result<Throughput, String> {
    let mut requests = Vec::new();
    let mut next = 1u64;
    let mut batch = |n: u64| -> Result<(), String> {
        let first = next;
        requests.resize(n as usize * payload, 0);
        for (seq, msg) in (first..).zip(requests.chunks_exact_mut(payload)) {
            stamp(msg, seq);
        }
        let replies = client
            .call_all(requests.chunks_exact(payload), IN_FLIGHT)
            .map_err(|e| format!("rpc: calls {first} to {}, {IN_FLIGHT} in flight: {e}", first + n - 1))?;
        if replies.len() as u64 != n {
            return Err(format!("rpc: {n} calls made, {} replies returned", replies.len()));
        }
        for (seq, reply) in (first..).zip(&replies) {
            check_echo(reply, payload, seq)?;
        }
        next += n;
        Ok(())
    };
    // Unmeasured first; each batch's time says how large the next may be.
    let mut size = FIRST_BATCH;
    let mut timed = |n: u64, size: &mut u64| -> Result<(), String> {
        let t = Instant::now();
        batch(n)?;
        if t.elapsed() < BATCH_TIME {
            *size = (*size * 2).min(MAX_BATCH);
        }
        Ok(())
    };
    let warming = Instant::now();
    while warming.elapsed() < budget.warmup {
        timed(size, &mut size)?;
    }
    let start = Instant::now();
    let mut done = 0u64;
    while !budget.finished(done, start.elapsed()) {
        let n = budget.next_chunk(done, size);
        timed(n, &mut size)?;
        done += n;
    }
    Ok(Throughput { msgs: done, elapsed: start.elapsed() })
}

/// A current-thread tokio runtime with the I/O and time drivers, for an async client on this
/// thread (still pinned where it was).
pub(crate) fn client_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("rpc: starting a tokio runtime: {e}"))
}

/// The tokio client on a current-thread runtime.
fn async_client(case: &Case, budget: &Budget, kind: TransportKind, addr: &Addr) -> Result<Outcome, String> {
    let rt = client_runtime()?;
    let client =
        rt.block_on(AsyncClient::connect(addr, &options(kind))).map_err(|e| format!("rpc: connecting: {e}"))?;
    check_transport(client.transport(), kind)?;
    let caller = || AsyncCaller { client: client.clone(), msg: vec![0u8; case.payload] };
    let outcome = async_calls(&rt, case, budget, caller);
    // Closes the connection before the runtime its tasks run on goes.
    drop(client);
    outcome
}

/// One caller of the async rows (a task of its own in mode `64-in-flight`): makes call `seq`
/// and checks its reply.
pub(crate) trait Caller: Send + 'static {
    fn call(&mut self, seq: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// A shmring-rpc [`AsyncClient`] and the request it stamps for each call.
struct AsyncCaller {
    client: AsyncClient,
    msg: Vec<u8>,
}

impl Caller for AsyncCaller {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        stamp(&mut self.msg, seq);
        let reply = self.client.call(&self.msg).await.map_err(|e| format!("rpc: call {seq}: {e}"))?;
        check_echo(&reply, self.msg.len(), seq)
    }
}

/// Measures what `case.mode` says on `rt`, with callers made by `caller` (one in mode `call`,
/// [`IN_FLIGHT`] in mode `64-in-flight`).
pub(crate) fn async_calls<C: Caller>(
    rt: &tokio::runtime::Runtime,
    case: &Case,
    budget: &Budget,
    caller: impl Fn() -> C,
) -> Result<Outcome, String> {
    match case.mode {
        Mode::Call => rt.block_on(async_one_at_a_time(caller(), budget)).map(Outcome::Rtt),
        Mode::InFlight => rt.block_on(concurrent(&caller, budget)).map(Outcome::Stream),
        other => Err(not_an_rpc_mode(other)),
    }
}

/// One awaited call after another: one sample per call.
async fn async_one_at_a_time(mut caller: impl Caller, budget: &Budget) -> Result<Histogram<u64>, String> {
    let mut clock = RoundTripClock::start(budget);
    let mut seq = 0u64;
    loop {
        seq += 1;
        caller.call(seq).await?;
        if clock.lap() {
            return Ok(clock.into_histogram());
        }
    }
}

/// What the calling tasks share.
struct Calls {
    /// The next sequence number to call with.
    next: AtomicU64,
    /// Set when a task fails: the others stop too.
    stop: AtomicBool,
}

/// [`IN_FLIGHT`] tasks calling at once: unmeasured for the warm-up, then for the budget.
async fn concurrent<C: Caller>(caller: &impl Fn() -> C, budget: &Budget) -> Result<Throughput, String> {
    let calls = Arc::new(Calls { next: AtomicU64::new(1), stop: AtomicBool::new(false) });
    if !budget.warmup.is_zero() {
        call_in_tasks(caller, Length::Time(budget.warmup), &calls).await?;
    }
    let start = Instant::now();
    let msgs = call_in_tasks(caller, budget.length, &calls).await?;
    Ok(Throughput { msgs, elapsed: start.elapsed() })
}

/// Runs [`IN_FLIGHT`] tasks, each with a caller of its own making one call after another,
/// until no call may start any more (after `length` of time, or once `length` calls have
/// started in all); returns how many calls were made, all answered and checked.
async fn call_in_tasks<C: Caller>(caller: &impl Fn() -> C, length: Length, calls: &Arc<Calls>) -> Result<u64, String> {
    let start = Instant::now();
    // Relaxed, here and in the tasks: the counter only hands out distinct numbers, and the
    // flag is a plain stop request; nothing else is published through either.
    let first = calls.next.load(Ordering::Relaxed);
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (mut caller, calls) = (caller(), calls.clone());
            tokio::spawn(async move {
                let mut made = 0u64;
                while !calls.stop.load(Ordering::Relaxed) {
                    if let Length::Time(limit) = length
                        && start.elapsed() >= limit
                    {
                        break;
                    }
                    let seq = calls.next.fetch_add(1, Ordering::Relaxed);
                    if let Length::Count(n) = length
                        && seq - first >= n
                    {
                        break;
                    }
                    if let Err(e) = caller.call(seq).await {
                        calls.stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    made += 1;
                }
                Ok(made)
            })
        })
        .collect();
    let mut made = 0u64;
    let mut failure = None;
    // Every task is awaited, so none is left calling when this returns.
    for task in tasks {
        match task.await {
            Ok(Ok(n)) => made += n,
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(format!("rpc: a calling task failed: {e}"))),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(made),
    }
}

/// Child side: binds, says where, echoes every request until the parent closes the control
/// socket.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    let control = UnixStream::from(peer::adopt_fd(spec, 0)?);
    let addr = Addr::parse(peer::name(spec, 0)?).map_err(|e| format!("rpc: {e}"))?;
    let opts = ServerOptions::new().wait_policy(WaitPolicy::busy_poll());
    let server = Server::bind(&addr, &opts).map_err(|e| format!("rpc: {e}"))?;
    let bound = server.local_addr().to_string();
    serve_until_closed(control, bound, move || match server.serve(|req: &[u8]| req.to_vec()) {
        Ok(()) => "the server stopped".to_owned(),
        Err(e) => e.to_string(),
    })
}

/// Child side, once the server listens at `bound`: tells the parent where, on the control
/// socket, and runs `serve` on a thread of its own (it returns only if the server stops, and
/// says why). Whichever ends first ends the peer: the parent closing the control socket
/// (done), or the server stopping (an error).
pub(crate) fn serve_until_closed(
    mut control: UnixStream,
    bound: String,
    serve: impl FnOnce() -> String + Send + 'static,
) -> Result<(), String> {
    control
        .write_all(format!("{bound}\n").as_bytes())
        .map_err(|e| format!("rpc: telling the parent where the server listens: {e}"))?;
    let (done, finished) = mpsc::channel::<Result<(), String>>();
    let failed = done.clone();
    thread::Builder::new()
        .name("bench-rpc-server".into())
        .spawn(move || {
            let why = serve();
            let _ = failed.send(Err(format!("rpc: serving {bound}: {why}")));
        })
        .map_err(|e| format!("rpc: starting the server thread: {e}"))?;
    thread::Builder::new()
        .name("bench-rpc-control".into())
        .spawn(move || {
            let _ = done.send(until_closed(&mut control));
        })
        .map_err(|e| format!("rpc: starting the control thread: {e}"))?;
    finished.recv().unwrap_or_else(|_| Err("rpc: the server and control threads ended without a word".into()))
}

/// Child side: waits until the parent closes its end of the control socket (or dies).
fn until_closed(control: &mut UnixStream) -> Result<(), String> {
    let mut byte = [0u8; 1];
    loop {
        match control.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err("rpc: unexpected bytes from the parent on the control socket".into()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("rpc: reading the control socket: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_transport_asks_for_its_own_kind() {
        for t in [Transport::RpcShm, Transport::RpcShmAsync, Transport::RpcUnix, Transport::RpcTcp] {
            assert!(t.is_rpc());
            let kind = wanted(t).unwrap();
            assert!(t.name().starts_with(&format!("rpc-{}", kind.name())), "{} asks for {}", t.name(), kind.name());
        }
        assert!(wanted(Transport::UnixSocket).is_err());
        assert!(!Transport::UnixSocket.is_rpc());
    }

    #[test]
    fn echoes_are_checked() {
        let mut msg = vec![0u8; 64];
        stamp(&mut msg, 7);
        assert!(check_echo(&msg, 64, 7).is_ok());
        assert!(check_echo(&msg, 64, 8).unwrap_err().contains("echo of call 7"));
        assert!(check_echo(&msg[..63], 64, 7).is_err());
    }
}
