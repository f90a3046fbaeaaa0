//! Boot regions (RAUC's `boot-mbr-switch`, `boot-gpt-switch`, `boot-raw-fallback` slot
//! types; RAUC 1.8 src/mbr.c, src/gpt.c, src/update_handler.c): a region of a whole disk
//! (`region-start`, `region-size`) split into two halves, where the boot ROM or firmware
//! finds the bootloader. The region must keep clear of the partition tables (the MBR, the
//! GPT's headers and entry arrays) and of every partition but, for the switch types, the
//! first, which must be exactly one half.
//!
//! Each half is written header last ([`HEADER`] bytes): its header is zeroed first, then
//! the rest written and synced, then the header, so that a half cut off by a power loss
//! has no valid header and is skipped by the boot ROM.
//!
//! - **switch** (MBR or GPT): the first partition entry points at one half; the image is
//!   written into the other, and once every check passed ([`Step::apply`]) the entry is
//!   switched to it: the old bootloader stays whole until that one write.
//! - **raw-fallback**: the ROM boots the first half and falls back to the second. The
//!   second (fallback) half is written from the stream; once every check passed it is read
//!   back and checked against the image's digest, then copied to the first. When the
//!   first half is blank (a device that booted from the fallback), the order is the other
//!   way round, and the first half's header waits until every check passed.

use super::gpt::{self, Gpt};
use crate::config::{Region, SlotConf, SlotType};
use crate::digest::DigestAlg;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// Bytes at the start of a half written last (RAUC's header size).
pub const HEADER: u64 = 512;

/// Where an image goes in a boot region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Byte offset of the half written from the stream.
    pub first: u64,
    /// What to do once every check passed: copy to the other half, or switch the entry.
    pub step: Step,
    /// Bytes of one half: the most an image may have.
    pub half: u64,
    /// For the switch types: 0 or 1, the half being activated (`RAUC_BOOT_PARTITION_ACTIVATING`).
    pub activating: Option<u8>,
}

/// The change a boot region needs after its image was written, made once every check of
/// the install passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Point the first partition entry at the new half.
    Switch(Switch),
    /// raw-fallback: copy the written half to the other one.
    Copy(Copy),
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

/// A half to copy to the other, header last, checked against the image's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The disk.
    pub device: PathBuf,
    /// The half written.
    pub from: u64,
    /// The other half.
    pub to: u64,
    /// The image's size in bytes.
    pub size: u64,
    /// Its digest algorithm and signed digest.
    pub digest: (DigestAlg, Vec<u8>),
    /// `from` is the first half (it was blank): its header is held back until
    /// [`Copy::apply`], because writing it makes the boot ROM take the new image.
    pub activates: bool,
    /// The held-back header of `from` (set by the writer when `activates`).
    pub header: Vec<u8>,
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

/// What the disk's partition tables occupy and hold.
struct Tables {
    /// GPT (a valid header at LBA 1), else MBR (a boot signature), else none.
    kind: Option<Table>,
    /// Byte ranges of the tables themselves: the MBR sector; the GPT's up to its first
    /// usable LBA and from past its last usable LBA.
    areas: Vec<(u64, u64)>,
    /// `(start, length)` in bytes of each entry, by number from 1; `None` when unused.
    entries: Vec<Option<(u64, u64)>>,
}

fn tables(f: &mut File, sector: u64, device_size: u64) -> io::Result<Tables> {
    let mut mbr = [0u8; 512];
    if f.read_exact_at(&mut mbr, 0).is_err() || mbr[510..] != [0x55, 0xaa] {
        return Ok(Tables { kind: None, areas: Vec::new(), entries: Vec::new() });
    }
    let mut sig = [0u8; 8];
    if f.read_exact_at(&mut sig, sector).is_ok() && &sig == b"EFI PART" {
        let g = Gpt::read(f, sector, device_size)?;
        let (first_usable, last_usable) = g.usable();
        let (first, past) = (first_usable * sector, (last_usable + 1) * sector);
        let entries = g.entries().into_iter().map(|e| e.map(|(a, b)| (a * sector, (b - a + 1) * sector))).collect();
        return Ok(Tables { kind: Some(Table::Gpt), areas: vec![(0, first), (past, device_size)], entries });
    }
    let entries = mbr_entries(f, sector)?;
    Ok(Tables { kind: Some(Table::Mbr), areas: vec![(0, 512)], entries })
}

