//! The command line: RAUC-like commands for build hosts, operators and the device.

mod bundle;
mod info;
mod trust;

use crate::config::{self, Config};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status: the package (or request) was refused.
pub const EXIT_REJECTED: u8 = 1;
/// Exit status: the check could not be carried out (I/O, configuration, missing anchors).
pub const EXIT_COULD_NOT_CHECK: u8 = 3;

#[derive(Parser)]
#[command(
    name = "henb-update",
    version,
    about = "Software-update agent of a Home eNodeB: verifies signed packages and installs them into an A/B slot"
)]
struct Cli {
    /// System configuration (RAUC system.conf syntax). Default: /etc/henb-update/system.conf if it exists.
    #[arg(long, global = true, value_name = "PATH")]
    conf: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a signed package from a content directory (manifest.raucm + images), like `rauc bundle`.
    Bundle(bundle::Args),
    /// Verify a package completely (signature, structure, every image digest, the whole verity tree) and show what it holds.
    Info(info::Args),
    /// The operator roots held in the TPM: provision, list, rollover, retire.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// The anti-rollback minimum kept in the TPM: show it, or raise it.
    SecurityVersion(trust::SecurityArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // tpm2-tss and tss-esapi log expected errors (probing an undefined index is how we
    // learn it is free): keep stderr for ours unless asked (RUST_LOG, TSS2_LOG).
    if std::env::var_os("TSS2_LOG").is_none() {
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("TSS2_LOG", "all+none");
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,tss_esapi=off".into()),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let conf = match load_config(cli.conf.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("henb-update: {e:#}");
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
    };
    match cli.command {
        Command::Bundle(a) => bundle::run(a),
        Command::Info(a) => info::run(a, &conf),
        Command::Trust(c) => trust::run(c, &conf),
        Command::SecurityVersion(a) => trust::run_security(a, &conf),
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let c = match path {
        Some(p) => Config::load(p)?,
        None if std::path::Path::new(config::DEFAULT_PATH).exists() => Config::load(config::DEFAULT_PATH.as_ref())?,
        None => Config::default(),
    };
    for u in &c.unknown {
        tracing::warn!("configuration key not used by this version: {u}");
    }
    Ok(c)
}

/// The TPM owner task and the NV layout from the configuration.
fn tpm_owner(
    conf: &Config,
) -> anyhow::Result<(crate::tpm::owner::TpmOwner, crate::trust::store::RootStore, crate::rollback::Counter)> {
    use anyhow::Context as _;
    let t = &conf.tpm;
    let mut tc = crate::tpm::TpmConfig::default();
    if let Some(tcti) = &t.tcti {
        tc.tcti = tcti.clone();
    }
    if let Some(p) = &t.owner_auth_file {
        let mut a = std::fs::read(p).with_context(|| format!("owner authorization {}", p.display()))?;
        if a.last() == Some(&b'\n') {
            a.pop();
        }
        tc.owner_auth = a;
    }
    let mut store = crate::trust::store::RootStore::default();
    if let Some(i) = t.root_index {
        store.first = i;
    }
    if let Some(n) = t.root_slots {
        store.slots = n;
    }
    let mut counter = crate::rollback::Counter::default();
    if let Some(i) = t.counter_index {
        counter.index = i;
    }
    Ok((crate::tpm::owner::TpmOwner::spawn(tc), store, counter))
}
