//! dm-verity hash trees, in user space: build one (bundler) and check every block read
//! against one (reader). Format as RAUC and `veritysetup --no-superblock` use it:
//! SHA-256, 4096-byte data and hash blocks, hash = SHA-256(salt || block), levels stored
//! top level first, right after the data; the root is the hash of the single top block.
//!
//! The reader holds no tree in memory: hash blocks are read from the package on demand,
//! each checked against its parent up to the root, and a few verified blocks per level
//! are cached. Memory stays flat whatever the bundle size.

use crate::source::Source;
use sha2::{Digest, Sha256};
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Data and hash block size.
pub const BLOCK: u64 = 4096;
const HASHES_PER_BLOCK: u64 = BLOCK / 32;

/// A verity failure: the package is corrupted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerityError {
    /// A data block does not match the tree.
    #[error("verity: data block {0} does not match the hash tree")]
    DataBlock(u64),
    /// A hash block does not match its parent (or the root).
    #[error("verity: hash block {index} of level {level} does not match the tree")]
    HashBlock {
        /// Tree level (0 = hashes of data blocks).
        level: usize,
        /// Block index within the level.
        index: u64,
    },
    /// Reading failed.
    #[error("verity: reading the package failed: {0}")]
    Io(String),
    /// The declared tree size does not fit the data size.
    #[error("verity: tree size {declared} does not match the {expected} bytes a {data} byte payload needs")]
    Geometry {
        /// verity-size from the manifest.
        declared: u64,
        /// Size the data needs.
        expected: u64,
        /// Data bytes.
        data: u64,
    },
}

impl crate::fault::Fault for VerityError {
    fn kind(&self) -> &'static str {
        "verity"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::FileCorrupted
    }
}

/// Shape of a tree for a given data size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Number of data blocks.
    pub data_blocks: u64,
    /// Blocks per level, level 0 first.
    pub level_blocks: Vec<u64>,
    /// Offset (in blocks, from the start of the tree) of each level.
    pub level_start: Vec<u64>,
}

impl Geometry {
    /// The tree for `data_len` bytes (a multiple of [`BLOCK`]).
    pub fn new(data_len: u64) -> Self {
        let data_blocks = data_len / BLOCK;
        let mut level_blocks = Vec::new();
        let mut n = data_blocks;
        // As dm-verity: add levels until one block holds the whole level.
        while n > 1 {
            n = n.div_ceil(HASHES_PER_BLOCK);
            level_blocks.push(n);
        }
        let mut level_start = vec![0; level_blocks.len()];
        let mut pos = 0;
        for i in (0..level_blocks.len()).rev() {
            level_start[i] = pos;
            pos += level_blocks[i];
        }
        Self { data_blocks, level_blocks, level_start }
    }

    /// Size of the tree in bytes.
    pub fn tree_bytes(&self) -> u64 {
        self.level_blocks.iter().sum::<u64>() * BLOCK
    }
}

