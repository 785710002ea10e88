//! `canopy status`: each cluster's state (in sync, drifted, never applied,
//! unreachable, failed, skipped) from a dry run, and per workload the
//! replicas each cluster should run (from the render) and the replicas
//! ready there (from the cluster), summed up the tree by
//! [`crate::core::aggregate`], with what each relay reports for the
//! clusters below it.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde_json::Value;

use super::apply::{place_in_scope, Desired, Options, Outcome, Report};
use super::error::OpsError;
use super::run::{Selection, Session};
use crate::backend::fleet::Backends;
use crate::backend::{FailReason, TypeRef};
use crate::core::aggregate::{aggregate, cluster_counts, Counts, WorkloadStatus};
use crate::core::kinds;
use crate::core::model::ObjectKey;
use crate::core::render::Renderer;
use crate::source::input::Loaded;

/// A desired object that carries replicas: (workload index, identity,
/// replica pointer, object).
type Replicated = (usize, ObjectKey, String, Value);

/// What each relay this run handed down to last reported (with the digest
/// of the handoff its index names), read once per relay: by relay index,
/// the report, none yet, or why it cannot be read.
pub type RelayReports =
    BTreeMap<usize, Result<Option<(String, crate::core::relay_report::RelayReport)>, String>>;

/// Reads [`RelayReports`] from the relay clusters `desired` hands down to.
pub fn relay_reports(r: &Renderer<'_>, desired: &Desired, backends: &dyn Backends) -> RelayReports {
    let topo = &r.checked.topo;
    let relays: Vec<usize> = (0..topo.len())
        .filter(|&c| desired.handoff(c).is_some())
        .collect();
    relays
        .into_par_iter()
        .map(|c| {
            let backend = backends.backend(topo.name(c));
            let rep = super::handoff::read_report(backend.as_ref()).map_err(|e| e.to_string());
            (c, rep)
        })
        .collect()
}

/// Every workload's desired and ready replicas, per cluster and per subtree,
/// from the objects the run rendered. A cluster that cannot be read counts
/// nothing as ready. Below a relay, the sums its last report gives
/// (`reports`).
pub fn workloads(
    r: &Renderer<'_>,
    desired: &Desired,
    backends: &dyn Backends,
    reports: &RelayReports,
) -> Vec<WorkloadStatus> {
    let checked = r.checked;
    let fleet = &checked.fleet;
    let topo = &checked.topo;
    let clusters: Vec<_> = desired.clusters().collect();
    let per_cluster: Vec<(usize, BTreeMap<String, Counts>)> = clusters
        .into_par_iter()
        .filter_map(|(c, objs)| {
            let mut items: Vec<Replicated> = objs
                .into_iter()
                .enumerate()
                .filter_map(|(i, (wi, key))| {
                    let wi = wi?;
                    let w = &fleet.workloads[wi];
                    let ptr = kinds::replica_pointer(
                        &key.group,
                        &key.kind,
                        &w.spec.placement.replicas.paths,
                    )?;
                    Some((wi, key.clone(), ptr.to_string(), desired.value(c, i)))
                })
                .collect();
            if items.is_empty() {
                return None;
            }
            let backend = backends.backend(topo.name(c));
            let kinds: Vec<TypeRef> = items
                .iter()
                .filter_map(|(_, _, _, v)| TypeRef::of(v))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            // The identities apply compared with, so live objects match.
            if let Ok(scopes) = backend.scopes(&kinds) {
                for (_, key, _, v) in &mut items {
                    place_in_scope(&scopes, key, v);
                }
            }
            let live = backend.list_owned(&fleet.name, &kinds).ok();
            let counts = cluster_counts(
                items
                    .iter()
                    .map(|(wi, key, ptr, v)| (fleet.workloads[*wi].name(), key, ptr.as_str(), v)),
                live.as_deref(),
                backend.has_controllers(),
            );
            Some((c, counts))
        })
        .collect();
    let mut own: BTreeMap<String, BTreeMap<usize, Counts>> = BTreeMap::new();
    for (c, counts) in per_cluster {
        for (w, n) in counts {
            own.entry(w).or_default().insert(c, n);
        }
    }
    // The clusters below a relay this run handed down to are not read from
    // here: their sums are what the relay last reported.
    let mut below: BTreeMap<String, BTreeMap<usize, Counts>> = BTreeMap::new();
    for (&c, rep) in reports {
        if let Ok(Some((_, rep))) = rep {
            for (w, n) in &rep.workloads {
                below.entry(w.clone()).or_default().insert(c, *n);
            }
        }
    }
    aggregate(topo, &own, &below)
}

