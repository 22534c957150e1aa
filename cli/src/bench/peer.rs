//! The second process of every case: how the parent re-executes itself as a child, hands it
//! descriptors and names, pins both to CPUs, supervises it, and how the child side starts.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::{Pid, getpid, getppid};
use serde::{Deserialize, Serialize};

use super::case::{Budget, Case};
use super::guard;

/// Environment variable that turns a process into a bench child; holds a JSON [`ChildSpec`].
pub(crate) const CHILD_ENV: &str = "SHMRING_BENCH_CHILD";

/// Environment variable for testing how the parent copes with a child that never makes
/// contact: set to `exit` in the environment of `shmring bench` (children inherit it), it makes
/// every child fail as soon as it has started, before it touches its transport.
pub(crate) const FAULT_ENV: &str = "SHMRING_BENCH_CHILD_FAULT";

/// Argument given to children. No ordinary command accepts it, so a binary that forgot to
/// call `maybe_run_child` fails at once instead of starting a second benchmark.
const CHILD_ARG: &str = "__shmring-bench-child";

/// Everything a child needs to play its part.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChildSpec {
    /// The case being measured; the child echoes (ping-pong) or writes (stream).
    pub case: Case,
    /// How long to write for, when streaming.
    pub budget: Budget,
    /// The parent's pid, to detect a parent that died before we could watch it.
    pub parent: i32,
    /// CPU to pin to, if any.
    pub cpu: Option<usize>,
    /// Inherited descriptors, in an order the transport defines.
    pub fds: Vec<RawFd>,
    /// Names (shm segments, queues, directories), in an order the transport defines.
    pub names: Vec<String>,
}

/// Which CPUs the two processes run on.
pub(crate) struct Placement {
    /// CPU for the measuring (parent) process, and for the child, when pinned.
    pub cpus: Option<(usize, usize)>,
    /// Number of CPUs this process may run on.
    pub available: usize,
    /// Why the processes are not pinned, when they are not.
    unpinned: &'static str,
    original: Option<CpuSet>,
}

impl Placement {
    /// Finds the first two CPUs this process may use; pins the calling thread to the first
    /// when `pin` is set and there are at least two. Restores the old affinity when dropped.
    /// Never fails: without pinning the benchmark still runs, and says so.
    pub(crate) fn new(pin: bool) -> Placement {
        let original = sched_getaffinity(Pid::from_raw(0)).ok();
        let allowed: Vec<usize> = original.as_ref().map_or_else(Vec::new, |set| {
            (0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect()
        });
        let available = match allowed.len() {
            0 => thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let mut placement = Placement { cpus: None, available, unpinned: "", original: None };
        placement.unpinned = match (pin, allowed.as_slice()) {
            (false, _) => "--no-pin",
            (true, [first, second, ..]) => match pin_to(*first) {
                Ok(()) => {
                    placement.cpus = Some((*first, *second));
                    placement.original = original;
                    ""
                }
                Err(_) => "pinning is not permitted here",
            },
            (true, [_]) => "only one CPU available",
            (true, []) => "CPU affinity is not readable here",
        };
        placement
    }

    /// E.g. `measuring process on CPU 0, peer on CPU 1`.
    pub(crate) fn describe(&self) -> String {
        match self.cpus {
            Some((mine, child)) => format!("measuring process on CPU {mine}, peer on CPU {child}"),
            None => format!("processes not pinned ({})", self.unpinned),
        }
    }

    fn child_cpu(&self) -> Option<usize> {
        self.cpus.map(|(_, child)| child)
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if let Some(original) = &self.original {
            let _ = sched_setaffinity(Pid::from_raw(0), original);
        }
    }
}

fn pin_to(cpu: usize) -> Result<(), String> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pinning to CPU {cpu}: {e}"))
}

/// Starts children: this same executable, run again with a [`ChildSpec`].
pub(crate) struct Launcher {
    exe: PathBuf,
    cpu: Option<usize>,
}

impl Launcher {
    pub(crate) fn new(placement: &Placement) -> Result<Launcher, String> {
        // The kernel's link to our own image still works if the file on disk is replaced
        // (say, rebuilt) while we run, so parent and child always run the same code.
        let proc_self = PathBuf::from("/proc/self/exe");
        let exe = if proc_self.exists() {
            proc_self
        } else {
            std::env::current_exe().map_err(|e| format!("finding our own executable: {e}"))?
        };
        Ok(Launcher { exe, cpu: placement.child_cpu() })
    }

    /// Starts the child for `case`. `fds` are made inheritable, handed over, and closed here.
    pub(crate) fn spawn(
        &self,
        case: &Case,
        budget: &Budget,
        names: Vec<String>,
        fds: Vec<OwnedFd>,
    ) -> Result<Child, String> {
        for fd in &fds {
            // Only this thread starts processes, so no other child can inherit these.
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map_err(|e| format!("making a descriptor inheritable: {e}"))?;
        }
        let spec = ChildSpec {
            case: *case,
            budget: *budget,
            parent: getpid().as_raw(),
            cpu: self.cpu,
            fds: fds.iter().map(AsRawFd::as_raw_fd).collect(),
            names,
        };
        let spec = serde_json::to_string(&spec).map_err(|e| format!("encoding child spec: {e}"))?;
        let child = Command::new(&self.exe)
            .arg(CHILD_ARG)
            .env(CHILD_ENV, spec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting child process {}: {e}", self.exe.display()))?;
        drop(fds);
        let ticket = guard::track_child(Pid::from_raw(child.id() as i32));
        Ok(Child { inner: child, ticket, status: None })
    }
}

/// A running child; killed and reaped if dropped before [`Child::finish`].
pub(crate) struct Child {
    inner: std::process::Child,
    ticket: u64,
    status: Option<ExitStatus>,
}

impl Child {
    /// Whether the child has exited (cheap enough to call every few milliseconds).
    pub(crate) fn gone(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.inner.try_wait().ok().flatten();
            if self.status.is_some() {
                // Reaped: its pid may be reused from now on, so the watchdog must leave it be.
                guard::untrack_child(self.ticket);
            }
        }
        self.status.is_some()
    }

