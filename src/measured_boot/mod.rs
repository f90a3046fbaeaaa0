//! Measured boot (R5): the reference values a package carries become the TPM policy that
//! sealed device secrets answer to. This step has the policy arithmetic; committing
//! values before the switch and `boot-check` come next.

pub mod policy;
pub mod reference;
