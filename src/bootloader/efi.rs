//! The `efi` backend: UEFI boot entries through `efibootmgr` (as RAUC 1.8,
//! src/bootloaders/efi.c), each slot's entry found by its label, which is the slot's
//! bootname (`Boot0001* A`).
//!
//! | | `BootOrder` | `BootNext` |
//! |---|---|---|
//! | good | the entry moved to the front | |
//! | bad | the entry taken out | deleted if it is the entry |
//! | primary | (with `efi-use-bootnext=false`: moved to the front) | the entry (default) |
//!
//! A slot is good while its entry is in `BootOrder`; the primary is `BootNext` if it is
//! set, else the first entry of `BootOrder` that is a slot's. The entries themselves are
//! the integrator's (made once at provisioning, `efibootmgr --create`); a slot without
//! one is an error.

use super::{BootError, BootState, Bootloader, Slots};
use crate::process::{exec, RunError};
use std::path::Path;
use std::time::Duration;

/// How long one `efibootmgr` call may take.
const TIMEOUT: Duration = Duration::from_secs(60);
const TOOL: &str = "efibootmgr";

/// What `efibootmgr` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    /// `(number, label)` of every `Boot####` entry.
    pub all: Vec<(String, String)>,
    /// `BootOrder`, as numbers.
    pub order: Vec<String>,
    /// `BootNext`, if set.
    pub next: Option<String>,
    /// `BootCurrent`: the entry the firmware booted, if it says.
    pub current: Option<String>,
}

impl Entries {
    /// Parse `efibootmgr`'s output (`BootNext: 0001`, `BootOrder: 0001,0000`,
    /// `Boot0001* A<TAB>HD(...)`; a label ends at a tab).
    ///
    /// Errors: no `BootOrder` line.
    pub fn parse(text: &str) -> Result<Self, BootError> {
        let mut e = Entries::default();
        let hex4 = |s: &str| s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let mut order = None;
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("BootNext: ").map(str::trim).filter(|n| hex4(n)) {
                e.next = Some(n.to_ascii_uppercase());
            } else if let Some(n) = line.strip_prefix("BootCurrent: ").map(str::trim).filter(|n| hex4(n)) {
                e.current = Some(n.to_ascii_uppercase());
            } else if let Some(o) = line.strip_prefix("BootOrder: ") {
                order = Some(o.trim().split(',').filter(|n| hex4(n)).map(str::to_ascii_uppercase).collect());
            } else if let Some(rest) = line.strip_prefix("Boot") {
                let (Some(num), Some(tail)) = (rest.get(..4), rest.get(4..)) else { continue };
                if let Some(label) = tail.strip_prefix("* ").or_else(|| tail.strip_prefix("  ")).filter(|_| hex4(num)) {
                    let label = label.split('\t').next().unwrap_or_default().trim_end().to_string();
                    e.all.push((num.to_ascii_uppercase(), label));
                }
            }
        }
        e.order = order.ok_or_else(|| BootError::Variable(format!("{TOOL}: no BootOrder")))?;
        Ok(e)
    }

    /// The entry labelled `bootname`.
    ///
    /// Errors: none is (the entries are made at provisioning), or more than one is (which
    /// one boots the slot is not known).
    pub fn number(&self, bootname: &str) -> Result<&str, BootError> {
        let mut found = self.all.iter().filter(|(_, l)| l == bootname).map(|(n, _)| n.as_str());
        let first =
            found.next().ok_or_else(|| BootError::Variable(format!("no EFI boot entry labelled '{bootname}'")))?;
        if let Some(second) = found.next() {
            return Err(BootError::Variable(format!(
                "EFI boot entries {first} and {second} are both labelled '{bootname}': remove one"
            )));
        }
        Ok(first)
    }

    /// The label of entry `num`.
    fn label(&self, num: &str) -> Option<&str> {
        self.all.iter().find(|(n, _)| n == num).map(|(_, l)| l.as_str())
    }
}

/// The bootname of the slot the firmware booted: `BootCurrent`'s label, if it is a
/// slot's bootname (RAUC src/bootloaders/efi.c `r_efi_get_current_bootname`).
///
/// Errors: `efibootmgr` fails.
pub fn current(slots: &[crate::config::SlotConf]) -> Result<Option<String>, BootError> {
    let e = Efi::new(Slots::default(), true).entries()?;
    let label = e.current.as_deref().and_then(|n| e.label(n));
    Ok(label.filter(|l| slots.iter().any(|s| s.bootname.as_deref() == Some(*l))).map(str::to_string))
}

