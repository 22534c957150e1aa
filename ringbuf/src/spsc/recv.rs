//! The consumer's read path: find the next record or run, wait for one,
//! receive in place or in batches, and release.

use std::time::Duration;

use super::consumer::{BATCH_BACKOFF, Consumer, Found, Run};
use super::format::{FLAG_PAD, FLAG_RECORD, FLAG_RUN, RECORD_HEADER};
use super::peer::Peer;
use crate::error::{Error, Result};
use crate::ring::Health;
use crate::sync::Ordering;
use crate::wait::{Attempt, Deadline, block_on};

/// A record received in place; derefs to its payload bytes. Dropping it
/// releases the space to the producer.
///
/// The bytes live in shared memory: a misbehaving producer could change them
/// while you read. Copy them out before validating if the peer is untrusted.
pub struct Record<'a> {
    c: &'a mut Consumer,
    off: usize,
    len: usize,
    total: u64,
}

impl Consumer {
    /// The common case of [`Consumer::try_next`], kept small enough to
    /// inline: the next record of a run underway, or a single record at our
    /// position. `None` for everything else (empty, padding, a new run, a
    /// bad header), which `try_next` handles.
    #[inline(always)]
    fn next_now(&mut self) -> Option<Found> {
        if !self.health.clear() {
            return None;
        }
        if self.run.left > 0 {
            return Some(self.take_run());
        }
        let cap = self.sh.capacity;
        let off = self.head & (cap - 1);
        // Acquire: as in `try_next`.
        // SAFETY: `off` is a position masked with `capacity - 1`, and positions are multiples of 8 (checked at
        // attach, and every step adds a multiple of 8).
        let word = unsafe { self.sh.region.load_word(off as usize, Ordering::Acquire) };
        let len = word as u32 as u64;
        let total = RECORD_HEADER + ((len + 7) & !7);
        if (word >> 32) as u32 != FLAG_RECORD || total > cap - off || total > self.room() {
            return None;
        }
        Some(((off + RECORD_HEADER) as usize, len as usize, total))
    }

    /// The next record of the run underway (`run.left > 0`).
    #[inline(always)]
    fn take_run(&mut self) -> Found {
        let r = &mut self.run;
        let off = r.next;
        r.next += r.stride;
        r.left -= 1;
        (off, r.len, if r.left == 0 { r.total } else { 0 })
    }

    /// How many more bytes an honest producer can have published past our
    /// position: it keeps `tail + 8 <= head + capacity` for the last head we
    /// stored, so a record or padding reaching further is corrupt. This also
    /// bounds how far one call can move: a ring of garbage cannot keep the
    /// consumer skipping padding, or passing records, round the ring for ever.
    #[inline(always)]
    fn room(&self) -> u64 {
        (self.sh.capacity - RECORD_HEADER).saturating_sub(self.head.wrapping_sub(self.published))
    }

