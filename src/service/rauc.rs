//! `de.pengutronix.rauc.Installer` at `/` (bus name `de.pengutronix.rauc`), switched on by
//! `[service] rauc-compatible=true`: RAUC's D-Bus API, backed by the same pipeline, so that
//! tools written for RAUC (its own `rauc status`, `rauc install`) drive this agent.
//! Types and argument names are RAUC 1.8's; its client checks them strictly.

use super::caller;
use super::engine::{Request, Snapshot};
use super::henb::{ask, Error};
use super::view::SlotView;
use crate::fault::{CwmpFault, Failure};
use crate::install::Input;
use std::collections::HashMap;
use tokio::sync::{mpsc, watch};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, OwnedVariant, Str};

/// Bus name.
pub const NAME: &str = "de.pengutronix.rauc";
/// Object path.
pub const PATH: &str = "/";

/// The interface object.
pub struct Installer {
    pub(super) requests: mpsc::Sender<Request>,
    pub(super) snapshot: watch::Receiver<Snapshot>,
}

fn v(s: impl Into<String>) -> OwnedVariant {
    OwnedVariant::from(Str::from(s.into()))
}

fn invalid(m: String) -> Error {
    Failure::new("invalid", CwmpFault::InvalidArguments, m).into()
}

/// RAUC's `install` arguments: `ignore-compatible` may only be false here (the compatible
/// check is part of the signed policy); anything else is refused, as RAUC refuses
/// arguments it does not know.
fn check_args(args: &HashMap<String, OwnedVariant>, streaming: bool) -> Result<(), Error> {
    for (k, val) in args {
        match k.as_str() {
            "tls-ca" | "tls-cert" | "tls-key" | "http-headers" | "tls-no-verify" if streaming => {}
            "ignore-compatible" => {
                if bool::try_from(val).map_err(|_| invalid("ignore-compatible: not a boolean".into()))? {
                    return Err(invalid("ignore-compatible=true is not allowed on this device".into()));
                }
            }
            "transaction-id" => {}
            s @ ("tls-ca" | "tls-cert" | "tls-key" | "http-headers" | "tls-no-verify") => {
                return Err(invalid(format!("'{s}' is for bundles given as an http(s) URL")))
            }
            other => return Err(invalid(format!("unsupported install argument '{other}'"))),
        }
    }
    Ok(())
}

/// The bundle `source` names: an absolute path opened with the caller's rights, or an
/// http(s) URL with RAUC's streaming arguments (`tls-ca`, `tls-cert`, `tls-key`: files
/// read with the caller's rights; `http-headers`; `tls-no-verify`, refused unless
/// `[download] allow-tls-no-verify`).
fn bundle_input(who: &caller::Caller, source: &str, args: &HashMap<String, OwnedVariant>) -> Result<Input, Error> {
    let streaming = crate::download::is_url(source);
    check_args(args, streaming)?;
    if !streaming {
        return Ok(Input::File(caller::open_path(who, source)?));
    }
    let remote =
        super::remote::remote(who, source, args, super::remote::Face::Rauc, &["ignore-compatible", "transaction-id"])?;
    Ok(Input::Remote(Box::new(remote)))
}

/// A slot as RAUC's GetSlotStatus shows it.
fn slot_status(s: &SlotView) -> (String, HashMap<String, OwnedVariant>) {
    let mut m = HashMap::new();
    m.insert("class".into(), v(s.class.clone()));
    m.insert("device".into(), v(s.device.clone()));
    m.insert("type".into(), v(s.kind.clone()));
    let state = if s.booted && s.parent.is_none() {
        "booted"
    } else if s.booted {
        "active"
    } else {
        "inactive"
    };
    m.insert("state".into(), v(state));
    if let Some(b) = &s.bootname {
        m.insert("bootname".into(), v(b.clone()));
    }
    if let Some(p) = &s.parent {
        m.insert("parent".into(), v(p.clone()));
    }
    if let Some(b) = &s.boot_status {
        m.insert("boot-status".into(), v(b.clone()));
    }
    m.insert("status".into(), v(if s.status == "Active" || s.status == "Available" { "ok" } else { "failed" }));
    if let Some(x) = &s.version {
        m.insert("bundle.version".into(), v(x.clone()));
    }
    if let Some(x) = &s.sha256 {
        m.insert("sha256".into(), v(x.clone()));
    }
    if let Some(t) = s.installed_at {
        m.insert("installed.timestamp".into(), v(format!("{t}")));
    }
    (s.name.clone(), m)
}

