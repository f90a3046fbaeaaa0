//! CWMP fault codes: the one vocabulary every error in the agent maps onto, and the one
//! place the edges derive their answers from.
//!
//! The CWMP client reports a download's outcome to the ACS as a TransferComplete fault
//! code (TR-069, cwmp-1-2.xsd). Each module's error enum implements [`Fault`]; at the
//! edges a [`Failure`] carries it, and its [`Verdict`] (rejected, or could not check)
//! gives the command line's exit code and its fault the D-Bus error name
//! ([`CwmpFault::dbus_name`]), so the client, the CLI's `--json` output, the D-Bus
//! errors and the logs all say the same thing.

use serde::Serialize;

/// A CWMP fault code for downloads (TR-069 Table "Fault codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u32")]
pub enum CwmpFault {
    /// 9003: the request's arguments are invalid (an unsupported FileType).
    InvalidArguments,
    /// 9010: the download failed: a transfer failure no other code names, or, after the
    /// install, the new firmware did not come up and the device fell back (TR-181
    /// ActivationFailed).
    TransferFailure,
    /// 9012: the file server refused the credentials or the client certificate.
    ServerAuthenticationFailure,
    /// 9013: the URL's scheme is not one the agent fetches (http, https).
    UnsupportedProtocol,
    /// 9015: the file server cannot be reached (DNS, connection, TLS handshake, its
    /// certificate not trusted).
    UnableToContactFileServer,
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
            Self::ServerAuthenticationFailure => 9012,
            Self::UnsupportedProtocol => 9013,
            Self::UnableToContactFileServer => 9015,
            Self::InternalError => 9002,
            Self::UnableToAccessFile => 9016,
            Self::UnableToCompleteDownload => 9017,
            Self::FileCorrupted => 9018,
            Self::FileAuthenticationFailure => 9019,
        }
    }
}

impl CwmpFault {
    /// Every fault, for tables and tests.
    pub const ALL: [CwmpFault; 11] = [
        Self::RequestDenied,
        Self::InternalError,
        Self::InvalidArguments,
        Self::TransferFailure,
        Self::ServerAuthenticationFailure,
        Self::UnsupportedProtocol,
        Self::UnableToContactFileServer,
        Self::UnableToAccessFile,
        Self::UnableToCompleteDownload,
        Self::FileCorrupted,
        Self::FileAuthenticationFailure,
    ];

    /// The fault with this code, if it is one of ours.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }

    /// The D-Bus error name's last part (`org.henb.Update1.Error.<name>`): the fault's
    /// name in TR-069's table.
    pub fn dbus_name(self) -> &'static str {
        match self {
            Self::RequestDenied => "RequestDenied",
            Self::InternalError => "InternalError",
            Self::InvalidArguments => "InvalidArguments",
            Self::TransferFailure => "TransferFailure",
            Self::ServerAuthenticationFailure => "FileTransferServerAuthenticationFailure",
            Self::UnsupportedProtocol => "UnsupportedProtocolForFileTransfer",
            Self::UnableToContactFileServer => "UnableToContactFileServer",
            Self::UnableToAccessFile => "UnableToAccessFile",
            Self::UnableToCompleteDownload => "UnableToCompleteDownload",
            Self::FileCorrupted => "FileCorrupted",
            Self::FileAuthenticationFailure => "FileAuthenticationFailure",
        }
    }

    /// The fault a D-Bus error name (`org.henb.Update1.Error.<name>`, or the last part
    /// alone) stands for.
    pub fn from_dbus_name(name: &str) -> Option<Self> {
        let last = name.strip_prefix("org.henb.Update1.Error.").unwrap_or(name);
        Self::ALL.into_iter().find(|f| f.dbus_name() == last)
    }

    /// Rejected, unless the agent could not do its job (9002), not read the file (9016)
    /// or not reach the file server (9015).
    pub fn verdict(self) -> Verdict {
        match self {
            Self::InternalError | Self::UnableToAccessFile | Self::UnableToContactFileServer => Verdict::CouldNotCheck,
            _ => Verdict::Rejected,
        }
    }
}

