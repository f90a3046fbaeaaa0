//! The `custom` backend: RAUC's interface to a script of the integrator's
//! (`[handlers] bootloader-custom-backend=`), called with `get-primary`,
//! `set-primary <bootname>`, `get-state <bootname>` and `set-state <bootname> good|bad`.
//! Arguments are passed as an argument vector, never through a shell.

use super::{BootError, BootState, Bootloader};
use std::path::PathBuf;
use std::process::Command;

/// A custom backend script.
pub struct Custom {
    script: PathBuf,
}

impl Custom {
    /// The script at `script`.
    pub fn new(script: PathBuf) -> Self {
        Self { script }
    }

    fn run(&self, args: &[&str]) -> Result<String, BootError> {
        let out = Command::new(&self.script)
            .args(args)
            .output()
            .map_err(|e| BootError::Custom(format!("{}: {e}", self.script.display())))?;
        if !out.status.success() {
            return Err(BootError::Custom(format!(
                "{} {} failed ({}): {}",
                self.script.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Bootloader for Custom {
    fn primary(&mut self) -> Result<Option<String>, BootError> {
        let p = self.run(&["get-primary"])?;
        Ok((!p.is_empty()).then_some(p))
    }
    fn state(&mut self, b: &str) -> Result<BootState, BootError> {
        match self.run(&["get-state", b])?.as_str() {
            "good" => Ok(BootState::Good),
            "bad" => Ok(BootState::Bad),
            other => Err(BootError::Custom(format!("get-state {b} answered {other:?}, not good or bad"))),
        }
    }
    fn set_state(&mut self, b: &str, good: bool) -> Result<(), BootError> {
        self.run(&["set-state", b, if good { "good" } else { "bad" }]).map(drop)
    }
    fn set_primary(&mut self, b: &str) -> Result<(), BootError> {
        self.run(&["set-primary", b]).map(drop)
    }
}
