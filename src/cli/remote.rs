//! The package argument of `install` and `info`: a path, or a URL with what fetching it
//! needs (TR-069 Download's Username/Password/FileSize, RAUC's streaming arguments).

use crate::download::{self, Options, Remote};
use crate::fault::{CwmpFault, Failure};
use crate::install::Input;
use crate::source::{open_package, PackageOrigin};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Default)]
pub(super) struct RemoteArgs {
    /// HTTP user name for a URL (Basic or Digest authentication).
    #[arg(long, value_name = "NAME")]
    username: Option<String>,
    /// File holding the HTTP password (its first line), so it stays out of `ps`.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// CA certificates (PEM) the file server's certificate must chain to, instead of
    /// `[streaming] tls-ca` or the system's.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(long = "http-header", value_name = "HEADER")]
    http_headers: Vec<String>,
    /// The largest size the file may have, in bytes (TR-069 FileSize).
    #[arg(long, value_name = "BYTES")]
    file_size: Option<u64>,
    /// Seconds without a byte from the server before a retry, instead of
    /// `[download] idle-timeout`.
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<f64>,
    /// Do not check the server's certificate (only where `[download]
    /// allow-tls-no-verify` allows it).
    #[arg(long)]
    tls_no_verify: bool,
}

fn invalid(m: String) -> Failure {
    Failure::new("invalid", CwmpFault::InvalidArguments, m)
}

impl RemoteArgs {
    /// DownloadUrl's options, for the D-Bus client: paths made absolute (the service
    /// opens them with the caller's rights), the password read here.
    pub(super) fn url_options(&self) -> Result<HashMap<&'static str, zbus::Variant<'static>>, String> {
        let mut o = HashMap::new();
        if self.tls_no_verify {
            return Err("--tls-no-verify: DownloadUrl has no such option".into());
        }
        if let Some(u) = &self.username {
            o.insert("username", zbus::Variant::from(u.clone()));
        }
        if let Some(p) = self.password()? {
            o.insert("password", zbus::Variant::from(p));
        }
        for (key, p) in [("tls-ca", &self.tls_ca), ("tls-cert", &self.tls_cert), ("tls-key", &self.tls_key)] {
            if let Some(p) = p {
                let abs = std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?;
                o.insert(key, zbus::Variant::from(abs.display().to_string()));
            }
        }
        if !self.http_headers.is_empty() {
            o.insert("http-headers", zbus::Variant::from(self.http_headers.clone()));
        }
        if let Some(n) = self.file_size {
            o.insert("file-size", zbus::Variant::from(n));
        }
        if let Some(t) = self.idle_timeout {
            let secs = t.ceil();
            if !(1.0..=86400.0).contains(&secs) {
                return Err(format!("--idle-timeout {t}: seconds, more than 0 and at most 86400"));
            }
            o.insert("timeout", zbus::Variant::from(secs as u32));
        }
        Ok(o)
    }

    /// The password from `--password-file` (its first line).
    fn password(&self) -> Result<Option<String>, String> {
        match &self.password_file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                Ok(Some(text.lines().next().unwrap_or("").to_string()))
            }
            None => Ok(None),
        }
    }

    /// The package named `package`: a URL becomes a [`Remote`] (its files read with this
    /// user's rights), anything else is opened as a local file.
    pub(super) fn input(&self, package: &str) -> Result<Input, Failure> {
        if !download::is_url(package) {
            let file = open_package(PackageOrigin::Path(Path::new(package))).map_err(|e| Failure::from_fault(&e))?;
            return Ok(Input::File(file));
        }
        let pem = |p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, Failure> {
            p.as_deref().map(download::read_pem).transpose().map_err(|e| Failure::from_fault(&e))
        };
        let password = self.password().map_err(invalid)?;
        let idle_timeout = match self.idle_timeout {
            Some(s) => Some(
                Duration::try_from_secs_f64(s)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| invalid(format!("--idle-timeout {s}: seconds, more than 0")))?,
            ),
            None => None,
        };
        let options = Options {
            username: self.username.clone(),
            password,
            tls_ca: pem(&self.tls_ca)?,
            tls_cert: pem(&self.tls_cert)?,
            tls_key: pem(&self.tls_key)?,
            headers: self.http_headers.clone(),
            file_size: self.file_size,
            idle_timeout,
            tls_no_verify: self.tls_no_verify,
        };
        Ok(Input::Remote(Box::new(Remote { url: package.to_string(), options })))
    }
}
