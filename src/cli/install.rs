//! `henb-update install`, `status` and `mark`.

use super::{EXIT_COULD_NOT_CHECK, EXIT_REJECTED};
use crate::config::Config;
use crate::device::{booted, bootloader};
use crate::fault::Failure;
use crate::install::confirm::Booted;
use crate::install::{Order, Progress, Request};
use crate::status::{FirmwareStatus, Status};
use serde_json::json;
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(clap::Args)]
pub(super) struct InstallArgs {
    /// The Download's CommandKey, reported with the result (TransferComplete).
    #[arg(long)]
    command_key: Option<String>,
    /// Install without switching to the new slot ("6 Stored Firmware Image").
    #[arg(long)]
    no_activate: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Package file, or its http(s) URL (streamed: nothing is stored on the way).
    package: String,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
}

#[derive(clap::Args)]
pub(super) struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub(super) enum MarkState {
    Good,
    Bad,
    Active,
}

#[derive(clap::Args)]
pub(super) struct MarkArgs {
    /// good (confirm a boot), bad (never boot it), active (boot it next).
    state: MarkState,
    /// `booted` (default), `other`, a slot name (rootfs.1) or a bootname (B).
    #[arg(default_value = "booted")]
    slot: String,
}

/// `slot`: the slots' block-hash indexes.
#[derive(clap::Subcommand)]
pub(super) enum SlotCommand {
    /// Hash a slot's 4 KiB blocks and store them as its block-hash index, so that the next adaptive update reuses them without hashing it first (for the factory slot; installs keep the indexes of the slots they write).
    Index {
        /// `booted` (default), `other`, a slot name (rootfs.1) or a bootname (B).
        #[arg(default_value = "booted")]
        slot: String,
    },
}

pub(super) fn run_slot(c: SlotCommand, conf: &Config, override_boot: Option<&str>) -> ExitCode {
    match c {
        SlotCommand::Index { slot } => match crate::device::index_slot(conf, override_boot, &slot) {
            Ok((name, blocks)) => {
                println!("slot {name}: indexed {blocks} blocks of 4 KiB");
                ExitCode::SUCCESS
            }
            Err(f) => {
                eprintln!("henb-update slot index: {} ({})", f.message, f.kind);
                ExitCode::from(f.verdict.exit_code())
            }
        },
    }
}