fn salted(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Build the tree of `data_len` bytes of `data` and write it with `write_at` at
/// `tree_offset` (levels top first). Reads back what it wrote, so memory stays flat.
/// Returns the root hash.
pub fn build_tree(
    data: &dyn Source,
    data_len: u64,
    salt: &[u8],
    out: &dyn Source,
    write_at: &mut dyn FnMut(&[u8], u64) -> io::Result<()>,
    tree_offset: u64,
) -> io::Result<[u8; 32]> {
    let g = Geometry::new(data_len);
    let mut buf = vec![0u8; 256 * BLOCK as usize];
    let mut hash_block = vec![0u8; BLOCK as usize];
    // Hash `count` blocks read from `src` at `src_off` into level `lvl`.
    let mut hash_level = |src: &dyn Source,
                          src_off: u64,
                          count: u64,
                          lvl: usize,
                          write_at: &mut dyn FnMut(&[u8], u64) -> io::Result<()>|
     -> io::Result<Option<[u8; 32]>> {
        let mut filled = 0usize;
        let mut out_block = 0u64;
        let mut done = 0u64;
        let mut single = None;
        while done < count {
            let n = (count - done).min(buf.len() as u64 / BLOCK);
            let bytes = (n * BLOCK) as usize;
            src.read_exact_at(&mut buf[..bytes], src_off + done * BLOCK)?;
            for b in buf[..bytes].chunks(BLOCK as usize) {
                let h = salted(salt, b);
                if count == 1 {
                    single = Some(h);
                }
                hash_block[filled * 32..filled * 32 + 32].copy_from_slice(&h);
                filled += 1;
                if filled as u64 == HASHES_PER_BLOCK {
                    write_at(&hash_block, tree_offset + (g.level_start[lvl] + out_block) * BLOCK)?;
                    hash_block.fill(0);
                    filled = 0;
                    out_block += 1;
                }
            }
            done += n;
        }
        if filled > 0 && lvl < g.level_blocks.len() {
            write_at(&hash_block, tree_offset + (g.level_start[lvl] + out_block) * BLOCK)?;
            hash_block.fill(0);
        }
        Ok(single)
    };
    if g.level_blocks.is_empty() {
        // One data block (or none): the root is its hash.
        let mut b = vec![0u8; BLOCK as usize];
        if g.data_blocks == 1 {
            data.read_exact_at(&mut b, 0)?;
        }
        return Ok(salted(salt, &b));
    }
    hash_level(data, 0, g.data_blocks, 0, write_at)?;
    for lvl in 1..g.level_blocks.len() {
        let src_off = tree_offset + g.level_start[lvl - 1] * BLOCK;
        hash_level(out, src_off, g.level_blocks[lvl - 1], lvl, write_at)?;
    }
    let top = g.level_blocks.len() - 1;
    let mut b = vec![0u8; BLOCK as usize];
    out.read_exact_at(&mut b, tree_offset + g.level_start[top] * BLOCK)?;
    Ok(salted(salt, &b))
}

/// A verified view of a verity-protected payload.
pub struct Verity {
    src: Arc<dyn Source>,
    data_len: u64,
    tree_offset: u64,
    salt: Vec<u8>,
    root: [u8; 32],
    geometry: Geometry,
    /// Data block ranges `[start, end)` already verified by readers, so that a later
    /// whole-tree check does not hash them again. Bounded; past the bound, nothing more is
    /// recorded and the sweep simply checks those blocks again.
    verified: Mutex<Vec<(u64, u64)>>,
}

/// Most verified ranges remembered (images are contiguous: a handful in practice).
const MAX_RANGES: usize = 4096;

/// Verified hash blocks, a few per level.
#[derive(Default)]
pub struct Cache {
    levels: Vec<Vec<(u64, Box<[u8]>)>>,
}

const CACHE_PER_LEVEL: usize = 4;

impl Verity {
    /// Data of `data_len` bytes at offset 0 of `src`, tree of `tree_len` bytes right after.
    pub fn new(
        src: Arc<dyn Source>,
        data_len: u64,
        tree_len: u64,
        salt: Vec<u8>,
        root: [u8; 32],
    ) -> Result<Self, VerityError> {
        let geometry = Geometry::new(data_len);
        if !data_len.is_multiple_of(BLOCK) || data_len == 0 || geometry.tree_bytes() != tree_len {
            return Err(VerityError::Geometry { declared: tree_len, expected: geometry.tree_bytes(), data: data_len });
        }
        Ok(Self { src, data_len, tree_offset: data_len, salt, root, geometry, verified: Mutex::default() })
    }

    /// Bytes of protected data.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Expected hash of entry `index` of level `level` (level = levels means the root).
    fn expected(&self, level: usize, index: u64, cache: &mut Cache) -> Result<[u8; 32], VerityError> {
        if level == self.geometry.level_blocks.len() {
            return Ok(self.root);
        }
        let block_index = index / HASHES_PER_BLOCK;
        let block = self.hash_block(level, block_index, cache)?;
        let at = ((index % HASHES_PER_BLOCK) * 32) as usize;
        Ok(block[at..at + 32].try_into().expect("32 bytes"))
    }

    /// A verified hash block.
    fn hash_block(&self, level: usize, index: u64, cache: &mut Cache) -> Result<Box<[u8]>, VerityError> {
        if cache.levels.len() < self.geometry.level_blocks.len() {
            cache.levels.resize_with(self.geometry.level_blocks.len(), Vec::new);
        }
        if let Some((_, b)) = cache.levels[level].iter().find(|(i, _)| *i == index) {
            return Ok(b.clone());
        }
        let mut b = vec![0u8; BLOCK as usize].into_boxed_slice();
        let off = self.tree_offset + (self.geometry.level_start[level] + index) * BLOCK;
        self.src.read_exact_at(&mut b, off).map_err(|e| VerityError::Io(e.to_string()))?;
        let want = self.expected(level + 1, index, cache)?;
        if salted(&self.salt, &b) != want {
            return Err(VerityError::HashBlock { level, index });
        }
        let lvl = &mut cache.levels[level];
        if lvl.len() == CACHE_PER_LEVEL {
            lvl.remove(0);
        }
        lvl.push((index, b.clone()));
        Ok(b)
    }

    /// Check one data block's bytes.
    pub fn check_block(&self, index: u64, data: &[u8], cache: &mut Cache) -> Result<(), VerityError> {
        let want = self.expected(0, index, cache)?;
        if salted(&self.salt, data) != want {
            return Err(VerityError::DataBlock(index));
        }
        Ok(())
    }

    /// Read `buf.len()` bytes of data at `offset`, reading and checking exactly the data
    /// blocks that cover them (for reads that skip around, such as an adaptive update's).
    ///
    /// Errors: [`VerityError::Io`], [`VerityError::DataBlock`], [`VerityError::HashBlock`].
    pub fn read_checked(&self, buf: &mut [u8], offset: u64, cache: &mut Cache) -> Result<(), VerityError> {
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= self.data_len);
        let end =
            end.ok_or_else(|| VerityError::Io(format!("read of {} bytes at {offset} past the data", buf.len())))?;
        let first = offset / BLOCK;
        let last = end.div_ceil(BLOCK);
        let mut tmp = vec![0u8; ((last - first) * BLOCK) as usize];
        self.src.read_exact_at(&mut tmp, first * BLOCK).map_err(|e| VerityError::Io(e.to_string()))?;
        for (i, b) in tmp.chunks(BLOCK as usize).enumerate() {
            self.check_block(first + i as u64, b, cache)?;
        }
        self.mark_verified(first, last);
        let at = (offset - first * BLOCK) as usize;
        buf.copy_from_slice(&tmp[at..at + buf.len()]);
        Ok(())
    }

    /// Read and check every data block (and so every hash block). `progress` gets bytes done.
    pub fn check_all(&self, progress: &mut dyn FnMut(u64)) -> Result<(), VerityError> {
        self.check_blocks(0, self.geometry.data_blocks, progress)
    }

    /// Check the data blocks no reader has verified yet: together with what the readers
    /// checked, every block of the tree has then been checked once.
    pub fn check_unverified(&self) -> Result<(), VerityError> {
        let mut done = self.verified.lock().unwrap_or_else(|p| p.into_inner()).clone();
        done.sort_unstable();
        let mut next = 0;
        let end = self.geometry.data_blocks;
        for (start, stop) in done.into_iter().chain([(end, end)]) {
            if start > next {
                self.check_blocks(next, start, &mut |_| {})?;
            }
            next = next.max(stop);
        }
        Ok(())
    }

    fn mark_verified(&self, start: u64, end: u64) {
        let mut v = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = v.last_mut().filter(|l| l.1 == start) {
            last.1 = end;
        } else if v.len() < MAX_RANGES {
            v.push((start, end));
        }
    }

    fn check_blocks(&self, first: u64, end: u64, progress: &mut dyn FnMut(u64)) -> Result<(), VerityError> {
        let mut cache = Cache::default();
        let mut buf = vec![0u8; 256 * BLOCK as usize];
        let mut block = first;
        while block < end {
            let n = ((end - block) * BLOCK).min(buf.len() as u64) as usize;
            self.src.read_exact_at(&mut buf[..n], block * BLOCK).map_err(|e| VerityError::Io(e.to_string()))?;
            for (i, b) in buf[..n].chunks(BLOCK as usize).enumerate() {
                self.check_block(block + i as u64, b, &mut cache)?;
            }
            block += n as u64 / BLOCK;
            progress(block * BLOCK);
        }
        Ok(())
    }
}

