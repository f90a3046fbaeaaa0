//! RAUC's system handlers (`[handlers]` of system.conf): the device's own programs, run
//! by the rules of bundle hooks ([`crate::process`]: clean environment, no descriptor of
//! the agent's, killed at `[install] hook-timeout`), with RAUC's variables (RAUC 1.8,
//! docs/reference.rst "System-Based Customization: Handlers", src/install.c
//! `prepare_environment`, src/context.c `get_system_info_from_handler`):
//!
//! | handler | when | on failure |
//! |---|---|---|
//! | `system-info` | when the agent loads its configuration; its `RAUC_*=value` lines of standard output reach every handler and hook, `RAUC_SYSTEM_VARIANT` sets the variant | the configuration does not load |
//! | `pre-install` | after the package is authenticated and admitted, before its install-check hook and before anything changes | the package is refused (9001, `handler-refused`) with its last line of error output |
//! | `post-install` | after every image is written, verified and approved, before the boot order is switched | the install fails (9002, `handler-failed` or `handler-timeout`), the target is recorded failed, nothing is switched |
//!
//! RAUC runs `post-install` after the switch; here it runs before it, so that its failure
//! leaves the boot order as it was (R6).

use super::HookError;
use crate::config::{Config, SlotConf};
use crate::package::Package;
use crate::process::{exec, RunError};
use std::path::Path;

/// Longest value of a system-info variable kept, in bytes.
const MAX_VALUE: usize = 4096;

/// Run `[handlers] system-info` (if configured) and keep its `RAUC_*` variables in
/// `conf.system_info` (the last value of a name wins, as in RAUC; other lines are ignored,
/// as RAUC ignores them, and so are values with control characters).
///
/// Errors: the handler cannot be started, times out or fails: [`HookError::Handler`].
pub fn system_info(conf: &mut Config) -> Result<(), HookError> {
    let Some(exe) = conf.handlers.system_info.clone() else { return Ok(()) };
    let what = "system-info handler";
    let exe = trusted(&exe, what)?;
    tracing::info!("running the {what} {}", exe.display());
    let out = exec(&exe, &[], &system_env(conf), conf.hook_timeout, what, true)
        .and_then(|e| e.success(what))
        .map_err(HookError::Handler)?;
    let text = String::from_utf8_lossy(&out);
    let mut vars: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let valid = k.starts_with("RAUC_") && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        // A value no environment can hold (NUL) or that would break a line: left out.
        if !valid || v.len() > MAX_VALUE || v.chars().any(char::is_control) {
            tracing::warn!("{what}: line left out: {}", line.chars().take(80).collect::<String>());
            continue;
        }
        // As RAUC's hash table: the last value of a name wins.
        vars.retain(|(n, _)| n != k);
        vars.push((k.to_string(), v.to_string()));
    }
    conf.system_info = vars;
    Ok(())
}

/// What the pre- and post-install handlers are told about one install.
pub struct Install<'a> {
    /// The configuration.
    pub conf: &'a Config,
    /// The booted slot's bootname.
    pub booted: &'a str,
    /// The target group (root first).
    pub targets: &'a [SlotConf],
    /// The authenticated package.
    pub package: &'a Package,
    /// RAUC's transaction id (`RAUC_TRANSACTION_ID`).
    pub transaction: &'a str,
}

