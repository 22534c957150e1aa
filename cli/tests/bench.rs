//! `shmring bench` rows added for the MPMC ring, System V message queues, shmring-rpc, and the
//! classic mechanisms (signals, semaphores, a file, shmring parking on semaphores).

use std::process::{Command, Stdio};

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shmring")).arg("bench").args(args).output().expect("run shmring bench")
}

#[test]
fn mpmc_and_sysv_rows_measure_and_report_every_key() {
    let out = bench(&["--quick", "--only", "shmring-mpmc,sysv-msgq", "--format", "json", "--no-progress"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let find = |t: &str, mode: &str, payload: u64| {
        rows.iter()
            .find(|r| r["transport"] == t && r["mode"] == mode && r["payload_bytes"] == payload)
            .unwrap_or_else(|| panic!("no {t} {mode} {payload} row in {rows:?}"))
    };
    for r in rows {
        for k in ["transport", "mode", "payload_bytes", "rtt_p50_ns", "rtt_p99_ns", "msgs_per_s", "bytes_per_s"] {
            assert!(r.get(k).is_some(), "row {r} lacks {k}");
        }
    }
    for (t, mode) in [("shmring-mpmc", "stream"), ("sysv-msgq", "stream")] {
        let r = find(t, mode, 64);
        assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["rtt_p50_ns"].is_null());
    }
    let r = find("sysv-msgq", "blocking", 64);
    assert!(r["rtt_p50_ns"].as_f64().unwrap() > 0.0, "{r}");
    // Above the default msgmax of 8 KiB: listed, not measured.
    let r = find("sysv-msgq", "stream", 64 << 10);
    assert!(r["msgs_per_s"].is_null() && r["bytes_per_s"].is_null(), "{r}");
    // Spin needs two CPUs; with fewer the row is there, empty.
    let r = find("shmring-mpmc", "spin", 64);
    assert!(r["rtt_p50_ns"].is_null() || r["rtt_p50_ns"].as_f64().unwrap() > 0.0, "{r}");
}

#[test]
fn rpc_rows_measure_calls_one_at_a_time_and_in_flight() {
    let out = bench(&["--quick", "--only", "rpc-unix,rpc-shm-async", "--format", "json", "--no-progress"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = json_rows(&out.stdout, 8);
    let find = |t: &str, mode: &str, payload: u64| find_row(&rows, t, mode, payload);
    for payload in [64, 4 << 10, 1 << 20] {
        let r = find("rpc-unix", "call", payload);
        assert!(r["rtt_p50_ns"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["rtt_p99_ns"].as_f64().unwrap() >= r["rtt_p50_ns"].as_f64().unwrap(), "{r}");
        assert!(r["msgs_per_s"].is_null() && r["bytes_per_s"].is_null(), "{r}");
    }
    let r = find("rpc-unix", "64-in-flight", 64);
    assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["rtt_p50_ns"].is_null(), "{r}");
    // Shared memory needs two CPUs (the server busy-polls); with fewer the rows are there, empty.
    for mode in ["call", "64-in-flight"] {
        let r = find("rpc-shm-async", mode, 64);
        let measured = if mode == "call" { &r["rtt_p50_ns"] } else { &r["msgs_per_s"] };
        assert!(measured.is_null() || measured.as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn rpc_rows_report_a_peer_that_exits_before_serving_and_leave_nothing_behind() {
    // Every peer exits at once, before binding its server (a test hook of the peer).
    let (out, ours) = bench_run(
        &["--only", "rpc-unix,rpc-tcp", "--messages", "100", "--warmup", "0"],
        Some(("SHMRING_BENCH_CHILD_FAULT", "exit")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("8 case(s) failed"), "{err}");
    let failed: Vec<&str> = err.lines().filter(|l| l.starts_with("  rpc-")).collect();
    assert_eq!(failed.len(), 8, "{err}");
    for l in failed {
        assert!(l.contains("exited before its server was listening"), "{l}");
        assert!(l.contains("child process failed: exit status: 1"), "{l}");
    }
    // The private directories of the rpc-unix rows are gone.
    assert_nothing_left(&ours);
}

#[test]
fn classic_rows_measure_and_leave_nothing_behind() {
    let (out, ours) = bench_run(&["--quick", "--only", "signal,semaphore,file,shmring-sem", "--format", "json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = json_rows(&out.stdout, 4);
    let find = |t: &str, mode: &str, payload: u64| find_row(&rows, t, mode, payload);
    for (t, payload) in [("signal", 64), ("semaphore", 8), ("shmring-sem", 64)] {
        let r = find(t, "park", payload);
        let (p50, p99) = (r["rtt_p50_ns"].as_f64().unwrap(), r["rtt_p99_ns"].as_f64().unwrap());
        // Two system calls and two wake-ups per round trip: more than 100 ns, less than 100 ms.
        assert!((100.0..1e8).contains(&p50) && p99 >= p50, "{r}");
        assert!(r["msgs_per_s"].is_null(), "{r}");
    }
    // The file's reader polls, which needs two CPUs; with fewer the row is there, empty.
    let r = find("file", "stream", 64);
    let rate = &r["msgs_per_s"];
    assert!(rate.is_null() || rate.as_f64().unwrap() > 1000.0, "{r}");
    assert!(r["rtt_p50_ns"].is_null(), "{r}");
    // The file row's private directory is gone.
    assert_nothing_left(&ours);
}

#[test]
fn help_names_the_new_rows() {
    let out = bench(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for t in ["shmring-mpmc", "sysv-msgq", "rpc-shm", "rpc-shm-async", "rpc-unix", "rpc-tcp", "64-in-flight"] {
        assert!(help.contains(t), "--help does not mention {t}");
    }
    for t in ["signal", "semaphore", "file", "shmring-sem", "sigqueue", "sigwaitinfo", "NotifierKind::Semaphore"] {
        assert!(help.contains(t), "--help does not mention {t}");
    }
}

/// Fails if anything named `prefix`* is left in the temporary directory (removing it first).
fn assert_nothing_left(prefix: &str) {
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(prefix)))
        .map(|e| e.path())
        .collect();
    for path in &left {
        let _ = std::fs::remove_dir_all(path);
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The rows of a `--format json` run, which must be `n`.
fn json_rows(stdout: &[u8], n: usize) -> Vec<serde_json::Value> {
    let rows: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    let rows = rows.as_array().unwrap().clone();
    assert_eq!(rows.len(), n, "{rows:?}");
    rows
}

/// The row of transport `t`, mode `mode` and payload `payload`.
fn find_row<'a>(rows: &'a [serde_json::Value], t: &str, mode: &str, payload: u64) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["transport"] == t && r["mode"] == mode && r["payload_bytes"] == payload)
        .unwrap_or_else(|| panic!("no {t} {mode} {payload} row in {rows:?}"))
}

/// Runs `shmring bench ARGS --no-progress` (with the environment variable `env`, if any); its
/// output, and the prefix of the temporary files and directories it names after its pid.
fn bench_run(args: &[&str], env: Option<(&str, &str)>) -> (std::process::Output, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shmring"));
    cmd.arg("bench").args(args).arg("--no-progress");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run shmring bench");
    let ours = format!("shmring-bench-{}-", child.id());
    (child.wait_with_output().expect("wait for shmring bench"), ours)
}

#[cfg(feature = "grpc")]
#[test]
fn http_and_grpc_rows_measure_calls_one_at_a_time_and_in_flight() {
    let names = ["http-shm", "http-unix", "http-tcp", "grpc-shm", "grpc-tcp"];
    let (out, ours) = bench_run(&["--quick", "--only", &names.join(","), "--format", "json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = json_rows(&out.stdout, 10);
    for t in names {
        let r = find_row(&rows, t, "call", 64);
        let (p50, p99) = (r["rtt_p50_ns"].as_f64().unwrap(), r["rtt_p99_ns"].as_f64().unwrap());
        assert!((100.0..1e8).contains(&p50) && p99 >= p50, "{r}");
        let r = find_row(&rows, t, "64-in-flight", 64);
        assert!(r["msgs_per_s"].as_f64().unwrap() > 100.0, "{r}");
    }
    // The private directories of the UNIX-socket rows are gone.
    assert_nothing_left(&ours);
}
