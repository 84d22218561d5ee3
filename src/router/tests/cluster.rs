//! Two or three routers in cluster mode joined by an in-memory bus: every flow between sessions
//! on different nodes, and what happens when the bus loses a record or a session is gone.

use std::collections::HashMap;

use super::*;
use crate::router::remote_sessions::TAKEOVER_HOLD_MS;

/// The routers of a cluster, the directory (ID → node) their claims built, and a bus that
/// carries records at once, in order (or drops them, when a test says so).
struct Cluster {
    nodes: Vec<(Router<SeededEntropy>, Recorder)>,
    directory: HashMap<Id, usize>,
    /// Who listens on each handle, and the letters kept for handles nobody listens on.
    listeners: HashMap<protocol::Handle, Id>,
    /// Per node, the handle entries its bus renews (`local_handles`): each handle with the
    /// session there that last listened on it.
    renewed: Vec<HashMap<protocol::Handle, Id>>,
    mail: HashMap<protocol::Handle, Vec<crate::bus::StoredLetter>>,
    /// Saved session states, and the nodes that died (they hear nothing).
    saved: HashMap<Id, String>,
    queues: HashMap<Id, Vec<Vec<u8>>>,
    dead: Vec<usize>,
    /// Records carrying copies of a MESSAGE to several handles, per receiving node.
    copy_records: Vec<usize>,
    now: Now,
    bus_down: bool,
    /// Every `BusOutput::Listen` carried, in order: (node, handle, session).
    listens: Vec<(usize, protocol::Handle, Id)>,
    /// The sessions their nodes said are away (`BusOutput::Away`), until they are back, end or
    /// move: those whose handles' letters no renewal collects.
    away: std::collections::HashSet<Id>,
}

/// A session in the cluster: its node, connection and ID.
struct Member {
    node: usize,
    conn: ConnId,
    id: String,
    token: String,
}

impl Cluster {
    fn new(nodes: usize) -> Cluster {
        Cluster::with(nodes, RouterConfig::defaults())
    }

    fn with(nodes: usize, config: RouterConfig) -> Cluster {
        Cluster {
            nodes: (0..nodes)
                .map(|n| {
                    let seed = 0x2545_F491_4F6C_DD1D ^ ((n as u64 + 1) * 0x9E37_79B9);
                    let config = RouterConfig {
                        cluster: true,
                        node_name: format!("n{n}"),
                        ..config.clone()
                    };
                    (
                        Router::new(config, SeededEntropy(seed)),
                        Recorder::default(),
                    )
                })
                .collect(),
            directory: HashMap::new(),
            listeners: HashMap::new(),
            renewed: vec![HashMap::new(); nodes],
            mail: HashMap::new(),
            saved: HashMap::new(),
            queues: HashMap::new(),
            dead: Vec::new(),
            copy_records: vec![0; nodes],
            now: Now {
                mono_ms: 1_000_000,
                unix_ms: 1_795_000_000_000,
            },
            bus_down: false,
            listens: Vec::new(),
            away: Default::default(),
        }
    }

    /// Runs `call` on node `node`, then carries every bus output until none is left. Returns
    /// what all nodes sent to their connections meanwhile (connections are numbered apart per
    /// node by the tests).
    fn on(
        &mut self,
        node: usize,
        call: impl FnOnce(&mut Router<SeededEntropy>, &mut Recorder, Now),
    ) -> Vec<Action> {
        let now = self.now;
        {
            let (router, sink) = &mut self.nodes[node];
            call(router, sink, now);
        }
        let mut seen = Vec::new();
        loop {
            for (router, sink) in &mut self.nodes {
                router.checkpoint(now, sink);
            }
            let mut outputs = Vec::new();
            for (index, (_, sink)) in self.nodes.iter_mut().enumerate() {
                for action in sink.take() {
                    match action {
                        Action::Bus(output) => outputs.push((index, output)),
                        other => seen.push(other),
                    }
                }
            }
            if outputs.is_empty() {
                break;
            }
            for (from, output) in outputs {
                self.carry(from, output);
            }
        }
        for (router, _) in &self.nodes {
            if let Err(broken) = router.check_invariants() {
                panic!("invariant broken: {broken}");
            }
        }
        seen
    }

    /// The cluster's mailbox keeps `letter` for `handle`.
    fn keep(&mut self, handle: protocol::Handle, letter: MailLetter) {
        self.mail
            .entry(handle)
            .or_default()
            .push((letter.frame.into_bytes(), Some(letter.block)));
    }

    fn carry(&mut self, from: usize, output: BusOutput) {
        let now = self.now;
        match output {
            BusOutput::Claim(id) => match self.directory.get(&id) {
                Some(&holder) if holder != from => {
                    let (router, sink) = &mut self.nodes[from];
                    router.claim_lost(id, sink);
                }
                _ => {
                    self.directory.insert(id, from);
                    let (router, sink) = &mut self.nodes[from];
                    router.claim_confirmed(id, sink);
                }
            },
            BusOutput::Away(id) => {
                self.away.insert(id);
            }
            BusOutput::Back(id) => {
                self.away.remove(&id);
            }
            BusOutput::Release(id) => {
                self.away.remove(&id);
                if self.directory.get(&id) == Some(&from) {
                    self.directory.remove(&id);
                }
                self.saved.remove(&id);
                self.queues.remove(&id);
            }
            BusOutput::Checkpoint { id, text } => {
                self.saved.insert(id, text);
            }
            BusOutput::LoadCheckpoint { id, rid } => {
                let saved = self.saved.get(&id).cloned();
                let queue = self.queues.get(&id).cloned().unwrap_or_default();
                let (router, sink) = &mut self.nodes[from];
                let saved = saved.as_deref().map(str::as_bytes);
                router.checkpoint_loaded(rid, saved, &queue, now, sink);
            }
            BusOutput::Queued { id, entry } => {
                self.queues.entry(id).or_default().push(entry.into_bytes());
            }
            BusOutput::QueueCleared(id) => {
                self.queues.remove(&id);
            }
            BusOutput::Adopt(id) => {
                self.directory.insert(id, from);
            }
            BusOutput::HandOver { id, node } => {
                self.away.remove(&id);
                if let Some(index) = node.strip_prefix('n').and_then(|n| n.parse().ok()) {
                    self.directory.insert(id, index);
                }
            }
            BusOutput::ToNode { node, text } => {
                let Some(index) = node.strip_prefix('n').and_then(|n| n.parse::<usize>().ok())
                else {
                    return;
                };
                if !self.bus_down {
                    let (router, sink) = &mut self.nodes[index];
                    router.from_bus(&text, now, sink);
                }
            }
            BusOutput::Listen { handle, id } => {
                self.listens.push((from, handle, id));
                self.renewed[from].insert(handle, id);
                let previous = self.listeners.insert(handle, id);
                let letters = self.mail.remove(&handle).unwrap_or_default();
                let (router, sink) = &mut self.nodes[from];
                if let Some(previous) = previous.filter(|previous| *previous != id) {
                    router.handle_moved(handle, previous, now, sink);
                }
                if !letters.is_empty() {
                    router.stored_letters(handle, &letters, now, sink);
                }
            }
            BusOutput::CheckHandle { handle, id } => {
                if self.renewed[from].get(&handle) == Some(&id) {
                    self.renew_entries(from, &[(handle, id)]);
                }
            }
            BusOutput::Unlisten { handle, id } => {
                if self.renewed[from].get(&handle) == Some(&id) {
                    self.renewed[from].remove(&handle);
                }
                if self.listeners.get(&handle) == Some(&id) {
                    self.listeners.remove(&handle);
                }
            }
            BusOutput::ToHandles { handles, parts } => {
                let mut by_node: Vec<(usize, Vec<(protocol::Handle, u64)>)> = Vec::new();
                for (handle, rid) in handles {
                    let node = self
                        .listeners
                        .get(&handle)
                        .and_then(|listener| self.directory.get(listener).copied());
                    let (router, sink) = &mut self.nodes[from];
                    match (self.bus_down, node) {
                        (true, _) => router.bus_failed(rid, BusFailure::Unavailable, now, sink),
                        (false, Some(node)) => match by_node.iter_mut().find(|(n, _)| *n == node) {
                            Some((_, list)) => list.push((handle, rid)),
                            None => by_node.push((node, vec![(handle, rid)])),
                        },
                        (false, None) if parts.may_store => {
                            self.mail.entry(handle).or_default().push((
                                parts.letter(&handle).frame.into_bytes(),
                                Some(parts.block),
                            ));
                            router.bus_stored(rid, now, sink);
                        }
                        (false, None) => {
                            router.bus_failed(rid, BusFailure::NoSuchSession, now, sink)
                        }
                    }
                }
                for (node, list) in by_node {
                    self.copy_records[node] += 1;
                    let record = parts.record(&list);
                    let (router, sink) = &mut self.nodes[node];
                    router.from_bus(&record, now, sink);
                }
            }
            BusOutput::StoreLetter { handle, letter } => self.keep(handle, letter),
            BusOutput::ToHandle {
                handle,
                rid,
                record,
                letter,
            } => match self.listeners.get(&handle).copied() {
                _ if self.bus_down => {
                    if let Some(rid) = rid {
                        let (router, sink) = &mut self.nodes[from];
                        router.bus_failed(rid, BusFailure::Unavailable, now, sink);
                    }
                }
                Some(listener) => self.carry(
                    from,
                    BusOutput::Record {
                        to: listener,
                        rid,
                        text: record,
                    },
                ),
                None => {
                    let stored = letter.is_some();
                    if let Some(letter) = letter {
                        self.keep(handle, letter);
                    }
                    let (router, sink) = &mut self.nodes[from];
                    match (stored, rid) {
                        (true, Some(rid)) => router.bus_stored(rid, now, sink),
                        (false, Some(rid)) => {
                            router.bus_failed(rid, BusFailure::NoSuchSession, now, sink)
                        }
                        (_, None) => {}
                    }
                }
            },
            BusOutput::Record { to, rid, text } => {
                let target = self.directory.get(&to).copied();
                let (failure, node) = match (self.bus_down, target) {
                    (true, _) => (Some(BusFailure::Unavailable), from),
                    (false, None) => (Some(BusFailure::NoSuchSession), from),
                    (false, Some(node)) if self.dead.contains(&node) => {
                        (Some(BusFailure::NodeGone), from)
                    }
                    (false, Some(node)) => (None, node),
                };
                let (router, sink) = &mut self.nodes[node];
                match failure {
                    None => router.from_bus(&text, now, sink),
                    Some(failure) => {
                        if let Some(rid) = rid {
                            router.bus_failed(rid, failure, now, sink);
                        }
                    }
                }
            }
        }
    }

