//! Differential: the same bytes to backhand (through the product's reader and its limits,
//! src/package/squashfs.rs) and to libsquashfs (squashfs-ng), both walking the whole tree
//! and reading every file (tests/common/oracle.rs).
//!
//! A crash: both read the tree and see different inodes, owners, permissions, targets or
//! bytes. One reader refusing what the other reads is kept for triage in
//! `squashfs-diff/<direction>/` (one input per distinct error: the error text, a newline,
//! the input), or a crash with `SQUASHFS_DIFF_STRICT=1`. Mutated images are mostly
//! corrupt in a table only one reader looks at, so these need a reading, not a count;
//! docs/testing.md has the triage of the recorded run. The product's own checks (the
//! superblock guard; a tree with fewer names than inodes) are not kept.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::sync::OnceLock;

#[path = "../../tests/common/oracle.rs"]
#[allow(dead_code)]
mod oracle;

fuzz_target!(|data: &[u8]| {
    // squashfs-ng unwraps inside `Read` when libsquashfs cannot load a table; the oracle
    // catches that as a refusal, so libfuzzer's abort-on-panic hook must let it pass.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("/squashfs-ng-")) {
                abort(info)
            }
        }));
    });
    // libsquashfs opens archives by path only: one scratch file in tmpfs per process.
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| std::env::temp_dir().join(format!("squashfs-diff-{}", std::process::id())));
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    drop(f);
    let ours = oracle::read_backhand(path);
    if matches!(&ours, Err(e) if e.starts_with("squashfs superblock:")) {
        return; // refused by the product's limits before backhand parses anything
    }
    let theirs = oracle::read_libsquashfs(path);
    if matches!(&ours, Err(e) if e.starts_with("squashfs directory tree:")) {
        return; // a listing backhand cut short: refused on purpose, whatever libsquashfs says
    }
    match (ours, theirs) {
        (Ok(a), Ok(b)) => {
            let d = oracle::differences(&a, &b);
            assert!(d.is_empty(), "the readers disagree:\n{}", d.join("\n"));
        }
        (Err(e), Ok(b)) => {
            differ("backhand-refuses", &format!("libsquashfs reads {} inodes, backhand: {e}", b.len()), data)
        }
        (Ok(a), Err(e)) => {
            differ("libsquashfs-refuses", &format!("backhand reads {} inodes, libsquashfs: {e}", a.len()), data)
        }
        (Err(_), Err(_)) => {}
    }
});

fn differ(direction: &str, error: &str, data: &[u8]) {
    use std::hash::{Hash, Hasher};
    if std::env::var_os("SQUASHFS_DIFF_STRICT").is_some() {
        panic!("{error}");
    }
    // Inode counts and offsets vary with the input: one file per kind of message.
    let kind: String = error.chars().filter(|c| !c.is_ascii_digit()).collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut h);
    let dir = std::path::Path::new("squashfs-diff").join(direction);
    let file = dir.join(format!("{:016x}", h.finish()));
    if !file.exists() {
        let _ = std::fs::create_dir_all(&dir);
        let mut kept = format!("{error}\n").into_bytes();
        kept.extend_from_slice(data);
        let _ = std::fs::write(file, kept);
    }
}
