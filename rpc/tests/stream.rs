//! `ShmStream` between real processes: tokio-util's length-delimited codec
//! over the rings, the UNIX socket and TCP; the ends of a stream; and the
//! refusal between a stream listener and an RPC server's clients.

mod common;

use std::time::{Duration, Instant};

use common::{TempDir, request, reversed, server};
use futures_util::{SinkExt, StreamExt};
use shmring_rpc::{Addr, Client, ClientOptions, Error, ShmStream, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Frames of many sizes, some larger than the 64 KiB rings, each answered
/// reversed; then a clean close, which the server answers with its own.
async fn frames(stream: ShmStream) {
    let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
    for (i, len) in [1, 100, 4096, 65_000, 70_000, 300_000, 7].into_iter().enumerate() {
        let req = request(i, len);
        framed.send(Bytes::from(req.clone())).await.unwrap();
        let back = framed.next().await.expect("a reply").unwrap();
        assert_eq!(&back[..], &reversed(&req)[..], "frame {i} of {len} bytes");
    }
    // Many small frames in flight at once.
    for i in 0..200 {
        framed.send(Bytes::from(request(i, 10 + i))).await.unwrap();
    }
    for i in 0..200 {
        let back = framed.next().await.expect("a reply").unwrap();
        assert_eq!(&back[..], &reversed(&request(i, 10 + i))[..]);
    }
    let mut stream = framed.into_inner();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).await.unwrap(), 0, "the server closes cleanly after us");
}

#[test]
fn a_length_delimited_codec_runs_over_every_transport() {
    let dir = TempDir::new("stream");
    let rt = runtime();
    let srv = server("bytes", &dir.addr());
    for t in [TransportKind::Shm, TransportKind::Unix] {
        rt.block_on(async {
            let s = ShmStream::connect(&srv.addr, &ClientOptions::new().transport(t)).await.unwrap();
            assert_eq!(s.transport(), t);
            frames(s).await;
        });
    }
    let tcp = server("bytes", &Addr::parse("tcp:127.0.0.1:0").unwrap());
    rt.block_on(async {
        let s = ShmStream::connect(&tcp.addr, &ClientOptions::new()).await.unwrap();
        assert_eq!(s.transport(), TransportKind::Tcp);
        frames(s).await;
    });
}

/// With no polling window at all every wait parks on the doorbell, the
/// reader's for records and the writer's for room (frames larger than the
/// rings): the same frames must come back, and the same clean close.
#[test]
fn a_stream_that_never_polls_parks_for_every_record_and_loses_nothing() {
    let dir = TempDir::new("stream-nospin");
    let rt = runtime();
    let srv = server("bytes", &dir.addr());
    rt.block_on(async {
        let opts = ClientOptions::new().transport(TransportKind::Shm).stream_spin(Duration::ZERO);
        let s = ShmStream::connect(&srv.addr, &opts).await.unwrap();
        frames(s).await;
    });
}

