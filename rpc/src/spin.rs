//! How long an async task polls an empty (or full) ring before it parks on
//! its doorbell: a window that adapts to the connection's traffic.
//!
//! A park costs a wake-up (a doorbell datagram and an epoll round: 10 to
//! 65 µs on the hosts we measure) and, worse, lets the two ends fall into
//! step: with many requests in flight over one HTTP/2 connection, each side
//! works through a whole batch while the other has parked, so at most one
//! process works at a time. Polling longer keeps both at work, but an idle
//! connection would pay for it after every message.
//!
//! So the window starts at a base and remembers the current busy spell: a
//! wait that ended within [`MAX_FACTOR`] times the base widens the window
//! to twice that wait (up to the cap), so that the next gap of the same
//! kind is polled through rather than slept through; a wait longer than the
//! cap means the connection went idle, and the window falls back to the
//! base. The rule is that of adaptive locks (glibc's
//! `PTHREAD_MUTEX_ADAPTIVE_NP` spins up to about twice its running average
//! of recent spins), with two differences: the wait is measured to its true
//! end, whether it was spent polling or parked, and the spell's longest
//! wait counts rather than an average (the short waits between the records
//! of a batch would otherwise pull the window under the gaps between
//! batches).
//!
//! An idle connection so costs at most one capped window of polling after
//! its last message, and the base after each message that follows an idle
//! gap. The price: a connection whose messages come closer together than
//! the cap (400 µs for a stream) keeps its reader polling all the time. The
//! polls yield to the runtime, so the worker's other tasks still run; what
//! it costs is the CPU time the worker would otherwise have slept through.

use std::time::{Duration, Instant};

/// The widest window, in multiples of the base: with the streams' 50 µs,
/// 400 µs. Measured with 64 tonic calls in flight on one connection
/// (`shmring bench`, grpc-shm), where each side's batch takes 150 to
/// 250 µs: 93 thousand calls/s with a fixed 50 µs window, 152 thousand
/// with 100 µs, 175 thousand with 200 µs or 500 µs.
pub(crate) const MAX_FACTOR: u32 = 8;

/// One direction's polling window.
#[derive(Debug, Clone)]
pub(crate) struct SpinWindow {
    base: Duration,
    cap: Duration,
    window: Duration,
    /// When the current wait began (its first empty poll), if one is on.
    since: Option<Instant>,
}

impl SpinWindow {
    /// A window of `base` that may widen to [`MAX_FACTOR`] times it.
    pub(crate) fn new(base: Duration) -> SpinWindow {
        SpinWindow { base, cap: base.saturating_mul(MAX_FACTOR), window: base, since: None }
    }

    /// The window the next wait polls for.
    #[cfg(test)]
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// An empty poll at `now`: `true` to poll again, `false` once the
    /// current wait has polled for the whole window (time to park). The
    /// first empty poll of a wait starts it.
    pub(crate) fn keep_polling(&mut self, now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        now.saturating_duration_since(since) < self.window
    }

    /// The wait, if one was on, ended at `now` (the record or the room came,
    /// or the connection ended): adapt the window to how long it took.
    pub(crate) fn finish(&mut self, now: Instant) {
        let Some(since) = self.since.take() else { return };
        let took = now.saturating_duration_since(since);
        self.window = if took > self.cap { self.base } else { self.window.max(took.saturating_mul(2).min(self.cap)) };
    }

    /// Whether a wait is on (so that [`SpinWindow::finish`] needs the time).
    pub(crate) fn waiting(&self) -> bool {
        self.since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_FACTOR, SpinWindow};
    use std::time::{Duration, Instant};

    const BASE: Duration = Duration::from_micros(50);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// One wait that started at `t0` and ended `took` later; returns the
    /// window after it.
    fn wait(w: &mut SpinWindow, t0: Instant, took: Duration) -> Duration {
        assert!(w.keep_polling(t0));
        w.finish(t0 + took);
        assert!(!w.waiting());
        w.window()
    }

    #[test]
    fn polls_for_the_window_then_says_park() {
        let mut w = SpinWindow::new(BASE);
        let t0 = Instant::now();
        assert!(w.keep_polling(t0));
        assert!(w.keep_polling(t0 + us(49)));
        assert!(!w.keep_polling(t0 + us(50)));
        assert!(!w.keep_polling(t0 + us(500)));
    }

    #[test]
    fn a_busy_spell_widens_the_window_to_twice_its_longest_gap_up_to_the_cap() {
        let mut w = SpinWindow::new(BASE);
        let t0 = Instant::now();
        assert_eq!(wait(&mut w, t0, us(10)), BASE, "short waits keep the base");
        assert_eq!(wait(&mut w, t0, us(120)), us(240), "a 120 µs wait (parked) widens to 240 µs");
        assert_eq!(wait(&mut w, t0, us(3)), us(240), "short waits in the spell do not narrow it");
        assert_eq!(wait(&mut w, t0, us(300)), BASE * MAX_FACTOR, "capped");
        assert!(w.keep_polling(t0));
        assert!(w.keep_polling(t0 + us(399)));
        assert!(!w.keep_polling(t0 + us(400)));
    }

    #[test]
    fn an_idle_gap_longer_than_the_cap_falls_back_to_the_base() {
        let mut w = SpinWindow::new(BASE);
        let t0 = Instant::now();
        wait(&mut w, t0, us(150));
        assert_eq!(w.window(), us(300));
        assert_eq!(wait(&mut w, t0, us(401)), BASE);
    }

    #[test]
    fn a_zero_base_never_polls() {
        let mut w = SpinWindow::new(Duration::ZERO);
        let t0 = Instant::now();
        assert!(!w.keep_polling(t0));
        w.finish(t0 + us(5));
        assert_eq!(w.window(), Duration::ZERO);
    }

    #[test]
    fn finishing_without_a_wait_changes_nothing() {
        let mut w = SpinWindow::new(BASE);
        w.finish(Instant::now() + us(1000));
        assert_eq!(w.window(), BASE);
    }
}