impl Install<'_> {
    /// Run `[handlers] pre-install`, if configured.
    ///
    /// Errors: [`HookError::HandlerRefused`] when it exits other than 0 (with its last
    /// line of error output); a start failure or timeout.
    pub fn pre_install(&self) -> Result<(), HookError> {
        let Some(exe) = &self.conf.handlers.pre_install else { return Ok(()) };
        match self.run(exe, "pre-install handler") {
            Err(RunError::Failed { why, .. }) => Err(HookError::HandlerRefused(why)),
            r => r.map_err(HookError::Handler),
        }
    }

    /// Run `[handlers] post-install`, if configured.
    ///
    /// Errors: [`HookError::Handler`] when it exits other than 0, cannot be started or
    /// times out.
    pub fn post_install(&self) -> Result<(), HookError> {
        let Some(exe) = &self.conf.handlers.post_install else { return Ok(()) };
        self.run(exe, "post-install handler").map_err(HookError::Handler)
    }

    fn run(&self, exe: &Path, what: &str) -> Result<(), RunError> {
        let exe =
            crate::fsutil::trusted_program(exe).map_err(|source| RunError::Start { what: what.to_string(), source })?;
        tracing::info!("running the {what} {}", exe.display());
        exec(&exe, &[], &self.env(), self.conf.hook_timeout, what, false)?.success(what).map(drop)
    }

    /// RAUC's handler environment (`prepare_environment`), plus the manifest's
    /// `RAUC_MF_COMPATIBLE`, `RAUC_MF_VERSION`, `RAUC_MF_BUILD`. Not set: RAUC's
    /// `RAUC_BUNDLE_MOUNT_POINT` and `RAUC_UPDATE_SOURCE` (the bundle is never mounted).
    pub fn env(&self) -> Vec<(String, String)> {
        let conf = self.conf;
        let mut env = system_env(conf);
        env.push(("RAUC_CURRENT_BOOTNAME".into(), self.booted.to_string()));
        env.push(("RAUC_TRANSACTION_ID".into(), self.transaction.to_string()));
        let pkg = self.package;
        env.push(("RAUC_MF_COMPATIBLE".into(), pkg.compatible.clone()));
        env.push(("RAUC_MF_VERSION".into(), pkg.version.clone().unwrap_or_default()));
        env.push(("RAUC_MF_BUILD".into(), pkg.build.clone().unwrap_or_default()));
        let (mut all, mut targets) = (Vec::new(), Vec::new());
        for (i, s) in conf.slots.iter().enumerate() {
            let n = i + 1;
            all.push(n.to_string());
            if self.targets.iter().any(|t| t.name == s.name) {
                targets.push(n.to_string());
                if let Some(img) = pkg.images.iter().find(|im| im.slot_class == s.class) {
                    env.push((format!("RAUC_IMAGE_NAME_{n}"), img.filename.clone()));
                    env.push((format!("RAUC_IMAGE_DIGEST_{n}"), hex::encode(&img.digest)));
                    env.push((format!("RAUC_IMAGE_CLASS_{n}"), img.slot_class.clone()));
                }
            }
            env.push((format!("RAUC_SLOT_NAME_{n}"), s.name.clone()));
            env.push((format!("RAUC_SLOT_CLASS_{n}"), s.class.clone()));
            env.push((format!("RAUC_SLOT_TYPE_{n}"), s.kind.name().to_string()));
            env.push((format!("RAUC_SLOT_DEVICE_{n}"), s.device.display().to_string()));
            env.push((format!("RAUC_SLOT_BOOTNAME_{n}"), s.bootname.clone().unwrap_or_default()));
            env.push((format!("RAUC_SLOT_PARENT_{n}"), s.parent.clone().unwrap_or_default()));
        }
        env.push(("RAUC_SLOTS".into(), all.join(" ")));
        env.push(("RAUC_TARGET_SLOTS".into(), targets.join(" ")));
        // RAUC's `r_shell_from_manifest_meta`: RAUC_META_<GROUP>_<KEY>, upper case, other
        // characters as '_'.
        fn shell(s: &str) -> String {
            s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
        }
        for (group, keys) in &pkg.meta {
            for (k, v) in keys {
                let name = format!("RAUC_META_{}_{}", shell(group), shell(k));
                if !env.iter().any(|(n, _)| *n == name) {
                    env.push((name, v.clone()));
                }
            }
        }
        extend_system_info(&mut env, conf);
        env
    }
}

/// The handler `exe` is one only the agent's user or root can change: its resolved path,
/// the one to run.
fn trusted(exe: &Path, what: &str) -> Result<std::path::PathBuf, HookError> {
    crate::fsutil::trusted_program(exe)
        .map_err(|source| HookError::Handler(RunError::Start { what: what.to_string(), source }))
}

/// `RAUC_SYSTEM_*` and `RAUC_MOUNT_PREFIX`, as every handler gets them.
fn system_env(conf: &Config) -> Vec<(String, String)> {
    vec![
        ("RAUC_SYSTEM_CONFIG".into(), conf.source.display().to_string()),
        ("RAUC_SYSTEM_COMPATIBLE".into(), conf.compatible.clone().unwrap_or_default()),
        ("RAUC_SYSTEM_VARIANT".into(), conf.variant().ok().flatten().unwrap_or_default()),
        ("RAUC_SYSTEM_VERSION".into(), system_var(conf, "RAUC_SYSTEM_VERSION")),
        ("RAUC_MOUNT_PREFIX".into(), conf.mount_prefix.display().to_string()),
    ]
}

fn system_var(conf: &Config, name: &str) -> String {
    conf.system_info.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
}

/// The system-info handler's variables, where they name nothing set already (RAUC:
/// "do not override existing ones").
pub fn extend_system_info(env: &mut Vec<(String, String)>, conf: &Config) {
    for (k, v) in &conf.system_info {
        if !env.iter().any(|(n, _)| n == k) {
            env.push((k.clone(), v.clone()));
        }
    }
}