pub(super) fn run_install(a: InstallArgs, conf: &Config, override_boot: Option<&str>) -> ExitCode {
    let tty = std::io::stderr().is_terminal() && !a.json;
    let mut show = |p: Progress| {
        if tty {
            let filled = p.percent as usize / 5;
            eprint!("\r[{}{}] {:3}% {:<50}", "#".repeat(filled), " ".repeat(20 - filled), p.percent, p.message);
            if p.percent == 100 {
                eprintln!();
            }
        }
    };
    let installed = (|| -> Result<_, Failure> {
        let booted = booted(conf, override_boot)?;
        let input = a.remote.input(&a.package)?;
        let order = Order { command_key: a.command_key.clone(), activate: !a.no_activate };
        crate::device::install_file(conf, booted, Request { input, order }, &mut show).result
    })();
    match installed {
        Ok(i) => {
            if a.json {
                println!(
                    "{}",
                    json!({"slot": i.slot, "bootname": i.bootname, "activated": i.activated, "version": i.package.version, "compatible": i.package.compatible, "moved": i.moved})
                );
            } else {
                println!(
                    "installed {} into slot {} ({}){}",
                    i.package.version.as_deref().unwrap_or("?"),
                    i.slot,
                    i.bootname,
                    if i.activated { "; it boots next" } else { "; not activated" }
                );
                let m = &i.moved;
                let mib = |b: u64| b as f64 / f64::from(1 << 20);
                print!("{:.1} MiB from the package", mib(m.from_package));
                if m.reused + m.zero > 0 {
                    print!(", {:.1} MiB reused from the slots, {:.1} MiB of zero blocks", mib(m.reused), mib(m.zero));
                }
                if let (Some(f), Some(r)) = (m.fetched, m.requests) {
                    print!("; {:.1} MiB fetched in {r} requests", mib(f));
                }
                println!("; {:.1} s", m.seconds);
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            if tty {
                eprintln!();
            }
            if a.json {
                println!("{}", json!({"error": {"kind": f.kind, "cwmp-fault": f.fault, "message": f.message}}));
            }
            eprintln!("henb-update install: {} (CWMP fault {}, {})", f.message, f.fault, f.kind);
            ExitCode::from(f.verdict.exit_code())
        }
    }
}

pub(super) fn run_status(a: StatusArgs, conf: &Config, override_boot: Option<&str>) -> ExitCode {
    let status = match Status::load(&conf.status_file()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("henb-update status: {e}");
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
    };
    let booted = booted(conf, override_boot).ok();
    let mut bl = booted.and_then(|b| bootloader(conf, b).ok());
    let primary = bl.as_mut().and_then(|b| b.primary().ok().flatten());
    let slots: Vec<_> = conf
        .slots
        .iter()
        .map(|s| {
            let boot = match (&mut bl, &s.bootname) {
                (Some(b), Some(n)) => b.state(n).ok(),
                _ => None,
            };
            let st = status.slots.get(&s.name);
            json!({
                "name": s.name, "class": s.class, "device": s.device, "bootname": s.bootname,
                "booted": booted.is_some_and(|b| b.name == s.name),
                "boot-state": boot,
                "status": st.map(|x| x.status).unwrap_or(if booted.is_some_and(|b| b.name == s.name) { FirmwareStatus::Active } else { FirmwareStatus::NoImage }),
                "version": st.and_then(|x| x.version.clone()),
                "sha256": st.and_then(|x| x.sha256.clone()),
                "security-version": st.and_then(|x| x.security_version),
            })
        })
        .collect();
    let v = json!({
        "compatible": conf.compatible, "booted": booted.map(|b| &b.name), "primary": primary,
        "slots": slots, "last-result": status.last_result, "pending": status.pending,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("booted: {}   primary: {}", v["booted"].as_str().unwrap_or("?"), v["primary"].as_str().unwrap_or("?"));
        for s in v["slots"].as_array().into_iter().flatten() {
            println!(
                "  {:<12} {:<6} {:<30} boot:{:<5} {:<18} {}",
                s["name"].as_str().unwrap_or_default(),
                s["bootname"].as_str().unwrap_or("-"),
                s["device"].as_str().unwrap_or_default(),
                s["boot-state"].as_str().unwrap_or("-"),
                s["status"].as_str().unwrap_or_default(),
                s["version"].as_str().unwrap_or("")
            );
        }
        if let Some(r) = &status.last_result {
            println!("last install: fault {} {}", r.fault_code, r.fault_string);
        }
    }
    ExitCode::SUCCESS
}

pub(super) fn run_mark(a: MarkArgs, conf: &Config, override_boot: Option<&str>) -> ExitCode {
    let state = match a.state {
        MarkState::Good => "good",
        MarkState::Bad => "bad",
        MarkState::Active => "active",
    };
    match crate::device::mark(conf, override_boot, state, &a.slot).result {
        Ok(m) => {
            println!("{}", m.message);
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("henb-update mark: {} ({})", f.message, f.kind);
            ExitCode::from(f.verdict.exit_code())
        }
    }
}

#[derive(clap::Args)]
pub(super) struct BootCheckArgs {
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `boot-check`: exit 0 when the booted slot measures as its committed values (or there
/// is nothing to check), 1 when it does not (it is then marked bad) or when it holds less
/// than the anti-rollback minimum (then it stays bootable, unconfirmed), 3 when it could
/// not check.
pub(super) fn run_boot_check(a: BootCheckArgs, conf: &Config, override_boot: Option<&str>) -> ExitCode {
    let fail = |f: Failure| {
        if a.json {
            println!("{}", json!({"error": {"kind": f.kind, "message": f.message}}));
        }
        eprintln!("henb-update boot-check: {} ({})", f.message, f.kind);
        ExitCode::from(f.verdict.exit_code())
    };
    let booted = match booted(conf, override_boot) {
        Ok(b) => b,
        Err(e) => return fail(e.into()),
    };
    let checked = (|| -> Result<_, Failure> {
        let mut bl = bootloader(conf, booted)?;
        let (tpm, counter) = crate::device::tpm_for_confirm(conf)?;
        let mut dev = Booted { conf, slot: booted, bootloader: bl.as_mut(), tpm, counter };
        dev.boot_check().map_err(|e| Failure::from_fault(&e))
    })();
    let r = match checked {
        Ok(r) => r,
        Err(f) => return fail(f),
    };
    let ok = r.mismatches.as_ref().is_none_or(|m| m.is_empty());
    if a.json {
        println!(
            "{}",
            json!({
                "slot": booted.name,
                "bootname": booted.bootname,
                "checked": r.mismatches.is_some(),
                "measured-as-expected": ok,
                "mismatches": r.mismatches.iter().flatten().map(|m| json!({"pcr": m.pcr, "expected": hex::encode(m.expected), "measured": hex::encode(m.actual)})).collect::<Vec<_>>(),
                "fell-back-from": r.fell_back_from.as_ref().map(|(s, k)| json!({"slot": s, "command-key": k})),
                "below-minimum": r.below_minimum.as_ref().map(|b| json!({"security-version": b.held, "minimum": b.minimum})),
            })
        );
    }
    if let Some(b) = &r.below_minimum {
        eprintln!(
            "henb-update boot-check: {b}: not confirmed and not approved (sealed secrets stay sealed); it stays bootable and takes an install at or above {}",
            b.minimum
        );
        return ExitCode::from(EXIT_REJECTED);
    }
    if let Some((s, k)) = &r.fell_back_from {
        eprintln!("henb-update boot-check: slot {s} did not come up; ActivationFailed recorded for CommandKey {k:?}");
    }
    match &r.mismatches {
        None => {
            if !a.json {
                println!("slot {}: no reference values to check against", booted.name);
            }
            ExitCode::SUCCESS
        }
        Some(m) if m.is_empty() => {
            if !a.json {
                println!("slot {}: measures as its reference values", booted.name);
            }
            ExitCode::SUCCESS
        }
        Some(m) => {
            for x in m {
                eprintln!("henb-update boot-check: slot {}: {x}", booted.name);
            }
            eprintln!(
                "henb-update boot-check: slot {} does not measure as its reference values: marked bad, the bootloader falls back at the next boot",
                booted.name
            );
            ExitCode::from(EXIT_REJECTED)
        }
    }
}
