//! Soak: 2,000 clients connecting, befriending, chatting, dropping without DISCONNECT and
//! resuming (or finding their session expired), in a seeded random order; then every
//! message's fate is accounted for, and once everyone has left and the resume windows have
//! expired nothing is left on the server and its memory does not grow from wave to wave.
//!
//! Short mode (the default, part of `cargo test`): two waves of 7.5 s churn, about 25 s in all.
//! Long mode: `SECCHAT_SOAK_SECS=600 cargo test --release --test soak -- --nocapture` churns
//! for that many seconds in all, in two waves (any positive number). `SECCHAT_SOAK_SEED` picks
//! another order.
//!
//! Afterwards the server's own counters (`--metrics-listen`) must show no session, queue,
//! WebSocket or socket left, and it must have routed exactly the messages it acknowledged. Its
//! memory: glibc keeps freed pages and hash tables keep their capacity, so RSS does not drop
//! back to the start after a wave; the second wave, identical to the first, must not grow it
//! (a leak of sessions, buffers or timers grows with every wave).
//!
//! The server runs with `--resume-grace 1`, so a client away for more than about a second
//! loses its session: messages queued for it come back to their senders as UNDELIVERED, its
//! friends get DISCONNECT, and it starts over as a new session. Pings and the idle drop are off
//! so that a client that is not being driven at the moment is never dropped for silence.
//!
//! Each worker thread drives its own 250 clients, and friendships never cross workers, so a
//! worker sees both ends of every message it causes: the ledger is exact. "Dropping" shuts down
//! only the client's sending side and reads what the server had already sent until it closes
//! the socket: the server sees a dropped client, and no frame it wrote is lost in the test's own
//! socket buffers (which would make a correct server look lossy).
//!
//! This file holds the waves and the test; a worker's clients, churn and ledger are in
//! `soak/worker.rs`, the metrics page in `soak/metrics.rs`.

mod common;

#[path = "soak/metrics.rs"]
mod metrics;
#[path = "soak/worker.rs"]
mod worker;

use std::time::{Duration, Instant};

use common::*;
use metrics::Metrics;
use secchat::memory::QUIET_TRIM_EVERY;
use worker::{Tally, Worker, total};

const CLIENTS: usize = 2_000;
const WORKERS: usize = 8;
/// Churn in short mode, over both waves.
const SHORT_CHURN: Duration = Duration::from_secs(15);
const GRACE_SECS: &str = "1";

fn churn_time() -> Duration {
    std::env::var("SECCHAT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(SHORT_CHURN, Duration::from_secs_f64)
}

/// One wave: connect every client, churn for `churn`, account for every message, leave.
fn wave(server: &Server, churn: Duration) -> Tally {
    let workers: Vec<Worker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|index| {
                scope.spawn(move || {
                    let mut worker = Worker::connect(server, index, CLIENTS / WORKERS);
                    worker.run(server, Instant::now() + churn);
                    worker.settle();
                    worker
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("soak worker"))
            .collect()
    });
    let tally = total(&workers);
    for worker in workers {
        worker.leave();
    }
    tally
}

/// The quiet trim's period plus a sweep period (1 s with pings and idle timeouts off) plus slack.
const QUIET_TRIM_WAIT: Duration = QUIET_TRIM_EVERY.saturating_add(Duration::from_secs(2));

#[test]
fn thousands_of_clients_churn_and_every_message_is_accounted_for() {
    raise_open_file_limit();
    let metrics = Metrics {
        addr: format!("127.0.0.1:{}", free_port()),
    };
    let server = Server::start(&[
        "--max-connections-per-ip",
        "0",
        "--max-connections",
        "5000",
        "--resume-grace",
        GRACE_SECS,
        "--ping-interval",
        "0",
        "--idle-timeout",
        "0",
        "--metrics-listen",
        &metrics.addr,
    ]);
    let rss_baseline = rss_kib(server.pid());
    let churn = churn_time() / 2;
    let mut rss_after = Vec::new();
    let mut routed_before = 0;
    for round in 1..=2 {
        let started = Instant::now();
        let tally = wave(&server, churn);
        eprintln!("wave {round} took {:?}: {tally:?}", started.elapsed());
        // The churn must have exercised every path the ledger speaks about.
        assert!(tally.messages > 1_000, "too few messages: {tally:?}");
        assert!(tally.queued > 0 && tally.undelivered > 0, "{tally:?}");
        assert!(tally.resumed > 0 && tally.expired > 0, "{tally:?}");
        // Nothing is left once everyone has left and the windows have expired ...
        let page = metrics.wait_until_empty();
        // ... and the server routed exactly the messages it acknowledged.
        let routed = Metrics::get(&page, "secchat_messages_routed_total");
        assert_eq!(
            routed - routed_before,
            (tally.acked + tally.queued) as u64,
            "messages routed vs acknowledged"
        );
        routed_before = routed;
        // Memory goes back to the system at sweeps chosen by memory.rs: when most connections
        // have left (during the wave's wind-down, at a moment that varies run to run) and at a
        // quiet sweep at most every 10 s. Reading RSS after that quiet trim measures both waves
        // in the same state instead of wherever the wind-down happened to leave them.
        std::thread::sleep(QUIET_TRIM_WAIT);
        rss_after.push(rss_kib(server.pid()));
    }
    eprintln!("RSS: {rss_baseline} KiB at start, {rss_after:?} KiB after each wave");
    // glibc keeps freed heap pages for reuse rather than returning them, and hash tables keep
    // their high-water capacity, so RSS after a wave stays above the start. A leak grows with
    // every wave; retention does not: the second, identical wave must add almost nothing.
    let (first, second) = (rss_after[0], rss_after[1]);
    assert!(
        second <= first + 2 * 1024,
        "the second wave grew RSS from {first} to {second} KiB: a leak"
    );
    assert!(
        first <= rss_baseline + 32 * 1024,
        "a wave of {CLIENTS} clients left {} KiB behind",
        first - rss_baseline
    );
    let (mut last, _, _) = connect_session(&server);
    last.expect_nothing_pending();
}
