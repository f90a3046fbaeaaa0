//! `henb-update policy` and `henb-update secret`: the measured-boot policy and the
//! device secrets sealed to it.

use super::{EXIT_COULD_NOT_CHECK, EXIT_REJECTED};
use crate::config::Config;
use crate::fault::Fault;
use crate::measured_boot::record::{Origin, Record, SlotValues};
use crate::measured_boot::reference::ReferenceValues;
use crate::measured_boot::{MeasuredBoot, MeasuredBootError};
use crate::tpm::policy;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub(super) enum PolicyCommand {
    /// Provisioning: commit the booted slot's reference values and approve only it.
    Init(InitArgs),
    /// The committed values per slot, the approved slots, and whether the TPM index agrees.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub(super) struct InitArgs {
    /// The signed package the booted slot was made from: its [meta.measured-boot] values
    /// for the booted bootname (verified against the TPM's roots first).
    #[arg(long, value_name = "FILE", conflicts_with = "from_pcrs", required_unless_present = "from_pcrs")]
    package: Option<PathBuf>,
    /// Take the booted slot's values from the PCRs as they are now (comma-separated
    /// indices, e.g. 8,9): only on a device known to have booted what it should.
    #[arg(long, value_name = "PCRS", value_delimiter = ',')]
    from_pcrs: Option<Vec<u8>>,
}

#[derive(clap::Subcommand)]
pub(super) enum SecretCommand {
    /// Seal standard input (at most 128 bytes) as secret NAME, to the measured-boot policy.
    Seal {
        /// Secret name (A-Z a-z 0-9 . _ -).
        name: String,
    },
    /// Write secret NAME to standard output: only while the device measures as an approved slot.
    Unseal {
        /// Secret name.
        name: String,
    },
}

fn setup(conf: &Config) -> Result<(crate::tpm::owner::TpmOwner, MeasuredBoot), String> {
    let mb = MeasuredBoot::from_config(conf)
        .ok_or("measured boot is not configured: add a [measured-boot] section to the system configuration")?;
    let (owner, _, _) = crate::device::tpm_owner(conf).map_err(|e| format!("{e:#}"))?;
    Ok((owner, mb))
}

fn fail(cmd: &str, msg: impl std::fmt::Display, exit: u8) -> ExitCode {
    eprintln!("henb-update {cmd}: {msg}");
    ExitCode::from(exit)
}

fn mb_fail(cmd: &str, e: MeasuredBootError) -> ExitCode {
    fail(cmd, format!("{e} ({})", e.kind()), e.verdict().exit_code())
}

