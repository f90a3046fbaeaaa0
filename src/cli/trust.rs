//! `henb-update trust` and `henb-update security-version`: the TPM-held trust state.

use super::{EXIT_COULD_NOT_CHECK, EXIT_REJECTED};
use crate::config::Config;
use crate::device::tpm_owner;
use crate::trust::store::StoreError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub(super) enum TrustCommand {
    /// Factory provisioning: write each operator root CA into its own TPM NV index (and set up the anti-rollback counter).
    Provision {
        /// Root CA certificate(s), PEM (a file may hold several). Repeatable.
        #[arg(long = "root", value_name = "PEM", required = true)]
        roots: Vec<PathBuf>,
        /// Freeze the written indices with NV_WriteLock: they can no longer be replaced or retired.
        #[arg(long)]
        lock: bool,
    },
    /// Show the provisioned roots: NV index, subject, SHA-256 fingerprint, locked or not.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a new root that a current root vouches for: ENDORSEMENT is a CMS signature (DER) by a current root's key over the new root's DER.
    Rollover {
        /// The new root CA (PEM).
        new_root: PathBuf,
        /// `openssl cms -sign -binary -outform DER -in NEW.der -signer CURRENT.pem -inkey CURRENT.key`.
        #[arg(long, value_name = "P7S")]
        endorsement: PathBuf,
    },
    /// Remove a root after a rollover: give its NV index (0x...) or its SHA-256 fingerprint (8 hex digits or more).
    Retire {
        /// NV index or fingerprint.
        which: String,
    },
}

#[derive(clap::Args)]
pub(super) struct SecurityArgs {
    /// Raise the minimum accepted security version to N (it never goes down). The installer does this once a new slot is confirmed good.
    #[arg(long, value_name = "N")]
    raise: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn exit_for(e: &StoreError) -> u8 {
    use crate::fault::Fault;
    e.verdict().exit_code()
}

fn read_pem_certs(p: &PathBuf) -> anyhow::Result<Vec<Vec<u8>>> {
    use x509_cert::der::Encode;
    let text = std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let certs = x509_cert::Certificate::load_pem_chain(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate", p.display());
    Ok(certs.iter().map(|c| c.to_der()).collect::<Result<_, _>>()?)
}

fn read_cms(p: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let b = std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    if b.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(&b)?;
        let (_, der) = der::pem::decode_vec(text.as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        return Ok(der);
    }
    Ok(b)
}

pub(super) fn run(cmd: TrustCommand, conf: &Config) -> ExitCode {
    let (owner, store, counter) = match tpm_owner(conf) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("henb-update trust: {e:#}");
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
    };
    let fail = |e: StoreError| {
        eprintln!("henb-update trust: {e}");
        ExitCode::from(exit_for(&e))
    };
    match cmd {
        TrustCommand::Provision { roots, lock } => {
            let mut ders = Vec::new();
            for p in &roots {
                match read_pem_certs(p) {
                    Ok(d) => ders.extend(d),
                    Err(e) => {
                        eprintln!("henb-update trust: {e:#}");
                        return ExitCode::from(EXIT_REJECTED);
                    }
                }
            }
            match owner.call(move |t| {
                let written = store.provision(t, &ders, lock)?;
                counter.provision(t)?;
                Ok::<_, StoreError>(written)
            }) {
                Ok(idx) => {
                    for i in idx {
                        println!("root written to {i:#010x}{}", if lock { " (locked)" } else { "" });
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TrustCommand::List { json } => match owner.call(move |t| store.list(t)) {
            Ok(roots) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&roots).unwrap_or_default());
                } else {
                    for r in roots {
                        println!(
                            "{}  {}  sha256:{}{}",
                            r.index,
                            r.subject,
                            r.sha256,
                            if r.locked { "  locked" } else { "" }
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        TrustCommand::Rollover { new_root, endorsement } => {
            let (new, cms) = match (read_pem_certs(&new_root), read_cms(&endorsement)) {
                (Ok(n), Ok(c)) if n.len() == 1 => (n.into_iter().next().expect("one"), c),
                (Ok(_), Ok(_)) => {
                    eprintln!("henb-update trust: {}: give exactly one new root", new_root.display());
                    return ExitCode::from(EXIT_REJECTED);
                }
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("henb-update trust: {e:#}");
                    return ExitCode::from(EXIT_REJECTED);
                }
            };
            match owner.call(move |t| store.rollover(t, &new, &cms)) {
                Ok((i, by)) => {
                    println!(
                        "new root written to {i:#010x}, endorsed by '{by}'; both are trusted until 'trust retire'"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TrustCommand::Retire { which } => match owner.call(move |t| store.retire(t, &which)) {
            Ok(r) => {
                println!("retired {} ({})", r.index, r.subject);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}

pub(super) fn run_security(a: SecurityArgs, conf: &Config, override_boot: Option<&str>) -> ExitCode {
    let fail = |f: crate::fault::Failure| {
        if a.json {
            println!("{}", serde_json::json!({"error": {"kind": f.kind, "cwmp-fault": f.fault, "message": f.message}}));
        }
        let what = if f.refused() { "refused" } else { "could not check" };
        eprintln!("henb-update security-version: {what}: {}", f.message);
        ExitCode::from(f.verdict.exit_code())
    };
    let r = match a.raise {
        Some(n) => crate::device::raise_minimum(conf, override_boot, n),
        None => match tpm_owner(conf) {
            Ok((owner, _, counter)) => owner
                .call(move |t| counter.minimum(t))
                .map(|m| (m, None))
                .map_err(|e| crate::fault::Failure::from_fault(&crate::measured_boot::MeasuredBootError::from(e))),
            Err(e) => return fail(crate::device::SetupError::Tpm(format!("TPM: {e:#}")).into()),
        },
    };
    match r {
        Ok((min, below)) => {
            if let Some(b) = &below {
                eprintln!(
                    "henb-update security-version: {b}: it keeps running but is neither confirmed nor approved; install an update at or above {min}"
                );
            }
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "minimum-security-version": min,
                        "booted-below-minimum": below.as_ref().map(|b| b.held),
                    })
                );
            } else {
                println!("minimum security version: {min}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
