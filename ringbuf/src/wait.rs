//! Waiting: an eventcount that sleeps on a shared futex or a process-shared
//! semaphore, and the spin → yield → park policy.
//!
//! The eventcount follows the shape of folly's `EventCount` and Dmitry
//! Vyukov's eventcount: a waiter registers, reads an epoch, re-checks its
//! condition, and only then sleeps on the epoch word; a notifier that finds no
//! registered waiter makes no system call at all.
//!
//! ```text
//! waiter:   key = ec.prepare_wait()    // waiters += 1; read epoch; fence(SeqCst)
//!           if condition() { ec.cancel_wait(); return }
//!           ec.wait(key, timeout)      // futex_wait(epoch, key): returns at once if epoch moved
//! notifier: publish (Release); ec.notify()   // fence(SeqCst); if waiters > 0 { epoch += 1; futex_wake }
//! ```
//!
//! The two SeqCst fences make this a Dekker handshake: either the notifier's
//! fence comes first in the fence order, so the waiter's re-check sees the
//! published value, or the waiter's does, so the notifier sees `waiters > 0`
//! and bumps the epoch, which makes a late `futex_wait` return at once. The
//! key must be read before the waiter's fence: read after it, it may already
//! include that very bump (the two loads can be reordered, e.g. on ARM), and
//! the waiter would sleep through the only notify meant for it.
//!
//! The futex is shared (no `FUTEX_PRIVATE_FLAG`): the word lives in a
//! `MAP_SHARED` mapping used by several processes. Every park is bounded so the
//! caller can check that its peer is still alive.
//!
//! # Notifiers
//!
//! The sleep itself is done by one of two notifiers, chosen when the segment
//! is created ([`NotifierKind`], recorded in the header and copied into each
//! eventcount before the segment is marked ready; openers check that the
//! copies agree with the header):
//!
//! - [`NotifierKind::Futex`]: `futex_wait` on the epoch word, `futex_wake` of
//!   every sleeper.
//! - [`NotifierKind::Semaphore`]: a process-shared POSIX semaphore
//!   (`sem_init` with pshared = 1) stored next to the epoch. `wait` returns at
//!   once if the epoch moved since the key, else sleeps in `sem_timedwait`;
//!   `notify` bumps the epoch and posts once per registered waiter (at most
//!   [`MPMC_MAX_PARTICIPANTS`] times, so a garbage waiter count cannot keep
//!   the notifier busy). A semaphore remembers posts, so a post that lands
//!   between the waiter's epoch check and its sleep is not lost. A post
//!   nobody consumes (its waiter found the condition true and cancelled, or
//!   timed out) leaves the count raised: it only causes a later spurious
//!   wake-up, after which the caller re-checks its condition and parks
//!   again, as it does after any wake-up.
//!
//! The semaphore's deadline is absolute on `CLOCK_REALTIME` (`sem_clockwait`,
//! which takes `CLOCK_MONOTONIC`, is not exposed by the `libc` crate for this
//! target): setting the wall clock back lengthens a park that is under way.
//!
//! The semaphore is never destroyed (`sem_destroy`): the segment outlives any
//! one handle and is shared with processes that may be sleeping on the
//! semaphore at any moment, and destroying a semaphore someone waits on is
//! undefined. A process-shared semaphore holds no resource outside its 32
//! bytes (glibc keeps everything in the `sem_t`, and the kernel only hashes
//! the futex address while someone sleeps), so unmapping the segment is all
//! the clean-up it needs.
//!
//! The semaphore is plain bytes in a mapping other processes can write. A
//! hostile peer that scribbles on its count can cause spurious wake-ups,
//! missed wake-ups (each bounded by the park's timeout) or `EINVAL`, which
//! are all treated as "re-check"; never memory unsafety, since glibc only
//! reads and writes those 32 bytes of our own mapping and makes futex calls
//! on them. One limit is glibc's, not ours: it passes the semaphore's flags
//! word to the futex call as is, and ends the process with `abort()` ("The
//! futex facility returned an unexpected error code") when the kernel
//! rejects a garbage operation. So a peer that can write the segment can
//! kill a process parked on a semaphore; the futex notifier has no such word.
//! `tests/hostile.rs` checks both behaviours.

