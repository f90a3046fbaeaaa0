//! System configuration in RAUC's system.conf syntax: a RAUC user's file works for every
//! key this agent supports (`[system]`, `[keyring]`, `[slot.<class>.<n>]`, `[handlers]
//! bootloader-custom-backend`), plus our `[tpm]`, `[package]` and `[uboot]`. Values the
//! agent cannot honour are errors naming file, line and key; keys it does not know are
//! reported.

use crate::package::keyfile::{self, KeyFile};
use crate::verify::{Policy, Purpose};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Default location.
pub const DEFAULT_PATH: &str = "/etc/henb-update/system.conf";

/// A configuration error, naming file, line and key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Could not read the file.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Syntax or value error.
    #[error("{path}:{line}: {what}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Line (0 when unknown).
        line: usize,
        /// What is wrong.
        what: String,
    },
}

/// The parsed system.conf.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[system] compatible`.
    pub compatible: Option<String>,
    /// `[system] variant-name`, `variant-dtb` or `variant-file`: where the device's
    /// variant comes from (RAUC's keys; see [`Config::variant`]).
    pub variant: Option<VariantSource>,
    /// `[keyring] path`.
    pub keyring: Option<PathBuf>,
    /// `[keyring] crl-path` (files, `;`-separated) and `crl-directory` (every file in
    /// it): CRLs in PEM or DER, beyond those in the keyring file and the SignedData.
    pub crl_files: Vec<PathBuf>,
    /// `[keyring] crl-directory`.
    pub crl_directory: Option<PathBuf>,
    /// Signature policy from `[keyring]` and `[package]`.
    pub policy: Policy,
    /// `[tpm]`: how to reach the TPM, where the roots and the counter live.
    pub tpm: TpmSection,
    /// `[service] rauc-compatible`: also serve RAUC's D-Bus API.
    pub rauc_compatible: bool,
    /// `[measured-boot]`: present when the device seals secrets to measured boot.
    pub measured_boot: Option<MeasuredBootSection>,
    /// `[system] bootloader` (default noop).
    pub bootloader: BootloaderKind,
    /// `[system] grubenv` (default /boot/grub/grubenv).
    pub grubenv: PathBuf,
    /// `[uboot] env-config` (default /etc/fw_env.config, as fw_printenv).
    pub uboot_env_config: PathBuf,
    /// `[handlers] bootloader-custom-backend`.
    pub custom_backend: Option<PathBuf>,
    /// `[system] data-directory` (status; default /var/lib/henb-update).
    pub data_directory: PathBuf,
    /// `[system] boot-attempts` (default 3).
    pub boot_attempts: u32,
    /// `[system] boot-attempts-primary` (default 3).
    pub boot_attempts_primary: u32,
    /// `[system] bundle-formats`: formats accepted (default plain and verity).
    pub bundle_formats: Vec<String>,
    /// `[system] min-bundle-version`.
    pub min_bundle_version: Option<String>,
    /// `[slot.<class>.<n>]` sections, in file order.
    pub slots: Vec<SlotConf>,
    /// `[install] verify-written`: read each written image back from the slot (off by default).
    pub verify_written: bool,
    /// Keys this step does not know yet (reported, not fatal).
    pub unknown: Vec<String>,
}

/// `[system] bootloader`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BootloaderKind {
    /// GRUB environment block.
    Grub,
    /// U-Boot environment.
    Uboot,
    /// RAUC's custom backend script.
    Custom,
    /// Nothing is switched.
    #[default]
    Noop,
}

/// `[slot.<class>.<n>] type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotType {
    /// The image is written as-is to a block device or file.
    Raw,
    /// An ext4 image written raw; its size is checked against the device.
    Ext4,
}

impl SlotType {
    /// The `type=` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Ext4 => "ext4",
        }
    }
}

/// One `[slot.<class>.<n>]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotConf {
    /// `<class>.<n>`.
    pub name: String,
    /// The class (`rootfs`).
    pub class: String,
    /// `device`.
    pub device: PathBuf,
    /// `type`.
    pub kind: SlotType,
    /// `bootname`.
    pub bootname: Option<String>,
    /// `parent` (a slot name).
    pub parent: Option<String>,
    /// `readonly`.
    pub readonly: bool,
    /// `install-same` (RAUC's default true).
    pub install_same: bool,
}

