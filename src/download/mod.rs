//! Packages on a file server: an HTTP(S) [`Source`] that reads a package where it lies,
//! with Range requests, so nothing is stored on the device beyond fixed buffers.
//!
//! The package layer reads a [`RemoteSource`] as it reads a file: positioned reads. Each
//! read is served by one of a few *cursors*, each a Range request open on the server
//! (`bytes=start-end`, its size doubling from 32 KiB to 4 MiB while its reads stay
//! sequential), so a verity bundle's image, its hash tree and the squashfs tables each
//! stream without a request per block. Every answer must be a 206 for exactly the range
//! asked, unencoded, of the file first seen (its total size, ETag and Last-Modified; the
//! ETag, else Last-Modified, is sent as `If-Range`), and end where the range ends.
//!
//! Resume: a dropped connection, an idle timeout, a server slower than 1 KiB/s over an
//! idle timeout, a 408/429 or a 5xx answer is retried from the first byte not yet
//! received, after a delay that doubles (from [`Settings::retry_delay`], at most 30 s), at
//! most [`Settings::retries`] times in a row without 64 KiB received in between (so the
//! whole transfer is bounded too).
//!
//! Redirects are followed here, not by reqwest: at most [`Settings::max_redirects`], never
//! from https to http; credentials and the request's extra headers go to the given URL's
//! origin only; a redirect target that answers 403/404/410 (an expired signed URL) is
//! left for the given URL once more. Basic authentication answers a challenge only, and
//! never one from a server that offered Digest.
//!
//! The security of an install never rests on the transport (rule R7): the package layer
//! checks every byte it uses against the signature. HTTPS, client certificates and
//! HTTP authentication are what operators expect of a download.
//!
//! Faults (TR-069 TransferComplete, `../shared/reference/cwmp.md`): 9013 a scheme other
//! than http/https, 9015 the server cannot be reached or its certificate is not trusted,
//! 9016 404/410 (and 403 without credentials), 9012 the server refused the credentials or
//! the client certificate, 9017 incomplete after the retries, 9010 any other transfer
//! failure (no Range support, the file changed, more bytes than asked, too large, a
//! server that answers only with errors).

mod tls;

use crate::fault::{CwmpFault, Fault};
use crate::source::Source;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Smallest Range request of a cursor, in bytes.
const MIN_CHUNK: u64 = 32 * 1024;
/// Planned ranges closer than this are asked for as one (a request costs more than a few KiB).
const PLAN_GAP: u64 = 8 * 1024;
/// Largest Range request of a cursor, in bytes.
const MAX_CHUNK: u64 = 4 * 1024 * 1024;
/// Cursors open at once (image data, verity levels, squashfs tables, trailer).
const CURSORS: usize = 6;
/// Bytes each cursor keeps of what it gave, for reads that step back a little (the
/// squashfs tables are read back to front).
const HISTORY: usize = 256 * 1024;
/// A read this far ahead of a cursor skips the bytes in between instead of opening a new
/// request.
const SKIP: u64 = 256 * 1024;
/// Longest delay between two retries.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Bytes a transfer must make after a failure before the retries in a row start again.
const PROGRESS: u64 = 64 * 1024;
/// The slowest transfer accepted, bytes per second, measured over each idle timeout.
const LOW_SPEED: u64 = 1024;
/// Largest file accepted (a server's claim beyond it is refused before any arithmetic).
pub const MAX_FILE: u64 = 1 << 40;
/// Longest idle timeout a request may ask for.
pub const MAX_IDLE: Duration = Duration::from_secs(86400);
/// Largest PEM file accepted for `tls-ca`, `tls-cert`, `tls-key`.
pub const MAX_PEM: u64 = 1024 * 1024;

/// How the device downloads (`[download]` in system.conf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Longest wait for a TCP connection and the TLS handshake.
    pub connect_timeout: Duration,
    /// Longest time without a byte from the server (per read).
    pub idle_timeout: Duration,
    /// Retries in a row without progress before the download fails (9017).
    pub retries: u32,
    /// The first retry's delay; each further one in a row doubles it.
    pub retry_delay: Duration,
    /// Redirects followed, at most.
    pub max_redirects: usize,
    /// Whether a request may ask to skip the server certificate check (RAUC's
    /// `tls-no-verify`).
    pub allow_tls_no_verify: bool,
    /// The device's CA certificates for file servers (RAUC's `[streaming] tls-ca`),
    /// when a request names none; else the system's.
    pub tls_ca: Option<PathBuf>,
    /// The device's client certificate (`[streaming] tls-cert`), when a request names none.
    pub tls_cert: Option<PathBuf>,
    /// Its key (`[streaming] tls-key`).
    pub tls_key: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            retries: 5,
            retry_delay: Duration::from_secs(1),
            max_redirects: 3,
            allow_tls_no_verify: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// What one download asks for besides the URL (TR-069 Download arguments, RAUC's
