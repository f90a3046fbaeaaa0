//! A URL and its options from a D-Bus caller, as a [`Remote`]: `DownloadUrl`'s options
//! (TR-069 Download arguments) and RAUC's streaming arguments of `InstallBundle`. Files
//! they name (`tls-ca`, `tls-cert`, `tls-key`) are read with the caller's rights.

use super::caller::{self, Caller};
use super::henb::Error;
use crate::download::{Options, Remote, MAX_PEM};
use crate::fault::{CwmpFault, Failure};
use std::collections::HashMap;
use std::time::Duration;
use zbus::{OwnedVariant, Variant as Value};

fn invalid(m: String) -> Error {
    Failure::new("invalid", CwmpFault::InvalidArguments, m).into()
}

/// Which face's names apply.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Face {
    /// org.henb.Update1 `DownloadUrl`: `username`, `password`, `tls-ca`, `tls-cert`,
    /// `tls-key`, `http-headers`, `file-size`, `timeout`.
    Henb,
    /// RAUC's `InstallBundle`/`InspectBundle`: `tls-ca`, `tls-cert`, `tls-key`,
    /// `http-headers`, `tls-no-verify` (its other arguments are checked by the caller).
    Rauc,
}

fn text(key: &str, v: &OwnedVariant) -> Result<String, Error> {
    match &**v {
        Value::Str(s) => Ok(s.to_string()),
        _ => Err(invalid(format!("{key}: a string (s)"))),
    }
}

fn number(key: &str, v: &OwnedVariant) -> Result<u64, Error> {
    match &**v {
        Value::U64(n) => Ok(*n),
        Value::U32(n) => Ok(u64::from(*n)),
        Value::I64(n) if *n >= 0 => Ok(*n as u64),
        Value::I32(n) if *n >= 0 => Ok(*n as u64),
        _ => Err(invalid(format!("{key}: an unsigned number (t or u)"))),
    }
}

fn strings(key: &str, v: &OwnedVariant) -> Result<Vec<String>, Error> {
    match &**v {
        Value::Array(a) => a
            .iter()
            .map(|e| match e {
                Value::Str(s) => Ok(s.to_string()),
                _ => Err(invalid(format!("{key}: an array of strings (as)"))),
            })
            .collect(),
        _ => Err(invalid(format!("{key}: an array of strings (as)"))),
    }
}

/// A PEM file named by the caller, read with the caller's rights.
fn caller_pem(who: &Caller, key: &str, path: &str) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let f = caller::open_path(who, path)?;
    let mut v = Vec::new();
    f.take(MAX_PEM + 1)
        .read_to_end(&mut v)
        .map_err(|e| Error::from(Failure::new("access", CwmpFault::UnableToAccessFile, format!("{key}: {e}"))))?;
    if v.len() as u64 > MAX_PEM {
        return Err(invalid(format!("{key}: larger than {MAX_PEM} bytes")));
    }
    Ok(v)
}

/// The [`Remote`] for `url` with `options` from `who`; keys not of `face` are refused,
/// `skip` are left to the caller.
pub(super) fn remote(
    who: &Caller,
    url: &str,
    options: &HashMap<String, OwnedVariant>,
    face: Face,
    skip: &[&str],
) -> Result<Remote, Error> {
    crate::download::check_url(url).map_err(|e| Error::from(Failure::from_fault(&e)))?;
    let mut o = Options::default();
    for (k, val) in options {
        let v = val;
        match (face, k.as_str()) {
            (_, s) if skip.contains(&s) => {}
            (Face::Henb, "username") => o.username = Some(text(k, v)?),
            (Face::Henb, "password") => o.password = Some(text(k, v)?),
            (Face::Henb, "file-size") => o.file_size = Some(number(k, v)?),
            (Face::Henb, "timeout") => match number(k, v)? {
                s @ 1..=86400 => o.idle_timeout = Some(Duration::from_secs(s)),
                _ => return Err(invalid("timeout: seconds, more than 0 and at most 86400".into())),
            },
            (Face::Rauc, "tls-no-verify") => match &**v {
                Value::Bool(b) => o.tls_no_verify = *b,
                _ => return Err(invalid("tls-no-verify: a boolean (b)".into())),
            },
            (_, "tls-ca") => o.tls_ca = Some(caller_pem(who, k, &text(k, v)?)?),
            (_, "tls-cert") => o.tls_cert = Some(caller_pem(who, k, &text(k, v)?)?),
            (_, "tls-key") => o.tls_key = Some(caller_pem(who, k, &text(k, v)?)?),
            (_, "http-headers") => o.headers = strings(k, v)?,
            (_, other) => return Err(invalid(format!("unsupported option '{other}'"))),
        }
    }
    crate::download::extra_headers(&o.headers).map_err(|e| Error::from(Failure::from_fault(&e)))?;
    if o.tls_cert.is_some() != o.tls_key.is_some() {
        return Err(invalid("tls-cert and tls-key go together".into()));
    }
    Ok(Remote { url: url.to_string(), options: o })
}
