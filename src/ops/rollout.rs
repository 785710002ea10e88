//! Staged rollout: a workload's change reaches its clusters stage by stage,
//! each stage after the one before passed its health gate (and its pause).
//!
//! It wraps [`apply::run_rendered`] rather than changing it. A run is a series of
//! waves: each wave is an ordinary apply in which every workload is held
//! back ([`apply::Scope::Hold`]) on the clusters of the stages its rollout
//! has not reached, so those clusters keep exactly what they run. After a
//! wave, each rollout whose stage was applied takes its health gate; one
//! that passes with no pause starts its next stage in another wave of just
//! those clusters. A stage that fails stops its rollout, and with
//! `rollback: auto` its clusters are applied again, this workload alone, at
//! the revision the rollout started from, rendered from Git as `diff --base`
//! renders a base.
//!
//! What is rolled out is a hash of the workload's content per cluster
//! (`Renderer::rollout_hashes`), without replica counts: a new hash starts a
//! new rollout from the first stage, and stages that find nothing to change
//! pass at once, without their pause.

use crate::state::Record as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use rayon::prelude::*;

use super::error::OpsError;
use crate::backend::fleet::Backends;
use crate::backend::ApplyMeta;
use crate::core::model::{RollbackPolicy, Rollout};
use crate::core::relay::Above;
use crate::core::render::Renderer;
use crate::ops::apply::{self, Desired, Options, Outcome, Pass, Report, Scope};
use crate::source::input::Input;
use crate::source::input::Loaded;
use crate::source::Revision;
use crate::state::StateError;

use crate::core::rollout_plan::{self as plan, Assigned, StageRule};
use crate::state::rollouts::{
    self as state, Base, ClusterPhase, ClusterRecord, Gate, Phase, Record, Rollouts, StageRecord,
};

/// A workload's rollout as this revision defines it.
pub struct Plan {
    pub workload: usize,
    pub name: String,
    pub spec: Rollout,
    pub assigned: Assigned,
    /// What is rolled out, as a hash over its clusters.
    pub target: String,
}

impl Plan {
    pub fn stages(&self) -> usize {
        self.spec.stages.len()
    }

