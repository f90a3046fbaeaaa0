//! The TR-069 Annex E signed package format, as the standard defines it: the header,
//! the command list (every command type) and where the SignedData ends. No policy: what
//! this product accepts of it is [`super::profile`].

use super::Tr069Error;
use crate::package::PackageError;
use crate::source::Source;

/// The preamble, `2WIRE_SP`.
pub const MAGIC: &[u8; 8] = b"2WIRE_SP";
/// Header size.
pub const HEADER_LEN: usize = 24;
/// Largest signature block accepted (the annex lets readers assume header, commands and
/// signatures fit in 150 KB).
pub const MAX_SIGNATURE: usize = 128 * 1024;

/// Vendor command: compatible string (UTF-8), required.
pub const CMD_COMPATIBLE: u32 = 1000;
/// Vendor command: reference values (UTF-8 key-file text of `[meta.measured-boot]`).
pub const CMD_REFERENCE_VALUES: u32 = 1001;
/// Vendor command: anti-rollback security version (u32).
pub const CMD_SECURITY_VERSION: u32 = 1002;
/// Vendor command: other `[meta.<label>]` sections (UTF-8 key-file text).
pub const CMD_META: u32 = 1003;
/// Hash type SHA-1 (the annex's only defined value).
pub const HASH_SHA1: u32 = 1;
/// Hash type SHA-256 (this profile's default).
pub const HASH_SHA256: u32 = 3;

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Major version (1).
    pub major: u32,
    /// Minor version (0; others accepted).
    pub minor: u32,
    /// Command list length.
    pub command_len: u32,
    /// Payload length.
    pub payload_len: u32,
}

/// An Extract or Add File command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCommand {
    /// Flags (bit 0: unsafe).
    pub flags: u32,
    /// Target path.
    pub path: String,
    /// Hash type (1 SHA-1, 3 SHA-256 in this profile).
    pub hash_type: u32,
    /// Hash bytes.
    pub hash: Vec<u8>,
    /// Offset from the start of the payload.
    pub offset: u32,
    /// Length.
    pub len: u32,
}

/// One command of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// 0.
    End,
    /// 1 (false) / 2 (true: versioned).
    Extract(FileCommand, bool),
    /// 3 / 4.
    Add(FileCommand, bool),
    /// 5 / 6 (flags, path; versioned flag).
    Remove(u32, String, bool),
    /// 7.
    RemoveSubTree(u32, String),
    /// 8 / 9 (flags, source, destination, versioned).
    Move(u32, String, String, bool),
    /// 10.
    Version(String),
    /// 11.
    Description(String),
    /// 12-15 (type, seconds).
    Timeout(u32, u32),
    /// 16.
    Reboot,
    /// 17.
    FormatFileSystem,
    /// 18.
    MinVersion(Vec<u32>),
    /// 19.
    MaxVersion(Vec<u32>),
    /// 20.
    Role(u32),
    /// 21.
    MinNonVolatile(u32),
    /// 22.
    MinVolatile(u32),
    /// 25 (defining entity, class, values).
    RequiredAttributes(u32, u32, Vec<u32>),
    /// 1000-9999 and any unknown type, kept as raw value.
    Other(u32, Vec<u8>),
}

impl Command {
    pub(super) fn name(&self) -> String {
        match self {
            Self::Extract(f, v) => format!("Extract{} File {}", if *v { " Versioned" } else { "" }, f.path),
            Self::Add(f, v) => format!("Add{} File {}", if *v { " Versioned" } else { "" }, f.path),
            Self::Remove(_, p, v) => {
                format!("Remove{} File {p}", if *v { " Versioned" } else { "" })
            }
            Self::RemoveSubTree(_, p) => format!("Remove Sub-Tree {p}"),
            Self::Move(_, s, d, _) => format!("Move File {s} -> {d}"),
            other => format!("{other:?}"),
        }
    }
}

/// A structurally valid package (not yet authenticated).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The header.
    pub header: Header,
    /// `header || command list`: what the signatures cover.
    pub signed: Vec<u8>,
    /// The SignedData DER.
    pub signature: Vec<u8>,
    /// Offset of the payload in the file.
    pub payload_start: u64,
}

