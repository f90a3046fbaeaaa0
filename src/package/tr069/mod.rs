//! TR-069 Annex E signed packages, with this product's HeNB profile.
//!
//! Layout: `[24-octet header][command list][one DER SignedData][payload files]`, all
//! numbers big-endian u32. The SignedData is detached and signs `header || command list`;
//! payload files are bound by the per-file hashes inside the signed commands.
//! [`parse`] is the format (every command type); [`verify`] applies the profile: images
//! are Extract File commands for `/slot/<class>`, anything an A/B installer cannot do
//! (Add, Remove, Move, other paths) refuses the whole package before anything is written.
//! See docs/formats.md.

mod build;

pub use build::{build_package, Tr069Options};

use super::manifest::{Manifest, ManifestError};
use super::{check_compatible, stream_image, Constraints, Context, Format, Image, Package, PackageError, Sink};
use crate::digest::DigestAlg;
use crate::fault::{CwmpFault, Fault};
use crate::source::{Source, Window};
use crate::verify::{check_signers, SignedCms, VerifyError};
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;

/// The preamble, `2WIRE_SP`.
pub const MAGIC: &[u8; 8] = b"2WIRE_SP";
/// Header size.
pub const HEADER_LEN: usize = 24;
/// Largest signature block accepted (the annex lets readers assume header, commands and
/// signatures fit in 150 KB).
pub const MAX_SIGNATURE: usize = 128 * 1024;

/// Vendor command: compatible string (UTF-8), required.
pub const CMD_COMPATIBLE: u32 = 1000;
/// Vendor command: reference values (UTF-8 key-file text of `[meta.measured-boot]`).
pub const CMD_REFERENCE_VALUES: u32 = 1001;
/// Vendor command: anti-rollback security version (u32).
pub const CMD_SECURITY_VERSION: u32 = 1002;
/// Vendor command: other `[meta.<label>]` sections (UTF-8 key-file text).
pub const CMD_META: u32 = 1003;
/// Hash type SHA-1 (the annex's only defined value).
pub const HASH_SHA1: u32 = 1;
/// Hash type SHA-256 (this profile's default).
pub const HASH_SHA256: u32 = 3;

/// A TR-069 format or profile violation.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Tr069Error {
    /// The header is invalid.
    #[error("TR-069 header: {0}")]
    Header(String),
    /// A command is malformed.
    #[error("TR-069 command {index} (type {ty}): {what}")]
    Command {
        /// 0-based position in the list.
        index: usize,
        /// Command type.
        ty: u32,
        /// What is wrong.
        what: String,
    },
    /// The command list's framing is broken.
    #[error("TR-069 command list: {0}")]
    CommandList(String),
    /// The signature block's framing is broken.
    #[error("TR-069 signature block: {0}")]
    SignatureBlock(String),
    /// The file's length does not match its header.
    #[error("TR-069 package is {actual} bytes, its header says {expected}")]
    Length {
        /// Bytes in the file.
        actual: u64,
        /// 24 + C + S + P.
        expected: u64,
    },
    /// A command an A/B image installer cannot carry out.
    #[error("TR-069 command {index} ({name}) cannot be applied by an A/B image installer: the package is refused")]
    Unsupported {
        /// 0-based position.
        index: usize,
        /// Command name.
        name: String,
    },
    /// A file hash is SHA-1 and the legacy switch is off.
    #[error("TR-069 file '{path}' is bound by a SHA-1 hash; SHA-1 permits chosen-prefix collisions and is refused unless the operator enables [package] tr069-legacy-sha1")]
    Sha1Refused {
        /// Path of the file.
        path: String,
    },
    /// Profile violation (role, paths, payload layout, vendor commands).
    #[error("TR-069 profile: {0}")]
    Profile(String),
}

impl Fault for Tr069Error {
    fn kind(&self) -> &'static str {
        match self {
            Self::Unsupported { .. } => "unsupported-command",
            Self::Sha1Refused { .. } => "sha1-refused",
            Self::Length { .. } => "length",
            _ => "malformed",
        }
    }
    fn fault(&self) -> CwmpFault {
        match self {
            Self::Sha1Refused { .. } => CwmpFault::FileAuthenticationFailure,
            Self::Length { actual, expected } if actual < expected => CwmpFault::UnableToCompleteDownload,
            _ => CwmpFault::FileCorrupted,
        }
    }
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Major version (1).
    pub major: u32,
    /// Minor version (0; others accepted).
    pub minor: u32,
    /// Command list length.
    pub command_len: u32,
    /// Payload length.
    pub payload_len: u32,
}

