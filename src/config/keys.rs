//! The keys of system.conf: which sections and keys this agent reads, RAUC's keys it
//! refuses by name, and how each value is parsed and checked into [`Config`].

use super::*;

/// A path from the configuration, relative ones taken from the file's directory (as RAUC).
pub(super) fn relative_to(conf: &Path, value: &str) -> PathBuf {
    let p = PathBuf::from(value);
    if p.is_relative() {
        conf.parent().unwrap_or(Path::new(".")).join(p)
    } else {
        p
    }
}

pub(super) fn nv_index(v: &str) -> Option<u32> {
    let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok()?,
        None => v.parse().ok()?,
    };
    // Owner-range NV indices (TPM_HT_NV_INDEX = 0x01, below the platform/TCG ranges).
    (0x0100_0000..0x0140_0000).contains(&n).then_some(n)
}

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
            "mountprefix",
            "bundle-hooks",
            "statusfile",
            "activate-installed",
            "barebox-statename",
            "barebox-dtbpath",
            "efi-use-bootnext",
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
    ("handlers", &["bootloader-custom-backend", "system-info", "pre-install", "post-install"]),
    ("uboot", &["env-config"]),
    ("install", &["verify-written", "hook-timeout"]),
    ("streaming", &["tls-ca", "tls-cert", "tls-key"]),
    (
        "download",
        &["connect-timeout", "idle-timeout", "retries", "retry-delay", "max-redirects", "allow-tls-no-verify"],
    ),
];

/// The keys of a `[slot.<class>.<index>]` section this agent reads.
/// (`description` is RAUC's free text for people: read and not used.)
const SLOT_KEYS: &[&str] = &[
    "device",
    "type",
    "bootname",
    "parent",
    "readonly",
    "install-same",
    "description",
    "allow-mounted",
    "resize",
    "region-start",
    "region-size",
];

/// RAUC's keys (system.conf, RAUC 1.8 to 1.14) that this agent does not support: an error
/// that says so, never silence.
const RAUC_UNSUPPORTED: &[(&str, &[&str])] = &[
    (
        "system",
        &["max-bundle-download-size", "max-bundle-signature-size", "prevent-late-fallback", "perform-pre-check"],
    ),
    ("keyring", &["directory", "allow-single-signature"]),
    ("streaming", &["sandbox-user", "send-headers"]),
    ("slot", &["extra-mount-opts", "extra-mkfs-opts", "ignore-checksum", "force-install-same", "size-limit"]),
];

/// RAUC's sections this agent does not support.
const RAUC_UNSUPPORTED_SECTIONS: &[&str] = &["casync", "encryption", "autoinstall", "artifacts", "log"];

/// Whether this agent reads a key (`section` is `slot` for every slot section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Read and honoured.
    Supported,
    /// RAUC's key, refused by name when loaded.
    Unsupported,
    /// Not a key of that section.
    Unknown,
}

/// Whether `[section] key` is read, refused as a RAUC key this agent does not support, or
/// unknown. A key of an unsupported section (`[casync]`) is [`Support::Unsupported`].
pub fn support(section: &str, key: &str) -> Support {
    let read = if section == "slot" {
        SLOT_KEYS
    } else {
        KEYS.iter().find(|(g, _)| *g == section).map_or(&[][..], |(_, k)| *k)
    };
    if read.contains(&key) {
        Support::Supported
    } else if RAUC_UNSUPPORTED.iter().any(|(g, k)| *g == section && k.contains(&key))
        || RAUC_UNSUPPORTED_SECTIONS.contains(&section)
    {
        Support::Unsupported
    } else {
        Support::Unknown
    }
}

/// Every `(section, key)` this agent knows: those it reads and RAUC's it refuses.
pub fn known_keys() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = KEYS.iter().flat_map(|(g, k)| k.iter().map(move |k| (*g, *k))).collect();
    out.extend(SLOT_KEYS.iter().map(|k| ("slot", *k)));
    out.extend(RAUC_UNSUPPORTED.iter().flat_map(|(g, k)| k.iter().map(move |k| (*g, *k))));
    out
}