    /// Node `node`'s renewal of its handle entries, as RENEW_HANDLES does it: an entry gone is
    /// set again (Redis may have restarted empty), one naming another listener is given up and
    /// told to the router. Returns what all nodes sent meanwhile.
    fn renew(&mut self, node: usize) -> Vec<Action> {
        let entries: Vec<(protocol::Handle, Id)> = self.renewed[node]
            .iter()
            .map(|(&handle, &id)| (handle, id))
            .collect();
        self.renew_entries(node, &entries);
        self.on(node, |_, _, _| {})
    }

    /// RENEW_HANDLES of `entries` for node `node` (see [`Cluster::renew`]); what the router
    /// does about those lost is left in its sink.
    fn renew_entries(&mut self, node: usize, entries: &[(protocol::Handle, Id)]) {
        for &(handle, id) in entries {
            match self.listeners.get(&handle) {
                None => {
                    self.listeners.insert(handle, id);
                }
                Some(listener) if *listener == id => {}
                Some(_) => {
                    self.renewed[node].remove(&handle);
                    let (router, sink) = &mut self.nodes[node];
                    router.handle_lost(handle, id, sink);
                }
            }
        }
    }

    fn text(&mut self, member: &Member, text: &str) -> Vec<Action> {
        let conn = member.conn;
        self.on(member.node, |router, sink, now| {
            router.text(conn, text, now, sink)
        })
    }

    fn connect(&mut self, node: usize, conn: ConnId) -> Member {
        self.connect_from(node, conn, ClientAddr::UNSPECIFIED)
    }

    /// [`Cluster::connect`] from client address `peer`.
    fn connect_from(&mut self, node: usize, conn: ConnId, peer: ClientAddr) -> Member {
        let now = self.now;
        self.nodes[node].0.open_from(conn, peer, now);
        let actions = self.on(node, |router, sink, now| {
            router.text(conn, r#"{"type":"CONNECT","version":2}"#, now, sink)
        });
        let reply = only_frame_to(&actions, conn);
        assert_eq!(reply["type"], "CONNECT", "{reply}");
        Member {
            node,
            conn,
            id: reply["id"].as_str().unwrap_or_default().to_owned(),
            token: reply["token"].as_str().unwrap_or_default().to_owned(),
        }
    }

    fn closed(&mut self, member: &Member) -> Vec<Action> {
        let conn = member.conn;
        self.on(member.node, |router, sink, now| {
            router.closed(conn, now, sink)
        })
    }

    fn tick(&mut self, node: usize, ms: u64) -> Vec<Action> {
        self.now.mono_ms += ms;
        self.now.unix_ms += ms;
        self.on(node, |router, sink, now| router.tick(now, sink))
    }

    fn befriend(&mut self, a: &Member, b: &Member) {
        let asked = self.text(a, &friend_request(&b.id, Some("rq")));
        assert_eq!(
            frames_to(&asked, b.conn)[0]["type"],
            "FRIEND_REQUEST",
            "{asked:?}"
        );
        assert_eq!(frames_to(&asked, a.conn)[0]["type"], "ACK", "{asked:?}");
        let accepted = self.text(b, &friend_accept(&a.id, Some("ok")));
        assert_eq!(frames_to(&accepted, a.conn)[0]["type"], "FRIEND_ACCEPT");
        assert_eq!(frames_to(&accepted, b.conn)[0]["type"], "ACK");
    }
}

#[test]
fn a_request_an_acceptance_and_messages_cross_nodes_with_the_answers_of_one_node() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let b = cluster.connect(1, 11);
    assert_ne!(a.id, b.id);

    let asked = cluster.text(&a, &friend_request(&b.id, Some("rq")));
    let request = only_frame_to(&asked, b.conn);
    assert_eq!(request["type"], "FRIEND_REQUEST");
    assert_eq!(request["from"], a.id.as_str());
    assert!(
        request["public_key"]
            .as_str()
            .is_some_and(|k| k.contains("BEGIN PGP"))
    );
    assert_eq!(
        only_frame_to(&asked, a.conn),
        json!({"type":"ACK","ref":"rq"})
    );

    // Before the acceptance, neither may message the other.
    let early = cluster.text(&a, &message(&b.id, Some("m0")));
    assert_eq!(error_code(&early, a.conn), "not_friends");

    let accepted = cluster.text(&b, &friend_accept(&a.id, Some("ok")));
    assert_eq!(only_frame_to(&accepted, a.conn)["type"], "FRIEND_ACCEPT");
    assert_eq!(
        only_frame_to(&accepted, b.conn),
        json!({"type":"ACK","ref":"ok"})
    );

    let sent = cluster.text(&a, &message(&b.id, Some("m1")));
    let delivered = only_frame_to(&sent, b.conn);
    assert_eq!(delivered["type"], "MESSAGE");
    assert_eq!(delivered["from"], a.id.as_str());
    assert!(
        delivered["payload"]
            .as_str()
            .is_some_and(|p| p.contains("BEGIN PGP MESSAGE"))
    );
    assert_eq!(
        only_frame_to(&sent, a.conn),
        json!({"type":"ACK","ref":"m1"})
    );

    let back = cluster.text(&b, &message(&a.id, Some("m2")));
    assert_eq!(only_frame_to(&back, a.conn)["from"], b.id.as_str());
    assert_eq!(
        only_frame_to(&back, b.conn),
        json!({"type":"ACK","ref":"m2"})
    );
}

