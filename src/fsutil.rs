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
    write_atomic_with(path, &mut |w| w.write_all(data))
}

/// [`write_atomic`] for contents written piece by piece by `fill` (buffered).
pub fn write_atomic_with(path: &Path, fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut w = io::BufWriter::with_capacity(64 * 1024, tmp.as_file_mut());
        fill(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    let (_, tmp_path) = tmp.keep().map_err(|e| e.error)?;
    crate::failpoint::hit("fsutil.before-rename");
    rename_durably(&tmp_path, path)
}

/// Create the agent's private directory `dir` if missing (mode 0700), and check it: a
/// real directory (not a symlink), owned by the effective user (root on a device), not
/// writable by group or others. Otherwise a file planted there by another user (a
/// symlink named like a state or lock file) could steer the agent's writes.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let m = fs::symlink_metadata(dir)?;
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if !m.file_type().is_dir() {
        return refuse(format!("{} is not a directory (a symlink or another file)", dir.display()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if m.uid() != euid {
        return refuse(format!("{} is owned by uid {}, not by the agent's uid {euid}", dir.display(), m.uid()));
    }
    if m.mode() & 0o022 != 0 {
        return refuse(format!("{} is writable by group or others (mode {:o})", dir.display(), m.mode() & 0o7777));
    }
    Ok(())
}

/// Whether `path` is a program only root or the agent's user can change: an absolute path
/// to a regular file (after links), which and whose every directory up to `/` are owned
/// by root or the agent's user and writable by neither group nor others.
///
/// Errors: `PermissionDenied` naming what is wrong; the file cannot be read.
pub fn trusted_program(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if !path.is_absolute() {
        return refuse(format!("{}: not an absolute path", path.display()));
    }
    let real = fs::canonicalize(path)?;
    if !fs::metadata(&real)?.is_file() {
        return refuse(format!("{}: not a regular file", path.display()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    for p in real.ancestors() {
        let m = fs::metadata(p)?;
        if m.uid() != 0 && m.uid() != euid {
            return refuse(format!("{} is owned by uid {}, neither root nor the agent", p.display(), m.uid()));
        }
        if m.mode() & 0o022 != 0 && !(m.is_dir() && m.mode() & 0o1000 != 0 && p != real) {
            return refuse(format!("{} is writable by group or others (mode {:o})", p.display(), m.mode() & 0o7777));
        }
    }
    Ok(())
}

/// Open (creating it, never truncating) a lock file in a private directory: O_NOFOLLOW,
/// mode 0600, and it must be a regular file.
pub fn open_lock(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", path.display())));
    }
    Ok(f)
}

/// Read a state file without following a symlink (O_NOFOLLOW) and only if it is a
/// regular file.
pub fn read_state(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    open_state(path)?.read_to_end(&mut v)?;
    Ok(v)
}

/// Open a state file for reading without following a symlink (O_NOFOLLOW), only if it
/// is a regular file.
pub fn open_state(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", path.display())));
    }
    Ok(f)
}
