//! `org.henb.Update1` at `/org/henb/Update1`: the interface the CWMP client drives.
//! Translation only: arguments become an engine [`Request`], the engine's answer a reply
//! or a named error carrying the CWMP fault code. `dbus/org.henb.Update1.xml` is this
//! interface's introspection (a test keeps them equal).

use super::caller;
use super::engine::{Request, Snapshot};
use super::view::SlotView;
use crate::fault::{CwmpFault, Failure};
use crate::install::Input;
use crate::status::InstallResult;
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot, watch};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, DBusError, OwnedFd, OwnedVariant, Str};

/// Bus name.
pub const NAME: &str = "org.henb.Update1";
/// Object path.
pub const PATH: &str = "/org/henb/Update1";
/// Interface version (the `InterfaceVersion` property).
pub const VERSION: u32 = 1;
/// TR-069 Download FileType: install and boot it.
pub const FIRMWARE_UPGRADE: &str = "1 Firmware Upgrade Image";
/// TR-069 Download FileType: install, do not boot it.
pub const STORED_FIRMWARE: &str = "6 Stored Firmware Image";

/// D-Bus errors: the name says which CWMP fault, the message starts with its code
/// (`9001 busy: another install is running`).
#[derive(Debug, DBusError)]
#[zbus(prefix = "org.henb.Update1.Error")]
pub enum Error {
    /// A D-Bus failure.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// 9001.
    RequestDenied(String),
    /// 9002.
    InternalError(String),
    /// 9003.
    InvalidArguments(String),
    /// 9010.
    TransferFailure(String),
    /// 9012.
    FileTransferServerAuthenticationFailure(String),
    /// 9013.
    UnsupportedProtocolForFileTransfer(String),
    /// 9015.
    UnableToContactFileServer(String),
    /// 9016.
    UnableToAccessFile(String),
    /// 9017.
    UnableToCompleteDownload(String),
    /// 9018.
    FileCorrupted(String),
    /// 9019.
    FileAuthenticationFailure(String),
}

impl From<Failure> for Error {
    /// The error named after the fault ([`CwmpFault::dbus_name`]), its message
    /// `<code> <kind>: <message>`.
    fn from(f: Failure) -> Self {
        let m = f.to_string();
        match f.fault {
            CwmpFault::RequestDenied => Self::RequestDenied(m),
            CwmpFault::InternalError => Self::InternalError(m),
            CwmpFault::InvalidArguments => Self::InvalidArguments(m),
            CwmpFault::TransferFailure => Self::TransferFailure(m),
            CwmpFault::ServerAuthenticationFailure => Self::FileTransferServerAuthenticationFailure(m),
            CwmpFault::UnsupportedProtocol => Self::UnsupportedProtocolForFileTransfer(m),
            CwmpFault::UnableToContactFileServer => Self::UnableToContactFileServer(m),
            CwmpFault::UnableToAccessFile => Self::UnableToAccessFile(m),
            CwmpFault::UnableToCompleteDownload => Self::UnableToCompleteDownload(m),
            CwmpFault::FileCorrupted => Self::FileCorrupted(m),
            CwmpFault::FileAuthenticationFailure => Self::FileAuthenticationFailure(m),
        }
    }
}

fn failure(kind: &str, fault: CwmpFault, message: impl Into<String>) -> Error {
    Failure::new(kind, fault, message).into()
}

/// Ask the engine and wait for its answer.
pub(super) async fn ask<T>(
    requests: &mpsc::Sender<Request>,
    f: impl FnOnce(oneshot::Sender<Result<T, Failure>>) -> Request,
) -> Result<T, Error> {
    let (tx, rx) = oneshot::channel();
    requests.send(f(tx)).await.map_err(|_| failure("internal", CwmpFault::InternalError, "the service is stopping"))?;
    rx.await.map_err(|_| failure("internal", CwmpFault::InternalError, "the service is stopping"))?.map_err(Error::from)
}

fn activate_for(file_type: &str) -> Result<bool, Error> {
    match file_type {
        FIRMWARE_UPGRADE => Ok(true),
        STORED_FIRMWARE => Ok(false),
        other => Err(failure(
            "file-type",
            CwmpFault::InvalidArguments,
            format!("FileType '{other}' is not supported ('{FIRMWARE_UPGRADE}' or '{STORED_FIRMWARE}')"),
        )),
    }
}

fn no_options(options: &HashMap<String, OwnedVariant>) -> Result<(), Error> {
    match options.keys().next() {
        Some(k) => Err(failure("invalid", CwmpFault::InvalidArguments, format!("unknown option '{k}'"))),
        None => Ok(()),
    }
}

fn command_key(k: String) -> Result<String, Error> {
    if k.len() > 32 {
        return Err(failure("invalid", CwmpFault::InvalidArguments, "a CommandKey is at most 32 characters (TR-069)"));
    }
    Ok(k)
}

fn v(s: impl Into<String>) -> OwnedVariant {
    OwnedVariant::from(Str::from(s.into()))
}

