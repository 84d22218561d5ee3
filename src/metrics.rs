//! `/metrics` in the Prometheus text format, served on `--metrics-listen` (off by default).
//!
//! Only counts and sizes: never an ID, address, key, token or payload. The page is rendered on
//! request from the router's [`RouterStats`] and the loop's own [`LoopCounters`].

use std::fmt::Write as _;

use crate::protocol::ErrorCode;
use crate::router::RouterStats;

/// What the event loop counts itself (the router counts sessions, messages and errors).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopCounters {
    pub accepted: u64,
    /// Sockets closed at once: over `--max-connections-per-ip`, or over the open-socket ceiling.
    pub refused: u64,
    pub open_sockets: usize,
    pub websockets: usize,
    /// Bytes in the outboxes, not yet on their sockets.
    pub unsent_bytes: usize,
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
}

/// The whole metrics page.
pub fn render(router: &RouterStats, counters: &LoopCounters, rss_bytes: Option<u64>) -> String {
    let mut page = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(page, "# HELP secchat_{name} {help}");
        let _ = writeln!(page, "# TYPE secchat_{name} {kind}");
        let _ = writeln!(page, "secchat_{name} {value}");
    };
    let gauge = |n: usize| n as u64;
    metric(
        "open_sockets",
        "gauge",
        "TCP connections open (HTTP and WebSocket).",
        gauge(counters.open_sockets),
    );
    metric(
        "websocket_connections",
        "gauge",
        "Open WebSocket connections.",
        gauge(counters.websockets),
    );
    metric(
        "sessions",
        "gauge",
        "Live sessions, connected or in their resume window.",
        gauge(router.sessions),
    );
    metric(
        "sessions_resuming",
        "gauge",
        "Sessions in their resume window.",
        gauge(router.sessions_resuming),
    );
    metric(
        "queued_frames",
        "gauge",
        "Frames queued for sessions in their resume window.",
        gauge(router.queued_frames),
    );
    metric(
        "queued_bytes",
        "gauge",
        "Bytes queued for sessions in their resume window.",
        gauge(router.queued_bytes),
    );
    metric(
        "handles",
        "gauge",
        "Rendezvous handles listened on (a count, never a handle).",
        gauge(router.handles),
    );
    metric(
        "mailbox_messages",
        "gauge",
        "Messages to handles waiting in the mailbox.",
        gauge(router.mailbox_letters),
    );
    metric(
        "mailbox_bytes",
        "gauge",
        "Bytes the mailbox's messages count against --mailbox-bytes.",
        gauge(router.mailbox_bytes),
    );
    metric(
        "unsent_bytes",
        "gauge",
        "Bytes waiting for connections' sockets to take them.",
        gauge(counters.unsent_bytes),
    );
    metric(
        "connections_accepted_total",
        "counter",
        "TCP connections accepted.",
        counters.accepted,
    );
    metric(
        "connections_refused_total",
        "counter",
        "TCP connections closed at once by a connection limit.",
        counters.refused,
    );
    metric(
        "messages_routed_total",
        "counter",
        "MESSAGEs forwarded or queued.",
        router.messages_routed,
    );
    metric(
        "frames_received_total",
        "counter",
        "WebSocket text and binary messages received.",
        counters.frames_in,
    );
    metric(
        "frames_sent_total",
        "counter",
        "WebSocket text messages sent.",
        counters.frames_out,
    );
    metric(
        "received_bytes_total",
        "counter",
        "Bytes of WebSocket text messages received.",
        counters.bytes_in,
    );
    metric(
        "sent_bytes_total",
        "counter",
        "Bytes of WebSocket text messages sent.",
        counters.bytes_out,
    );
    if let Some(rss) = rss_bytes {
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident set size of the process.",
            rss,
        );
    }
    let _ = writeln!(
        page,
        "# HELP secchat_errors_total ERROR frames sent, by code."
    );
    let _ = writeln!(page, "# TYPE secchat_errors_total counter");
    for (code, count) in ErrorCode::ALL.iter().zip(router.errors_sent.iter()) {
        let _ = writeln!(
            page,
            "secchat_errors_total{{code=\"{}\"}} {count}",
            code.as_str()
        );
    }
    page
}

/// The cluster bus as `/metrics` shows it (`--cluster` only): counts and times, never an ID.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterFigures {
    /// Both links to Redis are ready.
    pub up: bool,
    /// The commands link's round trips: median and 99th percentile, if any were measured.
    pub round_trip_p50: Option<std::time::Duration>,
    pub round_trip_p99: Option<std::time::Duration>,
    pub local_sessions: usize,
    pub publishes: u64,
    pub batches_received: u64,
    pub lookups: u64,
    pub failures: u64,
}

