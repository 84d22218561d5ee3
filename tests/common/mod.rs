//! Support for the integration tests: start the real `secchat` binary on a free port and drive it
//! over real TCP sockets, with tungstenite as the WebSocket client ([`Client`]) or with hand-made
//! frames ([`RawClient`]) where a test needs what a well-behaved client library refuses to send.
//!
//! - `server`: starting and stopping the binary ([`ServerBuilder`], [`Server`], logs, signals)
//! - `http`: raw HTTP requests and responses, the security-header checks
//! - `client`: the WebSocket [`Client`], sessions, friendships, message helpers
//! - `frames`: hand-made frames and [`RawClient`]
//! - `load`: a healthy pair's round trips under stress, TCP from many sources, memory, file limit
//! - `addresses`: IPv6 sources in a network namespace, upgrades with extra headers
//! - `tls`: a test CA and its certificates, HTTPS requests and a WSS client over rustls (used as
//!   `common::tls::…`, not re-exported here)
//! - `redis`: a real `redis-server` on a free port for the bus tests (used as `common::redis::…`)
//!
//! Each test binary uses only part of these helpers, so unused ones are not warned about.
#![allow(dead_code)]

mod addresses;
mod client;
mod frames;
mod http;
mod load;
pub mod redis;
mod server;
pub mod tls;

// Each test binary uses only part of the re-exports too.
#[allow(unused_imports)]
pub use addresses::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use frames::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use load::*;
#[allow(unused_imports)]
pub use server::*;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a test waits for a frame it expects before failing. Generous: the machine is shared.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// An armored public key as far as the server can tell (it only checks the armor header).
pub const TEST_KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxjMEZk9yXBYJKwYBBAHaRw8BAQdAintegrationtestkeymaterialAAAA\n=AbCd\n-----END PGP PUBLIC KEY BLOCK-----\n";

/// An armored message as far as the server can tell.
pub const TEST_PAYLOAD: &str = "-----BEGIN PGP MESSAGE-----\n\nwV4DintegrationtestpayloadAAAA\n=XyZw\n-----END PGP MESSAGE-----\n";

pub const PAYLOAD_HEADER: &str = "-----BEGIN PGP MESSAGE-----";
pub const KEY_HEADER: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

/// A payload that carries `marker`, so a test can tell messages apart.
pub fn payload_with(marker: &str) -> String {
    format!("{PAYLOAD_HEADER}\n\n{marker}\n=XyZw\n-----END PGP MESSAGE-----\n")
}

/// A public key that carries `marker`.
pub fn key_with(marker: &str) -> String {
    format!("{KEY_HEADER}\n\n{marker}\n=AbCd\n-----END PGP PUBLIC KEY BLOCK-----\n")
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

pub fn is_valid_id(id: &str) -> bool {
    id.len() == 6 && id.chars().all(|c| CROCKFORD.contains(c))
}

pub fn is_valid_token(token: &str) -> bool {
    token.len() == 43
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
