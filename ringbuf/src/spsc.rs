//! Single-producer single-consumer ring of variable-length records in shared
//! memory.
//!
//! Positions are monotonic `u64` byte counters: `tail` (bytes the producer
//! has published) and `head` (bytes the consumer has released); a byte at
//! position `p` lives at offset `p & (capacity - 1)` of the data region. Each
//! side keeps a private cached copy of the other's position and re-reads the
//! shared one only when the cached one says "full" or "empty".
//!
//! A record is an 8-byte header word `[flags:32 | len:32]` followed by `len`
//! payload bytes, padded to a multiple of 8. A record that would straddle the
//! end of the region is preceded by a padding record (flag [`FLAG_PAD`]) that
//! fills the region to its end, and starts again at offset 0.
//!
//! The producer can write many records and publish them with one store
//! ([`Grant::stage`] then [`Producer::flush`]); the consumer can read many and
//! release them with one store ([`Consumer::recv_batch`]).
//!
//! Everything read from shared memory is checked: a position out of range, a
//! length that does not fit, an unknown flag returns [`Error::Corrupted`] and
//! poisons the handle. No input makes this module panic or access memory
//! outside the mapping.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::header::{
    self, FLAG_POISONED, Header, ROLE_ATTACHED, ROLE_ATTACHING, ROLE_CLOSED, ROLE_FREE, RoleSlot, SpscControl,
};
use crate::liveness::ProcessId;
use crate::region::Region;
use crate::segment::{CreateOptions, Location, Segment};
use crate::sync::Ordering;
use crate::wait::{Attempt, WaitPolicy, block_on};

/// Record header flag: padding to the end of the region; skip it.
pub const FLAG_PAD: u32 = 1;
/// Bytes of record header before each payload.
pub const RECORD_HEADER: u64 = 8;

/// Bytes a record of `len` payload bytes occupies in the ring.
///
/// ```
/// assert_eq!(shmring::spsc::record_size(0), 8);
/// assert_eq!(shmring::spsc::record_size(1), 16);
/// assert_eq!(shmring::spsc::record_size(64), 72);
/// ```
pub const fn record_size(len: usize) -> u64 {
    RECORD_HEADER + ((len as u64 + 7) & !7)
}

/// How to create a ring.
///
/// ```
/// let opts = shmring::RingOptions::new().capacity(1 << 16).mode(0o640);
/// assert_eq!(opts.capacity_bytes(), 65536);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RingOptions {
    capacity: u64,
    mode: u32,
    ready_timeout: Duration,
    policy: WaitPolicy,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            capacity: 1 << 20,
            mode: 0o600,
            ready_timeout: Duration::from_secs(2),
            policy: WaitPolicy::default(),
        }
    }
}

impl RingOptions {
    /// Defaults: 1 MiB capacity, mode 0600, 2 s ready timeout, default wait policy.
    pub fn new() -> RingOptions {
        RingOptions::default()
    }
    /// Data region size in bytes: a power of two from 4 KiB to 2 GiB.
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }
    /// Permission bits for a newly created segment (default 0o600).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    /// How long an opener waits for a creator to finish initialising.
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }
    /// Initial wait policy of the handle (changeable later).
    pub fn wait_policy(mut self, p: WaitPolicy) -> Self {
        self.policy = p;
        self
    }
    /// The configured capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity
    }
}

/// What both handles share: pointers into the mapping, kept alive by `_keep`.
struct Shared {
    ctl: NonNull<SpscControl>,
    header: Option<NonNull<Header>>,
    region: Region,
    capacity: u64,
    name: String,
    _keep: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the pointers target a mapping (or a heap block under loom) owned by
// `_keep`, which lives as long as this struct; all shared words are atomics.
unsafe impl Send for Shared {}

impl Shared {
    #[inline]
    fn ctl(&self) -> &SpscControl {
        // SAFETY: `ctl` points into memory kept alive by `_keep`; the control
        // block is made of atomics, so shared references are fine.
        unsafe { self.ctl.as_ref() }
    }

    fn poison(&self, what: String) -> Error {
        if let Some(h) = self.header {
            // SAFETY: as for `ctl`.
            let h = unsafe { h.as_ref() };
            h.flags.fetch_or(FLAG_POISONED, Ordering::Relaxed);
        }
        Error::corrupted(&self.name, what)
    }

