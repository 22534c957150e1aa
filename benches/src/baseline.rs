//! The same workloads over rtrb and crossbeam's `ArrayQueue`, between two
//! threads of this process (neither can cross a process boundary).
//!
//! Same protocol as [`crate::shm`]: a stream run is its length, then the
//! items `0..n`, answered by their sum on a second queue; a ping-pong
//! message is echoed back. Waiting is spinning with [`spin_loop`]. A peer
//! returns when the bench side is dropped.

use std::hint::spin_loop;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use rtrb::{PushError, RingBuffer};

use crate::affinity::pin_if_some;
use crate::{MSG_LEN, RING_ITEMS, Workload, expected_sum, read_u64};

/// A peer thread, joined when dropped.
struct JoinOnDrop(Option<JoinHandle<()>>);

impl JoinOnDrop {
    fn spawn(name: &str, cpu: Option<usize>, f: impl FnOnce() + Send + 'static) -> JoinOnDrop {
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                pin_if_some(cpu);
                f();
            })
            .expect("spawn a peer thread");
        JoinOnDrop(Some(thread))
    }
}

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        if self.0.take().is_some_and(|t| t.join().is_err()) {
            eprintln!("bench peer thread panicked");
        }
    }
}

/// Pop, spinning while empty; `None` once the producer is gone and the
/// ring is drained.
fn rtrb_pop<T>(rx: &mut rtrb::Consumer<T>) -> Option<T> {
    loop {
        if let Ok(v) = rx.pop() {
            return Some(v);
        }
        if rx.is_abandoned() {
            return rx.pop().ok();
        }
        spin_loop();
    }
}

/// Push, spinning while full; `false` if the consumer is gone.
fn rtrb_push<T>(tx: &mut rtrb::Producer<T>, mut v: T) -> bool {
    loop {
        match tx.push(v) {
            Ok(()) => return true,
            Err(PushError::Full(back)) => v = back,
        }
        if tx.is_abandoned() {
            return false;
        }
        spin_loop();
    }
}

/// Streaming `u64`s through rtrb with its chunk API: the producer fills
/// every free slot with one `write_chunk_uninit` + `fill_from_iter`, the
/// consumer drains every full one with one `read_chunk` + `commit_all`.
pub struct RtrbStream {
    // Fields drop in order: the rings first, so the peer returns, then it
    // is joined.
    tx: rtrb::Producer<u64>,
    sums: rtrb::Consumer<u64>,
    _peer: JoinOnDrop,
}

impl RtrbStream {
    /// Create the rings and start the peer thread (pinned to `cpu`, if given).
    pub fn new(cpu: Option<usize>) -> RtrbStream {
        let (tx, mut rx) = RingBuffer::new(RING_ITEMS);
        let (mut sums_tx, sums) = RingBuffer::new(1);
        let peer = JoinOnDrop::spawn("peer-rtrb-stream", cpu, move || {
            while let Some(n) = rtrb_pop(&mut rx) {
                let (mut left, mut sum) = (n, 0u64);
                while left > 0 {
                    let k = rx.slots().min(usize::try_from(left).unwrap_or(usize::MAX));
                    if k == 0 {
                        if rx.is_abandoned() {
                            return;
                        }
                        spin_loop();
                        continue;
                    }
                    let chunk = rx.read_chunk(k).expect("k slots are full");
                    let (a, b) = chunk.as_slices();
                    sum = a.iter().chain(b).fold(sum, |s, v| s.wrapping_add(*v));
                    chunk.commit_all();
                    left -= k as u64;
                }
                if !rtrb_push(&mut sums_tx, sum) {
                    return;
                }
            }
        });
        RtrbStream { tx, sums, _peer: peer }
    }
}

impl Workload for RtrbStream {
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        assert!(rtrb_push(&mut self.tx, iters), "the peer is gone");
        let mut next = 0;
        while next < iters {
            let k = self.tx.slots().min(usize::try_from(iters - next).unwrap_or(usize::MAX));
            if k == 0 {
                spin_loop();
                continue;
            }
            let chunk = self.tx.write_chunk_uninit(k).expect("k slots are free");
            next += chunk.fill_from_iter(next..) as u64;
        }
        let sum = rtrb_pop(&mut self.sums).expect("the peer closed mid-run");
        let elapsed = start.elapsed();
        assert_eq!(sum, expected_sum(iters), "sum of a run of {iters} items");
        elapsed
    }
}

