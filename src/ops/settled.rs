//! Clusters found in sync before, and unchanged since, are neither rendered
//! nor read again by a one-shot `apply` or `diff` (see
//! [`crate::state::settled`] for the record and why it is sound).
//!
//! This is Argo CD's manifest cache and Git's index put together: the render
//! is keyed by what it reads (the cluster's render fingerprint, which `watch`
//! already trusts within one process), by the canopy build (a new build may
//! render differently) and by the prune setting (a run that prunes must see
//! the objects a run that did not left behind); the state file is checked by
//! the hash of its bytes, read whole. A cluster qualifies only when nothing
//! else decides its objects: it is no relay (a handoff carries its
//! subtree), no rollout is moving (stages hold workloads back per cluster),
//! the run waits for no health (that reads the objects), and it runs in
//! the root process (a relay agent's fleet is handed to it whole).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::apply::{Outcome, Report};
use crate::backend::fleet::Backends;
use crate::core::diff::ClusterChanges;
use crate::core::hash::StableHasher;
use crate::core::render::Renderer;
use crate::state::settled::{Entry, Settled};
use crate::state::Record;

/// A cluster taken into a run unrendered: its state's hash and its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InSync {
    pub state: u64,
    pub objects: usize,
}

impl InSync {
    /// What a diff of the cluster would have reported: every object
    /// unchanged.
    pub fn outcome(&self) -> Outcome {
        Outcome::Unchanged(ClusterChanges {
            unchanged: self.objects,
            ..ClusterChanges::default()
        })
    }
}

/// The running build: its version and its executable's path, size and
/// modification time, so that a rebuilt or upgraded canopy renders every
/// cluster once before it trusts an entry. Hashing the executable itself
/// would be stronger and costs a read of its 100-odd MB on every run.
fn build() -> u64 {
    static BUILD: OnceLock<u64> = OnceLock::new();
    *BUILD.get_or_init(|| {
        let mut h = StableHasher::new();
        h.str(env!("CARGO_PKG_VERSION"));
        match std::env::current_exe().and_then(|p| Ok((std::fs::metadata(&p)?, p))) {
            Ok((m, p)) => {
                let at = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .unwrap_or_default();
                h.str(&p.to_string_lossy())
                    .u64(m.len())
                    .u64(at.as_secs())
                    .u64(u64::from(at.subsec_nanos()));
            }
            // An executable that cannot be looked at matches no entry of
            // an earlier run: every cluster is rendered.
            Err(_) => {
                h.u64(u64::from(std::process::id()));
            }
        }
        h.finish()
    })
}

/// Per cluster, the key an entry must carry to stand for its render.
pub fn keys(r: &Renderer<'_>, prune: bool) -> Vec<u64> {
    let build = build();
    r.fingerprints()
        .into_iter()
        .map(|f| {
            StableHasher::new()
                .u64(build)
                .u64(f)
                .u64(u64::from(prune))
                .finish()
        })
        .collect()
}

/// Whether cluster `c` can be settled at all (see the module's doc for
/// the run-wide conditions).
fn eligible(r: &Renderer<'_>, c: usize) -> bool {
    r.checked.cluster(c).spec.relay.is_none()
}

/// The clusters of `targets` (`None`: every cluster) whose entry in
/// `record` carries their key and whose state still hashes as it did.
/// Each candidate's state file is read once, to hash it.
pub fn find(
    record: &Settled,
    r: &Renderer<'_>,
    backends: &dyn Backends,
    targets: Option<&BTreeSet<usize>>,
    keys: &[u64],
) -> BTreeMap<usize, InSync> {
    let topo = &r.checked.topo;
    // Only a cluster whose entry carries its key has its file read.
    let candidates: Vec<usize> = (0..topo.len())
        .filter(|&c| targets.is_none_or(|t| t.contains(&c)) && eligible(r, c))
        .filter(|&c| {
            record
                .clusters
                .get(topo.name(c))
                .is_some_and(|e| e.key == keys[c])
        })
        .collect();
    candidates
        .into_par_iter()
        .filter_map(|c| {
            let name = topo.name(c);
            let state = backends.backend(name).version()?;
            let e = record.holds(name, keys[c], state)?;
            Some((
                c,
                InSync {
                    state,
                    objects: e.objects,
                },
            ))
        })
        .collect()
}

/// Brings `record` up to what a run that wrote found: an entry for each
/// cluster it wrote or found in sync with nothing kept beside its desired
/// objects, none for one that failed, was skipped or left the fleet.
/// Returns whether anything changed.
pub fn update(record: &mut Settled, r: &Renderer<'_>, report: &Report, keys: &[u64]) -> bool {
    let topo = &r.checked.topo;
    let before = record.clusters.len();
    record.clusters.retain(|name, _| topo.get(name).is_some());
    let mut changed = record.clusters.len() != before;
    for cr in &report.clusters {
        let Some(c) = topo.get(&cr.cluster) else {
            continue;
        };
        let entry = match (&cr.outcome, cr.version) {
            (Outcome::Changed(ch) | Outcome::Unchanged(ch), Some(state))
                if ch.kept.is_empty() && ch.pending.is_empty() && eligible(r, c) =>
            {
                let (created, updated, _) = ch.counts();
                Some(Entry {
                    key: keys[c],
                    state,
                    objects: ch.unchanged + created + updated,
                })
            }
            _ => None,
        };
        let now = match entry {
            Some(e) => record.clusters.insert(cr.cluster.clone(), e) != Some(e),
            None => record.clusters.remove(&cr.cluster).is_some(),
        };
        changed |= now;
    }
    changed
}

/// Reads the record; one that cannot be read is warned about and started
/// afresh (it is a cache: the run renders every cluster).
pub fn load(state: &Path) -> Settled {
    Settled::load_or_warn(state, "every cluster is rendered and diffed")
}
