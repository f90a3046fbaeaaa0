//! Reading files out of a bundle's squashfs with backhand, through whatever reader the
//! caller supplies (for verity bundles, one that checks every block against the tree).
//!
//! Why backhand and not squashfs-ng: squashfs-ng 0.1.4 opens archives by path only (and
//! maps the whole file), so it cannot read through a verifying reader or a kept
//! descriptor, and it unwraps inside `Read`. backhand reads from any `BufRead + Seek` and is
//! memory-safe Rust, which matters for a parser that sees unauthenticated bytes.

use backhand::{BackhandError, BufReadSeek, FilesystemReader, InnerNode};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Most inodes a bundle may hold (RAUC bundles hold a manifest, images and hooks).
pub const MAX_INODES: u32 = 4096;
/// Most metadata (inode, directory, fragment, id tables) a bundle may carry, compressed.
pub const MAX_METADATA: u64 = 16 << 20;
/// Most metadata blocks before the table indexes: each expands to at most 8 KiB, so this
/// bounds what the parser allocates (8 MiB) whatever the compression ratio. It allows
/// an image of about 256 GiB in 128 KiB blocks.
pub const MAX_METADATA_BLOCKS: u64 = 1024;

/// A squashfs problem: the package is corrupted.
#[derive(Debug, Error)]
pub enum SquashfsError {
    /// The superblock is invalid or outside this agent's limits.
    #[error("squashfs superblock: {0}")]
    Superblock(String),
    /// backhand could not read the filesystem.
    #[error("squashfs: {0}")]
    Corrupt(String),
    /// The directory tree backhand read does not account for every inode: backhand stops
    /// reading a directory at the first entry it cannot parse, silently.
    #[error("squashfs directory tree: {names} names reach fewer than the {inodes} inodes of the superblock (a directory listing is cut short)")]
    Incomplete {
        /// Names found, the root included (hard links count once per name).
        names: u64,
        /// The superblock's inode count.
        inodes: u32,
    },
    /// A file the manifest names is missing or not a regular file.
    #[error("squashfs: '{0}' is not a regular file in the bundle")]
    NotAFile(String),
    /// A named pipe or socket: a bundle has no use for one, and backhand takes their type
    /// from the directory entry without looking at the inode (libsquashfs and the kernel
    /// use the inode's), so the two readers could see different trees.
    #[error("squashfs directory tree: '{0}' is a named pipe or socket; a bundle holds files, directories, symlinks and devices")]
    Special(String),
    /// A file is larger than the caller allows.
    #[error("squashfs: '{name}' is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// File name.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Reading the package failed.
    #[error("squashfs: reading the package failed: {0}")]
    Io(io::Error),
}

impl crate::fault::Fault for SquashfsError {
    fn kind(&self) -> &'static str {
        "squashfs"
    }
    /// Reading failed: the file cannot be accessed (9016); anything else: corrupt (9018).
    fn fault(&self) -> crate::fault::CwmpFault {
        match self {
            Self::Io(_) => crate::fault::CwmpFault::UnableToAccessFile,
            _ => crate::fault::CwmpFault::FileCorrupted,
        }
    }
}

impl From<BackhandError> for SquashfsError {
    /// An error the operating system reported is I/O, except EINVAL (a seek to an offset
    /// the image made up); any other `io::Error` inside backhand comes from a decompressor
    /// or a bounds check on the image: corruption.
    fn from(e: BackhandError) -> Self {
        match e {
            BackhandError::StdIo(io) if io.raw_os_error().is_some_and(|c| c != nix::libc::EINVAL) => Self::Io(io),
            e => Self::Corrupt(e.to_string()),
        }
    }
}

