//! Rate limits per session (token buckets) and the error-flood window per connection.

use std::collections::VecDeque;

/// A token bucket holding at most `rate` tokens and gaining `rate` tokens per `period_ms`.
///
/// Kept in integer units of `1 / period_ms` token, so refilling is exact with no floats: one
/// token is `period_ms` units and each millisecond adds `rate` units.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    units: u64,
    updated_ms: u64,
}

impl TokenBucket {
    /// A full bucket: a new session may use its whole burst at once.
    pub fn full(rate: u32, period_ms: u64, now_ms: u64) -> TokenBucket {
        TokenBucket {
            units: capacity(rate, period_ms),
            updated_ms: now_ms,
        }
    }

    /// What the bucket holds, as of `now_ms` (refilled up to then): for a session moving to
    /// another node, whose clock differs, so only the amount travels.
    pub fn units_at(&self, rate: u32, period_ms: u64, now_ms: u64) -> u64 {
        let refill = now_ms
            .saturating_sub(self.updated_ms)
            .saturating_mul(u64::from(rate));
        self.units
            .saturating_add(refill)
            .min(capacity(rate, period_ms))
    }

    /// A bucket holding `units` (as [`TokenBucket::units_at`] gave them) as of `now_ms`.
    pub fn holding(units: u64, rate: u32, period_ms: u64, now_ms: u64) -> TokenBucket {
        TokenBucket {
            units: units.min(capacity(rate, period_ms)),
            updated_ms: now_ms,
        }
    }

    /// Takes one token if there is one. `rate == 0` means unlimited.
    #[inline]
    pub fn try_take(&mut self, rate: u32, period_ms: u64, now_ms: u64) -> bool {
        self.try_take_many(1, rate, period_ms, now_ms)
    }

    /// Takes `tokens` tokens if there are that many, else none. `rate == 0` means unlimited;
    /// more tokens than the bucket holds are never there.
    pub fn try_take_many(&mut self, tokens: u32, rate: u32, period_ms: u64, now_ms: u64) -> bool {
        if rate == 0 {
            return true;
        }
        let cost = u64::from(tokens).saturating_mul(period_ms);
        let elapsed = now_ms.saturating_sub(self.updated_ms);
        let refill = elapsed.saturating_mul(u64::from(rate));
        self.units = self
            .units
            .saturating_add(refill)
            .min(capacity(rate, period_ms));
        self.updated_ms = self.updated_ms.max(now_ms);
        if self.units >= cost {
            self.units -= cost;
            true
        } else {
            false
        }
    }
}

fn capacity(rate: u32, period_ms: u64) -> u64 {
    u64::from(rate).saturating_mul(period_ms)
}

/// The ERROR that makes this many within [`FLOOD_WINDOW_MS`] closes the connection with 1008.
pub const FLOOD_ERRORS: usize = 101;
pub const FLOOD_WINDOW_MS: u64 = 60_000;

/// When the counted ERRORs of the last minute were sent on one connection.
///
/// Memory: nothing until the first ERROR; then at most `FLOOD_ERRORS` timestamps (the deque
/// never holds more, since the connection is closed when it would), about 1 KiB.
#[derive(Debug, Default)]
pub struct ErrorWindow {
    sent_ms: VecDeque<u64>,
}

impl ErrorWindow {
    /// Records one counted ERROR; true when it is the one that floods (close the connection).
    pub fn record(&mut self, now_ms: u64) -> bool {
        while let Some(&oldest) = self.sent_ms.front() {
            if now_ms.saturating_sub(oldest) < FLOOD_WINDOW_MS {
                break;
            }
            self.sent_ms.pop_front();
        }
        self.sent_ms.push_back(now_ms);
        if self.sent_ms.len() >= FLOOD_ERRORS {
            self.sent_ms.clear();
            return true;
        }
        false
    }

    pub fn len(&self) -> usize {
        self.sent_ms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let mut bucket = TokenBucket::full(5, 1000, 0);
        for _ in 0..5 {
            assert!(bucket.try_take(5, 1000, 0));
        }
        assert!(!bucket.try_take(5, 1000, 0));
        // 5 per second: one token every 200 ms.
        assert!(!bucket.try_take(5, 1000, 199));
        assert!(bucket.try_take(5, 1000, 200));
        assert!(!bucket.try_take(5, 1000, 399));
        assert!(bucket.try_take(5, 1000, 400));
        // A long pause refills only up to the burst.
        for _ in 0..5 {
            assert!(bucket.try_take(5, 1000, 100_000));
        }
        assert!(!bucket.try_take(5, 1000, 100_000));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut bucket = TokenBucket::full(0, 1000, 0);
        for _ in 0..10_000 {
            assert!(bucket.try_take(0, 1000, 0));
        }
    }

    #[test]
    fn per_minute_bucket() {
        let mut bucket = TokenBucket::full(2, 60_000, 1_000);
        assert!(bucket.try_take(2, 60_000, 1_000));
        assert!(bucket.try_take(2, 60_000, 1_000));
        assert!(!bucket.try_take(2, 60_000, 30_999));
        assert!(bucket.try_take(2, 60_000, 31_000));
    }

    #[test]
    fn a_clock_going_backwards_never_adds_tokens() {
        let mut bucket = TokenBucket::full(1, 1000, 10_000);
        assert!(bucket.try_take(1, 1000, 10_000));
        assert!(!bucket.try_take(1, 1000, 5_000));
        assert!(!bucket.try_take(1, 1000, 10_999));
        assert!(bucket.try_take(1, 1000, 11_000));
    }

    #[test]
    fn flood_is_exactly_the_101st_error_within_a_minute() {
        let mut window = ErrorWindow::default();
        for n in 0..100 {
            assert!(!window.record(n * 10), "error {n}");
        }
        assert!(window.record(59_999));
    }

    #[test]
    fn errors_older_than_a_minute_do_not_count() {
        let mut window = ErrorWindow::default();
        assert!(!window.record(0));
        for _ in 0..99 {
            assert!(!window.record(1_000));
        }
        // The first error is exactly 60 s old now: outside the window, so this is the 100th.
        assert!(!window.record(60_000));
        assert_eq!(window.len(), 100);
        assert!(window.record(60_001));
    }
}