#[test]
fn an_id_no_node_holds_is_unknown_and_a_message_to_a_stranger_is_refused_on_its_node() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let b = cluster.connect(1, 11);
    let unknown = cluster.text(&a, &friend_request(NOBODY, Some("x")));
    assert_eq!(error_code(&unknown, a.conn), "unknown_peer");
    let stranger = cluster.text(&a, &message(&b.id, Some("m")));
    assert_eq!(error_code(&stranger, a.conn), "not_friends");
    assert!(frames_to(&stranger, b.conn).is_empty());
}

#[test]
fn disconnect_presence_removal_and_decline_reach_the_other_node() {
    let mut cluster = Cluster::new(3);
    let a = cluster.connect(0, 1);
    let b = cluster.connect(1, 11);
    let c = cluster.connect(2, 21);
    cluster.befriend(&a, &b);
    cluster.befriend(&a, &c);

    // B drops: A hears PRESENCE offline.
    let dropped = cluster.closed(&b);
    let presence = only_frame_to(&dropped, a.conn);
    assert_eq!(presence["type"], "PRESENCE");
    assert_eq!(presence["online"], false);

    // A message to B in its window is queued on B's node and ACKed as queued.
    let queued = cluster.text(&a, &message(&b.id, Some("q")));
    assert_eq!(
        only_frame_to(&queued, a.conn),
        json!({"type":"ACK","ref":"q","queued":true})
    );

    // The window ends: A gets UNDELIVERED for the queued message, then DISCONNECT.
    let ended = cluster.tick(1, RouterConfig::defaults().resume_grace_ms + 1);
    let to_a = frames_to(&ended, a.conn);
    let types: Vec<&str> = to_a.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(types, ["UNDELIVERED", "DISCONNECT"], "{to_a:?}");
    assert_eq!(to_a[0]["ref"], "q");
    assert_eq!(to_a[0]["to"], b.id.as_str());
    assert_eq!(to_a[1]["id"], b.id.as_str());
    let after = cluster.text(&a, &message(&b.id, Some("late")));
    assert_eq!(error_code(&after, a.conn), "not_friends");

    // C removes A: A is told; A may no longer message C.
    let removed = cluster.text(
        &c,
        &format!(r#"{{"type":"FRIEND_REMOVE","to":"{}"}}"#, a.id),
    );
    assert_eq!(only_frame_to(&removed, a.conn)["type"], "FRIEND_REMOVE");
    let refused = cluster.text(&a, &message(&c.id, None));
    assert_eq!(error_code(&refused, a.conn), "not_friends");

    // A asks C again; C declines: A is told and may ask again later.
    cluster.text(&a, &friend_request(&c.id, Some("again")));
    let declined = cluster.text(
        &c,
        &format!(r#"{{"type":"FRIEND_DECLINE","to":"{}"}}"#, a.id),
    );
    assert_eq!(only_frame_to(&declined, a.conn)["type"], "FRIEND_DECLINE");
    let accept_gone = cluster.text(&c, &friend_accept(&a.id, Some("x")));
    assert_eq!(error_code(&accept_gone, c.conn), "no_pending_request");
}

#[test]
fn a_requester_that_ends_cancels_its_request_on_the_other_node() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let b = cluster.connect(1, 11);
    cluster.text(&a, &friend_request(&b.id, None));
    let gone = cluster.text(&a, r#"{"type":"DISCONNECT"}"#);
    let cancel = only_frame_to(&gone, b.conn);
    assert_eq!(cancel["type"], "FRIEND_CANCEL");
    assert_eq!(cancel["from"], a.id.as_str());
    let accept = cluster.text(&b, &friend_accept(&a.id, Some("late")));
    assert_eq!(error_code(&accept, b.conn), "no_pending_request");
}

#[test]
fn without_the_bus_a_cross_node_request_fails_clearly_and_local_chats_go_on() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let near = cluster.connect(0, 2);
    let b = cluster.connect(1, 11);
    cluster.befriend(&a, &b);
    cluster.befriend(&a, &near);
    cluster.bus_down = true;
    let far = cluster.text(&a, &message(&b.id, Some("far")));
    assert_eq!(error_code(&far, a.conn), "unavailable");
    let local = cluster.text(&a, &message(&near.id, Some("near")));
    assert_eq!(only_frame_to(&local, near.conn)["type"], "MESSAGE");
    // The friendship survives the outage: once the bus is back, messages flow again.
    cluster.bus_down = false;
    let again = cluster.text(&a, &message(&b.id, Some("again")));
    assert_eq!(only_frame_to(&again, b.conn)["type"], "MESSAGE");
}

#[test]
fn an_answer_that_never_comes_is_unavailable_after_the_timeout_and_the_request_is_taken_back() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let b = cluster.connect(1, 11);
    let now = cluster.now;
    let request = friend_request(&b.id, Some("lost"));
    let record = {
        let (router, sink) = &mut cluster.nodes[0];
        router.text(a.conn, &request, now, sink);
        assert_eq!(router.stats().awaiting_replies, 1);
        match sink.take().as_slice() {
            [
                Action::Bus(BusOutput::Record {
                    text, rid: Some(_), ..
                }),
            ] => text.clone(),
            other => panic!("expected one record awaiting an answer, got {other:?}"),
        }
    };
    // The request reaches B's node, but its answer is lost on the way back.
    let (router, sink) = &mut cluster.nodes[1];
    router.from_bus(&record, now, sink);
    let on_b = sink.take();
    assert_eq!(only_frame_to(&on_b, b.conn)["type"], "FRIEND_REQUEST");
    assert!(on_b.iter().any(|action| matches!(action, Action::Bus(_))));

    let expired = cluster.tick(0, REPLY_TIMEOUT_MS);
    assert_eq!(error_code(&expired, a.conn), "unavailable");
    let cancel = only_frame_to(&expired, b.conn);
    assert_eq!(cancel["type"], "FRIEND_CANCEL");
    assert_eq!(cluster.nodes[0].0.stats().awaiting_replies, 0);
    let accept = cluster.text(&b, &friend_accept(&a.id, Some("late")));
    assert_eq!(error_code(&accept, b.conn), "no_pending_request");
}

