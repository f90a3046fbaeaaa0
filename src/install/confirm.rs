//! After the reboot: confirm the booted slot against its committed reference values, or
//! record that the device fell back (R6, R5).
//!
//! `boot-check` runs early at boot. It first settles what happened to a pending install:
//! if another slot was meant to come up and the bootloader gave up on it (marked bad, or
//! no longer primary), the install's CommandKey gets ActivationFailed (fault 9010) and
//! the policy approves only the booted slot. Then it compares the booted slot's PCRs
//! with its committed values; on a mismatch the slot is marked bad so that the bootloader
//! falls back at the next reboot. `mark good` confirms: the policy approves only the
//! booted slot (the old slot can no longer unseal) and anti-rollback moves up.

use crate::bootloader::{BootError, BootState, Bootloader};
use crate::config::{Config, SlotConf};
use crate::fault::{CwmpFault, Fault};
use crate::measured_boot::{MeasuredBoot, MeasuredBootError, PcrMismatch};
use crate::rollback::Counter;
use crate::status::{FirmwareStatus, InstallResult, Status, StatusError};
use crate::tpm::owner::TpmOwner;
use crate::tpm::TpmError;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why a confirmation step could not be done.
#[derive(Debug, Error)]
pub enum ConfirmError {
    /// The bootloader environment.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The status file.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The measured-boot policy or the TPM.
    #[error(transparent)]
    MeasuredBoot(#[from] MeasuredBootError),
    /// The booted slot has no bootname.
    #[error("slot {0} has no bootname")]
    NoBootname(String),
    /// The slot holds less than the anti-rollback minimum.
    #[error(transparent)]
    BelowMinimum(#[from] super::admit::BelowMinimum),
    /// The slot was not completely written and verified by the last install into it.
    #[error("slot {slot} is not completely written and verified (its status is {status:?}): refused")]
    Incomplete {
        /// Slot name.
        slot: String,
        /// Its TR-181 status.
        status: FirmwareStatus,
    },
    /// The status file was reset (it was damaged) and the slot was not written since:
    /// whether it is whole is unknown.
    #[error("slot {slot}: the status file was reset since it was last written, so it is not known to be whole: install into it first")]
    Unknown {
        /// Slot name.
        slot: String,
    },
    /// The device keeps no anti-rollback counter: `[keyring]` names the trust anchors
    /// instead of the TPM.
    #[error("anti-rollback is not enforced on this device: [keyring] names the trust anchors, not the TPM")]
    NoCounter,
}

impl From<TpmError> for ConfirmError {
    fn from(e: TpmError) -> Self {
        Self::MeasuredBoot(e.into())
    }
}

impl Fault for ConfirmError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Boot(_) => "bootloader",
            Self::Status(_) => "status",
            Self::MeasuredBoot(e) => e.kind(),
            Self::NoBootname(_) => "slot",
            Self::BelowMinimum(e) => e.kind(),
            Self::Incomplete { .. } => "slot-incomplete",
            Self::Unknown { .. } => "slot-unknown",
            Self::NoCounter => "anti-rollback",
        }
    }
    fn fault(&self) -> CwmpFault {
        match self {
            Self::MeasuredBoot(e) => e.fault(),
            Self::BelowMinimum(e) => e.fault(),
            Self::Incomplete { .. } | Self::Unknown { .. } => CwmpFault::RequestDenied,
            _ => CwmpFault::InternalError,
        }
    }
}

/// What `mark good` on the booted slot did.
#[derive(Debug)]
pub struct Confirmed {
    /// The Download it completed, queued for TransferComplete.
    pub transfer: Option<InstallResult>,
    /// Retiring the slots below the (possibly raised) minimum, after the completion.
    pub retired: Result<(), ConfirmError>,
}

/// The device after a boot: its configuration, the booted slot, its bootloader and TPM.
pub struct Booted<'a> {
    /// Configuration.
    pub conf: &'a Config,
    /// The booted slot (root of its group).
    pub slot: &'a SlotConf,
    /// Its bootloader.
    pub bootloader: &'a mut dyn Bootloader,
    /// The TPM, when the device uses one (measured boot or anti-rollback).
    pub tpm: Option<TpmOwner>,
    /// The anti-rollback counter (raised by `mark good` when `tpm` is set).
    pub counter: Option<Counter>,
}

