//! The cluster bus (`--cluster redis://…`): SecChat nodes sharing one Redis or Valkey.
//!
//! With more than one node (more cores, more machines), a session's friends may be connected to
//! another node. The nodes share session IDs, handles and mailboxes and route frames to one
//! another through Redis pub/sub: each node subscribes to its own channel and publishes a frame
//! to the channel of the node its recipient is on. Redis sees what the server sees, never more:
//! IDs, handles and end-to-end encrypted payloads, never a key or a plaintext.
//!
//! This module is the transport only: [`RedisLink`] is one Redis connection, in one of two
//! roles (pipelined commands, or a subscriber), with reconnection and backoff, TLS for
//! `rediss://` and round-trip figures for `/metrics`; [`ClusterUrl`] is the parsed
//! `--cluster` URL. What the nodes say to one another is built on top.
//!
//! A link is one more non-blocking socket in the mio loop, registered under a token like any
//! client connection; there is no side thread. The loop already multiplexes thousands of
//! sockets on one thread, so one or two more cost nothing, and keeping everything on that
//! thread keeps the router free of locks and of any ordering question between threads: a
//! frame from the bus is routed in the same turn, by the same code, as one from a WebSocket.
//! The price is that a link must never block: connecting, TLS, the handshake commands and
//! every read and write go through the loop's readiness events (name resolution, once per
//! attempt, is the one blocking call; use an IP address or an /etc/hosts name where that
//! matters).
//!
//! One job per module:
//! - `url`: [`ClusterUrl`], `redis://[user[:password]@]host[:port][/db]`, password redacted;
//! - `resp`: RESP2 commands and [`Reply`]s, framed by `redis-protocol` behind a bounded scan;
//! - `stream`: the socket, plain or rustls's client side, and [`tls_client_config`];
//! - `link`: [`RedisLink`], the connection's state machine and its contract with the loop;
//! - `latency`: [`Latency`], round trips with constant memory.

mod latency;
mod link;
mod mailbox;
mod node;
mod resp;
mod stream;
mod url;

pub use latency::{BUCKETS as LATENCY_BUCKETS, Latency};
pub use link::{
    BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, IDLE_PING, LinkError, LinkEvent, LinkState,
    MAX_IN_FLIGHT, MAX_OUTPUT_BYTES, READ_BUDGET, REPLY_TIMEOUT, RedisLink, Role,
};
pub use mailbox::{
    COLLECT as MAILBOX_COLLECT, LETTER_OVERHEAD as MAILBOX_LETTER_OVERHEAD,
    LISTEN as MAILBOX_LISTEN, MailboxRules, STORE as MAILBOX_STORE, Stored, block_name,
};
pub use node::{
    BusCounters, BusNews, ClusterBus, DIRECTORY_CACHE, DIRECTORY_TTL, HANDLE_CACHE,
    MAX_BATCH_BYTES, MAX_PARKED_BYTES, REFRESH_EVERY, StoredLetter, records,
};
pub use resp::{Decoder, MAX_DEPTH, MAX_REPLY_BYTES, Reply, encode_command};
pub use stream::{SYSTEM_CA_BUNDLE, tls_client_config};
pub use url::{ClusterUrl, DEFAULT_PORT, UrlError};