/// Check the 96-byte superblock before backhand allocates anything from it.
pub fn check_superblock(sb: &[u8; 96], image_len: u64) -> Result<(), SquashfsError> {
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(sb[o..o + 8].try_into().expect("8 bytes"));
    let bad = |w: String| Err(SquashfsError::Superblock(w));
    if &sb[0..4] != b"hsqs" {
        return bad("no squashfs magic (little-endian 'hsqs')".into());
    }
    let (inodes, block_size, block_log) = (u32_at(4), u32_at(12), u16_at(22));
    if (u16_at(28), u16_at(30)) != (4, 0) {
        return bad(format!("version {}.{}, 4.0 expected", u16_at(28), u16_at(30)));
    }
    if inodes == 0 || inodes > MAX_INODES {
        return bad(format!("{inodes} inodes (1..{MAX_INODES} allowed)"));
    }
    if !block_size.is_power_of_two()
        || !(4096..=1 << 20).contains(&block_size)
        || 1u32 << block_log.min(31) != block_size
    {
        return bad(format!("block size {block_size} / log {block_log} invalid"));
    }
    let (bytes_used, inode_table) = (u64_at(40), u64_at(64));
    if bytes_used > image_len || inode_table >= bytes_used {
        return bad(format!("bytes used {bytes_used} / inode table {inode_table} outside the {image_len} byte image"));
    }
    if bytes_used - inode_table > MAX_METADATA {
        return bad(format!("{} bytes of metadata (at most {MAX_METADATA})", bytes_used - inode_table));
    }
    let (frag_count, id_count) = (u32_at(16), u16_at(26));
    if frag_count > inodes || id_count == 0 {
        return bad(format!("{frag_count} fragments for {inodes} inodes, {id_count} ids"));
    }
    Ok(())
}

/// Walk the metadata block headers from the inode table up to the first table index
/// (mksquashfs's layout: inode, directory, fragment, export and id blocks, then their
/// indexes) and refuse more than [`MAX_METADATA_BLOCKS`]: this bounds the memory the
/// parser needs before it allocates any of it.
pub fn check_metadata_blocks(
    sb: &[u8; 96],
    read_at: &mut dyn FnMut(&mut [u8], u64) -> io::Result<()>,
) -> Result<(), SquashfsError> {
    let u64_at = |o: usize| u64::from_le_bytes(sb[o..o + 8].try_into().expect("8 bytes"));
    let (inode_table, dir_table) = (u64_at(64), u64_at(72));
    const NOT_SET: u64 = u64::MAX;
    // The id, fragment and export indexes: the metadata blocks end at the first of them.
    let end = [u64_at(48), u64_at(80), u64_at(88)].into_iter().filter(|&t| t != NOT_SET).min().unwrap_or(NOT_SET);
    if !(inode_table <= dir_table && dir_table <= end && end != NOT_SET) {
        return Err(SquashfsError::Superblock("tables are not in mksquashfs order".into()));
    }
    let (mut pos, mut blocks) = (inode_table, 0u64);
    while pos < end {
        let mut h = [0u8; 2];
        read_at(&mut h, pos).map_err(SquashfsError::Io)?;
        let len = (u16::from_le_bytes(h) & 0x7fff) as u64;
        if len == 0 || len > 8192 {
            return Err(SquashfsError::Superblock(format!("metadata block at {pos} of {len} bytes")));
        }
        pos += 2 + len;
        blocks += 1;
        if blocks > MAX_METADATA_BLOCKS {
            return Err(SquashfsError::Superblock(format!("more than {MAX_METADATA_BLOCKS} metadata blocks")));
        }
    }
    if pos != end {
        return Err(SquashfsError::Superblock("metadata blocks overrun a table index".into()));
    }
    Ok(())
}

/// One inode of a squashfs as a directory walk finds it (squashfs 4.0 inode types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path inside the filesystem; the root is `/`.
    pub path: PathBuf,
    /// The inode's type and what it carries.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`), as stored.
    pub mode: u16,
    /// Owner and group ids, resolved through the id table.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
}

/// The inode types of squashfs 4.0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes.
    File {
        /// Size in bytes.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link (not followed by this reader).
    Symlink {
        /// The target as stored.
        target: PathBuf,
    },
    /// A character or block device.
    Device,
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
}

