//! CWMP fault codes: the one vocabulary every error in the agent maps onto.
//!
//! The CWMP client reports a download's outcome to the ACS as a TransferComplete fault
//! code (TR-069, cwmp-1-2.xsd). Each module's error enum implements [`Fault`] so that the
//! client, the CLI's `--json` output and the logs all say the same thing.

use serde::Serialize;

/// A CWMP fault code for downloads (TR-069 Table "Fault codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u32")]
pub enum CwmpFault {
    /// 9003: the request's arguments are invalid (an unsupported FileType).
    InvalidArguments,
    /// 9010: the download failed after it was installed: the new firmware did not come
    /// up and the device fell back (TR-181 ActivationFailed).
    TransferFailure,
    /// 9001: the request is refused by policy (busy, downgrade, wrong device).
    RequestDenied,
    /// 9002: the agent could not do its job (I/O on a slot, TPM unreachable).
    InternalError,
    /// 9016: the file could not be read at all.
    UnableToAccessFile,
    /// 9017: the file ends early.
    UnableToCompleteDownload,
    /// 9018: the file is malformed or its content does not match its own digests.
    FileCorrupted,
    /// 9019: no valid operator-trusted signature covers the file.
    FileAuthenticationFailure,
}

impl CwmpFault {
    /// The numeric code sent in TransferComplete.
    pub fn code(self) -> u32 {
        match self {
            Self::RequestDenied => 9001,
            Self::InvalidArguments => 9003,
            Self::TransferFailure => 9010,
            Self::InternalError => 9002,
            Self::UnableToAccessFile => 9016,
            Self::UnableToCompleteDownload => 9017,
            Self::FileCorrupted => 9018,
            Self::FileAuthenticationFailure => 9019,
        }
    }
}

impl From<CwmpFault> for u32 {
    fn from(f: CwmpFault) -> u32 {
        f.code()
    }
}

/// Implemented by every error that can end a download: a stable kind name for machines
/// and the CWMP fault code for the ACS.
pub trait Fault: std::error::Error {
    /// Stable, kebab-case name of the failure (used in JSON and D-Bus error names).
    fn kind(&self) -> &'static str;
    /// The CWMP fault code the client must report.
    fn fault(&self) -> CwmpFault;
}
