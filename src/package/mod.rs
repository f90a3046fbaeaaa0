//! Signed packages: RAUC bundles (`plain`, `verity`) and TR-069 signed packages, read
//! into one verified model. Nothing downstream knows which format a package had.
//!
//! [`verify`] is the one entry point: it checks the signature (R1, R2, R4), the
//! structure, and every image digest while handing each image's bytes to a [`Sink`]
//! (nothing for `info`, the target slot for an install), in one pass over the package.
//! A [`Package`] exists only if everything verified; a sink must treat what it received
//! as untrusted until `verify` returns `Ok`.

pub mod keyfile;
pub mod manifest;
mod rauc;
pub mod squashfs;
pub mod tr069;
pub mod verity;

pub use rauc::{build_bundle, read_trailer, BundleOptions, Trailer, MAX_SIGNATURE};

use crate::digest::DigestAlg;
use crate::fault::{CwmpFault, Fault};
use crate::source::Source;
use crate::trust::Anchors;
use crate::verify::{Policy, SignerReport, VerifyError};
use manifest::ManifestError;
use serde::Serialize;
use squashfs::SquashfsError;
use std::collections::BTreeMap;
use std::io;
use std::sync::{mpsc, Arc};
use std::time::SystemTime;
use thiserror::Error;
use tr069::Tr069Error;
use verity::VerityError;

/// The container format a package came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// RAUC bundle, detached CMS over the squashfs.
    Plain,
    /// RAUC bundle, CMS over the manifest, dm-verity tree over the squashfs.
    Verity,
    /// TR-069 Annex E signed package.
    Tr069,
}

/// One image of a package, for one slot class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Image {
    /// Slot class it is for.
    pub slot_class: String,
    /// RAUC variant, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// File name (RAUC) or path (TR-069) of the image in the package.
    pub filename: String,
    /// Size in bytes.
    pub size: u64,
    /// Signed digest algorithm.
    #[serde(serialize_with = "ser_alg")]
    pub digest_algorithm: DigestAlg,
    /// Signed digest, hex.
    #[serde(serialize_with = "ser_hex")]
    pub digest: Vec<u8>,
    /// SHA-256 of the image as read (equals `digest` for SHA-256 images).
    #[serde(serialize_with = "ser_hex")]
    pub sha256: Vec<u8>,
}

fn ser_alg<S: serde::Serializer>(a: &DigestAlg, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.name())
}
fn ser_hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

/// Install constraints only TR-069 packages carry (enforced by the installer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Constraints {
    /// Minimum installed version (element-wise), Annex E type 18.
    pub min_version: Option<Vec<u32>>,
    /// Maximum installed version, type 19.
    pub max_version: Option<Vec<u32>>,
    /// Minimum non-volatile storage in bytes, type 21.
    pub min_nonvolatile: Option<u32>,
    /// Minimum volatile storage in bytes, type 22.
    pub min_volatile: Option<u32>,
}

/// A package whose signature, structure and image digests all verified.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Package {
    /// Container format.
    pub format: Format,
    /// Compatible string (RAUC `compatible`, TR-069 vendor command 1000).
    pub compatible: String,
    /// Software version.
    pub version: Option<String>,
    /// Free-text description.
    pub description: Option<String>,
    /// Build identifier.
    pub build: Option<String>,
    /// Anti-rollback security version.
    pub security_version: Option<u32>,
    /// Images.
    pub images: Vec<Image>,
    /// `[meta.<label>]` data (for TR-069: the reference-values command).
    pub meta: BTreeMap<String, BTreeMap<String, String>>,
    /// Who signed it.
    pub signers: Vec<SignerReport>,
    /// TR-069 install constraints.
    pub constraints: Constraints,
}

/// Everything verification needs besides the bytes.
pub struct Context<'a> {
    /// Trust anchors.
    pub anchors: &'a Anchors,
    /// Signature policy.
    pub policy: Policy,
    /// The verification time.
    pub now: SystemTime,
    /// The device's compatible string, when there is one to match.
    pub compatible: Option<String>,
    /// The device's variant (`[system] variant-name/-dtb/-file`): per slot class, the
    /// `[image.<class>.<variant>]` image replaces the default `[image.<class>]`; images
    /// of other variants are ignored (RAUC's rule).
    pub variant: Option<String>,
    /// Keep only the images an install writes on this device (per slot class, the
    /// variant's image or the default), as the installer needs; `info` lists every
    /// image of every variant, as `rauc info` does.
    pub install_images_only: bool,
    /// Read every verity data block, not only the ones images use.
    pub check_whole_tree: bool,
    /// Check everything that can be checked before the first image byte reaches the sink
    /// (the installer): plain bundles hash the whole payload, verity bundles check the
    /// whole tree, TR-069 packages check each image's digest. The images are then
    /// verified again as they stream. `info` checks the verity tree and the TR-069
    /// digests while streaming (plain bundles are always hashed before they are parsed).
    pub verify_before_writing: bool,
}

