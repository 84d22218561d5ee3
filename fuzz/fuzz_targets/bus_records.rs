//! One node of a cluster fed arbitrary records from "other nodes" (`Router::from_bus`), between
//! client frames of its own sessions, answers and failures from the bus, checkpoints and ticks.
//!
//! Records come from a small grammar that names the IDs of the node's own sessions and of a few
//! sessions elsewhere, the request numbers the router handed out, and handles its sessions
//! listen on, plus raw fuzzer text. After every event: `Router::check_invariants()` holds, every
//! frame goes to an open connection and is a JSON object with a string `type`, and nothing
//! panics.
#![no_main]

use libfuzzer_sys::arbitrary::{Result as ArbitraryResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use secchat::id::Id;
use secchat::router::{
    Action, BusFailure, BusOutput, ConnId, MailLetter, Now, Recorder, Router, RouterConfig,
    SeededEntropy,
};
use secchat::protocol::Handle;
use serde_json::Value;

const MAX_EVENTS: usize = 200;
const KEY: &str = "\"-----BEGIN PGP PUBLIC KEY BLOCK-----\\nfuzz\"";
const PAYLOAD: &str = "\"-----BEGIN PGP MESSAGE-----\\nfuzz\"";
const HANDLES: [&str; 2] = [
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
];

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let mut node = Node::new();
    for _ in 0..MAX_EVENTS {
        if input.is_empty() || node.step(&mut input).is_err() {
            break;
        }
    }
});

struct Node {
    router: Router<SeededEntropy>,
    sink: Recorder,
    now: Now,
    /// This node's sessions: (connection, ID text).
    local: Vec<(ConnId, String)>,
    open: Vec<ConnId>,
    /// Request numbers seen in records this node sent.
    rids: Vec<u64>,
    /// Session IDs claimed here.
    claimed: Vec<Id>,
    /// The latest letters this node gave the cluster's mailbox, to hand back as not kept.
    letters: Vec<(Handle, MailLetter)>,
    next_conn: ConnId,
}

impl Node {
    fn new() -> Node {
        let config = RouterConfig {
            cluster: true,
            node_name: "here".to_owned(),
            max_sessions: 8,
            ..RouterConfig::defaults()
        };
        let mut node = Node {
            router: Router::new(config, SeededEntropy(7)),
            sink: Recorder::default(),
            now: Now {
                mono_ms: 1_000_000,
                unix_ms: 1_795_000_000_000,
            },
            local: Vec::new(),
            open: Vec::new(),
            rids: Vec::new(),
            letters: Vec::new(),
            claimed: Vec::new(),
            next_conn: 1,
        };
        for _ in 0..3 {
            node.connect();
        }
        node
    }

