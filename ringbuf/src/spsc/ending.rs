//! How an SPSC stream ends, and what each end knows of the other.
//!
//! A role ends closed (the producer seals the close with its final
//! position), aborted (with a reason for the peer), or not at all (its
//! process died). The peer's role slot is checked wherever it is read
//! ([`Shared::peer`]): an unknown state, a step backwards, or an identity
//! other than the one first seen attached is corruption.

use super::consumer::Consumer;
use super::layout::ROLE_ATTACHED;
use super::peer::Peer;
use super::producer::Producer;
use crate::error::{Error, Result};
use crate::sync::Ordering;

impl Producer {
    /// The consumer's role slot, checked (see `Shared::peer`); corruption
    /// poisons.
    pub(super) fn consumer_state(&mut self, liveness: bool) -> Result<Peer> {
        let slot = &self.sh.ctl().consumer;
        // The consumer released something since we attached: it was there.
        let moved = self.cached_head != self.attach_head;
        let r = self.sh.peer(slot, "consumer", &mut self.consumer, moved, liveness);
        self.sh.poison_on_corruption(&mut self.health, r)
    }

    /// Error if the consumer is gone: closed, aborted, dead (with
    /// `liveness`), or its role slot is impossible.
    pub(super) fn check_consumer(&mut self, liveness: bool) -> Result<()> {
        // The common case while waiting, kept to one load: the consumer we
        // saw attached still is (the full check runs at every tick).
        // Acquire: as in `Shared::peer`.
        if !liveness && self.consumer.is_some() && self.sh.ctl().consumer.state.load(Ordering::Acquire) == ROLE_ATTACHED
        {
            return Ok(());
        }
        match self.consumer_state(liveness)? {
            Peer::Closed { .. } => Err(Error::Closed(self.sh.name.clone())),
            Peer::Aborted(e) => Err(e),
            Peer::NotYet | Peer::Attached => Ok(()),
        }
    }

    /// Whether the consumer role has been taken: a consumer is attached, or
    /// was and has left. `false` while nobody has opened the ring as its
    /// consumer yet (records sent meanwhile wait in the ring).
    ///
    /// Also makes the checks of a liveness tick (which a caller polling this
    /// instead of waiting would otherwise miss).
    ///
    /// # Errors
    /// [`Error::Corrupted`] if the consumer's role slot or the segment header
    /// is impossible or was rewritten; [`Error::PeerDied`] if the consumer
    /// attached and died.
    pub fn peer_arrived(&mut self) -> Result<bool> {
        Ok(!matches!(self.consumer_state(true)?, Peer::NotYet))
    }

    /// Publish what is staged and close the stream: the consumer receives
    /// everything sent, then end of stream. Dropping the producer does the
    /// same, but says nothing of how it went (and aborts instead if its last
    /// call failed; `close` is the caller saying the stream is complete
    /// nonetheless).
    ///
    /// # Errors
    /// Each says that what was sent cannot all be received; the stream is
    /// then aborted instead of closed:
    /// - [`Error::Corrupted`] if the ring was poisoned, or the consumer's
    ///   role slot or position is impossible;
    /// - [`Error::Closed`] if the consumer closed before receiving all of it;
    /// - [`Error::PeerAborted`] if the consumer aborted;
    /// - [`Error::PeerDied`] if the consumer died.
    ///
    /// A consumer that leaves after this call returns `Ok` is not seen: it
    /// gets its own error, or chose to stop reading.
    pub fn close(mut self) -> Result<()> {
        if self.health.poisoned {
            // Dropped on return: aborted, as a poisoned handle is.
            return Err(Error::corrupted(&self.sh.name, "ring poisoned by an earlier error; the stream was aborted"));
        }
        self.flush();
        // Whether what was sent can be received is decided before the close
        // is sealed: a stream this call reports as failed is aborted, so a
        // consumer can never end it cleanly. (Checked after the seal, a word
        // rewritten meanwhile could fail a stream the consumer already
        // finished cleanly.)
        let verdict = match self.consumer_state(true) {
            Ok(Peer::NotYet | Peer::Attached) => Ok(()),
            Ok(Peer::Aborted(e)) | Err(e) => Err(e),
            Ok(Peer::Closed { .. }) => match self.refresh_head() {
                Ok(()) if self.tail == self.cached_head => Ok(()),
                Ok(()) => Err(Error::Closed(format!(
                    "{} (the consumer left {} bytes unread)",
                    self.sh.name,
                    self.tail.wrapping_sub(self.cached_head)
                ))),
                Err(e) => Err(e),
            },
        };
        // Dropped on return: closed, or aborted with the verdict's reason.
        self.health.failure = verdict.as_ref().err().map(Error::abort_reason);
        verdict
    }

