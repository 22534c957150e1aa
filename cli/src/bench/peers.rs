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
//! - **iceoryx2** request-response: the parent's client sends each ping as a request, the
//!   child's server answers it with the pong as the response, both busy-polling (spin rows).
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
    /// Blocking rows: an event service each way wakes the receiver (`notify` after each
    /// send, a listener's wait while nothing has arrived).
    wake: Option<iceoryx2::port::notifier::Notifier<Service>>,
    sleep: Option<iceoryx2::port::listener::Listener<Service>>,
}

impl Channel for IceChannel {
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        let tx = self.tx.as_ref().ok_or("iceoryx2: no publisher to send with")?;
        // `send` says how many subscribers the sample reached; 0 means the peer's buffer was
        // full and the sample was dropped, so it goes again (see the module docs).
        loop {
            let sample = tx.loan_slice_uninit(msg.len()).map_err(|e| ice("loan")(&e))?;
            if sample.write_from_slice(msg).send().map_err(|e| ice("send")(&e))? > 0 {
                if let Some(wake) = &self.wake {
                    wake.notify().map_err(|e| ice("notify")(&e))?;
                }
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
            if let Some(sleep) = &self.sleep {
                // An event sent after the receive above is kept until this wait takes it.
                sleep.timed_wait(|_| {}, Duration::from_millis(100)).map_err(|e| ice("wait")(&e))?;
            } else if self.spin {
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

/// Waits until `connected` says the peer's port is there: at most [`CONNECT_TIMEOUT`], and
/// not at all once `gone` says the peer exited.
fn wait_for_peer(mut connected: impl FnMut() -> bool, gone: &mut dyn FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while !connected() {
        if gone() {
            return Err("iceoryx2: the peer exited before its port connected".into());
        }
        if Instant::now() > deadline {
            return Err("iceoryx2: the peer's port did not connect".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The two ports of one side: `send_to` and `recv_from` name the services (either may be
/// `None` for a stream).
fn ice_channel(
    case: &Case,
    send_to: Option<String>,
    recv_from: Option<String>,
    gone: &mut dyn FnMut() -> bool,
) -> Result<IceChannel, String> {
    // Errors come back as values; its notes ("no config file was loaded") would garble the table.
    set_log_level_from_env_or(LogLevel::Error);
    let node = NodeBuilder::new().create::<Service>().map_err(|e| ice("creating a node")(&e))?;
    let stream = case.is_stream();
    let mut services = Vec::new();
    let tx = match &send_to {
        Some(name) => {
            let svc = service(&node, name, stream)?;
            let p = publisher(&svc, case)?;
            services.push(svc);
            Some(p)
        }
        None => None,
    };
    let rx = match &recv_from {
        Some(name) => {
            let svc = service(&node, name, stream)?;
            let s = svc.subscriber_builder().create().map_err(|e| ice("creating a subscriber")(&e))?;
            services.push(svc);
            Some(s)
        }
        None => None,
    };
    for svc in &services {
        let c = svc.dynamic_config();
        wait_for_peer(|| c.number_of_publishers() >= 1 && c.number_of_subscribers() >= 1, gone)?;
    }
    let (mut wake, mut sleep) = (None, None);
    if case.mode == Mode::Blocking {
        // Every port first, then the waits: each side's first wait is for the other's second port.
        let mut events = Vec::new();
        for (name, sending) in [(&send_to, true), (&recv_from, false)] {
            let Some(name) = name else { continue };
            let name: ServiceName = format!("{name}-event").as_str().try_into().map_err(|e| ice("service name")(&e))?;
            let svc = node.service_builder(&name).event().open_or_create().map_err(|e| ice("event service")(&e))?;
            if sending {
                wake = Some(svc.notifier_builder().create().map_err(|e| ice("creating a notifier")(&e))?);
            } else {
                sleep = Some(svc.listener_builder().create().map_err(|e| ice("creating a listener")(&e))?);
            }
            events.push(svc);
        }
        for svc in &events {
            let c = svc.dynamic_config();
            wait_for_peer(|| c.number_of_notifiers() >= 1 && c.number_of_listeners() >= 1, gone)?;
        }
    }
    Ok(IceChannel { _node: node, tx, rx, spin: case.mode == Mode::Spin, wake, sleep })
}

/// Parent side of an iceoryx2 row.
pub(crate) fn iceoryx2_parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let base = unique_name();
    let mut child = launcher.spawn(case, budget, vec![base.clone()], vec![])?;
    let gone = &mut || child.gone();
    let ch = if case.is_stream() {
        ice_channel(case, None, Some(format!("{base}/data")), gone)
    } else {
        ice_channel(case, Some(format!("{base}/ping")), Some(format!("{base}/pong")), gone)
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
        ice_channel(&spec.case, Some(format!("{base}/data")), None, &mut || false)?
    } else {
        ice_channel(&spec.case, Some(format!("{base}/pong")), Some(format!("{base}/ping")), &mut || false)?
    };
    protocol::serve(&mut ch, spec)
}

type Client = iceoryx2::port::client::Client<Service, [u8], (), [u8], ()>;
type Server = iceoryx2::port::server::Server<Service, [u8], (), [u8], ()>;
type Pending = iceoryx2::pending_response::PendingResponse<Service, [u8], (), [u8], ()>;
type Active = iceoryx2::active_request::ActiveRequest<Service, [u8], (), [u8], ()>;

/// One side of an iceoryx2 request-response row: the parent is the client (its ping is a
/// request, the pong the response to it), the child the server, which answers each request
/// it receives with the message the protocol hands back.
enum RrChannel {
    Client { _node: Node<Service>, client: Client, pending: Option<Pending> },
    Server { _node: Node<Service>, server: Server, active: Option<Active> },
}

impl Channel for RrChannel {
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        match self {
            RrChannel::Client { client, pending, .. } => {
                let request = client.loan_slice_uninit(msg.len()).map_err(|e| ice("loan")(&e))?;
                *pending = Some(request.write_from_slice(msg).send().map_err(|e| ice("send")(&e))?);
            }
            RrChannel::Server { active, .. } => {
                let request = active.take().ok_or("iceoryx2: a response with no request to answer")?;
                let response = request.loan_slice_uninit(msg.len()).map_err(|e| ice("loan")(&e))?;
                response.write_from_slice(msg).send().map_err(|e| ice("respond")(&e))?;
            }
        }
        Ok(())
    }

    fn recv_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, String> {
        match self {
            RrChannel::Client { pending, .. } => {
                let p = pending.as_ref().ok_or("iceoryx2: waiting for a response to no request")?;
                loop {
                    if let Some(response) = p.receive().map_err(|e| ice("receive")(&e))? {
                        return Ok(f(response.payload()));
                    }
                    std::hint::spin_loop();
                }
            }
            RrChannel::Server { server, active, .. } => loop {
                if let Some(request) = server.receive().map_err(|e| ice("receive")(&e))? {
                    let r = f(request.payload());
                    *active = Some(request);
                    return Ok(r);
                }
                std::hint::spin_loop();
            },
        }
    }
}

/// The request-response service `name`, and a wait until both its ports are there.
fn rr_channel(case: &Case, name: &str, client: bool, gone: &mut dyn FnMut() -> bool) -> Result<RrChannel, String> {
    set_log_level_from_env_or(LogLevel::Error);
    let node = NodeBuilder::new().create::<Service>().map_err(|e| ice("creating a node")(&e))?;
    let service_name: ServiceName = name.try_into().map_err(|e| ice("service name")(&e))?;
    let svc = node
        .service_builder(&service_name)
        .request_response::<[u8], [u8]>()
        .max_clients(1)
        .max_servers(1)
        .open_or_create()
        .map_err(|e| ice("opening the service")(&e))?;
    let ch = if client {
        let c = svc.client_builder().initial_max_slice_len(case.payload).create();
        RrChannel::Client { _node: node, client: c.map_err(|e| ice("creating a client")(&e))?, pending: None }
    } else {
        let s = svc.server_builder().initial_max_slice_len(case.payload).create();
        RrChannel::Server { _node: node, server: s.map_err(|e| ice("creating a server")(&e))?, active: None }
    };
    let c = svc.dynamic_config();
    wait_for_peer(|| c.number_of_clients() >= 1 && c.number_of_servers() >= 1, gone)?;
    Ok(ch)
}

/// Parent side of the iceoryx2 request-response row: the client.
pub(crate) fn iceoryx2_rr_parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let base = unique_name();
    let mut child = launcher.spawn(case, budget, vec![base.clone()], vec![])?;
    let mut ch = match rr_channel(case, &format!("{base}/rr"), true, &mut || child.gone()) {
        Ok(ch) => ch,
        Err(e) => return protocol::conclude(Err(e), child),
    };
    protocol::drive(&mut ch, case, budget, child)
}

/// Child side of the iceoryx2 request-response row: the server.
pub(crate) fn iceoryx2_rr_child(spec: &ChildSpec) -> Result<(), String> {
    let base = peer::name(spec, 0)?;
    protocol::serve(&mut rr_channel(&spec.case, &format!("{base}/rr"), false, &mut || false)?, spec)
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
    let mut child = launcher.spawn(case, budget, vec![name.clone()], vec![])?;
    // `accept` has no timeout: it runs on a thread while this one watches the child, and a
    // child that exits first is replaced by a connection of our own, which ends the accept.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(server.accept().map(|(_, endpoints)| endpoints).map_err(|e| e.to_string()));
    });
    let accepted = loop {
        match done_rx.recv_timeout(Duration::from_millis(5)) {
            Ok(r) => break r.map_err(|e| format!("ipc-channel: accepting the child: {e}")),
            Err(_) if child.gone() => {
                if let Ok(me) = IpcSender::<Endpoints>::connect(name) {
                    let _ = bytes_channel().map(|(_, rx)| me.send((None, rx)));
                }
                break Err("ipc-channel: the peer exited before it connected".to_owned());
            }
            Err(_) => {}
        }
    };
    let (tx, rx) = match accepted {
        Ok(endpoints) => endpoints,
        Err(e) => return protocol::conclude(Err(e), child),
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