impl std::fmt::Display for CwmpFault {
    /// The numeric code.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// How a request that did not succeed ended (rule R8: a package is installed only when
/// every check passed; a check that could not be made is never a pass).
///
/// One exception to "the fault decides": a command whose own input is unusable (a file it
/// cannot read, an argument it cannot parse) could not check, whatever fault names the
/// input (`check-chain --time yesterday` is 9003, exit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The package or the request was checked and refused.
    Rejected,
    /// The agent could not check (TPM, storage, an unreadable file): try again later.
    CouldNotCheck,
}

/// The command line's exit code for a rejection.
pub const EXIT_REJECTED: u8 = 1;
/// The command line's exit code when the agent could not check.
pub const EXIT_COULD_NOT_CHECK: u8 = 3;

impl Verdict {
    /// The command line's exit code: 1 rejected, 3 could not check (0 is success).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Rejected => EXIT_REJECTED,
            Self::CouldNotCheck => EXIT_COULD_NOT_CHECK,
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
    /// Rejected or could not check: the fault's, unless an error says otherwise.
    fn verdict(&self) -> Verdict {
        self.fault().verdict()
    }
}

/// Why a request failed, as the edges (command line, D-Bus) report it: a stable kind,
/// the CWMP fault, a message and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable, kebab-case kind.
    pub kind: String,
    /// The CWMP fault.
    pub fault: CwmpFault,
    /// What failed, for people.
    pub message: String,
    /// Rejected or could not check.
    pub verdict: Verdict,
}

impl Failure {
    /// A failure of `kind` with `fault`'s verdict.
    pub fn new(kind: &str, fault: CwmpFault, message: impl Into<String>) -> Self {
        Self { kind: kind.into(), fault, message: message.into(), verdict: fault.verdict() }
    }

    /// From any module's error.
    pub fn from_fault(e: &dyn Fault) -> Self {
        Self { kind: e.kind().into(), fault: e.fault(), message: e.to_string(), verdict: e.verdict() }
    }

    /// Refused (the package or request), as opposed to could not check.
    pub fn refused(&self) -> bool {
        self.verdict == Verdict::Rejected
    }
}

impl std::fmt::Display for Failure {
    /// `9019 untrusted: <message>`, as D-Bus errors and the service's log say it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.fault, self.kind, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one table the edges follow: code, D-Bus name, verdict, exit code.
    #[test]
    fn every_fault_has_one_code_one_name_and_one_verdict() {
        let table = [
            (9001, "RequestDenied", Verdict::Rejected, 1),
            (9002, "InternalError", Verdict::CouldNotCheck, 3),
            (9003, "InvalidArguments", Verdict::Rejected, 1),
            (9010, "TransferFailure", Verdict::Rejected, 1),
            (9012, "FileTransferServerAuthenticationFailure", Verdict::Rejected, 1),
            (9013, "UnsupportedProtocolForFileTransfer", Verdict::Rejected, 1),
            (9015, "UnableToContactFileServer", Verdict::CouldNotCheck, 3),
            (9016, "UnableToAccessFile", Verdict::CouldNotCheck, 3),
            (9017, "UnableToCompleteDownload", Verdict::Rejected, 1),
            (9018, "FileCorrupted", Verdict::Rejected, 1),
            (9019, "FileAuthenticationFailure", Verdict::Rejected, 1),
        ];
        assert_eq!(table.len(), CwmpFault::ALL.len());
        for (code, name, verdict, exit) in table {
            let f = CwmpFault::from_code(code).unwrap();
            assert_eq!((f.code(), f.dbus_name(), f.verdict(), f.verdict().exit_code()), (code, name, verdict, exit));
            assert_eq!(f.to_string(), code.to_string());
            assert_eq!(CwmpFault::from_dbus_name(&format!("org.henb.Update1.Error.{name}")), Some(f));
            assert_eq!(CwmpFault::from_dbus_name(name), Some(f));
            assert_eq!(CwmpFault::from_dbus_name(&format!("org.example.Error.{name}")), None);
            let failure = Failure::new("k", f, "m");
            assert_eq!(failure.refused(), verdict == Verdict::Rejected);
            assert_eq!(failure.to_string(), format!("{code} k: m"));
        }
        assert_eq!(CwmpFault::from_code(9000), None);
    }
}
