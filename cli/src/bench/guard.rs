//! Leave nothing behind: clean-up actions and child processes that are undone on every exit
//! path — normal return, error, Ctrl-C / SIGTERM / SIGHUP, or a case that hangs.
//!
//! Normal paths run clean-ups through `Drop`. Signals are blocked in the benchmarking thread
//! and taken by a dedicated thread with `sigwait`, so the emergency path runs as ordinary code
//! (no async-signal-safety constraints). A watchdog thread kills the child processes of a
//! case that overruns its deadline, which then fails like one whose peer died; a case that
//! does not end even then is ended the same way as on a signal.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
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
    /// When the watchdog acts next.
    deadline: Instant,
    what: String,
    /// Whether the case ran past its limit, and its child processes were killed for it.
    overran: bool,
}

static WATCHED: Mutex<Option<Watch>> = Mutex::new(None);
static WATCH_CHANGED: Condvar = Condvar::new();

/// How long a case that overran its limit has to end after its child processes were killed,
/// before the whole run is aborted: every transport notices a dead peer within a fraction of
/// this (the slowest checks every 200 ms), so only a case stuck elsewhere runs into it.
const AFTER_KILL: Duration = Duration::from_secs(10);

fn watched() -> MutexGuard<'static, Option<Watch>> {
    WATCHED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kills every tracked child process; they stay tracked until their owners reap them.
fn kill_children() {
    for (_, pid) in &registry().children {
        // The child may already be gone; nothing more to do then.
        let _ = signal::kill(*pid, Signal::SIGKILL);
    }
}

fn watchdog() {
    let mut current = watched();
    loop {
        let wait = match &mut *current {
            None => Duration::from_secs(3600),
            Some(w) => match w.deadline.checked_duration_since(Instant::now()) {
                Some(left) => left,
                // First the case's peer goes: a case whose peer never made contact or stopped
                // answering then fails the way it does when the peer dies, and the run goes on.
                None if !w.overran => {
                    w.overran = true;
                    w.deadline = Instant::now() + AFTER_KILL;
                    kill_children();
                    AFTER_KILL
                }
                None => {
                    let message = format!(
                        "{} did not finish in time, nor {} s after its peer process was killed; aborted",
                        w.what,
                        AFTER_KILL.as_secs()
                    );
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
    /// If `what` is still running after `limit`, kills its child processes (so that it fails
    /// as when its peer dies, see [`Deadline::overran`]), and if it still has not ended
    /// [`AFTER_KILL`] later, aborts the whole run after cleaning up. `None`, or a limit too far
    /// away to represent, arms nothing.
    pub(crate) fn arm(limit: Option<Duration>, what: String) -> Deadline {
        let deadline = limit.and_then(|limit| Instant::now().checked_add(limit));
        *watched() = deadline.map(|deadline| Watch { deadline, what, overran: false });
        WATCH_CHANGED.notify_all();
        Deadline(())
    }

    /// Whether the case ran past its limit and had its child processes killed for it.
    pub(crate) fn overran(&self) -> bool {
        watched().as_ref().is_some_and(|w| w.overran)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        *watched() = None;
        WATCH_CHANGED.notify_all();
    }
}

/// A new directory of ours alone (mode 0700) under the system's temporary directory, with
/// the clean-up that removes it and everything in it; `what` names the row in the error.
pub(crate) fn private_dir(what: &str) -> Result<(PathBuf, Cleanup), String> {
    let dir = std::env::temp_dir().join(unique_name());
    DirBuilder::new().mode(0o700).create(&dir).map_err(|e| format!("{what}: creating {}: {e}", dir.display()))?;
    let removed = dir.clone();
    let cleanup = Cleanup::new(move || {
        let _ = std::fs::remove_dir_all(&removed);
    });
    Ok((dir, cleanup))
}

/// A name no other run or case uses: `shmring-bench-<pid>-<counter>`.
pub(crate) fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("shmring-bench-{}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// A child process killed and reaped on drop, whatever happens in the test.
    struct Sleeper(std::process::Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_case_past_its_deadline_has_its_child_killed_and_knows_it() {
        let _mask = install().unwrap();
        let mut child = Sleeper(std::process::Command::new("sleep").arg("60").spawn().unwrap());
        let ticket = track_child(Pid::from_raw(child.0.id() as i32));
        let deadline = Deadline::arm(Some(Duration::from_millis(100)), "test case".into());
        assert!(!deadline.overran());
        let t = Instant::now();
        // Well before AFTER_KILL, after which the watchdog would end this process.
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "the watchdog did not kill the child");
            thread::sleep(Duration::from_millis(5));
        };
        untrack_child(ticket);
        assert!(t.elapsed() >= Duration::from_millis(100), "killed early, after {:?}", t.elapsed());
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(deadline.overran());
        drop(deadline);
        // A limit too far away to represent arms nothing.
        let never = Deadline::arm(Some(Duration::MAX), "another case".into());
        assert!(!never.overran());
    }
}
