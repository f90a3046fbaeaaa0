//! Admission: may this authenticated package go into this device's target slots, and
//! may this slot be activated? Every rule lives here and nowhere else; all of them are
//! pure (package facts, device facts in; a decision out), so they are tested without a
//! TPM, a disk or a bus.
//!
//! The install asks [`admit`] between authenticating a package and writing a byte of it;
//! `info` and the D-Bus inspection ask [`inspect`]; the confirmation steps ask
//! [`slot_whole`] and [`slot_at_minimum`] before a slot is made primary, confirmed or
//! approved.
//!
//! Two neighbours apply what is decided here where their data is: the package reader
//! picks the device variant's image per slot class (RAUC's reading rule; a bundle with
//! none for the variant is refused there, `variant`), and the measured-boot policy index
//! never approves a slot below the minimum, whoever asks (`measured_boot`, one layer
//! below this one).

use crate::fault::{CwmpFault, Fault};
use crate::measured_boot::record::{Origin, SlotValues};
use crate::measured_boot::reference::ReferenceValues;
use crate::package::{Format, Package};
use crate::status::FirmwareStatus;
use thiserror::Error;

/// One slot of the target group, as admission sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSlot {
    /// Slot name (`rootfs.1`).
    pub name: String,
    /// Slot class (`rootfs`).
    pub class: String,
    /// Its device (for messages).
    pub device: String,
    /// `readonly=true` in the configuration.
    pub readonly: bool,
    /// Size of its device in bytes, or why it could not be read.
    pub size: Result<u64, String>,
    /// Where it is in use (mounted, or its MTD attached to UBI), if it is.
    pub mounted: Option<String>,
    /// `allow-mounted=true`: a mounted slot may be updated by a bundle's install hook.
    pub allow_mounted: bool,
}

/// Measured boot as admission sees it (`[measured-boot]` is configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasuredFacts {
    /// `[measured-boot] required`: refuse packages without values for the target.
    pub required: bool,
    /// The PCRs the device seals to (`pcrs=`, else those of the booted slot's values).
    pub sealed_pcrs: Vec<u8>,
    /// The target slot's bootname (per-slot values are keyed by it).
    pub target_bootname: String,
}

/// What admission knows about the device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceFacts {
    /// `[system] compatible` (None: accept any, as a build host does).
    pub compatible: Option<String>,
    /// `[system] bundle-formats` (RAUC bundle formats allowed; TR-069 is always allowed).
    pub bundle_formats: Vec<String>,
    /// The anti-rollback minimum (None: not enforced, a development keyring).
    pub minimum: Option<u64>,
    /// `[system] min-bundle-version`.
    pub min_bundle_version: Option<String>,
    /// The booted slot's installed version (for TR-069 version ranges).
    pub running_version: Option<String>,
    /// The target group; the first one is the slot that boots.
    pub targets: Vec<TargetSlot>,
    /// Present when measured boot is configured.
    pub measured_boot: Option<MeasuredFacts>,
    /// `[system] bundle-hooks=run` (the default): a bundle's hooks run.
    pub runs_hooks: bool,
}

/// Admitted: what the install carries on.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The target's reference values from the package, for the measured-boot policy.
    pub reference_values: Option<SlotValues>,
}

