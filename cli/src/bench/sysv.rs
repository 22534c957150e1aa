//! System V message queues: one private queue per case (`msgget(IPC_PRIVATE)`), removed
//! with `IPC_RMID` when the case ends, however it ends. Messages to the child have type 1,
//! messages to the parent type 2; each side receives only its own type, with one blocking
//! `msgsnd` and one blocking `msgrcv` per message.
//!
//! A queue has no notion of its other end, so a watcher thread on the parent's side posts
//! an empty type-2 message once the child has exited: it queues behind everything the child
//! sent, so the parent reads it only if the child stopped early, and reports that. (The
//! child needs no such help: it is killed when the parent dies.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;

use super::case::{Budget, Case};
use super::guard::Cleanup;
use super::peer::{self, ChildSpec, Launcher, PeerWatch};
use super::protocol::{self, Channel, Outcome};

/// Message type of messages to the child.
const TO_CHILD: libc::c_long = 1;
/// Message type of messages to the parent (and of the "child exited" note).
const TO_PARENT: libc::c_long = 2;
/// How often the watcher looks at the child.
const WATCH_EVERY: Duration = Duration::from_millis(20);

/// Reads /proc/sys/kernel/msgmax, the largest message in bytes.
fn msgmax() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/kernel/msgmax").ok()?.trim().parse().ok()
}

/// One queue, one direction to send on and one to receive from.
struct MsgqChannel {
    id: libc::c_int,
    send_type: libc::c_long,
    recv_type: libc::c_long,
    /// `mtype` followed by the message text, as the calls want it (8-byte aligned).
    buf: Vec<u64>,
    payload: usize,
}

impl MsgqChannel {
    fn new(id: libc::c_int, send_type: libc::c_long, recv_type: libc::c_long, payload: usize) -> MsgqChannel {
        MsgqChannel { id, send_type, recv_type, buf: vec![0; 1 + payload.div_ceil(8)], payload }
    }

    fn text(&mut self) -> &mut [u8] {
        let bytes: &mut [u8] = as_bytes_mut(&mut self.buf);
        &mut bytes[8..8 + self.payload]
    }
}

/// The bytes of a `u64` buffer.
fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: any bytes are valid u8s; the pointer and length cover exactly the slice, which the returned
    // borrow keeps exclusively borrowed.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

/// Sends `len` bytes of text with `mtype` from a buffer laid out as `struct msgbuf`.
fn send_raw(
    id: libc::c_int,
    buf: &mut [u64],
    mtype: libc::c_long,
    len: usize,
    flags: libc::c_int,
) -> Result<(), Errno> {
    buf[0] = mtype as u64;
    loop {
        // SAFETY: `buf` starts with the 8-byte mtype and holds at least `len` text bytes after it (callers
        // size it so); msgsnd only reads them.
        let r = unsafe { libc::msgsnd(id, buf.as_ptr().cast(), len, flags) };
        if r == 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => {}
            e => return Err(e),
        }
    }
}

impl Channel for MsgqChannel {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        self.text()[..msg.len()].copy_from_slice(msg);
        send_raw(self.id, &mut self.buf, self.send_type, msg.len(), 0).map_err(|e| format!("sysv-msgq: msgsnd: {e}"))
    }

    #[inline]
    fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        let n = loop {
            // SAFETY: `buf` has room for the 8-byte mtype plus `payload` text bytes, the most msgrcv is told to write.
            let n = unsafe { libc::msgrcv(self.id, self.buf.as_mut_ptr().cast(), self.payload, self.recv_type, 0) };
            if n >= 0 {
                break n as usize;
            }
            match Errno::last() {
                Errno::EINTR => {}
                e => return Err(format!("sysv-msgq: msgrcv: {e}")),
            }
        };
        if n == 0 {
            return Err("sysv-msgq: peer process exited early".into());
        }
        Ok(f(&self.text()[..n]))
    }
}

