//! What one placement of a fleet computed that the placement of the next
//! revision takes over where its inputs did not change: each cluster's
//! template facts hash, and each workload's placement.
//!
//! A long-running process (`watch`, the relay agent) places revision after
//! revision of one fleet, and a commit usually touches a few documents.
//! The loader hands an unchanged file's documents over as they were parsed
//! ([`crate::core::load::keep_parsed`]), so a cluster whose document is the
//! very one of the last revision (the same `Arc<Source>`) has the same
//! name, parent, labels, values, taints and capacity; nothing after loading
//! changes those. Hence:
//! - a cluster's facts hash stands when its document and every ancestor's
//!   are the same ones (its path, depth and inherited values come from
//!   them);
//! - a workload's placement stands when every cluster is the same one, in
//!   the same place (so joined or not as before), the live capacities
//!   read are equal, and the workload's own document, replica total, failed-over
//!   clusters and calm record are too: those are all a placement reads.
//!
//! Validation takes over the tree, the label index and the capacities the
//! same way ([`crate::core::validate::check_after`]). Anything else is
//! computed afresh, and a property test holds a check and a placement that
//! carry equal to ones that do not, over random edit sequences.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::core::model::{Cluster, LiveCapacity, Source};
use crate::core::render::Renderer;
use crate::core::schedule::WorkloadPlacement;
use crate::core::validate::Checked;

/// What a placement of one revision leaves for the next.
pub struct Carry {
    /// The clusters, in the fleet's order: held, so that a document of the
    /// next revision at the same address is one of theirs.
    clusters: Vec<Arc<Cluster>>,
    /// By document address, the cluster's index: made when first needed
    /// (when clusters did not keep their places).
    index: OnceLock<foldhash::HashMap<usize, usize>>,
    parent: Vec<Option<usize>>,
    /// Each cluster's facts hash.
    facts: Vec<u64>,
    measured: Arc<BTreeMap<String, LiveCapacity>>,
    /// By workload name.
    placed: BTreeMap<String, Placed>,
}

/// One workload's placement and what it read of the workload.
struct Placed {
    source: Arc<Source>,
    total: Option<u32>,
    failed: Vec<bool>,
    previous: Option<BTreeMap<String, u32>>,
    placement: Arc<WorkloadPlacement>,
}

fn address(s: &Arc<Source>) -> usize {
    Arc::as_ptr(s) as usize
}

impl Carry {
    /// What `r` computed (`failed`: the failed-over clusters it was made
    /// with, per workload).
    pub fn of(r: &Renderer<'_>, failed: &[Vec<bool>]) -> Carry {
        let checked = r.checked;
        let topo = &checked.topo;
        let previous = checked.previous.all();
        let placed = r
            .placements
            .iter()
            .enumerate()
            .filter_map(|(wi, p)| {
                let w = &checked.fleet.workloads[wi];
                Some((
                    w.name().to_string(),
                    Placed {
                        source: w.source.clone(),
                        total: checked.facts[wi].total,
                        failed: failed.get(wi).cloned().unwrap_or_default(),
                        previous: previous.get(w.name()).cloned(),
                        placement: p.clone()?,
                    },
                ))
            })
            .collect();
        Carry {
            clusters: checked.fleet.clusters.clone(),
            index: OnceLock::new(),
            parent: (0..topo.len()).map(|c| topo.parent(c)).collect(),
            facts: crate::core::render::cluster_facts(checked).hash.clone(),
            measured: checked.measured.all(),
            placed,
        }
    }

