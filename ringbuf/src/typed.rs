//! Typed channels: [`Sender<T>`] and [`Receiver<T>`] of plain-data values
//! over a ring.
//!
//! `T` is any type that is valid for every bit pattern and has no padding
//! or interior mutability: `zerocopy`'s [`FromBytes`] + [`IntoBytes`] +
//! [`Immutable`] + [`KnownLayout`] (derive them on a `#[repr(C)]` struct).
//! Each value travels as one record of `size_of::<T>()` bytes. A value is
//! received by copying it out of the ring, so a peer that scribbles on the
//! ring can give you wrong values but never an invalid one.
//!
//! The creator records `T`'s size, alignment, name and a fingerprint of the
//! three in the segment header ([`RecordType`]); a typed opener with another
//! `T` gets [`Error::TypeMismatch`], naming both, before it claims anything.
//! The fingerprint hashes the type's name as Rust reports it
//! (`std::any::type_name`), which includes the crate path: two programs agree
//! on it when they share the type's definition, as with a common crate.
//!
//! The default ring is SPSC ([`spsc::Producer`] / [`spsc::Consumer`]). There,
//! [`Sender::send_batch`] writes many values as one run of records with one
//! header, the fastest way to stream small values. Name the MPMC ends to
//! share one channel between many processes:
//! `Sender<T, mpmc::Producer>` / `Receiver<T, mpmc::Consumer>`, created with
//! [`MpmcOptions`] (the slot size must hold a `T`). An MPMC stream ends when a
//! handle closes the ring ([`mpmc::Producer::close_ring`]).
//!
//! ```
//! # fn main() -> shmring::Result<()> {
//! use shmring::typed::{Receiver, Sender};
//! use shmring::{Location, SpscOptions};
//! use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//!
//! #[derive(Debug, Clone, Copy, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
//! #[repr(C)]
//! struct Tick {
//!     seq: u64,
//!     price: f64,
//! }
//!
//! let loc = Location::shm(format!("doc-typed-{}", std::process::id()));
//! let mut tx: Sender<Tick> = Sender::create(&loc, &SpscOptions::new().capacity(4096))?;
//! let mut rx: Receiver<Tick> = Receiver::open(&loc)?;
//! // Opening it for another type fails before anything is claimed.
//! assert!(matches!(Receiver::<u32>::open(&loc), Err(shmring::Error::TypeMismatch { .. })));
//! loc.unlink()?;
//!
//! tx.send(&Tick { seq: 1, price: 9.5 })?;
//! tx.send_batch(&[Tick { seq: 2, price: 9.75 }, Tick { seq: 3, price: 10.0 }])?;
//! drop(tx);
//! assert_eq!(rx.recv()?, Some(Tick { seq: 1, price: 9.5 }));
//! let mut rest = Vec::new();
//! rx.recv_batch(10, |t| rest.push(t.seq))?;
//! assert_eq!(rest, [2, 3]);
//! assert_eq!(rx.recv()?, None); // end of stream
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::{Error, Result};
use crate::header::RecordType;
use crate::mpmc::{self, MpmcOptions};
use crate::segment::Location;
use crate::spsc::{self, RecordRun, SpscOptions};
use crate::wait::Deadline;

/// What a typed channel carries: plain data, valid for any bytes.
pub trait Message: FromBytes + IntoBytes + Immutable + KnownLayout {}

impl<T: FromBytes + IntoBytes + Immutable + KnownLayout> Message for T {}

/// The record type recorded for `T`. Zero-sized types do not compile: a
/// value of one carries nothing, and batches of them would have no bytes to
/// count them by.
///
/// ```compile_fail
/// let _ = shmring::typed::record_type::<()>();
/// ```
pub fn record_type<T: Message>() -> RecordType {
    const { assert!(size_of::<T>() > 0, "a typed channel needs a type of at least one byte") };
    RecordType::new(std::any::type_name::<T>(), size_of::<T>(), align_of::<T>())
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::spsc::Producer {}
    impl Sealed for crate::spsc::Consumer {}
    impl<R> Sealed for crate::mpmc::Handle<R> {}
}

