//! The `custom` backend: RAUC's interface to a script of the integrator's
//! (`[handlers] bootloader-custom-backend=`), called with `get-primary`,
//! `set-primary <bootname>`, `get-state <bootname>` and `set-state <bootname> good|bad`.
//! Arguments are passed as an argument vector, never through a shell; the script runs as
//! bundle hooks do ([`crate::process::exec`]: clean environment, no descriptor of the
//! agent's, killed at `[install] hook-timeout`).

use super::{BootError, BootState, Bootloader};
use std::path::PathBuf;
use std::time::Duration;

/// A custom backend script.
pub struct Custom {
    script: PathBuf,
    timeout: Duration,
}

impl Custom {
    /// The script at `script`, each call killed after `timeout`.
    pub fn new(script: PathBuf, timeout: Duration) -> Self {
        Self { script, timeout }
    }

    fn run(&self, args: &[&str]) -> Result<String, BootError> {
        let what = format!("{} {}", self.script.display(), args.join(" "));
        let exe =
            crate::fsutil::trusted_program(&self.script).map_err(|e| BootError::Custom(format!("{what}: {e}")))?;
        let failed = |e: crate::process::RunError| BootError::Custom(e.to_string());
        let out = crate::process::exec(&exe, args, &[], self.timeout, &what, true).map_err(failed)?;
        let out = out.success(&what).map_err(failed)?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
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
