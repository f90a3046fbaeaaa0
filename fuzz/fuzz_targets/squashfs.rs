//! The squashfs reader (backhand behind our superblock guard): in plain bundles it sees
//! bytes before their hash is known to match, so it must survive anything.
#![no_main]
use henb_update::package::squashfs::Squashfs;
use libfuzzer_sys::fuzz_target;
use std::io::{Cursor, Read};

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(fs) = Squashfs::open(Box::new(Cursor::new(data.to_vec())), len) {
        if let Ok(m) = fs.read_file("manifest.raucm", 64 * 1024) {
            let _ = henb_update::package::manifest::Manifest::parse(&m);
        }
        if let Ok(mut r) = fs.reader("rootfs.img") {
            let mut buf = [0u8; 4096];
            let mut total = 0usize;
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 || total > 1 << 24 {
                    break;
                }
                total += n;
            }
        }
    }
});
