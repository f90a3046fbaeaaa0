//! `henb-update bundle`.

use crate::package::manifest::BundleFormat;
use crate::package::tr069::{build_package, Tr069Options};
use crate::package::{build_bundle, BundleOptions};
use crate::sign::SigningKey;
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub(super) enum PackageFormat {
    Plain,
    Verity,
    Tr069,
}

#[derive(clap::Args)]
pub(super) struct Args {
    /// Package format [default: the manifest's [bundle] format, else verity].
    #[arg(long, value_enum)]
    format: Option<PackageFormat>,
    /// Signer certificate (PEM). Repeat with --key for several signatures.
    #[arg(long = "cert", value_name = "PEM", required = true)]
    certs: Vec<PathBuf>,
    /// Private key of the matching --cert (PEM, unencrypted).
    #[arg(long = "key", value_name = "PEM", required = true)]
    keys: Vec<PathBuf>,
    /// Intermediate CA certificate(s) to embed (PEM; a file may hold several).
    #[arg(long = "intermediate", value_name = "PEM")]
    intermediates: Vec<PathBuf>,
    /// CRL to embed in the SignedData's crls field (PEM or DER; repeatable), for devices with check-crl.
    #[arg(long = "crl", value_name = "FILE")]
    crls: Vec<PathBuf>,
    /// TR-069 only: strictly conformant Annex E package (SHA-1 file hashes, SHA-1/RSA signatures) for legacy peers.
    #[arg(long)]
    legacy_sha1: bool,
    /// TR-069 only, with --legacy-sha1: each key signs twice, SHA-1/RSA and SHA-256, in one SignedData.
    #[arg(long, requires = "legacy_sha1")]
    also_sha256: bool,
    /// Reference values for measured boot (`pcr.N=`, `pcr.N.<bootname>=`, `component.*=` lines, with or without a `[meta.measured-boot]` header): signed into the package as that section.
    #[arg(long, value_name = "FILE")]
    reference_values: Option<PathBuf>,
    /// mksquashfs compressor (gzip, xz, zstd, lz4; default gzip).
    #[arg(long, value_name = "NAME")]
    compression: Option<String>,
    /// mksquashfs block size (`-b`: 4K..1M, default 128K). `64K` makes adaptive updates fetch less around each changed block (RAUC's advice).
    #[arg(long, value_name = "SIZE")]
    block_size: Option<String>,
    /// Content directory: manifest.raucm and the files it names.
    content_dir: PathBuf,
    /// Output file.
    output: PathBuf,
}

pub(super) fn run(a: Args) -> ExitCode {
    match build(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("henb-update bundle: {e:#}");
            ExitCode::from(super::EXIT_REJECTED)
        }
    }
}

fn load_certs(path: &PathBuf) -> anyhow::Result<Vec<x509_cert::Certificate>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = x509_cert::Certificate::load_pem_chain(&text)
        .with_context(|| format!("{}: PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate", path.display());
    }
    Ok(certs)
}

/// The format the manifest asks for (`[bundle] format`), verity when it names none.
fn manifest_format(dir: &std::path::Path) -> anyhow::Result<PackageFormat> {
    let p = dir.join("manifest.raucm");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let kf = crate::config::keyfile::KeyFile::parse(&text).with_context(|| format!("{}", p.display()))?;
    Ok(match kf.get("bundle", "format") {
        Some("plain") => PackageFormat::Plain,
        _ => PackageFormat::Verity,
    })
}

/// Read and check a reference-values file; its entries become `[meta.measured-boot]`.
fn reference_values(p: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    use crate::config::keyfile::KeyFile;
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let text = if text.trim_start().starts_with('[') { text } else { format!("[meta.measured-boot]\n{text}") };
    let kf = KeyFile::parse(&text).with_context(|| format!("{}", p.display()))?;
    if let Some(g) = kf.groups.iter().find(|g| g.name != "meta.measured-boot") {
        bail!("{}: only [meta.measured-boot] belongs in a reference-values file, not [{}]", p.display(), g.name);
    }
    let entries: Vec<(String, String)> = kf
        .group("meta.measured-boot")
        .map(|g| g.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect())
        .unwrap_or_default();
    crate::measured_boot::reference::ReferenceValues::from_meta(&entries.iter().cloned().collect())
        .with_context(|| format!("{}", p.display()))?;
    Ok(entries)
}

fn build(a: Args) -> anyhow::Result<()> {
    if a.certs.len() != a.keys.len() {
        bail!("give one --key per --cert ({} certificates, {} keys)", a.certs.len(), a.keys.len());
    }
    let format = match a.format {
        Some(f) => f,
        None => manifest_format(&a.content_dir)?,
    };
    if a.legacy_sha1 && format != PackageFormat::Tr069 {
        bail!("--legacy-sha1 applies to --format tr069 only");
    }
    let mut signers = Vec::new();
    for (c, k) in a.certs.iter().zip(&a.keys) {
        let s = SigningKey::load(c, k)?;
        if a.legacy_sha1 {
            if a.also_sha256 {
                signers.push(SigningKey::load(c, k)?);
            }
            signers.push(s.with_legacy_sha1()?);
        } else {
            signers.push(s);
        }
    }
    let extra_meta = match &a.reference_values {
        Some(p) => vec![("measured-boot".to_string(), reference_values(p)?)],
        None => Vec::new(),
    };
    let mut intermediates = Vec::new();
    for p in &a.intermediates {
        intermediates.extend(load_certs(p)?);
    }
    let mut crls = Vec::new();
    for p in &a.crls {
        use der::Decode;
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        for der in crate::trust::crls_from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))? {
            crls.push(x509_cert::crl::CertificateList::from_der(&der).with_context(|| format!("{}", p.display()))?);
        }
    }
    match format {
        PackageFormat::Tr069 => build_package(&Tr069Options {
            content_dir: a.content_dir,
            output: a.output,
            signers,
            intermediates,
            crls,
            legacy_sha1: a.legacy_sha1,
            extra_meta,
        }),
        f => build_bundle(&BundleOptions {
            format: if f == PackageFormat::Plain { BundleFormat::Plain } else { BundleFormat::Verity },
            content_dir: a.content_dir,
            output: a.output,
            signers,
            intermediates,
            crls,
            compression: a.compression,
            extra_meta,
            block_size: a.block_size,
        }),
    }
}
