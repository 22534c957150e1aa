//! Runs `http_server` (axum) and `http_client` (hyper) as separate
//! processes: HTTP/1.1 and HTTP/2 over shared memory, over the socket
//! fallback (`SHMRING_RPC_TRANSPORT=unix`) and over TCP.
#![cfg(feature = "http")]

mod common;

use common::{run_client, start, temp_dir};

#[test]
fn the_http_examples_talk_both_versions_over_shm_the_socket_and_tcp() {
    let dir = temp_dir("http");
    let srv = start("http_server", &format!("unix:{}", dir.join("web.sock").display()), Some(dir));
    let tcp = start("http_server", "tcp:127.0.0.1:0", None);
    let cases = [
        (&srv, None, "shm", "HTTP/1.1"),
        (&srv, Some("unix"), "unix", "HTTP/1.1"),
        (&tcp, None, "tcp", "HTTP/1.1"),
        (&srv, None, "shm", "HTTP/2.0"),
        (&srv, Some("unix"), "unix", "HTTP/2.0"),
        (&tcp, None, "tcp", "HTTP/2.0"),
    ];
    for (server, transport, over, version) in cases {
        let mut args = vec![server.addr.as_str()];
        if version == "HTTP/2.0" {
            args.push("--http2");
        }
        let out = run_client("http_client", &args, transport);
        let expected = format!("hello over {over} ({version})\necho: a note 42 (over {over})\n");
        assert_eq!(out, expected, "{version} with {transport:?}");
    }
}
