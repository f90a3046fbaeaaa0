//! The device as the edges (the command line, the D-Bus service) open it from the
//! configuration: the booted slot and its bootloader, the TPM owner task, the trust
//! anchors, and one install of an open package file end to end.

use crate::bootloader;
use crate::config::{Config, SlotConf};
use crate::fault::Fault;
use crate::install::{self, Installed, Plan, Progress, Request};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The booted slot: `--override-boot-slot`, else the kernel command line.
pub fn booted<'a>(conf: &'a Config, override_boot: Option<&str>) -> Result<&'a SlotConf, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
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
    crate::slot::booted(&conf.slots, &cmdline, override_boot, &resolve).map_err(|e| e.to_string())
}

/// The bootloader backend of the booted slot's class.
pub fn bootloader(conf: &Config, booted: &SlotConf) -> Result<Box<dyn bootloader::Bootloader>, String> {
    bootloader::open(conf, &booted.class).map_err(|e| e.to_string())
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
/// unreadable) is a [`Failure`] (`tpm`, 9002): the minimum and the policy cannot be
/// checked, so nothing that depends on them goes ahead.
#[allow(clippy::type_complexity)]
pub fn tpm_for_confirm(
    conf: &Config,
) -> Result<(Option<crate::tpm::owner::TpmOwner>, Option<crate::rollback::Counter>), Failure> {
    if conf.measured_boot.is_none() && conf.keyring.is_some() {
        return Ok((None, None));
    }
    let (owner, _, counter) = tpm_owner(conf).map_err(|e| Failure::new("tpm", 9002, format!("TPM: {e:#}")))?;
    Ok((Some(owner), conf.keyring.is_none().then_some(counter)))
}

/// `security-version --raise N`: raise the anti-rollback minimum and enforce it on the
/// slots at once (see [`crate::confirm::Booted::raise_minimum`]), under the install lock.
/// Without configured slots only the counter is raised. Returns the minimum now held and
/// the booted slot's shortfall, if any.
pub fn raise_minimum(
    conf: &Config,
    override_boot: Option<&str>,
    target: u64,
) -> Result<(u64, Option<crate::rollback::BelowMinimum>), Failure> {
    if conf.keyring.is_some() {
        let e = crate::confirm::ConfirmError::NoCounter;
        return Err(Failure::from_fault(&e));
    }
    if conf.slots.is_empty() {
        let (owner, _, counter) = tpm_owner(conf).map_err(|e| Failure::new("tpm", 9002, format!("TPM: {e:#}")))?;
        let min = owner
            .call(move |t| counter.raise(t, target))
            .map_err(|e| Failure::from_fault(&crate::measured_boot::MeasuredBootError::from(e)))?;
        return Ok((min, None));
    }
    let booted = booted(conf, override_boot).map_err(|e| Failure::new("slot", 9002, e))?;
    let _lock = install::lock(&conf.data_directory).map_err(|e| Failure::from_fault(&e))?;
    let mut bl = bootloader(conf, booted).map_err(|e| Failure::new("bootloader", 9002, e))?;
    let (tpm, counter) = tpm_for_confirm(conf)?;
    let mut dev = crate::confirm::Booted { conf, slot: booted, bootloader: bl.as_mut(), tpm, counter };
    dev.raise_minimum(target).map_err(|e| Failure::from_fault(&e))
}

/// A failure to set up verification: could not check.
pub struct SetupFailure {
    /// Stable kind.
    pub kind: &'static str,
    /// CWMP fault code.
    pub fault: u32,
    /// Message.
    pub message: String,
}

/// Trust anchors and the anti-rollback minimum: from the TPM, unless a keyring is named
/// explicitly (build hosts, development), in which case anti-rollback is not enforced.
pub fn trust_state(
    conf: &Config,
    keyring: Option<std::path::PathBuf>,
) -> Result<(crate::trust::Anchors, Option<u64>), SetupFailure> {
    let (mut anchors, minimum) = trust_anchors(conf, keyring)?;
    let crls = conf.load_crls().map_err(|message| SetupFailure { kind: "crl", fault: 9002, message })?;
    anchors.add_crls(crls);
    Ok((anchors, minimum))
}

fn trust_anchors(
    conf: &Config,
    keyring: Option<std::path::PathBuf>,
) -> Result<(crate::trust::Anchors, Option<u64>), SetupFailure> {
    use crate::tpm::TpmError;
    use crate::trust::store::StoreError;
    use crate::trust::{Anchors, TrustSource};
    if let Some(keyring) = keyring.or_else(|| conf.keyring.clone()) {
        let anchors = std::fs::read(&keyring)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                Anchors::from_pem(&t, TrustSource::Keyring(keyring.display().to_string())).map_err(|e| e.to_string())
            })
            .map_err(|e| SetupFailure {
                kind: "no-trust-anchors",
                fault: 9002,
                message: format!("keyring {}: {e}", keyring.display()),
            })?;
        return Ok((anchors, None));
    }
    let (owner, store, counter) =
        tpm_owner(conf).map_err(|e| SetupFailure { kind: "tpm", fault: 9002, message: format!("{e:#}") })?;
    owner.call(move |t| Ok::<_, StoreError>((store.anchors(t)?, counter.minimum(t)?))).map(|(a, m)| (a, Some(m))).map_err(|e| {
        let kind = match e {
            StoreError::Tpm(TpmError::Unreachable { .. }) => "tpm-unreachable",
            StoreError::Anchors(_) => "no-trust-anchors",
            _ => "tpm",
        };
        SetupFailure {
            kind,
            fault: 9002,
            message: format!(
                "could not check: {e} (trust anchors come from the TPM; provision it with 'henb-update trust provision', or name a keyring)"
            ),
        }
    })
}