/// An open squashfs.
pub struct Squashfs {
    fs: FilesystemReader<'static>,
}

impl Squashfs {
    /// Open from a reader positioned anywhere; `len` is the image length.
    pub fn open(mut reader: Box<dyn BufReadSeek>, len: u64) -> Result<Self, SquashfsError> {
        let mut sb = [0u8; 96];
        reader.seek(io::SeekFrom::Start(0)).map_err(SquashfsError::Io)?;
        reader.read_exact(&mut sb).map_err(SquashfsError::Io)?;
        check_superblock(&sb, len)?;
        check_metadata_blocks(&sb, &mut |buf, at| {
            reader.seek(io::SeekFrom::Start(at))?;
            reader.read_exact(buf)
        })?;
        reader.seek(io::SeekFrom::Start(0)).map_err(SquashfsError::Io)?;
        let fs = FilesystemReader::from_reader(reader)?;
        // Every inode mksquashfs writes has a name; fewer names than inodes means a listing
        // backhand gave up on. The bundle would then lack files without saying so.
        let inodes = u32::from_le_bytes(sb[4..8].try_into().expect("4 bytes"));
        let names = fs.files().count() as u64;
        if names < u64::from(inodes) {
            return Err(SquashfsError::Incomplete { names, inodes });
        }
        if let Some(n) = fs.files().find(|n| matches!(n.inner, InnerNode::NamedPipe | InnerNode::Socket)) {
            return Err(SquashfsError::Special(n.fullpath.display().to_string()));
        }
        Ok(Self { fs })
    }

    fn find(&self, name: &str) -> Result<&backhand::SquashfsFileReader, SquashfsError> {
        let want = Path::new("/").join(name);
        self.fs
            .files()
            .find(|n| n.fullpath == want)
            .and_then(|n| match &n.inner {
                InnerNode::File(f) => Some(f),
                _ => None,
            })
            .ok_or_else(|| SquashfsError::NotAFile(name.to_string()))
    }

    /// One entry per name reachable from the root (a hard link appears under each of its
    /// names), parents before their children. Named pipes and sockets never appear:
    /// [`Squashfs::open`] refuses them.
    pub fn entries(&self) -> Vec<Entry> {
        self.fs
            .files()
            .map(|n| Entry {
                path: n.fullpath.clone(),
                kind: match &n.inner {
                    InnerNode::File(f) => EntryKind::File { size: f.file_len() as u64 },
                    InnerNode::Dir(_) => EntryKind::Dir,
                    InnerNode::Symlink(l) => EntryKind::Symlink { target: l.link.clone() },
                    InnerNode::CharacterDevice(_) | InnerNode::BlockDevice(_) => EntryKind::Device,
                    InnerNode::NamedPipe => EntryKind::Fifo,
                    InnerNode::Socket => EntryKind::Socket,
                },
                mode: n.header.permissions & 0o7777,
                uid: n.header.uid,
                gid: n.header.gid,
            })
            .collect()
    }

    /// Size of a regular file.
    pub fn file_size(&self, name: &str) -> Result<u64, SquashfsError> {
        Ok(self.find(name)?.file_len() as u64)
    }

    /// Read a whole (small) file.
    pub fn read_file(&self, name: &str, max: u64) -> Result<Vec<u8>, SquashfsError> {
        let f = self.find(name)?;
        let size = f.file_len() as u64;
        if size > max {
            return Err(SquashfsError::TooLarge { name: name.into(), size, max });
        }
        let mut out = Vec::with_capacity(size as usize);
        self.fs.file(f).reader_checked()?.take(max + 1).read_to_end(&mut out).map_err(BackhandError::StdIo)?;
        Ok(out)
    }

    /// A reader of a file's bytes.
    pub fn reader(&self, name: &str) -> Result<impl Read + '_, SquashfsError> {
        let f = self.find(name)?;
        Ok(self.fs.file(f).reader_checked()?)
    }
}