/// The `[tpm]` section.
#[derive(Debug, Clone, Default)]
pub struct TpmSection {
    /// `tcti=` (default `device:/dev/tpmrm0`).
    pub tcti: Option<String>,
    /// `owner-auth-file=`: a file holding the owner hierarchy authorization.
    pub owner_auth_file: Option<PathBuf>,
    /// `root-index=` (first NV index of the root store).
    pub root_index: Option<u32>,
    /// `root-slots=`.
    pub root_slots: Option<u32>,
    /// `counter-index=` (anti-rollback counter; its base is the next index).
    pub counter_index: Option<u32>,
}

/// Where the device's variant comes from (RAUC's `[system] variant-*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantSource {
    /// `variant-name=`: this string.
    Name(String),
    /// `variant-dtb=true`: the first entry of the device tree's root `compatible`.
    Dtb,
    /// `variant-file=`: the contents of this file, trimmed.
    File(PathBuf),
}

/// The `[measured-boot]` section. Its presence turns measured boot on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasuredBootSection {
    /// `required=` (default true once the section exists): refuse packages without
    /// reference values for the target slot, and fail `boot-check` on a slot without any.
    pub required: bool,
    /// `policy-index=`: the NV index holding the approved policy digest.
    pub policy_index: u32,
    /// `pcrs=` (`;`-separated indices, e.g. `4;8;9`): the PCRs every slot's reference
    /// values must cover. Unset: the PCRs the booted slot's committed values cover.
    pub pcrs: Option<Vec<u8>>,
}

impl Default for MeasuredBootSection {
    fn default() -> Self {
        Self { required: true, policy_index: crate::measured_boot::DEFAULT_POLICY_INDEX, pcrs: None }
    }
}

/// A path from the configuration, relative ones taken from the file's directory (as RAUC).
fn relative_to(conf: &Path, value: &str) -> PathBuf {
    let p = PathBuf::from(value);
    if p.is_relative() {
        conf.parent().unwrap_or(Path::new(".")).join(p)
    } else {
        p
    }
}

fn nv_index(v: &str) -> Option<u32> {
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok()?,
        None => v.parse().ok()?,
    };
    // Owner-range NV indices (TPM_HT_NV_INDEX = 0x01, below the platform/TCG ranges).
    (0x0100_0000..0x0140_0000).contains(&n).then_some(n)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            compatible: None,
            variant: None,
            keyring: None,
            crl_files: Vec::new(),
            crl_directory: None,
            policy: Policy::default(),
            tpm: TpmSection::default(),
            measured_boot: None,
            rauc_compatible: false,
            bootloader: BootloaderKind::Noop,
            grubenv: PathBuf::from("/boot/grub/grubenv"),
            uboot_env_config: PathBuf::from(crate::bootloader::ubootenv::DEFAULT_CONFIG),
            custom_backend: None,
            data_directory: PathBuf::from("/var/lib/henb-update"),
            boot_attempts: 3,
            boot_attempts_primary: 3,
            bundle_formats: vec!["plain".into(), "verity".into()],
            min_bundle_version: None,
            slots: Vec::new(),
            verify_written: false,
            unknown: Vec::new(),
        }
    }
}

