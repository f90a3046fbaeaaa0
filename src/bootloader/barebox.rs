//! The `barebox` backend: barebox's bootchooser state, read and written with dt-utils'
//! `barebox-state` (as RAUC 1.8, src/bootloaders/barebox.c), one variable pair per slot:
//! `bootstate.<bootname>.priority` and `bootstate.<bootname>.remaining_attempts`.
//!
//! | | priority | remaining_attempts |
//! |---|---|---|
//! | good | kept | `boot-attempts` |
//! | bad | 0 | 0 |
//! | primary | 20 (the others with a priority: 10) | `boot-attempts-primary` |
//!
//! A slot is good with a priority and attempts left; the primary is the good slot of the
//! highest priority. `[system] barebox-statename` is passed as `-n`, `barebox-dtbpath` as
//! `-i`. Every change is one `barebox-state` call, which writes the state's copies.

use super::{BootError, BootState, Bootloader, Slots};
use crate::process::{exec, RunError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Priority of the primary slot (RAUC's `BAREBOX_STATE_PRIORITY_PRIMARY`).
pub const PRIORITY_PRIMARY: u32 = 20;
/// Priority of the other slots that have one (RAUC's `BAREBOX_STATE_DEFAULT_PRIORITY`).
pub const PRIORITY_OTHER: u32 = 10;
/// How long one `barebox-state` call may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The tool, found on the agent's fixed `PATH`.
const TOOL: &str = "barebox-state";

/// barebox's state through `barebox-state`.
pub struct Barebox {
    slots: Slots,
    statename: Option<String>,
    dtb: Option<PathBuf>,
}

impl Barebox {
    /// The state `statename` (default "state"), described by the device tree `dtb`
    /// (default the running system's).
    pub fn new(slots: Slots, statename: Option<String>, dtb: Option<PathBuf>) -> Self {
        Self { slots, statename, dtb }
    }

    /// Run `barebox-state` with `args` plus the state's name and device tree.
    fn call(&self, args: &[String]) -> Result<String, BootError> {
        let mut argv: Vec<&str> = Vec::new();
        if let Some(n) = &self.statename {
            argv.extend(["-n", n]);
        }
        argv.extend(args.iter().map(String::as_str));
        let dtb;
        if let Some(d) = &self.dtb {
            dtb = d.display().to_string();
            argv.extend(["-i", &dtb]);
        }
        let failed = |e: RunError| BootError::Custom(format!("{TOOL}: {e}"));
        let out = exec(Path::new(TOOL), &argv, &[], TIMEOUT, TOOL, true).map_err(failed)?;
        let out = out.success(TOOL).map_err(failed)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// `(priority, remaining_attempts)` of `b`.
    fn get(&self, b: &str) -> Result<(u32, u32), BootError> {
        let (p, a) = (format!("bootstate.{b}.priority"), format!("bootstate.{b}.remaining_attempts"));
        let out = self.call(&["-g".into(), p.clone(), "-g".into(), a.clone()])?;
        let mut lines = out.lines();
        let mut num = |name: &str| -> Result<u32, BootError> {
            let v = lines.next().ok_or_else(|| BootError::Variable(format!("{name}: no value from {TOOL}")))?;
            v.trim().parse().map_err(|_| BootError::Variable(format!("{name}={v:?} is not a number")))
        };
        Ok((num(&p)?, num(&a)?))
    }

    fn set(&self, pairs: &[String]) -> Result<(), BootError> {
        let args: Vec<String> = pairs.iter().flat_map(|p| ["-s".to_string(), p.clone()]).collect();
        self.call(&args).map(drop)
    }
}

impl Bootloader for Barebox {
    fn primary(&mut self) -> Result<Option<String>, BootError> {
        let mut best: Option<(u32, &String)> = None;
        for b in &self.slots.bootnames {
            let (prio, attempts) = self.get(b)?;
            if attempts > 0 && prio > best.map_or(0, |(p, _)| p) {
                best = Some((prio, b));
            }
        }
        best.map(|(_, b)| Some(b.clone()))
            .ok_or_else(|| BootError::Variable("no slot has a priority and attempts left: no primary slot".into()))
    }

    fn state(&mut self, b: &str) -> Result<BootState, BootError> {
        let (prio, attempts) = self.get(b)?;
        Ok(if prio > 0 && attempts > 0 { BootState::Good } else { BootState::Bad })
    }

    fn set_state(&mut self, b: &str, good: bool) -> Result<(), BootError> {
        let mut pairs = Vec::new();
        if !good {
            pairs.push(format!("bootstate.{b}.priority=0"));
        }
        let attempts = if good { self.slots.boot_attempts } else { 0 };
        pairs.push(format!("bootstate.{b}.remaining_attempts={attempts}"));
        self.set(&pairs)
    }

    fn set_primary(&mut self, b: &str) -> Result<(), BootError> {
        let mut pairs = Vec::new();
        for s in &self.slots.bootnames {
            let prio = if s == b {
                PRIORITY_PRIMARY
            } else if self.get(s)?.0 == 0 {
                0
            } else {
                PRIORITY_OTHER
            };
            pairs.push(format!("bootstate.{s}.priority={prio}"));
        }
        pairs.push(format!("bootstate.{b}.remaining_attempts={}", self.slots.boot_attempts_primary));
        self.set(&pairs)
    }
}
