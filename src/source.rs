//! Positioned, read-only access to a package's bytes.
//!
//! Parsers and verifiers read through [`Source`], never through a path: the agent opens
//! the package once and keeps that descriptor, so nothing can swap the file under it.
//! `&[u8]` implements it for tests and fuzzing.

use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

/// Bytes that can be read at any offset, shared between threads.
pub trait Source: Send + Sync {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Read up to `buf.len()` bytes at `offset`; 0 only at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// True if the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Err(why)` when the bytes may differ between two reads without a local writer the
    /// kernel knows of (a FUSE or network file system): a format that reads twice (plain
    /// bundles: hash, then contents) must refuse it. In-memory sources are stable.
    fn check_stable(&self) -> Result<(), String> {
        Ok(())
    }

    /// True when the bytes come from a file server as they are read (a URL): a format
    /// that must read twice is refused outright, not for the file system it is on.
    fn streamed(&self) -> bool {
        false
    }

    /// A hint: the byte ranges `[start, end)` the reader will read next, ascending and
    /// apart. A file server source sizes its requests to them and fetches nothing
    /// between them; an empty list ends the hint. Local sources ignore it.
    fn plan(&self, _ranges: &[(u64, u64)]) {}

    /// Fill `buf` exactly from `offset`, or fail with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Open a package (or another input the agent reads) without ever blocking: O_NONBLOCK
/// for the open itself (a FIFO or a device would wait for a writer or a carrier), then
/// `fstat` of the descriptor: a regular file or a block device is accepted and blocking
/// mode restored; anything else is an error naming what it is.
pub fn open_input(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY).open(path)?;
    let kind = file.metadata()?.file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{what}, not a regular file or block device")));
    }
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    fcntl(&file, FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(file)
}

/// Where a package comes from at an edge.
#[derive(Debug)]
pub enum PackageOrigin<'a> {
    /// A path, opened with the rights of whoever runs this (the D-Bus service opens a
    /// caller's path on a thread that has taken the caller's rights).
    Path(&'a Path),
    /// A descriptor a D-Bus caller passed (`Download`'s `h`).
    Passed(std::os::fd::OwnedFd),
}

/// Why a package could not be opened: the file cannot be used (CWMP 9016).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct OpenError {
    /// The path, or "the passed descriptor".
    pub what: String,
    /// Why.
    pub why: String,
}

impl crate::fault::Fault for OpenError {
    fn kind(&self) -> &'static str {
        "access"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::UnableToAccessFile
    }
}

/// Open a package, one set of rules for every edge (command line and D-Bus, path and
/// passed descriptor), and return the agent's own open file description of it, the one
/// descriptor every later step reads, leases and checks:
/// - a path: [`open_input`] (non-blocking open, a regular file or a block device);
/// - a passed descriptor: open for reading only (`F_GETFL`: not `O_PATH`, not writable:
///   the agent holds a read lease on it), a regular file, reopened through
///   `/proc/self/fd` as a description of the agent's own (the caller's copy shares flags,
///   `F_SETSIG`/`F_SETOWN` and leases with whoever holds it), and checked to be the same
///   file.
///
/// Errors: [`OpenError`] naming the path or the descriptor and what is wrong.
pub fn open_package(origin: PackageOrigin<'_>) -> Result<File, OpenError> {
    match origin {
        PackageOrigin::Path(p) => {
            open_input(p).map_err(|e| OpenError { what: p.display().to_string(), why: e.to_string() })
        }
        PackageOrigin::Passed(fd) => {
            let fail = |why: String| OpenError { what: "the passed descriptor".into(), why };
            open_passed(fd).map_err(fail)
        }
    }
}

fn open_passed(fd: std::os::fd::OwnedFd) -> Result<File, String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| e.to_string())?);
    if flags.contains(OFlag::O_PATH) {
        return Err("an O_PATH descriptor, not open for reading".into());
    }
    match flags & OFlag::O_ACCMODE {
        OFlag::O_RDONLY => {}
        OFlag::O_WRONLY => return Err("write-only, not open for reading".into()),
        _ => return Err("open for writing: pass it read-only (O_RDONLY), the agent holds a read lease on it".into()),
    }
    let passed = File::from(fd);
    let meta = passed.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let own = open_input(Path::new(&format!("/proc/self/fd/{}", passed.as_raw_fd()))).map_err(|e| e.to_string())?;
    let again = own.metadata().map_err(|e| e.to_string())?;
    if (again.dev(), again.ino()) != (meta.dev(), meta.ino()) {
        return Err("changed while it was taken".into());
    }
    Ok(own)
}

/// An open file. Its length is taken once, when opened: a file that grows or shrinks
/// afterwards reads as truncated or keeps its first length.
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    /// Wrap an open file (a block device's length is its size).
    pub fn new(mut file: File) -> io::Result<Self> {
        let meta = file.metadata()?;
        let len = if meta.file_type().is_block_device() { file.seek(SeekFrom::End(0))? } else { meta.len() };
        Ok(Self { file, len })
    }

    /// The descriptor this source reads.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// File systems whose bytes come from the kernel's page cache over local storage (or