use std::time::{Duration, Instant};

use crate::header::{MPMC_MAX_PARTICIPANTS, NotifierKind};
use crate::sync::{AtomicU32, Ordering, full_fence};

/// Bytes reserved for the process-shared semaphore in every eventcount (a
/// glibc `sem_t` on 64-bit targets).
pub const SEM_BYTES: usize = 32;

/// An eventcount: lets a consumer of some condition sleep without missing a
/// wake-up, and lets the producer skip the wake-up system call when nobody
/// sleeps. Lives in shared memory (`#[repr(C)]`, 48 bytes, aligned to 8;
/// a zeroed one is a valid futex eventcount).
#[repr(C)]
pub struct EventCount {
    /// Futex word, bumped by every notify that finds waiters.
    epoch: AtomicU32,
    /// Number of registered waiters. Untrusted: a hostile value only costs
    /// extra wake-up calls.
    waiters: AtomicU32,
    /// [`NotifierKind`] as u32, copied from the header when the segment is
    /// initialised; 0 (a zeroed eventcount) means futex. Anything but
    /// [`NotifierKind::Semaphore`] uses the futex.
    #[cfg(not(loom))]
    notifier: AtomicU32,
    /// The notifier under loom (fixed at construction).
    #[cfg(loom)]
    notifier: u32,
    _reserved: AtomicU32,
    /// The semaphore of [`NotifierKind::Semaphore`]; unused (zero) otherwise.
    #[cfg(not(loom))]
    sem: SemCell,
    /// The modelled semaphore of [`NotifierKind::Semaphore`] under loom.
    #[cfg(loom)]
    sem: Option<sem::Semaphore>,
}

/// Storage for a `sem_t`: bytes other processes change behind our back, so
/// they sit in an `UnsafeCell` and are only touched through `sem_*` calls.
#[cfg(not(loom))]
#[repr(C, align(8))]
struct SemCell(std::cell::UnsafeCell<[u8; SEM_BYTES]>);

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<libc::sem_t>() == SEM_BYTES);
    assert!(std::mem::align_of::<libc::sem_t>() <= std::mem::align_of::<SemCell>());
    assert!(std::mem::offset_of!(EventCount, sem) % std::mem::align_of::<libc::sem_t>() == 0);
    assert!(std::mem::offset_of!(EventCount, waiters) == EventCount::WAITERS_OFFSET);
    assert!(std::mem::offset_of!(EventCount, notifier) == EventCount::NOTIFIER_OFFSET);
    assert!(std::mem::size_of::<EventCount>() == 48);
    // Eventcounts sit in 128-byte `CachePadded` cells.
    assert!(std::mem::size_of::<EventCount>() <= 128);
};

// SAFETY: every field but `sem` is an atomic; the semaphore bytes are only accessed through the `sem_*` functions, which are safe to call from any number of threads (and processes) at once.
#[cfg(not(loom))]
unsafe impl Sync for EventCount {}

impl Default for EventCount {
    fn default() -> Self {
        Self::new()
    }
}

impl EventCount {
    /// Offset of the waiter count inside the struct (for read-only inspection).
    pub const WAITERS_OFFSET: usize = 4;
    /// Offset of the notifier word inside the struct.
    pub const NOTIFIER_OFFSET: usize = 8;

    /// A new futex eventcount with no waiters.
    pub fn new() -> EventCount {
        EventCount {
            epoch: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            #[cfg(not(loom))]
            notifier: AtomicU32::new(NotifierKind::Futex as u32),
            #[cfg(loom)]
            notifier: NotifierKind::Futex as u32,
            _reserved: AtomicU32::new(0),
            #[cfg(not(loom))]
            sem: SemCell(std::cell::UnsafeCell::new([0; SEM_BYTES])),
            #[cfg(loom)]
            sem: None,
        }
    }

