//! Running a program of the device's or a bundle's (hooks, system handlers, bootloader
//! tools) so that it can neither take nor keep anything of the agent's:
//! - a clean environment: the variables given and a fixed [`PATH`];
//! - standard input `/dev/null`, no descriptor of the agent's (every one above 2 is
//!   closed at exec), the working directory `/`;
//! - a process group of its own, killed when the program ends, when its timeout passes,
//!   or when the agent dies (`PR_SET_PDEATHSIG`);
//! - standard output and error go to the agent's log, line by line, at most [`LOGGED`]
//!   bytes of them; the rest is read and dropped (a caller may keep the first
//!   [`CAPTURED`] bytes of standard output).
//!
//! A script without `#!` is run by `/bin/sh`, as GLib's spawn (RAUC) does.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Bytes of a program's output that reach the log; the rest is drained.
pub const LOGGED: usize = 64 << 10;

/// Longest line kept (a message, each logged line).
const LINE: usize = 1024;

/// The `PATH` a program gets.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a program did not run to a good end.
#[derive(Debug, Error)]
pub enum RunError {
    /// It could not be started (or waited for).
    #[error("{what} could not be started: {source}")]
    Start {
        /// What it is (`slot-post-install`, `pre-install handler`).
        what: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Still running at its timeout: killed.
    #[error("{what} did not finish within {seconds} s: killed")]
    Timeout {
        /// What it is.
        what: String,
        /// The timeout.
        seconds: u64,
    },
    /// It ran and failed (an exit status other than 0, or killed by a signal).
    #[error("{what} failed: {why}")]
    Failed {
        /// What it is.
        what: String,
        /// Exit status and its last line of error output.
        why: String,
    },
}

/// How a program run by [`exec`] ended.
#[derive(Debug)]
pub struct Ended {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// The last non-empty line it wrote to standard error, if any.
    pub message: Option<String>,
    /// Its standard output, the first [`CAPTURED`] bytes (when asked for).
    pub stdout: Vec<u8>,
}

impl Ended {
    /// Its standard output, when it exited 0.
    ///
    /// Errors: [`RunError::Failed`] naming `what`, the exit status and its message.
    pub fn success(self, what: &str) -> Result<Vec<u8>, RunError> {
        if self.status.success() {
            return Ok(self.stdout);
        }
        let mut why = match self.status.code() {
            Some(c) => format!("exit code {c}"),
            None => format!("{}", self.status),
        };
        if let Some(m) = self.message {
            why += &format!(": {m}");
        }
        Err(RunError::Failed { what: what.to_string(), why })
    }
}

/// Bytes of standard output [`exec`] keeps for its caller: 64 KiB.
pub const CAPTURED: usize = 64 << 10;

/// Run `exe args` by the module's rules (clean environment with `env` and `PATH`, no
/// descriptor of the agent's, own process group killed at its end, at `timeout` or with
/// the agent) and wait for it; `what` names it in the log and in errors. With `capture`,
/// the first [`CAPTURED`] bytes of its standard output are kept.
///
/// Errors: [`RunError::Start`], [`RunError::Timeout`]; an exit status is not an error
/// here ([`Ended::success`]).
pub fn exec(
    exe: &Path,
    args: &[&str],
    env: &[(String, String)],
    timeout: Duration,
    what: &str,
    capture: bool,
) -> Result<Ended, RunError> {
    Running::start(exe, args, env, what, capture, false)?.wait(timeout)
}

/// One output stream read to its end: whether it was standard error, its last line and
/// the bytes kept of it.
type Drained = (bool, (Option<String>, Vec<u8>));

/// A program started by the module's rules, whose standard input the agent may feed
/// ([`Running::feed`]) before it waits for it ([`Running::wait`]).
pub struct Running {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    pgid: nix::unistd::Pid,
    rx: mpsc::Receiver<Drained>,
    what: String,
}

impl Running {
    /// Start `exe args` (see [`exec`]); with `input`, its standard input is a pipe the
    /// caller writes, else `/dev/null`.
    ///
    /// Errors: [`RunError::Start`].
    pub fn start(
        exe: &Path,
        args: &[&str],
        env: &[(String, String)],
        what: &str,
        capture: bool,
        input: bool,
    ) -> Result<Self, RunError> {
        let argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let stdin = || if input { Stdio::piped() } else { Stdio::null() };
        let spawned = match command(exe, &argv, env).stdin(stdin()).spawn() {
            // A script without "#!": run by /bin/sh, as GLib's spawn (rauc) does.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOEXEC) => {
                let mut sh_args = vec![exe.as_os_str()];
                sh_args.extend(&argv);
                command(Path::new("/bin/sh"), &sh_args, env).stdin(stdin()).spawn()
            }
            r => r,
        };
        let mut child = spawned.map_err(|source| RunError::Start { what: what.to_string(), source })?;
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        crate::failpoint::hit("hook.running");
        let (tx, rx) = mpsc::channel();
        let logged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for (stream, is_err) in [
            (child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), false),
            (child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>), true),
        ] {
            let (tx, logged, hook) = (tx.clone(), logged.clone(), what.to_string());
            let keep = if capture && !is_err { CAPTURED } else { 0 };
            if let Some(s) = stream {
                std::thread::spawn(move || {
                    let drained = drain(s, &hook, &logged, keep);
                    let _ = tx.send((is_err, drained));
                });
            }
        }
        let stdin = child.stdin.take();
        Ok(Self { child, stdin, pgid, rx, what: what.to_string() })
    }

    /// Write `data` to its standard input, waiting at most `timeout` for it to take more.
    ///
    /// Errors: it was started without input, it closed its input (it failed: its exit
    /// status says why, from [`Running::wait`]), or it took nothing for `timeout`.
    pub fn feed(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let what = &self.what;
        let stdin = self.stdin.as_mut().ok_or_else(|| io::Error::other(format!("{what}: no standard input")))?;
        let fd = stdin.as_raw_fd();
        // Non-blocking, so that a program that stops reading cannot hold the agent.
        // SAFETY: F_GETFL/F_SETFL on a descriptor this struct owns.
        unsafe {
            let flags = nix::libc::fcntl(fd, nix::libc::F_GETFL);
            if flags >= 0 && flags & nix::libc::O_NONBLOCK == 0 {
                nix::libc::fcntl(fd, nix::libc::F_SETFL, flags | nix::libc::O_NONBLOCK);
            }
        }
        let mut rest = data;
        while !rest.is_empty() {
            match stdin.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut p = nix::libc::pollfd { fd, events: nix::libc::POLLOUT, revents: 0 };
                    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
                    // SAFETY: one pollfd, valid for the call.
                    if unsafe { nix::libc::poll(&mut p, 1, ms) } == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("{what}: took no input for {} s", timeout.as_secs()),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("{what}: writing its input: {e}"))),
            }
        }
        Ok(())
    }

    /// Close its standard input and wait for it, at most `timeout`.
    ///
    /// Errors: [`RunError::Start`] (it cannot be waited for), [`RunError::Timeout`].
    pub fn wait(mut self, timeout: Duration) -> Result<Ended, RunError> {
        drop(self.stdin.take());
        let (what, pgid) = (self.what.clone(), self.pgid);
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    kill_group(pgid);
                    let _ = self.child.wait();
                    return Err(RunError::Start { what, source: e });
                }
            }
        };
        // Whatever it left running in its group goes with it.
        kill_group(pgid);
        if status.is_none() {
            // Also by pid: it may have moved to another process group.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let (mut message, mut stdout) = (None, Vec::new());
        // Its output to its end: the group is gone, so only a process that left the group
        // can hold the pipes open; it is not waited for long.
        let wait_until = Instant::now() + Duration::from_secs(10);
        while let Ok((is_err, (last, kept))) =
            self.rx.recv_timeout(wait_until.saturating_duration_since(Instant::now()))
        {
            if is_err {
                message = last.filter(|l| !l.trim().is_empty());
            } else {
                stdout = kept;
            }
        }
        let Some(status) = status else {
            return Err(RunError::Timeout { what, seconds: timeout.as_secs() });
        };
        Ok(Ended { status, message, stdout })
    }
}

