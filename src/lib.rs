//! henb-update: the software-update agent of a Home eNodeB.
//!
//! It decides whether a downloaded firmware package may be installed (a TR-069 signed
//! package or a RAUC-compatible bundle, signed by an operator-trusted entity per 3GPP
//! TS 33.320) and installs it into the inactive A/B slot. See `docs/architecture.md`.
//!
//! Pure parsing and verification (`package`, `verify`) take bytes, anchors and the time;
//! I/O lives at the edges (`source`, `cli`).
#![deny(missing_docs)]

pub mod blockindex;
pub mod bootloader;
pub mod cli;
pub mod config;
pub mod device;
pub mod digest;
pub mod download;
pub mod failpoint;
pub mod fault;
pub mod fsutil;
pub mod hook;
pub mod install;
pub mod lease;
pub mod measured_boot;
pub mod package;
pub mod process;
pub mod rollback;
pub mod service;
pub mod sign;
pub mod slot;
pub mod source;
pub mod status;
pub mod tpm;
pub mod trust;
pub mod verify;