    fn records(&self, r: &Renderer<'_>) -> Vec<StageRecord> {
        let topo = &r.checked.topo;
        (0..self.stages())
            .map(|i| StageRecord {
                name: self.spec.stage_name(i),
                clusters: self
                    .assigned
                    .members(topo, i)
                    .into_iter()
                    .map(|c| {
                        let detail = self.assigned.waits_for[c]
                            .map(|a| format!("waits for its ancestor {}", topo.name(a)));
                        (
                            topo.name(c).to_string(),
                            ClusterRecord {
                                state: ClusterPhase::Pending,
                                detail,
                            },
                        )
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Whether a rollout moves in a run of `plans`: one is new, unfinished,
/// or has a new target. A run in which none does can treat every cluster
/// alike; one in which one does looks at every cluster, since the rollout's
/// stages span clusters whose own render did not move.
pub fn in_motion(plans: &[Plan], rollouts: &Rollouts) -> bool {
    plans.iter().any(|p| {
        rollouts
            .workloads
            .get(&p.name)
            .is_none_or(|rec| rec.target != p.target || rec.phase != Phase::Complete)
    })
}

/// The rollout of every workload that has one and lands somewhere.
pub fn plans(r: &Renderer<'_>) -> Vec<Plan> {
    let checked = r.checked;
    let topo = &checked.topo;
    checked
        .fleet
        .workloads
        .iter()
        .enumerate()
        .filter_map(|(wi, w)| {
            let spec = checked.fleet.rollout_of(w)?.clone();
            let placement = r.placements[wi].as_ref()?;
            let lands: Vec<bool> = (0..topo.len()).map(|c| placement.lands_on(c)).collect();
            let rules: Vec<StageRule> = spec
                .stages
                .iter()
                .map(|s| match (&s.clusters, s.percent) {
                    (Some(sel), _) => {
                        let picked = checked.labels.select(Some(sel), topo);
                        StageRule::Picks((0..topo.len()).map(|c| picked.contains(c)).collect())
                    }
                    (None, p) => StageRule::Percent(p.unwrap_or(100)),
                })
                .collect();
            let assigned = plan::assign(topo, &lands, &rules);
            let mut h = crate::core::hash::StableHasher::new();
            for (c, hash) in r.rollout_hashes(wi).into_iter().enumerate() {
                if let Some(hash) = hash {
                    h.str(topo.name(c)).u64(hash);
                }
            }
            Some(Plan {
                workload: wi,
                name: w.name().to_string(),
                spec,
                assigned,
                target: format!("xxh3:{:016x}", h.finish()),
            })
        })
        .collect()
}

/// What a run needs beyond an apply's arguments.
pub struct Ctx<'a> {
    /// Where an old revision is read from, for a rollback.
    /// `None` for a relay agent: no history to render a rollback from.
    pub input: Option<&'a Input>,
    /// The revision being applied.
    pub revision: &'a Revision,
    /// The state folder (`rollouts.json`, continue requests).
    pub state: &'a Path,
    pub now: SystemTime,
    /// A relay's run: the rollouts its parent level runs, which this run
    /// follows (holds back where told) instead of running.
    pub handed: Option<&'a Above>,
    /// What this run hands down to its relays (where they hold back,
    /// where they roll back), as placed.
    pub down: &'a Above,
    /// The fleets `down`'s rollbacks go back to, as placing read them.
    pub bases: &'a BTreeMap<String, crate::core::relay::BaseFleet>,
}

/// The staged rollouts as this level decides them at the start of a run,
/// for its relays' handoffs: which workloads it rolls out, and where each
/// is held back. The records are brought in line with this revision on a
/// copy (a new target starts at the first stage), so a relay never runs a
/// stage the rollout has not reached. Empty without relays.
pub fn above(r: &Renderer<'_>, rollouts: &Rollouts, state_dir: &Path, now: SystemTime) -> Above {
    if !crate::core::relay::any_relay(r.checked) {
        return Above::default();
    }
    let plans = plans(r);
    if plans.is_empty() {
        return Above::default();
    }
    let mut copy = rollouts.clone();
    let requests = state::pending_requests(state_dir);
    sync(&mut copy, &plans, r, &Revision::default(), &requests, now);
    handed_down(&plans, &copy, r)
}

/// What a level hands its relays of the rollouts it runs, as its records
/// stand: the workloads, where each is held back, and where a stage that
/// failed below a relay was rolled back (to the revision its rollout
/// started from; those clusters are not held, they run that revision).
fn handed_down(plans: &[Plan], rollouts: &Rollouts, r: &Renderer<'_>) -> Above {
    let topo = &r.checked.topo;
    let by = crate::core::relay::reconcilers(r.checked);
    let mut held = holds(plans, rollouts, r);
    let mut back = BTreeMap::new();
    for p in plans {
        let Some(rec) = rollouts.workloads.get(&p.name) else {
            continue;
        };
        let Some(from) = rec.from.as_ref().filter(|f| f.commit.is_some()) else {
            continue;
        };
        if rec.phase != Phase::RolledBack {
            continue;
        }
        let clusters: BTreeSet<String> = rec.stages[rec.stage]
            .clusters
            .keys()
            .filter(|c| topo.get(c).is_some_and(|i| by[i].is_some()))
            .cloned()
            .collect();
        for c in &clusters {
            if let Some(ws) = held.get_mut(c) {
                ws.remove(&p.name);
                if ws.is_empty() {
                    held.remove(c);
                }
            }
        }
        if !clusters.is_empty() {
            back.insert(
                p.name.clone(),
                crate::core::relay::Back {
                    revision: from.revision.clone(),
                    commit: from.commit.clone(),
                    clusters,
                },
            );
        }
    }
    Above {
        rolled: plans.iter().map(|p| p.name.clone()).collect(),
        held,
        back,
    }
}

/// One thing a rollout did or is waiting for, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub workload: String,
    pub message: String,
    /// A stage failed its health gate (canopy exits non-zero).
    pub failed: bool,
}

/// Brings `rollouts` in line with this revision's plans: a new target starts
/// a new rollout, an elapsed pause or a continue request goes on, and a
/// workload without a rollout is forgotten.
pub fn sync(
    rollouts: &mut Rollouts,
    plans: &[Plan],
    r: &Renderer<'_>,
    revision: &Revision,
    requests: &BTreeMap<String, String>,
    now: SystemTime,
) -> Vec<Event> {
    let mut events = Vec::new();
    let keep: BTreeSet<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    rollouts.workloads.retain(|w, _| keep.contains(w.as_str()));
    for p in plans {
        let stages = p.records(r);
        let prev = rollouts.workloads.get(&p.name);
        let record = match prev {
            Some(rec) if rec.target == p.target => {
                let mut rec = rec.clone();
                // The stages as this revision defines them; each cluster
                // keeps its state.
                let mut fresh = stages;
                for st in &mut fresh {
                    for (c, cr) in st.clusters.iter_mut() {
                        if let Some(old) = rec.cluster_mut(c) {
                            *cr = old.clone();
                        }
                    }
                }
                if fresh.len() == rec.stages.len() {
                    rec.stages = fresh;
                } else {
                    // The stages themselves changed: start over.
                    rec = Record::begin(prev, p.target.clone(), rec.revision.clone(), fresh, now);
                }
                rec
            }
            _ => {
                let rec = Record::begin(
                    prev,
                    p.target.clone(),
                    Base {
                        revision: revision.to_string(),
                        commit: revision.commit.clone(),
                    },
                    stages,
                    now,
                );
                events.push(Event {
                    workload: p.name.clone(),
                    message: format!(
                        "rollout of {} started ({} stage(s))",
                        rec.revision.revision,
                        rec.stages.len()
                    ),
                    failed: false,
                });
                rec
            }
        };
        let mut record = record;
        if let Some(target) = requests.get(&p.name) {
            if *target == record.target {
                match record.resume(now) {
                    Ok(()) => events.push(Event {
                        workload: p.name.clone(),
                        message: format!("continued: {}", record.stages[record.stage].name),
                        failed: false,
                    }),
                    Err(e) => events.push(Event {
                        workload: p.name.clone(),
                        message: format!("continue ignored: {e}"),
                        failed: false,
                    }),
                }
            } else {
                events.push(Event {
                    workload: p.name.clone(),
                    message: "continue ignored: it was asked for an earlier rollout".into(),
                    failed: false,
                });
            }
        }
        if record.resume_if_due(now) {
            events.push(Event {
                workload: p.name.clone(),
                message: format!("pause over: {} starts", record.stages[record.stage].name),
                failed: false,
            });
        }
        rollouts.workloads.insert(p.name.clone(), record);
    }
    events
}

/// Per cluster name, the workloads held back there.
pub fn holds(
    plans: &[Plan],
    rollouts: &Rollouts,
    r: &Renderer<'_>,
) -> BTreeMap<String, BTreeSet<String>> {
    let topo = &r.checked.topo;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in plans {
        let Some(rec) = rollouts.workloads.get(&p.name) else {
            continue;
        };
        for (c, s) in p.assigned.stage.iter().enumerate() {
            if s.is_some_and(|s| rec.holds(s)) {
                out.entry(topo.name(c).to_string())
                    .or_default()
                    .insert(p.name.clone());
            }
        }
    }
    out
}

/// Applies the fleet with staged rollouts: waves of
/// [`apply::run_rendered`] over the run's `desired` objects (rendered once;
/// the run's clusters are those it holds, `pass.targets` narrows them),
/// health gates between stages, rollback of a failed stage. `rollouts` is
/// updated (and, unless this is a dry run, saved as it goes).
///
/// A record that cannot be saved (a full disk) stops the rollout before
/// its next wave, since a wave whose start is not recorded must not be
/// written; what was written so far stays in the report, and the error is
/// returned beside it, never instead of it.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    r: &Renderer<'_>,
    desired: &mut Desired,
    backends: &dyn Backends,
    orphans: &[String],
    meta: &ApplyMeta,
    opts: &Options,
    pass: &Pass,
    rollouts: &mut Rollouts,
    ctx: &Ctx<'_>,
) -> Applied {
    let mut plans = plans(r);
    if let Some(h) = ctx.handed {
        plans.retain(|p| !h.rolled.contains(&p.name));
    }
    let mut unsaved: Option<StateError> = None;
    let requests = state::pending_requests(ctx.state);
    let mut events = sync(rollouts, &plans, r, ctx.revision, &requests, ctx.now);
    if !opts.dry_run {
        for w in requests.keys() {
            state::clear_request(ctx.state, w);
        }
    }
    let topo = &r.checked.topo;
    let mut report: Option<Report> = None;
    let mut wave: Option<BTreeSet<usize>> = pass.targets.clone();
    let mut first = true;
    // What the relays are handed: as placed, and again when a stage moves
    // (a level that runs the rollouts, with relays to hand them to).
    let hands_down = ctx.handed.is_none() && crate::core::relay::any_relay(r.checked);
    let mut down = ctx.down.clone();
    let mut down_raw = if hands_down {
        handed_down(&plans, rollouts, r)
    } else {
        Above::default()
    };
    let mut bases = BTreeMap::new();
    loop {
        // Clusters of the stages this wave starts are applying.
        for p in &plans {
            let rec = rollouts.workloads.get_mut(&p.name).expect("synced");
            if rec.phase != Phase::Progressing {
                continue;
            }
            for c in p.assigned.members(topo, rec.stage) {
                // The run's clusters are those it rendered (`--cluster`
                // and `--subtree` narrow it); a wave narrows it further.
                if desired.has(c) && wave.as_ref().is_none_or(|w| w.contains(&c)) {
                    if let Some(cr) = rec.cluster_mut(topo.name(c)) {
                        cr.state = ClusterPhase::Applying;
                    }
                }
            }
        }
        if !opts.dry_run && !plans.is_empty() {
            if let Err(e) = rollouts.save(ctx.state) {
                unsaved = Some(e);
                break;
            }
        }
        let mut held = holds(&plans, rollouts, r);
        for (c, ws) in desired.kept() {
            held.entry(c.clone())
                .or_default()
                .extend(ws.iter().cloned());
        }
        if let Some(h) = ctx.handed {
            for (c, ws) in &h.held {
                held.entry(c.clone())
                    .or_default()
                    .extend(ws.iter().cloned());
            }
        }
        let wave_pass = Pass {
            targets: wave.clone(),
            scope: Scope::Hold(std::sync::Arc::new(held)),
            ..pass.clone()
        };
        let got = apply::run_rendered(
            r,
            &*desired,
            backends,
            if first { orphans } else { &[] },
            meta,
            opts,
            &wave_pass,
        );
        first = false;
        let outcomes: BTreeMap<String, Outcome> = got
            .clusters
            .iter()
            .map(|c| (c.cluster.clone(), c.outcome.clone()))
            .collect();
        report = Some(match report {
            None => got,
            Some(prev) => merge(prev, got),
        });
        if opts.dry_run {
            break;
        }
        let mut next: BTreeSet<usize> = BTreeSet::new();
        for p in &plans {
            let rec = rollouts.workloads.get_mut(&p.name).expect("synced");
            if rec.phase != Phase::Progressing {
                continue;
            }
            let members = p.assigned.members(topo, rec.stage);
            // Members below a relay this run handed down to are judged by
            // that relay's report.
            let (relayed, own): (Vec<usize>, Vec<usize>) = members
                .iter()
                .partition(|&&c| super::relays::relay_of(r, desired, c).is_some());
            if own.iter().any(|c| !outcomes.contains_key(topo.name(*c))) {
                // Not every cluster of the stage was in this apply (it was
                // given --cluster or --subtree): the gate waits for a run
                // that covers the stage.
                continue;
            }
            let verdicts = match super::relays::gate_verdicts(
                r,
                desired,
                backends,
                &p.name,
                &relayed,
                &down,
                opts.relay_wait,
                pass.cancel.as_ref(),
            ) {
                Ok(v) => v,
                Err(waiting) => {
                    events.push(Event {
                        workload: p.name.clone(),
                        message: format!(
                            "{} waits for {waiting}",
                            rec.stages[rec.stage.min(rec.stages.len() - 1)].name
                        ),
                        failed: false,
                    });
                    continue;
                }
            };
            let decided = gate(
                r, desired, backends, p, rec, &own, &verdicts, &outcomes, ctx.now,
            );
            let stage_name = rec.stages[rec.stage.min(rec.stages.len() - 1)].name.clone();
            match decided {
                Gate::Next => {
                    events.push(Event {
                        workload: p.name.clone(),
                        message: format!(
                            "{} healthy; {} starts",
                            p.spec.stage_name(rec.stage - 1),
                            stage_name
                        ),
                        failed: false,
                    });
                    let starting = p.assigned.members(topo, rec.stage);
                    let below: Vec<&str> = starting
                        .iter()
                        .filter_map(|&c| super::relays::relay_of(r, desired, c))
                        .map(|rl| topo.name(rl))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    if !below.is_empty() {
                        events.push(Event {
                            workload: p.name.clone(),
                            message: format!(
                                "{stage_name} goes down to the clusters below relay {} with a new handoff",
                                below.join(", ")
                            ),
                            failed: false,
                        });
                    }
                    next.extend(starting);
                }
                Gate::Paused | Gate::Complete => events.push(Event {
                    workload: p.name.clone(),
                    message: rec.message.clone().unwrap_or_else(|| {
                        format!("rollout of {} complete", rec.revision.revision)
                    }),
                    failed: false,
                }),
                Gate::Failed => {
                    let mut message = rec.message.clone().unwrap_or_default();
                    if p.spec.rollback == RollbackPolicy::Auto {
                        message.push_str("; ");
                        // Read under this fleet's name: object labels carry
                        // it, so the old render must own the same objects.
                        let names: Vec<String> =
                            own.iter().map(|&c| topo.name(c).to_string()).collect();
                        let below: BTreeMap<String, String> = relayed
                            .iter()
                            .filter_map(|&c| {
                                let rl = super::relays::relay_of(r, desired, c)?;
                                Some((topo.name(c).to_string(), topo.name(rl).to_string()))
                            })
                            .collect();
                        message.push_str(&rollback(
                            backends,
                            r.checked,
                            p,
                            rec,
                            (&names, &below),
                            opts,
                            pass,
                            (ctx, &mut bases),
                        ));
                    } else {
                        message.push_str("; the stage is left as it is (rollback: none)");
                    }
                    message.push_str(&format!("; stages after {stage_name} did not start"));
                    rec.message = Some(message.clone());
                    events.push(Event {
                        workload: p.name.clone(),
                        message,
                        failed: true,
                    });
                }
            }
        }
        // A stage that moved changes what the relays are handed (a stage
        // that starts below one, a rollback below one): hand it down now,
        // in this run, and take the relays into the next wave.
        if hands_down {
            let now = handed_down(&plans, rollouts, r);
            if now != down_raw {
                down_raw = now.clone();
                down = now;
                super::relay_rollback::load(ctx.input, r.checked, &mut down, ctx.bases, &mut bases);
                let renderers =
                    super::relay_rollback::renderers(ctx.bases.iter().chain(&bases), |_| {
                        Vec::new()
                    });
                let handed = super::handoff::add_to(
                    desired,
                    r,
                    &ctx.revision.to_string(),
                    &down,
                    &renderers,
                );
                next.extend(handed);
            }
        }
        let cancelled = pass
            .cancel
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst));
        if next.is_empty() || cancelled {
            break;
        }
        // The next wave: the clusters of the stages that start, within the
        // clusters asked for, and not below a cluster that failed.
        let blocked: Vec<usize> = report
            .as_ref()
            .map(|rep| {
                rep.clusters
                    .iter()
                    .filter(|c| {
                        matches!(c.outcome, Outcome::Failed { .. } | Outcome::Skipped { .. })
                    })
                    .filter_map(|c| topo.get(&c.cluster))
                    .collect()
            })
            .unwrap_or_default();
        next.retain(|&c| {
            desired.has(c)
                && pass.targets.as_ref().is_none_or(|t| t.contains(&c))
                && !blocked.iter().any(|&b| topo.in_subtree(c, b))
        });
        if next.is_empty() {
            break;
        }
        wave = Some(next);
    }
    // A stage that failed in an earlier run is still failed: say so (and
    // fail the run) until a fix starts a new rollout or it is continued.
    for p in &plans {
        let rec = &rollouts.workloads[&p.name];
        if matches!(rec.phase, Phase::Failed | Phase::RolledBack)
            && !events.iter().any(|e| e.workload == p.name && e.failed)
        {
            events.push(Event {
                workload: p.name.clone(),
                message: format!(
                    "{} of {} is {} ({}); push a fix, or `canopy rollout continue {}` to try the stage again",
                    rec.stages[rec.stage].name,
                    rec.revision.revision,
                    rec.phase.as_str(),
                    rec.message.as_deref().unwrap_or(""),
                    p.name
                ),
                failed: true,
            });
        }
    }
    if unsaved.is_none() && !opts.dry_run && !plans.is_empty() {
        unsaved = rollouts.save(ctx.state).err();
    }
    Applied {
        report: report.unwrap_or_default(),
        events,
        unsaved,
    }
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every cluster written (or computed, on a dry run), wave by wave.
    pub report: Report,
    pub events: Vec<Event>,
    /// The rollout record could not be saved: the rollout stopped before
    /// its next wave, and `report` still says what was written.
    pub unsaved: Option<StateError>,
}

/// The health gate of `rec`'s current stage: each cluster applied in this
/// run must hold the workload's objects healthy within the health timeout;
/// one that failed or was skipped counts as unhealthy.
#[allow(clippy::too_many_arguments)]
fn gate(
    r: &Renderer<'_>,
    desired: &Desired,
    backends: &dyn Backends,
    p: &Plan,
    rec: &mut Record,
    members: &[usize],
    relayed: &super::relays::Verdicts,
    outcomes: &BTreeMap<String, Outcome>,
    now: SystemTime,
) -> Gate {
    let topo = &r.checked.topo;
    let timeout = p.spec.health_timeout();
    let checks: Vec<(String, Result<(), String>, bool)> = members
        .par_iter()
        .map(|&c| {
            let name = topo.name(c).to_string();
            let verdict = match &outcomes[&name] {
                Outcome::Failed { error, .. } => Err(error.summary()),
                Outcome::Skipped { reason } => Err(format!("skipped: {reason}")),
                Outcome::Changed(_) | Outcome::Unchanged(_) => {
                    // The objects this run applied, not a second render.
                    let objects: Vec<serde_json::Value> = desired
                        .objects(c)
                        .filter(|(w, _, _)| *w == Some(p.workload))
                        .map(|(_, _, v)| v)
                        .collect();
                    let refs: Vec<&serde_json::Value> = objects.iter().collect();
                    backends
                        .backend(&name)
                        .wait_healthy(&refs, timeout, &r.checked.health)
                        .map_err(|e| e.summary())
                }
            };
            let changed = outcomes[&name]
                .changes()
                .is_some_and(|ch| ch.workloads.contains(&p.name));
            (name, verdict, changed)
        })
        .collect();
    let mut unhealthy = relayed.unnamed;
    let mut changed = relayed.changed;
    let relayed_checks = relayed
        .clusters
        .iter()
        .map(|(c, v)| (c.clone(), v.clone(), false));
    for (name, verdict, ch) in checks.into_iter().chain(relayed_checks) {
        changed |= ch;
        let cr = rec.cluster_mut(&name).expect("a member of the stage");
        match verdict {
            Ok(()) => {
                cr.state = ClusterPhase::Healthy;
                cr.detail = None;
            }
            Err(e) => {
                unhealthy += 1;
                cr.state = ClusterPhase::Failed;
                cr.detail = Some(e);
            }
        }
    }
    let allowed = p
        .spec
        .max_unavailable
        .as_ref()
        .and_then(|m| m.of(members.len() + relayed.clusters.len()))
        .unwrap_or(0);
    let pause = p.spec.pause_after(rec.stage);
    rec.gate(unhealthy, allowed, changed, pause, now)
}

/// Applies the failed stage's clusters this level reaches again, this
/// workload alone, at the revision the rollout started from; those below a
/// relay (`below`: cluster → relay) are rolled back by the relay, with the
/// handoff this run writes next ([`super::relay_rollback`]). Returns what
/// happened, in words.
#[allow(clippy::too_many_arguments)]
fn rollback(
    backends: &dyn Backends,
    checked: &crate::core::validate::Checked,
    p: &Plan,
    rec: &mut Record,
    (members, below): (&[String], &BTreeMap<String, String>),
    opts: &Options,
    pass: &Pass,
    (ctx, bases): (
        &Ctx<'_>,
        &mut BTreeMap<String, crate::core::relay::BaseFleet>,
    ),
) -> String {
    let Some(base) = rec.from.clone() else {
        return "no earlier complete rollout is recorded, so there is nothing to roll back to: the stage is left as it is".into();
    };
    let Some(commit) = base.commit.clone() else {
        return format!(
            "{} is not a Git commit, so it cannot be rendered again: the stage is left as it is",
            base.revision
        );
    };
    let name = &p.name;
    let Some(input) = ctx.input else {
        return format!(
            "a relay has no Git history to render {} from, so the stage is left as it is; the root process rolls back",
            base.revision
        );
    };
    let fleet = checked.fleet.name.as_str();
    let (old, _, _) = match crate::ops::base::checked_at(input, &commit, fleet, checked) {
        Ok(x) => x,
        Err(e) => {
            return format!(
                "rollback to {} failed: {e}; the stage is left as it is",
                base.revision
            )
        }
    };
    let old_r = Renderer::new(&old);
    let mut targets = BTreeSet::new();
    let mut absent = Vec::new();
    for n in members {
        match old.topo.get(n) {
            Some(i) => {
                targets.insert(i);
            }
            None => absent.push(n.clone()),
        }
    }
    let mut meta = ApplyMeta::new(&base.revision, ctx.now);
    meta.impersonate = crate::backend::Impersonation::of(&old);
    let back_opts = Options {
        dry_run: false,
        prune: true,
        prune_clusters: false,
        keep_values: false,
        wait: None,
        ..opts.clone()
    };
    let back = Pass {
        targets: Some(targets),
        scope: Scope::Only(name.clone()),
        cancel: pass.cancel.clone(),
        progress: None,
    };
    let report = match apply::run(&old_r, backends, &[], &meta, &back_opts, &back) {
        Ok(rep) => rep,
        Err(d) => {
            return format!(
                "rollback to {} failed: the fleet there does not render ({} error(s)); the stage is left as it is",
                base.revision,
                d.errors().count()
            )
        }
    };
    let mut done = 0;
    let mut failed = Vec::new();
    let mut written = Vec::new();
    for cr in &report.clusters {
        let Some(rc) = rec.cluster_mut(&cr.cluster) else {
            continue;
        };
        match &cr.outcome {
            Outcome::Changed(ch) | Outcome::Unchanged(ch) => {
                let (a, b, d) = ch.counts();
                for c in &ch.changes {
                    let sign = match c {
                        crate::core::diff::Change::Create { .. } => '+',
                        crate::core::diff::Change::Update { .. } => '~',
                        crate::core::diff::Change::Delete { .. } => '-',
                    };
                    written.push(format!("{}: {sign} {}", cr.cluster, c.key()));
                }
                rc.state = ClusterPhase::RolledBack;
                rc.detail = Some(format!(
                    "{}; rolled back to {}: {a} created, {b} updated, {d} deleted",
                    rc.detail.as_deref().unwrap_or("unhealthy"),
                    base.revision
                ));
                done += 1;
            }
            Outcome::Failed { error, changed } => {
                written.extend(changed.iter().map(|k| format!("{}: {k}", cr.cluster)));
                rc.detail = Some(format!(
                    "rollback failed after changing {} object(s): {error}",
                    changed.len()
                ));
                failed.push(cr.cluster.clone());
            }
            Outcome::Skipped { reason } => {
                rc.detail = Some(format!("rollback skipped: {reason}"));
                failed.push(cr.cluster.clone());
            }
        }
    }
    let mut relays: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, relay) in below {
        if old.topo.get(n).is_none() {
            absent.push(n.clone());
            continue;
        }
        if let Some(rc) = rec.cluster_mut(n) {
            rc.state = ClusterPhase::RolledBack;
            rc.detail = Some(format!(
                "{}; rolled back to {} by relay {relay}",
                rc.detail.as_deref().unwrap_or("unhealthy"),
                base.revision
            ));
            *relays.entry(relay).or_default() += 1;
        }
    }
    for n in &absent {
        if let Some(rc) = rec.cluster_mut(n) {
            rc.detail = Some(format!(
                "not in the fleet at {}: left as it is",
                base.revision
            ));
        }
    }
    rec.phase = Phase::RolledBack;
    let mut msg = format!(
        "rolled back {done} cluster(s) of {} to {}",
        rec.stages[rec.stage].name, base.revision
    );
    if !written.is_empty() {
        msg.push_str(&format!(" ({})", written.join(", ")));
    }
    if !relays.is_empty() {
        let each: Vec<String> = relays
            .iter()
            .map(|(rl, n)| format!("{n} below relay {rl}"))
            .collect();
        msg.push_str(&format!(
            "; handed down to roll back: {} (the relay's report follows)",
            each.join(", ")
        ));
    }
    if !failed.is_empty() {
        msg.push_str(&format!("; rollback failed on {}", failed.join(", ")));
    }
    // The relays' handoffs this run writes next carry this fleet: it was
    // read from Git once, here.
    if !relays.is_empty() && !ctx.bases.contains_key(&base.revision) {
        bases
            .entry(base.revision.clone())
            .or_insert_with(|| crate::core::relay::BaseFleet::whole(old));
    }
    msg
}

