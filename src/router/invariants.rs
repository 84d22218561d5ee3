//! Consistency checks over the whole router state, for tests (O(state), never called in serving).

use super::fasthash::FastMap;
use super::limits::FLOOD_ERRORS;
use super::remote::Waiting;
use super::{Entropy, Router, timer_is_live};
use crate::address::BlockCounts;
use crate::id::Id;

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

impl<E: Entropy> Router<E> {
    /// Checks every structural invariant; `Err` names the first one broken.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_conns()?;
        self.check_sessions()?;
        self.check_queues()?;
        self.check_peer_counts()?;
        self.check_takeovers()?;
        self.check_timers()?;
        self.check_awaiting()?;
        self.check_rendezvous()
    }

    /// Each session's count of requests waiting for another node, and of FRIEND_REQUEST records
    /// in flight per target, is exactly what the table of waiting requests holds for it (its
    /// own: a session that moved away and back has another serial).
    fn check_awaiting(&self) -> Result<(), String> {
        let mut waiting: FastMap<Id, (u32, FastMap<Id, u32>)> = FastMap::default();
        for entry in self.awaiting.iter() {
            let Some(session) = self.sessions.get(&entry.by) else {
                continue;
            };
            if session.serial != entry.serial {
                continue;
            }
            let (count, requests) = waiting.entry(entry.by).or_default();
            *count += 1;
            if let Waiting::Request { to } = entry.what {
                *requests.entry(to).or_default() += 1;
            }
        }
        for (id, session) in &self.sessions {
            let (count, requests) = waiting.remove(id).unwrap_or_default();
            ensure!(
                session.awaiting == count,
                "{id:?} counts {} awaited answers, the table holds {count}",
                session.awaiting
            );
            ensure!(
                session.requests_in_flight == requests,
                "{id:?} counts requests in flight {:?}, the table holds {requests:?}",
                session.requests_in_flight
            );
            ensure!(
                !session.requests_in_flight.contains_key(id),
                "{id:?} has a request in flight to itself"
            );
        }
        Ok(())
    }

    /// Handles name live version-2 sessions, mirrored and within their limits; the mailbox's
    /// indexes and byte counts match its letters, within every cap; the next deadline is no later
    /// than the oldest letter's expiry.
    fn check_rendezvous(&self) -> Result<(), String> {
        let sessions = &self.sessions;
        let mailbox = &self.mailbox;
        self.handles.check(
            |id| {
                sessions
                    .get(&id)
                    .is_some_and(|session| session.version >= 2)
            },
            |handle| mailbox.mail_for(handle),
        )?;
        self.mailbox.check()?;
        self.taken_back.check()?;
        if let Some(expiry) = self.mailbox.next_expiry_ms() {
            ensure!(
                self.next_deadline_ms().is_some_and(|at| at <= expiry),
                "the next deadline misses the oldest letter's expiry"
            );
        }
        Ok(())
    }

    /// Each address block's session count is exactly its live sessions (a takeover in flight
    /// holds none), and within the limit on one node.
    fn check_peer_counts(&self) -> Result<(), String> {
        let counted = BlockCounts::recount(
            self.config.max_sessions_per_peer,
            self.sessions.values().map(|session| session.peer),
        );
        ensure!(
            counted == self.sessions_per_peer,
            "address counts {:?} but sessions say {counted:?}",
            self.sessions_per_peer
        );
        // In a cluster a session taken over or adopted counts here whatever the limit
        // (refusing it would end a live session).
        ensure!(
            self.config.cluster || counted.within_limits(),
            "sessions over a block's limit: {counted:?}"
        );
        Ok(())
    }

    /// Each takeover waits in one queue (asked, or held before it is asked), and an open
    /// connection it waits for has no session and refuses another CONNECT.
    fn check_takeovers(&self) -> Result<(), String> {
        for conn in self.takeovers.check()? {
            if let Some(state) = self.conns.get(&conn) {
                ensure!(
                    state.taking_over && state.session.is_none(),
                    "conn {conn} waits for a takeover but is not marked so"
                );
            }
        }
        Ok(())
    }

    fn check_conns(&self) -> Result<(), String> {
        for (conn, state) in &self.conns {
            ensure!(
                state.errors.len() < FLOOD_ERRORS,
                "conn {conn} kept {} errors",
                state.errors.len()
            );
            if let Some(id) = state.session {
                let session_conn = self.sessions.get(&id).and_then(|s| s.conn);
                ensure!(
                    session_conn == Some(*conn),
                    "conn {conn} names {id:?}, which names {session_conn:?}"
                );
            }
        }
        Ok(())
    }

    fn check_sessions(&self) -> Result<(), String> {
        ensure!(
            self.sessions.len() <= self.config.max_sessions,
            "{} sessions over max_sessions {}",
            self.sessions.len(),
            self.config.max_sessions
        );
        let mut resuming = 0;
        for (id, session) in &self.sessions {
            ensure!(
                Id::from_bits(id.bits()) == Some(*id),
                "{id:?} has more than 30 bits"
            );
            match session.conn {
                Some(conn) => {
                    let named = self.conns.get(&conn).and_then(|state| state.session);
                    ensure!(
                        named == Some(*id),
                        "{id:?} names conn {conn}, which names {named:?}"
                    );
                }
                None => resuming += 1,
            }
            ensure!(
                session.requests_outstanding() <= self.config.max_pending_requests,
                "{id:?} has {} requests pending or in flight",
                session.requests_outstanding()
            );
            self.check_relations(*id)?;
        }
        ensure!(
            resuming == self.sessions_resuming,
            "{resuming} resuming, counter says {}",
            self.sessions_resuming
        );
        Ok(())
    }

    /// Friendships are symmetric, pending requests mirrored, and all name other live sessions.
    /// In a cluster, a session another node holds keeps the other half there: only the halves
    /// of two sessions here are checked against each other.
    fn check_relations(&self, id: Id) -> Result<(), String> {
        let Some(session) = self.sessions.get(&id) else {
            return Err(format!("{id:?} vanished"));
        };
        let elsewhere = |other: &Id| self.config.cluster && !self.sessions.contains_key(other);
        ensure!(
            self.config.cluster || session.awaiting == 0,
            "{id:?} awaits answers outside a cluster"
        );
        for friend in &session.friends {
            ensure!(*friend != id, "{id:?} is its own friend");
            ensure!(
                !session.pending_out.contains(friend) && !session.pending_in.contains_key(friend),
                "{id:?} has a request pending with friend {friend:?}"
            );
            if elsewhere(friend) {
                continue;
            }
            let other = self.sessions.get(friend);
            ensure!(other.is_some(), "{id:?} is friends with dead {friend:?}");
            ensure!(
                other.is_some_and(|o| o.friends.contains(&id)),
                "friendship {id:?}-{friend:?} is one-way"
            );
        }
        for target in &session.pending_out {
            ensure!(*target != id, "{id:?} has a request pending to itself");
            if elsewhere(target) {
                continue;
            }
            let other = self.sessions.get(target);
            ensure!(
                other.is_some_and(|o| o.pending_in.contains_key(&id)),
                "request {id:?}->{target:?} is not mirrored (or names a dead session)"
            );
        }
        for requester in session.pending_in.keys() {
            if elsewhere(requester) {
                continue;
            }
            let other = self.sessions.get(requester);
            ensure!(
                other.is_some_and(|o| o.pending_out.contains(&id)),
                "request {requester:?}->{id:?} is not mirrored (or names a dead session)"
            );
        }
        Ok(())
    }

    fn check_queues(&self) -> Result<(), String> {
        let (mut frames, mut bytes) = (0, 0);
        for (id, session) in &self.sessions {
            let queue = &session.queue;
            ensure!(
                session.conn.is_none() || queue.len() == 0,
                "connected {id:?} still has {} queued frames",
                queue.len()
            );
            let mut held = 0;
            for (index, entry) in queue.iter().enumerate() {
                // Only appended to since the window began, so what precedes a capped frame is
                // exactly what the queue held when the cap was checked.
                if entry.kind.is_capped() {
                    ensure!(
                        held <= self.config.max_queue_bytes && index <= self.config.max_queue_len,
                        "{id:?} queued a capped frame behind {held} bytes / {index} frames"
                    );
                }
                held += entry.bytes();
            }
            ensure!(
                held == queue.bytes(),
                "{id:?} queue counts {} bytes, holds {held}",
                queue.bytes()
            );
            frames += queue.len();
            bytes += held;
        }
        ensure!(
            frames == self.queued_frames,
            "{frames} queued frames, counter says {}",
            self.queued_frames
        );
        ensure!(
            bytes == self.queued_bytes,
            "{bytes} queued bytes, counter says {}",
            self.queued_bytes
        );
        Ok(())
    }

    fn check_timers(&self) -> Result<(), String> {
        if let Some(top) = self.timers.earliest() {
            ensure!(
                timer_is_live(&self.sessions, &top),
                "the earliest deadline {top:?} is stale"
            );
        }
        for (id, session) in &self.sessions {
            if session.conn.is_none() {
                let live = self
                    .timers
                    .iter()
                    .filter(|d| d.id == *id && d.generation == session.timer_generation)
                    .count();
                ensure!(live == 1, "{id:?} in its window has {live} live deadlines");
            }
        }
        let bound = 2 * self.config.max_sessions + 33;
        ensure!(
            self.timers.len() <= bound,
            "{} timer entries",
            self.timers.len()
        );
        Ok(())
    }
}
