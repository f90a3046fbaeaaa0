//! The RAUC bundle reader: trailer, CMS parsing and signer checks on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::verify_bytes(data);
});
