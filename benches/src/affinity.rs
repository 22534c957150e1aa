//! Pinning the two sides of a bench to two CPUs.

use std::io;
use std::mem::size_of;

/// The first two CPUs this process may run on, or `None` if it may run on
/// fewer than two (then nothing is pinned).
pub fn cpu_pair() -> Option<[usize; 2]> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live, writable cpu_set_t of the size passed; pid 0 means the calling thread.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return None;
    }
    let max = 8 * size_of::<libc::cpu_set_t>();
    // SAFETY: `cpu` is below the set's size in bits, so CPU_ISSET stays in bounds.
    let mut allowed = (0..max).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) });
    Some([allowed.next()?, allowed.next()?])
}

/// Pin the calling thread to `cpu`.
///
/// # Errors
/// The `sched_setaffinity` error, e.g. `EINVAL` if `cpu` is not available.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= 8 * size_of::<libc::cpu_set_t>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: as in `cpu_pair`, zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked to be below the set's size in bits.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 means the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pin the calling thread to `cpu` if there is one; a failure is reported
/// on stderr and otherwise ignored (the numbers are just less stable).
pub fn pin_if_some(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    if let Err(e) = pin_current_thread(cpu) {
        eprintln!("warning: cannot pin to CPU {cpu}: {e}");
    }
}
