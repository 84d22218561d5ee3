//! What the event loop hands the routing core: its limits ([`RouterConfig`]), the time
//! ([`Now`]) and where session IDs and resume tokens come from ([`Entropy`]).
//!
//! The router reads no clock and draws no randomness of its own: everything time- or
//! chance-dependent comes through these, so tests, benchmarks and fuzzing replay it exactly.

/// The current time, read once per loop iteration by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (any origin): deadlines, rate limits, the error window.
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch: the `ts` of forwarded messages.
    pub unix_ms: u64,
}

/// Where session IDs and resume tokens come from: the OS CSPRNG in the server, a seeded
/// generator in tests.
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);
}

/// A deterministic [`Entropy`] (splitmix64) for tests, benchmarks and fuzzing, where IDs and
/// tokens must be reproducible from a seed. Never for a server: it is predictable by design.
#[derive(Clone, Debug)]
pub struct SeededEntropy(pub u64);

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            // splitmix64: every seed, zero included, gives a full-period stream.
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *byte = (z ^ (z >> 31)) as u8;
        }
    }
}

/// Limits of the routing core. See `docs/PROTOCOL.md` for what each means on the wire.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Sessions at once (connected or in the resume window); `CONNECT` beyond it is `server_full`.
    pub max_sessions: usize,
    /// Length of the resume window; 0 turns resuming off.
    pub resume_grace_ms: u64,
    /// MESSAGEs per second per session (token bucket, burst = rate); 0 = unlimited.
    pub rate_messages_per_sec: u32,
    /// FRIEND_REQUESTs per minute per session (token bucket, burst = rate); 0 = unlimited.
    pub rate_friend_requests_per_min: u32,
    /// Largest client message, reported to clients in the CONNECT reply's `limits`.
    pub max_message_bytes: usize,
    /// A connected recipient with more bytes than this not yet on its socket is `peer_busy`.
    pub max_unsent_bytes: usize,
    /// A recipient in its resume window whose queue holds more bytes than this is `peer_busy`.
    pub max_queue_bytes: usize,
    /// ... or more frames than this.
    pub max_queue_len: usize,
    /// Unsent bytes of all connections plus all resume queues together, past which the two caps
    /// above shrink to a sixteenth (see the `router` module docs).
    pub max_buffered_bytes: usize,
    /// Outgoing friend requests one session may have pending at once (beyond: `rate_limited`).
    pub max_pending_requests: usize,
    /// Sessions (connected or in their resume window) created from one client address (an IPv4
    /// address or an IPv6 /64; its /56 and /48 hold [`crate::address::BLOCK_SHARES`] times as
    /// many); beyond it a new session is refused like a full server. 0 = unlimited. Without it,
    /// one address could fill the server by connecting and dropping: sessions outlive their
    /// sockets.
    pub max_sessions_per_peer: u32,
    /// New sessions per minute created from one client address (burst the same; nested blocks
    /// as above). 0 = unlimited. Bounds churn: sessions that connect, act and leave at once.
    /// In a cluster a resume through another node (a takeover) takes one of these starts when
    /// there is one but is never refused for lack of it, and the same rate is how many
    /// takeovers from one address may fail a minute before its further ones are held
    /// (`remote_sessions.rs`).
    pub rate_sessions_per_address_per_min: u32,
    /// FRIEND_REQUESTs per minute from one client address across all its sessions (burst the
    /// same; nested blocks). 0 = unlimited. Without it, a new session per request would bypass
    /// the per-session rate.
    pub rate_friend_requests_per_address_per_min: u32,
    /// Largest `public_key` in FRIEND_REQUEST and FRIEND_ACCEPT: the JSON string as received,
    /// without its quotes (beyond: `key_too_large`).
    pub max_public_key_bytes: usize,
    /// Pending friend requests one session may have received at once (beyond:
    /// `too_many_requests` to the sender).
    pub max_pending_incoming: usize,
    /// ... of which at most this many from sessions created by one address (an IPv4 address or
    /// an IPv6 /48), so one address cannot take all of them.
    pub max_pending_incoming_per_address: usize,
    /// FRIEND_REQUESTs one session may receive within a minute. 0 = unlimited.
    pub rate_incoming_requests_per_min: u32,
    /// ... of which at most this many from sessions created by one address (IPv4 address or
    /// IPv6 /48), so a few addresses cannot spend the whole minute's budget.
    pub rate_incoming_requests_per_address_per_min: u32,
    /// Handles all sessions together listen on. When they are all taken, the sessions of the
    /// address block (an IPv4 address or an IPv6 /48) holding the most give way to a LISTEN from
    /// a block holding fewer; beyond that, `too_many_handles` (`handles.rs`).
    pub max_handles: usize,
    /// Handles one session listens on.
    pub max_handles_per_session: usize,
    /// Bytes the mailbox holds in all (letters counted as `mailbox::Letter::bytes`); 0 turns the
    /// mailbox off. When it is full, the oldest letter of the sender block holding the most goes
    /// (`mailbox.rs`).
    pub mailbox_bytes: usize,
    /// Letters one handle's mailbox holds.
    pub mailbox_letters_per_handle: usize,
    /// Bytes one handle's mailbox holds.
    pub mailbox_bytes_per_handle: usize,
    /// How long a letter waits before it is dropped (UNDELIVERED `expired`).
    pub mailbox_ttl_ms: u64,
    /// This router is one node of a cluster (`--cluster`): an ID it does not hold may be
    /// another node's session, reached through the bus (`remote.rs`). Off: such an ID is
    /// unknown, and the router never calls [`FrameSink::bus`](super::FrameSink::bus).
    pub cluster: bool,
    /// This node's name in the cluster (empty outside one): where another node sends the
    /// session it hands over to a connection here (`remote_sessions.rs`).
    pub node_name: String,
}

/// `--max-handles`'s default.
pub const DEFAULT_MAX_HANDLES: usize = 262_144;
/// `--mailbox-bytes`'s default: 64 MiB.
pub const DEFAULT_MAILBOX_BYTES: usize = 64 * 1024 * 1024;

impl RouterConfig {
    /// Defaults matching PROTOCOL.md §7 and docs/PROTOCOL.md.
    pub fn defaults() -> Self {
        RouterConfig {
            max_sessions: 10_000,
            resume_grace_ms: 30_000,
            rate_messages_per_sec: 50,
            rate_friend_requests_per_min: 20,
            max_message_bytes: 65_536,
            max_unsent_bytes: 256 * 1024,
            max_queue_bytes: 256 * 1024,
            max_queue_len: 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            max_pending_requests: 256,
            max_sessions_per_peer: 0,
            rate_sessions_per_address_per_min: 0,
            rate_friend_requests_per_address_per_min: 0,
            max_public_key_bytes: 16 * 1024,
            max_pending_incoming: 32,
            max_pending_incoming_per_address: 8,
            rate_incoming_requests_per_min: 120,
            rate_incoming_requests_per_address_per_min: 10,
            max_handles: DEFAULT_MAX_HANDLES,
            max_handles_per_session: 4096,
            mailbox_bytes: DEFAULT_MAILBOX_BYTES,
            mailbox_letters_per_handle: 256,
            mailbox_bytes_per_handle: 1024 * 1024,
            mailbox_ttl_ms: 7 * 24 * 60 * 60 * 1000,
            cluster: false,
            node_name: String::new(),
        }
    }
}
