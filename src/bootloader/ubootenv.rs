//! The U-Boot environment, read and written the way U-Boot and libubootenv
//! (`fw_printenv`/`fw_setenv`) do: the layout comes from the same `fw_env.config`
//! (`device offset size` per copy), each copy is `CRC32 [flag] data`, data is
//! `name=value\0…\0`.
//!
//! With two copies (redundant environment) a write goes to the copy that is not current,
//! with the flag one above the current copy's, then fsync: a power cut leaves the old copy
//! current. A single copy in a regular file is replaced atomically (temp, fsync, rename);
//! a single copy on a raw device cannot be, which is why a redundant environment is
//! recommended there.

use super::{uboot, BootError, BootState, Bootloader, Env, Slots};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One copy of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Device or file.
    pub device: PathBuf,
    /// Offset of the copy.
    pub offset: u64,
    /// Size of the copy (CRC, flag and data).
    pub size: usize,
}

/// Parse `fw_env.config`: one or two `device offset size [sector-size [sectors]]` lines.
pub fn parse_config(text: &str, path: &str) -> Result<Vec<Copy>, BootError> {
    let bad = |why: String| BootError::Invalid { path: path.into(), why };
    let num = |s: &str| -> Option<u64> {
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        }
    };
    let mut copies = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            return Err(bad(format!("line {}: expected 'device offset size'", i + 1)));
        }
        let offset = num(f[1]).ok_or_else(|| bad(format!("line {}: offset {:?}", i + 1, f[1])))?;
        let size = num(f[2])
            .filter(|s| (16..=1 << 24).contains(s))
            .ok_or_else(|| bad(format!("line {}: size {:?}", i + 1, f[2])))?;
        copies.push(Copy { device: PathBuf::from(f[0]), offset, size: size as usize });
    }
    match copies.len() {
        1 => Ok(copies),
        2 if copies[0].size == copies[1].size => Ok(copies),
        2 => Err(bad("the two copies differ in size".into())),
        n => Err(bad(format!("{n} environment copies (one or two expected)"))),
    }
}

/// Stored `name=value` entries, as bytes, in stored order.
type Entries = Vec<Vec<u8>>;

/// The entries of `name=value\0…\0` data, as bytes, in stored order (the double NUL
/// ends the list).
pub fn entries(data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|&c| c == 0).take_while(|e| !e.is_empty()).map(<[u8]>::to_vec).collect()
}

/// Parse `name=value\0…\0` data into variables (a value that is not UTF-8 is shown with
/// replacement characters; [`apply`] never rewrites a variable it does not change).
pub fn parse_data(data: &[u8]) -> Env {
    let mut env = Env::default();
    for entry in entries(data) {
        let s = String::from_utf8_lossy(&entry);
        if let Some((k, v)) = s.split_once('=') {
            env.set(k, v);
        }
    }
    env
}

/// Change stored `entries` so that their variables become `env`, touching only the
/// variables that differ from `old` (what `entries` parsed to): a changed value is
/// replaced where it stands, a new variable is appended, a removed one is dropped. Every
/// other entry stays byte for byte, in its order.
///
/// Errors: [`BootError::Invalid`] for a name or value U-Boot cannot store.
pub fn apply(entries: &mut Vec<Vec<u8>>, old: &Env, env: &Env, path: &str) -> Result<(), BootError> {
    let name_of = |e: &[u8]| e.iter().position(|&c| c == b'=').map(|i| e[..i].to_vec());
    for (k, v) in &env.0 {
        if old.get(k) == Some(v.as_str()) {
            continue;
        }
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(BootError::Invalid { path: path.into(), why: format!("invalid variable {k:?}") });
        }
        let entry = [k.as_bytes(), b"=", v.as_bytes()].concat();
        // Later entries of the same name would win when U-Boot imports the data: the
        // first takes the value, the others go.
        match entries.iter().position(|e| name_of(e).as_deref() == Some(k.as_bytes())) {
            Some(i) => {
                entries[i] = entry;
                let mut n = 0;
                entries.retain(|e| {
                    n += 1;
                    n <= i + 1 || name_of(e).as_deref() != Some(k.as_bytes())
                });
            }
            None => entries.push(entry),
        }
    }
    for (k, _) in &old.0 {
        if env.get(k).is_none() {
            entries.retain(|e| name_of(e).as_deref() != Some(k.as_bytes()));
        }
    }
    Ok(())
}

fn serialize_data(entries: &[Vec<u8>], len: usize, path: &str) -> Result<Vec<u8>, BootError> {
    let mut d = Vec::with_capacity(len);
    for e in entries {
        d.extend_from_slice(e);
        d.push(0);
    }
    d.push(0);
    if d.len() > len {
        return Err(BootError::Invalid {
            path: path.into(),
            why: format!("variables need {} bytes, the environment has {len}", d.len()),
        });
    }
    d.resize(len, 0);
    Ok(d)
}

/// libubootenv's rule for two valid copies: the higher flag is newer, except that 0
/// follows 255 (the flag wraps); equal flags keep the first copy.
pub fn second_is_newer(first: u8, second: u8) -> bool {
    match (first, second) {
        (255, 0) => true,
        (0, 255) => false,
        (a, b) => b > a,
    }
}