/// Two waves' reports as one: per cluster, a failure or skip of either
/// wins, changes add up.
fn merge(mut a: Report, b: Report) -> Report {
    let mut later: BTreeMap<String, (Outcome, Option<u64>)> = b
        .clusters
        .into_iter()
        .map(|c| (c.cluster, (c.outcome, c.version)))
        .collect();
    for c in &mut a.clusters {
        let Some((o, version)) = later.remove(&c.cluster) else {
            continue;
        };
        // The state as the later wave left it.
        c.version = version;
        let prev = std::mem::replace(
            &mut c.outcome,
            Outcome::Unchanged(crate::core::diff::ClusterChanges::default()),
        );
        c.outcome = match (prev, o) {
            (f @ Outcome::Failed { .. }, _) | (_, f @ Outcome::Failed { .. }) => f,
            (s @ Outcome::Skipped { .. }, _) | (_, s @ Outcome::Skipped { .. }) => s,
            (Outcome::Unchanged(_), o) => o,
            (Outcome::Changed(mut x), Outcome::Changed(y)) => {
                x.changes.extend(y.changes);
                x.kept = y.kept;
                x.unchanged = y.unchanged;
                x.workloads.extend(y.workloads);
                Outcome::Changed(x)
            }
            (Outcome::Changed(x), Outcome::Unchanged(_)) => Outcome::Changed(x),
        };
    }
    a.orphans.extend(b.orphans);
    a
}

