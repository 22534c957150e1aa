//! The classic IPC mechanisms that the other files leave out: real-time signals, POSIX
//! semaphores and a plain file.
//!
//! * `signal` (park): ping-pong with `sigqueue`. The 64-byte message lies in a shared page,
//!   one line each way; the signal's value carries its sequence number, and the receiver takes
//!   the signal with `sigwaitinfo`. The signal is blocked in both processes, so it is queued
//!   and taken synchronously, never delivered to a handler: a round trip costs two `sigqueue`s
//!   and two waits (the parent's waits are `sigtimedwait`, the same system call with a bound).
//! * `semaphore` (park): ping-pong on two process-shared POSIX semaphores (`sem_init` with
//!   pshared = 1) in a shared page, passing one 8-byte word as `futex` does: the floor for
//!   shmring's semaphore notifier (row `shmring-sem`), as `futex` is for its futex notifier.
//! * `file` (stream): the child appends 64-byte records to a regular file in a private
//!   temporary directory, one `write` per record (`O_APPEND`); the parent reads behind it, one
//!   record per `read`, polling: a `read` that returns 0 means "nothing new yet". Every
//!   [`FREE_EVERY`] bytes it punches what it has read out of the file, so that the file takes
//!   little room however long the run.
//!
//! The parent's waits check on the child every [`peer::PEER_CHECK`] or so; the child's need
//! not, as the child dies with its parent.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};

use super::case::{Budget, Case, Transport};
use super::guard::private_dir;
use super::peer::{self, ChildSpec, Launcher, PeerWatch};
use super::protocol::{self, Channel, END, FirstContact, Outcome};
use super::shared::{LINE, SharedPage};

/// Parent side of the classic transports.
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    match case.transport {
        Transport::Signal => signal_parent(case, budget, launcher),
        Transport::Semaphore => semaphore_parent(case, budget, launcher),
        Transport::File => file_parent(case, budget, launcher),
        other => Err(format!("{} is not a classic transport", other.name())),
    }
}

/// Child side of the classic transports.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    match spec.case.transport {
        Transport::Signal => signal_child(spec),
        Transport::Semaphore => semaphore_child(spec),
        Transport::File => file_child(spec),
        other => Err(format!("{} is not a classic transport", other.name())),
    }
}

/// Notes under the table, each printed when its transport has a row (`shmring-sem` is
/// shmring's own park row, measured in `ring`; its note is here with the row it is compared to).
pub(crate) const NOTES: [(Transport, &str); 3] = [
    (
        Transport::ShmringSem,
        "shmring-sem: shmring park with the semaphore notifier (NotifierKind::Semaphore); \
         shmring park uses the futex notifier.",
    ),
    (
        Transport::Signal,
        "signal: sigqueue of a real-time signal carrying the message's number, taken by \
         sigwaitinfo (blocked, no handler); the 64 B message lies in a shared page.",
    ),
    (
        Transport::File,
        "file: one 64 B write (O_APPEND) per message to a file in a temporary directory; \
         the reader polls, one read per message (0 bytes: nothing new yet).",
    ),
];

// ---- signal ------------------------------------------------------------------------------

/// The signal of the `signal` row: the first real-time signal left to applications.
fn bench_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

/// The value the child queues first, once it has blocked the signal: from then on a signal
/// to it is queued, not fatal. Ping-pong sequence numbers start at 1.
const HELLO: usize = 0;

/// The signal set holding the `signal` row's signal alone.
fn signal_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the whole set, sigaddset writes inside it (and the signal
    // number is a valid one, from SIGRTMIN), so the set is initialised when read.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), bench_signal());
        set.assume_init()
    }
}

/// The `signal` row's signal, blocked in one thread; the old mask comes back when dropped.
pub(crate) struct SignalBlock {
    previous: libc::sigset_t,
}

