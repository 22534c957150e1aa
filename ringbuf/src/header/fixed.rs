//! The header words fixed at creation, as a handle saw them at open, and
//! their re-check at every liveness tick.

use super::abi::{FLAG_POISONED, Header};
use crate::sync::Ordering;

/// The header words its creator writes once, before READY (all but the
/// flags word), as a handle saw them when it opened the segment. Compared at
/// every liveness tick: a change is corruption, named by field.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FixedWords([u64; FixedWords::COUNT]);

impl FixedWords {
    const COUNT: usize = 16;
    const NAMES: [&'static str; FixedWords::COUNT] = [
        "magic",
        "ABI version",
        "ring kind",
        "header length",
        "notifier",
        "capacity",
        "slot size",
        "slot count",
        "total length",
        "creator pid",
        "state",
        "creator start time",
        "record type alignment",
        "record type fingerprint",
        "record type size",
        "record type name",
    ];

    /// Read them (Relaxed: after the Acquire load of READY, or to compare).
    pub(crate) fn read(h: &Header) -> FixedWords {
        let r = Ordering::Relaxed;
        let name = h
            .type_name
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |acc, w| (acc ^ w.load(r)).wrapping_mul(0x0100_0000_01b3).rotate_left(29));
        FixedWords([
            h.magic.load(r),
            h.abi_version.load(r).into(),
            h.kind.load(r).into(),
            h.header_len.load(r).into(),
            h.notifier.load(r).into(),
            h.capacity.load(r),
            h.slot_size.load(r).into(),
            h.slot_count.load(r).into(),
            h.total_len.load(r),
            h.creator_pid.load(r).into(),
            h.state.load(r).into(),
            h.creator_start_time.load(r),
            h.type_align.load(r).into(),
            h.type_fingerprint.load(r),
            h.type_size.load(r).into(),
            name,
        ])
    }

    /// What changed in `h` since these were read, if anything; and whether
    /// the flags word is clean (no bit but none: [`FLAG_POISONED`] set by
    /// another process is corruption too, since a handle that poisons stops).
    pub(crate) fn check(&self, h: &Header) -> std::result::Result<(), String> {
        let now = FixedWords::read(h);
        if let Some(i) = (0..FixedWords::COUNT).find(|&i| now.0[i] != self.0[i]) {
            return Err(format!(
                "header {} word changed from {:#x} to {:#x} after the segment was opened",
                FixedWords::NAMES[i],
                self.0[i],
                now.0[i]
            ));
        }
        // Relaxed: a flag read on its own.
        let flags = h.flags.load(Ordering::Relaxed);
        if flags & FLAG_POISONED != 0 {
            return Err(format!(
                "header flags word {flags:#x}: another process found the segment corrupted and poisoned it"
            ));
        }
        if flags != 0 {
            return Err(format!("header flags word {flags:#x} has unknown bits"));
        }
        Ok(())
    }
}
