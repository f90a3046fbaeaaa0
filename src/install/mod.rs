//! The install wing: a verified package becomes the next boot without ever risking the
//! running system (R6).
//!
//! One install at a time (a lock in the data directory). The package is read through the
//! one descriptor given, under a read lease, in explicit phases, each a function that
//! returns `Result`:
//! 1. **authenticate** ([`crate::package::authenticate`]): signature, chain, structure,
//!    and every byte that can be checked ahead (the whole verity tree, the TR-069
//!    digests);
//! 2. **admit** ([`admit::admit`], pure): may it go into this device's target slots;
//! 3. **prepare**: the target leaves the measured-boot policy, is marked bad and
//!    recorded as being written;
//! 4. **write** ([`crate::slot::writer`]): each image streamed into its slot, hashed in the
//!    same pass;
//! 5. **approve**: the lease is checked, the target's reference values are committed to
//!    the measured-boot policy;
//! 6. **switch**: the pending confirmation is committed to the status file, and only then
//!    is the bootloader switched.
//!
//! Any failure leaves the boot order as it was and records the result. After the reboot,
//! [`confirm`] settles it.

pub mod admit;
pub mod confirm;
mod error;
mod hooked;
mod sequence;

pub use error::{lock, InstallError};
use sequence::{sequence, Phases, SlotRecord};

use crate::blockindex::{self, Lookup};
use crate::bootloader::Bootloader;
use crate::config::{Config, SlotConf};
use crate::download::{Remote, RemoteSource};
use crate::fault::Fault;
use crate::hook::{handler, Hooks};
use crate::measured_boot::Approver;
use crate::package::adaptive::{Adaptive, Counters};
use crate::package::{self, Context, Package};
use crate::slot::index::{Local, SlotBlocks};
use crate::slot::region::Step;
use crate::slot::writer::{SlotWriter, Written};
use crate::slot::{self, SlotError};
use crate::source::{FileSource, Source};
use crate::status::{FirmwareStatus, InstallResult, Job, Pending, SlotStatus, Status};
use crate::trust::Anchors;
use std::fs::File;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What to install.
pub struct Request {
    /// The package.
    pub input: Input,
    /// What the Download asked for.
    pub order: Order,
}

/// Where a package is.
pub enum Input {
    /// A local file, as [`crate::source::open_package`] opened it: the one descriptor
    /// the install reads, leases and checks.
    File(File),
    /// On a file server: read where it lies, with Range requests, each byte checked
    /// before it is used ([`crate::download`]).
    Remote(Box<Remote>),
}

impl From<File> for Input {
    fn from(f: File) -> Self {
        Self::File(f)
    }
}

/// An input opened for reading.
#[derive(Clone)]
pub enum Opened {
    /// A leased local file.
    File(Arc<FileSource>),
    /// A package on a file server.
    Remote(Arc<RemoteSource>),
}

impl Opened {
    /// Whether the package is still held still: a file's read lease unbroken (nobody
    /// opened it for writing since it was taken); a remote source is checked block by
    /// block as it is read.
    pub fn intact(&self) -> bool {
        match self {
            Self::File(f) => crate::lease::held(f.file()).unwrap_or(false),
            Self::Remote(_) => true,
        }
    }

    /// The bytes.
    pub fn source(&self) -> Arc<dyn Source> {
        match self {
            Self::File(f) => f.clone(),
            Self::Remote(r) => r.clone(),
        }
    }

    /// A transfer failure explains the package error it caused (a verity read that
    /// failed because the connection did is a download failure, not a damaged package).
    pub fn explain<E: Into<InstallError>>(&self, e: E) -> InstallError {
        let e = e.into();
        match (self, &e) {
            (Self::Remote(r), InstallError::Package(_)) => r.failure().map(InstallError::Transfer).unwrap_or(e),
            _ => e,
        }
    }
}

/// What a Download asks for besides the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
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
    /// What the install moved from where.
    pub moved: Moved,
}

