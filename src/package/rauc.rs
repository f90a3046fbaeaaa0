//! RAUC bundles: `[squashfs][verity tree, verity only][CMS DER][u64 BE CMS length]`.
//!
//! plain: the CMS is detached and signs the whole squashfs. It is hashed completely
//! before a byte of it is parsed (a tampered payload is a signature failure, and nothing
//! unauthenticated is interpreted), then read again for the manifest and images, which
//! is why plain bundles are accepted only from local file systems.
//! verity: the CMS is attached and signs the manifest, which carries the root of a
//! dm-verity tree over the squashfs; every block read is checked against the tree.

use super::manifest::{BundleFormat, Manifest, MAX_MANIFEST};
use super::squashfs::Squashfs;
use super::verity::{self, VerifiedReader, Verity};
use super::{check_compatible, stream_image, Context, Format, Image, Package, PackageError, Sink};
use crate::digest::{DigestAlg, MultiHasher};
use crate::sign::{self, CmsContent, SigningKey};
use crate::source::{FileSource, Source, Window};
use crate::verify::{check_signers, SignedCms};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
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

pub(super) fn verify(src: Arc<dyn Source>, ctx: &Context<'_>, sink: &mut dyn Sink) -> Result<Package, PackageError> {
    let t = read_trailer(&*src, MAX_SIGNATURE)?;
    let cms = SignedCms::parse(&t.cms)?;
    let mut policy = ctx.policy.clone();
    policy.allow_sha1 = false; // the legacy switch is for TR-069 packages only
    let pending = check_signers(&cms, ctx.anchors, &policy, ctx.now)?;
    if let Some(content) = cms.content() {
        let digests: Vec<_> = pending.needed_digests().into_iter().map(|a| (a, a.digest(content))).collect();
        let signers = pending.finish(&digests)?;
        let manifest = Manifest::parse(content)?;
        return verity_bundle(src, t.payload_len, manifest, signers, ctx, sink);
    }
    // plain: the payload is read twice (hashed, then parsed and streamed), so both reads
    // must see the same bytes: only local file systems (see `Source::check_stable`; the
    // installer's read lease covers local writers). Nothing of the payload is parsed
    // before its hash is verified, for `info` as for an install.
    src.check_stable().map_err(PackageError::Unstable)?;
    let algs = pending.needed_digests();
    let payload = t.payload_len;
    let signers = pending.finish(&hash_range(&*src, 0, payload, &algs).map_err(PackageError::Io)?)?;
    plain_contents(src, payload, signers, ctx, sink)
}

/// The plain bundle's squashfs: manifest, then images into the sink. `ctx` is given when
/// the payload is already authenticated, so the compatible check can come first.
fn plain_contents(
    src: Arc<dyn Source>,
    payload: u64,
    signers: Vec<crate::verify::SignerReport>,
    ctx: &Context<'_>,
    sink: &mut dyn Sink,
) -> Result<Package, PackageError> {
    let sqfs = Squashfs::open(Box::new(Window::new(src, 0, payload)), payload)?;
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
    check_compatible(ctx, &manifest.compatible)?;
    let images = images_of(&sqfs, &manifest, ctx)?;
    let mut pkg = package(Format::Plain, manifest, images, signers)?;
    sink.start(&pkg)?;
    stream_all(&sqfs, &mut pkg.images, sink)?;
    Ok(pkg)
}