    /// A new eventcount with no waiters using `kind` (loom models only: a
    /// real semaphore must be initialised where it will stay, see
    /// [`EventCount::init`]).
    #[cfg(loom)]
    pub fn with_notifier(kind: NotifierKind) -> EventCount {
        EventCount {
            notifier: kind as u32,
            sem: (kind == NotifierKind::Semaphore).then(sem::Semaphore::new),
            ..EventCount::new()
        }
    }

    /// Set up this eventcount, in a freshly created segment nobody else uses
    /// yet, to sleep with `kind`: records the kind and, for a semaphore,
    /// `sem_init`s it process-shared with a count of 0. Call before the
    /// segment is marked ready (the Release store of READY publishes it).
    #[cfg(not(loom))]
    pub(crate) fn init(&self, kind: NotifierKind) {
        if kind == NotifierKind::Semaphore {
            sem::init(&self.sem);
        }
        // Relaxed: published by the Release store of READY in `init_header`.
        self.notifier.store(kind as u32, Ordering::Relaxed);
    }

    /// The notifier this eventcount uses, from its own word (Relaxed
    /// snapshot): [`NotifierKind::Semaphore`] if the word says so, else
    /// [`NotifierKind::Futex`].
    #[inline]
    pub fn notifier(&self) -> NotifierKind {
        NotifierKind::of_eventcount_word(self.notifier_word())
    }

    /// Under loom segments are never initialised (models build their
    /// eventcounts with [`EventCount::with_notifier`]); kept so the segment
    /// code compiles.
    #[cfg(loom)]
    pub(crate) fn init(&self, _kind: NotifierKind) {}

    /// The raw notifier word (for the opener's check against the header).
    pub(crate) fn notifier_word(&self) -> u32 {
        #[cfg(not(loom))]
        let word = self.notifier.load(Ordering::Relaxed);
        #[cfg(loom)]
        let word = self.notifier;
        word
    }

    /// Register as a waiter and return the key to pass to [`EventCount::wait`].
    /// The caller must re-check its condition after this call and then call
    /// exactly one of [`EventCount::cancel_wait`] or [`EventCount::wait`].
    #[inline]
    pub fn prepare_wait(&self) -> u32 {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        // Read the key before the fence, so it is ordered before the caller's
        // re-check: a key read after the fence may already include the bump
        // of a notify whose publication the re-check misses (a lost wake-up).
        // Relaxed: the futex re-checks the value in the kernel; the
        // semaphore remembers posts made after our epoch check.
        let key = self.epoch.load(Ordering::Relaxed);
        // SeqCst fence: pairs with the fence in `notify`. Orders our
        // registration and key before the caller's re-check of its condition.
        full_fence();
        key
    }

