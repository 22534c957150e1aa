//! The client of `kv_server`: `kv_client ADDR get|set|del KEY [VALUE]`.
//!
//! Prints the value (get), `OK` (set) or `deleted` (del) on standard output,
//! and the transport the connection used on standard error. Exits 0 on
//! success, 1 if the key does not exist, 2 on bad usage, 3 if the server
//! cannot be reached or fails.

use std::process::ExitCode;

use shmring_examples::kv::{FOUND, NOT_FOUND, Request};
use shmring_rpc::{Addr, Client, ClientOptions};

const USAGE: &str = "usage: kv_client ADDR get|set|del KEY [VALUE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let request = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [_, "get", key] => Request::Get(key.into()),
        [_, "set", key, value] => Request::Set(key.into(), value.into()),
        [_, "del", key] => Request::Del(key.into()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let reply = Addr::parse(&args[0]).and_then(|addr| {
        let mut client = Client::connect(&addr, &ClientOptions::new())?;
        eprintln!("connected to {addr} over {}", client.transport().name());
        client.call(&request.encode())
    });
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kv_client: {e}");
            return ExitCode::from(3);
        }
    };
    match (reply.split_first(), &request) {
        (Some((&FOUND, value)), Request::Get(_)) => println!("{}", String::from_utf8_lossy(value)),
        (Some((&FOUND, _)), Request::Set(..)) => println!("OK"),
        (Some((&FOUND, _)), Request::Del(_)) => println!("deleted"),
        (Some((&NOT_FOUND, _)), _) => {
            eprintln!("kv_client: no such key");
            return ExitCode::from(1);
        }
        _ => {
            eprintln!("kv_client: the server answered {reply:?}");
            return ExitCode::from(3);
        }
    }
    ExitCode::SUCCESS
}
