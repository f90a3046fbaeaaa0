//! Boot regions (RAUC's `boot-mbr-switch`, `boot-gpt-switch`, `boot-raw-fallback` slot
//! types; RAUC 1.8 src/mbr.c, src/gpt.c, src/update_handler.c): a region of a whole disk
//! (`region-start`, `region-size`, outside every partition but the first) split into two
//! halves, where the boot ROM or firmware finds the bootloader.
//!
//! - **switch** (MBR or GPT): the first partition entry points at one half; the image is
//!   written into the other, and after every check passed the entry is switched to it
//!   ([`Switch::apply`]): the old bootloader stays whole until that one write.
//! - **raw-fallback**: the ROM boots the first half and falls back to the second. The
//!   second (fallback) half is written first, then the first: one of them is whole at any
//!   time. When the first half is blank (a device that booted from the fallback), the
//!   first is written first instead.

use crate::config::{Region, SlotConf, SlotType};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// Where an image goes in a boot region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Byte offset of the half written from the stream.
    pub first: u64,
    /// raw-fallback: the half the first is copied to afterwards.
    pub then: Option<u64>,
    /// switch types: the entry change to make once every check passed.
    pub switch: Option<Switch>,
    /// Bytes of one half: the most an image may have.
    pub half: u64,
}

/// A first partition entry to point at a new half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The disk.
    pub device: PathBuf,
    /// MBR or GPT.
    pub table: Table,
    /// The half's first byte.
    pub start: u64,
    /// The half's size in bytes.
    pub size: u64,
}

/// A partition table kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// DOS MBR (`boot-mbr-switch`).
    Mbr,
    /// GPT (`boot-gpt-switch`).
    Gpt,
}

fn invalid(slot: &SlotConf, why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("slot {} ({}): {why}", slot.name, slot.kind.name()))
}

/// The logical sector size of `dev`: `BLKSSZGET` for a block device, 512 for a file.
pub fn sector_size(dev: &File) -> io::Result<u64> {
    if !dev.metadata()?.file_type().is_block_device() {
        return Ok(512);
    }
    const BLKSSZGET: nix::libc::c_ulong = 0x1268; // <linux/fs.h> _IO(0x12, 104)
    let mut n: nix::libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int into `n`, which outlives the call.
    if unsafe { nix::libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(dev), BLKSSZGET as _, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    u64::try_from(n).ok().filter(|n| *n >= 512).ok_or_else(|| io::Error::other(format!("sector size {n}")))
}

/// Where an image of `size` bytes goes in `slot`'s region, read from the disk now.
///
/// Errors: the region does not fit the disk or is misaligned, the image does not fit a
/// half, the partition table is missing or damaged, another partition overlaps the
/// region, or the first entry points at neither half.
pub fn place(slot: &SlotConf, size: u64) -> io::Result<Placement> {
    let r = slot.region.ok_or_else(|| invalid(slot, "no region-start and region-size".into()))?;
    let mut f = File::open(&slot.device)?;
    let sector = sector_size(&f)?;
    let device_size = f.seek(SeekFrom::End(0))?;
    let half = r.size / 2;
    if r.start % sector != 0 || half % sector != 0 {
        return Err(invalid(
            slot,
            format!("the region's start and half size must be multiples of the {sector}-byte sector"),
        ));
    }
    if r.start.checked_add(r.size).is_none_or(|end| end > device_size) {
        return Err(invalid(slot, format!("the region ends beyond the device ({device_size} bytes)")));
    }
    if size > half {
        return Err(invalid(slot, format!("an image of {size} bytes does not fit half the region ({half} bytes)")));
    }
    let table = match slot.kind {
        SlotType::BootRawFallback => {
            // RAUC: a first half that is blank in its first 512 bytes (0x00 or 0xFF) is
            // written first: the device booted from the fallback.
            let mut head = [0u8; 512];
            f.read_exact_at(&mut head, r.start)?;
            let blank = head.iter().all(|b| *b == 0 || *b == 0xff);
            let (first, then) = if blank { (r.start, r.start + half) } else { (r.start + half, r.start) };
            return Ok(Placement { first, then: Some(then), switch: None, half });
        }
        SlotType::BootMbrSwitch => Table::Mbr,
        SlotType::BootGptSwitch => Table::Gpt,
        _ => return Err(invalid(slot, "not a boot-region type".into())),
    };
    let entries = match table {
        Table::Mbr => mbr_entries(&mut f, sector)?,
        Table::Gpt => gpt_entries(&slot.device, sector)?,
    };
    let (boot, others) = entries.split_first().ok_or_else(|| invalid(slot, "no first partition entry".into()))?;
    let Some((boot_start, _)) = boot else {
        return Err(invalid(slot, "the first partition entry is empty (it is the boot partition)".into()));
    };
    for (start, len) in others.iter().flatten() {
        if *start < r.start + r.size && r.start < start + len {
            return Err(invalid(
                slot,
                format!("the region overlaps a partition (bytes {start}..{}) other than the first", start + len),
            ));
        }
    }
    let inactive = if *boot_start == r.start {
        r.start + half
    } else if *boot_start == r.start + half {
        r.start
    } else {
        return Err(invalid(
            slot,
            format!("the first partition starts at byte {boot_start}, at neither half of the region (region-start={}, region-size={})", r.start, r.size),
        ));
    };
    let switch = Switch { device: slot.device.clone(), table, start: inactive, size: half };
    Ok(Placement { first: inactive, then: None, switch: Some(switch), half })
}

/// `(start, length)` in bytes of each MBR primary entry, `None` for an empty one.
fn mbr_entries(f: &mut File, sector: u64) -> io::Result<Vec<Option<(u64, u64)>>> {
    let h =
        mbrman::MBRHeader::read_from(f).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("MBR: {e}")))?;
    Ok((1..=4)
        .map(|i| {
            h.get(i)
                .filter(|p| p.is_used())
                .map(|p| (u64::from(p.starting_lba) * sector, u64::from(p.sectors) * sector))
        })
        .collect())
}