    /// Error if the process holding `slot` died without closing.
    fn check_alive(&self, slot: &RoleSlot, role: &'static str) -> Result<()> {
        // Acquire: pairs with the Release store of ROLE_ATTACHED in `claim`,
        // so pid and start time below are the holder's.
        if slot.state.load(Ordering::Acquire) == ROLE_ATTACHED {
            let id = ProcessId {
                pid: slot.pid.load(Ordering::Relaxed),
                start_time: slot.start_time.load(Ordering::Relaxed),
            };
            if !id.is_alive() {
                return Err(Error::PeerDied { segment: self.name.clone(), role, pid: id.pid });
            }
        }
        Ok(())
    }

    /// Take `slot` for this process.
    fn claim(&self, slot: &RoleSlot, role: &'static str) -> Result<()> {
        let me = ProcessId::current();
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            // Acquire on failure: pairs with the Release stores of the state
            // word in `claim` and `close`, so a holder's pid is visible.
            match slot.state.compare_exchange(ROLE_FREE, ROLE_ATTACHING, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => {
                    slot.pid.store(me.pid, Ordering::Relaxed);
                    slot.start_time.store(me.start_time, Ordering::Relaxed);
                    // Release: pairs with the Acquire loads in `check_alive`
                    // and `claim`; publishes pid and start time.
                    slot.state.store(ROLE_ATTACHED, Ordering::Release);
                    return Ok(());
                }
                Err(ROLE_ATTACHING) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(ROLE_ATTACHING) => {
                    return Err(Error::NotReady(format!("{} ({role} role stuck mid-attach)", self.name)));
                }
                Err(ROLE_ATTACHED) => {
                    let id = ProcessId {
                        pid: slot.pid.load(Ordering::Relaxed),
                        start_time: slot.start_time.load(Ordering::Relaxed),
                    };
                    return Err(if id.is_alive() {
                        Error::RoleTaken { segment: self.name.clone(), role, pid: id.pid }
                    } else {
                        Error::Stale { segment: self.name.clone(), role, pid: id.pid }
                    });
                }
                Err(ROLE_CLOSED) => {
                    return Err(Error::Closed(format!("{} (its {role} already finished)", self.name)));
                }
                Err(other) => return Err(self.poison(format!("{role} role state word is {other}"))),
            }
        }
    }

    fn close(&self, slot: &RoleSlot) {
        // Release: pairs with the peer's Acquire load of the role state; all
        // our position stores happen before it sees CLOSED.
        slot.state.store(ROLE_CLOSED, Ordering::Release);
    }
}

