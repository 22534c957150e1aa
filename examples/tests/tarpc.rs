//! Runs `tarpc_server` and `tarpc_client` as separate processes, over
//! shared memory, over the socket fallback (`SHMRING_RPC_TRANSPORT=unix`)
//! and over TCP.
#![cfg(feature = "tarpc")]

mod common;

use common::{Server, run_client, start, temp_dir};

fn greet(srv: &Server, name: &str, transport: Option<&str>) -> String {
    run_client("tarpc_client", &[&srv.addr, name], transport)
}

#[test]
fn the_tarpc_examples_talk_over_shm_the_socket_and_tcp() {
    let dir = temp_dir("tarpc");
    let srv = start("tarpc_server", &format!("unix:{}", dir.join("world.sock").display()), Some(dir));
    assert_eq!(greet(&srv, "Ada", None).trim(), "Hello, Ada! (over shm)");
    assert_eq!(greet(&srv, "Grace", Some("unix")).trim(), "Hello, Grace! (over unix)");
    let tcp = start("tarpc_server", "tcp:127.0.0.1:0", None);
    assert_eq!(greet(&tcp, "Edsger", None).trim(), "Hello, Edsger! (over tcp)");
}
