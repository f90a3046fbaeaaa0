//! A TPM bus interposer for tests: a TCP proxy between the agent's `swtpm:` TCTI and a
//! swtpm, which records every command and response (TPM 2.0 Part 1, 18: a 10-byte header
//! whose bytes 2..6 are the big-endian size) and can rewrite responses on the way back,
//! as a probe on a TPM's SPI/LPC bus can. The control channel (port + 1) is relayed as is.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// `(command, response)`: change the response in place.
pub type Tamper = dyn Fn(&[u8], &mut Vec<u8>) + Send + Sync;

pub struct Proxy {
    pub port: u16,
    log: Arc<Mutex<Vec<u8>>>,
}

/// TPM_CC_NV_Read (Part 2, table 12).
pub const TPM_CC_NV_READ: u32 = 0x0000_014E;
/// TPM_CC_CreatePrimary.
pub const TPM_CC_CREATE_PRIMARY: u32 = 0x0000_0131;

/// The command code of a command.
pub fn command_code(cmd: &[u8]) -> u32 {
    u32::from_be_bytes(cmd[6..10].try_into().unwrap())
}

/// The `i`-th handle of a command (after the 10-byte header).
pub fn handle(cmd: &[u8], i: usize) -> Option<u32> {
    cmd.get(10 + 4 * i..14 + 4 * i).map(|b| u32::from_be_bytes(b.try_into().unwrap()))
}

/// The response code of a response.
pub fn response_code(resp: &[u8]) -> u32 {
    u32::from_be_bytes(resp[6..10].try_into().unwrap())
}

fn read_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut m = vec![0u8; 10];
    s.read_exact(&mut m).ok()?;
    let size = u32::from_be_bytes(m[2..6].try_into().unwrap()) as usize;
    if !(10..=1 << 20).contains(&size) {
        return None;
    }
    m.resize(size, 0);
    s.read_exact(&mut m[10..]).ok()?;
    Some(m)
}

fn relay(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Proxy {
    /// A proxy in front of the swtpm listening on `upstream` (and `upstream + 1`).
    pub fn start(upstream: u16, tamper: Option<Arc<Tamper>>) -> Self {
        // Odd ports in 12000..32000 (below the ephemeral range, see swtpm.rs): command on
        // port, control on port + 1.
        let start = (std::process::id() as usize * 7919) % 10000;
        let (cmd, ctrl, port) = (0..10000)
            .map(|k| 12001 + ((start + k) % 9999) as u16 * 2)
            .find_map(|p| {
                Some((TcpListener::bind(("127.0.0.1", p)).ok()?, TcpListener::bind(("127.0.0.1", p + 1)).ok()?, p))
            })
            .expect("two free ports");
        std::thread::spawn(move || {
            for c in ctrl.incoming().flatten() {
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream + 1)) else { continue };
                let (c2, up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || relay(c, up));
                std::thread::spawn(move || relay(up2, c2));
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for mut c in cmd.incoming().flatten() {
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (log, tamper) = (log2.clone(), tamper.clone());
                std::thread::spawn(move || {
                    while let Some(command) = read_message(&mut c) {
                        log.lock().unwrap().extend_from_slice(&command);
                        if up.write_all(&command).is_err() {
                            break;
                        }
                        let Some(mut response) = read_message(&mut up) else { break };
                        log.lock().unwrap().extend_from_slice(&response);
                        if let Some(t) = &tamper {
                            t(&command, &mut response);
                        }
                        if c.write_all(&response).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Proxy { port, log }
    }

    /// The TCTI string of the proxy.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Everything that crossed the bus so far, both directions (before any tampering).
    pub fn recording(&self) -> Vec<u8> {
        self.log.lock().unwrap().clone()
    }
}

/// Does `needle` occur in `haystack`?
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