/// Why an install did not happen, in CWMP terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable kind.
    pub kind: String,
    /// CWMP fault code.
    pub fault: u32,
    /// Message.
    pub message: String,
}

impl Failure {
    fn new(kind: &str, fault: u32, message: impl Into<String>) -> Self {
        Self { kind: kind.into(), fault, message: message.into() }
    }

    /// Refused (the package or request), as opposed to could not check.
    pub fn refused(&self) -> bool {
        !matches!(self.fault, 9002 | 9016)
    }

    /// From any module's error.
    pub fn from_fault(e: &dyn Fault) -> Self {
        Self::new(e.kind(), e.fault().code(), e.to_string())
    }
}

/// One install of `file` (already open; the only handle used) into the inactive slot
/// group: trust anchors, the measured-boot approver and the bootloader set up from the
/// configuration, then [`install::install`].
pub fn install_file(
    conf: &Config,
    booted: &SlotConf,
    req: Request,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, Failure> {
    let mut bl = bootloader(conf, booted).map_err(|e| Failure::new("bootloader", 9002, e))?;
    let (anchors, minimum) = trust_state(conf, None).map_err(|f| Failure::new(f.kind, f.fault, f.message))?;
    let approver = match crate::measured_boot::MeasuredBoot::from_config(conf) {
        Some(mb) => match tpm_owner(conf) {
            Ok((owner, _, _)) => Some(crate::measured_boot::Approver { owner, mb }),
            Err(e) => return Err(Failure::new("tpm", 9002, format!("{e:#}"))),
        },
        None => None,
    };
    let plan = Plan { conf, booted, anchors: &anchors, minimum, now: SystemTime::now(), measured: approver.as_ref() };
    install::install(&plan, bl.as_mut(), req, progress)
        .map_err(|e| Failure::new(e.kind(), e.fault().code(), e.to_string()))
}

/// `mark good|bad|active` of a slot (`booted`, `other`, a slot name or a bootname), as
/// RAUC's Mark: returns the slot's name and a message. Refusals (no such slot, a slot
/// that does not measure as its reference values) are 9001; the rest could not be done.
pub fn mark(conf: &Config, override_boot: Option<&str>, state: &str, which: &str) -> Result<(String, String), Failure> {
    let booted = booted(conf, override_boot).map_err(|e| Failure::new("slot", 9002, e))?;
    let slot = match which {
        "booted" | "" => Some(booted),
        "other" => crate::slot::target(&conf.slots, booted).ok().map(|t| t[0]),
        s => conf.slots.iter().find(|x| x.name == s || x.bootname.as_deref() == Some(s)),
    };
    let slot = slot.ok_or_else(|| Failure::new("slot", 9001, format!("no slot '{which}'")))?;
    let bootname = slot
        .bootname
        .clone()
        .ok_or_else(|| Failure::new("slot", 9001, format!("slot {} has no bootname", slot.name)))?;
    if !["good", "bad", "active"].contains(&state) {
        return Err(Failure::new("invalid", 9003, format!("unknown state '{state}' (good, bad or active)")));
    }
    // One writer of slots and the boot order at a time: a running install answers busy.
    let _lock = install::lock(&conf.data_directory).map_err(|e| Failure::from_fault(&e))?;
    let mut bl = bootloader(conf, booted).map_err(|e| Failure::new("bootloader", 9002, e))?;
    let (tpm, counter) = tpm_for_confirm(conf)?;
    let mut dev = crate::confirm::Booted { conf, slot: booted, bootloader: bl.as_mut(), tpm, counter };
    let r = match state {
        "good" if slot.name == booted.name => dev.mark_good(),
        "good" => dev.mark_good_other(slot),
        "bad" => dev.mark_bad(slot),
        _ => dev.mark_active(slot),
    };
    r.map_err(|e| Failure::from_fault(&e))?;
    Ok((slot.name.clone(), format!("marked slot {} ({bootname}) {state}", slot.name)))
}

/// One slot as the D-Bus layer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    /// `rootfs.0`.
    pub name: String,
    /// Class.
    pub class: String,
    /// Device path.
    pub device: String,
    /// Slot type (`ext4`, `raw`, ...).
    pub kind: String,
    /// Bootname.
    pub bootname: Option<String>,
    /// Parent slot name.
    pub parent: Option<String>,
    /// The booted slot (or its group).
    pub booted: bool,
    /// The bootloader's primary.
    pub primary: bool,
    /// `good` or `bad` from the bootloader, if it has a bootname.
    pub boot_status: Option<String>,
    /// TR-181 status.
    pub status: String,
    /// Installed version.
    pub version: Option<String>,
    /// Installed image's SHA-256.
    pub sha256: Option<String>,
    /// Unix seconds.
    pub installed_at: Option<u64>,
    /// The last failure on this slot (ActivationFailed), for BootFailureLog.
    pub failure: Option<String>,
}

