//! What the D-Bus interfaces show of the slots: the configuration joined with what the
//! bootloader and the status file say (TR-181 `DeviceInfo.FirmwareImage` and RAUC's
//! `GetSlotStatus` are drawn from it).

use crate::config::Config;
use crate::device::{self, SetupError};
use crate::fault::Failure;

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
pub(super) fn slot_views(conf: &Config, override_boot: Option<&str>) -> Result<Vec<SlotView>, Failure> {
    use crate::status::{FirmwareStatus, Status};
    let booted = device::booted(conf, override_boot)?;
    let status = Status::load(&conf.status_file()).map_err(|e| Failure::from_fault(&e))?;
    let mut bl = device::bootloader(conf, booted)?;
    let primary = bl.primary().map_err(SetupError::from)?;
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