#[test]
fn an_id_another_node_holds_ends_the_new_session_with_1013() {
    let mut cluster = Cluster::new(2);
    let now = cluster.now;
    let claimed = {
        let (router, sink) = &mut cluster.nodes[0];
        router.open(1, now);
        router.text(1, r#"{"type":"CONNECT","version":2}"#, now, sink);
        let actions = sink.take();
        assert!(
            frames_to(&actions, 1).is_empty(),
            "no ID is told before the directory holds it: {actions:?}"
        );
        actions
            .into_iter()
            .find_map(|action| match action {
                Action::Bus(BusOutput::Claim(id)) => Some(id),
                _ => None,
            })
            .expect("a claim")
    };
    // Another node holds that ID already.
    cluster.directory.insert(claimed, 1);
    cluster.carry(0, BusOutput::Claim(claimed));
    let actions = cluster.on(0, |_, _, _| {});
    assert!(
        frames_to(&actions, 1)
            .iter()
            .all(|f| f["type"] != "CONNECT")
    );
    assert_eq!(closes(&actions), [(1, close_code::SERVER_FULL)]);
    assert_eq!(cluster.nodes[0].0.stats().sessions, 0);
    // The other node's directory entry is untouched.
    assert_eq!(cluster.directory.get(&claimed), Some(&1));
}

#[test]
fn records_that_do_not_parse_change_nothing() {
    let mut cluster = Cluster::new(1);
    let a = cluster.connect(0, 1);
    for junk in [
        "",
        "{}",
        "[]",
        r#"{"message":{"from":1}}"#,
        r#"{"message":{"from":4294967295,"to":1,"payload":"x","ts":0,"rid":1}}"#,
        r#"{"request":{"from":1,"to":2,"key":"k","block":[0,0,999],"rid":1}}"#,
        r#"{"reply":{"to":1,"rid":1,"result":7}}"#,
    ] {
        let actions = cluster.on(0, |router, sink, now| router.from_bus(junk, now, sink));
        assert!(actions.is_empty(), "{junk}: {actions:?}");
    }
    let _ = a;
}

fn handle_text(n: u8) -> String {
    protocol::Handle::from_seed(&[n; 43]).as_str().to_owned()
}

fn listen_frame(handles: &[String]) -> String {
    json!({"type":"LISTEN","handles":handles,"ref":"l"}).to_string()
}

fn to_handle(handle: &str, mailbox: bool, reference: &str) -> String {
    format!(
        r#"{{"type":"MESSAGE","handle":"{handle}","payload":"{PAYLOAD}","mailbox":{mailbox},"ref":"{reference}"}}"#
    )
}

#[test]
fn a_message_to_a_handle_reaches_its_listener_on_another_node() {
    let mut cluster = Cluster::new(2);
    let sender_addr = addr("2001:db8:7::1");
    let a = cluster.connect_from(0, 1, sender_addr);
    let b = cluster.connect(1, 11);
    let h = handle_text(1);
    let listened = cluster.text(&b, &listen_frame(std::slice::from_ref(&h)));
    assert_eq!(only_frame_to(&listened, b.conn)["type"], "LISTENING");

    let sent = cluster.text(&a, &to_handle(&h, true, "h1"));
    let got = only_frame_to(&sent, b.conn);
    assert_eq!(got["type"], "MESSAGE");
    assert_eq!(got["handle"], h.as_str());
    assert!(
        got.get("from").is_none(),
        "a handle's message names no sender: {got}"
    );
    assert_eq!(
        only_frame_to(&sent, a.conn),
        json!({"type":"ACK","ref":"h1"})
    );

    // A probe to a handle nobody listens on anywhere is refused; a letter is kept.
    let nobody = handle_text(2);
    let probe = cluster.text(&a, &to_handle(&nobody, false, "p"));
    assert_eq!(error_code(&probe, a.conn), "no_mailbox");
    let kept = cluster.text(&a, &to_handle(&nobody, true, "k"));
    assert_eq!(
        only_frame_to(&kept, a.conn),
        json!({"type":"ACK","ref":"k","queued":true})
    );
    // It counts against its sender's share of the cluster's mailbox.
    let key = protocol::Handle::parse(&nobody).expect("a handle");
    let blocks: Vec<_> = cluster.mail[&key].iter().map(|(_, block)| *block).collect();
    assert_eq!(blocks, [Some(sender_addr.largest_block())]);
    // Whoever listens on it next, on whichever node, gets the letter.
    let c = cluster.connect(1, 12);
    let listened = cluster.text(&c, &listen_frame(std::slice::from_ref(&nobody)));
    let to_c = frames_to(&listened, c.conn);
    let types: Vec<&str> = to_c.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(types, ["LISTENING", "MESSAGE"], "{to_c:?}");
    assert_eq!(to_c[1]["handle"], nobody.as_str());
}

#[test]
fn a_message_to_several_handles_is_acknowledged_once_every_node_answered() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let near = cluster.connect(0, 2);
    let far = cluster.connect(1, 11);
    let farther = cluster.connect(1, 12);
    let (h_near, h_far, h_nobody) = (handle_text(1), handle_text(2), handle_text(3));
    let h_farther = handle_text(4);
    cluster.text(&near, &listen_frame(std::slice::from_ref(&h_near)));
    cluster.text(&far, &listen_frame(std::slice::from_ref(&h_far)));
    cluster.text(&farther, &listen_frame(std::slice::from_ref(&h_farther)));
    let upload = format!(
        r#"{{"type":"MESSAGE","handles":["{h_near}","{h_far}","{h_nobody}","{h_farther}"],"payload":"{PAYLOAD}","mailbox":true,"ref":"g"}}"#
    );
    let sent = cluster.text(&a, &upload);
    assert_eq!(only_frame_to(&sent, near.conn)["handle"], h_near.as_str());
    assert_eq!(only_frame_to(&sent, far.conn)["handle"], h_far.as_str());
    assert_eq!(
        only_frame_to(&sent, farther.conn)["handle"],
        h_farther.as_str()
    );
    assert_eq!(
        only_frame_to(&sent, a.conn),
        json!({"type":"ACK","ref":"g","sent":3,"queued":1})
    );
    assert_eq!(
        cluster.copy_records,
        [0, 1],
        "the payload crosses to the other node once for its two listeners"
    );

    // Without the bus, the far copy fails on its own: UNDELIVERED for it, then the ACK.
    cluster.bus_down = true;
    let sent = cluster.text(&a, &upload);
    let to_a = frames_to(&sent, a.conn);
    let types: Vec<&str> = to_a.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(types.last(), Some(&"ACK"), "{to_a:?}");
    assert_eq!(to_a.last().map(|ack| ack["sent"].clone()), Some(json!(1)));
    let undelivered: Vec<&Value> = to_a.iter().filter(|f| f["type"] == "UNDELIVERED").collect();
    assert_eq!(undelivered.len(), 3, "{to_a:?}");
    assert!(
        undelivered.iter().all(|f| f["reason"] == "unavailable"),
        "{to_a:?}"
    );
}

#[test]
fn a_handle_taken_on_another_node_is_told_and_its_waiting_letters_follow_it() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let old = cluster.connect(1, 11);
    let h = handle_text(7);
    cluster.text(&old, &listen_frame(std::slice::from_ref(&h)));
    // The old listener drops into its window: a letter for it waits in the cluster's
    // mailbox, not in its node's memory.
    cluster.closed(&old);
    let kept = cluster.text(&a, &to_handle(&h, true, "w"));
    assert_eq!(
        only_frame_to(&kept, a.conn),
        json!({"type":"ACK","ref":"w","queued":true})
    );
    assert_eq!(cluster.nodes[1].0.stats().mailbox_letters, 0);
    let key = protocol::Handle::parse(&h).expect("a handle");
    assert_eq!(cluster.mail.get(&key).map(Vec::len), Some(1));

    // A session on the other node takes the handle: the letter comes to it.
    let new = cluster.connect(0, 2);
    let taken = cluster.text(&new, &listen_frame(std::slice::from_ref(&h)));
    let to_new = frames_to(&taken, new.conn);
    let types: Vec<&str> = to_new.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(types, ["LISTENING", "MESSAGE"], "{to_new:?}");
    assert_eq!(cluster.nodes[1].0.stats().mailbox_letters, 0);
    assert_eq!(cluster.nodes[1].0.stats().handles, 0);

    // The old session, back, is told its handle was taken.
    let resumed = {
        let conn = 12;
        cluster.nodes[1].0.open(conn, cluster.now);
        let text = json!({"type":"CONNECT","version":2,"resume":{"id":old.id,"token":old.token}})
            .to_string();
        cluster.on(1, |router, sink, now| router.text(conn, &text, now, sink))
    };
    let kinds: Vec<String> = frames_to(&resumed, 12)
        .iter()
        .filter_map(|f| f["type"].as_str().map(str::to_owned))
        .collect();
    assert!(kinds.contains(&"HANDLE_TAKEN".to_owned()), "{kinds:?}");
}

