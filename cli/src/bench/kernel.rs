//! Kernel transports, each used the plain way: one `write` and one `read` (or `mq_send` and
//! `mq_receive`) per message, no user-space buffering.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT, mq_attr_member_t, mq_open};
use nix::sys::stat::Mode;

use super::case::{Budget, Case, Transport};
use super::guard::{Cleanup, private_dir, unique_name};
use super::peer::{self, ChildSpec, Launcher, PeerWatch};
use super::protocol::{self, Channel, FirstContact, Outcome};

/// A message channel over byte-stream descriptors: pipes, FIFOs and sockets.
struct FdChannel<R, W> {
    r: R,
    w: W,
    buf: Vec<u8>,
    what: &'static str,
}

impl<R: Read, W: Write> FdChannel<R, W> {
    fn new(r: R, w: W, payload: usize, what: &'static str) -> Self {
        FdChannel { r, w, buf: vec![0; payload], what }
    }
}

impl<R: Read, W: Write> Channel for FdChannel<R, W> {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        self.w.write_all(msg).map_err(|e| format!("{}: write: {e}", self.what))
    }

    #[inline]
    fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        match self.r.read_exact(&mut self.buf) {
            Ok(()) => Ok(f(&self.buf)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(format!("{}: peer closed its end early", self.what))
            }
            Err(e) => Err(format!("{}: read: {e}", self.what)),
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

/// Parent side of every kernel transport.
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let what = case.transport.name();
    let payload = case.payload;
    match case.transport {
        Transport::Pipe if case.is_stream() => {
            let (r, w) = pipe()?;
            let child = launcher.spawn(case, budget, vec![], vec![w])?;
            let mut ch = FdChannel::new(File::from(r), io::sink(), payload, what);
            protocol::drive(&mut ch, case, budget, child)
        }
        Transport::Pipe => {
            let (to_child_r, to_child_w) = pipe()?;
            let (from_child_r, from_child_w) = pipe()?;
            let child = launcher.spawn(case, budget, vec![], vec![to_child_r, from_child_w])?;
            let (r, w) = (File::from(from_child_r), File::from(to_child_w));
            protocol::drive(&mut FdChannel::new(r, w, payload, what), case, budget, child)
        }
        Transport::Fifo => fifo_parent(case, budget, launcher),
        Transport::UnixSocket => {
            let (mine, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
            let child = launcher.spawn(case, budget, vec![], vec![theirs.into()])?;
            let r = mine.try_clone().map_err(|e| format!("dup: {e}"))?;
            protocol::drive(&mut FdChannel::new(r, mine, payload, what), case, budget, child)
        }
        Transport::TcpLoopback => {
            let (mine, theirs) = tcp_pair()?;
            let child = launcher.spawn(case, budget, vec![], vec![theirs.into()])?;
            let r = mine.try_clone().map_err(|e| format!("dup: {e}"))?;
            protocol::drive(&mut FdChannel::new(r, mine, payload, what), case, budget, child)
        }
        Transport::PosixMq => mq_parent(case, budget, launcher),
        other => Err(format!("{} is not a kernel transport", other.name())),
    }
}

/// Child side of every kernel transport.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    let what = spec.case.transport.name();
    let payload = spec.case.payload;
    let stream = spec.case.is_stream();
    match spec.case.transport {
        Transport::Pipe if stream => {
            let w = File::from(peer::adopt_fd(spec, 0)?);
            protocol::serve(&mut FdChannel::new(io::empty(), w, payload, what), spec)
        }
        Transport::Pipe => {
            let r = File::from(peer::adopt_fd(spec, 0)?);
            let w = File::from(peer::adopt_fd(spec, 1)?);
            protocol::serve(&mut FdChannel::new(r, w, payload, what), spec)
        }
        Transport::Fifo => {
            let dir = Path::new(peer::name(spec, 0)?);
            if stream {
                let w = open_fifo(&dir.join("data"), false)?;
                protocol::serve(&mut FdChannel::new(io::empty(), w, payload, what), spec)
            } else {
                // Same order as the parent, which opens "ping" first: no deadlock.
                let r = open_fifo(&dir.join("ping"), true)?;
                let w = open_fifo(&dir.join("pong"), false)?;
                protocol::serve(&mut FdChannel::new(r, w, payload, what), spec)
            }
        }
        Transport::UnixSocket => {
            let w = UnixStream::from(peer::adopt_fd(spec, 0)?);
            let r = w.try_clone().map_err(|e| format!("dup: {e}"))?;
            protocol::serve(&mut FdChannel::new(r, w, payload, what), spec)
        }
        Transport::TcpLoopback => {
            let w = TcpStream::from(peer::adopt_fd(spec, 0)?);
            let r = w.try_clone().map_err(|e| format!("dup: {e}"))?;
            protocol::serve(&mut FdChannel::new(r, w, payload, what), spec)
        }
        Transport::PosixMq => mq_child(spec),
        other => Err(format!("{} is not a kernel transport", other.name())),
    }
}