    /// Look at the record at our position, skipping padding.
    ///
    /// The header word at our position is zero until the producer publishes
    /// a record there (see the module docs), so no shared position is read.
    #[inline]
    fn try_next(&mut self) -> Result<Option<Found>> {
        if self.health.poisoned {
            return Err(Health::poisoned_error(&self.sh.name));
        }
        if self.run.left > 0 {
            return Ok(Some(self.take_run()));
        }
        let cap = self.sh.capacity;
        loop {
            let off = self.head & (cap - 1);
            // Acquire: pairs with the Release store of the header word in
            // `Producer::flush`: the record's bytes (and the headers and end
            // marker of the rest of its batch) are visible.
            // SAFETY: as in `next_now`.
            let word = unsafe { self.sh.region.load_word(off as usize, Ordering::Acquire) };
            if word == 0 {
                // Publish any padding skipped on the way here: a producer
                // waiting for space may be waiting for exactly those bytes.
                self.release();
                // While we wait for this header, keep asking for the next
                // line too: the record that lands here usually continues
                // there, and fetching both lines at once saves a serial
                // transfer once the header shows up (about -30 ns per
                // 64-byte round trip here). The pauses (in `recv_batch`
                // only) are what helped batched streams.
                self.sh.region.prefetch((((off | 63) + 1) & (cap - 1)) as usize);
                for _ in 0..self.backoff {
                    crate::sync::spin_hint();
                }
                return Ok(None);
            }
            let (flags, len) = ((word >> 32) as u32, word as u32 as u64);
            let to_end = cap - off;
            if flags == FLAG_PAD {
                if len > to_end || len < RECORD_HEADER || len % 8 != 0 || (len != to_end && len > 64) {
                    return Err(self.poison(format!(
                        "padding record of {len} bytes at offset {off} ({to_end} bytes to the end of the ring)"
                    )));
                }
                if len > self.room() {
                    return Err(self.poison(format!(
                        "padding at offset {off} reaches {} bytes past the position last released ({}), more \
                         than a producer can publish",
                        self.head.wrapping_sub(self.published) + len,
                        self.published
                    )));
                }
                self.head = self.head.wrapping_add(len);
                continue;
            }
            let count = match flags {
                FLAG_RECORD => 1,
                _ if flags & 0xffff == FLAG_RUN && flags >> 16 != 0 => u64::from(flags >> 16),
                _ => return Err(self.poison(format!("record at offset {off} has unknown flags {flags:#x}"))),
            };
            let stride = (len + 7) & !7;
            let total = RECORD_HEADER + count * stride;
            if total > to_end {
                return Err(self.poison(format!(
                    "{count} record(s) of {len} bytes at offset {off} overrun the ring ({to_end} bytes to its end)"
                )));
            }
            if total > self.room() {
                return Err(self.poison(format!(
                    "{count} record(s) of {len} bytes at offset {off} reach {} bytes past the position last \
                     released ({}), more than a producer can publish",
                    self.head.wrapping_sub(self.published) + total,
                    self.published
                )));
            }
            let first = (off + RECORD_HEADER) as usize;
            if count > 1 {
                self.run = Run {
                    next: first + stride as usize,
                    left: (count - 1) as u32,
                    len: len as usize,
                    stride: stride as usize,
                    total,
                };
                return Ok(Some((first, len as usize, 0)));
            }
            return Ok(Some((first, len as usize, total)));
        }
    }

    /// Store our position for the producer and wake it if it waits.
    #[inline]
    pub(super) fn release(&mut self) {
        if self.head != self.published {
            // Release: pairs with the producer's Acquire load in
            // `refresh_head`; our reads of the released bytes happen before
            // it overwrites them.
            self.sh.ctl().head.store(self.head, Ordering::Release);
            self.published = self.head;
            self.sh.notify(&self.sh.ctl().space_free);
        }
    }

    /// Periodic check while waiting on an empty ring: the producer's tail
    /// must not be ahead of us, since a tail ahead means a record at our
    /// position, whose header we would see. If it is, the ring's contents and
    /// positions disagree (something wrote over the ring) and both sides
    /// could wait on each other for ever: report it instead.
    fn check_tail(&mut self) -> Result<()> {
        // Acquire: pairs with the Release store of `tail` in
        // `Producer::flush`, made after the header store it covers.
        let t = self.sh.ctl().tail.load(Ordering::Acquire);
        let ahead = t.wrapping_sub(self.head);
        if ahead != 0 && ahead <= self.sh.capacity {
            let off = self.head & (self.sh.capacity - 1);
            // Acquire: as in `try_next`.
            // SAFETY: as in `next_now`.
            if unsafe { self.sh.region.load_word(off as usize, Ordering::Acquire) } == 0 {
                return Err(self.poison(format!(
                    "the producer's position {t} is {ahead} bytes ahead of ours ({}), but no record is there",
                    self.head
                )));
            }
        }
        Ok(())
    }

    /// One attempt of a receive: a record, end of stream, or not yet.
    fn attempt(&mut self, check: bool) -> Result<Attempt<Option<Found>>> {
        if let Some(found) = self.try_next()? {
            return Ok(Attempt::Ready(Some(found)));
        }
        // The common case while waiting, kept to one load: the producer we
        // saw attached still is (the full check runs at every tick).
        if !check && self.producer_still_attached() {
            return Ok(Attempt::NotYet);
        }
        let end = self.producer_state(check)?;
        if !matches!(end, Peer::NotYet | Peer::Attached) {
            // Records published before the close or abort are visible now.
            if let Some(found) = self.try_next()? {
                return Ok(Attempt::Ready(Some(found)));
            }
        }
        match end {
            Peer::NotYet | Peer::Attached => {}
            Peer::Closed { at } if at == self.head => return Ok(Attempt::Ready(None)),
            Peer::Closed { at } => {
                return Err(self.poison(format!(
                    "the producer's role says it closed at position {at}, but the stream ends at {}",
                    self.head
                )));
            }
            Peer::Aborted(e) => return Err(e),
        }
        if check {
            self.check_tail()?;
        }
        Ok(Attempt::NotYet)
    }

