//! Keeping a package's bytes from changing under the installer: a read lease (Linux
//! F_SETLEASE) on the descriptor it verified. Taking it fails while anyone has the file
//! open for writing; afterwards, an open for writing or a truncate breaks it, which the
//! installer checks before switching slots: "refused, or installed from the original
//! bytes, never a mix". (Replacing or unlinking the path does not matter: the
//! descriptor keeps the original inode.)

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Once;

fn ignore_sigio() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A lease break is signalled with SIGIO, whose default action ends the process.
        // The installer polls the lease instead of handling the signal.
        // SAFETY: SIG_IGN installs no handler code; no other part of the agent uses SIGIO.
        unsafe {
            let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGIO, nix::sys::signal::SigHandler::SigIgn);
        }
    });
}

/// Take a read lease on `file` (opened read-only).
pub fn take(file: &File) -> io::Result<()> {
    ignore_sigio();
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    let r = unsafe { nix::libc::fcntl(file.as_raw_fd(), nix::libc::F_SETLEASE, nix::libc::F_RDLCK) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True while the lease is intact: nobody opened the file for writing since [`take`].
pub fn held(file: &File) -> io::Result<bool> {
    // SAFETY: as above; F_GETLEASE takes no argument.
    let r = unsafe { nix::libc::fcntl(file.as_raw_fd(), nix::libc::F_GETLEASE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r == nix::libc::F_RDLCK)
}

/// Give the lease back (also happens when the descriptor is closed).
pub fn release(file: &File) {
    // SAFETY: as above.
    unsafe { nix::libc::fcntl(file.as_raw_fd(), nix::libc::F_SETLEASE, nix::libc::F_UNLCK) };
}