    /// Where cluster `c` of `checked` was, if its document is the same one.
    fn was(&self, checked: &Checked, c: usize) -> Option<usize> {
        let s = &checked.cluster(c).source;
        if self
            .clusters
            .get(c)
            .is_some_and(|t| Arc::ptr_eq(s, &t.source))
        {
            return Some(c);
        }
        self.index
            .get_or_init(|| {
                self.clusters
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (address(&t.source), i))
                    .collect()
            })
            .get(&address(s))
            .copied()
    }

    /// Per cluster of `checked`, its facts hash when it stands (see the
    /// module's doc), to seed [`crate::core::render::seed_cluster_facts`].
    pub fn facts(&self, checked: &Checked) -> Vec<Option<u64>> {
        let topo = &checked.topo;
        let mut at: Vec<Option<usize>> = vec![None; topo.len()];
        for &c in topo.preorder() {
            at[c] = self
                .was(checked, c)
                .filter(|&pc| match (topo.parent(c), self.parent[pc]) {
                    (None, None) => true,
                    (Some(p), Some(pp)) => at[p] == Some(pp),
                    _ => false,
                });
        }
        at.into_iter()
            .map(|pc| pc.map(|pc| self.facts[pc]))
            .collect()
    }

    /// Whether every cluster of `checked` is the one it was, in its place
    /// ([`crate::core::validate::same_clusters`]), with the live capacities
    /// the division reads beside the documents unchanged.
    pub fn same_clusters(&self, checked: &Checked) -> bool {
        crate::core::validate::same_clusters(&self.clusters, &checked.fleet.clusters)
            && *self.measured == *checked.measured.all()
    }

    /// Workload `wi`'s placement, when its inputs are those it was made
    /// with (`same_clusters` already said of the clusters).
    pub fn placement(
        &self,
        checked: &Checked,
        wi: usize,
        failed: &[bool],
    ) -> Option<Arc<WorkloadPlacement>> {
        let w = &checked.fleet.workloads[wi];
        let p = self.placed.get(w.name())?;
        (Arc::ptr_eq(&p.source, &w.source)
            && p.total == checked.facts[wi].total
            && p.failed == failed
            && p.previous.as_ref() == checked.previous.all().get(w.name()))
        .then(|| p.placement.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Files = BTreeMap<String, Vec<u8>>;
    type Kept = Option<crate::core::load::Parsed>;

    /// The synthetic fleet's files: 250 clusters in three files, eight
    /// workloads.
    fn synthetic() -> Files {
        let d = tempfile::tempdir().unwrap();
        crate::core::synth::generate(
            d.path(),
            crate::core::synth::Spec {
                clusters: 250,
                workloads: 8,
            },
        )
        .unwrap();
        walkdir::WalkDir::new(d.path())
            .into_iter()
            .map(Result::unwrap)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let rel = e.path().strip_prefix(d.path()).unwrap();
                (
                    rel.to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    /// Replaces the `k`th (mod their count) occurrence of `a` in `file` by
    /// `b`, or of `b` by `a` when `a` is not there.
    fn toggle(files: &mut Files, file: &str, (a, b): (&str, &str), k: usize) {
        let text = String::from_utf8(files[file].clone()).unwrap();
        let (from, to) = if text.contains(a) { (a, b) } else { (b, a) };
        let at: Vec<usize> = text.match_indices(from).map(|(i, _)| i).collect();
        if at.is_empty() {
            return;
        }
        let i = at[k % at.len()];
        let edited = format!("{}{to}{}", &text[..i], &text[i + from.len()..]);
        files.insert(file.to_string(), edited.into_bytes());
    }

    const TOTAL: (&str, &str) = ("total: 5000", "total: 4000");
    const ENV: (&str, &str) = ("env: prod", "env: staging");

    /// Every cluster name of the synthetic fleet's files.
    fn names(files: &Files) -> Vec<String> {
        files
            .iter()
            .filter(|(p, _)| p.starts_with("clusters/clusters-"))
            .flat_map(|(_, t)| {
                String::from_utf8_lossy(t)
                    .lines()
                    .filter_map(|l| l.strip_prefix("  name: ").map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Loads and checks `files` after `prev` (the last revision checked).
    fn load(files: &Files, kept: Kept, prev: Option<&Checked>) -> (Checked, Kept) {
        let all = files.iter().map(|(p, b)| (p.clone(), b.clone())).collect();
        let (fleet, d, next) = crate::core::load::load_files_keeping("f".into(), all, kept);
        assert!(!d.has_errors(), "{d:?}");
        let (checked, d) = crate::core::validate::check_after(fleet, prev);
        (checked.unwrap_or_else(|| panic!("{d:?}")), next)
    }

    /// What validation made of the clusters, to compare.
    fn tree_of(c: &Checked) -> Vec<(String, Option<usize>, usize, bool, String)> {
        let t = &c.topo;
        (0..t.len())
            .map(|i| {
                (
                    t.name(i).to_string(),
                    t.parent(i),
                    t.depth(i),
                    t.is_joined(i),
                    format!("{:?}", c.capacity_values(i)),
                )
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Over random edit sequences (a workload's total or replicas, a
        /// cluster added or removed, a label, a region's values, the
        /// clusters failed over, nothing), a check and a placement that
        /// take over what the last ones made give exactly what they give
        /// from scratch: the tree, the label index, the capacities, every
        /// fingerprint, facts hash and placement.
        #[test]
        fn a_placement_that_carries_equals_one_from_scratch(
            edits in proptest::collection::vec((0u8..8, 0usize..1000, any::<bool>()), 1..12),
        ) {
            let mut files = synthetic();
            let mut extras: Vec<(String, String)> = Vec::new();
            let mut failed: Vec<Vec<bool>> = Vec::new();
            let mut kept = Some(crate::core::load::Parsed::new());
            let mut carry: Option<Carry> = None;
            let mut last: Option<Checked> = None;
            for (step, (kind, k, flag)) in edits.into_iter().enumerate() {
                match kind {
                    0 => toggle(&mut files, "workloads/w02/workload.yaml", TOTAL, 0),
                    1 => toggle(&mut files, "workloads/w01/app.yaml", ("replicas: 3000", "replicas: 2900"), 0),
                    2 | 3 => {
                        if kind == 2 || extras.is_empty() {
                            let all = names(&files);
                            extras.push((format!("extra-{step}"), all[k % all.len()].clone()));
                        } else {
                            extras.remove(k % extras.len());
                        }
                        let text: String = extras
                            .iter()
                            .map(|(n, p)| format!("---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {n}\n  labels: {{tier: edge, provider: aws, env: prod, region: r1}}\nspec:\n  parent: {p}\n  capacity: {{cpu: \"8\", memory: 32Gi, pods: \"80\"}}\n"))
                            .collect();
                        files.insert("clusters/extra.yaml".into(), text.into_bytes());
                    }
                    4 => toggle(&mut files, "clusters/clusters-0001.yaml", ENV, k),
                    5 => toggle(&mut files, "clusters/clusters-0000.yaml", ("logLevel: info", "logLevel: debug"), k),
                    6 => {
                        let n = names(&files).len() + extras.len();
                        failed = (0..8)
                            .map(|wi| (0..n).map(|c| flag && (c * 7 + wi + k) % 11 == 0).collect())
                            .collect();
                    }
                    _ => {}
                }
                let (full, _) = load(&files, None, None);
                let (inc, next) = load(&files, kept.take(), last.as_ref());
                kept = next;
                prop_assert_eq!(tree_of(&inc), tree_of(&full));
                prop_assert!(*inc.labels == *full.labels);
                // A failed-over row is per cluster index: fit it to the
                // fleet as it is now.
                let rows: Vec<Vec<bool>> = failed
                    .iter()
                    .map(|r| (0..full.topo.len()).map(|c| r.get(c).copied().unwrap_or(false)).collect())
                    .collect();
                let want = Renderer::with_failover(&full, &rows);
                let got = Renderer::carrying(&inc, &rows, carry.as_ref());
                prop_assert_eq!(got.fingerprints(), want.fingerprints());
                prop_assert_eq!(
                    &crate::core::render::cluster_facts(&inc).hash,
                    &crate::core::render::cluster_facts(&full).hash
                );
                for (wi, (a, b)) in got.placements.iter().zip(&want.placements).enumerate() {
                    prop_assert_eq!(a.as_deref(), b.as_deref(), "workload {}", wi);
                }
                carry = Some(Carry::of(&got, &rows));
                drop(got);
                last = Some(inc);
            }
        }
    }

    /// A fixed sequence: a workload's total, then a label, then nothing.
    /// The first keeps the tree, every cluster's facts and the other
    /// workloads' placements; the label keeps the facts of the clusters of
    /// the other files, no tree and no placement (a label can move any
    /// division); nothing keeps all.
    #[test]
    fn what_is_taken_over_follows_what_changed() {
        let mut files = synthetic();
        let (first, mut kept) = load(&files, Some(crate::core::load::Parsed::new()), None);
        let mut carry = Carry::of(&Renderer::new(&first), &[]);
        let n = first.topo.len();
        let mut last = first;
        let mut step = |files: &Files| {
            let (c, next) = load(files, kept.take(), Some(&last));
            kept = next;
            let tree_kept = Arc::ptr_eq(&c.topo, &last.topo);
            let facts = carry.facts(&c).iter().flatten().count();
            let r = Renderer::carrying(&c, &[], Some(&carry));
            let taken = r
                .placements
                .iter()
                .flatten()
                .filter(|p| carry.placed.values().any(|q| Arc::ptr_eq(&q.placement, p)))
                .count();
            carry = Carry::of(&r, &[]);
            drop(r);
            last = c;
            (tree_kept, facts, taken)
        };
        toggle(&mut files, "workloads/w02/workload.yaml", TOTAL, 0);
        assert_eq!(step(&files), (true, n, 7));
        toggle(&mut files, "clusters/clusters-0001.yaml", ENV, 3);
        let (tree_kept, facts, taken) = step(&files);
        assert!(!tree_kept);
        assert_eq!(taken, 0);
        assert!(facts > 0 && facts <= n - 100, "{facts} of {n}");
        assert_eq!(step(&files), (true, n, 8));
    }
}
