//! SecChat: a zero-knowledge router for end-to-end encrypted chat.
//!
//! The crate is split so that each module has one job:
//! - [`address`]: client addresses, nested IPv6 blocks and the per-address budgets.
//! - [`id`]: session IDs and resume tokens (generation from handed-in entropy, parsing).
//! - [`protocol`]: decoding client frames (borrowed, payload kept raw) and encoding server frames.
//! - [`router`]: the pure routing core: events and the current time in, frames to send out. No I/O.
//! - [`http`]: HTTP/1.1 request heads, static responses, security headers, the Origin check.
//! - [`assets`]: the web client's files, built into the binary or read from `--public DIR`.
//! - [`config`]: flags and `SECCHAT_*` environment variables.
//! - [`connection`]: one TCP connection's lifecycle (HTTP head → static file or WebSocket → closing).
//! - [`server`]: the single-threaded mio poll loop that moves bytes between sockets and the router.
//! - [`process_limits`]: the open-file limit, raised at start-up (each connection is a file).
//! - [`tls`]: HTTPS/WSS: a connection's byte stream (plain or TLS), certificates, `--tls-self-signed`.
//! - [`bus`]: the cluster bus's transport: a Redis/Valkey connection driven by the mio loop.

pub mod address;
pub mod assets;
pub mod bus;
pub mod config;
pub mod connection;
pub mod http;
pub mod id;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod process_limits;
pub mod protocol;
pub mod router;
pub mod server;
pub mod socket_options;
pub mod tls;
