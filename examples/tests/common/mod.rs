//! What the example tests share: finding (or building) an example binary,
//! and running a server example until the test ends.
#![allow(dead_code)] // each test file uses a part

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// An example binary, built next to this test (`cargo test` builds the
/// package's examples); built on demand if it is missing.
pub fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let dir = deps.parent().and_then(|d| d.parent()).expect("target profile directory");
    let bin = dir.join("examples").join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "shmring-examples", "--example", name]);
        for feature in ["tarpc", "http", "grpc"] {
            if name.starts_with(feature) {
                build.args(["--features", feature]);
            }
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        assert!(build.status().expect("run cargo").success(), "building the {name} example failed");
    }
    bin
}

/// A server example, killed and reaped on drop; its directory removed.
pub struct Server {
    child: Child,
    /// The address it listens on, from its first line of output.
    pub addr: String,
    dir: Option<PathBuf>,
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

/// Start the server example `name` on `addr` and wait for its first line,
/// "NAME listening on ADDR". `dir`, if any, is removed with the server.
pub fn start(name: &str, addr: &str, dir: Option<PathBuf>) -> Server {
    let child = Command::new(example(name)).arg(addr).stdout(Stdio::piped()).spawn().unwrap();
    let mut srv = Server { child, addr: String::new(), dir };
    let mut out = BufReader::new(srv.child.stdout.take().unwrap());
    let mut line = String::new();
    assert!(out.read_line(&mut line).unwrap() > 0, "{name} exited before listening");
    let prefix = format!("{name} listening on ");
    srv.addr = line.trim().strip_prefix(&prefix).expect("the listening line").to_owned();
    srv
}

/// A fresh directory for a test's sockets, named after `tag` and this process.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shmring-{tag}-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run the client example `name` with `args` (and `SHMRING_RPC_TRANSPORT`
/// set to `transport`, if any); its standard output, after checking it
/// succeeded.
pub fn run_client(name: &str, args: &[&str], transport: Option<&str>) -> String {
    let mut c = Command::new(example(name));
    c.args(args);
    if let Some(t) = transport {
        c.env("SHMRING_RPC_TRANSPORT", t);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{name} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