/// A ring end that can carry typed values. Implemented by the ring handles
/// of this crate only.
pub trait End: Sized + sealed::Sealed {
    /// The options used to create the ring.
    type Options;
    #[doc(hidden)]
    fn create_typed(loc: &Location, opts: &Self::Options, ty: RecordType) -> Result<Self>;
    #[doc(hidden)]
    fn open_typed(loc: &Location, ty: RecordType) -> Result<Self>;
    #[doc(hidden)]
    fn open_or_create_typed(loc: &Location, opts: &Self::Options, ty: RecordType) -> Result<Self>;
    #[doc(hidden)]
    fn segment_name(&self) -> &str;
}

/// A ring end that sends.
pub trait SendEnd: End {
    #[doc(hidden)]
    fn send_bytes(&mut self, bytes: &[u8], deadline: Deadline) -> Result<()>;
    /// Send up to `want` records of `size` bytes, each written by `fill`
    /// until it returns false (the slice it is given is the record). Returns
    /// whether every record offered was filled: more may follow.
    #[doc(hidden)]
    fn send_filled(&mut self, size: usize, want: usize, mut fill: impl FnMut(&mut [u8]) -> bool) -> Result<bool> {
        let want = want.clamp(1, 64);
        let mut buf = vec![0u8; want * size];
        let mut n = 0;
        while n < want && fill(&mut buf[n * size..(n + 1) * size]) {
            n += 1;
        }
        if n > 0 {
            self.send_all(&buf[..n * size], size)?;
        }
        Ok(n == want)
    }
    /// Send `bytes` as records of `size` bytes each (`size > 0`).
    #[doc(hidden)]
    fn send_all(&mut self, bytes: &[u8], size: usize) -> Result<()>;
}

