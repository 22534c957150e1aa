//! Runs the `job_queue` example as a user would, with a worker killed by
//! SIGKILL mid-job, and checks that the lost job is named and re-queued and
//! that every job completes.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The example binary, built next to this test (`cargo test` builds the
/// package's examples); built on demand if it is missing.
fn example_binary() -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let dir = deps.parent().and_then(|d| d.parent()).expect("target profile directory");
    let bin = dir.join("examples").join("job_queue");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "shmring-examples", "--example", "job_queue"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        assert!(build.status().expect("run cargo").success(), "building the job_queue example failed");
    }
    bin
}

/// Segments the dispatcher with this pid may have left.
fn leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("shmring-jobq-{pid}");
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n == &prefix || n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default()
}

/// Run the example with `args`; removes whatever segments it left, whatever
/// happens, and kills it if it overruns.
fn run_example(args: &[&str]) -> Output {
    let mut child = Command::new(example_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start job_queue");
    let pid = child.id();
    struct Sweep(u32);
    impl Drop for Sweep {
        fn drop(&mut self) {
            for n in leftovers(self.0) {
                let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
            }
        }
    }
    let sweep = Sweep(pid);
    let start = Instant::now();
    while child.try_wait().expect("poll job_queue").is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect job_queue output");
    let left = leftovers(pid);
    drop(sweep);
    assert!(left.is_empty(), "segments left in /dev/shm: {left:?}");
    out
}

#[test]
fn killed_worker_job_is_named_requeued_and_every_job_completes() {
    let out = run_example(&["--workers", "3", "--jobs", "30", "--kill-one"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\nstdout:\n{text}\nstderr:\n{err}", out.status);

    // Which worker was killed, and with which job in flight.
    let kill = text.lines().find(|l| l.contains("sent SIGKILL to worker")).unwrap_or_else(|| panic!("{text}"));
    let job: u64 = kill.rsplit(' ').next().and_then(|j| j.parse().ok()).unwrap_or_else(|| panic!("{kill}"));
    assert!(text.contains("exited killed on purpose: signal: 9"), "{text}");
    // Killed right after it reported starting the job, and it holds the slot
    // until it reports the result: the job is lost and comes back.
    assert!(text.contains(&format!("job {job} was in flight in worker")), "{text}");
    assert!(text.contains(&format!("re-queued job {job}")), "{text}");
    assert!(text.contains("1 message(s) lost because a consumer died"), "{text}");
    let summary = text.lines().find(|l| l.contains("all 30 jobs completed and checked")).unwrap_or_else(|| {
        panic!("no completion line:\n{text}");
    });
    assert!(summary.contains(&format!("re-queued [{job}]")), "{summary}");
}

#[test]
fn without_kills_every_job_completes_and_nothing_is_requeued() {
    let out = run_example(&["--workers", "2", "--jobs", "12"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("all 12 jobs completed and checked") && text.contains("re-queued []"), "{text}");
    assert!(!text.contains("SIGKILL"), "{text}");
}

#[test]
fn bad_arguments_get_usage() {
    let out = run_example(&["--workers", "1", "--kill-one"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: job_queue"));
}
