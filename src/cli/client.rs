//! `henb-update download`, `transfers` and `watch`: a small client of the service's
//! `org.henb.Update1` interface, doing what a CWMP client integration does, usable from
//! shell scripts (`--json` prints one JSON object per line).

use super::{EXIT_COULD_NOT_CHECK, EXIT_REJECTED};
use crate::service::henb::{FIRMWARE_UPGRADE, NAME, PATH, STORED_FIRMWARE};
use futures_util::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::process::ExitCode;

#[zbus::proxy(interface = "org.henb.Update1", default_service = "org.henb.Update1", default_path = "/org/henb/Update1")]
trait Update1 {
    fn download(
        &self,
        fd: zbus::Fd<'_>,
        file_type: &str,
        command_key: &str,
        options: HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<(u32, String)>;
    fn download_url(
        &self,
        url: &str,
        file_type: &str,
        command_key: &str,
        options: HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<(u32, String)>;
    fn pending_transfers(&self) -> zbus::Result<Vec<(String, u32, String, u64, u64)>>;
    fn acknowledge_transfer(&self, command_key: &str) -> zbus::Result<bool>;
    #[zbus(signal, name = "ProgressChanged")]
    fn progress_signal(&self, percent: i32, message: String, depth: i32) -> zbus::Result<()>;
    #[zbus(signal)]
    fn download_completed(
        &self,
        job: String,
        command_key: String,
        fault_code: u32,
        fault_string: String,
        reboot_required: bool,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn transfer_complete(
        &self,
        command_key: String,
        fault_code: u32,
        fault_string: String,
        start_time: u64,
        complete_time: u64,
    ) -> zbus::Result<()>;
}

#[derive(clap::Args)]
pub(super) struct DownloadArgs {
    /// The Download's CommandKey (reported back in TransferComplete).
    #[arg(long, default_value = "")]
    command_key: String,
    /// Install without booting it ("6 Stored Firmware Image").
    #[arg(long)]
    no_activate: bool,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
    /// Package file (passed to the service as an open descriptor), or an http(s) URL the
    /// service fetches itself (DownloadUrl).
    package: String,
}

#[derive(clap::Args)]
pub(super) struct TransfersArgs {
    /// Acknowledge (forget) the result with this CommandKey instead of listing.
    #[arg(long, value_name = "COMMAND_KEY")]
    ack: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(super) struct WatchArgs {}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

async fn proxy() -> zbus::Result<Update1Proxy<'static>> {
    let conn = zbus::Connection::system().await?;
    Update1Proxy::builder(&conn).destination(NAME).path(PATH).build().await
}

fn dbus_failure(cmd: &str, e: zbus::Error, json: bool) -> ExitCode {
    // Our errors carry the CWMP fault code first in the message ("9001 busy: ...") and
    // its name in the error name.
    let (name, msg) = match &e {
        zbus::Error::MethodError(n, m, _) => (n.to_string(), m.clone().unwrap_or_default()),
        other => ("".to_string(), other.to_string()),
    };
    // The error's name says which fault; anything else (the bus, the service gone) could
    // not check.
    let fault = crate::fault::CwmpFault::from_dbus_name(&name).unwrap_or(crate::fault::CwmpFault::InternalError);
    if json {
        println!("{}", json!({"error": {"name": name, "cwmp-fault": fault, "message": msg}}));
    }
    eprintln!("henb-update {cmd}: {msg}{}", if name.is_empty() { String::new() } else { format!(" ({name})") });
    ExitCode::from(fault.verdict().exit_code())
}

/// What `download` hands the service.
enum Asked {
    /// An open package file (Download).
    File(std::fs::File),
    /// DownloadUrl's options (the URL is the package argument).
    Url(HashMap<&'static str, zbus::Variant<'static>>),
}

pub(super) fn run_download(a: DownloadArgs) -> ExitCode {
    let source = if crate::download::is_url(&a.package) {
        match a.remote.url_options() {
            Ok(o) => Asked::Url(o),
            Err(e) => {
                eprintln!("henb-update download: {e}");
                return ExitCode::from(EXIT_COULD_NOT_CHECK);
            }
        }
    } else {
        match crate::source::open_package(crate::source::PackageOrigin::Path(std::path::Path::new(&a.package))) {
            Ok(f) => Asked::File(f),
            Err(e) => {
                eprintln!("henb-update download: {e}");
                return ExitCode::from(EXIT_COULD_NOT_CHECK);
            }
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("henb-update download: {e}");
            return ExitCode::from(EXIT_COULD_NOT_CHECK);
        }
    };
    rt.block_on(async move {
        let p = match proxy().await {
            Ok(p) => p,
            Err(e) => return dbus_failure("download", e, a.json),
        };
        // Subscribe before asking, so no signal of this job is missed.
        let (mut progress, mut done) = match (p.receive_progress_signal().await, p.receive_download_completed().await)
        {
            (Ok(x), Ok(y)) => (x, y),
            (Err(e), _) | (_, Err(e)) => return dbus_failure("download", e, a.json),
        };
        let file_type = if a.no_activate { STORED_FIRMWARE } else { FIRMWARE_UPGRADE };
        let asked = match &source {
            Asked::File(file) => {
                p.download(zbus::Fd::from(file.as_fd()), file_type, &a.command_key, HashMap::new()).await
            }
            Asked::Url(options) => p.download_url(&a.package, file_type, &a.command_key, options.clone()).await,
        };
        let job = match asked {
            Ok((_, job)) => job,
            Err(e) => return dbus_failure("download", e, a.json),
        };
        loop {
            tokio::select! {
                Some(s) = progress.next() => if let Ok(x) = s.args() {
                    if a.json {
                        println!("{}", json!({"progress": {"percent": x.percent, "message": x.message, "depth": x.depth}}));
                    } else {
                        eprintln!("{:3}% {}", x.percent, x.message);
                    }
                },
                Some(s) = done.next() => {
                    let Ok(x) = s.args() else { continue };
                    if x.job != job {
                        continue;
                    }
                    if a.json {
                        println!("{}", json!({"completed": {"job": x.job, "command-key": x.command_key, "cwmp-fault": x.fault_code, "fault-string": x.fault_string, "reboot-required": x.reboot_required}}));
                    } else if x.fault_code == 0 {
                        println!("installed{}", if x.reboot_required { "; the new slot boots at the next reboot, TransferComplete follows then" } else { "" });
                    } else {
                        eprintln!("henb-update download: CWMP fault {}: {}", x.fault_code, x.fault_string);
                    }
                    return match x.fault_code {
                        0 => ExitCode::SUCCESS,
                        code => ExitCode::from(verdict_of(code).exit_code()),
                    };
                }
                else => return ExitCode::from(EXIT_COULD_NOT_CHECK),
            }
        }
    })
}

pub(super) fn run_transfers(a: TransfersArgs) -> ExitCode {
    let Ok(rt) = runtime() else { return ExitCode::from(EXIT_COULD_NOT_CHECK) };
    rt.block_on(async move {
        let p = match proxy().await {
            Ok(p) => p,
            Err(e) => return dbus_failure("transfers", e, a.json),
        };
        if let Some(k) = &a.ack {
            return match p.acknowledge_transfer(k).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("henb-update transfers: no pending result for CommandKey '{k}'");
                    ExitCode::from(EXIT_REJECTED)
                }
                Err(e) => dbus_failure("transfers", e, a.json),
            };
        }
        match p.pending_transfers().await {
            Ok(list) => {
                for (k, f, s, start, end) in list {
                    if a.json {
                        println!("{}", json!({"command-key": k, "fault-code": f, "fault-string": s, "start-time": start, "complete-time": end}));
                    } else {
                        println!("{k}\t{f}\t{start}\t{end}\t{s}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => dbus_failure("transfers", e, a.json),
        }
    })
}

pub(super) fn run_watch(_: WatchArgs) -> ExitCode {
    let Ok(rt) = runtime() else { return ExitCode::from(EXIT_COULD_NOT_CHECK) };
    rt.block_on(async move {
        let p = match proxy().await {
            Ok(p) => p,
            Err(e) => return dbus_failure("watch", e, false),
        };
        let (mut progress, mut done, mut transfer) = match (
            p.receive_progress_signal().await,
            p.receive_download_completed().await,
            p.receive_transfer_complete().await,
        ) {
            (Ok(x), Ok(y), Ok(z)) => (x, y, z),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return dbus_failure("watch", e, false),
        };
        loop {
            let line = tokio::select! {
                Some(s) = progress.next() => s.args().ok().map(|x| json!({"progress": {"percent": x.percent, "message": x.message, "depth": x.depth}})),
                Some(s) = done.next() => s.args().ok().map(|x| json!({"completed": {"job": x.job, "command-key": x.command_key, "cwmp-fault": x.fault_code, "fault-string": x.fault_string, "reboot-required": x.reboot_required}})),
                Some(s) = transfer.next() => s.args().ok().map(|x| json!({"transfer-complete": {"command-key": x.command_key, "fault-code": x.fault_code, "fault-string": x.fault_string, "start-time": x.start_time, "complete-time": x.complete_time}})),
                else => return ExitCode::SUCCESS,
            };
            if let Some(l) = line {
                println!("{l}"); // one JSON object per line either way
            }
        }
    })
}

/// The verdict of a fault code the service reported (an unknown code: could not check).
fn verdict_of(code: u32) -> crate::fault::Verdict {
    crate::fault::CwmpFault::from_code(code).map_or(crate::fault::Verdict::CouldNotCheck, |f| f.verdict())
}
