//! RAUC's block-hash index (`adaptive=block-hash-index`, RAUC 1.8 `src/hash_index.c`):
//! the SHA-256 of each 4096-byte block of an image, concatenated in block order, 32
//! bytes per block, no header. A bundle carries one per adaptive image as
//! `<image>.block-hash-index` next to the image; the agent keeps one per slot in the data
//! directory (see [`crate::slot::index`]). Pure: bytes in, hashes and lookups out.
//!
//! An index only ever says where a block *may* be: every block found through one is
//! hashed again before it is used.

use sha2::{Digest, Sha256};
use std::io::{self, Read};
use thiserror::Error;

/// The adaptive method this agent implements (manifest `adaptive=`).
pub const METHOD: &str = "block-hash-index";
/// Suffix of the index file next to its image in a bundle.
pub const SUFFIX: &str = ".block-hash-index";
/// Block size, bytes.
pub const BLOCK: usize = 4096;
/// Bytes per entry (SHA-256).
pub const ENTRY: usize = 32;
/// Most blocks an index may have (RAUC's `MAX_CHUNK_COUNT`, 0x7ffffff: 512 GiB of
/// image, an index under 4 GiB).
pub const MAX_BLOCKS: u64 = 0x7ff_ffff;
/// SHA-256 of a block of 4096 zero bytes (RAUC's `R_HASH_INDEX_ZERO_CHUNK`): such a block
/// is never looked up or fetched, it is written as zeros.
pub const ZERO: [u8; 32] = [
    0xad, 0x7f, 0xac, 0xb2, 0x58, 0x6f, 0xc6, 0xe9, 0x66, 0xc0, 0x04, 0xd7, 0xd1, 0xd1, 0x6b, 0x02, 0x4f, 0x58, 0x05,
    0xff, 0x7c, 0xb4, 0x7c, 0x7a, 0x85, 0xda, 0xbd, 0x8b, 0x48, 0x89, 0x2c, 0xa7,
];

/// An index that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IndexError {
    /// The image size is not usable for an index (RAUC's rule: non-empty, a multiple of
    /// 4096, at most [`MAX_BLOCKS`] blocks).
    #[error("{what} of {size} bytes: a block-hash index needs a non-empty multiple of {BLOCK} bytes, at most {MAX_BLOCKS} blocks")]
    Size {
        /// What was measured ("image", "slot").
        what: &'static str,
        /// Its size.
        size: u64,
    },
    /// The index does not have one entry per block of the image.
    #[error("block-hash index of {len} bytes for an image of {blocks} blocks ({} bytes expected)", blocks * ENTRY as u64)]
    Length {
        /// The index's length.
        len: u64,
        /// Blocks of the image.
        blocks: u64,
    },
}

/// The number of 4 KiB blocks of an image of `size` bytes, by RAUC's rule.
///
/// Errors: [`IndexError::Size`].
pub fn blocks_of(what: &'static str, size: u64) -> Result<u64, IndexError> {
    let blocks = size / BLOCK as u64;
    if size == 0 || !size.is_multiple_of(BLOCK as u64) || blocks > MAX_BLOCKS {
        return Err(IndexError::Size { what, size });
    }
    Ok(blocks)
}

/// Whether a block is all zeros (64 bytes at a time, which the compiler vectorizes).
fn is_zero(b: &[u8]) -> bool {
    b.chunks(64).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// SHA-256 of one block.
pub fn hash(block: &[u8]) -> [u8; 32] {
    Sha256::digest(block).into()
}

/// Hash the first `blocks` blocks of `r` in one pass with a fixed buffer, giving each
/// hash to `each` in block order (zero blocks are recognized without hashing).
///
/// Errors: reading failed, `r` ended before `blocks` blocks, or `each` failed.
pub fn hash_blocks(r: &mut dyn Read, blocks: u64, each: &mut dyn FnMut(&[u8; 32]) -> io::Result<()>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * BLOCK];
    let mut left = blocks;
    while left > 0 {
        let n = (left.min(64) as usize) * BLOCK;
        r.read_exact(&mut buf[..n])?;
        for b in buf[..n].chunks_exact(BLOCK) {
            // Free space is zeros: known without hashing.
            each(&if is_zero(b) { ZERO } else { hash(b) })?;
        }
        left -= (n / BLOCK) as u64;
    }
    Ok(())
}

