//! Runs `tarpc_server` and `tarpc_client` as separate processes, over
//! shared memory, over the socket fallback (`SHMRING_RPC_TRANSPORT=unix`)
//! and over TCP.
#![cfg(feature = "tarpc")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::example;

/// The server, killed and reaped on drop; its directory removed.
struct Server {
    child: Child,
    addr: String,
    dir: Option<std::path::PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn start(addr: &str, dir: Option<std::path::PathBuf>) -> Server {
    let child = Command::new(example("tarpc_server")).arg(addr).stdout(Stdio::piped()).spawn().unwrap();
    let mut srv = Server { child, addr: String::new(), dir };
    let mut out = BufReader::new(srv.child.stdout.take().unwrap());
    let mut line = String::new();
    assert!(out.read_line(&mut line).unwrap() > 0, "tarpc_server exited before listening");
    srv.addr = line.trim().strip_prefix("tarpc_server listening on ").expect("the listening line").to_owned();
    srv
}

fn greet(srv: &Server, name: &str, transport: Option<&str>) -> String {
    let mut c = Command::new(example("tarpc_client"));
    c.arg(&srv.addr).arg(name);
    if let Some(t) = transport {
        c.env("SHMRING_RPC_TRANSPORT", t);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "tarpc_client failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_tarpc_examples_talk_over_shm_the_socket_and_tcp() {
    let dir = std::env::temp_dir().join(format!("shmring-tarpc-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let srv = start(&format!("unix:{}", dir.join("world.sock").display()), Some(dir));
    assert_eq!(greet(&srv, "Ada", None).trim(), "Hello, Ada! (over shm)");
    assert_eq!(greet(&srv, "Grace", Some("unix")).trim(), "Hello, Grace! (over unix)");
    let tcp = start("tcp:127.0.0.1:0", None);
    assert_eq!(greet(&tcp, "Edsger", None).trim(), "Hello, Edsger! (over tcp)");
}
