//! RAUC bundles: `[squashfs][verity tree, verity only][CMS DER][u64 BE CMS length]`.
//!
//! plain: the CMS is detached and signs the whole squashfs. It is hashed completely
//! before a byte of it is parsed (a tampered payload is a signature failure, and nothing
//! unauthenticated is interpreted), then read again for the manifest and images, which
//! is why plain bundles are accepted only from local file systems.
//! verity: the CMS is attached and signs the manifest, which carries the root of a
//! dm-verity tree over the squashfs; every block read is checked against the tree.

use super::adaptive::{self, Adaptive};
use super::manifest::{BundleFormat, Manifest, MAX_MANIFEST};
use super::squashfs::Squashfs;
use super::verity::{self, VerifiedReader, Verity};
use super::{stream_image, Context, Format, Image, Package, PackageError, Sink};
use crate::digest::{DigestAlg, MultiHasher};
use crate::source::{Source, Window};
use crate::verify::{check_signers, SignedCms};
use std::io::{self, Read};
use std::sync::Arc;

/// Largest CMS accepted (RAUC's default limit).
pub const MAX_SIGNATURE: u64 = 64 * 1024;

/// Where the parts of a bundle are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// Bytes before the CMS (squashfs, plus tree for verity).
    pub payload_len: u64,
    /// The CMS DER.
    pub cms: Vec<u8>,
}

/// Read and check the trailer: 0 < CMS length <= `max`, inside the file, payload
/// non-empty and 4 KiB aligned.
pub fn read_trailer(src: &dyn Source, max: u64) -> Result<Trailer, PackageError> {
    let len = src.len();
    if len < 8 + 4096 {
        return Err(PackageError::Truncated(format!("a bundle of {len} bytes cannot hold a payload and a signature")));
    }
    let mut b = [0u8; 8];
    src.read_exact_at(&mut b, len - 8).map_err(PackageError::Io)?;
    let cms_len = u64::from_be_bytes(b);
    if cms_len == 0 {
        return Err(PackageError::Layout("signature size is 0".into()));
    }
    if cms_len > max {
        return Err(PackageError::Layout(format!("signature size {cms_len} exceeds the limit of {max}")));
    }
    if cms_len > len - 8 {
        return Err(PackageError::Layout(format!("signature size {cms_len} is larger than the bundle")));
    }
    let payload_len = len - 8 - cms_len;
    if payload_len == 0 || !payload_len.is_multiple_of(4096) {
        return Err(PackageError::Layout(format!(
            "payload of {payload_len} bytes is not a non-empty multiple of 4096"
        )));
    }
    let mut cms = vec![0u8; cms_len as usize];
    src.read_exact_at(&mut cms, payload_len).map_err(PackageError::Io)?;
    Ok(Trailer { payload_len, cms })
}

/// What streaming an authenticated bundle's images needs: its squashfs, read through
/// the verity tree for verity bundles.
pub(super) struct Contents {
    sqfs: Squashfs,
    verity: Option<VerityState>,
    /// The bundle (its payload starts with the squashfs), and the payload's length.
    src: Arc<dyn Source>,
    payload: u64,
}

struct VerityState {
    tree: Arc<Verity>,
    /// The first verity failure of a read (it explains the squashfs error it caused).
    failure: Arc<std::sync::Mutex<Option<verity::VerityError>>>,
    /// Check the blocks no image read once the images are streamed.
    check_unverified: bool,
}

impl VerityState {
    /// A verity failure replaces whatever error it caused.
    fn explain<T>(&self, r: Result<T, PackageError>) -> Result<T, PackageError> {
        match self.failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e.into()),
            None => r,
        }
    }
}

