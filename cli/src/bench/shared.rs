//! The two floors: ping-pong on bare shared words, with no ring and no payload copy.
//!
//! * `cache-line` busy-polls two `AtomicU64`s on separate 128-byte lines: what the hardware
//!   needs to move one cache line to the other core and back. Nothing spinning can beat it.
//! * `futex` stores the value and always sleeps in `FUTEX_WAIT` until the peer's
//!   `FUTEX_WAKE`: the cost of two kernel wake-ups per round trip, the floor for "park".
//!
//! Both run over a memfd mapped `MAP_SHARED` in both processes; the child inherits the fd.
//! The page is also what the `signal` and `semaphore` rows (in `classic`) share.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use super::case::{Budget, Case, Transport};
use super::peer::{self, ChildSpec, Launcher, PeerWatch};
use super::protocol::{self, END, Outcome};

const PAGE: usize = 4096;
/// Distance between the two words: two 64-byte lines, so adjacent-line prefetching cannot
/// make them share.
pub(crate) const LINE: usize = 128;

/// One page of memory shared with the other process.
pub(crate) struct SharedPage {
    ptr: NonNull<u8>,
    fd: OwnedFd,
}

impl SharedPage {
    /// Creates a zeroed page backed by a new memfd (close-on-exec until handed to a child).
    pub(crate) fn create() -> Result<SharedPage, String> {
        let fd = memfd_create("shmring-bench", MFdFlags::MFD_CLOEXEC).map_err(|e| format!("memfd_create: {e}"))?;
        nix::unistd::ftruncate(&fd, PAGE as i64).map_err(|e| format!("ftruncate: {e}"))?;
        SharedPage::map(fd)
    }

    /// Maps an existing memfd of at least one page.
    pub(crate) fn map(fd: OwnedFd) -> Result<SharedPage, String> {
        let size = nix::sys::stat::fstat(&fd).map_err(|e| format!("fstat: {e}"))?.st_size;
        if size < PAGE as i64 {
            return Err(format!("shared page is {size} bytes, expected {PAGE}"));
        }
        let len = NonZeroUsize::new(PAGE).expect("page size is not zero");
        // SAFETY: a fresh mapping chosen by the kernel (no address hint) aliases no Rust object; the file is
        // at least PAGE bytes long (checked above), so every byte of the mapping is backed and no access can
        // raise SIGBUS.
        let ptr = unsafe {
            mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd.as_fd(), 0)
        }
        .map_err(|e| format!("mmap: {e}"))?;
        Ok(SharedPage { ptr: ptr.cast(), fd })
    }

    /// A descriptor of the page's memfd, to hand to the child.
    pub(crate) fn share(&self) -> Result<OwnedFd, String> {
        self.fd.try_clone().map_err(|e| format!("dup: {e}"))
    }

    /// The start of line `i`: [`LINE`] bytes, aligned to [`LINE`], that the other process
    /// sees too. Callers decide how the two processes take turns with them.
    pub(crate) fn line(&self, i: usize) -> NonNull<u8> {
        assert!((i + 1) * LINE <= PAGE);
        // SAFETY: the offset is inside the PAGE-byte mapping (asserted), so the result is in bounds and,
        // like `ptr`, not null.
        unsafe { self.ptr.add(i * LINE) }
    }

    /// The 64-bit word at the start of line `i`.
    pub(crate) fn word64(&self, i: usize) -> &AtomicU64 {
        // The other process only ever accesses this word atomically, and every bit pattern
        // is a valid u64, so treating it as an atomic is sound.
        // SAFETY: the line is inside the page (`line` asserts it), 8-aligned (page-aligned map,
        // LINE % 8 == 0), and the mapping outlives `self`.
        unsafe { AtomicU64::from_ptr(self.line(i).as_ptr().cast()) }
    }

    /// The 32-bit word at the start of line `i` (futexes are 32 bits).
    fn word32(&self, i: usize) -> &AtomicU32 {
        // SAFETY: as for `word64`; 4-byte alignment follows from 8-byte alignment.
        unsafe { AtomicU32::from_ptr(self.line(i).as_ptr().cast()) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the PAGE-byte mapping made in `map`, and no reference derived from it outlives
        // `self` (the word accessors borrow `self`).
        let _ = unsafe { munmap(self.ptr.cast(), PAGE) };
    }
}

/// How long one futex sleep lasts before we check that the peer is still there.
const FUTEX_TIMEOUT: Duration = Duration::from_millis(100);

