//! Ring semantics checked in one process with both handles. Every test runs
//! once per notifier (futex and semaphore); the handles park when they wait.
#![cfg(not(loom))]

#[macro_use]
mod common;

use std::time::Duration;

use common::{TempSeg, record};
use shmring::header::{CONTROL_OFFSET, NotifierKind, SpscControl};
use shmring::spsc::{Consumer, Producer, record_size};
use shmring::{Error, Location, SpscOptions, WaitPolicy};

/// A producer created with `kind` and a consumer opened with default
/// options (it uses the notifier the header names); both park when they wait.
fn pair(tag: &str, cap: u64, kind: NotifierKind) -> (TempSeg, Producer, Consumer) {
    let seg = TempSeg::new(tag);
    let opts = SpscOptions::new().capacity(cap).notifier(kind).wait_policy(WaitPolicy::park());
    let tx = Producer::create(&seg.0, &opts).unwrap();
    let mut rx = Consumer::open(&seg.0).unwrap();
    rx.set_wait_policy(WaitPolicy::park());
    (seg, tx, rx)
}

for_each_notifier! {
    fn records_round_trip_across_many_wraps(kind) {
        let (_s, mut tx, mut rx) = pair("wraps", 4096, kind);
        for i in 0..5000 {
            let r = record(i);
            tx.send(&r).unwrap();
            let got = rx.try_recv().unwrap().unwrap();
            assert_eq!(&*got, &r[..]);
        }
    }

    fn demoting_producers_deliver_the_same_records(kind) {
        // Every record is published alone, so every one is demoted: through
        // `send` and through a grant committed with nothing staged, at every
        // offset in the line, across many wraps, and after staged batches.
        let seg = TempSeg::new("demote");
        let opts = SpscOptions::new().capacity(4096).notifier(kind).demote(true);
        let mut tx = Producer::create(&seg.0, &opts).unwrap();
        let mut rx = Consumer::open(&seg.0).unwrap();
        for i in 0..5000u64 {
            let r = record(i);
            if i % 3 == 0 {
                let mut g = tx.grant(r.len()).unwrap();
                g.copy_from_slice(&r);
                g.commit();
            } else {
                tx.send(&r).unwrap();
            }
            if i % 100 == 0 {
                tx.set_demote(i % 200 != 0);
                tx.grant(7).unwrap().stage();
                tx.grant(7).unwrap().commit();
                assert_eq!(rx.try_recv().unwrap().unwrap().len(), r.len());
                assert_eq!(rx.try_recv().unwrap().unwrap().len(), 7);
                assert_eq!(rx.try_recv().unwrap().unwrap().len(), 7);
                continue;
            }
            assert_eq!(&*rx.try_recv().unwrap().unwrap(), &r[..]);
        }
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
    }

    fn full_and_empty_are_reported_without_blocking(kind) {
        let (_s, mut tx, mut rx) = pair("full", 4096, kind);
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { full: false })));
        let mut sent = 0;
        loop {
            match tx.try_send(&[0xAB; 100]) {
                Ok(()) => sent += 1,
                Err(Error::WouldBlock { full: true }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        // 8 bytes stay free for the end marker that follows the last record.
        assert_eq!(sent, (4096 - 8) / record_size(100));
        // The space left at the end takes small records, then the ring is full.
        let mut small = 0;
        while tx.try_send(&[1]).is_ok() {
            small += 1;
        }
        assert_eq!(small, (4096 - 8 - sent * record_size(100)) / record_size(1));
        assert!(matches!(tx.send_timeout(&[1], Duration::from_millis(20)), Err(Error::Timeout)));
        assert!(matches!(tx.try_grant_records(8, 2), Err(Error::WouldBlock { full: true })));
        assert!(matches!(tx.grant_records_timeout(8, 2, Duration::from_millis(20)), Err(Error::Timeout)));
        let n = rx.recv_batch(usize::MAX, |r| assert!(r == [0xAB; 100] || r == [1])).unwrap();
        assert_eq!(n as u64, sent + small);
        assert!(matches!(rx.recv_timeout(Duration::from_millis(20)), Err(Error::Timeout)));
        // Drained, the ring takes a run of all but the header and end marker,
        // once the consumer has passed the padding to the end of the region
        // (a run never wraps; the refused grant published that padding).
        let records = ((4096 - 16) / 8) as usize;
        assert!(matches!(tx.try_grant_records(8, records + 1), Err(Error::InvalidArgument(_))));
        assert!(matches!(tx.try_grant_records(8, records), Err(Error::WouldBlock { full: true })));
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { full: false })));
        tx.try_grant_records(8, records).unwrap().commit();
        assert!(matches!(tx.try_grant_records(8, 1), Err(Error::WouldBlock { full: true })));
        assert_eq!(rx.recv_runs(usize::MAX, |run| assert_eq!(run.len(), records)).unwrap(), records);
        tx.grant_records_timeout(8, 1, Duration::from_millis(20)).unwrap().commit();
    }

    fn staged_records_are_invisible_until_flushed(kind) {
        let (_s, mut tx, mut rx) = pair("stage", 4096, kind);
        for i in 0..10u8 {
            let mut g = tx.grant(1).unwrap();
            g[0] = i;
            g.stage();
        }
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
        tx.flush();
        let mut seen = Vec::new();
        assert_eq!(rx.recv_batch(100, |r| seen.push(r[0])).unwrap(), 10);
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
    }

    fn staged_records_of_one_length_share_a_header(kind) {
        // 8-byte records staged back to back form one run: after the run's
        // header each costs 8 bytes, so a 4096-byte ring holds (4096 - 16) / 8
        // of them (one header, one end marker) less one, not 4088 / 16. (Each
        // grant keeps room for a header of its own, in case it is truncated.)
        let (_s, mut tx, mut rx) = pair("run", 4096, kind);
        let mut staged = 0u64;
        loop {
            match tx.try_grant(8) {
                Ok(mut g) => {
                    g.copy_from_slice(&staged.to_le_bytes());
                    g.stage();
                    staged += 1;
                }
                Err(Error::WouldBlock { full: true }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(staged, (4096 - 16) / 8 - 1);
        // A full ring published what was staged; records arrive one by one.
        let mut next = 0u64;
        let n = rx
            .recv_batch(usize::MAX, |r| {
                assert_eq!(r, next.to_le_bytes());
                next += 1;
            })
            .unwrap();
        assert_eq!(n as u64, staged);
    }

    fn runs_mix_with_other_lengths_truncation_and_single_receives(kind) {
        let (_s, mut tx, mut rx) = pair("runmix", 4096, kind);
        let mut want: Vec<Vec<u8>> = Vec::new();
        for round in 0..200u32 {
            for i in 0..5u32 {
                // Lengths 3,3,3,7,7 then a grant of 3 truncated to 1, then an empty record.
                let len = if i < 3 { 3 } else { 7 };
                let rec: Vec<u8> = (0..len).map(|j| (round * 7 + i * 3 + j) as u8).collect();
                let mut g = tx.grant(len as usize).unwrap();
                g.copy_from_slice(&rec);
                g.stage();
                want.push(rec);
            }
            let mut g = tx.grant(3).unwrap(); // would join a run of 3s if there were one
            g[0] = round as u8;
            g.truncate(1);
            g.stage();
            want.push(vec![round as u8]);
            tx.grant(0).unwrap().stage();
            want.push(Vec::new());
            if round % 3 == 0 {
                tx.flush();
            }
            // Drain with single receives some rounds, batches in others.
            loop {
                match rx.try_recv() {
                    Ok(Some(r)) => assert_eq!(&*r, &want.remove(0)[..]),
                    Err(Error::WouldBlock { .. }) => break,
                    other => panic!("{:?}", other.map(|r| r.map(|r| r.to_vec()))),
                }
                if round % 2 == 0 && !want.is_empty() {
                    match rx.recv_timeout(Duration::ZERO) {
                        Ok(Some(r)) => assert_eq!(&*r, &want.remove(0)[..]),
                        Err(Error::Timeout) => break,
                        other => panic!("{:?}", other.map(|r| r.map(|r| r.to_vec()))),
                    }
                }
            }
        }
        tx.close().unwrap();
        while let Some(r) = rx.recv().unwrap() {
            assert_eq!(&*r, &want.remove(0)[..]);
        }
        assert!(want.is_empty());
    }

    fn granted_runs_wrap_join_and_refuse_impossible_sizes(kind) {
        let (_s, mut tx, mut rx) = pair("granted", 4096, kind);
        assert!(matches!(tx.grant_records(8, 0), Err(Error::InvalidArgument(_))));
        assert!(matches!(tx.grant_records(8, 70_000), Err(Error::InvalidArgument(_))));
        assert!(matches!(tx.grant_records(8, 511), Err(Error::InvalidArgument(_))), "511 * 8 + 16 > 4096");
        let mut next = 0u32;
        let mut want = 0u32;
        for round in 0..300 {
            let count = 1 + round % 37;
            let mut run = tx.grant_records(5, count).unwrap();
            assert_eq!((run.count(), run.stride(), run.len()), (count, 8, count * 8));
            for rec in run.chunks_exact_mut(8) {
                rec[..4].copy_from_slice(&next.to_le_bytes());
                next += 1;
            }
            run.stage();
            // A single record of the same length joins the run.
            let mut g = tx.grant(5).unwrap();
            g[..4].copy_from_slice(&next.to_le_bytes());
            next += 1;
            g.commit();
            rx.recv_batch(usize::MAX, |r| {
                assert_eq!(r.len(), 5);
                assert_eq!(u32::from_le_bytes(r[..4].try_into().unwrap()), want);
                want += 1;
            })
            .unwrap();
        }
        assert_eq!(want, next);
    }

    fn recv_runs_passes_runs_whole_split_only_by_max_and_length(kind) {
        let (_s, mut tx, mut rx) = pair("recvruns", 4096, kind);
        let (mut sent, mut got) = (0u32, 0u32);
        for round in 0..400usize {
            // A run of 8-byte records, a run of 5-byte ones (stride 8), two
            // staged 4-byte records (they join as a run), an empty record (those
            // never join runs) and a lone 12-byte one.
            let n8 = 1 + round % 50;
            let mut run = tx.grant_records(8, n8).unwrap();
            for rec in run.chunks_exact_mut(8) {
                rec.copy_from_slice(&u64::from(sent).to_le_bytes());
                sent += 1;
            }
            run.stage();
            let mut run = tx.grant_records(5, 3).unwrap();
            for rec in run.chunks_exact_mut(8) {
                rec[..4].copy_from_slice(&sent.to_le_bytes());
                sent += 1;
            }
            run.stage();
            for _ in 0..2 {
                let mut g = tx.grant(4).unwrap();
                g.copy_from_slice(&sent.to_le_bytes());
                g.stage();
                sent += 1;
            }
            tx.grant(0).unwrap().stage();
            sent += 1;
            let mut g = tx.grant(12).unwrap();
            g[..4].copy_from_slice(&sent.to_le_bytes());
            sent += 1;
            g.commit();
            let max = [1, 2, 3, 7, 64, usize::MAX][round % 6];
            let mut shapes = Vec::new();
            while got < sent {
                let n = rx
                    .recv_runs(max, |run| {
                        assert!(!run.is_empty());
                        let (len, stride) = (run.record_len(), run.stride());
                        assert_eq!(stride, (len + 7) & !7);
                        assert_eq!(run.as_bytes().len(), (run.len() - 1) * stride + len);
                        assert_eq!(run.iter().len(), run.len());
                        assert_eq!(run.get(run.len()), None);
                        for (i, rec) in run.iter().enumerate() {
                            assert_eq!(run.get(i), Some(rec));
                            assert_eq!(rec.len(), len);
                            if len > 0 {
                                assert_eq!(u32::from_le_bytes(rec[..4].try_into().unwrap()), got, "record {got}");
                            }
                            got += 1;
                        }
                        shapes.push((len, run.len()));
                    })
                    .unwrap();
                assert!(n >= 1 && n <= max, "{n} records for a max of {max}");
            }
            // Runs come whole unless `max` cuts them; lengths never mix.
            let mut lens: Vec<usize> = shapes.iter().map(|s| s.0).collect();
            lens.dedup();
            assert_eq!(lens, [8, 5, 4, 0, 12], "round {round}: {shapes:?}");
            if max >= 64 {
                assert_eq!(shapes.len(), 5, "round {round}: {shapes:?}");
            }
        }
        assert_eq!(got, sent);
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
        assert_eq!(rx.fill(), 0, "every run released");
    }

    fn a_truncated_run_sends_only_the_records_kept(kind) {
        let (_s, mut tx, mut rx) = pair("runtruncate", 4096, kind);
        for round in 0..200u64 {
            let mut run = tx.grant_records(8, 40).unwrap();
            let keep = (round % 41) as usize;
            for (i, rec) in run.chunks_exact_mut(8).take(keep).enumerate() {
                rec.copy_from_slice(&(round * 100 + i as u64).to_le_bytes());
            }
            run.truncate(keep);
            run.truncate(keep + 1); // not smaller: no effect
            assert_eq!((run.count(), run.len()), (keep, keep * 8));
            run.commit();
            tx.send(b"end").unwrap();
            let mut got = Vec::new();
            while got.last().is_none_or(|r: &Vec<u8>| r != b"end") {
                rx.recv_batch(usize::MAX, |r| got.push(r.to_vec())).unwrap();
            }
            let want: Vec<Vec<u8>> = (0..keep as u64)
                .map(|i| (round * 100 + i).to_le_bytes().to_vec())
                .chain([b"end".to_vec()])
                .collect();
            assert_eq!(got, want, "round {round}, {keep} kept");
        }
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
    }

    fn a_truncated_grant_that_would_have_joined_a_run_stands_alone(kind) {
        let (_s, mut tx, mut rx) = pair("runtrunc", 4096, kind);
        for b in [1u8, 2] {
            let mut g = tx.grant(16).unwrap();
            g.fill(b);
            g.stage();
        }
        let mut g = tx.grant(16).unwrap();
        g.copy_from_slice(b"abcdefghijklmnop");
        g.truncate(5);
        g.commit();
        assert_eq!(&*rx.recv().unwrap().unwrap(), &[1; 16]);
        assert_eq!(&*rx.recv().unwrap().unwrap(), &[2; 16]);
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"abcde");
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
    }

    fn a_drained_consumer_publishes_the_padding_it_skipped(kind) {
        // A flush of several records moves the next batch to a cache-line
        // boundary with a short padding record. A consumer that drains the ring
        // must publish its position past that padding too, or a producer
        // waiting for exactly those bytes would wait for ever.
        let (s, mut tx, mut rx) = pair("skip", 4096, kind);
        for _ in 0..2 {
            tx.grant(1).unwrap().stage();
        }
        tx.flush();
        let mut n = 0;
        while let Ok(Some(_)) = rx.try_recv() {
            n += 1;
        }
        assert_eq!(n, 2);
        let (page, len) = shmring::segment::read_first_page(&s.0).unwrap();
        let snap = shmring::inspect::Snapshot::parse(&page, len);
        assert_eq!(snap.tail % 64, 56, "the next header is the last word of a line");
        assert_eq!(snap.head, snap.tail, "everything up to the tail is released");
    }

    fn abandoned_and_truncated_grants(kind) {
        let (_s, mut tx, mut rx) = pair("grant", 4096, kind);
        {
            let _abandoned = tx.grant(64).unwrap(); // dropped uncommitted: nothing sent
        }
        let mut g = tx.grant(64).unwrap();
        g[..3].copy_from_slice(b"abc");
        g.truncate(3);
        g.commit();
        assert_eq!(&*rx.try_recv().unwrap().unwrap(), b"abc");
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { .. })));
    }

    fn largest_record_fits_and_larger_is_refused(kind) {
        let (_s, mut tx, mut rx) = pair("big", 4096, kind);
        tx.send(&[1; 10]).unwrap(); // move off offset 0 so the big one needs padding
        assert_eq!(&*rx.recv().unwrap().unwrap(), &[1; 10]);
        let max = tx.max_record_len();
        assert_eq!(max, 4096 - 16, "a record header and the end marker");
        // It needs the whole ring: the producer pads to the end, publishes the
        // padding and waits; the consumer skips the padding; then it fits.
        assert!(matches!(tx.try_send(&vec![9; max]), Err(Error::WouldBlock { full: true })));
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock { full: false })));
        tx.try_send(&vec![9; max]).unwrap();
        assert_eq!(rx.recv().unwrap().unwrap().len(), max);
        assert!(matches!(tx.try_send(&vec![0; max + 1]), Err(Error::InvalidArgument(_))));
        tx.try_send(&[]).unwrap();
        assert!(rx.recv().unwrap().unwrap().is_empty());
    }

    fn end_of_stream_after_drain(kind) {
        let (_s, mut tx, mut rx) = pair("eos", 4096, kind);
        tx.send(b"one").unwrap();
        tx.send(b"two").unwrap();
        tx.close().unwrap();
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"one");
        assert_eq!(&*rx.recv().unwrap().unwrap(), b"two");
        assert!(rx.recv().unwrap().is_none());
        assert!(rx.try_recv().unwrap().is_none());
        assert_eq!(rx.recv_batch(10, |_| ()).unwrap(), 0);
    }

    fn create_refuses_existing_and_open_refuses_missing(kind) {
        let seg = TempSeg::new("excl");
        let _tx = Producer::create(&seg.0, &SpscOptions::new().notifier(kind).capacity(4096)).unwrap();
        assert!(matches!(Producer::create(&seg.0, &SpscOptions::new().notifier(kind)), Err(Error::AlreadyExists(_))));
        assert!(matches!(Producer::open(&seg.0), Err(Error::RoleTaken { role: "producer", .. })));
        let missing = Location::shm(format!("shmring-test-missing-{}", std::process::id()));
        assert!(matches!(Consumer::open(&missing), Err(Error::NotFound(_))));
    }

    fn bad_names_and_capacities_are_rejected(kind) {
        for bad in ["", "/", "a/b", "..", "x\0y"] {
            let e = Producer::create(&Location::shm(bad), &SpscOptions::new().notifier(kind)).err().unwrap();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad:?}: {e}");
        }
        let seg = TempSeg::new("cap");
        for cap in [0, 1000, 2048, 1 << 40] {
            let e = Producer::create(&seg.0, &SpscOptions::new().notifier(kind).capacity(cap)).err().unwrap();
            assert!(matches!(e, Error::InvalidArgument(_)), "{cap}: {e}");
        }
        assert!(!seg.0.exists(), "a refused create must leave nothing behind");
    }

    fn errors_say_what_and_where(kind) {
        let seg = TempSeg::new("msg");
        let _tx = Producer::create(&seg.0, &SpscOptions::new().notifier(kind).capacity(4096)).unwrap();
        let msg = Producer::open(&seg.0).err().unwrap().to_string();
        assert!(msg.contains(&seg.name()) && msg.contains("producer"), "{msg}");
    }

    fn blocking_both_ways_across_threads_parks_and_wakes(kind) {
        // A 4 KiB ring and 5000 records of up to 1.5 KiB: the producer parks
        // for space and the consumer for data many times over.
        let (_s, mut tx, mut rx) = pair("blockpark", 4096, kind);
        let producer = std::thread::spawn(move || {
            for i in 0..5000 {
                tx.send(&record(i)).unwrap();
            }
        });
        let mut i = 0;
        while let Some(rec) = rx.recv_timeout(Duration::from_secs(60)).unwrap() {
            assert_eq!(&*rec, &record(i)[..], "record {i}");
            i += 1;
        }
        assert_eq!(i, 5000);
        producer.join().unwrap();
    }

    fn a_parked_consumer_times_out_and_then_wakes_for_a_late_record(kind) {
        let (_s, mut tx, mut rx) = pair("late", 4096, kind);
        let t = std::time::Instant::now();
        assert!(matches!(rx.recv_timeout(Duration::from_millis(150)), Err(Error::Timeout)));
        assert!(t.elapsed() >= Duration::from_millis(150), "timed out early: {:?}", t.elapsed());
        let producer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(b"late").unwrap();
            tx
        });
        assert_eq!(&*rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap(), b"late");
        drop(producer.join().unwrap());
        assert!(rx.recv().unwrap().is_none());
    }
}