/// Authenticate a bundle: trailer, signature and chain, manifest, the squashfs's
/// directory, the images for this device; for plain bundles the whole payload, hashed
/// before it is parsed; with `check_ahead` a verity bundle's whole tree.
pub(super) fn authenticate(src: Arc<dyn Source>, ctx: &Context<'_>) -> Result<(Package, Contents), PackageError> {
    let t = read_trailer(&*src, MAX_SIGNATURE)?;
    let cms = SignedCms::parse(&t.cms)?;
    let mut policy = ctx.policy.clone();
    policy.allow_sha1 = false; // the legacy switch is for TR-069 packages only
    let pending = check_signers(&cms, ctx.anchors, &policy, ctx.now)?;
    if let Some(content) = cms.content() {
        let digests: Vec<_> = pending.needed_digests().into_iter().map(|a| (a, a.digest(content))).collect();
        let signers = pending.finish(&digests)?;
        let manifest = Manifest::parse(content)?;
        return verity_bundle(src, t.payload_len, manifest, signers, ctx);
    }
    // plain: the payload is read twice (hashed, then parsed and streamed), so both reads
    // must see the same bytes: only local file systems (see `Source::check_stable`; the
    // installer's read lease covers local writers). Nothing of the payload is parsed
    // before its hash is verified, for `info` as for an install.
    if src.streamed() {
        return Err(PackageError::NotStreamable);
    }
    src.check_stable().map_err(PackageError::Unstable)?;
    let algs = pending.needed_digests();
    let payload = t.payload_len;
    let signers = pending.finish(&hash_range(&*src, 0, payload, &algs).map_err(PackageError::Io)?)?;
    plain_contents(src, payload, signers, ctx)
}

impl Contents {
    /// Stream the images of `pkg` (as [`authenticate`] returned it) into `sink`, each
    /// checked against its signed size and digest; their `sha256` is filled in.
    ///
    /// With `adaptive`, each image whose manifest names `block-hash-index` and whose
    /// bundle index is usable is assembled from the device's blocks and the bundle's
    /// ([`super::adaptive`]); any other image is read whole.
    pub(super) fn stream(
        self,
        pkg: &mut Package,
        sink: &mut dyn Sink,
        adaptive: Option<Adaptive<'_>>,
    ) -> Result<(), PackageError> {
        let streamed = self.stream_all(&mut pkg.images, sink, adaptive);
        let Some(v) = &self.verity else { return streamed };
        v.explain(streamed)?;
        if v.check_unverified {
            // The blocks no image read (metadata, padding): every block is checked once.
            v.tree.check_unverified()?;
        }
        Ok(())
    }
}

/// The plain bundle's squashfs, its payload already authenticated: the manifest, then
/// the images.
fn plain_contents(
    src: Arc<dyn Source>,
    payload: u64,
    signers: Vec<crate::verify::SignerReport>,
    ctx: &Context<'_>,
) -> Result<(Package, Contents), PackageError> {
    let sqfs = Squashfs::open(Box::new(Window::new(src.clone(), 0, payload)), payload)?;
    let manifest = Manifest::parse(&sqfs.read_file("manifest.raucm", MAX_MANIFEST as u64)?)?;
    match manifest.format {
        BundleFormat::Plain => {}
        f => {
            return Err(PackageError::Layout(format!(
                "manifest says '{}' but the signature is detached (plain)",
                f.name()
            )))
        }
    }
    let images = images_of(&sqfs, &manifest, ctx)?;
    let pkg = package(Format::Plain, manifest, images, signers)?;
    Ok((pkg, Contents { sqfs, verity: None, src, payload }))
}