/// Blocks the `signal` row's signal in the calling thread and in every thread it starts from
/// now on. The measuring process calls it before it starts any other thread: the child queues
/// its signals to the process, and the kernel hands a process's signal to any thread that does
/// not block it, which would take it (a real-time signal's default action ends the process)
/// before `sigwaitinfo` could.
pub(crate) fn block_signal() -> Result<SignalBlock, String> {
    let set = signal_set();
    let mut previous = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `set` is an initialised set and `previous` room for one, which the call fills in
    // when it succeeds.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, previous.as_mut_ptr()) };
    if r != 0 {
        return Err(format!("signal: blocking SIGRTMIN: {}", Errno::from_raw(r)));
    }
    // SAFETY: pthread_sigmask succeeded, so it wrote the old mask.
    Ok(SignalBlock { previous: unsafe { previous.assume_init() } })
}

impl Drop for SignalBlock {
    fn drop(&mut self) {
        // Whatever is still queued (from a case that failed mid-flight) goes first: unblocked,
        // it would end the process. Every child has exited by now, so nothing more comes.
        while let Ok(Some(_)) = take_signal(None, Some(Duration::ZERO)) {}
        // SAFETY: `previous` is the initialised mask saved in `block_signal`; no old mask is asked for.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

/// Queues the signal with `value` to process `to`.
fn queue_signal(to: libc::pid_t, value: usize) -> Result<(), String> {
    let value = libc::sigval { sival_ptr: value as *mut libc::c_void };
    // SAFETY: sigqueue takes no pointer to our memory: the value is an integer it copies, never
    // dereferenced by anyone.
    if unsafe { libc::sigqueue(to, bench_signal(), value) } == 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno::ESRCH => Err("signal: sigqueue: the peer process is gone".into()),
        // EAGAIN: the queue is full, which one signal in flight at a time cannot cause.
        e => Err(format!("signal: sigqueue: {e}")),
    }
}

/// Takes one queued instance of the signal, waiting at most `timeout` (`None`: without a
/// bound), and returns its value; `None` if the time ran out. With `from` set, instances that
/// process did not queue (a failed case's, say) are taken and dropped.
fn take_signal(from: Option<libc::pid_t>, timeout: Option<Duration>) -> Result<Option<usize>, String> {
    let set = signal_set();
    let timeout = timeout
        .map(|t| libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: t.subsec_nanos() as libc::c_long });
    loop {
        let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
        let r = match &timeout {
            // SAFETY: `set` is initialised and `info` is room for a siginfo_t, which the call fills in.
            None => unsafe { libc::sigwaitinfo(&set, info.as_mut_ptr()) },
            // SAFETY: as above, and `t` is valid for reads for the whole call.
            Some(t) => unsafe { libc::sigtimedwait(&set, info.as_mut_ptr(), t) },
        };
        if r == -1 {
            match Errno::last() {
                Errno::EINTR => continue,
                Errno::EAGAIN => return Ok(None),
                e => return Err(format!("signal: sigwaitinfo: {e}")),
            }
        }
        // SAFETY: the memory was zeroed, and the call succeeded and filled it in: a valid siginfo_t.
        let info = unsafe { info.assume_init() };
        if info.si_code != libc::SI_QUEUE {
            continue;
        }
        // SAFETY: a queued signal (SI_QUEUE) carries the sender's pid and the value it queued:
        // the union members read are those sigqueue filled.
        let (pid, value) = unsafe { (info.si_pid(), info.si_value().sival_ptr as usize) };
        if from.is_none_or(|from| from == pid) {
            return Ok(Some(value));
        }
    }
}

/// One end of the `signal` row: messages in a shared page, announced by the signal.
struct SignalChannel<'a> {
    page: &'a SharedPage,
    /// The line this end writes, and the one the peer writes.
    lines: (usize, usize),
    peer: libc::pid_t,
    /// The child, for the parent's waits; `None` in the child, which waits without a bound.
    watch: Option<PeerWatch>,
    buf: Vec<u8>,
}

impl SignalChannel<'_> {
    /// Takes the peer's next signal and returns its value.
    fn wait(&self) -> Result<usize, String> {
        loop {
            let slice = self.watch.map(|_| peer::PEER_CHECK);
            match (take_signal(Some(self.peer), slice)?, self.watch) {
                (Some(value), _) => return Ok(value),
                (None, Some(watch)) if watch.gone() => return Err("signal: the child process exited".into()),
                (None, _) => {}
            }
        }
    }
}