    /// Give up: publish what is staged, then end the stream as aborted, so
    /// the consumer receives everything committed and then
    /// [`Error::PeerAborted`] with `reason`, not a clean end of stream.
    /// `reason` is cut to 64 bytes ([`header::REASON_MAX`](crate::header::REASON_MAX))
    /// and shown escaped; `shmring inspect` shows it too.
    ///
    /// ```
    /// # fn main() -> shmring::Result<()> {
    /// use shmring::{Error, Location, SpscOptions, spsc::{Consumer, Producer}};
    /// let loc = Location::shm(format!("doc-abort-{}", std::process::id()));
    /// let mut tx = Producer::create(&loc, &SpscOptions::new().capacity(4096))?;
    /// let mut rx = Consumer::open(&loc)?;
    /// loc.unlink()?;
    /// tx.send(b"first half")?;
    /// tx.abort("input: disk read error");
    /// assert_eq!(&*rx.recv()?.unwrap(), b"first half");
    /// match rx.recv() {
    ///     Err(Error::PeerAborted { reason, .. }) => assert_eq!(reason, "input: disk read error"),
    ///     other => panic!("{:?}", other.map(|r| r.map(|r| r.to_vec()))),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn abort(mut self, reason: &str) {
        // Dropped on return, which aborts with the reason.
        self.health.failure = Some(reason.to_owned());
    }

    /// End the role (once, from `Drop`): abort if there is a reason to (see
    /// `Health::ending_reason`), else close; then wake the consumer.
    fn end(&mut self) {
        if !self.health.poisoned {
            self.flush();
        }
        let ctl = self.sh.ctl();
        self.sh.end_role(&ctl.producer, &mut self.health, Some(self.published), &ctl.data_ready);
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.end();
    }
}

impl Consumer {
    /// Whether the producer role has been taken: a producer is attached, or
    /// was and has left. `false` while nobody has opened the ring as its
    /// producer yet.
    ///
    /// Also makes the checks of a liveness tick (which a caller polling this
    /// instead of waiting would otherwise miss).
    ///
    /// # Errors
    /// [`Error::Corrupted`] if the producer's role slot or the segment header
    /// is impossible or was rewritten; [`Error::PeerDied`] if the producer
    /// attached and died.
    pub fn peer_arrived(&mut self) -> Result<bool> {
        Ok(!matches!(self.producer_state(true)?, Peer::NotYet))
    }

    /// Give up: end our side as aborted, leaving `reason` (cut to 64 bytes)
    /// for the producer, whose later sends fail with
    /// [`Error::PeerAborted`], and for `shmring inspect`.
    pub fn abort(mut self, reason: &str) {
        // Dropped on return, which aborts with the reason.
        self.health.failure = Some(reason.to_owned());
    }

    /// End the role (once, from `Drop`): abort if there is a reason to, else
    /// close; then wake the producer.
    fn end(&mut self) {
        if !self.health.poisoned {
            self.release();
        }
        let ctl = self.sh.ctl();
        self.sh.end_role(&ctl.consumer, &mut self.health, None, &ctl.space_free);
    }

    /// Whether the producer's role still says attached, once we have seen
    /// it attached (one load; `producer_state` makes the full check).
    #[inline(always)]
    pub(super) fn producer_still_attached(&self) -> bool {
        // Acquire: as in `Shared::peer`.
        self.producer.is_some() && self.sh.ctl().producer.state.load(Ordering::Acquire) == ROLE_ATTACHED
    }

    /// The producer's role slot, checked (see `Shared::peer`); corruption
    /// poisons.
    pub(super) fn producer_state(&mut self, liveness: bool) -> Result<Peer> {
        let slot = &self.sh.ctl().producer;
        // We received something since we attached: a producer was there.
        let moved = self.head != self.attach_head;
        let r = self.sh.peer(slot, "producer", &mut self.producer, moved, liveness);
        self.sh.poison_on_corruption(&mut self.health, r)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.end();
    }
}
