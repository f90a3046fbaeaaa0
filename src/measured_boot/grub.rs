//! What GRUB (2.06 with `insmod tpm`) measures when it sources a slot's boot config, and
//! the PCR values that gives: the build-time prediction of a slot's reference values.
//! Pure: files come in as digests through a closure.
//!
//! The layout it predicts (images/guest/grub.cfg): the A/B selection runs before `insmod
//! tpm`, then `source /boot/grub.cfg` from the slot. From then on GRUB measures
//! - into PCR 8 each command as run, variables expanded, words joined by one space (event
//!   text `grub_cmd: ...`), and for `linux`/`linuxefi` the kernel command line: path and
//!   arguments (`kernel_cmdline: ...`); the digest is SHA-256 of the text after the prefix;
//! - into PCR 9 each file it reads: the sourced config, the kernel, each initrd.
//!
//! Each PCR starts at zero after a reset; an event extends it: `v = SHA-256(v || digest)`.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use thiserror::Error;

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PCR index.
    pub pcr: u8,
    /// The digest extended.
    pub digest: [u8; 32],
    /// What it is (the event text, or the file's name).
    pub what: String,
}

/// A slot config the prediction cannot follow.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GrubError {
    /// A command whose measurements are not modelled.
    #[error("line {line}: '{command}' is not predicted (only linux/linuxefi, initrd/initrdefi and boot are)")]
    Unsupported {
        /// Line number.
        line: usize,
        /// The command.
        command: String,
    },
    /// A variable without a value.
    #[error("line {line}: variable '{name}' has no value")]
    Unset {
        /// Line number.
        line: usize,
        /// Variable.
        name: String,
    },
    /// A command without its file argument.
    #[error("line {line}: '{command}' needs a file")]
    NoFile {
        /// Line number.
        line: usize,
        /// The command.
        command: String,
    },
    /// A file could not be read.
    #[error("{0}")]
    File(String),
}

impl crate::fault::Fault for GrubError {
    fn kind(&self) -> &'static str {
        "grub-config"
    }
    /// A slot's GRUB configuration the prediction cannot follow (build hosts).
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::FileCorrupted
    }
}

fn text_event(pcr: u8, text: &str, prefix: &str) -> Event {
    Event { pcr, digest: Sha256::digest(text.as_bytes()).into(), what: format!("{prefix}{text}") }
}

/// Expand `$name` and `${name}` (GRUB's variable syntax) in one word list.
fn expand(line: usize, s: &str, vars: &BTreeMap<String, String>) -> Result<String, GrubError> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let name: String = if chars.peek() == Some(&'{') {
            chars.next();
            chars.by_ref().take_while(|c| *c != '}').collect()
        } else {
            let mut n = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    n.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            n
        };
        out.push_str(vars.get(&name).ok_or(GrubError::Unset { line, name: name.clone() })?);
    }
    Ok(out)
}

/// The events of one boot of a slot: `source_command` (as the embedded config runs it),
/// the sourced config (`config_text`, whose file digest is `config_digest`), then each of
/// its commands with `vars` (e.g. `slot=A`). `file` gives the SHA-256 of a path GRUB reads.
pub fn slot_events(
    source_command: &str,
    config_text: &str,
    config_digest: [u8; 32],
    vars: &BTreeMap<String, String>,
    file: &dyn Fn(&str) -> Result<[u8; 32], String>,
) -> Result<Vec<Event>, GrubError> {
    let mut ev = vec![
        text_event(8, source_command, "grub_cmd: "),
        Event { pcr: 9, digest: config_digest, what: "the sourced config".into() },
    ];
    for (i, raw) in config_text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let words: Vec<String> = raw.split_whitespace().map(|w| expand(line, w, vars)).collect::<Result<_, _>>()?;
        let words: Vec<&str> = words.iter().map(String::as_str).filter(|w| !w.is_empty()).collect();
        let Some(&cmd) = words.first() else { continue };
        ev.push(text_event(8, &words.join(" "), "grub_cmd: "));
        let digest = |p: &str| file(p).map_err(GrubError::File);
        match cmd {
            "linux" | "linuxefi" => {
                let kernel = *words.get(1).ok_or(GrubError::NoFile { line, command: cmd.into() })?;
                ev.push(Event { pcr: 9, digest: digest(kernel)?, what: kernel.into() });
                ev.push(text_event(8, &words[1..].join(" "), "kernel_cmdline: "));
            }
            "initrd" | "initrdefi" => {
                if words.len() < 2 {
                    return Err(GrubError::NoFile { line, command: cmd.into() });
                }
                for f in &words[1..] {
                    ev.push(Event { pcr: 9, digest: digest(f)?, what: f.to_string() });
                }
            }
            "boot" => {}
            other => return Err(GrubError::Unsupported { line, command: other.into() }),
        }
    }
    Ok(ev)
}

/// The final value of `pcr` after `events`, from zero.
pub fn replay(events: &[Event], pcr: u8) -> [u8; 32] {
    events.iter().filter(|e| e.pcr == pcr).fold([0u8; 32], |v, e| {
        let mut h = Sha256::new();
        h.update(v);
        h.update(e.digest);
        h.finalize().into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_a_slot_config() {
        let cfg = "# comment\nlinuxefi /boot/vmlinuz console=ttyS0 rauc.slot=$slot  quiet\ninitrdefi /boot/initrd.img\nboot\n";
        let vars: BTreeMap<String, String> = [("slot".to_string(), "B".to_string())].into();
        let file = |p: &str| Ok(Sha256::digest(p.as_bytes()).into());
        let ev = slot_events("source /boot/grub.cfg", cfg, [7; 32], &vars, &file).unwrap();
        let texts: Vec<&str> = ev.iter().filter(|e| e.pcr == 8).map(|e| e.what.as_str()).collect();
        assert_eq!(
            texts,
            [
                "grub_cmd: source /boot/grub.cfg",
                "grub_cmd: linuxefi /boot/vmlinuz console=ttyS0 rauc.slot=B quiet",
                "kernel_cmdline: /boot/vmlinuz console=ttyS0 rauc.slot=B quiet",
                "grub_cmd: initrdefi /boot/initrd.img",
                "grub_cmd: boot",
            ]
        );
        assert_eq!(ev.iter().filter(|e| e.pcr == 9).count(), 3);
        assert_eq!(
            ev[2].digest,
            <[u8; 32]>::from(Sha256::digest(b"linuxefi /boot/vmlinuz console=ttyS0 rauc.slot=B quiet"))
        );
        // Replay: one event from zero is H(0^32 || d).
        let one = [Event { pcr: 8, digest: [1; 32], what: String::new() }];
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update([1u8; 32]);
        assert_eq!(replay(&one, 8), <[u8; 32]>::from(h.finalize()));
        assert_eq!(replay(&one, 9), [0; 32]);
        // What the prediction cannot follow is an error, not a guess.
        assert!(matches!(
            slot_events("s", "set x=1\n", [0; 32], &vars, &file),
            Err(GrubError::Unsupported { line: 1, .. })
        ));
        assert!(matches!(slot_events("s", "linux /k $nope\n", [0; 32], &vars, &file), Err(GrubError::Unset { .. })));
        assert!(matches!(slot_events("s", "initrd\n", [0; 32], &vars, &file), Err(GrubError::NoFile { .. })));
    }
}