    /// Deregister without sleeping (the condition became true).
    #[inline]
    pub fn cancel_wait(&self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sleep until notified, the timeout passes, or a spurious wake-up; then
    /// deregister. Returns at once if a notify happened since
    /// [`EventCount::prepare_wait`] returned `key`. `None` waits without a
    /// bound. The caller re-checks its condition in all cases.
    pub fn wait(&self, key: u32, timeout: Option<Duration>) {
        self.sleep(key, timeout);
        self.cancel_wait();
    }

    /// [`EventCount::wait`] without deregistering: the caller calls
    /// [`EventCount::cancel_wait`] after it.
    fn sleep(&self, key: u32, timeout: Option<Duration>) {
        match self.notifier() {
            NotifierKind::Futex => futex::wait(&self.epoch, key, timeout),
            NotifierKind::Semaphore => {
                // Relaxed: only saves a system call; a notify after this
                // check posts the semaphore, which remembers it.
                if self.epoch.load(Ordering::Relaxed) == key {
                    self.sem_wait(timeout);
                }
            }
        }
    }

    /// Take back the registration of a waiter that will never deregister
    /// itself (its process was killed while parked): lowers the waiter count
    /// by one, never below zero.
    pub(crate) fn deregister_dead(&self) {
        // Relaxed: only the count matters; a notifier that reads the old
        // value makes one system call too many.
        let _ = self.waiters.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Wake every waiter, if there is any. Call after publishing the change
    /// (with Release) that waiters wait for. No system call when nobody waits.
    /// Returns whether a waiter was registered (the caller then also rings
    /// the peer's [`Doorbell`], if it has one).
    #[inline]
    pub fn notify(&self) -> bool {
        // SeqCst fence: pairs with the fence in `prepare_wait`. Orders the
        // caller's publication before our read of the waiter count.
        full_fence();
        let waiters = self.waiters.load(Ordering::Relaxed);
        if waiters != 0 {
            self.notify_slow(waiters);
        }
        waiters != 0
    }

    #[cold]
    fn notify_slow(&self, waiters: u32) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        match self.notifier() {
            NotifierKind::Futex => futex::wake(&self.epoch),
            NotifierKind::Semaphore => {
                // One post per registered waiter; no more than can
                // legitimately wait (a hostile count must not keep us here).
                for _ in 0..waiters.min(MPMC_MAX_PARTICIPANTS as u32) {
                    self.sem_post();
                }
            }
        }
    }

    /// Whether some waiter is registered (Relaxed snapshot).
    pub fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) != 0
    }

    #[cfg(not(loom))]
    fn sem_wait(&self, timeout: Option<Duration>) {
        sem::wait(&self.sem, timeout);
    }

    #[cfg(not(loom))]
    fn sem_post(&self) {
        sem::post(&self.sem);
    }

    #[cfg(loom)]
    fn sem_wait(&self, _timeout: Option<Duration>) {
        // A word that says "semaphore" without one cannot happen under loom
        // (`with_notifier` builds both together).
        if let Some(s) = &self.sem {
            s.wait();
        }
    }

    #[cfg(loom)]
    fn sem_post(&self) {
        if let Some(s) = &self.sem {
            s.post();
        }
    }
}

mod doorbell;
pub use doorbell::{Doorbell, Registration};

#[cfg(not(loom))]
mod sem;

#[cfg(loom)]
#[path = "wait/sem_loom.rs"]
mod sem;

#[cfg(not(loom))]
mod futex;

#[cfg(loom)]
#[path = "wait/futex_loom.rs"]
mod futex;

/// How a blocking call waits: spin, then yield, then park on the eventcount
/// (with the segment's notifier, futex or semaphore).
///
/// ```
/// use shmring::WaitPolicy;
/// let lowest_latency = WaitPolicy::busy_poll();   // burns a core, never sleeps
/// let frugal = WaitPolicy::park();                // sleeps at once
/// let balanced = WaitPolicy::default().spin(4096); // spin a while first
/// assert!(!lowest_latency.parks() && frugal.parks() && balanced.parks());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    spin: u32,
    yields: u32,
    park: bool,
    check_interval: Duration,
}

impl Default for WaitPolicy {
    /// Spin 1024 rounds, yield 8 times, then park, checking the peer every 100 ms.
    fn default() -> Self {
        WaitPolicy { spin: 1024, yields: 8, park: true, check_interval: Duration::from_millis(100) }
    }
}

impl WaitPolicy {
    /// Never sleep: spin (with a CPU pause hint) until the condition holds.
    /// Lowest latency; one core stays busy. The peer's liveness is still
    /// checked every [`WaitPolicy::check_interval`].
    pub fn busy_poll() -> WaitPolicy {
        WaitPolicy { spin: u32::MAX, yields: 0, park: false, ..WaitPolicy::default() }
    }

    /// Park on the eventcount as soon as the condition does not hold.
    pub fn park() -> WaitPolicy {
        WaitPolicy { spin: 0, yields: 0, park: true, ..WaitPolicy::default() }
    }

    /// Set the number of spin rounds before yielding (each round re-checks
    /// the condition and issues one CPU pause hint).
    pub fn spin(mut self, rounds: u32) -> WaitPolicy {
        self.spin = rounds;
        self
    }

    /// Set the number of `sched_yield` rounds before parking.
    pub fn yields(mut self, rounds: u32) -> WaitPolicy {
        self.yields = rounds;
        self
    }

    /// How often a waiter wakes to check that its peer is alive. Default
    /// 100 ms; a dead peer is reported within about this long.
    pub fn check_interval(mut self, every: Duration) -> WaitPolicy {
        self.check_interval = every.max(Duration::from_millis(1));
        self
    }

