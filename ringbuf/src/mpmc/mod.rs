//! Multi-producer multi-consumer ring of fixed-size slots in shared memory.
//!
//! Any number of processes (up to [`MPMC_MAX_PARTICIPANTS`] handles at a
//! time) attach to one ring, each as [`Producer`]s or [`Consumer`]s; any of
//! them may be killed at any instruction without wedging the others.
//!
//! ```
//! # fn main() -> shmring::Result<()> {
//! use shmring::Location;
//! use shmring::mpmc::{Consumer, MpmcOptions, Producer};
//! let loc = Location::shm(format!("doc-mpmc-{}", std::process::id()));
//! let opts = MpmcOptions::new().slot_size(32).slot_count(8);
//! let mut tx = Producer::create(&loc, &opts)?;
//! let mut tx2 = Producer::open(&loc)?;   // typically in another process
//! let mut rx = Consumer::open(&loc)?;
//! loc.unlink()?;
//!
//! tx.send(b"one")?;
//! tx2.send(b"two")?;
//! tx.close_ring();                       // any handle may close
//! assert_eq!(&*rx.recv()?.unwrap(), b"one");
//! assert_eq!(&*rx.recv()?.unwrap(), b"two");
//! assert!(rx.recv()?.is_none());         // closed and drained
//! # Ok(()) }
//! ```
//!
//! # Algorithm
//!
//! This is Dmitry Vyukov's "Bounded MPMC queue" (1024cores.net). Producers
//! and consumers take positions from two shared `u64` counters, `enqueue` and
//! `dequeue` (on separate 128-byte lines), with a compare-and-swap; position
//! `p` lives in slot `p % slot_count`. Each slot starts with a sequence word
//! that says whose turn it is:
//!
//! ```text
//! seq == p               free for the producer of position p
//!                        (or claimed by it, if enqueue > p: being written)
//! seq == p + 1           holds the message of position p, for its consumer
//!                        (or claimed by it, if dequeue > p: being read)
//! seq == (p + 1) | SKIP  position p carries no message; its consumer skips it
//! seq == p + slot_count  released: free for the producer of the next lap
//! ```
//!
//! A producer claims `p` when `seq == p` with a CAS `enqueue: p -> p + 1`,
//! writes the length word and payload, then stores `seq = p + 1` (Release).
//! A consumer claims `p` when `seq == p + 1` with a CAS `dequeue: p -> p + 1`,
//! reads in place, then stores `seq = p + slot_count` (Release). Batches claim
//! several consecutive ready positions with one CAS. A slot is the sequence
//! word, a length word and the payload, padded so it spans as few cache lines
//! as possible ([`mpmc_slot_stride`]).
//!
//! # Crash safety
//!
//! A process killed between its CAS and its sequence store leaves a slot
//! *claimed*: the counter has moved past it but its sequence has not. Without
//! help, every consumer (or producer, one lap later) waits on it for ever.
//!
//! **Claim records.** Every handle owns one entry of the participant table
//! (pid and start time, see [`crate::liveness`]). Before its CAS on a counter,
//! a handle writes the range it is about to claim into its entry
//! (`enq_start`/`enq_count` or `deq_start`/`deq_count`, Release); after its
//! last sequence store for that range it stores `CLAIM_NONE` (Release). The
//! CAS itself is Release, so it also releases the claim record.
//!
//! **Who recovers.** A waiter that finds the slot it needs claimed but
//! unfinished (a consumer at `p` with `seq == p` and `enqueue > p`; a producer
//! at `q` with the slot still holding message `t = q - slot_count` and
//! `dequeue > t`) notes the time. After [`STUCK_GRACE`], and then after
//! [`STUCK_POLL`] doubling up to [`STUCK_POLL_MAX`], it scans the participant table for a claim record covering
//! the position whose holder is alive. If there is none, it recovers the slot
//! with one CAS on its sequence: `p -> (p + 1) | SKIP` for a producer's slot
//! (consumers drop it), `t + 1 -> t + slot_count` for a consumer's (the next
//! producer reuses it). Waiters park with a short timeout while a slot is
//! claimed, so a kill is noticed within a few milliseconds.
//!
//! **Why a live claimant is never robbed.** The waiter read the counter with
//! Acquire and saw it past the position, so it synchronised with the
//! claimant's CAS and sees the claimant's claim record, or a later value of
//! it. The record stays in place until after the claimant's sequence store,
//! so while the claimant is alive and unfinished the waiter sees the record,
//! reads the holder's identity after it (Acquire; it cannot be older than the
//! claimant's), and finds it alive. Liveness is exact: pid plus start time,
//! and a zombie counts as dead. If the waiter instead reads a later value of
//! the record (cleared or moved on), that store was made after the claimant's
//! sequence stores and is Release, so the waiter's CAS sees the new sequence
//! and fails. Every sequence only ever grows, so a CAS from the stale value
//! cannot succeed later either. Two survivors racing to recover the same
//! slot are decided by the same CAS; only the winner counts it.
//!
//! **Reusing entries.** An entry's word packs `pid | generation | state`.
//! Attaching takes a free entry, or the entry of a dead holder, with a CAS on
//! that exact word. The generation changes on every take-over, so a
//! take-over decided on a stale reading fails. An entry left half-attached
//! is taken over only once the pid in its word is dead, so a dead process
//! never writes to it again.
//!
//! **Statistics.** Recoveries count the messages lost to a producer that
//! died mid-write ([`Stats::lost_producer_died`]), to a consumer that died
//! holding one ([`Stats::lost_consumer_died`]), and all recovered slots
//! ([`Stats::recovered`]). A slot left claimed by a dead process that no
//! waiter ever needs (for example the last message of a run) is recovered by
//! [`Producer::recover_dead`] / [`Consumer::recover_dead`].
//!
//! **Closing.** Any handle can close the ring: it sets a sticky bit in the
//! `enqueue` word itself ([`MPMC_CLOSED`]). A producer claims with a CAS that
//! expects the bit clear, so no position is claimed after the close; a
//! consumer that finds its position unclaimed in a value of that same word
//! carrying the bit knows nothing more will arrive: end of stream. One word
//! decides, so no ordering between two variables is involved. Dropping
//! handles does not close the ring (producers come and go; a dead one never
//! says goodbye): end of stream is always an explicit close. Dropping a
//! [`Grant`] without committing commits a skip, so an abandoned grant never
//! wedges the ring.
//!
//! **Untrusted memory.** Counters must stay below 2^62 and never go back;
//! a sequence must be one of the values the slot can hold for the position
//! (checked once the counter is confirmed stable around the read); the
//! counters must stay within `slot_count` of each other; a length word must
//! not exceed the slot size. Anything else returns [`Error::Corrupted`] and
//! poisons the handle. Every wait is bounded by the wait policy's check
//! interval (at most [`STUCK_POLL_MAX`] while a slot is claimed) and every
//! retry loop by a fixed count, so garbage cannot make a call spin for ever.
//!
//! A handle must not be used in a child after `fork`: its claims would carry
//! the parent's identity.

