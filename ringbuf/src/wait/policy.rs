//! [`WaitPolicy`] and the spin → yield → park loop every blocking call runs.

use std::time::{Duration, Instant};

use super::eventcount::EventCount;
use crate::sync::{AtomicU32, Ordering};

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

/// What one attempt inside [`block_on`] is asked to look at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Poll {
    /// A liveness tick: also check that the peer is alive and the shared
    /// words are sane (every `policy.interval()`; its error ends the wait).
    pub(crate) check: bool,
    /// This attempt must look at everything a wake-up could be for: the
    /// waiter is registered on the eventcount and sleeps if it returns
    /// [`Attempt::NotYet`], or the deadline has passed and the wait ends
    /// with the timeout. Attempts while spinning or yielding may look at
    /// less and come back (an attempt that misses something there is only
    /// late).
    pub(crate) complete: bool,
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

/// Run `attempt` until it is ready, following `policy`. Each attempt is
/// told (see [`Poll`]) whether it is a liveness tick, asked every
/// `policy.interval()` while waiting to also check that the peer is alive
/// (its error ends the wait), and whether it must be complete (a sleep or
/// the timeout follows it). `deadline` bounds the whole wait: once it has
/// passed, one last complete attempt runs, and if it is not ready the wait
/// ends with `timeout_err()`. While parked, `mark` (if any) says so.
pub(crate) fn block_on<T, E>(
    policy: &WaitPolicy,
    ec: &EventCount,
    mark: Option<ParkMark<'_>>,
    deadline: Option<Instant>,
    timeout_err: impl Fn() -> E,
    mut attempt: impl FnMut(Poll) -> Result<Attempt<T>, E>,
) -> Result<T, E> {
    let mut next_check = Instant::now() + policy.check_interval;
    // Whether a liveness check is due; `None` once the deadline has passed.
    // A check due at the deadline runs first (one more attempt), so a wait
    // whose timeout is no longer than the check interval still checks.
    let tick = |next_check: &mut Instant| -> Option<bool> {
        // Under loom, real time must not change what a model does.
        if cfg!(loom) {
            return Some(false);
        }
        let now = Instant::now();
        if now >= *next_check {
            *next_check = now + policy.check_interval;
            return Some(true);
        }
        if deadline.is_some_and(|d| now >= d) {
            return None;
        }
        Some(false)
    };
    // The deadline has passed: a last complete attempt, so that what became
    // true meanwhile (an end of stream that a quick look would not see) is
    // reported rather than the timeout.
    let last = |attempt: &mut dyn FnMut(Poll) -> Result<Attempt<T>, E>| match attempt(Poll {
        check: false,
        complete: true,
    })? {
        Attempt::Ready(v) => Ok(v),
        Attempt::NotYet => Err(timeout_err()),
    };
    let mut spun: u32 = 0;
    while spun < policy.spin || !policy.park {
        let due = if spun % 1024 == 1023 {
            match tick(&mut next_check) {
                Some(due) => due,
                None => return last(&mut attempt),
            }
        } else {
            false
        };
        if let Attempt::Ready(v) = attempt(Poll { check: due, complete: false })? {
            return Ok(v);
        }
        crate::sync::spin_hint();
        spun = spun.wrapping_add(1);
    }
    for _ in 0..policy.yields {
        let Some(due) = tick(&mut next_check) else { return last(&mut attempt) };
        if let Attempt::Ready(v) = attempt(Poll { check: due, complete: false })? {
            return Ok(v);
        }
        crate::sync::yield_now();
    }
    loop {
        let Some(due) = tick(&mut next_check) else { return last(&mut attempt) };
        let key = ec.prepare_wait();
        ParkMark::set(&mark, true);
        let outcome = match attempt(Poll { check: due, complete: true }) {
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
