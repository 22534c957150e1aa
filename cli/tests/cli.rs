//! The `shmring` binary, driven as a user would: real processes, real pipes.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shmring");

/// A unique shm name, removed on drop.
struct Name(String);

impl Name {
    fn new(tag: &str) -> Name {
        static N: AtomicU32 = AtomicU32::new(0);
        Name(format!("shmring-clitest-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
    }
    fn dev_path(&self) -> String {
        format!("/dev/shm/{}", self.0)
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dev_path());
    }
}

/// Held by tests that make a segment stale or run `rm --stale`, so one
/// test's `rm --stale` never removes another's stale segment mid-test.
static STALE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn stale_lock() -> std::sync::MutexGuard<'static, ()> {
    STALE_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shmring(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

fn run(args: &[&str]) -> Output {
    shmring(args).stdin(Stdio::null()).output().expect("run shmring")
}

fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Start `recv`, feed `input` to `send`, return what `recv` wrote.
fn transfer(target: &[&str], input: &[u8], recv_first: bool) -> Vec<u8> {
    let recv_args: Vec<&str> = ["recv"].iter().chain(target).copied().collect();
    let send_args: Vec<&str> = ["send", "--capacity", "64K", "--chunk", "4K"].iter().chain(target).copied().collect();
    let spawn_recv = || Proc(shmring(&recv_args).stdout(Stdio::piped()).spawn().unwrap());
    let mut recv = recv_first.then(spawn_recv);
    let mut send = Proc(shmring(&send_args).stdin(Stdio::piped()).spawn().unwrap());
    let mut recv = recv.take().unwrap_or_else(spawn_recv);
    let mut stdin = send.0.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    recv.0.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap().unwrap();
    assert!(send.0.wait().unwrap().success(), "send failed");
    assert!(recv.0.wait().unwrap().success(), "recv failed");
    out
}

#[test]
fn send_then_recv_copies_bytes_exactly_and_removes_the_segment() {
    let name = Name::new("copy");
    let input = data(3 << 20);
    let out = transfer(&[&name.0], &input, false);
    assert!(out == input, "output differs from input ({} vs {} bytes)", out.len(), input.len());
    assert!(!std::path::Path::new(&name.dev_path()).exists(), "recv should remove the segment");
}

#[test]
fn recv_may_start_first_and_empty_input_is_an_empty_stream() {
    let name = Name::new("first");
    assert_eq!(transfer(&[&name.0], &data(100_000), true), data(100_000));
    let name = Name::new("empty");
    assert!(transfer(&[&name.0], b"", true).is_empty());
}

#[test]
fn file_backed_transfer() {
    let dir = std::env::temp_dir().join(format!("shmring-clitest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ring");
    let p = path.to_str().unwrap();
    let input = data(1 << 20);
    let out = transfer(&["--path", p], &input, false);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out == input);
}

/// Poll until the child exits; returns its output and how long that took.
fn wait_for_exit(mut p: Proc) -> (std::process::ExitStatus, String, Duration) {
    let t = Instant::now();
    loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            let mut err = String::new();
            p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (st, err, t.elapsed());
        }
        assert!(t.elapsed() < Duration::from_secs(30), "survivor never exited");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn receiver_reports_a_killed_sender_within_a_second() {
    let name = Name::new("killsend");
    let mut send = Proc(shmring(&["send", &name.0]).stdin(Stdio::piped()).spawn().unwrap());
    let recv = Proc(shmring(&["recv", &name.0]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let mut stdin = send.0.stdin.take().unwrap();
    stdin.write_all(&data(10_000)).unwrap(); // some data, and the sender stays attached
    let mut recv = recv;
    let mut got = [0u8; 10_000];
    recv.0.stdout.take().unwrap().read_exact(&mut got).unwrap();
    send.0.kill().unwrap();
    let (st, err, took) = wait_for_exit(recv);
    drop(stdin);
    assert!(!st.success(), "recv must fail when the sender dies");
    assert!(err.contains("died"), "message should say the peer died: {err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn sender_reports_a_killed_receiver_within_a_second() {
    let name = Name::new("killrecv");
    let mut send = Proc(
        shmring(&["send", "--capacity", "64K", &name.0]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
    );
    let mut recv = Proc(shmring(&["recv", &name.0]).stdout(Stdio::piped()).spawn().unwrap());
    let mut stdin = send.0.stdin.take().unwrap();
    // Keep feeding: once recv stops reading, the ring fills and send waits.
    let feeder = std::thread::spawn(move || {
        let chunk = data(64 * 1024);
        while stdin.write_all(&chunk).is_ok() {}
    });
    let mut first = [0u8; 1000];
    recv.0.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    recv.0.kill().unwrap();
    let (st, err, took) = wait_for_exit(send);
    assert!(!st.success());
    assert!(err.contains("died"), "{err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    feeder.join().unwrap();
}

#[test]
fn ls_inspect_and_rm_handle_healthy_damaged_and_foreign_segments() {
    // A healthy segment with a finished stream waiting for a reader.
    let name = Name::new("ls");
    let mut send = shmring(&["send", "--capacity", "8K", &name.0]).stdin(Stdio::piped()).spawn().unwrap();
    send.stdin.take().unwrap().write_all(b"hello").unwrap();
    assert!(send.wait().unwrap().success());

    let ls = run(&["ls"]);
    let text = String::from_utf8_lossy(&ls.stdout);
    let line = text.lines().find(|l| l.contains(&name.0)).unwrap_or_else(|| panic!("not listed:\n{text}"));
    assert!(line.contains("spsc") && line.contains("waiting"), "{line}");

    let ins = run(&["inspect", &name.0]);
    let out = String::from_utf8_lossy(&ins.stdout);
    assert_eq!(ins.status.code(), Some(0), "{out}");
    assert!(out.contains("healthy") && out.contains("capacity     8192"), "{out}");
    assert!(out.contains("producer    : closed"), "{out}");

    // Damage it: capacity no longer a power of two.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(name.dev_path()).unwrap();
        f.write_all_at(&12345u64.to_ne_bytes(), 24).unwrap();
    }
    let ins = run(&["inspect", &name.0]);
    let out = String::from_utf8_lossy(&ins.stdout);
    assert_eq!(ins.status.code(), Some(2), "{out}");
    assert!(out.contains("capacity 12345 is not a power of two"), "{out}");
    let ls = run(&["ls", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["name"].as_str() == Some(&format!("/{}", name.0))).unwrap();
    assert_eq!(row["status"], "damaged");

    // Garbage that is not ours: inspect explains, rm refuses without --force.
    let foreign = Name::new("foreign");
    std::fs::write(foreign.dev_path(), b"just some bytes").unwrap();
    let ins = run(&["inspect", &foreign.0]);
    assert_eq!(ins.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&ins.stdout).contains("not a shmring segment"));
    let rm = run(&["rm", &foreign.0]);
    assert!(!rm.status.success());
    assert!(String::from_utf8_lossy(&rm.stderr).contains("--force"));
    assert!(run(&["rm", "--force", &foreign.0]).status.success());

    assert!(run(&["rm", &name.0]).status.success());
    assert!(!std::path::Path::new(&name.dev_path()).exists());
    let missing = run(&["inspect", &name.0]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[test]
fn rm_stale_removes_a_segment_whose_sender_was_killed() {
    let _serial = stale_lock();
    let name = Name::new("stale");
    let mut send = Proc(shmring(&["send", &name.0]).stdin(Stdio::piped()).spawn().unwrap());
    let mut stdin = send.0.stdin.take().unwrap();
    stdin.write_all(b"partial").unwrap();
    // Wait until the sender has attached (the producer role shows up).
    let t = Instant::now();
    loop {
        let out = String::from_utf8_lossy(&run(&["inspect", &name.0]).stdout).into_owned();
        if out.contains("attached, alive") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "sender never attached: {out}");
        std::thread::sleep(Duration::from_millis(10));
    }
    send.0.kill().unwrap();
    send.0.wait().unwrap();
    let out = String::from_utf8_lossy(&run(&["inspect", &name.0]).stdout).into_owned();
    assert!(out.contains("DEAD") && out.contains("stale"), "{out}");
    let rm = run(&["rm", "--stale"]);
    assert!(String::from_utf8_lossy(&rm.stdout).contains(&name.0));
    assert!(!std::path::Path::new(&name.dev_path()).exists());
}

#[test]
fn wrong_usage_gets_a_clear_error() {
    let out = run(&["send"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--path"));
    let out = run(&["send", "x", "--capacity", "lots"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a size"));
    let out = run(&["recv", "bad/name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not contain '/'"));
    let out = run(&["send", "--capacity", "1000", &Name::new("cap").0]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["send", "recv", "ls", "inspect", "rm", "bench"] {
        let out = run(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        assert!(out.stdout.len() > 200, "{sub} --help is too thin");
    }
}

#[test]
fn bench_quick_json_has_every_row_and_key() {
    let out = run(&["bench", "--quick", "--format", "json", "--no-progress"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    for t in ["shmring", "pipe", "fifo", "unix-socket", "tcp-loopback", "posix-mq", "futex", "cache-line"] {
        assert!(rows.iter().any(|r| r["transport"] == t), "no {t} row");
    }
    for r in rows {
        for k in ["transport", "mode", "payload_bytes", "rtt_p50_ns", "rtt_p99_ns", "msgs_per_s", "bytes_per_s"] {
            assert!(r.get(k).is_some(), "row {r} lacks {k}");
        }
    }
    let spin = rows.iter().find(|r| r["transport"] == "shmring" && r["mode"] == "spin").unwrap();
    assert!(spin["rtt_p50_ns"].as_f64().unwrap() > 0.0);
}

// ---- MPMC and typed segments -------------------------------------------------

use shmring::Location;
use shmring::header::{CONTROL_OFFSET, MpmcControl, Participant};
use shmring::mpmc::{self, MpmcOptions};
use shmring::typed::{Receiver, Sender};

/// Environment variable that turns `mpmc_child_entry` into a child process
/// holding a message of the named MPMC ring.
const CHILD_ENV: &str = "SHMRING_CLITEST_MPMC_HOLD";

#[test]
fn a_fifo_under_a_segment_name_is_refused_not_waited_on() {
    let name = Name::new("fifo");
    assert!(Command::new("mkfifo").arg(name.dev_path()).status().unwrap().success());
    // Opening a FIFO for reading would wait for a writer for ever.
    let out = run(&["inspect", &name.0]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a regular file"), "{err}");
}

fn stdout_of(args: &[&str]) -> (Option<i32>, String) {
    let out = run(args);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ls_json_row(name: &Name) -> serde_json::Value {
    let ls = run(&["ls", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let want = format!("/{}", name.0);
    rows.as_array().unwrap().iter().find(|r| r["name"].as_str() == Some(&want)).cloned().unwrap_or_else(|| {
        panic!("{want} not listed: {rows}");
    })
}

fn ls_line(name: &Name) -> String {
    let text = stdout_of(&["ls"]).1;
    text.lines().find(|l| l.contains(&name.0)).unwrap_or_else(|| panic!("not listed:\n{text}")).to_owned()
}

#[test]
fn ls_inspect_and_rm_understand_typed_mpmc_segments() {
    let _serial = stale_lock();
    let name = Name::new("mpmc");
    let loc = Location::shm(&name.0);
    let opts = MpmcOptions::new().slot_size(8).slot_count(16);
    let mut tx: Sender<u64, mpmc::Producer> = Sender::create(&loc, &opts).unwrap();
    let mut rx: Receiver<u64, mpmc::Consumer> = Receiver::open(&loc).unwrap();
    for v in [10, 20, 30] {
        tx.send(&v).unwrap();
    }
    assert_eq!(rx.recv().unwrap(), Some(10));

    let line = ls_line(&name);
    assert!(line.contains("mpmc") && line.contains("16 x 8 B") && line.contains("2 msg"), "{line}");
    assert!(line.contains("alive"), "{line}");
    let row = ls_json_row(&name);
    assert_eq!(row["kind"], "mpmc");
    assert_eq!(row["slot_count"], 16);
    assert_eq!(row["slot_size_bytes"], 8);
    assert_eq!(row["fill_messages"], 2);
    assert_eq!(row["enqueued"], 3);
    assert_eq!(row["dequeued"], 1);
    assert_eq!(row["closed"], false);
    assert_eq!(row["participants_alive"], 2);
    assert_eq!(row["lost_consumer_died"], 0);
    assert_eq!(row["record_type"]["name"], "u64");
    assert_eq!(row["status"], "alive");

    let (code, out) = stdout_of(&["inspect", &name.0]);
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "kind         mpmc",
        "slot size    8 bytes",
        "slot count   16",
        "enqueued     3",
        "dequeued     1",
        "fill         2 of 16 slots",
        "closed       no",
        "record type  u64 (8 bytes, align 8, fingerprint 0x",
        "participants 2 alive, 0 dead",
        "lost         0 message(s) because their consumer died",
        "healthy",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    let me = format!("pid {:<8} attached, alive", std::process::id());
    assert_eq!(out.matches(&me).count(), 2, "{out}");

    tx.get_mut().close_ring();
    let out = stdout_of(&["inspect", &name.0]).1;
    assert!(out.contains("closed       yes"), "{out}");
    assert_eq!(ls_json_row(&name)["closed"], true);

    // Everyone detached cleanly: waiting, and `rm --stale` keeps it.
    drop((tx, rx));
    assert!(ls_line(&name).contains("waiting"));
    let out = stdout_of(&["inspect", &name.0]).1;
    assert!(out.contains("participants 0 alive, 0 dead"), "{out}");
    run(&["rm", "--stale"]);
    assert!(std::path::Path::new(&name.dev_path()).exists(), "rm --stale removed a waiting MPMC ring");
    assert!(run(&["rm", &name.0]).status.success());
    assert!(!std::path::Path::new(&name.dev_path()).exists());
}

#[test]
fn inspect_prints_the_record_type_of_a_typed_spsc_ring() {
    let name = Name::new("typedspsc");
    let loc = Location::shm(&name.0);
    let tx: Sender<u32> = Sender::create(&loc, &shmring::SpscOptions::new().capacity(4096)).unwrap();
    let (code, out) = stdout_of(&["inspect", &name.0]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("kind         spsc") && out.contains("record type  u32 (4 bytes, align 4"), "{out}");
    assert_eq!(ls_json_row(&name)["record_type"]["size_bytes"], 4);
    drop(tx);
    let untyped = Name::new("untyped");
    let p = shmring::spsc::Producer::create(&Location::shm(&untyped.0), &shmring::SpscOptions::new()).unwrap();
    assert!(stdout_of(&["inspect", &untyped.0]).1.contains("record type  none"));
    drop(p);
}

/// Not a test on its own: the child process of
/// `a_killed_mpmc_consumer_shows_as_dead_and_its_ring_as_stale`.
#[test]
#[ignore = "child process of a_killed_mpmc_consumer_shows_as_dead_and_its_ring_as_stale"]
fn mpmc_child_entry() {
    let name = std::env::var(CHILD_ENV).expect("run by its parent test, which names the ring");
    let mut rx = mpmc::Consumer::open(&Location::shm(&name)).unwrap();
    let rec = rx.recv().unwrap().unwrap();
    println!("holding {} bytes", rec.len());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
    drop(rec);
}

#[test]
fn a_killed_mpmc_consumer_shows_as_dead_and_its_ring_as_stale() {
    let _serial = stale_lock();
    let name = Name::new("mpmcdead");
    let loc = Location::shm(&name.0);
    let mut tx = mpmc::Producer::create(&loc, &MpmcOptions::new().slot_size(16).slot_count(4)).unwrap();
    tx.send(b"job one").unwrap();
    drop(tx);

    let exe = std::env::current_exe().unwrap();
    let mut child = Proc(
        Command::new(exe)
            .args(["--exact", "mpmc_child_entry", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &name.0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("holding") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "child exited early");
    }
    let (code, text) = stdout_of(&["inspect", &name.0]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("pid {pid:<8} attached, alive; claiming dequeue position 0")), "{text}");
    assert!(ls_line(&name).contains("alive"));

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let text = stdout_of(&["inspect", &name.0]).1;
    assert!(text.contains("participants 0 alive, 1 dead"), "{text}");
    assert!(text.contains(&format!("pid {pid:<8} attached, DEAD")), "{text}");
    assert!(text.contains("had claimed dequeue position 0"), "{text}");
    assert!(text.contains("status       stale"), "{text}");

    // A survivor recovers the slot; the statistics say what was lost.
    let mut tx = mpmc::Producer::open(&loc).unwrap();
    assert_eq!(tx.recover_dead().unwrap(), 1);
    drop(tx);
    let text = stdout_of(&["inspect", &name.0]).1;
    assert!(text.contains("lost         1 message(s) because their consumer died"), "{text}");
    assert!(text.contains("recovered    1 slot(s)"), "{text}");
    assert_eq!(ls_json_row(&name)["lost_consumer_died"], 1);

    let rm = run(&["rm", "--stale"]);
    assert!(String::from_utf8_lossy(&rm.stdout).contains(&name.0), "{rm:?}");
    assert!(!std::path::Path::new(&name.dev_path()).exists());
}

#[test]
fn damaged_mpmc_segments_are_explained_not_crashed_on() {
    use std::os::unix::fs::FileExt;
    let name = Name::new("mpmcbad");
    let loc = Location::shm(&name.0);
    drop(mpmc::Producer::create(&loc, &MpmcOptions::new().slot_size(8).slot_count(8)).unwrap());
    let file = std::fs::OpenOptions::new().write(true).open(name.dev_path()).unwrap();
    let ctl = CONTROL_OFFSET;
    // Dequeue far ahead of enqueue, and an aborted participant entry whose
    // reason is longer than a reason can be.
    let dequeue = ctl + std::mem::offset_of!(MpmcControl, dequeue);
    file.write_all_at(&1000u64.to_ne_bytes(), dequeue as u64).unwrap();
    let entry = ctl + std::mem::offset_of!(MpmcControl, participants);
    let word = entry + std::mem::offset_of!(Participant, word);
    file.write_all_at(&((12345u64 << 32) | 3).to_ne_bytes(), word as u64).unwrap();
    let reason = entry + std::mem::offset_of!(Participant, reason);
    file.write_all_at(&999u32.to_ne_bytes(), reason as u64).unwrap();
    let (code, out) = stdout_of(&["inspect", &name.0]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("positions impossible"), "{out}");
    assert!(out.contains("participant entry 0: abort reason length word is 999"), "{out}");
    assert!(out.contains("status       damaged"), "{out}");
    assert_eq!(ls_json_row(&name)["status"], "damaged");

    // Impossible geometry and record type words.
    let slot_count = std::mem::offset_of!(shmring::header::Header, slot_count);
    file.write_all_at(&u32::MAX.to_ne_bytes(), slot_count as u64).unwrap();
    let type_align = std::mem::offset_of!(shmring::header::Header, type_align);
    file.write_all_at(&3u32.to_ne_bytes(), type_align as u64).unwrap();
    let (code, out) = stdout_of(&["inspect", &name.0]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("MPMC geometry impossible") && out.contains("record type words impossible"), "{out}");
    assert!(ls_line(&name).contains("damaged"));

    // Cut short inside the participant table.
    file.set_len(5000).unwrap();
    let (code, out) = stdout_of(&["inspect", &name.0]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("participant table unreadable"), "{out}");
    assert!(run(&["rm", &name.0]).status.success());
}

// ---- ls by a user who may not read a segment ---------------------------------

/// Runs `shmring ARGS` as a user who may not read root's mode-0600 segments:
/// `nobody` through `setpriv` or `runuser` when we are root, ourselves
/// otherwise (the test then takes our own read permission away). `None`,
/// with a note, when we are root and neither tool is installed.
fn run_unprivileged(args: &[&str]) -> Option<Output> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(run(args));
    }
    let installed = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    let mut cmd = if installed("setpriv") {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else if installed("runuser") {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", BIN]);
        c
    } else {
        println!("note: neither setpriv nor runuser is installed; cannot run ls as another user, not tested");
        return None;
    };
    let out = cmd.args(args).stdin(Stdio::null()).output().expect("run shmring as nobody");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(out)
}

#[test]
fn ls_lists_a_segment_it_may_not_read_with_its_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let name = Name::new("unreadable");
    drop(shmring::spsc::Producer::create(&Location::shm(&name.0), &shmring::SpscOptions::new()).unwrap());
    let meta = std::fs::metadata(name.dev_path()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // Not root: the owner itself may not read a mode-0000 object.
        std::fs::set_permissions(name.dev_path(), std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    // Readable by anyone, but not a segment: still not listed.
    let foreign = Name::new("unreadable-foreign");
    std::fs::write(foreign.dev_path(), b"just some bytes").unwrap();
    std::fs::set_permissions(foreign.dev_path(), std::fs::Permissions::from_mode(0o644)).unwrap();

    let Some(ls) = run_unprivileged(&["ls"]) else { return };
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(!text.contains("no shmring segments"), "{text}");
    assert!(!text.contains(&foreign.0), "{text}");
    let line = text.lines().find(|l| l.contains(&name.0)).unwrap_or_else(|| panic!("not listed:\n{text}"));
    let status = format!("not readable (owner uid {})", meta.uid());
    assert!(line.ends_with(&status), "{line}");
    assert_eq!(line.split_whitespace().filter(|w| *w == "-").count(), 4, "{line}");

    let ls = run_unprivileged(&["ls", "--json"]).unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let want = format!("/{}", name.0);
    let row = rows.as_array().unwrap().iter().find(|r| r["name"].as_str() == Some(&want));
    let row = row.unwrap_or_else(|| panic!("{want} not listed: {rows}"));
    assert_eq!(row["status"], "not readable");
    assert_eq!(row["owner_uid"], meta.uid());
    for key in ["kind", "capacity_bytes", "fill_bytes", "creator_pid", "record_type"] {
        assert!(row[key].is_null(), "{key} in {row}");
    }
}

// ---- bench with a message count and a peer that never makes contact ----------

/// What a `shmring bench` process may leave behind (its names start with
/// `shmring-bench-PID-`), removed on drop: nothing, if it cleaned up.
struct BenchLeftovers(String);

impl BenchLeftovers {
    fn list(&self) -> Vec<std::path::PathBuf> {
        [std::path::PathBuf::from("/dev/shm"), std::env::temp_dir()]
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&self.0)))
            .map(|e| e.path())
            .collect()
    }
}

impl Drop for BenchLeftovers {
    fn drop(&mut self) {
        for path in self.list() {
            let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
        }
    }
}

#[test]
fn bench_with_a_message_count_reports_peers_that_exit_before_first_contact_instead_of_hanging() {
    // Every child exits at once, before touching its transport (a test hook of the child).
    let mut bench = shmring(&["bench", "--messages", "1000", "--warmup", "0", "--no-progress", "--format", "json"])
        .env("SHMRING_BENCH_CHILD_FAULT", "exit")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let leftovers = BenchLeftovers(format!("shmring-bench-{}-", bench.id()));
    let pipe_reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).map(|_| text)
        })
    };
    let out = pipe_reader(Box::new(bench.stdout.take().unwrap()));
    let err = pipe_reader(Box::new(bench.stderr.take().unwrap()));
    // Each case ends within a fraction of a second; one left waiting for its peer would only
    // be ended by the watchdog, a minute later.
    let t = Instant::now();
    while bench.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed();
    if bench.try_wait().unwrap().is_none() {
        // SIGTERM, which it handles by cleaning up, then SIGKILL if it must.
        // SAFETY: kill takes no pointers; the pid is our unreaped child's.
        unsafe { libc::kill(bench.id() as libc::pid_t, libc::SIGTERM) };
        let t = Instant::now();
        while bench.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = bench.kill();
    }
    let status = bench.wait().unwrap();
    let (out, err) = (out.join().unwrap().unwrap(), err.join().unwrap().unwrap());
    assert!(took < Duration::from_secs(30), "still running after {took:?}:\n{err}");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("exiting before first contact"), "the hook did not act:\n{err}");
    assert!(!err.contains("no result within"), "a case ran into the watchdog:\n{err}");
    let failed: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(err.contains(&format!("{} case(s) failed", failed.len())), "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    for r in rows {
        assert!(r["rtt_p50_ns"].is_null() && r["msgs_per_s"].is_null(), "measured without a peer: {r}");
    }
    // Every row of these transports failed and says why (the message queues' 64 KiB rows
    // are not measured at all, so they are left out).
    let transports = ["shmring", "shmring-mpmc", "cache-line", "futex", "pipe", "fifo", "unix-socket", "tcp-loopback"];
    let classic = ["shmring-sem", "semaphore", "signal", "file"];
    for t in transports.into_iter().chain(classic) {
        let lines: Vec<&&str> = failed.iter().filter(|l| l.trim_start().starts_with(&format!("{t} "))).collect();
        let expected = rows.iter().filter(|r| r["transport"] == t).count();
        assert!(lines.len() == expected && expected > 0, "{t}: {expected} rows, failures:\n{err}");
        for l in lines {
            assert!(l.contains("child process failed: exit status: 1"), "{l}");
        }
    }
    assert_eq!(leftovers.list(), Vec::<std::path::PathBuf>::new(), "left behind");
}

/// A pipe whose read end does not block: once its bytes are read, the next
/// read fails with EAGAIN. As standard input of `send`, a read error after
/// some data.
fn input_that_fails_after(bytes: &[u8]) -> (std::io::PipeReader, std::io::PipeWriter) {
    use std::os::fd::AsRawFd;
    let (reader, mut writer) = std::io::pipe().unwrap();
    // SAFETY: fcntl on a pipe fd we own; only the status flags change.
    unsafe {
        let fd = reader.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        assert!(flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0);
    }
    writer.write_all(bytes).unwrap(); // fits the pipe's buffer
    (reader, writer) // the writer stays open: no end of file, only EAGAIN
}

#[test]
fn recv_fails_when_send_cannot_read_its_input_and_keeps_a_prefix() {
    let input = data(40_000);
    for case in ["after data", "at once"] {
        let name = Name::new("readfail");
        let recv = Proc(shmring(&["recv", &name.0]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
        let (send, _keep_writer) = if case == "after data" {
            let (r, w) = input_that_fails_after(&input);
            (shmring(&["send", "--chunk", "4K", &name.0]).stdin(r).stderr(Stdio::piped()).spawn().unwrap(), Some(w))
        } else {
            // A directory as standard input: the first read fails (EISDIR).
            let dir = std::fs::File::open("/").unwrap();
            (shmring(&["send", &name.0]).stdin(dir).stderr(Stdio::piped()).spawn().unwrap(), None)
        };
        let (st, err, _) = wait_for_exit(Proc(send));
        assert!(!st.success(), "{case}: send must fail: {err}");
        assert!(err.contains("reading standard input") && err.contains("aborted"), "{case}: {err}");
        let mut recv = recv;
        let mut out = Vec::new();
        recv.0.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        let (st, err, _) = wait_for_exit(recv);
        assert!(!st.success(), "{case}: recv must not exit 0 on an aborted stream");
        assert!(err.contains("aborted the stream: reading standard input"), "{case}: {err}");
        assert!(input.starts_with(&out), "{case}: output is not a prefix of the input");
        if case == "after data" {
            assert_eq!(out.len(), input.len(), "everything sent before the failure is delivered");
        }
        assert!(!std::path::Path::new(&name.dev_path()).exists(), "{case}: the broken segment is removed");
    }
}

#[test]
fn recv_whose_output_reader_leaves_exits_0_and_send_says_the_receiver_left() {
    let name = Name::new("epipe");
    let mut recv = Proc(shmring(&["recv", &name.0]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let mut send = Proc(
        shmring(&["send", "--capacity", "64K", &name.0]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
    );
    let mut stdin = send.0.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let chunk = data(64 * 1024);
        while stdin.write_all(&chunk).is_ok() {}
    });
    let mut out = recv.0.stdout.take().unwrap();
    let mut first = [0u8; 10];
    out.read_exact(&mut first).unwrap();
    drop(out); // like `| head -c 10`
    let (st, err, _) = wait_for_exit(recv);
    assert!(st.success(), "a closed output pipe is the reader's choice: {err}");
    let (st, err, _) = wait_for_exit(send);
    assert!(!st.success());
    assert!(err.contains("closed"), "send says the receiver left: {err}");
    feeder.join().unwrap();
}

#[test]
fn waiting_for_a_peer_is_said_after_2_s_and_timeout_gives_up() {
    let name = Name::new("nopeer");
    let recv = Proc(shmring(&["recv", "--timeout", "4", &name.0]).stderr(Stdio::piped()).spawn().unwrap());
    let (st, err, took) = wait_for_exit(recv);
    assert!(!st.success());
    assert!(err.contains(&format!("waiting for a producer on /{}", name.0)), "{err}");
    assert!(err.contains("gave up"), "{err}");
    assert_eq!(err.matches("waiting for").count(), 1, "said once: {err}");
    assert!(took >= Duration::from_secs(4), "gave up early: {took:?}");
    assert!(!std::path::Path::new(&name.dev_path()).exists(), "the unused segment is removed");

    // A sender whose ring fills with nobody reading.
    let name = Name::new("noconsumer");
    let mut send = Proc(
        shmring(&["send", "--capacity", "4K", "--timeout", "0.5", &name.0])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = send.0.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || while stdin.write_all(&data(4096)).is_ok() {});
    let (st, err, _) = wait_for_exit(send);
    assert!(!st.success());
    assert!(err.contains("no consumer attached") && err.contains("gave up"), "{err}");
    feeder.join().unwrap();
}

#[test]
fn recv_that_cannot_write_aborts_and_send_says_so() {
    let name = Name::new("fullout");
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let recv = Proc(shmring(&["recv", &name.0]).stdout(full).stderr(Stdio::piped()).spawn().unwrap());
    let mut send = Proc(
        shmring(&["send", "--capacity", "64K", &name.0]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
    );
    let mut stdin = send.0.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || while stdin.write_all(&data(64 * 1024)).is_ok() {});
    let (st, err, _) = wait_for_exit(recv);
    assert!(!st.success());
    assert!(err.contains("writing standard output") && err.contains("aborted the stream"), "{err}");
    let (st, err, _) = wait_for_exit(send);
    assert!(!st.success());
    assert!(err.contains("the consumer") && err.contains("aborted the stream: writing standard output"), "{err}");
    feeder.join().unwrap();
}

#[test]
fn inspect_shows_who_aborted_and_why() {
    let name = Name::new("inspect-abort");
    let loc = Location::shm(&name.0);
    let mut tx = shmring::spsc::Producer::create(&loc, &shmring::SpscOptions::new()).unwrap();
    tx.send(b"half").unwrap();
    tx.abort("input\tbroke");
    let (code, out) = stdout_of(&["inspect", &name.0]);
    assert_eq!(code, Some(0), "an aborted stream is not a damaged segment: {out}");
    let pid = std::process::id();
    assert!(out.contains(&format!("producer    : ABORTED by pid {pid}: \"input\\tbroke\"")), "{out}");

    let name = Name::new("inspect-abort-mpmc");
    let loc = Location::shm(&name.0);
    let opts = MpmcOptions::new().slot_size(8).slot_count(8);
    let keep = mpmc::Producer::create(&loc, &opts).unwrap();
    keep.new_consumer().unwrap().abort("worker gave up");
    let (code, out) = stdout_of(&["inspect", &name.0]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("pid {pid:<8} ABORTED: \"worker gave up\"")), "{out}");
    assert!(out.contains("1 alive, 0 dead but still recorded, 1 aborted"), "{out}");
    assert_eq!(ls_json_row(&name)["participants_aborted"], 1);
    drop(keep);
}

#[test]
fn ping_reports_the_transport_and_the_round_trips() {
    let dir = std::env::temp_dir().join(format!("shmring-clitest-ping-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let addr = shmring_rpc::Addr::Unix(dir.join("sock"));
    let server = shmring_rpc::Server::bind(&addr, &shmring_rpc::ServerOptions::new()).unwrap();
    std::thread::spawn(move || server.serve(|req: &[u8]| req.to_vec()));
    let a = addr.to_string();
    for (extra, transport) in [(None, "shm"), (Some("unix"), "unix")] {
        let mut args = vec!["ping", &a, "--count", "3", "--interval", "0"];
        if let Some(t) = extra {
            args.extend(["--transport", t]);
        }
        let out = run(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(text.contains(&format!("PING {a} over {transport}: 64 bytes")), "{text}");
        assert_eq!(text.matches("seq=").count(), 3, "{text}");
        assert!(text.contains("3 sent, 3 answered; round trip min"), "{text}");
    }
    let nobody = run(&["ping", &format!("unix:{}", dir.join("nobody").display())]);
    assert_eq!(nobody.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("connect unix:"), "{nobody:?}");
}
