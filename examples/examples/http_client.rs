//! A hyper client of the `http_server` example over shmring:
//! `http_client ADDR [--http2]`. Prints the `GET /hello` answer and the
//! note `POST /echo` sent back; fails if the note changed on the way. The
//! one line that differs from a hyper client over TCP is the connector
//! given to `Client::builder(..).build(..)`.
//!
//! ```text
//! cargo run --release -p shmring-examples --features http --example http_client -- unix:/tmp/web.sock --http2
//! ```

use std::process::ExitCode;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shmring_examples::web::Note;
use shmring_rpc::http::Connector;
use shmring_rpc::{Addr, ClientOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.first() else {
        eprintln!("usage: http_client ADDR [--http2]   (ADDR: unix:PATH or tcp:HOST:PORT)");
        return ExitCode::from(2);
    };
    let http2 = args.iter().any(|a| a == "--http2");
    shmring_examples::run_async_main("http_client", run(addr, http2))
}

async fn run(addr: &str, http2: bool) -> Result<(), BoxError> {
    // Over TCP this would be `.build_http()`.
    let connector = Connector::new(Addr::parse(addr)?, ClientOptions::new());
    let client = Client::builder(TokioExecutor::new()).http2_only(http2).build(connector);

    let reply = client.get("http://localhost/hello".parse()?).await?;
    let version = reply.version();
    let status = reply.status();
    let body = reply.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        return Err(format!("GET /hello: {status}").into());
    }
    println!("{} ({version:?})", String::from_utf8_lossy(&body));

    let sent = Note { text: "a note".into(), n: 42, transport: String::new() };
    let req = Request::builder()
        .method(Method::POST)
        .uri("http://localhost/echo")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&sent)?)))?;
    let reply = client.request(req).await?;
    let status = reply.status();
    let body = reply.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        return Err(format!("POST /echo: {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    let back: Note = serde_json::from_slice(&body)?;
    if back.text != sent.text || back.n != sent.n {
        return Err(format!("POST /echo sent back {back:?} for {sent:?}").into());
    }
    println!("echo: {} {} (over {})", back.text, back.n, back.transport);
    Ok(())
}
