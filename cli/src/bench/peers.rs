//! The libraries a user would pick instead of shmring (feature `peers`), each used the way
//! its documentation shows, with the same messages and checks as every other row:
//!
//! - **iceoryx2** publish-subscribe: one service each way for ping-pong (`[u8]` samples of
//!   the case's size, loaned, written and sent; received in place), one for streaming. The
//!   stream's service never overwrites a sample (no safe overflow) and its publisher is set
//!   to retry until delivered; still, with iceoryx2 0.10, once the subscriber's buffer was
//!   full `send` reported 0 recipients and the sample was gone, so a sample that reached no
//!   subscriber is sent again (as any reliable stream over it must). Spin rows busy-poll
//!   `receive`; the stream's reader yields between empty polls.
//! - **ipc-channel** byte channels (`IpcBytesSender` / `IpcBytesReceiver`, the library's way
//!   of sending raw bytes between processes), set up through an `IpcOneShotServer` whose
//!   name the child is given. Blocking rows call `recv`; spin rows busy-poll `try_recv`.
//!
//! Publish-subscribe delivers to the subscribers connected when a sample is sent, so both
//! sides wait until the other's ports are connected before the first message.

use std::time::{Duration, Instant};

use iceoryx2::port::backpressure_strategy::BackpressureStrategy;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use ipc_channel::TryRecvError;
use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender, bytes_channel};

use super::case::{Budget, Case, Mode};
use super::guard::unique_name;
use super::peer::{self, ChildSpec, Launcher};
use super::protocol::{self, Channel, Outcome};

/// Samples a stream's subscriber may hold before the publisher has to wait.
const STREAM_BUFFER: usize = 256;
/// How long either side waits for the other's ports to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Service = iceoryx2::service::ipc::Service;
type Pub = Publisher<Service, [u8], ()>;
type Sub = Subscriber<Service, [u8], ()>;