/// Appends the cluster's lines to `page`, with the router's own cluster counts.
pub fn render_cluster(page: &mut String, router: &RouterStats, cluster: &ClusterFigures) {
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(page, "# HELP secchat_cluster_{name} {help}");
        let _ = writeln!(page, "# TYPE secchat_cluster_{name} {kind}");
        let _ = writeln!(page, "secchat_cluster_{name} {value}");
    };
    metric(
        "up",
        "gauge",
        "1 while both links to Redis are ready.",
        u64::from(cluster.up).to_string(),
    );
    for (name, value) in [
        ("p50", cluster.round_trip_p50),
        ("p99", cluster.round_trip_p99),
    ] {
        if let Some(value) = value {
            metric(
                &format!("round_trip_{name}_seconds"),
                "gauge",
                "Round trip of the commands sent to Redis.",
                format!("{:.6}", value.as_secs_f64()),
            );
        }
    }
    let counts = [
        (
            "sessions_claimed",
            "gauge",
            "Sessions this node holds in the directory.",
            cluster.local_sessions as u64,
        ),
        (
            "awaiting_replies",
            "gauge",
            "Requests waiting for another node's answer.",
            router.awaiting_replies as u64,
        ),
        (
            "publishes_total",
            "counter",
            "Batches published to other nodes.",
            cluster.publishes,
        ),
        (
            "records_sent_total",
            "counter",
            "Records the router sent to other nodes.",
            router.bus_records_out,
        ),
        (
            "records_received_total",
            "counter",
            "Records other nodes sent this one.",
            router.bus_records_in,
        ),
        (
            "batches_received_total",
            "counter",
            "Batches received from other nodes.",
            cluster.batches_received,
        ),
        (
            "lookups_total",
            "counter",
            "Directory lookups made.",
            cluster.lookups,
        ),
        (
            "failures_total",
            "counter",
            "Requests the bus could not carry (unavailable or no such session).",
            cluster.failures,
        ),
    ];
    for (name, kind, help, value) in counts {
        metric(name, kind, help, value.to_string());
    }
}

/// The process's resident set size, from `/proc/self/statm` (Linux); `None` elsewhere.
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page_size)
        .ok()
        .map(|size| resident_pages * size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_lines_are_well_formed_and_say_whether_the_bus_is_up() {
        let router = RouterStats {
            bus_records_out: 5,
            awaiting_replies: 2,
            ..RouterStats::default()
        };
        let cluster = ClusterFigures {
            up: true,
            round_trip_p50: Some(std::time::Duration::from_micros(250)),
            publishes: 3,
            ..ClusterFigures::default()
        };
        let mut page = String::new();
        render_cluster(&mut page, &router, &cluster);
        assert!(page.contains("secchat_cluster_up 1\n"), "{page}");
        assert!(
            page.contains("secchat_cluster_round_trip_p50_seconds 0.000250\n"),
            "{page}"
        );
        assert!(
            !page.contains("p99"),
            "no figure without a measurement: {page}"
        );
        assert!(page.contains("secchat_cluster_records_sent_total 5\n"));
        assert!(page.contains("secchat_cluster_awaiting_replies 2\n"));
        assert!(page.contains("secchat_cluster_publishes_total 3\n"));
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("secchat_cluster_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn every_error_code_is_counted_under_its_wire_name() {
        let mut router = RouterStats::default();
        for (index, count) in router.errors_sent.iter_mut().enumerate() {
            *count = index as u64 + 1;
        }
        router.sessions = 7;
        let page = render(&router, &LoopCounters::default(), Some(4096));
        assert!(page.contains("secchat_sessions 7\n"));
        assert!(page.contains("secchat_process_resident_memory_bytes 4096\n"));
        for (index, code) in ErrorCode::ALL.iter().enumerate() {
            // The router indexes errors_sent by discriminant: ALL must list codes in that order.
            assert_eq!(*code as usize, index);
            let line = format!(
                "secchat_errors_total{{code=\"{}\"}} {}\n",
                code.as_str(),
                index + 1
            );
            assert!(page.contains(&line), "missing {line:?}");
        }
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("secchat_"), "{line}");
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn rss_is_read_on_linux() {
        assert!(process_rss_bytes().is_some_and(|rss| rss > 0));
    }
}
