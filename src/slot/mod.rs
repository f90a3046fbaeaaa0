//! Which slot is booted and which group an update goes to. Pure: the kernel command
//! line and a path resolver come in from the edge.
//!
//! As RAUC: the booted slot is named by `rauc.slot=<bootname>` on the command line, or
//! found by matching `root=` against the slots' devices; `--override-boot-slot` decides
//! instead (tests, bring-up). Slots with a `parent` form a group with it; the target is the
//! other bootable group of the booted slot's class.

pub mod gpt;
pub mod index;
pub mod mount;
pub mod region;
pub mod writer;

use crate::config::SlotConf;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Slot selection failures.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SlotError {
    /// No slot matches what the system booted from.
    #[error("cannot tell which slot is booted: {0}")]
    NoBooted(String),
    /// There is no other slot to install to.
    #[error("no inactive slot group of class '{0}' to install to")]
    NoTarget(String),
    /// A boot region's partition entry could not be switched.
    #[error("boot region: {0}")]
    Region(String),
    /// `statusfile=per-slot`: the slot's status could not be written into it.
    #[error("per-slot status: {0}")]
    Status(String),
}

impl crate::fault::Fault for SlotError {
    fn kind(&self) -> &'static str {
        "slot"
    }
    /// The configuration and the running system disagree: could not check.
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::InternalError
    }
}

/// The booted slot (the root of its group), in RAUC's order (src/context.c
/// `get_bootname`): `--override-boot-slot`; `rauc.slot=` on the command line; what the
/// bootloader says (`bootloader_says`: barebox's [`barebox_active`], EFI's
/// `BootCurrent` label, found at the edge); then `root=` matched against the slots'
/// devices (`resolve` turns `PARTUUID=` and links into a device path).
///
/// Errors: [`SlotError::NoBooted`] naming what was looked at.
pub fn booted<'a>(
    slots: &'a [SlotConf],
    cmdline: &str,
    override_boot: Option<&str>,
    bootloader_says: Option<&str>,
    resolve: &dyn Fn(&Path) -> Option<PathBuf>,
) -> Result<&'a SlotConf, SlotError> {
    let by_bootname = |b: &str| slots.iter().find(|s| s.bootname.as_deref() == Some(b));
    let slot = if let Some(b) = override_boot {
        by_bootname(b)
            .ok_or_else(|| SlotError::NoBooted(format!("--override-boot-slot={b} names no slot's bootname")))?
    } else if let Some(b) = cmdline.split_whitespace().find_map(|t| t.strip_prefix("rauc.slot=")) {
        by_bootname(b).ok_or_else(|| SlotError::NoBooted(format!("rauc.slot={b} names no slot's bootname")))?
    } else if let Some(b) = bootloader_says {
        by_bootname(b).ok_or_else(|| SlotError::NoBooted(format!("the bootloader booted '{b}', no slot's bootname")))?
    } else if let Some(root) = cmdline.split_whitespace().find_map(|t| t.strip_prefix("root=")) {
        let wanted = resolve(Path::new(root));
        slots
            .iter()
            .find(|s| s.device == Path::new(root) || (wanted.is_some() && resolve(&s.device) == wanted))
            .ok_or_else(|| SlotError::NoBooted(format!("root={root} is no slot's device")))?
    } else {
        return Err(SlotError::NoBooted("neither rauc.slot= nor root= on the kernel command line".into()));
    };
    Ok(match &slot.parent {
        Some(p) => slots.iter().find(|s| &s.name == p).unwrap_or(slot),
        None => slot,
    })
}

/// The slot barebox booted: `bootstate.active=` or `bootchooser.active=` on the kernel
/// command line (barebox's bootchooser appends it; RAUC src/bootloaders/barebox.c).
pub fn barebox_active(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .find_map(|t| t.strip_prefix("bootstate.active=").or_else(|| t.strip_prefix("bootchooser.active=")))
}

/// The group to install to: the first other bootable root slot of the booted class,
/// then its children; then, as RAUC's target group, the first root slot of each class
/// without bootable slots (a bootloader region, a slot updated in place), with its
/// children. The first entry is the slot that boots next.
pub fn target<'a>(slots: &'a [SlotConf], booted: &SlotConf) -> Result<Vec<&'a SlotConf>, SlotError> {
    let root = slots
        .iter()
        .find(|s| s.class == booted.class && s.name != booted.name && s.parent.is_none() && s.bootname.is_some())
        .ok_or_else(|| SlotError::NoTarget(booted.class.clone()))?;
    let mut roots = vec![root];
    for s in slots.iter().filter(|s| s.parent.is_none() && s.class != booted.class) {
        let bootable = slots.iter().any(|x| x.class == s.class && x.bootname.is_some());
        if !bootable && !roots.iter().any(|r| r.class == s.class) {
            roots.push(s);
        }
    }
    let mut group = Vec::new();
    for r in roots {
        group.push(r);
        group.extend(slots.iter().filter(|s| s.parent.as_deref() == Some(&r.name)));
    }
    Ok(group)
}