fn verity_bundle(
    src: Arc<dyn Source>,
    payload: u64,
    manifest: Manifest,
    signers: Vec<crate::verify::SignerReport>,
    ctx: &Context<'_>,
) -> Result<(Package, Contents), PackageError> {
    match manifest.format {
        BundleFormat::Verity => {}
        BundleFormat::Crypt => return Err(PackageError::Unsupported("crypt bundles".into())),
        BundleFormat::Plain => {
            return Err(PackageError::Layout("the signature is attached but the manifest says 'plain'".into()))
        }
    }
    let vp = manifest
        .verity
        .clone()
        .ok_or_else(|| PackageError::Layout("verity manifest lacks verity-hash, verity-salt and verity-size".into()))?;
    if vp.size >= payload {
        return Err(PackageError::Layout(format!(
            "verity-size {} leaves no squashfs in a {payload} byte payload",
            vp.size
        )));
    }
    let data_len = payload - vp.size;
    let tree = Arc::new(Verity::new(src.clone(), data_len, vp.size, vp.salt, vp.root)?);
    if ctx.check_ahead {
        // Before the squashfs is opened: one sequential pass over the tree first is
        // measurably faster than after backhand's reads at the end of the image.
        tree.check_all(&mut |_| {})?;
    }
    let reader = VerifiedReader::new(tree.clone());
    let state = VerityState {
        tree,
        failure: reader.failure.clone(),
        check_unverified: ctx.check_whole_tree && !ctx.check_ahead,
    };
    let opened = Squashfs::open(Box::new(reader), data_len).map_err(PackageError::from).and_then(|sqfs| {
        let images = images_of(&sqfs, &manifest, ctx)?;
        Ok((package(Format::Verity, manifest, images, signers)?, sqfs))
    });
    let (pkg, sqfs) = state.explain(opened)?;
    Ok((pkg, Contents { sqfs, verity: Some(state), src, payload: data_len }))
}

/// The manifest's images, their sizes checked against the squashfs.
/// The manifest's images for a device of `variant`: per slot class the image of that
/// variant, else the default one; never two for one class.
fn select<'m>(
    manifest: &'m Manifest,
    variant: Option<&str>,
) -> Result<Vec<&'m super::manifest::ImageEntry>, PackageError> {
    let mut out: Vec<&super::manifest::ImageEntry> = Vec::new();
    for e in &manifest.images {
        let specific = match e.variant.as_deref() {
            None => false,
            Some(v) if Some(v) == variant => true,
            Some(_) => continue,
        };
        match out.iter().position(|o| o.slot_class == e.slot_class) {
            None => out.push(e),
            Some(i) if specific && out[i].variant.is_none() => out[i] = e,
            Some(i) if !specific && out[i].variant.is_some() => {}
            Some(_) => {
                return Err(PackageError::Layout(format!("two images for slot class '{}'", e.slot_class)));
            }
        }
    }
    if out.is_empty() && !manifest.images.is_empty() {
        return Err(PackageError::NoImageForVariant(variant.unwrap_or("none configured").to_string()));
    }
    Ok(out)
}

fn images_of(sqfs: &Squashfs, manifest: &Manifest, ctx: &Context<'_>) -> Result<Vec<Image>, PackageError> {
    let mut out = Vec::new();
    let entries = match ctx.install_images_only {
        true => select(manifest, ctx.variant.as_deref())?,
        false => manifest.images.iter().collect(),
    };
    for e in entries {
        let missing =
            |what: &str| PackageError::Layout(format!("image '{}' has no {what} in the manifest", e.filename));
        if e.filename.is_empty() {
            // Written by its install hook alone: nothing of the bundle goes to the slot.
            out.push(Image {
                slot_class: e.slot_class.clone(),
                variant: e.variant.clone(),
                filename: String::new(),
                size: 0,
                digest_algorithm: DigestAlg::Sha256,
                digest: DigestAlg::Sha256.digest(&[]),
                sha256: Vec::new(),
                adaptive: Vec::new(),
                hooks: e.hooks,
            });
            continue;
        }
        let image = Image {
            slot_class: e.slot_class.clone(),
            variant: e.variant.clone(),
            filename: e.filename.clone(),
            size: e.size.ok_or_else(|| missing("size"))?,
            digest_algorithm: DigestAlg::Sha256,
            digest: e.sha256.ok_or_else(|| missing("sha256"))?.to_vec(),
            sha256: Vec::new(),
            adaptive: e.adaptive.clone(),
            hooks: e.hooks,
        };
        let actual = sqfs.file_size(&e.filename)?;
        if actual != image.size {
            return Err(PackageError::Image {
                name: e.filename.clone(),
                what: format!("{actual} bytes, the signed size is {}", image.size),
            });
        }
        out.push(image);
    }
    Ok(out)
}

