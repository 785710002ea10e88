//! Live capacity: before a run places its workloads, it asks each cluster
//! that wants it (`liveCapacity`) and that this level reconciles what it
//! can still hold, records the answers in the state folder
//! (`capacity.json`) and gives them to the division. A cluster that does
//! not answer keeps the value last read (or its `spec.capacity` until
//! one is); the reads run in parallel, each bounded by the backend's
//! request timeout.

use crate::state::Record;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::fleet::Backends;
use crate::core::model::LiveCapacity;
use crate::core::validate::Checked;
use crate::state::capacity::CapacityRecord;

/// Reads at once at most.
const PARALLEL_READS: usize = 16;

/// Reads the live capacity of the clusters of `checked` that want it and
/// that `level` reconciles (`None`: the root process), records it in
/// `state` when `write`, and sets it on `checked` for the division.
pub fn measure(
    checked: &Checked,
    level: Option<usize>,
    backends: &dyn Backends,
    state: &Path,
    write: bool,
) {
    let by = crate::core::relay::reconcilers(checked);
    let wanted: Vec<&str> = (0..checked.topo.len())
        .filter(|&c| checked.cluster(c).spec.live_capacity && by[c] == level)
        .map(|c| checked.cluster(c).name())
        .collect();
    let mut record = recorded(state);
    if !wanted.is_empty() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let read = crate::sys::parallel::map(&wanted, PARALLEL_READS, |&name| {
            (name, backends.backend(name).free_capacity())
        });
        for (name, got) in read {
            match got {
                Ok(Some(capacity)) => {
                    record.clusters.insert(
                        name.to_string(),
                        LiveCapacity {
                            capacity,
                            read_at: now,
                        },
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    cluster = name,
                    error = %e,
                    "cannot read the cluster's live capacity; dividing by the value last read"
                ),
            }
        }
        // Clusters that left the fleet are forgotten.
        record.clusters.retain(|c, _| checked.topo.get(c).is_some());
        if write {
            if let Err(e) = record.save(state) {
                tracing::warn!(error = %e, "cannot record the live capacity read");
            }
        }
    }
    use_recorded(checked, record);
}

/// The live capacity recorded in `state`; an unreadable record is warned
/// about and counts as none.
fn recorded(state: &Path) -> CapacityRecord {
    CapacityRecord::load_or_warn(state, "reading afresh")
}

/// Gives `checked` the live capacity last recorded in `state` (what a
/// command that does not read clusters divides by: `render`, `explain`,
/// `tree`).
pub fn from_record(checked: &Checked, state: &Path) {
    if (0..checked.topo.len()).any(|c| checked.cluster(c).spec.live_capacity) {
        use_recorded(checked, recorded(state));
    }
}

fn use_recorded(checked: &Checked, record: CapacityRecord) {
    let live: BTreeMap<String, LiveCapacity> = record
        .clusters
        .into_iter()
        .filter(|(c, _)| {
            checked
                .topo
                .get(c)
                .is_some_and(|i| checked.cluster(i).spec.live_capacity)
        })
        .collect();
    checked.measured.set(live);
}
