//! A FUSE file system whose files change between reads, for tests.
#![allow(dead_code)]

use super::Work;
use std::path::PathBuf;
use std::process::Command;

/// A FUSE mount of tests/tools/switchfs.py, unmounted on drop.
pub struct SwitchFs {
    pub dir: PathBuf,
    child: std::process::Child,
}

impl SwitchFs {
    /// Serve `name` as `first` for one full read, then as `then`. `None` when this
    /// machine cannot mount FUSE (no /dev/fuse).
    pub fn mount(w: &Work, files: &[(&str, &std::path::Path, &std::path::Path)]) -> Option<Self> {
        if !std::path::Path::new("/dev/fuse").exists() {
            return None;
        }
        let dir = w.path("switchfs");
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Command::new("/usr/bin/python3");
        c.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/switchfs.py")).arg(&dir);
        for (name, first, then) in files {
            c.arg(format!("{name}={},{}", first.display(), then.display()));
        }
        let child = c.stderr(std::process::Stdio::piped()).spawn().expect("python3 (python3-fusepy)");
        let mut fs = SwitchFs { dir, child };
        let t0 = std::time::Instant::now();
        while !fs.dir.join(files[0].0).exists() {
            if let Some(s) = fs.child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(fs.child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("switchfs.py exited ({s}): {err}");
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the FUSE mount did not come up");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(fs)
    }
}

impl Drop for SwitchFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