/// Where a slot's device is in use, if it is (read from the running system): mounted
/// (`/proc/self/mountinfo`, by device number; a file-backed slot through the loop
/// devices backed by it; a UBI volume by its `ubiX:name` or device), or an MTD attached to
/// UBI or mounted (through its mtdblock, or JFFS2 from the MTD itself). `None` when it is
/// not, or cannot be told.
pub fn in_use(slot: &SlotConf) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // (major:minor, mount point, source) of every mount.
    let mounts: Vec<(&str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some((*f.get(2)?, *f.get(4)?, *f.get(dash + 2)?))
        })
        .collect();
    let mounted_dev = |dev: &str| mounts.iter().find(|m| m.0 == dev).map(|m| format!("mounted at {}", m.1));
    let meta = std::fs::metadata(&slot.device).ok()?;
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    if meta.file_type().is_block_device() {
        return mounted_dev(&format!("{major}:{minor}"));
    }
    if meta.is_file() {
        let canonical = std::fs::canonicalize(&slot.device).ok()?;
        for e in std::fs::read_dir("/sys/block").ok()?.flatten() {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
            if Path::new(backing.trim()) == canonical {
                let dev = std::fs::read_to_string(e.path().join("dev")).unwrap_or_default();
                if let Some(m) = mounted_dev(dev.trim()) {
                    return Some(format!("{m} through /dev/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        return None;
    }
    let name = char_name(&slot.device)?;
    if let Some(n) = name.strip_prefix("mtd").and_then(|n| n.parse::<u64>().ok()) {
        for e in std::fs::read_dir("/sys/class/ubi").into_iter().flatten().flatten() {
            let mtd = std::fs::read_to_string(e.path().join("mtd_num")).unwrap_or_default();
            if mtd.trim().parse::<u64>().ok() == Some(n) {
                return Some(format!("attached to UBI as {}", e.file_name().to_string_lossy()));
            }
        }
        // mtdblock<n>, or JFFS2 mounted from the MTD itself.
        return mounted_dev(&format!("31:{n}"))
            .or_else(|| mounts.iter().find(|m| m.2 == format!("mtd{n}")).map(|m| format!("mounted at {}", m.1)));
    }
    if name.starts_with("ubi") && name.contains('_') {
        let vol = std::fs::read_to_string(Path::new("/sys/class/ubi").join(&name).join("name")).unwrap_or_default();
        let ubi = name.split('_').next().unwrap_or_default();
        let sources = [format!("{ubi}:{}", vol.trim()), name.clone(), format!("/dev/{name}")];
        return mounts.iter().find(|m| sources.iter().any(|s| s == m.2)).map(|m| format!("mounted at {}", m.1));
    }
    None
}

/// The kernel's name of the character device at `dev` (`mtd2`, `ubi0_1`), whatever
/// the path is called (`/dev/mtd/by-name/rootfs1`): `/sys/dev/char/<major>:<minor>`'s
/// name, else the name of the path with every link resolved. `None` when it is neither.
pub fn char_name(dev: &Path) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(dev).ok()?;
    if meta.file_type().is_char_device() {
        let (major, minor) = (nix::sys::stat::major(meta.rdev()), nix::sys::stat::minor(meta.rdev()));
        if let Ok(p) = std::fs::canonicalize(format!("/sys/dev/char/{major}:{minor}")) {
            return Some(p.file_name()?.to_string_lossy().into_owned());
        }
    }
    Some(std::fs::canonicalize(dev).ok()?.file_name()?.to_string_lossy().into_owned())
}

/// Bootnames of the bootable slots of `class`, in config order (the boot order RAUC builds).
pub fn bootnames(slots: &[SlotConf], class: &str) -> Vec<String> {
    slots.iter().filter(|s| s.class == class && s.parent.is_none()).filter_map(|s| s.bootname.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_device_is_named_by_its_number_not_by_its_link() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("by-name-console");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        assert_eq!(char_name(&link).as_deref(), Some("null"));
        assert_eq!(char_name(Path::new("/dev/null")).as_deref(), Some("null"));
        assert_eq!(char_name(&d.path().join("absent")), None);
    }
    use crate::config::{Config, SlotType};

    fn conf() -> Vec<SlotConf> {
        let text = "[system]\ncompatible=t\n\n[slot.rootfs.0]\ndevice=/dev/vda2\ntype=ext4\nbootname=A\n\n[slot.rootfs.1]\ndevice=/dev/vda3\ntype=ext4\nbootname=B\n\n\
                    [slot.appfs.0]\ndevice=/dev/vda5\nparent=rootfs.0\n\n[slot.appfs.1]\ndevice=/dev/vda6\nparent=rootfs.1\n";
        Config::parse(text, Path::new("t.conf")).unwrap().slots
    }

    #[test]
    fn booted_from_the_command_line() {
        let s = conf();
        let none = |_: &Path| None;
        assert_eq!(booted(&s, "quiet rauc.slot=B", None, None, &none).unwrap().name, "rootfs.1");
        assert_eq!(booted(&s, "root=/dev/vda2 ro", None, None, &none).unwrap().name, "rootfs.0");
        assert_eq!(booted(&s, "rauc.slot=B", Some("A"), None, &none).unwrap().name, "rootfs.0");
        assert!(booted(&s, "rauc.slot=C", None, None, &none).is_err());
        assert!(booted(&s, "quiet", None, None, &none).is_err());
        // What the bootloader says comes after rauc.slot=, before root=.
        assert_eq!(booted(&s, "root=/dev/vda2", None, Some("B"), &none).unwrap().name, "rootfs.1");
        assert_eq!(booted(&s, "rauc.slot=A", None, Some("B"), &none).unwrap().name, "rootfs.0");
        assert!(booted(&s, "root=/dev/vda2", None, Some("C"), &none).unwrap_err().to_string().contains("'C'"));
        let cmdline = "console=ttyS0 bootchooser.active=B root=ubi0:rootfs";
        assert_eq!(barebox_active(cmdline), Some("B"));
        assert_eq!(barebox_active("bootstate.active=A quiet"), Some("A"));
        assert_eq!(barebox_active("quiet"), None);
        // root=PARTUUID=... resolved by the edge to the same device.
        let resolve = |p: &Path| {
            Some(PathBuf::from(if p.to_str() == Some("PARTUUID=x") { "/dev/vda3" } else { p.to_str().unwrap() }))
        };
        assert_eq!(booted(&s, "root=PARTUUID=x", None, None, &resolve).unwrap().name, "rootfs.1");
        assert_eq!(s[0].kind, SlotType::Ext4);
    }

    #[test]
    fn target_is_the_other_group() {
        let s = conf();
        let t = target(&s, &s[0]).unwrap();
        assert_eq!(t.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["rootfs.1", "appfs.1"]);
        let t = target(&s, &s[1]).unwrap();
        assert_eq!(t[0].name, "rootfs.0");
        // A class without bootable slots (a bootloader region) is in every target group.
        let mut with_boot = s.clone();
        let text = "[system]\ncompatible=t\n[slot.bootloader.0]\ndevice=/dev/vda\ntype=boot-raw-fallback\nregion-start=1M\nregion-size=2M\n";
        with_boot.extend(Config::parse(text, Path::new("t.conf")).unwrap().slots);
        let t = target(&with_boot, &with_boot[1]).unwrap();
        assert_eq!(t.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["rootfs.0", "appfs.0", "bootloader.0"]);
        assert_eq!(bootnames(&s, "rootfs"), ["A", "B"]);
        assert!(target(&s[..1], &s[0]).is_err());
    }

    #[test]
    fn config_errors_name_what_is_wrong() {
        let e = |t: &str| Config::parse(t, Path::new("x.conf")).unwrap_err().to_string();
        assert!(e("[system]\ncompatible=x\nbootloader=lilo\n").contains("x.conf:3"));
        assert!(e("[system]\ncompatible=x\n[slot.rootfs.0]\ntype=boot-emmc\ndevice=/x\n").contains("type=boot-emmc"));
        assert!(e("[system]\ncompatible=x\n[slot.rootfs.0]\ndevice=/x\nparent=nope.0\n").contains("no such slot"));
        assert!(e(
            "[system]\ncompatible=x\n[slot.rootfs.0]\ndevice=/x\nbootname=A\n[slot.rootfs.1]\ndevice=/y\nbootname=A\n"
        )
        .contains("more than one"));
        assert!(e("[system]\ncompatible=x\nbundle-formats=-plain verity\n").contains("not both"));
        let c = Config::parse(
            "[system]\ncompatible=x\nbundle-formats=-plain\n[slot.rootfs.0]\ndevice=/x\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.bundle_formats, ["verity"]);
    }
}