/// A slot as a TR-181 `Device.DeviceInfo.FirmwareImage.{i}`.
fn firmware_image(s: &SlotView) -> HashMap<String, OwnedVariant> {
    let mut m = HashMap::new();
    m.insert("Alias".into(), v(s.name.clone()));
    m.insert("Name".into(), v(s.bootname.clone().unwrap_or_default()));
    m.insert("Version".into(), v(s.version.clone().unwrap_or_default()));
    m.insert("Available".into(), OwnedVariant::from(matches!(s.status.as_str(), "Available" | "Active")));
    m.insert("Status".into(), v(s.status.clone()));
    m.insert("BootFailureLog".into(), v(s.failure.clone().unwrap_or_default()));
    m.insert("Active".into(), OwnedVariant::from(s.booted));
    m.insert("BootImage".into(), OwnedVariant::from(s.primary));
    m.insert("Device".into(), v(s.device.clone()));
    m.insert("SHA256".into(), v(s.sha256.clone().unwrap_or_default()));
    m
}

/// The interface object.
pub struct Update1 {
    pub(super) requests: mpsc::Sender<Request>,
    pub(super) snapshot: watch::Receiver<Snapshot>,
}

impl Update1 {
    async fn start(&self, input: Input, file_type: &str, key: String) -> Result<(u32, String), Error> {
        let activate = activate_for(file_type)?;
        let key = command_key(key)?;
        let job =
            ask(&self.requests, |reply| Request::Install { input, command_key: Some(key), activate, reply }).await?;
        // TR-069 DownloadResponse Status 1: the outcome follows in TransferComplete.
        Ok((1, job))
    }
}

