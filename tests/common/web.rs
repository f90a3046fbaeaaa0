//! File servers for download tests, on 127.0.0.1 only: Debian's nginx (HTTP, HTTPS, mutual
//! TLS, Basic authentication) and lighttpd (Digest authentication, which Debian's nginx
//! has no module for), a TLS PKI made by openssl, and a fault proxy of our own between
//! the agent and the server (cuts, stalls, extra bytes, a block switched mid-transfer).
#![allow(dead_code)]

use super::run_ok;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{what} exited: {s}");
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{what} does not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// TLS material for one test: a CA, the server's certificate (127.0.0.1, localhost), a
/// client certificate from the same CA and one from an unrelated CA.
pub struct TlsPki {
    pub dir: PathBuf,
}

impl TlsPki {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ossl = |args: &[&str]| run_ok(Command::new("openssl").current_dir(dir).args(args));
        for ca in ["ca", "other-ca"] {
            ossl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &format!("{ca}.key")]);
            ossl(&[
                "req",
                "-x509",
                "-new",
                "-key",
                &format!("{ca}.key"),
                "-subj",
                &format!("/CN=test {ca}"),
                "-days",
                "30",
                "-out",
                &format!("{ca}.pem"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        let leaf = |name: &str, ca: &str, ext: &str| {
            ossl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &format!("{name}.key0")]);
            ossl(&["pkcs8", "-topk8", "-nocrypt", "-in", &format!("{name}.key0"), "-out", &format!("{name}.key")]);
            ossl(&[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                &format!("/CN={name}"),
                "-out",
                &format!("{name}.csr"),
            ]);
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            ossl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "30",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ]);
        };
        leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
        leaf("client", "ca", "extendedKeyUsage=clientAuth\n");
        leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
        Self { dir: dir.to_path_buf() }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// What an nginx serves besides plain HTTP.
#[derive(Default)]
pub struct NginxOptions<'a> {
    /// HTTPS with this PKI's server certificate.
    pub tls: Option<&'a TlsPki>,
    /// Require a client certificate from the PKI's CA.
    pub client_cert: bool,
    /// Basic authentication (user, password) for the whole server.
    pub basic: Option<(&'a str, &'a str)>,
    /// More server-level configuration, verbatim.
    pub extra: &'a str,
}

/// Debian's nginx serving `root` on 127.0.0.1, in the foreground, for one test.
pub struct Nginx {
    child: Child,
    pub port: u16,
    scheme: &'static str,
    dir: PathBuf,
}

