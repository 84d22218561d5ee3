//! Starting and stopping the `secchat` binary: [`ServerBuilder`], [`Server`], its logs and signals.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::http::try_http_get;

/// What the server logs once it listens.
const BANNER: &str = "SecChat is running";

/// How much of a server's logs a failing test prints (the end, where the failure is).
const LOG_TAIL_BYTES: usize = 8 * 1024;

static NEXT_LOG_DIR: AtomicU64 = AtomicU64::new(0);

pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port free on `host` now (for `0.0.0.0`, free on every address, which a port free on
/// 127.0.0.1 need not be).
pub fn free_port_on(host: &str) -> u16 {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let listener = TcpListener::bind((host, 0)).expect("bind a free port");
    listener.local_addr().expect("local_addr").port()
}

fn fresh_log_dir() -> PathBuf {
    let n = NEXT_LOG_DIR.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("secchat-itest-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create log dir");
    dir
}

/// How to start a server: flags, environment, and whether `--listen` is passed as a flag.
#[derive(Clone, Default)]
pub struct ServerBuilder {
    flags: Vec<String>,
    env: Vec<(String, String)>,
    listen_via_env: bool,
    /// The host part of `--listen` (default `127.0.0.1`), e.g. `[::1]` or `0.0.0.0`.
    listen_host: Option<String>,
    /// Ready once the start-up banner is logged instead of once `/healthz` answers over plain
    /// HTTP (which a TLS port refuses).
    ready_on_banner: bool,
}

impl ServerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Pass the listen address as `SECCHAT_LISTEN` instead of `--listen`.
    pub fn listen_via_env(mut self) -> Self {
        self.listen_via_env = true;
        self
    }

    /// Listen on `host` (an IPv4 address or a bracketed IPv6 one) instead of 127.0.0.1; clients
    /// connect to the same address (`0.0.0.0` reaches this machine on Linux).
    pub fn listen_on(mut self, host: &str) -> Self {
        self.listen_host = Some(host.to_string());
        self
    }

    /// Wait for the start-up banner rather than `/healthz`: for servers whose port speaks TLS.
    pub fn ready_on_banner(mut self) -> Self {
        self.ready_on_banner = true;
        self
    }

    pub fn start(self) -> Server {
        let mut last_logs = String::new();
        // A port found free can be taken by someone else before the server binds it (our own
        // clients' ephemeral ports included), so a failed start is retried on another port.
        for _ in 0..4 {
            let port = free_port_on(self.listen_host.as_deref().unwrap_or("127.0.0.1"));
            let mut server = self.spawn(port);
            let ready = if self.ready_on_banner {
                server.wait_for_banner(Duration::from_secs(10))
            } else {
                server.wait_ready(Duration::from_secs(10))
            };
            match ready {
                Ok(()) => return server,
                Err(why) => {
                    last_logs = format!("{why}\n{}", server.logs());
                }
            }
        }
        panic!("secchat did not become ready: {last_logs}");
    }

    fn spawn(&self, port: u16) -> Server {
        let log_dir = fresh_log_dir();
        let stdout = File::create(log_dir.join("stdout")).expect("stdout file");
        let stderr = File::create(log_dir.join("stderr")).expect("stderr file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_secchat"));
        for (key, _) in std::env::vars() {
            if key.starts_with("SECCHAT_") {
                command.env_remove(key);
            }
        }
        let host = self
            .listen_host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let listen = format!("{host}:{port}");
        if self.listen_via_env {
            command.env("SECCHAT_LISTEN", &listen);
        } else {
            command.arg("--listen").arg(&listen);
        }
        command.args(&self.flags);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn secchat");
        Server {
            child,
            host,
            port,
            log_dir,
            exit: None,
        }
    }
}

/// A running `secchat` process, killed on drop.
pub struct Server {
    child: Child,
    host: String,
    pub port: u16,
    log_dir: PathBuf,
    exit: Option<ExitStatus>,
}

impl Server {
    /// Start the binary with `flags` (plus `--listen 127.0.0.1:PORT`) and wait for `/healthz`.
    pub fn start(flags: &[&str]) -> Server {
        ServerBuilder::new().flags(flags).start()
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}/ws", self.host, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`TERM`, `INT`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.log_dir.join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// Whether `needle` appears in the logs within `timeout` (or by the time the process exits).
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return self.logs().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// `SIGTERM`, up to 5 s for the exit, and everything logged.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(5));
        self.logs()
    }

    fn wait_for_banner(&mut self, timeout: Duration) -> Result<(), String> {
        if self.wait_for_log(BANNER, timeout) {
            Ok(())
        } else {
            Err(format!("no {BANNER:?} in the logs in time"))
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return Err(format!("secchat exited early with {status}"));
            }
            if let Ok(response) = try_http_get(&self.addr(), "/healthz")
                && response.status == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("no 200 from /healthz in time".to_string());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A failing test shows the end of the logs with its output; no directory outlives a test.
        if std::thread::panicking() {
            let logs = self.logs();
            let mut tail = logs.len().saturating_sub(LOG_TAIL_BYTES);
            while !logs.is_char_boundary(tail) {
                tail += 1;
            }
            eprintln!("secchat's last log lines:\n{}", &logs[tail..]);
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// Runs the binary with `--listen 127.0.0.1:PORT FLAGS` to completion (for start-up errors); its
/// exit status and stderr.
pub fn run_to_exit(flags: &[&str]) -> (ExitStatus, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_secchat"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .expect("run secchat");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
