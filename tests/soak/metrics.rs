//! The server's own counters, read from its `--metrics-listen` page.

use std::time::{Duration, Instant};

use crate::common::*;

pub struct Metrics {
    pub addr: String,
}

impl Metrics {
    fn page(&self) -> String {
        http_raw(
            &self.addr,
            b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
            false,
        )
        .body_text()
    }

    pub fn get(page: &str, name: &str) -> u64 {
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{page}"))
    }

    /// Waits until no session, queue or socket is left (the resume windows of the dropped
    /// half take 1 s, the sweep up to 1 s more); the socket of this very request is the one
    /// left open.
    pub fn wait_until_empty(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let page = self.page();
            let left: Vec<(&str, u64)> = [
                "secchat_sessions",
                "secchat_sessions_resuming",
                "secchat_queued_frames",
                "secchat_queued_bytes",
                "secchat_websocket_connections",
            ]
            .into_iter()
            .map(|name| (name, Self::get(&page, name)))
            .filter(|(_, value)| *value != 0)
            .collect();
            let sockets = Self::get(&page, "secchat_open_sockets");
            if left.is_empty() && sockets <= 1 {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "still held after everyone left: {left:?}, {sockets} sockets"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
