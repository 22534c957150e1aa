//! shmring's MPMC ring, used with one producer and one consumer: two rings for ping-pong
//! (parent→child, child→parent), one for streaming. Same protocol and messages as the SPSC
//! rows, one message per call, so the two rows side by side show what the MPMC slot
//! protocol (a compare-and-swap per message, a sequence word per slot) costs over SPSC.
//! The parent creates every segment and unlinks its name once the first message proves the
//! child has attached, and closes the ring it receives from if the child exits.

use shmring::mpmc::{Consumer, MpmcOptions, Producer};

use super::case::{Budget, Case};
use super::guard::unique_name;
use super::peer::{self, Child, ChildSpec, ExitWatch, Launcher};
use super::protocol::{self, Channel, FirstContact, Outcome};
use super::ring::{location, policy, unlink_later};

/// Slots per ring.
const SLOTS: usize = 1024;

fn err(what: &'static str) -> impl Fn(shmring::Error) -> String {
    move |e| format!("shmring-mpmc: {what}: {e}")
}

fn options(case: &Case) -> MpmcOptions {
    MpmcOptions::new().slot_size(case.payload).slot_count(SLOTS)
}

struct MpmcChannel {
    tx: Option<Producer>,
    rx: Option<Consumer>,
}

impl Channel for MpmcChannel {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        let tx = self.tx.as_mut().ok_or("shmring-mpmc: no ring to send on")?;
        tx.send(msg).map_err(err("send"))
    }

    #[inline]
    fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        let rx = self.rx.as_mut().ok_or("shmring-mpmc: no ring to receive from")?;
        match rx.recv().map_err(err("recv"))? {
            Some(record) => Ok(f(&record)),
            None => Err("shmring-mpmc: the ring was closed early (by the peer, or because it exited)".into()),
        }
    }
}

/// Closes the ring `rx` receives from once `child` has exited, so that a wait for its next
/// message ends (after everything sent before): an MPMC ring does not watch its peers, so a
/// child that died before it attached, or at any time after, would leave the parent waiting
/// for ever. Watches until dropped.
fn close_when_gone(rx: &Consumer, child: &Child) -> Result<ExitWatch, String> {
    let closer = rx.new_producer().map_err(err("attaching a handle to close the ring with"))?;
    ExitWatch::start(child.watch(), move || closer.close_ring())
}

/// Parent side: creates the ring(s), starts the child, measures.
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let base = unique_name();
    let opts = options(case).wait_policy(policy(case.mode));
    if case.is_stream() {
        let loc = location(&base, "data");
        let rx = Consumer::create(&loc, &opts).map_err(err("creating ring"))?;
        let unlink = unlink_later(loc);
        let child = launcher.spawn(case, budget, vec![base], vec![])?;
        let _watch = close_when_gone(&rx, &child)?;
        let ch = MpmcChannel { tx: None, rx: Some(rx) };
        protocol::drive(&mut FirstContact::new(ch, vec![unlink]), case, budget, child)
    } else {
        let (ping, pong) = (location(&base, "ping"), location(&base, "pong"));
        let tx = Producer::create(&ping, &opts).map_err(err("creating ring"))?;
        let unlink_ping = unlink_later(ping);
        let rx = Consumer::create(&pong, &opts).map_err(err("creating ring"))?;
        let unlink_pong = unlink_later(pong);
        let child = launcher.spawn(case, budget, vec![base], vec![])?;
        let _watch = close_when_gone(&rx, &child)?;
        let ch = MpmcChannel { tx: Some(tx), rx: Some(rx) };
        let mut ch = FirstContact::new(ch, vec![unlink_ping, unlink_pong]);
        protocol::drive(&mut ch, case, budget, child)
    }
}

/// Child side: opens the ring(s) the parent created and plays its part.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    let base = peer::name(spec, 0)?;
    let policy = policy(spec.case.mode);
    if spec.case.is_stream() {
        let mut tx = Producer::open(&location(base, "data")).map_err(err("opening ring"))?;
        tx.set_wait_policy(policy);
        protocol::serve(&mut MpmcChannel { tx: Some(tx), rx: None }, spec)
    } else {
        let mut rx = Consumer::open(&location(base, "ping")).map_err(err("opening ring"))?;
        let mut tx = Producer::open(&location(base, "pong")).map_err(err("opening ring"))?;
        tx.set_wait_policy(policy);
        rx.set_wait_policy(policy);
        protocol::serve(&mut MpmcChannel { tx: Some(tx), rx: Some(rx) }, spec)
    }
}
