//! Bootloader backends with RAUC's exact variable semantics, so RAUC's GRUB and U-Boot
//! scripts work unchanged.
//!
//! | backend | variables | good | bad | primary |
//! |---|---|---|---|---|
//! | grub | `ORDER`, `<b>_OK`, `<b>_TRY` | OK=1 TRY=0 | OK=0 TRY=0 | first in ORDER (then its class's other slots), OK=1 TRY=0 |
//! | uboot | `BOOT_ORDER`, `BOOT_<b>_LEFT` | LEFT=boot-attempts | out of BOOT_ORDER, LEFT=0 | first in BOOT_ORDER, LEFT=boot-attempts-primary |
//! | efi | `BootOrder`, `BootNext` (efibootmgr; entries labelled by bootname) | in BootOrder, moved first | out of BootOrder | BootNext (else first in BootOrder) |
//! | barebox | `bootstate.<b>.priority`, `.remaining_attempts` | attempts=boot-attempts | priority=0 attempts=0 | highest priority with attempts; set: 20, others 10, attempts=boot-attempts-primary |
//!
//! The semantics are pure functions over an [`Env`]; [`grubenv`] and [`ubootenv`] store
//! it (every write atomic), [`barebox`] asks dt-utils' `barebox-state`, [`custom`] asks a
//! script, `noop` does nothing.

pub mod barebox;
pub mod custom;
pub mod efi;
pub mod grubenv;
pub mod ubootenv;

use std::io;
use thiserror::Error;

/// An ordered list of environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env(pub Vec<(String, String)>);

impl Env {
    /// Value of `k`.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    /// Set `k` (kept in place, or appended).
    pub fn set(&mut self, k: &str, v: &str) {
        match self.0.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = v.to_string(),
            None => self.0.push((k.to_string(), v.to_string())),
        }
    }
}

/// A bootloader failure: the boot order could not be read or changed.
#[derive(Debug, Error)]
pub enum BootError {
    /// Reading or writing the environment failed.
    #[error("bootloader environment {path}: {source}")]
    Io {
        /// File or device.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// The environment is not valid.
    #[error("bootloader environment {path}: {why}")]
    Invalid {
        /// File or device.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A variable RAUC's semantics need is missing or not a number.
    #[error("bootloader variable {0}")]
    Variable(String),
    /// The custom backend script failed.
    #[error("custom bootloader backend: {0}")]
    Custom(String),
}

impl crate::fault::Fault for BootError {
    fn kind(&self) -> &'static str {
        "bootloader"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::InternalError
    }
}

/// State of a slot as the bootloader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootState {
    /// The bootloader will (still) try it.
    Good,
    /// The bootloader will not boot it.
    Bad,
}

/// What every backend does.
pub trait Bootloader: Send {
    /// The slot the bootloader boots next (`None` when it cannot say: noop).
    fn primary(&mut self) -> Result<Option<String>, BootError>;
    /// A slot's state.
    fn state(&mut self, bootname: &str) -> Result<BootState, BootError>;
    /// Mark a slot good or bad.
    fn set_state(&mut self, bootname: &str, good: bool) -> Result<(), BootError>;
    /// Make a slot the primary one.
    fn set_primary(&mut self, bootname: &str) -> Result<(), BootError>;
}

/// The slots' bootnames a backend needs: every slot of the class, in config order.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    /// Bootnames of the slot class that boots (e.g. rootfs.0, rootfs.1 → A, B).
    pub bootnames: Vec<String>,
    /// `[system] boot-attempts` (default 3).
    pub boot_attempts: u32,
    /// `[system] boot-attempts-primary` (default 3).
    pub boot_attempts_primary: u32,
}