    /// Whether this policy ever parks.
    pub fn parks(&self) -> bool {
        self.park
    }

    /// The liveness check interval.
    pub fn interval(&self) -> Duration {
        self.check_interval
    }

    /// Spin rounds before yielding ([`WaitPolicy::spin`]; `u32::MAX` for
    /// [`WaitPolicy::busy_poll`]).
    pub fn spin_rounds(&self) -> u32 {
        self.spin
    }
}

/// Outcome of one attempt inside [`block_on`].
pub(crate) enum Attempt<T> {
    /// Done with this value.
    Ready(T),
    /// Condition does not hold yet.
    NotYet,
}

/// A word that says, while a waiter is registered on an eventcount, which
/// one: set to `value` after registering and back to 0 before
/// deregistering (see `Participant::parked`).
pub(crate) struct ParkMark<'a> {
    pub(crate) word: &'a AtomicU32,
    pub(crate) value: u32,
}

impl ParkMark<'_> {
    fn set(mark: &Option<ParkMark<'_>>, parked: bool) {
        if let Some(m) = mark {
            // Release: pairs with the Acquire load of whoever takes over the
            // entry after this process died; the word is only ever read
            // once its writer is dead.
            m.word.store(if parked { m.value } else { 0 }, Ordering::Release);
        }
    }
}

/// Run `attempt` until it is ready, following `policy`. `attempt(true)` is
/// asked every `policy.interval()` while waiting to also check that the peer
/// is alive (its error ends the wait). `deadline` bounds the whole wait, ending
/// it with `timeout_err()`. While parked, `mark` (if any) says so.
pub(crate) fn block_on<T, E>(
    policy: &WaitPolicy,
    ec: &EventCount,
    mark: Option<ParkMark<'_>>,
    deadline: Option<Instant>,
    timeout_err: impl Fn() -> E,
    mut attempt: impl FnMut(bool) -> Result<Attempt<T>, E>,
) -> Result<T, E> {
    let mut next_check = Instant::now() + policy.check_interval;
    // Returns whether a liveness check is due; errors on the deadline. A
    // check due at the deadline runs first (one more attempt), so a wait
    // whose timeout is no longer than the check interval still checks.
    let tick = |next_check: &mut Instant| -> Result<bool, E> {
        // Under loom, real time must not change what a model does.
        if cfg!(loom) {
            return Ok(false);
        }
        let now = Instant::now();
        if now >= *next_check {
            *next_check = now + policy.check_interval;
            return Ok(true);
        }
        if deadline.is_some_and(|d| now >= d) {
            return Err(timeout_err());
        }
        Ok(false)
    };
    let mut spun: u32 = 0;
    while spun < policy.spin || !policy.park {
        let due = spun % 1024 == 1023 && tick(&mut next_check)?;
        if let Attempt::Ready(v) = attempt(due)? {
            return Ok(v);
        }
        crate::sync::spin_hint();
        spun = spun.wrapping_add(1);
    }
    for _ in 0..policy.yields {
        let due = tick(&mut next_check)?;
        if let Attempt::Ready(v) = attempt(due)? {
            return Ok(v);
        }
        crate::sync::yield_now();
    }
    loop {
        let due = tick(&mut next_check)?;
        let key = ec.prepare_wait();
        ParkMark::set(&mark, true);
        let outcome = match attempt(due) {
            Ok(Attempt::Ready(v)) => Some(Ok(v)),
            Err(e) => Some(Err(e)),
            Ok(Attempt::NotYet) => None,
        };
        if outcome.is_none() {
            let now = Instant::now();
            let mut slice = next_check.saturating_duration_since(now);
            if let Some(d) = deadline {
                slice = slice.min(d.saturating_duration_since(now));
            }
            ec.sleep(key, Some(slice.max(Duration::from_micros(50))));
        }
        ParkMark::set(&mark, false);
        ec.cancel_wait();
        if let Some(r) = outcome {
            return r;
        }
    }
}