/// Why an authentic package is refused on this device. All are 9001 (the request is
/// denied), except reference values that do not parse (9018, the file is malformed) and
/// a slot device that cannot be sized (9002, could not check).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    /// The package is for other devices.
    #[error("package is for '{package}', this device is '{device}'")]
    Incompatible {
        /// Package compatible.
        package: String,
        /// Device compatible.
        device: String,
    },
    /// `[system] bundle-formats` does not allow the format.
    #[error("bundle format '{0}' is not allowed by [system] bundle-formats")]
    Format(&'static str),
    /// Below the anti-rollback minimum.
    #[error(transparent)]
    Downgrade(#[from] Downgrade),
    /// Below `min-bundle-version`, or the running version outside a TR-069 range.
    #[error("{0}")]
    Version(String),
    /// No fitting, writable target slot for an image.
    #[error("{0}")]
    Slot(String),
    /// The reference values do not parse or do not cover the sealed PCRs.
    #[error("{why}")]
    ReferenceValues {
        /// What is wrong.
        why: String,
        /// Malformed (9018) rather than insufficient (9001).
        malformed: bool,
    },
    /// A slot the package writes cannot be sized: could not check (9002).
    #[error("cannot size slot device {device}: {why}")]
    SlotDevice {
        /// Device path.
        device: String,
        /// Why.
        why: String,
    },
    /// The bundle carries code and `[system] bundle-hooks=refuse`.
    #[error("the bundle carries {0}, and this device refuses code in bundles ([system] bundle-hooks=refuse)")]
    Code(String),
    /// A custom handler would replace the installer.
    #[error(
        "the bundle's custom handler '{0}' would replace the installer, which commits the reference values \
         and the anti-rollback minimum and switches the slot: handlers are not supported (hooks are)"
    )]
    Handler(String),
    /// Measured boot requires reference values for the target and there are none.
    #[error(
        "the package carries no reference values for slot {0} ([meta.measured-boot]), which [measured-boot] requires"
    )]
    NoReferenceValues(String),
}

impl Fault for Refusal {
    fn kind(&self) -> &'static str {
        match self {
            Self::Incompatible { .. } => "incompatible",
            Self::Format(_) => "format",
            Self::Downgrade(e) => e.kind(),
            Self::Version(_) => "version",
            Self::Slot(_) => "slot",
            Self::SlotDevice { .. } => "write",
            Self::ReferenceValues { .. } => "reference-values",
            Self::NoReferenceValues(_) => "no-reference-values",
            Self::Code(_) => "hooks-refused",
            Self::Handler(_) => "handler-unsupported",
        }
    }
    fn fault(&self) -> CwmpFault {
        match self {
            Self::ReferenceValues { malformed: true, .. } => CwmpFault::FileCorrupted,
            Self::SlotDevice { .. } => CwmpFault::InternalError,
            _ => CwmpFault::RequestDenied,
        }
    }
}

/// A package refused by anti-rollback.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("security version {package} is below the device's minimum {minimum}: downgrade refused")]
pub struct Downgrade {
    /// The package's security version (0 when it has none).
    pub package: u64,
    /// The device's minimum.
    pub minimum: u64,
}

impl Fault for Downgrade {
    fn kind(&self) -> &'static str {
        "downgrade"
    }
    fn fault(&self) -> CwmpFault {
        CwmpFault::RequestDenied
    }
}

/// A slot that holds less than the device's minimum: never made primary, confirmed or
/// approved in the measured-boot policy.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("slot {slot} holds security version {held}, below the device's anti-rollback minimum {minimum}")]
pub struct BelowMinimum {
    /// Slot name.
    pub slot: String,
    /// Its security version (0 when unknown).
    pub held: u64,
    /// The device's minimum.
    pub minimum: u64,
}

impl Fault for BelowMinimum {
    fn kind(&self) -> &'static str {
        "below-minimum"
    }
    fn fault(&self) -> CwmpFault {
        CwmpFault::RequestDenied
    }
}

/// Refuse a package for another device (RAUC's compatible check).
pub fn compatible(device: Option<&str>, package: &Package) -> Result<(), Refusal> {
    match device {
        Some(d) if d != package.compatible => {
            Err(Refusal::Incompatible { package: package.compatible.clone(), device: d.to_string() })
        }
        _ => Ok(()),
    }
}

/// The rules that need no target slot, for `info` and the D-Bus inspection: the
/// compatible, and the anti-rollback minimum when one is enforced.
pub fn inspect(pkg: &Package, compatible: Option<&str>, minimum: Option<u64>) -> Result<(), Refusal> {
    self::compatible(compatible, pkg)?;
    if let Some(min) = minimum {
        security_version(pkg.security_version, min)?;
    }
    Ok(())
}

/// Refuse a package whose security version (none counts as 0) is below `minimum`.
pub fn security_version(package: Option<u32>, minimum: u64) -> Result<(), Downgrade> {
    let package = u64::from(package.unwrap_or(0));
    if package < minimum {
        return Err(Downgrade { package, minimum });
    }
    Ok(())
}