#[interface(name = "de.pengutronix.rauc.Installer")]
impl Installer {
    /// Deprecated in RAUC: InstallBundle without arguments.
    async fn install(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        source: String,
    ) -> Result<(), Error> {
        self.install_bundle(header, conn, source, HashMap::new()).await
    }

    /// Install the bundle at `source` (an absolute path, opened with the caller's rights)
    /// and boot it next; returns at once, the outcome is the Completed signal and LastError.
    async fn install_bundle(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        source: String,
        args: HashMap<String, OwnedVariant>,
    ) -> Result<(), Error> {
        let who = caller::identify(conn, &header).await?;
        let input = bundle_input(&who, &source, &args)?;
        ask(&self.requests, |reply| Request::Install { input, command_key: None, activate: true, reply }).await?;
        Ok(())
    }

    /// Deprecated in RAUC: verify a bundle, return its compatible and version.
    #[zbus(out_args("compatible", "version"))]
    async fn info(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        bundle: String,
    ) -> Result<(String, String), Error> {
        let who = caller::identify(conn, &header).await?;
        let input = bundle_input(&who, &bundle, &HashMap::new())?;
        let p = ask(&self.requests, |reply| Request::Inspect { input, reply }).await?;
        Ok((p.compatible, p.version.unwrap_or_default()))
    }

    /// Verify a bundle completely and describe it.
    #[zbus(out_args("info"))]
    async fn inspect_bundle(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        source: String,
        args: HashMap<String, OwnedVariant>,
    ) -> Result<HashMap<String, OwnedVariant>, Error> {
        let who = caller::identify(conn, &header).await?;
        let input = bundle_input(&who, &source, &args)?;
        let p = ask(&self.requests, |reply| Request::Inspect { input, reply }).await?;
        let mut m = HashMap::new();
        m.insert("compatible".into(), v(p.compatible.clone()));
        m.insert("version".into(), v(p.version.clone().unwrap_or_default()));
        m.insert("description".into(), v(p.description.clone().unwrap_or_default()));
        m.insert("build".into(), v(p.build.clone().unwrap_or_default()));
        m.insert("format".into(), v(format!("{:?}", p.format).to_lowercase()));
        Ok(m)
    }

    /// Mark a slot good, bad or active.
    #[zbus(out_args("slot_name", "message"))]
    async fn mark(&self, state: String, slot_identifier: String) -> Result<(String, String), Error> {
        let m = ask(&self.requests, |reply| Request::Mark { state, slot: slot_identifier, reply }).await?;
        Ok((m.slot, m.message))
    }

    /// Every slot with its state.
    #[zbus(out_args("slot_status_array"))]
    async fn get_slot_status(&self) -> Result<Vec<(String, HashMap<String, OwnedVariant>)>, Error> {
        let slots = ask(&self.requests, |reply| Request::Slots { reply }).await?;
        Ok(slots.iter().map(slot_status).collect())
    }

    /// The slot the bootloader boots next.
    #[zbus(out_args("primary"))]
    async fn get_primary(&self) -> Result<String, Error> {
        let slots = ask(&self.requests, |reply| Request::Slots { reply }).await?;
        slots
            .into_iter()
            .find(|s| s.primary)
            .map(|s| s.name)
            .ok_or_else(|| Error::from(Failure::new("bootloader", CwmpFault::InternalError, "no primary slot")))
    }

    /// "idle" or "installing".
    #[zbus(property)]
    async fn operation(&self) -> String {
        self.snapshot.borrow().operation.to_string()
    }

    /// The last error.
    #[zbus(property)]
    async fn last_error(&self) -> String {
        self.snapshot.borrow().last_error.clone()
    }

    /// Percent, message, nesting depth.
    #[zbus(property)]
    async fn progress(&self) -> (i32, String, i32) {
        self.snapshot.borrow().progress.clone()
    }

    /// The compatible string.
    #[zbus(property)]
    async fn compatible(&self) -> String {
        self.snapshot.borrow().compatible.clone()
    }

    /// The device's variant (`[system] variant-*`), "" without one.
    #[zbus(property)]
    async fn variant(&self) -> String {
        self.snapshot.borrow().variant.clone()
    }

    /// The booted slot's bootname.
    #[zbus(property)]
    async fn boot_slot(&self) -> String {
        self.snapshot.borrow().boot_slot.clone()
    }

    /// An install ended: 0 success, 1 failure.
    #[zbus(signal)]
    pub(super) async fn completed(emitter: &SignalEmitter<'_>, result: i32) -> zbus::Result<()>;
}
