//! `ls`, `inspect` and `rm`: look at segments without trusting them.
//!
//! Everything here reads the segment with plain reads (never maps it, never
//! writes to it) and treats every byte as possibly hostile: header words,
//! counters and the MPMC participant table are bound-checked before use, and
//! anything impossible is reported in plain words.

use std::io::Read;
use std::mem::offset_of;
use std::time::Duration;

use shmring::header::{
    self, CONTROL_OFFSET, Header, MPMC_HEADER_LEN, MPMC_MAX_PARTICIPANTS, MpmcControl, PARTICIPANT_ABORTED,
    PARTICIPANT_ATTACHED, PARTICIPANT_ATTACHING, PARTICIPANT_FREE, Participant, ROLE_ABORTED, ROLE_ATTACHED,
    ROLE_CLOSED, RawReason, RecordType, RingKind, Snapshot,
};
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

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_ne_bytes)
}

/// The record type words of the header (typed rings), decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TypeInfo {
    /// A ring of bytes: all type words are zero.
    Untyped,
    /// A typed ring: size and alignment in bytes, fingerprint, name.
    Typed { size: u32, align: u32, fingerprint: u64, name: String },
    /// The words cannot describe a type; what is wrong.
    Impossible(String),
}

/// The record type of the snapshot's words (checked by
/// `header::record_type_problem`), with its name read from the page.
fn type_info(snap: &Snapshot, page: &[u8]) -> TypeInfo {
    let (size, align, fingerprint) = snap.record_type;
    if let Some(what) = header::record_type_problem(size, align, fingerprint) {
        return TypeInfo::Impossible(what);
    }
    if fingerprint == 0 {
        return TypeInfo::Untyped;
    }
    let start = offset_of!(Header, type_name);
    let raw = page.get(start..start + RecordType::NAME_MAX).unwrap_or(&[]);
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let name = match std::str::from_utf8(&raw[..end]) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_owned(),
        _ => "(name not readable text)".to_owned(),
    };
    TypeInfo::Typed { size, align, fingerprint, name }
}

impl TypeInfo {
    fn describe(&self) -> String {
        match self {
            TypeInfo::Untyped => "none (a ring of bytes)".into(),
            TypeInfo::Typed { size, align, fingerprint, name } => {
                format!("{name} ({size} bytes, align {align}, fingerprint {fingerprint:#018x})")
            }
            TypeInfo::Impossible(what) => format!("impossible ({what})"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            TypeInfo::Untyped | TypeInfo::Impossible(_) => serde_json::Value::Null,
            TypeInfo::Typed { size, align, fingerprint, name } => serde_json::json!({
                "name": name, "size_bytes": size, "align_bytes": align, "fingerprint": format!("{fingerprint:#018x}"),
            }),
        }
    }
}

/// One recorded (non-free) entry of an MPMC participant table.
#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    pid: u32,
    state: u32,
    alive: bool,
    /// Why its holder aborted (state [`PARTICIPANT_ABORTED`]).
    reason: RawReason,
    /// Enqueue positions being claimed: (first, count).
    enq: Option<(u64, u64)>,
    /// Dequeue positions being claimed: (first, count).
    deq: Option<(u64, u64)>,
}

/// The participant table of an MPMC segment, or why it could not be read.
#[derive(Debug, Clone, Default)]
struct Participants {
    entries: Vec<Entry>,
    /// Problems found in the table (unknown states, unreadable bytes).
    problems: Vec<String>,
}

impl Participants {
    fn live(&self) -> usize {
        self.entries.iter().filter(|e| e.alive).count()
    }

    /// Entries recorded as attached (or attaching) whose holder is dead.
    fn dead(&self) -> usize {
        self.entries.iter().filter(|e| !e.alive && e.state != PARTICIPANT_ABORTED).count()
    }

    /// Entries left by handles that aborted.
    fn aborted(&self) -> usize {
        self.entries.iter().filter(|e| e.state == PARTICIPANT_ABORTED).count()
    }
}

fn claim(start: u64, count: u64) -> Option<(u64, u64)> {
    (start != header::CLAIM_NONE && count != 0).then_some((start, count))
}

