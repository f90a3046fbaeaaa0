//! Adaptive updates (RAUC's `adaptive=block-hash-index`): an image is assembled block by
//! block, in order, from what the device already holds and from the bundle.
//!
//! For each 4 KiB block `c` of the image, with `h` its SHA-256 in the bundle's index:
//! - `h` is the hash of a zero block: zeros;
//! - else a block the device holds whose SHA-256 is `h` ([`Reuse`], which hashes what it
//!   read again before giving it);
//! - else the image's own block `c` from the bundle: its squashfs block is read (for a
//!   verity bundle, checked against the tree) and decompressed once for all the 4 KiB
//!   blocks it holds.
//!
//! Which squashfs blocks are needed is decided before any is read, from the indexes
//! alone, and handed to the source as a plan ([`Source::plan`]): a file server is asked
//! for those ranges only, coalesced. The assembled image then goes through the same
//! pipeline as a whole one: its size and signed digest are checked before the slot is
//! used, whatever the indexes said.

use super::squashfs::{FileLayout, Squashfs, SquashfsError, Stored};
use super::verity::{Cache, Verity, VerityError};
use super::Image;
use crate::blockindex::{self, BlockHashIndex, BLOCK, ZERO};
use crate::source::Source;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Blocks the device already holds (the target and the active slot of an image's class),
/// found by their SHA-256.
pub trait Reuse: Send {
    /// Whether the device may hold a block of SHA-256 `hash` usable as block `at` of
    /// `image` (an index lookup: nothing is read).
    fn may_have(&self, image: &Image, at: u64, hash: &[u8; 32]) -> bool;

    /// Fill `block` (4096 bytes) with a block of SHA-256 `hash` usable as block `at` of
    /// `image`, hashed again after it was read; `false` when there is none (a failed
    /// read is none).
    fn read(&mut self, image: &Image, at: u64, hash: &[u8; 32], block: &mut [u8]) -> bool;

    /// `image` was assembled (not yet checked against its signed digest); `index` is the
    /// bundle's index of it, what its slot holds once the install succeeds.
    fn assembled(&mut self, image: &Image, index: BlockHashIndex);
}

/// What an adaptive install took from where, in bytes (shared with whoever reports
/// progress).
#[derive(Debug, Default)]
pub struct Counters {
    /// Blocks taken from the device's slots.
    pub reused: AtomicU64,
    /// Zero blocks (neither read nor fetched).
    pub zero: AtomicU64,
    /// Image bytes read from the bundle (before compression).
    pub fetched: AtomicU64,
    /// Bytes of the images assembled (the rest of a package's images was read whole).
    pub assembled: AtomicU64,
}

impl Counters {
    /// `(reused, zero, fetched)` so far.
    pub fn get(&self) -> (u64, u64, u64) {
        (self.reused.load(Ordering::Relaxed), self.zero.load(Ordering::Relaxed), self.fetched.load(Ordering::Relaxed))
    }
}

/// What an adaptive install needs besides the package.
pub struct Adaptive<'a> {
    /// The device's blocks.
    pub reuse: &'a mut dyn Reuse,
    /// Where the counts go.
    pub counters: Arc<Counters>,
}

/// How stored blocks are read from the payload: positioned reads, checked against the
/// verity tree for verity bundles.
pub(super) enum Raw {
    /// A plain bundle: its payload (the squashfs, from offset 0, of this length) was
    /// authenticated as a whole.
    Plain(Arc<dyn Source>, u64),
    /// A verity bundle; the first verity failure is kept where the bundle's reader keeps
    /// its own (it explains the error it causes).
    Verity(Arc<Verity>, Cache, Arc<Mutex<Option<VerityError>>>),
}

impl Raw {
    fn read(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Self::Plain(src, payload) => {
                if offset.checked_add(buf.len() as u64).is_none_or(|end| end > *payload) {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "a squashfs block past the payload"));
                }
                src.read_exact_at(buf, offset)
            }
            Self::Verity(tree, cache, failure) => tree.read_checked(buf, offset, cache).map_err(|e| {
                let kind = match e {
                    VerityError::Io(_) => io::ErrorKind::Other,
                    _ => io::ErrorKind::InvalidData,
                };
                failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e.clone());
                io::Error::new(kind, e)
            }),
        }
    }
}