fn gpt_disk(dev: &Path, sector: u64, writable: bool) -> io::Result<gpt::GptDisk<File>> {
    let lb = match sector {
        512 => gpt::disk::LogicalBlockSize::Lb512,
        4096 => gpt::disk::LogicalBlockSize::Lb4096,
        n => return Err(io::Error::other(format!("GPT with {n}-byte sectors"))),
    };
    gpt::GptConfig::new()
        .writable(writable)
        .logical_block_size(lb)
        .only_valid_headers(true)
        .open(dev)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("GPT: {e}")))
}

/// `(start, length)` in bytes of each GPT entry by number from 1, `None` for an unused
/// one.
fn gpt_entries(dev: &Path, sector: u64) -> io::Result<Vec<Option<(u64, u64)>>> {
    let disk = gpt_disk(dev, sector, false)?;
    let last = disk.partitions().keys().max().copied().unwrap_or(0);
    Ok((1..=last.max(1))
        .map(|n| {
            disk.partitions()
                .get(&n)
                .filter(|p| p.is_used())
                .map(|p| (p.first_lba * sector, (p.last_lba + 1 - p.first_lba) * sector))
        })
        .collect())
}

impl Switch {
    /// Point the first partition entry at the new half (both GPT headers and entry
    /// arrays, CRCs and all; or the MBR entry with its CHS), and sync.
    ///
    /// Errors: the table cannot be read or written, or (GPT) its used entries are not
    /// numbered 1, 2, ... without gaps (the library would renumber them).
    pub fn apply(&self) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&self.device)?;
        let sector = sector_size(&f)?;
        let (start, count) = (self.start / sector, self.size / sector);
        match self.table {
            Table::Mbr => {
                let bad = |e: mbrman::Error| io::Error::new(io::ErrorKind::InvalidData, format!("MBR: {e}"));
                let mut h = mbrman::MBRHeader::read_from(&mut f).map_err(bad)?;
                let to32 = |n: u64| u32::try_from(n).map_err(|_| io::Error::other("beyond the MBR's 2 TiB"));
                let (first, sectors) = (to32(start)?, to32(count)?);
                let chs =
                    |lba: u32| mbrman::CHS::from_lba_exact(lba, u16::MAX, 255, 63).unwrap_or(mbrman::CHS::empty());
                let e = h.get_mut(1).ok_or_else(|| io::Error::other("no first MBR entry"))?;
                e.starting_lba = first;
                e.sectors = sectors;
                e.first_chs = chs(first);
                e.last_chs = chs(first + sectors - 1);
                h.write_into(&mut f).map_err(bad)?;
                f.sync_all()
            }
            Table::Gpt => {
                let mut disk = gpt_disk(&self.device, sector, true)?;
                let mut parts = disk.partitions().clone();
                let used: Vec<u32> = parts.iter().filter(|(_, p)| p.is_used()).map(|(n, _)| *n).collect();
                if used.iter().enumerate().any(|(i, n)| *n as usize != i + 1) {
                    return Err(io::Error::other(format!(
                        "GPT entries {used:?} have gaps: refusing to rewrite a table whose partitions would be renumbered"
                    )));
                }
                let p = parts.get_mut(&1).ok_or_else(|| io::Error::other("no first GPT entry"))?;
                p.first_lba = start;
                p.last_lba = start + count - 1;
                disk.update_partitions(parts).map_err(|e| io::Error::other(format!("GPT: {e}")))?;
                let f = disk.write().map_err(|e| io::Error::other(format!("GPT: {e}")))?;
                f.sync_all()
            }
        }
    }
}

