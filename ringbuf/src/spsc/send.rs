//! The producer's write path: reserve room, grant, send, stage and
//! publish.

use std::time::Duration;

use super::format::{MAX_RUN, RECORD_HEADER, pad_word, record_size, record_word, run_word};
use super::grant::{Grant, RunGrant};
use super::producer::Producer;
use crate::error::{Error, Result};
use crate::ring::Health;
use crate::sync::Ordering;
use crate::wait::{Attempt, Deadline, block_on};

impl Producer {
    /// Re-read the consumer's position; checks it is between the last one
    /// seen and what we published.
    #[inline]
    pub(super) fn refresh_head(&mut self) -> Result<()> {
        // Acquire: pairs with the consumer's Release store of `head`: it has
        // finished reading the bytes it released before we overwrite them.
        let h = self.sh.ctl().head.load(Ordering::Acquire);
        if h.wrapping_sub(self.cached_head) > self.published.wrapping_sub(self.cached_head) || !h.is_multiple_of(8) {
            return Err(self.poison(format!(
                "consumer position {h} outside [{}, {}] (last seen, published)",
                self.cached_head, self.published
            )));
        }
        self.cached_head = h;
        Ok(())
    }

    /// Whether `n` bytes fit at the tail, plus the 8-byte end marker that
    /// [`Producer::flush`] writes after the last record.
    #[inline]
    fn has_room(&mut self, n: u64) -> Result<bool> {
        let n = n + RECORD_HEADER;
        if self.sh.capacity - self.tail.wrapping_sub(self.cached_head) >= n {
            return Ok(true);
        }
        self.refresh_head()?;
        Ok(self.sh.capacity - self.tail.wrapping_sub(self.cached_head) >= n)
    }

    /// Write the header word of the record at position `pos`. The first
    /// record after `published` is held back: the consumer polls that word,
    /// so writing it publishes the whole batch ([`Producer::flush`]).
    #[inline]
    fn put_header(&mut self, pos: u64, word: u64) {
        if pos == self.published {
            self.pending = word;
        } else {
            // Relaxed: the consumer reaches this record only through the
            // batch's first header, stored later with Release in `flush`.
            // SAFETY: a position masked with `capacity - 1`; positions are multiples of 8 (checked at attach, and
            // every step adds a multiple of 8).
            unsafe { self.sh.region.store_word((pos & (self.sh.capacity - 1)) as usize, word, Ordering::Relaxed) };
        }
    }

    /// Write the header of the open run, if any: no record joins it after this.
    #[inline]
    pub(super) fn close_run(&mut self) {
        if let Some(run) = self.open.take() {
            let word = if run.count == 1 { record_word(run.len) } else { run_word(run.len, run.count) };
            self.put_header(run.pos, word);
        }
    }

    /// Find room for a record of `len` payload bytes (`total` bytes with its
    /// header); `Some((payload offset, joins the open run))`, or None if full.
    /// Room for the whole record is required even when it joins the run, so
    /// that a truncated grant can still get a header of its own.
    #[inline]
    fn try_reserve(&mut self, len: usize, total: u64) -> Result<Option<(usize, bool)>> {
        if self.health.poisoned {
            return Err(Health::poisoned_error(&self.sh.name));
        }
        loop {
            let off = self.tail & (self.sh.capacity - 1);
            let to_end = self.sh.capacity - off;
            if total > to_end {
                if !self.has_room(to_end)? {
                    return Ok(None);
                }
                self.close_run();
                self.put_header(self.tail, pad_word(to_end));
                self.tail = self.tail.wrapping_add(to_end);
                continue;
            }
            if !self.has_room(total)? {
                return Ok(None);
            }
            // The open run ends at `tail`; at offset 0 it ended at the end of
            // the region, and a run never wraps.
            let joins = len > 0 && off != 0 && self.open.is_some_and(|r| r.len == len && r.count < MAX_RUN);
            let payload = if joins { off } else { off + RECORD_HEADER };
            return Ok(Some((payload as usize, joins)));
        }
    }

    fn size_for(&self, len: usize) -> Result<u64> {
        if len > self.max_record_len() {
            return Err(Error::InvalidArgument(format!(
                "record of {len} bytes does not fit a ring of {} bytes (max {})",
                self.sh.capacity,
                self.max_record_len()
            )));
        }
        Ok(record_size(len))
    }

