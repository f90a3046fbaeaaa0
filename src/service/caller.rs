//! Acting for a D-Bus caller with the caller's rights, never root's.
//!
//! A path from a caller is opened by a short-lived thread that takes the caller's
//! file-system identity first (uid, groups: from the bus, `GetConnectionCredentials`), so
//! the kernel decides what the caller may read; the agent's own rights never apply. A
//! descriptor from a caller must be open read-only on a regular file (possession of a
//! readable descriptor is the right to read the file): an `O_PATH`, write-only or
//! read-write descriptor is refused. The agent then reads the same file through an open
//! file description of its own, so the caller cannot touch its lease or its signals.

use super::henb::Error;
use crate::fault::{CwmpFault, Failure};
use std::fs::File;
use std::io;
use zbus::message::Header;

/// Who is calling, as the bus daemon saw their socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `UnixUserID`.
    pub uid: u32,
    /// `UnixGroupIDs` (the supplementary groups; may be empty).
    pub groups: Vec<u32>,
}

fn access(m: String) -> Error {
    Failure::new("access", CwmpFault::UnableToAccessFile, m).into()
}

/// The caller of the message with `header`, from the bus daemon.
pub async fn identify(conn: &zbus::Connection, header: &Header<'_>) -> Result<Caller, Error> {
    let internal = |m: String| -> Error { Failure::new("internal", CwmpFault::InternalError, m).into() };
    let sender = header.sender().ok_or_else(|| internal("the message has no sender".into()))?;
    let dbus = zbus::fdo::DBusProxy::new(conn).await.map_err(|e| internal(format!("the bus: {e}")))?;
    let creds = dbus
        .get_connection_credentials(sender.clone().into())
        .await
        .map_err(|e| internal(format!("the caller's credentials: {e}")))?;
    let uid = creds.unix_user_id().ok_or_else(|| internal("the bus did not say who the caller is".into()))?;
    Ok(Caller { uid, groups: creds.unix_group_ids().cloned().unwrap_or_default() })
}

/// Open `path` (absolute) read-only with `caller`'s rights, without blocking on a FIFO;
/// only a regular file or block device is accepted.
pub fn open_path(caller: &Caller, path: &str) -> Result<File, Error> {
    if !path.starts_with('/') {
        return Err(access(format!("{path}: not an absolute path")));
    }
    use crate::source::{open_package, OpenError, PackageOrigin};
    let open = || open_package(PackageOrigin::Path(std::path::Path::new(path)));
    // The agent's own uid (root, or the caller's in development) needs no switch.
    let r = if caller.uid == nix::unistd::geteuid().as_raw() {
        open()
    } else {
        as_caller(caller, || Ok(open())).unwrap_or_else(|e| Err(OpenError { what: path.into(), why: e.to_string() }))
    };
    r.map_err(|e| Failure::from_fault(&e).into())
}

/// The system call taking 32-bit gids: on 32-bit ARM and x86, `setgroups` takes 16-bit
/// ones (Linux's legacy ABI), `setgroups32` the `gid_t` array used here.
#[cfg(any(target_arch = "arm", target_arch = "x86"))]
const SETGROUPS: nix::libc::c_long = nix::libc::SYS_setgroups32;
#[cfg(not(any(target_arch = "arm", target_arch = "x86")))]
const SETGROUPS: nix::libc::c_long = nix::libc::SYS_setgroups;

/// Run `f` on a thread that has taken `caller`'s file-system uid and groups (Linux keeps
/// them per thread; the thread ends with `f`). Fails when the agent cannot take them
/// (it is not root): then nothing is opened at all.
fn as_caller<T: Send>(caller: &Caller, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    use nix::unistd::{setfsgid, setfsuid, Gid, Uid};
    let cannot = || io::Error::new(io::ErrorKind::PermissionDenied, "the agent cannot take the caller's rights");
    std::thread::scope(|s| {
        s.spawn(|| {
            let groups: Vec<nix::libc::gid_t> = caller.groups.clone();
            // SAFETY: the raw system call changes this thread's supplementary groups only
            // (glibc's setgroups() would change every thread's); `groups` outlives the call.
            let r = unsafe { nix::libc::syscall(SETGROUPS, groups.len(), groups.as_ptr()) };
            if r != 0 {
                return Err(cannot());
            }
            // fsgid: one of the caller's groups, else the overflow group (no rights).
            let gid = Gid::from_raw(groups.first().copied().unwrap_or(65534));
            setfsgid(gid);
            let uid = Uid::from_raw(caller.uid);
            setfsuid(uid);
            // set-fs-id calls return the previous value: asking again tells what holds.
            if setfsgid(gid) != gid || setfsuid(uid) != uid {
                return Err(cannot());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the opening thread panicked")))
    })
}