fn order_of(value: Option<&str>) -> Vec<String> {
    value.unwrap_or_default().split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// GRUB semantics (RAUC's `grub` backend).
pub mod grub {
    use super::*;

    fn num(env: &Env, k: &str) -> Result<u64, BootError> {
        let v = env.get(k).ok_or_else(|| BootError::Variable(format!("{k} is not set")))?;
        v.trim().parse().map_err(|_| BootError::Variable(format!("{k}={v:?} is not a number")))
    }

    /// Good when in ORDER with OK=1 and TRY=0.
    pub fn state(env: &Env, b: &str) -> Result<BootState, BootError> {
        if env.get("ORDER").is_none() {
            return Err(BootError::Variable("ORDER is not set".into()));
        }
        if !order_of(env.get("ORDER")).iter().any(|x| x == b) {
            return Ok(BootState::Bad);
        }
        let good = num(env, &format!("{b}_OK"))? == 1 && num(env, &format!("{b}_TRY"))? == 0;
        Ok(if good { BootState::Good } else { BootState::Bad })
    }

    /// OK=1 TRY=0, or OK=0 TRY=0.
    pub fn set_state(env: &mut Env, b: &str, good: bool) {
        env.set(&format!("{b}_OK"), if good { "1" } else { "0" });
        env.set(&format!("{b}_TRY"), "0");
    }

    /// The first known slot in ORDER with OK=1 and TRY=0.
    pub fn primary(env: &Env, slots: &Slots) -> Result<Option<String>, BootError> {
        for b in order_of(env.get("ORDER")) {
            if slots.bootnames.contains(&b) && state(env, &b)? == BootState::Good {
                return Ok(Some(b));
            }
        }
        Err(BootError::Variable("no slot in ORDER is OK=1 TRY=0: unable to detect the primary slot".into()))
    }

    /// OK=1 TRY=0, ORDER = the slot, then the other slots of its class.
    pub fn set_primary(env: &mut Env, b: &str, slots: &Slots) {
        env.set(&format!("{b}_OK"), "1");
        env.set(&format!("{b}_TRY"), "0");
        let order: Vec<&str> =
            std::iter::once(b).chain(slots.bootnames.iter().map(String::as_str).filter(|x| *x != b)).collect();
        env.set("ORDER", &order.join(" "));
    }
}

/// U-Boot semantics (RAUC's `uboot` backend).
pub mod uboot {
    use super::*;

    fn left(env: &Env, b: &str) -> Result<i64, BootError> {
        let k = format!("BOOT_{b}_LEFT");
        let v = env.get(&k).ok_or_else(|| BootError::Variable(format!("{k} is not set")))?;
        v.trim().parse().map_err(|_| BootError::Variable(format!("{k}={v:?} is not a number")))
    }

    /// Good when in BOOT_ORDER with attempts left.
    pub fn state(env: &Env, b: &str) -> Result<BootState, BootError> {
        if env.get("BOOT_ORDER").is_none() {
            return Err(BootError::Variable("BOOT_ORDER is not set".into()));
        }
        if !order_of(env.get("BOOT_ORDER")).iter().any(|x| x == b) {
            return Ok(BootState::Bad);
        }
        Ok(if left(env, b)? > 0 { BootState::Good } else { BootState::Bad })
    }

    /// good: LEFT=boot-attempts. bad: out of BOOT_ORDER, LEFT=0.
    pub fn set_state(env: &mut Env, b: &str, good: bool, slots: &Slots) {
        if !good {
            if let Some(o) = env.get("BOOT_ORDER") {
                let kept: Vec<String> = order_of(Some(o)).into_iter().filter(|x| x != b).collect();
                env.set("BOOT_ORDER", &kept.join(" "));
            }
        }
        let n = if good { slots.boot_attempts } else { 0 };
        env.set(&format!("BOOT_{b}_LEFT"), &n.to_string());
    }

    /// The first known slot in BOOT_ORDER with attempts left.
    pub fn primary(env: &Env, slots: &Slots) -> Result<Option<String>, BootError> {
        for b in order_of(env.get("BOOT_ORDER")) {
            if slots.bootnames.contains(&b) && left(env, &b)? > 0 {
                return Ok(Some(b));
            }
        }
        Err(BootError::Variable("no slot in BOOT_ORDER has attempts left: unable to find the primary slot".into()))
    }

    /// LEFT=boot-attempts-primary, BOOT_ORDER = the slot first, then the current order
    /// (or the class's slots when there is none).
    pub fn set_primary(env: &mut Env, b: &str, slots: &Slots) {
        let current = match env.get("BOOT_ORDER") {
            Some(o) => order_of(Some(o)),
            None => slots.bootnames.clone(),
        };
        let order: Vec<&str> =
            std::iter::once(b).chain(current.iter().map(String::as_str).filter(|x| *x != b)).collect();
        env.set(&format!("BOOT_{b}_LEFT"), &slots.boot_attempts_primary.to_string());
        env.set("BOOT_ORDER", &order.join(" "));
    }
}

/// The `noop` backend: changes nothing, knows nothing.
pub struct Noop;

impl Bootloader for Noop {
    fn primary(&mut self) -> Result<Option<String>, BootError> {
        Ok(None)
    }
    fn state(&mut self, _: &str) -> Result<BootState, BootError> {
        Ok(BootState::Good)
    }
    fn set_state(&mut self, _: &str, _: bool) -> Result<(), BootError> {
        Ok(())
    }
    fn set_primary(&mut self, _: &str) -> Result<(), BootError> {
        Ok(())
    }
}

/// The backend the configuration names, for the slots of `class`.
pub fn open(conf: &crate::config::Config, class: &str) -> Result<Box<dyn Bootloader>, BootError> {
    use crate::config::BootloaderKind;
    let slots = Slots {
        bootnames: crate::slot::bootnames(&conf.slots, class),
        boot_attempts: conf.boot_attempts,
        boot_attempts_primary: conf.boot_attempts_primary,
    };
    Ok(match conf.bootloader {
        BootloaderKind::Grub => Box::new(grubenv::GrubEnv::new(&conf.grubenv, slots)),
        BootloaderKind::Uboot => Box::new(ubootenv::UbootEnv::open(&conf.uboot_env_config, slots)?),
        BootloaderKind::Barebox => {
            Box::new(barebox::Barebox::new(slots, conf.barebox_statename.clone(), conf.barebox_dtbpath.clone()))
        }
        BootloaderKind::Efi => Box::new(efi::Efi::new(slots, conf.efi_use_bootnext)),
        BootloaderKind::Custom => {
            Box::new(custom::Custom::new(conf.custom_backend.clone().unwrap_or_default(), conf.hook_timeout))
        }
        BootloaderKind::Noop => Box::new(Noop),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Slots {
        Slots { bootnames: vec!["A".into(), "B".into()], boot_attempts: 3, boot_attempts_primary: 3 }
    }

    #[test]
    fn grub_semantics() {
        let mut e = Env::default();
        grub::set_primary(&mut e, "A", &slots());
        grub::set_state(&mut e, "B", true);
        assert_eq!(e.get("ORDER"), Some("A B"));
        assert_eq!(grub::primary(&e, &slots()).unwrap().as_deref(), Some("A"));
        grub::set_state(&mut e, "B", false);
        grub::set_primary(&mut e, "B", &slots());
        assert_eq!(e.get("ORDER"), Some("B A"));
        assert_eq!(grub::state(&e, "B").unwrap(), BootState::Good);
        // The bootloader's try: TRY=1 means "being tried", not good.
        e.set("B_TRY", "1");
        assert_eq!(grub::state(&e, "B").unwrap(), BootState::Bad);
        assert_eq!(grub::primary(&e, &slots()).unwrap().as_deref(), Some("A"));
        grub::set_state(&mut e, "B", false);
        assert_eq!((e.get("B_OK"), e.get("B_TRY")), (Some("0"), Some("0")));
    }

    #[test]
    fn uboot_semantics() {
        let mut e = Env::default();
        uboot::set_primary(&mut e, "A", &slots());
        assert_eq!(e.get("BOOT_ORDER"), Some("A B"));
        assert_eq!(e.get("BOOT_A_LEFT"), Some("3"));
        uboot::set_state(&mut e, "B", true, &slots());
        uboot::set_primary(&mut e, "B", &slots());
        assert_eq!(e.get("BOOT_ORDER"), Some("B A"));
        uboot::set_state(&mut e, "B", false, &slots());
        assert_eq!(e.get("BOOT_ORDER"), Some("A"));
        assert_eq!(e.get("BOOT_B_LEFT"), Some("0"));
        assert_eq!(uboot::state(&e, "B").unwrap(), BootState::Bad);
        assert_eq!(uboot::primary(&e, &slots()).unwrap().as_deref(), Some("A"));
    }
}