    fn grant_inner(&mut self, len: usize, deadline: Deadline) -> Result<Grant<'_>> {
        let r = self.size_for(len).and_then(|total| self.reserve(len, total, deadline));
        let (off, joins) = self.note(r)?;
        Ok(Grant { p: self, off, len, joins })
    }

    /// Reserve `total` bytes for a record of `len` payload bytes (`len` 0:
    /// never join a run), waiting until `deadline`.
    #[inline]
    fn reserve(&mut self, len: usize, total: u64, deadline: Deadline) -> Result<(usize, bool)> {
        if let Some(reserved) = self.try_reserve(len, total)? {
            return Ok(reserved);
        }
        // Full. Publish what is staged (the consumer may be waiting for it),
        // then wait for space. The clock is read only here, on the slow path.
        self.flush();
        if !deadline.waits() {
            return Err(Error::WouldBlock { full: true });
        }
        let ctl = self.sh.ctl;
        // SAFETY: `ctl` points into the mapping kept alive by `self.sh`, which outlives this call.
        let ec = unsafe { &ctl.as_ref().space_free };
        let policy = self.policy;
        block_on(
            &policy,
            ec,
            None,
            deadline.until(),
            || Error::Timeout,
            |poll| {
                if let Some(reserved) = self.try_reserve(len, total)? {
                    return Ok(Attempt::Ready(reserved));
                }
                // Padding written inside try_reserve must reach the consumer.
                self.flush();
                self.check_consumer(poll.check)?;
                Ok(Attempt::NotYet)
            },
        )
    }

    /// Grant room for `count` records of `len` payload bytes each, to write
    /// in place back to back, `stride = len` rounded up to a multiple of 8
    /// bytes apart: record `i` is `grant[i * stride..][..len]`. The records
    /// share one 8-byte header (a run), so this is the cheapest way to send
    /// many small records of one size; the consumer still receives them one
    /// at a time. Waits for space per the wait policy.
    ///
    /// ```
    /// # fn main() -> shmring::Result<()> {
    /// use shmring::{Location, SpscOptions, spsc::{Producer, Consumer}};
    /// let loc = Location::shm(format!("doc-records-{}", std::process::id()));
    /// let mut tx = Producer::create(&loc, &SpscOptions::new().capacity(4096))?;
    /// let mut rx = Consumer::open(&loc)?;
    /// loc.unlink()?;
    /// let mut g = tx.grant_records(8, 100)?;
    /// for (i, rec) in g.chunks_exact_mut(8).enumerate() {
    ///     rec.copy_from_slice(&(i as u64).to_le_bytes());
    /// }
    /// g.commit();
    /// let mut got = Vec::new();
    /// rx.recv_batch(1000, |r| got.push(u64::from_le_bytes(r.try_into().unwrap())))?;
    /// assert_eq!(got, (0..100).collect::<Vec<u64>>());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `count` is 0 or above 65535, or the run
    /// (8 + `count * stride` bytes) does not fit the ring with its 8-byte end
    /// marker; otherwise as [`Producer::grant`].
    pub fn grant_records(&mut self, len: usize, count: usize) -> Result<RunGrant<'_>> {
        self.grant_records_inner(len, count, Deadline::Never)
    }

    /// [`Producer::grant_records`] without waiting: [`Error::WouldBlock`] if
    /// the run does not fit now.
    ///
    /// # Errors
    /// As [`Producer::grant_records`], plus [`Error::WouldBlock`].
    pub fn try_grant_records(&mut self, len: usize, count: usize) -> Result<RunGrant<'_>> {
        self.grant_records_inner(len, count, Deadline::Now)
    }

    /// [`Producer::grant_records`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Producer::grant_records`], plus [`Error::Timeout`].
    pub fn grant_records_timeout(&mut self, len: usize, count: usize, timeout: Duration) -> Result<RunGrant<'_>> {
        self.grant_records_inner(len, count, Deadline::After(timeout))
    }

    fn grant_records_inner(&mut self, len: usize, count: usize, deadline: Deadline) -> Result<RunGrant<'_>> {
        let stride = (len as u64 + 7) & !7;
        let total = (count as u64).checked_mul(stride).and_then(|b| b.checked_add(RECORD_HEADER));
        let Some(total) =
            total.filter(|&t| t <= self.sh.capacity - RECORD_HEADER && (1..=MAX_RUN as usize).contains(&count))
        else {
            return self.note(Err(Error::InvalidArgument(format!(
                "{count} records of {len} bytes: a run holds 1 to {MAX_RUN} records and must fit a ring of {} bytes \
                 with a header and an end marker",
                self.sh.capacity
            ))));
        };
        let r = self.reserve(0, total, deadline);
        let (off, _) = self.note(r)?;
        Ok(RunGrant { p: self, off, len, count: count as u32, total })
    }

    /// Grant `len` bytes to write in place, waiting for space per the wait
    /// policy.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `len > max_record_len()`;
    /// [`Error::Closed`] if the consumer closed; [`Error::PeerDied`] if it
    /// died; [`Error::Corrupted`] if the shared positions are impossible.
    pub fn grant(&mut self, len: usize) -> Result<Grant<'_>> {
        self.grant_inner(len, Deadline::Never)
    }

    /// Grant without waiting: [`Error::WouldBlock`] if full.
    ///
    /// # Errors
    /// As [`Producer::grant`], plus [`Error::WouldBlock`].
    pub fn try_grant(&mut self, len: usize) -> Result<Grant<'_>> {
        self.grant_inner(len, Deadline::Now)
    }

    /// Grant, waiting at most `timeout`: [`Error::Timeout`] after that.
    ///
    /// # Errors
    /// As [`Producer::grant`], plus [`Error::Timeout`].
    pub fn grant_timeout(&mut self, len: usize, timeout: Duration) -> Result<Grant<'_>> {
        self.grant_inner(len, Deadline::After(timeout))
    }

    /// Copy `data` into the ring as one record and publish it, waiting for
    /// space per the wait policy.
    ///
    /// # Errors
    /// As [`Producer::grant`].
    #[inline]
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data, Deadline::Never)
    }

    /// A send: the inlined common case, else grant (waiting until `deadline`,
    /// as in `reserve`), copy and commit.
    #[inline(always)]
    pub(crate) fn send_with(&mut self, data: &[u8], deadline: Deadline) -> Result<()> {
        if self.send_now(data) {
            return Ok(());
        }
        let mut g = self.grant_inner(data.len(), deadline)?;
        g.copy_from_slice(data);
        g.commit();
        Ok(())
    }

    /// The common case of [`Producer::send`], kept small enough to inline:
    /// nothing staged, and the record fits before the end of the region in
    /// the room the cached consumer position shows. Writes the payload, the
    /// end marker, then the header (the publishing store) and returns true;
    /// returns false, having written nothing, for every other case, which
    /// the general path handles (waiting, wrapping, errors).
    #[inline]
    fn send_now(&mut self, data: &[u8]) -> bool {
        let cap = self.sh.capacity;
        // `tail == published`: nothing staged, so no run is open either.
        // After a failure the general path runs, which forgets it.
        if !self.health.clear() || self.tail != self.published {
            return false;
        }
        // A record over `max_record_len` takes at least `cap` bytes, so the
        // room check refuses it too (and the general path says why).
        let total = record_size(data.len());
        let off = self.tail & (cap - 1);
        if total > cap - off || cap - self.tail.wrapping_sub(self.cached_head) < total + RECORD_HEADER {
            return false;
        }
        // Stores go in the order payload, then (in `publish`) end marker and
        // header.
        // The order matters for speed: the consumer polls the header's line
        // and prefetches the next, so a line written twice with the other
        // in between is stolen back in between. Writing the end marker first
        // made a 64-byte round trip 2.4 times slower here.
        // SAFETY: `off + total <= cap` was checked above and the room check makes the bytes ours: the consumer
        // released them and does not read past the header word until it is stored below.
        unsafe { self.sh.region.bytes_mut((off + RECORD_HEADER) as usize, data.len()) }.copy_from_slice(data);
        self.tail = self.tail.wrapping_add(total);
        self.publish(record_word(data.len()), true);
        true
    }

    /// [`Producer::send`] without waiting.
    ///
    /// # Errors
    /// As [`Producer::try_grant`].
    #[inline]
    pub fn try_send(&mut self, data: &[u8]) -> Result<()> {
        self.send_with(data, Deadline::Now)
    }

    /// [`Producer::send`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Producer::grant_timeout`].
    pub fn send_timeout(&mut self, data: &[u8], timeout: Duration) -> Result<()> {
        self.send_with(data, Deadline::After(timeout))
    }

    /// After publishing one record alone at `off` (`total` bytes), if
    /// [`Producer::set_demote`] is on: push its first two lines towards the
    /// shared cache.
    #[inline]
    fn demote_record(&self, off: u64, total: u64) {
        if self.demote {
            self.sh.region.demote(off as usize);
            if total > 64 - off % 64 {
                self.sh.region.demote((((off | 63) + 1) & (self.sh.capacity - 1)) as usize);
            }
        }
    }

    /// Whether to push each record published on its own (by
    /// [`Producer::send`], or a [`Grant::commit`] with nothing staged before
    /// it) out of this core's private caches to the shared last-level cache
    /// right after publishing it, where the consumer's core finds it sooner.
    /// Off by default; also settable with [`SpscOptions::demote`].
    ///
    /// This is for request/response traffic: a consumer that is waiting for
    /// the record gets it sooner. Measured here (x86-64 `cldemote`, a 2-vCPU
    /// VM), a 64-byte cross-process round trip went from about 405 to
    /// 358 ns. It costs a stream: 64-byte records sent back to back one per
    /// call went from about 19 M to 5 M a second with it on, so leave it off
    /// for streams (and batch them: [`Producer::grant_records`]). Batches
    /// published with [`Producer::flush`] are never demoted. A no-op on CPUs
    /// without the instruction (it is a hint in the NOP space) and on other
    /// architectures.
    pub fn set_demote(&mut self, on: bool) {
        self.demote = on;
    }

    /// Publish every staged record with one store, and wake the consumer if
    /// it is parked. Cheap when nothing is staged.
    ///
    /// The consumer polls the header word at its position, so publishing is:
    /// write a zero end marker after the last staged record, then store the
    /// first staged record's header (held back until now) with Release.
    #[inline]
    pub fn flush(&mut self) {
        self.close_run();
        if self.tail != self.published {
            let alone = self.staged == 1;
            if self.staged > 1 {
                self.align_next_batch();
            }
            self.staged = 0;
            self.publish(self.pending, alone);
        }
    }

    /// Publish everything from `published` to `tail` (every byte written),
    /// whose first header word is `first`: the end marker at `tail`, then
    /// `first` with Release, then `tail`, then wake the consumer if it is
    /// parked. `alone`: one record, demoted if [`Producer::set_demote`].
    #[inline(always)]
    fn publish(&mut self, first: u64, alone: bool) {
        let mask = self.sh.capacity - 1;
        let at = self.published & mask;
        // Relaxed: ordered before the Release store below. `has_room` kept
        // these 8 bytes free, so the consumer is not reading them, and it
        // reaches them only after that store.
        // SAFETY: as in `put_header`.
        unsafe { self.sh.region.store_word((self.tail & mask) as usize, 0, Ordering::Relaxed) };
        // Release: pairs with the consumer's Acquire load of the header word
        // in `try_next`/`next_now`: every record byte, header and the end
        // marker written before are visible once it sees this word.
        // SAFETY: as in `put_header`.
        unsafe { self.sh.region.store_word(at as usize, first, Ordering::Release) };
        if alone {
            self.demote_record(at, self.tail.wrapping_sub(self.published));
        }
        // Release: pairs with the Acquire load in the consumer's periodic
        // consistency check (`Consumer::attempt`): a consumer that sees this
        // tail also sees the header stored above. The consumer never waits on
        // `tail`; `fill` and `inspect` read it too.
        self.sh.ctl().tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
        self.sh.notify(&self.sh.ctl().data_ready);
    }

    /// After a batch of several records, start the next batch so that its
    /// first header word is the last word of a cache line and its payload
    /// starts on the next line. The consumer, caught up, polls that word;
    /// this way the producer does not write the line it polls until it
    /// publishes, which would bounce the line between them on every store.
    /// A single record (a request, a reply) is not aligned: there the
    /// record sharing the polled line is what makes delivery one transfer.
    fn align_next_batch(&mut self) {
        let line = 64u64;
        let skip = (line - (self.tail + RECORD_HEADER) % line) % line;
        let off = self.tail & (self.sh.capacity - 1);
        // The skip stays inside the region: `tail + skip + 8` is a multiple
        // of 64, and so is the capacity. `has_room` needs room for the skip
        // plus the end marker after it.
        if skip == 0 || off + skip + RECORD_HEADER > self.sh.capacity {
            return;
        }
        if self.sh.capacity - self.tail.wrapping_sub(self.cached_head) >= skip + RECORD_HEADER {
            self.put_header(self.tail, pad_word(skip));
            self.tail = self.tail.wrapping_add(skip);
        }
    }

    /// Bytes written (staged or published) and not yet released by the
    /// consumer, as last seen, in bytes.
    pub fn fill(&self) -> u64 {
        self.tail.wrapping_sub(self.cached_head)
    }
}
