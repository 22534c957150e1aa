//! Everything a segment holds in shared memory, in one place: the
//! `#[repr(C)]` segment header, both rings' control blocks, and the rules
//! that validate them. Each concept has its own file (`abi.rs`: the header
//! and its constants; `geometry.rs`: shapes and validation; `reason.rs`,
//! `record_type.rs`, `fixed.rs`; the control blocks in `spsc/layout.rs` and
//! `mpmc/layout.rs`); this module gathers them under one path.
//!
//! Layout of an SPSC segment (offsets in bytes from the start of the mapping):
//!
//! ```text
//! 0      Header           magic, ABI version, kind, geometry, creator, state
//! 256    SpscControl      tail | head | producer | consumer | 2 eventcounts,
//!                         each on its own 128-byte line
//! 4096   data region      `capacity` bytes (a power of two) of records
//! ```
//!
//! Layout of an MPMC segment:
//!
//! ```text
//! 0      Header           as above; `slot_size` and `slot_count` are set
//! 256    MpmcControl      enqueue (+ closed bit) | dequeue | statistics | 2 eventcounts
//!                         | participant table (64 entries), each on its own
//!                         128-byte line
//! 12288  data region      `slot_count` slots of `mpmc_slot_stride(slot_size)`
//!                         bytes: sequence word, length word, payload
//! ```
//!
//! The creator fills every field, then stores `state = READY` with Release.
//! Openers wait (bounded) for READY with Acquire, then validate every field
//! against the file's real length before touching the ring. Every field is
//! untrusted: another process may write anything at any time.

pub(crate) mod abi;
pub(crate) mod check;
pub(crate) mod fixed;
pub(crate) mod geometry;
pub(crate) mod reason;
pub(crate) mod record_type;

pub use abi::{
    ABI_VERSION, CONTROL_OFFSET, FLAG_POISONED, HEADER_LEN, Header, MAGIC, MAX_CAPACITY, MIN_CAPACITY, RingKind,
    STATE_INIT, STATE_READY,
};
pub use check::{HeaderWords, eventcount_notifier_problem};
pub(crate) use check::{check_eventcounts, validate};
pub(crate) use fixed::FixedWords;
pub use geometry::{Geometry, check_capacity, spsc_segment_len};
pub use reason::{REASON_MAX, RawReason, Reason, escape_reason};
pub use record_type::{RecordType, record_type_problem};

pub use crate::mpmc::layout::{
    CLAIM_NONE, MPMC_CLOSED, MPMC_HEADER_LEN, MPMC_MAX_PARTICIPANTS, MPMC_MAX_SLOT_SIZE, MPMC_POSITION_LIMIT,
    MPMC_SLOT_META, MpmcControl, MpmcShared, PARKED_NONE, PARKED_NOT_EMPTY, PARKED_NOT_FULL, PARTICIPANT_ABORTED,
    PARTICIPANT_ATTACHED, PARTICIPANT_ATTACHING, PARTICIPANT_FREE, Participant, mpmc_slot_stride, participant_fields,
    participant_word,
};
pub use crate::spsc::layout::{
    CLOSE_SEAL, ROLE_ABORTED, ROLE_ATTACHED, ROLE_ATTACHING, ROLE_CLOSED, ROLE_FREE, RoleSlot, SpscControl,
};
pub use crate::wait::NotifierKind;