/// Why a slot is not known to be whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotWhole {
    /// The last install into it did not complete (its TR-181 status says so).
    Incomplete(FirmwareStatus),
    /// The status file was reset since it was written: whether it is whole is unknown.
    Unknown,
}

/// What is known of a slot, for [`slot_whole`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotFacts<'a> {
    /// Slot name.
    pub name: &'a str,
    /// Its status as the last install into it recorded it (None: no record).
    pub recorded: Option<FirmwareStatus>,
    /// The status file was reset (damaged) since the agent started keeping it.
    pub status_reset: bool,
    /// It is the booted slot (which is whole: it runs).
    pub booted: bool,
}

/// May a slot become primary or be confirmed (`mark active`, `mark good`), as far as its
/// contents go: completely written and verified by the last install into it, and known
/// to be whole. (It must also be at or above the minimum: [`slot_at_minimum`].)
pub fn slot_whole(slot: &SlotFacts<'_>) -> Result<(), NotWhole> {
    use FirmwareStatus::*;
    match slot.recorded {
        Some(s @ (Downloading | Validating | DownloadFailed | ValidationFailed | InstallationFailed)) => {
            Err(NotWhole::Incomplete(s))
        }
        // What the status knew was lost with a damaged file: only the running slot and
        // slots written since are known to be whole.
        None if slot.status_reset && !slot.booted => Err(NotWhole::Unknown),
        _ => Ok(()),
    }
}

/// Refuse a slot whose security version (none counts as 0) is below `minimum`.
pub fn slot_at_minimum(slot: &str, held: Option<u32>, minimum: u64) -> Result<(), BelowMinimum> {
    let held = u64::from(held.unwrap_or(0));
    if held < minimum {
        return Err(BelowMinimum { slot: slot.into(), held, minimum });
    }
    Ok(())
}

/// Numeric components of a version string (`1.2.3-rc1` -> 1, 2, 3, 1), compared
/// element-wise.
pub fn version_parts(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).filter_map(|p| p.parse().ok()).collect()
}

/// Every rule, in the order a refusal is reported: compatible, format, anti-rollback,
/// versions, slots, reference values.
///
/// Errors: the first [`Refusal`].
pub fn admit(pkg: &Package, dev: &DeviceFacts) -> Result<Admission, Refusal> {
    code(pkg, dev.runs_hooks)?;
    // RAUC: an install-check hook decides instead of the compatible check (it runs after
    // admission, before anything changes).
    if !pkg.hooks.as_ref().is_some_and(|h| h.install_check) {
        compatible(dev.compatible.as_deref(), pkg)?;
    }
    let name = match pkg.format {
        Format::Plain => Some("plain"),
        Format::Verity => Some("verity"),
        Format::Tr069 => None,
    };
    if let Some(n) = name.filter(|n| !dev.bundle_formats.iter().any(|f| f == n)) {
        return Err(Refusal::Format(n));
    }
    if let Some(min) = dev.minimum {
        security_version(pkg.security_version, min)?;
    }
    versions(pkg, dev)?;
    slots(pkg, dev)?;
    let reference_values = match &dev.measured_boot {
        Some(mb) => reference_values(pkg, mb)?,
        None => None,
    };
    Ok(Admission { reference_values })
}

/// Code in the bundle: refused with `bundle-hooks=refuse`; a custom handler always.
fn code(pkg: &Package, runs_hooks: bool) -> Result<(), Refusal> {
    if !runs_hooks && pkg.has_code() {
        let mut what = Vec::new();
        if pkg.hooks.as_ref().is_some_and(|h| h.install_check) {
            what.push("an install-check hook".to_string());
        }
        for i in pkg.images.iter().filter(|i| i.hooks.any()) {
            what.push(format!("{} hooks for {}", i.hooks.names().join("/"), i.slot_class));
        }
        if let Some(h) = &pkg.handler {
            what.push(format!("a custom handler '{}'", h.filename));
        }
        return Err(Refusal::Code(what.join(", ")));
    }
    if let Some(h) = &pkg.handler {
        return Err(Refusal::Handler(h.filename.clone()));
    }
    Ok(())
}

