//! The slot writer with a bundle's slot hooks (RAUC's `img_to_*_handler` order):
//!
//! - `pre-install`: before the image's first byte reaches the slot; an `ext4` slot is
//!   mounted for it (`RAUC_SLOT_MOUNT_POINT`) and unmounted after;
//! - `install`: the image (if it has a file) is copied from the verified stream into the
//!   hooks' private directory, its size and digest checked, and the hook writes the slot
//!   instead of the installer (`RAUC_IMAGE_NAME` names the copy). Then the slot is read
//!   back: whether it holds the image byte for byte is logged, not required (a hook may
//!   write a partition table, a boot loader with its configuration, or transform the
//!   image); pre- and post-install hooks do not run for that image (RAUC);
//! - `post-install`: after the image was written, synced and (with `verify-written`) read
//!   back; mounted as for pre-install.
//!
//! A failing hook fails the install: the target stays marked bad and the boot order is
//! not touched (the install's sequence).

use crate::config::SlotConf;
use crate::hook::{HookError, Hooks, SlotHook};
use crate::package::{Image, Sink};
use crate::slot::mount::Mounted;
use crate::slot::writer::SlotWriter;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

/// A [`Sink`] that runs the slot hooks around the slot writer, or instead of it.
pub(super) struct HookedWriter<'w, 'a> {
    inner: &'w mut SlotWriter<'a>,
    hooks: &'w Hooks,
    targets: &'w [SlotConf],
    slots: &'w [SlotConf],
    /// The copy an install hook's image goes into, while it streams.
    copy: Option<(File, PathBuf)>,
    failure: Option<HookError>,
    /// Whether the package is still held still (a plain bundle's read lease): checked
    /// before each hook runs.
    intact: &'w dyn Fn() -> bool,
}

impl<'w, 'a> HookedWriter<'w, 'a> {
    /// Write into `targets` through `inner`, running `hooks`; `slots`: every slot of the
    /// configuration (a child slot's parent gives its bootname).
    pub(super) fn new(
        inner: &'w mut SlotWriter<'a>,
        hooks: &'w Hooks,
        targets: &'w [SlotConf],
        slots: &'w [SlotConf],
        intact: &'w dyn Fn() -> bool,
    ) -> Self {
        Self { inner, hooks, targets, slots, copy: None, failure: None, intact }
    }

    /// Run a hook only while the package is held still.
    fn check_intact(&mut self) -> io::Result<()> {
        if (self.intact)() {
            Ok(())
        } else {
            Err(self.fail(HookError::PackageModified))
        }
    }

    /// The hook error that stopped the stream, if one did.
    pub(super) fn failure(&mut self) -> Option<HookError> {
        self.failure.take()
    }

    fn slot(&self, image: &Image) -> io::Result<&'w SlotConf> {
        self.targets
            .iter()
            .find(|s| s.class == image.slot_class)
            .ok_or_else(|| io::Error::other(format!("no target slot of class '{}'", image.slot_class)))
    }

    /// Keep a hook's error for [`HookedWriter::failure`]; the stream stops with a sink error.
    fn fail(&mut self, e: HookError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.failure = Some(e);
        err
    }

    /// Run a pre- or post-install hook, with an ext4 slot mounted.
    fn around(&mut self, which: SlotHook, image: &Image) -> io::Result<()> {
        self.check_intact()?;
        let slot = self.slot(image)?;
        let parent = slot.parent.as_ref().and_then(|p| self.slots.iter().find(|s| &s.name == p));
        let run = || -> Result<(), HookError> {
            let mounted = match slot.kind.filesystem() {
                Some(_) => {
                    let at = self.hooks.mount_point(slot)?;
                    Some(Mounted::mount(slot, &at).map_err(|e| HookError::Setup(e.to_string()))?)
                }
                None => None,
            };
            let ran = self.hooks.slot(which, slot, parent, image, None, mounted.as_ref().map(|m| m.path()));
            let done = match mounted {
                Some(m) => m.unmount().map_err(|e| HookError::Setup(e.to_string())),
                // What the hook wrote to a raw slot reaches it before the install goes on.
                None => sync(slot).map_err(|e| HookError::Setup(e.to_string())),
            };
            ran.and(done)
        };
        run().map_err(|e| self.fail(e))
    }
}

impl Sink for HookedWriter<'_, '_> {
    fn begin(&mut self, image: &Image) -> io::Result<()> {
        if image.hooks.install {
            if !image.filename.is_empty() {
                let path = self.hooks.image_path(image).map_err(|e| self.fail(e))?;
                let f = self.hooks.create(&image.filename)?;
                self.copy = Some((f, path));
            }
            return Ok(());
        }
        if image.hooks.pre_install {
            self.around(SlotHook::PreInstall, image)?;
        }
        self.inner.begin(image)
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.copy {
            Some((f, _)) => f.write_all(data),
            None => self.inner.write(data),
        }
    }

    fn end(&mut self, image: &Image) -> io::Result<()> {
        if !image.hooks.install {
            self.inner.end(image)?;
            if image.hooks.post_install {
                self.around(SlotHook::PostInstall, image)?;
            }
            return Ok(());
        }
        // The copy is complete and its digest matched (the stream checks before `end`).
        let copy = self.copy.take().map(|(f, p)| f.sync_all().map(|_| p)).transpose()?;
        self.check_intact()?;
        let slot = self.slot(image)?;
        let parent = slot.parent.as_ref().and_then(|p| self.slots.iter().find(|s| &s.name == p));
        let ran = self.hooks.slot(SlotHook::Install, slot, parent, image, copy.as_deref(), None);
        ran.and_then(|_| sync(slot).map_err(|e| HookError::Setup(e.to_string()))).map_err(|e| self.fail(e))?;
        if let Some(p) = &copy {
            let _ = std::fs::remove_file(p);
            if slot.kind.has_region() {
                tracing::info!("slot {}: a boot region written by its install hook is not read back", slot.name);
                return Ok(());
            }
            match crate::slot::writer::holds(&slot.device, image) {
                Ok(true) => tracing::info!("slot {}: the install hook wrote the image; it holds it", slot.name),
                Ok(false) => tracing::warn!(
                    "slot {}: the install hook wrote something other than the image: its contents are the hook's, \
                     not checked against the image's digest",
                    slot.name
                ),
                Err(e) => tracing::warn!("slot {}: cannot read it back after the install hook: {e}", slot.name),
            }
        }
        Ok(())
    }
}

/// Flush what a hook wrote to the slot's device (an MTD's writes reach the driver before
/// write(2) returns; its character device has no fsync).
fn sync(slot: &SlotConf) -> io::Result<()> {
    if slot.kind.is_mtd() {
        return Ok(());
    }
    File::open(&slot.device)?.sync_all()
}
