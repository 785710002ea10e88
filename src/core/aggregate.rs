//! Status aggregated up the tree (pure): per workload, desired and ready
//! replicas on each cluster, summed from the leaves to the roots, so that a
//! parent's line stands for its whole subtree, as Karmada aggregates a
//! workload's status from its member clusters and Fleet sums Bundles into
//! their GitRepo.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::core::model::ObjectKey;
use crate::core::topology::Topology;

/// Replicas that should run, and replicas that are ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    pub desired: u64,
    pub ready: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.desired += o.desired;
        self.ready += o.ready;
    }
}

/// One cluster's line of a workload's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterCounts {
    pub cluster: String,
    pub depth: usize,
    /// The cluster and every descendant.
    pub subtree: Counts,
    /// The cluster itself, when the workload runs replicas there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub here: Option<Counts>,
}

/// A workload's status over the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadStatus {
    pub workload: String,
    pub total: Counts,
    /// In tree order: every cluster whose subtree runs the workload.
    pub clusters: Vec<ClusterCounts>,
}

/// Sums `own` (workload → cluster index → counts on that cluster) up the
/// tree, with `below` (workload → relay cluster index → counts its relay
/// reports for the clusters below it, which this level does not read)
/// added to each relay's subtree. Workloads come sorted by name, clusters
/// in tree order, and only clusters whose subtree runs the workload are
/// listed: the output is the same for the same input, whatever the order
/// it was gathered in.
pub fn aggregate(
    topo: &Topology,
    own: &BTreeMap<String, BTreeMap<usize, Counts>>,
    below: &BTreeMap<String, BTreeMap<usize, Counts>>,
) -> Vec<WorkloadStatus> {
    let none = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> = own.keys().chain(below.keys()).collect();
    names
        .into_iter()
        .map(|workload| {
            let here = own.get(workload).unwrap_or(&none);
            let relayed = below.get(workload).unwrap_or(&none);
            let mut subtree: Vec<Option<Counts>> = vec![None; topo.len()];
            // Children before parents: the reverse of a pre-order.
            for &c in topo.preorder().iter().rev() {
                let mut sum = here.get(&c).copied();
                if let Some(r) = relayed.get(&c) {
                    *sum.get_or_insert_with(Counts::default) += *r;
                }
                for &child in topo.children(c) {
                    if let Some(s) = subtree[child] {
                        *sum.get_or_insert_with(Counts::default) += s;
                    }
                }
                subtree[c] = sum;
            }
            let mut total = Counts::default();
            for &root in topo.roots() {
                if let Some(s) = subtree[root] {
                    total += s;
                }
            }
            let clusters = topo
                .preorder()
                .iter()
                .filter_map(|&c| {
                    subtree[c].map(|s| ClusterCounts {
                        cluster: topo.name(c).to_string(),
                        depth: topo.depth(c),
                        subtree: s,
                        here: here.get(&c).copied(),
                    })
                })
                .collect();
            WorkloadStatus {
                workload: (*workload).clone(),
                total,
                clusters,
            }
        })
        .collect()
}

