//! The reference values a package carries (`[meta.measured-boot]`, signed with the rest):
//!
//! ```text
//! pcr-bank=sha256
//! pcr.9=<64 hex>          expected final value, whichever slot boots
//! pcr.8.A=<64 hex>        expected final value when booted as bootname A
//! component.kernel=<64 hex>   per-component digests: logged, exposed, not sealed to
//! ```
//! Strict: a key this agent does not understand is an error, since the section decides
//! what the device's secrets will answer to.

use std::collections::BTreeMap;
use thiserror::Error;

/// Why a reference-values section was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// A key is not one of the forms above.
    #[error("[meta.measured-boot] {0}: unknown key")]
    UnknownKey(String),
    /// A value is not 64 hex digits.
    #[error("[meta.measured-boot] {key}: not a SHA-256 value (64 hex digits)")]
    BadValue {
        /// Key.
        key: String,
    },
    /// Only the SHA-256 bank is supported.
    #[error("[meta.measured-boot] pcr-bank={0}: only sha256 is supported")]
    Bank(String),
    /// A PCR index outside 0..=23.
    #[error("[meta.measured-boot] {0}: PCR index must be 0 to 23")]
    Index(String),
    /// The same PCR given for all slots and for one slot.
    #[error("[meta.measured-boot] PCR {0} is given both for every slot and per slot")]
    Both(u8),
    /// No PCR value at all.
    #[error("[meta.measured-boot] holds no pcr.N value")]
    Empty,
}

impl crate::fault::Fault for ReferenceError {
    fn kind(&self) -> &'static str {
        "reference-values"
    }
    /// A package's `[meta.measured-boot]` that does not parse: the file is malformed.
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::FileCorrupted
    }
}

/// Parsed reference values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceValues {
    /// `pcr.N`: the same whichever slot boots.
    pub common: BTreeMap<u8, [u8; 32]>,
    /// `pcr.N.<bootname>`: per slot.
    pub per_slot: BTreeMap<String, BTreeMap<u8, [u8; 32]>>,
    /// `component.<name>`.
    pub components: BTreeMap<String, [u8; 32]>,
}

fn hex32(key: &str, v: &str) -> Result<[u8; 32], ReferenceError> {
    hex::decode(v).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| ReferenceError::BadValue { key: key.to_string() })
}

fn index(key: &str, s: &str) -> Result<u8, ReferenceError> {
    s.parse::<u8>().ok().filter(|i| *i <= 23).ok_or_else(|| ReferenceError::Index(key.to_string()))
}

impl ReferenceValues {
    /// Parse the key/value pairs of the section.
    pub fn from_meta(meta: &BTreeMap<String, String>) -> Result<Self, ReferenceError> {
        let mut r = ReferenceValues::default();
        for (k, v) in meta {
            if k == "pcr-bank" {
                if v != "sha256" {
                    return Err(ReferenceError::Bank(v.clone()));
                }
            } else if let Some(name) = k.strip_prefix("component.").filter(|n| !n.is_empty()) {
                r.components.insert(name.to_string(), hex32(k, v)?);
            } else if let Some(rest) = k.strip_prefix("pcr.") {
                match rest.split_once('.') {
                    None => {
                        r.common.insert(index(k, rest)?, hex32(k, v)?);
                    }
                    Some((i, bootname)) if !bootname.is_empty() => {
                        r.per_slot.entry(bootname.to_string()).or_default().insert(index(k, i)?, hex32(k, v)?);
                    }
                    _ => return Err(ReferenceError::UnknownKey(k.clone())),
                }
            } else {
                return Err(ReferenceError::UnknownKey(k.clone()));
            }
        }
        for slot in r.per_slot.values() {
            if let Some(i) = slot.keys().find(|i| r.common.contains_key(i)) {
                return Err(ReferenceError::Both(*i));
            }
        }
        if r.common.is_empty() && r.per_slot.is_empty() {
            return Err(ReferenceError::Empty);
        }
        Ok(r)
    }

    /// The expected PCR values when booted as `bootname`, ascending by index: the input
    /// of that slot's policy branch.
    pub fn for_slot(&self, bootname: &str) -> Vec<(u8, [u8; 32])> {
        let mut v: BTreeMap<u8, [u8; 32]> = self.common.clone();
        if let Some(s) = self.per_slot.get(bootname) {
            v.extend(s.iter().map(|(i, d)| (*i, *d)));
        }
        v.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_the_section_and_selects_a_slot() {
        let a = "aa".repeat(32);
        let b = "bb".repeat(32);
        let c = "cc".repeat(32);
        let r = ReferenceValues::from_meta(&meta(&[
            ("pcr-bank", "sha256"),
            ("pcr.9", &c),
            ("pcr.8.A", &a),
            ("pcr.8.B", &b),
            ("component.kernel", &c),
        ]))
        .unwrap();
        assert_eq!(r.for_slot("A"), vec![(8, [0xaa; 32]), (9, [0xcc; 32])]);
        assert_eq!(r.for_slot("B")[0], (8, [0xbb; 32]));
        assert_eq!(r.components["kernel"], [0xcc; 32]);
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        let a = "aa".repeat(32);
        let e = |p: &[(&str, &str)]| ReferenceValues::from_meta(&meta(p)).unwrap_err();
        assert_eq!(e(&[("pcr-bank", "sha1"), ("pcr.9", &a)]), ReferenceError::Bank("sha1".into()));
        assert!(matches!(e(&[("pcr.24", &a)]), ReferenceError::Index(_)));
        assert!(matches!(e(&[("pcr.9", "00")]), ReferenceError::BadValue { .. }));
        assert!(matches!(e(&[("pcr.9", &a), ("extra", "1")]), ReferenceError::UnknownKey(_)));
        assert_eq!(e(&[("pcr.9", &a), ("pcr.9.A", &a)]), ReferenceError::Both(9));
        assert_eq!(e(&[("component.kernel", &a)]), ReferenceError::Empty);
    }
}
