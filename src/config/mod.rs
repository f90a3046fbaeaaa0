//! System configuration in RAUC's system.conf syntax: a RAUC user's file works for every
//! key this agent supports (`[system]`, `[keyring]`, `[slot.<class>.<n>]`, `[handlers]
//! bootloader-custom-backend`), plus our `[tpm]`, `[package]` and `[uboot]`. Values the
//! agent cannot honour are errors naming file, line and key; keys it does not know are
//! reported.

pub mod keyfile;
mod keys;

use crate::verify::{Policy, Purpose};
use keyfile::KeyFile;
use keys::{apply_entry, check_section, check_slots};
pub use keys::{known_keys, support, Support};
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

impl crate::fault::Fault for ConfigError {
    fn kind(&self) -> &'static str {
        "config"
    }
    /// The device's own configuration: the agent cannot check anything without it.
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::InternalError
    }
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
    /// The file it was loaded from (`RAUC_SYSTEM_CONFIG`).
    pub source: PathBuf,
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
    /// `[handlers] system-info`, `pre-install`, `post-install`: the device's own programs
    /// (RAUC's system handlers), run as bundle hooks are ([`crate::handler`]).
    pub handlers: Handlers,
    /// `[system] statusfile`: where the agent's status lives (default
    /// `<data-directory>/status.json`; see [`Config::status_file`]).
    pub statusfile: StatusFile,
    /// `[system] activate-installed` (RAUC's key, default true): switch the boot order to
    /// an installed slot. False: install and stop, the slot recorded as stored, not
    /// activated (TR-181 "Available"); `mark active` switches later.
    pub activate_installed: bool,
    /// What `[handlers] system-info` printed (`RAUC_*` variables, in its order), once the
    /// edge ran it ([`crate::handler::system_info`]); empty otherwise.
    pub system_info: Vec<(String, String)>,
    /// `[system] efi-use-bootnext` (default true): with `bootloader=efi`, a new primary is
    /// tried once through `BootNext` rather than moved to the front of `BootOrder`.
    pub efi_use_bootnext: bool,
    /// `[system] barebox-statename` (barebox-state's `-n`, default its own "state").
    pub barebox_statename: Option<String>,
    /// `[system] barebox-dtbpath` (barebox-state's `-i`: the device tree to read the
    /// state description from instead of the running system's).
    pub barebox_dtbpath: Option<PathBuf>,
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
    /// `[install] hook-timeout`: how long one bundle hook may run (default
    /// [`DEFAULT_HOOK_TIMEOUT`]); then it is killed and the install fails.
    pub hook_timeout: std::time::Duration,
    /// `[system] mountprefix` (RAUC's key): where the agent makes its private directory
    /// for a bundle's hook executable and the files its hooks read, and where slots are
    /// mounted for their hooks (`RAUC_MOUNT_PREFIX`). Default [`DEFAULT_MOUNT_PREFIX`].
    pub mount_prefix: PathBuf,
    /// `[system] bundle-hooks`: run a bundle's hooks (RAUC's behaviour, the default) or
    /// refuse every bundle that carries hooks or a handler.
    pub bundle_hooks: BundleHooksPolicy,
    /// `[download]` and RAUC's `[streaming]` TLS keys: how packages are fetched from a
    /// file server.
    pub download: crate::download::Settings,
}

/// `[system] bundle-hooks`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BundleHooksPolicy {
    /// Run them as RAUC does.
    #[default]
    Run,
    /// Refuse any bundle that carries code (hooks or a handler), before anything changes.
    Refuse,
}

/// Default `[install] hook-timeout`: 15 minutes (an install hook may write a slot).
pub const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// Default `[system] mountprefix`: a tmpfs directory of the agent (RAUC's is /mnt/rauc,
/// often on a read-only root file system).
pub const DEFAULT_MOUNT_PREFIX: &str = "/run/henb-update";

/// `[handlers]`: RAUC's system handlers, paths to the device's own executables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handlers {
    /// `system-info`: run when the agent starts; its `RAUC_*=value` output lines reach
    /// every handler and hook, `RAUC_SYSTEM_VARIANT` sets the variant.
    pub system_info: Option<PathBuf>,
    /// `pre-install`: run before an admitted package changes anything; failing, it
    /// refuses the package.
    pub pre_install: Option<PathBuf>,
    /// `post-install`: run after the images are written and approved, before the switch;
    /// failing, it fails the install and nothing is switched.
    pub post_install: Option<PathBuf>,
}