/// The closest of `candidates` to `word`, if close enough to be a typo.
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&word.to_ascii_lowercase(), c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(super) fn check_section(name: &str) -> Result<(), String> {
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
pub(super) fn apply_entry(c: &mut Config, group: &str, key: &str, v: &str, path: &Path) -> Result<(), String> {
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
                "barebox" => BootloaderKind::Barebox,
                "custom" => BootloaderKind::Custom,
                "noop" => BootloaderKind::Noop,
                "efi" => BootloaderKind::Efi,
                _ => return Err(format!("{k}={v}: grub, uboot, barebox, efi, custom or noop")),
            }
        }
        ("system", "statusfile") => {
            c.statusfile = match v {
                "per-slot" => StatusFile::PerSlot,
                _ if v.ends_with('/') || v.ends_with(".lock") || v.ends_with("/.") || v.ends_with("/..") => {
                    return Err(format!("{k}={v}: a file of its own (not a directory, not a name ending in .lock)"))
                }
                _ => StatusFile::File(path_value(path, &k, v)?),
            }
        }
        ("system", "activate-installed") => c.activate_installed = flag(&k, v)?,
        ("system", "efi-use-bootnext") => c.efi_use_bootnext = flag(&k, v)?,
        ("system", "barebox-statename") if v.is_empty() => return Err(format!("{k}: empty")),
        ("system", "barebox-statename") => c.barebox_statename = Some(v.to_string()),
        ("system", "barebox-dtbpath") => c.barebox_dtbpath = Some(path_value(path, &k, v)?),
        ("system", "grubenv") => c.grubenv = path_value(path, &k, v)?,
        ("system", "data-directory") => c.data_directory = path_value(path, &k, v)?,
        ("system", "boot-attempts") => c.boot_attempts = attempts(v).ok_or_else(|| format!("{k}={v}: 1 to 255"))?,
        ("system", "boot-attempts-primary") => {
            c.boot_attempts_primary = attempts(v).ok_or_else(|| format!("{k}={v}: 1 to 255"))?
        }
        ("system", "bundle-formats") => c.bundle_formats = bundle_formats(v)?,
        ("system", "min-bundle-version") => {
            // At least one number to compare (as `install::admit::version_parts` reads it).
            if !v.split(|c: char| !c.is_ascii_digit()).any(|p| p.parse::<u64>().is_ok()) {
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
        ("handlers", "system-info") => c.handlers.system_info = Some(path_value(path, &k, v)?),
        ("handlers", "pre-install") => c.handlers.pre_install = Some(path_value(path, &k, v)?),
        ("handlers", "post-install") => c.handlers.post_install = Some(path_value(path, &k, v)?),
        ("uboot", "env-config") => c.uboot_env_config = path_value(path, &k, v)?,
        ("install", "verify-written") => c.verify_written = flag(&k, v)?,
        ("install", "hook-timeout") => c.hook_timeout = seconds(&k, v)?,
        ("system", "mountprefix") => c.mount_prefix = path_value(path, &k, v)?,
        ("system", "bundle-hooks") => {
            c.bundle_hooks = match v {
                "run" => BundleHooksPolicy::Run,
                "refuse" => BundleHooksPolicy::Refuse,
                _ => return Err(format!("{k}={v}: run or refuse")),
            }
        }
        ("streaming", "tls-ca") => c.download.tls_ca = Some(path_value(path, &k, v)?),
        ("streaming", "tls-cert") => c.download.tls_cert = Some(path_value(path, &k, v)?),
        ("streaming", "tls-key") => c.download.tls_key = Some(path_value(path, &k, v)?),
        ("download", "connect-timeout") => c.download.connect_timeout = seconds(&k, v)?,
        ("download", "idle-timeout") => c.download.idle_timeout = seconds(&k, v)?,
        ("download", "retry-delay") => c.download.retry_delay = seconds(&k, v)?,
        ("download", "retries") => c.download.retries = v.parse().map_err(|_| format!("{k}={v}: a count"))?,
        ("download", "max-redirects") => {
            c.download.max_redirects = v.parse().map_err(|_| format!("{k}={v}: a count"))?
        }
        ("download", "allow-tls-no-verify") => c.download.allow_tls_no_verify = flag(&k, v)?,
        (g, _) if g.starts_with("slot.") => {
            if !slot_key(&mut c.slots, g, key, v, path)? {
                return Err(unknown_key(g, key));
            }
        }
        (g, _) => return Err(unknown_key(g, key)),
    }
    Ok(())
}