/// A U-Boot environment with RAUC's U-Boot semantics.
pub struct UbootEnv {
    copies: Vec<Copy>,
    slots: Slots,
}

struct Current {
    /// The stored entries, as bytes.
    entries: Vec<Vec<u8>>,
    /// Index of the current copy and its flag (redundant only).
    index: usize,
    flag: u8,
}

impl UbootEnv {
    /// The environment described by the fw_env.config at `config`.
    pub fn open(config: &Path, slots: Slots) -> Result<Self, BootError> {
        let text = std::fs::read_to_string(config)
            .map_err(|source| BootError::Io { path: config.display().to_string(), source })?;
        Ok(Self { copies: parse_config(&text, &config.display().to_string())?, slots })
    }

    fn redundant(&self) -> bool {
        self.copies.len() == 2
    }

    fn header(&self) -> usize {
        if self.redundant() {
            5
        } else {
            4
        }
    }

    fn read_copy(&self, c: &Copy) -> Result<Option<(Entries, u8)>, BootError> {
        let name = c.device.display().to_string();
        let f = std::fs::File::open(&c.device).map_err(|source| BootError::Io { path: name.clone(), source })?;
        let mut b = vec![0u8; c.size];
        f.read_exact_at(&mut b, c.offset).map_err(|source| BootError::Io { path: name, source })?;
        let crc = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
        let data = &b[self.header()..];
        if crc32fast::hash(data) != crc {
            return Ok(None);
        }
        Ok(Some((entries(data), if self.redundant() { b[4] } else { 0 })))
    }

    fn current(&self) -> Result<Current, BootError> {
        let a = self.read_copy(&self.copies[0])?;
        let b = if self.redundant() { self.read_copy(&self.copies[1])? } else { None };
        let pick_b = match (&a, &b) {
            (Some((_, fa)), Some((_, fb))) => second_is_newer(*fa, *fb),
            (None, Some(_)) => true,
            _ => false,
        };
        let (index, chosen) = if pick_b { (1, b) } else { (0, a) };
        let (entries, flag) = chosen.ok_or_else(|| BootError::Invalid {
            path: self.copies[0].device.display().to_string(),
            why: "no environment copy has a valid CRC (initialize it with fw_setenv first; refusing to write a new one that would drop U-Boot's defaults)".into(),
        })?;
        Ok(Current { entries, index, flag })
    }

    /// Read the current variables.
    pub fn read(&self) -> Result<Env, BootError> {
        Ok(parse_data(&self.current()?.entries.join(&0u8)))
    }

    fn update(&self, f: impl FnOnce(&mut Env)) -> Result<(), BootError> {
        let mut cur = self.current()?;
        let old = parse_data(&cur.entries.join(&0u8));
        let mut env = old.clone();
        f(&mut env);
        let target = if self.redundant() { 1 - cur.index } else { 0 };
        let c = &self.copies[target];
        let name = c.device.display().to_string();
        apply(&mut cur.entries, &old, &env, &name)?;
        let data = serialize_data(&cur.entries, c.size - self.header(), &name)?;
        let mut block = crc32fast::hash(&data).to_le_bytes().to_vec();
        if self.redundant() {
            block.push(cur.flag.wrapping_add(1));
        }
        block.extend_from_slice(&data);
        let io = |source| BootError::Io { path: name.clone(), source };
        let is_file = std::fs::metadata(&c.device).map_err(io)?.is_file();
        if !self.redundant() && is_file {
            let mut whole = std::fs::read(&c.device).map_err(io)?;
            let end = c.offset as usize + c.size;
            if whole.len() < end {
                whole.resize(end, 0);
            }
            whole[c.offset as usize..end].copy_from_slice(&block);
            return crate::fsutil::write_atomic(&c.device, &whole).map_err(io);
        }
        let f = OpenOptions::new().write(true).open(&c.device).map_err(io)?;
        f.write_all_at(&block, c.offset).map_err(io)?;
        f.sync_all().map_err(io)
    }
}

impl Bootloader for UbootEnv {
    fn primary(&mut self) -> Result<Option<String>, BootError> {
        uboot::primary(&self.read()?, &self.slots)
    }
    fn state(&mut self, b: &str) -> Result<BootState, BootError> {
        uboot::state(&self.read()?, b)
    }
    fn set_state(&mut self, b: &str, good: bool) -> Result<(), BootError> {
        let slots = self.slots.clone();
        self.update(|e| uboot::set_state(e, b, good, &slots))
    }
    fn set_primary(&mut self, b: &str) -> Result<(), BootError> {
        let slots = self.slots.clone();
        self.update(|e| uboot::set_primary(e, b, &slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_wrap_around() {
        assert!(second_is_newer(1, 2));
        assert!(!second_is_newer(2, 1));
        assert!(second_is_newer(255, 0));
        assert!(!second_is_newer(0, 255));
        assert!(!second_is_newer(7, 7));
    }

    #[test]
    fn config_lines() {
        let c =
            parse_config("# comment\n/dev/mmcblk0 0x3f8000 0x4000 0x200\n/dev/mmcblk0 0x3fc000 0x4000\n", "t").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].offset, 0x3fc000);
        assert!(parse_config("/dev/x 0 0x4000\n/dev/y 0 0x2000\n", "t").is_err());
        assert!(parse_config("", "t").is_err());
    }
}