/// `[system] statusfile`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StatusFile {
    /// `<data-directory>/status.json`.
    #[default]
    DataDirectory,
    /// A file of its own (RAUC's central status file, e.g. on a data partition).
    File(PathBuf),
    /// `per-slot`: each installed file-system slot also carries RAUC's `slot.raucs`
    /// status in its root; the agent's own state stays in the data directory.
    PerSlot,
}

/// `[system] bootloader`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BootloaderKind {
    /// GRUB environment block.
    Grub,
    /// U-Boot environment.
    Uboot,
    /// barebox's state, through dt-utils' `barebox-state`.
    Barebox,
    /// UEFI boot entries, through `efibootmgr`.
    Efi,
    /// RAUC's custom backend script.
    Custom,
    /// Nothing is switched.
    #[default]
    Noop,
}

/// `[slot.<class>.<n>] type` (RAUC's slot types, docs/reference.rst "slot types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotType {
    /// The image is written as-is to a block device or file.
    Raw,
    /// An ext4 file-system image written raw (grown to the device with `resize`).
    Ext4,
    /// A FAT file-system image written raw.
    Vfat,
    /// A boot region of a disk with an MBR, halved: the image goes into the half the
    /// first partition entry does not point to, and the entry is switched to it.
    BootMbrSwitch,
    /// The same with a GPT: the first partition entry is switched.
    BootGptSwitch,
    /// A boot region of two copies that a boot ROM tries in order: the fallback half
    /// (second) is written first, then the primary half (first), so that one of them is
    /// always whole.
    BootRawFallback,
    /// A raw NAND MTD partition (`/dev/mtdN`): erased whole, then written page by page
    /// with its bad blocks skipped (mtd-utils' `flash_erase` and `nandwrite`, as RAUC).
    Nand,
    /// A NOR MTD partition (`/dev/mtdN`): erased whole by `flash_erase`, then the image
    /// written from its start (RAUC runs `flashcp --erase-all`, which does the same).
    Nor,
    /// A JFFS2 image written into an MTD partition: erased whole, then written as `nand`
    /// on NAND flash and as `nor` on any other (the MTD's `type` in sysfs). A raw image
    /// only (RAUC also takes tar archives here, this agent none).
    Jffs2,
    /// A UBI volume (`/dev/ubiX_Y`): replaced by one volume update (`UBI_IOCVOLUP`,
    /// atomic for UBI: an interrupted update leaves the volume marked corrupted, never
    /// half old and half new).
    Ubivol,
    /// A UBIFS image written into a UBI volume by a volume update; mounted as `ubifs`.
    Ubifs,
}

impl SlotType {
    /// The `type=` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Ext4 => "ext4",
            Self::Vfat => "vfat",
            Self::BootMbrSwitch => "boot-mbr-switch",
            Self::BootGptSwitch => "boot-gpt-switch",
            Self::BootRawFallback => "boot-raw-fallback",
            Self::Nand => "nand",
            Self::Nor => "nor",
            Self::Jffs2 => "jffs2",
            Self::Ubivol => "ubivol",
            Self::Ubifs => "ubifs",
        }
    }

    /// Every type this agent installs.
    pub const ALL: [SlotType; 11] = [
        Self::Raw,
        Self::Ext4,
        Self::Vfat,
        Self::BootMbrSwitch,
        Self::BootGptSwitch,
        Self::BootRawFallback,
        Self::Nand,
        Self::Nor,
        Self::Jffs2,
        Self::Ubivol,
        Self::Ubifs,
    ];

    /// Whether its images are written through the kernel's flash interfaces (MTD, UBI)
    /// rather than at offsets of a block device or file: not adaptive, not lazily.
    pub fn is_flash(self) -> bool {
        matches!(self, Self::Nand | Self::Nor | Self::Jffs2 | Self::Ubivol | Self::Ubifs)
    }

    /// Whether its device is an MTD character device (`/dev/mtdN`).
    pub fn is_mtd(self) -> bool {
        matches!(self, Self::Nand | Self::Nor | Self::Jffs2)
    }

    /// The file-system type a slot of this type is mounted as (for hooks and `per-slot`
    /// status), if it holds one.
    pub fn filesystem(self) -> Option<&'static str> {
        match self {
            Self::Ext4 => Some("ext4"),
            Self::Vfat => Some("vfat"),
            Self::Ubifs => Some("ubifs"),
            _ => None,
        }
    }

    /// Whether the slot is a boot region (`region-start`, `region-size`).
    pub fn has_region(self) -> bool {
        matches!(self, Self::BootMbrSwitch | Self::BootGptSwitch | Self::BootRawFallback)
    }
}

