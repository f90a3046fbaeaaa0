//! Mounting a slot's file system for its hooks (RAUC mounts mountable slots around
//! `pre-install` and `post-install` hooks and passes the mount point as
//! `RAUC_SLOT_MOUNT_POINT`). A block device is mounted directly; a regular file (a
//! file-backed slot) through a loop device the kernel frees when it is unmounted
//! (`LO_FLAGS_AUTOCLEAR`). The mount is `nosuid,nodev`; it is undone on drop.
//!
//! The loop ioctls are Linux's `<linux/loop.h>` (`LOOP_CTL_GET_FREE`, `LOOP_SET_FD`,
//! `LOOP_SET_STATUS64`); the libc crate does not define them, and loopdev-3 would need
//! bindgen and libclang on every build host (the Yocto recipe included).

use crate::config::SlotConf;
use nix::mount::{MntFlags, MsFlags};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_SET_FD: u64 = 0x4C00;
const LOOP_CLR_FD: u64 = 0x4C01;
const LOOP_SET_STATUS64: u64 = 0x4C04;
const LOOP_CTL_GET_FREE: u64 = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// A slot's file system, mounted at [`Mounted::path`] until dropped.
pub struct Mounted {
    at: PathBuf,
    /// The loop device of a file-backed slot, held open until the mount is gone.
    _loop: Option<File>,
    done: bool,
}

impl Mounted {
    /// Mount `slot` (the file system of its `type=`) at `at`, which must be an empty
    /// directory.
    ///
    /// Errors: the device cannot be opened or attached to a loop device, or the kernel
    /// refuses the mount (not a file system of that type: `EINVAL`).
    pub fn mount(slot: &SlotConf, at: &Path) -> io::Result<Self> {
        let fstype = slot.kind.filesystem().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot {} (type={}) holds no file system", slot.name, slot.kind.name()),
            )
        })?;
        let meta = std::fs::metadata(&slot.device)?;
        let (source, lp) = if meta.is_file() {
            let (path, f) = attach_loop(&slot.device)?;
            (path, Some(f))
        } else {
            (slot.device.clone(), None)
        };
        nix::mount::mount(Some(&source), at, Some(fstype), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, None::<&str>)
            .map_err(|e| {
                io::Error::other(format!("mounting slot {} ({}) at {}: {e}", slot.name, source.display(), at.display()))
            })?;
        Ok(Self { at: at.to_path_buf(), _loop: lp, done: false })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.at
    }

    /// Unmount it (retried for a few seconds while busy).
    ///
    /// Errors: still busy, or the kernel refused.
    pub fn unmount(mut self) -> io::Result<()> {
        self.done = true;
        unmount(&self.at)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = unmount(&self.at) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Unmount, retrying while it is busy (a process the hook left is still being killed)
/// for up to 5 s. Never detached: a file system still alive on the slot could write to it
/// after the installer did.
fn unmount(at: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match nix::mount::umount2(at, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) if tries < 25 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => {
                return Err(io::Error::other(format!(
                    "unmounting {}: {e} (a process of the hook still uses it?)",
                    at.display()
                )))
            }
        }
    }
}

/// A free loop device attached to `file`, freed by the kernel when it is no longer used.
fn attach_loop(file: &Path) -> io::Result<(PathBuf, File)> {
    let backing = OpenOptions::new().read(true).write(true).open(file)?;
    let ctl = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    // Another process may take the free device between the two ioctls: try again.
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { nix::libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new().read(true).write(true).open(&path)?;
        // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value.
        if unsafe { nix::libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(nix::libc::EBUSY) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: all-zero bytes are a valid loop_info64 (integers and byte arrays).
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_SET_STATUS64 reads one loop_info64 from the pointer.
        if unsafe { nix::libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &info as *const LoopInfo64) } < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: LOOP_CLR_FD takes no argument.
            unsafe { nix::libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _) };
            return Err(e);
        }
        return Ok((path, dev));
    }
    Err(io::Error::other("no free loop device"))
}
