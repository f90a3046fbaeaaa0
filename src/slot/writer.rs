//! Writing images into the slots of a target group: a [`Sink`] that opens each image's
//! slot device, writes the verified stream to it, syncs it, and (with
//! `[install] verify-written`) reads it back past the page cache. It reports bytes and
//! steps ([`Written`]); what the user sees of them is the install's business.

use crate::config::SlotConf;
use crate::package::{Image, Sink};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
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

/// Writes each image into the slot of its class in `targets`.
pub struct SlotWriter<'a> {
    targets: &'a [SlotConf],
    read_back: bool,
    out: Option<File>,
    written: u64,
    report: &'a mut dyn FnMut(Written<'_>),
}

impl<'a> SlotWriter<'a> {
    /// A writer into `targets`; `read_back` checks each image from the device after it
    /// is synced.
    pub fn new(targets: &'a [SlotConf], read_back: bool, report: &'a mut dyn FnMut(Written<'_>)) -> Self {
        Self { targets, read_back, out: None, written: 0, report }
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
        self.out = Some(OpenOptions::new().write(true).open(&slot.device)?);
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.as_mut().ok_or_else(|| io::Error::other("no open slot"))?.write_all(data)?;
        crate::failpoint::hit("install.write");
        self.written += data.len() as u64;
        (self.report)(Written::Bytes(self.written));
        Ok(())
    }

    fn end(&mut self, image: &Image) -> io::Result<()> {
        let f = self.out.take().ok_or_else(|| io::Error::other("no open slot"))?;
        f.sync_all()?;
        if self.read_back {
            let slot = self.slot_for(image)?;
            (self.report)(Written::ReadBack { slot: &slot.name });
            read_back(&slot.device, image)?;
        }
        Ok(())
    }
}

/// Read the image back from the slot, past the page cache, and compare its digest.
fn read_back(dev: &Path, image: &Image) -> io::Result<()> {
    let f = File::open(dev)?;
    // Drop the cached pages so that the bytes come from the device, not from memory.
    let _ = nix::fcntl::posix_fadvise(&f, 0, image.size as i64, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED);
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
    if n != image.size || h.finish() != image.digest {
        return Err(io::Error::other(format!("read back from {}, the slot does not hold the image", dev.display())));
    }
    Ok(())
}

/// The size of a slot's device (block device or file), in bytes.
pub fn device_size(dev: &Path) -> io::Result<u64> {
    File::open(dev)?.seek(SeekFrom::End(0))
}
