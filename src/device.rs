//! The edges' facade (the command line and the D-Bus service share it): the device opened
//! from the configuration (the booted slot and its bootloader, the TPM owner task, the
//! trust anchors; [`SetupError`] when it cannot be), and the use cases built on it, each a
//! call into [`crate::install`]: one install of an open package file end to end, an
//! inspection, `mark`, settling a fallback, raising the anti-rollback minimum.

use crate::bootloader;
use crate::config::{BootloaderKind, Config, SlotConf};
use crate::fault::{CwmpFault, Failure, Fault};
use crate::install::{self, Installed, Plan, Progress, Request};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why the device could not be opened from its configuration: the agent could not check
/// (9002), and says what it could not open.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Which slot is booted cannot be told.
    #[error(transparent)]
    Slot(#[from] crate::slot::SlotError),
    /// The bootloader backend cannot be opened.
    #[error(transparent)]
    Bootloader(#[from] bootloader::BootError),
    /// The TPM cannot be set up (configuration, owner authorization) or used.
    #[error("{0}")]
    Tpm(String),
    /// The TPM does not answer.
    #[error("{0}")]
    TpmUnreachable(String),
    /// No trust anchors (keyring unreadable, TPM root store empty).
    #[error("{0}")]
    TrustAnchors(String),
    /// A configured CRL cannot be read.
    #[error("{0}")]
    Crl(String),
    /// The device's variant (`[system] variant-*`) cannot be read.
    #[error("device variant: {0}")]
    Variant(String),
}

impl Fault for SetupError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Slot(_) => "slot",
            Self::Bootloader(_) => "bootloader",
            Self::Tpm(_) => "tpm",
            Self::TpmUnreachable(_) => "tpm-unreachable",
            Self::TrustAnchors(_) => "no-trust-anchors",
            Self::Crl(_) => "crl",
            Self::Variant(_) => "variant",
        }
    }
    fn fault(&self) -> CwmpFault {
        CwmpFault::InternalError
    }
}

impl From<SetupError> for Failure {
    fn from(e: SetupError) -> Self {
        Failure::from_fault(&e)
    }
}

/// The booted slot: `--override-boot-slot`, else the kernel command line, the
/// bootloader (barebox's `bootchooser.active=`, EFI's `BootCurrent`) and `root=`, as
/// [`crate::slot::booted`] orders them.
pub fn booted<'a>(conf: &'a Config, override_boot: Option<&str>) -> Result<&'a SlotConf, SetupError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let explicit = override_boot.is_some() || cmdline.split_whitespace().any(|t| t.starts_with("rauc.slot="));
    let says = match conf.bootloader {
        _ if explicit => None,
        BootloaderKind::Barebox => crate::slot::barebox_active(&cmdline).map(str::to_string),
        // Asked only when the command line does not say.
        BootloaderKind::Efi => {
            bootloader::efi::current(&conf.slots).map_err(|e| tracing::info!("EFI BootCurrent: {e}")).ok().flatten()
        }
        _ => None,
    };
    let resolve = |p: &Path| -> Option<PathBuf> {
        let s = p.to_str()?;
        let p = if let Some(u) = s.strip_prefix("PARTUUID=") {
            PathBuf::from(format!("/dev/disk/by-partuuid/{}", u.to_ascii_lowercase()))
        } else if let Some(u) = s.strip_prefix("UUID=") {
            PathBuf::from(format!("/dev/disk/by-uuid/{u}"))
        } else {
            p.to_path_buf()
        };
        std::fs::canonicalize(p).ok()
    };
    Ok(crate::slot::booted(&conf.slots, &cmdline, override_boot, says.as_deref(), &resolve)?)
}

/// The bootloader backend of the booted slot's class.
pub fn bootloader(conf: &Config, booted: &SlotConf) -> Result<Box<dyn bootloader::Bootloader>, SetupError> {
    Ok(bootloader::open(conf, &booted.class)?)
}

/// A secret the agent reads (the owner authorization): a regular file, owned by the
/// agent's user (root on a device), readable by nobody else. Anything looser is refused
/// before it is read, so a misconfigured image fails at the factory, not in the field.
fn check_secret_file(p: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p)?;
    let euid = nix::unistd::geteuid().as_raw();
    if !m.file_type().is_file() {
        anyhow::bail!("not a regular file (a symlink or another kind)");
    }
    if m.uid() != euid {
        anyhow::bail!("owned by uid {}, not by the agent's uid {euid}", m.uid());
    }
    if m.mode() & 0o077 != 0 {
        anyhow::bail!("mode {:o}: group or others may read it; chmod 0600", m.mode() & 0o7777);
    }
    Ok(())
}

/// The salt key's pinned name, in the data directory (see [`crate::tpm::TpmConfig`]).
pub const SALT_KEY_PIN: &str = "tpm-salt-key.name";