/// Software updates of this device, driven by its TR-069 (CWMP) client.
#[interface(name = "org.henb.Update1")]
impl Update1 {
    /// Install the package behind `fd`, opened read-only by the client on a regular file
    /// (O_PATH, write-only and read-write descriptors are refused, UnableToAccessFile
    /// 9016; the agent reads the file through a description of its own, never by path).
    /// `file_type` is the TR-069 FileType: "1 Firmware Upgrade Image" installs and
    /// boots it next, "6 Stored Firmware Image" only installs it; anything else is refused
    /// (InvalidArguments, 9003). `options` must be empty. Returns the DownloadResponse
    /// Status (1: the result follows) and a job id; the result comes as DownloadCompleted
    /// and, in CWMP terms, TransferComplete. A second Download while one runs is refused
    /// (RequestDenied, 9001).
    #[zbus(out_args("status", "job"))]
    async fn download(
        &self,
        fd: OwnedFd,
        file_type: String,
        command_key: String,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(u32, String), Error> {
        no_options(&options)?;
        let file = crate::source::open_package(crate::source::PackageOrigin::Passed(fd.into()))
            .map_err(|e| Error::from(Failure::from_fault(&e)))?;
        self.start(Input::File(file), &file_type, command_key).await
    }

    /// Download from a file server: the agent fetches `url` (http or https) itself and
    /// installs it as it arrives, with nothing stored on the way (verity bundles and TR-069
    /// packages; a plain bundle is refused, as it cannot be checked before use). A dropped
    /// connection resumes where it stopped. `options` (TR-069 Download arguments and
    /// transport): `username`, `password` (s; HTTP Basic or Digest), `tls-ca`, `tls-cert`,
    /// `tls-key` (s: PEM files, read with the caller's rights), `http-headers` (as:
    /// `Name: value`), `file-size` (t: the largest size the file may have, bytes),
    /// `timeout` (u: seconds without a byte before a retry). Faults besides Download's:
    /// 9012 the server refused the credentials or certificate, 9013 not http(s), 9015
    /// server unreachable or untrusted, 9016 not found, 9017 incomplete after retries,
    /// 9010 other transfer failures. StartTime and CompleteTime span the transfer.
    #[zbus(out_args("status", "job"))]
    async fn download_url(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        url: String,
        file_type: String,
        command_key: String,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(u32, String), Error> {
        let who = caller::identify(conn, &header).await?;
        let remote = super::remote::remote(&who, &url, &options, super::remote::Face::Henb, &[])?;
        self.start(Input::Remote(Box::new(remote)), &file_type, command_key).await
    }

    /// Download for clients that cannot pass a descriptor: `path` is absolute, opened once
    /// read-only by the agent with the caller's rights (uid and groups from the bus), so
    /// the caller can only install what it could read itself. Otherwise as Download.
    #[zbus(out_args("status", "job"))]
    async fn download_path(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        path: String,
        file_type: String,
        command_key: String,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(u32, String), Error> {
        no_options(&options)?;
        let who = caller::identify(conn, &header).await?;
        let file = caller::open_path(&who, &path)?;
        self.start(Input::File(file), &file_type, command_key).await
    }

    /// Results not yet acknowledged, oldest first, as TransferComplete arguments:
    /// (CommandKey, FaultCode, FaultString, StartTime, CompleteTime). Kept across reboots;
    /// a client that starts late sends TransferComplete for each, then AcknowledgeTransfer.
    #[zbus(out_args("transfers"))]
    async fn pending_transfers(&self) -> Result<Vec<(String, u32, String, u64, u64)>, Error> {
        let t = ask(&self.requests, |reply| Request::Transfers { reply }).await?;
        Ok(t.into_iter().map(transfer_args).collect())
    }

    /// The ACS has received TransferComplete for `command_key`: forget the oldest result
    /// with that key. Returns whether there was one.
    #[zbus(out_args("found"))]
    async fn acknowledge_transfer(&self, command_key: String) -> Result<bool, Error> {
        ask(&self.requests, |reply| Request::Acknowledge { command_key, reply }).await
    }

    /// The firmware banks in TR-181 Device.DeviceInfo.FirmwareImage terms, one dict per
    /// slot: Alias, Name, Version, Available, Status, BootFailureLog, plus Active (booted),
    /// BootImage (boots next), Device, SHA256.
    #[zbus(out_args("images"))]
    async fn firmware_images(&self) -> Result<Vec<HashMap<String, OwnedVariant>>, Error> {
        let slots = ask(&self.requests, |reply| Request::Slots { reply }).await?;
        Ok(slots.iter().filter(|s| s.bootname.is_some()).map(firmware_image).collect())
    }

    /// Mark a slot ("booted", "other", a slot name or a bootname) "good" (confirm the
    /// booted slot), "bad" or "active" (boot it next). Returns the slot name and a message.
    #[zbus(out_args("slot_name", "message"))]
    async fn mark(&self, state: String, slot: String) -> Result<(String, String), Error> {
        let m = ask(&self.requests, |reply| Request::Mark { state, slot, reply }).await?;
        Ok((m.slot, m.message))
    }

    /// "idle" or "installing".
    #[zbus(property)]
    async fn operation(&self) -> String {
        self.snapshot.borrow().operation.to_string()
    }

    /// The running install's progress: percent, message, nesting depth.
    #[zbus(property)]
    async fn progress(&self) -> (i32, String, i32) {
        self.snapshot.borrow().progress.clone()
    }

    /// The last install's error, "" after a success.
    #[zbus(property)]
    async fn last_error(&self) -> String {
        self.snapshot.borrow().last_error.clone()
    }

    /// The bootname of the booted slot.
    #[zbus(property)]
    async fn boot_slot(&self) -> String {
        self.snapshot.borrow().boot_slot.clone()
    }

    /// The running software's version (Device.DeviceInfo.SoftwareVersion).
    #[zbus(property)]
    async fn software_version(&self) -> String {
        self.snapshot.borrow().software_version.clone()
    }

    /// The device's compatible string.
    #[zbus(property)]
    async fn compatible(&self) -> String {
        self.snapshot.borrow().compatible.clone()
    }

    /// This interface's version.
    #[zbus(property)]
    async fn interface_version(&self) -> u32 {
        VERSION
    }

    /// A progress step of the running install: percent, message, nesting depth.
    #[zbus(signal, name = "ProgressChanged")]
    pub(super) async fn progress_signal(
        emitter: &SignalEmitter<'_>,
        percent: i32,
        message: &str,
        depth: i32,
    ) -> zbus::Result<()>;

    /// An install ended: its job id and CommandKey, 0 or the CWMP fault code and string,
    /// and whether the new slot boots at the next reboot (then TransferComplete follows
    /// after the reboot, with the outcome of the boot).
    #[zbus(signal)]
    pub(super) async fn download_completed(
        emitter: &SignalEmitter<'_>,
        job: &str,
        command_key: &str,
        fault_code: u32,
        fault_string: &str,
        reboot_required: bool,
    ) -> zbus::Result<()>;

    /// A Download's final result, in TR-069 TransferComplete terms. Also listed by
    /// PendingTransfers until acknowledged.
    #[zbus(signal)]
    pub(super) async fn transfer_complete(
        emitter: &SignalEmitter<'_>,
        command_key: &str,
        fault_code: u32,
        fault_string: &str,
        start_time: u64,
        complete_time: u64,
    ) -> zbus::Result<()>;
}

/// TransferComplete arguments of a stored result.
pub(super) fn transfer_args(t: InstallResult) -> (String, u32, String, u64, u64) {
    (t.command_key.unwrap_or_default(), t.fault_code, t.fault_string, t.start_time, t.complete_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The D-Bus error's name is the fault's, for every fault (fault.rs holds the table).
    #[test]
    fn every_fault_has_its_dbus_error() {
        for f in CwmpFault::ALL {
            let e = Error::from(Failure::new("k", f, "m"));
            assert_eq!(e.name().as_str(), format!("org.henb.Update1.Error.{}", f.dbus_name()));
            assert_eq!(e.description(), Some(format!("{} k: m", f.code()).as_str()));
        }
    }
}