/// When the next timed pause ends, if any: when `watch` should look again.
pub fn next_wakeup(rollouts: &Rollouts) -> Option<SystemTime> {
    rollouts
        .workloads
        .values()
        .filter_map(Record::paused_until)
        .min()
}

/// One cluster in `canopy rollout status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterView {
    pub cluster: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StageView {
    pub name: String,
    pub state: String,
    pub clusters: Vec<ClusterView>,
}

/// A workload's rollout as `canopy rollout status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub workload: String,
    /// `not started` when nothing is recorded yet.
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The fleet has a change of this workload that the record is not
    /// about: the next apply starts a new rollout.
    pub outdated: bool,
    pub stages: Vec<StageView>,
}

/// The view of `p`'s rollout from its record (if any), sorted as the stages
/// and, in each, the clusters in name order.
pub fn view(p: &Plan, rec: Option<&Record>, r: &Renderer<'_>) -> View {
    let Some(rec) = rec else {
        return View {
            workload: p.name.clone(),
            phase: "not started".into(),
            revision: None,
            from: None,
            paused_until: None,
            message: None,
            outdated: false,
            stages: p
                .records(r)
                .into_iter()
                .map(|s| stage_view(s, "pending"))
                .collect(),
        };
    };
    let stages = rec
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let state = match (i.cmp(&rec.stage), rec.phase) {
                (_, Phase::Complete) | (std::cmp::Ordering::Less, _) => "healthy",
                (std::cmp::Ordering::Greater, _) => "pending",
                (_, Phase::Paused) => "healthy",
                (_, Phase::Failed) => "failed",
                (_, Phase::RolledBack) => "rolled back",
                (_, Phase::Progressing) => {
                    if s.clusters
                        .values()
                        .any(|c| c.state == ClusterPhase::Applying)
                    {
                        "applying"
                    } else {
                        "pending"
                    }
                }
            };
            stage_view(s.clone(), state)
        })
        .collect();
    View {
        workload: p.name.clone(),
        phase: rec.phase.as_str().into(),
        revision: Some(rec.revision.revision.clone()),
        from: rec.from.as_ref().map(|b| b.revision.clone()),
        paused_until: rec.paused_until.clone(),
        message: rec.message.clone(),
        outdated: rec.target != p.target,
        stages,
    }
}

