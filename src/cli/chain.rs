//! `henb-update check-chain`: why is this signer accepted or refused? The operator's view
//! of the signer check that package verification runs ([`crate::verify::check_signer`]),
//! with the same trust store, CRLs and policy, on a certificate instead of a package.

use crate::config::Config;
use crate::fault::{CwmpFault, Failure, Verdict};
use crate::verify::{check_signer, Material, Purpose};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
use x509_cert::Certificate;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Trust anchors (PEM; `X509 CRL` blocks in it are CRLs), instead of the configuration's [keyring] path or the TPM's roots.
    #[arg(long, value_name = "PEM")]
    keyring: Option<PathBuf>,
    /// Candidate intermediate CA certificates (PEM, several per file, any order).
    #[arg(long, value_name = "PEM")]
    intermediates: Vec<PathBuf>,
    /// A CRL (PEM or DER), in addition to the configured ones. Repeatable.
    #[arg(long = "crl", value_name = "FILE")]
    crls: Vec<PathBuf>,
    /// Verification time: RFC 3339 (2026-11-30T12:00:00Z) or seconds since the epoch [default: now].
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// Certificate purpose [default: the configuration's check-purpose].
    #[arg(long, value_parser = ["codesign", "smimesign", "any"])]
    purpose: Option<String>,
    /// Require a current CRL for every certificate of the path (as [keyring] check-crl=true).
    #[arg(long)]
    check_crl: bool,
    /// Accept a path ending at a keyring certificate that is not a root (as [keyring] allow-partial-chain=true).
    #[arg(long)]
    allow_partial_chain: bool,
    /// Print JSON: {"verdict", "path", "checks", "error"}.
    #[arg(long)]
    json: bool,
    /// The signer certificate (PEM).
    leaf: PathBuf,
}

pub(super) fn run(a: Args, conf: &Config) -> ExitCode {
    let mut policy = conf.policy.clone();
    if let Some(p) = &a.purpose {
        policy.purpose = Purpose::from_name(p).unwrap_or_default();
    }
    policy.check_crl |= a.check_crl;
    policy.allow_partial_chain |= a.allow_partial_chain;
    let time = match a.time.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(SystemTime::now),
        Err(e) => return fail(&a, unusable("invalid-arguments", CwmpFault::InvalidArguments, format!("--time: {e}"))),
    };
    let leaf = match read_certs(&a.leaf).and_then(|mut v| {
        if v.len() == 1 {
            Ok(v.remove(0))
        } else {
            Err(format!("{}: holds {} certificates, give the signer's alone", a.leaf.display(), v.len()))
        }
    }) {
        Ok(c) => c,
        Err(e) => return fail(&a, unusable("io", CwmpFault::UnableToAccessFile, e)),
    };
    let mut certificates = Vec::new();
    for p in &a.intermediates {
        match read_certs(p) {
            Ok(v) => certificates.extend(v),
            Err(e) => return fail(&a, unusable("io", CwmpFault::UnableToAccessFile, e)),
        }
    }
    let mut crls = Vec::new();
    for p in &a.crls {
        match std::fs::read(p).map_err(|e| e.to_string()).and_then(|b| crate::trust::crls_from_bytes(&b)) {
            Ok(v) => crls.extend(v),
            Err(e) => return fail(&a, unusable("crl", CwmpFault::InternalError, format!("{}: {e}", p.display()))),
        }
    }
    let (anchors, _) = match crate::device::trust_state(conf, a.keyring.clone()) {
        Ok(t) => t,
        Err(e) => return fail(&a, e.into()),
    };
    let material = Material { certificates: &certificates, crls: &crls };
    let subject = leaf.tbs_certificate.subject.to_string();
    match check_signer(&leaf, &material, &anchors, &policy, time) {
        Ok(valid) => {
            if a.json {
                let v = json!({"verdict": "trusted", "signer": subject, "trust-source": anchors.source().to_string(),
                               "path": valid.subjects(), "checks": valid.checks});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("signer: {subject}\ntrust source: {}\npath:", anchors.source());
                for (i, s) in valid.subjects().iter().enumerate() {
                    println!("  {i}: {s}");
                }
                println!("checks:");
                for c in &valid.checks {
                    println!("  {}: {}", c.result, c.check);
                }
                println!("verdict: trusted");
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            let f = Failure::from_fault(&failure);
            let (kind, fault, exit, verdict) = (f.kind, f.fault, f.verdict.exit_code(), verdict_name(f.verdict));
            if a.json {
                let v = json!({"verdict": verdict, "signer": subject, "trust-source": anchors.source().to_string(),
                               "checks": [{"check": "certification path (RFC 5280 §6)", "result": failure.to_string()}],
                               "error": {"kind": kind, "cwmp-fault": fault, "message": failure.to_string()}});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("signer: {subject}\ntrust source: {}", anchors.source());
                println!("checks:\n  failed: {failure}\nverdict: {verdict}");
            }
            eprintln!("henb-update check-chain: {failure} (CWMP fault {fault}, {kind})");
            ExitCode::from(exit)
        }
    }
}

