//! This product's HeNB profile of TR-069 signed packages: images are Extract File
//! commands for `/slot/<class>`; vendor commands carry the compatible, the reference
//! values, the security version and `[meta.*]`; anything an A/B installer cannot do
//! (Add, Remove, Move, other paths) refuses the whole package before anything is written.

use super::wire::{
    u32_value, utf8, Command, CMD_COMPATIBLE, CMD_META, CMD_REFERENCE_VALUES, CMD_SECURITY_VERSION, HASH_SHA1,
    HASH_SHA256,
};
use super::Tr069Error;
use crate::digest::DigestAlg;
use crate::package::manifest::{Manifest, ManifestError};
use crate::package::{Constraints, Image, PackageError};
use std::collections::BTreeMap;

/// The profile's reading of a command list.
pub(super) struct Profile {
    pub(super) compatible: String,
    pub(super) version: Option<String>,
    pub(super) description: Option<String>,
    pub(super) security_version: Option<u32>,
    pub(super) meta: BTreeMap<String, BTreeMap<String, String>>,
    pub(super) images: Vec<Image>,
    pub(super) constraints: Constraints,
}

pub(super) fn apply_profile(cmds: &[Command], payload_len: u64, allow_sha1: bool) -> Result<Profile, PackageError> {
    let prof = |w: String| PackageError::Tr069(Tr069Error::Profile(w));
    let mut compatible = None;
    let mut p = Profile {
        compatible: String::new(),
        version: None,
        description: None,
        security_version: None,
        meta: BTreeMap::new(),
        images: Vec::new(),
        constraints: Constraints::default(),
    };
    let once = |slot: bool, what: &str| {
        if slot {
            Err(prof(format!("more than one {what} command")))
        } else {
            Ok(())
        }
    };
    for (index, c) in cmds.iter().enumerate() {
        match c {
            Command::Extract(f, false) => {
                let class = f
                    .path
                    .strip_prefix("/slot/")
                    .filter(|c| !c.is_empty() && c.chars().all(|x| x.is_ascii_alphanumeric() || x == '-' || x == '_'))
                    .ok_or(Tr069Error::Unsupported { index, name: c.name() })?;
                let alg = match (f.hash_type, f.hash.len()) {
                    (HASH_SHA256, 32) => DigestAlg::Sha256,
                    (HASH_SHA1, 20) if allow_sha1 => DigestAlg::Sha1,
                    (HASH_SHA1, 20) => return Err(Tr069Error::Sha1Refused { path: f.path.clone() }.into()),
                    (t, l) => {
                        return Err(prof(format!(
                            "file '{}': hash type {t} with {l} bytes is not supported (3 = SHA-256 with 32 bytes)",
                            f.path
                        )))
                    }
                };
                if f.offset as u64 + f.len as u64 > payload_len {
                    return Err(prof(format!(
                        "file '{}' ({} bytes at {}) lies outside the {payload_len}-byte payload",
                        f.path, f.len, f.offset
                    )));
                }
                if p.images.iter().any(|i| i.slot_class == class) {
                    return Err(prof(format!("two images for slot class '{class}'")));
                }
                p.images.push(Image {
                    slot_class: class.to_string(),
                    variant: None,
                    filename: f.path.clone(),
                    size: f.len as u64,
                    digest_algorithm: alg,
                    digest: f.hash.clone(),
                    sha256: Vec::new(),
                    adaptive: Vec::new(),
                    hooks: Default::default(),
                });
            }
            Command::Extract(..)
            | Command::Add(..)
            | Command::Remove(..)
            | Command::RemoveSubTree(..)
            | Command::Move(..) => return Err(Tr069Error::Unsupported { index, name: c.name() }.into()),
            Command::Version(v) => {
                once(p.version.is_some(), "Version")?;
                p.version = Some(v.clone());
            }
            Command::Description(d) => {
                once(p.description.is_some(), "Description")?;
                p.description = Some(d.clone());
            }
            Command::Role(r) if *r != 1 => return Err(prof(format!("role {r:#x} is not 1 (software upgrade)"))),
            Command::MinVersion(v) => p.constraints.min_version = Some(v.clone()),
            Command::MaxVersion(v) => p.constraints.max_version = Some(v.clone()),
            Command::MinNonVolatile(n) => p.constraints.min_nonvolatile = Some(*n),
            Command::MinVolatile(n) => p.constraints.min_volatile = Some(*n),
            Command::Other(CMD_COMPATIBLE, v) => {
                once(compatible.is_some(), "Compatible")?;
                compatible = Some(utf8(v).map_err(|w| prof(format!("Compatible: {w}")))?);
            }
            Command::Other(CMD_SECURITY_VERSION, v) => {
                once(p.security_version.is_some(), "Security version")?;
                p.security_version = Some(u32_value(v).map_err(|w| prof(format!("Security version: {w}")))?);
            }
            Command::Other(ty @ (CMD_REFERENCE_VALUES | CMD_META), v) => {
                let text = utf8(v).map_err(|w| prof(format!("vendor command {ty}: {w}")))?;
                let text = if *ty == CMD_REFERENCE_VALUES && !text.trim_start().starts_with('[') {
                    format!("[meta.measured-boot]\n{text}")
                } else {
                    text
                };
                let m = Manifest::parse(format!("[update]\ncompatible=-\n{text}").as_bytes())?;
                for (label, kv) in m.meta {
                    if *ty == CMD_REFERENCE_VALUES && label != "measured-boot" {
                        return Err(prof(format!("reference values command holds [meta.{label}]")));
                    }
                    if p.meta.insert(label.clone(), kv).is_some() {
                        return Err(ManifestError::BadValue {
                            group: format!("meta.{label}"),
                            key: String::new(),
                            value: String::new(),
                            why: "section given twice",
                        }
                        .into());
                    }
                }
            }
            // Role 1, timeouts, Reboot, Format File System, Required Attributes (no class is
            // defined for this product: ignored as the annex says) and unknown types.
            _ => {}
        }
    }
    p.compatible = compatible.ok_or_else(|| prof("no Compatible (vendor command 1000)".into()))?;
    if p.images.is_empty() {
        return Err(prof("no Extract File command for a /slot/<class> image".into()));
    }
    let mut spans: Vec<(u64, u64)> = p.images.iter().map(|i| (offset_of(cmds, &i.filename), i.size)).collect();
    spans.sort();
    if spans.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return Err(prof("payload files overlap".into()));
    }
    if p.security_version.is_none() {
        if let Some(v) = p.meta.get("anti-rollback").and_then(|m| m.get("security-version")) {
            p.security_version = Some(v.parse().map_err(|_| prof(format!("security-version {v:?} is not a number")))?);
        }
    }
    Ok(p)
}

pub(super) fn offset_of(cmds: &[Command], path: &str) -> u64 {
    cmds.iter()
        .find_map(|c| match c {
            Command::Extract(f, false) if f.path == path => Some(f.offset as u64),
            _ => None,
        })
        .unwrap_or(0)
}
