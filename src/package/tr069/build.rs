//! Writing TR-069 signed packages from a RAUC-style content directory.

use super::{CMD_COMPATIBLE, CMD_META, CMD_REFERENCE_VALUES, CMD_SECURITY_VERSION, HASH_SHA1, HASH_SHA256, MAGIC};
use crate::config::keyfile::KeyFile;
use crate::digest::DigestAlg;
use crate::package::manifest::Manifest;
use crate::sign::{self, CmsContent, SigningKey};
use anyhow::{bail, Context};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

/// What `henb-update bundle --format tr069` builds.
pub struct Tr069Options {
    /// Directory with `manifest.raucm` and the images.
    pub content_dir: PathBuf,
    /// Output file (written atomically).
    pub output: PathBuf,
    /// Signers.
    pub signers: Vec<SigningKey>,
    /// Intermediates to embed.
    pub intermediates: Vec<x509_cert::Certificate>,
    /// CRLs to embed (SignedData `crls`, RFC 5652 §10.2.1).
    pub crls: Vec<x509_cert::crl::CertificateList>,
    /// SHA-1 file hashes (strictly conformant Annex E, for legacy peers).
    pub legacy_sha1: bool,
    /// Extra `[meta.<label>]` sections.
    pub extra_meta: Vec<(String, Vec<(String, String)>)>,
}

fn tlv(out: &mut Vec<u8>, ty: u32, value: &[u8]) {
    out.extend(ty.to_be_bytes());
    out.extend((value.len() as u32).to_be_bytes());
    out.extend(value);
}

fn section_text(label: &str, kv: &std::collections::BTreeMap<String, String>) -> String {
    let mut kf = KeyFile::default();
    for (k, v) in kv {
        kf.set(&format!("meta.{label}"), k, v);
    }
    kf.to_text()
}

/// Build a package: Role 1, Version, Description, Compatible, reference values, other
/// meta, security version, one Extract File per image, Reboot, End; detached signatures
/// over header and command list; payload = the images in manifest order.
pub fn build_package(o: &Tr069Options) -> anyhow::Result<()> {
    let mpath = o.content_dir.join("manifest.raucm");
    let text = std::fs::read_to_string(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
    let mut kf = KeyFile::parse(&text).with_context(|| format!("{}", mpath.display()))?;
    if let Some((label, _)) = o.extra_meta.iter().find(|(l, _)| kf.group(&format!("meta.{l}")).is_some()) {
        bail!("{} already has [meta.{label}]: give its values in one place only", mpath.display());
    }
    for (label, entries) in &o.extra_meta {
        for (k, v) in entries {
            kf.set(&format!("meta.{label}"), k, v);
        }
    }
    let m = Manifest::from_keyfile(&kf).with_context(|| format!("{}", mpath.display()))?;
    let alg = if o.legacy_sha1 { DigestAlg::Sha1 } else { DigestAlg::Sha256 };
    let mut cmds = Vec::new();
    tlv(&mut cmds, 20, &1u32.to_be_bytes());
    if let Some(v) = &m.version {
        tlv(&mut cmds, 10, v.as_bytes());
    }
    if let Some(d) = &m.description {
        tlv(&mut cmds, 11, d.as_bytes());
    }
    tlv(&mut cmds, CMD_COMPATIBLE, m.compatible.as_bytes());
    if let Some(sv) = m.security_version()? {
        tlv(&mut cmds, CMD_SECURITY_VERSION, &sv.to_be_bytes());
    }
    for (label, kv) in &m.meta {
        match label.as_str() {
            "measured-boot" => tlv(&mut cmds, CMD_REFERENCE_VALUES, section_text(label, kv).as_bytes()),
            "anti-rollback" => {}
            _ => tlv(&mut cmds, CMD_META, section_text(label, kv).as_bytes()),
        }
    }
    let mut files = Vec::new();
    let mut offset = 0u64;
    for img in &m.images {
        if img.variant.is_some() {
            bail!(
                "image.{}.{}: TR-069 packages have no variants",
                img.slot_class,
                img.variant.as_deref().unwrap_or_default()
            );
        }
        let p = o.content_dir.join(&img.filename);
        let mut f = File::open(&p).with_context(|| format!("image {}", p.display()))?;
        let mut h = alg.hasher();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            len += n as u64;
        }
        let hash = h.finish();
        let path = format!("/slot/{}", img.slot_class);
        if offset + len > u32::MAX as u64 {
            bail!("payload exceeds the 4 GiB the format's 32-bit fields can address");
        }
        let mut v = Vec::new();
        let ht = if o.legacy_sha1 { HASH_SHA1 } else { HASH_SHA256 };
        for x in [0, 32, path.len() as u32, ht, 32 + path.len() as u32, hash.len() as u32, offset as u32, len as u32] {
            v.extend(x.to_be_bytes());
        }
        v.extend(path.as_bytes());
        v.extend(&hash);
        tlv(&mut cmds, 1, &v);
        files.push((p, len));
        offset += len;
    }
    tlv(&mut cmds, 16, &[]);
    tlv(&mut cmds, 0, &[]);
    if cmds.len() >= 65536 {
        bail!("command list of {} bytes exceeds the format's 65535", cmds.len());
    }
    let mut signed = MAGIC.to_vec();
    for x in [1u32, 0, cmds.len() as u32, offset as u32] {
        signed.extend(x.to_be_bytes());
    }
    signed.extend(&cmds);
    let algs: Vec<DigestAlg> = o.signers.iter().map(|s| s.digest()).collect();
    let digests: Vec<_> = algs.iter().map(|a| (*a, a.digest(&signed))).collect();
    let sig = sign::sign(&o.signers, &o.intermediates, &o.crls, CmsContent::Detached(&digests))?;
    let dir = o.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        w.write_all(&signed)?;
        w.write_all(&sig)?;
        for (p, len) in &files {
            let n = io::copy(&mut File::open(p)?.take(*len), &mut w)?;
            if n != *len {
                bail!("{} changed while building", p.display());
            }
        }
        w.flush()?;
    }
    let mut perms = tmp.as_file().metadata()?.permissions();
    // A package is for distribution: readable by all, like what mksquashfs writes.
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    tmp.as_file().set_permissions(perms)?;
    tmp.as_file().sync_all()?;
    let (_, path) = tmp.keep().map_err(|e| e.error)?;
    crate::fsutil::rename_durably(&path, &o.output)?;
    Ok(())
}