/// An Extract or Add File command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCommand {
    /// Flags (bit 0: unsafe).
    pub flags: u32,
    /// Target path.
    pub path: String,
    /// Hash type (1 SHA-1, 3 SHA-256 in this profile).
    pub hash_type: u32,
    /// Hash bytes.
    pub hash: Vec<u8>,
    /// Offset from the start of the payload.
    pub offset: u32,
    /// Length.
    pub len: u32,
}

/// One command of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// 0.
    End,
    /// 1 (false) / 2 (true: versioned).
    Extract(FileCommand, bool),
    /// 3 / 4.
    Add(FileCommand, bool),
    /// 5 / 6 (flags, path; versioned flag).
    Remove(u32, String, bool),
    /// 7.
    RemoveSubTree(u32, String),
    /// 8 / 9 (flags, source, destination, versioned).
    Move(u32, String, String, bool),
    /// 10.
    Version(String),
    /// 11.
    Description(String),
    /// 12-15 (type, seconds).
    Timeout(u32, u32),
    /// 16.
    Reboot,
    /// 17.
    FormatFileSystem,
    /// 18.
    MinVersion(Vec<u32>),
    /// 19.
    MaxVersion(Vec<u32>),
    /// 20.
    Role(u32),
    /// 21.
    MinNonVolatile(u32),
    /// 22.
    MinVolatile(u32),
    /// 25 (defining entity, class, values).
    RequiredAttributes(u32, u32, Vec<u32>),
    /// 1000-9999 and any unknown type, kept as raw value.
    Other(u32, Vec<u8>),
}

impl Command {
    fn name(&self) -> String {
        match self {
            Self::Extract(f, v) => format!("Extract{} File {}", if *v { " Versioned" } else { "" }, f.path),
            Self::Add(f, v) => format!("Add{} File {}", if *v { " Versioned" } else { "" }, f.path),
            Self::Remove(_, p, v) => {
                format!("Remove{} File {p}", if *v { " Versioned" } else { "" })
            }
            Self::RemoveSubTree(_, p) => format!("Remove Sub-Tree {p}"),
            Self::Move(_, s, d, _) => format!("Move File {s} -> {d}"),
            other => format!("{other:?}"),
        }
    }
}

/// A structurally valid package (not yet authenticated).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The header.
    pub header: Header,
    /// `header || command list`: what the signatures cover.
    pub signed: Vec<u8>,
    /// The SignedData DER.
    pub signature: Vec<u8>,
    /// Offset of the payload in the file.
    pub payload_start: u64,
}

/// Parse the header and locate the signature and payload; checks the total length.
pub fn parse(src: &dyn Source) -> Result<Parsed, PackageError> {
    let len = src.len();
    let mut h = [0u8; HEADER_LEN];
    if len < HEADER_LEN as u64 {
        return Err(PackageError::Truncated(format!("{len} bytes, shorter than the TR-069 header")));
    }
    src.read_exact_at(&mut h, 0).map_err(PackageError::Io)?;
    if &h[..8] != MAGIC {
        return Err(Tr069Error::Header("preamble is not 2WIRE_SP".into()).into());
    }
    let be = |o: usize| u32::from_be_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    let header = Header { major: be(8), minor: be(12), command_len: be(16), payload_len: be(20) };
    if header.major != 1 {
        return Err(Tr069Error::Header(format!("major version {} (only 1 is defined)", header.major)).into());
    }
    if header.command_len >= 65536 {
        return Err(
            Tr069Error::Header(format!("command list length {} must be below 65536", header.command_len)).into()
        );
    }
    let sig_start = HEADER_LEN as u64 + header.command_len as u64;
    // The signature's own DER length gives its size.
    let mut tl = [0u8; 6];
    let got = src.read_at(&mut tl, sig_start).map_err(PackageError::Io)?;
    let sig_len = der_total_len(&tl[..got]).map_err(|w| PackageError::from(Tr069Error::SignatureBlock(w)))?;
    if sig_len > MAX_SIGNATURE as u64 {
        return Err(Tr069Error::SignatureBlock(format!("{sig_len} bytes exceeds the limit of {MAX_SIGNATURE}")).into());
    }
    let expected = sig_start + sig_len + header.payload_len as u64;
    if len != expected {
        return Err(Tr069Error::Length { actual: len, expected }.into());
    }
    let mut signed = vec![0u8; sig_start as usize];
    src.read_exact_at(&mut signed, 0).map_err(PackageError::Io)?;
    let mut signature = vec![0u8; sig_len as usize];
    src.read_exact_at(&mut signature, sig_start).map_err(PackageError::Io)?;
    Ok(Parsed { header, signed, signature, payload_start: sig_start + sig_len })
}