/// Build the shared view of an initialised, validated SPSC segment.
fn shared_from_segment(seg: Segment, ready_timeout: Duration) -> Result<Shared> {
    let len = seg.len() as u64;
    if len < header::HEADER_LEN as u64 {
        return Err(Error::corrupted(seg.name(), format!("segment is {len} bytes, shorter than its header")));
    }
    let base = seg.as_ptr();
    // SAFETY: the mapping is at least HEADER_LEN bytes and page-aligned; the
    // header is made of atomics valid for any bit pattern.
    let h: &Header = unsafe { &*(base as *const Header) };
    let deadline = Instant::now() + ready_timeout;
    // Acquire: pairs with the creator's Release store of STATE_READY, so every
    // header field it wrote is visible below.
    while h.state.load(Ordering::Acquire) != header::STATE_READY {
        if h.magic.load(Ordering::Relaxed) != 0 && h.magic.load(Ordering::Relaxed) != header::MAGIC {
            return Err(Error::BadMagic(seg.name().to_owned()));
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady(seg.name().to_owned()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (kind, capacity) = header::validate(h, len, seg.name())?;
    if kind != header::RingKind::Spsc {
        return Err(Error::KindMismatch {
            segment: seg.name().to_owned(),
            found: kind.name().into(),
            expected: "spsc",
        });
    }
    let name = seg.name().to_owned();
    // SAFETY: CONTROL_OFFSET + size_of::<SpscControl>() <= HEADER_LEN <= len
    // (const-asserted in header.rs) and the offset is 128-aligned.
    let ctl = unsafe { NonNull::new_unchecked(base.add(header::CONTROL_OFFSET) as *mut SpscControl) };
    // SAFETY: validate() checked len == HEADER_LEN + capacity, so the data
    // region is in bounds; the mapping lives as long as `_keep`.
    #[cfg(not(loom))]
    let region = unsafe { Region::new(base.add(header::HEADER_LEN), capacity as usize) };
    #[cfg(loom)]
    let region = {
        let shadow = Region::shadow(capacity as usize);
        // SAFETY: as above; `shadow` has one cell per 8 bytes of the region.
        unsafe { Region::new(base.add(header::HEADER_LEN), capacity as usize, shadow) }
    };
    Ok(Shared { ctl, header: NonNull::new(base as *mut Header), region, capacity, name, _keep: Arc::new(seg) })
}

/// Create and initialise an SPSC segment at `loc`. Neither role is claimed;
/// attach with [`Producer::attach`] / [`Consumer::attach`], here or in
/// another process.
///
/// # Errors
/// As [`Segment::create`], plus [`Error::InvalidArgument`] for a bad capacity.
pub fn create_segment(loc: &Location, opts: &RingOptions) -> Result<Segment> {
    header::check_capacity(opts.capacity)?;
    let seg = Segment::create(loc, header::spsc_segment_len(opts.capacity), CreateOptions { mode: opts.mode })?;
    init(&seg, opts.capacity);
    Ok(seg)
}

/// Create an anonymous SPSC segment in a sealed memfd; share it with
/// [`Segment::fd`] and map it elsewhere with [`Segment::from_fd`].
///
/// # Errors
/// As [`Segment::create_memfd`], plus [`Error::InvalidArgument`] for a bad capacity.
pub fn create_memfd(label: &str, opts: &RingOptions) -> Result<Segment> {
    header::check_capacity(opts.capacity)?;
    let seg = Segment::create_memfd(label, header::spsc_segment_len(opts.capacity))?;
    init(&seg, opts.capacity);
    Ok(seg)
}

fn init(seg: &Segment, capacity: u64) {
    // SAFETY: freshly created, zero-filled mapping of HEADER_LEN + capacity bytes.
    let h: &Header = unsafe { &*(seg.as_ptr() as *const Header) };
    let me = ProcessId::current();
    h.magic.store(header::MAGIC, Ordering::Relaxed);
    h.abi_version.store(header::ABI_VERSION, Ordering::Relaxed);
    h.kind.store(header::RingKind::Spsc as u32, Ordering::Relaxed);
    h.header_len.store(header::HEADER_LEN as u32, Ordering::Relaxed);
    h.notifier.store(header::NotifierKind::Futex as u32, Ordering::Relaxed);
    h.capacity.store(capacity, Ordering::Relaxed);
    h.total_len.store(header::spsc_segment_len(capacity), Ordering::Relaxed);
    h.creator_pid.store(me.pid, Ordering::Relaxed);
    h.creator_start_time.store(me.start_time, Ordering::Relaxed);
    // Release: pairs with the opener's Acquire load in `shared_from_segment`;
    // publishes every field above.
    h.state.store(header::STATE_READY, Ordering::Release);
}

/// Open `loc`, retrying while its creator is still sizing it.
fn open_segment(loc: &Location, ready_timeout: Duration) -> Result<Segment> {
    let deadline = Instant::now() + ready_timeout;
    loop {
        match Segment::open(loc) {
            Err(Error::NotReady(_)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            other => return other,
        }
    }
}

/// Create the segment, or open it if it already exists.
fn open_or_create_segment(loc: &Location, opts: &RingOptions) -> Result<Segment> {
    match create_segment(loc, opts) {
        Err(Error::AlreadyExists(_)) => open_segment(loc, opts.ready_timeout),
        other => other,
    }
}

/// The producing end of an SPSC ring.
///
/// ```
/// # fn main() -> shmring::Result<()> {
/// use shmring::{Location, RingOptions, spsc::{Producer, Consumer}};
/// let loc = Location::shm(format!("doc-producer-{}", std::process::id()));
/// let mut tx = Producer::create(&loc, &RingOptions::new().capacity(4096))?;
/// let mut rx = Consumer::open(&loc)?;
/// loc.unlink()?; // the name can go as soon as both ends are attached
///
/// tx.send(b"hello")?;
/// let mut g = tx.grant(5)?;           // zero-copy: write in place
/// g.copy_from_slice(b"world");
/// g.commit();
/// drop(tx);                           // closes the stream
///
/// assert_eq!(&*rx.recv()?.unwrap(), b"hello");
/// assert_eq!(&*rx.recv()?.unwrap(), b"world");
/// assert!(rx.recv()?.is_none());      // end of stream
/// # Ok(()) }
/// ```
pub struct Producer {
    sh: Shared,
    /// Private write position (includes staged records).
    tail: u64,
    /// Last value stored to the shared tail.
    published: u64,
    /// Last consumer position read.
    cached_head: u64,
    policy: WaitPolicy,
    poisoned: bool,
}

/// The consuming end of an SPSC ring. See [`Producer`] for an example.
pub struct Consumer {
    sh: Shared,
    /// Private read position.
    head: u64,
    /// Last value stored to the shared head.
    published: u64,
    /// Last producer position read.
    cached_tail: u64,
    policy: WaitPolicy,
    poisoned: bool,
}

/// A region of the ring granted to the producer; write the payload through
/// `DerefMut<Target = [u8]>`, then [`Grant::commit`] or [`Grant::stage`].
/// Dropping it without either abandons the record: nothing is sent.
pub struct Grant<'a> {
    p: &'a mut Producer,
    off: usize,
    len: usize,
}

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

impl Producer {
    /// Create a new ring at `loc` and attach as its producer.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`], [`Error::Io`].
    pub fn create(loc: &Location, opts: &RingOptions) -> Result<Producer> {
        let seg = create_segment(loc, opts)?;
        let p = Self::attach_with(seg, opts);
        if p.is_err() {
            let _ = loc.unlink();
        }
        p
    }

    /// Open an existing ring at `loc` and attach as its producer.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotReady`], [`Error::BadMagic`],
    /// [`Error::VersionMismatch`], [`Error::KindMismatch`],
    /// [`Error::Corrupted`], [`Error::RoleTaken`], [`Error::Stale`],
    /// [`Error::Closed`], [`Error::Io`].
    pub fn open(loc: &Location) -> Result<Producer> {
        let opts = RingOptions::default();
        Self::attach_with(open_segment(loc, opts.ready_timeout)?, &opts)
    }

    /// Open the ring at `loc`, creating it with `opts` if it does not exist,
    /// and attach as its producer. Whichever side comes first creates.
    ///
    /// # Errors
    /// As [`Producer::create`] and [`Producer::open`].
    pub fn open_or_create(loc: &Location, opts: &RingOptions) -> Result<Producer> {
        Self::attach_with(open_or_create_segment(loc, opts)?, opts)
    }

    /// Attach as producer to an already mapped segment (e.g. a memfd
    /// received from another process).
    ///
    /// # Errors
    /// As [`Producer::open`].
    pub fn attach(seg: Segment) -> Result<Producer> {
        Self::attach_with(seg, &RingOptions::default())
    }

    fn attach_with(seg: Segment, opts: &RingOptions) -> Result<Producer> {
        let sh = shared_from_segment(seg, opts.ready_timeout)?;
        sh.claim(&sh.ctl().producer, "producer")?;
        let mut p = Producer { sh, tail: 0, published: 0, cached_head: 0, policy: opts.policy, poisoned: false };
        // Relaxed: only the producer role writes `tail`, and we hold it.
        let tail = p.sh.ctl().tail.load(Ordering::Relaxed);
        // Acquire: pairs with the consumer's Release store of `head`.
        let head = p.sh.ctl().head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > p.sh.capacity || tail % 8 != 0 || head % 8 != 0 {
            let e = p.sh.poison(format!("positions impossible at attach: head {head}, tail {tail}"));
            p.poisoned = true;
            return Err(e);
        }
        (p.tail, p.published, p.cached_head) = (tail, tail, head);
        Ok(p)
    }

    /// Set how blocking calls wait.
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Data region size in bytes.
    pub fn capacity(&self) -> u64 {
        self.sh.capacity
    }

    /// Largest payload one record can carry, in bytes: `capacity - 8`.
    pub fn max_record_len(&self) -> usize {
        (self.sh.capacity - RECORD_HEADER) as usize
    }

    /// The segment's name, as used in error messages.
    pub fn name(&self) -> &str {
        &self.sh.name
    }

    fn poison(&mut self, what: String) -> Error {
        self.poisoned = true;
        self.sh.poison(what)
    }

    /// Re-read the consumer's position; checks it is between the last one
    /// seen and what we published.
    #[inline]
    fn refresh_head(&mut self) -> Result<()> {
        // Acquire: pairs with the consumer's Release store of `head`: it has
        // finished reading the bytes it released before we overwrite them.
        let h = self.sh.ctl().head.load(Ordering::Acquire);
        if h.wrapping_sub(self.cached_head) > self.published.wrapping_sub(self.cached_head) || h % 8 != 0 {
            return Err(self.poison(format!(
                "consumer position {h} outside [{}, {}] (last seen, published)",
                self.cached_head, self.published
            )));
        }
        self.cached_head = h;
        Ok(())
    }

    #[inline]
    fn has_room(&mut self, n: u64) -> Result<bool> {
        if self.sh.capacity - self.tail.wrapping_sub(self.cached_head) >= n {
            return Ok(true);
        }
        self.refresh_head()?;
        Ok(self.sh.capacity - self.tail.wrapping_sub(self.cached_head) >= n)
    }

    /// Find room for a record of `total` bytes; Some(offset) or None if full.
    #[inline]
    fn try_reserve(&mut self, total: u64) -> Result<Option<usize>> {
        if self.poisoned {
            return Err(Error::corrupted(&self.sh.name, "ring poisoned by an earlier error"));
        }
        loop {
            let off = self.tail & (self.sh.capacity - 1);
            let to_end = self.sh.capacity - off;
            if total > to_end {
                if !self.has_room(to_end)? {
                    return Ok(None);
                }
                self.sh.region.store_word(off as usize, (u64::from(FLAG_PAD) << 32) | to_end);
                self.tail = self.tail.wrapping_add(to_end);
                continue;
            }
            return Ok(if self.has_room(total)? { Some(off as usize) } else { None });
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

    fn grant_inner(&mut self, len: usize, deadline: Option<Option<Instant>>) -> Result<Grant<'_>> {
        let total = self.size_for(len)?;
        if let Some(off) = self.try_reserve(total)? {
            return Ok(Grant { p: self, off, len });
        }
        // Full. Publish what is staged (the consumer may be waiting for it),
        // then wait for space.
        self.flush();
        let Some(deadline) = deadline else {
            return Err(Error::WouldBlock { full: true });
        };
        let ctl = self.sh.ctl;
        // SAFETY: `ctl` points into the mapping kept alive by `self.sh`, which
        // outlives this call.
        let ec = unsafe { &ctl.as_ref().space_free };
        let policy = self.policy;
        let off = block_on(
            &policy,
            ec,
            deadline,
            || Error::Timeout,
            |check| {
                if let Some(off) = self.try_reserve(total)? {
                    return Ok(Attempt::Ready(off));
                }
                // Padding written inside try_reserve must reach the consumer.
                self.flush();
                self.check_consumer(check)?;
                Ok(Attempt::NotYet)
            },
        )?;
        Ok(Grant { p: self, off, len })
    }

    fn check_consumer(&self, liveness: bool) -> Result<()> {
        let slot = &self.sh.ctl().consumer;
        // Acquire: pairs with the consumer's Release store of ROLE_CLOSED.
        if slot.state.load(Ordering::Acquire) == ROLE_CLOSED {
            return Err(Error::Closed(self.sh.name.clone()));
        }
        if liveness {
            self.sh.check_alive(slot, "consumer")?;
        }
        Ok(())
    }

    /// Grant `len` bytes to write in place, waiting for space per the wait
    /// policy.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `len > max_record_len()`;
    /// [`Error::Closed`] if the consumer closed; [`Error::PeerDied`] if it
    /// died; [`Error::Corrupted`] if the shared positions are impossible.
    pub fn grant(&mut self, len: usize) -> Result<Grant<'_>> {
        self.grant_inner(len, Some(None))
    }

    /// Grant without waiting: [`Error::WouldBlock`] if full.
    ///
    /// # Errors
    /// As [`Producer::grant`], plus [`Error::WouldBlock`].
    pub fn try_grant(&mut self, len: usize) -> Result<Grant<'_>> {
        self.grant_inner(len, None)
    }

    /// Grant, waiting at most `timeout`: [`Error::Timeout`] after that.
    ///
    /// # Errors
    /// As [`Producer::grant`], plus [`Error::Timeout`].
    pub fn grant_timeout(&mut self, len: usize, timeout: Duration) -> Result<Grant<'_>> {
        self.grant_inner(len, Some(Some(Instant::now() + timeout)))
    }

    /// Copy `data` into the ring as one record and publish it, waiting for
    /// space per the wait policy.
    ///
    /// # Errors
    /// As [`Producer::grant`].
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        let mut g = self.grant(data.len())?;
        g.copy_from_slice(data);
        g.commit();
        Ok(())
    }

    /// [`Producer::send`] without waiting.
    ///
    /// # Errors
    /// As [`Producer::try_grant`].
    pub fn try_send(&mut self, data: &[u8]) -> Result<()> {
        let mut g = self.try_grant(data.len())?;
        g.copy_from_slice(data);
        g.commit();
        Ok(())
    }

    /// [`Producer::send`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Producer::grant_timeout`].
    pub fn send_timeout(&mut self, data: &[u8], timeout: Duration) -> Result<()> {
        let mut g = self.grant_timeout(data.len(), timeout)?;
        g.copy_from_slice(data);
        g.commit();
        Ok(())
    }

    /// Publish every staged record with one store, and wake the consumer if
    /// it is parked. Cheap when nothing is staged.
    #[inline]
    pub fn flush(&mut self) {
        if self.tail != self.published {
            // Release: pairs with the consumer's Acquire load of `tail`; the
            // record bytes written before are visible to it.
            self.sh.ctl().tail.store(self.tail, Ordering::Release);
            self.published = self.tail;
            self.sh.ctl().data_ready.notify();
        }
    }

    /// Bytes written (staged or published) and not yet released by the
    /// consumer, as last seen.
    pub fn fill(&self) -> u64 {
        self.tail.wrapping_sub(self.cached_head)
    }

    /// Publish what is staged and close the stream: the consumer drains what
    /// was sent, then sees end of stream. Same as dropping the producer.
    pub fn close(self) {}
}

