//! What a notifier backend provides, and the bytes an eventcount keeps for
//! it. Each backend (`futex.rs`, `sem.rs`) is a unit type implementing
//! [`Notifier`]; [`super::NotifierKind::backend`] picks one.

use std::time::Duration;

use crate::sync::AtomicU32;

/// Bytes every eventcount reserves for its notifier's own state (a glibc
/// `sem_t` on 64-bit targets; the futex needs none).
pub const SEM_BYTES: usize = 32;

/// Most waiters that can legitimately sleep on one eventcount: an MPMC ring
/// has at most this many participants (`mpmc::layout` checks it at compile
/// time), an SPSC ring two. A notifier that wakes sleepers one at a time
/// wakes no more than this many, so a garbage waiter count cannot keep it
/// busy.
pub const MAX_WAITERS: u32 = 64;

/// One way to sleep and wake on an eventcount. Called by `EventCount` only,
/// after its handshake decided a sleep or a wake is needed.
pub(super) trait Notifier: Sync {
    /// Lower-case name, as tools print it and users pass it.
    fn name(&self) -> &'static str;
    /// Set up `cell` in a freshly created segment nobody else uses yet.
    fn init(&self, cell: &NotifierCell);
    /// Sleep until woken, `timeout` passes (`None`: no bound), or at once if
    /// `epoch` no longer holds `key`. Spurious returns are allowed: the
    /// caller re-checks its condition.
    fn sleep(&self, epoch: &AtomicU32, cell: &NotifierCell, key: u32, timeout: Option<Duration>);
    /// Wake sleepers after `epoch` was bumped; `waiters` is the registered
    /// count read from shared memory (untrusted).
    fn wake(&self, epoch: &AtomicU32, cell: &NotifierCell, waiters: u32);
}

/// Storage for a notifier's state in an eventcount: bytes other processes
/// change behind our back, so they sit in an `UnsafeCell` and are only
/// touched by the backend through its system calls.
#[cfg(not(loom))]
#[repr(C, align(8))]
pub(crate) struct NotifierCell(pub(super) std::cell::UnsafeCell<[u8; SEM_BYTES]>);

// SAFETY: the bytes are only accessed through the backend's system calls
// (the `sem_*` functions), which are safe to call from any number of threads
// and processes at once.
#[cfg(not(loom))]
unsafe impl Sync for NotifierCell {}

#[cfg(not(loom))]
impl NotifierCell {
    pub(super) const fn new() -> NotifierCell {
        NotifierCell(std::cell::UnsafeCell::new([0; SEM_BYTES]))
    }
}

/// Under loom a notifier's state is a counting semaphore, modelled as a
/// count under a mutex and a condition variable (the futex model keeps
/// none). Timeouts are ignored so a lost wake-up shows up as a deadlock.
#[cfg(loom)]
pub(crate) struct NotifierCell {
    pub(super) count: loom::sync::Mutex<u32>,
    pub(super) posted: loom::sync::Condvar,
}

#[cfg(loom)]
impl NotifierCell {
    pub(super) fn new() -> NotifierCell {
        NotifierCell { count: loom::sync::Mutex::new(0), posted: loom::sync::Condvar::new() }
    }
}
