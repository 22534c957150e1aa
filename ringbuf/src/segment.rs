//! Shared-memory segments: create, open and unlink a mapping over a POSIX
//! shm object, a file, or a memfd.
//!
//! Creation is exclusive (`O_EXCL`) with mode 0600 unless asked otherwise;
//! file paths are opened with `O_NOFOLLOW`. Openers check the real length with
//! `fstat` before mapping. The mapping is `MAP_SHARED`, read-write.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// Where a segment lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A POSIX shared-memory object (`shm_open`), visible under `/dev/shm` on
    /// Linux. The name is stored with a leading `/`.
    Shm(String),
    /// A regular file at this path: persistent, any filesystem that supports
    /// `mmap`.
    Path(PathBuf),
}

impl Location {
    /// A POSIX shm object. `name` may omit the leading `/`; it must not
    /// contain any other `/`. Checked when used.
    ///
    /// ```
    /// let loc = shmring::Location::shm("demo");
    /// assert_eq!(loc.to_string(), "/demo");
    /// ```
    pub fn shm(name: impl AsRef<str>) -> Location {
        let n = name.as_ref();
        Location::Shm(if n.starts_with('/') { n.to_owned() } else { format!("/{n}") })
    }

    /// A file path.
    pub fn path(p: impl Into<PathBuf>) -> Location {
        Location::Path(p.into())
    }

    /// Remove the name. Processes that have the segment mapped keep using it;
    /// the memory is freed when the last one unmaps it.
    ///
    /// # Errors
    /// [`Error::NotFound`] if there is no such segment, [`Error::Io`] otherwise.
    pub fn unlink(&self) -> Result<()> {
        match self {
            Location::Shm(name) => {
                let c = shm_cname(name)?;
                nix::sys::mman::shm_unlink(c.as_c_str()).map_err(|e| match e {
                    Errno::ENOENT => Error::NotFound(self.to_string()),
                    e => Error::io("shm_unlink", self, e),
                })
            }
            Location::Path(p) => std::fs::remove_file(p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound(self.to_string()),
                _ => Error::io("unlink", self, e),
            }),
        }
    }

    /// The file behind the location: `/dev/shm/NAME` for a shm object
    /// ([`SHM_DIR`]), the path itself otherwise.
    ///
    /// ```
    /// use shmring::Location;
    /// assert_eq!(Location::shm("demo").file_path(), std::path::Path::new("/dev/shm/demo"));
    /// ```
    pub fn file_path(&self) -> PathBuf {
        match self {
            Location::Shm(name) => Path::new(SHM_DIR).join(name.trim_start_matches('/')),
            Location::Path(p) => p.clone(),
        }
    }

    /// Whether the name currently exists.
    pub fn exists(&self) -> bool {
        match self {
            Location::Shm(_) => open_file(self, Access::ReadOnly).is_ok(),
            Location::Path(p) => p.symlink_metadata().is_ok(),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Shm(n) => f.write_str(n),
            Location::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

fn shm_cname(name: &str) -> Result<CString> {
    let bad = |why: &str| Error::InvalidArgument(format!("shm name {name:?}: {why}"));
    let rest = name.strip_prefix('/').unwrap_or(name);
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if rest.contains('/') {
        return Err(bad("must not contain '/' after the leading one (use a file path instead)"));
    }
    if rest == "." || rest == ".." {
        return Err(bad("reserved name"));
    }
    if rest.len() > 250 {
        return Err(bad("longer than 250 bytes"));
    }
    CString::new(format!("/{rest}")).map_err(|_| bad("contains a NUL byte"))
}

/// How [`open_file`] opens a location.
#[derive(Clone, Copy)]
enum Access {
    /// Create exclusively with this mode, read-write.
    Create(u32),
    /// Open an existing one read-write.
    ReadWrite,
    /// Open an existing one read-only (never blocks on a FIFO at `path`).
    ReadOnly,
}

/// Open the object or file behind `loc`, mapping errors to ours.
fn open_file(loc: &Location, access: Access) -> Result<File> {
    match loc {
        Location::Shm(name) => {
            let c = shm_cname(name)?;
            let (flags, mode) = match access {
                Access::Create(mode) => {
                    (OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL, Mode::from_bits_truncate(mode))
                }
                Access::ReadWrite => (OFlag::O_RDWR, Mode::empty()),
                // Non-blocking: a FIFO planted under the name must not hang
                // `inspect` (it is then refused as not a regular file).
                Access::ReadOnly => (OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty()),
            };
            let fd = nix::sys::mman::shm_open(c.as_c_str(), flags, mode).map_err(|e| match e {
                Errno::EEXIST => Error::AlreadyExists(loc.to_string()),
                Errno::ENOENT => Error::NotFound(loc.to_string()),
                e => Error::io("shm_open", loc, e),
            })?;
            Ok(File::from(fd))
        }
        Location::Path(p) => {
            let mut o = std::fs::OpenOptions::new();
            let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
            match access {
                Access::Create(mode) => o.read(true).write(true).create_new(true).mode(mode),
                Access::ReadWrite => o.read(true).write(true),
                Access::ReadOnly => {
                    flags |= libc::O_NONBLOCK;
                    o.read(true)
                }
            };
            o.custom_flags(flags).open(p).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(loc.to_string()),
                std::io::ErrorKind::NotFound => Error::NotFound(loc.to_string()),
                _ => Error::io("open", loc, e),
            })
        }
    }
}

