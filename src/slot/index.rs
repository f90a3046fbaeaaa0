//! Block-hash indexes of the device's slots, for adaptive updates: kept in the data
//! directory in RAUC's layout and format, so that a device moved from RAUC to this agent
//! (or back) keeps them:
//! `<data-directory>/slot.<class>.<n>/hash-<sha256 of the image installed>/block-hash-index`
//! (`hash-unknown` when the slot's image is not known, e.g. the factory slot).
//!
//! An index is a hint and nothing more: [`SlotBlocks`] hashes every block it gives again.
//! It is stored after an install wrote the slot (the bundle's index of what was written),
//! or by `henb-update slot index`; it is removed when the slot is about to be written or
//! is marked bad.

use crate::blockindex::{self, BlockHashIndex, Lookup, LookupBuilder, BLOCK};
use crate::config::SlotConf;
use crate::package::adaptive::Reuse;
use crate::package::Image;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// File name of an index inside its `hash-*` directory.
pub const FILE: &str = "block-hash-index";

/// The directory of `slot`'s indexes.
pub fn slot_dir(data_dir: &Path, slot: &str) -> PathBuf {
    data_dir.join(format!("slot.{slot}"))
}

/// The stored index of `slot`, as a lookup (whatever image it was made for: it is
/// checked block by block when used). A file that is not a whole number of entries, or
/// longer than the slot's device has blocks, is none; symlinks are not followed.
pub fn load(data_dir: &Path, slot: &SlotConf) -> Option<Lookup> {
    let dir = slot_dir(data_dir, &slot.name);
    let entries = fs::read_dir(&dir).ok()?;
    let device_blocks = crate::slot::writer::device_size(&slot.device).ok()? / BLOCK as u64;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("hash-") {
            continue;
        }
        let path = e.path().join(FILE);
        let Ok(f) = crate::fsutil::open_state(&path) else { continue };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len == 0 || len > device_blocks * blockindex::ENTRY as u64 {
            tracing::warn!("ignoring {}: {len} bytes for a slot of {device_blocks} blocks", path.display());
            continue;
        }
        match Lookup::read_index(&mut BufReader::new(f), len) {
            Ok(l) => return Some(l),
            Err(e) => tracing::warn!("ignoring {}: {e}", path.display()),
        }
    }
    None
}

/// Store `index` as `slot`'s, for the image of SHA-256 `digest` (hex; `None`: unknown),
/// atomically, after removing any other index of the slot (a crash in between leaves
/// none, never two).
///
/// Errors: the data directory cannot be written.
pub fn store(data_dir: &Path, slot: &str, digest: Option<&str>, index: &BlockHashIndex) -> io::Result<()> {
    store_with(data_dir, slot, digest, &mut |w| w.write_all(index.as_bytes()))
}

fn store_with(
    data_dir: &Path,
    slot: &str,
    digest: Option<&str>,
    fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let name = format!("hash-{}", digest.unwrap_or("unknown"));
    let dir = slot_dir(data_dir, slot);
    crate::fsutil::private_dir(&dir)?;
    remove_except(&dir, None)?;
    crate::fsutil::private_dir(&dir.join(&name))?;
    crate::fsutil::write_atomic_with(&dir.join(&name).join(FILE), fill)
}

/// Remove every index of `slot` (it is about to change, or was marked bad).
///
/// Errors: the data directory cannot be written.
pub fn invalidate(data_dir: &Path, slot: &str) -> io::Result<()> {
    remove_except(&slot_dir(data_dir, slot), None)
}

