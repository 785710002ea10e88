//! `canopy explain`: why each cluster was or was not chosen for a workload and
//! how its replicas were computed, level by level (pure; printing is in
//! `output`).

use std::time::Duration;

use crate::core::model::{DynamicWeight, ReplicaMode};
use crate::core::schedule::{self, Division};
use crate::core::select;
use crate::core::validate::Checked;

/// The verdict for one cluster.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterLine {
    pub cluster: String,
    pub depth: usize,
    pub chosen: bool,
    pub reason: String,
    /// Divided only: the cluster's weight and its replicas.
    pub weight: Option<u64>,
    pub replicas: Option<u32>,
    /// The cluster joined the fleet (`canopy join`) rather than being
    /// written in Git.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
}

/// One division step in words.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// `(top)` or the dividing cluster.
    pub node: String,
    pub share: u32,
    /// (party label, weight, seats)
    pub parties: Vec<(String, u64, u32)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub workload: String,
    pub source: String,
    /// Where the manifests come from when not the folder's files: a
    /// kustomization, built once for every cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests_from: Option<String>,
    pub mode: String,
    /// Divided only: the total and where it came from.
    pub total: Option<(u32, String)>,
    pub weights: Option<String>,
    pub clusters: Vec<ClusterLine>,
    pub steps: Vec<Step>,
    pub error: Option<String>,
    /// Calm rescheduling: what it kept, and where a fresh division would
    /// differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calm: Option<String>,
    /// The tenant that owns the workload, with where its rules are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A Helm workload: per chosen cluster, the Kubernetes version and
    /// APIs its chart was rendered for, and where they came from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rendered_for: Vec<(String, String)>,
    /// The health rules users wrote that judge its objects, by kind, and
    /// where each is written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub health_rules: Vec<String>,
}