/// A mapped segment. Unmapped on drop; the name is left in place (see
/// [`Location::unlink`]).
#[derive(Debug)]
pub struct Segment {
    map: MmapRaw,
    file: File,
    name: String,
}

/// How a segment is created.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    /// Permission bits of the new object or file. Default 0o600.
    pub mode: u32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions { mode: 0o600 }
    }
}

impl Segment {
    /// Create a new segment of `len` bytes, zero-filled. Fails if the name
    /// exists.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidArgument`] for a bad name or
    /// zero length, [`Error::Io`] if the object cannot be created, sized (a
    /// full `/dev/shm` or disk shows up here) or mapped. A half-created
    /// segment is removed again before returning an error.
    pub fn create(loc: &Location, len: u64, opts: CreateOptions) -> Result<Segment> {
        if len == 0 {
            return Err(Error::InvalidArgument("segment length 0".into()));
        }
        let file = open_file(loc, Access::Create(opts.mode))?;
        let seg = Self::size_and_map(file, len, loc.to_string());
        if seg.is_err() {
            let _ = loc.unlink();
        }
        seg
    }

    /// Create an anonymous segment backed by a memfd. It has no name in any
    /// filesystem; share it by passing [`Segment::fd`] to another process
    /// (inherit it, or send it over a UNIX socket). The memfd is sealed
    /// against shrinking and growing, so a receiver can never be made to fault
    /// on a truncated mapping.
    ///
    /// # Errors
    /// [`Error::Io`] if `memfd_create`, sizing, sealing or `mmap` fails.
    pub fn create_memfd(debug_name: &str, len: u64) -> Result<Segment> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let label = format!("memfd:{debug_name}");
        let c = CString::new(debug_name.replace('\0', "?")).unwrap_or_default();
        let fd = memfd_create(c.as_c_str(), MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(|e| Error::io("memfd_create", &label, e))?;
        let file = File::from(fd);
        file.set_len(len).map_err(|e| Error::io("ftruncate", &label, e))?;
        nix::fcntl::fcntl(
            &file,
            nix::fcntl::FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_SHRINK | nix::fcntl::SealFlag::F_SEAL_GROW),
        )
        .map_err(|e| Error::io("fcntl(F_ADD_SEALS)", &label, e))?;
        Self::map(file, len, label)
    }

    /// Open an existing segment by name or path, mapping its whole current
    /// length. The length is not validated here beyond being non-zero; ring
    /// constructors check it against the header.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::InvalidArgument`] for a bad name,
    /// [`Error::Io`] (permission denied, a symlink at `path`, ...).
    pub fn open(loc: &Location) -> Result<Segment> {
        let file = open_file(loc, Access::ReadWrite)?;
        Self::map_current(file, loc.to_string())
    }

    /// Map a segment from a file descriptor received from another process
    /// (typically a memfd). If it is a memfd it must carry the
    /// `F_SEAL_SHRINK` seal, so the sender cannot truncate it under us.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unsealed memfd, [`Error::Io`] if it
    /// cannot be inspected or mapped.
    pub fn from_fd(fd: OwnedFd, debug_name: &str) -> Result<Segment> {
        let label = format!("fd:{debug_name}");
        let file = File::from(fd);
        match nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GET_SEALS) {
            Ok(bits) => {
                let seals = nix::fcntl::SealFlag::from_bits_truncate(bits);
                if !seals.contains(nix::fcntl::SealFlag::F_SEAL_SHRINK) {
                    return Err(Error::InvalidArgument(format!(
                        "{label}: memfd is not sealed against shrinking (F_SEAL_SHRINK); refusing to map it"
                    )));
                }
            }
            Err(Errno::EINVAL) => {} // not a memfd: shm or a plain file
            Err(e) => return Err(Error::io("fcntl(F_GET_SEALS)", &label, e)),
        }
        Self::map_current(file, label)
    }

    fn size_and_map(file: File, len: u64, name: String) -> Result<Segment> {
        file.set_len(len).map_err(|e| Error::io("ftruncate", &name, e))?;
        // On tmpfs, ftruncate does not reserve pages: a full /dev/shm would
        // surface later as SIGBUS on first touch. Allocate now so it is an
        // error here instead.
        let r = nix::fcntl::posix_fallocate(&file, 0, len as libc::off_t);
        match r {
            Ok(()) | Err(Errno::EOPNOTSUPP) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(Error::io("posix_fallocate", &name, e)),
        }
        Self::map(file, len, name)
    }

    fn map_current(file: File, name: String) -> Result<Segment> {
        let len = file.metadata().map_err(|e| Error::io("fstat", &name, e))?.len();
        if len == 0 {
            return Err(Error::NotReady(name));
        }
        Self::map(file, len, name)
    }

    fn map(file: File, len: u64, name: String) -> Result<Segment> {
        let len_usize =
            usize::try_from(len).map_err(|_| Error::InvalidArgument(format!("{name}: length {len} too large")))?;
        let map = MmapOptions::new().len(len_usize).map_raw(&file).map_err(|e| Error::io("mmap", &name, e))?;
        Ok(Segment { map, file, name })
    }

    /// Start of the mapping (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always `false`: segments are never empty.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Current length of the backing object (fstat), which a hostile process
    /// could have changed since mapping.
    pub fn backing_len(&self) -> Result<u64> {
        self.file.metadata().map(|m| m.len()).map_err(|e| Error::io("fstat", &self.name, e))
    }

    /// The descriptor of the backing object, e.g. to pass a memfd to another
    /// process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The name used in messages: the shm name, the path, or `memfd:LABEL`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Read up to the first page of a segment with plain reads (no mapping, no
