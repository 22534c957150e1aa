//! Frames over a ring pair: a frame as one ring record (header, then
//! payload) or, when larger than a record, as chunks in order
//! ([`frame::FLAG_MORE`]); every record copied out of the ring before it is
//! looked at.

use std::time::Instant;

use shmring::spsc::{Consumer, Producer};

use crate::error::{Error, Result, time_left};
use crate::frame::{self, FLAG_MORE, Header, Kind};

/// The sending ring of a shared-memory link, apart from the rest of the
/// link (so that a request can be answered while it still lies in the other
/// ring).
pub(crate) struct RingOut<'a> {
    pub(crate) tx: &'a mut Producer,
    pub(crate) peer: &'a str,
    pub(crate) max_frame: u64,
    /// The link's "out of step" flag.
    pub(crate) broken: &'a mut bool,
}

impl RingOut<'_> {
    /// A frame of `len` payload bytes that `fill` writes straight into one
    /// ring record (the caller checked it fits); `stage`: leave it staged.
    pub(crate) fn in_place(
        &mut self,
        id: u64,
        kind: Kind,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        deadline: Option<Instant>,
        stage: bool,
    ) -> Result<()> {
        let h = Header { id, len: len as u32, kind, flags: 0 };
        let total = frame::HEADER_LEN + len;
        match self.tx.try_grant(total) {
            Ok(g) => fill_in_place(g, &h, fill, stage),
            Err(shmring::Error::WouldBlock { .. }) => {
                fill_in_place(slow_grant(self.tx, total, deadline, self.peer)?, &h, fill, stage)
            }
            Err(e) => return Err(ring_error(self.peer, e)),
        }
        Ok(())
    }

    /// A whole frame, in chunks when it is larger than a record; records
    /// stay staged as `Link::set_batch` says (`staged` of `batch`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn frame(
        &mut self,
        id: u64,
        kind: Kind,
        flags: u8,
        payload: &[u8],
        deadline: Option<Instant>,
        staged: &mut u32,
        batch: u32,
    ) -> Result<()> {
        let room = self.tx.max_record_len() - frame::HEADER_LEN;
        if payload.is_empty() {
            let stage = stage_next(staged, batch);
            return ring_send(self.tx, Header { id, len: 0, kind, flags }, &[], deadline, self.peer, stage);
        }
        let mut chunks = payload.chunks(room).peekable();
        let mut sent = 0;
        while let Some(chunk) = chunks.next() {
            let more = if chunks.peek().is_some() { FLAG_MORE } else { 0 };
            let h = Header { id, len: chunk.len() as u32, kind, flags: flags | more };
            let stage = stage_next(staged, batch);
            if let Err(e) = ring_send(self.tx, h, chunk, deadline, self.peer, stage) {
                // Chunks already sent would make the next frame
                // interleave with this one: the link is done.
                *self.broken |= sent > 0;
                return Err(e);
            }
            sent += 1;
        }
        Ok(())
    }
}

/// Where a reply goes: a whole link, or the sending ring of one whose
/// request is still borrowed from the other ring.
pub(crate) trait Out {
    /// Largest frame payload, in bytes.
    fn max_frame(&self) -> u64;
    /// Send a frame of `len` payload bytes that `fill` writes, in place when
    /// it fits in a ring record (see `Link::send_with`).
    fn send_with(&mut self, id: u64, kind: Kind, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<()>;
}

impl Out for RingOut<'_> {
    fn max_frame(&self) -> u64 {
        self.max_frame
    }
    fn send_with(&mut self, id: u64, kind: Kind, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<()> {
        if *self.broken {
            return Err(Error::protocol(self.peer, "the connection broke mid-frame earlier"));
        }
        if frame::HEADER_LEN + len <= self.tx.max_record_len() {
            return self.in_place(id, kind, len, fill, None, false);
        }
        let mut buf = vec![0u8; len];
        fill(&mut buf);
        self.frame(id, kind, 0, &buf, None, &mut 0, 0)
    }
}

/// Whether the next record may stay staged, given `staged` records staged
/// and a batch of `batch` (and counts it); `false` when it must publish
/// (and with it everything staged).
pub(crate) fn stage_next(staged: &mut u32, batch: u32) -> bool {
    let stage = *staged + 1 < batch;
    *staged = if stage { *staged + 1 } else { 0 };
    stage
}

/// Put one chunk into the ring; `stage`: leave it staged, unpublished.
pub(crate) fn ring_send(
    tx: &mut Producer,
    h: Header,
    chunk: &[u8],
    deadline: Option<Instant>,
    peer: &str,
    stage: bool,
) -> Result<()> {
    let len = frame::HEADER_LEN + chunk.len();
    // The common case first, without reading the clock: there is room.
    match tx.try_grant(len) {
        Ok(g) => {
            fill_in_place(g, &h, |b| b.copy_from_slice(chunk), stage);
            return Ok(());
        }
        Err(shmring::Error::WouldBlock { .. }) => {}
        Err(e) => return Err(ring_error(peer, e)),
    }
    fill_in_place(slow_grant(tx, len, deadline, peer)?, &h, |b| b.copy_from_slice(chunk), stage);
    Ok(())
}

/// A grant of `len` bytes once the ring was found full: wait for room
/// until `deadline`.
pub(crate) fn slow_grant<'a>(
    tx: &'a mut Producer,
    len: usize,
    deadline: Option<Instant>,
    peer: &str,
) -> Result<shmring::spsc::Grant<'a>> {
    match time_left(deadline, peer)? {
        None => tx.grant(len),
        Some(left) => tx.grant_timeout(len, left),
    }
    .map_err(|e| ring_error(peer, e))
}