/// Every slot with what the bootloader and the status file say about it.
pub fn slot_views(conf: &Config, override_boot: Option<&str>) -> Result<Vec<SlotView>, Failure> {
    use crate::status::{FirmwareStatus, Status};
    let booted = booted(conf, override_boot).map_err(|e| Failure::new("slot", 9002, e))?;
    let status = Status::load(&conf.data_directory).map_err(|e| Failure::from_fault(&e))?;
    let mut bl = bootloader(conf, booted).map_err(|e| Failure::new("bootloader", 9002, e))?;
    let primary = bl.primary().map_err(|e| Failure::new("bootloader", 9002, e.to_string()))?;
    let failure = status.last_result.as_ref().filter(|r| r.kind == "activation-failed");
    Ok(conf
        .slots
        .iter()
        .map(|s| {
            let is_booted = s.name == booted.name || s.parent.as_deref() == Some(booted.name.as_str());
            let st = status.slots.get(&s.name);
            let fw = st.map(|x| x.status).unwrap_or(if is_booted {
                FirmwareStatus::Active
            } else {
                FirmwareStatus::NoImage
            });
            SlotView {
                name: s.name.clone(),
                class: s.class.clone(),
                device: s.device.display().to_string(),
                kind: s.kind.name().to_string(),
                bootname: s.bootname.clone(),
                parent: s.parent.clone(),
                booted: is_booted,
                primary: s.bootname.is_some() && s.bootname == primary,
                boot_status: s
                    .bootname
                    .as_ref()
                    .and_then(|b| bl.state(b).ok())
                    .map(|b| if b == crate::bootloader::BootState::Good { "good" } else { "bad" }.to_string()),
                status: format!("{fw:?}"),
                version: st.and_then(|x| x.version.clone()),
                sha256: st.and_then(|x| x.sha256.clone()),
                installed_at: st.and_then(|x| x.installed_at),
                failure: failure.filter(|r| r.slot.as_deref() == Some(&s.name)).map(|r| r.fault_string.clone()),
            }
        })
        .collect())
}

/// Verify a package completely without installing it (the whole verity tree too), against
/// the configured anchors.
pub fn inspect_file(conf: &Config, file: std::fs::File) -> Result<crate::package::Package, Failure> {
    use crate::package::{self, Context, NullSink};
    let (anchors, _) = trust_state(conf, None).map_err(|f| Failure::new(f.kind, f.fault, f.message))?;
    let src = std::sync::Arc::new(
        crate::source::FileSource::new(file).map_err(|e| Failure::new("access", 9016, e.to_string()))?,
    );
    let ctx = Context {
        anchors: &anchors,
        policy: conf.policy.clone(),
        now: SystemTime::now(),
        compatible: conf.compatible.clone(),
        variant: conf.variant().map_err(|e| Failure::new("variant", 9002, e))?,
        install_images_only: false,
        check_whole_tree: true,
        verify_before_writing: false,
    };
    package::verify(src, &ctx, &mut NullSink).map_err(|e| Failure::from_fault(&e))
}

/// Settle a pending install the bootloader gave up on (ActivationFailed), without the PCR
/// check (`boot-check` does that): what the service does when it starts.
pub fn settle(conf: &Config, override_boot: Option<&str>) -> Result<(), Failure> {
    let booted = booted(conf, override_boot).map_err(|e| Failure::new("slot", 9002, e))?;
    let mut bl = bootloader(conf, booted).map_err(|e| Failure::new("bootloader", 9002, e))?;
    let (tpm, counter) = tpm_for_confirm(conf)?;
    let mut dev = crate::confirm::Booted { conf, slot: booted, bootloader: bl.as_mut(), tpm, counter };
    dev.settle().map(|_| ()).map_err(|e| Failure::from_fault(&e))
}
