//! The TCTI configuration string (`[tpm] tcti=`), checked before any connection: only the
//! forms tss-esapi 7.7 can open, each with only the parameters it reads. Its own parser
//! ignores what it does not know (`swtpm:path=/run/swtpm.sock` quietly becomes
//! `localhost:2321`); this one refuses it at load with the supported forms.
//!
//! Pure parsing, no I/O.

/// The forms accepted, for error messages.
pub const SUPPORTED: &str = "device:/dev/tpmrm0 (or another absolute device path), \
swtpm:host=127.0.0.1,port=2321, mssim:host=127.0.0.1,port=2321, \
tabrmd:bus_name=com.intel.tss2.Tabrmd,bus_type=system|session";

/// Check a TCTI string and return it in canonical form (what tss-esapi is given).
///
/// Shapes: `device[:PATH]` (absolute path; default `/dev/tpm0` as tss-esapi),
/// `swtpm[:host=H,port=P]` and `mssim[:host=H,port=P]` (TCP; host an IP address or a
/// host name, port 1-65535, defaults localhost and 2321), `tabrmd[:bus_name=N,bus_type=T]`
/// (a D-Bus name with at least two elements; `system` or `session`).
///
/// Errors: a message naming what is wrong and listing [`SUPPORTED`].
pub fn parse(s: &str) -> Result<String, String> {
    let message = |why: String| format!("tcti={s}: {why}; supported forms: {SUPPORTED}");
    let refuse = |why: String| Err(message(why));
    let (kind, conf) = match s.split_once(':') {
        Some((k, c)) => (k, c),
        None => (s, ""),
    };
    match kind {
        "device" => {
            if conf.is_empty() || (conf.starts_with('/') && !conf.contains(['\0', ','])) {
                Ok(s.to_string())
            } else {
                refuse(format!("'{conf}' is not an absolute device path"))
            }
        }
        "swtpm" | "mssim" => {
            let params = params(conf, &["host", "port"]).map_err(message)?;
            for (k, v) in &params {
                match *k {
                    "host" if !valid_host(v) => return refuse(format!("host '{v}' is not an address or a host name")),
                    "port" if v.parse::<u16>().ok().filter(|p| *p != 0).is_none() => {
                        return refuse(format!("port '{v}' is not 1 to 65535"))
                    }
                    _ => {}
                }
            }
            Ok(s.to_string())
        }
        "tabrmd" => {
            let params = params(conf, &["bus_name", "bus_type"]).map_err(message)?;
            for (k, v) in &params {
                match *k {
                    "bus_type" if !matches!(*v, "system" | "session") => {
                        return refuse(format!("bus_type '{v}' is not system or session"))
                    }
                    "bus_name" if !valid_bus_name(v) => return refuse(format!("bus_name '{v}' is not a D-Bus name")),
                    _ => {}
                }
            }
            Ok(s.to_string())
        }
        "" => refuse("empty".into()),
        k => refuse(format!("'{k}' is not a TCTI tss-esapi 7.7 can open")),
    }
}

/// `k=v,k=v` with keys from `known`, each at most once.
fn params<'a>(conf: &'a str, known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    if conf.is_empty() {
        return Ok(out);
    }
    for p in conf.split(',') {
        let (k, v) = p.split_once('=').ok_or_else(|| format!("'{p}' is not key=value"))?;
        if !known.contains(&k) {
            return Err(format!("unknown parameter '{k}' (this form takes {})", known.join(", ")));
        }
        if out.iter().any(|(x, _)| *x == k) {
            return Err(format!("'{k}' given twice"));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn valid_host(h: &str) -> bool {
    h.parse::<std::net::IpAddr>().is_ok()
        || (!h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

fn valid_bus_name(n: &str) -> bool {
    let parts: Vec<&str> = n.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_tss_esapi_opens_and_refuses_the_rest() {
        for ok in [
            "device:/dev/tpmrm0",
            "device",
            "swtpm:host=127.0.0.1,port=2321",
            "swtpm:port=2321,host=localhost",
            "swtpm",
            "mssim:host=::1,port=1",
            "tabrmd:bus_name=com.intel.tss2.Tabrmd,bus_type=session",
            "tabrmd",
        ] {
            assert_eq!(parse(ok).as_deref(), Ok(ok), "{ok}");
            // tss-esapi agrees.
            assert!(<tss_esapi::tcti_ldr::TctiNameConf as std::str::FromStr>::from_str(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("swtpm:path=/run/swtpm.sock", "unknown parameter 'path'"),
            ("swtpm:host=127.0.0.1,port=0", "port '0'"),
            ("swtpm:host=127.0.0.1,port=99999", "port '99999'"),
            ("swtpm:host=a b", "host 'a b'"),
            ("swtpm:host=x,host=y", "twice"),
            ("device:tpmrm0", "absolute"),
            ("libtpms", "not a TCTI"),
            ("cmd:swtpm", "not a TCTI"),
            ("", "empty"),
            ("tabrmd:bus_type=user", "bus_type"),
            ("tabrmd:bus_name=nodots", "bus_name"),
            ("mssim:host", "key=value"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says) && e.contains("supported forms"), "{bad}: {e}");
        }
    }
}
