//! The one task that owns the service's state: whether an install runs, which job it is.
//! The D-Bus interfaces only translate: they send a [`Request`] and read the published
//! [`Snapshot`]. The engine sends [`Event`]s, carrying their values, to the emitter task,
//! which applies them to the snapshot and turns them into signals and property changes,
//! in order.
//!
//! Installs run on a blocking thread (the pipeline is synchronous and uses both cores);
//! their progress and result come back to this task over one channel, so progress is
//! always reported before the result.

use super::view::{self, SlotView};
use crate::config::Config;
use crate::device;
use crate::fault::{CwmpFault, Failure};
use crate::install::Progress;
use crate::status::{InstallResult, Status};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the D-Bus layer may read at any time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `idle` or `installing`.
    pub operation: &'static str,
    /// (percent, message, depth), RAUC's `Progress`.
    pub progress: (i32, String, i32),
    /// The last install's error (empty after a success).
    pub last_error: String,
    /// The booted slot's bootname.
    pub boot_slot: String,
    /// The booted slot's version, if the agent installed it.
    pub software_version: String,
    /// `[system] compatible`.
    pub compatible: String,
    /// The device's variant (`[system] variant-*`), empty without one.
    pub variant: String,
}

/// What happened, for the emitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `Operation` changed.
    Operation(&'static str),
    /// A progress step.
    Progress(Progress),
    /// `LastError` changed.
    LastError(String),
    /// An install ended.
    Finished {
        /// Job id.
        job: String,
        /// Its CommandKey.
        command_key: Option<String>,
        /// 0 or the CWMP fault code.
        fault: u32,
        /// Fault string.
        message: String,
        /// Installed and activated: the outcome comes after the reboot.
        reboot_required: bool,
    },
    /// A result for TransferComplete was queued.
    Transfer(InstallResult),
}

/// What the D-Bus layer asks.
pub enum Request {
    /// Install an open package file.
    Install {
        /// The package: a file opened read-only by the D-Bus layer, or a URL.
        input: crate::install::Input,
        /// CommandKey.
        command_key: Option<String>,
        /// Switch to the new slot.
        activate: bool,
        /// The job id, or why not.
        reply: oneshot::Sender<Result<String, Failure>>,
    },
    /// Verify a package without installing (RAUC's InspectBundle/Info).
    Inspect {
        /// The package.
        input: crate::install::Input,
        /// The verified package, or why not.
        reply: oneshot::Sender<Result<crate::package::Package, Failure>>,
    },
    /// `mark good|bad|active SLOT`.
    Mark {
        /// good, bad, active.
        state: String,
        /// booted, other, a slot name or bootname.
        slot: String,
        /// (slot name, message).
        reply: oneshot::Sender<Result<device::Marked, Failure>>,
    },
    /// The unacknowledged TransferComplete results.
    Transfers {
        /// Oldest first.
        reply: oneshot::Sender<Result<Vec<InstallResult>, Failure>>,
    },
    /// The client sent TransferComplete for this CommandKey.
    Acknowledge {
        /// CommandKey.
        command_key: String,
        /// Whether there was such a result.
        reply: oneshot::Sender<Result<bool, Failure>>,
    },
    /// The slots and their status, for FirmwareImages and GetSlotStatus.
    Slots {
        /// One entry per slot.
        reply: oneshot::Sender<Result<Vec<SlotView>, Failure>>,
    },
}

enum JobMsg {
    Progress(Progress),
    Done(String, Option<String>, Box<device::InstallReport>),
}

/// The engine. Create with [`Engine::new`], run with [`Engine::run`].
pub struct Engine {
    conf: Arc<Config>,
    override_boot: Option<String>,
    events: mpsc::UnboundedSender<Event>,
    running: Option<String>,
    next_job: u64,
    inspecting: Arc<tokio::sync::Semaphore>,
}

fn busy() -> Failure {
    Failure::new("busy", CwmpFault::RequestDenied, "another install is running")
}

impl Engine {
    /// A new engine; returns it, the event stream and the initial snapshot.
    pub fn new(conf: Arc<Config>, override_boot: Option<String>) -> (Self, mpsc::UnboundedReceiver<Event>, Snapshot) {
        let booted = device::booted(&conf, override_boot.as_deref()).ok();
        let status = Status::load(&conf.status_file()).unwrap_or_default();
        let snap = Snapshot {
            operation: "idle",
            progress: (0, String::new(), 0),
            last_error: String::new(),
            boot_slot: booted.and_then(|b| b.bootname.clone()).unwrap_or_default(),
            software_version: booted
                .and_then(|b| status.slots.get(&b.name))
                .and_then(|s| s.version.clone())
                .unwrap_or_default(),
            compatible: conf.compatible.clone().unwrap_or_default(),
            variant: conf.variant().ok().flatten().unwrap_or_default(),
        };
        let (etx, erx) = mpsc::unbounded_channel();
        (
            Self {
                conf,
                override_boot,
                events: etx,
                running: None,
                next_job: 1,
                inspecting: Arc::new(tokio::sync::Semaphore::new(1)),
            },
            erx,
            snap,
        )
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Serve requests until every sender is gone.
    pub async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let (job_tx, mut job_rx) = mpsc::unbounded_channel::<JobMsg>();
        loop {
            tokio::select! {
                Some(m) = job_rx.recv() => self.job_message(m),
                r = requests.recv() => match r {
                    Some(r) => self.handle(r, &job_tx).await,
                    None => break,
                },
            }
        }
    }