/// Explains workload `wi`; with `only`, the steps are those on that
/// cluster's path from the top. `health` says which clusters are down, and
/// since when, at `now` (failover).
pub fn explain(
    checked: &Checked,
    wi: usize,
    only: Option<usize>,
    health: &crate::core::failover::Health,
    now: std::time::SystemTime,
) -> Explanation {
    let w = &checked.fleet.workloads[wi];
    let topo = &checked.topo;
    let p = &w.spec.placement;
    let after = w.spec.failover.after();
    let failed = health.failed(topo, after, now);
    let placed = schedule::place(checked, wi, true, &failed);
    let (chosen, weight, assignment, error) = match &placed {
        Ok(pl) => (
            pl.chosen.clone(),
            pl.weight.clone(),
            pl.assignment.clone(),
            None,
        ),
        Err(e) => {
            let chosen = schedule::choose(checked, w);
            let weight = schedule::weights(checked, w, &chosen);
            (chosen, weight, None, Some(e.to_string()))
        }
    };
    let divided = p.replicas.mode == ReplicaMode::Divided;
    let dynamic = p
        .replicas
        .weights
        .as_ref()
        .and_then(|ws| ws.dynamic)
        .is_some_and(|d| d == DynamicWeight::Capacity);
    let mut clusters = Vec::new();
    let by = crate::core::relay::reconcilers(checked);
    for &c in topo.preorder() {
        if only.is_some_and(|o| o != c) {
            continue;
        }
        let cl = checked.cluster(c);
        let v = select::explain(p.clusters.as_ref(), cl, c, topo);
        let (ok, mut reason) = match (v.chosen, select::blocking_taint(cl, &p.tolerations)) {
            (true, Some(t)) => (
                false,
                format!(
                    "{}, but tainted {} and not tolerated",
                    v.reason,
                    select::taint_text(t)
                ),
            ),
            (true, None) if !cl.spec.taints.is_empty() => {
                let taints: Vec<String> = cl.spec.taints.iter().map(select::taint_text).collect();
                (
                    true,
                    format!("{}; taints {} tolerated", v.reason, taints.join(", ")),
                )
            }
            (ok, _) => (ok, v.reason),
        };
        debug_assert_eq!(ok, chosen[c]);
        if divided && ok && dynamic {
            let per = p
                .replicas
                .weights
                .as_ref()
                .and_then(|ws| ws.per_replica.as_ref());
            let (_, limit) = schedule::capacity_weight(&checked.capacity(c), per);
            reason.push_str(&format!("; capacity weight limited by {limit}"));
            if cl.spec.live_capacity {
                reason.push_str(&live_text(checked.measured.get(cl.name()).as_ref(), now));
            }
        }
        let replicas = assignment.as_ref().filter(|_| ok).map(|a| a.replicas[c]);
        if let Some(down) = health.down_for(cl.name(), now) {
            let since = &health.unreachable_since[cl.name()];
            if divided && failed[c] {
                reason.push_str(&format!(
                    "; down since {since} ({} ≥ failover.after {}): failed over, its replicas moved to its healthy siblings (its objects stay, scaled to 0)",
                    humantime::format_duration(Duration::from_secs(down.as_secs())),
                    w.spec.failover.after
                ));
            } else {
                reason.push_str(&format!("; down since {since}"));
            }
        }
        if replicas == Some(0) && !(divided && failed[c]) {
            reason.push_str("; given no replicas, so nothing lands here");
        }
        if let Some(relay) = by[c] {
            reason.push_str(&format!("; reconciled by relay {}", topo.name(relay)));
        }
        clusters.push(ClusterLine {
            cluster: cl.name().to_string(),
            depth: topo.depth(c),
            chosen: ok,
            reason,
            weight: (divided && ok).then_some(weight[c]),
            replicas,
            joined: crate::core::join::is_joined(cl),
        });
    }
    let on_path = |d: &Division| match (only, d.node) {
        (None, _) => true,
        (Some(_), None) => true,
        (Some(o), Some(n)) => topo.in_subtree(o, n),
    };
    let steps = assignment
        .as_ref()
        .map(|a| {
            a.divisions
                .iter()
                .filter(|d| on_path(d))
                .map(|d| Step {
                    node: d
                        .node
                        .map_or_else(|| "(top)".to_string(), |n| topo.name(n).to_string()),
                    share: d.share,
                    parties: d
                        .parties
                        .iter()
                        .map(|p| {
                            let mut label = if p.own {
                                format!("{} itself", topo.name(p.cluster))
                            } else {
                                format!("subtree {}", topo.name(p.cluster))
                            };
                            if p.failed {
                                label.push_str(" [failed over]");
                            }
                            // Bounds said where they matter: a least that
                            // raised the party, a most it reached (the
                            // overflow went to its siblings).
                            if p.floor > 0 {
                                label.push_str(&format!(" [at least {}]", p.floor));
                            }
                            if let Some(cap) = p.cap.filter(|&c| c > 0 && u64::from(p.seats) >= c) {
                                label.push_str(&format!(" [full: at most {cap}]"));
                            }
                            (label, p.weight, p.seats)
                        })
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let total = divided.then(|| {
        let t = checked.facts[wi].total.unwrap_or(0);
        let from = if p.replicas.total.is_some() {
            "spec.placement.replicas.total".to_string()
        } else {
            "the manifest's spec.replicas".to_string()
        };
        let from = match assignment.as_ref().and_then(|a| a.shortfall) {
            Some((_, placed)) => {
                format!("{from}; {placed} placed: what fits (onShortfall: PlaceWhatFits)")
            }
            None => from,
        };
        (t, from)
    });
    let limits = if p.replicas.limits.is_empty() {
        String::new()
    } else {
        format!("; {} limit rule(s) on subtrees", p.replicas.limits.len())
    };
    let weights = divided
        .then(|| match &p.replicas.weights {
            None => "equal (1 per chosen cluster)".to_string(),
            Some(ws) if ws.static_weights.is_some() => {
                "static rules (largest matching weight)".to_string()
            }
            Some(_) => {
                "dynamic: replicas that fit in each cluster's capacity, also the most it takes"
                    .to_string()
            }
        })
        .map(|w| w + &limits);
    let manifests_from = w
        .spec
        .kustomize
        .as_ref()
        .map(|k| {
            format!(
                "kustomize build {}/{} (one build, shared by every cluster)",
                w.dir,
                k.path.trim_start_matches("./")
            )
        })
        .or_else(|| {
            let h = w.spec.helm.as_ref()?;
            let chart = match (&h.repo, &h.version) {
                (Some(repo), Some(v)) => format!("{} {v} from {repo}", h.chart),
                (None, Some(v)) => format!("{} {v}", h.chart),
                _ => format!("{}/{}", w.dir, h.chart.trim_start_matches("./")),
            };
            let runs = w.manifests.len();
            let clusters = checked.facts[wi]
                .variant
                .as_ref()
                .map_or(0, |v| v.iter().flatten().count());
            Some(format!(
                "helm template {chart} ({runs} distinct render{} for {clusters} chosen cluster{})",
                if runs == 1 { "" } else { "s" },
                if clusters == 1 { "" } else { "s" },
            ))
        });
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let rendered_for = w
        .spec
        .helm
        .iter()
        .flat_map(|_| topo.preorder())
        .filter(|&&c| chosen[c] && only.is_none_or(|o| o == c))
        .map(|&c| {
            let cl = checked.cluster(c);
            let caps = crate::core::capabilities::of(cl);
            (cl.name().to_string(), caps.describe(since_epoch))
        })
        .collect();
    let calm = calm_text(checked, wi, &failed, &placed);
    let tenant = checked.tenancy.owner[wi].map(|t| {
        let t = &checked.fleet.tenants[t];
        format!("{} ({})", t.name(), t.source.file)
    });
    Explanation {
        workload: w.name().to_string(),
        source: w.source.file.clone(),
        manifests_from,
        mode: format!("{:?}", p.replicas.mode),
        total,
        weights,
        clusters,
        steps,
        error,
        calm,
        tenant,
        rendered_for,
        health_rules: checked.health.for_workload(w.name()),
    }
}

/// For a calm workload: where its replicas come from, and the clusters a
/// fresh division would give a different number (bounded).
fn calm_text(
    checked: &Checked,
    wi: usize,
    failed: &[bool],
    placed: &Result<schedule::WorkloadPlacement, schedule::ScheduleError>,
) -> Option<String> {
    let w = &checked.fleet.workloads[wi];
    let r = &w.spec.placement.replicas;
    if r.rescheduling != crate::core::model::Rescheduling::Calm
        || r.mode != crate::core::model::ReplicaMode::Divided
    {
        return None;
    }
    let held = checked.previous.all();
    if !held.contains_key(w.name()) {
        return Some("calm, nothing applied yet: a fresh division".into());
    }
    let calm = placed.as_ref().ok()?.assignment.as_ref()?;
    let fresh = schedule::place_fresh(checked, wi, failed).ok()?;
    let fresh = fresh.assignment.as_ref()?;
    let differ: Vec<String> = (0..checked.topo.len())
        .filter(|&c| calm.replicas[c] != fresh.replicas[c])
        .map(|c| {
            format!(
                "{} {} (calm {})",
                checked.topo.name(c),
                fresh.replicas[c],
                calm.replicas[c]
            )
        })
        .collect();
    Some(if differ.is_empty() {
        "calm: keeps the replicas last applied and divides only the difference; a fresh division gives the same".into()
    } else {
        let shown = differ.len().min(10);
        let more = if differ.len() > shown {
            format!(", {} more", differ.len() - shown)
        } else {
            String::new()
        };
        format!(
            "calm: keeps the replicas last applied and divides only the difference; a fresh division would give {}{more}",
            differ[..shown].join(", ")
        )
    })
}

/// How `explain` tells where a live capacity comes from and how old it is.
fn live_text(
    live: Option<&crate::core::model::LiveCapacity>,
    now: std::time::SystemTime,
) -> String {
    let Some(l) = live else {
        return "; live capacity not read yet (spec.capacity used)".into();
    };
    let q = |q: &Option<crate::core::model::Quantity>| {
        q.as_ref()
            .and_then(|q| q.value().ok())
            .map_or("-".to_string(), |v| format!("{v}"))
    };
    let at = std::time::UNIX_EPOCH + Duration::from_secs(l.read_at);
    let age = now.duration_since(at).unwrap_or_default().as_secs();
    format!(
        "; live capacity read {} ago: cpu {}, memory {}, pods {}",
        humantime::format_duration(Duration::from_secs(age)),
        q(&l.capacity.cpu),
        q(&l.capacity.memory),
        q(&l.capacity.pods)
    )
}
