//! A key-value store served over shmring-rpc: `kv_server ADDR`, where ADDR
//! is `unix:PATH` (shared memory, the socket as fallback) or
//! `tcp:HOST:PORT`. Each client is served on its own thread; the store is
//! shared. Stop it with Ctrl-C.
//!
//! ```text
//! cargo run --release -p shmring-examples --example kv_server -- unix:/tmp/kv.sock
//! cargo run --release -p shmring-examples --example kv_client -- unix:/tmp/kv.sock set colour blue
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;

use shmring_examples::kv::{BAD_REQUEST, FOUND, NOT_FOUND, Request};
use shmring_rpc::{Addr, Server, ServerOptions};

fn main() -> ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: kv_server ADDR   (unix:PATH or tcp:HOST:PORT)");
        return ExitCode::from(2);
    };
    match serve(&addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(addr: &str) -> shmring_rpc::Result<()> {
    let server = Server::bind(&Addr::parse(addr)?, &ServerOptions::new())?;
    // Tests and scripts wait for this line before connecting.
    println!("kv_server listening on {}", server.local_addr());
    let store: Mutex<HashMap<Vec<u8>, Vec<u8>>> = Mutex::new(HashMap::new());
    server.serve(move |call: &[u8]| {
        let mut map = store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match Request::decode(call) {
            Some(Request::Get(k)) => match map.get(&k) {
                Some(v) => [&[FOUND][..], v].concat(),
                None => vec![NOT_FOUND],
            },
            Some(Request::Set(k, v)) => {
                map.insert(k, v);
                vec![FOUND]
            }
            Some(Request::Del(k)) => vec![if map.remove(&k).is_some() { FOUND } else { NOT_FOUND }],
            None => vec![BAD_REQUEST],
        }
    })
}