/// Total length of the DER element starting with `b` (tag, definite length, content).
fn der_total_len(b: &[u8]) -> Result<u64, String> {
    match b {
        [] | [_] => Err("missing".into()),
        [0x30, l, ..] if *l < 0x80 => Ok(2 + *l as u64),
        [0x30, 0x80, ..] => Err("indefinite length (BER) is not DER".into()),
        [0x30, l, rest @ ..] => {
            let n = (*l & 0x7f) as usize;
            if n > 4 || rest.len() < n {
                return Err("length field too long".into());
            }
            let v = rest[..n].iter().fold(0u64, |a, x| a << 8 | *x as u64);
            Ok(2 + n as u64 + v)
        }
        _ => Err("does not start with a DER SEQUENCE".into()),
    }
}

/// Parse the command list (every type of the annex; unknown types kept raw).
pub fn parse_commands(list: &[u8]) -> Result<Vec<Command>, Tr069Error> {
    let mut cmds = Vec::new();
    let mut rest = list;
    let mut index = 0;
    while !rest.is_empty() {
        if rest.len() < 8 {
            return Err(Tr069Error::CommandList(format!("{} stray bytes at the end", rest.len())));
        }
        let ty = u32::from_be_bytes(rest[0..4].try_into().expect("4"));
        let len = u32::from_be_bytes(rest[4..8].try_into().expect("4")) as usize;
        if len > rest.len() - 8 {
            return Err(Tr069Error::CommandList(format!(
                "command {index} (type {ty}) claims {len} bytes, {} remain",
                rest.len() - 8
            )));
        }
        let value = &rest[8..8 + len];
        rest = &rest[8 + len..];
        let err = |what: String| Tr069Error::Command { index, ty, what };
        let cmd = parse_command(ty, value).map_err(err)?;
        let end = cmd == Command::End;
        cmds.push(cmd);
        index += 1;
        if end {
            if !rest.is_empty() {
                return Err(Tr069Error::CommandList(format!("{} bytes after End", rest.len())));
            }
            break;
        }
    }
    if let Some(pos) = cmds.iter().position(|c| *c == Command::Reboot) {
        if cmds[pos + 1..].iter().any(|c| *c != Command::End) {
            return Err(Tr069Error::CommandList("Reboot must be the last command before End".into()));
        }
    }
    Ok(cmds)
}

fn u32_value(v: &[u8]) -> Result<u32, String> {
    v.try_into().map(u32::from_be_bytes).map_err(|_| format!("value of {} bytes, 4 expected", v.len()))
}

fn u32_array(v: &[u8]) -> Result<Vec<u32>, String> {
    if v.is_empty() || !v.len().is_multiple_of(4) {
        return Err(format!("value of {} bytes is not a non-empty array of u32", v.len()));
    }
    Ok(v.chunks(4).map(|c| u32::from_be_bytes(c.try_into().expect("4"))).collect())
}

fn utf8(v: &[u8]) -> Result<String, String> {
    String::from_utf8(v.to_vec()).map_err(|_| "not UTF-8".to_string())
}

/// `(offset, length)` fields at `at` within `v`, returning the bytes they point to.
fn slice_field(v: &[u8], at: usize, what: &str) -> Result<Vec<u8>, String> {
    let off = u32_value(&v[at..at + 4])? as usize;
    let len = u32_value(&v[at + 4..at + 8])? as usize;
    v.get(off..off.checked_add(len).ok_or("overflow")?)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("{what} (offset {off}, length {len}) lies outside the {}-byte value", v.len()))
}

fn path_field(v: &[u8], at: usize, what: &str) -> Result<String, String> {
    let p = utf8(&slice_field(v, at, what)?)?;
    if p.is_empty() || p.contains('\0') {
        return Err(format!("{what} is empty or contains NUL"));
    }
    Ok(p)
}