/// The notifier of both eventcounts of the SPSC segment at `seg`, as a
/// second mapping sees them.
fn eventcount_notifiers(seg: &TempSeg) -> [NotifierKind; 2] {
    let map = shmring::Segment::open(&seg.0).unwrap();
    assert!(map.len() >= shmring::header::HEADER_LEN);
    // SAFETY: the mapping holds at least HEADER_LEN bytes, which contain the control block; it is made of
    // atomics and eventcounts.
    let ctl = unsafe { &*(map.as_ptr().add(CONTROL_OFFSET) as *const SpscControl) };
    [ctl.data_ready.notifier(), ctl.space_free.notifier()]
}

#[test]
fn a_semaphore_segment_is_used_as_such_by_handles_opened_with_default_options() {
    let seg = TempSeg::new("semdefault");
    let opts = SpscOptions::new().capacity(4096).notifier(NotifierKind::Semaphore);
    drop(shmring::spsc::create_segment(&seg.0, &opts).unwrap());
    assert_eq!(eventcount_notifiers(&seg), [NotifierKind::Semaphore; 2]);
    // Both handles opened with default options (futex by default), parking.
    let mut tx = Producer::open(&seg.0).unwrap();
    let mut rx = Consumer::open(&seg.0).unwrap();
    tx.set_wait_policy(WaitPolicy::park());
    rx.set_wait_policy(WaitPolicy::park());
    let producer = std::thread::spawn(move || {
        for i in 0..2000 {
            tx.send(&record(i)).unwrap();
        }
    });
    let mut i = 0;
    while let Some(rec) = rx.recv_timeout(Duration::from_secs(60)).unwrap() {
        assert_eq!(&*rec, &record(i)[..]);
        i += 1;
    }
    assert_eq!(i, 2000);
    producer.join().unwrap();
    // The default remains the futex.
    let seg2 = TempSeg::new("futexdefault");
    let _tx = Producer::create(&seg2.0, &SpscOptions::new().capacity(4096)).unwrap();
    assert_eq!(eventcount_notifiers(&seg2), [NotifierKind::Futex; 2]);
}