/// Pop, spinning while empty; `None` once the other side dropped its
/// handle and the queue is drained.
fn queue_pop<T>(q: &Arc<ArrayQueue<T>>) -> Option<T> {
    loop {
        if let Some(v) = q.pop() {
            return Some(v);
        }
        if Arc::strong_count(q) == 1 {
            return q.pop();
        }
        spin_loop();
    }
}

/// Push, spinning while full; `false` if the other side dropped its handle.
fn queue_push<T>(q: &Arc<ArrayQueue<T>>, mut v: T) -> bool {
    loop {
        match q.push(v) {
            Ok(()) => return true,
            Err(back) => v = back,
        }
        if Arc::strong_count(q) == 1 {
            return false;
        }
        spin_loop();
    }
}

/// Streaming `u64`s through crossbeam's `ArrayQueue`, one `push` / `pop`
/// per item, spinning when full or empty.
pub struct CrossbeamStream {
    // Drop order as in `RtrbStream`.
    items: Arc<ArrayQueue<u64>>,
    sums: Arc<ArrayQueue<u64>>,
    _peer: JoinOnDrop,
}

impl CrossbeamStream {
    /// Create the queues and start the peer thread (pinned to `cpu`, if given).
    pub fn new(cpu: Option<usize>) -> CrossbeamStream {
        let items = Arc::new(ArrayQueue::new(RING_ITEMS));
        let sums = Arc::new(ArrayQueue::new(1));
        let (rx, sums_tx) = (items.clone(), sums.clone());
        let peer = JoinOnDrop::spawn("peer-crossbeam-stream", cpu, move || {
            while let Some(n) = queue_pop(&rx) {
                let mut sum = 0u64;
                for _ in 0..n {
                    let Some(v) = queue_pop(&rx) else { return };
                    sum = sum.wrapping_add(v);
                }
                if !queue_push(&sums_tx, sum) {
                    return;
                }
            }
        });
        CrossbeamStream { items, sums, _peer: peer }
    }
}

impl Workload for CrossbeamStream {
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        assert!(queue_push(&self.items, iters), "the peer is gone");
        for i in 0..iters {
            queue_push(&self.items, i);
        }
        let sum = queue_pop(&self.sums).expect("the peer closed mid-run");
        let elapsed = start.elapsed();
        assert_eq!(sum, expected_sum(iters), "sum of a run of {iters} items");
        elapsed
    }
}

/// Round trips of a [`MSG_LEN`]-byte array through two rtrb rings, `push`
/// and `pop` spinning on both sides.
pub struct RtrbPingPong {
    // Drop order as in `RtrbStream`.
    tx: rtrb::Producer<[u8; MSG_LEN]>,
    rx: rtrb::Consumer<[u8; MSG_LEN]>,
    msg: [u8; MSG_LEN],
    _peer: JoinOnDrop,
}

impl RtrbPingPong {
    /// Create the rings and start the echoing peer thread (pinned to `cpu`, if given).
    pub fn new(cpu: Option<usize>) -> RtrbPingPong {
        let (tx, mut peer_rx) = RingBuffer::new(64);
        let (mut peer_tx, rx) = RingBuffer::new(64);
        let peer = JoinOnDrop::spawn("peer-rtrb-echo", cpu, move || {
            while let Some(msg) = rtrb_pop(&mut peer_rx) {
                if !rtrb_push(&mut peer_tx, msg) {
                    return;
                }
            }
        });
        RtrbPingPong { tx, rx, msg: [0x5a; MSG_LEN], _peer: peer }
    }
}

impl Workload for RtrbPingPong {
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for i in 0..iters {
            self.msg[..8].copy_from_slice(&i.to_le_bytes());
            assert!(rtrb_push(&mut self.tx, self.msg), "the peer is gone");
            let back = rtrb_pop(&mut self.rx).expect("the peer closed mid-run");
            assert_eq!(read_u64(&back), i, "echoed message");
        }
        start.elapsed()
    }
}
