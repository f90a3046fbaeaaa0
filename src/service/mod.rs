//! `henb-update service`: the D-Bus service the device's CWMP client drives
//! (`org.henb.Update1`, see [`henb`]) and, with `[service] rauc-compatible=true`, RAUC's
//! API (see [`rauc`]), on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` points tests at a
//! private one).
//!
//! One [`engine::Engine`] task owns the state and runs one install at a time; the
//! interfaces translate; one emitter task turns the engine's events into signals and
//! property changes, in order. At start the service settles what happened while it was
//! not running: an install that was interrupted (reported once as failed) and a pending
//! install the bootloader gave up on (ActivationFailed).

pub mod caller;
pub mod engine;
pub mod henb;
pub mod rauc;
mod remote;
pub mod view;

use crate::config::Config;
use engine::{Engine, Event, Snapshot};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use zbus::object_server::InterfaceRef;

/// Where to connect.
pub enum Bus {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else the standard socket).
    System,
    /// An explicit address (`unix:path=...`).
    Address(String),
}

/// Run the service until SIGTERM or SIGINT.
pub fn run(conf: Config, override_boot: Option<String>, bus: Bus) -> ExitCode {
    // The data directory holds what the agent trusts about past installs: refuse to start
    // on one another user could write into.
    if let Err(e) = crate::fsutil::private_dir(&conf.data_directory) {
        tracing::error!("data directory: {e}");
        return ExitCode::from(crate::fault::EXIT_COULD_NOT_CHECK);
    }
    // Two workers, and at most three blocking threads (one install, one inspection, one
    // short request),
    // kept alive: a long-running service must not churn threads (each costs an allocator
    // arena and a stack).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(3)
        .thread_keep_alive(std::time::Duration::from_secs(3600))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("starting the runtime: {e}");
            return ExitCode::from(crate::fault::EXIT_COULD_NOT_CHECK);
        }
    };
    match rt.block_on(serve(Arc::new(conf), override_boot, bus)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(crate::fault::EXIT_COULD_NOT_CHECK)
        }
    }
}

/// Settle what happened while no agent ran: an interrupted install, a fallback.
fn settle(conf: &Config, override_boot: Option<&str>) {
    let dir = &conf.data_directory;
    if let Err(e) = crate::fsutil::private_dir(dir) {
        tracing::error!("data directory: {e}");
        return;
    }
    // Only if no install runs right now (a CLI install holds the lock).
    if let Ok(lock) = crate::fsutil::open_lock(&dir.join("install.lock")) {
        if let Ok(_held) = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            match crate::status::Status::update(&conf.status_file(), |s| s.settle_interrupted(now)) {
                Ok(true) => {
                    tracing::warn!("an install was interrupted while the agent was not running: reported as failed")
                }
                Ok(false) => {}
                Err(e) => tracing::error!("{e}"),
            }
        }
    }
    if let Err(f) = crate::device::settle(conf, override_boot) {
        tracing::error!("settling the last install's outcome: {} ({})", f.message, f.kind);
    }
}

async fn serve(conf: Arc<Config>, override_boot: Option<String>, bus: Bus) -> anyhow::Result<()> {
    use anyhow::Context as _;
    {
        let (c, o) = (conf.clone(), override_boot.clone());
        tokio::task::spawn_blocking(move || settle(&c, o.as_deref())).await?;
    }
    let (engine, events, initial) = Engine::new(conf.clone(), override_boot);
    let (snap_tx, snap_rx) = watch::channel(initial);
    let (req_tx, req_rx) = mpsc::channel(16);
    let builder = match &bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
    };
    let mut builder = builder
        .name(henb::NAME)
        .serve_at(henb::PATH, henb::Update1 { requests: req_tx.clone(), snapshot: snap_rx.clone() });
    if conf.rauc_compatible {
        builder = builder
            .name(rauc::NAME)
            .serve_at(rauc::PATH, rauc::Installer { requests: req_tx.clone(), snapshot: snap_rx.clone() });
    }
    let conn = builder.build().await.context("connecting to the system bus and taking the bus name")?;
    drop(req_tx);
    tracing::info!(
        "serving {}{} (booted slot {})",
        henb::NAME,
        if conf.rauc_compatible { " and de.pengutronix.rauc" } else { "" },
        snap_rx.borrow().boot_slot
    );
    let emitter = tokio::spawn(emit(conn.clone(), conf.rauc_compatible, events, snap_tx));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = engine.run(req_rx) => {}
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
    emitter.abort();
    Ok(())
}

/// Apply each event to the snapshot the properties read, then signal it.
async fn emit(
    conn: zbus::Connection,
    rauc_on: bool,
    mut events: mpsc::UnboundedReceiver<Event>,
    snapshot: watch::Sender<Snapshot>,
) {
    let henb: InterfaceRef<henb::Update1> = match conn.object_server().interface(henb::PATH).await {
        Ok(i) => i,
        Err(e) => return tracing::error!("emitter: {e}"),
    };
    let rauc: Option<InterfaceRef<rauc::Installer>> =
        if rauc_on { conn.object_server().interface(rauc::PATH).await.ok() } else { None };
    while let Some(e) = events.recv().await {
        let r = emit_one(&henb, rauc.as_ref(), &snapshot, e).await;
        if let Err(e) = r {
            tracing::warn!("emitting a D-Bus signal: {e}");
        }
    }
}

async fn emit_one(
    henb: &InterfaceRef<henb::Update1>,
    rauc: Option<&InterfaceRef<rauc::Installer>>,
    snapshot: &watch::Sender<Snapshot>,
    e: Event,
) -> zbus::Result<()> {
    let h = henb.signal_emitter();
    match e {
        Event::Operation(op) => {
            snapshot.send_modify(|s| {
                s.operation = op;
                if op == "installing" {
                    s.progress = (0, "Installing".into(), 1);
                }
            });
            henb.get().await.operation_changed(h).await?;
            if let Some(r) = rauc {
                r.get().await.operation_changed(r.signal_emitter()).await?;
            }
        }
        Event::Progress(p) => {
            snapshot.send_modify(|s| s.progress = (p.percent as i32, p.message.clone(), p.depth as i32));
            henb::Update1::progress_signal(h, p.percent as i32, &p.message, p.depth as i32).await?;
            henb.get().await.progress_changed(h).await?;
            if let Some(r) = rauc {
                r.get().await.progress_changed(r.signal_emitter()).await?;
            }
        }
        Event::LastError(m) => {
            snapshot.send_modify(|s| s.last_error = m);
            henb.get().await.last_error_changed(h).await?;
            if let Some(r) = rauc {
                r.get().await.last_error_changed(r.signal_emitter()).await?;
            }
        }
        Event::Finished { job, command_key, fault, message, reboot_required } => {
            henb::Update1::download_completed(
                h,
                &job,
                command_key.as_deref().unwrap_or_default(),
                fault,
                &message,
                reboot_required,
            )
            .await?;
            if let Some(r) = rauc {
                rauc::Installer::completed(r.signal_emitter(), if fault == 0 { 0 } else { 1 }).await?;
            }
        }
        Event::Transfer(t) => {
            let (k, f, s, a, b) = henb::transfer_args(t);
            henb::Update1::transfer_complete(h, &k, f, &s, a, b).await?;
        }
    }
    Ok(())
}