/// A ring end that receives.
pub trait RecvEnd: End {
    #[doc(hidden)]
    fn recv_each<R>(&mut self, deadline: Deadline, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>>;
    /// Receive up to `max` records, passed a run of same-length records at a time.
    #[doc(hidden)]
    fn recv_runs_of(&mut self, max: usize, f: impl FnMut(RecordRun<'_>)) -> Result<usize>;
}

/// Both SPSC ends, through what they share to be built from a segment.
impl<R: spsc::Role + sealed::Sealed> End for R {
    type Options = SpscOptions;
    fn segment_name(&self) -> &str {
        spsc::Role::name(self)
    }
    fn create_typed(loc: &Location, opts: &SpscOptions, ty: RecordType) -> Result<Self> {
        spsc::create_role(loc, &typed_opts(opts, ty))
    }
    fn open_typed(loc: &Location, ty: RecordType) -> Result<Self> {
        spsc::open_role_with(loc, &typed_opts(&SpscOptions::default(), ty))
    }
    fn open_or_create_typed(loc: &Location, opts: &SpscOptions, ty: RecordType) -> Result<Self> {
        spsc::open_or_create_role(loc, &typed_opts(opts, ty))
    }
}

/// Both MPMC roles: one handle type.
impl<R> End for mpmc::Handle<R> {
    type Options = MpmcOptions;
    fn segment_name(&self) -> &str {
        self.name()
    }
    fn create_typed(loc: &Location, opts: &MpmcOptions, ty: RecordType) -> Result<Self> {
        Self::create_typed(loc, opts, ty)
    }
    fn open_typed(loc: &Location, ty: RecordType) -> Result<Self> {
        Self::open_typed(loc, ty)
    }
    fn open_or_create_typed(loc: &Location, opts: &MpmcOptions, ty: RecordType) -> Result<Self> {
        Self::open_or_create_typed(loc, opts, ty)
    }
}

impl SendEnd for mpmc::Producer {
    fn send_bytes(&mut self, bytes: &[u8], deadline: Deadline) -> Result<()> {
        self.send_with(bytes, deadline)
    }

    /// Up to 64 values per [`mpmc::Producer::send_batch`]: one CAS claims
    /// every free slot among them.
    fn send_all(&mut self, bytes: &[u8], size: usize) -> Result<()> {
        let mut refs: [&[u8]; 64] = [&[]; 64];
        for chunk in bytes.chunks(64 * size) {
            let n = chunk.chunks_exact(size).zip(refs.iter_mut()).map(|(rec, r)| *r = rec).count();
            let mut sent = 0;
            while sent < n {
                sent += self.send_batch(&refs[sent..n])?;
            }
        }
        Ok(())
    }
}

impl RecvEnd for mpmc::Consumer {
    fn recv_each<R>(&mut self, deadline: Deadline, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        Ok(self.recv_with(deadline)?.map(|r| f(&r)))
    }

    fn recv_runs_of(&mut self, max: usize, mut f: impl FnMut(RecordRun<'_>)) -> Result<usize> {
        self.recv_batch(max, |rec| f(RecordRun::single(rec)))
    }
}

fn typed_opts(opts: &SpscOptions, ty: RecordType) -> SpscOptions {
    let mut o = *opts;
    o.record = Some(ty);
    o
}

impl SendEnd for spsc::Producer {
    fn send_bytes(&mut self, bytes: &[u8], deadline: Deadline) -> Result<()> {
        self.send_with(bytes, deadline)
    }

    fn send_all(&mut self, bytes: &[u8], size: usize) -> Result<()> {
        let stride = size.next_multiple_of(8);
        // A run must fit the ring with its header and the end marker.
        let per_run = (self.max_record_len() / stride).clamp(1, 0xffff);
        for chunk in bytes.chunks(per_run * size) {
            let count = chunk.len() / size;
            let mut run = self.grant_records(size, count)?;
            if stride == size {
                run.copy_from_slice(chunk);
            } else {
                for (dst, src) in run.chunks_mut(stride).zip(chunk.chunks_exact(size)) {
                    dst[..size].copy_from_slice(src);
                }
            }
            run.commit();
        }
        Ok(())
    }

    /// One run, written in place: no staging copy.
    #[inline]
    fn send_filled(&mut self, size: usize, want: usize, mut fill: impl FnMut(&mut [u8]) -> bool) -> Result<bool> {
        let stride = size.next_multiple_of(8);
        let per_run = (self.max_record_len() / stride).clamp(1, 0xffff);
        let want = want.clamp(1, per_run);
        let mut run = self.grant_records(size, want)?;
        let mut n = 0;
        while n < want && fill(&mut run[n * stride..n * stride + size]) {
            n += 1;
        }
        run.truncate(n);
        run.commit();
        Ok(n == want)
    }
}

impl RecvEnd for spsc::Consumer {
    fn recv_each<R>(&mut self, deadline: Deadline, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        Ok(self.recv_with(deadline)?.map(|r| f(&r)))
    }

    fn recv_runs_of(&mut self, max: usize, f: impl FnMut(RecordRun<'_>)) -> Result<usize> {
        self.recv_runs(max, f)
    }
}

/// The sending end of a typed channel of `T` over the ring end `P`.
pub struct Sender<T: Message, P: SendEnd = spsc::Producer> {
    inner: P,
    _t: PhantomData<fn(T)>,
}

/// The receiving end of a typed channel of `T` over the ring end `C`.
pub struct Receiver<T: Message, C: RecvEnd = spsc::Consumer> {
    inner: C,
    _t: PhantomData<fn() -> T>,
}

impl<T: Message, P: SendEnd + std::fmt::Debug> std::fmt::Debug for Sender<T, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("typed::Sender").field("type", &std::any::type_name::<T>()).field("ring", &self.inner).finish()
    }
}

impl<T: Message, C: RecvEnd + std::fmt::Debug> std::fmt::Debug for Receiver<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("typed::Receiver").field("type", &std::any::type_name::<T>()).field("ring", &self.inner).finish()
    }
}

impl<T: Message, P: SendEnd> Sender<T, P> {
    /// Create a new ring at `loc` for values of `T` and attach as its sender.
    ///
    /// # Errors
    /// As the ring end's `create`.
    pub fn create(loc: &Location, opts: &P::Options) -> Result<Self> {
        Ok(Sender { inner: P::create_typed(loc, opts, record_type::<T>())?, _t: PhantomData })
    }