fn parse_command(ty: u32, v: &[u8]) -> Result<Command, String> {
    let need = |n: usize| {
        if v.len() < n {
            Err(format!("value of {} bytes, at least {n} expected", v.len()))
        } else {
            Ok(())
        }
    };
    let empty = || {
        if v.is_empty() {
            Ok(())
        } else {
            Err(format!("value of {} bytes, none expected", v.len()))
        }
    };
    Ok(match ty {
        0 => {
            empty()?;
            Command::End
        }
        1..=4 => {
            need(32)?;
            let f = FileCommand {
                flags: u32_value(&v[0..4])?,
                path: path_field(v, 4, "path")?,
                hash_type: u32_value(&v[12..16])?,
                hash: slice_field(v, 16, "hash")?,
                offset: u32_value(&v[24..28])?,
                len: u32_value(&v[28..32])?,
            };
            if ty <= 2 {
                Command::Extract(f, ty == 2)
            } else {
                Command::Add(f, ty == 4)
            }
        }
        5..=7 => {
            need(12)?;
            let flags = u32_value(&v[0..4])?;
            let p = path_field(v, 4, "path")?;
            match ty {
                7 => Command::RemoveSubTree(flags, p),
                _ => Command::Remove(flags, p, ty == 6),
            }
        }
        8 | 9 => {
            need(20)?;
            Command::Move(
                u32_value(&v[0..4])?,
                path_field(v, 4, "source path")?,
                path_field(v, 12, "destination path")?,
                ty == 9,
            )
        }
        10 => Command::Version(utf8(v)?),
        11 => Command::Description(utf8(v)?),
        12..=15 => Command::Timeout(ty, u32_value(v)?),
        16 => {
            empty()?;
            Command::Reboot
        }
        17 => {
            empty()?;
            Command::FormatFileSystem
        }
        18 => Command::MinVersion(u32_array(v)?),
        19 => Command::MaxVersion(u32_array(v)?),
        20 => Command::Role(u32_value(v)?),
        21 => Command::MinNonVolatile(u32_value(v)?),
        22 => Command::MinVolatile(u32_value(v)?),
        25 => {
            need(8)?;
            let rest = &v[8..];
            if !rest.len().is_multiple_of(4) {
                return Err("attribute array is not a whole number of u32".into());
            }
            Command::RequiredAttributes(
                u32_value(&v[0..4])?,
                u32_value(&v[4..8])?,
                rest.chunks(4).map(|c| u32::from_be_bytes(c.try_into().expect("4"))).collect(),
            )
        }
        other => Command::Other(other, v.to_vec()),
    })
}

/// The profile's reading of a command list.
struct Profile {
    compatible: String,
    version: Option<String>,
    description: Option<String>,
    security_version: Option<u32>,
    meta: BTreeMap<String, BTreeMap<String, String>>,
    images: Vec<Image>,
    constraints: Constraints,
}