/// A block-hash index: entry `i` is the SHA-256 of bytes `[i*4096, (i+1)*4096)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHashIndex {
    /// The file format itself: 32 bytes per block.
    bytes: Vec<u8>,
}

impl BlockHashIndex {
    /// Parse the file format for an image of `blocks` blocks: exactly `blocks * 32` bytes
    /// (stricter than RAUC 1.8, which uses a short index as far as it goes).
    ///
    /// Errors: [`IndexError::Length`].
    pub fn parse(bytes: Vec<u8>, blocks: u64) -> Result<Self, IndexError> {
        if bytes.len() as u64 != blocks.saturating_mul(ENTRY as u64) {
            return Err(IndexError::Length { len: bytes.len() as u64, blocks });
        }
        Ok(Self { bytes })
    }

    /// Hash the first `blocks` blocks of `r` (an image, a slot device) in one pass, with
    /// a fixed buffer.
    ///
    /// Errors: reading failed, or `r` ended before `blocks` blocks.
    pub fn compute(r: &mut dyn Read, blocks: u64) -> io::Result<Self> {
        let mut bytes = Vec::with_capacity((blocks.min(MAX_BLOCKS) as usize) * ENTRY);
        hash_blocks(r, blocks, &mut |h| {
            bytes.extend_from_slice(h);
            Ok(())
        })?;
        Ok(Self { bytes })
    }

    /// The file format (RAUC's): the hashes, concatenated.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        (self.bytes.len() / ENTRY) as u64
    }

    /// The hash of block `i`.
    pub fn get(&self, i: u64) -> Option<&[u8; 32]> {
        let at = usize::try_from(i).ok()?.checked_mul(ENTRY)?;
        self.bytes.get(at..at + ENTRY).map(|h| h.try_into().expect("32 bytes"))
    }

    /// All hashes, in block order.
    pub fn hashes(&self) -> impl Iterator<Item = &[u8; 32]> + '_ {
        self.bytes.chunks_exact(ENTRY).map(|h| h.try_into().expect("32 bytes"))
    }
}

/// Where blocks of a given hash are, from an index: sorted 64-bit entries, the first
/// [`PREFIX_BITS`] bits of the hash above the block number, 8 bytes per block (the full
/// hash is checked by hashing the block itself; two hashes sharing a prefix only cost a
/// read).
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    entries: Vec<u64>,
}

/// Bits of the block number in a [`Lookup`] entry: [`MAX_BLOCKS`] fits.
const BLOCK_BITS: u32 = 27;
/// Bits of the hash in a [`Lookup`] entry.
pub const PREFIX_BITS: u32 = 64 - BLOCK_BITS;
const BLOCK_MASK: u64 = (1 << BLOCK_BITS) - 1;

fn prefix(h: &[u8; 32]) -> u64 {
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) >> BLOCK_BITS
}

impl Lookup {
    /// The lookup of `index`; zero blocks are left out (they are never looked up).
    pub fn new(index: &BlockHashIndex) -> Self {
        let mut b = LookupBuilder::default();
        index.hashes().for_each(|h| b.push(h));
        b.finish()
    }