#[test]
fn a_handle_whose_taken_record_was_lost_is_given_up_once_when_its_node_finds_it_taken() {
    let mut cluster = Cluster::new(2);
    let old = cluster.connect(0, 1);
    let near = cluster.connect(0, 2);
    let new = cluster.connect(1, 11);
    let h = handle_text(8);
    cluster.text(&old, &listen_frame(std::slice::from_ref(&h)));

    // The other node's session takes the handle, but its HandleTaken record is lost.
    cluster.bus_down = true;
    let taken = cluster.text(&new, &listen_frame(std::slice::from_ref(&h)));
    cluster.bus_down = false;
    assert!(frames_to(&taken, old.conn).is_empty(), "{taken:?}");
    let stale = cluster.text(&near, &to_handle(&h, false, "stale"));
    assert_eq!(
        only_frame_to(&stale, old.conn)["type"],
        "MESSAGE",
        "until its node learns otherwise, the old listener still gets its node's messages"
    );

    // Its node's renewal finds the directory naming the other session: as if the record had
    // come, once.
    let handle = protocol::Handle::parse(&h).expect("a handle");
    let old_id = Id::parse_units(old.id.bytes().map(Some)).expect("an ID");
    let found = cluster.on(0, |router, sink, _| {
        router.handle_lost(handle, old_id, sink)
    });
    assert_eq!(
        frames_to(&found, old.conn),
        [json!({"type":"HANDLE_TAKEN","handle":h})]
    );
    let again = cluster.on(0, |router, sink, _| {
        router.handle_lost(handle, old_id, sink)
    });
    assert!(frames_to(&again, old.conn).is_empty(), "{again:?}");
    assert_eq!(cluster.nodes[0].0.stats().handles, 0);
    assert_eq!(
        cluster.listeners.get(&handle),
        Some(&Id::parse_units(new.id.bytes().map(Some)).expect("an ID")),
        "the new listener's entry stays"
    );

    // Messages from the old listener's node now reach the handle's listener.
    let moved = cluster.text(&near, &to_handle(&h, false, "moved"));
    assert!(frames_to(&moved, old.conn).is_empty(), "{moved:?}");
    assert_eq!(only_frame_to(&moved, new.conn)["handle"], h.as_str());
    assert_eq!(
        only_frame_to(&moved, near.conn),
        json!({"type":"ACK","ref":"moved"})
    );
}

impl Cluster {
    /// A CONNECT with `member`'s resume, on `conn` of `node`.
    fn resume(&mut self, node: usize, conn: ConnId, member: &Member, token: &str) -> Vec<Action> {
        self.resume_from(node, conn, ClientAddr::UNSPECIFIED, member, token)
    }
}

#[test]
fn a_session_resumed_through_another_node_moves_there_with_what_waited_for_it() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let b = cluster.connect(1, 11);
    cluster.befriend(&a, &b);
    cluster.closed(&b);
    let queued = cluster.text(&a, &message(&b.id, Some("while-away")));
    assert_eq!(
        only_frame_to(&queued, a.conn),
        json!({"type":"ACK","ref":"while-away","queued":true})
    );

    // B comes back through node 0 (a load balancer without stickiness).
    let back = cluster.resume(0, 2, &b, &b.token);
    let to_b = frames_to(&back, 2);
    assert_eq!(to_b[0]["type"], "CONNECT", "{to_b:?}");
    assert_eq!(to_b[0]["resumed"], true);
    assert_eq!(to_b[0]["id"], b.id.as_str());
    assert_ne!(to_b[0]["token"], b.token.as_str(), "tokens are single-use");
    assert_eq!(
        to_b[1]["type"], "MESSAGE",
        "what waited comes next: {to_b:?}"
    );
    assert_eq!(to_b[1]["from"], a.id.as_str());
    assert_eq!(
        only_frame_to(&back, a.conn),
        json!({"type":"PRESENCE","id":b.id,"online":true})
    );
    assert_eq!(
        cluster.nodes[1].0.stats().sessions,
        0,
        "gone from its old node"
    );
    assert_eq!(cluster.nodes[0].0.stats().sessions, 2);
    let id = Id::parse_units(b.id.bytes().map(Some)).expect("an ID");
    assert_eq!(cluster.directory.get(&id), Some(&0));

    // The friendship holds, now within one node, both ways.
    let moved = Member {
        node: 0,
        conn: 2,
        id: b.id.clone(),
        token: to_b[0]["token"].as_str().unwrap_or_default().to_owned(),
    };
    let sent = cluster.text(&a, &message(&b.id, Some("after")));
    assert_eq!(only_frame_to(&sent, moved.conn)["type"], "MESSAGE");
    let back_again = cluster.text(&moved, &message(&a.id, Some("reply")));
    assert_eq!(only_frame_to(&back_again, a.conn)["from"], b.id.as_str());
}

#[test]
fn a_connected_session_taken_over_through_another_node_closes_its_old_connection_4001() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let b = cluster.connect(1, 11);
    cluster.befriend(&a, &b);
    let taken = cluster.resume(0, 2, &b, &b.token);
    assert_eq!(closes(&taken), [(b.conn, close_code::TAKEN_OVER)]);
    assert_eq!(frames_to(&taken, 2)[0]["resumed"], true);
    assert!(
        frames_to(&taken, a.conn).is_empty(),
        "B never looked away to A: no PRESENCE"
    );
}

#[test]
fn a_resume_with_a_wrong_token_or_without_the_bus_gets_a_new_session() {
    let mut cluster = Cluster::new(2);
    let b = cluster.connect(1, 11);
    let wrong = cluster.resume(0, 2, &b, &"A".repeat(43));
    let reply = only_frame_to(&wrong, 2);
    assert_eq!(reply["resumed"], false, "{reply}");
    assert_ne!(reply["id"], b.id.as_str());
    assert_eq!(
        cluster.nodes[1].0.stats().sessions,
        1,
        "B's session stays where it is"
    );

    cluster.bus_down = true;
    let cut_off = cluster.resume(0, 3, &b, &b.token);
    let reply = only_frame_to(&cut_off, 3);
    assert_eq!(reply["resumed"], false, "{reply}");
    assert_eq!(cluster.nodes[1].0.stats().sessions, 1);
}

#[test]
fn a_session_whose_node_died_is_adopted_from_its_saved_state_by_the_node_it_comes_back_to() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let b = cluster.connect(1, 11);
    cluster.befriend(&a, &b);
    cluster.closed(&b);
    let queued = cluster.text(&a, &message(&b.id, Some("before-the-crash")));
    assert_eq!(
        only_frame_to(&queued, a.conn),
        json!({"type":"ACK","ref":"before-the-crash","queued":true})
    );
    // Node 1 dies (kill -9): it answers nothing any more, and its tables are gone with it.
    cluster.dead.push(1);

    let back = cluster.resume(0, 2, &b, &b.token);
    let to_b = frames_to(&back, 2);
    assert_eq!(to_b[0]["resumed"], true, "{to_b:?}");
    assert_eq!(to_b[0]["id"], b.id.as_str());
    assert_eq!(
        to_b[1]["type"], "MESSAGE",
        "what was ACKed as queued is not lost"
    );
    let id = Id::parse_units(b.id.bytes().map(Some)).expect("an ID");
    assert_eq!(cluster.directory.get(&id), Some(&0));
    let moved = Member {
        node: 0,
        conn: 2,
        id: b.id.clone(),
        token: to_b[0]["token"].as_str().unwrap_or_default().to_owned(),
    };
    let sent = cluster.text(&moved, &message(&a.id, Some("alive")));
    assert_eq!(only_frame_to(&sent, a.conn)["from"], b.id.as_str());

    // A wrong token does not adopt anything: a new session.
    let stranger = Member {
        node: 0,
        conn: 4,
        id: b.id.clone(),
        token: "B".repeat(43),
    };
    let refused = cluster.resume(0, 4, &stranger, &stranger.token);
    assert_eq!(only_frame_to(&refused, 4)["resumed"], false);
}

/// The frame to `conn` that answers the request with `reference`.
fn answer_to(actions: &[Action], conn: ConnId, reference: &str) -> Value {
    let answers: Vec<Value> = frames_to(actions, conn)
        .into_iter()
        .filter(|frame| frame["ref"] == reference)
        .collect();
    assert_eq!(answers.len(), 1, "one answer to {reference}: {actions:?}");
    answers.into_iter().next().unwrap_or(Value::Null)
}

