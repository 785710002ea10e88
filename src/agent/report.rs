//! A relay's report on one round, from the run it made: bounded counts,
//! the first failures, replicas per workload, with the reports of the
//! relays below folded in.

use crate::backend::fleet::Backends;
use crate::core::relay_report::{FailedCluster, RelayReport, Seen};
use crate::ops::apply::Outcome;
use crate::ops::relays::RelayOutcome;
use crate::ops::run::Run;

/// The report of a round that reconciled from the handoff at `seen`.
/// `applied` names it only when every cluster of the subtree, below relays
/// included, was reconciled from it without failure.
pub fn of_run(run: &Run<'_>, backends: &dyn Backends, seen: &Seen) -> RelayReport {
    let mut rep = RelayReport {
        observed: Some(seen.clone()),
        ..RelayReport::default()
    };
    for c in &run.report.clusters {
        rep.clusters.total += 1;
        let (outcome, message) = match &c.outcome {
            Outcome::Changed(_) => {
                rep.clusters.applied += 1;
                continue;
            }
            Outcome::Unchanged(_) => {
                rep.clusters.applied += 1;
                rep.clusters.in_sync += 1;
                continue;
            }
            Outcome::Failed { error, .. } => {
                rep.clusters.failed += 1;
                ("failed", error.summary())
            }
            Outcome::Skipped { reason } => {
                rep.clusters.skipped += 1;
                ("skipped", reason.to_string())
            }
        };
        rep.note_failed(FailedCluster {
            cluster: c.cluster.clone(),
            outcome: outcome.into(),
            message,
        });
    }
    for w in crate::ops::status::workloads(&run.placed.renderer, &run.desired, backends) {
        *rep.workloads.entry(w.workload).or_default() += w.total;
    }
    for r in &run.relays {
        let silent = |rep: &mut RelayReport, outcome: &str, message: String| {
            rep.clusters.total += r.below;
            rep.clusters.pending += r.below;
            rep.note_failed(FailedCluster {
                cluster: r.relay.clone(),
                outcome: outcome.into(),
                message,
            });
        };
        match &r.outcome {
            RelayOutcome::Reported(below) => rep.fold(below, &r.handed),
            RelayOutcome::Refused(why) => silent(&mut rep, "refused", why.clone()),
            RelayOutcome::Waiting { waited, .. } => silent(
                &mut rep,
                "pending",
                format!(
                    "no report on revision {} after {}",
                    r.handed.revision,
                    humantime::format_duration(std::time::Duration::from_secs(waited.as_secs()))
                ),
            ),
            RelayOutcome::Unreadable(e) => silent(&mut rep, "unreadable", e.clone()),
        }
    }
    let c = rep.clusters;
    if !run.failed() && c.failed + c.skipped + c.pending == 0 {
        rep.applied = Some(seen.clone());
    }
    rep
}
