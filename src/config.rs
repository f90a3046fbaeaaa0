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
    /// Syntax or value errors: every problem of the file, in file order.
    #[error("{}", problems.iter().map(|p| format!("{}:{}: {}", path.display(), p.line, p.what)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// File.
        path: PathBuf,
        /// What is wrong, in file order.
        problems: Vec<Problem>,
    },
}

/// One problem of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// 1-based line (0 for a problem of the whole file, such as a missing key).
    pub line: usize,
    /// The section and key it is about (`[system] compatible`), if one.
    pub key: Option<String>,
    /// What is wrong (names the key too).
    pub what: String,
}

impl ConfigError {
    fn one(path: &Path, line: usize, key: Option<String>, what: String) -> Self {
        Self::Invalid { path: path.into(), problems: vec![Problem { line, key, what }] }
    }

    /// The problems, one per entry (a read failure is one problem at line 0).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Read { source, .. } => vec![Problem { line: 0, key: None, what: source.to_string() }],
            Self::Invalid { problems, .. } => problems.clone(),
        }
    }
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
    /// `allow-empty-owner-auth=` (default false): let measured boot run with an empty owner
    /// authorization, which lets any process that can open the TPM rewrite the policy
    /// index. Development images only.
    pub allow_empty_owner_auth: bool,
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
    ///
    /// Errors: [`ConfigError::Read`], or [`ConfigError::Invalid`] with every problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parse text; `path` is for messages and for relative paths (taken from the file's
    /// directory, as RAUC does).
    ///
    /// Strict: an unknown section or key, a RAUC key this agent does not support, a value
    /// it cannot honour, an inline comment, a missing `[system] compatible` are all
    /// errors, reported together in file order, each naming file, line and key.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let kf = KeyFile::parse(text).map_err(|e| ConfigError::one(path, e.line, None, e.what))?;
        let mut c = Config::default();
        let mut problems = Vec::new();
        for g in &kf.groups {
            if let Err(what) = check_section(&g.name) {
                problems.push(Problem { line: g.line, key: None, what });
                continue;
            }
            if g.name == "measured-boot" {
                c.measured_boot.get_or_insert_with(Default::default); // the section alone turns it on
            }
            for e in &g.entries {
                let key = format!("[{}] {}", g.name, e.key);
                let r = if e.value.contains(" #") || e.value.contains("\t#") {
                    Err(format!(
                        "{key}={}: key-file syntax has no inline comments (a '#' starts a comment only at the start of a line)",
                        e.value
                    ))
                } else {
                    apply_entry(&mut c, &g.name, &e.key, &e.value, path)
                };
                if let Err(what) = r {
                    problems.push(Problem { line: e.line, key: Some(key), what });
                }
            }
        }
        let line_of = |group: &str| kf.group(group).map_or(0, |g| g.line);
        match &c.compatible {
            None => problems.push(Problem {
                line: line_of("system"),
                key: Some("[system] compatible".into()),
                what: "[system] compatible is required: packages are accepted only for this device's compatible".into(),
            }),
            Some(v) if v.is_empty() => problems.push(Problem {
                line: kf.group("system").and_then(|g| g.entry("compatible")).map_or(0, |e| e.line),
                key: Some("[system] compatible".into()),
                what: "[system] compatible is empty".into(),
            }),
            Some(_) => {}
        }
        if c.bootloader == BootloaderKind::Custom && c.custom_backend.is_none() {
            problems.push(Problem {
                line: line_of("system"),
                key: Some("[handlers] bootloader-custom-backend".into()),
                what: "[system] bootloader=custom needs [handlers] bootloader-custom-backend".into(),
            });
        }
        if c.measured_boot.is_some() && c.tpm.owner_auth_file.is_none() && !c.tpm.allow_empty_owner_auth {
            problems.push(Problem {
                line: line_of("measured-boot"),
                key: Some("[tpm] owner-auth-file".into()),
                what: EMPTY_OWNER_AUTH.into(),
            });
        }
        problems.extend(check_slots(&c, &kf));
        problems.sort_by_key(|p| p.line);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { path: path.into(), problems });
        }
        Ok(c)
    }
}

