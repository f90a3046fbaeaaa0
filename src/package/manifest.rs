//! RAUC manifests (`manifest.raucm`): every key RAUC 1.8 knows, `[meta.*]` kept.
//!
//! Like RAUC, an unknown group or an unknown key in a known group is an error: the
//! manifest is signed, and a key this agent would silently ignore could be one the
//! operator meant to take effect. Free-form data goes into `[meta.<label>]`.

use crate::config::keyfile::{self, KeyFile, SyntaxError};
use std::collections::BTreeMap;
use thiserror::Error;

/// The manifest group that carries the anti-rollback security version
/// (`[meta.anti-rollback] security-version=N`): RAUC rejects unknown keys in `[update]`.
pub const ANTI_ROLLBACK_GROUP: &str = "meta.anti-rollback";

/// Why a manifest was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not valid key-file syntax.
    #[error("manifest: {0}")]
    Syntax(#[from] SyntaxError),
    /// Not UTF-8.
    #[error("manifest is not UTF-8 text")]
    NotUtf8,
    /// A group RAUC does not define.
    #[error("manifest line {line}: unknown group [{group}]")]
    UnknownGroup {
        /// Group name.
        group: String,
        /// Line.
        line: usize,
    },
    /// A key RAUC does not define in this group.
    #[error("manifest line {line}: unknown key '{key}' in [{group}]")]
    UnknownKey {
        /// Group name.
        group: String,
        /// Key.
        key: String,
        /// Line.
        line: usize,
    },
    /// A required key is missing.
    #[error("manifest: [{group}] lacks required key '{key}'")]
    Missing {
        /// Group name.
        group: String,
        /// Key.
        key: &'static str,
    },
    /// A key's value is not valid.
    #[error("manifest: [{group}] {key}={value:?} is invalid: {why}")]
    BadValue {
        /// Group name.
        group: String,
        /// Key.
        key: String,
        /// Value as written.
        value: String,
        /// Why it is invalid.
        why: &'static str,
    },
}

impl crate::fault::Fault for ManifestError {
    fn kind(&self) -> &'static str {
        "manifest"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::FileCorrupted
    }
}

/// Bundle format named in `[bundle] format=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleFormat {
    /// Detached CMS over the whole squashfs.
    Plain,
    /// Attached CMS over the manifest; squashfs protected by a dm-verity hash tree.
    Verity,
    /// Verity over an encrypted squashfs (recognized, not supported).
    Crypt,
}

impl BundleFormat {
    /// Name as written in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Verity => "verity",
            Self::Crypt => "crypt",
        }
    }
}

/// The verity parameters of a verity bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    /// Root hash of the tree.
    pub root: [u8; 32],
    /// Salt prepended to every hashed block.
    pub salt: Vec<u8>,
    /// Size of the hash tree in bytes.
    pub size: u64,
}

/// One `[image.<slot-class>[.<variant>]]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Slot class the image is for.
    pub slot_class: String,
    /// Variant, if the section name has one.
    pub variant: Option<String>,
    /// File name inside the bundle; empty for an image whose slot is written by its
    /// `install` hook alone (RAUC allows no `filename` there, and only there).
    pub filename: String,
    /// SHA-256 of the image (filled in by the bundler).
    pub sha256: Option<[u8; 32]>,
    /// Size of the image in bytes (filled in by the bundler).
    pub size: Option<u64>,
    /// Slot hooks for this image (`hooks=`).
    pub hooks: SlotHooks,
    /// Adaptive update methods.
    pub adaptive: Vec<String>,
}

/// The slot hooks of one image (RAUC's `[image.*] hooks=`; the executable is
/// `[hooks] filename`, called with `slot-pre-install`, `slot-install` or
/// `slot-post-install`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SlotHooks {
    /// `pre-install`: runs before the slot is written.
    pub pre_install: bool,
    /// `install`: writes the slot instead of the installer.
    pub install: bool,
    /// `post-install`: runs after the slot was written and verified.
    pub post_install: bool,
}

impl SlotHooks {
    /// Whether any slot hook is set.
    pub fn any(&self) -> bool {
        self.pre_install || self.install || self.post_install
    }

    /// The names, as a manifest lists them.
    pub fn names(&self) -> Vec<&'static str> {
        [(self.pre_install, "pre-install"), (self.install, "install"), (self.post_install, "post-install")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect()
    }
}

/// `[hooks]`: RAUC's one hook executable of a bundle and the install hooks it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BundleHooks {
    /// `filename`: the executable in the bundle, called with the hook's name.
    pub filename: Option<String>,
    /// `hooks=install-check`: the executable decides whether the bundle fits this device,
    /// instead of the compatible check (exit 10 or more: refused).
    pub install_check: bool,
}