impl Channel for SignalChannel<'_> {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        if !(8..=LINE).contains(&msg.len()) {
            return Err(format!("signal: a {}-byte message does not fit a {LINE}-byte line", msg.len()));
        }
        let seq = u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
        // SAFETY: the line is LINE bytes of our mapping (at least `msg.len()`, checked above) and
        // no Rust reference covers it; the peer reads it only after the signal below and leaves it
        // alone from its answer on, until our next signal.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.page.line(self.lines.0).as_ptr(), msg.len()) };
        // The system calls order the copies between the processes; the fences keep the compiler
        // from moving a copy across its call.
        fence(Ordering::Release);
        queue_signal(self.peer, seq as usize)
    }

    #[inline]
    fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        let value = self.wait()?;
        fence(Ordering::Acquire);
        let len = self.buf.len().min(LINE);
        // SAFETY: the line is LINE bytes of our mapping, `buf` has room for `len` ≤ LINE bytes, and
        // the two do not overlap; the peer wrote the line before queueing the signal just taken and
        // leaves it alone until we answer.
        unsafe { std::ptr::copy_nonoverlapping(self.page.line(self.lines.1).as_ptr(), self.buf.as_mut_ptr(), len) };
        let head = u64::from_le_bytes(self.buf[..8].try_into().expect("8 bytes"));
        if head as usize != value {
            return Err(format!("signal: the signal announces message {value}, the page holds {head}"));
        }
        Ok(f(&self.buf))
    }
}

fn signal_parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    if case.is_stream() || !(8..=LINE).contains(&case.payload) {
        return Err(format!("signal: no {} row", case.label()));
    }
    let page = SharedPage::create()?;
    let child = launcher.spawn(case, budget, vec![], vec![page.share()?])?;
    let watch = child.watch();
    let PeerWatch::Child(pid) = watch else { unreachable!("a child's watch watches a child") };
    let lines = (0, 1);
    let mut ch =
        SignalChannel { page: &page, lines, peer: pid.as_raw(), watch: Some(watch), buf: vec![0; case.payload] };
    let hello = ch.wait().and_then(|v| match v {
        HELLO => Ok(()),
        v => Err(format!("signal: the child's first signal carries {v}, not {HELLO}")),
    });
    if let Err(e) = hello {
        return protocol::conclude(Err(e), child);
    }
    protocol::drive(&mut ch, case, budget, child)
}

fn signal_child(spec: &ChildSpec) -> Result<(), String> {
    let page = SharedPage::map(peer::adopt_fd(spec, 0)?)?;
    let _blocked = block_signal()?;
    let lines = (1, 0);
    let mut ch = SignalChannel { page: &page, lines, peer: spec.parent, watch: None, buf: vec![0; spec.case.payload] };
    queue_signal(spec.parent, HELLO)?;
    protocol::serve(&mut ch, spec)
}

// ---- semaphore ---------------------------------------------------------------------------

/// How long one semaphore wait lasts, on both sides, before the parent checks on its child.
const SEM_SLICE: Duration = peer::PEER_CHECK;

/// The process-shared semaphore at the start of line `i` of `page`.
fn semaphore(page: &SharedPage, i: usize) -> *mut libc::sem_t {
    const { assert!(size_of::<libc::sem_t>() <= LINE && align_of::<libc::sem_t>() <= LINE) };
    page.line(i).as_ptr().cast()
}

/// Initialises a process-shared semaphore at 0 (before the child starts).
fn sem_init(sem: *mut libc::sem_t) -> Result<(), String> {
    // SAFETY: `sem` is the start of a line of our mapping: room and alignment for a sem_t
    // (asserted in `semaphore`); nobody uses it yet.
    if unsafe { libc::sem_init(sem, 1, 0) } == 0 {
        Ok(())
    } else {
        Err(format!("semaphore: sem_init: {}", Errno::last()))
    }
}