/// streaming arguments). PEM contents, not paths: the edge reads them with its caller's
/// rights.
#[derive(Default, Clone)]
pub struct Options {
    /// HTTP user name (TR-069 Download `Username`).
    pub username: Option<String>,
    /// HTTP password (TR-069 Download `Password`).
    pub password: Option<String>,
    /// CA certificates (PEM) the server's certificate must chain to, instead of the
    /// system's.
    pub tls_ca: Option<Vec<u8>>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub tls_cert: Option<Vec<u8>>,
    /// Its private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<Vec<u8>>,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// The size the server's file must not exceed (TR-069 Download `FileSize`; 0: none).
    pub file_size: Option<u64>,
    /// Idle timeout for this download instead of [`Settings::idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// Skip the server certificate check (refused unless allowed by the settings).
    pub tls_no_verify: bool,
}

impl std::fmt::Debug for Options {
    /// Without the password and the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("tls_ca", &self.tls_ca.is_some())
            .field("tls_cert", &self.tls_cert.is_some())
            .field("tls_key", &self.tls_key.is_some())
            .field("headers", &self.headers.len())
            .field("file_size", &self.file_size)
            .field("idle_timeout", &self.idle_timeout)
            .field("tls_no_verify", &self.tls_no_verify)
            .finish()
    }
}

/// A package on a file server: its URL and how to fetch it.
#[derive(Clone)]
pub struct Remote {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Credentials, TLS material, headers, limits.
    pub options: Options,
}

/// Check a URL before a download starts: http or https (9013), no credentials in it
/// (9003), parseable (9003).
pub fn check_url(url: &str) -> Result<reqwest::Url, TransferError> {
    let u = reqwest::Url::parse(url).map_err(|e| TransferError::Options(format!("URL: {e}")))?;
    match u.scheme() {
        "http" | "https" => {}
        s => return Err(TransferError::Protocol(format!("URL scheme '{s}' is not supported (http and https are)"))),
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(TransferError::Options("credentials in the URL: pass them as username and password".into()));
    }
    Ok(u)
}

/// A URL for messages and logs: without its query and fragment (a token may be there);
/// anything that does not parse as a URL as it is.
pub fn redact_url(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| redact(&u)).unwrap_or_else(|_| url.to_string())
}

impl std::fmt::Debug for Remote {
    /// Without the URL's query (a token) and the secrets of the options.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &redact_url(&self.url)).field("options", &self.options).finish()
    }
}

/// Whether `s` names a package on a file server (a URL) rather than a local path.
pub fn is_url(s: &str) -> bool {
    s.contains("://")
}

/// Why a download failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransferError {
    /// The URL is not one this agent fetches (scheme other than http/https; 9013).
    #[error("{0}")]
    Protocol(String),
    /// The request's options are unusable (9003).
    #[error("{0}")]
    Options(String),
    /// The server could not be reached, or its certificate is not trusted (9015).
    #[error("cannot contact the file server: {0}")]
    Contact(String),
    /// The file is not there, or access to it is denied without credentials (9016).
    #[error("the file server cannot give the file: {0}")]
    Access(String),
    /// The server refused the credentials or the client certificate (9012).
    #[error("the file server refused our authentication: {0}")]
    Authentication(String),
    /// The download stopped and did not resume within the retries (9017).
    #[error("download incomplete after {retries} retries: {last}")]
    Incomplete {
        /// Retries made.
        retries: u32,
        /// The last failure.
        last: String,
    },
    /// Any other transfer failure (9010).
    #[error("download failed: {0}")]
    Failed(String),
}

impl Fault for TransferError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Protocol(_) => "unsupported-protocol",
            Self::Options(_) => "invalid",
            Self::Contact(_) => "server-unreachable",
            Self::Access(_) => "access",
            Self::Authentication(_) => "server-authentication",
            Self::Incomplete { .. } => "incomplete",
            Self::Failed(_) => "transfer",
        }
    }
    fn fault(&self) -> CwmpFault {
        match self {
            Self::Protocol(_) => CwmpFault::UnsupportedProtocol,
            Self::Options(_) => CwmpFault::InvalidArguments,
            Self::Contact(_) => CwmpFault::UnableToContactFileServer,
            Self::Access(_) => CwmpFault::UnableToAccessFile,
            Self::Authentication(_) => CwmpFault::ServerAuthenticationFailure,
            Self::Incomplete { .. } => CwmpFault::UnableToCompleteDownload,
            Self::Failed(_) => CwmpFault::TransferFailure,
        }
    }
}

/// What a download moved, for reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Body bytes received (including bytes skipped within a cursor).
    pub fetched: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that continued a transfer after a failure.
    pub resumes: u64,
}

/// A package on a file server, read with Range requests; see the module's description.
pub struct RemoteSource {
    rt: tokio::runtime::Runtime,
    len: u64,
    url: String,
    state: Mutex<State>,
    failure: Mutex<Option<TransferError>>,
    fetched: AtomicU64,
    requests: AtomicU64,
    resumes: AtomicU64,
}