/// The bundle's index of `image`, when the image is adaptive and the index is usable:
/// `<filename>.block-hash-index`, exactly one entry per block of the signed size. `None`
/// (with the reason logged) when the image is to be read whole instead: no supported
/// method, a size that is not whole blocks, no index file, or one of another length.
///
/// Errors: [`SquashfsError`] when reading the index failed (corrupted, tampered: the
/// bundle is refused, not read whole).
pub(super) fn bundle_index(sqfs: &Squashfs, image: &Image) -> Result<Option<BlockHashIndex>, SquashfsError> {
    let whole = |why: String| {
        tracing::warn!("image '{}' is installed whole: {why}", image.filename);
        Ok(None)
    };
    if !image.adaptive.iter().any(|m| m == blockindex::METHOD) {
        tracing::info!("image '{}': no supported adaptive method in '{}'", image.filename, image.adaptive.join(";"));
        return Ok(None);
    }
    let blocks = match blockindex::blocks_of("image", image.size) {
        Ok(b) => b,
        Err(e) => return whole(e.to_string()),
    };
    let name = format!("{}{}", image.filename, blockindex::SUFFIX);
    let bytes = match sqfs.read_file(&name, blocks * blockindex::ENTRY as u64) {
        Ok(b) => b,
        Err(e @ (SquashfsError::NotAFile(_) | SquashfsError::TooLarge { .. })) => return whole(e.to_string()),
        Err(e) => return Err(e),
    };
    match BlockHashIndex::parse(bytes, blocks) {
        Ok(i) => Ok(Some(i)),
        Err(e) => whole(e.to_string()),
    }
}

/// A reader of `image` assembled from `reuse` and the bundle; tells `src` its plan first.
pub(super) fn reader<'a>(
    sqfs: &'a Squashfs,
    image: Image,
    index: BlockHashIndex,
    raw: Raw,
    src: &'a dyn Source,
    adaptive: Adaptive<'a>,
) -> Result<Assembler<'a>, SquashfsError> {
    let layout = sqfs.layout(&image.filename)?;
    if layout.size != image.size {
        return Err(SquashfsError::Corrupt(format!("'{}' changed size", image.filename)));
    }
    // The plan: every stored block holding a 4 KiB block the device does not have.
    let mut needed: Vec<Stored> = Vec::new();
    let mut missing = 0u64;
    for (c, h) in index.hashes().enumerate() {
        let c = c as u64;
        if *h == ZERO || adaptive.reuse.may_have(&image, c, h) {
            continue;
        }
        missing += 1;
        let s = stored_for(&layout, c * BLOCK as u64).ok_or_else(|| outside(&image))?.0;
        if s.len > 0 && needed.last() != Some(&s) {
            needed.push(s);
        }
    }
    needed.sort_by_key(|s| s.start);
    needed.dedup();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for s in &needed {
        // Verity checks whole 4 KiB blocks: ranges that share one are one range.
        let (a, b) =
            (s.start / BLOCK as u64 * BLOCK as u64, (s.start + u64::from(s.len)).div_ceil(BLOCK as u64) * BLOCK as u64);
        match ranges.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => ranges.push((a, b)),
        }
    }
    let planned: u64 = needed.iter().map(|s| u64::from(s.len)).sum();
    src.plan(&ranges);
    tracing::info!(
        "adaptive: {missing} of {} blocks of '{}' come from the bundle: {} stored blocks, {planned} bytes in {} ranges",
        index.blocks(),
        image.filename,
        needed.len(),
        ranges.len()
    );
    Ok(Assembler {
        sqfs,
        image,
        layout,
        blocks: index.blocks(),
        index: Some(index),
        raw,
        src,
        adaptive,
        next: 0,
        block: vec![0u8; BLOCK],
        at: BLOCK,
        cached: None,
        stored: Vec::new(),
        data: Vec::new(),
    })
}

