//! A tonic client of the `grpc_server` example over shmring:
//! `grpc_client ADDR NAME [COUNT]`. Prints the unary greeting, then the
//! COUNT (default 3) streamed ones, checking they come in order. The one
//! line that differs from tonic over TCP is `connect_with_connector`.
//!
//! ```text
//! cargo run --release -p shmring-examples --features grpc --example grpc_client -- unix:/tmp/greeter.sock Ada 3
//! ```

use std::process::ExitCode;

use shmring_examples::greeter::HelloRequest;
use shmring_examples::greeter::greeter_client::GreeterClient;
use shmring_rpc::http::Connector;
use shmring_rpc::{Addr, ClientOptions};
use tonic::transport::Endpoint;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(name)) = (args.first(), args.get(1)) else {
        eprintln!("usage: grpc_client ADDR NAME [COUNT]   (ADDR: unix:PATH or tcp:HOST:PORT)");
        return ExitCode::from(2);
    };
    let count = match args.get(2).map(|c| c.parse::<u32>()) {
        None => 3,
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            eprintln!("grpc_client: COUNT {:?}: {e}", args[2]);
            return ExitCode::from(2);
        }
    };
    shmring_examples::run_async_main("grpc_client", run(addr, name, count))
}

async fn run(addr: &str, name: &str, count: u32) -> Result<(), Box<dyn std::error::Error>> {
    // Over TCP this would be `Endpoint::from_static("http://HOST:PORT").connect()`; here the
    // URI only names the requests' authority.
    let channel = Endpoint::from_static("http://greeter")
        .connect_with_connector(Connector::new(Addr::parse(addr)?, ClientOptions::new()))
        .await?;
    let mut client = GreeterClient::new(channel);
    let reply = client.say_hello(HelloRequest { name: name.into(), count: 1 }).await?;
    println!("{}", reply.into_inner().message);
    let mut stream = client.say_hellos(HelloRequest { name: name.into(), count }).await?.into_inner();
    let mut next = 0;
    while let Some(reply) = stream.message().await? {
        if reply.index != next {
            return Err(format!("greeting {} came where {next} was due", reply.index).into());
        }
        println!("{}", reply.message);
        next += 1;
    }
    if next != count {
        return Err(format!("the stream ended after {next} of {count} greetings").into());
    }
    Ok(())
}
