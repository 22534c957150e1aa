//! `ls`, `inspect` and `rm`: look at segments without trusting them.

use shmring::header::{self, ROLE_ATTACHED, ROLE_CLOSED, Snapshot};
use shmring::segment::{list_shm, read_first_page};
use shmring::{Error, Location, ProcessId};

/// What `ls` says about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Alive,
    Waiting,
    Stale,
    Damaged,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Waiting => "waiting",
            Status::Stale => "stale",
            Status::Damaged => "damaged",
        }
    }
}

fn alive(pid: u32, start_time: u64) -> bool {
    ProcessId { pid, start_time }.is_alive()
}

fn role_alive(role: (u32, u32, u64)) -> Option<bool> {
    (role.0 == ROLE_ATTACHED).then(|| alive(role.1, role.2))
}

pub fn status(s: &Snapshot) -> Status {
    let problems = s.problems();
    if s.state != header::STATE_READY && s.magic == header::MAGIC {
        return if alive(s.creator_pid, s.creator_start_time) { Status::Waiting } else { Status::Stale };
    }
    if !problems.is_empty() {
        return Status::Damaged;
    }
    let roles = [role_alive(s.producer), role_alive(s.consumer)];
    if roles.contains(&Some(false)) {
        return Status::Stale;
    }
    if roles.contains(&Some(true)) {
        return Status::Alive;
    }
    if s.producer.0 == ROLE_CLOSED && s.consumer.0 == ROLE_CLOSED {
        return Status::Stale;
    }
    Status::Waiting
}

/// Read a segment's header; `Ok(None)` if it is not a shmring segment.
fn snapshot(loc: &Location) -> Result<Option<Snapshot>, Error> {
    let (page, len) = read_first_page(loc)?;
    let s = Snapshot::parse(&page, len);
    Ok((s.magic == header::MAGIC).then_some(s))
}

fn kind_name(k: u32) -> String {
    header::RingKind::from_u32(k).map_or_else(|| format!("?{k}"), |k| k.name().to_owned())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

pub fn ls(json: bool) -> Result<u8, String> {
    let mut rows = Vec::new();
    for loc in list_shm().map_err(|e| e.to_string())? {
        // Objects we cannot read (other users', vanished) are skipped.
        if let Ok(Some(s)) = snapshot(&loc) {
            rows.push((loc, s));
        }
    }
    if json {
        let arr: Vec<_> = rows
            .iter()
            .map(|(loc, s)| {
                serde_json::json!({
                    "name": loc.to_string(),
                    "kind": kind_name(s.kind),
                    "capacity_bytes": s.capacity,
                    "fill_bytes": s.fill(),
                    "creator_pid": s.creator_pid,
                    "status": status(s).name(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no shmring segments in /dev/shm");
        return Ok(0);
    }
    println!("{:<32} {:<5} {:>10} {:>10} {:>8}  STATUS", "NAME", "KIND", "CAPACITY", "FILL", "CREATOR");
    for (loc, s) in &rows {
        let fill = s.fill().map_or_else(|| "?".to_owned(), human);
        println!(
            "{:<32} {:<5} {:>10} {:>10} {:>8}  {}",
            loc.to_string(),
            kind_name(s.kind),
            human(s.capacity),
            fill,
            s.creator_pid,
            status(s).name()
        );
    }
    Ok(0)
}

fn role_line(name: &str, (state, pid, start): (u32, u32, u64)) -> String {
    match state {
        header::ROLE_FREE => format!("{name}: none attached"),
        header::ROLE_ATTACHING => format!("{name}: pid {pid} attaching"),
        ROLE_ATTACHED => {
            let l = if alive(pid, start) { "alive" } else { "DEAD (died without closing)" };
            format!("{name}: pid {pid} attached, {l}")
        }
        ROLE_CLOSED => format!("{name}: closed (last pid {pid})"),
        other => format!("{name}: unknown state {other}"),
    }
}

pub fn inspect(loc: &Location) -> Result<u8, String> {
    let (page, len) = read_first_page(loc).map_err(|e| e.to_string())?;
    let s = Snapshot::parse(&page, len);
    println!("segment      {loc}");
    println!("file length  {} bytes", s.file_len);
    if s.magic != header::MAGIC {
        println!("problems:");
        for p in s.problems() {
            println!("  - {p}");
        }
        return Ok(2);
    }
    println!("magic        {:#018x} (ok)", s.magic);
    println!("abi version  {}", s.abi_version);
    println!("kind         {}", kind_name(s.kind));
    println!("notifier     {}", if s.notifier == 1 { "futex".to_owned() } else { format!("?{}", s.notifier) });
    println!(
        "state        {}",
        if s.state == header::STATE_READY { "ready".into() } else { format!("{} (not ready)", s.state) }
    );
    println!("capacity     {} bytes ({})", s.capacity, human(s.capacity));
    println!("total length {} bytes (header {} + data)", s.total_len, s.header_len);
    let creator = if alive(s.creator_pid, s.creator_start_time) { "alive" } else { "exited" };
    println!("creator      pid {} ({creator})", s.creator_pid);
    println!("head         {} (consumer position, bytes)", s.head);
    println!("tail         {} (producer position, bytes)", s.tail);
    match s.fill() {
        Some(f) => println!("fill         {f} bytes ({})", human(f)),
        None => println!("fill         impossible (tail - head exceeds capacity)"),
    }
    println!("{}", role_line("producer    ", s.producer));
    println!("{}", role_line("consumer    ", s.consumer));
    println!("parked       {} consumer(s), {} producer(s)", s.waiters.0, s.waiters.1);
    println!("status       {}", status(&s).name());
    let problems = s.problems();
    if problems.is_empty() {
        println!("healthy");
        Ok(0)
    } else {
        println!("problems:");
        for p in problems {
            println!("  - {p}");
        }
        Ok(2)
    }
}

fn remove(loc: &Location, force: bool) -> Result<(), String> {
    if !force {
        match snapshot(loc) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("{loc} is not a shmring segment (use --force to remove it anyway)")),
            Err(e) => return Err(e.to_string()),
        }
    }
    loc.unlink().map_err(|e| e.to_string())
}

pub fn rm(names: &[String], paths: &[std::path::PathBuf], stale: bool, force: bool) -> Result<u8, String> {
    if names.is_empty() && paths.is_empty() && !stale {
        return Err("nothing to remove: give NAME..., --path FILE or --stale".into());
    }
    let mut failed = 0;
    let targets = names.iter().map(Location::shm).chain(paths.iter().map(Location::path));
    for loc in targets {
        match remove(&loc, force) {
            Ok(()) => println!("removed {loc}"),
            Err(e) => {
                eprintln!("shmring: {e}");
                failed += 1;
            }
        }
    }
    if stale {
        for loc in list_shm().map_err(|e| e.to_string())? {
            if let Ok(Some(s)) = snapshot(&loc) {
                if status(&s) == Status::Stale {
                    match loc.unlink() {
                        Ok(()) => println!("removed {loc} (stale)"),
                        Err(e) => {
                            eprintln!("shmring: {e}");
                            failed += 1;
                        }
                    }
                }
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
