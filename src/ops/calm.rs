//! Calm rescheduling's memory: the replicas the last apply gave each
//! cluster of a workload with `rescheduling: Calm`, kept in the state
//! folder (`replicas.json`) and given to the next placement, which keeps
//! them and divides only the difference.

use crate::state::Record;
use std::path::Path;

use crate::core::model::{ReplicaMode, Rescheduling};
use crate::core::render::Renderer;
use crate::core::validate::Checked;
use crate::state::replicas::ReplicasRecord;

/// Whether workload `wi` of `checked` divides calmly.
fn calm(checked: &Checked, wi: usize) -> bool {
    let r = &checked.fleet.workloads[wi].spec.placement.replicas;
    r.mode == ReplicaMode::Divided && r.rescheduling == Rescheduling::Calm
}

/// Gives `checked` the replicas recorded in `state` for its calm
/// workloads; an unreadable record is warned about and counts as none
/// (the division is then fresh).
pub fn previous(checked: &Checked, state: &Path) {
    if !(0..checked.fleet.workloads.len()).any(|wi| calm(checked, wi)) {
        return;
    }
    let record = ReplicasRecord::load_or_warn(state, "calm workloads divide afresh");
    checked.previous.set(record.workloads);
}

/// Records what `r` gave each cluster of the calm workloads it placed
/// (the clusters this level divides: a relay's subtree, or all), for the
/// next run; other workloads' records are dropped, and so are workloads
/// that left.
pub fn record(r: &Renderer<'_>, state: &Path) {
    let checked = r.checked;
    let mut record = ReplicasRecord::load(state).unwrap_or_default();
    let before = record.clone();
    record.workloads.retain(|w, _| {
        checked
            .fleet
            .workloads
            .iter()
            .enumerate()
            .any(|(wi, x)| x.name() == w && calm(checked, wi))
    });
    for (wi, p) in r.placements.iter().enumerate() {
        let (true, Some(a)) = (
            calm(checked, wi),
            p.as_ref().and_then(|p| p.assignment.as_ref()),
        ) else {
            continue;
        };
        let by = record
            .workloads
            .entry(checked.fleet.workloads[wi].name().to_string())
            .or_default();
        by.clear();
        for (c, &n) in a.replicas.iter().enumerate() {
            if n > 0 {
                by.insert(checked.topo.name(c).to_string(), n);
            }
        }
    }
    if record != before {
        if let Err(e) = record.save(state) {
            tracing::warn!(error = %e, "cannot record the replicas applied; the next calm division may move more");
        }
    }
}