/// `region-start` and `region-size` of a boot-region slot, in bytes from the start of
/// the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// Bytes, both halves.
    pub size: u64,
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
    /// `allow-mounted` (default false): write the slot even while it is mounted.
    pub allow_mounted: bool,
    /// `resize` (ext4): grow the written file system to the slot with `resize2fs`.
    pub resize: bool,
    /// `region-start` and `region-size` (boot-region types).
    pub region: Option<Region>,
}

/// Default `[measured-boot] policy-index`: the NV index holding the approved policy.
pub const DEFAULT_POLICY_INDEX: u32 = 0x0101_0300;

/// Default `[uboot] env-config`: the `fw_env.config` fw_printenv reads.
pub const DEFAULT_UBOOT_ENV_CONFIG: &str = "/etc/fw_env.config";

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
        Self { required: true, policy_index: DEFAULT_POLICY_INDEX, pcrs: None }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            source: PathBuf::new(),
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
            uboot_env_config: PathBuf::from(DEFAULT_UBOOT_ENV_CONFIG),
            custom_backend: None,
            handlers: Handlers::default(),
            statusfile: StatusFile::DataDirectory,
            activate_installed: true,
            system_info: Vec::new(),
            efi_use_bootnext: true,
            barebox_statename: None,
            barebox_dtbpath: None,
            data_directory: PathBuf::from("/var/lib/henb-update"),
            boot_attempts: 3,
            boot_attempts_primary: 3,
            bundle_formats: vec!["plain".into(), "verity".into()],
            min_bundle_version: None,
            slots: Vec::new(),
            verify_written: false,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            mount_prefix: PathBuf::from(DEFAULT_MOUNT_PREFIX),
            bundle_hooks: BundleHooksPolicy::Run,
            download: Default::default(),
        }
    }
}

impl Config {
    /// The agent's status file: `[system] statusfile`, or `status.json` in the data
    /// directory (also with `statusfile=per-slot`).
    pub fn status_file(&self) -> PathBuf {
        match &self.statusfile {
            StatusFile::File(p) => p.clone(),
            _ => self.data_directory.join("status.json"),
        }
    }

    /// The device's variant, read now: `variant-name`, the first string of
    /// `/proc/device-tree/compatible` (`variant-dtb`) or the trimmed contents of
    /// `variant-file`. `Ok(None)` when none is configured (then only the bundles' default
    /// images apply).
    ///
    /// Errors: a configured source that cannot be read or is empty, naming it: the device
    /// cannot tell which image is its own, so nothing is chosen for it (fail closed).
    pub fn variant(&self) -> Result<Option<String>, String> {
        // As RAUC: the system-info handler's variant wins over the configured source.
        if let Some((_, v)) = self.system_info.iter().find(|(k, _)| k == "RAUC_SYSTEM_VARIANT") {
            return Ok(Some(v.clone()).filter(|v| !v.is_empty()));
        }
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
        // Relative paths in it are the file's directory's, wherever the agent runs: taken
        // from its absolute path.
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let c = Self::parse(&text, &absolute).map_err(|e| match e {
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid { path: path.into(), problems },
            e => e,
        })?;
        Ok(Config { source: path.into(), ..c })
    }

    /// Parse text; `path` is for messages and for relative paths (taken from the file's
    /// directory, as RAUC does).
    ///
    /// Strict: an unknown section or key, a RAUC key this agent does not support, a value
    /// it cannot honour, an inline comment, a missing `[system] compatible` are all
    /// errors, reported together in file order, each naming file, line and key.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let (kf, syntax) = KeyFile::parse_all(text);
        let mut c = Config { source: path.into(), ..Config::default() };
        let mut problems: Vec<Problem> =
            syntax.into_iter().map(|e| Problem { line: e.line, key: None, what: e.what }).collect();
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
        if let StatusFile::File(f) = &c.statusfile {
            if *f == c.data_directory || c.data_directory.starts_with(f) {
                problems.push(Problem {
                    line: kf.group("system").and_then(|g| g.entry("statusfile")).map_or(0, |e| e.line),
                    key: Some("[system] statusfile".into()),
                    what: format!(
                        "[system] statusfile={}: the data directory or one above it, not a file",
                        f.display()
                    ),
                });
            }
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