impl Config {
    /// The device's variant, read now: `variant-name`, the first string of
    /// `/proc/device-tree/compatible` (`variant-dtb`) or the trimmed contents of
    /// `variant-file`. `Ok(None)` when none is configured (then only the bundles' default
    /// images apply).
    ///
    /// Errors: a configured source that cannot be read or is empty, naming it: the device
    /// cannot tell which image is its own, so nothing is chosen for it (fail closed).
    pub fn variant(&self) -> Result<Option<String>, String> {
        let v = match &self.variant {
            None => return Ok(None),
            Some(VariantSource::Name(n)) => n.clone(),
            Some(VariantSource::Dtb) => {
                const DTB: &str = "/proc/device-tree/compatible";
                let b = std::fs::read(DTB).map_err(|e| format!("variant-dtb: {DTB}: {e}"))?;
                String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or_default()).into_owned()
            }
            Some(VariantSource::File(p)) => {
                std::fs::read_to_string(p).map_err(|e| format!("variant-file {}: {e}", p.display()))?.trim().to_string()
            }
        };
        if v.is_empty() {
            return Err("the configured variant source is empty".into());
        }
        Ok(Some(v))
    }

    /// CRLs (DER) from `crl-path` and `crl-directory`. An unreadable or malformed file is
    /// an error naming it (could not check).
    pub fn load_crls(&self) -> Result<Vec<Vec<u8>>, String> {
        let mut files = self.crl_files.clone();
        if let Some(dir) = &self.crl_directory {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("crl-directory {}: {e}", dir.display()))?;
            let mut found: Vec<PathBuf> =
                entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
            found.sort();
            files.extend(found);
        }
        let mut out = Vec::new();
        for f in files {
            let bytes = std::fs::read(&f).map_err(|e| format!("CRL {}: {e}", f.display()))?;
            out.extend(crate::trust::crls_from_bytes(&bytes).map_err(|e| format!("CRL {}: {e}", f.display()))?);
        }
        Ok(out)
    }

    /// Load and parse a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parse text; `path` is for messages and relative keyring paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let kf =
            KeyFile::parse(text).map_err(|e| ConfigError::Invalid { path: path.into(), line: e.line, what: e.what })?;
        let mut c = Config::default();
        for g in &kf.groups {
            if g.name == "measured-boot" {
                c.measured_boot.get_or_insert_with(Default::default); // the section alone turns it on
            }
            for e in &g.entries {
                let invalid = |what: String| ConfigError::Invalid { path: path.into(), line: e.line, what };
                match (g.name.as_str(), e.key.as_str()) {
                    ("system", "compatible") => c.compatible = Some(e.value.clone()),
                    ("system", "variant-name") => c.variant = Some(VariantSource::Name(e.value.clone())),
                    ("system", "variant-dtb") => {
                        if bool_value(&e.value).ok_or_else(|| invalid("[system] variant-dtb: true or false".into()))? {
                            c.variant = Some(VariantSource::Dtb);
                        }
                    }
                    ("system", "variant-file") => c.variant = Some(VariantSource::File(relative_to(path, &e.value))),
                    ("keyring", "path") => {
                        let p = PathBuf::from(&e.value);
                        c.keyring =
                            Some(if p.is_relative() { path.parent().unwrap_or(Path::new(".")).join(p) } else { p });
                    }
                    ("keyring", "check-purpose") => {
                        c.policy.purpose = Purpose::from_name(&e.value).ok_or_else(|| {
                            invalid(format!("[keyring] check-purpose={} (smimesign, codesign or any)", e.value))
                        })?
                    }
                    ("keyring", "use-bundle-signing-time") => {
                        c.policy.use_signing_time = bool_value(&e.value)
                            .ok_or_else(|| invalid("[keyring] use-bundle-signing-time: true or false".into()))?
                    }
                    ("keyring", "allowed-signer-cns") => c.policy.allowed_signer_cns = Some(keyfile::list(&e.value)),
                    ("package", "tr069-legacy-sha1") => {
                        c.policy.allow_sha1 = bool_value(&e.value)
                            .ok_or_else(|| invalid("[package] tr069-legacy-sha1: true or false".into()))?
                    }
                    ("keyring", "check-crl") => {
                        c.policy.check_crl =
                            bool_value(&e.value).ok_or_else(|| invalid("[keyring] check-crl: true or false".into()))?
                    }
                    ("keyring", "allow-partial-chain") => {
                        c.policy.allow_partial_chain = bool_value(&e.value)
                            .ok_or_else(|| invalid("[keyring] allow-partial-chain: true or false".into()))?
                    }
                    ("keyring", "crl-path") => {
                        c.crl_files = keyfile::list(&e.value).iter().map(|p| relative_to(path, p)).collect()
                    }
                    ("keyring", "crl-directory") => c.crl_directory = Some(relative_to(path, &e.value)),
                    ("keyring", "directory") => {
                        return Err(invalid(
                            "[keyring] directory is not supported (trust anchors come from 'path' or the TPM)".into(),
                        ))
                    }
                    ("tpm", "tcti") => c.tpm.tcti = Some(e.value.clone()),
                    ("tpm", "owner-auth-file") => c.tpm.owner_auth_file = Some(PathBuf::from(&e.value)),
                    ("tpm", "root-index") => {
                        c.tpm.root_index = Some(nv_index(&e.value).ok_or_else(|| {
                            invalid(format!("[tpm] root-index={}: an owner NV index 0x01000000..0x013fffff", e.value))
                        })?)
                    }
                    ("tpm", "counter-index") => {
                        c.tpm.counter_index = Some(nv_index(&e.value).ok_or_else(|| {
                            invalid(format!(
                                "[tpm] counter-index={}: an owner NV index 0x01000000..0x013fffff",
                                e.value
                            ))
                        })?)
                    }
                    ("tpm", "root-slots") => {
                        c.tpm.root_slots = Some(
                            e.value
                                .parse()
                                .ok()
                                .filter(|n| (2..=64).contains(n))
                                .ok_or_else(|| invalid(format!("[tpm] root-slots={}: 2 to 64", e.value)))?,
                        )
                    }
                    ("service", "rauc-compatible") => {
                        c.rauc_compatible = bool_value(&e.value)
                            .ok_or_else(|| invalid("[service] rauc-compatible: true or false".into()))?
                    }
                    ("measured-boot", "required") => {
                        c.measured_boot.get_or_insert_with(Default::default).required = bool_value(&e.value)
                            .ok_or_else(|| invalid("[measured-boot] required: true or false".into()))?
                    }
                    ("measured-boot", "pcrs") => {
                        let list: Option<Vec<u8>> = e
                            .value
                            .split(';')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .map(|p| p.parse::<u8>().ok().filter(|p| *p <= 23))
                            .collect();
                        c.measured_boot.get_or_insert_with(Default::default).pcrs =
                            Some(list.filter(|l| !l.is_empty()).ok_or_else(|| {
                                invalid(format!(
                                    "[measured-boot] pcrs={}: PCR indices 0 to 23, separated by ';'",
                                    e.value
                                ))
                            })?)
                    }
                    ("measured-boot", "policy-index") => {
                        c.measured_boot.get_or_insert_with(Default::default).policy_index = nv_index(&e.value)
                            .ok_or_else(|| {
                                invalid(format!(
                                    "[measured-boot] policy-index={}: an owner NV index 0x01000000..0x013fffff",
                                    e.value
                                ))
                            })?
                    }
                    ("system", "bootloader") => {
                        c.bootloader = match e.value.as_str() {
                            "grub" => BootloaderKind::Grub,
                            "uboot" => BootloaderKind::Uboot,
                            "custom" => BootloaderKind::Custom,
                            "noop" => BootloaderKind::Noop,
                            v => {
                                return Err(invalid(format!(
                            "[system] bootloader={v}: grub, uboot, custom or noop (barebox and efi are not supported)"
                        )))
                            }
                        }
                    }
                    ("system", "grubenv") => c.grubenv = PathBuf::from(&e.value),
                    ("system", "data-directory") => c.data_directory = PathBuf::from(&e.value),
                    ("system", "boot-attempts") => {
                        c.boot_attempts = attempts(&e.value)
                            .ok_or_else(|| invalid(format!("[system] boot-attempts={}: 1 to 255", e.value)))?
                    }
                    ("system", "boot-attempts-primary") => {
                        c.boot_attempts_primary = attempts(&e.value)
                            .ok_or_else(|| invalid(format!("[system] boot-attempts-primary={}: 1 to 255", e.value)))?
                    }
                    ("system", "bundle-formats") => c.bundle_formats = bundle_formats(&e.value).map_err(invalid)?,
                    ("system", "min-bundle-version") => c.min_bundle_version = Some(e.value.clone()),
                    ("handlers", "bootloader-custom-backend") => c.custom_backend = Some(PathBuf::from(&e.value)),
                    ("uboot", "env-config") => c.uboot_env_config = PathBuf::from(&e.value),
                    ("install", "verify-written") => {
                        c.verify_written = bool_value(&e.value)
                            .ok_or_else(|| invalid("[install] verify-written: true or false".into()))?
                    }
                    (g, k) if g.starts_with("slot.") => {
                        if !slot_key(&mut c.slots, g, k, &e.value).map_err(invalid)? {
                            c.unknown.push(format!("{}:{}: [{g}] {k}", path.display(), e.line));
                        }
                    }
                    (g, k) => c.unknown.push(format!("{}:{}: [{g}] {k}", path.display(), e.line)),
                }
            }
        }
        check_slots(&c, path)?;
        if c.bootloader == BootloaderKind::Custom && c.custom_backend.is_none() {
            return Err(ConfigError::Invalid {
                path: path.into(),
                line: 0,
                what: "[system] bootloader=custom needs [handlers] bootloader-custom-backend".into(),
            });
        }
        Ok(c)
    }
}

