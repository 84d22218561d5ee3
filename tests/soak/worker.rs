//! One worker thread's share of the soak: its clients, the seeded churn it puts them through
//! (messages, friendships, drops, resumptions), and the ledger that accounts for every message
//! they send.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

fn seed() -> u64 {
    std::env::var("SECCHAT_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5ec_c4a7)
}

/// xorshift64*: small, seeded, good enough to shuffle actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// How the server answered a MESSAGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Acked,
    Queued,
    Refused,
}

/// One MESSAGE sent, and what became of it.
#[derive(Debug)]
struct Sent {
    from: usize,
    from_epoch: u32,
    from_id: String,
    to: usize,
    to_epoch: u32,
    answer: Answer,
    received: u32,
    undelivered: u32,
}

/// One client: its connection (none while away) and its current session.
struct Slot {
    client: Option<Client>,
    id: String,
    token: String,
    /// Bumped whenever the client has to start a new session.
    epoch: u32,
    /// While away: when it may come back.
    back_at: Option<Instant>,
    /// The slots this client is friends with, as far as it has been told.
    friends: HashSet<usize>,
}

#[derive(Default, Debug)]
pub struct Tally {
    pub messages: usize,
    pub acked: usize,
    pub queued: usize,
    pub refused: usize,
    pub received: usize,
    pub undelivered: usize,
    pub lost_with_sender: usize,
    pub drops: usize,
    pub resumed: usize,
    pub expired: usize,
    pub friendships: usize,
}

pub struct Worker {
    index: usize,
    rng: Rng,
    slots: Vec<Slot>,
    /// Away slots, in the order they left (and so, nearly, the order they come back).
    away: std::collections::VecDeque<usize>,
    /// Session ID → (slot, epoch), for every session this worker's clients ever had.
    sessions: HashMap<String, (usize, u32)>,
    ledger: Vec<Sent>,
    tally: Tally,
}

impl Worker {
    pub fn connect(server: &Server, index: usize, count: usize) -> Worker {
        let mut worker = Worker {
            index,
            rng: Rng(seed() ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            slots: Vec::with_capacity(count),
            away: Default::default(),
            sessions: HashMap::new(),
            ledger: Vec::new(),
            tally: Tally::default(),
        };
        for n in 0..count {
            let mut client = Client::connect_small(server);
            let reply = client.request(json!({"type": "CONNECT"}));
            assert_eq!(reply["type"], "CONNECT", "{reply}");
            let id = field(&reply, "id");
            worker.sessions.insert(id.clone(), (n, 0));
            worker.slots.push(Slot {
                client: Some(client),
                token: field(&reply, "token"),
                id,
                epoch: 0,
                back_at: None,
                friends: HashSet::new(),
            });
        }
        worker
    }

    /// Churns until `until`, then brings everyone back and settles every pending frame.
    pub fn run(&mut self, server: &Server, until: Instant) {
        let count = self.slots.len();
        for a in 0..count {
            self.befriend(a, (a + 1) % count);
        }
        while Instant::now() < until {
            self.bring_back_due(server);
            let slot = self.rng.below(count);
            match self.rng.below(100) {
                0..=64 => self.send(slot),
                65..=79 => self.drop_client(slot),
                80..=94 => {
                    let partner = if self.rng.below(2) == 0 { 1 } else { count - 1 };
                    self.befriend(slot, (slot + partner) % count);
                }
                _ => self.sync(slot),
            }
        }
        self.away.clear();
        for slot in 0..count {
            self.come_back(server, slot);
        }
        for slot in 0..count {
            self.sync(slot);
        }
    }

    fn client(&mut self, slot: usize) -> &mut Client {
        self.slots[slot]
            .client
            .as_mut()
            .unwrap_or_else(|| panic!("slot {slot} is away"))
    }

    /// The next frame on `slot` that `wanted` accepts; every other frame is handled on the way.
    fn wait_for(&mut self, slot: usize, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(text) = self.client(slot).try_recv_text(left) else {
                panic!("worker {} slot {slot}: no {what} in time", self.index);
            };
            let frame: Value = serde_json::from_str(&text).expect("server sent non-JSON");
            if wanted(&frame) {
                return frame;
            }
            self.handle(slot, &frame);
        }
    }

