//! [`EventCount`]: the shared words of one wait condition and the Dekker
//! handshake between a waiter and a notifier (see [`crate::wait`]).

use std::time::Duration;

use super::kind::NotifierKind;
use super::notifier::NotifierCell;
use crate::sync::{AtomicU32, Ordering, full_fence};

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
    /// The notifier's own state: the semaphore of
    /// [`NotifierKind::Semaphore`]; unused (zero) for the futex.
    sem: NotifierCell,
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::offset_of!(EventCount, sem) % std::mem::align_of::<libc::sem_t>() == 0);
    assert!(std::mem::offset_of!(EventCount, waiters) == EventCount::WAITERS_OFFSET);
    assert!(std::mem::offset_of!(EventCount, notifier) == EventCount::NOTIFIER_OFFSET);
    assert!(std::mem::size_of::<EventCount>() == 48);
    // Eventcounts sit in 128-byte `CachePadded` cells.
    assert!(std::mem::size_of::<EventCount>() <= 128);
};

impl std::fmt::Debug for EventCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Relaxed: a snapshot for display.
        f.debug_struct("EventCount")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .field("waiters", &self.waiters.load(Ordering::Relaxed))
            .field("notifier", &self.notifier())
            .finish_non_exhaustive()
    }
}

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
            sem: NotifierCell::new(),
        }
    }

    /// A new eventcount with no waiters using `kind` (loom models only: a
    /// real semaphore must be initialised where it will stay, see
    /// [`EventCount::init`]).
    #[cfg(loom)]
    pub fn with_notifier(kind: NotifierKind) -> EventCount {
        EventCount { notifier: kind as u32, ..EventCount::new() }
    }

    /// Set up this eventcount, in a freshly created segment nobody else uses
    /// yet, to sleep with `kind`: records the kind and, for a semaphore,
    /// `sem_init`s it process-shared with a count of 0. Call before the
    /// segment is marked ready (the Release store of READY publishes it).
    /// (Under loom segments are never initialised: models build their
    /// eventcounts with `EventCount::with_notifier`.)
    pub(crate) fn init(&self, kind: NotifierKind) {
        kind.backend().init(&self.sem);
        // Relaxed: published by the Release store of READY in `init_header`.
        #[cfg(not(loom))]
        self.notifier.store(kind as u32, Ordering::Relaxed);
    }

    /// The notifier this eventcount uses, from its own word (Relaxed
    /// snapshot): [`NotifierKind::Semaphore`] if the word says so, else
    /// [`NotifierKind::Futex`].
    #[inline]
    pub fn notifier(&self) -> NotifierKind {
        NotifierKind::of_eventcount_word(self.notifier_word())
    }

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
    pub(super) fn sleep(&self, key: u32, timeout: Option<Duration>) {
        self.notifier().backend().sleep(&self.epoch, &self.sem, key, timeout);
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
        self.notifier().backend().wake(&self.epoch, &self.sem, waiters);
    }

    /// Whether some waiter is registered (Relaxed snapshot).
    pub fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) != 0
    }
}
