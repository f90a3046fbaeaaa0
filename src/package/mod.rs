//! Signed packages: RAUC bundles (`plain`, `verity`) and TR-069 signed packages, read
//! into one verified model. Nothing downstream knows which format a package had.
//!
//! Two steps, with the caller's decisions between them:
//! - [`authenticate`] checks the signature (R1, R2, R4), the chain and the structure, and
//!   everything else that needs no image byte (with [`Context::check_ahead`] also every
//!   byte that can be checked ahead); it returns an [`Authenticated`] package whose facts
//!   ([`Authenticated::package`]) the installer admits or refuses.
//! - [`Authenticated::stream`] hands each image's bytes to a [`Sink`] (nothing for
//!   `info`, the target slot for an install) while checking every image digest, in one
//!   pass. A sink must treat what it received as untrusted until `stream` returns `Ok`.
//!
//! [`verify`] does both for callers with nothing to decide in between.

pub mod adaptive;
mod bundle;
pub mod manifest;
mod rauc;
pub mod squashfs;
mod stream;
pub mod tr069;
pub mod verity;

use stream::stream_image;

pub use bundle::{build_bundle, BundleOptions};
pub use rauc::{read_trailer, Trailer, MAX_SIGNATURE};

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
use std::sync::Arc;
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
    /// Adaptive update methods the manifest names (`adaptive=`, RAUC), unknown ones
    /// included; an install uses [`crate::blockindex::METHOD`] and ignores the others.
    pub adaptive: Vec<String>,
    /// RAUC slot hooks (`hooks=`); none for TR-069 packages.
    #[serde(skip_serializing_if = "no_slot_hooks")]
    pub hooks: manifest::SlotHooks,
}

fn no_slot_hooks(h: &manifest::SlotHooks) -> bool {
    !h.any()
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
    /// RAUC `[hooks]`: the bundle's hook executable and install hooks (none for TR-069).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<manifest::BundleHooks>,
    /// RAUC `[handler]`: a full custom installer in the bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<manifest::Handler>,
}

impl Package {
    /// Whether the package carries code that an install would run (hooks or a handler).
    pub fn has_code(&self) -> bool {
        self.handler.is_some()
            || self.hooks.as_ref().is_some_and(|h| h.install_check)
            || self.images.iter().any(|i| i.hooks.any())
    }
}

/// Everything verification needs besides the bytes.
pub struct Context<'a> {
    /// Trust anchors.
    pub anchors: &'a Anchors,
    /// Signature policy.
    pub policy: Policy,
    /// The verification time.
    pub now: SystemTime,
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
    /// Check every byte that can be checked before an image byte reaches a sink (the
    /// installer): a verity bundle's whole tree, before its squashfs is opened, and each
    /// TR-069 file's digest. The images are verified again as they stream. (A plain
    /// bundle's payload is always hashed before it is parsed.)
    pub check_ahead: bool,
}

/// Receives each image's bytes while they are verified.
pub trait Sink {
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
    /// Every image of the bundle is for other variants than the device's (RAUC's image
    /// selection finds nothing to install; 9001).
    #[error("no image in the bundle is for this device's variant ({0})")]
    NoImageForVariant(String),
    /// A plain bundle on storage whose bytes may change between two reads.
    #[error("plain bundle refused: {0}; use a verity bundle, or copy the bundle to local storage")]
    Unstable(String),
    /// A plain bundle given as a URL: its signature covers the whole squashfs, so nothing
    /// of it could be checked before use while streaming (a policy refusal, 9001).
    #[error(
        "plain bundle refused: it cannot be checked before use when streamed from a file server; \
         use a verity bundle, or fetch the file and pass it to Download"
    )]
    NotStreamable,
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
            Self::Manifest(e) => e.kind(),
            Self::Squashfs(e) => e.kind(),
            Self::Verity(e) => e.kind(),
            Self::Tr069(e) => e.kind(),
            Self::Image { .. } => "image-digest",
            Self::Sink { .. } => "write",
            Self::Unstable(_) => "unsafe-file-system",
            Self::NotStreamable => "plain-streamed",
            Self::NoImageForVariant(_) => "variant",
        }
    }

    fn fault(&self) -> CwmpFault {
        match self {
            Self::Io(_) | Self::Unstable(_) => CwmpFault::UnableToAccessFile,
            Self::Squashfs(e) => e.fault(),
            Self::Manifest(e) => e.fault(),
            Self::Verity(e) => e.fault(),
            Self::Truncated(_) => CwmpFault::UnableToCompleteDownload,
            Self::Signature(e) => e.fault(),
            Self::Tr069(e) => e.fault(),
            Self::Sink { .. } => CwmpFault::InternalError,
            Self::NoImageForVariant(_) | Self::NotStreamable => CwmpFault::RequestDenied,
            _ => CwmpFault::FileCorrupted,
        }
    }
}