/// Decode the participant table from the first `MPMC_HEADER_LEN` bytes of
/// an MPMC segment. Every entry is read (not only those below the
/// high-water mark, which may be garbage).
fn participants(head: &[u8]) -> Participants {
    let mut out = Participants::default();
    let base = CONTROL_OFFSET + offset_of!(MpmcControl, participants);
    // The table is the last field; each entry is padded to the same size.
    let stride = (size_of::<MpmcControl>() - offset_of!(MpmcControl, participants)) / MPMC_MAX_PARTICIPANTS;
    if head.len() < base + stride * MPMC_MAX_PARTICIPANTS {
        out.problems.push(format!(
            "participant table unreadable: only {} of the {MPMC_HEADER_LEN} header bytes could be read",
            head.len()
        ));
        return out;
    }
    for index in 0..MPMC_MAX_PARTICIPANTS {
        let at = base + index * stride;
        let word = u64_at(head, at + offset_of!(Participant, word));
        let (pid, _generation, state) = header::participant_fields(word);
        let start_time = u64_at(head, at + offset_of!(Participant, start_time));
        let reason = RawReason::parse(head, at + offset_of!(Participant, reason));
        let alive = match state {
            PARTICIPANT_FREE => continue,
            // Start time not written yet: the pid alone decides.
            PARTICIPANT_ATTACHING => alive(pid, 0),
            PARTICIPANT_ATTACHED => alive(pid, start_time),
            // Its holder left (after an error): not alive, not dead.
            PARTICIPANT_ABORTED => {
                if let Err(what) = reason.text() {
                    out.problems.push(format!("participant entry {index}: {what}"));
                }
                false
            }
            other => {
                out.problems.push(format!("participant entry {index} has unknown state {other}"));
                continue;
            }
        };
        out.entries.push(Entry {
            index,
            pid,
            state,
            alive,
            reason,
            enq: claim(
                u64_at(head, at + offset_of!(Participant, enq_start)),
                u64_at(head, at + offset_of!(Participant, enq_count)),
            ),
            deq: claim(
                u64_at(head, at + offset_of!(Participant, deq_start)),
                u64_at(head, at + offset_of!(Participant, deq_count)),
            ),
        });
    }
    out
}

/// Everything `ls`, `inspect` and `rm` know about one segment.
struct View {
    snap: Snapshot,
    ty: TypeInfo,
    /// MPMC segments only.
    parts: Option<Participants>,
}

impl View {
    fn is_mpmc(&self) -> bool {
        self.snap.mpmc.is_some()
    }

    /// The library's checks plus the record type and participant table.
    fn problems(&self) -> Vec<String> {
        let mut p = self.snap.problems();
        if self.snap.magic != header::MAGIC {
            return p;
        }
        match &self.ty {
            // Already among the snapshot's problems.
            TypeInfo::Impossible(_) => {}
            TypeInfo::Typed { size, .. } if self.is_mpmc() && *size > self.snap.slot_size => {
                p.push(format!("record type of {size} bytes does not fit a slot of {} bytes", self.snap.slot_size))
            }
            _ => {}
        }
        if let Some(parts) = &self.parts {
            p.extend(parts.problems.iter().cloned());
        }
        p
    }

    fn status(&self) -> Status {
        let s = &self.snap;
        if s.state != header::STATE_READY && s.magic == header::MAGIC {
            return if alive(s.creator_pid, s.creator_start_time) { Status::Waiting } else { Status::Stale };
        }
        if !self.problems().is_empty() {
            return Status::Damaged;
        }
        if let Some(parts) = &self.parts {
            // MPMC: alive if anyone recorded is alive; stale if entries are
            // recorded but every holder is dead; waiting if nobody is attached.
            return if parts.live() > 0 {
                Status::Alive
            } else if parts.dead() > 0 {
                Status::Stale
            } else {
                Status::Waiting
            };
        }
        let roles = [role_alive(s.producer), role_alive(s.consumer)];
        if roles.contains(&Some(false)) {
            return Status::Stale;
        }
        if roles.contains(&Some(true)) {
            return Status::Alive;
        }
        let ended = |state: u32| state == ROLE_CLOSED || state == ROLE_ABORTED;
        if ended(s.producer.0) && ended(s.consumer.0) {
            return Status::Stale;
        }
        Status::Waiting
    }

    /// MPMC fill in messages; `None` if the positions are impossible.
    fn mpmc_fill(&self) -> Option<u64> {
        self.snap.mpmc.as_ref()?.fill(self.snap.slot_count)
    }
}

