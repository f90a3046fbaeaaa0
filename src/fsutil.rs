//! Durable file updates: a crash leaves either the old or the new file, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
/// writable by group or others, and every directory above it owned by root or the agent
/// and not writable by others (see [`only_ours`]). Otherwise a file planted there by
/// another user (a symlink named like a state or lock file, or another directory in its
/// place) could steer the agent's writes or feed it a forged state.
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
    // Nor may anyone else be able to move it and put another in its place.
    only_ours(&fs::canonicalize(dir)?, false)
}

/// Whether `real` (a path with every link resolved) and every directory above it up to
/// `/` are owned by root or the agent's user and writable by neither group nor others: a
/// sticky directory above it (`/tmp`) aside, and `real` itself only when `with_self`.
/// Then nobody else can swap anything on the way.
///
/// Errors: `PermissionDenied` naming the first that is not.
fn only_ours(real: &Path, with_self: bool) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    let euid = nix::unistd::geteuid().as_raw();
    for p in real.ancestors().skip(usize::from(!with_self)) {
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

/// Whether `path` is a program only root or the agent's user can change: an absolute path
/// to a regular file (after links), which and whose every directory up to `/` are owned
/// by root or the agent's user and writable by neither group nor others.
///
/// Returns the path with every link resolved, the one checked: run that one, so that no
/// link on the way can be changed between the check and the exec.
///
/// Errors: `PermissionDenied` naming what is wrong; the file cannot be read.
pub fn trusted_program(path: &Path) -> io::Result<PathBuf> {
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if !path.is_absolute() {
        return refuse(format!("{}: not an absolute path", path.display()));
    }
    let real = fs::canonicalize(path)?;
    if !fs::metadata(&real)?.is_file() {
        return refuse(format!("{}: not a regular file", path.display()));
    }
    only_ours(&real, true)?;
    Ok(real)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_dir_under_a_directory_someone_else_can_change_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let theirs = d.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = private_dir(&theirs.join("henb")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        // A sticky, world-writable directory above (as /tmp) is no such directory.
        let sticky = d.path().join("sticky");
        fs::create_dir(&sticky).unwrap();
        fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).unwrap();
        private_dir(&sticky.join("henb")).unwrap();
        // Group-writable without the sticky bit is.
        fs::set_permissions(&sticky, fs::Permissions::from_mode(0o775)).unwrap();
        assert!(private_dir(&sticky.join("henb")).unwrap_err().to_string().contains("writable by group"));
    }

    #[test]
    fn a_trusted_program_is_run_by_the_path_checked() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("handler");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&exe, &link).unwrap();
        assert_eq!(trusted_program(&link).unwrap(), fs::canonicalize(&exe).unwrap());
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o775)).unwrap();
        assert!(trusted_program(&link).unwrap_err().to_string().contains("writable by group"));
    }
}
