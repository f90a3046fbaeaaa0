//! The one task that owns the TPM. Callers send closures; they run one at a time on the
//! owner thread, which holds the only connection.

use super::{Tpm, TpmConfig, TpmError};
use std::sync::mpsc;
use std::thread;

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
                let mut tpm = Tpm::open(conf.clone());
                for job in rx {
                    if tpm.is_err() {
                        tpm = Tpm::open(conf.clone()); // the TPM may have come back
                    }
                    job(&mut tpm);
                }
            })
            .expect("spawning the TPM owner thread");
        Self { tx }
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
                Ok(t) => f(t),
                Err(e) => Err(E::from(TpmError::Unreachable { tcti: String::new(), why: e.to_string() })),
            };
            let _ = rtx.send(r);
        });
        self.tx.send(job).map_err(|_| gone("TPM owner thread is gone"))?;
        rrx.recv().map_err(|_| gone("TPM owner thread stopped"))?
    }
}