/// Posts `sem` once.
fn sem_post(sem: *mut libc::sem_t) -> Result<(), String> {
    // SAFETY: `sem` was initialised by `sem_init` before the child started and stays mapped.
    if unsafe { libc::sem_post(sem) } == 0 { Ok(()) } else { Err(format!("semaphore: sem_post: {}", Errno::last())) }
}

/// Takes one post of `sem`, waiting at most `timeout`; false if none came in time (or the
/// wait was interrupted).
fn sem_take(sem: *mut libc::sem_t, timeout: Duration) -> Result<bool, String> {
    // sem_timedwait wants an absolute CLOCK_REALTIME deadline.
    let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + timeout;
    let deadline = libc::timespec { tv_sec: at.as_secs() as libc::time_t, tv_nsec: at.subsec_nanos() as libc::c_long };
    // SAFETY: `sem` is initialised and mapped (as in `sem_post`); `deadline` is valid for reads.
    if unsafe { libc::sem_timedwait(sem, &deadline) } == 0 {
        return Ok(true);
    }
    match Errno::last() {
        Errno::ETIMEDOUT | Errno::EINTR => Ok(false),
        e => Err(format!("semaphore: sem_timedwait: {e}")),
    }
}

/// The semaphore row's page: the words at lines 0 (to the child) and 1 (back), the
/// semaphores that announce them at lines 2 and 3. A process-shared semaphore holds nothing
/// outside its bytes, so unmapping the page is all the clean-up it needs.
fn semaphore_parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let page = SharedPage::create()?;
    let (ping_sem, pong_sem) = (semaphore(&page, 2), semaphore(&page, 3));
    sem_init(ping_sem)?;
    sem_init(pong_sem)?;
    let child = launcher.spawn(case, budget, vec![], vec![page.share()?])?;
    let peer = child.watch();
    let (ping, pong) = (page.word64(0), page.word64(1));
    let round_trip = |v: u64| -> Result<(), String> {
        // Release pairs with the child's Acquire load of `ping` (the post orders it as well).
        ping.store(v, Ordering::Release);
        sem_post(ping_sem)?;
        while !sem_take(pong_sem, SEM_SLICE)? {
            if peer.gone() {
                return Err("semaphore: the child process exited".into());
            }
        }
        // Acquire pairs with the child's Release store of `pong`.
        let back = pong.load(Ordering::Acquire);
        if back != v {
            return Err(format!("semaphore: sent {v}, got {back} back"));
        }
        Ok(())
    };
    let result = protocol::time_round_trips(budget, &round_trip).and_then(|hist| round_trip(END).map(|()| hist));
    protocol::conclude(result.map(Outcome::Rtt), child)
}

fn semaphore_child(spec: &ChildSpec) -> Result<(), String> {
    let page = SharedPage::map(peer::adopt_fd(spec, 0)?)?;
    let (ping, pong) = (page.word64(0), page.word64(1));
    let (ping_sem, pong_sem) = (semaphore(&page, 2), semaphore(&page, 3));
    let mut last = 0u64;
    loop {
        // Timed like the parent's waits, which shmring's notifier does too.
        if !sem_take(ping_sem, SEM_SLICE)? {
            continue;
        }
        // Acquire pairs with the parent's Release store of `ping`.
        let v = ping.load(Ordering::Acquire);
        if v != END && v != last + 1 {
            return Err(format!("semaphore: expected message {}, got {v}", last + 1));
        }
        last = v;
        // Release pairs with the parent's Acquire load of `pong`.
        pong.store(v, Ordering::Release);
        sem_post(pong_sem)?;
        if v == END {
            return Ok(());
        }
    }
}

// ---- file --------------------------------------------------------------------------------

/// Bytes the file row's reader reads between two hole punches.
const FREE_EVERY: u64 = 4 << 20;
/// Empty reads between two checks on the writer.
const POLLS_PER_CHECK: u32 = 1 << 12;

