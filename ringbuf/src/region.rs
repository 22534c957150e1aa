//! The data region of a ring: raw bytes in the mapping, accessed by offset.
//!
//! Record headers are read and written as 8-byte atomic words (the region is
//! shared with an untrusted process, and the consumer polls the header word
//! while the producer writes it). Payload bytes are handed out as slices.
//!
//! Under loom the payload bytes live on the heap and every 8-byte word has a
//! shadow `loom::cell::UnsafeCell`, touched on each payload access, so loom
//! reports a data race if an ordering that protects the payload is weakened.
//! Header words are loom atomics kept beside the bytes: the ring protocol
//! only ever reads a header word that was written as a header word.

/// A view of `capacity` bytes at `base`. Offsets passed in are always
/// `< capacity` and 8-aligned with `off + len <= capacity`; the ring
/// guarantees that by masking and bound checks before calling.
pub(crate) struct Region {
    base: *mut u8,
    capacity: usize,
    #[cfg(loom)]
    shadow: std::sync::Arc<LoomCells>,
}

/// The loom stand-ins for a region: one shadow cell and one atomic header
/// word per 8 bytes.
#[cfg(loom)]
pub(crate) struct LoomCells {
    cells: Vec<loom::cell::UnsafeCell<()>>,
    words: Vec<crate::sync::AtomicU64>,
}

// SAFETY: a Region is a pointer into a mapping kept alive by the owning ring handle; which side may
// touch which bytes is governed by the ring protocol.
unsafe impl Send for Region {}

impl Region {
    /// # Safety
    /// `base..base + capacity` must stay valid for reads and writes for the
    /// life of the Region, `base` 8-aligned, `capacity` a multiple of 8.
    #[cfg(not(loom))]
    pub(crate) unsafe fn new(base: *mut u8, capacity: usize) -> Region {
        Region { base, capacity }
    }

    /// # Safety
    /// As for the non-loom constructor; `shadow` has one cell per 8 bytes.
    #[cfg(loom)]
    pub(crate) unsafe fn new(base: *mut u8, capacity: usize, shadow: std::sync::Arc<LoomCells>) -> Region {
        Region { base, capacity, shadow }
    }

    /// Shadow cells and header words for a region of `capacity` bytes, one
    /// per 8 bytes; the Regions of both handles of a ring share them.
    #[cfg(loom)]
    // loom runs one thread at a time; the cells are only touched through
    // `track`, and Region is Send by the impl above.
    #[allow(clippy::arc_with_non_send_sync)]
    pub(crate) fn shadow(capacity: usize) -> std::sync::Arc<LoomCells> {
        std::sync::Arc::new(LoomCells {
            cells: (0..capacity / 8).map(|_| loom::cell::UnsafeCell::new(())).collect(),
            words: (0..capacity / 8).map(|_| crate::sync::AtomicU64::new(0)).collect(),
        })
    }

    #[inline]
    fn check(&self, off: usize, len: usize) {
        debug_assert!(off.is_multiple_of(8) && off.checked_add(len).is_some_and(|e| e <= self.capacity));
    }

    #[cfg(loom)]
    fn track(&self, off: usize, len: usize, write: bool) {
        // An empty slice touches no byte (and may start at `capacity`).
        if len == 0 {
            return;
        }
        let first = off / 8;
        let last = (off + len).div_ceil(8);
        for cell in &self.shadow.cells[first..last] {
            if write {
                cell.with_mut(|_| ());
            } else {
                cell.with(|_| ());
            }
        }
    }

    #[cfg(not(loom))]
    #[inline(always)]
    fn track(&self, _off: usize, _len: usize, _write: bool) {}

    /// The header word at `off` as an atomic.
    ///
    /// # Safety
    /// `off` must be a multiple of 8 with `off + 8 <= capacity`.
    #[inline(always)]
    unsafe fn word(&self, off: usize) -> &crate::sync::AtomicU64 {
        self.check(off, 8);
        #[cfg(not(loom))]
        {
            // SAFETY: in bounds and 8-aligned per this function's contract; the mapping outlives `self`, and an
            // AtomicU64 tolerates concurrent (hostile) readers and writers.
            unsafe { &*(self.base.add(off) as *const crate::sync::AtomicU64) }
        }
        #[cfg(loom)]
        {
            &self.shadow.words[off / 8]
        }
    }

    /// Read the 8-byte header word at `off` with `order`.
    ///
    /// # Safety
    /// `off` must be a multiple of 8 with `off + 8 <= capacity` (callers
    /// mask positions with `capacity - 1`, or bound a slot offset by the
    /// slot count): the bound is checked only in debug builds, since this
    /// is the load every received message starts with.
    #[inline]
    pub(crate) unsafe fn load_word(&self, off: usize, order: crate::sync::Ordering) -> u64 {
        // SAFETY: the caller upholds `word`'s contract, which is ours.
        unsafe { self.word(off) }.load(order)
    }

    /// Write the 8-byte header word at `off` with `order`.
    ///
    /// # Safety
    /// As [`Region::load_word`].
    #[inline]
    pub(crate) unsafe fn store_word(&self, off: usize, value: u64, order: crate::sync::Ordering) {
        // SAFETY: the caller upholds `word`'s contract, which is ours.
        unsafe { self.word(off) }.store(value, order)
    }

    /// Ask the CPU to fetch the cache line holding `off` (x86-64 `prefetcht0`;
    /// nothing elsewhere and under loom). Not a memory access: it reads no
    /// value and cannot race with a writer.
    #[inline(always)]
    pub(crate) fn prefetch(&self, off: usize) {
        self.check(off, 8);
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        // SAFETY: `off` is inside the region (checked by the caller's masking); a prefetch never faults or
        // changes memory.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(self.base.add(off) as *const i8);
        }
    }

    /// Hint the CPU to move the cache line holding `off` out of this core's
    /// private caches to the shared last-level cache (x86-64 `cldemote`),
    /// where the consumer's core finds it sooner. Encoded in the hint-NOP
    /// space: a no-op on CPUs without it. Not a memory access.
    #[inline(always)]
    pub(crate) fn demote(&self, off: usize) {
        self.check(off, 8);
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        // SAFETY: `off` is inside the region; `cldemote` never faults or changes memory, and executes as a NOP
        // where unsupported.
        unsafe {
            std::arch::asm!("cldemote byte ptr [{p}]", p = in(reg) self.base.add(off), options(nostack, preserves_flags));
        }
    }

    /// The bytes `off..off + len`, to read.
    ///
    /// # Safety
    /// The ring protocol must give the caller read access to these bytes
    /// (the producer published them and the consumer has not released them)
    /// for the returned lifetime. A hostile peer may still change them; the
    /// caller must not rely on their contents for memory safety.
    #[inline]
    pub(crate) unsafe fn bytes(&self, off: usize, len: usize) -> &[u8] {
        self.check(off, len);
        self.track(off, len, false);
        // SAFETY: in bounds (checked by the caller); access granted by the ring protocol per this function's contract.
        unsafe { std::slice::from_raw_parts(self.base.add(off), len) }
    }

    /// The bytes `off..off + len`, to write.
    ///
    /// # Safety
    /// The ring protocol must give the caller exclusive write access to these
    /// bytes (granted to the producer, not yet published) for the returned
    /// lifetime, and no other slice of them may be live.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, off: usize, len: usize) -> &mut [u8] {
        self.check(off, len);
        self.track(off, len, true);
        // SAFETY: in bounds (checked by the caller); exclusive per contract.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(off), len) }
    }
}