/// `[handler]`: a full custom installer in the bundle (RAUC's "full custom update").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Handler {
    /// `filename`: the executable in the bundle.
    pub filename: String,
    /// `args`: its arguments, as written.
    pub args: Option<String>,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `[update] compatible`.
    pub compatible: String,
    /// `[update] version`.
    pub version: Option<String>,
    /// `[update] description`.
    pub description: Option<String>,
    /// `[update] build`.
    pub build: Option<String>,
    /// `[bundle] format`.
    pub format: BundleFormat,
    /// Verity parameters (present only in the signed manifest of a verity bundle).
    pub verity: Option<VerityParams>,
    /// `[hooks]`: the hook executable and the install hooks.
    pub hooks: BundleHooks,
    /// `[handler] filename` and `args`: a full custom installer, if any.
    pub handler: Option<Handler>,
    /// Images in file order.
    pub images: Vec<ImageEntry>,
    /// `[meta.<label>]` sections by label.
    pub meta: BTreeMap<String, BTreeMap<String, String>>,
}

const UPDATE_KEYS: &[&str] = &["compatible", "version", "description", "build"];
const BUNDLE_KEYS: &[&str] = &["format", "verity-hash", "verity-salt", "verity-size", "crypt-key"];
const HOOKS_KEYS: &[&str] = &["filename", "hooks"];
const HANDLER_KEYS: &[&str] = &["filename", "args"];
const IMAGE_KEYS: &[&str] = &["filename", "sha256", "size", "hooks", "adaptive"];

/// Largest manifest accepted (RAUC's are a few hundred bytes).
pub const MAX_MANIFEST: usize = 256 * 1024;

