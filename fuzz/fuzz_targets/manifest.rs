//! The manifest parser (GLib key-file syntax + RAUC's keys).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = henb_update::package::manifest::Manifest::parse(data) {
        let _ = m.security_version();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(kf) = henb_update::config::keyfile::KeyFile::parse(text) {
            // What we write, we must read back identically.
            let again =
                henb_update::config::keyfile::KeyFile::parse(&kf.to_text()).expect("re-parse of our own output");
            assert_eq!(again.groups.len(), kf.groups.len());
        }
    }
});
