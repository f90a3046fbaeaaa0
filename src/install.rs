//! The install pipeline: a verified package becomes the next boot without ever risking
//! the running system (R6).
//!
//! One install at a time (a lock in the data directory). The package is read through the
//! one descriptor given, under a read lease. It is authenticated first; policy (bundle
//! formats, minimum version, anti-rollback, TR-069 constraints, slot sizes) is checked in
//! [`Sink::start`], and only then is the target marked bad and written, each image
//! hashed in the same pass. The lease is checked, the pending confirmation is committed
//! to the status file, and only then is the bootloader switched. Any failure leaves the
//! boot order as it was and records the result.

use crate::bootloader::{BootError, Bootloader};
use crate::config::{Config, SlotConf};
use crate::fault::{CwmpFault, Fault};
use crate::measured_boot::record::{Origin, SlotValues};
use crate::measured_boot::reference::ReferenceValues;
use crate::measured_boot::{Approver, MeasuredBootError};
use crate::package::{self, Context, Format, Image, Package, PackageError, Sink};
use crate::slot::{self, SlotError};
use crate::source::FileSource;
use crate::status::{FirmwareStatus, InstallResult, Job, Pending, SlotStatus, Status, StatusError};
use crate::trust::Anchors;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// What to install.
pub struct Request {
    /// The package, opened read-only (the only handle ever used to read it).
    pub file: File,
    /// The Download's CommandKey.
    pub command_key: Option<String>,
    /// Switch to the new slot ("1 Firmware Upgrade Image"), or only install ("6 Stored
    /// Firmware Image").
    pub activate: bool,
}

/// Progress, as RAUC reports it: percent, message, nesting depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 0..=100.
    pub percent: u8,
    /// What is happening.
    pub message: String,
    /// Nesting depth (1 = step, 2 = sub-step).
    pub depth: u32,
}

/// What the installer needs from the edge.
pub struct Plan<'a> {
    /// The configuration.
    pub conf: &'a Config,
    /// The booted slot (root of its group).
    pub booted: &'a SlotConf,
    /// Trust anchors.
    pub anchors: &'a Anchors,
    /// Anti-rollback minimum (None: not enforced, e.g. development keyring).
    pub minimum: Option<u64>,
    /// The time.
    pub now: SystemTime,
    /// The measured-boot policy, when the device has one (`[measured-boot]`).
    pub measured: Option<&'a Approver>,
}

/// A successful install.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The verified package.
    pub package: Package,
    /// Slot written (root of the group).
    pub slot: String,
    /// Its bootname.
    pub bootname: String,
    /// Whether the bootloader now boots it next.
    pub activated: bool,
}

/// Why an install did not happen.
#[derive(Debug, Error)]
pub enum InstallError {
    /// Another install is running.
    #[error("another install is running")]
    Busy,
    /// The lock or the lease could not be had.
    #[error("package file: {0}")]
    Access(String),
    /// The package file was opened for writing during the install.
    #[error("the package file was opened for writing while it was being installed: refused")]
    Modified,
    /// The package was refused or could not be read.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// No slot to install to.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// The bootloader environment failed.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The status file failed.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The measured-boot policy could not be prepared or committed.
    #[error("measured boot: {0}")]
    MeasuredBoot(#[from] MeasuredBootError),
    /// The device's variant (`[system] variant-*`) could not be read.
    #[error("device variant: {0}")]
    Variant(String),
}

impl Fault for InstallError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Access(_) => "access",
            Self::Modified => "package-modified",
            Self::Package(e) => e.kind(),
            Self::Slot(_) => "slot",
            Self::Boot(_) => "bootloader",
            Self::Status(_) => "status",
            Self::MeasuredBoot(e) => e.kind(),
            Self::Variant(_) => "variant",
        }
    }
    fn fault(&self) -> CwmpFault {
        match self {
            Self::Busy => CwmpFault::RequestDenied,
            Self::Access(_) | Self::Modified => CwmpFault::UnableToAccessFile,
            Self::Package(e) => e.fault(),
            Self::Slot(_) | Self::Boot(_) | Self::Status(_) | Self::Variant(_) => CwmpFault::InternalError,
            Self::MeasuredBoot(e) => e.fault(),
        }
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Numeric components of a version string (`1.2.3-rc1` -> 1, 2, 3, 1).
pub fn version_parts(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).filter_map(|p| p.parse().ok()).collect()
}

