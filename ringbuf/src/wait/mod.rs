//! Waiting: an eventcount that sleeps on a shared futex or a process-shared
//! semaphore, and the spin → yield → park policy.
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
//!
//! # Notifiers
//!
//! The sleep itself is done by one of two notifiers, chosen when the segment
//! is created ([`NotifierKind`], recorded in the header and copied into each
//! eventcount before the segment is marked ready; openers check that the
//! copies agree with the header):
//!
//! - [`NotifierKind::Futex`]: `futex_wait` on the epoch word, `futex_wake` of
//!   every sleeper.
//! - [`NotifierKind::Semaphore`]: a process-shared POSIX semaphore
//!   (`sem_init` with pshared = 1) stored next to the epoch. `wait` returns at
//!   once if the epoch moved since the key, else sleeps in `sem_timedwait`;
//!   `notify` bumps the epoch and posts once per registered waiter (at most
//!   [`MAX_WAITERS`] times, so a garbage waiter count cannot keep
//!   the notifier busy). A semaphore remembers posts, so a post that lands
//!   between the waiter's epoch check and its sleep is not lost. A post
//!   nobody consumes (its waiter found the condition true and cancelled, or
//!   timed out) leaves the count raised: it only causes a later spurious
//!   wake-up, after which the caller re-checks its condition and parks
//!   again, as it does after any wake-up.
//!
//! The semaphore's deadline is absolute on `CLOCK_REALTIME` (`sem_clockwait`,
//! which takes `CLOCK_MONOTONIC`, is not exposed by the `libc` crate for this
//! target): setting the wall clock back lengthens a park that is under way.
//!
//! The semaphore is never destroyed (`sem_destroy`): the segment outlives any
//! one handle and is shared with processes that may be sleeping on the
//! semaphore at any moment, and destroying a semaphore someone waits on is
//! undefined. A process-shared semaphore holds no resource outside its 32
//! bytes (glibc keeps everything in the `sem_t`, and the kernel only hashes
//! the futex address while someone sleeps), so unmapping the segment is all
//! the clean-up it needs.
//!
//! The semaphore is plain bytes in a mapping other processes can write. A
//! hostile peer that scribbles on its count can cause spurious wake-ups,
//! missed wake-ups (each bounded by the park's timeout) or `EINVAL`, which
//! are all treated as "re-check"; never memory unsafety, since glibc only
//! reads and writes those 32 bytes of our own mapping and makes futex calls
//! on them. One limit is glibc's, not ours: it passes the semaphore's flags
//! word to the futex call as is, and ends the process with `abort()` ("The
//! futex facility returned an unexpected error code") when the kernel
//! rejects a garbage operation. So a peer that can write the segment can
//! kill a process parked on a semaphore; the futex notifier has no such word.
//! `tests/hostile.rs` checks both behaviours.

//!
//! # Files
//!
//! - `eventcount.rs`: [`EventCount`], the shared words and the handshake.
//! - `kind.rs`: [`NotifierKind`], the value recorded in the header, and the
//!   one `match` that maps it to its backend.
//! - `notifier.rs`: the internal `Notifier` trait every backend implements,
//!   and the bytes an eventcount keeps for it.
//! - `futex.rs`, `sem.rs`: the two backends (`*_loom.rs`: their models).
//! - `policy.rs`: [`WaitPolicy`] and the spin → yield → park loop.
//! - `deadline.rs`: [`Deadline`], how long one call may wait.
//! - `doorbell.rs`: [`Doorbell`], for waiters outside the ring's own loop.
//!
//! Adding a notifier: a file implementing `Notifier`, a variant of
//! [`NotifierKind`] (with its entry in `NotifierKind::ALL` and its arm in
//! `NotifierKind::backend`).

mod deadline;
mod doorbell;
mod eventcount;
mod kind;
mod notifier;
mod policy;

#[cfg(not(loom))]
mod sem;

#[cfg(loom)]
#[path = "sem_loom.rs"]
mod sem;

#[cfg(not(loom))]
mod futex;

#[cfg(loom)]
#[path = "futex_loom.rs"]
mod futex;

pub use deadline::Deadline;
pub use doorbell::{Doorbell, Registration};
pub use eventcount::EventCount;
pub use kind::NotifierKind;
pub use notifier::{MAX_WAITERS, SEM_BYTES};
pub use policy::WaitPolicy;
pub(crate) use policy::{Attempt, ParkMark, block_on};