/// Why measured boot refuses an empty owner authorization (R3: the policy index is
/// written with owner authorization; empty, any local process could rewrite it).
pub const EMPTY_OWNER_AUTH: &str = "[measured-boot] needs the TPM's owner authorization: set it in the factory flow (tpm2_changeauth -c owner) and name its file in [tpm] owner-auth-file; with an empty one any process that can open the TPM could rewrite the measured-boot policy ([tpm] allow-empty-owner-auth=true: development images only)";

/// The sections and keys this agent reads (slot sections: [`SLOT_KEYS`]).
const KEYS: &[(&str, &[&str])] = &[
    (
        "system",
        &[
            "compatible",
            "bootloader",
            "grubenv",
            "data-directory",
            "boot-attempts",
            "boot-attempts-primary",
            "bundle-formats",
            "min-bundle-version",
            "variant-name",
            "variant-dtb",
            "variant-file",
        ],
    ),
    (
        "keyring",
        &[
            "path",
            "check-purpose",
            "use-bundle-signing-time",
            "allowed-signer-cns",
            "check-crl",
            "allow-partial-chain",
            "crl-path",
            "crl-directory",
        ],
    ),
    ("tpm", &["tcti", "owner-auth-file", "allow-empty-owner-auth", "root-index", "root-slots", "counter-index"]),
    ("package", &["tr069-legacy-sha1"]),
    ("service", &["rauc-compatible"]),
    ("measured-boot", &["required", "pcrs", "policy-index"]),
    ("handlers", &["bootloader-custom-backend"]),
    ("uboot", &["env-config"]),
    ("install", &["verify-written"]),
];

/// The keys of a `[slot.<class>.<index>]` section this agent reads.
/// (`description` is RAUC's free text for people: read and not used.)
const SLOT_KEYS: &[&str] = &["device", "type", "bootname", "parent", "readonly", "install-same", "description"];

/// RAUC's keys (system.conf, RAUC 1.8 to 1.14) that this agent does not support: an error
/// that says so, never silence.
const RAUC_UNSUPPORTED: &[(&str, &[&str])] = &[
    (
        "system",
        &[
            "mountprefix",
            "statusfile",
            "barebox-statename",
            "barebox-dtbpath",
            "efi-use-bootnext",
            "activate-installed",
            "max-bundle-download-size",
            "max-bundle-signature-size",
            "prevent-late-fallback",
            "perform-pre-check",
        ],
    ),
    ("keyring", &["directory", "allow-single-signature"]),
    ("handlers", &["system-info", "pre-install", "post-install"]),
    (
        "slot",
        &[
            "extra-mount-opts",
            "extra-mkfs-opts",
            "resize",
            "region-start",
            "region-size",
            "allow-mounted",
            "ignore-checksum",
            "force-install-same",
            "size-limit",
        ],
    ),
];

/// RAUC's sections this agent does not support.
const RAUC_UNSUPPORTED_SECTIONS: &[&str] = &["casync", "streaming", "encryption", "autoinstall", "artifacts", "log"];

/// The closest of `candidates` to `word`, if close enough to be a typo.
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&word.to_ascii_lowercase(), c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn check_section(name: &str) -> Result<(), String> {
    if KEYS.iter().any(|(g, _)| *g == name) {
        return Ok(());
    }
    if let Some(rest) = name.strip_prefix("slot.") {
        return match rest.rsplit_once('.') {
            Some((class, n)) if !class.is_empty() && !class.contains('.') && n.parse::<u32>().is_ok() => Ok(()),
            _ => Err(format!("[{name}]: slot sections are [slot.<class>.<index>]")),
        };
    }
    let base = name.split('.').next().unwrap_or(name);
    if RAUC_UNSUPPORTED_SECTIONS.contains(&base) {
        return Err(format!("[{name}]: RAUC's [{base}] section is not supported by henb-update"));
    }
    let hint = closest(name, KEYS.iter().map(|(g, _)| *g).chain(["slot.<class>.<index>"]))
        .map(|c| format!(" (did you mean [{c}]?)"))
        .unwrap_or_default();
    Err(format!("[{name}]: unknown section{hint}"))
}