/// Posts the "child exited" note once the child is gone; stopped and joined when dropped.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(id: libc::c_int, peer: PeerWatch) -> Result<Watcher, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sysv-msgq-watch".into())
            .spawn(move || {
                let mut note = [0u64; 1];
                let mut posted = false;
                // Relaxed: a plain stop request; nothing else is published through it.
                while !flag.load(Ordering::Relaxed) && !posted {
                    std::thread::sleep(WATCH_EVERY);
                    if peer.gone() {
                        // A full queue cannot hold the note yet: try again next round.
                        posted = send_raw(id, &mut note, TO_PARENT, 0, libc::IPC_NOWAIT).is_ok();
                    }
                }
            })
            .map_err(|e| format!("sysv-msgq: starting the watcher thread: {e}"))?;
        Ok(Watcher { stop, thread: Some(thread) })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Relaxed: see the load in the thread.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parent side: creates the queue, starts the child, measures, removes the queue.
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let max = msgmax().unwrap_or(8192);
    if case.payload > max {
        return Ok(Outcome::NotMeasured(format!("message size above /proc/sys/kernel/msgmax ({max})")));
    }
    // SAFETY: msgget takes no pointers; IPC_PRIVATE always makes a new queue.
    let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return Ok(Outcome::NotMeasured(format!("msgget: {}", Errno::last())));
    }
    // Declared before the watcher, so it runs after the watcher has stopped.
    let _remove = Cleanup::new(move || {
        // SAFETY: IPC_RMID takes no buffer (null is allowed); `id` names our own queue.
        unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    });
    let child = launcher.spawn(case, budget, vec![id.to_string()], vec![])?;
    let _watcher = Watcher::start(id, child.watch())?;
    let mut ch = MsgqChannel::new(id, TO_CHILD, TO_PARENT, case.payload);
    protocol::drive(&mut ch, case, budget, child)
}

/// Child side: uses the parent's queue.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    let id: libc::c_int = peer::name(spec, 0)?.parse().map_err(|e| format!("sysv-msgq: bad queue id: {e}"))?;
    let mut ch = MsgqChannel::new(id, TO_PARENT, TO_CHILD, spec.case.payload);
    protocol::serve(&mut ch, spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private queue, removed when dropped.
    struct Queue(libc::c_int);

    impl Queue {
        fn new() -> Queue {
            // SAFETY: msgget takes no pointers.
            let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
            assert!(id >= 0, "msgget: {}", Errno::last());
            Queue(id)
        }
    }

    impl Drop for Queue {
        fn drop(&mut self) {
            // SAFETY: IPC_RMID takes no buffer; the queue is ours.
            unsafe { libc::msgctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }

    #[test]
    fn messages_go_by_type_and_keep_their_bytes() {
        let q = Queue::new();
        let mut parent = MsgqChannel::new(q.0, TO_CHILD, TO_PARENT, 64);
        let mut child = MsgqChannel::new(q.0, TO_PARENT, TO_CHILD, 64);
        let mut msg = [0u8; 64];
        protocol::stamp(&mut msg, 7);
        parent.send(&msg).unwrap();
        protocol::stamp(&mut msg, 8);
        child.send(&msg).unwrap();
        // Each side gets only the other's message.
        assert_eq!(child.recv_with(|m| protocol::read_seq(m, 64)).unwrap(), Ok(7));
        assert_eq!(parent.recv_with(|m| protocol::read_seq(m, 64)).unwrap(), Ok(8));
    }

    #[test]
    fn a_gone_peer_ends_a_blocked_receive_after_what_it_sent() {
        let q = Queue::new();
        let mut parent = MsgqChannel::new(q.0, TO_CHILD, TO_PARENT, 16);
        let mut child = MsgqChannel::new(q.0, TO_PARENT, TO_CHILD, 16);
        let mut msg = [0u8; 16];
        protocol::stamp(&mut msg, 1);
        child.send(&msg).unwrap();
        // Our parent is never pid -1: the watch says "gone" at once.
        let _w = Watcher::start(q.0, PeerWatch::Parent(nix::unistd::Pid::from_raw(-1))).unwrap();
        assert_eq!(parent.recv_with(|m| protocol::read_seq(m, 16)).unwrap(), Ok(1));
        let e = parent.recv_with(|_| ()).unwrap_err();
        assert!(e.contains("exited early"), "{e}");
    }
}
