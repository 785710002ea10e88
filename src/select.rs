//! Which clusters a [`ClusterSelector`] picks, and why (for `canopy explain`).
//!
//! One function serves placement, static weight rules and overrides, so the
//! three can never disagree on what a selector means.

use crate::model::{Cluster, ClusterSelector, LabelSelector, SelectorOperator, Taint, Toleration};
use crate::topology::Topology;

/// The verdict for one cluster, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub chosen: bool,
    pub reason: String,
}

/// Whether `sel` (absent = every cluster) picks cluster `i`.
pub fn matches(
    sel: Option<&ClusterSelector>,
    cluster: &Cluster,
    i: usize,
    topo: &Topology,
) -> bool {
    explain(sel, cluster, i, topo).chosen
}

/// The verdict for cluster `i`: `(selector AND subtreeOf) OR names`, minus
/// `exclude`; with none of the three, every cluster.
pub fn explain(
    sel: Option<&ClusterSelector>,
    cluster: &Cluster,
    i: usize,
    topo: &Topology,
) -> Verdict {
    let name = cluster.name();
    let verdict = |chosen: bool, reason: String| Verdict { chosen, reason };
    let Some(sel) = sel else {
        return verdict(true, "every cluster is selected (no clusters given)".into());
    };
    if sel.exclude.iter().any(|e| e == name) {
        return verdict(false, "excluded by name".into());
    }
    if sel.names.iter().any(|n| n == name) {
        return verdict(true, "listed in names".into());
    }
    if sel.selector.is_none() && sel.subtree_of.is_none() {
        if sel.names.is_empty() {
            return verdict(true, "every cluster is selected (empty clusters)".into());
        }
        return verdict(false, "not listed in names".into());
    }
    if let Some(root) = &sel.subtree_of {
        let inside = topo.get(root).is_some_and(|r| topo.in_subtree(i, r));
        if !inside {
            return verdict(false, format!("not in the subtree of {root}"));
        }
    }
    if let Some(ls) = &sel.selector {
        if let Some(why) = selector_mismatch(ls, cluster) {
            return verdict(false, format!("selector does not match: {why}"));
        }
    }
    let reason = match (&sel.selector, &sel.subtree_of) {
        (Some(_), Some(root)) => format!("matches the selector, in the subtree of {root}"),
        (Some(_), None) => "matches the selector".to_string(),
        (None, Some(root)) => format!("in the subtree of {root}"),
        (None, None) => unreachable!("handled above"),
    };
    verdict(true, reason)
}

/// The first requirement of `ls` that the cluster's labels fail, in words.
fn selector_mismatch(ls: &LabelSelector, cluster: &Cluster) -> Option<String> {
    let labels = &cluster.meta.labels;
    for (k, v) in &ls.match_labels {
        match labels.get(k) {
            Some(got) if got == v => {}
            Some(got) => return Some(format!("label {k}={got}, wanted {v}")),
            None => return Some(format!("no label {k}, wanted {k}={v}")),
        }
    }
    for e in &ls.match_expressions {
        let single = LabelSelector {
            match_labels: Default::default(),
            match_expressions: vec![e.clone()],
        };
        if !single.matches(labels) {
            let got = labels.get(&e.key).map_or_else(
                || format!("no label {}", e.key),
                |v| format!("label {}={v}", e.key),
            );
            let op = match e.operator {
                SelectorOperator::In => format!("In {:?}", e.values),
                SelectorOperator::NotIn => format!("NotIn {:?}", e.values),
                SelectorOperator::Exists => "Exists".to_string(),
                SelectorOperator::DoesNotExist => "DoesNotExist".to_string(),
            };
            return Some(format!("{got}, wanted {} {op}", e.key));
        }
    }
    None
}

/// The first taint of the cluster that keeps a workload with these
/// tolerations off it. `PreferNoSchedule` is a preference, never a block.
pub fn blocking_taint<'a>(cluster: &'a Cluster, tolerations: &[Toleration]) -> Option<&'a Taint> {
    cluster.spec.taints.iter().find(|t| {
        t.effect != crate::model::TaintEffect::PreferNoSchedule
            && !tolerations.iter().any(|tol| tol.tolerates(t))
    })
}

/// Human form of a taint: `key=value:Effect`.
pub fn taint_text(t: &Taint) -> String {
    match &t.value {
        Some(v) => format!("{}={v}:{:?}", t.key, t.effect),
        None => format!("{}:{:?}", t.key, t.effect),
    }
}
