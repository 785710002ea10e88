//! Rollbacks below relays.
//!
//! A staged rollout's stage that fails its gate is rolled back, with
//! `rollback: auto`, to the revision the rollout started from. The level
//! that runs the rollout renders that revision from Git and applies it to
//! the stage's clusters it reaches itself. A cluster below a relay it
//! cannot reach, and the relay has no Git history; so the level above
//! hands the rollback down ([`Above::back`]) with the slice of the old
//! fleet the relay's subtree needs ([`crate::core::relay::Handoff::bases`]),
//! cut as the slice of the new one is. The relay then renders the workload
//! on those clusters from that slice in place of the new revision's, every
//! round, as long as its handoff says so: a rollback below a relay is a
//! state the relay keeps, not a one-shot write, so drift and a restarted
//! agent are corrected too.
//!
//! Where the old fleet cannot serve a cluster (the revision does not load,
//! the cluster was not in the fleet then), the workload is held there
//! instead: the cluster keeps what it runs, as the root's own rollback
//! leaves such a cluster.

use std::collections::BTreeMap;

use crate::core::relay::{Above, BaseFleet, Bases};
use crate::core::render::Renderer;
use crate::ops::apply::Desired;
use crate::source::input::Input;

/// Moves a rollback's clusters to the held ones: the cluster keeps what
/// it runs of workload `w`.
fn hold(above: &mut Above, w: &str, clusters: impl IntoIterator<Item = String>) {
    for c in clusters {
        above.held.entry(c).or_default().insert(w.to_string());
    }
}

/// For the level that runs the rollouts (it has the Git history): loads
/// into `have` the fleet at each revision `above` rolls back to that
/// neither `known` (what the run already read) nor `have` holds, and
/// settles `above` on what loaded. A revision that does not load, and a
/// cluster the fleet did not have then, leave the workload held there.
pub fn load(
    input: Option<&Input>,
    now: &crate::core::validate::Checked,
    above: &mut Above,
    known: &BTreeMap<String, BaseFleet>,
    have: &mut BTreeMap<String, BaseFleet>,
) {
    let backs: Vec<(String, crate::core::relay::Back)> = above
        .back
        .iter()
        .map(|(w, b)| (w.clone(), b.clone()))
        .collect();
    for (w, b) in backs {
        if !known.contains_key(&b.revision) && !have.contains_key(&b.revision) {
            let loaded = match (input, b.commit.as_deref()) {
                (Some(input), Some(commit)) => {
                    crate::ops::base::checked_at(input, commit, &now.fleet.name, now)
                        .map_err(|e| e.to_string())
                }
                _ => Err("no Git history to read it from".to_string()),
            };
            match loaded {
                Ok((checked, _, _)) => {
                    have.insert(b.revision.clone(), BaseFleet::whole(checked));
                }
                Err(e) => {
                    tracing::warn!(workload = %w, revision = %b.revision, error = %e,
                        "cannot read the revision a rollback below a relay goes back to; the clusters keep what they run");
                    above.back.remove(&w);
                    hold(above, &w, b.clusters);
                    continue;
                }
            }
        }
        let base = &known
            .get(&b.revision)
            .or_else(|| have.get(&b.revision))
            .expect("loaded above")
            .checked
            .topo;
        let (known, gone): (Vec<String>, Vec<String>) =
            b.clusters.into_iter().partition(|c| base.get(c).is_some());
        hold(above, &w, gone);
        match known.is_empty() {
            true => {
                above.back.remove(&w);
            }
            false => {
                above.back.get_mut(&w).expect("listed").clusters = known.into_iter().collect();
            }
        }
    }
}

/// The fleets `have` holds (by revision), placed for rendering
/// (`failed_of` gives the failover a slice is placed with).
pub fn renderers<'a>(
    have: impl IntoIterator<Item = (&'a String, &'a BaseFleet)>,
    failed_of: impl Fn(&BaseFleet) -> Vec<Vec<bool>>,
) -> Bases<'a> {
    have.into_iter()
        .map(|(rev, b)| (rev.clone(), b.renderer(&failed_of(b))))
        .collect()
}

/// For a relay: on each cluster of `desired` that a rollback handed to it
/// names, the workload's objects are those of the fleet at the rollback's
/// revision (`bases`), in place of this revision's. A workload the old
/// fleet cannot render there is kept as it runs, and said in the log.
pub fn substitute(desired: &mut Desired, r: &Renderer<'_>, above: &Above, bases: &Bases<'_>) {
    let checked = r.checked;
    for (w, back) in &above.back {
        let wi = checked.fleet.workloads.iter().position(|x| x.name() == w);
        let base = bases.get(&back.revision);
        for name in &back.clusters {
            let Some(c) = checked.topo.get(name).filter(|&c| desired.has(c)) else {
                // Below a nested relay: its handoff carries the rollback.
                continue;
            };
            let rendered = match (wi, base) {
                (Some(wi), Some(br)) => br
                    .checked
                    .topo
                    .get(name)
                    .ok_or_else(|| format!("{name} is not in the fleet at {}", back.revision))
                    .and_then(|bc| {
                        br.render_cluster(bc).map_err(|ds| {
                            ds.iter()
                                .map(|d| d.message.clone())
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                    })
                    .map(|objs| {
                        let objs: Vec<_> = objs
                            .into_iter()
                            .filter(|o| br.checked.fleet.workloads[o.workload].name() == w)
                            .collect();
                        (wi, objs)
                    }),
                _ => Err(format!(
                    "the handoff holds no fleet at {} for workload {w}",
                    back.revision
                )),
            };
            match rendered {
                Ok((wi, objs)) => desired.replace_workload(c, wi, objs, &back.revision),
                Err(e) => {
                    tracing::warn!(cluster = %name, workload = %w, revision = %back.revision, error = %e,
                        "cannot render the rollback; the cluster keeps what it runs");
                    desired.keep(name, w);
                }
            }
        }
    }
}
