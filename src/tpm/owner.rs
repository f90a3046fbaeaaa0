//! The one task that owns the TPM. Callers send closures; they run one at a time on the
//! owner thread, which holds the connection while calls come and closes it when idle.

use super::{Tpm, TpmConfig, TpmError};
use std::sync::mpsc;
use std::thread;

/// How long an unused connection stays open.
const IDLE: std::time::Duration = std::time::Duration::from_millis(1500);

type Job = Box<dyn FnOnce(&mut Result<Tpm, TpmError>) + Send>;

/// A handle to the TPM owner thread. Cloneable; the thread ends when the last handle goes.
#[derive(Clone)]
pub struct TpmOwner {
    tx: mpsc::Sender<Job>,
}

impl TpmOwner {
    /// Start the owner thread. Connecting happens there; a failure to connect is
    /// reported by each call (so "TPM unreachable" is an answer, not a crash).
    pub fn spawn(conf: TpmConfig) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("tpm-owner".into())
            .spawn(move || {
                // The connection is kept while calls keep coming and closed after a short
                // idle time: the TPM (swtpm serves one client at a time) is free for other
                // programs between bursts, and a TPM that went away is reconnected.
                let mut tpm: Option<Result<Tpm, TpmError>> = None;
                loop {
                    match rx.recv_timeout(IDLE) {
                        Ok(job) => {
                            if !matches!(tpm, Some(Ok(_))) {
                                tpm = Some(Tpm::open(conf.clone()));
                            }
                            if let Some(t) = tpm.as_mut() {
                                job(t);
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => tpm = None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .expect("spawning the TPM owner thread");
        Self { tx }
    }

    /// The process's owner for `conf`: one thread per TPM configuration, reused (a
    /// long-running service does not start a thread per request).
    pub fn shared(conf: TpmConfig) -> Self {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};
        type ByConfig = HashMap<TpmConfig, TpmOwner>;
        static OWNERS: OnceLock<Mutex<ByConfig>> = OnceLock::new();
        let mut owners = OWNERS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        owners.entry(conf.clone()).or_insert_with(|| Self::spawn(conf)).clone()
    }

    /// Run `f` on the owner thread and wait for its result.
    pub fn call<T, E>(&self, f: impl FnOnce(&mut Tpm) -> Result<T, E> + Send + 'static) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<TpmError> + Send + 'static,
    {
        let gone = |why: &str| E::from(TpmError::Unreachable { tcti: String::new(), why: why.into() });
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |tpm| {
            let r = match tpm {
                Ok(t) => {
                    let r = f(t);
                    t.end_session(); // before the caller can go on (and exit)
                    r
                }
                Err(e) => Err(E::from(TpmError::Unreachable { tcti: String::new(), why: e.to_string() })),
            };
            let _ = rtx.send(r);
        });
        self.tx.send(job).map_err(|_| gone("TPM owner thread is gone"))?;
        rrx.recv().map_err(|_| gone("TPM owner thread stopped"))?
    }
}