/// What an install moved from where, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Moved {
    /// Image bytes taken from the device's slots (adaptive images).
    pub reused: u64,
    /// Image bytes of zero blocks, written without reading anything (adaptive images).
    pub zero: u64,
    /// Image bytes read from the package.
    pub from_package: u64,
    /// Bytes received from the file server (a URL), and the requests sent.
    pub fetched: Option<u64>,
    /// See `fetched`.
    pub requests: Option<u64>,
    /// Seconds from opening the package to the switch.
    pub seconds: f64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What an install ended with: its result, and the record it left for TransferComplete.
#[derive(Debug)]
pub struct Outcome {
    /// The install's result.
    pub result: Result<Installed, InstallError>,
    /// The result queued for TransferComplete (status.json `transfers`): present when
    /// the Download has a CommandKey and is decided now. An activated install is decided
    /// after the reboot ([`confirm`]).
    pub transfer: Option<InstallResult>,
}

/// Install `req` into the inactive slot group.
pub fn install(
    plan: &Plan<'_>,
    bootloader: &mut dyn Bootloader,
    req: Request,
    progress: &mut dyn FnMut(Progress),
) -> Outcome {
    let dir = &plan.conf.data_directory;
    let _lock = match lock(dir) {
        Ok(l) => l,
        Err(e) => return Outcome { result: Err(e), transfer: None },
    };
    let start = plan.now;
    let target = slot::target(&plan.conf.slots, plan.booted).ok().map(|t| t[0].name.clone());
    let file = plan.conf.status_file();
    let began = Status::update(&file, |s| {
        // A job left by a killed agent is reported (once) before this one starts.
        s.settle_interrupted(secs(SystemTime::now()));
        s.job = Some(Job { command_key: req.order.command_key.clone(), slot: target.clone(), start_time: secs(start) });
    });
    // The installer's view; each change goes to disk through Status::update.
    let mut status = match began.and_then(|_| Status::load(&file)) {
        Ok(s) => s,
        Err(e) => return Outcome { result: Err(e.into()), transfer: None },
    };
    let result = run(plan, bootloader, req.input, &req.order, &mut status, progress);
    let (fault, fault_string, kind, slot) = match &result {
        Ok(i) => (0, String::new(), String::new(), Some(i.slot.clone())),
        Err(e) => (e.fault().code(), e.to_string(), e.kind().to_string(), None),
    };
    let r = InstallResult {
        command_key: req.order.command_key.clone(),
        fault_code: fault,
        fault_string: fault_string.chars().take(256).collect(),
        kind,
        slot,
        start_time: secs(start),
        complete_time: secs(SystemTime::now()),
    };
    let activated = matches!(&result, Ok(i) if i.activated);
    let transfer = (!activated && r.command_key.is_some()).then(|| r.clone());
    // Recording the result must not hide the install's own error.
    let recorded = Status::update(&file, |disk| {
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
    match (result, recorded) {
        (Ok(_), Err(e)) => Outcome { result: Err(e.into()), transfer: None },
        (result, Ok(())) => Outcome { result, transfer },
        (result, Err(_)) => Outcome { result, transfer: None },
    }
}

/// The device's phases.
struct Real<'r, 'p> {
    plan: &'r Plan<'p>,
    bootloader: &'r mut dyn Bootloader,
    /// The package until it is leased (a file) or opened (a URL); then its source.
    input: Option<Input>,
    src: Option<Opened>,
    order: &'r Order,
    status: &'r mut Status,
    progress: &'r mut dyn FnMut(Progress),
    targets: Vec<SlotConf>,
    bootname: String,
    /// The target slots' stored block-hash indexes (as lookups), taken before they are
    /// removed.
    cached: Vec<(String, Lookup)>,
    /// What the install took from where (adaptive images).
    counters: Arc<Counters>,
    /// The bundle's hooks, once admitted (RAUC `[hooks]`).
    hooks: Option<Hooks>,
    /// RAUC's transaction id for the system handlers (`RAUC_TRANSACTION_ID`).
    transaction: String,
    /// The booted slot's bootname (`RAUC_CURRENT_BOOTNAME`).
    booted: String,
    /// Boot regions written, whose partition entry switches (or fallback half is copied)
    /// once every check passed.
    switches: Vec<Step>,
}

impl Real<'_, '_> {
    fn root(&self) -> &str {
        &self.targets[0].name
    }

    /// The package's source (there is one once the lease is held).
    fn src(&self) -> Result<&Opened, InstallError> {
        self.src.as_ref().ok_or_else(|| InstallError::Access("the package is not leased".into()))
    }

    /// What the system handlers are told about this install.
    fn handler_view<'a>(&'a self, package: &'a Package) -> handler::Install<'a> {
        handler::Install {
            conf: self.plan.conf,
            booted: &self.booted,
            targets: &self.targets,
            package,
            transaction: &self.transaction,
        }
    }
}

impl Phases for Real<'_, '_> {
    type Authenticated = package::Authenticated;

    fn lease(&mut self) -> Result<(), InstallError> {
        (self.progress)(Progress { percent: 0, message: "Checking the package".into(), depth: 1 });
        let input = self.input.take().ok_or_else(|| InstallError::Access("the package is leased already".into()))?;
        let file = match input {
            Input::File(f) => f,
            Input::Remote(r) => {
                // Nothing to hold still: every byte is checked as it is fetched.
                let src = RemoteSource::open(&r, &self.plan.conf.download).map_err(InstallError::Transfer)?;
                tracing::info!("streaming {} ({} bytes)", src.url(), src.len());
                self.src = Some(Opened::Remote(Arc::new(src)));
                return Ok(());
            }
        };
        crate::lease::take(&file).map_err(|e| {
            InstallError::Access(format!("cannot hold the file still (is it open for writing elsewhere?): {e}"))
        })?;
        crate::failpoint::hit("install.leased");
        // Its length is taken now that nobody may write it.
        self.src =
            Some(Opened::File(Arc::new(FileSource::new(file).map_err(|e| InstallError::Access(e.to_string()))?)));
        Ok(())
    }

    fn authenticate(&mut self) -> Result<package::Authenticated, InstallError> {
        let src = self.src()?;
        authenticate(self.plan, src).map_err(|e| src.explain(e))
    }

    fn admit(&mut self, a: &package::Authenticated) -> Result<admit::Admission, InstallError> {
        let facts = device_facts(self.plan, &self.targets, &self.bootname, self.status)?;
        let admission = admit::admit(a.package(), &facts)?;
        // The device's pre-install handler, then the bundle's code, run only for a
        // package the device's rules admit, before anything changes (RAUC's order).
        if self.plan.conf.handlers.pre_install.is_some() {
            (self.progress)(Progress { percent: 2, message: "Running the pre-install handler".into(), depth: 2 });
            self.handler_view(a.package()).pre_install()?;
        }
        let conf = self.plan.conf;
        let variant = conf.variant().map_err(InstallError::Variant)?;
        self.hooks = Hooks::prepare(a, conf, variant.as_deref())?;
        if let Some(h) = self.hooks.as_ref().filter(|_| a.package().hooks.as_ref().is_some_and(|h| h.install_check)) {
            // A plain bundle was read again after its hash: run nothing of it unless
            // nobody opened it for writing meanwhile (the lease breaks at that open).
            if !self.src()?.intact() {
                return Err(InstallError::Modified);
            }
            (self.progress)(Progress { percent: 2, message: "Running the install-check hook".into(), depth: 2 });
            h.install_check(a.package())?;
        }
        Ok(admission)
    }

    fn prepare(&mut self) -> Result<bool, InstallError> {
        let root = self.root().to_string();
        // The target's indexes describe what is about to change: kept in memory as hints
        // for this install (every block is hashed again), removed from disk first.
        let dir = &self.plan.conf.data_directory;
        for t in &self.targets {
            if let Some(i) = slot::index::load(dir, t) {
                self.cached.push((t.name.clone(), i));
            }
            if let Err(e) = slot::index::invalidate(dir, &t.name) {
                tracing::warn!("slot {}: cannot remove its index: {e}", t.name);
            }
        }
        prepare(self.plan, self.bootloader, self.status, &root, &self.bootname)
    }

    fn write(&mut self, a: package::Authenticated) -> Result<Package, InstallError> {
        let total = a.package().images.iter().map(|i| i.size).sum::<u64>().max(1);
        let started = std::time::Instant::now();
        let mut blocks = slot_blocks(self.plan, a.package(), &self.targets, &mut self.cached, self.progress);
        self.cached.clear();
        let adaptive = blocks.as_mut().map(|b| Adaptive { reuse: b, counters: self.counters.clone() });
        let counters = self.counters.clone();
        let read_back = self.plan.conf.verify_written;
        let src = self.src.clone();
        let intact = move || src.as_ref().is_some_and(|s| s.intact());
        let hooked = self.hooks.as_ref().map(|h| (h, self.plan.conf.slots.as_slice(), &intact as &dyn Fn() -> bool));
        let written = write(a, &self.targets, read_back, total, adaptive, hooked, &counters, self.progress);
        let (pkg, switches) = written.map_err(|e| match &self.src {
            Some(src) => src.explain(e),
            None => e,
        })?;
        self.switches = switches;
        crate::failpoint::hit("install.written");
        if let Some(b) = &blocks {
            store_indexes(self.plan, &pkg, &self.targets, b);
            let (reused, zero, fetched) = counters.get();
            let mib = |b: u64| b as f64 / f64::from(1 << 20);
            let message = format!(
                "Adaptive: {:.1} MiB reused from the slots, {:.1} MiB of zero blocks, {:.1} MiB from the bundle, in {:.1} s",
                mib(reused),
                mib(zero),
                mib(fetched),
                started.elapsed().as_secs_f64()
            );
            tracing::info!("{message}");
            (self.progress)(Progress { percent: 95, message, depth: 2 });
        }
        Ok(pkg)
    }

    fn still_leased(&mut self) -> Result<(), InstallError> {
        let src = match self.src()? {
            Opened::File(f) => f,
            Opened::Remote(r) => {
                let c = r.counters();
                tracing::info!("fetched {} bytes in {} requests ({} resumed)", c.fetched, c.requests, c.resumes);
                return Ok(());
            }
        };
        if !crate::lease::held(src.file()).unwrap_or(false) {
            return Err(InstallError::Modified);
        }
        crate::lease::release(src.file());
        Ok(())
    }

    fn approve(&mut self, measured: bool, admission: admit::Admission) -> Result<(), InstallError> {
        let root = self.root().to_string();
        approve(self.plan, measured, admission, &root, &self.bootname, self.progress)
    }

    fn post_install(&mut self, pkg: &Package) -> Result<(), InstallError> {
        if self.plan.conf.statusfile == crate::config::StatusFile::PerSlot {
            save_slot_status(self.plan, &self.targets, pkg, &self.transaction)?;
        }
        if self.plan.conf.handlers.post_install.is_some() {
            (self.progress)(Progress { percent: 97, message: "Running the post-install handler".into(), depth: 2 });
            self.handler_view(pkg).post_install()?;
        }
        // Every check passed: a boot region's partition entry now points at the half
        // that holds the new bootloader (RAUC switches it right after the write).
        for s in std::mem::take(&mut self.switches) {
            tracing::info!("boot region of {}: {s:?}", s.device().display());
            s.apply().map_err(|e| InstallError::Slot(SlotError::Region(format!("{}: {e}", s.device().display()))))?;
        }
        Ok(())
    }

    fn record(&mut self, r: SlotRecord<'_>) {
        let s = match r {
            SlotRecord::Failed(f) => slot_status(f, None, self.plan.now),
            SlotRecord::Available(pkg) => slot_status(FirmwareStatus::Available, Some(pkg), self.plan.now),
        };
        self.status.slots.insert(self.root().to_string(), s);
    }

    fn switch(&mut self, pkg: &Package) -> Result<(), InstallError> {
        let root = self.root().to_string();
        switch(self.plan, self.bootloader, self.order, self.status, pkg, &root, &self.bootname, self.progress)
    }
}

/// The target group, then the phases; progress reaches 100 on success.
fn run(
    plan: &Plan<'_>,
    bootloader: &mut dyn Bootloader,
    input: Input,
    order: &Order,
    status: &mut Status,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, InstallError> {
    let targets: Vec<SlotConf> = slot::target(&plan.conf.slots, plan.booted)?.into_iter().cloned().collect();
    let bootname = targets[0].bootname.clone().ok_or_else(|| SlotError::NoTarget(targets[0].class.clone()))?;
    let slot = targets[0].name.clone();
    let mut real = Real {
        plan,
        bootloader,
        input: Some(input),
        src: None,
        order,
        status,
        progress,
        targets,
        bootname: bootname.clone(),
        cached: Vec::new(),
        counters: Arc::default(),
        hooks: None,
        transaction: transaction_id(),
        booted: plan.booted.bootname.clone().unwrap_or_default(),
        switches: Vec::new(),
    };
    let started = std::time::Instant::now();
    // `[system] activate-installed=false`: every install is stored, none activated.
    let activate = order.activate && plan.conf.activate_installed;
    let package = sequence(&mut real, activate)?;
    let (reused, zero, from_bundle) = real.counters.get();
    let total: u64 = package.images.iter().map(|i| i.size).sum();
    // Images read whole, and what the assembled ones took from the bundle (counted
    // where it was read: the three add up to the images' sizes).
    let whole = total.saturating_sub(real.counters.assembled.load(std::sync::atomic::Ordering::Relaxed));
    let remote = match &real.src {
        Some(Opened::Remote(r)) => Some(r.counters()),
        _ => None,
    };
    let moved = Moved {
        reused,
        zero,
        from_package: whole + from_bundle,
        fetched: remote.map(|c| c.fetched),
        requests: remote.map(|c| c.requests),
        seconds: started.elapsed().as_secs_f64(),
    };
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let mut message = format!("Installed: {:.1} MiB in {:.1} s", mib(total), moved.seconds);
    if reused + zero > 0 {
        message += &format!(", {:.1} MiB reused", mib(reused + zero));
    }
    if let Some(f) = moved.fetched {
        message += &format!(", {:.1} MiB fetched", mib(f));
    }
    (real.progress)(Progress { percent: 100, message, depth: 1 });
    Ok(Installed { package, slot, bootname, activated: activate, moved })
}

/// `[system] statusfile=per-slot`: RAUC's slot status (`slot.raucs`, the `[slot]` keys of
/// RAUC 1.8 src/slot.c `r_slot_status_save`) written, atomically, into the root of each
/// file-system slot the package wrote, mounted under `mountprefix` for it.
///
/// Errors: a slot cannot be mounted or written ([`SlotError::Region`] names it).
fn save_slot_status(
    plan: &Plan<'_>,
    targets: &[SlotConf],
    pkg: &Package,
    transaction: &str,
) -> Result<(), InstallError> {
    let fail = |slot: &SlotConf, e: String| InstallError::Slot(SlotError::Status(format!("slot {}: {e}", slot.name)));
    let now = plan.now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for (slot, image) in targets
        .iter()
        .filter(|t| t.kind.filesystem().is_some())
        .filter_map(|t| pkg.images.iter().find(|i| i.slot_class == t.class && !i.hooks.install).map(|i| (t, i)))
    {
        let mut kf = crate::config::keyfile::KeyFile::default();
        kf.set("slot", "bundle.compatible", &pkg.compatible);
        for (k, v) in
            [("bundle.version", &pkg.version), ("bundle.description", &pkg.description), ("bundle.build", &pkg.build)]
        {
            if let Some(v) = v {
                kf.set("slot", k, v);
            }
        }
        kf.set("slot", "status", "ok");
        kf.set("slot", "sha256", &hex::encode(&image.sha256));
        kf.set("slot", "size", &image.size.to_string());
        kf.set("slot", "installed.transaction", transaction);
        // RFC 3339 UTC (der's DateTime displays it so), as RAUC's ISO 8601 stamp.
        if let Ok(t) = der::DateTime::from_unix_duration(std::time::Duration::from_secs(now)) {
            kf.set("slot", "installed.timestamp", &t.to_string());
        }
        kf.set("slot", "installed.count", "1");
        let prefix = &plan.conf.mount_prefix;
        crate::fsutil::private_dir(prefix).map_err(|e| fail(slot, format!("mountprefix {}: {e}", prefix.display())))?;
        let at = tempfile::Builder::new().prefix("slot-").tempdir_in(prefix).map_err(|e| fail(slot, e.to_string()))?;
        let m = crate::slot::mount::Mounted::mount(slot, at.path()).map_err(|e| fail(slot, e.to_string()))?;
        let written = crate::fsutil::write_atomic(&m.path().join("slot.raucs"), kf.to_text().as_bytes());
        let unmounted = m.unmount();
        if unmounted.is_err() {
            // Still mounted: removing the directory would delete the slot's files.
            let kept = at.keep();
            tracing::warn!("{}: the slot is still mounted in it; left in place", kept.display());
        }
        written.and(unmounted).map_err(|e| fail(slot, format!("slot.raucs: {e}")))?;
        tracing::info!("slot {}: status written into slot.raucs", slot.name);
    }
    Ok(())
}

/// A random UUID (version 4, RFC 9562 section 5.4), RAUC's transaction id.
fn transaction_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        b = (SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)).to_be_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Phase 1: authenticate the package (signature, chain, structure, the images for this
/// device), and for a local file check ahead every byte that can be checked before one is
/// written. A package on a file server is read once: each block is checked as it arrives
/// (verity), or each file's digest before the slot is activated (TR-069).
fn authenticate(plan: &Plan<'_>, src: &Opened) -> Result<package::Authenticated, InstallError> {
    let ctx = Context {
        anchors: plan.anchors,
        policy: plan.conf.policy.clone(),
        now: plan.now,
        variant: plan.conf.variant().map_err(InstallError::Variant)?,
        install_images_only: true,
        check_whole_tree: false,
        check_ahead: matches!(src, Opened::File(_)),
    };
    Ok(package::authenticate(src.source(), &ctx)?)
}

/// What admission needs to know about the device: configuration, the booted slot's
/// installed version, the target slots' sizes, the PCRs measured boot seals to.
fn device_facts(
    plan: &Plan<'_>,
    targets: &[SlotConf],
    bootname: &str,
    status: &Status,
) -> Result<admit::DeviceFacts, InstallError> {
    let conf = plan.conf;
    let mut slots = Vec::new();
    for t in targets {
        // Read here, judged by admission in its order (a device that cannot be sized
        // matters only for a slot the package writes).
        let size = crate::slot::writer::capacity(t).map_err(|e| e.to_string());
        slots.push(admit::TargetSlot {
            name: t.name.clone(),
            class: t.class.clone(),
            device: t.device.display().to_string(),
            readonly: t.readonly,
            size,
            // A boot region is on the whole disk, whose partitions are in use.
            mounted: if t.kind.has_region() { None } else { crate::slot::in_use(t) },
            allow_mounted: t.allow_mounted,
        });
    }
    let measured_boot = conf.measured_boot.as_ref().map(|mb| admit::MeasuredFacts {
        required: mb.required,
        sealed_pcrs: match &mb.pcrs {
            Some(p) => p.clone(),
            // A record that cannot be read seals to nothing here: `prepare` then reads
            // it with the TPM before a byte is written, and fails closed (a damaged
            // record with a written policy index is could-not-check; with none, measured
            // boot was never initialized and nothing is sealed).
            None => crate::measured_boot::record::Record::load(&conf.data_directory)
                .ok()
                .and_then(|r| {
                    let booted = plan.booted.bootname.as_ref()?;
                    Some(r.slots.get(booted)?.pcrs.keys().copied().collect())
                })
                .unwrap_or_default(),
        },
        target_bootname: bootname.to_string(),
    });
    Ok(admit::DeviceFacts {
        compatible: conf.compatible.clone(),
        bundle_formats: conf.bundle_formats.clone(),
        minimum: plan.minimum,
        min_bundle_version: conf.min_bundle_version.clone(),
        running_version: status.slots.get(&plan.booted.name).and_then(|s| s.version.clone()),
        targets: slots,
        measured_boot,
        runs_hooks: conf.bundle_hooks == crate::config::BundleHooksPolicy::Run,
    })
}

/// Phase 3: the target leaves the approved measured-boot policy before a byte of it
/// changes, is marked bad (not bootable until written and verified) and recorded as
/// being written. Returns whether measured boot was prepared.
fn prepare(
    plan: &Plan<'_>,
    bootloader: &mut dyn Bootloader,
    status: &mut Status,
    root: &str,
    bootname: &str,
) -> Result<bool, InstallError> {
    let booted = plan.booted.bootname.as_deref().unwrap_or_default();
    let measured = match plan.measured {
        Some(m) => m.prepare(booted, bootname)?,
        None => false,
    };
    bootloader.set_state(bootname, false)?;
    crate::failpoint::hit("install.marked-bad");
    let downloading = slot_status(FirmwareStatus::Downloading, None, plan.now);
    status.slots.insert(root.to_string(), downloading.clone());
    Status::update(&plan.conf.status_file(), |disk| {
        disk.slots.insert(root.to_string(), downloading);
    })
    .inspect_err(|_| {
        // Marked bad, and not recorded as being written: it failed.
        status.slots.insert(root.to_string(), slot_status(FirmwareStatus::InstallationFailed, None, plan.now));
    })?;
    Ok(measured)
}

/// The device's blocks for the package's adaptive images: per class, the target slot
/// (its stored index if it had one, else hashed now) and the booted group's slot (its
/// stored index, else hashed now and stored). None when no image is adaptive.
fn slot_blocks(
    plan: &Plan<'_>,
    pkg: &Package,
    targets: &[SlotConf],
    cached: &mut Vec<(String, Lookup)>,
    progress: &mut dyn FnMut(Progress),
) -> Option<SlotBlocks> {
    let dir = &plan.conf.data_directory;
    let mut blocks = SlotBlocks::default();
    let mut any = false;
    // A slot a hook changes is not the image the bundle's index describes.
    let adaptive = |i: &&package::Image| i.adaptive.iter().any(|m| m == blockindex::METHOD) && !i.hooks.any();
    for image in pkg.images.iter().filter(adaptive) {
        // A boot region's halves are written whole.
        let Some(target) =
            targets.iter().find(|t| t.class == image.slot_class && !t.kind.has_region() && !t.kind.is_flash())
        else {
            continue;
        };
        any = true;
        let mut indexed = |slot: &SlotConf, stored: Option<Lookup>, keep: bool| -> Option<Local> {
            let lookup = match stored {
                Some(l) => l,
                None => {
                    progress(Progress { percent: 5, message: format!("Indexing slot {}", slot.name), depth: 2 });
                    let started = std::time::Instant::now();
                    let indexed = slot::index::index_device(dir, slot, keep).or_else(|e| {
                        // Storing failed: the lookup is still worth having.
                        tracing::warn!("slot {}: cannot store its index: {e}", slot.name);
                        slot::index::index_device(dir, slot, false)
                    });
                    let (lookup, blocks) =
                        indexed.inspect_err(|e| tracing::warn!("slot {}: cannot index it: {e}", slot.name)).ok()?;
                    tracing::info!("slot {}: {blocks} blocks hashed in {:.2?}", slot.name, started.elapsed());
                    lookup
                }
            };
            Local::open(slot, lookup).inspect_err(|e| tracing::warn!("slot {}: {e}", slot.name)).ok()
        };
        let stored = cached.iter().position(|(n, _)| *n == target.name).map(|i| cached.swap_remove(i).1);
        let t = indexed(target, stored, false);
        let active = plan.conf.slots.iter().find(|s| {
            s.class == image.slot_class
                && (s.name == plan.booted.name || s.parent.as_deref() == Some(plan.booted.name.as_str()))
        });
        let a = active.and_then(|s| indexed(s, slot::index::load(dir, s), true));
        blocks.add(&image.slot_class, t, a);
    }
    any.then_some(blocks)
}

/// After an adaptive install: each slot written holds its image, whose index the bundle
/// carried; stored under the image's SHA-256 (a failure only costs the next install time).
fn store_indexes(plan: &Plan<'_>, pkg: &Package, targets: &[SlotConf], blocks: &SlotBlocks) {
    for (class, index) in blocks.assembled() {
        let (Some(t), Some(image)) =
            (targets.iter().find(|t| t.class == *class), pkg.images.iter().find(|i| i.slot_class == *class))
        else {
            continue;
        };
        if let Err(e) = slot::index::store(&plan.conf.data_directory, &t.name, Some(&hex::encode(&image.sha256)), index)
        {
            tracing::warn!("slot {}: cannot store its index: {e}", t.name);
        }
    }
}

/// The bundle's hooks, every slot of the configuration, and whether the package is still
/// held still.
type HookedWith<'a> = (&'a Hooks, &'a [SlotConf], &'a dyn Fn() -> bool);

/// Phase 4: stream every image into its slot, with the bundle's slot hooks around or
/// instead of the write ([`hooked::HookedWriter`]); progress from 5 to 95 percent.
#[allow(clippy::too_many_arguments)]
fn write(
    authenticated: package::Authenticated,
    targets: &[SlotConf],
    read_back: bool,
    total: u64,
    adaptive: Option<Adaptive<'_>>,
    hooks: Option<HookedWith<'_>>,
    counters: &Counters,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Package, Vec<Step>), InstallError> {
    let mut shown = 0;
    let mut report = |w: Written<'_>| match w {
        Written::Begin { image, slot } => {
            progress(Progress { percent: 5, message: format!("Writing {image} to slot {slot}"), depth: 2 })
        }
        Written::Bytes(n) => {
            let now = n.min(total) * 90 / total;
            if now != shown {
                shown = now;
                let mib = |b: u64| b as f64 / f64::from(1 << 20);
                let mut message = format!("Writing: {:.1} of {:.1} MiB", mib(n.min(total)), mib(total));
                let (reused, zero, fetched) = counters.get();
                if reused + zero + fetched > 0 {
                    let (r, z, f) = (mib(reused), mib(zero), mib(fetched));
                    message += &format!(" ({r:.1} reused, {z:.1} zero, {f:.1} from the bundle)");
                }
                progress(Progress { percent: 5 + now as u8, message, depth: 2 });
            }
        }
        Written::ReadBack { slot } => {
            progress(Progress { percent: 95, message: format!("Reading slot {slot} back"), depth: 2 })
        }
    };
    let mut writer = SlotWriter::new(targets, read_back, &mut report);
    let Some((hooks, slots, intact)) = hooks else {
        let pkg = authenticated.stream_adaptive(&mut writer, adaptive)?;
        return Ok((pkg, writer.take_steps()));
    };
    let mut hooked = hooked::HookedWriter::new(&mut writer, hooks, targets, slots, intact);
    let streamed = authenticated.stream_adaptive(&mut hooked, adaptive);
    // A hook's own error, not the sink error it became.
    let pkg = match (streamed, hooked.failure()) {
        (Err(_), Some(e)) => return Err(e.into()),
        (r, _) => r?,
    };
    Ok((pkg, writer.take_steps()))
}

/// Phase 5: commit the target's reference values to the measured-boot policy (the
/// booted slot and the target are approved).
fn approve(
    plan: &Plan<'_>,
    measured: bool,
    admission: admit::Admission,
    root: &str,
    bootname: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), InstallError> {
    match (plan.measured, admission.reference_values) {
        (Some(m), Some(v)) if measured => {
            progress(Progress { percent: 95, message: "Committing the reference values".into(), depth: 1 });
            let booted = plan.booted.bootname.as_deref().unwrap_or_default();
            m.approve(booted, bootname, v)?;
            crate::failpoint::hit("install.approved");
        }
        (Some(_), _) => tracing::warn!(
            "slot {root} has no reference values approved: it will boot, but sealed secrets will not unseal there"
        ),
        (None, _) => {}
    }
    Ok(())
}

/// Phase 6: the pending confirmation goes to disk, then the bootloader boots the target
/// next.
#[allow(clippy::too_many_arguments)]
fn switch(
    plan: &Plan<'_>,
    bootloader: &mut dyn Bootloader,
    order: &Order,
    status: &Status,
    pkg: &Package,
    root: &str,
    bootname: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), InstallError> {
    let pending = Pending {
        command_key: order.command_key.clone(),
        slot: root.to_string(),
        bootname: bootname.to_string(),
        security_version: pkg.security_version,
        start_time: secs(plan.now),
    };
    let available = status.slots.get(root).cloned();
    Status::update(&plan.conf.status_file(), |disk| {
        if let Some(a) = available {
            disk.slots.insert(root.to_string(), a);
        }
        disk.pending = Some(pending);
    })?;
    crate::failpoint::hit("install.pending");
    progress(Progress { percent: 95, message: format!("Switching to slot {root}"), depth: 1 });
    bootloader.set_primary(bootname)?;
    crate::failpoint::hit("install.switched");
    Ok(())
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
