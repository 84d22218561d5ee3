//! Property tests for the routing core: arbitrary event sequences over several connections.
//!
//! After every event the router's own structural invariants must hold
//! ([`Router::check_invariants`]), and an independent model of what clients can observe must
//! agree with it: which sessions are alive or in their resume window, who is friends with whom
//! (from accepted FRIEND_ACCEPT / FRIEND_REMOVE), and a ledger of every accepted MESSAGE. The
//! ledger demands that a message is delivered at most once and only to its recipient, that
//! UNDELIVERED goes only to the sender and only after the recipient's session ended, and, at the
//! end, that every acknowledged message whose sender is still alive was either delivered or
//! reported UNDELIVERED exactly once.
//!
//! Version 2's handles and mailbox have a model and a ledger of their own (LISTEN, UNLISTEN,
//! FETCH, MESSAGE to a handle or to several with and without `"mailbox":false`): a message to a handle is
//! delivered at most once, or reported UNDELIVERED at most once, or still waits, never two of
//! these; LISTENING counts what the model counts; and at the end the mailbox holds every letter
//! still waiting whose sender would have been told of its loss (`router_props/model/handles.rs`).
//!
//! This file holds the operations, their strategies and the property; the model and how each
//! operation drives it and the router are in `router_props/model/`.

use proptest::collection::vec;
use proptest::prelude::*;

use secchat::router::RouterConfig;

mod router_model;

#[path = "router_props/model/mod.rs"]
mod model;
use model::{HANDLES, Model};

const SLOTS: usize = 4;
const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\\nkey";

#[derive(Clone, Debug)]
enum Target {
    /// The session last seen on this slot (connected now, or away, or ended), in some spelling.
    Slot(usize, Spelling),
    /// The n-th session ID ever issued (modulo how many there are), spelled in a normalized form.
    Known(usize, Spelling),
    /// The n-th session with a pending friend request to the acting session (per the model).
    Requester(usize),
    /// The n-th friend of the acting session (per the model).
    Friend(usize),
    /// This exact ID.
    Id(String),
    /// Not an ID at all.
    Invalid,
    /// A valid ID that (almost surely) no session has.
    Nobody,
}

#[derive(Clone, Copy, Debug)]
enum Spelling {
    Exact,
    Lower,
    Dashed,
}

#[derive(Clone, Debug)]
enum Op {
    Connect {
        slot: usize,
        with_ref: bool,
    },
    Resume {
        slot: usize,
        who: usize,
        corrupt: bool,
    },
    FriendRequest {
        slot: usize,
        to: Target,
        good_key: bool,
        with_ref: bool,
    },
    FriendAccept {
        slot: usize,
        to: Target,
        with_ref: bool,
    },
    FriendDecline {
        slot: usize,
        to: Target,
        with_ref: bool,
    },
    FriendRemove {
        slot: usize,
        to: Target,
        with_ref: bool,
    },
    Message {
        slot: usize,
        to: Target,
        encrypted: bool,
        with_ref: bool,
    },
    Disconnect {
        slot: usize,
        with_ref: bool,
    },
    Ping {
        slot: usize,
    },
    Garbage {
        slot: usize,
        which: usize,
    },
    GarbageBurst {
        slot: usize,
    },
    Binary {
        slot: usize,
    },
    Closed {
        slot: usize,
    },
    /// The loop flushed the slot's connection, leaving `left` bytes the socket did not take.
    Flushed {
        slot: usize,
        left: usize,
    },
    /// The usual handshake in one step: `a` requests, `b` accepts.
    Befriend {
        a: usize,
        b: usize,
    },
    Advance {
        ms: u64,
    },
    /// LISTEN on handles of the model's pool (indexes, modulo its size).
    Listen {
        slot: usize,
        handles: Vec<usize>,
        with_ref: bool,
    },
    Unlisten {
        slot: usize,
        handles: Vec<usize>,
        with_ref: bool,
    },
    Fetch {
        slot: usize,
    },
    /// MESSAGE to several handles of the pool (some named twice now and then).
    ToHandles {
        slot: usize,
        handles: Vec<usize>,
        probe: bool,
        encrypted: bool,
        with_ref: bool,
    },
    /// MESSAGE to a handle of the pool; `probe`: with `"mailbox":false`.
    ToHandle {
        slot: usize,
        handle: usize,
        probe: bool,
        encrypted: bool,
        with_ref: bool,
    },
}

