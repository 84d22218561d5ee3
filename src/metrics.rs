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
