//! Which clusters have been unreachable, and since when: what failover
//! reads. Kept in the state folder (`health.json`) between runs, because
//! "down for longer than `failover.after`" spans runs of a one-shot apply as
//! much as rounds of `watch`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::topology::Topology;

/// Clusters seen unreachable, by name, with the first time they were.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Health {
    /// RFC 3339 time each cluster was first found unreachable.
    #[serde(default)]
    pub unreachable_since: BTreeMap<String, String>,
}

const FILE: &str = "health.json";

impl Health {
    /// Reads `health.json` from the state folder (none yet: nobody is down).
    pub fn load(dir: &Path) -> Result<Health, BackendError> {
        crate::statefile::load(dir, FILE)
    }

    /// Replaces `health.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), BackendError> {
        crate::statefile::save(dir, FILE, self)
    }

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

/// Before a run: asks every cluster recorded down whether it answers now;
/// one that does is healthy again, so its replicas move back in this very
/// run (and nothing of it is pruned for having been failed over).
pub fn recheck(health: &mut Health, backends: &dyn crate::apply::Backends) {
    let down: Vec<String> = health.unreachable_since.keys().cloned().collect();
    for cluster in down {
        let b = backends.backend(&cluster);
        if b.reachable().is_ok() && b.not_ready().is_none() {
            health.reachable(&cluster);
        }
    }
}

/// After a run: a cluster that was reconciled answered, and is healthy
/// unless it has no Ready node; one that failed is asked once more, and
/// recorded down (from `now`, if not already) when it does not answer.
/// Clusters that left the fleet are forgotten.
pub fn record(
    health: &mut Health,
    report: &crate::apply::Report,
    topo: &Topology,
    backends: &dyn crate::apply::Backends,
    now: SystemTime,
) {
    use crate::apply::Outcome;
    for cr in &report.clusters {
        match &cr.outcome {
            Outcome::Changed(_) | Outcome::Unchanged(_) => {
                match backends.backend(&cr.cluster).not_ready() {
                    Some(_) => health.unreachable(&cr.cluster, now),
                    None => health.reachable(&cr.cluster),
                }
            }
            Outcome::Failed { .. } => match backends.backend(&cr.cluster).reachable() {
                Err(BackendError::Unreachable { .. }) => health.unreachable(&cr.cluster, now),
                Ok(()) => health.reachable(&cr.cluster),
                Err(_) => {}
            },
            Outcome::Skipped { .. } => {}
        }
    }
    health
        .unreachable_since
        .retain(|c, _| topo.get(c).is_some());
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

    #[test]
    fn saved_and_loaded_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Health::load(dir.path()).unwrap(), Health::default());
        let mut h = Health::default();
        h.unreachable("eu-west-1", SystemTime::now());
        h.save(dir.path()).unwrap();
        assert_eq!(Health::load(dir.path()).unwrap(), h);
        std::fs::write(dir.path().join("health.json"), "{").unwrap();
        assert!(Health::load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("health.json is corrupt"));
    }
}