impl Drop for Running {
    /// A program the caller gave up on goes with its group.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            kill_group(self.pgid);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `prog args` as a hook runs: clean environment, no descriptor of the agent's, its own
/// process group, killed with the agent.
fn command(prog: &Path, args: &[&std::ffi::OsStr], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env("PATH", PATH)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let agent = nix::unistd::getpid().as_raw();
    // SAFETY: between fork and exec only async-signal-safe system calls run.
    unsafe {
        cmd.pre_exec(move || {
            // Killed with the agent (the thread that spawned it waits for it); if the
            // agent died before that took effect, do not start.
            nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL);
            if nix::libc::getppid() != agent {
                return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            // The agent ignores SIGIO (its read lease); ignored signals survive exec.
            nix::libc::signal(nix::libc::SIGIO, nix::libc::SIG_DFL);
            // No descriptor of the agent's beyond the three standard ones: all closed at
            // exec (not now: the standard library reports a failed exec through one).
            const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2; // Linux 5.11
            if nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                for fd in 3..4096 {
                    nix::libc::fcntl(fd, nix::libc::F_SETFD, nix::libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
    cmd
}

fn kill_group(pgid: nix::unistd::Pid) {
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
}

/// Read a hook's output to the end: log its lines (each at most [`LINE`] bytes, all
/// together at most [`LOGGED`]); return its last line and its first `keep` bytes.
fn drain(
    mut r: Box<dyn Read + Send>,
    hook: &str,
    logged: &std::sync::atomic::AtomicUsize,
    keep: usize,
) -> (Option<String>, Vec<u8>) {
    use std::sync::atomic::Ordering;
    let mut buf = [0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut last = None;
    let emit = |line: &[u8], last: &mut Option<String>| {
        let text = String::from_utf8_lossy(line).into_owned();
        let before = logged.fetch_add(line.len() + 1, Ordering::Relaxed);
        if before < LOGGED {
            tracing::info!("hook {hook}: {text}");
        } else if before < LOGGED + line.len() + 1 {
            tracing::info!("hook {hook}: (more output, not logged)");
        }
        *last = Some(text);
    };
    let mut kept = Vec::new();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let room = keep.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..room]);
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&line, &mut last);
                line.clear();
            } else if line.len() < LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        emit(&line, &mut last);
    }
    (last, kept)
}