/// Write a chunk (its header, then its payload) into a grant of
/// `HEADER_LEN + chunk.len()` bytes and commit it.
pub(crate) fn fill_chunk(g: shmring::spsc::Grant<'_>, h: &Header, chunk: &[u8]) {
    fill_in_place(g, h, |b| b.copy_from_slice(chunk), false);
}

/// Write a frame's header into a grant, have `fill` write its payload in
/// place after it, and commit it (or, `stage`, leave it staged).
pub(crate) fn fill_in_place(mut g: shmring::spsc::Grant<'_>, h: &Header, fill: impl FnOnce(&mut [u8]), stage: bool) {
    g[..frame::HEADER_LEN].copy_from_slice(&h.encode());
    fill(&mut g[frame::HEADER_LEN..]);
    if stage { g.stage() } else { g.commit() }
}

/// The next chunk from the ring, copied out.
pub(crate) fn ring_recv(
    rx: &mut Consumer,
    polls: u32,
    deadline: Option<Instant>,
    max: u64,
    peer: &str,
) -> Result<Option<(Header, Vec<u8>)>> {
    // A record there already, or within `polls` looks, is taken without
    // reading the clock.
    for round in 0..=polls {
        match rx.try_recv() {
            Ok(Some(rec)) => return take(&rec, max, peer).map(Some),
            Ok(None) => return Ok(None),
            Err(shmring::Error::WouldBlock { .. }) => {}
            Err(e) => return Err(ring_error(peer, e)),
        }
        if round < polls {
            std::hint::spin_loop();
        }
    }
    let rec = match time_left(deadline, peer)? {
        None => rx.recv(),
        Some(left) => rx.recv_timeout(left),
    }
    .map_err(|e| ring_error(peer, e))?;
    match rec {
        Some(rec) => take(&rec, max, peer).map(Some),
        None => Ok(None),
    }
}

/// Copy a chunk out of its ring record and check its header. Everything
/// is copied out before it is looked at (the peer can rewrite the ring under
/// us): the header to the stack, the payload once, into the buffer the frame
/// keeps.
pub(crate) fn take(rec: &[u8], max: u64, peer: &str) -> Result<(Header, Vec<u8>)> {
    let mut hb = [0u8; frame::HEADER_LEN];
    let Some(head) = rec.get(..frame::HEADER_LEN) else {
        return Err(Error::protocol(
            peer,
            format!("a ring record of {} bytes, shorter than a frame header", rec.len()),
        ));
    };
    hb.copy_from_slice(head);
    let payload = rec[frame::HEADER_LEN..].to_vec();
    let h = Header::decode(&hb, max).map_err(|e| Error::frame(peer, e))?;
    if h.len as usize != payload.len() {
        return Err(Error::protocol(
            peer,
            format!("a ring record of {} payload bytes holds a frame header for {}", payload.len(), h.len),
        ));
    }
    Ok((h, payload))
}

pub(crate) fn ring_error(peer: &str, e: shmring::Error) -> Error {
    match e {
        shmring::Error::Timeout => Error::Timeout(peer.to_owned()),
        other => Error::Ring(other),
    }
}