/// Receives each image's bytes while they are verified.
pub trait Sink {
    /// The package is authenticated (signature, and with `verify_before_writing` every
    /// byte that can be checked); no image byte has been written. Policy
    /// refusals belong here, so that a refused package changes nothing. The images'
    /// `sha256` are still empty.
    fn start(&mut self, _package: &Package) -> Result<(), PackageError> {
        Ok(())
    }
    /// An image starts.
    fn begin(&mut self, image: &Image) -> io::Result<()>;
    /// More bytes of the current image.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// The current image ended and its digest matched.
    fn end(&mut self, image: &Image) -> io::Result<()>;
}

/// A sink that drops everything (for `info`).
pub struct NullSink;

impl Sink for NullSink {
    fn begin(&mut self, _: &Image) -> io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn end(&mut self, _: &Image) -> io::Result<()> {
        Ok(())
    }
}

/// Why a package was refused or could not be checked.
#[derive(Debug, Error)]
pub enum PackageError {
    /// The package could not be read.
    #[error("reading the package failed: {0}")]
    Io(#[source] io::Error),
    /// The package ends before its structures do.
    #[error("package is truncated: {0}")]
    Truncated(String),
    /// The bundle trailer or layout is invalid.
    #[error("bundle layout: {0}")]
    Layout(String),
    /// A format this agent recognizes but does not install.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Signature problem.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// Manifest problem.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Squashfs problem.
    #[error(transparent)]
    Squashfs(#[from] SquashfsError),
    /// Verity problem.
    #[error(transparent)]
    Verity(#[from] VerityError),
    /// TR-069 format or profile problem.
    #[error(transparent)]
    Tr069(#[from] Tr069Error),
    /// An image's size or digest differs from the signed value.
    #[error("image '{name}': {what}")]
    Image {
        /// Image file name.
        name: String,
        /// What differs.
        what: String,
    },
    /// The package is for other devices.
    #[error("package is for '{package}', this device is '{device}'")]
    Incompatible {
        /// Package compatible.
        package: String,
        /// Device compatible.
        device: String,
    },
    /// Authentic, but refused by the device's policy (downgrade, format, slot).
    #[error("{why}")]
    Refused {
        /// Stable kind.
        kind: &'static str,
        /// CWMP fault.
        fault: CwmpFault,
        /// What and why.
        why: String,
    },
    /// A plain bundle on storage whose bytes may change between two reads.
    #[error("plain bundle refused: {0}; use a verity bundle, or copy the bundle to local storage")]
    Unstable(String),
    /// The sink (e.g. the slot writer) failed.
    #[error("writing image '{name}' failed: {source}")]
    Sink {
        /// Image.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

impl Fault for PackageError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::Truncated(_) => "truncated",
            Self::Layout(_) => "layout",
            Self::Unsupported(_) => "unsupported",
            Self::Signature(e) => e.kind(),
            Self::Manifest(_) => "manifest",
            Self::Squashfs(_) => "squashfs",
            Self::Verity(_) => "verity",
            Self::Tr069(e) => e.kind(),
            Self::Image { .. } => "image-digest",
            Self::Incompatible { .. } => "incompatible",
            Self::Sink { .. } => "write",
            Self::Unstable(_) => "unsafe-file-system",
            Self::Refused { kind, .. } => kind,
        }
    }

    fn fault(&self) -> CwmpFault {
        match self {
            Self::Io(_) | Self::Squashfs(SquashfsError::Io(_)) | Self::Unstable(_) => CwmpFault::UnableToAccessFile,
            Self::Truncated(_) => CwmpFault::UnableToCompleteDownload,
            Self::Signature(e) => e.fault(),
            Self::Tr069(e) => e.fault(),
            Self::Incompatible { .. } => CwmpFault::RequestDenied,
            Self::Sink { .. } => CwmpFault::InternalError,
            Self::Refused { fault, .. } => *fault,
            _ => CwmpFault::FileCorrupted,
        }
    }
}

/// Verify a package and stream its images into `sink`.
pub fn verify(src: Arc<dyn Source>, ctx: &Context<'_>, sink: &mut dyn Sink) -> Result<Package, PackageError> {
    let mut magic = [0u8; 8];
    let n = src.read_at(&mut magic, 0).map_err(PackageError::Io)?;
    // Like RAUC, a bundle is recognized by its trailer and signature, not by the squashfs
    // magic: a damaged superblock is then reported as what it is, a signature mismatch.
    if n == 8 && &magic == tr069::MAGIC {
        tr069::verify(src, ctx, sink)
    } else {
        rauc::verify(src, ctx, sink)
    }
}

/// One digest of `[start, start+len)` of `src`.
pub(crate) fn digest_range(src: &dyn Source, start: u64, len: u64, alg: DigestAlg) -> Result<Vec<u8>, PackageError> {
    let mut d = rauc::hash_range(src, start, len, &[alg]).map_err(PackageError::Io)?;
    Ok(d.pop().map(|(_, v)| v).unwrap_or_default())
}

/// Fail when the device has a compatible string and the package's differs.
fn check_compatible(ctx: &Context<'_>, package: &str) -> Result<(), PackageError> {
    match &ctx.compatible {
        Some(device) if device != package => {
            Err(PackageError::Incompatible { package: package.to_string(), device: device.clone() })
        }
        _ => Ok(()),
    }
}

/// Size of the buffers images move in.
const CHUNK: usize = 1 << 20;
/// Filled buffers in flight between the reader and the hasher.
const IN_FLIGHT: usize = 3;

/// Stream an image into `sink`, checking size and digest. A reader thread (squashfs
/// decompression, verity checks, reads) fills fixed buffers; this thread hashes them and
/// hands them to the sink, so the two halves run on two cores with bounded memory.
fn stream_image<'r>(
    image: &Image,
    open: impl FnOnce() -> Result<Box<dyn io::Read + 'r>, PackageError> + Send + 'r,
    sink: &mut dyn Sink,
) -> Result<Vec<u8>, PackageError> {
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(IN_FLIGHT);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        let reader = s.spawn(move || -> Result<(), PackageError> {
            let mut r = open()?;
            loop {
                let mut buf = empty_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
                let mut n = 0;
                while n < buf.len() {
                    match r.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = full_tx.send(Err(e));
                            return Ok(());
                        }
                    }
                }
                let last = n < buf.len();
                if full_tx.send(Ok((buf, n))).is_err() || last {
                    return Ok(()); // the image ended, or the consumer stopped
                }
            }
        });
        let consumed = consume(image, &full_rx, &empty_tx, sink).map_err(|e| e.into_package_error(image));
        drop(full_rx); // unblocks the reader if the consumer stopped early
        let opened = reader.join().unwrap_or_else(|_| Err(PackageError::Io(io::Error::other("image reader panicked"))));
        opened?;
        consumed
    })
}

