//! Which clusters have been unreachable, and since when: what failover
//! reads. The record is kept in the state folder between runs
//! ([`crate::state::health`]), because "down for longer than
//! `failover.after`" spans runs of a one-shot apply as much as rounds of
//! `watch`; asking clusters whether they answer is the run's job
//! ([`crate::ops::health`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::core::topology::Topology;

/// Clusters seen unreachable, by name, with the first time they were.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// RFC 3339 time each cluster was first found unreachable.
    #[serde(default)]
    pub unreachable_since: BTreeMap<String, String>,
}

impl Health {
    /// Records that `cluster` did not answer at `now` (the first time
    /// counts).
    pub fn unreachable(&mut self, cluster: &str, now: SystemTime) {
        self.unreachable_since
            .entry(cluster.to_string())
            .or_insert_with(|| humantime::format_rfc3339_seconds(now).to_string());
    }

    /// Records that `cluster` answered.
    pub fn reachable(&mut self, cluster: &str) {
        self.unreachable_since.remove(cluster);
    }

    /// How long `cluster` has been unreachable at `now`.
    pub fn down_for(&self, cluster: &str, now: SystemTime) -> Option<Duration> {
        let since = humantime::parse_rfc3339(self.unreachable_since.get(cluster)?).ok()?;
        Some(now.duration_since(since).unwrap_or_default())
    }

    /// Per cluster of `topo`: unreachable for at least `after` at `now`,
    /// so failed over.
    pub fn failed(&self, topo: &Topology, after: Duration, now: SystemTime) -> Vec<bool> {
        (0..topo.len())
            .map(|c| self.down_for(topo.name(c), now).is_some_and(|d| d >= after))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_long_enough_is_failed() {
        let topo = Topology::build(&[("a", None), ("b", Some("a")), ("c", Some("a"))]).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut h = Health::default();
        h.unreachable("b", t0);
        h.unreachable("b", t0 + Duration::from_secs(60));
        assert_eq!(
            h.down_for("b", t0 + Duration::from_secs(90)),
            Some(Duration::from_secs(90))
        );
        let after = Duration::from_secs(300);
        assert_eq!(
            h.failed(&topo, after, t0 + Duration::from_secs(299)),
            vec![false, false, false]
        );
        assert_eq!(
            h.failed(&topo, after, t0 + Duration::from_secs(300)),
            vec![false, true, false]
        );
        h.reachable("b");
        assert_eq!(
            h.failed(&topo, after, t0 + Duration::from_secs(900)),
            vec![false; 3]
        );
    }
}