/// A connected pair of loopback TCP sockets with Nagle's algorithm off.
fn tcp_pair() -> Result<(TcpStream, TcpStream), String> {
    let err = |e: io::Error| format!("tcp loopback: {e}");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(err)?;
    let client = TcpStream::connect(listener.local_addr().map_err(err)?).map_err(err)?;
    let (server, _) = listener.accept().map_err(err)?;
    for s in [&client, &server] {
        s.set_nodelay(true).map_err(err)?;
    }
    Ok((server, client))
}

/// Opens a FIFO, blocking until the other side opens it too (child side: the parent is
/// there, or we die with it).
fn open_fifo(path: &Path, read: bool) -> Result<File, String> {
    OpenOptions::new().read(read).write(!read).open(path).map_err(|e| format!("fifo: opening {}: {e}", path.display()))
}

/// Clears `O_NONBLOCK`, so that reads and writes block as with an ordinary open.
fn set_blocking(file: &File) -> Result<(), String> {
    let flags = fcntl(file, FcntlArg::F_GETFL).map_err(|e| format!("fifo: fcntl(F_GETFL): {e}"))?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(file, FcntlArg::F_SETFL(flags)).map_err(|e| format!("fifo: fcntl(F_SETFL): {e}"))?;
    Ok(())
}

/// Parent side: opens the write end of a FIFO once the child has opened its read end, which
/// a plain open would wait for even if the child died first.
fn open_fifo_writer(path: &Path, peer: PeerWatch) -> Result<File, String> {
    loop {
        match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(file) => {
                set_blocking(&file)?;
                return Ok(file);
            }
            // No reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if peer.gone() {
                    return Err(format!("fifo: the child process exited before opening {}", path.display()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("fifo: opening {}: {e}", path.display())),
        }
    }
}

/// Parent side: the read end of a FIFO, opened at once. Until something arrives, a read
/// with no writer would see end of file, and a plain open would wait for a writer even if the
/// child died first: so the first read waits in `poll` for data (or for a writer that came
/// and went), in slices of [`peer::PEER_CHECK`], checking on the child between them.
struct FifoReader {
    file: File,
    /// The child, until its first bytes have arrived.
    before_contact: Option<PeerWatch>,
}

