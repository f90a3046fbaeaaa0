//! TR-069 Annex E signed packages, with this product's HeNB profile.
//!
//! Layout: `[24-octet header][command list][one DER SignedData][payload files]`, all
//! numbers big-endian u32. The SignedData is detached and signs `header || command list`;
//! payload files are bound by the per-file hashes inside the signed commands.
//! [`wire`] is the format (every command type); [`profile`] is what this product accepts
//! of it: images are Extract File commands for `/slot/<class>`, anything an A/B installer
//! cannot do (Add, Remove, Move, other paths) refuses the whole package before anything
//! is written.
//! See docs/formats.md.

mod build;
mod profile;
pub mod wire;

pub use build::{build_package, Tr069Options};
use profile::{apply_profile, offset_of};
pub use wire::*;

use super::{stream_image, Context, Format, Package, PackageError, Sink};
use crate::fault::{CwmpFault, Fault};
use crate::source::{Source, Window};
use crate::verify::{check_signers, SignedCms, VerifyError};
use std::sync::Arc;
use thiserror::Error;

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

/// What streaming an authenticated TR-069 package's files needs: where each one starts.
pub(super) struct Contents {
    src: Arc<dyn Source>,
    /// Absolute offset of each image's bytes, in the order of the package's images.
    offsets: Vec<u64>,
}

/// Authenticate a TR-069 signed package: header, signature over header and commands,
/// the commands and the HeNB profile; with `check_ahead` every file's digest.
pub(super) fn authenticate(src: Arc<dyn Source>, ctx: &Context<'_>) -> Result<(Package, Contents), PackageError> {
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
    let pkg = Package {
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
        hooks: None,
        handler: None,
    };
    let offsets: Vec<u64> = pkg.images.iter().map(|i| parsed.payload_start + offset_of(&cmds, &i.filename)).collect();
    let contents = Contents { src, offsets };
    if ctx.check_ahead {
        contents.check_ahead(&pkg)?;
    }
    Ok((pkg, contents))
}

impl Contents {
    /// Check every file's digest before one byte is written.
    fn check_ahead(&self, pkg: &Package) -> Result<(), PackageError> {
        for (image, off) in pkg.images.iter().zip(&self.offsets) {
            let got = crate::package::digest_range(&*self.src, *off, image.size, image.digest_algorithm)?;
            if got != image.digest {
                return Err(PackageError::Image {
                    name: image.filename.clone(),
                    what: format!("{} differs from the signed digest", image.digest_algorithm),
                });
            }
        }
        Ok(())
    }

    /// Stream the files of `pkg` (as [`authenticate`] returned it) into `sink`, each
    /// checked against its signed size and digest; their `sha256` is filled in.
    pub(super) fn stream(self, pkg: &mut Package, sink: &mut dyn Sink) -> Result<(), PackageError> {
        for (image, off) in pkg.images.iter_mut().zip(self.offsets) {
            let r = Window::new(self.src.clone(), off, image.size);
            image.sha256 = stream_image(image, move || Ok(Box::new(r) as Box<dyn std::io::Read>), sink)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::profile::*;
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
