//! A tonic service over shmring: `grpc_server ADDR`, where ADDR is
//! `unix:PATH` (shared memory, the socket as fallback) or `tcp:HOST:PORT`.
//! The `Greeter` service (`proto/greeter.proto`) has a unary method and a
//! server-streaming one. The service is plain tonic; the one line that
//! differs from tonic over TCP is `serve_with_incoming(listener)`.
//!
//! ```text
//! cargo run --release -p shmring-examples --features grpc --example grpc_server -- unix:/tmp/greeter.sock
//! cargo run --release -p shmring-examples --features grpc --example grpc_client -- unix:/tmp/greeter.sock Ada 3
//! ```

use std::io::Write;
use std::pin::Pin;
use std::process::ExitCode;

use futures_util::Stream;
use shmring_examples::greeter::greeter_server::{Greeter, GreeterServer};
use shmring_examples::greeter::{HelloReply, HelloRequest};
use shmring_rpc::http::ConnectInfo;
use shmring_rpc::{Addr, ServerOptions, ShmListener};
use tonic::{Request, Response, Status};

/// Streams of at most this many greetings.
const MAX_COUNT: u32 = 1000;

#[derive(Debug, Default)]
struct MyGreeter;

/// The transport a request came over, as the connection told tonic.
fn transport<T>(req: &Request<T>) -> &'static str {
    req.extensions().get::<ConnectInfo>().map_or("an unknown transport", |c| c.transport.name())
}

#[tonic::async_trait]
impl Greeter for MyGreeter {
    async fn say_hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let over = transport(&req);
        let message = format!("Hello, {}! (over {over})", req.into_inner().name);
        Ok(Response::new(HelloReply { message, index: 0 }))
    }

    type SayHellosStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

    async fn say_hellos(&self, req: Request<HelloRequest>) -> Result<Response<Self::SayHellosStream>, Status> {
        let HelloRequest { name, count } = req.into_inner();
        if count > MAX_COUNT {
            return Err(Status::invalid_argument(format!("at most {MAX_COUNT} greetings, not {count}")));
        }
        let replies =
            (0..count).map(move |index| Ok(HelloReply { message: format!("Hello #{index}, {name}!"), index }));
        Ok(Response::new(Box::pin(futures_util::stream::iter(replies))))
    }
}

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: grpc_server ADDR   (unix:PATH or tcp:HOST:PORT)");
        return ExitCode::from(2);
    };
    shmring_examples::run_async_main("grpc_server", serve(&addr))
}

async fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let listener = ShmListener::bind(&Addr::parse(addr)?, &ServerOptions::new())?;
    println!("grpc_server listening on {}", listener.local_addr());
    let _ = std::io::stdout().flush();
    tonic::transport::Server::builder()
        .add_service(GreeterServer::new(MyGreeter))
        // Over TCP this would be `.serve(socket_addr)`.
        .serve_with_incoming(listener)
        .await?;
    Ok(())
}