impl FifoReader {
    fn open(path: &Path, peer: PeerWatch) -> Result<FifoReader, String> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| format!("fifo: opening {}: {e}", path.display()))?;
        set_blocking(&file)?;
        Ok(FifoReader { file, before_contact: Some(peer) })
    }

    /// Waits until a read would not block, or the child is gone.
    fn wait_for_writer(&self, peer: PeerWatch) -> io::Result<()> {
        let mut pfd = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let slice = peer::PEER_CHECK.as_millis() as libc::c_int;
        loop {
            // SAFETY: `pfd` is one valid pollfd, readable and writable for the whole call, and its descriptor
            // stays open (owned by `self.file`).
            match unsafe { libc::poll(&mut pfd, 1, slice) } {
                // Data, or a writer that already closed its end (the read then sees end of file).
                n if n > 0 => return Ok(()),
                0 if peer.gone() => return Err(io::Error::other("the child process exited before writing anything")),
                0 => {}
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl Read for FifoReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(peer) = self.before_contact {
            self.wait_for_writer(peer)?;
            self.before_contact = None;
        }
        self.file.read(buf)
    }
}

fn fifo_parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let (dir, cleanup) = private_dir("fifo")?;
    let names: &[&str] = if case.is_stream() { &["data"] } else { &["ping", "pong"] };
    for name in names {
        let path = dir.join(name);
        nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|e| format!("fifo: mkfifo {}: {e}", path.display()))?;
    }
    let dir_name = dir.to_str().ok_or("temporary directory path is not UTF-8")?;
    let child = launcher.spawn(case, budget, vec![dir_name.to_owned()], vec![])?;
    let what = case.transport.name();
    let peer = child.watch();
    // Our ends open before the child's may: the names go once the first message has come.
    if case.is_stream() {
        let r = match FifoReader::open(&dir.join("data"), peer) {
            Ok(r) => r,
            Err(e) => return protocol::conclude(Err(e), child),
        };
        let mut ch = FirstContact::new(FdChannel::new(r, io::sink(), case.payload, what), vec![cleanup]);
        protocol::drive(&mut ch, case, budget, child)
    } else {
        // Same order as the child, which opens "ping" first: no deadlock.
        let opened = open_fifo_writer(&dir.join("ping"), peer)
            .and_then(|w| FifoReader::open(&dir.join("pong"), peer).map(|r| (w, r)));
        let (w, r) = match opened {
            Ok(ends) => ends,
            Err(e) => return protocol::conclude(Err(e), child),
        };
        let mut ch = FirstContact::new(FdChannel::new(r, w, case.payload, what), vec![cleanup]);
        protocol::drive(&mut ch, case, budget, child)
    }
}

/// A message channel over POSIX message queues.
///
/// Uses the timed calls (the same system calls as the plain ones) with a deadline a little
/// ahead, so that a vanished peer is noticed: a queue has no notion of its other end.
struct MqChannel {
    tx: Option<MqdT>,
    rx: Option<MqdT>,
    buf: Vec<u8>,
    peer: PeerWatch,
}

/// How long a queue operation blocks before checking that the peer still exists.
const MQ_PEER_CHECK: Duration = Duration::from_millis(200);

/// The absolute CLOCK_REALTIME deadline the timed queue calls take.
fn mq_deadline() -> libc::timespec {
    let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + MQ_PEER_CHECK;
    libc::timespec { tv_sec: at.as_secs() as libc::time_t, tv_nsec: at.subsec_nanos() as libc::c_long }
}

impl MqChannel {
    /// Runs a timed queue call until it succeeds, fails, or the peer is gone.
    fn retry(&self, what: &str, mut call: impl FnMut(&libc::timespec) -> isize) -> Result<usize, String> {
        loop {
            let n = call(&mq_deadline());
            if n >= 0 {
                return Ok(n as usize);
            }
            match Errno::last() {
                Errno::EINTR => {}
                Errno::ETIMEDOUT if !self.peer.gone() => {}
                Errno::ETIMEDOUT => return Err(format!("posix-mq: {what}: peer process exited")),
                e => return Err(format!("posix-mq: {what}: {e}")),
            }
        }
    }
}