impl Contents {
    /// Copy the bundle's file `name` into `out`, at most `max` bytes, from the
    /// authenticated content (verity: every block checked against the tree; plain: the
    /// payload whose digest was verified, held still by the read lease). Returns its size.
    ///
    /// Errors: the file is missing, larger than `max`, or a block fails verification.
    pub(super) fn copy_file(&self, name: &str, out: &mut dyn io::Write, max: u64) -> Result<u64, PackageError> {
        let size = self.sqfs.file_size(name)?;
        if size > max {
            return Err(PackageError::Layout(format!("'{name}' is {size} bytes, more than the {max} allowed")));
        }
        let copied = (|| {
            let mut r = self.sqfs.reader(name)?;
            let mut buf = vec![0u8; 64 << 10];
            let mut n = 0u64;
            loop {
                let k = r.read(&mut buf).map_err(PackageError::Io)?;
                if k == 0 {
                    break;
                }
                out.write_all(&buf[..k]).map_err(|source| PackageError::Sink { name: name.to_string(), source })?;
                n += k as u64;
            }
            if n != size {
                return Err(PackageError::Layout(format!("'{name}' read {n} bytes, its size is {size}")));
            }
            Ok(n)
        })();
        match &self.verity {
            Some(v) => v.explain(copied),
            None => copied,
        }
    }

    fn stream_all(
        &self,
        images: &mut [Image],
        sink: &mut dyn Sink,
        mut adaptive: Option<Adaptive<'_>>,
    ) -> Result<(), PackageError> {
        let sqfs = &self.sqfs;
        for image in images {
            if image.filename.is_empty() {
                // An install hook's image without a file: the sink hears of it, no byte.
                sink.begin(image)
                    .and_then(|_| sink.end(image))
                    .map_err(|source| PackageError::Sink { name: format!("[image.{}]", image.slot_class), source })?;
                image.sha256 = image.digest.clone();
                continue;
            }
            // A slot a hook changes is not the image the bundle's index describes: such
            // images are read whole.
            let index = match &adaptive {
                Some(_) if !image.adaptive.is_empty() && !image.hooks.any() => adaptive::bundle_index(sqfs, image)?,
                _ => None,
            };
            let name = image.filename.clone();
            image.sha256 = match (index, adaptive.as_mut()) {
                (Some(index), Some(a)) => {
                    let a = Adaptive { reuse: &mut *a.reuse, counters: a.counters.clone() };
                    let raw = match &self.verity {
                        Some(v) => adaptive::Raw::Verity(v.tree.clone(), Default::default(), v.failure.clone()),
                        None => adaptive::Raw::Plain(self.src.clone(), self.payload),
                    };
                    let (img, src) = (image.clone(), &*self.src);
                    let open =
                        move || Ok(Box::new(adaptive::reader(sqfs, img, index, raw, src, a)?) as Box<dyn io::Read>);
                    stream_image(image, open, sink)?
                }
                _ => {
                    let open = move || Ok(Box::new(sqfs.reader(&name)?) as Box<dyn io::Read>);
                    stream_image(image, open, sink)?
                }
            };
        }
        Ok(())
    }
}

fn package(
    format: Format,
    m: Manifest,
    images: Vec<Image>,
    signers: Vec<crate::verify::SignerReport>,
) -> Result<Package, PackageError> {
    Ok(Package {
        format,
        security_version: m.security_version()?,
        compatible: m.compatible,
        version: m.version,
        description: m.description,
        build: m.build,
        images,
        meta: m.meta,
        signers,
        constraints: Default::default(),
        hooks: Some(m.hooks),
        handler: m.handler,
    })
}

/// Digests of `[start, start+len)` of `src`.
pub(crate) fn hash_range(
    src: &dyn Source,
    start: u64,
    len: u64,
    algs: &[DigestAlg],
) -> io::Result<Vec<(DigestAlg, Vec<u8>)>> {
    let mut h = MultiHasher::new(algs);
    let mut buf = vec![0u8; 64 << 10]; // stays in L2 between the copy and the hash
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], start + off)?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(h.finish())
}