impl Drop for Producer {
    fn drop(&mut self) {
        if !self.poisoned {
            self.flush();
        }
        let ctl = self.sh.ctl();
        self.sh.close(&ctl.producer);
        ctl.data_ready.notify();
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
        p.sh.region.store_word(self.off, self.len as u64);
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
        // SAFETY: try_reserve checked off + 8 + len <= capacity; the bytes
        // are granted to the producer and not yet published, so nobody else
        // may touch them.
        unsafe { self.p.sh.region.bytes(self.off + RECORD_HEADER as usize, self.len) }
    }
}

impl std::ops::DerefMut for Grant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref; `&mut self` makes this the only live slice.
        unsafe { self.p.sh.region.bytes_mut(self.off + RECORD_HEADER as usize, self.len) }
    }
}

/// What the consumer found at its position.
enum Next {
    Record { off: usize, len: usize, total: u64 },
    Empty,
}

impl Consumer {
    /// Create a new ring at `loc` and attach as its consumer.
    ///
    /// # Errors
    /// As [`Producer::create`].
    pub fn create(loc: &Location, opts: &RingOptions) -> Result<Consumer> {
        let seg = create_segment(loc, opts)?;
        let c = Self::attach_with(seg, opts);
        if c.is_err() {
            let _ = loc.unlink();
        }
        c
    }

