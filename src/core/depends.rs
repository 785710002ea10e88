//! Ordering between workloads (`Workload spec.dependsOn`), per cluster as
//! Flux's `dependsOn` is per object: on a cluster where a workload and its
//! dependency both land, the dependency's objects are applied and healthy
//! before the dependent's are written. Where the dependency does not land
//! the dependent has nothing to wait for.
//!
//! Pure: validation ([`check_names`], [`check_landing`]) and each
//! cluster's order ([`Order::on`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::model::Fleet;
use crate::core::yaml::YamlPath;

/// Each workload's fleet index by name.
fn index(fleet: &Fleet) -> BTreeMap<&str, usize> {
    fleet
        .workloads
        .iter()
        .enumerate()
        .map(|(i, w)| (w.name(), i))
        .collect()
}

/// Every name a `dependsOn` lists is a workload of the fleet, not the
/// workload itself, and the dependencies form no cycle (the cycle is named
/// in the error, as a path).
pub fn check_names(fleet: &Fleet) -> Diagnostics {
    let mut d = Diagnostics::default();
    let index = index(fleet);
    for w in &fleet.workloads {
        for (i, dep) in w.spec.depends_on.iter().enumerate() {
            let at = w.source.loc(&YamlPath::parse("spec.dependsOn").index(i));
            if dep == w.name() {
                d.push(
                    Diagnostic::error(format!("workload {} depends on itself", w.name()))
                        .at(&at)
                        .hint("remove it from its own dependsOn"),
                );
            } else if !index.contains_key(dep.as_str()) && !fleet.slice {
                d.push(
                    Diagnostic::error(format!(
                        "dependsOn names workload {dep:?}, which the fleet does not have"
                    ))
                    .at(&at)
                    .hint("name a Workload of the fleet (its metadata.name)"),
                );
            }
        }
    }
    // Cycles: a depth-first walk, each cycle reported once, from its first
    // workload in fleet order.
    let mut state = vec![0u8; fleet.workloads.len()]; // 0 new, 1 on path, 2 done
    let mut reported: BTreeSet<Vec<usize>> = BTreeSet::new();
    for start in 0..fleet.workloads.len() {
        let mut path = Vec::new();
        visit(fleet, &index, start, &mut state, &mut path, &mut |cycle| {
            let mut key = cycle.to_vec();
            key.sort_unstable();
            if reported.insert(key) {
                let names: Vec<&str> = cycle
                    .iter()
                    .chain(cycle.first())
                    .map(|&i| fleet.workloads[i].name())
                    .collect();
                let w = &fleet.workloads[cycle[0]];
                d.push(
                    Diagnostic::error(format!("dependsOn makes a cycle: {}", names.join(" → ")))
                        .at(&w.source.loc_str("spec.dependsOn"))
                        .hint("a cycle can never start: remove one of these dependencies"),
                );
            }
        });
    }
    d
}

fn visit(
    fleet: &Fleet,
    index: &BTreeMap<&str, usize>,
    w: usize,
    state: &mut [u8],
    path: &mut Vec<usize>,
    found: &mut dyn FnMut(&[usize]),
) {
    match state[w] {
        2 => return,
        1 => {
            let from = path.iter().position(|&p| p == w).expect("on the path");
            found(&path[from..]);
            return;
        }
        _ => {}
    }
    state[w] = 1;
    path.push(w);
    for dep in &fleet.workloads[w].spec.depends_on {
        if let Some(&d) = index.get(dep.as_str()).filter(|&&d| d != w) {
            visit(fleet, index, d, state, path, found);
        }
    }
    path.pop();
    state[w] = 2;
}

/// A dependency that lands on none of the clusters its dependent lands on
/// orders nothing: an error, at the dependent's `dependsOn` entry.
/// `chosen[w][c]`: whether workload `w` lands on cluster `c`.
pub fn check_landing(fleet: &Fleet, chosen: &[Vec<bool>]) -> Diagnostics {
    let mut d = Diagnostics::default();
    for (wi, w) in fleet.workloads.iter().enumerate() {
        for (i, dep) in w.spec.depends_on.iter().enumerate() {
            let Some(di) = fleet.workloads.iter().position(|x| x.name() == dep) else {
                continue;
            };
            let lands = |x: usize| chosen[x].iter().any(|&b| b);
            let together = chosen[wi].iter().zip(&chosen[di]).any(|(&a, &b)| a && b);
            if lands(wi) && !together {
                d.push(
                    Diagnostic::error(format!(
                        "workload {} depends on {dep}, which lands on none of its clusters",
                        w.name()
                    ))
                    .at(&w.source.loc(&YamlPath::parse("spec.dependsOn").index(i)))
                    .hint("dependsOn orders workloads on the clusters they share: place the dependency there too, or remove it"),
                );
            }
        }
    }
    d
}

/// The order of the workloads on one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Per workload (fleet index): its level, 0 first; `None` for one not
    /// on the cluster.
    pub level: Vec<Option<u32>>,
    /// Per workload on the cluster: the workloads on it that it waits for.
    pub waits_for: BTreeMap<usize, Vec<usize>>,
}

