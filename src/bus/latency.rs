//! Round trips of a link's commands, for `/metrics`: the last one, a smoothed mean, and a
//! fixed-bucket histogram for quantiles. Memory is constant however many replies arrive.

use std::time::Duration;

/// Buckets: `[0, 1 µs)`, then one per power of two of microseconds up to 2^25 µs (~33 s), then
/// everything longer. Quantiles are reported as the bucket's upper bound, so within a factor
/// of two, which is what a dashboard needs to tell 200 µs from 20 ms.
pub const BUCKETS: usize = 27;

/// The weight of the newest round trip in the smoothed mean (1/16: about the last 16 replies).
const EWMA_WEIGHT: f64 = 1.0 / 16.0;

/// Round trips of one link since it was made (over every connection it had).
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    last: Option<Duration>,
    /// Exponentially weighted mean in seconds; meaningful once `count > 0`.
    ewma_secs: f64,
    count: u64,
    sum: Duration,
    buckets: [u64; BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            last: None,
            ewma_secs: 0.0,
            count: 0,
            sum: Duration::ZERO,
            buckets: [0; BUCKETS],
        }
    }
}

impl Latency {
    pub fn record(&mut self, round_trip: Duration) {
        let secs = round_trip.as_secs_f64();
        self.ewma_secs = if self.count == 0 {
            secs
        } else {
            self.ewma_secs + EWMA_WEIGHT * (secs - self.ewma_secs)
        };
        self.last = Some(round_trip);
        self.count += 1;
        self.sum = self.sum.saturating_add(round_trip);
        let bucket = bucket_of(round_trip);
        if let Some(slot) = self.buckets.get_mut(bucket) {
            *slot += 1;
        }
    }

    /// The latest round trip, `None` before the first reply.
    pub fn last(&self) -> Option<Duration> {
        self.last
    }

    /// The smoothed mean of recent round trips, `None` before the first reply.
    pub fn recent_mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_secs_f64(self.ewma_secs.max(0.0)))
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of all round trips (Prometheus's `_sum`).
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// The upper bound of the bucket holding quantile `q` (0.5 for p50, 0.99 for p99) of all
    /// round trips so far; `None` before the first reply or for `q` outside 0..=1. The
    /// open-ended last bucket reports `Duration::MAX`.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(bucket));
            }
        }
        Some(Duration::MAX)
    }

    /// `(upper bound, cumulative count)` per bucket, as Prometheus histograms list them; the
    /// last bound is `Duration::MAX` (`+Inf`).
    pub fn cumulative_buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .scan(0u64, |seen, (bucket, &n)| {
                *seen += n;
                Some((upper_bound(bucket), *seen))
            })
    }
}

/// 0 below 1 µs; `k + 1` for `[2^k, 2^(k+1))` µs; the last bucket for the rest.
fn bucket_of(round_trip: Duration) -> usize {
    let micros = round_trip.as_micros();
    if micros == 0 {
        return 0;
    }
    let log2 = (u128::BITS - 1 - micros.leading_zeros()) as usize;
    (log2 + 1).min(BUCKETS - 1)
}

fn upper_bound(bucket: usize) -> Duration {
    if bucket + 1 >= BUCKETS {
        Duration::MAX
    } else {
        Duration::from_micros(1u64 << bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_buckets_within_a_factor_of_two() {
        let mut latency = Latency::default();
        assert_eq!(latency.quantile(0.5), None);
        for _ in 0..98 {
            latency.record(Duration::from_micros(300));
        }
        latency.record(Duration::from_millis(40));
        latency.record(Duration::from_secs(100));
        assert_eq!(latency.count(), 100);
        assert_eq!(latency.last(), Some(Duration::from_secs(100)));
        // 300 µs is in [256, 512) µs.
        assert_eq!(latency.quantile(0.5), Some(Duration::from_micros(512)));
        // The 99th is 40 ms, in [32.768, 65.536) ms.
        assert_eq!(latency.quantile(0.99), Some(Duration::from_micros(65_536)));
        assert_eq!(latency.quantile(1.0), Some(Duration::MAX));
        assert_eq!(latency.quantile(1.5), None);
        let buckets: Vec<_> = latency.cumulative_buckets().collect();
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets.last(), Some(&(Duration::MAX, 100)));
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0)
        );
    }

    #[test]
    fn the_recent_mean_follows_a_change() {
        let mut latency = Latency::default();
        latency.record(Duration::from_millis(10));
        assert_eq!(latency.recent_mean(), Some(Duration::from_millis(10)));
        for _ in 0..200 {
            latency.record(Duration::from_millis(1));
        }
        let mean = latency.recent_mean().unwrap();
        assert!(mean < Duration::from_micros(1_100), "{mean:?}");
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_micros(1)), 1);
        assert_eq!(bucket_of(Duration::from_secs(10_000)), BUCKETS - 1);
    }
}