    fn connect(&mut self) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.router.open(conn, self.now);
        self.open.push(conn);
        self.router.text(
            conn,
            r#"{"type":"CONNECT","version":2}"#,
            self.now,
            &mut self.sink,
        );
        self.observe();
        for &id in &self.claimed.clone() {
            self.router.claim_confirmed(id, &mut self.sink);
        }
        self.observe();
    }

    /// A session ID: one of this node's, one of a few "elsewhere", or junk.
    fn id(&self, input: &mut Unstructured<'_>) -> ArbitraryResult<String> {
        Ok(match input.int_in_range(0..=4u8)? {
            0..=2 => self
                .local
                .get(input.int_in_range(0..=self.local.len().saturating_sub(1))?)
                .map(|(_, id)| id.clone())
                .unwrap_or_else(|| "000000".to_owned()),
            3 => ["7ZZZZZ", "8YYYYY", "9XXXXX"][input.int_in_range(0..=2usize)?].to_owned(),
            _ => "000000".to_owned(),
        })
    }

    /// An ID as records carry it (its number), or a number that is no ID.
    fn id_number(&self, input: &mut Unstructured<'_>) -> ArbitraryResult<String> {
        let text = self.id(input)?;
        let parsed = Id::parse_units(text.bytes().map(Some));
        Ok(match (parsed, input.ratio(1u8, 16u8)?) {
            (Some(id), false) => id.bits().to_string(),
            _ => input.arbitrary::<u32>()?.to_string(),
        })
    }

    fn rid(&self, input: &mut Unstructured<'_>) -> ArbitraryResult<u64> {
        Ok(match self.rids.is_empty() || input.ratio(1u8, 8u8)? {
            true => input.arbitrary()?,
            false => self.rids[input.int_in_range(0..=self.rids.len() - 1)?],
        })
    }

    fn record(&self, input: &mut Unstructured<'_>) -> ArbitraryResult<String> {
        let from = self.id_number(input)?;
        let to = self.id_number(input)?;
        let rid = self.rid(input)?;
        let handle = HANDLES[input.int_in_range(0..=1usize)?];
        let block = "[0,281470681743360,128]";
        Ok(match input.int_in_range(0..=17u8)? {
            0 => format!(
                r#"{{"message":{{"from":{from},"to":{to},"payload":{PAYLOAD},"ts":1,"rid":{rid},"reference":"\"r\""}}}}"#
            ),
            1 => format!(
                r#"{{"request":{{"from":{from},"to":{to},"key":{KEY},"block":{block},"rid":{rid}}}}}"#
            ),
            2 => format!(r#"{{"accept":{{"from":{from},"to":{to},"key":{KEY},"rid":{rid}}}}}"#),
            3 => format!(r#"{{"decline":{{"from":{from},"to":{to}}}}}"#),
            4 => format!(r#"{{"remove":{{"from":{from},"to":{to}}}}}"#),
            5 => format!(r#"{{"bye":{{"from":{from},"to":{to}}}}}"#),
            6 => format!(r#"{{"cancel":{{"from":{from},"to":{to}}}}}"#),
            7 => format!(r#"{{"withdrawn":{{"from":{from},"to":{to}}}}}"#),
            8 => format!(r#"{{"presence":{{"from":{from},"to":{to},"online":true}}}}"#),
            9 => format!(r#"{{"undelivered":{{"from":{from},"to":{to},"reference":"\"r\""}}}}"#),
            10 => {
                let result = [
                    "sent",
                    "queued",
                    "not_friends",
                    "unavailable",
                    "peer_busy",
                    "x",
                ][input.int_in_range(0..=5usize)?];
                format!(r#"{{"reply":{{"to":{to},"rid":{rid},"result":"{result}"}}}}"#)
            }
            11 => format!(
                r#"{{"handle_message":{{"from":{from},"handle":"{handle}","payload":{PAYLOAD},"ts":1,"rid":{rid},"may_store":true,"block":{block},"serial":1}}}}"#
            ),
            12 => format!(
                r#"{{"handle_messages":{{"from":{from},"handles":[["{handle}",{rid}],["{}",1]],"payload":{PAYLOAD},"ts":1,"may_store":false,"block":{block},"serial":1}}}}"#,
                HANDLES[0]
            ),
            13 => format!(
                r#"{{"letter":{{"handle":"{handle}","frame":"{{\"type\":\"MESSAGE\",\"handle\":\"{handle}\",\"payload\":\"x\",\"ts\":1}}","block":{block}}}}}"#
            ),
            14 => format!(r#"{{"handle_taken":{{"from":{from},"to":{to},"handle":"{handle}"}}}}"#),
            15 => {
                let token = String::from_utf8_lossy(input.bytes(43)?).into_owned();
                let token = serde_json::to_string(&token).unwrap_or_default();
                format!(
                    r#"{{"takeover":{{"to":{to},"token":{token},"rid":{rid},"node":"there"}}}}"#
                )
            }
            16 => {
                // A handover names the session's relations as the node that held it saw them:
                // here, only with sessions elsewhere (a handover is checked against the halves
                // here only as far as a session here names it; see `install_session`).
                let friend = ["7ZZZZZ", "8YYYYY", "9XXXXX"][input.int_in_range(0..=2usize)?];
                let friend = Id::parse_units(friend.bytes().map(Some)).map_or(0, Id::bits);
                format!(
                    r#"{{"handover":{{"to":{to},"rid":{rid},"state":{{"peer":"10.0.0.1","friends":[{friend}],"pending_out":[],"pending_in":[],"queue":[["{{}}","Control"]],"letters":[],"connected":false}}}}}}"#
                )
            }
            _ => {
                let len = input.int_in_range(0..=64usize)?;
                String::from_utf8_lossy(input.bytes(len)?).into_owned()
            }
        })
    }

    fn step(&mut self, input: &mut Unstructured<'_>) -> ArbitraryResult<()> {
        match input.int_in_range(0..=9u8)? {
            0..=4 => {
                let record = self.record(input)?;
                self.router.from_bus(&record, self.now, &mut self.sink);
            }
            5 => {
                let Some(&(conn, _)) = self.local.get(input.int_in_range(0..=2usize)?) else {
                    return Ok(());
                };
                let to = self.id(input)?;
                let handle = HANDLES[input.int_in_range(0..=1usize)?];
                let frame = match input.int_in_range(0..=5u8)? {
                    0 => {
                        format!(r#"{{"type":"MESSAGE","to":"{to}","payload":{PAYLOAD},"ref":"m"}}"#)
                    }
                    1 => format!(
                        r#"{{"type":"FRIEND_REQUEST","to":"{to}","public_key":{KEY},"ref":"q"}}"#
                    ),
                    2 => format!(
                        r#"{{"type":"FRIEND_ACCEPT","to":"{to}","public_key":{KEY},"ref":"a"}}"#
                    ),
                    3 => format!(r#"{{"type":"LISTEN","handles":["{handle}"],"ref":"l"}}"#),
                    4 => format!(
                        r#"{{"type":"MESSAGE","handles":["{}","{}"],"payload":{PAYLOAD},"mailbox":true,"ref":"g"}}"#,
                        HANDLES[0], HANDLES[1]
                    ),
                    _ => format!(r#"{{"type":"FRIEND_REMOVE","to":"{to}"}}"#),
                };
                if self.open.contains(&conn) {
                    self.router.text(conn, &frame, self.now, &mut self.sink);
                }
            }
            6 => {
                let rid = self.rid(input)?;
                let failure = [
                    BusFailure::NoSuchSession,
                    BusFailure::Unavailable,
                    BusFailure::NodeGone,
                ][input.int_in_range(0..=2usize)?];
                self.router
                    .bus_failed(rid, failure, self.now, &mut self.sink);
            }
            7 => {
                let rid = self.rid(input)?;
                match input.int_in_range(0..=3u8)? {
                    0 => self.router.bus_stored(rid, self.now, &mut self.sink),
                    3 => {
                        if let Some((handle, letter)) = self.letters.pop() {
                            self.router
                                .letter_unkept(handle, &letter, self.now, &mut self.sink);
                        }
                    }
                    1 => self
                        .router
                        .checkpoint_loaded(rid, None, &[], self.now, &mut self.sink),
                    _ => {
                        let conn = self.next_conn;
                        self.next_conn += 1;
                        self.router.open(conn, self.now);
                        self.open.push(conn);
                        let id = self.id(input)?;
                        let resume = format!(
                            r#"{{"type":"CONNECT","version":2,"resume":{{"id":"{id}","token":"{}"}}}}"#,
                            "T".repeat(43)
                        );
                        self.router.text(conn, &resume, self.now, &mut self.sink);
                    }
                }
            }
            8 => {
                if let Some(&conn) = self.open.get(input.int_in_range(0..=7usize)?) {
                    self.router.closed(conn, self.now, &mut self.sink);
                    self.open.retain(|&open| open != conn);
                }
            }
            _ => {
                self.now.mono_ms += input.int_in_range(1..=7_000u64)?;
                self.now.unix_ms += 1;
                self.router.tick(self.now, &mut self.sink);
                self.router.checkpoint(self.now, &mut self.sink);
            }
        }
        self.observe();
        Ok(())
    }

    /// Checks what the router did and learns the IDs and request numbers it handed out.
    fn observe(&mut self) {
        if let Err(broken) = self.router.check_invariants() {
            panic!("invariant broken: {broken}");
        }
        for action in self.sink.take() {
            match action {
                Action::Send { conn, frame } => {
                    assert!(self.open.contains(&conn), "frame to a closed conn: {frame}");
                    let value: Value = serde_json::from_str(&frame)
                        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {frame}"));
                    assert!(value["type"].is_string(), "frame without type: {frame}");
                    if value["type"] == "CONNECT"
                        && let Some(id) = value["id"].as_str()
                        && !self.local.iter().any(|(_, known)| known == id)
                    {
                        self.local.push((conn, id.to_owned()));
                    }
                }
                Action::Close { conn, .. } => self.open.retain(|&open| open != conn),
                Action::Bus(BusOutput::Claim(id)) => self.claimed.push(id),
                Action::Bus(BusOutput::Record { rid: Some(rid), .. })
                | Action::Bus(BusOutput::ToHandle { rid: Some(rid), .. }) => self.rids.push(rid),
                Action::Bus(BusOutput::ToHandles { handles, .. }) => {
                    self.rids.extend(handles.iter().map(|(_, rid)| *rid));
                }
                Action::Bus(BusOutput::StoreLetter { handle, letter }) => {
                    if self.letters.len() < 64 {
                        self.letters.push((handle, letter));
                    }
                }
                Action::Bus(_) => {}
            }
        }
        if self.rids.len() > 64 {
            self.rids.drain(..32);
        }
    }
}
