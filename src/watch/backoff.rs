//! Per-cluster retry backoff (pure): a cluster that fails waits before it
//! is tried again, twice as long after each failure in a row, up to a cap,
//! and its failures never hold up any other cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The wait after `failures` failures in a row: 1 s, 2 s, 4 s, … capped.
pub fn delay(failures: u32, cap: Duration) -> Duration {
    let first = Duration::from_secs(1).min(cap);
    let shift = failures.saturating_sub(1).min(30);
    first.saturating_mul(1u32 << shift).min(cap)
}

/// Failing clusters and when each may be tried again.
#[derive(Debug, Default)]
pub struct Backoff {
    cap: Duration,
    /// cluster → (failures in a row, not before)
    failing: BTreeMap<String, (u32, Instant)>,
}

impl Backoff {
    pub fn new(cap: Duration) -> Backoff {
        Backoff {
            cap,
            failing: BTreeMap::new(),
        }
    }

    /// Records a failure at `now`; returns how long the cluster now waits.
    pub fn failed(&mut self, cluster: &str, now: Instant) -> Duration {
        let n = self.failing.get(cluster).map_or(0, |(n, _)| *n) + 1;
        let wait = delay(n, self.cap);
        self.failing.insert(cluster.to_string(), (n, now + wait));
        wait
    }

    /// The cluster succeeded: it starts afresh.
    pub fn succeeded(&mut self, cluster: &str) {
        self.failing.remove(cluster);
    }

    /// Whether the cluster must still wait at `now`.
    pub fn waiting(&self, cluster: &str, now: Instant) -> bool {
        self.failing
            .get(cluster)
            .is_some_and(|(_, until)| *until > now)
    }

    /// Whether some failing cluster's wait is over at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.failing.values().any(|(_, until)| *until <= now)
    }

    /// Failures in a row of the cluster.
    pub fn failures(&self, cluster: &str) -> u32 {
        self.failing.get(cluster).map_or(0, |(n, _)| *n)
    }

    /// The earliest moment a waiting cluster may be tried again.
    pub fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.failing
            .values()
            .map(|(_, until)| *until)
            .filter(|u| *u > now)
            .min()
    }

    /// Forgets clusters for which `keep` is false (they left the fleet).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.failing.retain(|c, _| keep(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|n| delay(n, cap).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(delay(1000, cap), cap);
        assert_eq!(
            delay(1, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn a_failing_cluster_waits_alone() {
        let now = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(60));
        assert_eq!(b.failed("a", now), Duration::from_secs(1));
        assert_eq!(b.failed("a", now), Duration::from_secs(2));
        assert!(b.waiting("a", now + Duration::from_secs(1)));
        assert!(!b.waiting("a", now + Duration::from_secs(2)));
        assert!(!b.waiting("b", now), "other clusters never wait");
        assert_eq!(b.next_retry(now), Some(now + Duration::from_secs(2)));
        assert_eq!(b.failures("a"), 2);
        assert!(!b.due(now + Duration::from_secs(1)));
        assert!(b.due(now + Duration::from_secs(2)));
        b.succeeded("a");
        assert_eq!(b.failures("a"), 0);
        assert_eq!(b.next_retry(now), None);
    }
}