/// A package whose signature, chain and structure verified; its images are not yet
/// streamed (their `sha256` are empty).
pub struct Authenticated {
    package: Package,
    contents: Contents,
}

enum Contents {
    Rauc(rauc::Contents),
    Tr069(tr069::Contents),
}

/// Authenticate a package: signature, chain, structure, the images for this device, and
/// with [`Context::check_ahead`] every byte that can be checked before one is written.
///
/// Errors: [`PackageError`], the first check that failed.
pub fn authenticate(src: Arc<dyn Source>, ctx: &Context<'_>) -> Result<Authenticated, PackageError> {
    let mut magic = [0u8; 8];
    let n = src.read_at(&mut magic, 0).map_err(PackageError::Io)?;
    // Like RAUC, a bundle is recognized by its trailer and signature, not by the squashfs
    // magic: a damaged superblock is then reported as what it is, a signature mismatch.
    if n == 8 && &magic == tr069::MAGIC {
        let (package, c) = tr069::authenticate(src, ctx)?;
        Ok(Authenticated { package, contents: Contents::Tr069(c) })
    } else {
        let (package, c) = rauc::authenticate(src, ctx)?;
        Ok(Authenticated { package, contents: Contents::Rauc(c) })
    }
}

impl Authenticated {
    /// The authenticated facts: format, compatible, versions, images (sizes and signed
    /// digests), `[meta.*]`, signers, TR-069 constraints.
    pub fn package(&self) -> &Package {
        &self.package
    }

    /// Copy the package's file `name` (RAUC: a file of the bundle's squashfs, such as its
    /// hook executable) into `out`, from the authenticated bytes, at most `max` bytes.
    /// Returns its size.
    ///
    /// Errors: [`PackageError`]: missing, too large, a block that fails verification;
    /// TR-069 packages hold no such files ([`PackageError::Unsupported`]).
    pub fn copy_file(&self, name: &str, out: &mut dyn io::Write, max: u64) -> Result<u64, PackageError> {
        match &self.contents {
            Contents::Rauc(c) => c.copy_file(name, out, max),
            Contents::Tr069(_) => Err(PackageError::Unsupported("files of a TR-069 package besides its images".into())),
        }
    }

    /// Stream every image into `sink`, checking each one's size and signed digest (and,
    /// for verity bundles, every block against the tree). Returns the verified package
    /// with each image's `sha256` filled in.
    ///
    /// Errors: [`PackageError`]; [`PackageError::Sink`] when the sink failed.
    pub fn stream(self, sink: &mut dyn Sink) -> Result<Package, PackageError> {
        self.stream_adaptive(sink, None)
    }

    /// [`Authenticated::stream`], with the images of a RAUC bundle that carry a
    /// block-hash index assembled from the blocks `adaptive` finds on the device and the
    /// bundle's ([`adaptive`]). Each image is still checked whole against its signed
    /// size and digest. TR-069 packages have no adaptive images.
    ///
    /// Errors: as [`Authenticated::stream`].
    pub fn stream_adaptive(
        self,
        sink: &mut dyn Sink,
        adaptive: Option<adaptive::Adaptive<'_>>,
    ) -> Result<Package, PackageError> {
        let mut package = self.package;
        match self.contents {
            Contents::Rauc(c) => c.stream(&mut package, sink, adaptive)?,
            Contents::Tr069(c) => c.stream(&mut package, sink)?,
        }
        Ok(package)
    }
}

/// [`authenticate`], then [`Authenticated::stream`] into `sink`.
pub fn verify(src: Arc<dyn Source>, ctx: &Context<'_>, sink: &mut dyn Sink) -> Result<Package, PackageError> {
    authenticate(src, ctx)?.stream(sink)
}

/// One digest of `[start, start+len)` of `src`.
pub(crate) fn digest_range(src: &dyn Source, start: u64, len: u64, alg: DigestAlg) -> Result<Vec<u8>, PackageError> {
    let mut d = rauc::hash_range(src, start, len, &[alg]).map_err(PackageError::Io)?;
    Ok(d.pop().map(|(_, v)| v).unwrap_or_default())
}