fn verity_bundle(
    src: Arc<dyn Source>,
    payload: u64,
    manifest: Manifest,
    signers: Vec<crate::verify::SignerReport>,
    ctx: &Context<'_>,
    sink: &mut dyn Sink,
) -> Result<Package, PackageError> {
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
    let v = Arc::new(Verity::new(src, data_len, vp.size, vp.salt, vp.root)?);
    check_compatible(ctx, &manifest.compatible)?;
    if ctx.verify_before_writing {
        v.check_all(&mut |_| {})?;
    }
    let reader = VerifiedReader::new(v.clone());
    let failure = reader.failure.clone();
    let result = Squashfs::open(Box::new(reader), data_len).map_err(PackageError::from).and_then(|sqfs| {
        let images = images_of(&sqfs, &manifest, ctx)?;
        let mut pkg = package(Format::Verity, manifest.clone(), images, signers)?;
        sink.start(&pkg)?;
        stream_all(&sqfs, &mut pkg.images, sink)?;
        Ok(pkg)
    });
    // A verity failure explains whatever squashfs or image error it caused.
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e.into());
    }
    let pkg = result?;
    if ctx.check_whole_tree && !ctx.verify_before_writing {
        // The blocks no image read (metadata, padding): every block is checked once.
        v.check_unverified()?;
    }
    Ok(pkg)
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
        return Err(PackageError::Refused {
            kind: "variant",
            fault: crate::fault::CwmpFault::RequestDenied,
            why: format!(
                "no image in the bundle is for this device's variant ({})",
                variant.unwrap_or("none configured")
            ),
        });
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
        let image = Image {
            slot_class: e.slot_class.clone(),
            variant: e.variant.clone(),
            filename: e.filename.clone(),
            size: e.size.ok_or_else(|| missing("size"))?,
            digest_algorithm: DigestAlg::Sha256,
            digest: e.sha256.ok_or_else(|| missing("sha256"))?.to_vec(),
            sha256: Vec::new(),
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

fn stream_all(sqfs: &Squashfs, images: &mut [Image], sink: &mut dyn Sink) -> Result<(), PackageError> {
    for image in images {
        let name = image.filename.clone();
        let open = move || Ok(Box::new(sqfs.reader(&name)?) as Box<dyn io::Read>);
        image.sha256 = stream_image(image, open, sink)?;
    }
    Ok(())
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

/// What `henb-update bundle` builds.
pub struct BundleOptions {
    /// `plain` or `verity`.
    pub format: BundleFormat,
    /// Directory with `manifest.raucm` and the images.
    pub content_dir: PathBuf,
    /// Output file (written atomically).
    pub output: PathBuf,
    /// One signature per key.
    pub signers: Vec<SigningKey>,
    /// Intermediate certificates to embed.
    pub intermediates: Vec<x509_cert::Certificate>,
    /// CRLs to embed (SignedData `crls`, RFC 5652 §10.2.1).
    pub crls: Vec<x509_cert::crl::CertificateList>,
    /// mksquashfs compressor (`-comp`), default gzip.
    pub compression: Option<String>,
    /// Extra `[meta.<label>]` sections to add to the manifest.
    pub extra_meta: Vec<(String, Vec<(String, String)>)>,
}

/// Build a RAUC-compatible bundle the way `rauc bundle` does: fill in image sizes and
/// digests, mksquashfs the content, add the tree (verity), sign, append the trailer.
/// The content directory is not modified.
pub fn build_bundle(opts: &BundleOptions) -> anyhow::Result<()> {
    use anyhow::{bail, Context as _};
    let mpath = opts.content_dir.join("manifest.raucm");
    let text = fs::read_to_string(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
    let mut kf = super::keyfile::KeyFile::parse(&text).with_context(|| format!("{}", mpath.display()))?;
    if let Some((label, _)) = opts.extra_meta.iter().find(|(l, _)| kf.group(&format!("meta.{l}")).is_some()) {
        bail!("{} already has [meta.{label}]: give its values in one place only", mpath.display());
    }
    for (label, entries) in &opts.extra_meta {
        for (k, v) in entries {
            kf.set(&format!("meta.{label}"), k, v);
        }
    }
    kf.set("bundle", "format", opts.format.name());
    for k in ["verity-hash", "verity-salt", "verity-size"] {
        kf.remove("bundle", k);
    }
    let manifest = Manifest::from_keyfile(&kf).with_context(|| format!("{}", mpath.display()))?;
    for img in &manifest.images {
        let p = opts.content_dir.join(&img.filename);
        let f = File::open(&p).with_context(|| format!("image {}", p.display()))?;
        let src = FileSource::new(f)?;
        let d = hash_range(&src, 0, src.len(), &[DigestAlg::Sha256])?;
        let group = match &img.variant {
            Some(v) => format!("image.{}.{v}", img.slot_class),
            None => format!("image.{}", img.slot_class),
        };
        kf.set(&group, "sha256", &hex::encode(&d[0].1));
        kf.set(&group, "size", &src.len().to_string());
    }
    let out_dir = opts.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stage = tempfile::Builder::new().prefix(".henb-bundle-").tempdir_in(out_dir)?;
    let staged_manifest = stage.path().join("manifest.raucm");
    fs::write(&staged_manifest, kf.to_text())?;
    let sqfs = stage.path().join("bundle.sqfs");
    let mut cmd = Command::new("mksquashfs");
    for entry in fs::read_dir(&opts.content_dir)? {
        let entry = entry?;
        if entry.file_name() != "manifest.raucm" {
            cmd.arg(entry.path());
        }
    }
    cmd.arg(&staged_manifest).arg(&sqfs).args(["-noappend", "-all-root", "-no-xattrs", "-no-progress", "-quiet"]);
    if let Some(c) = &opts.compression {
        cmd.args(["-comp", c]);
    }
    let st = cmd.status().context("running mksquashfs (install squashfs-tools)")?;
    if !st.success() {
        bail!("mksquashfs failed: {st}");
    }
    let file = OpenOptions::new().read(true).write(true).open(&sqfs)?;
    let mut len = file.metadata()?.len();
    if len % 4096 != 0 {
        let pad = 4096 - len % 4096;
        file.write_all_at(&vec![0u8; pad as usize], len)?;
        len += pad;
    }
    let cms = match opts.format {
        BundleFormat::Plain => {
            let algs: Vec<DigestAlg> = opts.signers.iter().map(|s| s.digest()).collect();
            let src = FileSource::new(file.try_clone()?)?;
            let digests = hash_range(&src, 0, len, &algs)?;
            sign::sign(&opts.signers, &opts.intermediates, &opts.crls, CmsContent::Detached(&digests))?
        }
        BundleFormat::Verity => {
            let mut salt = [0u8; 32];
            getrandom::getrandom(&mut salt).map_err(|e| anyhow::anyhow!("random salt: {e}"))?;
            let tree_len = verity::Geometry::new(len).tree_bytes();
            file.set_len(len + tree_len)?;
            let src = FileSource::new(file.try_clone()?)?;
            let out = FileSource::new(file.try_clone()?)?;
            let root = verity::build_tree(&src, len, &salt, &out, &mut |b, o| file.write_all_at(b, o), len)?;
            kf.set("bundle", "verity-hash", &hex::encode(root));
            kf.set("bundle", "verity-salt", &hex::encode(salt));
            kf.set("bundle", "verity-size", &tree_len.to_string());
            len += tree_len;
            sign::sign(&opts.signers, &opts.intermediates, &opts.crls, CmsContent::Attached(kf.to_text().as_bytes()))?
        }
        BundleFormat::Crypt => bail!("crypt bundles are not supported"),
    };
    let mut f = &file;
    f.write_all_at(&cms, len)?;
    f.write_all_at(&(cms.len() as u64).to_be_bytes(), len + cms.len() as u64)?;
    f.flush()?;
    file.sync_all()?;
    drop(file);
    crate::fsutil::rename_durably(&sqfs, &opts.output)?;
    Ok(())
}