/// The stored block holding image byte `offset`, and where that byte is in it once
/// decompressed; `None` past the file's blocks and fragment.
fn stored_for(layout: &FileLayout, offset: u64) -> Option<(Stored, u64)> {
    let b = offset / layout.block_size;
    match layout.blocks.get(usize::try_from(b).ok()?) {
        Some(s) => Some((*s, offset - b * layout.block_size)),
        None => {
            layout.fragment.map(|(s, o)| (s, u64::from(o) + offset - layout.blocks.len() as u64 * layout.block_size))
        }
    }
}

fn outside(image: &Image) -> SquashfsError {
    SquashfsError::Corrupt(format!("'{}': a block outside the file's data", image.filename))
}

/// See [`reader`].
pub(super) struct Assembler<'a> {
    sqfs: &'a Squashfs,
    image: Image,
    layout: FileLayout,
    /// The bundle's index, until the image is assembled.
    index: Option<BlockHashIndex>,
    blocks: u64,
    raw: Raw,
    src: &'a dyn Source,
    adaptive: Adaptive<'a>,
    /// The next 4 KiB block to assemble.
    next: u64,
    /// The current block, given from `at`.
    block: Vec<u8>,
    at: usize,
    /// The stored block whose bytes `data` holds, decompressed.
    cached: Option<Stored>,
    stored: Vec<u8>,
    data: Vec<u8>,
}

impl Assembler<'_> {
    /// Assemble block `next` into `block`.
    fn assemble(&mut self) -> io::Result<()> {
        let c = self.next;
        let h = *self.index.as_ref().and_then(|i| i.get(c)).ok_or_else(|| io::Error::other("past the index"))?;
        let counters = self.adaptive.counters.clone();
        if h == ZERO {
            self.block.fill(0);
            counters.zero.fetch_add(BLOCK as u64, Ordering::Relaxed);
        } else if crate::failpoint::active("adaptive.reuse-unchecked")
            && self.adaptive.reuse.may_have(&self.image, c, &h)
        {
            // Tests only: a reused block taken without its hash checked (a bug in the
            // reuse path), which the image's signed digest must catch.
            self.block.fill(0x5a);
            counters.reused.fetch_add(BLOCK as u64, Ordering::Relaxed);
        } else if self.adaptive.reuse.read(&self.image, c, &h, &mut self.block) {
            counters.reused.fetch_add(BLOCK as u64, Ordering::Relaxed);
        } else {
            self.fetch(c * BLOCK as u64)?;
            counters.fetched.fetch_add(BLOCK as u64, Ordering::Relaxed);
        }
        self.next += 1;
        self.at = 0;
        Ok(())
    }

    /// Image block at `offset` from the bundle.
    fn fetch(&mut self, offset: u64) -> io::Result<()> {
        let (s, within) = stored_for(&self.layout, offset).ok_or_else(|| corrupt(outside(&self.image)))?;
        if self.cached != Some(s) {
            self.cached = None;
            self.stored.resize(s.len as usize, 0);
            if s.len > 0 {
                self.raw.read(&mut self.stored, s.start)?;
            }
            self.sqfs.decompress(&s, &self.stored, &mut self.data).map_err(corrupt)?;
            self.cached = Some(s);
        }
        let within = within as usize;
        let chunk = self
            .data
            .get(within..within + BLOCK)
            .ok_or_else(|| corrupt(SquashfsError::Corrupt(format!("a block of '{}' is short", self.image.filename))))?;
        self.block.copy_from_slice(chunk);
        Ok(())
    }
}

impl Drop for Assembler<'_> {
    /// An image not assembled to its end (an error, a consumer that stopped) ends the
    /// plan too.
    fn drop(&mut self) {
        if self.index.is_some() {
            self.src.plan(&[]);
        }
    }
}

fn corrupt(e: SquashfsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Read for Assembler<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == BLOCK {
            if self.next == self.blocks {
                if let Some(index) = self.index.take() {
                    self.src.plan(&[]);
                    self.adaptive.counters.assembled.fetch_add(self.image.size, Ordering::Relaxed);
                    self.adaptive.reuse.assembled(&self.image, index);
                }
                return Ok(0);
            }
            self.assemble()?;
        }
        let n = out.len().min(BLOCK - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