/// The one writer of slots and the boot order: `<dir>/install.lock`, held by an install
/// and by `mark` (a second one gets [`InstallError::Busy`] at once). Released on drop.
pub fn lock(dir: &std::path::Path) -> Result<nix::fcntl::Flock<File>, InstallError> {
    crate::fsutil::private_dir(dir).map_err(|e| InstallError::Access(format!("data directory: {e}")))?;
    let lock_path = dir.join("install.lock");
    let lock = crate::fsutil::open_lock(&lock_path)
        .map_err(|e| InstallError::Access(format!("{}: {e}", lock_path.display())))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| InstallError::Busy)
}

/// Install `req` into the inactive slot group.
pub fn install(
    plan: &Plan<'_>,
    bootloader: &mut dyn Bootloader,
    req: Request,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, InstallError> {
    let dir = &plan.conf.data_directory;
    let _lock = lock(dir)?;
    let start = plan.now;
    let target = slot::target(&plan.conf.slots, plan.booted).ok().map(|t| t[0].name.clone());
    Status::update(dir, |s| {
        // A job left by a killed agent is reported (once) before this one starts.
        s.settle_interrupted(secs(SystemTime::now()));
        s.job = Some(Job { command_key: req.command_key.clone(), slot: target.clone(), start_time: secs(start) });
    })?;
    // The installer's view; each change goes to disk through Status::update.
    let mut status = Status::load(dir)?;
    let result = run(plan, bootloader, &req, &mut status, progress);
    let (fault, fault_string, kind, slot) = match &result {
        Ok(i) => (0, String::new(), String::new(), Some(i.slot.clone())),
        Err(e) => (e.fault().code(), e.to_string(), e.kind().to_string(), None),
    };
    let r = InstallResult {
        command_key: req.command_key.clone(),
        fault_code: fault,
        fault_string: fault_string.chars().take(256).collect(),
        kind,
        slot,
        start_time: secs(start),
        complete_time: secs(SystemTime::now()),
    };
    let activated = matches!(&result, Ok(i) if i.activated);
    // Recording the result must not hide the install's own error.
    let recorded = Status::update(dir, |disk| {
        if let Some(t) = &target {
            if let Some(v) = status.slots.get(t) {
                disk.slots.insert(t.clone(), v.clone());
            }
        }
        disk.job = None;
        if activated {
            // TransferComplete waits for the outcome after the reboot (confirm).
            disk.last_result = Some(r);
        } else {
            disk.complete(r);
        }
    });
    let installed = result?;
    recorded?;
    Ok(installed)
}

fn run(
    plan: &Plan<'_>,
    bootloader: &mut dyn Bootloader,
    req: &Request,
    status: &mut Status,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, InstallError> {
    progress(Progress { percent: 0, message: "Checking the package".into(), depth: 1 });
    crate::lease::take(&req.file).map_err(|e| {
        InstallError::Access(format!("cannot hold the file still (is it open for writing elsewhere?): {e}"))
    })?;
    crate::failpoint::hit("install.leased");
    let targets = slot::target(&plan.conf.slots, plan.booted)?;
    let root = targets[0].clone();
    let bootname = root.bootname.clone().ok_or_else(|| SlotError::NoTarget(root.class.clone()))?;
    let src = Arc::new(
        FileSource::new(req.file.try_clone().map_err(|e| InstallError::Access(e.to_string()))?)
            .map_err(|e| InstallError::Access(e.to_string()))?,
    );
    let ctx = Context {
        anchors: plan.anchors,
        policy: plan.conf.policy.clone(),
        now: plan.now,
        compatible: plan.conf.compatible.clone(),
        variant: plan.conf.variant().map_err(InstallError::Variant)?,
        install_images_only: true,
        check_whole_tree: false,
        verify_before_writing: true,
    };
    let booted_version = status.slots.get(&plan.booted.name).and_then(|s| s.version.clone());
    let mut sink = SlotSink {
        plan,
        targets: targets.iter().map(|s| (*s).clone()).collect(),
        bootloader,
        bootname: bootname.clone(),
        booted_version,
        marked_bad: false,
        out: None,
        done: 0,
        total: 0,
        progress,
        status,
        root_name: root.name.clone(),
        values: None,
        measured: false,
        measured_error: None,
    };
    let verified = package::verify(src, &ctx, &mut sink);
    let marked = sink.marked_bad;
    let SlotSink { status, bootloader, progress, values, measured, measured_error, .. } = sink;
    let pkg = match verified {
        Ok(p) => p,
        Err(_) if measured_error.is_some() => {
            return Err(measured_error.expect("checked").into());
        }
        Err(e) => {
            if marked {
                let failed = match e.fault() {
                    CwmpFault::InternalError => FirmwareStatus::InstallationFailed,
                    _ => FirmwareStatus::ValidationFailed,
                };
                status.slots.insert(root.name.clone(), slot_status(failed, None, plan.now));
            }
            return Err(e.into());
        }
    };
    crate::failpoint::hit("install.written");
    if !crate::lease::held(&req.file).unwrap_or(false) {
        status.slots.insert(root.name.clone(), slot_status(FirmwareStatus::ValidationFailed, None, plan.now));
        return Err(InstallError::Modified);
    }
    crate::lease::release(&req.file);
    match (plan.measured, values) {
        (Some(m), Some(v)) if measured => {
            progress(Progress { percent: 95, message: "Committing the reference values".into(), depth: 1 });
            let booted = plan.booted.bootname.as_deref().unwrap_or_default();
            if let Err(e) = m.approve(booted, &bootname, v) {
                status.slots.insert(root.name.clone(), slot_status(FirmwareStatus::InstallationFailed, None, plan.now));
                return Err(e.into());
            }
            crate::failpoint::hit("install.approved");
        }
        (Some(_), _) => tracing::warn!(
            "slot {} has no reference values approved: it will boot, but sealed secrets will not unseal there",
            root.name
        ),
        (None, _) => {}
    }
    status.slots.insert(root.name.clone(), slot_status(FirmwareStatus::Available, Some(&pkg), plan.now));
    if req.activate {
        // The pending confirmation is on disk before the bootloader is told to switch.
        let pending = Pending {
            command_key: req.command_key.clone(),
            slot: root.name.clone(),
            bootname: bootname.clone(),
            security_version: pkg.security_version,
            start_time: secs(plan.now),
        };
        let available = status.slots.get(&root.name).cloned();
        Status::update(&plan.conf.data_directory, |disk| {
            if let Some(a) = available {
                disk.slots.insert(root.name.clone(), a);
            }
            disk.pending = Some(pending);
        })?;
        crate::failpoint::hit("install.pending");
        progress(Progress { percent: 95, message: format!("Switching to slot {}", root.name), depth: 1 });
        bootloader.set_primary(&bootname)?;
        crate::failpoint::hit("install.switched");
    }
    progress(Progress { percent: 100, message: "Installed".into(), depth: 1 });
    Ok(Installed { package: pkg, slot: root.name, bootname, activated: req.activate })
}

fn slot_status(status: FirmwareStatus, pkg: Option<&Package>, now: SystemTime) -> SlotStatus {
    SlotStatus {
        status,
        version: pkg.and_then(|p| p.version.clone()),
        compatible: pkg.map(|p| p.compatible.clone()),
        sha256: pkg.and_then(|p| p.images.first()).map(|i| hex::encode(&i.sha256)),
        security_version: pkg.and_then(|p| p.security_version),
        installed_at: pkg.map(|_| secs(now)),
    }
}

struct SlotSink<'a, 'p> {
    plan: &'a Plan<'p>,
    targets: Vec<SlotConf>,
    bootloader: &'a mut dyn Bootloader,
    bootname: String,
    booted_version: Option<String>,
    marked_bad: bool,
    out: Option<File>,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
    status: &'a mut Status,
    root_name: String,
    /// The target's reference values, from the package (measured boot only).
    values: Option<SlotValues>,
    /// Measured boot was prepared (the target is out of the policy).
    measured: bool,
    /// Why preparing measured boot failed.
    measured_error: Option<MeasuredBootError>,
}

fn refuse(kind: &'static str, fault: CwmpFault, why: String) -> PackageError {
    PackageError::Refused { kind, fault, why }
}

impl SlotSink<'_, '_> {
    fn slot_for(&self, image: &Image) -> Option<&SlotConf> {
        self.targets.iter().find(|s| s.class == image.slot_class)
    }

    /// The target's reference values from the package, as measured boot needs them.
    fn reference_values(&self, pkg: &Package) -> Result<Option<SlotValues>, PackageError> {
        let Some(mb) = &self.plan.conf.measured_boot else { return Ok(None) };
        let values = match pkg.meta.get("measured-boot") {
            Some(meta) => Some(
                ReferenceValues::from_meta(meta)
                    .map_err(|e| refuse("reference-values", CwmpFault::FileCorrupted, e.to_string()))?,
            ),
            None => None,
        };
        let for_target = values.as_ref().map(|v| v.for_slot(&self.bootname)).filter(|v| !v.is_empty());
        if let Some(pcrs) = &for_target {
            // A branch over fewer PCRs than the device seals to would let a slot with a
            // changed kernel, command line or initrd unseal.
            let sealed = match &mb.pcrs {
                Some(p) => p.clone(),
                None => crate::measured_boot::record::Record::load(&self.plan.conf.data_directory)
                    .ok()
                    .and_then(|r| {
                        let booted = self.plan.booted.bootname.as_ref()?;
                        Some(r.slots.get(booted)?.pcrs.keys().copied().collect())
                    })
                    .unwrap_or_default(),
            };
            let missing: Vec<String> =
                sealed.iter().filter(|p| !pcrs.iter().any(|(i, _)| i == *p)).map(|p| p.to_string()).collect();
            if !missing.is_empty() {
                return Err(refuse(
                    "reference-values",
                    CwmpFault::RequestDenied,
                    format!(
                        "the package's reference values for slot {} do not cover PCR {} that the device seals to",
                        self.bootname,
                        missing.join(", ")
                    ),
                ));
            }
        }
        match (for_target, values) {
            (Some(pcrs), Some(v)) => {
                Ok(Some(SlotValues::new(&pcrs, &v.components, Origin::Package, pkg.version.clone(), pkg.security_version)))
            }
            _ if mb.required => Err(refuse(
                "no-reference-values",
                CwmpFault::RequestDenied,
                format!(
                    "the package carries no reference values for slot {} ([meta.measured-boot]), which [measured-boot] requires",
                    self.bootname
                ),
            )),
            _ => Ok(None),
        }
    }

    /// Everything that can refuse the package before a byte is written.
    fn check(&self, pkg: &Package) -> Result<(), PackageError> {
        let conf = self.plan.conf;
        let name = match pkg.format {
            Format::Plain => Some("plain"),
            Format::Verity => Some("verity"),
            Format::Tr069 => None,
        };
        if let Some(n) = name.filter(|n| !conf.bundle_formats.iter().any(|f| f == n)) {
            return Err(refuse(
                "format",
                CwmpFault::RequestDenied,
                format!("bundle format '{n}' is not allowed by [system] bundle-formats"),
            ));
        }
        if let Some(min) = self.plan.minimum {
            crate::rollback::check(pkg.security_version, min)
                .map_err(|e| refuse("downgrade", CwmpFault::RequestDenied, e.to_string()))?;
        }
        if let Some(min) = &conf.min_bundle_version {
            let v = pkg.version.as_deref().unwrap_or_default();
            if version_parts(v) < version_parts(min) {
                return Err(refuse(
                    "version",
                    CwmpFault::RequestDenied,
                    format!("version '{v}' is below min-bundle-version '{min}'"),
                ));
            }
        }
        let c = &pkg.constraints;
        if c.min_version.is_some() || c.max_version.is_some() {
            let installed = self.booted_version.as_deref().ok_or_else(|| {
                refuse(
                    "version",
                    CwmpFault::RequestDenied,
                    "the package has a version range but the running version is unknown".into(),
                )
            })?;
            let have: Vec<u64> = version_parts(installed);
            let as64 = |v: &Vec<u32>| v.iter().map(|x| *x as u64).collect::<Vec<u64>>();
            if c.min_version.as_ref().is_some_and(|m| have < as64(m))
                || c.max_version.as_ref().is_some_and(|m| have > as64(m))
            {
                return Err(refuse(
                    "version",
                    CwmpFault::RequestDenied,
                    format!("running version '{installed}' is outside the package's range"),
                ));
            }
        }
        // The slot that boots is written by every install: a package without an image for
        // it (for this device's variant) would activate whatever it holds now.
        let root = &self.targets[0].class;
        if !pkg.images.iter().any(|i| &i.slot_class == root) {
            return Err(refuse(
                "slot",
                CwmpFault::RequestDenied,
                format!("the package has no image for slot class '{root}' (the class that boots) for this device"),
            ));
        }
        for image in &pkg.images {
            let slot = self.slot_for(image).ok_or_else(|| {
                refuse(
                    "slot",
                    CwmpFault::RequestDenied,
                    format!("no slot of class '{}' in the target group", image.slot_class),
                )
            })?;
            if slot.readonly {
                return Err(refuse("slot", CwmpFault::RequestDenied, format!("slot {} is read-only", slot.name)));
            }
            let size = device_size(&slot.device)
                .map_err(|e| PackageError::Sink { name: slot.device.display().to_string(), source: e })?;
            if image.size > size {
                return Err(refuse(
                    "slot",
                    CwmpFault::RequestDenied,
                    format!("image of {} bytes does not fit slot {} ({size} bytes)", image.size, slot.name),
                ));
            }
            if let Some(n) = c.min_nonvolatile.filter(|n| (*n as u64) > size) {
                return Err(refuse(
                    "slot",
                    CwmpFault::RequestDenied,
                    format!("the package needs {n} bytes of storage, slot {} has {size}", slot.name),
                ));
            }
        }
        Ok(())
    }
}

/// Read the image back from the slot, past the page cache, and compare its digest.
fn read_back(dev: &std::path::Path, image: &Image) -> io::Result<()> {
    use std::io::Read;
    let f = File::open(dev)?;
    // Drop the cached pages so that the bytes come from the device, not from memory.
    let _ = nix::fcntl::posix_fadvise(&f, 0, image.size as i64, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    let mut h = image.digest_algorithm.hasher();
    let mut r = f.take(image.size);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    if n != image.size || h.finish() != image.digest {
        return Err(io::Error::other(format!("read back from {}, the slot does not hold the image", dev.display())));
    }
    Ok(())
}

fn device_size(dev: &std::path::Path) -> io::Result<u64> {
    let mut f = File::open(dev)?;
    f.seek(SeekFrom::End(0))
}

impl Sink for SlotSink<'_, '_> {
    fn start(&mut self, pkg: &Package) -> Result<(), PackageError> {
        self.check(pkg)?;
        self.values = self.reference_values(pkg)?;
        if let Some(m) = self.plan.measured {
            // The target leaves the approved policy before a byte of it changes.
            let booted = self.plan.booted.bootname.as_deref().unwrap_or_default();
            match m.prepare(booted, &self.bootname) {
                Ok(prepared) => self.measured = prepared,
                Err(e) => {
                    let msg = e.to_string();
                    self.measured_error = Some(e);
                    return Err(PackageError::Sink { name: "measured boot".into(), source: io::Error::other(msg) });
                }
            }
        }
        self.total = pkg.images.iter().map(|i| i.size).sum::<u64>().max(1);
        // From here on the target is not bootable until it is written and verified.
        self.bootloader
            .set_state(&self.bootname, false)
            .map_err(|e| PackageError::Sink { name: self.bootname.clone(), source: io::Error::other(e.to_string()) })?;
        self.marked_bad = true;
        crate::failpoint::hit("install.marked-bad");
        let downloading = slot_status(FirmwareStatus::Downloading, None, self.plan.now);
        self.status.slots.insert(self.root_name.clone(), downloading.clone());
        let root = self.root_name.clone();
        Status::update(&self.plan.conf.data_directory, |disk| {
            disk.slots.insert(root, downloading);
        })
        .map_err(|e| PackageError::Sink { name: "status".into(), source: io::Error::other(e.to_string()) })?;
        Ok(())
    }

    fn begin(&mut self, image: &Image) -> io::Result<()> {
        let slot = self.slot_for(image).ok_or_else(|| io::Error::other("no target slot"))?.clone();
        (self.progress)(Progress {
            percent: 5,
            message: format!("Writing {} to slot {}", image.filename, slot.name),
            depth: 2,
        });
        self.out = Some(OpenOptions::new().write(true).open(&slot.device)?);
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.as_mut().ok_or_else(|| io::Error::other("no open slot"))?.write_all(data)?;
        crate::failpoint::hit("install.write");
        let before = self.done * 90 / self.total;
        self.done += data.len() as u64;
        let now = self.done * 90 / self.total;
        if now != before {
            (self.progress)(Progress { percent: 5 + now as u8, message: "Writing".into(), depth: 2 });
        }
        Ok(())
    }

    fn end(&mut self, image: &Image) -> io::Result<()> {
        let f = self.out.take().ok_or_else(|| io::Error::other("no open slot"))?;
        f.sync_all()?;
        if self.plan.conf.verify_written {
            let slot = self.slot_for(image).ok_or_else(|| io::Error::other("no target slot"))?.clone();
            (self.progress)(Progress { percent: 95, message: format!("Reading slot {} back", slot.name), depth: 2 });
            read_back(&slot.device, image)?;
        }
        Ok(())
    }
}