impl Manifest {
    /// Parse manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
        Self::from_keyfile(&KeyFile::parse(text)?)
    }

    /// Interpret an already parsed key file.
    pub fn from_keyfile(kf: &KeyFile) -> Result<Self, ManifestError> {
        for g in &kf.groups {
            let allowed: Option<&[&str]> = match g.name.as_str() {
                "update" => Some(UPDATE_KEYS),
                "bundle" => Some(BUNDLE_KEYS),
                "hooks" => Some(HOOKS_KEYS),
                "handler" => Some(HANDLER_KEYS),
                n if image_name(n).is_some() => Some(IMAGE_KEYS),
                n if n.strip_prefix("meta.").is_some_and(|l| !l.is_empty()) => None,
                _ => return Err(ManifestError::UnknownGroup { group: g.name.clone(), line: g.line }),
            };
            if let Some(allowed) = allowed {
                if let Some(e) = g.entries.iter().find(|e| !allowed.contains(&e.key.as_str())) {
                    return Err(ManifestError::UnknownKey { group: g.name.clone(), key: e.key.clone(), line: e.line });
                }
            }
        }
        let opt = |g: &str, k: &str| kf.get(g, k).map(str::to_string);
        let compatible = opt("update", "compatible")
            .filter(|c| !c.is_empty())
            .ok_or(ManifestError::Missing { group: "update".into(), key: "compatible" })?;
        let format = match kf.get("bundle", "format") {
            None | Some("plain") => BundleFormat::Plain,
            Some("verity") => BundleFormat::Verity,
            Some("crypt") => BundleFormat::Crypt,
            Some(v) => return Err(bad("bundle", "format", v, "not plain, verity or crypt")),
        };
        let verity =
            match (kf.get("bundle", "verity-hash"), kf.get("bundle", "verity-salt"), kf.get("bundle", "verity-size")) {
                (None, None, None) => None,
                (Some(h), Some(s), Some(z)) => Some(VerityParams {
                    root: hex32(h).ok_or_else(|| bad("bundle", "verity-hash", h, "not 64 hex digits"))?,
                    salt: hex::decode(s)
                        .ok()
                        .filter(|v| !v.is_empty() && v.len() <= 256)
                        .ok_or_else(|| bad("bundle", "verity-salt", s, "not 1..256 bytes of hex"))?,
                    size: z.parse().map_err(|_| bad("bundle", "verity-size", z, "not a byte count"))?,
                }),
                _ => {
                    return Err(bad(
                        "bundle",
                        "verity-hash",
                        "",
                        "verity-hash, verity-salt and verity-size go together",
                    ))
                }
            };
        let mut hooks =
            BundleHooks { filename: opt("hooks", "filename").filter(|f| !f.is_empty()), ..Default::default() };
        for h in keyfile::list(kf.get("hooks", "hooks").unwrap_or_default()) {
            match h.as_str() {
                "install-check" => hooks.install_check = true,
                _ => return Err(bad("hooks", "hooks", &h, "not an install hook (RAUC knows install-check)")),
            }
        }
        if let Some(f) = &hooks.filename {
            check_inside("hooks", f)?;
        } else if hooks.install_check {
            return Err(bad("hooks", "hooks", "install-check", "hooks used, but [hooks] names no filename"));
        }
        let handler = match opt("handler", "filename").filter(|f| !f.is_empty()) {
            Some(filename) => {
                check_inside("handler", &filename)?;
                Some(Handler { filename, args: opt("handler", "args") })
            }
            None => None,
        };
        let mut images = Vec::new();
        let mut meta = BTreeMap::new();
        for g in &kf.groups {
            if let Some((class, variant)) = image_name(&g.name) {
                let mut slot_hooks = SlotHooks::default();
                for h in keyfile::list(g.get("hooks").unwrap_or_default()) {
                    match h.as_str() {
                        "pre-install" => slot_hooks.pre_install = true,
                        "install" => slot_hooks.install = true,
                        "post-install" => slot_hooks.post_install = true,
                        _ => {
                            return Err(bad(
                                &g.name,
                                "hooks",
                                &h,
                                "not a slot hook (pre-install, install, post-install)",
                            ))
                        }
                    }
                }
                if slot_hooks.any() && hooks.filename.is_none() {
                    return Err(bad(&g.name, "hooks", "", "hooks used, but [hooks] names no filename"));
                }
                // Only an image its install hook writes may come without a file (RAUC).
                let filename = match g.get("filename").filter(|f| !f.is_empty()) {
                    Some(f) => f,
                    None if slot_hooks.install => "",
                    None => return Err(ManifestError::Missing { group: g.name.clone(), key: "filename" }),
                };
                if !filename.is_empty() {
                    check_inside(&g.name, filename)?;
                }
                let sha256 = match g.get("sha256") {
                    None => None,
                    Some(h) => Some(hex32(h).ok_or_else(|| bad(&g.name, "sha256", h, "not 64 hex digits"))?),
                };
                let size = match g.get("size") {
                    None => None,
                    Some(s) => Some(s.parse().map_err(|_| bad(&g.name, "size", s, "not a byte count"))?),
                };
                images.push(ImageEntry {
                    slot_class: class.to_string(),
                    variant: variant.map(str::to_string),
                    filename: filename.to_string(),
                    sha256,
                    size,
                    hooks: slot_hooks,
                    adaptive: keyfile::list(g.get("adaptive").unwrap_or_default()),
                });
            } else if let Some(label) = g.name.strip_prefix("meta.") {
                meta.insert(label.to_string(), g.entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect());
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for i in &images {
            if !seen.insert((i.slot_class.as_str(), i.variant.as_deref())) {
                return Err(bad(
                    &format!("image.{}", i.slot_class),
                    "filename",
                    &i.filename,
                    "two images for one slot class",
                ));
            }
        }
        Ok(Manifest {
            compatible,
            version: opt("update", "version"),
            description: opt("update", "description"),
            build: opt("update", "build"),
            format,
            verity,
            hooks,
            handler,
            images,
            meta,
        })
    }

    /// The anti-rollback security version (`[meta.anti-rollback] security-version`).
    pub fn security_version(&self) -> Result<Option<u32>, ManifestError> {
        let Some(v) = self.meta.get("anti-rollback").and_then(|m| m.get("security-version")) else {
            return Ok(None);
        };
        v.parse()
            .map(Some)
            .map_err(|_| bad(ANTI_ROLLBACK_GROUP, "security-version", v, "not a number from 0 to 4294967295"))
    }
}

/// A file name of the bundle: a relative path that stays inside it.
fn check_inside(group: &str, filename: &str) -> Result<(), ManifestError> {
    if filename.starts_with('/') || filename.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(bad(group, "filename", filename, "must be a relative path inside the bundle"));
    }
    Ok(())
}

fn bad(group: &str, key: &str, value: &str, why: &'static str) -> ManifestError {
    ManifestError::BadValue { group: group.to_string(), key: key.to_string(), value: value.to_string(), why }
}

