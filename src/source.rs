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

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
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