fn read_certs(p: &PathBuf) -> Result<Vec<Certificate>, String> {
    let text = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let certs =
        Certificate::load_pem_chain(&text).map_err(|e| format!("{}: not PEM certificates: {e}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", p.display()));
    }
    Ok(certs)
}

/// The check could not run: its input (a file, an argument, the anchors) is unusable.
/// Exit 3 whatever the fault, as for every command's unusable input.
fn unusable(kind: &str, fault: CwmpFault, message: String) -> Failure {
    Failure { verdict: Verdict::CouldNotCheck, ..Failure::new(kind, fault, message) }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Rejected => "rejected",
        Verdict::CouldNotCheck => "could-not-check",
    }
}

fn fail(a: &Args, f: Failure) -> ExitCode {
    if a.json {
        let v = json!({"verdict": verdict_name(f.verdict), "error": {"kind": f.kind, "cwmp-fault": f.fault, "message": f.message}});
        println!("{v}");
    }
    eprintln!("henb-update check-chain: {} (CWMP fault {}, {})", f.message, f.fault, f.kind);
    ExitCode::from(f.verdict.exit_code())
}

/// RFC 3339 date-time (`2026-11-30T12:00:00Z`, `...+01:00`, fractions ignored) or seconds
/// since the epoch.
fn parse_time(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("'{s}' is neither RFC 3339 (2026-11-30T12:00:00Z) nor seconds since the epoch");
    if let Ok(secs) = s.parse::<u64>() {
        return SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)).ok_or_else(bad);
    }
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|t| t.parse::<u32>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let hh: i64 = o[1..3].parse().ok().filter(|h| *h < 24).ok_or_else(bad)?;
            let mm: i64 = o[4..6].parse().ok().filter(|m| *m < 60).ok_or_else(bad)?;
            let v = hh * 3600 + mm * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    let y = u16::try_from(y).map_err(|_| bad())?;
    let to_u8 = |v: u32| u8::try_from(v).map_err(|_| bad());
    let dt = der::DateTime::new(y, to_u8(mo)?, to_u8(d)?, to_u8(h)?, to_u8(mi)?, to_u8(se)?).map_err(|_| bad())?;
    let utc = dt.unix_duration().as_secs() as i64 - offset;
    u64::try_from(utc).ok().and_then(|t| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(t))).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse_time;
    use std::time::{Duration, SystemTime};

    #[test]
    fn rfc3339_and_epoch() {
        let t = |s| parse_time(s).unwrap().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(t("2026-11-30T12:00:00Z"), Duration::from_secs(1_796_040_000));
        assert_eq!(t("2026-11-30T13:00:00.5+01:00"), Duration::from_secs(1_796_040_000));
        assert_eq!(t("1796040000"), Duration::from_secs(1_796_040_000));
        assert!(parse_time("2026-11-30").is_err());
        assert!(parse_time("2026-13-30T12:00:00Z").is_err());
        assert!(parse_time("2026-11-30T12:00:00+0100").is_err());
    }
}
