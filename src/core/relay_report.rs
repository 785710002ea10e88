//! What a relay reports up to its parent level, in its handoff's status.
//!
//! The report is bounded whatever the subtree's size (Open Cluster
//! Management and Fleet users meet status objects that outgrow etcd): counts
//! of clusters, per workload the desired and ready replicas summed over the
//! subtree, and the first [`MAX_FAILED`] failed clusters with a count of the
//! rest. A relay folds the reports of the relays below it into its own, so
//! the root reads one report per relay child and still sees every level.
//!
//! The revisions it names are the parent's acknowledgement: `observed` is
//! the handoff the relay read and accepted, `applied` the last one whose
//! every cluster was reconciled without failure. A handoff the relay
//! refused (a bad chunk, a slice that does not validate) is named in
//! `refused` while the relay keeps working from its last good one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::aggregate::Counts;

/// The most failed clusters a report names.
pub const MAX_FAILED: usize = 20;

/// A relay's report (the `status` of its `Handoff` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayReport {
    /// The handoff the relay works from: read, checked and accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Seen>,
    /// The last handoff every cluster of the subtree was reconciled from
    /// without failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Seen>,
    /// The chunk Secrets of the handoff it works from, which the level
    /// above keeps until the relay takes a newer one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
    /// The newest handoff, when the relay refused it and keeps working
    /// from its last good one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
    /// RFC 3339 time the round this reports on ended.
    #[serde(default)]
    pub at: String,
    /// Clusters of the subtree (the relay itself not counted).
    #[serde(default)]
    pub clusters: ClusterTally,
    /// Objects the round wrote (created, updated or deleted) over the
    /// subtree: drift it corrected, or a new handoff it applied.
    #[serde(default)]
    pub written: usize,
    /// The first failed or skipped clusters, in tree order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedCluster>,
    /// Per workload: desired and ready replicas summed over the subtree.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workloads: BTreeMap<String, Counts>,
    /// Per workload whose staged rollout a level above runs: the health of
    /// the clusters of the subtree it was applied to (not held back), the
    /// verdict that level's health gate takes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gates: BTreeMap<String, GateReport>,
    /// The clusters of the subtree whose Kubernetes version or APIs differ
    /// from what the handoff said, bounded: what the level above renders
    /// Helm charts for from its next round
    /// ([`crate::core::capabilities::differences`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::core::capabilities::Table>,
}

/// The health of a workload on the clusters of a subtree it was applied to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateReport {
    /// Clusters checked.
    pub checked: usize,
    /// Of those, not healthy (failed, skipped, or objects not healthy in
    /// the rollout's health timeout).
    pub unhealthy: usize,
    /// The first [`MAX_FAILED`] of them, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedCluster>,
}

impl GateReport {
    /// Adds one cluster's verdict.
    pub fn note(&mut self, cluster: &str, verdict: Result<(), String>) {
        self.checked += 1;
        if let Err(message) = verdict {
            self.unhealthy += 1;
            if self.failed.len() < MAX_FAILED {
                self.failed.push(FailedCluster {
                    cluster: cluster.to_string(),
                    outcome: "unhealthy".into(),
                    message,
                });
            }
        }
    }

    fn add(&mut self, o: &GateReport) {
        self.checked += o.checked;
        self.unhealthy += o.unhealthy;
        for f in &o.failed {
            if self.failed.len() < MAX_FAILED {
                self.failed.push(f.clone());
            }
        }
    }
}

/// A handoff by revision and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub revision: String,
    pub digest: String,
}

/// A handoff the relay would not take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    pub handoff: Seen,
    pub reason: String,
}

/// Clusters of a subtree by how their last reconcile went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTally {
    pub total: usize,
    /// Reconciled: written or found in sync.
    pub applied: usize,
    /// Found in sync (nothing written).
    pub in_sync: usize,
    /// Failed (unreachable included).
    pub failed: usize,
    /// Not reached: a parent failed, or the round was stopped.
    pub skipped: usize,
    /// Under a relay below that has not reported the revision yet.
    #[serde(default)]
    pub pending: usize,
}