    /// Open an existing ring at `loc` and attach as its consumer.
    ///
    /// # Errors
    /// As [`Producer::open`].
    pub fn open(loc: &Location) -> Result<Consumer> {
        let opts = RingOptions::default();
        Self::attach_with(open_segment(loc, opts.ready_timeout)?, &opts)
    }

    /// Open the ring at `loc`, creating it with `opts` if it does not exist,
    /// and attach as its consumer.
    ///
    /// # Errors
    /// As [`Producer::open_or_create`].
    pub fn open_or_create(loc: &Location, opts: &RingOptions) -> Result<Consumer> {
        Self::attach_with(open_or_create_segment(loc, opts)?, opts)
    }

    /// Attach as consumer to an already mapped segment.
    ///
    /// # Errors
    /// As [`Producer::open`].
    pub fn attach(seg: Segment) -> Result<Consumer> {
        Self::attach_with(seg, &RingOptions::default())
    }

    fn attach_with(seg: Segment, opts: &RingOptions) -> Result<Consumer> {
        let sh = shared_from_segment(seg, opts.ready_timeout)?;
        sh.claim(&sh.ctl().consumer, "consumer")?;
        // Relaxed: only the consumer role writes `head`, and we hold it.
        let head = sh.ctl().head.load(Ordering::Relaxed);
        let mut c = Consumer { sh, head, published: head, cached_tail: head, policy: opts.policy, poisoned: false };
        if head % 8 != 0 {
            return Err(c.poison(format!("consumer position {head} not 8-byte aligned")));
        }
        Ok(c)
    }