impl Channel for MqChannel {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        let tx = self.tx.as_ref().ok_or("posix-mq: no queue to send on")?;
        let q = tx.as_raw_fd();
        self.retry("mq_timedsend", |deadline| {
            // SAFETY: `q` is an open queue descriptor owned by `self.tx`; `msg` and `deadline` are valid for reads
            // of their full size for the whole call.
            unsafe { libc::mq_timedsend(q, msg.as_ptr().cast(), msg.len(), 0, deadline) as isize }
        })?;
        Ok(())
    }

    #[inline]
    fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        let rx = self.rx.as_ref().ok_or("posix-mq: no queue to receive from")?;
        let q = rx.as_raw_fd();
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.retry("mq_timedreceive", |deadline| {
            // SAFETY: `q` is an open queue descriptor owned by `self.rx`; `buf` is valid for writes of `buf.len()`
            // bytes (the queue's message size), and `deadline` for reads.
            unsafe { libc::mq_timedreceive(q, buf.as_mut_ptr().cast(), buf.len(), std::ptr::null_mut(), deadline) }
        });
        let out = result.map(|n| f(&buf[..n]));
        self.buf = buf;
        out
    }
}

/// Reads a limit from /proc/sys/fs/mqueue.
fn mq_limit(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{name}")).ok()?.trim().parse().ok()
}

fn mq_name(base: &str, suffix: &str) -> String {
    format!("/{base}-{suffix}")
}

fn mq_parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    // Stay within the limits an unprivileged user has, so results do not depend on who runs.
    let max_size = mq_limit("msgsize_max").unwrap_or(8192);
    if case.payload > max_size {
        return Ok(Outcome::NotMeasured(format!("message size above /proc/sys/fs/mqueue/msgsize_max ({max_size})")));
    }
    let depth = mq_limit("msg_max").unwrap_or(10).min(10);
    let attr = MqAttr::new(0, depth as mq_attr_member_t, case.payload as mq_attr_member_t, 0);
    let base = unique_name();
    let suffixes: &[&str] = if case.is_stream() { &["data"] } else { &["ping", "pong"] };
    let mut queues = Vec::new();
    let mut cleanups = Vec::new();
    for suffix in suffixes {
        let name = mq_name(&base, suffix);
        let flags = MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR | MQ_OFlag::O_CLOEXEC;
        match mq_open(name.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR, Some(&attr)) {
            Ok(q) => queues.push(q),
            Err(e) => return Ok(Outcome::NotMeasured(format!("mq_open: {e}"))),
        }
        cleanups.push(Cleanup::new(move || {
            let _ = nix::mqueue::mq_unlink(name.as_str());
        }));
    }
    let child = launcher.spawn(case, budget, vec![base], vec![])?;
    let mut queues = queues.into_iter();
    let (first, second) = (queues.next(), queues.next());
    let (tx, rx) = if case.is_stream() { (None, first) } else { (first, second) };
    let ch = MqChannel { tx, rx, buf: vec![0; case.payload], peer: child.watch() };
    protocol::drive(&mut FirstContact::new(ch, cleanups), case, budget, child)
}

fn mq_child(spec: &ChildSpec) -> Result<(), String> {
    let base = peer::name(spec, 0)?;
    let open = |suffix: &str, flag: MQ_OFlag| {
        let name = mq_name(base, suffix);
        mq_open(name.as_str(), flag | MQ_OFlag::O_CLOEXEC, Mode::empty(), None)
            .map_err(|e| format!("posix-mq: opening {name}: {e}"))
    };
    let peer = PeerWatch::Parent(nix::unistd::Pid::from_raw(spec.parent));
    let mut ch = if spec.case.is_stream() {
        MqChannel { tx: Some(open("data", MQ_OFlag::O_WRONLY)?), rx: None, buf: Vec::new(), peer }
    } else {
        MqChannel {
            rx: Some(open("ping", MQ_OFlag::O_RDONLY)?),
            tx: Some(open("pong", MQ_OFlag::O_WRONLY)?),
            buf: vec![0; spec.case.payload],
            peer,
        }
    };
    protocol::serve(&mut ch, spec)
}
