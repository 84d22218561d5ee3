//! Resume-window deadlines: a min-heap with lazy deletion.
//!
//! Each time a session enters its window it gets a fresh generation number (never reused) and
//! one heap entry. Resuming does not search the heap: the session's generation changes, and the
//! old entry is recognised as stale when it reaches the top. `Router` pops stale entries off the
//! top after every change, so the top is always live and [`ResumeTimers::earliest`] is exact.
//!
//! Bound: [`ResumeTimers::needs_compaction`] asks for a rebuild when stale entries outnumber live
//! ones (plus slack), so the heap stays within `2 × sessions in the window + 32` entries; the
//! rebuild is O(n) once per that many pushes, O(1) amortized.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::id::Id;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    pub at_ms: u64,
    pub generation: u64,
    pub id: Id,
}

const COMPACTION_SLACK: usize = 32;

#[derive(Debug, Default)]
pub struct ResumeTimers {
    heap: BinaryHeap<Reverse<Deadline>>,
    next_generation: u64,
}

impl ResumeTimers {
    /// A generation number no earlier deadline had (0 is never handed out: it means "none").
    pub fn new_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    pub fn push(&mut self, deadline: Deadline) {
        self.heap.push(Reverse(deadline));
    }

    pub fn earliest(&self) -> Option<Deadline> {
        self.heap.peek().map(|Reverse(deadline)| *deadline)
    }

    /// Removes and returns the top entry if it is due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Deadline> {
        if self.earliest()?.at_ms > now_ms {
            return None;
        }
        self.heap.pop().map(|Reverse(deadline)| deadline)
    }

    /// Removes top entries while `is_live` says they are stale.
    pub fn drop_stale_top(&mut self, is_live: impl Fn(&Deadline) -> bool) {
        while let Some(top) = self.earliest() {
            if is_live(&top) {
                break;
            }
            self.heap.pop();
        }
    }

    pub fn needs_compaction(&self, live: usize) -> bool {
        self.heap.len() > 2 * live + COMPACTION_SLACK
    }

    /// Keeps only the entries `is_live` accepts.
    pub fn compact(&mut self, is_live: impl Fn(&Deadline) -> bool) {
        self.heap.retain(|Reverse(deadline)| is_live(deadline));
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Deadline> {
        self.heap.iter().map(|Reverse(deadline)| deadline)
    }
}