/// Hash and sink what the reader sends; it ends the stream with a short (possibly
/// empty) buffer or an error.
fn consume(
    image: &Image,
    full: &mpsc::Receiver<io::Result<(Vec<u8>, usize)>>,
    empty: &mpsc::Sender<Vec<u8>>,
    sink: &mut dyn Sink,
) -> Result<Vec<u8>, StreamError> {
    let mut signed = image.digest_algorithm.hasher();
    let mut sha256 = (image.digest_algorithm != DigestAlg::Sha256).then(|| DigestAlg::Sha256.hasher());
    let mut total = 0u64;
    sink.begin(image).map_err(StreamError::Sink)?;
    while let Ok(msg) = full.recv() {
        let (buf, n) = msg.map_err(StreamError::Read)?;
        total += n as u64;
        if total > image.size {
            return Err(StreamError::Mismatch(format!("longer than the signed size {}", image.size)));
        }
        signed.update(&buf[..n]);
        if let Some(h) = &mut sha256 {
            h.update(&buf[..n]);
        }
        sink.write(&buf[..n]).map_err(StreamError::Sink)?;
        let _ = empty.send(buf);
        if n < CHUNK {
            break;
        }
    }
    if total != image.size {
        return Err(StreamError::Mismatch(format!("{total} bytes, the signed size is {}", image.size)));
    }
    let got = signed.finish();
    if got != image.digest {
        return Err(StreamError::Mismatch(format!(
            "{} {} differs from the signed {}",
            image.digest_algorithm,
            hex::encode(&got),
            hex::encode(&image.digest)
        )));
    }
    sink.end(image).map_err(StreamError::Sink)?;
    Ok(sha256.map(|h| h.finish()).unwrap_or(got))
}

enum StreamError {
    Read(io::Error),
    Mismatch(String),
    Sink(io::Error),
}

impl StreamError {
    fn into_package_error(self, image: &Image) -> PackageError {
        match self {
            // Decompression and verity failures come as InvalidData: the content is bad.
            Self::Read(e) if e.kind() == io::ErrorKind::InvalidData => {
                PackageError::Squashfs(SquashfsError::Corrupt(e.to_string()))
            }
            Self::Read(e) => PackageError::Squashfs(SquashfsError::Io(e)),
            Self::Mismatch(what) => PackageError::Image { name: image.filename.clone(), what },
            Self::Sink(source) => PackageError::Sink { name: image.filename.clone(), source },
        }
    }
}
