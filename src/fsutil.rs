//! Durable file updates: a crash leaves either the old or the new file, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Rename `from` over `to`, then fsync the directory so the rename survives a power cut.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    crate::failpoint::hit("fsutil.after-rename");
    let dir = to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// Write `data` to `path` atomically: temp file in the same directory, fsync, rename,
/// fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    let (_, tmp_path) = tmp.keep().map_err(|e| e.error)?;
    crate::failpoint::hit("fsutil.before-rename");
    rename_durably(&tmp_path, path)
}
