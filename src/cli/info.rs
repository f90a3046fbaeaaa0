//! `henb-update info`.

use crate::config::Config;
use crate::device::SetupError;
use crate::fault::Failure;
use crate::install::admit;
use crate::package::{self, Context, NullSink, Package};
use crate::trust::TrustSource;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
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
    /// Package file, or its http(s) URL.
    package: String,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
}

pub(super) fn run(a: Args, conf: &Config) -> ExitCode {
    match inspect(&a, conf) {
        Ok((p, source, minimum)) => {
            tracing::info!(%source, "package verified");
            if a.json {
                let mut v = serde_json::to_value(&p).unwrap_or_default();
                v["trust-source"] = json!(source.to_string());
                if let Some(min) = minimum {
                    v["minimum-security-version"] = json!(min);
                }
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print_text(&p, &source);
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            if a.json {
                println!("{}", json!({"error": {"kind": f.kind, "cwmp-fault": f.fault, "message": f.message}}));
            }
            eprintln!("henb-update info: {} (CWMP fault {}, {})", f.message, f.fault, f.kind);
            ExitCode::from(f.verdict.exit_code())
        }
    }
}

/// Verify the package completely (the whole verity tree too) and apply the admission
/// rules that need no target slot. Package errors name the file.
fn inspect(a: &Args, conf: &Config) -> Result<(Package, TrustSource, Option<u64>), Failure> {
    let (anchors, minimum) = crate::device::trust_state(conf, a.keyring.clone())?;
    tracing::info!(source = %anchors.source(), "trust anchors loaded");
    let named = |mut f: Failure| {
        f.message = format!("{}: {}", crate::download::redact_url(&a.package), f.message);
        f
    };
    let src = crate::device::open_input(conf, a.remote.input(&a.package)?).map_err(named)?;
    let mut policy = conf.policy.clone();
    policy.allow_sha1 |= a.tr069_legacy_sha1;
    let ctx = Context {
        anchors: &anchors,
        policy,
        now: SystemTime::now(),
        variant: conf.variant().map_err(SetupError::Variant)?,
        install_images_only: false,
        check_whole_tree: true,
        check_ahead: false,
    };
    let fail = |e: package::PackageError| named(Failure::from_fault(&src.explain(e)));
    let a = package::authenticate(src.source(), &ctx).map_err(fail)?;
    admit::inspect(a.package(), conf.compatible.as_deref(), minimum).map_err(|e| named(Failure::from_fault(&e)))?;
    let p = a.stream(&mut NullSink).map_err(fail)?;
    Ok((p, anchors.source().clone(), minimum))
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
        if !i.adaptive.is_empty() {
            println!("      adaptive: {}", i.adaptive.join(" "));
        }
        if i.hooks.any() {
            println!("      hooks: {}", i.hooks.names().join(" "));
        }
    }
    if let Some(f) = p.hooks.as_ref().and_then(|h| h.filename.as_deref()) {
        let install = if p.hooks.as_ref().is_some_and(|h| h.install_check) { ", install-check" } else { "" };
        println!("Hooks:            '{f}'{install}");
    }
    if let Some(h) = &p.handler {
        println!("Handler:          '{}' {}", h.filename, h.args.as_deref().unwrap_or(""));
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
