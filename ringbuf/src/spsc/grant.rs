//! What the producer grants: room for one record ([`Grant`]) or for a run
//! of records of one length ([`RunGrant`]), written in place, then committed
//! or staged.

use super::format::{RECORD_HEADER, record_size};
use super::producer::{OpenRun, Producer};

/// A region of the ring granted to the producer; write the payload through
/// `DerefMut<Target = [u8]>`, then [`Grant::commit`] or [`Grant::stage`].
/// Dropping it without either abandons the record: nothing is sent.
#[must_use = "a grant sends nothing until it is committed or staged"]
pub struct Grant<'a> {
    pub(super) p: &'a mut Producer,
    /// Offset of the payload in the data region.
    pub(super) off: usize,
    pub(super) len: usize,
    /// The payload sits right after the open run (no header of its own).
    pub(super) joins: bool,
}

/// Room for a run of records of one length, granted by
/// [`Producer::grant_records`]; write them through `DerefMut<Target = [u8]>`,
/// then [`RunGrant::commit`] or [`RunGrant::stage`]. Dropping it without either
/// sends nothing.
#[must_use = "granted records are sent only when committed or staged"]
pub struct RunGrant<'a> {
    pub(super) p: &'a mut Producer,
    /// Offset of the first payload in the data region.
    pub(super) off: usize,
    pub(super) len: usize,
    pub(super) count: u32,
    /// Bytes of the run, header included.
    pub(super) total: u64,
}

impl RunGrant<'_> {
    /// Finish the records and publish them (with any staged before them).
    pub fn commit(mut self) {
        self.finish();
        self.p.flush();
    }

    /// Finish the records without publishing them yet, like [`Grant::stage`].
    pub fn stage(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if self.count == 0 {
            return; // truncated to nothing: like dropping the grant
        }
        let p = &mut *self.p;
        p.close_run();
        p.open = Some(OpenRun { pos: p.tail, len: self.len, count: self.count });
        p.tail = p.tail.wrapping_add(self.total);
        p.staged = p.staged.saturating_add(self.count);
    }

    /// Number of records granted (after any [`RunGrant::truncate`]).
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Keep only the first `count` records (no-op if `count` is not
    /// smaller): when fewer were written than granted. Truncated to 0, the
    /// grant sends nothing, as if dropped.
    pub fn truncate(&mut self, count: usize) {
        if count < self.count as usize {
            self.count = count as u32;
            self.total = RECORD_HEADER + count as u64 * self.stride() as u64;
        }
    }

    /// Bytes between the starts of two records: the length rounded up to 8.
    pub fn stride(&self) -> usize {
        (self.len + 7) & !7
    }
}

impl std::ops::Deref for RunGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: try_reserve checked the run fits before the end of the region; the bytes are granted to the
        // producer and not yet published.
        unsafe { self.p.sh.region.bytes(self.off, self.total as usize - RECORD_HEADER as usize) }
    }
}

impl std::ops::DerefMut for RunGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref; `&mut self` makes this the only live slice.
        unsafe { self.p.sh.region.bytes_mut(self.off, self.total as usize - RECORD_HEADER as usize) }
    }
}

impl Grant<'_> {
    /// Shorten the record to `len` bytes (no-op if `len` is not smaller).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    #[inline]
    fn finish(&mut self) {
        let p = &mut *self.p;
        p.staged = p.staged.saturating_add(1);
        if self.joins {
            if let Some(run) = p.open.as_mut().filter(|r| r.len == self.len) {
                run.count += 1;
                p.tail = p.tail.wrapping_add(record_size(self.len) - RECORD_HEADER);
                return;
            }
            // Truncated to another length: it cannot join the run. Move the
            // payload after a header of its own (try_reserve kept room).
            // SAFETY: the grant covers `off .. off + 8 + pad8(granted len)`, which holds both ranges; the bytes
            // are ours until published.
            let bytes = unsafe { p.sh.region.bytes_mut(self.off, RECORD_HEADER as usize + self.len) };
            bytes.copy_within(..self.len, RECORD_HEADER as usize);
        }
        p.close_run();
        p.open = Some(OpenRun { pos: p.tail, len: self.len, count: 1 });
        p.tail = p.tail.wrapping_add(record_size(self.len));
    }

    /// Finish the record and publish it (with any staged before it).
    #[inline]
    pub fn commit(mut self) {
        self.finish();
        self.p.flush();
    }

    /// Finish the record without publishing it yet: it becomes visible with
    /// the next [`Grant::commit`], [`Producer::flush`], a wait for space, or
    /// when the producer is dropped. Batching many records per publish is how
    /// small records reach full speed.
    #[inline]
    pub fn stage(mut self) {
        self.finish();
    }
}

impl std::ops::Deref for Grant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: try_reserve checked the record fits before the end of the region; the bytes are granted to
        // the producer and not yet published, so nobody else may touch them.
        unsafe { self.p.sh.region.bytes(self.off, self.len) }
    }
}

impl std::ops::DerefMut for Grant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref; `&mut self` makes this the only live slice.
        unsafe { self.p.sh.region.bytes_mut(self.off, self.len) }
    }
}

impl std::fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("spsc::Grant").field("len", &self.len).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RunGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("spsc::RunGrant").field("len", &self.len).field("count", &self.count).finish_non_exhaustive()
    }
}
