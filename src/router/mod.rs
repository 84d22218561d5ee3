//! The pure routing core: sessions, friendships, pending requests, resume queues, rate limits.
//!
//! It owns no socket, reads no clock and draws no randomness of its own: the event loop hands it
//! decoded events, the current time ([`Now`]) and an [`Entropy`] source, and it appends what must be
//! sent or closed to an `out` vector of [`Action`]s. Unit tests, property tests and benches drive it
//! directly.
//!
//! STUB: the public API below is the contract with `server.rs`; bodies are being written.

/// The event loop's handle for one WebSocket connection. Never reused within a process.
pub type ConnId = u64;

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
    /// A connected recipient with more unflushed bytes than this is `peer_busy`.
    pub max_unsent_bytes: usize,
    /// A recipient in its resume window whose queue holds more bytes than this is `peer_busy`.
    pub max_queue_bytes: usize,
    /// ... or more frames than this.
    pub max_queue_len: usize,
    /// Outgoing friend requests one session may have pending at once (beyond: `rate_limited`).
    pub max_pending_requests: usize,
}

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
            max_pending_requests: 256,
        }
    }
}

/// What the event loop must do for the router.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send one text frame (a complete JSON object) on `conn`.
    Send { conn: ConnId, frame: String },
    /// Send everything queued for `conn` so far, then close it with this WebSocket close code.
    /// The router has already forgotten `conn`: a later [`Router::closed`] for it is a no-op.
    Close {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
}

/// Counters for logs and metrics. Never an ID, key or payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub connections: usize,
    pub sessions: usize,
    pub sessions_resuming: usize,
    pub queued_frames: usize,
    pub queued_bytes: usize,
    pub messages_routed: u64,
}

pub struct Router<E: Entropy> {
    config: RouterConfig,
    entropy: E,
}

impl<E: Entropy> Router<E> {
    pub fn new(config: RouterConfig, entropy: E) -> Self {
        Router { config, entropy }
    }

    /// A WebSocket connection finished its handshake.
    pub fn open(&mut self, conn: ConnId, now: Now) {
        let _ = (conn, now, &self.config, &mut self.entropy);
        todo!()
    }

    /// A complete text message arrived on `conn`.
    pub fn text(&mut self, conn: ConnId, text: &str, now: Now, out: &mut Vec<Action>) {
        let _ = (conn, text, now, out);
        todo!()
    }

    /// A complete binary message arrived on `conn` (always `bad_json`).
    pub fn binary(&mut self, conn: ConnId, now: Now, out: &mut Vec<Action>) {
        let _ = (conn, now, out);
        todo!()
    }

    /// `conn` is gone without DISCONNECT (dropped, idle, protocol error): its session, if any,
    /// enters the resume window. A no-op for a connection the router does not know.
    pub fn closed(&mut self, conn: ConnId, now: Now, out: &mut Vec<Action>) {
        let _ = (conn, now, out);
        todo!()
    }

    /// Everything sent to `conn` so far has been written to the socket.
    pub fn flushed(&mut self, conn: ConnId) {
        let _ = conn;
        todo!()
    }

    /// Expire resume windows whose deadline passed.
    pub fn tick(&mut self, now: Now, out: &mut Vec<Action>) {
        let _ = (now, out);
        todo!()
    }

    /// The earliest monotonic deadline [`Router::tick`] must run at, if any.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        todo!()
    }

    /// Whether `conn` has a session (sent a successful CONNECT).
    pub fn is_connected(&self, conn: ConnId) -> bool {
        let _ = conn;
        todo!()
    }

    pub fn stats(&self) -> RouterStats {
        todo!()
    }
}