fn stage_view(s: StageRecord, state: &str) -> StageView {
    StageView {
        name: s.name,
        state: state.into(),
        clusters: s
            .clusters
            .into_iter()
            .map(|(cluster, c)| ClusterView {
                cluster,
                state: c.state.as_str().into(),
                detail: c.detail,
            })
            .collect(),
    }
}

/// The rollout plan of workload `name`; an error names the workloads that
/// have one.
pub fn plan_of(r: &Renderer<'_>, name: &str) -> Result<Plan, OpsError> {
    let c = r.checked;
    if c.fleet.workload(name).is_none() {
        return Err(OpsError::unknown_workload(c, name));
    }
    let mut plans = plans(r);
    let with: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    match plans.iter().position(|p| p.name == name) {
        Some(i) => Ok(plans.swap_remove(i)),
        None => Err(OpsError::Refused(format!(
            "workload {name:?} has no staged rollout (it goes to every cluster at once)\n  help: give it spec.rollout.stages, or give the fleet a Defaults document with spec.rollout; workloads with one: {}",
            if with.is_empty() { "none".to_string() } else { with.join(", ") }
        ))),
    }
}

/// `canopy rollout status`: `workload`'s rollout as recorded in `state`.
pub fn status(loaded: &Loaded, rollouts: &Rollouts, workload: &str) -> Result<View, OpsError> {
    let r = super::run::placed_healthy(&loaded.checked)?;
    let p = plan_of(&r, workload)?;
    Ok(view(&p, rollouts.workloads.get(workload), &r))
}

