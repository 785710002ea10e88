//! One change shown once (pure): a fleet change usually lands the same
//! edit on many clusters, so a review groups the per-object changes whose
//! diff text is the same (after masking, with the cluster's own name in
//! canopy's `canopy.dev/cluster` label set aside, and hunk headers without
//! their line numbers) and says where each group
//! lands, by subtree where a whole subtree shares it. Per workload, a
//! summary counts the clusters that change, the kinds, the objects created,
//! updated and deleted, the replicas moved between clusters by the
//! division, and the clusters that join or leave the workload.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::core::diff::Change;
use crate::core::model::{ObjectKey, LABEL_WORKLOAD};
use crate::core::topology::Topology;

/// Where the cluster's own name stood in a grouped diff.
pub const CLUSTER_MARK: &str = "‹cluster›";

/// One cluster's changed objects, for grouping: the cluster's index in the
/// fleet (`None` for one that left it) and name.
pub struct ClusterChanges<'a> {
    pub index: Option<usize>,
    pub name: &'a str,
    pub changes: &'a [Change],
}

/// Where a group lands: whole subtrees (every cluster of it where the
/// object changes takes this very change), then single clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Place {
    Subtree { root: String, clusters: usize },
    Cluster { name: String },
}

/// Identical changes of one object on several clusters.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// `Kind.group namespace/name`.
    pub object: String,
    /// `create`, `update` or `delete`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// The clusters, in tree order (clusters that left the fleet last).
    pub clusters: Vec<String>,
    pub places: Vec<Place>,
    /// The unified diff, as every one of these clusters shows it (hunk
    /// headers without line numbers, the cluster's own name in canopy's
    /// cluster label as [`CLUSTER_MARK`]).
    pub diff: String,
    /// Other groups change the same object elsewhere (variants).
    pub variants: usize,
}

/// A workload's part of the change.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadSummary {
    pub workload: String,
    pub clusters: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub kinds: BTreeSet<String>,
    /// Replicas (of the objects with a `spec.replicas` that change) before
    /// and after, and how many moved: added where they grow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Replicas>,
    /// Clusters where the workload only gains objects (it arrives there).
    pub joins: usize,
    /// Clusters where it only loses objects (it leaves).
    pub leaves: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Replicas {
    pub before: u64,
    pub after: u64,
    pub added: u64,
}

/// The review of a change: per workload, then the groups.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Review {
    pub workloads: Vec<WorkloadSummary>,
    /// Largest first (by clusters), then by object, then in tree order.
    pub groups: Vec<Group>,
}

fn action(c: &Change) -> &'static str {
    match c {
        Change::Create { .. } => "create",
        Change::Update { .. } => "update",
        Change::Delete { .. } => "delete",
    }
}