/// Parse the header and locate the signature and payload; checks the total length.
pub fn parse(src: &dyn Source) -> Result<Parsed, PackageError> {
    let len = src.len();
    let mut h = [0u8; HEADER_LEN];
    if len < HEADER_LEN as u64 {
        return Err(PackageError::Truncated(format!("{len} bytes, shorter than the TR-069 header")));
    }
    src.read_exact_at(&mut h, 0).map_err(PackageError::Io)?;
    if &h[..8] != MAGIC {
        return Err(Tr069Error::Header("preamble is not 2WIRE_SP".into()).into());
    }
    let be = |o: usize| u32::from_be_bytes(h[o..o + 4].try_into().expect("4 bytes"));
    let header = Header { major: be(8), minor: be(12), command_len: be(16), payload_len: be(20) };
    if header.major != 1 {
        return Err(Tr069Error::Header(format!("major version {} (only 1 is defined)", header.major)).into());
    }
    if header.command_len >= 65536 {
        return Err(
            Tr069Error::Header(format!("command list length {} must be below 65536", header.command_len)).into()
        );
    }
    let sig_start = HEADER_LEN as u64 + header.command_len as u64;
    // The signature's own DER length gives its size.
    let mut tl = [0u8; 6];
    let got = src.read_at(&mut tl, sig_start).map_err(PackageError::Io)?;
    let sig_len = der_total_len(&tl[..got]).map_err(|w| PackageError::from(Tr069Error::SignatureBlock(w)))?;
    if sig_len > MAX_SIGNATURE as u64 {
        return Err(Tr069Error::SignatureBlock(format!("{sig_len} bytes exceeds the limit of {MAX_SIGNATURE}")).into());
    }
    let expected = sig_start + sig_len + header.payload_len as u64;
    if len != expected {
        return Err(Tr069Error::Length { actual: len, expected }.into());
    }
    let mut signed = vec![0u8; sig_start as usize];
    src.read_exact_at(&mut signed, 0).map_err(PackageError::Io)?;
    let mut signature = vec![0u8; sig_len as usize];
    src.read_exact_at(&mut signature, sig_start).map_err(PackageError::Io)?;
    Ok(Parsed { header, signed, signature, payload_start: sig_start + sig_len })
}

/// Total length of the DER element starting with `b` (tag, definite length, content).
fn der_total_len(b: &[u8]) -> Result<u64, String> {
    match b {
        [] | [_] => Err("missing".into()),
        [0x30, l, ..] if *l < 0x80 => Ok(2 + *l as u64),
        [0x30, 0x80, ..] => Err("indefinite length (BER) is not DER".into()),
        [0x30, l, rest @ ..] => {
            let n = (*l & 0x7f) as usize;
            if n > 4 || rest.len() < n {
                return Err("length field too long".into());
            }
            let v = rest[..n].iter().fold(0u64, |a, x| a << 8 | *x as u64);
            Ok(2 + n as u64 + v)
        }
        _ => Err("does not start with a DER SEQUENCE".into()),
    }
}

/// Parse the command list (every type of the annex; unknown types kept raw).
pub fn parse_commands(list: &[u8]) -> Result<Vec<Command>, Tr069Error> {
    let mut cmds = Vec::new();
    let mut rest = list;
    let mut index = 0;
    while !rest.is_empty() {
        if rest.len() < 8 {
            return Err(Tr069Error::CommandList(format!("{} stray bytes at the end", rest.len())));
        }
        let ty = u32::from_be_bytes(rest[0..4].try_into().expect("4"));
        let len = u32::from_be_bytes(rest[4..8].try_into().expect("4")) as usize;
        if len > rest.len() - 8 {
            return Err(Tr069Error::CommandList(format!(
                "command {index} (type {ty}) claims {len} bytes, {} remain",
                rest.len() - 8
            )));
        }
        let value = &rest[8..8 + len];
        rest = &rest[8 + len..];
        let err = |what: String| Tr069Error::Command { index, ty, what };
        let cmd = parse_command(ty, value).map_err(err)?;
        let end = cmd == Command::End;
        cmds.push(cmd);
        index += 1;
        if end {
            if !rest.is_empty() {
                return Err(Tr069Error::CommandList(format!("{} bytes after End", rest.len())));
            }
            break;
        }
    }
    if let Some(pos) = cmds.iter().position(|c| *c == Command::Reboot) {
        if cmds[pos + 1..].iter().any(|c| *c != Command::End) {
            return Err(Tr069Error::CommandList("Reboot must be the last command before End".into()));
        }
    }
    Ok(cmds)
}