/// `canopy rollout continue`: checks that the recorded rollout of
/// `workload` is this revision's and can go on, and leaves a request that
/// the next run acts on. Returns the pid of a `canopy watch` that holds the
/// state folder (it goes on with the request itself); `None` means nobody
/// does, and the caller applies.
pub fn request_continue(
    loaded: &Loaded,
    state: &Path,
    rollouts: &Rollouts,
    workload: &str,
) -> Result<Option<String>, OpsError> {
    let r = super::run::placed_healthy(&loaded.checked)?;
    let p = plan_of(&r, workload)?;
    let Some(rec) = rollouts.workloads.get(workload) else {
        return Err(OpsError::Refused(format!(
            "no rollout of {workload} is recorded in {}\n  help: `canopy apply` starts it",
            state.display()
        )));
    };
    if rec.target != p.target {
        return Err(OpsError::Refused(format!(
            "the recorded rollout of {workload} ({}) is not of this revision's change\n  help: `canopy apply` starts the rollout of the new change",
            rec.revision.revision
        )));
    }
    // Checked here so that a mistaken continue says why at once.
    rec.clone()
        .resume(SystemTime::now())
        .map_err(|e| OpsError::Refused(format!("{workload}: {e}")))?;
    state::request_continue(state, workload, &p.target)?;
    // A watch holding the state folder acts on the request itself.
    match crate::backend::local::LocalStore::open(state) {
        Err(crate::backend::BackendError::Locked { pid, .. }) => Ok(Some(pid)),
        Err(e) => Err(OpsError::Store(e)),
        Ok(_lock) => Ok(None),
    }
}