fn apply_profile(cmds: &[Command], payload_len: u64, allow_sha1: bool) -> Result<Profile, PackageError> {
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

fn offset_of(cmds: &[Command], path: &str) -> u64 {
    cmds.iter()
        .find_map(|c| match c {
            Command::Extract(f, false) if f.path == path => Some(f.offset as u64),
            _ => None,
        })
        .unwrap_or(0)
}

pub(super) fn verify(src: Arc<dyn Source>, ctx: &Context<'_>, sink: &mut dyn Sink) -> Result<Package, PackageError> {
    let parsed = parse(&*src)?;
    let cms = SignedCms::parse(&parsed.signature)?;
    if cms.is_attached() {
        return Err(VerifyError::Malformed("the TR-069 signature must be detached (it carries content)".into()).into());
    }
    let pending = check_signers(&cms, ctx.anchors, &ctx.policy, ctx.now)?;
    let digests: Vec<_> = pending.needed_digests().into_iter().map(|a| (a, a.digest(&parsed.signed))).collect();
    let signers = pending.finish(&digests)?;
    let cmds = parse_commands(&parsed.signed[HEADER_LEN..])?;
    let p = apply_profile(&cmds, parsed.header.payload_len as u64, ctx.policy.allow_sha1)?;
    check_compatible(ctx, &p.compatible)?;
    let mut pkg = Package {
        format: Format::Tr069,
        compatible: p.compatible,
        version: p.version,
        description: p.description,
        build: None,
        security_version: p.security_version,
        images: p.images,
        meta: p.meta,
        signers,
        constraints: p.constraints,
    };
    if ctx.verify_before_writing {
        for image in &pkg.images {
            let off = parsed.payload_start + offset_of(&cmds, &image.filename);
            let got = crate::package::digest_range(&*src, off, image.size, image.digest_algorithm)?;
            if got != image.digest {
                return Err(PackageError::Image {
                    name: image.filename.clone(),
                    what: format!("{} differs from the signed digest", image.digest_algorithm),
                });
            }
        }
    }
    sink.start(&pkg)?;
    for image in &mut pkg.images {
        let off = offset_of(&cmds, &image.filename);
        let r = Window::new(src.clone(), parsed.payload_start + off, image.size);
        image.sha256 = stream_image(image, move || Ok(Box::new(r) as Box<dyn std::io::Read>), sink)?;
    }
    Ok(pkg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(ty: u32, v: &[u8]) -> Vec<u8> {
        let mut o = ty.to_be_bytes().to_vec();
        o.extend((v.len() as u32).to_be_bytes());
        o.extend(v);
        o
    }

    fn file_value(path: &str, hash_type: u32, hash: &[u8], off: u32, len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [0, 32, path.len() as u32, hash_type, 32 + path.len() as u32, hash.len() as u32, off, len] {
            v.extend(x.to_be_bytes());
        }
        v.extend(path.as_bytes());
        v.extend(hash);
        v
    }

    #[test]
    fn parses_every_command_type() {
        let mut l = Vec::new();
        l.extend(tlv(1, &file_value("/slot/rootfs", 3, &[7; 32], 0, 10)));
        l.extend(tlv(4, &file_value("/etc/x", 1, &[7; 20], 10, 1)));
        let mut rm = Vec::new();
        for x in [0u32, 12, 2] {
            rm.extend(x.to_be_bytes());
        }
        rm.extend(b"/a");
        l.extend(tlv(7, &rm));
        let mut mv = Vec::new();
        for x in [0u32, 20, 2, 22, 2] {
            mv.extend(x.to_be_bytes());
        }
        mv.extend(b"/a/b");
        l.extend(tlv(8, &mv));
        l.extend(tlv(10, b"1.2"));
        l.extend(tlv(13, &5u32.to_be_bytes()));
        l.extend(tlv(18, &[0, 0, 0, 1, 0, 0, 0, 2]));
        l.extend(tlv(25, &[0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1]));
        l.extend(tlv(4242, b"vendor"));
        l.extend(tlv(16, &[]));
        l.extend(tlv(0, &[]));
        let c = parse_commands(&l).unwrap();
        assert_eq!(c.len(), 11);
        assert!(matches!(&c[0], Command::Extract(f, false) if f.path == "/slot/rootfs" && f.len == 10));
        assert!(matches!(&c[2], Command::RemoveSubTree(0, p) if p == "/a"));
        assert!(matches!(&c[3], Command::Move(0, s, d, false) if s == "/a" && d == "/b"));
        assert_eq!(c[6], Command::MinVersion(vec![1, 2]));
        assert_eq!(c[8], Command::Other(4242, b"vendor".to_vec()));
    }

    #[test]
    fn rejects_broken_framing() {
        assert!(parse_commands(&tlv(10, b"xy")[..9]).is_err());
        let mut l = tlv(0, &[]);
        l.extend(tlv(10, b"x"));
        assert!(parse_commands(&l).is_err());
        let mut l = tlv(16, &[]);
        l.extend(tlv(10, b"x"));
        assert!(parse_commands(&l).is_err());
        assert!(parse_commands(&tlv(1, &file_value("/slot/a", 3, &[0; 32], 0, 1)[..31])).is_err());
        let mut bad = file_value("/slot/a", 3, &[0; 32], 0, 1);
        bad[7] = 200; // path offset outside the value
        assert!(parse_commands(&tlv(1, &bad)).is_err());
        assert!(parse_commands(&tlv(20, &[0, 1])).is_err());
    }

    #[test]
    fn profile_refuses_what_it_cannot_apply() {
        let ok = |more: Vec<Command>| {
            let mut c = vec![
                Command::Other(CMD_COMPATIBLE, b"c".to_vec()),
                Command::Extract(
                    FileCommand {
                        flags: 0,
                        path: "/slot/rootfs".into(),
                        hash_type: 3,
                        hash: vec![0; 32],
                        offset: 0,
                        len: 10,
                    },
                    false,
                ),
            ];
            c.extend(more);
            apply_profile(&c, 10, false)
        };
        assert!(ok(vec![]).is_ok());
        assert!(matches!(
            ok(vec![Command::Remove(0, "/x".into(), false)]),
            Err(PackageError::Tr069(Tr069Error::Unsupported { .. }))
        ));
        assert!(matches!(ok(vec![Command::Role(3)]), Err(PackageError::Tr069(Tr069Error::Profile(_)))));
        let sha1 = Command::Extract(
            FileCommand { flags: 0, path: "/slot/b".into(), hash_type: 1, hash: vec![0; 20], offset: 0, len: 1 },
            false,
        );
        assert!(matches!(ok(vec![sha1]), Err(PackageError::Tr069(Tr069Error::Sha1Refused { .. }))));
        let outside = Command::Extract(
            FileCommand { flags: 0, path: "/slot/b".into(), hash_type: 3, hash: vec![0; 32], offset: 5, len: 6 },
            false,
        );
        assert!(ok(vec![outside]).is_err());
    }
}
