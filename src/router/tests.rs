//! Every message flow of the core, driven through the public API with a seeded entropy source.
//!
//! This file holds the [`Harness`] and the frame helpers; the tests are in `tests/`, one file per
//! topic.

use serde_json::{Value, json};

use super::*;

const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\\n\\nxsBNBGabc\\u003d\\n-----END PGP PUBLIC KEY BLOCK-----";
const PAYLOAD: &str = "-----BEGIN PGP MESSAGE-----\\n\\nwcBMA\\u002b\\n-----END PGP MESSAGE-----";

struct Harness {
    router: Router<SeededEntropy>,
    /// Every frame counts as unsent until a test says it was flushed.
    sink: Recorder,
    now: Now,
}

struct Session {
    conn: ConnId,
    id: String,
    token: String,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(RouterConfig::defaults())
    }

    fn with(config: RouterConfig) -> Harness {
        Harness {
            router: Router::new(config, SeededEntropy(0x2545_F491_4F6C_DD1D)),
            sink: Recorder::default(),
            now: Now {
                mono_ms: 1_000_000,
                unix_ms: 1_795_000_000_000,
            },
        }
    }

    fn checked(&self, actions: Vec<Action>) -> Vec<Action> {
        if let Err(broken) = self.router.check_invariants() {
            panic!("invariant broken: {broken}");
        }
        actions
    }

    fn open(&mut self, conn: ConnId) {
        self.router.open(conn, self.now);
    }

    fn text(&mut self, conn: ConnId, text: &str) -> Vec<Action> {
        self.router.text(conn, text, self.now, &mut self.sink);
        let actions = self.sink.take();
        self.checked(actions)
    }

    fn json(&mut self, conn: ConnId, value: Value) -> Vec<Action> {
        self.text(conn, &value.to_string())
    }

    /// The loop dropped `conn`'s socket, and its backlog with it.
    fn closed(&mut self, conn: ConnId) -> Vec<Action> {
        self.sink.backlogs.forget(conn);
        self.router.closed(conn, self.now, &mut self.sink);
        let actions = self.sink.take();
        self.checked(actions)
    }

    fn advance(&mut self, ms: u64) {
        self.now.mono_ms += ms;
        self.now.unix_ms += ms;
    }

    fn tick(&mut self) -> Vec<Action> {
        self.router.tick(self.now, &mut self.sink);
        let actions = self.sink.take();
        self.checked(actions)
    }

    fn connect(&mut self, conn: ConnId) -> Session {
        self.open(conn);
        let actions = self.json(conn, json!({"type":"CONNECT"}));
        let reply = only_frame_to(&actions, conn);
        assert_eq!(reply["type"], "CONNECT");
        assert_eq!(reply["resumed"], false);
        Session {
            conn,
            id: reply["id"].as_str().unwrap_or_default().to_owned(),
            token: reply["token"].as_str().unwrap_or_default().to_owned(),
        }
    }

    fn resume(&mut self, conn: ConnId, session: &mut Session) -> Vec<Action> {
        self.open(conn);
        let actions = self.json(
            conn,
            json!({"type":"CONNECT","resume":{"id":session.id,"token":session.token}}),
        );
        let reply = frames_to(&actions, conn)
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        assert_eq!(reply["type"], "CONNECT");
        assert_eq!(reply["resumed"], true, "{reply}");
        assert_eq!(reply["id"], session.id.as_str());
        session.token = reply["token"].as_str().unwrap_or_default().to_owned();
        session.conn = conn;
        actions
    }

    /// Makes `a` and `b` friends through the real handshake.
    fn befriend(&mut self, a: &Session, b: &Session) {
        // Small unsent caps in some tests must not turn the handshake into peer_busy.
        self.sink.flushed(b.conn, 0);
        self.text(a.conn, &friend_request(&b.id, None));
        self.sink.flushed(a.conn, 0);
        let actions = self.text(b.conn, &friend_accept(&a.id, None));
        assert_eq!(only_frame_to(&actions, a.conn)["type"], "FRIEND_ACCEPT");
    }
}

fn friend_request(to: &str, reference: Option<&str>) -> String {
    with_ref(
        format!(r#"{{"type":"FRIEND_REQUEST","to":"{to}","public_key":"{KEY}""#),
        reference,
    )
}

fn friend_accept(to: &str, reference: Option<&str>) -> String {
    with_ref(
        format!(r#"{{"type":"FRIEND_ACCEPT","to":"{to}","public_key":"{KEY}""#),
        reference,
    )
}

fn message(to: &str, reference: Option<&str>) -> String {
    with_ref(
        format!(r#"{{"type":"MESSAGE","to":"{to}","payload":"{PAYLOAD}""#),
        reference,
    )
}

fn with_ref(mut head: String, reference: Option<&str>) -> String {
    if let Some(reference) = reference {
        head.push_str(&format!(r#","ref":"{reference}""#));
    }
    head.push('}');
    head
}

fn frames_to(actions: &[Action], conn: ConnId) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send { conn: to, frame } if *to == conn => serde_json::from_str(frame).ok(),
            _ => None,
        })
        .collect()
}

fn only_frame_to(actions: &[Action], conn: ConnId) -> Value {
    let frames = frames_to(actions, conn);
    assert_eq!(
        frames.len(),
        1,
        "expected one frame to {conn}, got {frames:?}"
    );
    frames.into_iter().next().unwrap_or(Value::Null)
}

fn error_code(actions: &[Action], conn: ConnId) -> String {
    let frame = only_frame_to(actions, conn);
    assert_eq!(frame["type"], "ERROR", "{frame}");
    frame["code"].as_str().unwrap_or_default().to_owned()
}

fn closes(actions: &[Action]) -> Vec<(ConnId, u16)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Close { conn, code, .. } => Some((*conn, *code)),
            _ => None,
        })
        .collect()
}

/// An ID no session has (IDs come from the seeded generator, which never yields all zeros).
const NOBODY: &str = "000000";

fn addr(text: &str) -> ClientAddr {
    ClientAddr::new(text.parse().expect("a test address"))
}

mod busy;
mod cluster;
mod connect;
mod errors;
mod fanout;
mod friends;
mod handles;
mod mailbox;
mod messages;
mod request_bounds;
mod resume;
