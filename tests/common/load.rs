//! Load and resource measurement: round trips of a healthy pair under stress, TCP from many
//! loopback sources, resident memory and the open-file limit.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Client, Server, connect_session, make_friends, message, payload_with};

/// The server's resident memory in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Lifts this process's open-file soft limit to the hard limit (tests holding thousands of
/// sockets).
pub fn raise_open_file_limit() {
    secchat::process_limits::raise_open_file_limit();
}

fn sockaddr_in(address: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A TCP connection to `addr` whose source is the loopback address `source`. Linux routes
/// all of 127.0.0.0/8 to the loopback interface, so one test can be several "addresses"
/// for the server's per-address limit. No timeouts are set.
pub fn connect_tcp_from(source: Ipv4Addr, addr: &str) -> io::Result<TcpStream> {
    let remote: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let SocketAddr::V4(remote) = remote else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 only"));
    };
    let local = sockaddr_in(SocketAddrV4::new(source, 0));
    let remote = sockaddr_in(remote);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: the descriptor is fresh and handed to a TcpStream at once, which owns and
    // closes it on every path; bind and connect only read the sockaddr_in structs above.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let as_sockaddr = |a: &libc::sockaddr_in| (a as *const libc::sockaddr_in).cast();
        if libc::bind(fd, as_sockaddr(&local), len) != 0
            || libc::connect(fd, as_sockaddr(&remote), len) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Two friends on one server, for measuring round trips while something hostile happens.
pub struct HealthyPair {
    pub a: Client,
    pub b: Client,
    count: u64,
}

impl HealthyPair {
    pub fn new(server: &Server) -> HealthyPair {
        let (mut a, _, _) = connect_session(server);
        let (mut b, _, _) = connect_session(server);
        make_friends(&mut a, &mut b);
        HealthyPair { a, b, count: 0 }
    }

    /// A MESSAGE from a to b and one back, each acknowledged: the time until a has b's.
    pub fn round_trip(&mut self) -> Duration {
        self.count += 1;
        let marker = format!("rtt-{}", self.count);
        let started = Instant::now();
        self.a
            .send_json(&message(&self.b.id, &payload_with(&marker), Some(&marker)));
        self.a.expect_ack(&marker);
        let there = self.b.expect_type("MESSAGE");
        assert!(there["payload"].as_str().unwrap_or("").contains(&marker));
        self.b
            .send_json(&message(&self.a.id, &payload_with(&marker), Some(&marker)));
        self.b.expect_ack(&marker);
        let back = self.a.expect_type("MESSAGE");
        assert!(back["payload"].as_str().unwrap_or("").contains(&marker));
        started.elapsed()
    }

    /// Round trips every 50 ms on a thread of their own until [`RttMonitor::stop`].
    pub fn monitor(mut self) -> RttMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let (stop_seen, counted) = (Arc::clone(&stop), Arc::clone(&count));
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop_seen.load(Ordering::Relaxed) {
                samples.push(self.round_trip());
                counted.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
            (samples, self)
        });
        RttMonitor {
            stop,
            count,
            handle,
        }
    }
}

/// A [`HealthyPair`] measuring round trips in the background.
pub struct RttMonitor {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    handle: JoinHandle<(Vec<Duration>, HealthyPair)>,
}

impl RttMonitor {
    /// Round trips completed so far.
    pub fn samples(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Blocks until `n` round trips have completed (so that a hostile condition the caller
    /// keeps up is measured long enough); panics after 30 s.
    pub fn wait_for_samples(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.samples() < n {
            assert!(
                Instant::now() < deadline && !self.handle.is_finished(),
                "the healthy pair stalled after {} round trips",
                self.samples()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops measuring; panics if a round trip failed (the pair's expectations panicked).
    pub fn stop(self) -> (RttStats, HealthyPair) {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok((samples, pair)) => (RttStats { samples }, pair),
            Err(_) => panic!("the healthy pair's round trip failed (see its panic above)"),
        }
    }
}

/// Round-trip times of a [`HealthyPair`].
pub struct RttStats {
    pub samples: Vec<Duration>,
}

impl RttStats {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(rank).copied().unwrap_or_default()
    }

    /// At least `min_samples` round trips, and 95 % of them within `bound`. A sanity bound on
    /// a shared machine, not a benchmark: a starved or blocked server fails it by seconds,
    /// while one scheduling hiccup does not.
    pub fn assert_healthy(&self, what: &str, min_samples: usize, bound: Duration) {
        let p50 = self.percentile(0.5);
        let p95 = self.percentile(0.95);
        let max = self.samples.iter().max().copied().unwrap_or_default();
        eprintln!(
            "{what}: {} round trips, p50 {p50:?}, p95 {p95:?}, max {max:?}",
            self.samples.len()
        );
        assert!(
            self.samples.len() >= min_samples,
            "{what}: only {} round trips",
            self.samples.len()
        );
        assert!(
            p95 <= bound,
            "{what}: p95 round trip {p95:?} over {bound:?}"
        );
    }
}

/// Whether the server has already closed `stream` (EOF or a reset waiting to be read); panics
/// if the server sent bytes, which it never does to a silent connection.
pub fn closed_already(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    let mut byte = [0u8; 1];
    let mut reader = stream;
    let closed = match std::io::Read::read(&mut reader, &mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the server sent bytes to a silent connection"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
        Err(e) => panic!("unexpected read error: {e}"),
    };
    stream.set_nonblocking(false).expect("blocking");
    closed
}