/// The file behind a location: `/dev/shm/NAME` for a shm object.
fn file_path(loc: &Location) -> std::path::PathBuf {
    match loc {
        Location::Shm(name) => std::path::PathBuf::from(format!("/dev/shm{name}")),
        Location::Path(p) => p.clone(),
    }
}

/// Read the bytes before an MPMC segment's data region (header, control
/// block, participant table): at most `MPMC_HEADER_LEN` bytes, fewer if the
/// file is shorter.
fn read_mpmc_head(loc: &Location) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file_path(loc))?;
    let mut buf = Vec::with_capacity(MPMC_HEADER_LEN);
    file.take(MPMC_HEADER_LEN as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// How many times at most `view` reads a header whose positions look
/// impossible before it believes them.
const POSITION_READS: u32 = 5;

/// The pause between those reads: long enough for a live ring's positions
/// to move on, short enough not to slow `ls` down.
const POSITION_REREAD_PAUSE: Duration = Duration::from_millis(1);

/// Whether the snapshot's positions (SPSC head and tail, MPMC enqueue and
/// dequeue counters) are impossible, per the library's checks.
fn positions_impossible(snap: &Snapshot) -> bool {
    snap.problems().iter().any(|p| p.starts_with("positions "))
}

/// Take snapshots with `read` until one shows possible positions, at most
/// `POSITION_READS` of them, `POSITION_REREAD_PAUSE` apart; return that one,
/// or the last one read if none does.
///
/// The positions are read with plain reads of the page, one word after the
/// other, while a busy ring's processes keep moving them: the second word
/// read may be newer than the first, so one read of a healthy ring can show
/// a tail ahead of its head by more than the capacity, or behind it. A later
/// read then shows a consistent pair; damaged positions stay impossible in
/// every read. Only a first read fails the whole; an error on a re-read
/// (the segment removed meanwhile) keeps what was read before.
fn settled<T>(mut read: impl FnMut() -> Result<(Snapshot, T), Error>) -> Result<(Snapshot, T), Error> {
    let mut got = read()?;
    for _ in 1..POSITION_READS {
        if !positions_impossible(&got.0) {
            break;
        }
        std::thread::sleep(POSITION_REREAD_PAUSE);
        match read() {
            Ok(again) => got = again,
            Err(_) => break,
        }
    }
    Ok(got)
}

/// Read a segment's header (and an MPMC segment's participant table). The
/// returned view may describe something that is not a shmring segment at
/// all (check `snap.magic`). Positions that look impossible are read again
/// a few times before they are believed (see `settled`).
fn view(loc: &Location) -> Result<View, Error> {
    let (snap, page) = settled(|| {
        let (page, len) = read_first_page(loc)?;
        Ok((Snapshot::parse(&page, len), page))
    })?;
    let ty = type_info(&snap, &page);
    let parts = match (&snap.mpmc, snap.magic == header::MAGIC) {
        (Some(_), true) => Some(match read_mpmc_head(loc) {
            Ok(head) => participants(&head),
            Err(e) => {
                Participants { entries: Vec::new(), problems: vec![format!("participant table unreadable: {e}")] }
            }
        }),
        _ => None,
    };
    Ok(View { snap, ty, parts })
}

/// A shmring segment's view; `Ok(None)` if it is not a shmring segment.
fn snapshot(loc: &Location) -> Result<Option<View>, Error> {
    let v = view(loc)?;
    Ok((v.snap.magic == header::MAGIC).then_some(v))
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

fn json_row(loc: &Location, v: &View) -> serde_json::Value {
    let s = &v.snap;
    let mut row = serde_json::json!({
        "name": loc.to_string(),
        "kind": kind_name(s.kind),
        "capacity_bytes": s.capacity,
        "fill_bytes": if v.is_mpmc() { None } else { s.fill() },
        "creator_pid": s.creator_pid,
        "status": v.status().name(),
        "record_type": v.ty.json(),
    });
    if let (Some(m), Some(obj)) = (&s.mpmc, row.as_object_mut()) {
        let parts = v.parts.clone().unwrap_or_default();
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
    let mut rows: Vec<(Location, Result<View, NotReadable>)> = Vec::new();
    for loc in list_shm().map_err(|e| e.to_string())? {
        // Files that are not segments, and objects that vanished since the
        // directory was listed, are skipped.
        let row = match snapshot(&loc) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => continue,
            Err(e) => match not_readable(&e, &std::fs::symlink_metadata(file_path(&loc))) {
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
        let s = &v.snap;
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

fn entry_line(e: &Entry) -> String {
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

fn print_mpmc(v: &View, m: &header::MpmcSnapshot) {
    let s = &v.snap;
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
    let parts = v.parts.clone().unwrap_or_default();
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
    let v = view(loc).map_err(|e| e.to_string())?;
    let s = &v.snap;
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
    let notifier = header::NotifierKind::from_u32(s.notifier)
        .map_or_else(|| format!("?{}", s.notifier), |k| format!("{k:?}").to_lowercase());
    println!("notifier     {notifier}");
    println!(
        "state        {}",
        if s.state == header::STATE_READY { "ready".into() } else { format!("{} (not ready)", s.state) }
    );
    println!("record type  {}", v.ty.describe());
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

    /// A snapshot of a live, healthy ring of each kind, each made in a file
    /// that is removed again before anything is checked.
    fn healthy_snapshots() -> (Snapshot, Snapshot) {
        let loc = Location::path(std::env::temp_dir().join(format!("shmring-segments-test-{}", std::process::id())));
        let read = || read_first_page(&loc).map(|(page, len)| Snapshot::parse(&page, len));
        let opts = shmring::RingOptions::new().capacity(4096);
        let spsc = shmring::spsc::Producer::create(&loc, &opts).and_then(|_ring| read());
        let _ = loc.unlink();
        let opts = shmring::mpmc::MpmcOptions::new().slot_size(8).slot_count(8);
        let mpmc = shmring::mpmc::Producer::create(&loc, &opts).and_then(|_ring| read());
        let _ = loc.unlink();
        let (spsc, mpmc) = (spsc.unwrap(), mpmc.unwrap());
        for snap in [&spsc, &mpmc] {
            assert_eq!(snap.problems(), Vec::<String>::new(), "{snap:?}");
        }
        (spsc, mpmc)
    }

    /// `settled` over `reads`, in order (then errors); also how many were taken.
    fn settle(reads: &[&Snapshot]) -> (Result<Snapshot, Error>, usize) {
        let mut taken = 0;
        let got = settled(|| {
            taken += 1;
            match reads.get(taken - 1) {
                Some(s) => Ok(((*s).clone(), ())),
                None => Err(Error::NotFound("/gone".into())),
            }
        });
        (got.map(|(s, ())| s), taken)
    }

    #[test]
    fn torn_positions_are_read_again_and_reported_only_if_every_read_shows_them() {
        let (spsc, mpmc) = healthy_snapshots();
        let cap = spsc.capacity;
        let torn_spsc = [
            // Tail read after the producer moved on, head before the consumer did.
            Snapshot { head: 64, tail: 64 + cap + 8, ..spsc.clone() },
            // Head read after the consumer caught up with a newer tail.
            Snapshot { head: 128, tail: 64, ..spsc.clone() },
        ];
        let mut m = mpmc.mpmc.unwrap();
        m.dequeue = m.enqueue + 1;
        let torn_mpmc = Snapshot { mpmc: Some(m), ..mpmc.clone() };
        for (torn, good) in torn_spsc.iter().map(|t| (t, &spsc)).chain([(&torn_mpmc, &mpmc)]) {
            assert!(positions_impossible(torn), "{:?}", torn.problems());
            // A consistent read clears it.
            let (got, taken) = settle(&[torn, torn, good]);
            assert_eq!((got.unwrap(), taken), (good.clone(), 3));
            // Impossible in every read: reported, from the last read.
            let (got, taken) = settle(&[torn; POSITION_READS as usize + 1]);
            assert_eq!(taken, POSITION_READS as usize);
            assert!(got.unwrap().problems().iter().any(|p| p.contains("positions impossible")));
            // A first read that is fine is not repeated.
            assert_eq!(settle(&[good, torn]).1, 1);
            // Removed during the re-reads: what was read stands; a first read that fails, fails.
            assert_eq!(settle(&[torn]).0.unwrap(), torn.clone());
            assert!(matches!(settle(&[]).0, Err(Error::NotFound(_))));
        }
    }
}
