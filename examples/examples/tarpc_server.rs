//! A tarpc server over shmring: `tarpc_server ADDR`, where ADDR is
//! `unix:PATH` (shared memory, the socket as fallback) or `tcp:HOST:PORT`.
//! The service (`shmring_examples::world::World`) is plain tarpc; the one
//! line that differs from tarpc's own example is the `listen` call.
//!
//! ```text
//! cargo run --release -p shmring-examples --features tarpc --example tarpc_server -- unix:/tmp/world.sock
//! cargo run --release -p shmring-examples --features tarpc --example tarpc_client -- unix:/tmp/world.sock Ada
//! ```

use std::io::Write;
use std::process::ExitCode;

use futures_util::{StreamExt, future};
use shmring_examples::world::World;
use shmring_rpc::Addr;
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};

#[derive(Clone)]
struct HelloServer;

impl World for HelloServer {
    async fn hello(self, _: Context, name: String) -> String {
        format!("Hello, {name}!")
    }
}

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: tarpc_server ADDR   (unix:PATH or tcp:HOST:PORT)");
        return ExitCode::from(2);
    };
    shmring_examples::run_async_main("tarpc_server", serve(&addr))
}

async fn serve(addr: &str) -> shmring_rpc::Result<()> {
    let addr = Addr::parse(addr)?;
    // tarpc over a UNIX socket would be:
    //   tarpc::serde_transport::unix::listen(path, Bincode::default).await?
    let listener = shmring_rpc::tarpc::listen(&addr).await?;
    println!("tarpc_server listening on {}", listener.local_addr());
    let _ = std::io::stdout().flush();
    listener
        // A client whose connection failed is skipped.
        .filter_map(|r| future::ready(r.ok()))
        .map(BaseChannel::with_defaults)
        .for_each(|channel| {
            tokio::spawn(channel.execute(HelloServer.serve()).for_each(|response| async {
                tokio::spawn(response);
            }));
            future::ready(())
        })
        .await;
    Ok(())
}
