//! A relay's report on one round, from the run it made: bounded counts,
//! the first failures, replicas per workload, with the reports of the
//! relays below folded in.

use rayon::prelude::*;

use crate::backend::fleet::Backends;
use crate::core::relay::Above;
use crate::core::relay_report::{FailedCluster, GateReport, RelayReport, Seen};
use crate::ops::apply::Outcome;
use crate::ops::relays::RelayOutcome;
use crate::ops::run::Run;

/// The report of a round that reconciled from the handoff at `seen`.
/// `applied` names it only when every cluster of the subtree, below relays
/// included, was reconciled from it without failure.
pub fn of_run(run: &Run<'_>, backends: &dyn Backends, seen: &Seen, above: &Above) -> RelayReport {
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
    let reports = crate::ops::status::relay_reports(&run.placed.renderer, &run.desired, backends);
    for w in crate::ops::status::workloads(&run.placed.renderer, &run.desired, backends, &reports) {
        *rep.workloads.entry(w.workload).or_default() += w.total;
    }
    rep.gates = gates(run, backends, above);
    let t = run.report.totals();
    rep.written = t.created + t.updated + t.deleted;
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
            RelayOutcome::Silent { .. } => silent(
                &mut rep,
                "pending",
                format!(
                    "no agent holds its Lease, so nothing takes revision {}",
                    r.handed.revision
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

/// The gate verdicts of the rollouts a level above runs (`above`): per
/// such workload, each cluster of this run that holds it and does not
/// hold it back is healthy within the rollout's health timeout, or not.
fn gates(
    run: &Run<'_>,
    backends: &dyn Backends,
    above: &Above,
) -> std::collections::BTreeMap<String, GateReport> {
    let r = &run.placed.renderer;
    let checked = r.checked;
    let fleet = &checked.fleet;
    let mut out = std::collections::BTreeMap::new();
    for (wi, w) in fleet.workloads.iter().enumerate() {
        if !above.rolled.contains(w.name()) {
            continue;
        }
        let timeout = fleet
            .rollout_of(w)
            .map(|ro| ro.health_timeout())
            .unwrap_or_default();
        let verdicts: Vec<(String, Result<(), String>)> = run
            .report
            .clusters
            .par_iter()
            .filter(|c| {
                !above
                    .held
                    .get(&c.cluster)
                    .is_some_and(|ws| ws.contains(w.name()))
            })
            .filter_map(|c| {
                let i = checked.topo.get(&c.cluster)?;
                let objects: Vec<serde_json::Value> = run
                    .desired
                    .objects(i)
                    .filter(|(owner, _, _)| *owner == Some(wi))
                    .map(|(_, _, v)| v)
                    .collect();
                if objects.is_empty() {
                    return None;
                }
                let verdict = match &c.outcome {
                    Outcome::Failed { error, .. } => Err(error.summary()),
                    Outcome::Skipped { reason } => Err(format!("skipped: {reason}")),
                    Outcome::Changed(_) | Outcome::Unchanged(_) => {
                        let refs: Vec<&serde_json::Value> = objects.iter().collect();
                        backends
                            .backend(&c.cluster)
                            .wait_healthy(&refs, timeout, &r.checked.health)
                            .map_err(|e| e.summary())
                    }
                };
                Some((c.cluster.clone(), verdict))
            })
            .collect();
        let mut g = GateReport::default();
        for (c, v) in verdicts {
            g.note(&c, v);
        }
        out.insert(w.name().to_string(), g);
    }
    out
}