struct State {
    client: reqwest::Client,
    url: reqwest::Url,
    /// ETag (strong) or Last-Modified of the file first seen, sent as If-Range.
    validator: Option<String>,
    etag: Option<String>,
    headers: HeaderMap,
    /// The credentials given, and whether they are offered now (only to the origin they
    /// were given for).
    credentials: Option<(String, String)>,
    credentials_here: bool,
    /// The request's extra headers go to the given origin only, like the credentials.
    headers_here: bool,
    /// The URL given (requests go where its redirects led, `url`, until that fails).
    given: reqwest::Url,
    auth: Auth,
    /// A Digest challenge was seen: Basic is never answered after it (no downgrade).
    digest_seen: bool,
    last_modified: Option<String>,
    /// Retries in a row, and bytes received since the last failure.
    failures: u32,
    since_failure: u64,
    /// Set when the server asked for a client certificate.
    cert_requested: Arc<AtomicBool>,
    cert_configured: bool,
    settings: Settings,
    len: Option<u64>,
    file_size: Option<u64>,
    cursors: Vec<Cursor>,
    tick: u64,
    /// The reader's plan ([`Source::plan`]): ranges `[start, end)`, ascending, gaps of
    /// less than [`PLAN_GAP`] closed.
    plan: Vec<(u64, u64)>,
}

enum Auth {
    None,
    Basic,
    Digest(Box<digest_auth::WwwAuthenticateHeader>),
}

struct Cursor {
    /// Offset of the next byte this cursor gives.
    pos: u64,
    /// End (exclusive) of the open request's range.
    end: u64,
    body: Option<reqwest::Response>,
    pending: Bytes,
    chunk: u64,
    used: u64,
    /// The last bytes given, `(offset, bytes)`, oldest first, at most [`HISTORY`] in all.
    history: std::collections::VecDeque<(u64, Bytes)>,
    history_len: usize,
    /// Time spent waiting for this cursor's bytes and the bytes received meanwhile, since
    /// the last speed check.
    window: (Duration, u64),
    /// Whether the open answer has a Content-Length (its end is then the range's).
    delimited: bool,
}

impl Cursor {
    fn new(pos: u64) -> Self {
        Self {
            pos,
            end: pos,
            body: None,
            pending: Bytes::new(),
            chunk: MIN_CHUNK,
            used: 0,
            history: Default::default(),
            history_len: 0,
            window: (Duration::ZERO, 0),
            delimited: true,
        }
    }

    /// Give the next `n` pending bytes (kept in the history).
    fn take(&mut self, n: usize) -> Bytes {
        let b = self.pending.split_to(n);
        self.history.push_back((self.pos, b.clone()));
        self.history_len += b.len();
        while self.history_len > HISTORY {
            match self.history.pop_front() {
                Some((_, old)) => self.history_len -= old.len(),
                None => break,
            }
        }
        self.pos += n as u64;
        b
    }

    /// Bytes at `offset` from the history.
    fn recall(&self, offset: u64) -> Option<&[u8]> {
        self.history
            .iter()
            .find(|(at, b)| *at <= offset && offset < at + b.len() as u64)
            .map(|(at, b)| &b[(offset - at) as usize..])
    }
}

/// One failed attempt: try again, or give up with this error.
enum Attempt {
    /// Why, and whether the server answered (an HTTP status) or could not be reached.
    Retry(String, Reached),
    Fatal(TransferError),
}

/// Whether a failed attempt reached the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// It answered with an error status.
    Answered,
    /// Connecting, TLS or reading failed.
    No,
}

