//! `ls`, `inspect` and `rm`: look at segments without trusting them.
//!
//! Everything here reads the segment with plain reads (never maps it, never
//! writes to it) and treats every byte as possibly hostile: header words,
//! counters and the MPMC participant table are bound-checked before use, and
//! anything impossible is reported in plain words.

use shmring::header::{
    self, MPMC_MAX_PARTICIPANTS, PARTICIPANT_ABORTED, PARTICIPANT_ATTACHING, ROLE_ABORTED, ROLE_ATTACHED, ROLE_CLOSED,
    RawReason, RingKind,
};
use shmring::inspect::{MpmcSnapshot, ParticipantEntry, RecordTypeInfo, SegmentView, Snapshot, Status};
use shmring::segment::list_shm;
use shmring::{Error, Location, ProcessId};

fn alive(pid: u32, start_time: u64) -> bool {
    ProcessId { pid, start_time }.is_alive()
}

/// The record type as `ls --json` shows it: `null` unless typed.
fn record_type_json(t: &RecordTypeInfo) -> serde_json::Value {
    match t {
        RecordTypeInfo::Untyped | RecordTypeInfo::Impossible(_) => serde_json::Value::Null,
        RecordTypeInfo::Typed(t) => serde_json::json!({
            "name": t.name(), "size_bytes": t.size, "align_bytes": t.align, "fingerprint": format!("{:#018x}", t.fingerprint),
        }),
    }
}

/// A shmring segment's view; `Ok(None)` if it is not a shmring segment.
fn snapshot(loc: &Location) -> Result<Option<SegmentView>, Error> {
    let v = SegmentView::read(loc)?;
    Ok(v.is_shmring().then_some(v))
}

fn kind_name(k: u32) -> String {
    RingKind::from_u32(k).map_or_else(|| format!("?{k}"), |k| k.name().to_owned())
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

fn json_row(loc: &Location, v: &SegmentView) -> serde_json::Value {
    let s = &v.snapshot;
    let mut row = serde_json::json!({
        "name": loc.to_string(),
        "kind": kind_name(s.kind),
        "capacity_bytes": s.capacity,
        "fill_bytes": if v.is_mpmc() { None } else { s.fill() },
        "creator_pid": s.creator_pid,
        "status": v.status().name(),
        "record_type": record_type_json(&v.record_type),
    });
    if let (Some(m), Some(obj)) = (&s.mpmc, row.as_object_mut()) {
        let parts = v.participants.clone().unwrap_or_default();
        let extra = serde_json::json!({
            "slot_size_bytes": s.slot_size,
            "slot_count": s.slot_count,
            "fill_messages": v.mpmc_fill(),
            "enqueued": m.enqueue,
            "dequeued": m.dequeue,
            "closed": m.closed,
            "lost_producer_died": m.lost_producer_died,
            "lost_consumer_died": m.lost_consumer_died,
            "recovered_slots": m.recovered,
            "participants_alive": parts.live(),
            "participants_dead": parts.dead(),
            "participants_aborted": parts.aborted(),
        });
        if let Some(extra) = extra.as_object() {
            obj.extend(extra.clone());
        }
    }
    row
}

/// A shm object `ls` may not read: another user's segment, most likely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NotReadable {
    /// The object's owner, if its metadata could be read.
    owner_uid: Option<u32>,
}

impl NotReadable {
    /// The STATUS column, e.g. `not readable (owner uid 1000)`.
    fn status(self) -> String {
        match self.owner_uid {
            Some(uid) => format!("not readable (owner uid {uid})"),
            None => "not readable (owner unknown)".to_owned(),
        }
    }

    fn json(self, loc: &Location) -> serde_json::Value {
        serde_json::json!({
            "name": loc.to_string(),
            "kind": null,
            "capacity_bytes": null,
            "fill_bytes": null,
            "creator_pid": null,
            "status": "not readable",
            "owner_uid": self.owner_uid,
            "record_type": null,
        })
    }
}

/// Whether `ls` lists a shm object whose header could not be read (`err`),
/// given its metadata as looked up afterwards (`meta`): as not readable when
/// the open was refused for lack of permission (EACCES, EPERM), with the
/// owner taken from `meta`. Not listed if it vanished in the meantime
/// (`err` or `meta` says ENOENT) or for any other error (not a regular
/// file, a name the shm calls refuse), as for files that are not segments.
fn not_readable(err: &Error, meta: &std::io::Result<std::fs::Metadata>) -> Option<NotReadable> {
    use std::os::unix::fs::MetadataExt;
    let Error::Io { source, .. } = err else {
        return None;
    };
    if !matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
        return None;
    }
    match meta {
        Ok(m) => Some(NotReadable { owner_uid: Some(m.uid()) }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(NotReadable { owner_uid: None }),
    }
}