/// Sleeps while `word` holds `expected`, until woken or the timeout; true if it timed out.
fn futex_wait(word: &AtomicU32, expected: u32) -> bool {
    let timeout = libc::timespec { tv_sec: 0, tv_nsec: FUTEX_TIMEOUT.as_nanos() as libc::c_long };
    // SAFETY: `word` is a live, aligned 32-bit word; FUTEX_WAIT only reads it and `timeout` is valid for
    // the duration of the call. No FUTEX_PRIVATE_FLAG: the word is shared with another process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    // Other errors (EAGAIN: the value already changed; EINTR) just mean "look again".
    r == -1 && Errno::last() == Errno::ETIMEDOUT
}

/// Wakes one sleeper on `word`, unconditionally (the baseline does not track waiters).
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned 32-bit word; FUTEX_WAKE does not touch user memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            1i32,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// The futex protocol stops on this value (its 64-bit twin is `END`).
const END32: u32 = u32::MAX;
/// How many spins a `cache-line` waiter makes between checks on its peer.
const SPINS_PER_CHECK: u32 = 1 << 20;

/// Parent side: creates the page, starts the child, runs the timed client.
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let page = SharedPage::create()?;
    let child = launcher.spawn(case, budget, vec![], vec![page.share()?])?;
    let result = match case.transport {
        Transport::Futex => futex_client(&page, budget, child.watch()),
        Transport::CacheLine => spin_client(&page, budget, child.watch()),
        other => Err(format!("{} is not a shared-word transport", other.name())),
    };
    protocol::conclude(result.map(Outcome::Rtt), child)
}

/// Child side: maps the inherited page and answers.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    let page = SharedPage::map(peer::adopt_fd(spec, 0)?)?;
    match spec.case.transport {
        Transport::Futex => {
            let (ping, pong) = (page.word32(0), page.word32(1));
            let mut last = 0;
            loop {
                // Acquire pairs with the client's Release store of `ping`.
                let v = ping.load(Ordering::Acquire);
                if v == last {
                    futex_wait(ping, v);
                    continue;
                }
                last = v;
                // Release pairs with the client's Acquire load of `pong`.
                pong.store(v, Ordering::Release);
                futex_wake(pong);
                if v == END32 {
                    return Ok(());
                }
            }
        }
        Transport::CacheLine => {
            let (ping, pong) = (page.word64(0), page.word64(1));
            let mut last = 0;
            loop {
                // Acquire pairs with the client's Release store of `ping`.
                let v = ping.load(Ordering::Acquire);
                if v == last {
                    std::hint::spin_loop();
                    continue;
                }
                last = v;
                // Release pairs with the client's Acquire load of `pong`.
                pong.store(v, Ordering::Release);
                if v == END {
                    return Ok(());
                }
            }
        }
        other => Err(format!("{} is not a shared-word transport", other.name())),
    }
}

fn futex_client(page: &SharedPage, budget: &Budget, peer: PeerWatch) -> Result<hdrhistogram::Histogram<u64>, String> {
    let (ping, pong) = (page.word32(0), page.word32(1));
    let round_trip = |v: u32| -> Result<(), String> {
        // Release pairs with the child's Acquire load of `ping`.
        ping.store(v, Ordering::Release);
        futex_wake(ping);
        loop {
            // Acquire pairs with the child's Release store of `pong`.
            let seen = pong.load(Ordering::Acquire);
            if seen == v {
                return Ok(());
            }
            if futex_wait(pong, seen) && peer.gone() {
                return Err("futex: child process exited".into());
            }
        }
    };
    // Sequence numbers stay far below END32 in any realistic run; wrap just in case.
    let hist = protocol::time_round_trips(budget, |seq| round_trip((seq % u64::from(END32 - 1)) as u32 + 1))?;
    round_trip(END32)?;
    Ok(hist)
}

fn spin_client(page: &SharedPage, budget: &Budget, peer: PeerWatch) -> Result<hdrhistogram::Histogram<u64>, String> {
    let (ping, pong) = (page.word64(0), page.word64(1));
    let mut round_trip = |v: u64| -> Result<(), String> {
        // Release pairs with the child's Acquire load of `ping`.
        ping.store(v, Ordering::Release);
        let mut spins = 0u32;
        // Acquire pairs with the child's Release store of `pong`.
        while pong.load(Ordering::Acquire) != v {
            std::hint::spin_loop();
            spins += 1;
            if spins == SPINS_PER_CHECK {
                spins = 0;
                if peer.gone() {
                    return Err("cache-line: child process exited".into());
                }
            }
        }
        Ok(())
    };
    let hist = protocol::time_round_trips(budget, &mut round_trip)?;
    round_trip(END)?;
    Ok(hist)
}