/// An unknown key of `group`: not supported (a RAUC key), misplaced, or a typo.
fn unknown_key(group: &str, key: &str) -> String {
    let section = if group.starts_with("slot.") { "slot" } else { group };
    if RAUC_UNSUPPORTED.iter().any(|(g, keys)| *g == section && keys.contains(&key)) {
        return format!("[{group}] {key}: RAUC's key is not supported by henb-update");
    }
    let known: &[&str] =
        if section == "slot" { SLOT_KEYS } else { KEYS.iter().find(|(g, _)| *g == group).map_or(&[], |(_, k)| *k) };
    if let Some((g, _)) = KEYS.iter().find(|(_, keys)| keys.contains(&key)) {
        return format!("[{group}] {key}: unknown key here; it belongs in [{g}]");
    }
    let hint = closest(key, known.iter().copied()).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default();
    format!("[{group}] {key}: unknown key{hint}")
}

/// A path value: not empty, relative ones from the file's directory.
fn path_value(conf: &Path, key: &str, value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err(format!("{key}: empty path"));
    }
    Ok(relative_to(conf, value))
}

fn flag(key: &str, value: &str) -> Result<bool, String> {
    bool_value(value).ok_or_else(|| format!("{key}={value}: true or false"))
}

fn nv(key: &str, value: &str) -> Result<u32, String> {
    nv_index(value).ok_or_else(|| format!("{key}={value}: an owner NV index 0x01000000..0x013fffff"))
}

/// Apply one key; the error names section, key and value.
fn apply_entry(c: &mut Config, group: &str, key: &str, v: &str, path: &Path) -> Result<(), String> {
    let k = format!("[{group}] {key}");
    match (group, key) {
        ("system", "compatible") => c.compatible = Some(v.to_string()),
        ("system", "variant-name") => c.variant = Some(VariantSource::Name(v.to_string())),
        ("system", "variant-dtb") => {
            if flag(&k, v)? {
                c.variant = Some(VariantSource::Dtb);
            }
        }
        ("system", "variant-file") => c.variant = Some(VariantSource::File(path_value(path, &k, v)?)),
        ("system", "bootloader") => {
            c.bootloader = match v {
                "grub" => BootloaderKind::Grub,
                "uboot" => BootloaderKind::Uboot,
                "custom" => BootloaderKind::Custom,
                "noop" => BootloaderKind::Noop,
                _ => return Err(format!("{k}={v}: grub, uboot, custom or noop (barebox and efi are not supported)")),
            }
        }
        ("system", "grubenv") => c.grubenv = path_value(path, &k, v)?,
        ("system", "data-directory") => c.data_directory = path_value(path, &k, v)?,
        ("system", "boot-attempts") => c.boot_attempts = attempts(v).ok_or_else(|| format!("{k}={v}: 1 to 255"))?,
        ("system", "boot-attempts-primary") => {
            c.boot_attempts_primary = attempts(v).ok_or_else(|| format!("{k}={v}: 1 to 255"))?
        }
        ("system", "bundle-formats") => c.bundle_formats = bundle_formats(v)?,
        ("system", "min-bundle-version") => {
            if crate::install::version_parts(v).is_empty() {
                return Err(format!("{k}={v}: a version with at least one number"));
            }
            c.min_bundle_version = Some(v.to_string())
        }
        ("keyring", "path") => c.keyring = Some(path_value(path, &k, v)?),
        ("keyring", "check-purpose") => {
            c.policy.purpose = Purpose::from_name(v).ok_or_else(|| format!("{k}={v}: smimesign, codesign or any"))?
        }
        ("keyring", "use-bundle-signing-time") => c.policy.use_signing_time = flag(&k, v)?,
        ("keyring", "allowed-signer-cns") => {
            let cns = keyfile::list(v);
            if cns.is_empty() {
                return Err(format!("{k}: an empty list would refuse every signer; remove the key to allow any"));
            }
            c.policy.allowed_signer_cns = Some(cns)
        }
        ("keyring", "check-crl") => c.policy.check_crl = flag(&k, v)?,
        ("keyring", "allow-partial-chain") => c.policy.allow_partial_chain = flag(&k, v)?,
        ("keyring", "crl-path") => {
            c.crl_files = keyfile::list(v).iter().map(|p| path_value(path, &k, p)).collect::<Result<_, _>>()?
        }
        ("keyring", "crl-directory") => c.crl_directory = Some(path_value(path, &k, v)?),
        ("package", "tr069-legacy-sha1") => c.policy.allow_sha1 = flag(&k, v)?,
        ("tpm", "tcti") => c.tpm.tcti = Some(crate::tpm::tcti::parse(v).map_err(|e| format!("[tpm] {e}"))?),
        ("tpm", "owner-auth-file") => c.tpm.owner_auth_file = Some(path_value(path, &k, v)?),
        ("tpm", "allow-empty-owner-auth") => c.tpm.allow_empty_owner_auth = flag(&k, v)?,
        ("tpm", "root-index") => c.tpm.root_index = Some(nv(&k, v)?),
        ("tpm", "counter-index") => c.tpm.counter_index = Some(nv(&k, v)?),
        ("tpm", "root-slots") => {
            c.tpm.root_slots =
                Some(v.parse().ok().filter(|n| (2..=64).contains(n)).ok_or_else(|| format!("{k}={v}: 2 to 64"))?)
        }
        ("service", "rauc-compatible") => c.rauc_compatible = flag(&k, v)?,
        ("measured-boot", "required") => c.measured_boot.get_or_insert_with(Default::default).required = flag(&k, v)?,
        ("measured-boot", "pcrs") => {
            let list: Option<Vec<u8>> = v
                .split(';')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.parse::<u8>().ok().filter(|p| *p <= 23))
                .collect();
            c.measured_boot.get_or_insert_with(Default::default).pcrs = Some(
                list.filter(|l| !l.is_empty())
                    .ok_or_else(|| format!("{k}={v}: PCR indices 0 to 23, separated by ';'"))?,
            )
        }
        ("measured-boot", "policy-index") => {
            c.measured_boot.get_or_insert_with(Default::default).policy_index = nv(&k, v)?
        }
        ("handlers", "bootloader-custom-backend") => c.custom_backend = Some(path_value(path, &k, v)?),
        ("uboot", "env-config") => c.uboot_env_config = path_value(path, &k, v)?,
        ("install", "verify-written") => c.verify_written = flag(&k, v)?,
        (g, _) if g.starts_with("slot.") => {
            if !slot_key(&mut c.slots, g, key, v)? {
                return Err(unknown_key(g, key));
            }
        }
        (g, _) => return Err(unknown_key(g, key)),
    }
    Ok(())
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
        "device" if value.is_empty() => return Err(format!("[{group}] device: empty")),
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
        "description" => {}
        _ => return Ok(false),
    }
    Ok(true)
}