/// `image.<class>` or `image.<class>.<variant>` → (class, variant).
fn image_name(group: &str) -> Option<(&str, Option<&str>)> {
    let rest = group.strip_prefix("image.")?;
    let (class, variant) = match rest.split_once('.') {
        Some((c, v)) => (c, Some(v)),
        None => (rest, None),
    };
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (ok(class) && variant.is_none_or(ok)).then_some((class, variant))
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAUC_18: &str = "[update]\ncompatible=test\nversion=1\n\n[bundle]\nformat=verity\n\
        verity-hash=ce71067be633bec95c49952844ca331a1cb3e8a8a88dc32c51417ea5de0bd810\n\
        verity-salt=8b1d0823ce1323932ffb51b3e2ec75d3d48f94136ffd7763c26ad041d4e8f28c\nverity-size=4096\n\n\
        [image.rootfs]\nsha256=b3693a40f93149e8757a2ab523ad525c61ec7a9e6d95ad3cb43f5e8ef0bfa3d0\nsize=100000\n\
        filename=rootfs.img\n\n[image.rootfs.var1]\nfilename=rootfs.img\n";

    #[test]
    fn hooks_and_handlers_as_rauc_reads_them() {
        let parse = |extra: &str| Manifest::parse(format!("[update]\ncompatible=c\n\n{extra}").as_bytes());
        let m = parse(
            "[hooks]\nfilename=bin/hook\nhooks=install-check\n\n[image.rootfs]\nfilename=r.img\n\
             hooks=pre-install;post-install;\n\n[image.boot]\nhooks=install\n",
        )
        .unwrap();
        assert_eq!(m.hooks, BundleHooks { filename: Some("bin/hook".into()), install_check: true });
        assert_eq!(m.images[0].hooks, SlotHooks { pre_install: true, install: false, post_install: true });
        assert_eq!((m.images[1].filename.as_str(), m.images[1].hooks.install), ("", true));
        let refused = [
            ("[hooks]\nfilename=h\nhooks=pre-install\n", "not an install hook"),
            ("[hooks]\nfilename=h\n\n[image.rootfs]\nfilename=r\nhooks=install-check\n", "not a slot hook"),
            ("[hooks]\nhooks=install-check\n", "names no filename"),
            ("[image.rootfs]\nfilename=r\nhooks=post-install\n", "names no filename"),
            ("[hooks]\nfilename=h\n\n[image.rootfs]\nhooks=post-install\n", "filename"),
            ("[hooks]\nfilename=../h\n", "inside the bundle"),
            ("[handler]\nfilename=/bin/sh\n", "inside the bundle"),
        ];
        for (text, why) in refused {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        let m = parse("[handler]\nfilename=install.sh\nargs=--all\n").unwrap();
        assert_eq!(m.handler, Some(Handler { filename: "install.sh".into(), args: Some("--all".into()) }));
    }

    #[test]
    fn reads_what_rauc_18_writes() {
        let m = Manifest::parse(RAUC_18.as_bytes()).unwrap();
        assert_eq!(m.compatible, "test");
        assert_eq!(m.format, BundleFormat::Verity);
        assert_eq!(m.verity.as_ref().unwrap().size, 4096);
        assert_eq!(m.images.len(), 2);
        assert_eq!(m.images[0].size, Some(100000));
        assert_eq!(m.images[1].variant.as_deref(), Some("var1"));
    }

    #[test]
    fn keeps_meta_and_security_version() {
        let m = Manifest::parse(b"[update]\ncompatible=c\n[meta.anti-rollback]\nsecurity-version=7\n[meta.x]\na=b\n")
            .unwrap();
        assert_eq!(m.security_version().unwrap(), Some(7));
        assert_eq!(m.meta["x"]["a"], "b");
        let m = Manifest::parse(b"[update]\ncompatible=c\n[meta.anti-rollback]\nsecurity-version=-1\n").unwrap();
        assert!(m.security_version().is_err());
    }

    #[test]
    fn refuses_what_rauc_refuses() {
        let e = |t: &str| Manifest::parse(t.as_bytes()).unwrap_err();
        assert!(matches!(e("[update]\ncompatible=c\nsecurity-version=1\n"), ManifestError::UnknownKey { .. }));
        assert!(matches!(e("[update]\ncompatible=c\n[foo]\n"), ManifestError::UnknownGroup { .. }));
        assert!(matches!(e("[update]\nversion=1\n"), ManifestError::Missing { .. }));
        assert!(matches!(e("[update]\ncompatible=c\n[image.a]\nfilename=../x\n"), ManifestError::BadValue { .. }));
        assert!(matches!(
            e("[update]\ncompatible=c\n[image.a]\nfilename=x\nsize=-3\n"),
            ManifestError::BadValue { .. }
        ));
        assert!(matches!(e("[update]\ncompatible=c\n[bundle]\nverity-hash=00\n"), ManifestError::BadValue { .. }));
        assert!(matches!(
            e("[update]\ncompatible=c\n[image.a]\nfilename=x\n[image.a.]\nfilename=y\n"),
            ManifestError::UnknownGroup { .. }
        ));
    }
}