/// memory), so that a read lease sees every writer: RAUC's list for plain bundles
/// (CVE-2020-25860), with erofs and exFAT, without overlayfs (its lower layer can be a
/// FUSE mount). By `statfs(2)` f_type.
const STABLE_FILE_SYSTEMS: &[(i64, &str)] = &[
    (0xEF53, "ext2/3/4"),
    (0x9123_683E, "btrfs"),
    (0x5846_5342, "xfs"),
    (0xF2F5_2010, "f2fs"),
    (0x4d44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x72b6, "jffs2"),
    (0x2405_1905, "ubifs"),
    (0x7371_7368, "squashfs"),
    (0xE0F5_E1E2, "erofs"),
    (0x28cd_3d45, "cramfs"),
    (0x7275, "romfs"),
    (0x9660, "iso9660"),
    (0x1501_3346, "udf"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58f6, "ramfs"),
];

/// Names of file systems a plain bundle is refused on, for the message.
fn file_system_name(f_type: i64) -> String {
    match f_type {
        0x6573_5546 => "FUSE".into(),
        0x6969 => "NFS".into(),
        0xFF53_4D42 | 0xFE53_4D42 | 0x517B => "CIFS/SMB".into(),
        0x0102_1997 => "9p".into(),
        0x00C3_6400 => "ceph".into(),
        other => format!("type {other:#x}"),
    }
}

/// Whether `f_type` (from `statfs(2)`) is a file system in [`STABLE_FILE_SYSTEMS`].
pub fn stable_file_system(f_type: i64) -> Result<&'static str, String> {
    STABLE_FILE_SYSTEMS.iter().find(|(t, _)| *t == f_type).map(|(_, n)| *n).ok_or_else(|| file_system_name(f_type))
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn check_stable(&self) -> Result<(), String> {
        let meta = self.file.metadata().map_err(|e| e.to_string())?;
        if meta.file_type().is_block_device() {
            return Ok(());
        }
        let fs = nix::sys::statfs::fstatfs(&self.file).map_err(|e| format!("statfs: {e}"))?;
        #[allow(clippy::unnecessary_cast)] // the field's type differs between libcs
        stable_file_system(i64::from(fs.filesystem_type().0 as u32)).map(|_| ()).map_err(|name| {
            format!("the file is on a {name} file system, whose bytes can change between reads without a local writer")
        })
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let max = (self.len - offset).min(buf.len() as u64) as usize;
        self.file.read_at(&mut buf[..max], offset)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let data = self.as_slice();
        let Ok(off) = usize::try_from(offset) else {
            return Ok(0);
        };
        if off >= data.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }
}

/// A window `[start, start+len)` of a shared source, as a buffered `Read + Seek` cursor.
pub struct Window {
    src: Arc<dyn Source>,
    start: u64,
    len: u64,
    pos: u64,
    buf: Box<[u8]>,
    buf_pos: usize,
    buf_len: usize,
}

impl Window {
    /// Buffer size of a window: reads from the source happen in pieces of this size.
    pub const BUF: usize = 128 * 1024;

    /// A cursor over `len` bytes of `src` starting at `start`.
    pub fn new(src: Arc<dyn Source>, start: u64, len: u64) -> Self {
        Self { src, start, len, pos: 0, buf: vec![0; Self::BUF].into_boxed_slice(), buf_pos: 0, buf_len: 0 }
    }
}

impl Read for Window {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, out)
    }
}

/// `Read::read` for a reader whose buffer is its `BufRead`.
pub(crate) fn read_buffered(r: &mut impl BufRead, out: &mut [u8]) -> io::Result<usize> {
    let avail = r.fill_buf()?;
    let n = avail.len().min(out.len());
    out[..n].copy_from_slice(&avail[..n]);
    r.consume(n);
    Ok(n)
}

/// Where `to` lands in a stream of `len` bytes positioned at `pos`.
pub(crate) fn seek_target(pos: u64, len: u64, to: SeekFrom) -> io::Result<u64> {
    match to {
        SeekFrom::Start(o) => Some(o),
        SeekFrom::End(d) => len.checked_add_signed(d),
        SeekFrom::Current(d) => pos.checked_add_signed(d),
    }
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))
}

impl BufRead for Window {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.buf_pos == self.buf_len {
            let remaining = self.len.saturating_sub(self.pos);
            if remaining == 0 {
                return Ok(&[]);
            }
            let want = (self.buf.len() as u64).min(remaining) as usize;
            let n = self.src.read_at(&mut self.buf[..want], self.start + self.pos)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf_pos = 0;
            self.buf_len = n;
        }
        Ok(&self.buf[self.buf_pos..self.buf_len])
    }
    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.buf_len - self.buf_pos);
        self.buf_pos += amt;
        self.pos += amt as u64;
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = seek_target(self.pos, self.len, to)?;
        // Keep the buffer when the target lies inside it.
        let buf_start = self.pos - self.buf_pos as u64;
        if target >= buf_start && target < buf_start + self.buf_len as u64 {
            self.buf_pos = (target - buf_start) as usize;
        } else {
            self.buf_pos = 0;
            self.buf_len = 0;
        }
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bundles_are_read_only_from_local_file_systems() {
        assert_eq!(stable_file_system(0xEF53), Ok("ext2/3/4"));
        assert_eq!(stable_file_system(0x0102_1994), Ok("tmpfs"));
        assert_eq!(stable_file_system(0x6573_5546), Err("FUSE".into()));
        assert_eq!(stable_file_system(0x6969), Err("NFS".into()));
        assert_eq!(stable_file_system(0x1234), Err("type 0x1234".into()));
    }
}