fn workload_of(c: &Change) -> Option<String> {
    let v = match c {
        Change::Create { desired, .. } | Change::Update { desired, .. } => desired,
        Change::Delete { live, .. } => live,
    };
    v.pointer("/metadata/labels")
        .and_then(|l| l.get(LABEL_WORKLOAD))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn replicas(v: &Value) -> Option<u64> {
    v.pointer("/spec/replicas").and_then(Value::as_u64)
}

/// Groups `clusters`' changes; `diff` gives a change's text.
pub fn review(
    topo: &Topology,
    clusters: &[ClusterChanges<'_>],
    diff: impl Fn(&Change) -> String,
) -> Review {
    // By (object, text): the action, the workload and the clusters, in the
    // order given.
    type Seen = (&'static str, Option<String>, Vec<usize>);
    let mut by: BTreeMap<(ObjectKey, String), Seen> = BTreeMap::new();
    let mut summaries: BTreeMap<String, WorkloadSummary> = BTreeMap::new();
    for (ci, cc) in clusters.iter().enumerate() {
        let mut per_workload: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
        for c in cc.changes {
            let own = format!("canopy.dev/cluster: {}", cc.name);
            let text: String = diff(c)
                .lines()
                .map(|l| {
                    if l.get(1..).is_some_and(|rest| rest.trim_start() == own) {
                        // The line ends with the name.
                        format!("{}{CLUSTER_MARK}", &l[..l.len() - cc.name.len()])
                    } else if l.starts_with("@@ ") {
                        // Where a hunk starts moves with the lines above
                        // it (a label more on one cluster): the same edit.
                        "@@ … @@".to_string()
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            let w = workload_of(c);
            by.entry((c.key().clone(), text))
                .or_insert_with(|| (action(c), w.clone(), Vec::new()))
                .2
                .push(ci);
            if let Some(w) = w {
                let s = summaries
                    .entry(w.clone())
                    .or_insert_with(|| WorkloadSummary {
                        workload: w.clone(),
                        ..WorkloadSummary::default()
                    });
                s.kinds.insert(c.key().kind.clone());
                let n = per_workload.entry(w).or_default();
                match c {
                    Change::Create { desired, .. } => {
                        s.created += 1;
                        n.0 += 1;
                        if let Some(r) = replicas(desired) {
                            let x = s.replicas.get_or_insert_with(Replicas::default);
                            x.after += r;
                            x.added += r;
                        }
                    }
                    Change::Update {
                        live,
                        desired,
                        merged,
                        ..
                    } => {
                        s.updated += 1;
                        n.1 += 1;
                        let after = replicas(merged.as_ref().unwrap_or(desired));
                        if let (Some(b), Some(a)) = (replicas(live), after) {
                            if a != b {
                                let x = s.replicas.get_or_insert_with(Replicas::default);
                                x.before += b;
                                x.after += a;
                                x.added += a.saturating_sub(b);
                            }
                        }
                    }
                    Change::Delete { live, .. } => {
                        s.deleted += 1;
                        n.2 += 1;
                        if let Some(r) = replicas(live) {
                            s.replicas.get_or_insert_with(Replicas::default).before += r;
                        }
                    }
                }
            }
        }
        for (w, (c, u, d)) in per_workload {
            let s = summaries.get_mut(&w).expect("counted");
            s.clusters += 1;
            if c > 0 && u == 0 && d == 0 {
                s.joins += 1;
            }
            if d > 0 && c == 0 && u == 0 {
                s.leaves += 1;
            }
        }
    }
    // Per object: every cluster it changes on, for the subtree test.
    let mut everywhere: BTreeMap<&ObjectKey, BTreeSet<usize>> = BTreeMap::new();
    let mut variants: BTreeMap<&ObjectKey, usize> = BTreeMap::new();
    for ((key, _), (_, _, cs)) in &by {
        everywhere
            .entry(key)
            .or_default()
            .extend(cs.iter().copied());
        *variants.entry(key).or_default() += 1;
    }
    let mut firsts: Vec<usize> = Vec::new();
    let mut groups: Vec<Group> = by
        .iter()
        .map(|((key, text), (act, w, cs))| {
            let places = places(topo, clusters, cs, &everywhere[key]);
            firsts.push(cs[0]);
            Group {
                object: key.to_string(),
                action: act,
                workload: w.clone(),
                clusters: cs.iter().map(|&i| clusters[i].name.to_string()).collect(),
                places,
                diff: text.clone(),
                variants: variants[key] - 1,
            }
        })
        .collect();
    // Largest first; then by object, and among one object's variants in
    // the order their first cluster comes (tree order).
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        let (ga, gb) = (&groups[a], &groups[b]);
        gb.clusters
            .len()
            .cmp(&ga.clusters.len())
            .then_with(|| ga.object.cmp(&gb.object))
            .then_with(|| firsts[a].cmp(&firsts[b]))
    });
    let mut slots: Vec<Option<Group>> = groups.drain(..).map(Some).collect();
    let groups: Vec<Group> = order
        .into_iter()
        .map(|i| slots[i].take().expect("each once"))
        .collect();
    Review {
        workloads: summaries.into_values().collect(),
        groups,
    }
}

/// Where the clusters `cs` (indices into `clusters`) lie: the topmost
/// subtrees every cluster of which that changes the object (`all`) is in
/// `cs`, holding two or more of them, then the clusters left over.
fn places(
    topo: &Topology,
    clusters: &[ClusterChanges<'_>],
    cs: &[usize],
    all: &BTreeSet<usize>,
) -> Vec<Place> {
    // Counts up the tree, touching only the members' ancestors.
    let mut mine: BTreeMap<usize, usize> = BTreeMap::new();
    let mut theirs: BTreeMap<usize, usize> = BTreeMap::new();
    let up = |c: usize, into: &mut BTreeMap<usize, usize>| {
        let mut at = Some(c);
        while let Some(a) = at {
            *into.entry(a).or_default() += 1;
            at = topo.parent(a);
        }
    };
    for &i in cs {
        if let Some(c) = clusters[i].index {
            up(c, &mut mine);
        }
    }
    for &i in all {
        if let Some(c) = clusters[i].index {
            up(c, &mut theirs);
        }
    }
    let whole =
        |a: usize| mine.get(&a).copied().unwrap_or(0) >= 2 && mine.get(&a) == theirs.get(&a);
    let mut out = Vec::new();
    // Topmost first: a node is taken when it is whole and no ancestor was.
    let mut nodes: Vec<usize> = mine.keys().copied().collect();
    nodes.sort_by_key(|&a| (topo.depth(a), a));
    let mut taken: Vec<usize> = Vec::new();
    for a in nodes {
        if taken.iter().any(|&t| topo.in_subtree(a, t)) || !whole(a) {
            continue;
        }
        taken.push(a);
    }
    // Tree order for the output.
    taken.sort_by_key(|&a| topo.path(a));
    for &a in &taken {
        out.push(Place::Subtree {
            root: topo.name(a).to_string(),
            clusters: mine[&a],
        });
    }
    for &i in cs {
        let inside = clusters[i]
            .index
            .is_some_and(|c| taken.iter().any(|&t| topo.in_subtree(c, t)));
        // A cluster changes an object once: each is listed once.
        if !inside {
            out.push(Place::Cluster {
                name: clusters[i].name.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topo() -> Topology {
        // hub → eu → (eu-a, eu-b), hub → us → (us-a, us-b), hub → staging.
        Topology::build(&[
            ("eu", Some("hub")),
            ("eu-a", Some("eu")),
            ("eu-b", Some("eu")),
            ("hub", None),
            ("staging", Some("hub")),
            ("us", Some("hub")),
            ("us-a", Some("us")),
            ("us-b", Some("us")),
        ])
        .unwrap()
    }

    fn update(cluster: &str, image: &str, replicas: u64, new_replicas: u64) -> Change {
        let obj = |img: &str, r: u64| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop",
                    "labels": {"canopy.dev/workload": "web", "canopy.dev/cluster": cluster}},
                "spec": {"replicas": r, "template": {"spec": {"containers": [{"name": "web", "image": img}]}}}})
        };
        let live = obj("web:1", replicas);
        Change::Update {
            key: ObjectKey::of(&live).unwrap(),
            live,
            desired: obj(image, new_replicas),
            merged: None,
            replace: Vec::new(),
        }
    }

    fn text(c: &Change) -> String {
        crate::core::diff::unified(c, 3, crate::core::diff::LIVE)
    }

    #[test]
    fn one_change_on_many_clusters_is_one_group_placed_by_subtree() {
        let t = topo();
        let names = ["eu-a", "eu-b", "us-a", "us-b", "staging"];
        let per: Vec<Vec<Change>> = names
            .iter()
            .map(|n| {
                let img = if *n == "staging" {
                    "mirror/web:2"
                } else {
                    "web:2"
                };
                vec![update(n, img, 2, 2)]
            })
            .collect();
        let cs: Vec<ClusterChanges<'_>> = names
            .iter()
            .zip(&per)
            .map(|(n, ch)| ClusterChanges {
                index: t.get(n),
                name: n,
                changes: ch,
            })
            .collect();
        let r = review(&t, &cs, text);
        assert_eq!(r.groups.len(), 2, "{:#?}", r.groups);
        let main = &r.groups[0];
        assert_eq!(main.clusters, vec!["eu-a", "eu-b", "us-a", "us-b"]);
        assert_eq!(
            main.places,
            vec![
                Place::Subtree {
                    root: "eu".into(),
                    clusters: 2
                },
                Place::Subtree {
                    root: "us".into(),
                    clusters: 2
                },
            ],
            "hub is not whole: staging took another variant"
        );
        assert_eq!(main.variants, 1);
        assert_eq!(
            r.groups[1].places,
            vec![Place::Cluster {
                name: "staging".into()
            }]
        );
        assert!(!main.diff.contains("eu-a"), "{}", main.diff);
        assert!(
            main.diff.contains("canopy.dev/cluster: ‹cluster›")
                || !main.diff.contains("canopy.dev/cluster"),
            "{}",
            main.diff
        );
        let w = &r.workloads[0];
        assert_eq!((w.workload.as_str(), w.clusters, w.updated), ("web", 5, 5));
        assert_eq!(w.replicas, None, "no replica moved");
    }

    #[test]
    fn replicas_moved_and_clusters_joining_are_counted() {
        let t = topo();
        let a = vec![update("eu-a", "web:1", 4, 2)];
        let b = vec![update("eu-b", "web:1", 2, 3)];
        let joined = {
            let desired = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop", "labels": {"canopy.dev/workload": "web"}},
                "spec": {"replicas": 1}});
            vec![Change::Create {
                key: ObjectKey::of(&desired).unwrap(),
                desired,
            }]
        };
        let cs = vec![
            ClusterChanges {
                index: t.get("eu-a"),
                name: "eu-a",
                changes: &a,
            },
            ClusterChanges {
                index: t.get("eu-b"),
                name: "eu-b",
                changes: &b,
            },
            ClusterChanges {
                index: t.get("us-a"),
                name: "us-a",
                changes: &joined,
            },
        ];
        let r = review(&t, &cs, text);
        let w = &r.workloads[0];
        assert_eq!(
            w.replicas,
            Some(Replicas {
                before: 6,
                after: 6,
                added: 2
            })
        );
        assert_eq!((w.joins, w.leaves, w.created, w.updated), (1, 0, 1, 2));
    }
}