    /// Open an existing ring of `T` at `loc` and attach as its sender.
    ///
    /// # Errors
    /// [`Error::TypeMismatch`] if the ring was created for another type or
    /// as a ring of bytes; otherwise as the ring end's `open`.
    pub fn open(loc: &Location) -> Result<Self> {
        Ok(Sender { inner: P::open_typed(loc, record_type::<T>())?, _t: PhantomData })
    }

    /// Open the ring at `loc`, creating it for `T` if it does not exist.
    ///
    /// # Errors
    /// As [`Sender::create`] and [`Sender::open`].
    pub fn open_or_create(loc: &Location, opts: &P::Options) -> Result<Self> {
        Ok(Sender { inner: P::open_or_create_typed(loc, opts, record_type::<T>())?, _t: PhantomData })
    }

    /// Send one value, waiting for space per the wait policy.
    ///
    /// # Errors
    /// As the ring end's `send`: [`Error::Closed`], [`Error::PeerDied`],
    /// [`Error::Corrupted`], [`Error::InvalidArgument`] if `T` is larger
    /// than a record can be.
    pub fn send(&mut self, value: &T) -> Result<()> {
        self.inner.send_bytes(value.as_bytes(), Deadline::Never)
    }

    /// [`Sender::send`] without waiting: [`Error::WouldBlock`] if full.
    ///
    /// # Errors
    /// As [`Sender::send`], plus [`Error::WouldBlock`].
    pub fn try_send(&mut self, value: &T) -> Result<()> {
        self.inner.send_bytes(value.as_bytes(), Deadline::Now)
    }

    /// [`Sender::send`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Sender::send`], plus [`Error::Timeout`].
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<()> {
        self.inner.send_bytes(value.as_bytes(), Deadline::After(timeout))
    }

    /// Send every value of `values`, in order, waiting for space as needed.
    /// Over SPSC the values go as runs of records sharing one header.
    ///
    /// # Errors
    /// As [`Sender::send`]; values before the failing one have been sent.
    pub fn send_batch(&mut self, values: &[T]) -> Result<()> {
        self.inner.send_all(values.as_bytes(), size_of::<T>())
    }

    /// Send every value `values` yields, in order, waiting for space as
    /// needed. Over SPSC each value is written straight into the ring, with
    /// no staging copy, in runs of records sharing one header. Each run is
    /// sized from the lower bound of the iterator's `size_hint`, so an
    /// iterator that knows its length (a range, a `map` of one) goes in as
    /// few runs as the ring allows, while one that reports no lower bound (a
    /// `filter`) goes one record per run. Over MPMC, up to 64 at a time go
    /// through [`mpmc::Producer::send_batch`].
    ///
    /// ```
    /// # fn main() -> shmring::Result<()> {
    /// use shmring::{Location, SpscOptions, typed::{Receiver, Sender}};
    /// let loc = Location::shm(format!("doc-send-iter-{}", std::process::id()));
    /// let mut tx: Sender<u64> = Sender::create(&loc, &SpscOptions::new().capacity(4096))?;
    /// let mut rx: Receiver<u64> = Receiver::open(&loc)?;
    /// loc.unlink()?;
    /// tx.send_iter((0..100u64).map(|i| i * i))?;
    /// let mut got = Vec::new();
    /// rx.recv_batch(1000, |v| got.push(v))?;
    /// assert_eq!(got, (0..100u64).map(|i| i * i).collect::<Vec<_>>());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Sender::send`]; values before the failing one have been sent.
    #[inline]
    pub fn send_iter(&mut self, values: impl IntoIterator<Item = T>) -> Result<()> {
        let mut it = values.into_iter();
        loop {
            let want = it.size_hint().0;
            let more = self.inner.send_filled(size_of::<T>(), want, |rec| match it.next() {
                Some(v) => {
                    rec.copy_from_slice(v.as_bytes());
                    true
                }
                None => false,
            })?;
            if !more {
                return Ok(());
            }
        }
    }