/// One end of the `file` row: the writer appends, the reader polls behind it.
struct FileChannel {
    file: File,
    /// The record being read, `filled` bytes of it so far (a record may come in pieces).
    buf: Vec<u8>,
    filled: usize,
    /// Bytes read from the start of the file, and the part of them punched out.
    read: u64,
    freed: u64,
    /// Whether the file system punches holes (until it refuses once).
    punch: bool,
    /// The writer, on the reading side.
    writer: Option<PeerWatch>,
}

impl FileChannel {
    fn new(file: File, payload: usize, writer: Option<PeerWatch>) -> FileChannel {
        FileChannel { file, buf: vec![0; payload], filled: 0, read: 0, freed: 0, punch: true, writer }
    }

    /// Punches what has been read (whole pages) out of the file; keeps the size, so that the
    /// writer appends where it did. A file system that cannot keeps the whole file.
    fn free(&mut self) {
        let upto = self.read - self.read % 4096;
        let (from, len) = (self.freed as libc::off_t, (upto - self.freed) as libc::off_t);
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match fallocate(&self.file, mode, from, len) {
            Ok(()) => self.freed = upto,
            Err(_) => self.punch = false,
        }
    }
}

impl Channel for FileChannel {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        self.file.write_all(msg).map_err(|e| format!("file: write: {e}"))
    }

    #[inline]
    fn recv_with<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        let writer = self.writer.ok_or("file: this end only writes")?;
        let (mut empty, mut exited) = (0u32, false);
        while self.filled < self.buf.len() {
            match self.file.read(&mut self.buf[self.filled..]) {
                // The writer exited before this read, so all it wrote was there to read.
                Ok(0) if exited => return Err("file: the child process exited early".into()),
                Ok(0) => {
                    empty = empty.wrapping_add(1);
                    if empty % POLLS_PER_CHECK == 0 {
                        exited = writer.gone();
                    }
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("file: read: {e}")),
            }
        }
        self.filled = 0;
        self.read += self.buf.len() as u64;
        if self.punch && self.read - self.freed >= FREE_EVERY {
            self.free();
        }
        Ok(f(&self.buf))
    }
}

fn file_parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    if !case.is_stream() {
        return Err(format!("file: no {} row", case.label()));
    }
    let (dir, cleanup) = private_dir("file")?;
    let path = dir.join("data");
    // Read and write: punching holes needs a descriptor open for writing.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("file: creating {}: {e}", path.display()))?;
    let dir_name = dir.to_str().ok_or("temporary directory path is not UTF-8")?;
    let child = launcher.spawn(case, budget, vec![dir_name.to_owned()], vec![])?;
    // The directory goes once the first record has come: the child has the file open by then.
    let ch = FileChannel::new(file, case.payload, Some(child.watch()));
    protocol::drive(&mut FirstContact::new(ch, vec![cleanup]), case, budget, child)
}