#[test]
fn requests_in_flight_to_other_nodes_count_against_max_pending_requests() {
    let mut cluster = Cluster::with(
        2,
        RouterConfig {
            max_pending_requests: 2,
            ..RouterConfig::defaults()
        },
    );
    let a = cluster.connect(0, 1);
    let b1 = cluster.connect(1, 11);
    let b2 = cluster.connect(1, 12);
    let b3 = cluster.connect(1, 13);
    let decline = |to: &Member| format!(r#"{{"type":"FRIEND_DECLINE","to":"{}"}}"#, to.id);

    // Within one bus round trip: no answer has come back when the fourth is handled. The
    // repeat to B1 takes no second place; the request to B3 would be a third.
    let burst = [
        friend_request(&b1.id, Some("1")),
        friend_request(&b1.id, Some("1-again")),
        friend_request(&b2.id, Some("2")),
        friend_request(&b3.id, Some("3")),
    ];
    let conn = a.conn;
    let sent = cluster.on(0, |router, sink, now| {
        for frame in &burst {
            router.text(conn, frame, now, sink);
        }
    });
    assert_eq!(answer_to(&sent, a.conn, "1")["type"], "ACK");
    assert_eq!(answer_to(&sent, a.conn, "1-again")["type"], "ACK");
    assert_eq!(answer_to(&sent, a.conn, "2")["type"], "ACK");
    assert_eq!(answer_to(&sent, a.conn, "3")["code"], "rate_limited");
    assert_eq!(only_frame_to(&sent, b1.conn)["type"], "FRIEND_REQUEST");
    assert!(frames_to(&sent, b3.conn).is_empty(), "{sent:?}");
    // Both became pending: their places stay taken.
    let full = cluster.text(&a, &friend_request(&b3.id, Some("3")));
    assert_eq!(error_code(&full, a.conn), "rate_limited");

    // A refusal gives the place back, but only once it comes.
    cluster.text(&b2, &decline(&a));
    let burst = [
        friend_request(NOBODY, Some("x")),
        friend_request(&b3.id, Some("3")),
    ];
    let sent = cluster.on(0, |router, sink, now| {
        for frame in &burst {
            router.text(conn, frame, now, sink);
        }
    });
    assert_eq!(answer_to(&sent, a.conn, "x")["code"], "unknown_peer");
    assert_eq!(answer_to(&sent, a.conn, "3")["code"], "rate_limited");
    let room = cluster.text(&a, &friend_request(&b3.id, Some("3")));
    assert_eq!(only_frame_to(&room, a.conn)["type"], "ACK");

    // A request whose answer is lost holds its place until the timeout says `unavailable`.
    cluster.text(&b3, &decline(&a));
    let now = cluster.now;
    {
        let (router, sink) = &mut cluster.nodes[0];
        router.text(a.conn, &friend_request(&b2.id, Some("lost")), now, sink);
        let dropped = sink.take();
        assert!(
            dropped
                .iter()
                .all(|action| matches!(action, Action::Bus(_))),
            "{dropped:?}"
        );
    }
    let waiting = cluster.text(&a, &friend_request(&b3.id, Some("3")));
    assert_eq!(error_code(&waiting, a.conn), "rate_limited");
    let expired = cluster.tick(0, REPLY_TIMEOUT_MS);
    assert_eq!(answer_to(&expired, a.conn, "lost")["code"], "unavailable");
    let room = cluster.text(&a, &friend_request(&b3.id, Some("3")));
    assert_eq!(only_frame_to(&room, a.conn)["type"], "ACK");
    assert_eq!(cluster.nodes[0].0.stats().awaiting_replies, 0);
}

impl Cluster {
    /// [`Cluster::resume`] from client address `peer`.
    fn resume_from(
        &mut self,
        node: usize,
        conn: ConnId,
        peer: ClientAddr,
        member: &Member,
        token: &str,
    ) -> Vec<Action> {
        let now = self.now;
        self.nodes[node].0.open_from(conn, peer, now);
        let text =
            json!({"type":"CONNECT","version":2,"resume":{"id":member.id,"token":token},"ref":"c"})
                .to_string();
        self.on(node, |router, sink, now| {
            router.text(conn, &text, now, sink)
        })
    }
}

/// The reply to a resume on `conn`: a resumed session's new token, the ID checked.
fn resumed_token(actions: &[Action], conn: ConnId, member: &Member) -> String {
    let reply = only_frame_to(actions, conn);
    assert_eq!(reply["type"], "CONNECT", "{reply}");
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(reply["id"], member.id.as_str(), "{reply}");
    reply["token"].as_str().unwrap_or_default().to_owned()
}

/// A new session's CONNECT from `peer` on `conn` of `node`.
fn connect_text(cluster: &mut Cluster, node: usize, conn: ConnId, peer: ClientAddr) -> Vec<Action> {
    cluster.nodes[node].0.open_from(conn, peer, cluster.now);
    cluster.on(node, |router, sink, now| {
        router.text(conn, r#"{"type":"CONNECT","version":2}"#, now, sink)
    })
}

#[test]
fn a_takeover_takes_a_session_start_but_is_never_refused_for_the_start_rate() {
    let mut cluster = Cluster::with(
        2,
        RouterConfig {
            rate_sessions_per_address_per_min: 1,
            ..RouterConfig::defaults()
        },
    );
    let (y, z, w) = (addr("192.0.2.7"), addr("192.0.2.8"), addr("192.0.2.9"));
    let b = cluster.connect_from(1, 11, y);
    let c = cluster.connect_from(1, 12, z);
    let d = cluster.connect_from(1, 13, w);

    // Y's takeover of B takes Y's one start on node 0: a new session from Y is then refused.
    let taken = cluster.resume_from(0, 2, y, &b, &b.token);
    let token = resumed_token(&taken, 2, &b);
    let refused = connect_text(&mut cluster, 0, 3, y);
    assert_eq!(error_code(&refused, 3), "server_full");
    assert_eq!(closes(&refused), [(3, close_code::SERVER_FULL)]);

    // With Y's rate spent, a takeover from Y is still asked and resumed.
    let c_taken = cluster.resume_from(0, 4, y, &c, &c.token);
    resumed_token(&c_taken, 4, &c);
    assert_eq!(cluster.nodes[1].0.stats().sessions, 1, "B and C moved");

    // One with a wrong token is asked too, and gets what a failed resume gets: a new session,
    // admitted as any, so refused while Y's rate is spent; nothing is left waiting.
    let moved = Member {
        node: 0,
        conn: 2,
        id: b.id.clone(),
        token,
    };
    let records_in = cluster.nodes[1].0.stats().bus_records_in;
    let wrong = cluster.resume_from(0, 5, y, &d, &"A".repeat(43));
    assert_eq!(cluster.nodes[1].0.stats().bus_records_in, records_in + 1);
    assert_eq!(error_code(&wrong, 5), "server_full");
    assert_eq!(only_frame_to(&wrong, 5)["ref"], "c");
    assert_eq!(closes(&wrong), [(5, close_code::SERVER_FULL)]);
    assert_eq!(
        cluster.nodes[1].0.stats().sessions,
        1,
        "D stays where it is"
    );

    // Once Y's rate refilled, a failed takeover's new session is paid by the start the
    // takeover took: it is not charged again.
    cluster.tick(0, 60_000);
    let wrong = cluster.resume_from(0, 6, y, &d, &"A".repeat(43));
    assert_eq!(only_frame_to(&wrong, 6)["resumed"], false);
    let back = cluster.resume_from(1, 14, y, &moved, &moved.token);
    resumed_token(&back, 14, &b);
}

#[test]
fn a_session_taken_over_or_adopted_counts_for_the_address_that_took_it() {
    let mut cluster = Cluster::with(
        2,
        RouterConfig {
            max_sessions_per_peer: 1,
            ..RouterConfig::defaults()
        },
    );
    let (y, z, w) = (addr("192.0.2.7"), addr("192.0.2.8"), addr("192.0.2.9"));
    let first = cluster.connect_from(1, 11, z);
    let taken = cluster.resume_from(0, 2, y, &first, &first.token);
    resumed_token(&taken, 2, &first);
    let first = Member {
        node: 0,
        conn: 2,
        id: first.id.clone(),
        token: String::new(),
    };

    // The session Z created on node 1 now counts for Y on node 0: Y may start no session there,
    // while Z may.
    let full = connect_text(&mut cluster, 0, 3, y);
    assert_eq!(error_code(&full, 3), "server_full", "Y holds one on node 0");
    let z_here = connect_text(&mut cluster, 0, 4, z);
    assert_eq!(only_frame_to(&z_here, 4)["resumed"], false);

    // Y at its limit on node 0 still takes a second session over, and adopts a third from a
    // dead node: each counts for Y beyond the limit.
    let second = cluster.connect_from(1, 12, w);
    let taken = cluster.resume_from(0, 5, y, &second, &second.token);
    resumed_token(&taken, 5, &second);
    let third = cluster.connect_from(1, 13, w);
    cluster.dead.push(1);
    let adopted = cluster.resume_from(0, 6, y, &third, &third.token);
    resumed_token(&adopted, 6, &third);
    assert_eq!(cluster.nodes[0].0.stats().sessions, 4);

    // Each count is given back once, when its session ends: with two of Y's three gone, Y is
    // still at its limit; with the third gone, it may start one again.
    cluster.text(&first, r#"{"type":"DISCONNECT"}"#);
    let second = Member {
        node: 0,
        conn: 5,
        id: second.id.clone(),
        token: String::new(),
    };
    cluster.text(&second, r#"{"type":"DISCONNECT"}"#);
    let full = connect_text(&mut cluster, 0, 7, y);
    assert_eq!(error_code(&full, 7), "server_full", "Y still holds one");
    let third = Member {
        node: 0,
        conn: 6,
        id: third.id.clone(),
        token: String::new(),
    };
    cluster.text(&third, r#"{"type":"DISCONNECT"}"#);
    let again = cluster.connect_from(0, 8, y);
    assert_ne!(again.id, first.id);
}

#[test]
fn clients_behind_one_address_all_resume_through_another_node_past_its_limits() {
    // One NAT address, limits of 2 live sessions and 2 starts a minute per address: node 0
    // holds 2 of its sessions already (its starts spent), node 1 and node 2 hold 2 more each.
    let mut cluster = Cluster::with(
        3,
        RouterConfig {
            max_sessions_per_peer: 2,
            rate_sessions_per_address_per_min: 2,
            ..RouterConfig::defaults()
        },
    );
    let nat = addr("198.51.100.1");
    let mut conn = 100;
    let mut next_conn = || {
        conn += 1;
        conn
    };
    let here: Vec<Member> = (0..2)
        .map(|_| cluster.connect_from(0, next_conn(), nat))
        .collect();
    let mut away = Vec::new();
    for node in [1, 2] {
        for _ in 0..2 {
            let member = cluster.connect_from(node, next_conn(), nat);
            away.push(member);
        }
    }
    // Node 1 is upgraded (its clients come back while it still runs), node 2 is killed.
    for member in &away[..2] {
        cluster.closed(member);
    }
    cluster.dead.push(2);

    for member in &away {
        let conn = next_conn();
        let back = cluster.resume_from(0, conn, nat, member, &member.token);
        resumed_token(&back, conn, member);
    }
    assert_eq!(cluster.nodes[0].0.stats().sessions, 6, "all six on node 0");
    assert_eq!(cluster.nodes[1].0.stats().sessions, 0);
    for member in &here {
        let still = cluster.text(member, r#"{"type":"PING","ref":"p"}"#);
        assert_eq!(only_frame_to(&still, member.conn)["type"], "PONG");
    }

    // New sessions from that address are still refused on node 0.
    let conn = next_conn();
    let refused = connect_text(&mut cluster, 0, conn, nat);
    assert_eq!(error_code(&refused, conn), "server_full");
}

#[test]
fn takeovers_from_a_block_whose_takeovers_keep_failing_are_held_but_not_refused() {
    let mut cluster = Cluster::with(
        2,
        RouterConfig {
            rate_sessions_per_address_per_min: 2,
            ..RouterConfig::defaults()
        },
    );
    let (y, z) = (addr("192.0.2.7"), addr("192.0.2.8"));
    let b = cluster.connect_from(1, 11, z);
    let c = cluster.connect_from(1, 12, z);
    let records_in = |cluster: &Cluster| cluster.nodes[1].0.stats().bus_records_in;

    // Two wrong tokens from Y within a minute: Y's budget of failed takeovers is spent.
    for conn in [2, 3] {
        let wrong = cluster.resume_from(0, conn, y, &b, &"A".repeat(43));
        assert_eq!(only_frame_to(&wrong, conn)["resumed"], false);
    }

    // Y's next takeover waits before B's node is asked, even with the right token; then it is
    // asked and resumed.
    let before = records_in(&cluster);
    let waiting = cluster.resume_from(0, 4, y, &b, &b.token);
    assert!(frames_to(&waiting, 4).is_empty(), "{waiting:?}");
    assert_eq!(records_in(&cluster), before, "nothing asked yet");
    assert_eq!(cluster.nodes[0].0.takeovers.held(), 1);
    let again = cluster.on(0, |router, sink, now| {
        router.text(4, r#"{"type":"CONNECT","version":2}"#, now, sink)
    });
    assert_eq!(error_code(&again, 4), "already_connected");
    let early = cluster.tick(0, TAKEOVER_HOLD_MS - 1);
    assert!(frames_to(&early, 4).is_empty());
    let asked = cluster.tick(0, 1);
    resumed_token(&asked, 4, &b);
    assert_eq!(records_in(&cluster), before + 1);

    // A held takeover whose connection closes is dropped without asking anything.
    let (before, records_out) = (
        records_in(&cluster),
        cluster.nodes[0].0.stats().bus_records_out,
    );
    cluster.resume_from(0, 5, y, &c, &c.token);
    cluster.on(0, |router, sink, now| router.closed(5, now, sink));
    cluster.tick(0, TAKEOVER_HOLD_MS);
    assert_eq!(cluster.nodes[0].0.takeovers.held(), 0);
    assert_eq!(cluster.nodes[0].0.stats().bus_records_out, records_out);
    assert_eq!(records_in(&cluster), before);
    assert_eq!(
        cluster.nodes[1].0.stats().sessions,
        1,
        "C stays where it is"
    );

    // Another address is asked at once.
    let z_back = cluster.resume_from(0, 6, z, &c, &c.token);
    resumed_token(&z_back, 6, &c);
}

fn id_of(member: &Member) -> Id {
    Id::parse_units(member.id.bytes().map(Some)).expect("an ID")
}

fn handle_of(text: &str) -> protocol::Handle {
    protocol::Handle::parse(text).expect("a handle")
}

fn unlisten_frame(handles: &[String]) -> String {
    json!({"type":"UNLISTEN","handles":handles,"ref":"u"}).to_string()
}

/// A session on another node took the handle and then let it go: nobody listens on it. The old
/// listener's node stopped renewing its entry when it told its session, so its renewals do not
/// write the entry back (it would name the old listener for ever, even after it ended).
#[test]
fn a_handle_taken_on_another_node_and_let_go_there_is_nobodys() {
    let mut cluster = Cluster::new(2);
    let old = cluster.connect(0, 1);
    let taker = cluster.connect(1, 11);
    let sender = cluster.connect(1, 12);
    let h = handle_text(9);
    let handles = std::slice::from_ref(&h);
    cluster.text(&old, &listen_frame(handles));
    let taken = cluster.text(&taker, &listen_frame(handles));
    assert_eq!(
        frames_to(&taken, old.conn),
        [json!({"type":"HANDLE_TAKEN","handle":h})]
    );
    let let_go = cluster.text(&taker, &unlisten_frame(handles));
    assert_eq!(only_frame_to(&let_go, taker.conn)["type"], "LISTENING");
    assert_eq!(cluster.listeners.get(&handle_of(&h)), None);

    for node in [0, 1] {
        let renewed = cluster.renew(node);
        assert!(renewed.is_empty(), "{renewed:?}");
    }
    assert_eq!(
        cluster.listeners.get(&handle_of(&h)),
        None,
        "the old listener's entry was written back"
    );
    let kept = cluster.text(&sender, &to_handle(&h, true, "k"));
    assert_eq!(
        only_frame_to(&kept, sender.conn),
        json!({"type":"ACK","ref":"k","queued":true})
    );
    assert!(frames_to(&kept, old.conn).is_empty(), "{kept:?}");
}

/// A session handed over to another node leaves its handles' entries behind on neither node:
/// its old node forgets them at once (a letter meanwhile waits in the cluster's mailbox), and
/// its client's next LISTEN, on the new node, names the session there again.
#[test]
fn a_session_taken_over_by_another_node_leaves_no_handle_entry_behind() {
    let mut cluster = Cluster::new(2);
    let a = cluster.connect(0, 1);
    let b = cluster.connect(1, 11);
    let h = handle_text(10);
    let handles = std::slice::from_ref(&h);
    cluster.text(&b, &listen_frame(handles));
    assert_eq!(cluster.listeners.get(&handle_of(&h)), Some(&id_of(&b)));

    let taken = cluster.resume(0, 2, &b, &b.token);
    let reply = frames_to(&taken, 2)[0].clone();
    assert_eq!(reply["resumed"], true, "{reply}");
    assert_eq!(
        cluster.listeners.get(&handle_of(&h)),
        None,
        "the old node's entry stays"
    );
    cluster.renew(1);
    assert_eq!(cluster.listeners.get(&handle_of(&h)), None);
    let kept = cluster.text(&a, &to_handle(&h, true, "k"));
    assert_eq!(
        only_frame_to(&kept, a.conn),
        json!({"type":"ACK","ref":"k","queued":true})
    );

    let moved = Member {
        node: 0,
        conn: 2,
        id: b.id.clone(),
        token: reply["token"].as_str().unwrap_or_default().to_owned(),
    };
    let listened = cluster.text(&moved, &listen_frame(handles));
    let to_b = frames_to(&listened, moved.conn);
    let types: Vec<&str> = to_b.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(types, ["LISTENING", "MESSAGE"], "{to_b:?}");
    for node in [1, 0] {
        let renewed = cluster.renew(node);
        assert!(renewed.is_empty(), "{renewed:?}");
    }
    assert_eq!(cluster.listeners.get(&handle_of(&h)), Some(&id_of(&b)));
}

/// Two LISTENs of one handle on two nodes cross: A's, on node 1, takes it from V, and before
/// its HandleTaken record reaches V's node, V's client resumes there and listens again (as it
/// does after every CONNECT) and takes it back. Redis ran V's last: V keeps the handle and A is told, as
/// on one node; the record from A's LISTEN, arriving late, changes nothing.
#[test]
fn crossed_listens_on_two_nodes_leave_the_handle_with_the_last() {
    let mut cluster = Cluster::new(2);
    let v = cluster.connect(0, 1);
    let a = cluster.connect(1, 11);
    let sender = cluster.connect(1, 12);
    let h = handle_text(11);
    let listen = listen_frame(std::slice::from_ref(&h));
    cluster.text(&v, &listen);

    // A's LISTEN: Redis names A, and node 1's HandleTaken record for V is held on its way.
    let now = cluster.now;
    let outputs = {
        let (router, sink) = &mut cluster.nodes[1];
        router.text(a.conn, &listen, now, sink);
        sink.take()
    };
    assert_eq!(only_frame_to(&outputs, a.conn)["type"], "LISTENING");
    for action in outputs {
        if let Action::Bus(output) = action {
            cluster.carry(1, output);
        }
    }
    let held = match cluster.nodes[1].1.take().as_slice() {
        [Action::Bus(BusOutput::Record { text, .. })] if text.contains("handle_taken") => {
            text.clone()
        }
        other => panic!("expected the HandleTaken record, got {other:?}"),
    };
    assert_eq!(cluster.listeners.get(&handle_of(&h)), Some(&id_of(&a)));

    // V's client comes back on a new connection and listens again: it takes the handle back,
    // and A is told.
    let resumed = cluster.resume(0, 2, &v, &v.token);
    let v = Member {
        node: 0,
        conn: 2,
        id: v.id.clone(),
        token: frames_to(&resumed, 2)[0]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    let back = cluster.text(&v, &listen);
    assert_eq!(only_frame_to(&back, v.conn)["type"], "LISTENING");
    assert_eq!(
        frames_to(&back, a.conn),
        [json!({"type":"HANDLE_TAKEN","handle":h})]
    );
    assert_eq!(cluster.listeners.get(&handle_of(&h)), Some(&id_of(&v)));

    // The record from A's LISTEN arrives.
    let late = cluster.on(0, |router, sink, now| router.from_bus(&held, now, sink));
    assert!(frames_to(&late, v.conn).is_empty(), "{late:?}");
    assert_eq!(cluster.nodes[0].0.stats().handles, 1);
    assert_eq!(cluster.listeners.get(&handle_of(&h)), Some(&id_of(&v)));
    for node in [0, 1] {
        let renewed = cluster.renew(node);
        assert!(renewed.is_empty(), "{renewed:?}");
    }
    assert_eq!(cluster.listeners.get(&handle_of(&h)), Some(&id_of(&v)));
    let sent = cluster.text(&sender, &to_handle(&h, false, "s"));
    assert_eq!(only_frame_to(&sent, v.conn)["handle"], h.as_str());
    assert_eq!(
        only_frame_to(&sent, sender.conn),
        json!({"type":"ACK","ref":"s"})
    );

    // A LISTEN from A that Redis runs later is believed on V's node, doubted as it is.
    let again = cluster.text(&a, &listen);
    assert_eq!(
        frames_to(&again, v.conn),
        [json!({"type":"HANDLE_TAKEN","handle":h})]
    );
    assert_eq!(cluster.nodes[0].0.stats().handles, 0);
    assert_eq!(cluster.listeners.get(&handle_of(&h)), Some(&id_of(&a)));
}

/// A session's node says when it goes away and comes back, so that no renewal collects the
/// letters of its handles while it is away (they would only be kept again); only the first
/// LISTEN after the resume asserts again the handles it holds (it takes those letters), and a
/// later LISTEN of the same handles asks nothing of Redis.
#[test]
fn a_session_away_is_told_to_the_bus_and_only_the_first_listen_after_a_resume_reasserts_its_handles()
 {
    let mut cluster = Cluster::new(2);
    let b = cluster.connect(0, 1);
    let (h, other) = (handle_text(20), handle_text(21));
    cluster.text(&b, &listen_frame(std::slice::from_ref(&h)));
    assert_eq!(cluster.listens, [(0, handle_of(&h), id_of(&b))]);
    let again = cluster.text(&b, &listen_frame(std::slice::from_ref(&h)));
    assert_eq!(frames_to(&again, b.conn)[0]["type"], "LISTENING");
    assert_eq!(cluster.listens.len(), 1, "held already on this connection");

    cluster.closed(&b);
    assert!(cluster.away.contains(&id_of(&b)));
    let back = cluster.resume(0, 2, &b, &b.token);
    assert_eq!(frames_to(&back, 2)[0]["resumed"], true);
    assert!(!cluster.away.contains(&id_of(&b)));
    let resumed = Member {
        node: 0,
        conn: 2,
        id: b.id.clone(),
        token: resumed_token(&back, 2, &b),
    };

    cluster.listens.clear();
    cluster.text(&resumed, &listen_frame(std::slice::from_ref(&h)));
    assert_eq!(
        cluster.listens,
        [(0, handle_of(&h), id_of(&b))],
        "the first LISTEN after the resume asserts the handle held"
    );
    cluster.listens.clear();
    let both = [h.clone(), other.clone()];
    let listened = cluster.text(&resumed, &listen_frame(&both));
    assert_eq!(frames_to(&listened, 2)[0]["handles"], 2);
    assert_eq!(
        cluster.listens,
        [(0, handle_of(&other), id_of(&b))],
        "a later LISTEN asserts only the handle new to the session"
    );

    // Away again, then resumed through the other node: its old node hands it over (it is
    // away nowhere), and the new node's first LISTEN asserts both handles.
    cluster.closed(&resumed);
    assert!(cluster.away.contains(&id_of(&b)));
    let moved = cluster.resume(1, 11, &resumed, &resumed.token);
    assert_eq!(frames_to(&moved, 11)[0]["resumed"], true);
    assert!(!cluster.away.contains(&id_of(&b)));
}