/// A duration in seconds (decimals allowed), more than 0 and at most a day.
fn seconds(key: &str, v: &str) -> Result<std::time::Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0 && *s <= 86400.0)
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{key}={v}: seconds, more than 0 and at most 86400"))
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
fn slot_key(slots: &mut Vec<SlotConf>, group: &str, key: &str, value: &str, conf: &Path) -> Result<bool, String> {
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
            allow_mounted: false,
            resize: false,
            region: None,
        });
    }
    let s = slots.iter_mut().find(|s| s.name == name).expect("just added");
    let flag = |v: &str| bool_value(v).ok_or_else(|| format!("[{group}] {key}={v}: true or false"));
    match key {
        "device" if value.is_empty() => return Err(format!("[{group}] device: empty")),
        // As RAUC (resolve_path): relative to the configuration's directory.
        "device" => s.device = relative_to(conf, value),
        "type" => {
            s.kind = match SlotType::ALL.into_iter().find(|t| t.name() == value) {
                Some(t) => t,
                None if RAUC_TYPES_NOT_YET.contains(&value) => {
                    return Err(format!("[{group}] type={value}: RAUC's slot type is not supported by henb-update yet"))
                }
                None => {
                    let names: Vec<&str> = SlotType::ALL.iter().map(|t| t.name()).collect();
                    return Err(format!("[{group}] type={value}: one of {}", names.join(", ")));
                }
            }
        }
        "allow-mounted" => s.allow_mounted = flag(value)?,
        "resize" => s.resize = flag(value)?,
        "region-start" | "region-size" => {
            let n = size_value(value).ok_or_else(|| {
                format!("[{group}] {key}={value}: bytes, with an optional K, M or G suffix (powers of 1024)")
            })?;
            let r = s.region.get_or_insert(Region { start: u64::MAX, size: 0 });
            if key == "region-start" {
                r.start = n
            } else {
                r.size = n
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

/// RAUC's slot types not installed by this agent yet: an error that says so.
const RAUC_TYPES_NOT_YET: &[&str] = &["boot-emmc"];

/// RAUC's size values (`region-start=1M`): decimal bytes, or with a `K`, `M` or `G`
/// suffix for 1024, 1024², 1024³ (RAUC's `g_ascii_strtoull` and suffix, src/config_file.c).
fn size_value(v: &str) -> Option<u64> {
    let (digits, unit) = match v.char_indices().last()? {
        (i, 'K' | 'k') => (&v[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&v[..i], 1 << 20),
        (i, 'G' | 'g') => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Checks across slot sections; each problem at the line of the section it is about.
pub(super) fn check_slots(c: &Config, kf: &KeyFile) -> Vec<Problem> {
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
        match (s.kind.has_region(), s.region) {
            (true, None) => bad("type", format!("[{group}] type={} needs region-start and region-size", s.kind.name())),
            (true, Some(r)) if r.start == u64::MAX => bad("region-size", format!("[{group}] has no region-start")),
            (true, Some(r)) if r.size == 0 => bad("region-start", format!("[{group}] has no region-size (or it is 0)")),
            (true, Some(r)) if r.start % 512 != 0 || r.size % 1024 != 0 => bad(
                "region-start",
                format!(
                    "[{group}] region-start={} region-size={}: the start must be a multiple of 512 bytes and the size of 1024 (two halves of whole sectors)",
                    r.start, r.size
                ),
            ),
            (true, Some(r)) if r.start.checked_add(r.size).is_none() => {
                bad("region-size", format!("[{group}] region-start + region-size is beyond any device"))
            }
            (false, Some(_)) => {
                bad("region-start", format!("[{group}] region-start and region-size are for the boot-*-switch and boot-raw-fallback types"))
            }
            _ => {}
        }
        if s.resize && s.kind != SlotType::Ext4 {
            bad("resize", format!("[{group}] resize=true is for ext4 slots (type={})", s.kind.name()));
        }
        if s.kind.has_region() && s.bootname.is_some() {
            bad("bootname", format!("[{group}] a boot region ({}) is not a bootable slot: no bootname", s.kind.name()));
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