fn file_child(spec: &ChildSpec) -> Result<(), String> {
    let path = Path::new(peer::name(spec, 0)?).join("data");
    let file =
        OpenOptions::new().append(true).open(&path).map_err(|e| format!("file: opening {}: {e}", path.display()))?;
    protocol::serve(&mut FileChannel::new(file, spec.case.payload, None), spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::case::Mode;
    use crate::bench::guard::Cleanup;
    use crate::bench::guide::READING_GUIDE;
    use crate::bench::plan;

    #[test]
    fn rows_are_planned_named_and_documented() {
        let classic = [Transport::Signal, Transport::Semaphore, Transport::File, Transport::ShmringSem];
        for t in classic {
            assert_eq!(<Transport as clap::ValueEnum>::from_str(t.name(), false), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
            assert!(READING_GUIDE.contains(&format!("'{}'", t.name())), "the guide does not explain {}", t.name());
        }
        let labels: Vec<String> = plan(&classic).iter().map(Case::label).collect();
        let want = ["shmring-sem park 64 B ping-pong", "semaphore park 8 B ping-pong", "signal park 64 B ping-pong"];
        assert_eq!(labels, [&want[..], &["file 64 B stream"]].concat());
        // The shmring-sem row sits next to the futex-notifier park row it is compared with.
        let park = plan(&[Transport::Shmring, Transport::ShmringSem]).into_iter().filter(|c| c.mode == Mode::Park);
        assert_eq!(park.map(|c| c.transport).collect::<Vec<_>>(), [Transport::Shmring, Transport::ShmringSem]);
        // The file's reader polls: like spin rows, it needs two CPUs.
        assert!(plan(&[Transport::File]).iter().all(Case::needs_two_cpus));
        assert!(!plan(&[Transport::Signal, Transport::Semaphore]).iter().any(Case::needs_two_cpus));
    }

    #[test]
    fn semaphores_in_a_shared_page_count_posts() {
        let page = SharedPage::create().unwrap();
        let sem = semaphore(&page, 2);
        sem_init(sem).unwrap();
        assert_eq!(sem_take(sem, Duration::from_millis(1)), Ok(false));
        sem_post(sem).unwrap();
        sem_post(sem).unwrap();
        assert_eq!(sem_take(sem, Duration::ZERO), Ok(true));
        assert_eq!(sem_take(sem, Duration::ZERO), Ok(true));
        assert_eq!(sem_take(sem, Duration::from_millis(1)), Ok(false));
    }

    /// A private directory with one empty file in it, removed when dropped.
    struct TempFile {
        dir: std::path::PathBuf,
        _removed: Cleanup,
    }

    impl TempFile {
        fn new() -> TempFile {
            let (dir, _removed) = private_dir("test").unwrap();
            File::create(dir.join("data")).unwrap();
            TempFile { dir, _removed }
        }

        fn open(&self, options: &mut OpenOptions) -> File {
            options.open(self.dir.join("data")).unwrap()
        }
    }

    #[test]
    fn file_records_arrive_whole_and_in_order_even_in_pieces() {
        let tmp = TempFile::new();
        let mut writer = FileChannel::new(tmp.open(OpenOptions::new().append(true)), 64, None);
        // Our parent is never pid -1: the reader takes its writer for gone at its first check.
        let gone = PeerWatch::Parent(nix::unistd::Pid::from_raw(-1));
        let mut reader = FileChannel::new(tmp.open(OpenOptions::new().read(true).write(true)), 64, Some(gone));
        let mut msg = [0u8; 64];
        for seq in 0..3 {
            protocol::stamp(&mut msg, seq);
            writer.send(&msg).unwrap();
        }
        // A record written in two pieces is read as one.
        protocol::stamp(&mut msg, 3);
        writer.file.write_all(&msg[..10]).unwrap();
        writer.file.write_all(&msg[10..]).unwrap();
        for seq in 0..4 {
            assert_eq!(reader.recv_with(|m| protocol::read_seq(m, 64)).unwrap(), Ok(seq));
        }
        let e = reader.recv_with(|_| ()).unwrap_err();
        assert!(e.contains("exited early"), "{e}");
        assert!(writer.recv_with(|_| ()).is_err());
    }

    #[test]
    fn the_reader_punches_out_what_it_has_read() {
        let tmp = TempFile::new();
        let mut writer = FileChannel::new(tmp.open(OpenOptions::new().append(true)), 64, None);
        let alive = PeerWatch::Parent(nix::unistd::getppid());
        let mut reader = FileChannel::new(tmp.open(OpenOptions::new().read(true).write(true)), 64, Some(alive));
        let records = FREE_EVERY / 64 + 1;
        let mut msg = [0u8; 64];
        for seq in 0..records {
            protocol::stamp(&mut msg, seq);
            writer.send(&msg).unwrap();
            assert_eq!(reader.recv_with(|m| protocol::read_seq(m, 64)).unwrap(), Ok(seq));
        }
        let len = writer.file.metadata().unwrap().len();
        assert_eq!(len, records * 64, "punching keeps the size");
        // A file system that cannot punch holes keeps everything, and the reader stops trying.
        assert!(reader.freed == FREE_EVERY || !reader.punch, "freed {} bytes", reader.freed);
    }
}