fn versions(pkg: &Package, dev: &DeviceFacts) -> Result<(), Refusal> {
    if let Some(min) = &dev.min_bundle_version {
        let v = pkg.version.as_deref().unwrap_or_default();
        if version_parts(v) < version_parts(min) {
            return Err(Refusal::Version(format!("version '{v}' is below min-bundle-version '{min}'")));
        }
    }
    let c = &pkg.constraints;
    if c.min_version.is_none() && c.max_version.is_none() {
        return Ok(());
    }
    let installed = dev
        .running_version
        .as_deref()
        .ok_or_else(|| Refusal::Version("the package has a version range but the running version is unknown".into()))?;
    let have = version_parts(installed);
    let as64 = |v: &Vec<u32>| v.iter().map(|x| u64::from(*x)).collect::<Vec<u64>>();
    if c.min_version.as_ref().is_some_and(|m| have < as64(m)) || c.max_version.as_ref().is_some_and(|m| have > as64(m))
    {
        return Err(Refusal::Version(format!("running version '{installed}' is outside the package's range")));
    }
    Ok(())
}

fn slots(pkg: &Package, dev: &DeviceFacts) -> Result<(), Refusal> {
    // The slot that boots is written by every install: a package without an image for
    // it (for this device's variant) would activate whatever it holds now.
    let root = dev.targets.first().map(|t| t.class.as_str()).unwrap_or_default();
    if !pkg.images.iter().any(|i| i.slot_class == root) {
        return Err(Refusal::Slot(format!(
            "the package has no image for slot class '{root}' (the class that boots) for this device"
        )));
    }
    for image in &pkg.images {
        let slot = dev
            .targets
            .iter()
            .find(|s| s.class == image.slot_class)
            .ok_or_else(|| Refusal::Slot(format!("no slot of class '{}' in the target group", image.slot_class)))?;
        if slot.readonly {
            return Err(Refusal::Slot(format!("slot {} is read-only", slot.name)));
        }
        // RAUC's rule (install.c pre_install_check_slot_mount_status): a slot in use is
        // updated only by a bundle's install hook, and only with allow-mounted=true.
        // (The sizes below are checked for it all the same.)
        if let Some(at) = &slot.mounted {
            match (slot.allow_mounted, image.hooks.install) {
                (true, true) => {}
                (true, false) => {
                    return Err(Refusal::Slot(format!(
                        "slot {} is in use ({at}): it may only be updated by a bundle's install hook",
                        slot.name
                    )))
                }
                (false, _) => return Err(Refusal::Slot(format!("slot {} is in use ({at})", slot.name))),
            }
        }
        let size =
            *slot.size.as_ref().map_err(|why| Refusal::SlotDevice { device: slot.device.clone(), why: why.clone() })?;
        if image.size > size {
            return Err(Refusal::Slot(format!(
                "image of {} bytes does not fit slot {} ({size} bytes)",
                image.size, slot.name
            )));
        }
        if let Some(n) = pkg.constraints.min_nonvolatile.filter(|n| u64::from(*n) > size) {
            return Err(Refusal::Slot(format!(
                "the package needs {n} bytes of storage, slot {} has {size}",
                slot.name
            )));
        }
    }
    Ok(())
}

