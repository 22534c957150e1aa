//! Runs `kv_server` and `kv_client` as separate processes, as a user would,
//! over shared memory, over the socket fallback (`SHMRING_RPC_TRANSPORT=unix`)
//! and over TCP.

use std::process::{Command, Output};

mod common;
use common::{Server, example, start, temp_dir};

fn client(srv: &Server, args: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut c = Command::new(example("kv_client"));
    c.arg(&srv.addr).args(args);
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn session(srv: &Server, transport: &str, env: Option<(&str, &str)>) {
    let set = client(srv, &["set", "colour", "blue"], env);
    assert!(set.status.success(), "{set:?}");
    assert_eq!(String::from_utf8_lossy(&set.stdout), "OK\n");
    assert!(String::from_utf8_lossy(&set.stderr).contains(&format!("over {transport}")), "{set:?}");
    let get = client(srv, &["get", "colour"], env);
    assert_eq!((get.status.code(), String::from_utf8_lossy(&get.stdout).as_ref()), (Some(0), "blue\n"));
    let del = client(srv, &["del", "colour"], env);
    assert_eq!(String::from_utf8_lossy(&del.stdout), "deleted\n");
    let gone = client(srv, &["get", "colour"], env);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no such key"));
}

#[test]
fn kv_over_shared_memory_the_socket_and_tcp() {
    let dir = temp_dir("kv");
    let srv = start("kv_server", &format!("unix:{}", dir.join("kv.sock").display()), Some(dir));
    session(&srv, "shm", None);
    session(&srv, "unix", Some(("SHMRING_RPC_TRANSPORT", "unix")));
    let tcp = start("kv_server", "tcp:127.0.0.1:0", None);
    session(&tcp, "tcp", None);
}

#[test]
fn kv_client_says_what_is_wrong() {
    let usage = Command::new(example("kv_client")).args(["unix:/nowhere"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let unreachable =
        Command::new(example("kv_client")).args(["unix:/nonexistent/kv.sock", "get", "k"]).output().unwrap();
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("connect unix:/nonexistent/kv.sock"),
        "{unreachable:?}"
    );
}

#[test]
fn rpc_multi_checks_every_reply_of_eight_client_processes() {
    for transport in ["shm", "unix"] {
        let out = Command::new(example("rpc_multi"))
            .args(["--clients", "8", "--calls", "1000", "--transport", transport])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            text.contains(&format!("8 client processes x 1000 calls over {transport}: 8000 calls"))
                && text.contains("every reply checked; 0 client(s) failed"),
            "{text}"
        );
    }
}