fn attempts(v: &str) -> Option<u32> {
    v.parse().ok().filter(|n| (1..=255).contains(n))
}

/// RAUC's bundle-formats: a list of formats, or of +/- changes to the default (plain verity).
fn bundle_formats(v: &str) -> Result<Vec<String>, String> {
    let items: Vec<&str> = v.split_whitespace().collect();
    let known = |f: &str| matches!(f, "plain" | "verity" | "crypt");
    let mods = items.iter().filter(|i| i.starts_with(['+', '-'])).count();
    let mut set: Vec<String> = if mods == 0 { Vec::new() } else { vec!["plain".into(), "verity".into()] };
    if mods != 0 && mods != items.len() {
        return Err(format!("[system] bundle-formats={v}: use either names or +/- changes, not both"));
    }
    for i in items {
        let (op, name) = match i.split_at(if i.starts_with(['+', '-']) { 1 } else { 0 }) {
            ("-", n) => ('-', n),
            (_, n) => ('+', n),
        };
        if !known(name) {
            return Err(format!("[system] bundle-formats: unknown format '{name}'"));
        }
        set.retain(|f| f != name);
        if op == '+' {
            set.push(name.to_string());
        }
    }
    if set.is_empty() {
        return Err(format!("[system] bundle-formats={v} allows no format"));
    }
    Ok(set)
}

