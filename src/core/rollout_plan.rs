//! Which stage each cluster of a workload is in (pure).
//!
//! Selector stages take their clusters first, in order; percent stages then
//! share out the clusters left, parents first, by cumulative percentage
//! (10, 30, 100 give 1:2:7); whatever is still left joins the last stage.
//! Last, the tree: a cluster is never in an earlier stage than its nearest
//! ancestor that runs the workload, because apply reconciles parents first
//! and a parent on the old version must not have children on the new one.

use crate::core::topology::Topology;

/// How one stage picks its clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageRule {
    /// Per cluster of the fleet: whether the stage's selector picks it.
    Picks(Vec<bool>),
    /// A cumulative percentage of the clusters no selector stage took.
    Percent(u32),
}

/// Per cluster of the fleet: its stage (`None` where the workload does not
/// land), and the ancestor whose later stage it waits for, if any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assigned {
    pub stage: Vec<Option<usize>>,
    pub waits_for: Vec<Option<usize>>,
}

impl Assigned {
    /// The clusters of stage `i`, in tree order.
    pub fn members(&self, topo: &Topology, i: usize) -> Vec<usize> {
        topo.preorder()
            .iter()
            .copied()
            .filter(|&c| self.stage[c] == Some(i))
            .collect()
    }
}