fn target() -> impl Strategy<Value = Target> {
    let spelling = prop_oneof![
        Just(Spelling::Exact),
        Just(Spelling::Lower),
        Just(Spelling::Dashed)
    ];
    prop_oneof![
        12 => (0..SLOTS, spelling.clone()).prop_map(|(n, s)| Target::Slot(n, s)),
        2 => (0..12usize, spelling).prop_map(|(n, s)| Target::Known(n, s)),
        1 => Just(Target::Invalid),
        1 => Just(Target::Nobody),
    ]
}

fn message_target() -> impl Strategy<Value = Target> {
    prop_oneof![4 => (0..4usize).prop_map(Target::Friend), 1 => target()]
}

fn accept_target() -> impl Strategy<Value = Target> {
    prop_oneof![4 => (0..4usize).prop_map(Target::Requester), 1 => target()]
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        4 => (slot.clone(), any::<bool>()).prop_map(|(slot, with_ref)| Op::Connect { slot, with_ref }),
        6 => (slot.clone(), 0..12usize, prop::bool::weighted(0.2))
            .prop_map(|(slot, who, corrupt)| Op::Resume { slot, who, corrupt }),
        6 => (slot.clone(), target(), prop::bool::weighted(0.9), any::<bool>())
            .prop_map(|(slot, to, good_key, with_ref)| Op::FriendRequest { slot, to, good_key, with_ref }),
        4 => (slot.clone(), accept_target(), any::<bool>())
            .prop_map(|(slot, to, with_ref)| Op::FriendAccept { slot, to, with_ref }),
        2 => (slot.clone(), accept_target(), any::<bool>())
            .prop_map(|(slot, to, with_ref)| Op::FriendDecline { slot, to, with_ref }),
        2 => (slot.clone(), target(), any::<bool>())
            .prop_map(|(slot, to, with_ref)| Op::FriendRemove { slot, to, with_ref }),
        36 => (slot.clone(), message_target(), prop::bool::weighted(0.95), prop::bool::weighted(0.8))
            .prop_map(|(slot, to, encrypted, with_ref)| Op::Message { slot, to, encrypted, with_ref }),
        1 => (slot.clone(), any::<bool>()).prop_map(|(slot, with_ref)| Op::Disconnect { slot, with_ref }),
        2 => slot.clone().prop_map(|slot| Op::Ping { slot }),
        4 => (slot.clone(), 0..GARBAGE.len()).prop_map(|(slot, which)| Op::Garbage { slot, which }),
        1 => slot.clone().prop_map(|slot| Op::GarbageBurst { slot }),
        2 => slot.clone().prop_map(|slot| Op::Binary { slot }),
        5 => slot.clone().prop_map(|slot| Op::Closed { slot }),
        14 => (slot.clone(), slot.clone()).prop_map(|(a, b)| Op::Befriend { a, b }),
        10 => (slot.clone(), prop_oneof![Just(0usize), 0..4_096usize])
            .prop_map(|(slot, left)| Op::Flushed { slot, left }),
        8 => prop_oneof![0..50u64, 0..1_500u64, 0..70_000u64].prop_map(|ms| Op::Advance { ms }),
        6 => (slot.clone(), vec(0..HANDLES, 1..4), any::<bool>())
            .prop_map(|(slot, handles, with_ref)| Op::Listen { slot, handles, with_ref }),
        2 => (slot.clone(), vec(0..HANDLES, 1..3), any::<bool>())
            .prop_map(|(slot, handles, with_ref)| Op::Unlisten { slot, handles, with_ref }),
        4 => slot.clone().prop_map(|slot| Op::Fetch { slot }),
        6 => (
            slot.clone(),
            vec(0..HANDLES, 1..4),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.95),
            prop::bool::weighted(0.8),
        )
            .prop_map(|(slot, handles, probe, encrypted, with_ref)| Op::ToHandles {
                slot,
                handles,
                probe,
                encrypted,
                with_ref,
            }),
        16 => (
            slot,
            0..HANDLES,
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.95),
            prop::bool::weighted(0.8),
        )
            .prop_map(|(slot, handle, probe, encrypted, with_ref)| Op::ToHandle {
                slot,
                handle,
                probe,
                encrypted,
                with_ref,
            }),
    ]
}