/// Apply one slot key; `Ok(false)` for a key this agent does not use (reported).
fn slot_key(slots: &mut Vec<SlotConf>, group: &str, key: &str, value: &str) -> Result<bool, String> {
    let name = group.strip_prefix("slot.").expect("checked");
    let (class, _) = name
        .rsplit_once('.')
        .filter(|(c, n)| !c.is_empty() && !c.contains('.') && n.parse::<u32>().is_ok())
        .ok_or_else(|| format!("[{group}]: slot sections are [slot.<class>.<index>]"))?;
    if !slots.iter().any(|s| s.name == name) {
        slots.push(SlotConf {
            name: name.to_string(),
            class: class.to_string(),
            device: PathBuf::new(),
            kind: SlotType::Raw,
            bootname: None,
            parent: None,
            readonly: false,
            install_same: true,
        });
    }
    let s = slots.iter_mut().find(|s| s.name == name).expect("just added");
    let flag = |v: &str| bool_value(v).ok_or_else(|| format!("[{group}] {key}={v}: true or false"));
    match key {
        "device" => s.device = PathBuf::from(value),
        "type" => {
            s.kind = match value {
                "raw" => SlotType::Raw,
                "ext4" => SlotType::Ext4,
                v => return Err(format!("[{group}] type={v}: raw or ext4 (others are not supported yet)")),
            }
        }
        "bootname" => s.bootname = Some(value.to_string()),
        "parent" => s.parent = Some(value.to_string()),
        "readonly" => s.readonly = flag(value)?,
        "install-same" => s.install_same = flag(value)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn check_slots(c: &Config, path: &Path) -> Result<(), ConfigError> {
    let bad = |what: String| ConfigError::Invalid { path: path.into(), line: 0, what };
    for s in &c.slots {
        if s.device.as_os_str().is_empty() {
            return Err(bad(format!("[slot.{}] has no device", s.name)));
        }
        if let Some(p) = &s.parent {
            let parent = c
                .slots
                .iter()
                .find(|x| &x.name == p)
                .ok_or_else(|| bad(format!("[slot.{}] parent={p}: no such slot", s.name)))?;
            if parent.parent.is_some() {
                return Err(bad(format!("[slot.{}] parent={p}: a parent cannot have a parent", s.name)));
            }
        }
        if let Some(b) = &s.bootname {
            if c.slots.iter().filter(|x| x.bootname.as_deref() == Some(b)).count() > 1 {
                return Err(bad(format!("bootname {b} is used by more than one slot")));
            }
            if b.is_empty() || !b.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
                return Err(bad(format!("[slot.{}] bootname={b}: letters, digits, '_' and '-' only", s.name)));
            }
        }
    }
    Ok(())
}

fn bool_value(v: &str) -> Option<bool> {
    match v {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}
