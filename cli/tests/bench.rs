//! `shmring bench` rows added for the MPMC ring and System V message queues.

use std::process::Command;

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
fn help_names_the_new_rows() {
    let out = bench(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for t in ["shmring-mpmc", "sysv-msgq"] {
        assert!(help.contains(t), "--help does not mention {t}");
    }
}
