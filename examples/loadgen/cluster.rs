//! The servers under test: one `secchat`, or several nodes joined through a `redis-server` of the
//! load generator's own (`--cluster`), each on its own port or all on one (`--reuse-port`), and
//! what the nodes' `/metrics` say about the bus.
//!
//! Every process of the server side (the nodes and Redis) is pinned to the server's core, so the
//! load generator keeps its own core and the msgs/s of one layout compare with another's as what
//! one core of server side carries.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::system::{self, Pinning, Server, ServerOptions};

/// How long the nodes may take to report both links to Redis ready (`secchat_cluster_up 1`).
const BUS_UP: Duration = Duration::from_secs(15);
/// How long `redis-server` may take to answer its first PING.
const REDIS_START: Duration = Duration::from_secs(10);

/// How many nodes, and how they are joined.
#[derive(Clone)]
pub struct Layout {
    pub nodes: usize,
    /// Start a `redis-server` and pass `--cluster` to every node.
    pub cluster: bool,
    /// Every node listens on one port with `--reuse-port on`: the kernel places connections.
    pub reuse_port: bool,
    pub redis_binary: PathBuf,
}

impl Layout {
    /// One node without a bus: the server as the load generator has always run it.
    pub fn is_single(&self) -> bool {
        self.nodes == 1 && !self.cluster && !self.reuse_port
    }
}

/// The running server side, stopped when dropped (the nodes first, all at once, then Redis).
pub struct Nodes {
    pub servers: Vec<Server>,
    pub redis: Option<Redis>,
    /// What clients connect to: one address per node, or the one port they share.
    pub addrs: Vec<SocketAddr>,
    /// Each node's `/metrics` (cluster layouts only).
    metrics: Vec<SocketAddr>,
}

/// Counts the nodes' `/metrics` give, summed over the nodes but for the sessions.
#[derive(Clone, Debug, Default)]
pub struct BusFigures {
    /// Sessions on each node.
    pub sessions: Vec<u64>,
    pub records_sent: u64,
    pub publishes: u64,
    pub failures: u64,
}

impl BusFigures {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &BusFigures) -> BusFigures {
        BusFigures {
            sessions: self.sessions.clone(),
            records_sent: self.records_sent.saturating_sub(before.records_sent),
            publishes: self.publishes.saturating_sub(before.publishes),
            failures: self.failures.saturating_sub(before.failures),
        }
    }
}

impl Nodes {
    pub fn start(layout: &Layout, server: &ServerOptions<'_>) -> Result<Nodes, String> {
        if layout.is_single() {
            let server = Server::start(server)?;
            let addrs = vec![server.addr];
            return Ok(Nodes {
                servers: vec![server],
                redis: None,
                addrs,
                metrics: Vec::new(),
            });
        }
        let redis = if layout.cluster {
            Some(Redis::start(layout, server)?)
        } else {
            None
        };
        let listen = if layout.reuse_port {
            SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?))
        } else {
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
        };
        let mut nodes = Nodes {
            servers: Vec::new(),
            redis,
            addrs: Vec::new(),
            metrics: Vec::new(),
        };
        for _ in 0..layout.nodes {
            let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
            let mut extra_args = server.extra_args.clone();
            extra_args.extend(["--metrics-listen".to_owned(), metrics.to_string()]);
            if let Some(redis) = &nodes.redis {
                extra_args.extend(["--cluster".to_owned(), redis.url()]);
            }
            if layout.reuse_port {
                extra_args.extend(["--reuse-port".to_owned(), "on".to_owned()]);
            }
            let node = Server::start(&ServerOptions {
                binary: server.binary,
                listen,
                extra_args,
                ..*server
            })?;
            if !layout.reuse_port || nodes.addrs.is_empty() {
                nodes.addrs.push(node.addr);
            }
            nodes.servers.push(node);
            nodes.metrics.push(metrics);
        }
        if layout.cluster {
            nodes.wait_until_bus_up()?;
        }
        Ok(nodes)
    }

    pub fn pinned(&self) -> Pinning {
        self.servers.first().map_or(Pinning::None, |s| s.pinned)
    }

    /// CPU time (user + system) all nodes have used so far.
    pub fn cpu_time(&self) -> Duration {
        self.servers.iter().map(Server::cpu_time).sum()
    }

    /// CPU time `redis-server` has used so far (all its threads).
    pub fn redis_cpu_time(&self) -> Option<Duration> {
        self.redis.as_ref().map(Redis::cpu_time)
    }

    /// Resident memory of all nodes, in KiB.
    pub fn rss_kib(&self) -> Result<u64, String> {
        self.servers.iter().map(Server::rss_kib).sum()
    }

    pub fn is_running(&mut self) -> bool {
        self.servers.iter_mut().all(Server::is_running)
            && self.redis.as_mut().is_none_or(Redis::is_running)
    }

    /// The nodes' bus counts (`None` without a bus).
    pub fn bus_figures(&self) -> Result<Option<BusFigures>, String> {
        if self.redis.is_none() {
            return Ok(None);
        }
        let mut figures = BusFigures::default();
        for &addr in &self.metrics {
            let page = scrape(addr)?;
            figures.sessions.push(metric(&page, "secchat_sessions"));
            figures.records_sent += metric(&page, "secchat_cluster_records_sent_total");
            figures.publishes += metric(&page, "secchat_cluster_publishes_total");
            figures.failures += metric(&page, "secchat_cluster_failures_total");
        }
        Ok(Some(figures))
    }

    fn wait_until_bus_up(&self) -> Result<(), String> {
        let deadline = Instant::now() + BUS_UP;
        for &addr in &self.metrics {
            loop {
                if scrape(addr).is_ok_and(|page| metric(&page, "secchat_cluster_up") == 1) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "the node with metrics on {addr} never joined Redis"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // All at once: each node may wait for its clients' close frames.
        for server in &self.servers {
            server.terminate();
        }
        self.servers.clear();
    }
}

/// A `redis-server` on a free loopback port, without persistence, killed when dropped.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(layout: &Layout, server: &ServerOptions<'_>) -> Result<Redis, String> {
        let port = free_port()?;
        let port_text = port.to_string();
        let dir = std::env::temp_dir().to_string_lossy().into_owned();
        let args = [
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir,
            "--loglevel",
            "warning",
        ];
        let (mut child, _) =
            system::spawn_pinned(&layout.redis_binary, &args, server.pin, server.nice, false)
                .map_err(|e| format!("{e} (install redis-server or pass --redis-server PATH)"))?;
        // Its log is drained unread: at `warning` it only says how the host is configured
        // (overcommit), and a Redis that dies is noticed by the checks.
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(
                move || {
                    for _ in BufReader::new(stdout).lines().map_while(Result::ok) {}
                },
            );
        }
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + REDIS_START;
        while !redis.answers_ping() {
            if Instant::now() >= deadline || !redis.is_running() {
                return Err(format!("redis-server on port {port} did not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cpu_time(&self) -> Duration {
        system::process_cpu_time(&format!("/proc/{}/stat", self.child.id())).unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A node's `/metrics` page.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    let fail = |e: std::io::Error| format!("/metrics on {addr}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(fail)?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut page = String::new();
    stream.read_to_string(&mut page).map_err(fail)?;
    Ok(page)
}

/// The value of an unlabelled metric (0 when absent).
fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0)
}