impl Nginx {
    pub fn start(work: &Path, root: &Path, o: NginxOptions<'_>) -> Self {
        let port = free_port();
        let dir = work.join(format!("nginx-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut listen = format!("listen 127.0.0.1:{port};");
        let mut server = String::new();
        if let Some(p) = o.tls {
            listen = format!("listen 127.0.0.1:{port} ssl;");
            server += &format!(
                "ssl_certificate {};\nssl_certificate_key {};\n",
                p.path("server.pem").display(),
                p.path("server.key").display()
            );
            if o.client_cert {
                server += &format!("ssl_client_certificate {};\nssl_verify_client on;\n", p.path("ca.pem").display());
            }
        }
        if let Some((user, password)) = o.basic {
            let hash = run_ok(Command::new("openssl").args(["passwd", "-apr1", password])).stdout;
            let line = format!("{user}:{}", String::from_utf8(hash).unwrap());
            std::fs::write(dir.join("htpasswd"), line).unwrap();
            server += &format!("auth_basic \"henb\";\nauth_basic_user_file {};\n", dir.join("htpasswd").display());
        }
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n log_format h '$request auth=[$http_authorization] token=[$http_x_token]';\n access_log {d}/access.log h;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             types {{ application/octet-stream raucb; }}\n default_type application/octet-stream;\n\
             server {{\n  {listen}\n  root {root};\n  {server}\n  location /moved/ {{ rewrite ^/moved/(.*)$ /$1 redirect; }}\n  location = /unavailable.raucb {{ return 503; }}\n  {extra}\n }}\n}}\n",
            root = root.display(),
            extra = o.extra,
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx (Debian's nginx-light) is needed: scripts/setup.sh");
        wait_for_port(port, &mut child, "nginx");
        Self { child, port, scheme: if o.tls.is_some() { "https" } else { "http" }, dir }
    }

    /// The access log: one line per request, with its Authorization and X-Token headers.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// The URL of `name` under the root.
    pub fn url(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/{name}", self.scheme, self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's lighttpd serving `root` with HTTP Digest authentication (RFC 7616, MD5).
pub struct Lighttpd {
    child: Child,
    pub port: u16,
}

impl Lighttpd {
    pub fn start(work: &Path, root: &Path, user: &str, password: &str) -> Self {
        let port = free_port();
        let dir = work.join(format!("lighttpd-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let realm = "henb";
        let ha1 = run_ok(
            Command::new("bash")
                .arg("-c")
                .arg(format!("printf '%s' '{user}:{realm}:{password}' | openssl dgst -md5 -r | cut -d' ' -f1")),
        )
        .stdout;
        let ha1 = String::from_utf8(ha1).unwrap();
        std::fs::write(dir.join("htdigest"), format!("{user}:{realm}:{}\n", ha1.trim())).unwrap();
        let conf = format!(
            "server.document-root = \"{root}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
             server.errorlog = \"{d}/error.log\"\nserver.modules = (\"mod_auth\", \"mod_authn_file\")\n\
             auth.backend = \"htdigest\"\nauth.backend.htdigest.userfile = \"{d}/htdigest\"\n\
             auth.require = (\"/\" => (\"method\" => \"digest\", \"realm\" => \"{realm}\", \"require\" => \"valid-user\"))\n",
            root = root.display(),
            d = dir.display(),
        );
        std::fs::write(dir.join("lighttpd.conf"), conf).unwrap();
        let mut child = Command::new("lighttpd")
            .arg("-D")
            .arg("-f")
            .arg(dir.join("lighttpd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("lighttpd is needed: scripts/setup.sh");
        wait_for_port(port, &mut child, "lighttpd");
        Self { child, port }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Lighttpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the fault proxy does to the server's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward faithfully.
    None,
    /// Close each connection after it carried this many bytes to the agent.
    CutEvery(u64),
    /// Stop forwarding (holding the connections open) once this many bytes went to the
    /// agent in all.
    StallAfter(u64),
    /// Drop `Content-Length` from each answer, send its body and then this many more
    /// bytes, and close: a server that sends more than it was asked for.
    Overflow(u64),
    /// Once this many bytes went to the agent in all, 16 bytes every 50 ms (320 B/s).
    TrickleAfter(u64),
}

/// A TCP proxy on 127.0.0.1 between the agent and a server, counting the bytes it
/// forwards to the agent.
pub struct FaultProxy {
    pub port: u16,
    /// Bytes forwarded to the agent, in all.
    pub forwarded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Called once, when `forwarded` first reaches the threshold.
    hook: Hook,
}

impl FaultProxy {
    pub fn start(upstream: u16, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarded = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let hook: Hook = Arc::new(Mutex::new(None));
        let (f, s, h) = (forwarded.clone(), stop.clone(), hook.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (f, s, h) = (f.clone(), s.clone(), h.clone());
                std::thread::spawn(move || relay(client, server, fault, f, s, h));
            }
        });
        Self { port, forwarded, stop, hook }
    }

    /// Run `f` once `bytes` have been forwarded to the agent.
    pub fn when_forwarded(&self, bytes: u64, f: impl FnOnce() + Send + 'static) {
        *self.hook.lock().unwrap() = Some((bytes, Box::new(f)));
    }

    /// `http://127.0.0.1:<proxy>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

type Hook = Arc<Mutex<Option<(u64, Box<dyn FnOnce() + Send>)>>>;

fn relay(client: TcpStream, server: TcpStream, fault: Fault, total: Arc<AtomicU64>, stop: Arc<AtomicBool>, hook: Hook) {
    // Requests: agent -> server, as they are.
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let mut buf = vec![0u8; 16 * 1024];
    let mut this_conn = 0u64;
    // Overflow: the header block of the current answer, and body bytes still due.
    let mut head = Vec::new();
    let mut body_left: Option<u64> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let n = match s_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out: Vec<u8> = buf[..n].to_vec();
        if let Fault::Overflow(extra) = fault {
            if body_left.is_none() {
                head.extend_from_slice(&out);
                let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let text = String::from_utf8_lossy(&head[..end]).to_string();
                let mut len = 0u64;
                let mut lines = Vec::new();
                for l in text.split("\r\n") {
                    if let Some(v) = l.strip_prefix("Content-Length: ") {
                        len = v.trim().parse().unwrap_or(0);
                    } else if !l.starts_with("Connection:") && !l.starts_with("Keep-Alive:") {
                        lines.push(l.to_string());
                    }
                }
                lines.push("Connection: close".into());
                let rest = head[end + 4..].to_vec();
                out = format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes();
                out.extend_from_slice(&rest);
                body_left = Some(len.saturating_sub(rest.len() as u64));
                head.clear();
            } else {
                body_left = body_left.map(|b| b.saturating_sub(n as u64));
            }
            if body_left == Some(0) {
                out.extend(std::iter::repeat_n(0x5a, extra as usize));
                let _ = c_out.write_all(&out);
                total.fetch_add(out.len() as u64, Ordering::Relaxed);
                break;
            }
        }
        if let Fault::StallAfter(limit) = fault {
            if total.load(Ordering::Relaxed) + out.len() as u64 > limit {
                // Hold the connection, send nothing more.
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                break;
            }
        }
        if let Fault::TrickleAfter(limit) = fault {
            if total.load(Ordering::Relaxed) > limit {
                let mut ok = true;
                for piece in out.chunks(16) {
                    if stop.load(Ordering::Relaxed) || c_out.write_all(piece).is_err() {
                        ok = false;
                        break;
                    }
                    total.fetch_add(piece.len() as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
                if !ok {
                    break;
                }
                continue;
            }
        }
        if let Fault::CutEvery(every) = fault {
            let room = every.saturating_sub(this_conn);
            if (out.len() as u64) >= room {
                out.truncate(room as usize);
                let _ = c_out.write_all(&out);
                total.fetch_add(out.len() as u64, Ordering::Relaxed);
                break;
            }
        }
        if c_out.write_all(&out).is_err() {
            break;
        }
        this_conn += out.len() as u64;
        let now = total.fetch_add(out.len() as u64, Ordering::Relaxed) + out.len() as u64;
        let mut h = hook.lock().unwrap();
        if h.as_ref().is_some_and(|(at, _)| now >= *at) {
            if let Some((_, f)) = h.take() {
                f();
            }
        }
    }
    let _ = c_out.shutdown(Shutdown::Both);
    let _ = s_in.shutdown(Shutdown::Both);
}

/// Replace `len` bytes at `offset` of `path` in place, keeping its size and mtime (so
/// nginx's ETag and Last-Modified stay the same: a server that lies), or with a new mtime
/// (a file republished: new ETag and Last-Modified).
pub fn switch_bytes(path: &Path, offset: u64, len: usize) {
    change_bytes(path, offset, len, true)
}

/// As [`switch_bytes`], the mtime moved a minute on.
pub fn republish_bytes(path: &Path, offset: u64, len: usize) {
    change_bytes(path, offset, len, false)
}

fn change_bytes(path: &Path, offset: u64, len: usize, keep_mtime: bool) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset).unwrap();
    for x in &mut b {
        *x ^= 0xff;
    }
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
    let when = if keep_mtime { mtime } else { mtime + Duration::from_secs(60) };
    f.set_modified(when).unwrap();
}