impl RemoteSource {
    /// Open `remote`: check the URL and options, fetch the first bytes (which gives the
    /// file's size and validator) and keep that request open for the first read.
    ///
    /// Errors: [`TransferError`], by its fault.
    pub fn open(remote: &Remote, settings: &Settings) -> Result<Self, TransferError> {
        let url = check_url(&remote.url)?;
        let mut o = remote.options.clone();
        if o.tls_cert.is_none() && o.tls_key.is_none() {
            if let (Some(c), Some(k)) = (&settings.tls_cert, &settings.tls_key) {
                (o.tls_cert, o.tls_key) = (Some(read_pem(c)?), Some(read_pem(k)?));
            }
        }
        if o.tls_ca.is_none() {
            if let Some(ca) = &settings.tls_ca {
                o.tls_ca = Some(read_pem(ca)?);
            }
        }
        let o = &o;
        if o.tls_no_verify && !settings.allow_tls_no_verify {
            return Err(TransferError::Options(
                "tls-no-verify is not allowed on this device ([download] allow-tls-no-verify)".into(),
            ));
        }
        let mut settings = settings.clone();
        if let Some(t) = o.idle_timeout {
            if t.is_zero() || t > MAX_IDLE {
                return Err(TransferError::Options(format!("idle timeout {t:?}: more than 0, at most a day")));
            }
            settings.idle_timeout = t;
        }
        let cert_requested = Arc::new(AtomicBool::new(false));
        let tls = tls::client_config(o, cert_requested.clone())?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.idle_timeout)
            // Redirects are followed by hand (`State::redirect`): credentials and headers
            // stay with their origin.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("henb-update/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransferError::Options(format!("HTTP client: {e}")))?;
        let headers = extra_headers(&o.headers)?;
        let named = o.username.as_deref().is_some_and(|u| !u.is_empty());
        if headers.contains_key(reqwest::header::AUTHORIZATION) && named {
            return Err(TransferError::Options(
                "http-headers has Authorization and a username is given: one of them".into(),
            ));
        }
        let credentials = match (&o.username, &o.password) {
            (Some(u), p) if !u.is_empty() => Some((u.clone(), p.clone().unwrap_or_default())),
            _ => None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TransferError::Failed(format!("runtime: {e}")))?;
        let mut state = State {
            client,
            url: url.clone(),
            validator: None,
            etag: None,
            headers,
            credentials,
            credentials_here: true,
            headers_here: true,
            given: url.clone(),
            auth: Auth::None,
            digest_seen: false,
            last_modified: None,
            failures: 0,
            since_failure: 0,
            cert_requested,
            cert_configured: o.tls_cert.is_some(),
            settings,
            len: None,
            file_size: o.file_size.filter(|s| *s > 0),
            cursors: Vec::new(),
            tick: 0,
            plan: Vec::new(),
        };
        let counters = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let refs = (&counters.0, &counters.1, &counters.2);
        state.cursors.push(Cursor::new(0));
        // The first request: its answer gives the size and the validator.
        rt.block_on(state.advance(0, &refs))?;
        let len = state.len.unwrap_or(0);
        Ok(Self {
            rt,
            len,
            url: redact(&state.url),
            state: Mutex::new(state),
            failure: Mutex::new(None),
            fetched: counters.0,
            requests: counters.1,
            resumes: counters.2,
        })
    }

    /// The first transfer failure, which explains whatever error the reader of this
    /// source reported after it.
    pub fn failure(&self) -> Option<TransferError> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bytes, requests and resumes so far.
    pub fn counters(&self) -> Counters {
        Counters {
            fetched: self.fetched.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            resumes: self.resumes.load(Ordering::Relaxed),
        }
    }

    /// The URL as fetched (after redirects), without query string.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A PEM file of at most [`MAX_PEM`] bytes, read by the agent (configured files).
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TransferError> {
    use std::io::Read;
    let bad = |e: String| TransferError::Options(format!("{}: {e}", path.display()));
    let f = crate::source::open_input(path).map_err(|e| bad(e.to_string()))?;
    let mut v = Vec::new();
    f.take(MAX_PEM + 1).read_to_end(&mut v).map_err(|e| bad(e.to_string()))?;
    if v.len() as u64 > MAX_PEM {
        return Err(bad(format!("larger than {MAX_PEM} bytes")));
    }
    Ok(v)
}