/// The target's reference values from the package, as measured boot needs them.
fn reference_values(pkg: &Package, mb: &MeasuredFacts) -> Result<Option<SlotValues>, Refusal> {
    let values = match pkg.meta.get("measured-boot") {
        Some(meta) => Some(
            ReferenceValues::from_meta(meta)
                .map_err(|e| Refusal::ReferenceValues { why: e.to_string(), malformed: true })?,
        ),
        None => None,
    };
    let for_target = values.as_ref().map(|v| v.for_slot(&mb.target_bootname)).filter(|v| !v.is_empty());
    if let Some(pcrs) = &for_target {
        // A branch over fewer PCRs than the device seals to would let a slot with a
        // changed kernel, command line or initrd unseal.
        let missing: Vec<String> =
            mb.sealed_pcrs.iter().filter(|p| !pcrs.iter().any(|(i, _)| i == *p)).map(|p| p.to_string()).collect();
        if !missing.is_empty() {
            return Err(Refusal::ReferenceValues {
                why: format!(
                    "the package's reference values for slot {} do not cover PCR {} that the device seals to",
                    mb.target_bootname,
                    missing.join(", ")
                ),
                malformed: false,
            });
        }
    }
    match (for_target, values) {
        (Some(pcrs), Some(v)) => {
            Ok(Some(SlotValues::new(&pcrs, &v.components, Origin::Package, pkg.version.clone(), pkg.security_version)))
        }
        _ if mb.required => Err(Refusal::NoReferenceValues(mb.target_bootname.clone())),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestAlg;
    use crate::package::{Constraints, Image};
    use std::collections::BTreeMap;

    fn image(class: &str, size: u64) -> Image {
        Image {
            slot_class: class.into(),
            variant: None,
            filename: format!("{class}.img"),
            size,
            digest_algorithm: DigestAlg::Sha256,
            digest: vec![0; 32],
            sha256: Vec::new(),
            adaptive: Vec::new(),
            hooks: Default::default(),
        }
    }

    fn package() -> Package {
        Package {
            format: Format::Verity,
            compatible: "henb".into(),
            version: Some("2.0".into()),
            description: None,
            build: None,
            security_version: Some(5),
            images: vec![image("rootfs", 1000)],
            meta: BTreeMap::new(),
            signers: Vec::new(),
            constraints: Constraints::default(),
            hooks: None,
            handler: None,
        }
    }

    fn device() -> DeviceFacts {
        DeviceFacts {
            compatible: Some("henb".into()),
            bundle_formats: vec!["plain".into(), "verity".into()],
            minimum: Some(5),
            min_bundle_version: None,
            running_version: Some("1.0".into()),
            targets: vec![TargetSlot {
                name: "rootfs.1".into(),
                class: "rootfs".into(),
                device: "/dev/vda3".into(),
                readonly: false,
                size: Ok(4096),
                mounted: None,
                allow_mounted: false,
            }],
            measured_boot: None,
            runs_hooks: true,
        }
    }

    #[test]
    fn code_in_bundles_install_check_and_handlers() {
        use crate::package::manifest::{BundleHooks, Handler};
        let check = BundleHooks { filename: Some("hook".into()), install_check: true };
        // install-check decides instead of the compatible check (RAUC).
        let mut p = Package { compatible: "other".into(), hooks: Some(check.clone()), ..package() };
        assert!(admit(&p, &device()).is_ok());
        p.hooks = None;
        assert!(matches!(admit(&p, &device()), Err(Refusal::Incompatible { .. })));
        // bundle-hooks=refuse: any code, named; a package without code is not affected.
        let refuse = DeviceFacts { runs_hooks: false, ..device() };
        assert!(admit(&package(), &refuse).is_ok());
        let mut p = package();
        p.images[0].hooks.post_install = true;
        p.hooks = Some(BundleHooks { filename: Some("hook".into()), install_check: false });
        let e = admit(&p, &refuse).unwrap_err();
        assert_eq!((e.kind(), e.fault()), ("hooks-refused", CwmpFault::RequestDenied));
        assert!(e.to_string().contains("post-install hooks for rootfs"), "{e}");
        let p = Package { hooks: Some(check), ..package() };
        assert!(admit(&p, &refuse).unwrap_err().to_string().contains("an install-check hook"));
        // A custom handler replaces the installer: always refused.
        let p = Package { handler: Some(Handler { filename: "h".into(), args: None }), ..package() };
        assert_eq!(admit(&p, &device()).unwrap_err().kind(), "handler-unsupported");
    }

    fn refused(p: &Package, d: &DeviceFacts) -> (&'static str, u32, String) {
        let e = admit(p, d).unwrap_err();
        (e.kind(), e.fault().code(), e.to_string())
    }

    fn values(text: &str) -> BTreeMap<String, String> {
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn a_package_that_fits_is_admitted() {
        assert_eq!(admit(&package(), &device()), Ok(Admission { reference_values: None }));
        // TR-069 packages are not subject to bundle-formats.
        let mut p = package();
        p.format = Format::Tr069;
        let d = DeviceFacts { bundle_formats: vec![], ..device() };
        assert!(admit(&p, &d).is_ok());
        // Without a compatible or a minimum (a build host) nothing of that is checked.
        let d = DeviceFacts { compatible: None, minimum: None, ..device() };
        assert!(admit(&Package { security_version: None, compatible: "x".into(), ..package() }, &d).is_ok());
    }

    #[test]
    fn each_rule_refuses_with_its_kind_and_fault() {
        let p = package();
        let d = device();
        let cases: Vec<(Package, DeviceFacts, &str, u32, &str)> = vec![
            (Package { compatible: "other".into(), ..p.clone() }, d.clone(), "incompatible", 9001, "'other'"),
            (p.clone(), DeviceFacts { bundle_formats: vec!["plain".into()], ..d.clone() }, "format", 9001, "verity"),
            (Package { security_version: Some(4), ..p.clone() }, d.clone(), "downgrade", 9001, "minimum 5"),
            (Package { security_version: None, ..p.clone() }, d.clone(), "downgrade", 9001, "version 0"),
            (
                p.clone(),
                DeviceFacts { min_bundle_version: Some("2.0.1".into()), ..d.clone() },
                "version",
                9001,
                "min-bundle-version",
            ),
            (
                Package {
                    constraints: Constraints { min_version: Some(vec![1, 5]), ..Default::default() },
                    ..p.clone()
                },
                d.clone(),
                "version",
                9001,
                "outside",
            ),
            (
                Package { constraints: Constraints { max_version: Some(vec![3]), ..Default::default() }, ..p.clone() },
                DeviceFacts { running_version: None, ..d.clone() },
                "version",
                9001,
                "unknown",
            ),
            (Package { images: vec![image("appfs", 10)], ..p.clone() }, d.clone(), "slot", 9001, "class that boots"),
            (
                Package { images: vec![image("rootfs", 10), image("appfs", 10)], ..p.clone() },
                d.clone(),
                "slot",
                9001,
                "no slot of class 'appfs'",
            ),
            (Package { images: vec![image("rootfs", 4097)], ..p.clone() }, d.clone(), "slot", 9001, "does not fit"),
            (
                p.clone(),
                DeviceFacts { targets: vec![TargetSlot { readonly: true, ..d.targets[0].clone() }], ..d.clone() },
                "slot",
                9001,
                "read-only",
            ),
            (
                Package { constraints: Constraints { min_nonvolatile: Some(5000), ..Default::default() }, ..p.clone() },
                d.clone(),
                "slot",
                9001,
                "needs 5000 bytes",
            ),
        ];
        for (p, d, kind, fault, says) in cases {
            let (k, f, msg) = refused(&p, &d);
            assert_eq!((k, f), (kind, fault), "{msg}");
            assert!(msg.contains(says), "{msg} lacks {says}");
        }
    }

    #[test]
    fn a_slot_device_that_cannot_be_sized_is_could_not_check_only_when_written() {
        let mut d = device();
        d.targets.push(TargetSlot {
            name: "appfs.1".into(),
            class: "appfs".into(),
            device: "/dev/vda6".into(),
            readonly: false,
            size: Err("No such file or directory".into()),
            mounted: None,
            allow_mounted: false,
        });
        // The package writes no appfs image: the child slot's device is not its business.
        assert!(admit(&package(), &d).is_ok());
        let p = Package { images: vec![image("rootfs", 10), image("appfs", 10)], ..package() };
        let (k, f, msg) = refused(&p, &d);
        assert_eq!((k, f), ("write", 9002), "{msg}");
        assert!(msg.contains("/dev/vda6"), "{msg}");
        // Refusals that come first still come first.
        let old = Package { security_version: Some(1), ..p };
        assert_eq!(refused(&old, &d).0, "downgrade");
    }

    #[test]
    fn versions_compare_element_wise() {
        assert_eq!(version_parts("1.2.3-rc1"), [1, 2, 3, 1]);
        assert!(version_parts("1.10") > version_parts("1.9"));
        assert!(version_parts("") < version_parts("0"));
        let p = Package {
            constraints: Constraints {
                min_version: Some(vec![1]),
                max_version: Some(vec![1, 9]),
                ..Default::default()
            },
            ..package()
        };
        for (running, ok) in [("1.0", true), ("1.9", true), ("1.10", false), ("0.9", false)] {
            let d = DeviceFacts { running_version: Some(running.into()), ..device() };
            assert_eq!(admit(&p, &d).is_ok(), ok, "{running}");
        }
    }

    #[test]
    fn measured_boot_needs_values_that_cover_the_sealed_pcrs() {
        let h = |b: u8| hex::encode([b; 32]);
        let mb = MeasuredFacts { required: true, sealed_pcrs: vec![8, 9], target_bootname: "B".into() };
        let d = DeviceFacts { measured_boot: Some(mb.clone()), ..device() };
        // None at all: required refuses, optional admits without values.
        assert_eq!(refused(&package(), &d).0, "no-reference-values");
        let optional = DeviceFacts { measured_boot: Some(MeasuredFacts { required: false, ..mb.clone() }), ..device() };
        assert_eq!(admit(&package(), &optional).unwrap().reference_values, None);
        // Values for the other slot only count as none for this one.
        let mut p = package();
        p.meta.insert("measured-boot".into(), values(&format!("pcr.8.A={}\npcr.9.A={}", h(1), h(2))));
        assert_eq!(refused(&p, &d).0, "no-reference-values");
        // PCR 9 common, PCR 8 only for A: B's branch would leave PCR 8 out.
        p.meta.insert("measured-boot".into(), values(&format!("pcr.8.A={}\npcr.9={}", h(1), h(2))));
        let (k, f, msg) = refused(&p, &d);
        assert_eq!((k, f), ("reference-values", 9001));
        assert!(msg.contains("PCR 8"), "{msg}");
        // Malformed values are a corrupt file.
        p.meta.insert("measured-boot".into(), values("pcr.8.B=zz"));
        assert_eq!(refused(&p, &d).1, 9018);
        // Covering values are carried on.
        p.meta.insert("measured-boot".into(), values(&format!("pcr.8.B={}\npcr.9={}", h(1), h(2))));
        let v = admit(&p, &d).unwrap().reference_values.unwrap();
        assert_eq!(v.pcrs.keys().copied().collect::<Vec<u8>>(), [8, 9]);
    }

    #[test]
    fn only_slots_known_to_be_whole_may_boot() {
        let s = |recorded, status_reset, booted| SlotFacts { name: "rootfs.1", recorded, status_reset, booted };
        assert_eq!(slot_whole(&s(Some(FirmwareStatus::Available), false, false)), Ok(()));
        assert_eq!(slot_whole(&s(None, false, false)), Ok(()), "never installed by us: a factory slot");
        for bad in [FirmwareStatus::Downloading, FirmwareStatus::ValidationFailed, FirmwareStatus::InstallationFailed] {
            assert_eq!(slot_whole(&s(Some(bad), false, false)), Err(NotWhole::Incomplete(bad)));
        }
        assert_eq!(slot_whole(&s(None, true, false)), Err(NotWhole::Unknown));
        assert_eq!(slot_whole(&s(None, true, true)), Ok(()), "the running slot is whole");
    }

    #[test]
    fn slots_below_the_minimum_are_refused() {
        assert!(slot_at_minimum("rootfs.0", Some(3), 3).is_ok());
        assert_eq!(
            slot_at_minimum("rootfs.1", None, 5),
            Err(BelowMinimum { slot: "rootfs.1".into(), held: 0, minimum: 5 })
        );
        assert!(security_version(Some(3), 3).is_ok());
        assert!(security_version(Some(4), 3).is_ok());
        assert!(security_version(None, 0).is_ok());
        assert_eq!(security_version(Some(2), 3), Err(Downgrade { package: 2, minimum: 3 }));
        assert_eq!(security_version(None, 1), Err(Downgrade { package: 0, minimum: 1 }));
    }
}