/// UEFI boot entries through `efibootmgr`.
pub struct Efi {
    slots: Slots,
    use_bootnext: bool,
}

impl Efi {
    /// The slots' entries; `use_bootnext` (`[system] efi-use-bootnext`, default true):
    /// a new primary is tried once through `BootNext`, else moved to the front of
    /// `BootOrder`.
    pub fn new(slots: Slots, use_bootnext: bool) -> Self {
        Self { slots, use_bootnext }
    }

    fn call(&self, args: &[&str]) -> Result<String, BootError> {
        let failed = |e: RunError| BootError::Custom(format!("{TOOL}: {e}"));
        let out = exec(Path::new(TOOL), args, &[], TIMEOUT, TOOL, true).map_err(failed)?;
        Ok(String::from_utf8_lossy(&out.success(TOOL).map_err(failed)?).into_owned())
    }

    fn entries(&self) -> Result<Entries, BootError> {
        Entries::parse(&self.call(&[])?)
    }

    /// `BootOrder` with `bootname`'s entry out of it, then (with `front`) put first.
    fn reorder(&self, bootname: &str, front: bool) -> Result<(), BootError> {
        let e = self.entries()?;
        let num = e.number(bootname)?.to_string();
        let mut order: Vec<String> = e.order.into_iter().filter(|n| *n != num).collect();
        if front {
            order.insert(0, num);
        }
        if order.is_empty() {
            return Err(BootError::Variable("refusing to leave BootOrder empty".into()));
        }
        self.call(&["--bootorder", &order.join(",")]).map(drop)
    }
}

impl Bootloader for Efi {
    fn primary(&mut self) -> Result<Option<String>, BootError> {
        let e = self.entries()?;
        let candidates = e.next.iter().chain(e.order.iter());
        for num in candidates {
            if let Some(label) = e.label(num).filter(|l| self.slots.bootnames.iter().any(|b| b == l)) {
                return Ok(Some(label.to_string()));
            }
        }
        Err(BootError::Variable("no slot's entry in BootNext or BootOrder: no primary slot".into()))
    }

    fn state(&mut self, b: &str) -> Result<BootState, BootError> {
        let e = self.entries()?;
        let num = e.number(b)?;
        Ok(if e.order.iter().any(|n| n == num) { BootState::Good } else { BootState::Bad })
    }

    fn set_state(&mut self, b: &str, good: bool) -> Result<(), BootError> {
        self.reorder(b, good)?;
        if good {
            return Ok(());
        }
        // A bad slot is not booted: neither through BootOrder nor once through BootNext
        // (an install overwriting it, or `mark bad`, after it was made primary).
        let e = self.entries()?;
        if e.next.as_deref() == Some(e.number(b)?) {
            self.call(&["--delete-bootnext"])?;
        }
        Ok(())
    }

    fn set_primary(&mut self, b: &str) -> Result<(), BootError> {
        if !self.use_bootnext {
            return self.reorder(b, true);
        }
        let e = self.entries()?;
        let num = e.number(b)?.to_string();
        self.call(&["--bootnext", &num]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efibootmgr_output() {
        let text = "BootCurrent: 0001\nTimeout: 0 seconds\nBootNext: 0003\nBootOrder: 0001,0000,0003\n\
                    Boot0000* UiApp\tFvVol(7cb8bdc9)/FvFile(462caa21)\nBoot0001* A\tHD(1,GPT,..)/File(\\EFI\\BOOT\\BOOTX64.EFI)\n\
                    Boot0003  B\tHD(1,GPT,..)\nBootOrderX: 1\n";
        let e = Entries::parse(text).unwrap();
        assert_eq!(e.order, ["0001", "0000", "0003"]);
        assert_eq!(e.next.as_deref(), Some("0003"));
        assert_eq!(e.current.as_deref(), Some("0001"));
        assert_eq!(e.number("B").unwrap(), "0003", "an inactive entry (no '*') is still an entry");
        assert_eq!(e.number("A").unwrap(), "0001");
        assert!(e.number("C").is_err());
        assert!(Entries::parse("Boot0001* A\n").is_err(), "no BootOrder");
        // A description that is not ASCII where the number would be, a duplicate label.
        let e = Entries::parse("BootOrder: 0001\nBoot\u{e9}\u{e9}\u{e9}* A\nBoot0001* A\nBoot0002* A\n").unwrap();
        assert!(e.number("A").unwrap_err().to_string().contains("both labelled"));
    }
}
