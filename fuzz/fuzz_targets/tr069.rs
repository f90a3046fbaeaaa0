//! The TR-069 Annex E parser: header and framing, every command type, and the whole
//! verification path (signature block parsing, profile) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = henb_update::package::tr069::parse_commands(data);
    let mut pkg = henb_update::package::tr069::MAGIC.to_vec();
    pkg.extend_from_slice(data);
    let _ = henb_update::package::tr069::parse(&pkg);
    common::verify_bytes(&pkg);
});
