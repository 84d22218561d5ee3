//! Setting up: queueing clients and pairs of friends, opening connections (at most
//! `connect_concurrency` between `connect` and the CONNECT reply), and the friend handshake that
//! makes each pair friends.

use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::socket::connect;
use super::{Client, Driver, Pair, Phase, Placement, STALL, mark_dirty};

pub struct SetupReport {
    pub connections: usize,
    pub pairs: usize,
    pub elapsed: Duration,
}

impl Driver {
    fn add_client(&mut self, node: usize) -> usize {
        let index = self.clients.len();
        self.clients.push(Client {
            stream: None,
            phase: Phase::Queued,
            node,
            id: [0; 6],
            partner: None,
            pair: None,
            partial: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            dirty: false,
            mask_state: 0x9E37_79B9_7F4A_7C15 ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            sent: 0,
            acked: 0,
            received: 0,
            sender_slot: None,
            wants_topup: false,
        });
        self.queued.push_back(index);
        index
    }

    /// Queues `count` pairs of clients that will become friends.
    pub fn add_pairs(&mut self, count: usize) {
        let nodes = self.options.addrs.len();
        for _ in 0..count {
            let pair = self.pairs.len();
            let node = pair % nodes;
            let first = self.add_client(node);
            let second = self.add_client(match self.options.placement {
                Placement::Same => node,
                Placement::Cross => (node + 1) % nodes,
            });
            self.setup_unfinished += 1;
            self.pairs.push(Pair {
                first,
                second,
                requested: false,
                friends: false,
                acks: 0,
            });
            for (me, friend) in [(first, second), (second, first)] {
                self.clients[me].partner = Some(friend);
                self.clients[me].pair = Some(pair);
            }
        }
    }

    /// Queues `count` clients that only CONNECT and then stay idle.
    pub fn add_lone(&mut self, count: usize) {
        let nodes = self.options.addrs.len();
        for _ in 0..count {
            self.add_client(self.clients.len() % nodes);
            self.setup_unfinished += 1;
        }
    }

    /// Applies `change` to a pair and counts it finished when this change finished it.
    fn advance_pair(&mut self, pair: usize, change: impl FnOnce(&mut Pair)) {
        let was_done = self.pairs[pair].done();
        change(&mut self.pairs[pair]);
        if !was_done && self.pairs[pair].done() {
            self.setup_unfinished -= 1;
        }
    }

    /// Opens every queued client and makes every pair friends.
    pub fn establish(&mut self, limit: Duration) -> Result<SetupReport, String> {
        let started = Instant::now();
        let connections_before = self.clients.len() - self.queued.len();
        let pairs_before = self.pairs.iter().filter(|p| p.done()).count();
        self.last_progress = started;
        loop {
            self.open_queued();
            let pending = self.setup_unfinished;
            if pending == 0 {
                break;
            }
            if self.faults.total() > 0 {
                return Err(format!("setup failed: {}", self.faults.describe()));
            }
            let now = Instant::now();
            if now.duration_since(self.last_progress) > STALL || now.duration_since(started) > limit
            {
                return Err(format!(
                    "setup stalled with {pending} clients or pairs unfinished"
                ));
            }
            self.turn(Some(Duration::from_millis(10)))
                .map_err(|e| format!("poll: {e}"))?;
        }
        Ok(SetupReport {
            connections: self.clients.len() - connections_before,
            pairs: self.pairs.iter().filter(|p| p.done()).count() - pairs_before,
            elapsed: started.elapsed(),
        })
    }

    fn open_queued(&mut self) {
        while self.connecting < self.options.connect_concurrency {
            let Some(index) = self.queued.pop_front() else {
                return;
            };
            let source = match self.options.source_ips.as_slice() {
                [] => None,
                ips => Some(ips[index % ips.len()]),
            };
            let node = self.clients[index].node;
            match connect(self.options.addrs[node], source) {
                Ok(mut stream) => {
                    let registered = self.poll.registry().register(
                        &mut stream,
                        Token(index),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if let Err(e) = registered {
                        self.faults.note(format!("register: {e}"));
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let client = &mut self.clients[index];
                    client.stream = Some(stream);
                    client.phase = Phase::Upgrading;
                    client.out.extend_from_slice(&self.upgrade_requests[node]);
                    mark_dirty(&mut self.dirty, client, index);
                    self.connecting += 1;
                }
                Err(e) => self.faults.note(format!("connect: {e}")),
            }
        }
    }

    pub(super) fn connected(&mut self, index: usize, id: &str) {
        let client = &mut self.clients[index];
        let Ok(id) = <[u8; 6]>::try_from(id.as_bytes()) else {
            self.faults.note("a CONNECT reply without a 6-character id");
            return;
        };
        if client.phase != Phase::AwaitingConnect {
            self.faults.note("a second CONNECT reply");
            return;
        }
        client.id = id;
        client.phase = Phase::Ready;
        self.connecting -= 1;
        self.last_progress = Instant::now();
        let Some(pair) = client.pair else {
            self.setup_unfinished -= 1;
            return;
        };
        let (first, second) = (self.pairs[pair].first, self.pairs[pair].second);
        if self.clients[first].phase == Phase::Ready && self.clients[second].phase == Phase::Ready {
            let to = String::from_utf8_lossy(&self.clients[second].id).into_owned();
            let request = format!(
                r#"{{"type":"FRIEND_REQUEST","to":"{to}","public_key":"{}","ref":"request"}}"#,
                self.public_key
            );
            self.send_frame(first, request.as_bytes());
            self.pairs[pair].requested = true;
        }
    }

    pub(super) fn friend_request(&mut self, index: usize, from: &str) {
        let Some(partner) = self.clients[index].partner else {
            self.faults.note("a FRIEND_REQUEST for a lone client");
            return;
        };
        if from.as_bytes() != self.clients[partner].id {
            self.faults.note("a FRIEND_REQUEST from a stranger");
            return;
        }
        let accept = format!(
            r#"{{"type":"FRIEND_ACCEPT","to":"{from}","public_key":"{}","ref":"accept"}}"#,
            self.public_key
        );
        self.send_frame(index, accept.as_bytes());
    }

    pub(super) fn friend_accept(&mut self, index: usize, from: &str) {
        let (Some(partner), Some(pair)) = (self.clients[index].partner, self.clients[index].pair)
        else {
            self.faults.note("a FRIEND_ACCEPT for a lone client");
            return;
        };
        if from.as_bytes() != self.clients[partner].id || !self.pairs[pair].requested {
            self.faults.note("an unexpected FRIEND_ACCEPT");
            return;
        }
        self.advance_pair(pair, |pair| pair.friends = true);
        self.last_progress = Instant::now();
    }

    pub(super) fn setup_ack(&mut self, index: usize) {
        if let Some(pair) = self.clients[index].pair {
            self.advance_pair(pair, |pair| pair.acks += 1);
        }
    }
}
