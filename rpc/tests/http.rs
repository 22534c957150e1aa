//! hyper over `ShmStream` between real processes (feature `http`): large
//! bodies both ways in HTTP/1.1 and HTTP/2, the transport each request came
//! over, and a server that dies in the middle of a response, which the
//! client must see as an error, never as a complete body.
#![cfg(feature = "http")]

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::{ADDR_ENV, ROLE_ENV, TempDir, server_at};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shmring_rpc::http::{ConnectInfo, Connector};
use shmring_rpc::{Addr, ClientOptions, ServerOptions, ShmListener, TransportKind};

/// Bytes in the body that `/half` promises and does not finish.
const PROMISED: usize = 1 << 20;

fn body_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// The server's routes: `POST /echo` sends the body back with the transport
/// in a header; `GET /half` promises [`PROMISED`] bytes, sends a quarter,
/// and kills its process (SIGKILL).
#[derive(Clone)]
struct Routes;

type Body = BoxBody<Bytes, Infallible>;

impl tower_service::Service<Request<Incoming>> for Routes {
    type Response = Response<Body>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        Box::pin(async move {
            let over = req.extensions().get::<ConnectInfo>().map_or("none", |c| c.transport.name()).to_owned();
            if req.uri().path() == "/half" {
                let chunks = futures_util::stream::unfold(0usize, |sent| async move {
                    if sent >= PROMISED / 4 {
                        // Everything so far is on its way; now the process dies.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        // SAFETY: kill(2) on our own pid; nothing is borrowed across it.
                        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                    }
                    let chunk = Bytes::from(body_of(16 << 10, sent as u8));
                    Some((Ok::<_, Infallible>(Frame::data(chunk)), sent + (16 << 10)))
                });
                let resp = Response::builder()
                    .header("content-length", PROMISED.to_string())
                    .body(BodyExt::boxed(StreamBody::new(chunks)))
                    .unwrap();
                return Ok(resp);
            }
            let body = req.into_body().collect().await?.to_bytes();
            Ok(Response::builder().header("x-transport", over).body(BodyExt::boxed(Full::new(body))).unwrap())
        })
    }
}

/// Peer entry: `shmring_rpc::http::serve` of [`Routes`].
#[test]
#[ignore = "server process for the http tests"]
fn http_server_main() {
    let (Ok(_), Ok(addr)) = (std::env::var(ROLE_ENV), std::env::var(ADDR_ENV)) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let listener = ShmListener::bind(&Addr::parse(&addr).unwrap(), &ServerOptions::new()).unwrap();
        println!("listening {}", listener.local_addr());
        std::io::stdout().flush().unwrap();
        shmring_rpc::http::serve(listener, Routes).await.unwrap();
    });
}

fn client(addr: &Addr, t: TransportKind, http2: bool) -> Client<Connector, Full<Bytes>> {
    let connector = Connector::new(addr.clone(), ClientOptions::new().transport(t));
    Client::builder(TokioExecutor::new()).http2_only(http2).build(connector)
}

#[test]
fn large_bodies_go_both_ways_in_both_versions_over_shm_and_the_socket() {
    let dir = TempDir::new("http");
    let srv = server_at("http_server_main", "web", &dir.addr());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for t in [TransportKind::Shm, TransportKind::Unix] {
        for http2 in [false, true] {
            let c = client(&srv.addr, t, http2);
            rt.block_on(async {
                for (i, len) in [0, 1, 1000, 70_000, 3 << 20].into_iter().enumerate() {
                    let sent = body_of(len, i as u8);
                    let req =
                        Request::post("http://localhost/echo").body(Full::new(Bytes::from(sent.clone()))).unwrap();
                    let reply = c.request(req).await.unwrap();
                    assert_eq!(reply.headers()["x-transport"], t.name(), "{t:?}, HTTP/2 {http2}");
                    let back = reply.into_body().collect().await.unwrap().to_bytes();
                    assert!(back[..] == sent[..], "{t:?}, HTTP/2 {http2}: a body of {len} bytes came back changed");
                }
                // Several requests at once (HTTP/2 multiplexes them on one connection).
                let calls = (0..16).map(|i| {
                    let req =
                        Request::post("http://localhost/echo").body(Full::new(Bytes::from(body_of(5000, i)))).unwrap();
                    c.request(req)
                });
                for (i, r) in futures_util::future::join_all(calls).await.into_iter().enumerate() {
                    let back = r.unwrap().into_body().collect().await.unwrap().to_bytes();
                    assert!(back[..] == body_of(5000, i as u8)[..]);
                }
            });
        }
    }
}

#[test]
fn a_server_that_dies_mid_body_is_an_error_never_a_complete_body() {
    let dir = TempDir::new("http-die");
    for t in [TransportKind::Shm, TransportKind::Unix] {
        for http2 in [false, true] {
            let srv = server_at("http_server_main", "web", &dir.addr());
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let c = client(&srv.addr, t, http2);
            rt.block_on(async {
                let req = Request::get("http://localhost/half").body(Full::new(Bytes::new())).unwrap();
                let reply = c.request(req).await.unwrap();
                let mut body = reply.into_body().into_data_stream();
                let mut got = 0;
                let mut ended = None;
                while let Some(chunk) = body.next().await {
                    match chunk {
                        Ok(b) => got += b.len(),
                        Err(e) => {
                            ended = Some(e);
                            break;
                        }
                    }
                }
                assert!(got < PROMISED, "{t:?}, HTTP/2 {http2}: all {got} bytes arrived from a dead server");
                assert!(ended.is_some(), "{t:?}, HTTP/2 {http2}: the body ended cleanly after {got} bytes");
            });
            drop(srv);
        }
    }
}