/// One line of `canopy status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusLine {
    pub cluster: String,
    pub depth: usize,
    pub reachable: bool,
    /// `in-sync`, `drifted` (live differs from what was applied),
    /// `not-applied` (never applied here), `unreachable`, `error` or `skipped`.
    pub state: String,
    /// Objects that differ (for `drifted` and `not-applied`).
    pub drifted: usize,
    pub detail: Option<String>,
    pub revision: Option<String>,
    pub applied_at: Option<String>,
    /// canopy's own record of this cluster could not be read (corrupt or
    /// unreadable state file): what was last applied is unknown, not
    /// "never". `status` then exits 3, as for any state error.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub record_unreadable: bool,
    /// The relay that reconciles this cluster (`spec.relay` on an
    /// ancestor); absent for the clusters the root process reaches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_relay: Option<String>,
    /// The cluster joined the fleet (`canopy join`) rather than being
    /// written in Git.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
}

/// What `canopy status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub clusters: Vec<StatusLine>,
    pub workloads: Vec<WorkloadStatus>,
}

/// Each cluster of a dry run's report as `status` shows it, with what was
/// last applied there.
pub fn clusters(report: &Report, backends: &dyn Backends) -> Vec<StatusLine> {
    report
        .clusters
        .iter()
        .map(|cr| {
            let backend = backends.backend(&cr.cluster);
            // Only canopy's own record failing is a state error; a cluster
            // that does not answer has a record canopy cannot see.
            let (last, record_unreadable) = match backend.last_applied() {
                Ok(last) => (last, false),
                Err(e) => (None, e.reason() == FailReason::State),
            };
            let (reachable, state, drifted, detail) = match &cr.outcome {
                Outcome::Unchanged(_) => (true, "in-sync", 0, None),
                Outcome::Changed(ch) => {
                    let state = if last.is_some() {
                        "drifted"
                    } else {
                        "not-applied"
                    };
                    (true, state, ch.changes.len(), None)
                }
                Outcome::Failed { error, .. } => {
                    // A cluster that does not answer, or that canopy cannot
                    // connect or log in to, is unreachable; one that answered
                    // with an error is not.
                    let reachable = !matches!(
                        error.reason(),
                        FailReason::Unreachable | FailReason::Connection | FailReason::Unauthorized
                    );
                    (
                        reachable,
                        if reachable { "error" } else { "unreachable" },
                        0,
                        Some(error.to_string()),
                    )
                }
                Outcome::Skipped { reason } => (true, "skipped", 0, Some(reason.to_string())),
            };
            StatusLine {
                cluster: cr.cluster.clone(),
                depth: cr.depth,
                reachable,
                state: state.to_string(),
                drifted,
                detail,
                revision: last.as_ref().map(|m| m.revision.clone()),
                applied_at: last.map(|m| m.at),
                record_unreadable,
                via_relay: None,
                joined: false,
            }
        })
        .collect()
}

/// `canopy status`: a dry run (a workload a rollout holds back is not
/// drift; clusters that left the fleet are not looked at), each cluster's
/// line, and the workloads' replicas.
pub fn status(session: &mut Session<'_>, loaded: &Loaded) -> Result<Status, OpsError> {
    let opts = Options {
        dry_run: true,
        ..Options::default()
    };
    let run = session.run(loaded, &Selection::default(), opts, false)?;
    let mut clusters = clusters(&run.report, &session.backends);
    let checked = &loaded.checked;
    // The clusters below relays, from each relay's report (read once, for
    // their lines and the replica sums), in tree order.
    let reports = relay_reports(&run.placed.renderer, &run.desired, &session.backends);
    let relayed = relayed_lines(
        &run.placed.renderer,
        &run.report,
        &run.desired,
        &session.backends,
        &reports,
        std::time::SystemTime::now(),
    );
    if !relayed.is_empty() {
        let mut by_name: BTreeMap<String, StatusLine> = clusters
            .drain(..)
            .chain(relayed)
            .map(|l| (l.cluster.clone(), l))
            .collect();
        clusters = checked
            .topo
            .preorder()
            .iter()
            .filter_map(|&c| by_name.remove(checked.topo.name(c)))
            .collect();
    }
    let by = crate::core::relay::reconcilers(checked);
    for line in &mut clusters {
        line.via_relay = checked
            .topo
            .get(&line.cluster)
            .and_then(|c| by[c])
            .map(|r| checked.topo.name(r).to_string());
    }
    let workloads = workloads(
        &run.placed.renderer,
        &run.desired,
        &session.backends,
        &reports,
    );
    for l in &mut clusters {
        l.joined = checked
            .topo
            .get(&l.cluster)
            .is_some_and(|c| crate::core::join::is_joined(checked.cluster(c)));
    }
    Ok(Status {
        clusters,
        workloads,
    })
}

