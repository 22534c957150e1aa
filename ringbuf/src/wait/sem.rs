//! The process-shared POSIX semaphore of
//! [`NotifierKind::Semaphore`](super::NotifierKind::Semaphore), kept in the
//! eventcount's notifier bytes: init, wait with a timeout, post, and the
//! guard against a scribbled flags word.

use std::time::Duration;

use super::notifier::{MAX_WAITERS, Notifier, NotifierCell, SEM_BYTES};
use crate::sync::{AtomicU32, Ordering};

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<libc::sem_t>() == SEM_BYTES);
    assert!(std::mem::align_of::<libc::sem_t>() <= std::mem::align_of::<NotifierCell>());
};

/// A process-shared POSIX semaphore (`sem_init` with pshared = 1) in the
/// eventcount's notifier bytes.
pub(super) struct Semaphore;

impl Notifier for Semaphore {
    fn name(&self) -> &'static str {
        "semaphore"
    }

    fn init(&self, cell: &NotifierCell) {
        init(cell);
    }

    fn sleep(&self, epoch: &AtomicU32, cell: &NotifierCell, key: u32, timeout: Option<Duration>) {
        // Relaxed: only saves a system call; a notify after this check
        // posts the semaphore, which remembers it.
        if epoch.load(Ordering::Relaxed) == key {
            wait(cell, timeout);
        }
    }

    fn wake(&self, _epoch: &AtomicU32, cell: &NotifierCell, waiters: u32) {
        // One post per registered waiter; no more than can legitimately
        // wait (a hostile count must not keep us here).
        for _ in 0..waiters.min(MAX_WAITERS) {
            post(cell);
        }
    }
}

fn ptr(cell: &NotifierCell) -> *mut libc::sem_t {
    cell.0.get() as *mut libc::sem_t
}

/// `sem_init(sem, pshared = 1, 0)`. Cannot fail for these arguments on
/// Linux (EINVAL is for a value above SEM_VALUE_MAX, ENOSYS for systems
/// without process-shared semaphores); were it to, waits would return at
/// once with EINVAL and the caller would poll at its check interval.
fn init(cell: &NotifierCell) {
    // SAFETY: `ptr` is 32 writable bytes aligned for a sem_t (const-asserted above), inside our mapping.
    unsafe {
        libc::sem_init(ptr(cell), 1, 0);
    }
}

/// Offset of glibc's flags word in a `sem_t` on 64-bit targets: the
/// futex "private" flag of the semaphore. glibc passes it to the futex
/// call as is, and aborts the process when the kernel rejects the
/// operation it makes of a garbage value.
const FLAGS_OFFSET: usize = 8;

/// The flags word of a process-shared semaphore, as this libc writes it
/// (glibc: 128; learnt once from a local `sem_init`, not assumed).
fn shared_flags() -> u32 {
    static FLAGS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *FLAGS.get_or_init(|| {
        let mut local = std::mem::MaybeUninit::<libc::sem_t>::zeroed();
        // SAFETY: a zeroed local sem_t, initialised and read here only, never used for waiting.
        unsafe {
            libc::sem_init(local.as_mut_ptr(), 1, 0);
            std::ptr::read_unaligned(local.as_ptr().cast::<u8>().add(FLAGS_OFFSET).cast::<u32>())
        }
    })
}

/// Whether the flags word still says "process-shared". A hostile peer
/// that changed it would make glibc abort us inside the next call, so
/// callers skip the call instead. (The peer can still change the word
/// between this check and glibc's read of it: the check closes the
/// window to a few instructions, it cannot close it entirely. The futex
/// notifier has no such word.)
fn flags_sane(cell: &NotifierCell) -> bool {
    // SAFETY: offset 8..12 is inside the 32-byte, 8-aligned cell, in our mapping; an AtomicU32 read
    // tolerates a concurrent writer.
    let flags = unsafe { &*(cell.0.get().cast::<u8>().add(FLAGS_OFFSET) as *const AtomicU32) };
    // Relaxed: a plausibility check of an untrusted word.
    flags.load(Ordering::Relaxed) == shared_flags()
}

/// Wait for a post at most `timeout` (`None`: without a bound). Every
/// outcome (a post, ETIMEDOUT, EINTR, EINVAL from a scribbled semaphore)
/// means "re-check", so the result is ignored. With a scribbled flags
/// word ([`flags_sane`]) it sleeps 1 ms (at most `timeout`) instead, so
/// the caller polls.
fn wait(cell: &NotifierCell, timeout: Option<Duration>) {
    if !flags_sane(cell) {
        std::thread::sleep(timeout.map_or(Duration::from_millis(1), |t| t.min(Duration::from_millis(1))));
        return;
    }
    let Some(d) = timeout else {
        // SAFETY: as in `init`; the bytes may be garbage, which glibc only reads and writes in place.
        unsafe {
            libc::sem_wait(ptr(cell));
        }
        return;
    };
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a live timespec the call fills in.
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut now);
    }
    // `time_t` and `c_long` are i64 on 64-bit targets only.
    #[allow(clippy::useless_conversion)]
    let mut nsec = i64::from(now.tv_nsec) + i64::from(d.subsec_nanos());
    #[allow(clippy::useless_conversion)]
    let mut sec = i64::from(now.tv_sec).saturating_add(d.as_secs().min(i32::MAX as u64) as i64);
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    let deadline = libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as libc::c_long };
    // SAFETY: as in `init`; `deadline` is a live timespec.
    unsafe {
        libc::sem_timedwait(ptr(cell), &deadline);
    }
}

/// `sem_post`; EOVERFLOW (count at SEM_VALUE_MAX) and EINVAL are ignored:
/// the waiters that count would have woken are awake already or will
/// poll at their check interval.
fn post(cell: &NotifierCell) {
    if !flags_sane(cell) {
        return; // the waiters poll at their check interval
    }
    // SAFETY: as in `init`.
    unsafe {
        libc::sem_post(ptr(cell));
    }
}