    fn wait_next(&mut self, deadline: Deadline) -> Result<Option<Found>> {
        let r = self.wait_next_inner(deadline);
        self.note(r)
    }

    fn wait_next_inner(&mut self, deadline: Deadline) -> Result<Option<Found>> {
        if let Attempt::Ready(r) = self.attempt(false)? {
            return Ok(r);
        }
        // The clock is read only here, on the slow path.
        if !deadline.waits() {
            return Err(Error::WouldBlock { full: false });
        }
        let ctl = self.sh.ctl;
        // SAFETY: `ctl` points into the mapping kept alive by `self.sh`.
        let ec = unsafe { &ctl.as_ref().data_ready };
        let policy = self.policy;
        block_on(&policy, ec, None, deadline.until(), || Error::Timeout, |poll| self.attempt(poll.check))
    }

    /// A receive: the inlined common case, else the general path waiting per
    /// until `deadline`.
    #[inline(always)]
    pub(crate) fn recv_with(&mut self, deadline: Deadline) -> Result<Option<Record<'_>>> {
        let found = match self.next_now() {
            Some(found) => Some(found),
            None => self.wait_next(deadline)?,
        };
        Ok(found.map(|(off, len, total)| Record { c: self, off, len, total }))
    }

    /// Receive the next record in place, waiting per the wait policy.
    /// `Ok(None)` means end of stream: the producer closed and every record
    /// it sent has been received.
    ///
    /// # Errors
    /// [`Error::PeerDied`] if the producer died without closing;
    /// [`Error::Corrupted`] if the shared positions or record headers are
    /// impossible.
    #[inline]
    pub fn recv(&mut self) -> Result<Option<Record<'_>>> {
        self.recv_with(Deadline::Never)
    }

    /// [`Consumer::recv`] without waiting: [`Error::WouldBlock`] if empty.
    ///
    /// # Errors
    /// As [`Consumer::recv`], plus [`Error::WouldBlock`].
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Record<'_>>> {
        self.recv_with(Deadline::Now)
    }

    /// [`Consumer::recv`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Consumer::recv`], plus [`Error::Timeout`].
    #[inline]
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Record<'_>>> {
        self.recv_with(Deadline::After(timeout))
    }

    /// Wait for at least one record, then pass up to `max` available records
    /// to `f` in order and release them all with one store. Returns how many
    /// were passed; 0 means end of stream.
    ///
    /// A `max` of 0 is taken as 1.
    ///
    /// # Errors
    /// As [`Consumer::recv`]. Records already passed to `f` stay consumed.
    #[inline]
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize> {
        self.recv_runs(max, |run| run.iter().for_each(&mut f))
    }

    /// Like [`Consumer::recv_batch`], but passes the records a run at a time:
    /// each [`RecordRun`] is records of one length lying back to back in the
    /// ring (a run the producer wrote with [`Producer::grant_records`] or
    /// staged records of one length; a lone record is a run of one). Up to
    /// `max` records in all are passed, then released with one store.
    /// Returns how many records were passed; 0 means end of stream.
    ///
    /// This is the fastest way to drain small records: a run of 8-byte
    /// records is one contiguous `&[u8]` ([`RecordRun::as_bytes`]) to
    /// process in one loop, with no per-record call.
    ///
    /// ```
    /// # fn main() -> shmring::Result<()> {
    /// use shmring::{Location, SpscOptions, spsc::{Producer, Consumer}};
    /// let loc = Location::shm(format!("doc-runs-{}", std::process::id()));
    /// let mut tx = Producer::create(&loc, &SpscOptions::new().capacity(4096))?;
    /// let mut rx = Consumer::open(&loc)?;
    /// loc.unlink()?;
    /// let mut g = tx.grant_records(8, 100)?;
    /// for (i, rec) in g.chunks_exact_mut(8).enumerate() {
    ///     rec.copy_from_slice(&(i as u64).to_le_bytes());
    /// }
    /// g.commit();
    /// let mut sum = 0;
    /// let got = rx.recv_runs(usize::MAX, |run| {
    ///     assert_eq!((run.record_len(), run.stride()), (8, 8));
    ///     sum += run.as_bytes().chunks_exact(8).map(|r| u64::from_le_bytes(r.try_into().unwrap())).sum::<u64>();
    /// })?;
    /// assert_eq!((got, sum), (100, 4950));
    /// # Ok(()) }
    /// ```
    ///
    /// A `max` of 0 is taken as 1.
    ///
    /// # Errors
    /// As [`Consumer::recv`]. Records already passed to `f` stay consumed.
    ///
    /// [`Producer::grant_records`]: super::Producer::grant_records
    pub fn recv_runs(&mut self, max: usize, mut f: impl FnMut(RecordRun<'_>)) -> Result<usize> {
        let max = max.max(1);
        // A batch receiver is after throughput: it polls the empty ring more
        // gently, so it does not keep stealing the cache line the producer is
        // filling (one poll per BATCH_BACKOFF pause hints).
        self.backoff = BATCH_BACKOFF;
        let first = self.wait_next(Deadline::Never);
        self.backoff = 0;
        let Some(mut next) = first? else {
            return Ok(0);
        };
        let mut n = 0;
        let result = loop {
            let (off, len, mut total) = next;
            // `next` is a lone record or the first one left of a run: take
            // as many more of that run as `max` allows.
            let more = (self.run.left as usize).min(max - n - 1);
            let stride = (len + 7) & !7;
            if more > 0 {
                self.run.next += more * stride;
                self.run.left -= more as u32;
                total = if self.run.left == 0 { self.run.total } else { 0 };
            }
            // SAFETY: try_next checked the whole run (or the record) ends before the end of the region; the
            // producer published it and does not touch it until we release it.
            let bytes = unsafe { self.sh.region.bytes(off, more * stride + len) };
            f(RecordRun { bytes, record_len: len, stride, count: more + 1 });
            self.head = self.head.wrapping_add(total);
            n += more + 1;
            if n >= max {
                break Ok(n);
            }
            match self.try_next() {
                Ok(Some(found)) => next = found,
                Ok(None) => break Ok(n),
                Err(e) => break Err(e),
            }
        };
        self.release();
        self.note(result)
    }

    /// Bytes published by the producer and not yet received, in bytes: a
    /// snapshot of the shared positions (0 if they look impossible).
    pub fn fill(&self) -> u64 {
        // Relaxed: a statistic; nothing is read on the strength of it.
        let f = self.sh.ctl().tail.load(Ordering::Relaxed).wrapping_sub(self.head);
        if f <= self.sh.capacity { f } else { 0 }
    }
}