fn remove_except(dir: &Path, keep: Option<&str>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut removed = false;
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("hash-") && Some(name.as_str()) != keep {
            fs::remove_dir_all(e.path())?;
            removed = true;
        }
    }
    if removed {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Hash the whole 4 KiB blocks of `slot`'s device in one pass, into a lookup (8 bytes
/// per block); with `keep`, also store them as its index (`hash-unknown`), written as
/// they are computed. Returns the lookup and the blocks hashed.
///
/// Errors: the device cannot be read, or (with `keep`) the data directory written.
pub fn index_device(data_dir: &Path, slot: &SlotConf, keep: bool) -> io::Result<(Lookup, u64)> {
    let mut f = File::open(&slot.device)?;
    let blocks = (f.seek(SeekFrom::End(0))? / BLOCK as u64).min(blockindex::MAX_BLOCKS);
    let mut b = LookupBuilder::default();
    if keep && blocks > 0 {
        store_with(data_dir, &slot.name, None, &mut |w| {
            hash_device(&mut f, blocks, &mut |h| {
                b.push(h);
                w.write_all(h)
            })
        })?;
    } else {
        hash_device(&mut f, blocks, &mut |h| {
            b.push(h);
            Ok(())
        })?;
    }
    Ok((b.finish(), blocks))
}

/// [`blockindex::hash_blocks`] over the first `blocks` blocks of a slot's device; the
/// holes of a sparse file (a file-backed slot) are zero blocks known without reading
/// them (`SEEK_DATA`/`SEEK_HOLE`; a block device has none).
fn hash_device(f: &mut File, blocks: u64, each: &mut dyn FnMut(&[u8; 32]) -> io::Result<()>) -> io::Result<()> {
    let b = BLOCK as u64;
    let end = blocks * b;
    let mut pos = 0;
    while pos < end {
        let data = match data_at(f, pos)? {
            Some(d) => (d / b * b).clamp(pos, end),
            None => end,
        };
        for _ in pos / b..data / b {
            each(&blockindex::ZERO)?;
        }
        pos = data;
        if pos == end {
            break;
        }
        let hole = match nix::unistd::lseek(&*f, pos as i64, nix::unistd::Whence::SeekHole) {
            Ok(h) => (h as u64).div_ceil(b).saturating_mul(b).clamp(pos + b, end),
            Err(_) => end,
        };
        f.seek(SeekFrom::Start(pos))?;
        let mut r = BufReader::with_capacity(1 << 20, (&*f).take(hole - pos));
        blockindex::hash_blocks(&mut r, (hole - pos) / b, each)?;
        pos = hole;
    }
    Ok(())
}

/// The first byte of data at or after `pos` (`SEEK_DATA`): `None` when only a hole
/// follows; `pos` itself where holes cannot be told (a block device, an old file system).
pub fn data_at(f: &File, pos: u64) -> io::Result<Option<u64>> {
    match nix::unistd::lseek(f, pos as i64, nix::unistd::Whence::SeekData) {
        Ok(d) => Ok(Some(d as u64)),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(_) => Ok(Some(pos)),
    }
}

/// One slot as a source of blocks: its device, open for reading, and where its index
/// says blocks are.
pub struct Local {
    name: String,
    file: File,
    lookup: Lookup,
    /// Blocks read ahead: reused blocks mostly come in runs (an unchanged file).
    ahead: Vec<u8>,
    /// The first block in `ahead`, and how many it holds.
    ahead_at: u64,
    ahead_blocks: u64,
    /// The block read last.
    last: Option<u64>,
}

/// Blocks read at once when reads are sequential.
const AHEAD: u64 = 32;

impl Local {
    /// `slot` with the lookup of its index (stored, or just computed).
    ///
    /// Errors: the device cannot be opened.
    pub fn open(slot: &SlotConf, lookup: Lookup) -> io::Result<Self> {
        Ok(Self {
            name: slot.name.clone(),
            file: File::open(&slot.device)?,
            lookup,
            ahead: vec![0; AHEAD as usize * BLOCK],
            ahead_at: 0,
            ahead_blocks: 0,
            last: None,
        })
    }

    /// Block `at` into `block`; a run of blocks read in order is read ahead.
    fn read_block(&mut self, at: u64, block: &mut [u8]) -> io::Result<()> {
        let sequential = self.last.is_some_and(|l| l + 1 == at);
        self.last = Some(at);
        if !(self.ahead_at..self.ahead_at + self.ahead_blocks).contains(&at) {
            if !sequential {
                return self.file.read_exact_at(block, at * BLOCK as u64);
            }
            let n = self.file.read_at(&mut self.ahead, at * BLOCK as u64)? / BLOCK;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            (self.ahead_at, self.ahead_blocks) = (at, n as u64);
        }
        let i = ((at - self.ahead_at) as usize) * BLOCK;
        block.copy_from_slice(&self.ahead[i..i + BLOCK]);
        Ok(())
    }

    /// A block of SHA-256 `hash` at or after block `from`, read and hashed again.
    fn read(&mut self, hash: &[u8; 32], from: u64, block: &mut [u8]) -> bool {
        // Equal prefixes are equal blocks in practice; a few tries bound a stale index.
        let candidates: Vec<u64> = self.lookup.candidates(hash, from).take(4).collect();
        for at in candidates {
            match self.read_block(at, block) {
                Ok(()) if blockindex::hash(block) == *hash => return true,
                Ok(()) => tracing::debug!("slot {}: block {at} no longer matches its index", self.name),
                Err(e) => {
                    tracing::warn!("slot {}: reading block {at}: {e}", self.name);
                    return false;
                }
            }
        }
        false
    }
}

/// The blocks of the target and the active slot of each class an install writes.
#[derive(Default)]
pub struct SlotBlocks {
    /// Per class: the target slot (its blocks at or after the one being assembled have
    /// not been written yet) and the active slot.
    classes: Vec<(String, Option<Local>, Option<Local>)>,
    /// The bundle's indexes of the images assembled, by slot class.
    assembled: Vec<(String, BlockHashIndex)>,
}

impl SlotBlocks {
    /// Add the slots of `class`.
    pub fn add(&mut self, class: &str, target: Option<Local>, active: Option<Local>) {
        self.classes.push((class.to_string(), target, active));
    }

    fn of(&self, image: &Image) -> Option<&(String, Option<Local>, Option<Local>)> {
        self.classes.iter().find(|c| c.0 == image.slot_class)
    }

    fn of_mut(&mut self, image: &Image) -> Option<&mut (String, Option<Local>, Option<Local>)> {
        self.classes.iter_mut().find(|c| c.0 == image.slot_class)
    }

    /// The bundle's index of each image assembled, by slot class (what its slot now holds
    /// once the install succeeded).
    pub fn assembled(&self) -> &[(String, BlockHashIndex)] {
        &self.assembled
    }
}

impl Reuse for SlotBlocks {
    fn may_have(&self, image: &Image, at: u64, hash: &[u8; 32]) -> bool {
        self.of(image).is_some_and(|(_, t, a)| {
            t.as_ref().is_some_and(|t| t.lookup.contains(hash, at))
                || a.as_ref().is_some_and(|a| a.lookup.contains(hash, 0))
        })
    }

    fn read(&mut self, image: &Image, at: u64, hash: &[u8; 32], block: &mut [u8]) -> bool {
        self.of_mut(image).is_some_and(|(_, t, a)| {
            t.as_mut().is_some_and(|t| t.read(hash, at, block)) || a.as_mut().is_some_and(|a| a.read(hash, 0, block))
        })
    }

    fn assembled(&mut self, image: &Image, index: BlockHashIndex) {
        self.assembled.retain(|(c, _)| *c != image.slot_class);
        self.assembled.push((image.slot_class.clone(), index));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holes skipped and data hashed give the index of the whole bytes, wherever the
    /// data starts and ends (unaligned, at the end of the file).
    #[test]
    fn a_sparse_device_hashes_as_its_bytes() {
        for (at, len, size) in
            [(300_000u64, 10_000usize, 1u64 << 20), (0, 4096, 65536), (61_000, 4536, 65536), (0, 0, 8192)]
        {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("slot");
            let f = File::create(&p).unwrap();
            f.set_len(size).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            f.write_all_at(&data, at).unwrap();
            let bytes = fs::read(&p).unwrap();
            let blocks = size / BLOCK as u64;
            let want = BlockHashIndex::compute(&mut &bytes[..], blocks).unwrap();
            let mut got = Vec::new();
            hash_device(&mut File::open(&p).unwrap(), blocks, &mut |h| {
                got.extend_from_slice(h);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, want.as_bytes(), "data at {at}, {len} bytes, file of {size}");
        }
    }
}
