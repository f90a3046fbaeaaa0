//! Anti-rollback: the lowest security version the device accepts, kept in a TPM
//! NT_COUNTER so that it can only go up (not even the owner can lower it).
//!
//! A counter's first value is not 0 on every TPM (it starts from the highest count any
//! counter on that TPM ever had), so provisioning records the starting value in a
//! second, locked index: minimum = counter - base.

use crate::fault::{CwmpFault, Fault};
use crate::tpm::{NvKind, Tpm, TpmError};
use thiserror::Error;

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

/// A package refused by anti-rollback (pure check).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("security version {package} is below the device's minimum {minimum}: downgrade refused")]
pub struct Downgrade {
    /// The package's security version (0 when it has none).
    pub package: u64,
    /// The device's minimum.
    pub minimum: u64,
}

impl Fault for Downgrade {
    fn kind(&self) -> &'static str {
        "downgrade"
    }
    fn fault(&self) -> CwmpFault {
        CwmpFault::RequestDenied
    }
}

/// A slot that holds less than the device's minimum: never made primary, confirmed or
/// approved in the measured-boot policy (pure check).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("slot {slot} holds security version {held}, below the device's anti-rollback minimum {minimum}")]
pub struct BelowMinimum {
    /// Slot name.
    pub slot: String,
    /// Its security version (0 when unknown).
    pub held: u64,
    /// The device's minimum.
    pub minimum: u64,
}

impl Fault for BelowMinimum {
    fn kind(&self) -> &'static str {
        "below-minimum"
    }
    fn fault(&self) -> CwmpFault {
        CwmpFault::RequestDenied
    }
}

/// Refuse a slot whose security version (none counts as 0) is below `minimum`.
pub fn check_slot(slot: &str, held: Option<u32>, minimum: u64) -> Result<(), BelowMinimum> {
    let held = u64::from(held.unwrap_or(0));
    if held < minimum {
        return Err(BelowMinimum { slot: slot.into(), held, minimum });
    }
    Ok(())
}

/// Refuse a package whose security version (none counts as 0) is below `minimum`.
pub fn check(package: Option<u32>, minimum: u64) -> Result<(), Downgrade> {
    let package = package.unwrap_or(0) as u64;
    if package < minimum {
        return Err(Downgrade { package, minimum });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_below_the_minimum_are_refused() {
        assert!(check(Some(3), 3).is_ok());
        assert!(check(Some(4), 3).is_ok());
        assert_eq!(check(Some(2), 3), Err(Downgrade { package: 2, minimum: 3 }));
        assert_eq!(check(None, 1), Err(Downgrade { package: 0, minimum: 1 }));
        assert!(check(None, 0).is_ok());
        assert!(check_slot("rootfs.1", Some(5), 5).is_ok());
        assert_eq!(check_slot("rootfs.1", None, 5), Err(BelowMinimum { slot: "rootfs.1".into(), held: 0, minimum: 5 }));
    }
}