/// `scheme://host[:port]/path`, for messages (a query may carry a token).
fn redact(u: &reqwest::Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The request's extra headers, `Name: value` each; `Authorization` is allowed (a bearer
/// token, as RAUC streaming clients pass) unless credentials are given too.
///
/// Errors: [`TransferError::Options`] naming the header (never its value).
pub fn extra_headers(lines: &[String]) -> Result<HeaderMap, TransferError> {
    // What the agent sets itself, and what would change which bytes come back.
    const OURS: &[&str] = &[
        "range",
        "if-range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "accept-encoding",
        "te",
        "expect",
        "upgrade",
        "proxy-authorization",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
    ];
    let mut map = HeaderMap::new();
    for l in lines {
        // The value may be a token: messages name the header only.
        let shown = l.split_once(':').map_or("(no name)", |(n, _)| n.trim());
        let bad = |why: &str| TransferError::Options(format!("http-headers: '{shown}': {why}"));
        let (name, value) = l.split_once(':').ok_or_else(|| bad("not 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("not a header name"))?;
        if OURS.contains(&name.as_str()) {
            return Err(bad("the agent sets this header itself"));
        }
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad("not a header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

impl Source for RemoteSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn streamed(&self) -> bool {
        true
    }

    fn check_stable(&self) -> Result<(), String> {
        Err("it is streamed from a file server, whose bytes can differ between the two reads a plain bundle needs"
            .into())
    }

    fn plan(&self, ranges: &[(u64, u64)]) {
        let mut sorted: Vec<(u64, u64)> = ranges.iter().copied().filter(|(a, b)| a < b).collect();
        sorted.sort_unstable();
        let mut plan: Vec<(u64, u64)> = Vec::new();
        for (a, b) in sorted {
            match plan.last_mut() {
                Some(last) if a <= last.1.saturating_add(PLAN_GAP) => last.1 = last.1.max(b),
                _ => plan.push((a, b)),
            }
        }
        self.state.lock().unwrap_or_else(|p| p.into_inner()).plan = plan;
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        if let Some(f) = self.failure() {
            return Err(io::Error::other(f));
        }
        let want = (self.len - offset).min(buf.len() as u64) as usize;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let counters = (&self.fetched, &self.requests, &self.resumes);
        let r = self.rt.block_on(state.read(&mut buf[..want], offset, counters));
        r.map_err(|e| {
            let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            f.get_or_insert(e.clone());
            io::Error::other(e)
        })
    }
}

type CounterRefs<'a> = (&'a AtomicU64, &'a AtomicU64, &'a AtomicU64);

impl State {
    /// Read at `offset` into `buf` (non-empty, inside the file): all of it, or from the
    /// history only what it holds.
    async fn read(&mut self, buf: &mut [u8], offset: u64, c: CounterRefs<'_>) -> Result<usize, TransferError> {
        if let Some(b) = self.cursors.iter().find_map(|cur| cur.recall(offset)) {
            let n = buf.len().min(b.len());
            buf[..n].copy_from_slice(&b[..n]);
            return Ok(n);
        }
        let i = self.pick(offset);
        self.tick += 1;
        self.cursors[i].used = self.tick;
        // Skip forward to the offset within this cursor: through the bytes of an open
        // request; past its end, a jump (nothing in flight is wasted, nothing more asked).
        while self.cursors[i].pos < offset {
            let cur = &mut self.cursors[i];
            if cur.pending.is_empty() && cur.pos >= cur.end {
                (cur.pos, cur.end, cur.body) = (offset, offset, None);
                break;
            }
            self.fill(i, c).await?;
            let cur = &mut self.cursors[i];
            let n = (offset - cur.pos).min(cur.pending.len() as u64) as usize;
            cur.take(n);
        }
        // The whole buffer in one call (a caller reads 128 KiB; the server's pieces are
        // smaller).
        let mut done = 0;
        while done < buf.len() {
            self.fill(i, c).await?;
            let cur = &mut self.cursors[i];
            let n = (buf.len() - done).min(cur.pending.len());
            buf[done..done + n].copy_from_slice(&cur.take(n));
            done += n;
        }
        Ok(done)
    }

    /// The cursor that serves `offset`: one at it or a little before it, else a new one
    /// (replacing the least recently used).
    fn pick(&mut self, offset: u64) -> usize {
        let near = self
            .cursors
            .iter()
            .enumerate()
            .filter(|(_, c)| c.pos <= offset && offset - c.pos <= SKIP)
            .max_by_key(|(_, c)| c.pos)
            .map(|(i, _)| i);
        if let Some(i) = near {
            return i;
        }
        let fresh = Cursor::new(offset);
        if self.cursors.len() < CURSORS {
            self.cursors.push(fresh);
            return self.cursors.len() - 1;
        }
        let lru = self.cursors.iter().enumerate().min_by_key(|(_, c)| c.used).map(|(i, _)| i).unwrap_or(0);
        self.cursors[lru] = fresh;
        lru
    }

    /// Make cursor `i` hold pending bytes (it is inside the file), requesting and
    /// retrying as needed.
    async fn fill(&mut self, i: usize, c: CounterRefs<'_>) -> Result<(), TransferError> {
        if !self.cursors[i].pending.is_empty() {
            return Ok(());
        }
        self.advance(i, &c).await
    }

    /// Get the next bytes of cursor `i` into its `pending`, with the retry rule.
    async fn advance(&mut self, i: usize, c: &CounterRefs<'_>) -> Result<(), TransferError> {
        loop {
            let r = self.try_advance(i, c).await;
            let (why, reached) = match r {
                Ok(()) => return Ok(()),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why, reached)) => (why, reached),
            };
            // A redirect target that fails may be gone: the retry asks the given URL.
            if self.url != self.given {
                self.url = self.given.clone();
                (self.credentials_here, self.headers_here, self.auth) = (true, true, Auth::None);
            }
            // The request is gone; the next one starts at the first byte not received.
            let cur = &mut self.cursors[i];
            cur.body = None;
            cur.end = cur.pos;
            cur.chunk = MIN_CHUNK;
            // A retry in a row unless the transfer made real progress since the last one
            // (a server that gives a byte per connection does not reset the count).
            if self.since_failure < PROGRESS {
                self.failures += 1;
            } else {
                self.failures = 1;
            }
            self.since_failure = 0;
            let failures = self.failures;
            if failures > self.settings.retries {
                // Before the first answer: the server could not be reached, or answered
                // only with errors.
                return Err(match (self.len, reached) {
                    (None, Reached::No) => TransferError::Contact(why),
                    (None, Reached::Answered) => TransferError::Failed(why),
                    _ => TransferError::Incomplete { retries: self.settings.retries, last: why },
                });
            }
            let delay = self.settings.retry_delay.saturating_mul(1 << (failures - 1).min(16)).min(MAX_DELAY);
            tracing::warn!("download: {why}; retrying from byte {} in {delay:?}", self.cursors[i].pos);
            c.resume();
            tokio::time::sleep(delay).await;
        }
    }

    async fn try_advance(&mut self, i: usize, c: &CounterRefs<'_>) -> Result<(), Attempt> {
        if self.cursors[i].body.is_none() || self.cursors[i].pos >= self.cursors[i].end {
            let (start, chunk) = (self.cursors[i].pos, self.cursors[i].chunk);
            // Within a plan: the planned range, nothing past it; outside it, small steps.
            let k = self.plan.partition_point(|(a, _)| *a <= start);
            let planned = k.checked_sub(1).map(|k| self.plan[k]).filter(|(_, b)| start < *b).map(|p| p.1);
            let end = match (planned, self.plan.is_empty()) {
                (Some(b), _) => b.min(start + MAX_CHUNK),
                (None, false) => start + MIN_CHUNK,
                (None, true) => start + chunk,
            };
            let end = match self.len {
                Some(len) => end.min(len),
                None => end,
            };
            let (resp, got_end) = self.request(start, end, c).await?;
            let cur = &mut self.cursors[i];
            cur.delimited = resp.content_length().is_some();
            cur.body = Some(resp);
            cur.end = got_end;
            cur.chunk = (chunk * 2).min(MAX_CHUNK);
            cur.window = (Duration::ZERO, 0);
        }
        let idle = self.settings.idle_timeout;
        let cur = &mut self.cursors[i];
        let Some(body) = cur.body.as_mut() else { return Err(Attempt::Retry("no request".into(), Reached::No)) };
        let asked = std::time::Instant::now();
        let got = body.chunk().await;
        cur.window.0 += asked.elapsed();
        match got {
            Ok(Some(b)) => {
                c.fetched(b.len() as u64);
                let room = cur.end - cur.pos;
                if b.len() as u64 > room {
                    return Err(Attempt::Fatal(TransferError::Failed(format!(
                        "the server sent more bytes than the range asked for (at byte {})",
                        cur.pos
                    ))));
                }
                cur.pending = b;
                if cur.pending.is_empty() {
                    return Err(Attempt::Retry("an empty read".into(), Reached::No));
                }
                self.since_failure += cur.pending.len() as u64;
                // A server that trickles (each byte within the idle timeout) is as good
                // as a stalled one.
                // Measured over the time spent waiting for the server (a cursor the
                // reader leaves alone is not slow).
                cur.window.1 += cur.pending.len() as u64;
                let waited = cur.window.0;
                if waited >= idle {
                    if (cur.window.1 as f64) < LOW_SPEED as f64 * waited.as_secs_f64() {
                        let why = format!("slower than {LOW_SPEED} bytes/s for {waited:?}");
                        return Err(Attempt::Retry(why, Reached::Answered));
                    }
                    cur.window = (Duration::ZERO, 0);
                }
                if cur.pos + cur.pending.len() as u64 == cur.end && !cur.delimited {
                    // The range is complete and the answer has no length: it must end
                    // here (a Content-Length was checked against the range already).
                    if let Some(body) = cur.body.as_mut() {
                        let more = tokio::time::timeout(Duration::from_secs(1), body.chunk()).await;
                        if let Ok(Ok(Some(more))) = more {
                            if !more.is_empty() {
                                return Err(Attempt::Fatal(TransferError::Failed(format!(
                                    "the server sent more bytes than the range asked for (after byte {})",
                                    cur.end
                                ))));
                            }
                        }
                    }
                }
                Ok(())
            }
            Ok(None) => {
                Err(Attempt::Retry(format!("the connection ended at byte {} of the range", cur.pos), Reached::No))
            }
            Err(e) => Err(Attempt::Retry(describe(&e), Reached::No)),
        }
    }

    /// Send a Range request for `[start, end)`; returns the response (206, checked) and
    /// the end of the range it carries.
    async fn request(
        &mut self,
        start: u64,
        end: u64,
        c: &CounterRefs<'_>,
    ) -> Result<(reqwest::Response, u64), Attempt> {
        let fatal = |e| Err(Attempt::Fatal(e));
        let (mut tried_auth, mut redirects, mut restarted) = (0, 0, false);
        loop {
            let mut rb = self
                .client
                .get(self.url.clone())
                .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1))
                // The server's bytes as stored: a compressed answer would change offsets.
                .header(reqwest::header::ACCEPT_ENCODING, "identity");
            if self.headers_here {
                rb = rb.headers(self.headers.clone());
            }
            if let Some(v) = &self.validator {
                rb = rb.header(reqwest::header::IF_RANGE, v.as_str());
            }
            if let (Some((u, p)), true) = (&self.credentials, self.credentials_here) {
                match &mut self.auth {
                    Auth::None => {}
                    Auth::Basic => rb = rb.basic_auth(u, Some(p)),
                    Auth::Digest(h) => {
                        let path = match self.url.query() {
                            Some(q) => format!("{}?{q}", self.url.path()),
                            None => self.url.path().to_string(),
                        };
                        let ctx = digest_auth::AuthContext::new(u.as_str(), p.as_str(), path);
                        let a = h.respond(&ctx).map_err(|e| {
                            Attempt::Fatal(TransferError::Authentication(format!("Digest challenge: {e}")))
                        })?;
                        rb = rb.header(reqwest::header::AUTHORIZATION, a.to_header_string());
                    }
                }
            }
            c.request();
            tracing::debug!("GET bytes {start}-{} of {}", end - 1, redact(&self.url));
            let resp = rb.send().await.map_err(|e| self.send_failure(&e))?;
            let status = resp.status();
            if [301, 302, 303, 307, 308].contains(&status.as_u16()) {
                redirects += 1;
                if redirects > self.settings.max_redirects {
                    return fatal(TransferError::Failed(format!(
                        "more than {} redirects",
                        self.settings.max_redirects
                    )));
                }
                self.redirect(&resp)?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                if tried_auth < 2 && self.credentials.is_some() && self.credentials_here {
                    if let Some(next) = challenge(resp.headers(), &self.auth, &mut self.digest_seen) {
                        self.auth = next;
                        tried_auth += 1;
                        continue;
                    }
                }
                let why = match (&self.credentials, self.credentials_here) {
                    (Some(_), true) => "HTTP 401: the credentials were refused",
                    (Some(_), false) => {
                        "HTTP 401 from a server the URL redirected to: credentials go to the URL's own origin only"
                    }
                    (None, _) => "HTTP 401: the server asks for credentials (username, password)",
                };
                return fatal(TransferError::Authentication(why.into()));
            }
            // A redirect target that no longer serves (an expired signed URL): once more
            // from the URL given.
            let gone = matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE);
            if gone && self.url != self.given && !restarted {
                restarted = true;
                redirects = 0;
                self.url = self.given.clone();
                (self.credentials_here, self.headers_here, self.auth) = (true, true, Auth::None);
                continue;
            }
            return self.check(resp, start, end);
        }
    }

    /// Follow a redirect answer: to http(s) only, never from https to http; credentials
    /// and the extra headers go to the given URL's origin only.
    fn redirect(&mut self, resp: &reqwest::Response) -> Result<(), Attempt> {
        let fail = |m: String| Attempt::Fatal(TransferError::Failed(m));
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| fail(format!("HTTP {} without a Location", resp.status())))?;
        let next = self.url.join(location).map_err(|e| fail(format!("a redirect to an invalid URL: {e}")))?;
        match next.scheme() {
            "https" => {}
            "http" if self.given.scheme() == "http" => {}
            "http" => return Err(fail("a redirect from https to http".into())),
            s => return Err(Attempt::Fatal(TransferError::Protocol(format!("a redirect to scheme '{s}'")))),
        }
        let home = next.origin() == self.given.origin();
        (self.credentials_here, self.headers_here) = (home, home);
        if next.origin() != self.url.origin() {
            self.auth = Auth::None;
        }
        self.url = next;
        Ok(())
    }

    /// Judge an answer to the Range request for `[start, end)`.
    fn check(&mut self, resp: reqwest::Response, start: u64, end: u64) -> Result<(reqwest::Response, u64), Attempt> {
        let status = resp.status();
        let fatal = |e| Err(Attempt::Fatal(e));
        match status {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                let why = match self.len {
                    None => "the server does not support Range requests (it answered 200 OK)".to_string(),
                    Some(_) => "the file on the server changed during the download (200 OK to If-Range)".into(),
                };
                return fatal(TransferError::Failed(why));
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let why = match self.len {
                    None => "the file on the server is empty (416)",
                    Some(_) => "the file on the server changed during the download (416)",
                };
                return fatal(TransferError::Failed(why.into()));
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                return fatal(TransferError::Access(format!("HTTP {status} for {}", redact(&self.url))))
            }
            // Forbidden after credentials or a client certificate were presented.
            StatusCode::FORBIDDEN
                if (self.credentials_here && !matches!(self.auth, Auth::None))
                    || (self.cert_configured && self.cert_requested.load(Ordering::Relaxed)) =>
            {
                return fatal(TransferError::Authentication(format!("HTTP {status}")))
            }
            StatusCode::FORBIDDEN => return fatal(TransferError::Access(format!("HTTP {status}"))),
            // nginx answers 400 when it refuses a client certificate (or gets none).
            StatusCode::BAD_REQUEST if self.cert_requested.load(Ordering::Relaxed) => {
                return fatal(TransferError::Authentication(format!(
                    "HTTP {status} after the server asked for a client certificate: {}",
                    if self.cert_configured { "it refused ours" } else { "none is configured (tls-cert, tls-key)" }
                )))
            }
            s if s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                return Err(Attempt::Retry(format!("HTTP {s}"), Reached::Answered))
            }
            s => return fatal(TransferError::Failed(format!("HTTP {s}"))),
        }
        let h = resp.headers();
        let text = |n: HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        if let Some(enc) = text(reqwest::header::CONTENT_ENCODING).filter(|e| !e.eq_ignore_ascii_case("identity")) {
            return fatal(TransferError::Failed(format!("the server encoded the bytes ({enc}), identity was asked")));
        }
        let range = text(reqwest::header::CONTENT_RANGE).unwrap_or_default();
        let (a, b, total) = parse_content_range(&range)
            .ok_or_else(|| Attempt::Fatal(TransferError::Failed(format!("206 with Content-Range '{range}'"))))?;
        if resp.content_length().is_some_and(|n| Some(n) != (b + 1).checked_sub(a)) {
            return fatal(TransferError::Failed(format!(
                "Content-Length {:?} for bytes {a}-{b}",
                resp.content_length()
            )));
        }
        if a != start || b < a || b >= end {
            return fatal(TransferError::Failed(format!(
                "asked for bytes {start}-{}, the server sent {a}-{b}",
                end - 1
            )));
        }
        if total > MAX_FILE {
            return fatal(TransferError::Failed(format!("the server claims a file of {total} bytes")));
        }
        let etag = text(reqwest::header::ETAG);
        let modified = text(reqwest::header::LAST_MODIFIED);
        match self.len {
            None => {
                if let Some(max) = self.file_size {
                    if total > max {
                        return fatal(TransferError::Failed(format!(
                            "the file is {total} bytes, more than the {max} bytes the request allows (file-size)"
                        )));
                    }
                }
                self.len = Some(total);
                self.validator = etag.clone().filter(|e| !e.starts_with("W/")).or_else(|| modified.clone());
                self.etag = etag;
                self.last_modified = modified;
            }
            Some(len) => {
                // A strong ETag alone identifies the file (RFC 9110 §8.8.3); else
                // Last-Modified, the validator sent as If-Range.
                let strong = self.etag.as_deref().is_some_and(|e| !e.starts_with("W/"));
                let changed = (self.etag.is_some() && etag != self.etag)
                    || (!strong && self.last_modified.is_some() && modified != self.last_modified);
                if total != len || changed {
                    return fatal(TransferError::Failed(format!(
                        "the file on the server changed during the download (size {len} -> {total}, ETag {:?} -> {:?}, \
                         Last-Modified {:?} -> {:?})",
                        self.etag, etag, self.last_modified, modified
                    )));
                }
            }
        }
        Ok((resp, b + 1))
    }

    /// Why sending failed: retry, or a failure no retry changes.
    fn send_failure(&self, e: &reqwest::Error) -> Attempt {
        if e.is_redirect() {
            return Attempt::Fatal(TransferError::Failed(describe(e)));
        }
        if e.is_builder() {
            return Attempt::Fatal(TransferError::Options(describe(e)));
        }
        if let Some(t) = tls::classify(e) {
            return Attempt::Fatal(t);
        }
        // Connected but no answer in time: the server was reached.
        let reached = if e.is_connect() { Reached::No } else { Reached::Answered };
        Attempt::Retry(describe(e), reached)
    }
}