fn ice(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> String {
    move |e| format!("iceoryx2: {what}: {e}")
}

/// One process's iceoryx2 ports: a publisher to the peer and a subscriber from it (either may
/// be absent for a stream), on one node.
struct IceChannel {
    _node: Node<Service>,
    tx: Option<Pub>,
    rx: Option<Sub>,
    spin: bool,
}

impl Channel for IceChannel {
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        let tx = self.tx.as_ref().ok_or("iceoryx2: no publisher to send with")?;
        // `send` says how many subscribers the sample reached; 0 means the peer's buffer was
        // full and the sample was dropped, so it goes again (see the module docs).
        loop {
            let sample = tx.loan_slice_uninit(msg.len()).map_err(|e| ice("loan")(&e))?;
            if sample.write_from_slice(msg).send().map_err(|e| ice("send")(&e))? > 0 {
                return Ok(());
            }
            std::hint::spin_loop();
        }
    }

    fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, String> {
        let rx = self.rx.as_ref().ok_or("iceoryx2: no subscriber to receive with")?;
        loop {
            if let Some(sample) = rx.receive().map_err(|e| ice("receive")(&e))? {
                return Ok(f(sample.payload()));
            }
            if self.spin {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// The service `name` (created by the parent, opened by the child: same settings either way).
fn service(
    node: &Node<Service>,
    name: &str,
    stream: bool,
) -> Result<iceoryx2::service::port_factory::publish_subscribe::PortFactory<Service, [u8], ()>, String> {
    let name: ServiceName = name.try_into().map_err(|e| ice("service name")(&e))?;
    let builder = node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .enable_safe_overflow(!stream)
        .subscriber_max_buffer_size(if stream { STREAM_BUFFER } else { 2 });
    builder.open_or_create().map_err(|e| ice("opening the service")(&e))
}

fn publisher(
    svc: &iceoryx2::service::port_factory::publish_subscribe::PortFactory<Service, [u8], ()>,
    case: &Case,
) -> Result<Pub, String> {
    svc.publisher_builder()
        .initial_max_slice_len(case.payload)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .map_err(|e| ice("creating a publisher")(&e))
}

/// Waits until the service has a publisher and a subscriber, i.e. the peer's port is there.
fn wait_connected(
    svc: &iceoryx2::service::port_factory::publish_subscribe::PortFactory<Service, [u8], ()>,
) -> Result<(), String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while svc.dynamic_config().number_of_publishers() < 1 || svc.dynamic_config().number_of_subscribers() < 1 {
        if Instant::now() > deadline {
            return Err("iceoryx2: the peer's port did not connect".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The two ports of one side: `send_to` and `recv_from` name the services (either may be
/// `None` for a stream).
fn ice_channel(case: &Case, send_to: Option<String>, recv_from: Option<String>) -> Result<IceChannel, String> {
    // Errors come back as values; its notes ("no config file was loaded") would garble the table.
    set_log_level_from_env_or(LogLevel::Error);
    let node = NodeBuilder::new().create::<Service>().map_err(|e| ice("creating a node")(&e))?;
    let stream = case.is_stream();
    let mut services = Vec::new();
    let tx = match send_to {
        Some(name) => {
            let svc = service(&node, &name, stream)?;
            let p = publisher(&svc, case)?;
            services.push(svc);
            Some(p)
        }
        None => None,
    };
    let rx = match recv_from {
        Some(name) => {
            let svc = service(&node, &name, stream)?;
            let s = svc.subscriber_builder().create().map_err(|e| ice("creating a subscriber")(&e))?;
            services.push(svc);
            Some(s)
        }
        None => None,
    };
    for svc in &services {
        wait_connected(svc)?;
    }
    Ok(IceChannel { _node: node, tx, rx, spin: case.mode == Mode::Spin })
}

/// Parent side of an iceoryx2 row.
pub(crate) fn iceoryx2_parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let base = unique_name();
    let child = launcher.spawn(case, budget, vec![base.clone()], vec![])?;
    let ch = if case.is_stream() {
        ice_channel(case, None, Some(format!("{base}/data")))
    } else {
        ice_channel(case, Some(format!("{base}/ping")), Some(format!("{base}/pong")))
    };
    let mut ch = match ch {
        Ok(ch) => ch,
        Err(e) => return protocol::conclude(Err(e), child),
    };
    protocol::drive(&mut ch, case, budget, child)
}

/// Child side of an iceoryx2 row.
pub(crate) fn iceoryx2_child(spec: &ChildSpec) -> Result<(), String> {
    let base = peer::name(spec, 0)?;
    let mut ch = if spec.case.is_stream() {
        ice_channel(&spec.case, Some(format!("{base}/data")), None)?
    } else {
        ice_channel(&spec.case, Some(format!("{base}/pong")), Some(format!("{base}/ping")))?
    };
    protocol::serve(&mut ch, spec)
}

fn ipc_err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> String {
    move |e| format!("ipc-channel: {what}: {e}")
}

/// One side of an ipc-channel row.
struct IpcChannel {
    tx: Option<IpcBytesSender>,
    rx: Option<IpcBytesReceiver>,
    spin: bool,
}

impl Channel for IpcChannel {
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        let tx = self.tx.as_ref().ok_or("ipc-channel: no sender")?;
        tx.send(msg).map_err(|e| ipc_err("send")(&e))
    }

    fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, String> {
        let rx = self.rx.as_ref().ok_or("ipc-channel: no receiver")?;
        if !self.spin {
            let msg = rx.recv().map_err(|e| ipc_err("recv")(&e))?;
            return Ok(f(&msg));
        }
        loop {
            match rx.try_recv() {
                Ok(msg) => return Ok(f(&msg)),
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                Err(TryRecvError::IpcError(e)) => return Err(ipc_err("try_recv")(&e)),
            }
        }
    }
}

/// What the child hands the parent: a sender to the child (ping-pong only) and a receiver
/// from it.
type Endpoints = (Option<IpcBytesSender>, IpcBytesReceiver);

/// Parent side of an ipc-channel row: a one-shot server whose name goes to the child, which
/// connects and sends its endpoints.
pub(crate) fn ipc_channel_parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let (server, name) = IpcOneShotServer::<Endpoints>::new().map_err(|e| ipc_err("one-shot server")(&e))?;
    let child = launcher.spawn(case, budget, vec![name], vec![])?;
    let (tx, rx) = match server.accept() {
        Ok((_, endpoints)) => endpoints,
        Err(e) => return protocol::conclude(Err(ipc_err("accepting the child")(&e)), child),
    };
    let mut ch = IpcChannel { tx, rx: Some(rx), spin: case.mode == Mode::Spin };
    protocol::drive(&mut ch, case, budget, child)
}

/// Child side of an ipc-channel row.
pub(crate) fn ipc_channel_child(spec: &ChildSpec) -> Result<(), String> {
    let name = peer::name(spec, 0)?;
    let to_server = IpcSender::<Endpoints>::connect(name.to_owned()).map_err(|e| ipc_err("connecting")(&e))?;
    let (up_tx, up_rx) = bytes_channel().map_err(|e| ipc_err("channel")(&e))?;
    let spin = spec.case.mode == Mode::Spin;
    let mut ch = if spec.case.is_stream() {
        to_server.send((None, up_rx)).map_err(|e| ipc_err("sending endpoints")(&e))?;
        IpcChannel { tx: Some(up_tx), rx: None, spin }
    } else {
        let (down_tx, down_rx) = bytes_channel().map_err(|e| ipc_err("channel")(&e))?;
        to_server.send((Some(down_tx), up_rx)).map_err(|e| ipc_err("sending endpoints")(&e))?;
        IpcChannel { tx: Some(up_tx), rx: Some(down_rx), spin }
    };
    protocol::serve(&mut ch, spec)
}