/// The TPM owner task and the NV layout from the configuration.
pub fn tpm_owner(
    conf: &Config,
) -> anyhow::Result<(crate::tpm::owner::TpmOwner, crate::trust::store::RootStore, crate::rollback::Counter)> {
    use anyhow::Context as _;
    let t = &conf.tpm;
    let mut tc =
        crate::tpm::TpmConfig { salt_key_pin: Some(conf.data_directory.join(SALT_KEY_PIN)), ..Default::default() };
    if let Some(tcti) = &t.tcti {
        tc.tcti = tcti.clone();
    }
    if let Some(p) = &t.owner_auth_file {
        check_secret_file(p).with_context(|| format!("owner authorization {}", p.display()))?;
        let mut a = std::fs::read(p).with_context(|| format!("owner authorization {}", p.display()))?;
        if a.last() == Some(&b'\n') {
            a.pop();
        }
        tc.owner_auth = a;
    }
    if conf.measured_boot.is_some() && tc.owner_auth.is_empty() && !t.allow_empty_owner_auth {
        anyhow::bail!("{}", crate::config::EMPTY_OWNER_AUTH);
    }
    let mut store = crate::trust::store::RootStore::default();
    if let Some(i) = t.root_index {
        store.first = i;
    }
    if let Some(n) = t.root_slots {
        store.slots = n;
    }
    let mut counter = crate::rollback::Counter::default();
    if let Some(i) = t.counter_index {
        counter.index = i;
    }
    Ok((crate::tpm::owner::TpmOwner::shared(tc), store, counter))
}

/// The TPM as the post-boot steps need it: for measured boot, and for anti-rollback
/// unless a keyring stands in for the TPM's roots.
///
/// Errors: a TPM the device needs that cannot be set up (its owner authorization file
/// unreadable) is [`SetupError::Tpm`] (9002): the minimum and the policy cannot be
/// checked, so nothing that depends on them goes ahead.
#[allow(clippy::type_complexity)]
pub fn tpm_for_confirm(
    conf: &Config,
) -> Result<(Option<crate::tpm::owner::TpmOwner>, Option<crate::rollback::Counter>), SetupError> {
    if conf.measured_boot.is_none() && conf.keyring.is_some() {
        return Ok((None, None));
    }
    let (owner, _, counter) = tpm_owner(conf).map_err(|e| SetupError::Tpm(format!("TPM: {e:#}")))?;
    Ok((Some(owner), conf.keyring.is_none().then_some(counter)))
}

/// `security-version --raise N`: raise the anti-rollback minimum and enforce it on the
/// slots at once (see [`crate::install::confirm::Booted::raise_minimum`]), under the install lock.
/// Without configured slots only the counter is raised. Returns the minimum now held and
/// the booted slot's shortfall, if any.
pub fn raise_minimum(
    conf: &Config,
    override_boot: Option<&str>,
    target: u64,
) -> Result<(u64, Option<crate::install::admit::BelowMinimum>), Failure> {
    if conf.keyring.is_some() {
        let e = crate::install::confirm::ConfirmError::NoCounter;
        return Err(Failure::from_fault(&e));
    }
    if conf.slots.is_empty() {
        let (owner, _, counter) = tpm_owner(conf).map_err(|e| SetupError::Tpm(format!("TPM: {e:#}")))?;
        let min = owner
            .call(move |t| counter.raise(t, target))
            .map_err(|e| Failure::from_fault(&crate::measured_boot::MeasuredBootError::from(e)))?;
        return Ok((min, None));
    }
    let booted = booted(conf, override_boot)?;
    let _lock = install::lock(&conf.data_directory).map_err(|e| Failure::from_fault(&e))?;
    let mut bl = bootloader(conf, booted)?;
    let (tpm, counter) = tpm_for_confirm(conf)?;
    let mut dev = crate::install::confirm::Booted { conf, slot: booted, bootloader: bl.as_mut(), tpm, counter };
    dev.raise_minimum(target).map_err(|e| Failure::from_fault(&e))
}

/// Trust anchors and the anti-rollback minimum: from the TPM, unless a keyring is named
/// explicitly (build hosts, development), in which case anti-rollback is not enforced.
pub fn trust_state(
    conf: &Config,
    keyring: Option<std::path::PathBuf>,
) -> Result<(crate::trust::Anchors, Option<u64>), SetupError> {
    let (mut anchors, minimum) = trust_anchors(conf, keyring)?;
    let crls = conf.load_crls().map_err(SetupError::Crl)?;
    anchors.add_crls(crls);
    Ok((anchors, minimum))
}