/// A reqwest error with its causes, one line, its URL without the query (a token).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), &redact(u));
    }
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The next authentication to try after a 401, from its `WWW-Authenticate` headers:
/// Digest (RFC 7616) before Basic (RFC 7617); a Digest answer that was refused is tried
/// again only for a stale nonce; Basic never once this server offered Digest.
fn challenge(h: &HeaderMap, tried: &Auth, digest_seen: &mut bool) -> Option<Auth> {
    let offers: Vec<&str> =
        h.get_all(reqwest::header::WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).collect();
    for o in &offers {
        let scheme = o.split_whitespace().next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("digest") {
            *digest_seen = true;
            if let Ok(hdr) = digest_auth::parse(o) {
                if matches!(tried, Auth::Digest(_)) && !hdr.stale {
                    return None;
                }
                return Some(Auth::Digest(Box::new(hdr)));
            }
        }
    }
    let basic = offers.iter().any(|o| o.split_whitespace().next().is_some_and(|s| s.eq_ignore_ascii_case("basic")));
    // Never Basic where Digest was offered: the password itself would cross the wire.
    (basic && !*digest_seen && matches!(tried, Auth::None)).then_some(Auth::Basic)
}

/// `bytes a-b/total` (RFC 9110 §14.4).
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// Where the counters go: bytes fetched, requests, resumes.
trait Counts {
    fn fetched(&self, n: u64);
    fn request(&self);
    fn resume(&self);
}

