//! What the example tests share: finding (or building) an example binary.

use std::path::PathBuf;
use std::process::Command;

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
        if name.starts_with("tarpc") {
            build.args(["--features", "tarpc"]);
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        assert!(build.status().expect("run cargo").success(), "building the {name} example failed");
    }
    bin
}
