//! The shared futex of [`NotifierKind::Futex`](super::NotifierKind::Futex):
//! wait on the epoch word, wake every waiter. It keeps no state of its own.

use std::time::Duration;

use super::notifier::{Notifier, NotifierCell};
use crate::sync::AtomicU32;

/// `futex(2)` on the eventcount's epoch word, without the private flag (the
/// word lives in a `MAP_SHARED` mapping used by several processes).
pub(super) struct Futex;

impl Notifier for Futex {
    fn name(&self) -> &'static str {
        "futex"
    }

    fn init(&self, _cell: &NotifierCell) {}

    fn sleep(&self, epoch: &AtomicU32, _cell: &NotifierCell, key: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // Errors (EAGAIN: value changed, ETIMEDOUT, EINTR) all mean
        // "re-check", which every caller does, so the result is ignored.
        // SAFETY: `epoch` is a valid, aligned u32 (AtomicU32's layout) the
        // kernel only reads; `ts_ptr` is null or a live timespec.
        unsafe {
            libc::syscall(libc::SYS_futex, epoch.as_ptr(), libc::FUTEX_WAIT, key, ts_ptr, 0usize, 0u32);
        }
    }

    /// `FUTEX_WAKE` every waiter on the word.
    fn wake(&self, epoch: &AtomicU32, _cell: &NotifierCell, _waiters: u32) {
        // SAFETY: `epoch` is a valid, aligned u32; FUTEX_WAKE does not access
        // memory beyond hashing the address.
        unsafe {
            libc::syscall(libc::SYS_futex, epoch.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
        }
    }
}