impl std::ops::AddAssign for ClusterTally {
    fn add_assign(&mut self, o: ClusterTally) {
        self.total += o.total;
        self.applied += o.applied;
        self.in_sync += o.in_sync;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.pending += o.pending;
    }
}

/// One cluster that failed or was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedCluster {
    pub cluster: String,
    /// `failed` or `skipped`.
    pub outcome: String,
    pub message: String,
}

impl RelayReport {
    /// Adds a failed or skipped cluster, keeping at most [`MAX_FAILED`].
    /// The tally counts them all.
    pub fn note_failed(&mut self, f: FailedCluster) {
        if self.failed.len() < MAX_FAILED {
            self.failed.push(f);
        }
    }

    /// Folds in the report of a relay below: its clusters, failures and
    /// replicas become this subtree's. A report that is not of the revision
    /// this relay handed down counts its clusters as pending.
    pub fn fold(&mut self, below: &RelayReport, handed: &Seen) {
        let current =
            below.applied.as_ref() == Some(handed) || below.observed.as_ref() == Some(handed);
        if current {
            self.clusters += below.clusters;
            self.written += below.written;
            for f in &below.failed {
                self.note_failed(f.clone());
            }
        } else {
            self.clusters.total += below.clusters.total;
            self.clusters.pending += below.clusters.total;
        }
        for (w, n) in &below.workloads {
            *self.workloads.entry(w.clone()).or_default() += *n;
        }
        if current {
            for (w, g) in &below.gates {
                self.gates.entry(w.clone()).or_default().add(g);
            }
        }
    }

    /// Whether every cluster of the subtree is reconciled from `handoff`.
    pub fn applied(&self, handoff: &Seen) -> bool {
        self.applied.as_ref() == Some(handoff)
    }

    /// Failed and skipped clusters the report does not name.
    pub fn unnamed_failures(&self) -> usize {
        (self.clusters.failed + self.clusters.skipped).saturating_sub(self.failed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(r: &str) -> Seen {
        Seen {
            revision: r.into(),
            digest: format!("d-{r}"),
        }
    }

    fn failing(n: usize) -> RelayReport {
        let mut r = RelayReport {
            observed: Some(seen("b")),
            clusters: ClusterTally {
                total: n + 1,
                applied: 1,
                failed: n,
                ..ClusterTally::default()
            },
            ..RelayReport::default()
        };
        for i in 0..n {
            r.note_failed(FailedCluster {
                cluster: format!("c{i:02}"),
                outcome: "failed".into(),
                message: "unreachable".into(),
            });
        }
        r
    }

    #[test]
    fn failures_are_bounded_and_counted() {
        let r = failing(30);
        assert_eq!(r.failed.len(), MAX_FAILED);
        assert_eq!(r.failed[19].cluster, "c19");
        assert_eq!(r.unnamed_failures(), 10);
        // Round trip through the status as a parent reads it.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["clusters"]["failed"], 30);
        assert!(v.get("applied").is_none(), "{v}");
        let back: RelayReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_report_below_folds_in_when_it_is_of_the_handed_revision() {
        let mut top = RelayReport {
            clusters: ClusterTally {
                total: 2,
                applied: 2,
                in_sync: 1,
                ..ClusterTally::default()
            },
            ..RelayReport::default()
        };
        top.workloads.insert(
            "web".into(),
            Counts {
                desired: 2,
                ready: 2,
            },
        );
        let mut below = failing(25);
        below.workloads.insert(
            "web".into(),
            Counts {
                desired: 4,
                ready: 3,
            },
        );
        let mut stale = top.clone();
        stale.fold(&below, &seen("a"));
        assert_eq!(stale.clusters.total, 28);
        assert_eq!(stale.clusters.pending, 26, "not of revision a");
        assert!(stale.failed.is_empty());

        top.fold(&below, &seen("b"));
        assert_eq!(top.clusters.total, 28);
        assert_eq!(top.clusters.failed, 25);
        assert_eq!(top.clusters.pending, 0);
        assert_eq!(top.failed.len(), MAX_FAILED);
        assert_eq!(top.unnamed_failures(), 5);
        assert_eq!(
            top.workloads["web"],
            Counts {
                desired: 6,
                ready: 5
            }
        );
    }
}