fn trust_anchors(
    conf: &Config,
    keyring: Option<std::path::PathBuf>,
) -> Result<(crate::trust::Anchors, Option<u64>), SetupError> {
    use crate::tpm::TpmError;
    use crate::trust::store::StoreError;
    use crate::trust::{Anchors, TrustSource};
    if let Some(keyring) = keyring.or_else(|| conf.keyring.clone()) {
        let anchors = std::fs::read(&keyring)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                Anchors::from_pem(&t, TrustSource::Keyring(keyring.display().to_string())).map_err(|e| e.to_string())
            })
            .map_err(|e| SetupError::TrustAnchors(format!("keyring {}: {e}", keyring.display())))?;
        return Ok((anchors, None));
    }
    let (owner, store, counter) = tpm_owner(conf).map_err(|e| SetupError::Tpm(format!("{e:#}")))?;
    owner.call(move |t| Ok::<_, StoreError>((store.anchors(t)?, counter.minimum(t)?))).map(|(a, m)| (a, Some(m))).map_err(|e| {
        let message = format!(
            "could not check: {e} (trust anchors come from the TPM; provision it with 'henb-update trust provision', or name a keyring)"
        );
        match e {
            StoreError::Tpm(TpmError::Unreachable { .. }) => SetupError::TpmUnreachable(message),
            StoreError::Anchors(_) => SetupError::TrustAnchors(message),
            _ => SetupError::Tpm(message),
        }
    })
}

/// What an install ended with, in CWMP terms (see [`install::Outcome`]).
#[derive(Debug)]
pub struct InstallReport {
    /// The install's result.
    pub result: Result<Installed, Failure>,
    /// The result queued for TransferComplete, when it is decided now.
    pub transfer: Option<crate::status::InstallResult>,
}

/// One install of `file` (already open; the only handle used) into the inactive slot
/// group: trust anchors, the measured-boot approver and the bootloader set up from the
/// configuration, then [`install::install`].
pub fn install_file(
    conf: &Config,
    booted: &SlotConf,
    req: Request,
    progress: &mut dyn FnMut(Progress),
) -> InstallReport {
    let setup = || -> Result<_, Failure> {
        let bl = bootloader(conf, booted)?;
        let (anchors, minimum) = trust_state(conf, None)?;
        let approver = match crate::measured_boot::MeasuredBoot::from_config(conf) {
            Some(mb) => match tpm_owner(conf) {
                Ok((owner, _, _)) => Some(crate::measured_boot::Approver { owner, mb }),
                Err(e) => return Err(SetupError::Tpm(format!("{e:#}")).into()),
            },
            None => None,
        };
        Ok((bl, anchors, minimum, approver))
    };
    let (mut bl, anchors, minimum, approver) = match setup() {
        Ok(s) => s,
        Err(f) => return InstallReport { result: Err(f), transfer: None },
    };
    let plan = Plan { conf, booted, anchors: &anchors, minimum, now: SystemTime::now(), measured: approver.as_ref() };
    let o = install::install(&plan, bl.as_mut(), req, progress);
    InstallReport { result: o.result.map_err(|e| Failure::from_fault(&e)), transfer: o.transfer }
}

/// `mark good|bad|active` of a slot (`booted`, `other`, a slot name or a bootname), as
/// RAUC's Mark: the slot's name and a message. Refusals (no such slot, a slot that does
/// not measure as its reference values) are 9001; the rest could not be done. With them,
/// the Download that confirming the booted slot completed, if any.
pub fn mark(conf: &Config, override_boot: Option<&str>, state: &str, which: &str) -> MarkReport {
    let mut transfer = None;
    let result = mark_slot(conf, override_boot, state, which, &mut transfer);
    MarkReport { result, transfer }
}

fn mark_slot(
    conf: &Config,
    override_boot: Option<&str>,
    state: &str,
    which: &str,
    transfer: &mut Option<crate::status::InstallResult>,
) -> Result<Marked, Failure> {
    let booted = booted(conf, override_boot)?;
    let slot = named_slot(conf, booted, which)?;
    let bootname = slot
        .bootname
        .clone()
        .ok_or_else(|| Failure::new("slot", CwmpFault::RequestDenied, format!("slot {} has no bootname", slot.name)))?;
    if !["good", "bad", "active"].contains(&state) {
        return Err(Failure::new(
            "invalid",
            CwmpFault::InvalidArguments,
            format!("unknown state '{state}' (good, bad or active)"),
        ));
    }
    // One writer of slots and the boot order at a time: a running install answers busy.
    let _lock = install::lock(&conf.data_directory).map_err(|e| Failure::from_fault(&e))?;
    let mut bl = bootloader(conf, booted)?;
    let (tpm, counter) = tpm_for_confirm(conf)?;
    let mut dev = crate::install::confirm::Booted { conf, slot: booted, bootloader: bl.as_mut(), tpm, counter };
    let r = match state {
        "good" if slot.name == booted.name => dev.mark_good().and_then(|c| {
            *transfer = c.transfer;
            c.retired
        }),
        "good" => dev.mark_good_other(slot),
        "bad" => dev.mark_bad(slot),
        _ => dev.mark_active(slot),
    };
    r.map_err(|e| Failure::from_fault(&e))?;
    Ok(Marked { slot: slot.name.clone(), message: format!("marked slot {} ({bootname}) {state}", slot.name) })
}