    /// A frame nobody was waiting for: deliveries, UNDELIVERED, friends leaving.
    fn handle(&mut self, slot: usize, frame: &Value) {
        match frame["type"].as_str().unwrap_or_default() {
            "MESSAGE" => {
                let entry = self.entry_of(frame["payload"].as_str().unwrap_or_default());
                let epoch = self.slots[slot].epoch;
                let sent = &mut self.ledger[entry];
                assert_eq!(
                    (sent.to, sent.to_epoch),
                    (slot, epoch),
                    "delivered elsewhere"
                );
                assert_eq!(frame["from"], sent.from_id.as_str(), "wrong sender");
                assert_ne!(sent.answer, Answer::Refused, "a refused message arrived");
                sent.received += 1;
                assert_eq!(
                    sent.received + sent.undelivered,
                    1,
                    "resolved twice: {sent:?}"
                );
            }
            "UNDELIVERED" => {
                let reference = frame["ref"].as_str().unwrap_or_default();
                let entry: usize = reference
                    .strip_prefix('m')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("UNDELIVERED for a ref never sent: {frame}"));
                let epoch = self.slots[slot].epoch;
                let sent = &mut self.ledger[entry];
                assert_eq!(
                    (sent.from, sent.from_epoch),
                    (slot, epoch),
                    "told the wrong one"
                );
                assert_eq!(sent.answer, Answer::Queued, "UNDELIVERED for {sent:?}");
                sent.undelivered += 1;
                assert_eq!(
                    sent.received + sent.undelivered,
                    1,
                    "resolved twice: {sent:?}"
                );
            }
            "DISCONNECT" => {
                let gone = frame["id"].as_str().unwrap_or_default();
                if let Some(&(friend, _)) = self.sessions.get(gone) {
                    self.slots[slot].friends.remove(&friend);
                }
            }
            "PRESENCE" => {}
            other => panic!(
                "worker {} slot {slot}: unexpected {other}: {frame}",
                self.index
            ),
        }
    }

    fn entry_of(&self, payload: &str) -> usize {
        let marker = format!("w{}-m", self.index);
        payload
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&marker))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a MESSAGE this worker never sent: {payload:?}"))
    }

    fn send(&mut self, slot: usize) {
        if self.slots[slot].client.is_none() {
            return;
        }
        let mut friends: Vec<usize> = self.slots[slot].friends.iter().copied().collect();
        friends.sort_unstable();
        let Some(&to) = friends.get(self.rng.below(friends.len())) else {
            return;
        };
        let n = self.ledger.len();
        let reference = format!("m{n}");
        let to_id = self.slots[to].id.clone();
        self.ledger.push(Sent {
            from: slot,
            from_epoch: self.slots[slot].epoch,
            from_id: self.slots[slot].id.clone(),
            to,
            to_epoch: self.slots[to].epoch,
            answer: Answer::Refused,
            received: 0,
            undelivered: 0,
        });
        let payload = payload_with(&format!("w{}-m{n}", self.index));
        self.client(slot)
            .send_json(&message(&to_id, &payload, Some(&reference)));
        let reply = self.wait_for(slot, "ACK or ERROR", |f| {
            (f["type"] == "ACK" || f["type"] == "ERROR") && f["ref"] == reference.as_str()
        });
        let answer = match (reply["type"].as_str(), reply.get("queued")) {
            (Some("ACK"), None) => Answer::Acked,
            (Some("ACK"), Some(_)) => Answer::Queued,
            _ => {
                match reply["code"].as_str() {
                    // The friend's session ended and the news has not been read yet.
                    Some("not_friends") => {
                        self.slots[slot].friends.remove(&to);
                    }
                    // Possible in long runs: refused, and nothing is owed.
                    Some("peer_busy" | "rate_limited") => {}
                    _ => panic!("unexpected refusal {reply}"),
                }
                Answer::Refused
            }
        };
        let sent = &mut self.ledger[n];
        assert!(
            answer != Answer::Refused || sent.received == 0,
            "refused but delivered"
        );
        sent.answer = answer;
    }

    fn drop_client(&mut self, slot: usize) {
        let Some(client) = self.slots[slot].client.take() else {
            return;
        };
        for frame in client.drop_and_drain() {
            self.handle(slot, &frame);
        }
        // Up to 1.5 s away with a 1 s resume window: about a third lose their session.
        let away_ms = self.rng.below(1_500) as u64;
        self.slots[slot].back_at = Some(Instant::now() + Duration::from_millis(away_ms));
        self.away.push_back(slot);
        self.tally.drops += 1;
    }

    /// Brings back the clients whose time away is over.
    fn bring_back_due(&mut self, server: &Server) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .away
            .iter()
            .copied()
            .filter(|&slot| self.slots[slot].back_at.is_some_and(|at| at <= now))
            .collect();
        if due.is_empty() {
            return;
        }
        self.away.retain(|slot| !due.contains(slot));
        for slot in due {
            self.come_back(server, slot);
        }
    }

    /// Resumes an away client; a session that expired meanwhile is replaced by a new one.
    fn come_back(&mut self, server: &Server, slot: usize) {
        if self.slots[slot].back_at.is_none() {
            return;
        }
        let (id, token) = (self.slots[slot].id.clone(), self.slots[slot].token.clone());
        let mut client = Client::connect_small(server);
        let reply =
            client.request(json!({"type": "CONNECT", "resume": {"id": id, "token": token}}));
        assert_eq!(reply["type"], "CONNECT", "{reply}");
        let state = &mut self.slots[slot];
        state.client = Some(client);
        state.back_at = None;
        state.token = field(&reply, "token");
        if reply["resumed"] == true {
            assert_eq!(reply["id"], id.as_str());
            self.tally.resumed += 1;
        } else {
            state.epoch += 1;
            state.id = field(&reply, "id");
            state.friends.clear();
            let epoch = state.epoch;
            self.sessions.insert(state.id.clone(), (slot, epoch));
            self.tally.expired += 1;
        }
    }

    /// `a` requests, `b` accepts, when both are here and not yet friends.
    fn befriend(&mut self, a: usize, b: usize) {
        if a == b
            || self.slots[a].client.is_none()
            || self.slots[b].client.is_none()
            || self.slots[a].friends.contains(&b)
        {
            return;
        }
        let (a_id, b_id) = (self.slots[a].id.clone(), self.slots[b].id.clone());
        self.client(a).send_json(
            &json!({"type": "FRIEND_REQUEST", "to": b_id, "public_key": TEST_KEY, "ref": "fr"}),
        );
        let reply = self.wait_for(a, "request reply", |f| f["ref"] == "fr");
        if reply["type"] != "ACK" {
            // Already friends (a DISCONNECT not read yet cannot make that) or rate limited.
            assert_eq!(reply["type"], "ERROR", "{reply}");
            return;
        }
        let from = a_id.clone();
        self.wait_for(b, "FRIEND_REQUEST", move |f| {
            f["type"] == "FRIEND_REQUEST" && f["from"] == from.as_str()
        });
        self.client(b).send_json(
            &json!({"type": "FRIEND_ACCEPT", "to": a_id, "public_key": TEST_KEY, "ref": "fa"}),
        );
        let reply = self.wait_for(b, "accept reply", |f| f["ref"] == "fa");
        assert_eq!(reply["type"], "ACK", "{reply}");
        self.wait_for(a, "FRIEND_ACCEPT", move |f| {
            f["type"] == "FRIEND_ACCEPT" && f["from"] == b_id.as_str()
        });
        self.slots[a].friends.insert(b);
        self.slots[b].friends.insert(a);
        self.tally.friendships += 1;
    }

    /// Reads everything the server sent `slot` before this moment.
    fn sync(&mut self, slot: usize) {
        if self.slots[slot].client.is_none() {
            return;
        }
        self.client(slot)
            .send_json(&json!({"type": "PING", "ref": "sync"}));
        self.wait_for(slot, "PONG", |f| f["type"] == "PONG");
    }

    /// Every message's fate, now that everyone is back and every frame has been read.
    pub fn settle(&mut self) {
        for sent in &self.ledger {
            self.tally.messages += 1;
            self.tally.received += sent.received as usize;
            self.tally.undelivered += sent.undelivered as usize;
            let sender_alive = self.slots[sent.from].epoch == sent.from_epoch;
            match sent.answer {
                Answer::Refused => {
                    self.tally.refused += 1;
                    assert_eq!(sent.received + sent.undelivered, 0, "{sent:?}");
                }
                Answer::Acked => {
                    self.tally.acked += 1;
                    assert_eq!((sent.received, sent.undelivered), (1, 0), "{sent:?}");
                }
                Answer::Queued => {
                    self.tally.queued += 1;
                    let resolved = sent.received + sent.undelivered;
                    if sender_alive {
                        assert_eq!(resolved, 1, "queued, then lost without a word: {sent:?}");
                    } else if resolved == 0 {
                        // Its sender's session ended too: nobody was left to tell.
                        self.tally.lost_with_sender += 1;
                    }
                }
            }
        }
    }

    /// Everyone leaves: even slots with DISCONNECT (close 1000), odd ones by dropping.
    pub fn leave(self) {
        for (n, slot) in self.slots.into_iter().enumerate() {
            let Some(mut client) = slot.client else {
                continue;
            };
            if n % 2 == 0 {
                client.send_json(&json!({"type": "DISCONNECT"}));
                // Friends who left before may have said so first.
                let (texts, code) = client.texts_until_close();
                assert_eq!(code, 1000);
                let leaving = |t: &Value| t["type"] == "DISCONNECT" || t["type"] == "PRESENCE";
                assert!(texts.iter().all(leaving), "{texts:?}");
            } else {
                client.drop_connection();
            }
        }
    }
}

fn field(value: &Value, name: &str) -> String {
    value[name].as_str().unwrap_or_default().to_owned()
}

pub fn total(workers: &[Worker]) -> Tally {
    let mut total = Tally::default();
    for worker in workers {
        let t = &worker.tally;
        total.messages += t.messages;
        total.acked += t.acked;
        total.queued += t.queued;
        total.refused += t.refused;
        total.received += t.received;
        total.undelivered += t.undelivered;
        total.lost_with_sender += t.lost_with_sender;
        total.drops += t.drops;
        total.resumed += t.resumed;
        total.expired += t.expired;
        total.friendships += t.friendships;
    }
    total
}