pub(super) fn u32_value(v: &[u8]) -> Result<u32, String> {
    v.try_into().map(u32::from_be_bytes).map_err(|_| format!("value of {} bytes, 4 expected", v.len()))
}

pub(super) fn u32_array(v: &[u8]) -> Result<Vec<u32>, String> {
    if v.is_empty() || !v.len().is_multiple_of(4) {
        return Err(format!("value of {} bytes is not a non-empty array of u32", v.len()));
    }
    Ok(v.chunks(4).map(|c| u32::from_be_bytes(c.try_into().expect("4"))).collect())
}

pub(super) fn utf8(v: &[u8]) -> Result<String, String> {
    String::from_utf8(v.to_vec()).map_err(|_| "not UTF-8".to_string())
}

/// `(offset, length)` fields at `at` within `v`, returning the bytes they point to.
fn slice_field(v: &[u8], at: usize, what: &str) -> Result<Vec<u8>, String> {
    let off = u32_value(&v[at..at + 4])? as usize;
    let len = u32_value(&v[at + 4..at + 8])? as usize;
    v.get(off..off.checked_add(len).ok_or("overflow")?)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("{what} (offset {off}, length {len}) lies outside the {}-byte value", v.len()))
}

fn path_field(v: &[u8], at: usize, what: &str) -> Result<String, String> {
    let p = utf8(&slice_field(v, at, what)?)?;
    if p.is_empty() || p.contains('\0') {
        return Err(format!("{what} is empty or contains NUL"));
    }
    Ok(p)
}

fn parse_command(ty: u32, v: &[u8]) -> Result<Command, String> {
    let need = |n: usize| {
        if v.len() < n {
            Err(format!("value of {} bytes, at least {n} expected", v.len()))
        } else {
            Ok(())
        }
    };
    let empty = || {
        if v.is_empty() {
            Ok(())
        } else {
            Err(format!("value of {} bytes, none expected", v.len()))
        }
    };
    Ok(match ty {
        0 => {
            empty()?;
            Command::End
        }
        1..=4 => {
            need(32)?;
            let f = FileCommand {
                flags: u32_value(&v[0..4])?,
                path: path_field(v, 4, "path")?,
                hash_type: u32_value(&v[12..16])?,
                hash: slice_field(v, 16, "hash")?,
                offset: u32_value(&v[24..28])?,
                len: u32_value(&v[28..32])?,
            };
            if ty <= 2 {
                Command::Extract(f, ty == 2)
            } else {
                Command::Add(f, ty == 4)
            }
        }
        5..=7 => {
            need(12)?;
            let flags = u32_value(&v[0..4])?;
            let p = path_field(v, 4, "path")?;
            match ty {
                7 => Command::RemoveSubTree(flags, p),
                _ => Command::Remove(flags, p, ty == 6),
            }
        }
        8 | 9 => {
            need(20)?;
            Command::Move(
                u32_value(&v[0..4])?,
                path_field(v, 4, "source path")?,
                path_field(v, 12, "destination path")?,
                ty == 9,
            )
        }
        10 => Command::Version(utf8(v)?),
        11 => Command::Description(utf8(v)?),
        12..=15 => Command::Timeout(ty, u32_value(v)?),
        16 => {
            empty()?;
            Command::Reboot
        }
        17 => {
            empty()?;
            Command::FormatFileSystem
        }
        18 => Command::MinVersion(u32_array(v)?),
        19 => Command::MaxVersion(u32_array(v)?),
        20 => Command::Role(u32_value(v)?),
        21 => Command::MinNonVolatile(u32_value(v)?),
        22 => Command::MinVolatile(u32_value(v)?),
        25 => {
            need(8)?;
            let rest = &v[8..];
            if !rest.len().is_multiple_of(4) {
                return Err("attribute array is not a whole number of u32".into());
            }
            Command::RequiredAttributes(
                u32_value(&v[0..4])?,
                u32_value(&v[4..8])?,
                rest.chunks(4).map(|c| u32::from_be_bytes(c.try_into().expect("4"))).collect(),
            )
        }
        other => Command::Other(other, v.to_vec()),
    })
}
