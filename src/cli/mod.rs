//! The command line: RAUC-like commands for build hosts, operators and the device.

mod bundle;
mod chain;
mod client;
mod info;
mod install;
mod measured;
mod remote;
mod trust;

use crate::config::{self, Config};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

pub use crate::fault::{EXIT_COULD_NOT_CHECK, EXIT_REJECTED};

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
    /// Take this bootname as the booted slot instead of reading the kernel command line (tests, bring-up).
    #[arg(long, global = true, value_name = "BOOTNAME")]
    override_boot_slot: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a signed package from a content directory (manifest.raucm + images), like `rauc bundle`.
    Bundle(bundle::Args),
    /// Verify a package completely (signature, structure, every image digest, the whole verity tree) and show what it holds.
    Info(info::Args),
    /// Why is this signer certificate trusted or refused: the path built, each check, the verdict (exit 0, 1, 3 as info).
    CheckChain(chain::Args),
    /// The operator roots held in the TPM: provision, list, rollover, retire.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// The anti-rollback minimum kept in the TPM: show it, or raise it.
    SecurityVersion(trust::SecurityArgs),
    /// Verify a package and write it into the inactive slot group, then switch to it.
    Install(install::InstallArgs),
    /// Slots, booted and primary slot, boot states, the last install's result.
    Status(install::StatusArgs),
    /// Mark a slot good (confirm a boot), bad, or active (boot it next).
    Mark(install::MarkArgs),
    /// The slots' block-hash indexes for adaptive updates: build one for a slot no install wrote.
    #[command(subcommand)]
    Slot(install::SlotCommand),
    /// Early at boot: settle a fallback, then check the booted slot's PCRs against its committed reference values (mismatch: marked bad).
    BootCheck(install::BootCheckArgs),
    /// The measured-boot policy in the TPM: initialize it at provisioning, show it.
    #[command(subcommand)]
    Policy(measured::PolicyCommand),
    /// Device secrets sealed to the measured-boot policy: seal (stdin), unseal (stdout).
    #[command(subcommand)]
    Secret(measured::SecretCommand),
    /// Build host: predict a slot image's PCR 8/9 (GRUB's measurements) and print its [meta.measured-boot] reference values.
    ReferenceValues(measured::ReferenceValuesArgs),
    /// Check a system.conf as the agent loads it: every problem, with file, line and key (exit 0 valid, 1 not).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the D-Bus service (org.henb.Update1; with [service] rauc-compatible=true also de.pengutronix.rauc).
    Service(ServiceArgs),
    /// Client: hand a package to the service as an open descriptor, follow its progress, print the result.
    Download(client::DownloadArgs),
    /// Client: the results waiting for TransferComplete, or acknowledge one.
    Transfers(client::TransfersArgs),
    /// Client: print the service's signals (progress, completions, TransferComplete) as they come.
    Watch(client::WatchArgs),
}

/// Log lines for journald: `<priority>message fields`, no timestamp, no colour
/// (sd-daemon(3) priority prefixes).
struct Journald;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Journald
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(w, "<{priority}>")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the configuration (--conf, else /etc/henb-update/system.conf) and report every problem.
    Check {
        /// Print JSON: {"file", "valid", "problems": [{"line", "key", "what"}]}.
        #[arg(long)]
        json: bool,
    },
}

