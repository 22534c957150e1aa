//! Leave nothing behind: clean-up actions and child processes that are undone on every exit
//! path — normal return, error, Ctrl-C / SIGTERM / SIGHUP, or a case that hangs.
//!
//! Normal paths run clean-ups through `Drop`. Signals are blocked in the benchmarking thread
//! and taken by a dedicated thread with `sigwait`, so the emergency path runs as ordinary code
//! (no async-signal-safety constraints). A watchdog thread ends a case that overruns its
//! deadline the same way.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

type Action = Box<dyn FnOnce() + Send>;

struct Registry {
    next_id: u64,
    actions: Vec<(u64, Action)>,
    children: Vec<(u64, Pid)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { next_id: 0, actions: Vec::new(), children: Vec::new() });

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves the lists intact; clean-up must still run.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// A clean-up action (unlink a name, remove a directory) that runs when this is dropped, or
/// on the emergency path, whichever comes first, exactly once.
#[must_use = "the action runs when this is dropped"]
pub(crate) struct Cleanup {
    id: u64,
}

impl Cleanup {
    /// Registers `action`.
    pub(crate) fn new(action: impl FnOnce() + Send + 'static) -> Cleanup {
        let mut reg = registry();
        let id = reg.id();
        reg.actions.push((id, Box::new(action)));
        Cleanup { id }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let action = {
            let mut reg = registry();
            let pos = reg.actions.iter().position(|(id, _)| *id == self.id);
            pos.map(|pos| reg.actions.swap_remove(pos).1)
        };
        if let Some(action) = action {
            action();
        }
    }
}

/// Registers a child process to be killed on the emergency path; returns a ticket for
/// [`untrack_child`].
pub(crate) fn track_child(pid: Pid) -> u64 {
    let mut reg = registry();
    let id = reg.id();
    reg.children.push((id, pid));
    id
}

/// Forgets a child registered with [`track_child`] (call before reaping it).
pub(crate) fn untrack_child(ticket: u64) {
    registry().children.retain(|(id, _)| *id != ticket);
}

/// Kills every tracked child, runs every pending clean-up, prints `message` and exits.
fn emergency_exit(code: i32, message: &str) -> ! {
    let mut reg = registry();
    for (_, pid) in reg.children.drain(..) {
        // The child may already be gone; nothing more to do then.
        let _ = signal::kill(pid, Signal::SIGKILL);
    }
    for (_, action) in reg.actions.drain(..) {
        action();
    }
    eprintln!("\nshmring bench: {message}");
    // Exiting with the lock held keeps the benchmarking thread from racing the clean-up.
    std::process::exit(code)
}

const HANDLED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Routes SIGINT, SIGTERM and SIGHUP of this process to the clean-up path, and starts the
/// watchdog. Call from the benchmarking thread before it starts any other thread; returns
/// a guard that restores the previous signal mask.
pub(crate) fn install() -> Result<SignalMask, String> {
    let set = SigSet::from_iter(HANDLED);
    let mut previous = SigSet::empty();
    signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut previous))
        .map_err(|e| format!("blocking signals: {e}"))?;
    static STARTED: OnceLock<()> = OnceLock::new();
    let mut spawn_error = None;
    STARTED.get_or_init(|| {
        // Threads inherit the mask just set, so only `sigwait` below ever sees these signals.
        let signals = thread::Builder::new().name("bench-signals".into()).spawn(move || {
            if let Ok(sig) = set.wait() {
                emergency_exit(128 + sig as i32, &format!("interrupted ({sig}); cleaned up"));
            }
        });
        let watchdog = thread::Builder::new().name("bench-watchdog".into()).spawn(watchdog);
        spawn_error = signals.and(watchdog).err();
    });
    match spawn_error {
        Some(e) => Err(format!("starting helper threads: {e}")),
        None => Ok(SignalMask { previous }),
    }
}

/// Restores the signal mask that [`install`] replaced.
pub(crate) struct SignalMask {
    previous: SigSet,
}

impl Drop for SignalMask {
    fn drop(&mut self) {
        let _ = signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

struct Watch {
    deadline: Instant,
    what: String,
}

static WATCHED: Mutex<Option<Watch>> = Mutex::new(None);
static WATCH_CHANGED: Condvar = Condvar::new();

fn watched() -> MutexGuard<'static, Option<Watch>> {
    WATCHED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn watchdog() {
    let mut current = watched();
    loop {
        let wait = match &*current {
            None => Duration::from_secs(3600),
            Some(w) => match w.deadline.checked_duration_since(Instant::now()) {
                Some(left) => left,
                None => {
                    let message = format!("{} did not finish in time; aborted", w.what);
                    drop(current);
                    emergency_exit(1, &message);
                }
            },
        };
        current = WATCH_CHANGED.wait_timeout(current, wait).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
    }
}

/// Arms the watchdog for one case; disarmed when dropped.
#[must_use = "the watchdog is disarmed when this is dropped"]
pub(crate) struct Deadline(());

impl Deadline {
    /// Aborts the whole run (after cleaning up) if `what` is still running after `limit`.
    pub(crate) fn arm(limit: Option<Duration>, what: String) -> Deadline {
        *watched() = limit.map(|limit| Watch { deadline: Instant::now() + limit, what });
        WATCH_CHANGED.notify_all();
        Deadline(())
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        *watched() = None;
        WATCH_CHANGED.notify_all();
    }
}

/// A name no other run or case uses: `shmring-bench-<pid>-<counter>`.
pub(crate) fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("shmring-bench-{}-{n}", std::process::id())
}
