//! Writing images into the slots of a target group: a [`Sink`] that opens each image's
//! slot device, writes the verified stream to it, syncs it, and (with
//! `[install] verify-written`) reads it back past the page cache. It reports bytes and
//! steps ([`Written`]); what the user sees of them is the install's business.

use crate::config::{SlotConf, SlotType};
use crate::package::{Image, Sink};
use crate::slot::region;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// What the writer did, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written<'a> {
    /// An image starts going into a slot.
    Begin {
        /// Image file name.
        image: &'a str,
        /// Slot name.
        slot: &'a str,
    },
    /// Bytes written so far, over every image.
    Bytes(u64),
    /// The image is being read back from this slot.
    ReadBack {
        /// Slot name.
        slot: &'a str,
    },
}

/// Where the current image goes.
enum Out {
    /// A block device or file, written at offsets.
    File(File),
    /// A UBI volume under a volume update (exactly the image's size), or an erased NOR
    /// partition: written in order.
    Stream(File),
    /// mtd-utils' `nandwrite`, fed the image on its standard input.
    Nand(crate::process::Running),
}

/// How long `flash_erase` or `nandwrite` may take for one slot.
const FLASH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// `UBI_IOCVOLUP` (`<mtd/ubi-user.h>`: `_IOW('O', 0, __s64)`): start a volume update of
/// the given number of bytes.
const UBI_IOCVOLUP: nix::libc::c_ulong = 0x4008_4f00;

/// Writes each image into the slot of its class in `targets`.
pub struct SlotWriter<'a> {
    targets: &'a [SlotConf],
    read_back: bool,
    out: Option<Out>,
    /// Offset in the slot of the next byte of the current image.
    pos: u64,
    /// Where the current image starts on the device (a boot region's half; else 0).
    base: u64,
    /// The current image's place in a boot region.
    placement: Option<region::Placement>,
    /// A boot region's header (its first [`region::HEADER`] bytes), written last.
    header: Vec<u8>,
    /// Boot-region steps (partition switches, fallback copies) to make once every check
    /// passed.
    steps: Vec<region::Step>,
    /// Adaptive images are written lazily (RAUC's rule): 4 KiB blocks the slot already
    /// holds are not written again, which spares the flash.
    lazy: bool,
    scratch: Vec<u8>,
    written: u64,
    report: &'a mut dyn FnMut(Written<'_>),
}

impl<'a> SlotWriter<'a> {
    /// A writer into `targets`; `read_back` checks each image from the device after it
    /// is synced.
    pub fn new(targets: &'a [SlotConf], read_back: bool, report: &'a mut dyn FnMut(Written<'_>)) -> Self {
        Self {
            targets,
            read_back,
            out: None,
            pos: 0,
            base: 0,
            placement: None,
            header: Vec::new(),
            steps: Vec::new(),
            lazy: false,
            scratch: Vec::new(),
            written: 0,
            report,
        }
    }

    /// The boot-region steps the written images need, in image order; the install makes
    /// them once every check passed ([`region::Step::apply`]).
    pub fn take_steps(&mut self) -> Vec<region::Step> {
        std::mem::take(&mut self.steps)
    }

    fn slot_for(&self, image: &Image) -> io::Result<&'a SlotConf> {
        self.targets
            .iter()
            .find(|s| s.class == image.slot_class)
            .ok_or_else(|| io::Error::other(format!("no target slot of class '{}'", image.slot_class)))
    }
}