/// `config check`: exit 0 when the file loads, 1 when it has problems, 3 when it cannot
/// be read.
fn run_config_check(path: Option<&std::path::Path>, json: bool) -> ExitCode {
    let path = path.unwrap_or(config::DEFAULT_PATH.as_ref());
    let r = Config::load(path);
    let problems = r.as_ref().err().map(|e| e.problems()).unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({"file": path.display().to_string(), "valid": r.is_ok(), "problems": problems})
        );
    }
    match r {
        Ok(_) => {
            if !json {
                println!("{}: valid", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(if matches!(e, config::ConfigError::Read { .. }) {
                EXIT_COULD_NOT_CHECK
            } else {
                EXIT_REJECTED
            })
        }
    }
}

#[derive(clap::Args)]
struct ServiceArgs {
    /// Connect to this bus address instead of the system bus (DBUS_SYSTEM_BUS_ADDRESS also works).
    #[arg(long, value_name = "ADDRESS")]
    bus: Option<String>,
}

/// Would the command line `args` (without the program name) be accepted? For the docs
/// test: every command line the documentation shows parses.
///
/// Errors: clap's message.
pub fn check_args(args: &[String]) -> Result<(), String> {
    Cli::try_parse_from(std::iter::once("henb-update".to_string()).chain(args.iter().cloned()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // A closed stdout (`| head`) ends the command quietly, as for any Unix tool, instead of
    // a panic in println!.
    // SAFETY: restores the default disposition; no handler code is installed.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    // tpm2-tss and tss-esapi log expected errors (probing an undefined index is how we
    // learn it is free): keep stderr for ours unless asked (RUST_LOG, TSS2_LOG).
    if std::env::var_os("TSS2_LOG").is_none() {
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("TSS2_LOG", "all+none");
    }
    let cli = Cli::parse();
    // The service logs what it does; one-shot commands only warnings.
    let default =
        if matches!(cli.command, Command::Service(_)) { "info,tss_esapi=off,zbus=warn" } else { "warn,tss_esapi=off" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // Under systemd: journald adds time and unit; a <N> prefix carries the priority.
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).event_format(Journald).init();
    } else {
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_target(false).init();
    }
    // What needs no device configuration runs even where none (or a broken one) exists.
    let command = match cli.command {
        Command::Config(ConfigCommand::Check { json }) => return run_config_check(cli.conf.as_deref(), json),
        Command::Bundle(a) => return bundle::run(a),
        Command::ReferenceValues(a) => return measured::run_reference_values(a),
        Command::Download(a) => return client::run_download(a),
        Command::Transfers(a) => return client::run_transfers(a),
        Command::Watch(a) => return client::run_watch(a),
        c => c,
    };
    let conf = match load_config(cli.conf.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("henb-update: {e:#}");
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
    };
    let boot = cli.override_boot_slot.as_deref();
    match command {
        Command::Info(a) => info::run(a, &conf),
        Command::CheckChain(a) => chain::run(a, &conf),
        Command::Trust(c) => trust::run(c, &conf),
        Command::SecurityVersion(a) => trust::run_security(a, &conf, boot),
        Command::Install(a) => install::run_install(a, &conf, boot),
        Command::Status(a) => install::run_status(a, &conf, boot),
        Command::Mark(a) => install::run_mark(a, &conf, boot),
        Command::Slot(c) => install::run_slot(c, &conf, boot),
        Command::BootCheck(a) => install::run_boot_check(a, &conf, boot),
        Command::Policy(c) => measured::run_policy(c, &conf, boot),
        Command::Secret(c) => measured::run_secret(c, &conf),
        Command::Service(a) => crate::service::run(
            conf,
            cli.override_boot_slot,
            a.bus.map(crate::service::Bus::Address).unwrap_or(crate::service::Bus::System),
        ),
        // Dispatched above, before the configuration was loaded.
        Command::Config(_)
        | Command::Bundle(_)
        | Command::ReferenceValues(_)
        | Command::Download(_)
        | Command::Transfers(_)
        | Command::Watch(_) => ExitCode::from(EXIT_COULD_NOT_CHECK),
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let c = match path {
        Some(p) => Config::load(p)?,
        None if std::path::Path::new(config::DEFAULT_PATH).exists() => Config::load(config::DEFAULT_PATH.as_ref())?,
        None => Config::default(),
    };
    let mut c = c;
    // As RAUC: the system-info handler runs when the configuration is loaded for the device.
    crate::hook::handler::system_info(&mut c).map_err(|e| anyhow::anyhow!("[handlers] system-info: {e}"))?;
    Ok(c)
}