const GARBAGE: &[&str] = &[
    "nope",
    "[]",
    "{\"type\":7}",
    "{\"type\":\"ACK\",\"ref\":\"g\"}",
    "{\"type\":\"MESSAGE\"}",
    "{\"type\":\"PING\",\"ref\":7}",
    "{\"type\":\"CONNECT\",\"resume\":7}",
    "{\"type\":\"WHAT\",\"ref\":\"g\"}",
    "{\"type\":\"FRIEND_REQUEST\",\"to\":\"K7Q2ZD\",\"to\":\"K7Q2ZD\"}",
    "{\"type\":\"CONNECT\",\"resume\":{\"id\":\"??\",\"token\":\"x\"}}",
];

fn config() -> impl Strategy<Value = RouterConfig> {
    (
        prop_oneof![Just(0u64), Just(500), Just(3_000)],
        2..6usize,
        prop_oneof![Just(0u32), Just(5)],
        prop_oneof![Just(0u32), Just(10)],
        prop_oneof![1 => Just(0usize), 2 => Just(400), 3 => Just(100_000)],
        prop_oneof![Just(300usize), Just(700), Just(100_000)],
        1..4usize,
        1..4usize,
        prop_oneof![Just(0usize), Just(1), Just(2)],
        prop_oneof![Just(1_000usize), Just(64 << 20)],
        (
            prop_oneof![Just(0u32), Just(3)],
            prop_oneof![Just(0u32), Just(3)],
            prop_oneof![Just(40usize), Just(16_384)],
            1..4usize,
            1..3usize,
            prop_oneof![Just(0u32), Just(2)],
        ),
        (
            // Handles: few in all and per session, so that the table fills and blocks make
            // room; or the defaults.
            prop_oneof![Just((2usize, 2usize)), Just((4, 3)), Just((262_144, 4_096))],
            // The mailbox: off, two letters' worth, or the default; letters per handle; TTL.
            prop_oneof![Just(0usize), Just(1_500), Just(64 << 20)],
            prop_oneof![Just(1usize), Just(2), Just(256)],
            prop_oneof![Just(500u64), Just(5_000), Just(7 * 24 * 3_600_000)],
        ),
    )
        .prop_map(
            |(
                grace,
                sessions,
                msg_rate,
                req_rate,
                unsent,
                queue_bytes,
                queue_len,
                pending,
                per_peer,
                buffered,
                (
                    session_rate,
                    request_rate,
                    max_key,
                    pending_in,
                    pending_in_per_address,
                    incoming_rate,
                ),
                ((max_handles, handles_per_session), mailbox, letters_per_handle, ttl),
            )| {
                RouterConfig {
                    max_sessions: sessions,
                    resume_grace_ms: grace,
                    rate_messages_per_sec: msg_rate,
                    rate_friend_requests_per_min: req_rate,
                    max_message_bytes: 65_536,
                    max_unsent_bytes: unsent,
                    max_queue_bytes: queue_bytes,
                    max_queue_len: queue_len,
                    max_buffered_bytes: buffered,
                    max_pending_requests: pending,
                    max_sessions_per_peer: per_peer as u32,
                    rate_sessions_per_address_per_min: session_rate,
                    rate_friend_requests_per_address_per_min: request_rate,
                    max_public_key_bytes: max_key,
                    max_pending_incoming: pending_in,
                    max_pending_incoming_per_address: pending_in_per_address,
                    rate_incoming_requests_per_min: incoming_rate,
                    rate_incoming_requests_per_address_per_min: incoming_rate / 2,
                    max_handles,
                    max_handles_per_session: handles_per_session,
                    mailbox_bytes: mailbox,
                    mailbox_letters_per_handle: letters_per_handle,
                    mailbox_ttl_ms: ttl,
                    ..RouterConfig::defaults()
                }
            },
        )
}

proptest! {
    // No regression files: a failure prints its minimal input, which is the thing to keep.
    #![proptest_config(ProptestConfig {
        cases: 160,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn router_keeps_its_invariants_and_its_promises(
        config in config(),
        seed in any::<u64>(),
        ops in vec(op(), 1..160),
    ) {
        let mut model = Model::new(config, seed);
        for op in &ops {
            model.apply(op)?;
            model.check_agreement()?;
        }
        model.finish()?;
    }
}