    /// The ring end underneath, for its other methods (wait policy, name, ...).
    pub fn get_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Unwrap the ring end.
    pub fn into_inner(self) -> P {
        self.inner
    }
}

impl<T: Message, C: RecvEnd> Receiver<T, C> {
    fn wrap(inner: C) -> Self {
        Receiver { inner, _t: PhantomData }
    }

    /// Create a new ring at `loc` for values of `T` and attach as its receiver.
    ///
    /// # Errors
    /// As the ring end's `create`.
    pub fn create(loc: &Location, opts: &C::Options) -> Result<Self> {
        Ok(Self::wrap(C::create_typed(loc, opts, record_type::<T>())?))
    }

    /// Open an existing ring of `T` at `loc` and attach as its receiver.
    ///
    /// # Errors
    /// [`Error::TypeMismatch`] if the ring was created for another type or
    /// as a ring of bytes; otherwise as the ring end's `open`.
    pub fn open(loc: &Location) -> Result<Self> {
        Ok(Self::wrap(C::open_typed(loc, record_type::<T>())?))
    }

    /// Open the ring at `loc`, creating it for `T` if it does not exist.
    ///
    /// # Errors
    /// As [`Receiver::create`] and [`Receiver::open`].
    pub fn open_or_create(loc: &Location, opts: &C::Options) -> Result<Self> {
        Ok(Self::wrap(C::open_or_create_typed(loc, opts, record_type::<T>())?))
    }

    fn wrong_size(&self, len: usize) -> Error {
        Error::corrupted(
            self.inner.segment_name(),
            format!("a record of {len} bytes where a {} was expected", record_type::<T>()),
        )
    }

    fn recv_inner(&mut self, deadline: Deadline) -> Result<Option<T>> {
        match self.inner.recv_each(deadline, |b| T::read_from_bytes(b).map_err(|_| b.len()))? {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(len)) => Err(self.wrong_size(len)),
        }
    }

    /// Receive one value, waiting per the wait policy. `Ok(None)` is the end
    /// of the stream.
    ///
    /// # Errors
    /// As the ring end's `recv`; [`Error::Corrupted`] if a record does not
    /// have the size of `T`.
    pub fn recv(&mut self) -> Result<Option<T>> {
        self.recv_inner(Deadline::Never)
    }

    /// [`Receiver::recv`] without waiting: [`Error::WouldBlock`] if empty.
    ///
    /// # Errors
    /// As [`Receiver::recv`], plus [`Error::WouldBlock`].
    pub fn try_recv(&mut self) -> Result<Option<T>> {
        self.recv_inner(Deadline::Now)
    }

    /// [`Receiver::recv`] waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Receiver::recv`], plus [`Error::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<T>> {
        self.recv_inner(Deadline::After(timeout))
    }

    /// Wait for at least one value, then pass up to `max` available values to
    /// `f`, in order. Returns how many; 0 means end of stream.
    ///
    /// # Errors
    /// As [`Receiver::recv`]. On a record of the wrong size, the values
    /// before it have been passed to `f`.
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> Result<usize> {
        let mut bad = None;
        let size = size_of::<T>();
        let got = self.inner.recv_runs_of(max, |run| {
            if bad.is_some() {
                return;
            }
            if run.record_len() != size {
                bad = Some(run.record_len());
            } else if run.stride() == size {
                // Packed back to back: one pass over the run's bytes.
                for rec in run.as_bytes().chunks_exact(size) {
                    if let Ok(v) = T::read_from_bytes(rec) {
                        f(v);
                    }
                }
            } else {
                for rec in run.iter() {
                    if let Ok(v) = T::read_from_bytes(rec) {
                        f(v);
                    }
                }
            }
        })?;
        match bad {
            Some(len) => Err(self.wrong_size(len)),
            None => Ok(got),
        }
    }

    /// The ring end underneath, for its other methods.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.inner
    }

    /// Unwrap the ring end.
    pub fn into_inner(self) -> C {
        self.inner
    }
}