    /// Waits up to `grace` for the child to exit by itself and checks that it succeeded.
    pub(crate) fn finish(mut self, grace: Duration) -> Result<(), String> {
        let until = Instant::now() + grace;
        while !self.gone() {
            if Instant::now() >= until {
                return Err("child process did not exit; killed it".into());
            }
            thread::sleep(Duration::from_millis(1));
        }
        match self.status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("child process failed ({status})")),
            None => unreachable!("gone() returned true"),
        }
    }

    /// A liveness check on this child that needs no `&mut`.
    pub(crate) fn watch(&self) -> PeerWatch {
        PeerWatch::Child(Pid::from_raw(self.inner.id() as i32))
    }

    /// Adds what is known about the child to an error from the parent's side.
    pub(crate) fn explain(&mut self, error: String) -> String {
        thread::sleep(Duration::from_millis(20));
        match (self.gone(), self.status) {
            (true, Some(status)) if !status.success() => {
                format!("{error} (child process failed: {status})")
            }
            _ => error,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        guard::untrack_child(self.ticket);
        if self.status.is_none() {
            let _ = self.inner.kill();
            let _ = self.inner.wait();
        }
    }
}

/// Tells whether the other process of a case has gone, for transports that cannot tell.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PeerWatch {
    /// Our child (parent side).
    Child(Pid),
    /// Our parent (child side).
    Parent(Pid),
}

impl PeerWatch {
    /// Whether the peer has exited. Does not reap a child.
    pub(crate) fn gone(self) -> bool {
        match self {
            PeerWatch::Child(pid) => {
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
                !matches!(waitid(Id::Pid(pid), flags), Ok(WaitStatus::StillAlive))
            }
            PeerWatch::Parent(pid) => getppid() != pid,
        }
    }
}

/// How often a parent waiting on a transport that cannot tell by itself whether the child is
/// still there checks on it.
pub(crate) const PEER_CHECK: Duration = Duration::from_millis(100);

/// Runs an action once the child has exited, from a thread of its own that checks every
/// [`PEER_CHECK`]: for transports that do not notice by themselves that the other end is gone.
/// Stopped (and joined) when dropped.
pub(crate) struct ExitWatch {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ExitWatch {
    /// Starts watching `peer`; `action` runs at most once, when it is gone.
    pub(crate) fn start(peer: PeerWatch, action: impl FnOnce() + Send + 'static) -> Result<ExitWatch, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("bench-peer-watch".into())
            .spawn(move || {
                // Relaxed: a plain stop request; nothing else is published through it.
                while !flag.load(Ordering::Relaxed) {
                    if peer.gone() {
                        action();
                        return;
                    }
                    thread::park_timeout(PEER_CHECK);
                }
            })
            .map_err(|e| format!("starting the peer watch thread: {e}"))?;
        Ok(ExitWatch { stop, thread: Some(thread) })
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        // Relaxed: see the load in the thread.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Child side: parses the spec, ties our life to the parent's, pins, and returns the spec.
pub(crate) fn child_setup(raw: &str) -> Result<ChildSpec, String> {
    let spec: ChildSpec = serde_json::from_str(raw).map_err(|e| format!("bad {CHILD_ENV} value: {e}"))?;
    // The parent blocks the signals it handles itself, and the mask survives exec: restore
    // the default so that Ctrl-C and friends reach us as usual.
    signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| format!("resetting the signal mask: {e}"))?;
    // If the parent dies, so do we: nobody would ever read our results or stop us.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("setting parent-death signal: {e}"))?;
    if getppid().as_raw() != spec.parent {
        return Err("parent process already exited".into());
    }
    if let Some(cpu) = spec.cpu {
        pin_to(cpu)?;
    }
    if std::env::var_os(FAULT_ENV).is_some_and(|v| v == "exit") {
        return Err(format!("exiting before first contact, as {FAULT_ENV}=exit asks"));
    }
    Ok(spec)
}

/// Child side: takes ownership of the `index`th inherited descriptor.
pub(crate) fn adopt_fd(spec: &ChildSpec, index: usize) -> Result<OwnedFd, String> {
    let raw = *spec.fds.get(index).ok_or_else(|| format!("child spec lacks descriptor #{index}"))?;
    // SAFETY: F_GETFD only queries flags; it is how we check that `raw` is open at all.
    let open = unsafe { libc::fcntl(raw, libc::F_GETFD) } != -1;
    if !open {
        return Err(format!("inherited descriptor {raw} is not open"));
    }
    // SAFETY: `raw` is open (checked above) and was passed to this process for its exclusive use; nothing
    // else in this process wraps it, and the spec lists each descriptor once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Child side: the `index`th name of the spec.
pub(crate) fn name(spec: &ChildSpec, index: usize) -> Result<&str, String> {
    spec.names.get(index).map(String::as_str).ok_or_else(|| format!("child spec lacks name #{index}"))
}
