//! The TCG2 (crypto-agile) event log the firmware and GRUB leave for the kernel
//! (`/sys/kernel/security/tpm0/binary_bios_measurements`): parsed to compare a predicted
//! boot with what was measured. Pure; bounds-checked; a malformed log is an error.

use thiserror::Error;

/// One logged measurement (SHA-256 bank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// PCR index.
    pub pcr: u32,
    /// Event type (EV_IPL = 0x0D for GRUB's).
    pub event_type: u32,
    /// The SHA-256 digest extended.
    pub sha256: [u8; 32],
    /// Event data (for GRUB: the text or file name, NUL-terminated).
    pub data: Vec<u8>,
}

/// A log this parser cannot read.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("event log: {0}")]
pub struct LogError(String);

impl crate::fault::Fault for LogError {
    fn kind(&self) -> &'static str {
        "event-log"
    }
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::FileCorrupted
    }
}

struct Reader<'a> {
    b: &'a [u8],
    off: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        let end = self
            .off
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| LogError(format!("truncated at {}", self.off)))?;
        let s = &self.b[self.off..end];
        self.off = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, LogError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, LogError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
}

const ALG_SHA256: u16 = 0x000B;

/// Parse a crypto-agile log: the SHA-1-format header event carrying "Spec ID Event03" with
/// the digest sizes, then TCG_PCR_EVENT2 records. Returns the SHA-256 digest of each.
pub fn parse(b: &[u8]) -> Result<Vec<LoggedEvent>, LogError> {
    let mut r = Reader { b, off: 0 };
    // TCG_PCR_EVENT: pcr, type, sha1[20], size, data (the Spec ID event).
    r.u32()?;
    r.u32()?;
    r.take(20)?;
    let n = r.u32()? as usize;
    let spec = r.take(n)?;
    if !spec.starts_with(b"Spec ID Event03\0") || spec.len() < 28 {
        return Err(LogError("not a crypto-agile log (no Spec ID Event03)".into()));
    }
    let count = u32::from_le_bytes(spec[24..28].try_into().expect("4 bytes")) as usize;
    let mut sizes = Vec::new();
    for i in 0..count {
        let at = 28 + i * 4;
        let e = spec.get(at..at + 4).ok_or_else(|| LogError("Spec ID Event03 truncated".into()))?;
        sizes.push((u16::from_le_bytes([e[0], e[1]]), u16::from_le_bytes([e[2], e[3]]) as usize));
    }
    let mut out = Vec::new();
    while r.off < b.len() {
        let pcr = r.u32()?;
        let event_type = r.u32()?;
        let digests = r.u32()?;
        let mut sha256 = None;
        for _ in 0..digests {
            let alg = r.u16()?;
            let size = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, s)| *s)
                .ok_or_else(|| LogError(format!("digest algorithm {alg:#06x} not declared")))?;
            let d = r.take(size)?;
            if alg == ALG_SHA256 {
                sha256 = Some(d.try_into().map_err(|_| LogError("SHA-256 digest is not 32 bytes".into()))?);
            }
        }
        let n = r.u32()? as usize;
        let data = r.take(n)?.to_vec();
        let sha256 = sha256.ok_or_else(|| LogError(format!("event at PCR {pcr} has no SHA-256 digest")))?;
        out.push(LoggedEvent { pcr, event_type, sha256, data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measured_boot::grub;
    use std::collections::BTreeMap;

    /// A log recorded from the VM test image (slot A): GRUB's PCR 8 and 9 events are
    /// exactly what `grub::slot_events` predicts from the slot's files, text and digest,
    /// in order, and replaying them gives the PCR values the guest read.
    #[test]
    fn predicted_grub_events_equal_a_recorded_log() {
        let log = parse(include_bytes!("../../tests/fixtures/grub-eventlog-A.bin")).unwrap();
        let f: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/grub-eventlog-A.json")).unwrap();
        let hex32 =
            |v: &serde_json::Value| -> [u8; 32] { hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap() };
        let files = f["files"].clone();
        let file = move |p: &str| files.get(p).map(&hex32).ok_or_else(|| format!("{p}: not in the fixture"));
        let vars: BTreeMap<String, String> = [("slot".to_string(), f["slot"].as_str().unwrap().to_string())].into();
        let predicted = grub::slot_events(
            f["source-command"].as_str().unwrap(),
            f["config"].as_str().unwrap(),
            hex32(&f["config-sha256"]),
            &vars,
            &file,
        )
        .unwrap();
        for pcr in [8u8, 9] {
            let logged: Vec<&LoggedEvent> = log.iter().filter(|e| e.pcr == pcr as u32).collect();
            let mine: Vec<&grub::Event> = predicted.iter().filter(|e| e.pcr == pcr).collect();
            assert_eq!(logged.len(), mine.len(), "PCR {pcr}: number of events");
            for (l, m) in logged.iter().zip(&mine) {
                assert_eq!(l.sha256, m.digest, "PCR {pcr}: {}", String::from_utf8_lossy(&l.data));
                if pcr == 8 {
                    assert_eq!(l.data, format!("{}\0", m.what).into_bytes(), "PCR 8 event text");
                }
            }
        }
        // The values the guest read from /sys/class/tpm/tpm0/pcr-sha256 on that boot.
        assert_eq!(
            hex::encode(grub::replay(&predicted, 8)),
            "2beccbe25ec251087a37ee3718bbbc8987f6db8a6dcf1642543c29b9936daa6a"
        );
        assert_eq!(
            hex::encode(grub::replay(&predicted, 9)),
            "12fa656e31141c9fe2a746516ef24decd61fd0b949fd1c3b44ec7c226ae7098d"
        );
        // Firmware events are there too (PCR 0-7), and a truncated log is an error.
        assert!(log.iter().any(|e| e.pcr < 8));
        let bytes = include_bytes!("../../tests/fixtures/grub-eventlog-A.bin");
        assert!(parse(&bytes[..bytes.len() - 3]).is_err());
        assert!(parse(&bytes[..40]).is_err());
    }
}