/// Where one stored block of a file lies in the squashfs image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Offset in the image.
    pub start: u64,
    /// Stored length in bytes; 0 for a sparse block (all zeros, nothing stored).
    pub len: u32,
    /// Stored as is (no compression).
    pub uncompressed: bool,
}

/// Where a regular file's data lies (squashfs 4.0 file inode: `blocks_start`, the block
/// size list, the fragment index and offset): its full blocks, then its tail, in a
/// fragment block or in a short last block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    /// The filesystem's block size in bytes.
    pub block_size: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// Block `i` holds bytes `[i*block_size, (i+1)*block_size)` (the last one may be short).
    pub blocks: Vec<Stored>,
    /// The tail in a fragment block: the fragment block, and the tail's offset in it
    /// once decompressed.
    pub fragment: Option<(Stored, u32)>,
}

impl Squashfs {
    /// Where `name`'s data lies.
    ///
    /// Errors: [`SquashfsError::NotAFile`]; [`SquashfsError::Corrupt`] when the inode's
    /// sizes disagree with each other or with the fragment table.
    pub fn layout(&self, name: &str) -> Result<FileLayout, SquashfsError> {
        const NO_FRAGMENT: usize = 0xffff_ffff;
        let f = self.find(name)?;
        let bad = |what: &str| SquashfsError::Corrupt(format!("'{name}': {what}"));
        let block_size = u64::from(self.fs.block_size);
        let size = f.file_len() as u64;
        let mut at = f.blocks_start();
        let mut blocks = Vec::with_capacity(f.block_sizes().len());
        for d in f.block_sizes() {
            let len = d.size();
            if u64::from(len) > block_size {
                return Err(bad("a stored block is larger than the block size"));
            }
            blocks.push(Stored { start: at, len, uncompressed: d.uncompressed() });
            at += u64::from(len);
        }
        let full = blocks.len() as u64 * block_size;
        let fragment = if f.frag_index() == NO_FRAGMENT {
            if size > full || size + block_size <= full {
                return Err(bad("the block list does not cover the file's size"));
            }
            None
        } else {
            let tail = size.checked_sub(full).filter(|t| *t > 0 && *t < block_size);
            tail.ok_or_else(|| bad("the fragment tail does not fit the file's size"))?;
            let fr = self
                .fs
                .fragments
                .as_ref()
                .and_then(|t| t.get(f.frag_index()))
                .ok_or_else(|| bad("its fragment is not in the fragment table"))?;
            let stored = Stored { start: fr.start, len: fr.size.size(), uncompressed: fr.size.uncompressed() };
            if u64::from(stored.len) > block_size || stored.len == 0 {
                return Err(bad("its fragment block has an impossible size"));
            }
            Some((stored, f.block_offset()))
        };
        Ok(FileLayout { block_size, size, blocks, fragment })
    }

    /// Decompress one stored block (`raw`, its stored bytes) into `out` (cleared first):
    /// at most one block size.
    ///
    /// Errors: [`SquashfsError::Corrupt`] when it does not decompress, or to more than a
    /// block.
    pub fn decompress(&self, stored: &Stored, raw: &[u8], out: &mut Vec<u8>) -> Result<(), SquashfsError> {
        use backhand::compression::{CompressionAction, DefaultCompressor};
        out.clear();
        let block_size = self.fs.block_size as usize;
        if stored.len == 0 {
            out.resize(block_size, 0);
            return Ok(());
        }
        if stored.uncompressed {
            out.extend_from_slice(raw);
            return Ok(());
        }
        out.reserve(block_size);
        let c = self.fs.compressor.ok_or_else(|| SquashfsError::Corrupt("no compressor".into()))?;
        DefaultCompressor.decompress(raw, out, c.into())?;
        if out.len() > block_size {
            return Err(SquashfsError::Corrupt(format!("a block decompresses to {} bytes", out.len())));
        }
        Ok(())
    }
}