#[test]
fn a_stream_listener_and_an_rpc_server_refuse_each_other_clearly() {
    let dir = TempDir::new("stream-mix");
    let rt = runtime();
    let bytes = server("bytes", &dir.addr());
    match Client::connect(&bytes.addr, &ClientOptions::new()) {
        Err(Error::Protocol { what, .. }) => assert!(what.contains("byte stream"), "{what}"),
        other => panic!("expected a refusal, got {:?}", other.map(|c| c.transport())),
    }
    drop(bytes);
    let rpc = server("echo", &dir.addr());
    rt.block_on(async {
        match ShmStream::connect(&rpc.addr, &ClientOptions::new()).await {
            Err(Error::Protocol { what, .. }) => assert!(what.contains("RPC frames"), "{what}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    });
}

#[test]
fn a_killed_peer_is_an_error_never_an_end_of_file() {
    let dir = TempDir::new("stream-kill");
    let rt = runtime();
    for t in [TransportKind::Shm, TransportKind::Unix] {
        let mut srv = server("bytes", &dir.addr());
        rt.block_on(async {
            let mut s = ShmStream::connect(&srv.addr, &ClientOptions::new().transport(t)).await.unwrap();
            // The server echoes nothing until a whole frame arrives: a read
            // waits, and the server dies under it.
            let reader = tokio::spawn(async move {
                let mut buf = [0u8; 16];
                s.read(&mut buf).await
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
            srv.child.kill().unwrap();
            let killed = Instant::now();
            let r = reader.await.unwrap();
            match t {
                // The rings tell a death from a close.
                TransportKind::Shm => assert!(r.is_err(), "{t:?}: a dead peer read as {r:?}"),
                // A socket cannot: the kernel closes it as if on purpose.
                _ => assert!(matches!(r, Ok(0) | Err(_)), "{t:?}: {r:?}"),
            }
            assert!(killed.elapsed() < Duration::from_secs(3), "{t:?}: took {:?}", killed.elapsed());
        });
        let _ = srv.child.wait();
    }
}

#[test]
fn a_reader_and_a_writer_in_two_tasks_share_one_stream() {
    use tokio_util::codec::{FramedRead, FramedWrite};
    let dir = TempDir::new("stream-split");
    let rt = runtime();
    let srv = server("bytes", &dir.addr());
    rt.block_on(async {
        let s = ShmStream::connect(&srv.addr, &ClientOptions::new()).await.unwrap();
        assert_eq!(s.transport(), TransportKind::Shm);
        let (r, w) = tokio::io::split(s);
        // Far more than the 64 KiB rings hold: the writer waits for room
        // while the reader waits for data, on one doorbell.
        const FRAMES: usize = 300;
        let writer = tokio::spawn(async move {
            let mut w = FramedWrite::new(w, LengthDelimitedCodec::new());
            for i in 0..FRAMES {
                w.send(Bytes::from(request(i, 20_000))).await.unwrap();
            }
            w
        });
        let reader = tokio::spawn(async move {
            let mut r = FramedRead::new(r, LengthDelimitedCodec::new());
            for i in 0..FRAMES {
                let back = r.next().await.expect("a reply").unwrap();
                assert_eq!(&back[..], &reversed(&request(i, 20_000))[..], "frame {i}");
            }
        });
        let both = async { (writer.await.unwrap(), reader.await.unwrap()) };
        tokio::time::timeout(Duration::from_secs(60), both).await.expect("neither side may hang");
    });
}

/// CPU time this thread has used (user and system), from
/// `/proc/thread-self/stat`, in clock ticks of 10 ms.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command's closing parenthesis: state is the first,
    // utime the 12th and stime the 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').skip(11).take(2).map(|v| v.parse().unwrap()).collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// A reader's polling window widens while frames keep coming, and an idle
/// gap must still end the polling: a connection that went quiet after a
/// busy spell parks within the widest window (400 µs), then costs nothing
/// while nothing comes. On a current-thread runtime every poll is this
/// thread's, so its CPU time over an idle half second tells: a reader that
/// kept polling would use all of it.
#[test]
fn a_stream_that_goes_idle_after_a_busy_spell_stops_polling() {
    let dir = TempDir::new("stream-idle");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let srv = server("bytes", &dir.addr());
    rt.block_on(async {
        let s = ShmStream::connect(&srv.addr, &ClientOptions::new()).await.unwrap();
        assert_eq!(s.transport(), TransportKind::Shm);
        let mut framed = Framed::new(s, LengthDelimitedCodec::new());
        // A busy spell: rounds of frames in flight, with gaps between the
        // rounds shorter than the widest window.
        for round in 0..50 {
            for i in 0..32 {
                framed.send(Bytes::from(request(i, 64))).await.unwrap();
            }
            for i in 0..32 {
                let back = framed.next().await.expect("a reply").unwrap();
                assert_eq!(&back[..], &reversed(&request(i, 64))[..], "round {round}, frame {i}");
            }
        }
        let (before, idle) = (thread_cpu(), Duration::from_millis(500));
        let nothing = tokio::time::timeout(idle, framed.next()).await;
        assert!(nothing.is_err(), "the server sent something unasked: {nothing:?}");
        let used = thread_cpu().saturating_sub(before);
        assert!(used < Duration::from_millis(150), "{used:?} of CPU over {idle:?} of an idle connection");
    });
}
