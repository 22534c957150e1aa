//! Single-producer single-consumer ring of variable-length records in shared
//! memory.
//!
//! Positions are monotonic `u64` byte counters: `tail` (bytes the producer
//! has written) and `head` (bytes the consumer has released); a byte at
//! position `p` lives at offset `p & (capacity - 1)` of the data region. The
//! producer keeps a private cached copy of `head` and re-reads the shared one
//! only when the cached one says "full".
//!
//! A record is an 8-byte header word `[flags:32 | len:32]` followed by `len`
//! payload bytes, padded to a multiple of 8. A record that would straddle the
//! end of the region is preceded by a padding record (flag [`FLAG_PAD`]) that
//! fills the region to its end, and starts again at offset 0.
//!
//! The consumer does not poll `tail`: it polls the header word at its own
//! position. A header word of zero means "nothing yet". The producer keeps
//! that true by writing a zero end marker after the last record it publishes,
//! and by storing the header of the first record of a batch last, with
//! Release, after every other byte of the batch. So a message costs the
//! consumer one cache-line transfer (the record itself) rather than two (the
//! tail, then the record); `tail` is still stored for `fill` and `inspect`.
//!
//! The producer can write many records and publish them with one store
//! ([`Grant::stage`] then [`Producer::flush`]); the consumer can read many and
//! release them with one store ([`Consumer::recv_batch`]). Records of the same
//! length staged one after another share one header (a run, flag
//! [`FLAG_RUN`], up to 65535 records): a stream of 8-byte records staged in
//! batches costs about 8 bytes of ring per record instead of 16. Receiving,
//! runs are invisible except to [`Consumer::recv_runs`], which passes each
//! run as one slice; the other calls receive one record at a time.
//!
//! Everything read from shared memory is checked: a position out of range, a
//! length that does not fit, an unknown flag returns [`Error::Corrupted`] and
//! poisons the handle. No input makes this module panic or access memory
//! outside the mapping.

mod consumer;
mod ending;
mod format;
mod grant;
pub(crate) mod layout;
mod options;
mod peer;
mod producer;
mod recv;
mod send;
mod shared;

pub use consumer::Consumer;
pub use format::{FLAG_PAD, FLAG_RECORD, FLAG_RUN, RECORD_HEADER, record_size};
pub use grant::{Grant, RunGrant};
/// [`RunGrant`] under its old name.
#[deprecated(since = "0.1.0", note = "renamed `RunGrant`: a grant of room for a run of records")]
pub type Records<'a> = RunGrant<'a>;
pub use options::SpscOptions;
pub use producer::Producer;
pub use recv::{Record, RecordRun};
pub(crate) use shared::{Role, create_role, open_or_create_role, open_role_with};
pub use shared::{create_memfd, create_segment};

#[cfg(loom)]
use {
    crate::region::Region,
    crate::ring,
    crate::sync::Ordering,
    crate::wait::{NotifierKind, WaitPolicy},
    layout::{ROLE_ATTACHED, SpscControl},
    shared::Shared,
    std::ptr::NonNull,
    std::sync::Arc,
};

/// A producer/consumer pair on a heap-allocated ring, for loom models.
/// Roles are marked attached (by the calling process) without pid checks
/// mattering: liveness is never consulted without timeouts under loom.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_pair(capacity: u64) -> (Producer, Consumer) {
    loom_pair_with(capacity, NotifierKind::Futex)
}

/// As [`loom_pair`], with eventcounts that sleep with `notifier`.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_pair_with(capacity: u64, notifier: NotifierKind) -> (Producer, Consumer) {
    struct Heap {
        ctl: Box<SpscControl>,
        _data: Vec<u64>,
    }
    // SAFETY: only touched through the ring protocol (for both impls).
    unsafe impl Send for Heap {}
    // SAFETY: see above.
    unsafe impl Sync for Heap {}
    let words = (capacity / 8) as usize;
    let mut data = vec![0u64; words];
    let base = data.as_mut_ptr() as *mut u8;
    let shadow = Region::shadow(capacity as usize);
    let ctl = SpscControl {
        data_ready: crossbeam_utils::CachePadded::new(crate::wait::EventCount::with_notifier(notifier)),
        space_free: crossbeam_utils::CachePadded::new(crate::wait::EventCount::with_notifier(notifier)),
        ..SpscControl::new()
    };
    let heap = Arc::new(Heap { ctl: Box::new(ctl), _data: data });
    let ctl = NonNull::from(&*heap.ctl);
    let mk = |keep: Arc<Heap>| Shared {
        ctl,
        header: None,
        // SAFETY: the Vec's buffer lives as long as `keep`.
        region: unsafe { Region::new(base, capacity as usize, shadow.clone()) },
        capacity,
        name: "loom".into(),
        fixed: crate::header::FixedWords::default(),
        doorbell: None,
        _keep: keep,
    };
    let (ps, cs) = (mk(heap.clone()), mk(heap));
    ps.ctl().producer.state.store(ROLE_ATTACHED, Ordering::Relaxed);
    ps.ctl().consumer.state.store(ROLE_ATTACHED, Ordering::Relaxed);
    let policy = WaitPolicy::park();
    (
        Producer {
            sh: ps,
            tail: 0,
            published: 0,
            pending: 0,
            open: None,
            staged: 0,
            cached_head: 0,
            policy,
            health: ring::Health::default(),
            consumer: None,
            attach_head: 0,
            demote: false,
        },
        Consumer {
            sh: cs,
            head: 0,
            published: 0,
            run: consumer::Run::default(),
            policy,
            health: ring::Health::default(),
            producer: None,
            attach_head: 0,
            backoff: 0,
        },
    )
}
