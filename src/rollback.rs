//! Anti-rollback: the lowest security version the device accepts, kept in a TPM
//! NT_COUNTER so that it can only go up (not even the owner can lower it).
//!
//! A counter's first value is not 0 on every TPM (it starts from the highest count any
//! counter on that TPM ever had), so provisioning records the starting value in a
//! second, locked index: minimum = counter - base.

use crate::tpm::{NvKind, Tpm, TpmError};

/// Default counter index.
pub const DEFAULT_COUNTER_INDEX: u32 = 0x0101_0200;

/// Where the counter lives; the base is at `counter + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// NT_COUNTER index.
    pub index: u32,
}

impl Default for Counter {
    fn default() -> Self {
        Self { index: DEFAULT_COUNTER_INDEX }
    }
}

impl Counter {
    /// The device's counter, when it enforces anti-rollback: trust comes from the TPM
    /// (a configured keyring stands in for development and turns it off).
    pub fn from_config(conf: &crate::config::Config) -> Option<Self> {
        conf.keyring.is_none().then(|| Self { index: conf.tpm.counter_index.unwrap_or(DEFAULT_COUNTER_INDEX) })
    }

    fn base_index(&self) -> u32 {
        self.index + 1
    }

    /// Define the counter and its locked base (idempotent).
    pub fn provision(&self, tpm: &mut Tpm) -> Result<(), TpmError> {
        if tpm.nv_info(self.index)?.is_none() {
            tpm.nv_define(self.index, 8, NvKind::Counter, "anti-rollback counter")?;
        }
        if !tpm.nv_info(self.index)?.is_some_and(|i| i.written) {
            tpm.nv_increment(self.index)?; // a counter reads only once written
        }
        match tpm.nv_info(self.base_index())? {
            Some(i) if i.written => {}
            state => {
                if state.is_none() {
                    tpm.nv_define(self.base_index(), 8, NvKind::Data, "anti-rollback base")?;
                }
                let base = tpm.nv_read_counter(self.index)?;
                tpm.nv_write(self.base_index(), &base.to_be_bytes())?;
                tpm.nv_write_lock(self.base_index())?;
            }
        }
        Ok(())
    }

    /// The lowest accepted security version.
    pub fn minimum(&self, tpm: &mut Tpm) -> Result<u64, TpmError> {
        let value = tpm.nv_read_counter(self.index)?;
        let base = tpm.nv_read(self.base_index())?;
        let base = u64::from_be_bytes(base.try_into().map_err(|_| TpmError::NotDefined(self.base_index()))?);
        Ok(value.saturating_sub(base))
    }

    /// Raise the minimum to `target` (never lowers it). Call only for a slot confirmed
    /// good. Returns the minimum afterwards.
    pub fn raise(&self, tpm: &mut Tpm, target: u64) -> Result<u64, TpmError> {
        let mut now = self.minimum(tpm)?;
        while now < target {
            tpm.nv_increment(self.index)?;
            now = self.minimum(tpm)?;
        }
        Ok(now)
    }
}