impl Order {
    /// The order of the workloads `present` on a cluster; `None` when none
    /// of them waits for another there (the common case: one write).
    pub fn on(fleet: &Fleet, present: &BTreeSet<usize>) -> Option<Order> {
        if present
            .iter()
            .all(|&w| fleet.workloads[w].spec.depends_on.is_empty())
        {
            return None;
        }
        let index = index(fleet);
        let mut waits_for = BTreeMap::new();
        for &w in present {
            let deps: Vec<usize> = fleet.workloads[w]
                .spec
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .filter(|d| present.contains(d) && *d != w)
                .collect();
            if !deps.is_empty() {
                waits_for.insert(w, deps);
            }
        }
        if waits_for.is_empty() {
            return None;
        }
        // Levels by longest path; validation refused cycles, and a cycle
        // left anyway (a slice checked without its names) stops at the
        // number of workloads.
        let mut level: Vec<Option<u32>> = (0..fleet.workloads.len())
            .map(|w| present.contains(&w).then_some(0))
            .collect();
        for _ in 0..present.len() {
            let mut moved = false;
            for (&w, deps) in &waits_for {
                let want = deps
                    .iter()
                    .filter_map(|&d| level[d])
                    .max()
                    .map_or(0, |l| l + 1);
                if level[w].is_some_and(|l| l < want) {
                    level[w] = Some(want);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        Some(Order { level, waits_for })
    }

    /// The workloads that wait, directly or not, for `w`.
    pub fn dependents_of(&self, w: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut todo = vec![w];
        while let Some(x) = todo.pop() {
            for (&d, deps) in &self.waits_for {
                if deps.contains(&x) && out.insert(d) {
                    todo.push(d);
                }
            }
        }
        out
    }

    /// Whether some workload waits for `w`.
    pub fn is_awaited(&self, w: usize) -> bool {
        self.waits_for.values().any(|deps| deps.contains(&w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(deps: &[(&str, &[&str])]) -> Fleet {
        let files: Vec<(String, Vec<u8>)> = deps
            .iter()
            .map(|(w, d)| {
                (
                    format!("workloads/{w}/workload.yaml"),
                    format!(
                        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {w}}}\nspec:\n  dependsOn: [{}]\n",
                        d.join(", ")
                    )
                    .into_bytes(),
                )
            })
            .collect();
        let (fleet, d) = crate::core::load::load_files("f".into(), files);
        assert!(!d.has_errors(), "{d:?}");
        fleet
    }

    #[test]
    fn names_and_cycles_are_checked_with_the_path_of_the_cycle() {
        let f = fleet(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a"]),
            ("d", &["d", "nope"]),
        ]);
        let d = check_names(&f);
        let text: Vec<String> = d.errors().map(|e| e.to_string()).collect();
        assert_eq!(d.errors().count(), 3, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("dependsOn makes a cycle: a → b → c → a")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("workload d depends on itself")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("\"nope\", which the fleet does not have")),
            "{text:?}"
        );
        assert!(check_names(&fleet(&[("a", &["b"]), ("b", &[])]))
            .errors()
            .next()
            .is_none());
    }

    #[test]
    fn each_cluster_orders_only_what_it_runs() {
        // crs waits for operator; app for crs and db; db for nothing.
        let f = fleet(&[
            ("operator", &[]),
            ("crs", &["operator"]),
            ("db", &[]),
            ("app", &["crs", "db"]),
        ]);
        let at = |n: &str| f.workloads.iter().position(|w| w.name() == n).unwrap();
        let (op, crs, db, app) = (at("operator"), at("crs"), at("db"), at("app"));
        let all: BTreeSet<usize> = (0..4).collect();
        let o = Order::on(&f, &all).unwrap();
        let levels = |o: &Order| [op, crs, db, app].map(|w| o.level[w]);
        assert_eq!(levels(&o), [Some(0), Some(1), Some(0), Some(2)]);
        assert_eq!(o.dependents_of(op), BTreeSet::from([crs, app]));
        assert!(o.is_awaited(db) && !o.is_awaited(app));
        // Without the operator on this cluster, crs waits for nothing.
        let some: BTreeSet<usize> = [crs, db, app].into();
        let o = Order::on(&f, &some).unwrap();
        assert_eq!(levels(&o), [None, Some(0), Some(0), Some(1)]);
        // Nothing waits: no order, one write.
        assert!(Order::on(&f, &[op, db].into()).is_none());
        // A dependency landing nowhere near its dependent.
        let mut chosen = vec![vec![true, true]; 4];
        chosen[op] = vec![true, false];
        chosen[crs] = vec![false, true];
        let d = check_landing(&f, &chosen);
        assert_eq!(d.errors().count(), 1);
        assert!(d
            .errors()
            .next()
            .unwrap()
            .to_string()
            .contains("workload crs depends on operator, which lands on none of its clusters"));
    }
}
