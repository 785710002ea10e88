//! Asking clusters whether they answer, around a run: what keeps the
//! failover record ([`Health`]) true.

use std::time::SystemTime;

use crate::backend::fleet::Backends;
use crate::backend::FailReason;
use crate::core::failover::Health;
use crate::core::topology::Topology;

/// Before a run: asks every cluster recorded down whether it answers now;
/// one that does is healthy again, so its replicas move back in this very
/// run (and nothing of it is pruned for having been failed over).
pub fn recheck(health: &mut Health, backends: &dyn Backends) {
    let down: Vec<String> = health.unreachable_since.keys().cloned().collect();
    for cluster in down {
        let b = backends.backend(&cluster);
        if b.reachable().is_ok() && b.not_ready().is_none() {
            health.reachable(&cluster);
        }
    }
}

/// After a run: a cluster that was reconciled answered, and is healthy
/// unless it has no Ready node; one that failed because it did not answer
/// is recorded down (from `now`, if not already), one that failed with an
/// answer is up. Clusters that left the fleet are forgotten.
pub fn record(
    health: &mut Health,
    report: &crate::ops::apply::Report,
    topo: &Topology,
    backends: &dyn Backends,
    now: SystemTime,
) {
    use crate::ops::apply::Outcome;
    for cr in &report.clusters {
        match &cr.outcome {
            Outcome::Changed(_) | Outcome::Unchanged(_) => {
                match backends.backend(&cr.cluster).not_ready() {
                    Some(_) => health.unreachable(&cr.cluster, now),
                    None => health.reachable(&cr.cluster),
                }
            }
            // The reason says whether the cluster answered: no need to
            // ask it again. One canopy cannot connect or log in to, or
            // whose own record is unusable, says nothing either way.
            Outcome::Failed { error, .. } => match error.reason() {
                FailReason::Unreachable => health.unreachable(&cr.cluster, now),
                FailReason::Connection | FailReason::Unauthorized | FailReason::State => {}
                _ => health.reachable(&cr.cluster),
            },
            Outcome::Skipped { .. } => {}
        }
    }
    health
        .unreachable_since
        .retain(|c, _| topo.get(c).is_some());
}