/// Checks across slot sections; each problem at the line of the section it is about.
fn check_slots(c: &Config, kf: &KeyFile) -> Vec<Problem> {
    let mut out = Vec::new();
    for s in &c.slots {
        let group = format!("slot.{}", s.name);
        let g = kf.group(&group);
        let line = |key: &str| g.and_then(|g| g.entry(key)).map_or(g.map_or(0, |g| g.line), |e| e.line);
        let mut bad = |key: &str, what: String| {
            out.push(Problem { line: line(key), key: Some(format!("[{group}] {key}")), what })
        };
        if s.device.as_os_str().is_empty() {
            bad("device", format!("[{group}] has no device"));
        }
        if let Some(p) = &s.parent {
            match c.slots.iter().find(|x| &x.name == p) {
                None => bad("parent", format!("[{group}] parent={p}: no such slot")),
                Some(parent) if parent.parent.is_some() => {
                    bad("parent", format!("[{group}] parent={p}: a parent cannot have a parent"))
                }
                Some(_) => {}
            }
        }
        if let Some(b) = &s.bootname {
            if c.slots.iter().filter(|x| x.bootname.as_deref() == Some(b)).count() > 1 {
                bad("bootname", format!("[{group}] bootname={b}: used by more than one slot"));
            }
            if b.is_empty() || !b.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
                bad("bootname", format!("[{group}] bootname={b}: letters, digits, '_' and '-' only"));
            }
        }
    }
    out
}

fn bool_value(v: &str) -> Option<bool> {
    match v {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}
