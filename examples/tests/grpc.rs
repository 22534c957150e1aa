//! Runs `grpc_server` and `grpc_client` (tonic) as separate processes, a
//! unary call and a server stream, over shared memory, over the socket
//! fallback (`SHMRING_RPC_TRANSPORT=unix`) and over TCP.
#![cfg(feature = "grpc")]

mod common;

use common::{run_client, start, temp_dir};

fn expected(name: &str, over: &str, count: u32) -> String {
    let mut s = format!("Hello, {name}! (over {over})\n");
    for i in 0..count {
        s += &format!("Hello #{i}, {name}!\n");
    }
    s
}

#[test]
fn the_grpc_examples_call_and_stream_over_shm_the_socket_and_tcp() {
    let dir = temp_dir("grpc");
    let srv = start("grpc_server", &format!("unix:{}", dir.join("greeter.sock").display()), Some(dir));
    assert_eq!(run_client("grpc_client", &[&srv.addr, "Ada", "3"], None), expected("Ada", "shm", 3));
    // A long stream: many HTTP/2 frames through the rings.
    assert_eq!(run_client("grpc_client", &[&srv.addr, "Alan", "1000"], None), expected("Alan", "shm", 1000));
    assert_eq!(run_client("grpc_client", &[&srv.addr, "Grace", "2"], Some("unix")), expected("Grace", "unix", 2));
    let tcp = start("grpc_server", "tcp:127.0.0.1:0", None);
    assert_eq!(run_client("grpc_client", &[&tcp.addr, "Edsger", "1"], None), expected("Edsger", "tcp", 1));
}

#[test]
fn a_refused_request_is_an_error_status_not_an_empty_stream() {
    let dir = temp_dir("grpc-refused");
    let srv = start("grpc_server", &format!("unix:{}", dir.join("greeter.sock").display()), Some(dir));
    let out =
        std::process::Command::new(common::example("grpc_client")).args([&srv.addr, "Ada", "1001"]).output().unwrap();
    assert!(!out.status.success(), "the client must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 1000 greetings"), "{err}");
}