impl Sink for SlotWriter<'_> {
    fn begin(&mut self, image: &Image) -> io::Result<()> {
        let slot = self.slot_for(image)?;
        (self.report)(Written::Begin { image: &image.filename, slot: &slot.name });
        self.placement = if slot.kind.has_region() {
            Some(region::place(slot, image.size, (image.digest_algorithm, image.digest.clone()))?)
        } else {
            None
        };
        self.header.clear();
        self.base = self.placement.as_ref().map_or(0, |p| p.first);
        self.lazy = self.placement.is_none()
            && !slot.kind.is_flash()
            && image.adaptive.iter().any(|m| m == crate::blockindex::METHOD);
        // O_EXCL: a block device in use (mounted, e.g. by a hook's process that outlived
        // it) is refused with EBUSY instead of written under a live file system (Linux;
        // without O_CREAT it has no effect on regular files). Not for a boot region (its
        // device is the whole disk, whose partitions are in use).
        // (A slot in use was refused by admission; O_EXCL also catches one mounted since.)
        let exclusive = !slot.kind.has_region() && !slot.kind.is_flash();
        let busy = |e: io::Error| match e.raw_os_error() {
            Some(nix::libc::EBUSY) => {
                io::Error::new(e.kind(), format!("{}: in use (mounted?): {e}", slot.device.display()))
            }
            _ => io::Error::new(e.kind(), format!("{}: {e}", slot.device.display())),
        };
        self.out = Some(match slot.kind {
            SlotType::Ubivol | SlotType::Ubifs => {
                let f = OpenOptions::new().write(true).open(&slot.device).map_err(busy)?;
                let size = image.size as i64;
                // SAFETY: UBI_IOCVOLUP reads one i64 from the pointer, valid for the call.
                if unsafe { nix::libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), UBI_IOCVOLUP as _, &size) } != 0 {
                    return Err(busy(io::Error::last_os_error()));
                }
                Out::Stream(f)
            }
            SlotType::Nand | SlotType::Nor | SlotType::Jffs2 => {
                let dev = slot.device.display().to_string();
                let fail = |e: crate::process::RunError| io::Error::other(format!("slot {}: {e}", slot.name));
                let run = |args: &[&str], input: bool| {
                    let what = format!("{} {dev}", args[0]);
                    crate::process::Running::start(Path::new(args[0]), &args[1..], &[], &what, false, input)
                        .map_err(fail)
                };
                let erased = run(&["flash_erase", "-q", &dev, "0", "0"], false)?.wait(FLASH_TIMEOUT);
                erased.and_then(|e| e.success("flash_erase")).map_err(fail)?;
                if slot.kind == SlotType::Nand || (slot.kind == SlotType::Jffs2 && is_nand(&slot.device)) {
                    Out::Nand(run(&["nandwrite", "-q", "-p", &dev, "-"], true)?)
                } else {
                    Out::Stream(OpenOptions::new().write(true).open(&slot.device).map_err(busy)?)
                }
            }
            _ => Out::File(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(if exclusive { nix::libc::O_EXCL } else { 0 })
                    .open(&slot.device)
                    .map_err(busy)?,
            ),
        });
        if let (Some(p), Some(Out::File(f))) = (&self.placement, &self.out) {
            // A half cut off while it is written has no valid header.
            f.write_all_at(&[0u8; region::HEADER as usize], p.first)?;
            f.sync_all()?;
        }
        self.pos = 0;
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self.out.as_mut().ok_or_else(|| io::Error::other("no open slot"))? {
            Out::File(out) if self.lazy => write_lazily(out, data, self.pos, &mut self.scratch)?,
            Out::File(out) if self.placement.is_some() && self.pos < region::HEADER => {
                // A boot region's header is held back and written last.
                let h = ((region::HEADER - self.pos) as usize).min(data.len());
                self.header.extend_from_slice(&data[..h]);
                out.write_all_at(&data[h..], self.base + self.pos + h as u64)?;
            }
            Out::File(out) => out.write_all_at(data, self.base + self.pos)?,
            Out::Stream(out) => io::Write::write_all(out, data)?,
            Out::Nand(nandwrite) => nandwrite.feed(data, FLASH_TIMEOUT)?,
        }
        self.pos += data.len() as u64;
        crate::failpoint::hit("install.write");
        self.written += data.len() as u64;
        (self.report)(Written::Bytes(self.written));
        Ok(())
    }

    fn end(&mut self, image: &Image) -> io::Result<()> {
        let slot = self.slot_for(image)?;
        let f = match self.out.take().ok_or_else(|| io::Error::other("no open slot"))? {
            Out::File(f) | Out::Stream(f) => f,
            Out::Nand(nandwrite) => {
                nandwrite
                    .wait(FLASH_TIMEOUT)
                    .and_then(|e| e.success("nandwrite"))
                    .map_err(|e| io::Error::other(format!("slot {}: {e}", slot.name)))?;
                // Its bad blocks were skipped: the device's bytes in order are not the
                // image, and nothing is read back here.
                if self.read_back {
                    tracing::info!(
                        "slot {}: a nand slot is not read back (nandwrite skipped its bad blocks)",
                        slot.name
                    );
                }
                return Ok(());
            }
        };
        // An MTD's character device has no fsync (EINVAL): its writes reach the driver
        // before write(2) returns.
        if !slot.kind.is_mtd() {
            f.sync_all()?;
        }
        let mut held = false;
        if let Some(mut p) = self.placement.take() {
            match &mut p.step {
                // The first half of a raw-fallback region: its header waits for every
                // check (the step reads the half back against the digest).
                region::Step::Copy(c) if c.activates => {
                    c.header = std::mem::take(&mut self.header);
                    held = true;
                }
                // The rest is on the device: now the header.
                _ => {
                    f.write_all_at(&self.header, p.first)?;
                    f.sync_all()?;
                }
            }
            self.steps.push(p.step);
        }
        if self.read_back && !held {
            (self.report)(Written::ReadBack { slot: &slot.name });
            read_back(&slot.device, self.base, image)?;
        }
        if slot.resize {
            resize(slot)?;
        }
        Ok(())
    }
}

