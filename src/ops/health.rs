//! Asking clusters whether they answer, around a run: what keeps the
//! failover record ([`Health`]) true.

use std::time::SystemTime;

use crate::backend::fleet::Backends;
use crate::backend::FailReason;
use crate::core::failover::Health;
use crate::core::topology::Topology;
use crate::core::validate::Checked;

/// Before a run: asks every cluster recorded down whether it answers now;
/// one that does is healthy again, so its replicas move back in this very
/// run (and nothing of it is pruned for having been failed over). Only
/// the clusters this level reaches (`mine`) are asked: those below a relay
/// are heard of through it ([`hear_relays`]).
pub fn recheck(health: &mut Health, backends: &dyn Backends, mine: impl Fn(&str) -> bool) {
    let down: Vec<String> = health
        .unreachable_since
        .keys()
        .filter(|c| mine(c))
        .cloned()
        .collect();
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

/// Before a run: what this level (`level`: `None` for the root process, or
/// a relay) hears from each relay it hands down to. While a relay's agent
/// renews its Lease, the clusters below it count as healthy here (failover
/// among them is the relay's own). Once the Lease has expired, or the relay
/// cannot be asked, or no agent ever held it, every cluster below the relay
/// counts as down since then, so that after a workload's `failover.after`
/// its Divided replicas move around the relay's subtree.
pub fn hear_relays(
    health: &mut Health,
    checked: &Checked,
    level: Option<usize>,
    backends: &dyn Backends,
    now: SystemTime,
) {
    let topo = &checked.topo;
    let by = crate::core::relay::reconcilers(checked);
    for relay in (0..topo.len()).filter(|&c| by[c] == level) {
        if checked.cluster(relay).spec.relay.is_none() {
            continue;
        }
        let lease = super::handoff::read_lease(backends.backend(topo.name(relay)).as_ref());
        let heard = lease.as_ref().and_then(crate::core::lease::held);
        let below = topo.subtree(relay).iter().filter(|&&c| c != relay);
        match heard {
            Some((_, until)) if until > now => {
                for &c in below {
                    health.reachable(topo.name(c));
                }
            }
            // Silent since its Lease expired; or never heard from.
            silent => {
                let since = silent.map_or(now, |(_, until)| until);
                for &c in below {
                    health.unreachable(topo.name(c), since);
                }
            }
        }
    }
}