/// A `BufRead + Seek` over the protected data that verifies every block it reads.
/// The first failure is also kept in `failure`, for callers that only see `io::Error`.
pub struct VerifiedReader {
    verity: Arc<Verity>,
    cache: Cache,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    buf_len: usize,
    /// First verification failure seen by this reader.
    pub failure: Arc<Mutex<Option<VerityError>>>,
}

const READ_BLOCKS: usize = 32;

impl VerifiedReader {
    /// A reader at offset 0.
    pub fn new(verity: Arc<Verity>) -> Self {
        Self {
            verity,
            cache: Cache::default(),
            pos: 0,
            buf: vec![0; READ_BLOCKS * BLOCK as usize],
            buf_start: 0,
            buf_len: 0,
            failure: Arc::default(),
        }
    }

    fn fail(&self, e: VerityError) -> io::Error {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(e.clone());
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

impl BufRead for VerifiedReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let in_buf = self.pos >= self.buf_start && self.pos < self.buf_start + self.buf_len as u64;
        if !in_buf {
            if self.pos >= self.verity.data_len {
                return Ok(&[]);
            }
            let start = self.pos / BLOCK * BLOCK;
            let len = (self.verity.data_len - start).min(self.buf.len() as u64) as usize;
            self.verity
                .src
                .read_exact_at(&mut self.buf[..len], start)
                .map_err(|e| self.fail(VerityError::Io(e.to_string())))?;
            for (i, b) in self.buf[..len].chunks(BLOCK as usize).enumerate() {
                if let Err(e) = self.verity.check_block(start / BLOCK + i as u64, b, &mut self.cache) {
                    self.buf_len = 0;
                    return Err(self.fail(e));
                }
            }
            self.verity.mark_verified(start / BLOCK, (start + len as u64) / BLOCK);
            self.buf_start = start;
            self.buf_len = len;
        }
        let at = (self.pos - self.buf_start) as usize;
        Ok(&self.buf[at..self.buf_len])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt as u64;
    }
}