fn overlaps(a: (u64, u64), start: u64, len: u64) -> bool {
    a.0 < start.saturating_add(len) && start < a.1
}

/// Where an image of `size` bytes goes in `slot`'s region, read from the disk now.
///
/// Errors: the region does not fit the disk, is misaligned or overlaps a partition table
/// or a partition (but the switch types' first, which must be exactly one half); the
/// image does not fit a half; the table the type needs is missing or damaged; the first
/// entry points at neither half.
pub fn place(slot: &SlotConf, size: u64, digest: (DigestAlg, Vec<u8>)) -> io::Result<Placement> {
    let r = slot.region.ok_or_else(|| invalid(slot, "no region-start and region-size".into()))?;
    let mut f = File::open(&slot.device)?;
    let sector = sector_size(&f)?;
    let device_size = f.seek(SeekFrom::End(0))?;
    let half = r.size / 2;
    if r.start % sector != 0 || half % sector != 0 || half < HEADER {
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
    let t = tables(&mut f, sector, device_size).map_err(|e| invalid(slot, e.to_string()))?;
    if let Some(a) = t.areas.iter().find(|a| overlaps(**a, r.start, r.size)) {
        return Err(invalid(slot, format!("the region overlaps the partition table (bytes {}..{})", a.0, a.1)));
    }
    let switch_table = match slot.kind {
        SlotType::BootRawFallback => None,
        SlotType::BootMbrSwitch => Some(Table::Mbr),
        SlotType::BootGptSwitch => Some(Table::Gpt),
        _ => return Err(invalid(slot, "not a boot-region type".into())),
    };
    let skip = usize::from(switch_table.is_some());
    for (start, len) in t.entries.iter().skip(skip).flatten() {
        if overlaps((*start, start.saturating_add(*len)), r.start, r.size) {
            return Err(invalid(
                slot,
                format!("the region overlaps a partition (bytes {start}..{})", start.saturating_add(*len)),
            ));
        }
    }
    let Some(table) = switch_table else {
        // RAUC: a first half that is blank in its first 512 bytes (0x00 or 0xFF) is
        // written first: the device booted from the fallback.
        let mut head = [0u8; HEADER as usize];
        f.read_exact_at(&mut head, r.start)?;
        let blank = head.iter().all(|b| *b == 0 || *b == 0xff);
        let (first, to) = if blank { (r.start, r.start + half) } else { (r.start + half, r.start) };
        let copy =
            Copy { device: slot.device.clone(), from: first, to, size, digest, activates: blank, header: Vec::new() };
        return Ok(Placement { first, step: Step::Copy(copy), half, activating: None });
    };
    if t.kind != Some(table) {
        let want = if table == Table::Gpt { "GPT" } else { "MBR (and no GPT)" };
        return Err(invalid(slot, format!("the disk holds no {want} partition table")));
    }
    let Some(Some((boot_start, boot_len))) = t.entries.first() else {
        return Err(invalid(slot, "the first partition entry is empty (it is the boot partition)".into()));
    };
    if *boot_len != half {
        return Err(invalid(
            slot,
            format!("the first partition has {boot_len} bytes, not half the region ({half}): it is not the boot partition of this region"),
        ));
    }
    let (inactive, activating) = if *boot_start == r.start {
        (r.start + half, 1)
    } else if *boot_start == r.start + half {
        (r.start, 0)
    } else {
        return Err(invalid(
            slot,
            format!(
                "the first partition starts at byte {boot_start}, at neither half of the region (region-start={}, region-size={})",
                r.start, r.size
            ),
        ));
    };
    let switch = Switch { device: slot.device.clone(), table, start: inactive, size: half };
    Ok(Placement { first: inactive, step: Step::Switch(switch), half, activating: Some(activating) })
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

impl Step {
    /// Make the change: switch the entry, or copy the half.
    ///
    /// Errors: see [`Switch::apply`] and [`Copy::apply`].
    pub fn apply(&self) -> io::Result<()> {
        match self {
            Self::Switch(s) => s.apply(),
            Self::Copy(c) => c.apply(),
        }
    }

    /// The disk.
    pub fn device(&self) -> &Path {
        match self {
            Self::Switch(s) => &s.device,
            Self::Copy(c) => &c.device,
        }
    }
}

impl Copy {
    /// Check that `from` holds the image (read from the device, past the page cache),
    /// write its held-back header if it has one, then copy it to `to` with a fixed
    /// buffer, header last (the header of `to` zeroed first), checking the bytes copied
    /// against the image's digest again.
    ///
    /// Errors: I/O, or `from` does not hold the image (then nothing was changed), or the
    /// bytes copied were not the image (then `to` has no header; `from` holds the image).
    pub fn apply(&self) -> io::Result<()> {
        let dev = std::fs::OpenOptions::new().read(true).write(true).open(&self.device)?;
        let hl = HEADER.min(self.size) as usize;
        let header = if self.activates {
            if self.header.len() != hl {
                return Err(io::Error::other("the first half's header was not held back"));
            }
            self.header.clone()
        } else {
            let mut h = vec![0u8; hl];
            dev.read_exact_at(&mut h, self.from)?;
            h
        };
        let mut buf = vec![0u8; 1 << 20];
        // `from` holds the image: the bytes on the device, not those in the page cache.
        dev.sync_all()?;
        let _ = nix::fcntl::posix_fadvise(
            &dev,
            self.from as i64,
            self.size as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        if !self.holds(&dev, &header, &mut buf, None)? {
            return Err(io::Error::other("the written half does not hold the image: not copied, nothing switched"));
        }
        if self.activates {
            dev.write_all_at(&header, self.from)?;
            dev.sync_all()?;
        }
        dev.write_all_at(&[0u8; HEADER as usize], self.to)?;
        dev.sync_all()?;
        if !self.holds(&dev, &header, &mut buf, Some(self.to))? {
            return Err(io::Error::other("the bytes copied were not the image: the other half has no header"));
        }
        dev.sync_all()?;
        dev.write_all_at(&header, self.to)?;
        dev.sync_all()
    }

    /// Whether `header` and the rest of `from` are the image, copying what is read to
    /// `copy_to` (past its header) when given.
    fn holds(&self, dev: &File, header: &[u8], buf: &mut [u8], copy_to: Option<u64>) -> io::Result<bool> {
        let mut h = self.digest.0.hasher();
        h.update(header);
        let mut done = header.len() as u64;
        while done < self.size {
            let n = (self.size - done).min(buf.len() as u64) as usize;
            dev.read_exact_at(&mut buf[..n], self.from + done)?;
            h.update(&buf[..n]);
            if let Some(to) = copy_to {
                dev.write_all_at(&buf[..n], to + done)?;
            }
            done += n as u64;
        }
        Ok(h.finish() == self.digest.1)
    }
}

impl Switch {
    /// Point the first partition entry at the new half, and sync: the MBR entry with
    /// its CHS (one sector), or both GPT copies, backup first ([`Gpt::switch_first`]).
    ///
    /// Errors: the table cannot be read, is damaged (GPT: see [`Gpt::read`]), or cannot
    /// be written.
    pub fn apply(&self) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&self.device)?;
        let sector = sector_size(&f)?;
        let (start, count) = (self.start / sector, self.size / sector);
        let end =
            start.checked_add(count).and_then(|e| e.checked_sub(1)).ok_or_else(|| io::Error::other("an empty half"))?;
        match self.table {
            Table::Mbr => {
                let bad = |e: mbrman::Error| io::Error::new(io::ErrorKind::InvalidData, format!("MBR: {e}"));
                let mut h = mbrman::MBRHeader::read_from(&mut f).map_err(bad)?;
                let to32 = |n: u64| u32::try_from(n).map_err(|_| io::Error::other("beyond the MBR's 2^32 sectors"));
                let (first, sectors, last) = (to32(start)?, to32(count)?, to32(end)?);
                let chs =
                    |lba: u32| mbrman::CHS::from_lba_exact(lba, u16::MAX, 255, 63).unwrap_or(mbrman::CHS::empty());
                let e = h.get_mut(1).ok_or_else(|| io::Error::other("no first MBR entry"))?;
                e.starting_lba = first;
                e.sectors = sectors;
                e.first_chs = chs(first);
                e.last_chs = chs(last);
                h.write_into(&mut f).map_err(bad)?;
                f.sync_all()
            }
            Table::Gpt => {
                let size = f.seek(SeekFrom::End(0))?;
                let writes = Gpt::read(&f, sector, size)?.switch_first(start, end)?;
                gpt::apply(&f, &writes)
            }
        }
    }
}

/// What a slot hook of a boot region is told: RAUC's `RAUC_BOOT_REGION_START` and
/// `_SIZE`, and for the switch types `RAUC_BOOT_PARTITION_ACTIVATING`, `_START`, `_SIZE`
/// (the half being written).
pub fn hook_env(r: &Region, p: Option<&Placement>) -> Vec<(String, String)> {
    let mut env = vec![
        ("RAUC_BOOT_REGION_START".into(), r.start.to_string()),
        ("RAUC_BOOT_REGION_SIZE".into(), r.size.to_string()),
    ];
    if let Some((p, a)) = p.and_then(|p| p.activating.map(|a| (p, a))) {
        env.push(("RAUC_BOOT_PARTITION_ACTIVATING".into(), a.to_string()));
        env.push(("RAUC_BOOT_PARTITION_START".into(), p.first.to_string()));
        env.push(("RAUC_BOOT_PARTITION_SIZE".into(), p.half.to_string()));
    }
    env
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
        let to = |p: &Placement| match &p.step {
            Step::Copy(c) => c.to,
            Step::Switch(_) => panic!("a switch"),
        };
        let p = place(&s, 1000, dg()).unwrap();
        assert_eq!((p.first, to(&p), p.half), (1 << 20, 2 << 20, 1 << 20), "blank: the first half first");
        std::fs::File::options().write(true).open(&dev).unwrap().write_all_at(b"BOOT", 1 << 20).unwrap();
        let p = place(&s, 1000, dg()).unwrap();
        assert_eq!((p.first, to(&p)), (2 << 20, 1 << 20), "the fallback half first");
        assert!(place(&s, (1 << 20) + 1, dg()).unwrap_err().to_string().contains("does not fit"));
        // A partition table: the region keeps clear of it and of every partition.
        mbr(&dev, &[(2048, 4096)]);
        assert!(place(&s, 1000, dg()).unwrap_err().to_string().contains("overlaps a partition"));
        std::fs::write(&dev, vec![0u8; 2 << 20]).unwrap();
        assert!(place(&s, 1000, dg()).unwrap_err().to_string().contains("beyond the device"));
    }

    fn dg() -> (DigestAlg, Vec<u8>) {
        (DigestAlg::Sha256, vec![0; 32])
    }

    #[test]
    fn a_region_over_the_partition_table_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("disk");
        std::fs::write(&dev, vec![0u8; 8 << 20]).unwrap();
        let text = format!(
            "[system]\ncompatible=t\n[slot.boot.0]\ndevice={}\ntype=boot-mbr-switch\nregion-start=0\nregion-size=2M\n",
            dev.display()
        );
        let s = crate::config::Config::parse(&text, Path::new("t.conf")).unwrap().slots.remove(0);
        mbr(&dev, &[(2048, 2048)]);
        assert!(place(&s, 1000, dg()).unwrap_err().to_string().contains("overlaps the partition table"));
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
        let p = place(&s, 1000, dg()).unwrap();
        assert!(matches!(&p.step, Step::Switch(w) if (w.start, w.size) == (2 << 20, 1 << 20)), "{p:?}");
        assert_eq!(p.activating, Some(1));
        p.step.apply().unwrap();
        let p = place(&s, 1000, dg()).unwrap();
        assert_eq!((p.first, p.activating), (1 << 20, Some(0)), "switched: the first half is the inactive one now");
        // Another partition inside the region, a first entry at neither half or not one
        // half long.
        mbr(&dev, &[(2048, 2048), (5000, 100)]);
        assert!(place(&s, 1000, dg()).unwrap_err().to_string().contains("overlaps a partition"));
        mbr(&dev, &[(2500, 2048)]);
        assert!(place(&s, 1000, dg()).unwrap_err().to_string().contains("at neither half"));
        mbr(&dev, &[(2048, 8192)]);
        assert!(place(&s, 1000, dg()).unwrap_err().to_string().contains("not half the region"));
        mbr(&dev, &[]);
        assert!(place(&s, 1000, dg()).unwrap_err().to_string().contains("first partition entry is empty"));
        std::fs::write(&dev, vec![0u8; 8 << 20]).unwrap();
        assert!(place(&s, 1000, dg()).unwrap_err().to_string().contains("holds no MBR"), "no MBR at all");
    }
}
