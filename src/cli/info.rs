//! `henb-update info`.

use crate::config::Config;
use crate::fault::Fault;
use crate::package::{self, Context, NullSink, Package};
use crate::source::FileSource;
use crate::trust::TrustSource;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Trust anchors (PEM), instead of the configuration's [keyring] path.
    #[arg(long, value_name = "PEM")]
    keyring: Option<PathBuf>,
    /// Print JSON (kebab-case keys) instead of text.
    #[arg(long)]
    json: bool,
    /// Accept SHA-1 file hashes and signatures in TR-069 packages (legacy peers).
    #[arg(long)]
    tr069_legacy_sha1: bool,
    /// Package file.
    package: PathBuf,
}

pub(super) fn run(a: Args, conf: &Config) -> ExitCode {
    let (anchors, minimum) = match crate::device::trust_state(conf, a.keyring.clone()) {
        Ok(t) => t,
        Err(f) => return fail(&a, f.kind, f.fault, &f.message, super::EXIT_COULD_NOT_CHECK),
    };
    tracing::info!(source = %anchors.source(), "trust anchors loaded");
    let file = match crate::source::open_input(&a.package) {
        Ok(f) => f,
        Err(e) => return fail(&a, "io", 9016, &format!("{}: {e}", a.package.display()), super::EXIT_COULD_NOT_CHECK),
    };
    let src = match FileSource::new(file) {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(&a, "io", 9016, &format!("{}: {e}", a.package.display()), super::EXIT_COULD_NOT_CHECK),
    };
    let mut policy = conf.policy.clone();
    policy.allow_sha1 |= a.tr069_legacy_sha1;
    let variant = match conf.variant() {
        Ok(v) => v,
        Err(e) => return fail(&a, "variant", 9002, &e, super::EXIT_COULD_NOT_CHECK),
    };
    let ctx = Context {
        anchors: &anchors,
        policy,
        now: SystemTime::now(),
        compatible: conf.compatible.clone(),
        variant,
        install_images_only: false,
        check_whole_tree: true,
        verify_before_writing: false,
    };
    match package::verify(src, &ctx, &mut NullSink) {
        Ok(p) => {
            if let Some(min) = minimum {
                if let Err(e) = crate::rollback::check(p.security_version, min) {
                    let msg = format!("{}: {e}", a.package.display());
                    return fail(&a, e.kind(), e.fault().code(), &msg, super::EXIT_REJECTED);
                }
            }
            tracing::info!(source = %anchors.source(), "package verified");
            if a.json {
                let mut v = serde_json::to_value(&p).unwrap_or_default();
                v["trust-source"] = json!(anchors.source().to_string());
                if let Some(min) = minimum {
                    v["minimum-security-version"] = json!(min);
                }
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print_text(&p, anchors.source());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = match e.fault() {
                crate::fault::CwmpFault::UnableToAccessFile | crate::fault::CwmpFault::InternalError => {
                    super::EXIT_COULD_NOT_CHECK
                }
                _ => super::EXIT_REJECTED,
            };
            fail(&a, e.kind(), e.fault().code(), &format!("{}: {e}", a.package.display()), code)
        }
    }
}

fn fail(a: &Args, kind: &str, fault: u32, message: &str, exit: u8) -> ExitCode {
    if a.json {
        println!("{}", json!({"error": {"kind": kind, "cwmp-fault": fault, "message": message}}));
    }
    eprintln!("henb-update info: {message} (CWMP fault {fault}, {kind})");
    ExitCode::from(exit)
}

fn print_text(p: &Package, source: &TrustSource) {
    let fmt = serde_json::to_value(p.format).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    println!("Format:           {fmt}");
    println!("Compatible:       '{}'", p.compatible);
    println!("Version:          '{}'", p.version.as_deref().unwrap_or(""));
    if let Some(d) = &p.description {
        println!("Description:      '{d}'");
    }
    if let Some(b) = &p.build {
        println!("Build:            '{b}'");
    }
    if let Some(s) = p.security_version {
        println!("Security version: {s}");
    }
    println!("{} image(s):", p.images.len());
    for i in &p.images {
        let class = match &i.variant {
            Some(v) => format!("{}.{v}", i.slot_class),
            None => i.slot_class.clone(),
        };
        println!("  [{class}] {}  {} bytes  {} {}", i.filename, i.size, i.digest_algorithm, hex::encode(&i.digest));
    }
    println!("Signers:");
    for s in &p.signers {
        println!("  {}: {} (issuer {}, {})", s.status, s.subject, s.issuer, s.digest_algorithm);
    }
    for (label, kv) in &p.meta {
        println!("[meta.{label}]");
        for (k, v) in kv {
            println!("  {k}={v}");
        }
    }
    println!("Trust source:     {source}");
    println!("Verified: signature, structure and every image digest.");
}
