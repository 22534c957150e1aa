//! The shared futex of `NotifierKind::Futex`: wait on the epoch word, wake
//! every waiter.
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