/// What `boot-check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootCheck {
    /// A pending install whose slot did not come up: (slot, CommandKey).
    pub fell_back_from: Option<(String, Option<String>)>,
    /// `None`: not checked (no measured boot, or no values and not required). Else the
    /// PCRs that differ (empty: the slot measures as expected).
    pub mismatches: Option<Vec<PcrMismatch>>,
    /// The booted slot holds less than the anti-rollback minimum (the device fell back
    /// to an old slot): it runs, takes the next install, but is neither confirmed nor
    /// approved, so sealed secrets stay sealed.
    pub below_minimum: Option<super::admit::BelowMinimum>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Booted<'_> {
    fn bootname(&self) -> Result<String, ConfirmError> {
        self.slot.bootname.clone().ok_or_else(|| ConfirmError::NoBootname(self.slot.name.clone()))
    }

    /// The anti-rollback minimum (0 when the device does not enforce one). A counter the
    /// TPM says is not defined is an error, not 0: `trust provision` defines it with the
    /// roots, and a "not defined" answer carries no response HMAC (anyone on the TPM's
    /// bus can send one).
    fn minimum(&self) -> Result<u64, ConfirmError> {
        let (Some(owner), Some(counter)) = (&self.tpm, self.counter) else { return Ok(0) };
        owner.call(move |t| counter.minimum(t)).map_err(ConfirmError::from)
    }

    /// The security version `slot` holds: what the status file recorded when the agent
    /// installed it, else what its committed reference values say; none counts as 0.
    fn held(&self, status: &Status, slot: &SlotConf) -> Option<u32> {
        status.slots.get(&slot.name).and_then(|s| s.security_version).or_else(|| {
            let b = slot.bootname.as_ref()?;
            crate::measured_boot::record::Record::load(&self.conf.data_directory).ok()?.slots.get(b)?.security_version
        })
    }

    /// May `slot` become primary or be confirmed: completely written and verified by the
    /// last install into it, and at or above the anti-rollback minimum.
    fn check_usable(&self, slot: &SlotConf) -> Result<(), ConfirmError> {
        use super::admit::{slot_at_minimum, slot_whole, NotWhole, SlotFacts};
        let status = Status::load(&self.conf.status_file())?;
        let facts = SlotFacts {
            name: &slot.name,
            recorded: status.slots.get(&slot.name).map(|s| s.status),
            status_reset: status.reset.is_some(),
            booted: slot.name == self.slot.name,
        };
        slot_whole(&facts).map_err(|u| match u {
            NotWhole::Incomplete(status) => ConfirmError::Incomplete { slot: slot.name.clone(), status },
            NotWhole::Unknown => ConfirmError::Unknown { slot: slot.name.clone() },
        })?;
        slot_at_minimum(&slot.name, self.held(&status, slot), self.minimum()?)?;
        Ok(())
    }

    /// Every other bootable slot below the minimum is marked bad (its branch already left
    /// the policy: the index never approves one). Idempotent: `boot-check` repeats it, so
    /// a power cut after the minimum rose and before this ran is healed at the next boot.
    fn retire_below_minimum(&mut self) -> Result<(), ConfirmError> {
        let minimum = self.minimum()?;
        if minimum == 0 {
            return Ok(());
        }
        if let Some((owner, mb)) = self.measured() {
            owner.call(move |t| mb.reapply(t))?;
        }
        let status = Status::load(&self.conf.status_file())?;
        let others: Vec<SlotConf> = self
            .conf
            .slots
            .iter()
            .filter(|s| s.name != self.slot.name && s.bootname.is_some() && s.class == self.slot.class)
            .cloned()
            .collect();
        for s in others {
            let b = s.bootname.clone().expect("filtered");
            if super::admit::slot_at_minimum(&s.name, self.held(&status, &s), minimum).is_err()
                && self.bootloader.state(&b)? == BootState::Good
            {
                tracing::warn!("slot {} is below the anti-rollback minimum {minimum}: marked bad", s.name);
                self.bootloader.set_state(&b, false)?;
                forget_indexes(self.conf, &s.name);
                crate::failpoint::hit("confirm.retired");
            }
        }
        Ok(())
    }

    fn measured(&self) -> Option<(TpmOwner, MeasuredBoot)> {
        Some((self.tpm.clone()?, MeasuredBoot::from_config(self.conf)?))
    }

    /// Approve only the booted slot, if measured boot is initialized.
    fn approve_only_booted(&self) -> Result<(), ConfirmError> {
        let Some((owner, mb)) = self.measured() else { return Ok(()) };
        let b = self.bootname()?;
        owner.call(move |t| {
            if mb.load(t)?.is_some_and(|r| r.slots.contains_key(&b)) {
                mb.approve_only(t, &[&b])?;
            }
            Ok::<_, MeasuredBootError>(())
        })?;
        Ok(())
    }

    /// Settle a pending install whose slot is not the booted one and that the bootloader
    /// gave up on (or never switched to): ActivationFailed for its CommandKey.
    fn settle_fallback(&mut self) -> Result<Option<(String, Option<String>)>, ConfirmError> {
        let status = Status::load(&self.conf.status_file())?;
        let Some(p) = status.pending.clone().filter(|p| p.slot != self.slot.name) else { return Ok(None) };
        let abandoned = self.bootloader.state(&p.bootname)? == BootState::Bad
            || self.bootloader.primary()?.as_deref() != Some(p.bootname.as_str());
        if !abandoned {
            return Ok(None); // switched, not rebooted yet
        }
        // The policy first: a power cut after it leaves the pending record, and the next
        // boot-check does this again. (A booted slot below the minimum gets no branch.)
        self.approve_only_booted()?;
        let below =
            super::admit::slot_at_minimum(&self.slot.name, self.held(&status, self.slot), self.minimum()?).err();
        let r = InstallResult {
            command_key: p.command_key.clone(),
            fault_code: CwmpFault::TransferFailure.code(),
            fault_string: format!(
                "activation failed: slot {} ({}) did not come up, the device fell back to slot {}{}",
                p.slot,
                p.bootname,
                self.slot.name,
                below.map(|b| format!(
                    ", which holds security version {}, below the minimum {}: it runs without its sealed secrets until an update at or above {} is installed",
                    b.held, b.minimum, b.minimum
                )).unwrap_or_default()
            ),
            kind: "activation-failed".into(),
            slot: Some(p.slot.clone()),
            start_time: p.start_time,
            complete_time: now(),
        };
        let settled = Status::update(&self.conf.status_file(), |s| {
            if s.pending.as_ref() != Some(&p) {
                return false; // settled meanwhile by another caller
            }
            s.complete(r);
            if let Some(x) = s.slots.get_mut(&p.slot) {
                x.status = FirmwareStatus::ActivationFailed;
            }
            s.pending = None;
            true
        })?;
        if !settled {
            return Ok(None);
        }
        tracing::warn!("slot {} did not come up: ActivationFailed for CommandKey {:?}", p.slot, p.command_key);
        Ok(Some((p.slot, p.command_key)))
    }

    /// `security-version --raise`: raise the anti-rollback minimum to `target` (it never
    /// goes down) and enforce it at once: other slots below it are marked bad and leave
    /// the policy. Returns the minimum now held, and the booted slot's shortfall if the
    /// booted slot itself is below it (it keeps running and takes the next install; it is
    /// neither confirmed nor approved from now on).
    ///
    /// Errors: [`ConfirmError`] (TPM, status, bootloader). Without a TPM counter:
    /// [`ConfirmError::NoCounter`].
    pub fn raise_minimum(&mut self, target: u64) -> Result<(u64, Option<super::admit::BelowMinimum>), ConfirmError> {
        let (Some(owner), Some(counter)) = (&self.tpm, self.counter) else { return Err(ConfirmError::NoCounter) };
        let minimum = owner.call(move |t| counter.raise(t, target)).map_err(ConfirmError::from)?;
        crate::failpoint::hit("confirm.raised");
        self.retire_below_minimum()?;
        let status = Status::load(&self.conf.status_file())?;
        Ok((minimum, super::admit::slot_at_minimum(&self.slot.name, self.held(&status, self.slot), minimum).err()))
    }

    /// Settle a fallback only (no PCR check: that is `boot-check`'s), e.g. when the
    /// service starts: the pending install's outcome must be known before it is reported.
    pub fn settle(&mut self) -> Result<Option<(String, Option<String>)>, ConfirmError> {
        self.settle_fallback()
    }

    fn measure(&self) -> Result<Option<Vec<PcrMismatch>>, ConfirmError> {
        let Some((owner, mb)) = self.measured() else { return Ok(None) };
        let b = self.bootname()?;
        Ok(owner.call(move |t| mb.check(t, &b))?)
    }

    /// `boot-check`: settle a fallback, then compare the booted slot's PCRs with its
    /// committed values; on a mismatch mark it bad (the bootloader falls back).
    pub fn boot_check(&mut self) -> Result<BootCheck, ConfirmError> {
        let fell_back_from = self.settle_fallback()?;
        let status = Status::load(&self.conf.status_file())?;
        let below_minimum =
            super::admit::slot_at_minimum(&self.slot.name, self.held(&status, self.slot), self.minimum()?).err();
        match &below_minimum {
            // Not marked bad: it may be the only slot that boots, and it must take the
            // next install (recovery). It is not confirmed and gets no policy branch.
            Some(b) => {
                tracing::error!(
                    "{b}: not confirmed; sealed secrets stay sealed until an update at or above {} is installed",
                    b.minimum
                );
                self.approve_only_booted()?;
                let r = InstallResult {
                    command_key: None,
                    fault_code: CwmpFault::TransferFailure.code(),
                    fault_string: format!(
                        "activation failed: the device runs slot {}, which holds security version {}, below the minimum {}; install an update at or above {}",
                        b.slot, b.held, b.minimum, b.minimum
                    ),
                    kind: "activation-failed".into(),
                    slot: Some(b.slot.clone()),
                    start_time: now(),
                    complete_time: now(),
                };
                Status::update(&self.conf.status_file(), |s| {
                    if s.last_result.as_ref().is_none_or(|l| l.fault_string != r.fault_string) {
                        s.complete(r);
                    }
                })?;
            }
            None => self.retire_below_minimum()?,
        }
        let mismatches = self.measure()?;
        if let Some(m) = mismatches.as_ref().filter(|m| !m.is_empty()) {
            for x in m {
                tracing::debug!("slot {}: {x}", self.slot.name);
            }
            self.bootloader.set_state(&self.bootname()?, false)?;
            forget_indexes(self.conf, &self.slot.name);
            let name = self.slot.name.clone();
            Status::update(&self.conf.status_file(), |s| {
                let entry = s.slots.entry(name).or_insert_with(|| crate::status::SlotStatus {
                    status: FirmwareStatus::ActivationFailed,
                    version: None,
                    compatible: None,
                    sha256: None,
                    security_version: None,
                    installed_at: None,
                });
                entry.status = FirmwareStatus::ActivationFailed;
            })?;
        }
        Ok(BootCheck { fell_back_from, mismatches, below_minimum })
    }

    /// `mark good` on the booted slot: refused unless it measures as its values (when it
    /// has any); then the bootloader keeps it, the policy approves only it, the pending
    /// install is confirmed and anti-rollback rises to its security version.
    ///
    /// Returns the Download this completed (queued for TransferComplete), if any, and
    /// the outcome of retiring the slots now below the minimum, which comes after it (a
    /// failure there fails `mark good`, but the Download stays completed: `boot-check`
    /// retires them again at every boot).
    pub fn mark_good(&mut self) -> Result<Confirmed, ConfirmError> {
        self.check_usable(self.slot)?;
        if let Some(m) = self.measure()?.filter(|m| !m.is_empty()) {
            return Err(MeasuredBootError::Mismatch { slot: self.bootname()?, mismatches: m }.into());
        }
        self.bootloader.set_state(&self.bootname()?, true)?;
        self.approve_only_booted()?;
        let status = Status::load(&self.conf.status_file())?;
        let Some(p) = status.pending.clone().filter(|p| p.slot == self.slot.name) else {
            return Ok(Confirmed { transfer: None, retired: Ok(()) });
        };
        if let (Some(sv), Some(owner), Some(counter)) = (p.security_version, &self.tpm, self.counter) {
            owner.call(move |t| counter.raise(t, sv as u64).map_err(MeasuredBootError::from))?;
            crate::failpoint::hit("confirm.raised");
        }
        // The Download is complete now that its slot runs and is confirmed.
        let r = InstallResult {
            command_key: p.command_key.clone(),
            fault_code: 0,
            fault_string: String::new(),
            kind: String::new(),
            slot: Some(p.slot.clone()),
            start_time: p.start_time,
            complete_time: now(),
        };
        let name = self.slot.name.clone();
        let completed = Status::update(&self.conf.status_file(), |s| {
            if s.pending.as_ref() != Some(&p) {
                return None;
            }
            if let Some(x) = s.slots.get_mut(&name) {
                x.status = FirmwareStatus::Active;
            }
            s.complete(r.clone());
            s.pending = None;
            r.command_key.is_some().then_some(r)
        })?;
        // The minimum may have risen: the other slot leaves the bootloader's choice too.
        Ok(Confirmed { transfer: completed, retired: self.retire_below_minimum() })
    }

    /// `mark good <other>`: the bootloader may boot it again (only a slot that is
    /// completely written and at or above the minimum).
    pub fn mark_good_other(&mut self, other: &SlotConf) -> Result<(), ConfirmError> {
        self.check_usable(other)?;
        let b = other.bootname.clone().ok_or_else(|| ConfirmError::NoBootname(other.name.clone()))?;
        self.bootloader.set_state(&b, true)?;
        Ok(())
    }

    /// `mark active <other>`: approve OR(booted, other) first (when measured boot is
    /// initialized and the slot has values), then make it the bootloader's primary.
    pub fn mark_active(&mut self, other: &SlotConf) -> Result<(), ConfirmError> {
        let target = other.bootname.clone().ok_or_else(|| ConfirmError::NoBootname(other.name.clone()))?;
        self.check_usable(other)?;
        if other.name != self.slot.name {
            if let Some((owner, mb)) = self.measured() {
                let b = self.bootname()?;
                let t = target.clone();
                owner.call(move |tpm| match mb.load(tpm)? {
                    Some(r) if r.slots.contains_key(&t) => mb.approve_only(tpm, &[&b, &t]),
                    Some(_) if mb.required => Err(MeasuredBootError::NoValues(t)),
                    _ => Ok(()),
                })?;
            }
        }
        self.bootloader.set_primary(&target)?;
        Ok(())
    }

    /// `mark bad <slot>`: the bootloader will not boot it; if it is not the booted slot,
    /// the policy stops approving it.
    pub fn mark_bad(&mut self, slot: &SlotConf) -> Result<(), ConfirmError> {
        let b = slot.bootname.clone().ok_or_else(|| ConfirmError::NoBootname(slot.name.clone()))?;
        self.bootloader.set_state(&b, false)?;
        forget_indexes(self.conf, &slot.name);
        if slot.name != self.slot.name {
            self.approve_only_booted()?;
        }
        Ok(())
    }
}

/// A slot marked bad: the block-hash indexes of its group go (they describe a slot no one
/// vouches for any more; a failure to remove them only costs a later install time, as
/// every block found through one is hashed again).
fn forget_indexes(conf: &Config, slot: &str) {
    for s in conf.slots.iter().filter(|s| s.name == slot || s.parent.as_deref() == Some(slot)) {
        if let Err(e) = crate::slot::index::invalidate(&conf.data_directory, &s.name) {
            tracing::warn!("slot {}: cannot remove its index: {e}", s.name);
        }
    }
}