pub(super) fn run_policy(c: PolicyCommand, conf: &Config, override_boot: Option<&str>) -> ExitCode {
    let (owner, mb) = match setup(conf) {
        Ok(s) => s,
        Err(e) => return fail("policy", e, EXIT_COULD_NOT_CHECK),
    };
    match c {
        PolicyCommand::Init(a) => {
            let booted = match crate::device::booted(conf, override_boot) {
                Ok(b) => b,
                Err(e) => return fail("policy init", e, EXIT_COULD_NOT_CHECK),
            };
            let Some(bootname) = booted.bootname.clone() else {
                return fail("policy init", format!("slot {} has no bootname", booted.name), EXIT_COULD_NOT_CHECK);
            };
            let values = match (&a.package, &a.from_pcrs) {
                (Some(p), _) => match package_values(conf, p, &bootname) {
                    Ok(v) => v,
                    Err((msg, exit)) => return fail("policy init", msg, exit),
                },
                (None, Some(pcrs)) => {
                    let pcrs = pcrs.clone();
                    if pcrs.is_empty() || pcrs.iter().any(|p| *p > 23) {
                        return fail("policy init", "--from-pcrs: PCR indices 0 to 23", EXIT_REJECTED);
                    }
                    // What the slot holds, as far as the agent installed it.
                    let sv = crate::status::Status::load(&conf.status_file())
                        .ok()
                        .and_then(|s| s.slots.get(&booted.name).and_then(|x| x.security_version));
                    match owner.call(move |t| t.pcr_read(&pcrs)) {
                        Ok(v) => SlotValues::new(&v, &BTreeMap::new(), Origin::Measured, None, sv),
                        Err(e) => return fail("policy init", e, EXIT_COULD_NOT_CHECK),
                    }
                }
                (None, None) => unreachable!("clap requires one"),
            };
            let b = bootname.clone();
            match owner.call(move |t| mb.init(t, &b, values)) {
                Ok(d) => {
                    println!("measured-boot policy approves slot {bootname} only; policy digest {}", hex::encode(d));
                    ExitCode::SUCCESS
                }
                Err(e) => mb_fail("policy init", e),
            }
        }
        PolicyCommand::Show { json } => {
            let index = mb.index;
            let r = owner.call(move |t| {
                let rec = mb.load(t)?;
                let held = match t.nv_info(mb.index)? {
                    Some(i) if i.written => policy::from_tpmt_ha(&t.nv_read(mb.index)?),
                    _ => None,
                };
                Ok::<_, MeasuredBootError>((rec, held))
            });
            let (rec, held) = match r {
                Ok(x) => x,
                Err(e) => return mb_fail("policy show", e),
            };
            let rec = rec.unwrap_or_else(|| Record { format: 1, ..Default::default() });
            let v = json!({
                "policy-index": format!("{index:#010x}"),
                "index-digest": held.map(hex::encode),
                "approved": rec.policy,
                "slots": rec.slots,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("policy index {index:#010x}: {}", held.map(hex::encode).unwrap_or_else(|| "empty".into()));
                println!(
                    "approved slots: {}",
                    if rec.policy.is_empty() { "none".into() } else { rec.policy.join(", ") }
                );
                for (b, s) in &rec.slots {
                    println!(
                        "  slot {b} ({:?}{})",
                        s.origin,
                        s.version.as_deref().map(|v| format!(", {v}")).unwrap_or_default()
                    );
                    for (i, d) in &s.pcrs {
                        println!("    pcr.{i} = {d}");
                    }
                    for (n, d) in &s.components {
                        println!("    component.{n} = {d}");
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}

/// Verify `path` against the configured anchors and take its values for `bootname`.
fn package_values(conf: &Config, path: &std::path::Path, bootname: &str) -> Result<SlotValues, (String, u8)> {
    use crate::source::{open_package, PackageOrigin};
    let file = open_package(PackageOrigin::Path(path)).map_err(|e| (e.to_string(), EXIT_COULD_NOT_CHECK))?;
    let pkg = crate::device::inspect(conf, file.into()).map_err(|f| {
        (format!("{}: {} (CWMP fault {}, {})", path.display(), f.message, f.fault, f.kind), f.verdict.exit_code())
    })?;
    let meta = pkg
        .meta
        .get("measured-boot")
        .ok_or_else(|| (format!("{}: carries no [meta.measured-boot]", path.display()), EXIT_REJECTED))?;
    let rv = ReferenceValues::from_meta(meta).map_err(|e| (e.to_string(), EXIT_REJECTED))?;
    let pcrs = rv.for_slot(bootname);
    if pcrs.is_empty() {
        return Err((format!("{}: no reference values for slot {bootname}", path.display()), EXIT_REJECTED));
    }
    Ok(SlotValues::new(&pcrs, &rv.components, Origin::Package, pkg.version.clone(), pkg.security_version))
}

pub(super) fn run_secret(c: SecretCommand, conf: &Config) -> ExitCode {
    let (owner, mb) = match setup(conf) {
        Ok(s) => s,
        Err(e) => return fail("secret", e, EXIT_COULD_NOT_CHECK),
    };
    match c {
        SecretCommand::Seal { name } => {
            let mut data = Vec::new();
            if let Err(e) = std::io::stdin().take(129).read_to_end(&mut data) {
                return fail("secret seal", e, EXIT_COULD_NOT_CHECK);
            }
            if data.is_empty() || data.len() > 128 {
                return fail("secret seal", "a secret is 1 to 128 bytes on standard input", EXIT_REJECTED);
            }
            let n = name.clone();
            match owner.call(move |t| mb.seal(t, &n, &data)) {
                Ok(()) => {
                    println!("sealed secret {name} to the measured-boot policy");
                    ExitCode::SUCCESS
                }
                Err(e) => mb_fail("secret seal", e),
            }
        }
        SecretCommand::Unseal { name } => match owner.call(move |t| mb.unseal(t, &name)) {
            Ok(d) => {
                let mut out = std::io::stdout().lock();
                if out.write_all(&d).and_then(|_| out.flush()).is_err() {
                    return ExitCode::from(EXIT_COULD_NOT_CHECK);
                }
                ExitCode::SUCCESS
            }
            // The TPM refusing the policy is the expected "not this measurement" answer.
            Err(MeasuredBootError::Tpm(crate::tpm::TpmError::Command { op: "unseal", why, .. })) => fail(
                "secret unseal",
                format!("the device does not measure as an approved slot; the secret stays sealed (TPM: {why})"),
                EXIT_REJECTED,
            ),
            Err(e) => mb_fail("secret unseal", e),
        },
    }
}

#[derive(clap::Args)]
pub(super) struct ReferenceValuesArgs {
    /// The slot's boot config as GRUB sources it (e.g. SLOT_ROOT/boot/grub.cfg).
    #[arg(long, value_name = "FILE")]
    grub_config: PathBuf,
    /// The slot's root directory: paths in the config are resolved under it.
    #[arg(long, value_name = "DIR")]
    slot_root: PathBuf,
    /// A slot's bootname (the config's $slot, e.g. A); repeat for each slot.
    #[arg(long = "slot", value_name = "BOOTNAME", required = true)]
    slots: Vec<String>,
    /// The command the embedded config runs to read the slot config.
    #[arg(long, default_value = "source /boot/grub.cfg")]
    source_command: String,
}

/// `reference-values`: predict a slot image's PCR 8 and 9 (GRUB's measurements) for each
/// bootname and print a `[meta.measured-boot]` file for `bundle --reference-values`.
pub(super) fn run_reference_values(a: ReferenceValuesArgs) -> ExitCode {
    use crate::measured_boot::grub;
    use sha2::{Digest, Sha256};
    let fail = |m: String| fail("reference-values", m, EXIT_REJECTED);
    let text = match std::fs::read(&a.grub_config) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", a.grub_config.display())),
    };
    let config_digest: [u8; 32] = Sha256::digest(&text).into();
    let Ok(text) = String::from_utf8(text) else { return fail(format!("{}: not UTF-8", a.grub_config.display())) };
    let root = a.slot_root.clone();
    let file = move |p: &str| -> Result<[u8; 32], String> {
        let path = root.join(p.trim_start_matches('/'));
        let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(h.finalize().into())
    };
    let mut pcr9: Option<[u8; 32]> = None;
    let mut per_slot = Vec::new();
    let mut components = BTreeMap::new();
    for bootname in &a.slots {
        if bootname.is_empty() || !bootname.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return fail(format!("--slot {bootname}: a bootname (letters, digits, - and _)"));
        }
        let vars: BTreeMap<String, String> = [("slot".to_string(), bootname.to_string())].into();
        let events = match grub::slot_events(&a.source_command, &text, config_digest, &vars, &file) {
            Ok(e) => e,
            Err(e) => return fail(format!("{}: {e}", a.grub_config.display())),
        };
        for e in events.iter().filter(|e| e.pcr == 9 && e.what.starts_with('/')) {
            let name = e.what.rsplit('/').next().unwrap_or(&e.what).to_string();
            components.insert(name, hex::encode(e.digest));
        }
        let nine = grub::replay(&events, 9);
        if pcr9.is_some_and(|p| p != nine) {
            return fail("PCR 9 differs between slots: the slot config reads different files per slot".into());
        }
        pcr9 = Some(nine);
        per_slot.push((bootname.clone(), grub::replay(&events, 8)));
    }
    println!("pcr-bank=sha256");
    if let Some(p) = pcr9 {
        println!("pcr.9={}", hex::encode(p));
    }
    for (b, p) in per_slot {
        println!("pcr.8.{b}={}", hex::encode(p));
    }
    for (n, d) in components {
        println!("component.{}={d}", n.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "-"));
    }
    ExitCode::SUCCESS
}
