//! Building RAUC bundles the way `rauc bundle` does (build hosts): image sizes and
//! digests into the manifest, `mksquashfs`, the verity tree, the CMS signature.

use super::manifest::{BundleFormat, Manifest};
use super::rauc::hash_range;
use super::verity;
use crate::blockindex;
use crate::digest::DigestAlg;
use crate::sign::{self, CmsContent, SigningKey};
use crate::source::{FileSource, Source};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    /// mksquashfs block size (`-b`, e.g. `64K`), default 128K. Smaller blocks make an
    /// adaptive update fetch less around each changed 4 KiB block.
    pub block_size: Option<String>,
}

/// Build a RAUC-compatible bundle the way `rauc bundle` does: fill in image sizes and
/// digests, mksquashfs the content, add the tree (verity), sign, append the trailer.
/// The content directory is not modified.
pub fn build_bundle(opts: &BundleOptions) -> anyhow::Result<()> {
    use anyhow::{bail, Context as _};
    let mpath = opts.content_dir.join("manifest.raucm");
    let text = fs::read_to_string(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
    let mut kf = crate::config::keyfile::KeyFile::parse(&text).with_context(|| format!("{}", mpath.display()))?;
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
    let out_dir = opts.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stage = tempfile::Builder::new().prefix(".henb-bundle-").tempdir_in(out_dir)?;
    // Block-hash indexes are written to the staging directory (the content directory
    // is not modified) and replace any of the same name in the content directory.
    let mut indexes = Vec::new();
    let code = manifest.hooks.filename.iter().chain(manifest.handler.as_ref().map(|h| &h.filename));
    for f in code {
        let p = opts.content_dir.join(f);
        if !p.is_file() {
            bail!("the manifest names the executable '{f}', which is not in {}", opts.content_dir.display());
        }
    }
    for img in manifest.images.iter().filter(|i| !i.filename.is_empty()) {
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
        if !img.adaptive.is_empty() {
            // RAUC writes the list back with a trailing ';'.
            kf.set(&group, "adaptive", &format!("{};", img.adaptive.join(";")));
        }
        for method in &img.adaptive {
            match method.as_str() {
                blockindex::METHOD => {
                    let name = format!("{}{}", img.filename, blockindex::SUFFIX);
                    if img.filename.contains('/') {
                        bail!(
                            "adaptive image '{}': a block-hash index needs the image at the bundle's top level",
                            img.filename
                        );
                    }
                    let blocks = blockindex::blocks_of("image", src.len())
                        .with_context(|| format!("failed to generate hash index for {}", img.filename))?;
                    let mut r = std::io::BufReader::new(File::open(&p)?);
                    let index = blockindex::BlockHashIndex::compute(&mut r, blocks)?;
                    let staged = stage.path().join(&name);
                    fs::write(&staged, index.as_bytes())?;
                    indexes.push((name, staged));
                }
                "adaptive-test-method" => {}
                other => bail!(
                    "unsupported adaptive method '{other}' for image '{}' (known: {})",
                    img.filename,
                    blockindex::METHOD
                ),
            }
        }
    }
    let staged_manifest = stage.path().join("manifest.raucm");
    fs::write(&staged_manifest, kf.to_text())?;
    let sqfs = stage.path().join("bundle.sqfs");
    let mut cmd = Command::new("mksquashfs");
    for entry in fs::read_dir(&opts.content_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name != "manifest.raucm" && !indexes.iter().any(|(n, _)| name == n.as_str()) {
            cmd.arg(entry.path());
        }
    }
    for (_, staged) in &indexes {
        cmd.arg(staged);
    }
    cmd.arg(&staged_manifest).arg(&sqfs).args(["-noappend", "-all-root", "-no-xattrs", "-no-progress", "-quiet"]);
    if let Some(b) = &opts.block_size {
        cmd.args(["-b", b]);
    }
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