pub fn ls(json: bool) -> Result<u8, String> {
    // Each a segment read, or an object this user may not read (which may
    // well be a segment).
    let mut rows: Vec<(Location, Result<SegmentView, NotReadable>)> = Vec::new();
    for loc in list_shm().map_err(|e| e.to_string())? {
        // Files that are not segments, and objects that vanished since the
        // directory was listed, are skipped.
        let row = match snapshot(&loc) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => continue,
            Err(e) => match not_readable(&e, &std::fs::symlink_metadata(loc.file_path())) {
                Some(n) => Err(n),
                None => continue,
            },
        };
        rows.push((loc, row));
    }
    if json {
        let arr: Vec<_> = rows
            .iter()
            .map(|(loc, row)| match row {
                Ok(v) => json_row(loc, v),
                Err(n) => n.json(loc),
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no shmring segments in /dev/shm");
        return Ok(0);
    }
    println!("{:<32} {:<5} {:>14} {:>10} {:>8}  STATUS", "NAME", "KIND", "CAPACITY", "FILL", "CREATOR");
    for (loc, row) in &rows {
        let v = match row {
            Ok(v) => v,
            Err(n) => {
                println!("{:<32} {:<5} {:>14} {:>10} {:>8}  {}", loc.to_string(), "-", "-", "-", "-", n.status());
                continue;
            }
        };
        let s = &v.snapshot;
        let (capacity, fill) = if v.is_mpmc() {
            let fill = v.mpmc_fill().map_or_else(|| "?".to_owned(), |f| format!("{f} msg"));
            (format!("{} x {} B", s.slot_count, s.slot_size), fill)
        } else {
            (human(s.capacity), s.fill().map_or_else(|| "?".to_owned(), human))
        };
        println!(
            "{:<32} {:<5} {:>14} {:>10} {:>8}  {}",
            loc.to_string(),
            kind_name(s.kind),
            capacity,
            fill,
            s.creator_pid,
            v.status().name()
        );
    }
    Ok(0)
}

fn role_line(name: &str, (state, pid, start): (u32, u32, u64), reason: &RawReason) -> String {
    match state {
        header::ROLE_FREE => format!("{name}: none attached"),
        header::ROLE_ATTACHING => format!("{name}: pid {pid} attaching"),
        ROLE_ATTACHED => {
            let l = if alive(pid, start) { "alive" } else { "DEAD (died without closing)" };
            format!("{name}: pid {pid} attached, {l}")
        }
        ROLE_CLOSED => format!("{name}: closed (last pid {pid})"),
        ROLE_ABORTED => format!("{name}: ABORTED by pid {pid}: {}", reason_text(reason)),
        other => format!("{name}: unknown state {other}"),
    }
}

/// An abort reason as `inspect` shows it (escaped; see `header::escape_reason`).
fn reason_text(reason: &RawReason) -> String {
    match reason.text() {
        Ok(r) if r.is_empty() => "no reason given".into(),
        Ok(r) => format!("\"{r}\""),
        Err(what) => format!("(unreadable: {what})"),
    }
}

fn entry_line(e: &ParticipantEntry) -> String {
    if e.state == PARTICIPANT_ABORTED {
        return format!("  #{:<3} pid {:<8} ABORTED: {}", e.index, e.pid, reason_text(&e.reason));
    }
    let state = if e.state == PARTICIPANT_ATTACHING { "attaching" } else { "attached" };
    let life = if e.alive { "alive" } else { "DEAD (died without detaching)" };
    let mut line = format!("  #{:<3} pid {:<8} {state}, {life}", e.index, e.pid);
    for (what, c) in [("enqueue", e.enq), ("dequeue", e.deq)] {
        if let Some((start, count)) = c {
            // A dead holder's record stays until its entry is reused; the
            // slot itself may have been recovered since (see the statistics).
            let verb = if e.alive { "claiming" } else { "had claimed" };
            line.push_str(&format!("; {verb} {what} position{} {start}", if count == 1 { "" } else { "s" }));
            if count > 1 {
                line.push_str(&format!("..{}", start.saturating_add(count - 1)));
            }
        }
    }
    line
}

fn print_spsc(s: &Snapshot) {
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
    println!("{}", role_line("producer    ", s.producer, &s.reasons.0));
    println!("{}", role_line("consumer    ", s.consumer, &s.reasons.1));
}

fn print_mpmc(v: &SegmentView, m: &MpmcSnapshot) {
    let s = &v.snapshot;
    println!("slot size    {} bytes", s.slot_size);
    println!("slot count   {}", s.slot_count);
    println!("capacity     {} bytes ({}, slots with their metadata)", s.capacity, human(s.capacity));
    println!("total length {} bytes (header {} + data)", s.total_len, s.header_len);
    let creator = if alive(s.creator_pid, s.creator_start_time) { "alive" } else { "exited" };
    println!("creator      pid {} ({creator})", s.creator_pid);
    println!("enqueued     {} (positions claimed by producers)", m.enqueue);
    println!("dequeued     {} (positions claimed by consumers)", m.dequeue);
    match m.fill(s.slot_count) {
        Some(f) => println!("fill         {f} of {} slots", s.slot_count),
        None => println!("fill         impossible (enqueued - dequeued is not within 0..={})", s.slot_count),
    }
    println!("closed       {}", if m.closed { "yes (no more messages will be accepted)" } else { "no" });
    println!("lost         {} message(s) because their producer died mid-write", m.lost_producer_died);
    println!("lost         {} message(s) because their consumer died holding them", m.lost_consumer_died);
    println!("recovered    {} slot(s) taken back from dead processes", m.recovered);
    let parts = v.participants.clone().unwrap_or_default();
    println!(
        "participants {} alive, {} dead but still recorded, {} aborted (high-water mark {} of \
         {MPMC_MAX_PARTICIPANTS})",
        parts.live(),
        parts.dead(),
        parts.aborted(),
        m.high_water
    );
    for e in &parts.entries {
        println!("{}", entry_line(e));
    }
}

pub fn inspect(loc: &Location) -> Result<u8, String> {
    let v = SegmentView::read(loc).map_err(|e| e.to_string())?;
    let s = &v.snapshot;
    println!("segment      {loc}");
    println!("file length  {} bytes", s.file_len);
    if s.magic != header::MAGIC {
        println!("problems:");
        for p in v.problems() {
            println!("  - {p}");
        }
        return Ok(2);
    }
    println!("magic        {:#018x} (ok)", s.magic);
    println!("abi version  {}", s.abi_version);
    println!("kind         {}", kind_name(s.kind));
    let notifier = shmring::wait::NotifierKind::from_u32(s.notifier)
        .map_or_else(|| format!("?{}", s.notifier), |k| k.name().to_owned());
    println!("notifier     {notifier}");
    println!(
        "state        {}",
        if s.state == header::STATE_READY { "ready".into() } else { format!("{} (not ready)", s.state) }
    );
    println!("record type  {}", v.record_type.describe());
    match &s.mpmc {
        Some(m) => print_mpmc(&v, m),
        None => print_spsc(s),
    }
    println!("parked       {} consumer(s), {} producer(s)", s.waiters.0, s.waiters.1);
    println!("status       {}", v.status().name());
    let problems = v.problems();
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
            if let Ok(Some(v)) = snapshot(&loc)
                && v.status() == Status::Stale
            {
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
    Ok(if failed > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(errno: i32) -> Error {
        Error::Io { op: "shm_open", target: "/seg".into(), source: std::io::Error::from_raw_os_error(errno) }
    }

    #[test]
    fn ls_lists_what_it_may_not_read_with_its_owner_and_skips_what_vanished() {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(std::env::current_exe().unwrap());
        let uid = meta.as_ref().unwrap().uid();
        for errno in [libc::EACCES, libc::EPERM] {
            assert_eq!(not_readable(&io_error(errno), &meta), Some(NotReadable { owner_uid: Some(uid) }));
        }
        let unknown = Err(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(not_readable(&io_error(libc::EACCES), &unknown), Some(NotReadable { owner_uid: None }));
        assert_eq!(NotReadable { owner_uid: Some(1000) }.status(), "not readable (owner uid 1000)");
        // Gone between listing and opening, or between opening and the lookup.
        assert_eq!(not_readable(&Error::NotFound("/seg".into()), &meta), None);
        let gone = Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(not_readable(&io_error(libc::EACCES), &gone), None);
        // Other failures are not about permissions: skipped, as before.
        assert_eq!(not_readable(&io_error(libc::EIO), &meta), None);
        assert_eq!(not_readable(&Error::InvalidArgument("/seg is not a regular file".into()), &meta), None);
    }
}