impl Counts for (&AtomicU64, &AtomicU64, &AtomicU64) {
    fn fetched(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn request(&self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }
    fn resume(&self) {
        self.2.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed_strictly() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 99, 1000)));
        assert_eq!(parse_content_range("bytes 0-99/*"), None);
        assert_eq!(parse_content_range("items 0-99/1000"), None);
        assert_eq!(parse_content_range("bytes -5/10"), None);
    }

    #[test]
    fn extra_headers_cannot_replace_the_agents_own() {
        assert!(extra_headers(&["X-Device: 42".into()]).is_ok());
        assert!(extra_headers(&["Authorization: Bearer t0ken".into()]).is_ok());
        for bad in ["Range: bytes=0-", "If-None-Match: x", "no colon", "Bad Name: x", "X-A: t0ken\r\nb"] {
            let e = extra_headers(&[bad.into()]).unwrap_err();
            assert!(matches!(e, TransferError::Options(_)), "{bad}");
            assert!(
                !e.to_string().contains("t0ken") && !e.to_string().contains("bytes=0-"),
                "the value is not shown: {e}"
            );
        }
    }

    #[test]
    fn urls_other_than_http_and_https_are_refused_with_9013() {
        let r =
            |u: &str| RemoteSource::open(&Remote { url: u.into(), options: Options::default() }, &Settings::default());
        let e = r("ftp://127.0.0.1/x").err().unwrap();
        assert_eq!(e.fault().code(), 9013);
        let e = r("http://user:pw@127.0.0.1/x").err().unwrap();
        assert_eq!(e.fault().code(), 9003);
    }
}
