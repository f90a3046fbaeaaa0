//! The TR-069 Annex E parser: header and framing, every command type, and the whole
//! verification path (signature block parsing, profile) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // The command-list parser alone, then the whole package path (seeds are real signed
    // packages, so payload mutations reach the profile and the image hashing).
    let _ = henb_update::package::tr069::parse_commands(data.get(24..).unwrap_or_default());
    let _ = henb_update::package::tr069::parse(&data.to_vec());
    common::verify_bytes(data);
});