/// Records of one length lying back to back in the ring, received in place
/// by [`Consumer::recv_runs`]: `len()` records of `record_len()` bytes,
/// `stride()` bytes apart (the length rounded up to a multiple of 8).
///
/// Like [`Record`], the bytes live in shared memory; a misbehaving producer
/// could change them while you read.
#[derive(Debug, Clone, Copy)]
pub struct RecordRun<'a> {
    /// From the first record's first byte to the last record's last byte.
    bytes: &'a [u8],
    record_len: usize,
    stride: usize,
    count: usize,
}

impl<'a> RecordRun<'a> {
    /// One record on its own, as a run of one.
    pub(crate) fn single(bytes: &'a [u8]) -> RecordRun<'a> {
        RecordRun { bytes, record_len: bytes.len(), stride: bytes.len().next_multiple_of(8), count: 1 }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Always false: a run holds at least one record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Payload length of each record, in bytes.
    pub fn record_len(&self) -> usize {
        self.record_len
    }

    /// Bytes from the start of one record to the start of the next:
    /// [`RecordRun::record_len`] rounded up to a multiple of 8.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The records as one slice, from the first byte of the first to the
    /// last byte of the last: `(len() - 1) * stride() + record_len()` bytes,
    /// record `i` at `i * stride()`. With a length that is a multiple of 8
    /// there is no padding between them.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Record `i`, if `i < len()`.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        if i >= self.count {
            return None;
        }
        self.bytes.get(i * self.stride..i * self.stride + self.record_len)
    }

    /// The records in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let RecordRun { bytes, record_len: len, stride, count } = *self;
        // In bounds: `bytes` is `(count - 1) * stride + len` long.
        (0..count).map(move |i| &bytes[i * stride..i * stride + len])
    }
}

impl std::ops::Deref for Record<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: try_next checked the record (or its whole run) ends before the end of the region; it is
        // published and unreleased, so it stays ours until `drop`.
        unsafe { self.c.sh.region.bytes(self.off, self.len) }
    }
}

impl Drop for Record<'_> {
    #[inline]
    fn drop(&mut self) {
        self.c.head = self.c.head.wrapping_add(self.total);
        self.c.release();
    }
}

impl std::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("spsc::Record").field("len", &self.len).finish_non_exhaustive()
    }
}
