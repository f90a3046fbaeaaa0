//! Trust anchors: the operator root certificates signatures must chain to.
//!
//! On a device they come from the TPM (R3: roots in the Trusted Environment), see
//! [`store`]; a PEM keyring is used only where the configuration names one explicitly
//! (RAUC's `[keyring] path=`: build hosts, development) or `info --keyring` asks for it.
//!
//! The anchors themselves (the type path validation uses) are [`crate::verify::anchors`]:
//! this room decides where they come from and how a new root is admitted ([`endorse`]).

pub mod endorse;
pub mod store;

pub use crate::verify::anchors::{crls_from_bytes, pem_blocks, Anchors, TrustError, TrustSource};
