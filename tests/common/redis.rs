//! A real `redis-server` for the bus tests: on a free loopback port, no persistence, its files in
//! a temporary directory, killed when dropped. [`RedisServer::stop`] and
//! [`RedisServer::restart`] take it away and bring it back on the same port, as an outage would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `redis-server` may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `REDIS_SERVER` overrides the binary (default: `redis-server` on the PATH).
fn redis_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// TLS files for `--tls-port`: the server's certificate and key, and the CA that issued it.
#[derive(Clone)]
pub struct RedisTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Default)]
pub struct RedisBuilder {
    password: Option<String>,
    tls: Option<RedisTls>,
}

impl RedisBuilder {
    /// `--requirepass`: `AUTH password` (or `AUTH default password`) is needed.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }

    /// Serves TLS only (`--tls-port`, `--port 0`), without client certificates.
    pub fn tls(mut self, tls: RedisTls) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn start(self) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("secchat-redis-")
            .tempdir()
            .expect("create temp dir");
        let mut server = RedisServer {
            port: free_port(),
            password: self.password,
            tls: self.tls,
            dir,
            child: None,
        };
        server.spawn();
        server
    }
}

pub struct RedisServer {
    port: u16,
    password: Option<String>,
    tls: Option<RedisTls>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Without a password or TLS.
    pub fn start() -> RedisServer {
        RedisBuilder::default().start()
    }

    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (no credentials; tests add their own).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: connections end at once, nothing is saved) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP) with every connection open: commands wait in its sockets
    /// until [`RedisServer::resume`], as they do when Redis lags behind its clients.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server run again (SIGCONT): it serves what waited in its sockets.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("redis-server is not running");
        // SAFETY: a signal to our own child process, not reaped yet (it is in `self.child`).
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({signal}) failed");
    }

    /// Starts the server again on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) {
        // A fresh log: readiness of a TLS server is read from it.
        let _ = std::fs::remove_file(self.log_path());
        let mut command = Command::new(redis_binary());
        let port = self.port.to_string();
        command
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--daemonize", "no", "--dir"])
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path());
        match &self.tls {
            None => {
                command.args(["--port", &port]);
            }
            Some(tls) => {
                command
                    .args(["--port", "0", "--tls-port", &port])
                    .args(["--tls-auth-clients", "no"])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca);
            }
        }
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", redis_binary()));
        self.child = Some(child);
        self.wait_until_up();
    }

    /// Waits until the port answers PING (`+PONG`, or `-NOAUTH` behind a password). A TLS
    /// server is up once it accepts TCP and has logged that it is ready.
    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited ({status}); log:\n{}", self.log());
            }
            if self.answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not come up; log:\n{}", self.log());
    }

    fn answers(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls.is_some() {
            return self.log().contains("Ready to accept connections");
        }
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
        if tcp.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 64];
        match tcp.read(&mut reply) {
            Ok(n) => {
                let reply = &reply[..n];
                reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH")
            }
            Err(_) => false,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on right now (the kernel's pick, released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Whether `redis-server` can be run here; the bus tests fail with this message otherwise.
pub fn require_redis() {
    let found = Command::new(redis_binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "{} is not installed (scripts/test --deps-only installs it)",
        redis_binary()
    );
}