/// The slot a command line names: `booted` (or nothing), `other` (the target group's
/// root), a slot name or a bootname.
fn named_slot<'c>(conf: &'c Config, booted: &'c SlotConf, which: &str) -> Result<&'c SlotConf, Failure> {
    let slot = match which {
        "booted" | "" => Some(booted),
        "other" => crate::slot::target(&conf.slots, booted).ok().map(|t| t[0]),
        s => conf.slots.iter().find(|x| x.name == s || x.bootname.as_deref() == Some(s)),
    };
    slot.ok_or_else(|| Failure::new("slot", CwmpFault::RequestDenied, format!("no slot '{which}'")))
}

/// `slot index [SLOT]`: hash the whole 4 KiB blocks of a slot (default: the booted one)
/// and store them as its block-hash index (`hash-unknown`), for adaptive updates from a
/// slot no install wrote (the factory image). Returns the slot's name and its blocks.
///
/// Errors: [`Failure`] when the slot is unknown, another install runs, or the device or
/// the data directory cannot be used.
pub fn index_slot(conf: &Config, override_boot: Option<&str>, which: &str) -> Result<(String, u64), Failure> {
    let slot = named_slot(conf, booted(conf, override_boot)?, which)?;
    let _lock = install::lock(&conf.data_directory).map_err(|e| Failure::from_fault(&e))?;
    let failed = |e: std::io::Error| Failure::new("io", CwmpFault::InternalError, format!("slot {}: {e}", slot.name));
    let (_, blocks) = crate::slot::index::index_device(&conf.data_directory, slot, true).map_err(failed)?;
    Ok((slot.name.clone(), blocks))
}

/// What `mark` ended with: its result, and the Download that confirming the booted slot
/// completed (queued for TransferComplete), even when a later step of `mark` failed.
#[derive(Debug)]
pub struct MarkReport {
    /// The result.
    pub result: Result<Marked, Failure>,
    /// The completed Download, if any.
    pub transfer: Option<crate::status::InstallResult>,
}

/// What `mark` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// The slot's name.
    pub slot: String,
    /// What was done, for people.
    pub message: String,
}

/// Verify a package completely without installing it (the whole verity tree too), against
/// the configured anchors.
pub fn inspect(conf: &Config, input: install::Input) -> Result<crate::package::Package, Failure> {
    use crate::package::{self, Context, NullSink};
    let (anchors, _) = trust_state(conf, None)?;
    let src = open_input(conf, input)?;
    let ctx = Context {
        anchors: &anchors,
        policy: conf.policy.clone(),
        now: SystemTime::now(),
        variant: conf.variant().map_err(SetupError::Variant)?,
        install_images_only: false,
        check_whole_tree: true,
        check_ahead: false,
    };
    let fail = |e: crate::package::PackageError| Failure::from_fault(&src.explain(e));
    let a = package::authenticate(src.source(), &ctx).map_err(fail)?;
    crate::install::admit::inspect(a.package(), conf.compatible.as_deref(), None)
        .map_err(|e| Failure::from_fault(&e))?;
    a.stream(&mut NullSink).map_err(fail)
}

/// Open a package to read it without installing (`info`, InspectBundle): a local file
/// as it is, a URL with the configuration's `[download]` settings.
pub fn open_input(conf: &Config, input: install::Input) -> Result<install::Opened, Failure> {
    use std::sync::Arc;
    match input {
        install::Input::File(file) => crate::source::FileSource::new(file)
            .map(|f| install::Opened::File(Arc::new(f)))
            .map_err(|e| Failure::new("access", CwmpFault::UnableToAccessFile, e.to_string())),
        install::Input::Remote(r) => crate::download::RemoteSource::open(&r, &conf.download)
            .map(|r| install::Opened::Remote(Arc::new(r)))
            .map_err(|e| Failure::from_fault(&e)),
    }
}

/// Settle a pending install the bootloader gave up on (ActivationFailed), without the PCR
/// check (`boot-check` does that): what the service does when it starts.
pub fn settle(conf: &Config, override_boot: Option<&str>) -> Result<(), Failure> {
    let booted = booted(conf, override_boot)?;
    let mut bl = bootloader(conf, booted)?;
    let (tpm, counter) = tpm_for_confirm(conf)?;
    let mut dev = crate::install::confirm::Booted { conf, slot: booted, bootloader: bl.as_mut(), tpm, counter };
    dev.settle().map(|_| ()).map_err(|e| Failure::from_fault(&e))
}