/// writes), plus its real length. Used by `ls` and `inspect`.
///
/// # Errors
/// [`Error::NotFound`], [`Error::Io`].
pub fn read_first_page(loc: &Location) -> Result<(Vec<u8>, u64)> {
    read_prefix(loc, crate::header::HEADER_LEN)
}

/// Read up to the first `max` bytes of a segment with plain reads (no
/// mapping, no writes), plus its real length: fewer bytes if the file is
/// shorter. A name that is not a regular file (a FIFO planted under it, a
/// symbolic link) is refused without blocking.
///
/// # Errors
/// [`Error::NotFound`], [`Error::InvalidArgument`] for something other than
/// a regular file, [`Error::Io`].
pub fn read_prefix(loc: &Location, max: usize) -> Result<(Vec<u8>, u64)> {
    let mut file = open_file(loc, Access::ReadOnly)?;
    let meta = file.metadata().map_err(|e| Error::io("fstat", loc, e))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!("{loc} is not a regular file")));
    }
    let mut bytes = Vec::with_capacity(max);
    (&mut file).take(max as u64).read_to_end(&mut bytes).map_err(|e| Error::io("read", loc, e))?;
    Ok((bytes, meta.len()))
}

/// Where Linux (glibc's `shm_open`) keeps POSIX shared-memory objects: a
/// tmpfs whose files are the objects.
pub const SHM_DIR: &str = "/dev/shm";

/// Names of POSIX shm objects currently in `/dev/shm` (any, not only ours),
/// as [`Location::Shm`].
pub fn list_shm() -> Result<Vec<Location>> {
    let dir = Path::new(SHM_DIR);
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("readdir", SHM_DIR, e))?;
    let mut out: Vec<Location> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().map(Location::shm))
        .collect();
    out.sort_by_key(|l| l.to_string());
    Ok(out)
}
