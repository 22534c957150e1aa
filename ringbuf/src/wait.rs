//! Waiting: an eventcount on a shared futex, and the spin → yield → park
//! policy.
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

use std::time::{Duration, Instant};

use crate::sync::{AtomicU32, Ordering, full_fence};

/// An eventcount: lets a consumer of some condition sleep without missing a
/// wake-up, and lets the producer skip the wake-up system call when nobody
/// sleeps. Lives in shared memory (`#[repr(C)]`, 8 bytes, valid when zeroed).
#[repr(C)]
pub struct EventCount {
    /// Futex word, bumped by every notify that finds waiters.
    epoch: AtomicU32,
    /// Number of registered waiters. Untrusted: a hostile value only costs
    /// extra wake-up calls.
    waiters: AtomicU32,
}

impl Default for EventCount {
    fn default() -> Self {
        Self::new()
    }
}

impl EventCount {
    /// Offset of the waiter count inside the struct (for read-only inspection).
    pub const WAITERS_OFFSET: usize = 4;

    /// A new eventcount with no waiters.
    pub fn new() -> EventCount {
        EventCount { epoch: AtomicU32::new(0), waiters: AtomicU32::new(0) }
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
        // Relaxed: the futex re-checks the value in the kernel.
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
        futex::wait(&self.epoch, key, timeout);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }

    /// Wake every waiter, if there is any. Call after publishing the change
    /// (with Release) that waiters wait for. No system call when nobody waits.
    #[inline]
    pub fn notify(&self) {
        // SeqCst fence: pairs with the fence in `prepare_wait`. Orders the
        // caller's publication before our read of the waiter count.
        full_fence();
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.notify_slow();
        }
    }

    #[cold]
    fn notify_slow(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        futex::wake(&self.epoch);
    }

    /// Whether some waiter is registered (Relaxed snapshot).
    pub fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) != 0
    }
}

#[cfg(not(loom))]
mod futex {
    use super::*;

    /// `FUTEX_WAIT` on a word in shared memory (no private flag).
    pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // Errors (EAGAIN: value changed, ETIMEDOUT, EINTR) all mean "re-check",
        // which every caller does, so the result is ignored.
        // SAFETY: `word` is a valid, aligned u32 (AtomicU32's layout) the kernel only reads; `ts_ptr` is null or a live timespec.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, ts_ptr, 0usize, 0u32);
        }
    }

    /// `FUTEX_WAKE` every waiter on the word.
    pub(super) fn wake(word: &AtomicU32) {
        // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not access memory beyond hashing the address.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
        }
    }
}

#[cfg(loom)]
mod futex {
    //! loom model of a futex: the value check and the sleep are atomic with
    //! respect to `wake`, as the kernel makes them. Timeouts are ignored so a
    //! lost wake-up shows up as a deadlock.
    use super::*;
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref PARKING: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    pub(super) fn wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
        let guard = PARKING.0.lock().unwrap();
        if word.load(Ordering::Relaxed) != expected {
            return;
        }
        drop(PARKING.1.wait(guard).unwrap());
    }

    pub(super) fn wake(_word: &AtomicU32) {
        let _guard = PARKING.0.lock().unwrap();
        PARKING.1.notify_all();
    }
}

/// How a blocking call waits: spin, then yield, then park on the futex.
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

    /// Sleep on the futex as soon as the condition does not hold.
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
}

/// Outcome of one attempt inside [`block_on`].
pub(crate) enum Attempt<T> {
    /// Done with this value.
    Ready(T),
    /// Condition does not hold yet.
    NotYet,
}

/// Run `attempt` until it is ready, following `policy`. `attempt(true)` is
/// asked every `policy.interval()` while waiting to also check that the peer
/// is alive (its error ends the wait). `deadline` bounds the whole wait, ending
/// it with `timeout_err()`.
pub(crate) fn block_on<T, E>(
    policy: &WaitPolicy,
    ec: &EventCount,
    deadline: Option<Instant>,
    timeout_err: impl Fn() -> E,
    mut attempt: impl FnMut(bool) -> Result<Attempt<T>, E>,
) -> Result<T, E> {
    let mut next_check = Instant::now() + policy.check_interval;
    // Returns whether a liveness check is due; errors on the deadline.
    let tick = |next_check: &mut Instant| -> Result<bool, E> {
        // Under loom, real time must not change what a model does.
        if cfg!(loom) {
            return Ok(false);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(timeout_err());
        }
        if now >= *next_check {
            *next_check = now + policy.check_interval;
            return Ok(true);
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
        if let Attempt::Ready(v) = attempt(false)? {
            return Ok(v);
        }
        crate::sync::yield_now();
    }
    loop {
        let due = tick(&mut next_check)?;
        let key = ec.prepare_wait();
        match attempt(due) {
            Ok(Attempt::Ready(v)) => {
                ec.cancel_wait();
                return Ok(v);
            }
            Err(e) => {
                ec.cancel_wait();
                return Err(e);
            }
            Ok(Attempt::NotYet) => {}
        }
        let now = Instant::now();
        let mut slice = next_check.saturating_duration_since(now);
        if let Some(d) = deadline {
            slice = slice.min(d.saturating_duration_since(now));
        }
        ec.wait(key, Some(slice.max(Duration::from_micros(50))));
    }
}