    /// Set how blocking calls wait.
    pub fn set_wait_policy(&mut self, policy: WaitPolicy) {
        self.policy = policy;
    }

    /// Data region size in bytes.
    pub fn capacity(&self) -> u64 {
        self.sh.capacity
    }

    /// The segment's name, as used in error messages.
    pub fn name(&self) -> &str {
        &self.sh.name
    }

    fn poison(&mut self, what: String) -> Error {
        self.poisoned = true;
        self.sh.poison(what)
    }

    /// Re-read the producer's position and check it.
    #[inline]
    fn refresh_tail(&mut self) -> Result<()> {
        // Acquire: pairs with the producer's Release store in `flush`: the
        // records up to `t` are fully written.
        let t = self.sh.ctl().tail.load(Ordering::Acquire);
        let cap = self.sh.capacity;
        if t.wrapping_sub(self.published) > cap || t.wrapping_sub(self.head) > cap || t % 8 != 0 {
            return Err(
                self.poison(format!("producer position {t} impossible: consumer at {}, capacity {cap}", self.head))
            );
        }
        if t.wrapping_sub(self.cached_tail) > cap {
            return Err(self.poison(format!("producer position went backwards: {} -> {t}", self.cached_tail)));
        }
        self.cached_tail = t;
        Ok(())
    }