#[cfg(doc)]
use crate::header::{MPMC_MAX_PARTICIPANTS, mpmc_slot_stride};
#[cfg(loom)]
use {
    crate::header::{self, Geometry},
    crate::liveness::ProcessId,
    crate::region::Region,
    crate::sync::AtomicU64,
    crate::wait::WaitPolicy,
    handle::Core,
    layout::MpmcControl,
    shared::Shared,
    std::ptr::NonNull,
    std::sync::Arc,
};

mod consumer;
mod ends;
mod handle;
pub(crate) mod layout;
mod open;
mod options;
mod participants;
mod producer;
mod shared;

pub use consumer::Record;
pub use ends::{Consumer, ConsumerRole, Handle, Producer, ProducerRole};
pub use options::MpmcOptions;
pub use producer::Grant;
pub use shared::{STUCK_GRACE, STUCK_POLL, STUCK_POLL_MAX, Stats, create_memfd, create_segment};

/// Producers and consumers on a heap-allocated ring of `slot_count` slots
/// of `slot_size` bytes, for loom models. Handle `i` (producers first) is
/// fake process `i + 1`, alive until its `loom_die`.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_ring(
    slot_size: usize,
    slot_count: usize,
    producers: usize,
    consumers: usize,
) -> (Vec<Producer>, Vec<Consumer>) {
    struct Heap {
        ctl: Box<MpmcControl>,
        _data: Vec<u64>,
    }
    // SAFETY: only touched through the ring protocol (for both impls).
    unsafe impl Send for Heap {}
    // SAFETY: see above.
    unsafe impl Sync for Heap {}
    let g = Geometry::mpmc(slot_size, slot_count).expect("loom_ring geometry");
    let stride = header::mpmc_slot_stride(g.slot_size) as usize;
    let capacity = g.capacity as usize;
    let mut data = vec![0u64; capacity / 8];
    let base = data.as_mut_ptr() as *mut u8;
    let heap = Arc::new(Heap { ctl: Box::new(MpmcControl::new()), _data: data });
    let sh = Arc::new(Shared {
        ctl: NonNull::from(&*heap.ctl),
        header: None,
        // SAFETY: the Vec's buffer lives as long as `heap`, kept by `_keep`.
        region: unsafe { Region::new(base, capacity, Region::shadow(capacity)) },
        seqs: (0..slot_count as u64).map(AtomicU64::new).collect(),
        dead: (0..producers + consumers).map(|_| crate::sync::AtomicU32::new(0)).collect(),
        slots: slot_count as u64,
        stride,
        slot_size: g.slot_size as usize,
        name: "loom".into(),
        fixed: header::FixedWords::default(),
        _keep: heap,
    });
    let policy = WaitPolicy::park();
    let mut pid = 0;
    let mut core = || {
        pid += 1;
        Core::attach(sh.clone(), ProcessId { pid, start_time: 0 }, policy).expect("loom attach")
    };
    let ps = (0..producers).map(|_| Producer::from_core(core())).collect();
    let cs = (0..consumers).map(|_| Consumer::from_core(core())).collect();
    (ps, cs)
}