/// The region of a slot, as the hooks' `RAUC_BOOT_REGION_START` and `_SIZE` name it.
pub fn hook_env(r: &Region) -> [(String, String); 2] {
    [("RAUC_BOOT_REGION_START".into(), r.start.to_string()), ("RAUC_BOOT_REGION_SIZE".into(), r.size.to_string())]
}

/// Copy `len` bytes at `from` to `to` on `dev` with a fixed buffer, checking on the way
/// that they are the image (its digest), then sync.
///
/// Errors: I/O, or the bytes read are not the image.
pub fn copy_half(dev: &File, from: u64, to: u64, image: &crate::package::Image) -> io::Result<()> {
    let mut h = image.digest_algorithm.hasher();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < image.size {
        let n = (image.size - done).min(buf.len() as u64) as usize;
        dev.read_exact_at(&mut buf[..n], from + done)?;
        h.update(&buf[..n]);
        dev.write_all_at(&buf[..n], to + done)?;
        done += n as u64;
    }
    if h.finish() != image.digest {
        return Err(io::Error::other("the first half does not hold the image after it was written: not copied"));
    }
    dev.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn slot(kind: &str, dev: &Path) -> SlotConf {
        let text = format!(
            "[system]\ncompatible=t\n[slot.boot.0]\ndevice={}\ntype={kind}\nregion-start=1M\nregion-size=2M\n",
            dev.display()
        );
        Config::parse(&text, Path::new("t.conf")).unwrap().slots.remove(0)
    }

    #[test]
    fn raw_fallback_writes_a_blank_first_half_first() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("disk");
        std::fs::write(&dev, vec![0u8; 4 << 20]).unwrap();
        let s = slot("boot-raw-fallback", &dev);
        let p = place(&s, 1000).unwrap();
        assert_eq!((p.first, p.then, p.half), (1 << 20, Some(2 << 20), 1 << 20), "blank: the first half first");
        std::fs::File::options().write(true).open(&dev).unwrap().write_all_at(b"BOOT", 1 << 20).unwrap();
        let p = place(&s, 1000).unwrap();
        assert_eq!((p.first, p.then), (2 << 20, Some(1 << 20)), "the fallback half first");
        assert!(place(&s, (1 << 20) + 1).unwrap_err().to_string().contains("does not fit"));
        std::fs::write(&dev, vec![0u8; 2 << 20]).unwrap();
        assert!(place(&s, 1000).unwrap_err().to_string().contains("beyond the device"));
    }

    fn mbr(dev: &Path, entries: &[(u32, u32)]) {
        let mut f = std::fs::File::options().read(true).write(true).open(dev).unwrap();
        let mut h = mbrman::MBRHeader::new([1, 2, 3, 4]);
        for (i, (start, sectors)) in entries.iter().enumerate() {
            let e = h.get_mut(i + 1).unwrap();
            e.sys = 0x83;
            e.starting_lba = *start;
            e.sectors = *sectors;
        }
        h.write_into(&mut f).unwrap();
    }

    #[test]
    fn mbr_switch_finds_the_other_half_and_refuses_what_does_not_fit_the_region() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("disk");
        std::fs::write(&dev, vec![0u8; 8 << 20]).unwrap();
        let s = slot("boot-mbr-switch", &dev);
        mbr(&dev, &[(2048, 2048), (8192, 4096)]);
        let p = place(&s, 1000).unwrap();
        assert_eq!(p.switch.as_ref().map(|w| (w.start, w.size)), Some((2 << 20, 1 << 20)));
        p.switch.unwrap().apply().unwrap();
        let p = place(&s, 1000).unwrap();
        assert_eq!(p.first, 1 << 20, "switched: the first half is the inactive one now");
        // Another partition inside the region, or a first entry at neither half.
        mbr(&dev, &[(2048, 2048), (5000, 100)]);
        assert!(place(&s, 1000).unwrap_err().to_string().contains("overlaps a partition"));
        mbr(&dev, &[(2500, 2048)]);
        assert!(place(&s, 1000).unwrap_err().to_string().contains("at neither half"));
        mbr(&dev, &[]);
        assert!(place(&s, 1000).unwrap_err().to_string().contains("first partition entry is empty"));
        std::fs::write(&dev, vec![0u8; 8 << 20]).unwrap();
        assert!(place(&s, 1000).unwrap_err().to_string().contains("MBR"), "no MBR at all");
    }
}