    /// The lookup of an index file read from `r` (`len` bytes, a whole number of
    /// entries), without holding the file: 8 bytes per block in memory.
    ///
    /// Errors: reading failed, or `len` is not a whole number of entries.
    pub fn read_index(r: &mut dyn Read, len: u64) -> io::Result<Self> {
        if !len.is_multiple_of(ENTRY as u64) || len / ENTRY as u64 > MAX_BLOCKS {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{len} bytes are not an index")));
        }
        let mut b = LookupBuilder::default();
        let mut buf = vec![0u8; 2048 * ENTRY];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n])?;
            buf[..n].chunks_exact(ENTRY).for_each(|h| b.push(h.try_into().expect("32 bytes")));
            left -= n as u64;
        }
        Ok(b.finish())
    }

    /// Blocks it knows (zero blocks left out).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it knows no block.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Blocks at or after `from` that may hold `h`, lowest first (RAUC's choice: the
    /// result is deterministic).
    pub fn candidates(&self, h: &[u8; 32], from: u64) -> impl Iterator<Item = u64> + '_ {
        let p = prefix(h);
        let start = self.entries.partition_point(|&e| e < (p << BLOCK_BITS) | from.min(BLOCK_MASK));
        self.entries[start..].iter().take_while(move |&&e| e >> BLOCK_BITS == p).map(|&e| e & BLOCK_MASK)
    }

    /// Whether any block at or after `from` may hold `h`.
    pub fn contains(&self, h: &[u8; 32], from: u64) -> bool {
        self.candidates(h, from).next().is_some()
    }
}

/// Builds a [`Lookup`] from hashes given in block order.
#[derive(Debug, Default)]
pub struct LookupBuilder {
    entries: Vec<u64>,
    next: u64,
}

impl LookupBuilder {
    /// The hash of the next block.
    pub fn push(&mut self, h: &[u8; 32]) {
        if *h != ZERO && self.next <= BLOCK_MASK {
            self.entries.push((prefix(h) << BLOCK_BITS) | self.next);
        }
        self.next += 1;
    }

    /// The lookup.
    pub fn finish(mut self) -> Lookup {
        self.entries.sort_unstable();
        self.entries.shrink_to_fit();
        Lookup { entries: self.entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_the_hash_of_a_zero_block() {
        assert_eq!(hash(&[0u8; BLOCK]), ZERO);
    }

    #[test]
    fn sizes_follow_raucs_rule() {
        assert_eq!(blocks_of("image", 8192), Ok(2));
        for bad in [0, 5000, 4097] {
            assert!(matches!(blocks_of("image", bad), Err(IndexError::Size { .. })));
        }
        assert!(blocks_of("image", (MAX_BLOCKS + 1) * BLOCK as u64).is_err());
    }

    #[test]
    fn the_index_has_one_entry_per_block_exactly() {
        let mut img = vec![0u8; 3 * BLOCK];
        img[BLOCK] = 1;
        let idx = BlockHashIndex::compute(&mut &img[..], 3).unwrap();
        assert_eq!(idx.blocks(), 3);
        assert_eq!(idx.get(0), Some(&ZERO));
        assert_eq!(idx.get(1), Some(&hash(&img[BLOCK..2 * BLOCK])));
        let bytes = idx.as_bytes().to_vec();
        assert_eq!(bytes.len(), 96);
        assert_eq!(BlockHashIndex::parse(bytes.clone(), 3).unwrap(), idx);
        assert_eq!(BlockHashIndex::parse(bytes[..64].to_vec(), 3), Err(IndexError::Length { len: 64, blocks: 3 }));
        assert!(BlockHashIndex::parse([bytes.clone(), vec![0; 32]].concat(), 3).is_err());
        assert!(BlockHashIndex::compute(&mut &img[..], 4).is_err());
    }

    #[test]
    fn lookup_finds_the_lowest_block_from_a_position() {
        let a = [1u8; BLOCK];
        let b = [2u8; BLOCK];
        let img = [&a[..], &b, &[0u8; BLOCK], &a].concat();
        let idx = BlockHashIndex::compute(&mut &img[..], 4).unwrap();
        let l = Lookup::new(&idx);
        assert_eq!(l.candidates(&hash(&a), 0).collect::<Vec<_>>(), [0, 3]);
        assert_eq!(l.candidates(&hash(&a), 1).collect::<Vec<_>>(), [3]);
        assert!(l.contains(&hash(&b), 1));
        assert!(!l.contains(&hash(&b), 2));
        assert!(!l.contains(&ZERO, 0));
        let from_file = Lookup::read_index(&mut idx.as_bytes(), 128).unwrap();
        assert_eq!(from_file.candidates(&hash(&a), 1).collect::<Vec<_>>(), [3]);
        assert_eq!(from_file.len(), 3);
        assert!(Lookup::read_index(&mut idx.as_bytes(), 100).is_err());
    }
}