impl Read for VerifiedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        crate::source::read_buffered(self, out)
    }
}

impl Seek for VerifiedReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = crate::source::seek_target(self.pos, self.verity.data_len, to)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(data: &[u8], salt: &[u8]) -> (Vec<u8>, [u8; 32]) {
        let len = data.len() as u64;
        let out = Arc::new(Mutex::new(data.to_vec()));
        let g = Geometry::new(len);
        out.lock().unwrap().resize((len + g.tree_bytes()) as usize, 0);
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Source for Shared {
            fn len(&self) -> u64 {
                self.0.lock().unwrap().len() as u64
            }
            fn read_at(&self, b: &mut [u8], o: u64) -> io::Result<usize> {
                self.0.lock().unwrap().read_at(b, o)
            }
        }
        let reader = Shared(out.clone());
        let w = out.clone();
        let root = build_tree(
            &data.to_vec(),
            len,
            salt,
            &reader,
            &mut |b, o| {
                w.lock().unwrap()[o as usize..o as usize + b.len()].copy_from_slice(b);
                Ok(())
            },
            len,
        )
        .unwrap();
        let v = out.lock().unwrap().clone();
        (v, root)
    }

    #[test]
    fn geometry_matches_dm_verity() {
        assert_eq!(Geometry::new(4096).level_blocks, Vec::<u64>::new());
        assert_eq!(Geometry::new(2 * 4096).level_blocks, vec![1]);
        assert_eq!(Geometry::new(128 * 4096).level_blocks, vec![1]);
        assert_eq!(Geometry::new(129 * 4096).level_blocks, vec![2, 1]);
        let g = Geometry::new(129 * 4096);
        assert_eq!(g.level_start, vec![1, 0]);
        // 1 GiB: 262144 blocks -> 2048 -> 16 -> 1
        assert_eq!(Geometry::new(1 << 30).level_blocks, vec![2048, 16, 1]);
    }

    #[test]
    fn detects_any_flipped_byte() {
        let data: Vec<u8> = (0..300 * 4096u32).map(|i| (i * 7 + i / 4096) as u8).collect();
        let (bundle, root) = build(&data, b"salt");
        let tree = bundle.len() as u64 - data.len() as u64;
        let verity = Verity::new(Arc::new(bundle.clone()), data.len() as u64, tree, b"salt".to_vec(), root).unwrap();
        verity.check_all(&mut |_| {}).unwrap();
        for at in [0usize, 4096 * 200 + 5, data.len() + 3, bundle.len() - 1] {
            let mut bad = bundle.clone();
            bad[at] ^= 1;
            let v = Verity::new(Arc::new(bad), data.len() as u64, tree, b"salt".to_vec(), root).unwrap();
            assert!(v.check_all(&mut |_| {}).is_err(), "flip at {at} not caught");
        }
        // Reading verifies; the sweep then covers exactly the rest.
        let verity = Arc::new(verity);
        let mut all = VerifiedReader::new(verity.clone());
        std::io::copy(&mut all.by_ref().take(4096 * 100), &mut std::io::sink()).unwrap();
        assert_eq!(verity.verified.lock().unwrap().clone(), vec![(0, 128)]);
        verity.check_unverified().unwrap();
        let mut r = VerifiedReader::new(verity);
        r.seek(SeekFrom::Start(4096 * 150 + 10)).unwrap();
        let mut b = [0u8; 10];
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b, &data[4096 * 150 + 10..4096 * 150 + 20]);
    }
}
