//! When memory the server freed goes back to the system.
//!
//! glibc's `free` hands the top of the heap back (`sbrk`) as soon as 128 KiB lie free there. A
//! busy loop turn frees every outbox it flushed (`outbox.rs`), and the next turn allocates them
//! again: with the default, each turn would shrink the heap and then fault the same pages back
//! in, zeroed by the kernel, a visible share of the cost of routing a message (BENCHMARKS.md).
//! So the threshold is raised once at start, and memory is handed back here instead, at moments
//! chosen to be cheap: when most connections have left, and when traffic pauses after a burst.

use std::time::{Duration, Instant};

/// Free memory at the top of the heap that `free` keeps rather than hand back at once.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: libc::c_int = 32 * 1024 * 1024;

/// A sweep period that forwarded fewer frames than this counts as quiet.
const QUIET_FRAMES: u64 = 1000;

/// Quiet periods trim at most this often, so a steady trickle of traffic never trims each second.
pub const QUIET_TRIM_EVERY: Duration = Duration::from_secs(10);

/// Sets the allocator's trim threshold; call once, before serving.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a parameter of glibc's allocator.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Hands the allocator's free pages back to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Decides, once per sweep, whether to hand freed memory back.
pub struct Trimmer {
    /// The most connections open since the last trim.
    peak_connections: usize,
    /// Frames forwarded when the previous sweep looked.
    frames_at_last_sweep: u64,
    /// Frames forwarded at the last trim: none since means nothing new to hand back.
    frames_at_last_trim: u64,
    last_trim: Instant,
}

impl Trimmer {
    pub fn new(now: Instant) -> Trimmer {
        Trimmer {
            peak_connections: 0,
            frames_at_last_sweep: 0,
            frames_at_last_trim: 0,
            // As if a trim had just aged out: the first quiet sweep after traffic may trim.
            last_trim: now.checked_sub(QUIET_TRIM_EVERY).unwrap_or(now),
        }
    }

    /// Whether to trim now, given the connections open and the frames forwarded so far.
    /// Trims after most connections have left (a server that once held 10,000 would otherwise
    /// stay at that size), or when traffic went quiet after a burst.
    pub fn should_trim(&mut self, open: usize, frames_out: u64, now: Instant) -> bool {
        self.peak_connections = self.peak_connections.max(open);
        let since_sweep = frames_out.saturating_sub(self.frames_at_last_sweep);
        self.frames_at_last_sweep = frames_out;
        let most_left = self.peak_connections >= 256 && open < self.peak_connections / 4;
        let quiet_after_traffic = since_sweep < QUIET_FRAMES
            && frames_out > self.frames_at_last_trim
            && now.saturating_duration_since(self.last_trim) >= QUIET_TRIM_EVERY;
        if !(most_left || quiet_after_traffic) {
            return false;
        }
        self.peak_connections = open;
        self.frames_at_last_trim = frames_out;
        self.last_trim = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_when_most_connections_left() {
        let start = Instant::now();
        let mut trimmer = Trimmer::new(start);
        assert!(!trimmer.should_trim(1000, 0, start));
        assert!(!trimmer.should_trim(300, 0, start));
        assert!(trimmer.should_trim(200, 0, start));
        // The peak is now 200: no second trim for the same departure.
        assert!(!trimmer.should_trim(200, 0, start));
    }

    #[test]
    fn trims_when_traffic_pauses_but_not_during_it_nor_twice_in_ten_seconds() {
        let start = Instant::now();
        let second = |n| start + Duration::from_secs(n);
        let mut trimmer = Trimmer::new(start);
        // Nothing forwarded yet: nothing to hand back.
        assert!(!trimmer.should_trim(10, 0, second(1)));
        // A burst: busy sweeps do not trim.
        assert!(!trimmer.should_trim(10, 50_000, second(11)));
        assert!(!trimmer.should_trim(10, 100_000, second(12)));
        // It stops: the quiet sweep trims.
        assert!(trimmer.should_trim(10, 100_010, second(13)));
        // Quiet, but nothing forwarded since: nothing to hand back.
        assert!(!trimmer.should_trim(10, 100_010, second(14)));
        assert!(!trimmer.should_trim(10, 100_010, second(25)));
        // A little traffic ten seconds after the last trim: trims again, but not the next second.
        assert!(trimmer.should_trim(10, 100_500, second(26)));
        assert!(!trimmer.should_trim(10, 100_600, second(27)));
    }
}