    /// Look at the record at our position, skipping padding.
    #[inline]
    fn try_next(&mut self) -> Result<Next> {
        if self.poisoned {
            return Err(Error::corrupted(&self.sh.name, "ring poisoned by an earlier error"));
        }
        loop {
            if self.head == self.cached_tail {
                self.refresh_tail()?;
                if self.head == self.cached_tail {
                    return Ok(Next::Empty);
                }
            }
            let cap = self.sh.capacity;
            let off = self.head & (cap - 1);
            let avail = self.cached_tail.wrapping_sub(self.head);
            let word = self.sh.region.load_word(off as usize);
            let (flags, len) = ((word >> 32) as u32, word as u32 as u64);
            let to_end = cap - off;
            if flags == FLAG_PAD {
                if len != to_end || to_end > avail {
                    return Err(self.poison(format!(
                        "padding record of {len} bytes at offset {off} (must be {to_end}, {avail} available)"
                    )));
                }
                self.head = self.head.wrapping_add(to_end);
                // Publish at once: the producer may be waiting for exactly
                // this space to place a record at offset 0.
                self.release();
                continue;
            }
            if flags != 0 {
                return Err(self.poison(format!("record at offset {off} has unknown flags {flags:#x}")));
            }
            let total = RECORD_HEADER + ((len + 7) & !7);
            if total > avail || total > to_end {
                return Err(self.poison(format!(
                    "record length {len} at offset {off} overruns ({avail} bytes published, {to_end} to the end)"
                )));
            }
            return Ok(Next::Record { off: off as usize, len: len as usize, total });
        }
    }

    /// Store our position for the producer and wake it if it waits.
    #[inline]
    fn release(&mut self) {
        if self.head != self.published {
            // Release: pairs with the producer's Acquire load in
            // `refresh_head`; our reads of the released bytes happen before
            // it overwrites them.
            self.sh.ctl().head.store(self.head, Ordering::Release);
            self.published = self.head;
            self.sh.ctl().space_free.notify();
        }
    }

    /// Whether the producer closed (checked after finding the ring empty).
    fn producer_closed(&mut self) -> Result<bool> {
        // Acquire: pairs with the producer's Release store of ROLE_CLOSED,
        // made after its last tail store.
        if self.sh.ctl().producer.state.load(Ordering::Acquire) == ROLE_CLOSED {
            self.refresh_tail()?;
            return Ok(self.head == self.cached_tail);
        }
        Ok(false)
    }

    /// One attempt of a receive: a record, end of stream, or not yet.
    fn attempt(&mut self, check: bool) -> Result<Attempt<Option<(usize, usize, u64)>>> {
        match self.try_next()? {
            Next::Record { off, len, total } => Ok(Attempt::Ready(Some((off, len, total)))),
            Next::Empty => {
                if self.producer_closed()? {
                    return Ok(Attempt::Ready(None));
                }
                if check {
                    self.sh.check_alive(&self.sh.ctl().producer, "producer")?;
                }
                Ok(Attempt::NotYet)
            }
        }
    }

    fn wait_next(&mut self, deadline: Option<Option<Instant>>) -> Result<Option<(usize, usize, u64)>> {
        if let Attempt::Ready(r) = self.attempt(false)? {
            return Ok(r);
        }
        let Some(deadline) = deadline else {
            return Err(Error::WouldBlock { full: false });
        };
        let ctl = self.sh.ctl;
        // SAFETY: `ctl` points into the mapping kept alive by `self.sh`.
        let ec = unsafe { &ctl.as_ref().data_ready };
        let policy = self.policy;
        block_on(&policy, ec, deadline, || Error::Timeout, |check| self.attempt(check))
    }