/// The status lines of the clusters below the relays this run reconciles,
/// from what each relay reports: its report is bounded, so a cluster is
/// `in-sync` when the relay reports the current handoff applied (or names
/// other clusters as every failure), `error` or `skipped` when the report
/// names it, `unknown` when failures go unnamed, `behind` while the relay
/// works from an older handoff, `stale` when the relay's agent stopped
/// renewing its Lease, and `pending` before any report.
pub fn relayed_lines(
    r: &Renderer<'_>,
    report: &Report,
    desired: &Desired,
    backends: &dyn Backends,
    reports: &RelayReports,
    now: std::time::SystemTime,
) -> Vec<StatusLine> {
    let topo = &r.checked.topo;
    let mut out = Vec::new();
    for cr in &report.clusters {
        // The relays this run rendered, with the handoff they would get.
        let Some((relay, handed)) = topo
            .get(&cr.cluster)
            .and_then(|c| desired.handoff(c).map(|h| (c, h.clone())))
        else {
            continue;
        };
        let backend = backends.backend(&cr.cluster);
        let rep = reports
            .get(&relay)
            .cloned()
            .unwrap_or_else(|| Err("not read".to_string()));
        let lease = super::handoff::read_lease(backend.as_ref());
        let alive = lease
            .as_ref()
            .and_then(|l| crate::core::lease::live_until(l, now))
            .is_some();
        let renewed = lease
            .as_ref()
            .and_then(|l| l.pointer("/spec/renewTime"))
            .and_then(Value::as_str)
            .map(str::to_string);
        for &c in topo.subtree(relay).iter().filter(|&&c| c != relay) {
            let name = topo.name(c);
            let (state, detail, last) = match &rep {
                Err(e) => (
                    "unknown",
                    Some(format!("cannot read relay {}'s report: {e}", cr.cluster)),
                    None,
                ),
                Ok(None) => (
                    "pending",
                    Some(format!("relay {} has not reported yet", cr.cluster)),
                    None,
                ),
                Ok(Some((_, rep))) => {
                    let named = rep.failed.iter().find(|f| f.cluster == name);
                    let line = if !alive {
                        (
                            "stale",
                            Some(match &renewed {
                                Some(t) => format!(
                                    "relay {}'s agent has not renewed its lease since {t}",
                                    cr.cluster
                                ),
                                None => format!("relay {}'s agent holds no lease", cr.cluster),
                            }),
                        )
                    } else if rep.observed.as_ref() != Some(&handed) {
                        (
                            "behind",
                            Some(format!(
                                "relay {} works from revision {}",
                                cr.cluster,
                                rep.observed
                                    .as_ref()
                                    .map(|o| o.revision.as_str())
                                    .unwrap_or("(none)")
                            )),
                        )
                    } else if let Some(f) = named {
                        (
                            if f.outcome == "skipped" {
                                "skipped"
                            } else {
                                "error"
                            },
                            Some(f.message.clone()),
                        )
                    } else if rep.unnamed_failures() > 0 {
                        (
                            "unknown",
                            Some(format!(
                                "relay {} reports {} failures it does not name",
                                cr.cluster,
                                rep.unnamed_failures()
                            )),
                        )
                    } else {
                        ("in-sync", None)
                    };
                    (line.0, line.1, Some(rep))
                }
            };
            out.push(StatusLine {
                cluster: name.to_string(),
                depth: topo.depth(c),
                reachable: state != "stale",
                state: state.to_string(),
                drifted: 0,
                detail,
                revision: last
                    .and_then(|l| l.observed.as_ref())
                    .map(|o| o.revision.clone()),
                applied_at: last.map(|l| l.at.clone()),
                record_unreadable: false,
                via_relay: None,
                joined: false,
            });
        }
    }
    out
}