/// Write `data` at `pos`, skipping the 4 KiB blocks the device already holds (read first
/// into `scratch`).
fn write_lazily(out: &File, data: &[u8], pos: u64, scratch: &mut Vec<u8>) -> io::Result<()> {
    const B: usize = crate::blockindex::BLOCK;
    scratch.resize(data.len(), 0);
    let mut have = 0;
    // A hole of a sparse file-backed slot holds zeros without reading them (inside the
    // file only: past its end nothing is held, and everything is written).
    let end = pos + data.len() as u64;
    let inside = out.metadata().is_ok_and(|m| m.is_file() && m.len() >= end);
    if inside && crate::slot::index::data_at(out, pos)?.is_none_or(|d| d >= end) {
        scratch.fill(0);
        have = data.len();
    }
    while have < data.len() {
        match out.read_at(&mut scratch[have..], pos + have as u64) {
            Ok(0) => break, // past the end: the writes will say so
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut i = 0;
    while i < data.len() {
        let end = (i + B).min(data.len());
        if end > have || data[i..end] != scratch[i..end] {
            // The run of differing blocks from here, in one write.
            let mut j = end;
            while j < data.len() {
                let e = (j + B).min(data.len());
                if e <= have && data[j..e] == scratch[j..e] {
                    break;
                }
                j = e;
            }
            out.write_all_at(&data[i..j], pos + i as u64)?;
            i = j;
        } else {
            i = end;
        }
    }
    Ok(())
}

/// Read the image back from the slot, past the page cache, and compare its digest.
fn read_back(dev: &Path, at: u64, image: &Image) -> io::Result<()> {
    if !holds_at(dev, at, image)? {
        return Err(io::Error::other(format!("read back from {}, the slot does not hold the image", dev.display())));
    }
    Ok(())
}

/// Whether the MTD at `dev` (`/dev/mtdN`) is NAND flash (its sysfs `type`: `nand` or
/// `mlc-nand`).
fn is_nand(dev: &Path) -> bool {
    let Some(name) = crate::slot::char_name(dev) else { return false };
    let t = std::fs::read_to_string(Path::new("/sys/class/mtd").join(name).join("type")).unwrap_or_default();
    matches!(t.trim(), "nand" | "mlc-nand")
}

/// `resize=true`: grow the ext4 file system just written to its slot, with e2fsprogs'
/// `resize2fs` (as RAUC), run by [`crate::process::exec`]'s rules.
fn resize(slot: &SlotConf) -> io::Result<()> {
    let what = format!("resize2fs {}", slot.device.display());
    let dev = slot.device.display().to_string();
    let timeout = std::time::Duration::from_secs(600);
    crate::process::exec(Path::new("resize2fs"), &[&dev], &[], timeout, &what, false)
        .and_then(|e| e.success(&what))
        .map(drop)
        .map_err(|e| io::Error::other(format!("slot {}: {e}", slot.name)))
}

/// Whether the device's first `image.size` bytes are the image (its size and signed
/// digest), read past the page cache.
///
/// Errors: the device cannot be read.
pub fn holds(dev: &Path, image: &Image) -> io::Result<bool> {
    holds_at(dev, 0, image)
}

/// [`holds`] for the image at byte `at` of the device.
///
/// Errors: the device cannot be read.
pub fn holds_at(dev: &Path, at: u64, image: &Image) -> io::Result<bool> {
    let mut f = File::open(dev)?;
    // Drop the cached pages so that the bytes come from the device, not from memory.
    let _ = nix::fcntl::posix_fadvise(
        &f,
        at as i64,
        image.size as i64,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    f.seek(SeekFrom::Start(at))?;
    let mut h = image.digest_algorithm.hasher();
    let mut r = f.take(image.size);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok(n == image.size && h.finish() == image.digest)
}

/// The bytes an image may have in `slot`: half its region for a boot region (which must
/// lie inside the device), else its device's size.
///
/// Errors: the device cannot be opened, or the region does not fit it.
pub fn capacity(slot: &SlotConf) -> io::Result<u64> {
    if matches!(slot.kind, SlotType::Ubivol | SlotType::Ubifs) {
        return ubi_volume_size(&slot.device);
    }
    let size = device_size(&slot.device)?;
    match slot.region {
        Some(r) if slot.kind.has_region() => {
            if r.start.checked_add(r.size).is_none_or(|end| end > size) {
                return Err(io::Error::other(format!(
                    "region-start + region-size is beyond the device's {size} bytes"
                )));
            }
            Ok(r.size / 2)
        }
        _ => Ok(size),
    }
}

/// The bytes UBI reserved for the volume at `dev` (`reserved_ebs` × `usable_eb_size` in
/// sysfs): a static volume's device ends where its last image did, not at its size.
///
/// Errors: `dev` is not a UBI volume, or sysfs cannot be read.
fn ubi_volume_size(dev: &Path) -> io::Result<u64> {
    let name = crate::slot::char_name(dev).ok_or_else(|| io::Error::other(format!("{}: no device", dev.display())))?;
    let attr = |a: &str| -> io::Result<u64> {
        let p = Path::new("/sys/class/ubi").join(&name).join(a);
        let t = std::fs::read_to_string(&p)?;
        t.trim().parse().map_err(|_| io::Error::other(format!("{}: {t:?}", p.display())))
    };
    let (ebs, eb) = (attr("reserved_ebs")?, attr("usable_eb_size")?);
    ebs.checked_mul(eb).ok_or_else(|| io::Error::other(format!("{}: {ebs} × {eb} bytes", dev.display())))
}

/// The size of a slot's device (block device or file), in bytes.
pub fn device_size(dev: &Path) -> io::Result<u64> {
    File::open(dev)?.seek(SeekFrom::End(0))
}
