//! The command line: RAUC-like commands for build hosts, operators and the device.

mod bundle;
mod info;

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
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // tpm2-tss and friends log expected errors; keep stderr for ours.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
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
