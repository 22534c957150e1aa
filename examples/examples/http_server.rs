//! An axum service over shmring: `http_server ADDR`, where ADDR is
//! `unix:PATH` (shared memory, the socket as fallback) or `tcp:HOST:PORT`.
//! `GET /hello` says hello and over what; `POST /echo` sends a JSON note back.
//! The router and handlers are plain axum; the one line that differs from
//! axum's own `axum::serve(tokio::net::TcpListener, app)` is the `serve` call
//! at the end. HTTP/1.1 and HTTP/2 both work.
//!
//! ```text
//! cargo run --release -p shmring-examples --features http --example http_server -- unix:/tmp/web.sock
//! cargo run --release -p shmring-examples --features http --example http_client -- unix:/tmp/web.sock
//! ```

use std::io::Write;
use std::process::ExitCode;

use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use shmring_examples::web::Note;
use shmring_rpc::http::ConnectInfo;
use shmring_rpc::{Addr, ServerOptions, ShmListener};

async fn hello(Extension(conn): Extension<ConnectInfo>) -> String {
    format!("hello over {}", conn.transport.name())
}

async fn echo(Extension(conn): Extension<ConnectInfo>, Json(note): Json<Note>) -> Json<Note> {
    Json(Note { transport: conn.transport.name().to_string(), ..note })
}

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: http_server ADDR   (unix:PATH or tcp:HOST:PORT)");
        return ExitCode::from(2);
    };
    shmring_examples::run_async_main("http_server", serve(&addr))
}

async fn serve(addr: &str) -> shmring_rpc::Result<()> {
    let app = Router::new().route("/hello", get(hello)).route("/echo", post(echo));
    let listener = ShmListener::bind(&Addr::parse(addr)?, &ServerOptions::new())?;
    println!("http_server listening on {}", listener.local_addr());
    let _ = std::io::stdout().flush();
    // axum over TCP would be: axum::serve(tokio::net::TcpListener::bind(..).await?, app).await
    shmring_rpc::http::serve(listener, app).await
}
