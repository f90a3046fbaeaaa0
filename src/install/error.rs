//! Why an install did not happen, and the install lock.

use super::admit;
use crate::bootloader::BootError;
use crate::fault::{CwmpFault, Fault};
use crate::measured_boot::MeasuredBootError;
use crate::package::PackageError;
use crate::slot::SlotError;
use crate::status::StatusError;
use std::fs::File;
use thiserror::Error;

/// Why an install did not happen.
#[derive(Debug, Error)]
pub enum InstallError {
    /// Another install is running.
    #[error("another install is running")]
    Busy,
    /// The lock or the lease could not be had.
    #[error("package file: {0}")]
    Access(String),
    /// The package file was opened for writing during the install.
    #[error("the package file was opened for writing while it was being installed: refused")]
    Modified,
    /// The package was refused or could not be read.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The package is authentic but this device refuses it.
    #[error(transparent)]
    Refused(#[from] admit::Refusal),
    /// No slot to install to.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// The bootloader environment failed.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The status file failed.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The measured-boot policy could not be prepared or committed.
    #[error("measured boot: {0}")]
    MeasuredBoot(#[from] MeasuredBootError),
    /// The device's variant (`[system] variant-*`) could not be read.
    #[error("device variant: {0}")]
    Variant(String),
    /// The package could not be fetched from its file server.
    #[error(transparent)]
    Transfer(#[from] crate::download::TransferError),
    /// A bundle hook refused the bundle or failed.
    #[error(transparent)]
    Hook(#[from] crate::hook::HookError),
}

impl Fault for InstallError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Access(_) => "access",
            Self::Modified => "package-modified",
            Self::Package(e) => e.kind(),
            Self::Refused(e) => e.kind(),
            Self::Slot(e) => e.kind(),
            Self::Boot(e) => e.kind(),
            Self::Status(e) => e.kind(),
            Self::MeasuredBoot(e) => e.kind(),
            Self::Variant(_) => "variant",
            Self::Transfer(e) => e.kind(),
            Self::Hook(e) => e.kind(),
        }
    }
    fn fault(&self) -> CwmpFault {
        match self {
            Self::Busy => CwmpFault::RequestDenied,
            Self::Access(_) | Self::Modified => CwmpFault::UnableToAccessFile,
            Self::Package(e) => e.fault(),
            Self::Refused(e) => e.fault(),
            Self::Slot(e) => e.fault(),
            Self::Boot(e) => e.fault(),
            Self::Status(e) => e.fault(),
            Self::Variant(_) => CwmpFault::InternalError,
            Self::MeasuredBoot(e) => e.fault(),
            Self::Transfer(e) => e.fault(),
            Self::Hook(e) => e.fault(),
        }
    }
}

/// The one writer of slots and the boot order: `<dir>/install.lock`, held by an install
/// and by `mark` (a second one gets [`InstallError::Busy`] at once). Released on drop.
pub fn lock(dir: &std::path::Path) -> Result<nix::fcntl::Flock<File>, InstallError> {
    crate::fsutil::private_dir(dir).map_err(|e| InstallError::Access(format!("data directory: {e}")))?;
    let lock_path = dir.join("install.lock");
    let lock = crate::fsutil::open_lock(&lock_path)
        .map_err(|e| InstallError::Access(format!("{}: {e}", lock_path.display())))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| InstallError::Busy)
}