    fn job_message(&mut self, m: JobMsg) {
        match m {
            JobMsg::Progress(p) => self.emit(Event::Progress(p)),
            JobMsg::Done(job, command_key, report) => {
                let device::InstallReport { result: r, transfer } = *report;
                self.running = None;
                let (fault, message, reboot_required) = match &r {
                    Ok(i) => (0, String::new(), i.activated),
                    // As the D-Bus errors: the code and kind first ("9019 bad-signature: ...").
                    Err(f) => (f.fault.code(), f.to_string(), false),
                };
                if let Err(f) = &r {
                    tracing::error!("install {job} failed: {} (CWMP fault {}, {})", f.message, f.fault, f.kind);
                } else {
                    tracing::info!(
                        "install {job} done{}",
                        if reboot_required { "; the new slot boots next" } else { "" }
                    );
                }
                // RAUC's order: LastError, Completed, then Operation idle.
                self.emit(Event::LastError(message.clone()));
                self.emit(Event::Finished { job, command_key, fault, message, reboot_required });
                self.emit(Event::Operation("idle"));
                // The result queued for TransferComplete (not for an activated install:
                // that one is decided after the reboot).
                if let Some(t) = transfer {
                    self.emit(Event::Transfer(t));
                }
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Config, Option<&str>) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure> {
        let conf = self.conf.clone();
        let ob = self.override_boot.clone();
        tokio::task::spawn_blocking(move || f(&conf, ob.as_deref()))
            .await
            .unwrap_or_else(|e| Err(Failure::new("internal", CwmpFault::InternalError, format!("worker failed: {e}"))))
    }

    async fn handle(&mut self, r: Request, job_tx: &mpsc::UnboundedSender<JobMsg>) {
        match r {
            Request::Install { input, command_key, activate, reply } => {
                if self.running.is_some() {
                    let _ = reply.send(Err(busy()));
                    return;
                }
                let job = format!("job-{}", self.next_job);
                self.next_job += 1;
                self.running = Some(job.clone());
                tracing::info!("install {job} started (CommandKey {command_key:?}, activate {activate})");
                self.emit(Event::Operation("installing"));
                let _ = reply.send(Ok(job.clone()));
                let (conf, ob, tx) = (self.conf.clone(), self.override_boot.clone(), job_tx.clone());
                tokio::task::spawn_blocking(move || {
                    let ptx = tx.clone();
                    let mut progress = |p: Progress| {
                        let _ = ptx.send(JobMsg::Progress(p));
                    };
                    let run = std::panic::AssertUnwindSafe(|| match device::booted(&conf, ob.as_deref()) {
                        Ok(b) => {
                            let order = crate::install::Order { command_key: command_key.clone(), activate };
                            let req = crate::install::Request { input, order };
                            device::install_file(&conf, b, req, &mut progress)
                        }
                        Err(e) => device::InstallReport { result: Err(e.into()), transfer: None },
                    });
                    // A bug must not leave the service busy for ever: a panic ends the job
                    // as an internal error (the slot it was writing stays marked bad).
                    let report = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                        // The job it left in the status file is settled now, as after a
                        // crash, and its result queued for TransferComplete.
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0);
                        let transfer = Status::update(&conf.status_file(), |s| {
                            s.settle_interrupted(now).then(|| s.last_result.clone()).flatten()
                        })
                        .ok()
                        .flatten()
                        .filter(|r| r.command_key.is_some());
                        device::InstallReport {
                            result: Err(Failure::new(
                                "internal",
                                CwmpFault::InternalError,
                                "the install job failed (a bug); nothing was activated",
                            )),
                            transfer,
                        }
                    });
                    let _ = tx.send(JobMsg::Done(job, command_key, Box::new(report)));
                });
            }
            Request::Inspect { input, reply } => {
                // One inspection at a time, off the engine: a large package never stalls
                // the other requests (PendingTransfers, Mark, the slots).
                let Ok(permit) = self.inspecting.clone().try_acquire_owned() else {
                    let _ = reply.send(Err(Failure::new(
                        "busy",
                        CwmpFault::RequestDenied,
                        "another inspection is running",
                    )));
                    return;
                };
                let conf = self.conf.clone();
                tokio::task::spawn_blocking(move || {
                    let r = device::inspect(&conf, input);
                    drop(permit);
                    let _ = reply.send(r);
                });
            }
            Request::Mark { reply, .. } if self.running.is_some() => {
                let _ = reply.send(Err(busy()));
            }
            Request::Mark { state, slot, reply } => {
                let report = self.blocking(move |conf, ob| Ok(device::mark(conf, ob, &state, &slot))).await;
                let (r, transfer) = match report {
                    Ok(device::MarkReport { result, transfer }) => (result, transfer),
                    Err(f) => (Err(f), None),
                };
                if let Ok(m) = &r {
                    tracing::info!("{}", m.message);
                }
                let _ = reply.send(r);
                // Confirming the booted slot completes the Download that installed it
                // (also when a later step of the mark failed).
                if let Some(t) = transfer {
                    self.emit(Event::Transfer(t));
                }
            }
            Request::Transfers { reply } => {
                let r =
                    Status::load(&self.conf.status_file()).map(|s| s.transfers).map_err(|e| Failure::from_fault(&e));
                let _ = reply.send(r);
            }
            Request::Acknowledge { command_key, reply } => {
                let r = self
                    .blocking(move |conf, _| {
                        Status::update(&conf.status_file(), |s| s.acknowledge(&command_key))
                            .map_err(|e| Failure::from_fault(&e))
                    })
                    .await;
                let _ = reply.send(r);
            }
            Request::Slots { reply } => {
                let r = self.blocking(view::slot_views).await;
                let _ = reply.send(r);
            }
        }
    }
}