    fn record(&mut self, r: Option<(usize, usize, u64)>) -> Option<Record<'_>> {
        r.map(|(off, len, total)| Record { c: self, off, len, total })
    }

    /// Receive the next record in place, waiting per the wait policy.
    /// `Ok(None)` means end of stream: the producer closed and every record
    /// it sent has been received.
    ///
    /// # Errors
    /// [`Error::PeerDied`] if the producer died without closing;
    /// [`Error::Corrupted`] if the shared positions or record headers are
    /// impossible.
    pub fn recv(&mut self) -> Result<Option<Record<'_>>> {
        let r = self.wait_next(Some(None))?;
        Ok(self.record(r))
    }

    /// [`Consumer::recv`] without waiting: [`Error::WouldBlock`] if empty.
    ///
    /// # Errors
    /// As [`Consumer::recv`], plus [`Error::WouldBlock`].
    pub fn try_recv(&mut self) -> Result<Option<Record<'_>>> {
        let r = self.wait_next(None)?;
        Ok(self.record(r))
    }

    /// [`Consumer::recv`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Consumer::recv`], plus [`Error::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Record<'_>>> {
        let r = self.wait_next(Some(Some(Instant::now() + timeout)))?;
        Ok(self.record(r))
    }

    /// Wait for at least one record, then pass up to `max` available records
    /// to `f` in order and release them all with one store. Returns how many
    /// were passed; 0 means end of stream.
    ///
    /// # Errors
    /// As [`Consumer::recv`]. Records already passed to `f` stay consumed.
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize> {
        let Some(mut next) = self.wait_next(Some(None))? else {
            return Ok(0);
        };
        let mut n = 0;
        let result = loop {
            let (off, len, total) = next;
            // SAFETY: try_next checked off + 8 + len <= capacity and that the
            // record lies within what the producer published.
            f(unsafe { self.sh.region.bytes(off + RECORD_HEADER as usize, len) });
            self.head = self.head.wrapping_add(total);
            n += 1;
            if n >= max {
                break Ok(n);
            }
            match self.try_next() {
                Ok(Next::Record { off, len, total }) => next = (off, len, total),
                Ok(Next::Empty) => break Ok(n),
                Err(e) => break Err(e),
            }
        };
        self.release();
        result
    }

    /// Bytes published by the producer and not yet released, as last seen.
    pub fn fill(&self) -> u64 {
        self.cached_tail.wrapping_sub(self.head)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if !self.poisoned {
            self.release();
        }
        let ctl = self.sh.ctl();
        self.sh.close(&ctl.consumer);
        ctl.space_free.notify();
    }
}

impl Record<'_> {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::ops::Deref for Record<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: try_next checked the record lies within the published,
        // unreleased part of the region; it stays ours until `drop`.
        unsafe { self.c.sh.region.bytes(self.off + RECORD_HEADER as usize, self.len) }
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        self.c.head = self.c.head.wrapping_add(self.total);
        self.c.release();
    }
}

/// A producer/consumer pair on a heap-allocated ring, for loom models.
/// Roles are marked attached (by the calling process) without pid checks
/// mattering: liveness is never consulted without timeouts under loom.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_pair(capacity: u64) -> (Producer, Consumer) {
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
    let heap = Arc::new(Heap { ctl: Box::new(SpscControl::new()), _data: data });
    let ctl = NonNull::from(&*heap.ctl);
    let mk = |keep: Arc<Heap>| Shared {
        ctl,
        header: None,
        // SAFETY: the Vec's buffer lives as long as `keep`.
        region: unsafe { Region::new(base, capacity as usize, shadow.clone()) },
        capacity,
        name: "loom".into(),
        _keep: keep,
    };
    let (ps, cs) = (mk(heap.clone()), mk(heap));
    ps.ctl().producer.state.store(ROLE_ATTACHED, Ordering::Relaxed);
    ps.ctl().consumer.state.store(ROLE_ATTACHED, Ordering::Relaxed);
    let policy = WaitPolicy::park();
    (
        Producer { sh: ps, tail: 0, published: 0, cached_head: 0, policy, poisoned: false },
        Consumer { sh: cs, head: 0, published: 0, cached_tail: 0, policy, poisoned: false },
    )
}