/// Assigns the clusters the workload lands on (`lands`) to `rules.len()`
/// stages (at least one).
pub fn assign(topo: &Topology, lands: &[bool], rules: &[StageRule]) -> Assigned {
    let n = topo.len();
    let last = rules.len().saturating_sub(1);
    let mut stage: Vec<Option<usize>> = vec![None; n];
    for (i, rule) in rules.iter().enumerate() {
        if let StageRule::Picks(picks) = rule {
            for c in 0..n {
                if lands[c] && stage[c].is_none() && picks[c] {
                    stage[c] = Some(i);
                }
            }
        }
    }
    // The rest, parents first: a prefix of this order holds the ancestors
    // (that are in the pool) of every cluster in it.
    let mut pos = vec![0; n];
    for (p, &c) in topo.preorder().iter().enumerate() {
        pos[c] = p;
    }
    let mut pool: Vec<usize> = (0..n).filter(|&c| lands[c] && stage[c].is_none()).collect();
    pool.sort_by_key(|&c| (topo.depth(c), pos[c]));
    let mut taken = 0;
    for (i, rule) in rules.iter().enumerate() {
        if let StageRule::Percent(p) = rule {
            let upto = (pool.len() * (*p as usize)).div_ceil(100).min(pool.len());
            for &c in pool.iter().take(upto).skip(taken) {
                stage[c] = Some(i);
            }
            taken = taken.max(upto);
        }
    }
    for &c in &pool[taken..] {
        stage[c] = Some(last);
    }
    let mut waits_for = vec![None; n];
    for &c in topo.preorder() {
        let Some(mine) = stage[c] else { continue };
        let mut up = topo.parent(c);
        while let Some(a) = up {
            if let Some(theirs) = stage[a] {
                // `a` was adjusted already (pre-order), so it carries the
                // latest stage of everything above it.
                if theirs > mine {
                    stage[c] = Some(theirs);
                    waits_for[c] = Some(waits_for[a].unwrap_or(a));
                }
                break;
            }
            up = topo.parent(a);
        }
    }
    Assigned { stage, waits_for }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topo(pairs: &[(&str, Option<&str>)]) -> Topology {
        let mut v = pairs.to_vec();
        v.sort_by_key(|p| p.0);
        Topology::build(&v).unwrap()
    }

    fn picks(t: &Topology, names: &[&str]) -> StageRule {
        StageRule::Picks((0..t.len()).map(|c| names.contains(&t.name(c))).collect())
    }

    #[test]
    fn one_two_seven() {
        let mut pairs = vec![("hub", None)];
        let names: Vec<String> = (0..9).map(|i| format!("m{i}")).collect();
        for n in &names {
            pairs.push((n.as_str(), Some("hub")));
        }
        let t = topo(&pairs);
        let a = assign(
            &t,
            &[true; 10],
            &[
                StageRule::Percent(10),
                StageRule::Percent(30),
                StageRule::Percent(100),
            ],
        );
        let sizes: Vec<usize> = (0..3).map(|i| a.members(&t, i).len()).collect();
        assert_eq!(sizes, vec![1, 2, 7]);
        assert_eq!(a.stage[t.get("hub").unwrap()], Some(0), "parents first");
        assert!(a.waits_for.iter().all(Option::is_none));
    }

    #[test]
    fn selectors_first_rest_to_last_and_children_wait_for_parents() {
        let t = topo(&[
            ("hub", None),
            ("eu", Some("hub")),
            ("eu-1", Some("eu")),
            ("us", Some("hub")),
            ("us-1", Some("us")),
        ]);
        let lands = vec![true; 5];
        // eu-1 is picked for the canary, but its parent eu is in stage 2.
        let a = assign(
            &t,
            &lands,
            &[
                picks(&t, &["hub", "eu-1"]),
                picks(&t, &["eu"]),
                picks(&t, &["nothing"]),
            ],
        );
        let at = |n: &str| a.stage[t.get(n).unwrap()];
        assert_eq!(at("hub"), Some(0));
        assert_eq!(at("eu"), Some(1));
        assert_eq!(at("eu-1"), Some(1));
        assert_eq!(a.waits_for[t.get("eu-1").unwrap()], t.get("eu"));
        assert_eq!(at("us"), Some(2), "unmatched clusters join the last stage");
        assert_eq!(at("us-1"), Some(2));
    }

    #[test]
    fn clusters_without_the_workload_have_no_stage() {
        let t = topo(&[("hub", None), ("a", Some("hub")), ("b", Some("hub"))]);
        let lands: Vec<bool> = (0..t.len()).map(|c| t.name(c) != "hub").collect();
        let a = assign(
            &t,
            &lands,
            &[StageRule::Percent(50), StageRule::Percent(100)],
        );
        assert_eq!(a.stage[t.get("hub").unwrap()], None);
        assert_eq!(a.members(&t, 0).len(), 1);
        assert_eq!(a.members(&t, 1).len(), 1);
    }

    /// A random forest: cluster i's parent is an earlier cluster or none.
    fn forest() -> impl Strategy<Value = (Vec<Option<usize>>, Vec<bool>)> {
        (1usize..40).prop_flat_map(|n| {
            let parents = (0..n)
                .map(|i| {
                    if i == 0 {
                        Just(None).boxed()
                    } else {
                        prop::option::weighted(0.9, 0..i).boxed()
                    }
                })
                .collect::<Vec<_>>();
            (parents, prop::collection::vec(prop::bool::weighted(0.8), n))
        })
    }

    proptest! {
        #[test]
        fn every_landed_cluster_has_a_stage_not_before_its_parents(
            (parents, lands) in forest(),
            sel in prop::collection::vec(prop::collection::vec(any::<bool>(), 40), 0..3),
            percents in prop::collection::btree_set(1u32..=100, 0..3),
        ) {
            let names: Vec<String> = (0..parents.len()).map(|i| format!("c{i:02}")).collect();
            let pairs: Vec<(&str, Option<&str>)> = parents
                .iter()
                .enumerate()
                .map(|(i, p)| (names[i].as_str(), p.map(|p| names[p].as_str())))
                .collect();
            let t = topo(&pairs);
            let lands: Vec<bool> = (0..t.len())
                .map(|c| lands[names.iter().position(|n| n == t.name(c)).unwrap()])
                .collect();
            let mut rules: Vec<StageRule> = sel
                .iter()
                .map(|s| StageRule::Picks((0..t.len()).map(|c| s[c]).collect()))
                .collect();
            rules.extend(percents.iter().map(|&p| StageRule::Percent(p)));
            if rules.is_empty() {
                rules.push(StageRule::Percent(100));
            }
            let a = assign(&t, &lands, &rules);
            for (c, &landed) in lands.iter().enumerate() {
                prop_assert_eq!(a.stage[c].is_some(), landed);
                let Some(s) = a.stage[c] else { continue };
                prop_assert!(s < rules.len());
                let mut up = t.parent(c);
                while let Some(p) = up {
                    if let Some(ps) = a.stage[p] {
                        prop_assert!(ps <= s, "{} in stage {} before its ancestor {} in {}", t.name(c), s, t.name(p), ps);
                    }
                    up = t.parent(p);
                }
            }
            // With percentages only, nobody has to wait: a prefix of the
            // parents-first order holds its ancestors.
            if sel.is_empty() {
                prop_assert!(a.waits_for.iter().all(Option::is_none));
            }
        }
    }
}