/// The replicas an object asks for: the value at its replica pointer.
pub fn desired_replicas(obj: &Value, pointer: &str) -> u64 {
    obj.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// The replicas of a live object that are ready. A cluster with
/// controllers reports them in `status.readyReplicas` (absent: none yet).
/// A store without controllers (the local backend) runs nothing, so an
/// object it holds counts as ready as written.
pub fn ready_replicas(live: &Value, pointer: &str, controllers: bool) -> u64 {
    if controllers {
        live.pointer("/status/readyReplicas")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    } else {
        desired_replicas(live, pointer)
    }
}

/// One cluster's counts per workload, from its desired objects (`(workload,
/// key, replicas pointer, desired object)`) and the live objects listed
/// there (`None` when the cluster could not be read: nothing counts as
/// ready). Only live objects that are desired count.
pub fn cluster_counts<'a>(
    desired: impl IntoIterator<Item = (&'a str, &'a ObjectKey, &'a str, &'a Value)>,
    live: Option<&[Value]>,
    controllers: bool,
) -> BTreeMap<String, Counts> {
    let live_by_key: BTreeMap<ObjectKey, &Value> = live
        .unwrap_or_default()
        .iter()
        .filter_map(|l| ObjectKey::of(l).map(|k| (k, l)))
        .collect();
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for (workload, key, pointer, obj) in desired {
        let c = out.entry(workload.to_string()).or_default();
        c.desired += desired_replicas(obj, pointer);
        if let Some(l) = live_by_key.get(key) {
            c.ready += ready_replicas(l, pointer, controllers);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topo() -> Topology {
        // hub ─ eu ─ eu-a, eu-b; hub ─ us ─ us-a; staging (a second root)
        Topology::build(&[
            ("hub", None),
            ("eu", Some("hub")),
            ("eu-a", Some("eu")),
            ("eu-b", Some("eu")),
            ("us", Some("hub")),
            ("us-a", Some("us")),
            ("staging", None),
        ])
        .unwrap()
    }

    fn c(desired: u64, ready: u64) -> Counts {
        Counts { desired, ready }
    }

    #[test]
    fn a_parent_line_sums_its_subtree() {
        let t = topo();
        let at = |n: &str| t.get(n).unwrap();
        let own = BTreeMap::from([(
            "web".to_string(),
            BTreeMap::from([
                (at("eu-a"), c(2, 2)),
                (at("eu-b"), c(3, 1)),
                (at("eu"), c(1, 1)),
                (at("staging"), c(3, 3)),
            ]),
        )]);
        let s = &aggregate(&t, &own, &BTreeMap::new())[0];
        assert_eq!(s.total, c(9, 7));
        let lines: Vec<(&str, Counts, Option<Counts>)> = s
            .clusters
            .iter()
            .map(|l| (l.cluster.as_str(), l.subtree, l.here))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("hub", c(6, 4), None),
                ("eu", c(6, 4), Some(c(1, 1))),
                ("eu-a", c(2, 2), Some(c(2, 2))),
                ("eu-b", c(3, 1), Some(c(3, 1))),
                ("staging", c(3, 3), Some(c(3, 3))),
            ],
            "us and us-a run no web and are not listed"
        );
    }

    /// A relay's report sums the clusters below it into its subtree line
    /// (its own line keeps what runs on the relay itself), and up the tree.
    #[test]
    fn a_relays_report_adds_to_its_subtree() {
        let t = topo();
        let at = |n: &str| t.get(n).unwrap();
        let own = BTreeMap::from([(
            "web".to_string(),
            BTreeMap::from([(at("eu"), c(1, 1)), (at("staging"), c(3, 3))]),
        )]);
        let below = BTreeMap::from([
            ("web".to_string(), BTreeMap::from([(at("eu"), c(5, 4))])),
            ("api".to_string(), BTreeMap::from([(at("eu"), c(2, 2))])),
        ]);
        let all = aggregate(&t, &own, &below);
        let names: Vec<&str> = all.iter().map(|w| w.workload.as_str()).collect();
        assert_eq!(
            names,
            vec!["api", "web"],
            "a workload only relays run is listed"
        );
        let web = &all[1];
        assert_eq!(web.total, c(9, 8));
        let eu = web.clusters.iter().find(|l| l.cluster == "eu").unwrap();
        assert_eq!((eu.subtree, eu.here), (c(6, 5), Some(c(1, 1))));
        assert_eq!(all[0].total, c(2, 2));
    }

    #[test]
    fn the_result_does_not_depend_on_gathering_order() {
        let t = topo();
        let mut a: BTreeMap<String, BTreeMap<usize, Counts>> = BTreeMap::new();
        let mut b = BTreeMap::new();
        let entries = [
            ("web", 2, c(1, 0)),
            ("api", 5, c(4, 4)),
            ("web", 3, c(2, 2)),
        ];
        for (w, i, n) in entries {
            a.entry(w.to_string()).or_default().insert(i, n);
        }
        for (w, i, n) in entries.iter().rev() {
            b.entry(w.to_string())
                .or_insert_with(BTreeMap::new)
                .insert(*i, *n);
        }
        let none = BTreeMap::new();
        assert_eq!(aggregate(&t, &a, &none), aggregate(&t, &b, &none));
        assert_eq!(aggregate(&t, &a, &none)[0].workload, "api");
    }

    #[test]
    fn ready_comes_from_status_where_controllers_run() {
        let live = json!({"spec": {"replicas": 3}, "status": {"readyReplicas": 2}});
        assert_eq!(ready_replicas(&live, "/spec/replicas", true), 2);
        assert_eq!(ready_replicas(&live, "/spec/replicas", false), 3);
        let fresh = json!({"spec": {"replicas": 3}});
        assert_eq!(ready_replicas(&fresh, "/spec/replicas", true), 0);
    }

    #[test]
    fn only_desired_live_objects_count_and_an_unread_cluster_has_none_ready() {
        let key = |n: &str| ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: n.into(),
        };
        let obj = |n: &str, r: u64| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": n, "namespace": "shop"}, "spec": {"replicas": r}})
        };
        let (k, want) = (key("web"), obj("web", 4));
        let live = vec![obj("web", 4), obj("old", 9)];
        let got = cluster_counts([("web", &k, "/spec/replicas", &want)], Some(&live), false);
        assert_eq!(got["web"], c(4, 4));
        let got = cluster_counts([("web", &k, "/spec/replicas", &want)], None, false);
        assert_eq!(got["web"], c(4, 0));
    }
}
