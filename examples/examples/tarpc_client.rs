//! A tarpc client over shmring: `tarpc_client ADDR NAME` asks the
//! `tarpc_server` at ADDR to greet NAME and prints the greeting and the
//! transport used. The one line that differs from tarpc's own example is
//! the `connect` call.

use std::process::ExitCode;

use shmring_examples::world::WorldClient;
use shmring_rpc::Addr;
use tarpc::{client, context};

fn main() -> ExitCode {
    let (Some(addr), Some(name)) = (std::env::args().nth(1), std::env::args().nth(2)) else {
        eprintln!("usage: tarpc_client ADDR NAME   (ADDR: unix:PATH or tcp:HOST:PORT)");
        return ExitCode::from(2);
    };
    shmring_examples::run_async_main("tarpc_client", greet(&addr, name))
}

async fn greet(addr: &str, name: String) -> Result<(), Box<dyn std::error::Error>> {
    let addr = Addr::parse(addr)?;
    // tarpc over a UNIX socket would be:
    //   tarpc::serde_transport::unix::connect(path, Bincode::default).await?
    let transport = shmring_rpc::tarpc::connect(&addr).await?;
    let over = transport.transport();
    let client = WorldClient::new(client::Config::default(), transport).spawn();
    let greeting = client.hello(context::current(), name).await?;
    println!("{greeting} (over {})", over.name());
    Ok(())
}
