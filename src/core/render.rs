//! Rendering (pure): the exact objects each cluster should run.
//!
//! Per cluster and per workload that lands there, each manifest file is
//! rendered as a minijinja template (strict: an undefined variable is an
//! error), parsed, given its default namespace, its replicas from the
//! schedule, the matching overrides in priority order and canopy's ownership
//! labels. The cluster's objects are then checked for duplicates and sorted in
//! apply order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use rayon::prelude::*;
use serde_json::{json, Map, Value};

use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::hash::StableHasher;
use crate::core::image::rewrite_images;
use crate::core::kinds;
use crate::core::model::*;
use crate::core::schedule::{self, WorkloadPlacement};
use crate::core::validate::Checked;
use crate::core::yaml::{
    depth, parse_stream, parse_template_slots, plain_scalar, value_at_mut, ScalarStyle, Seg,
    YamlPath, MAX_DEPTH,
};

/// How a template file is rendered for each cluster.
///
/// Text templating renders the whole file and parses the result: correct
/// for any template, but YAML parsing then dominates the cost of a large
/// fleet. When every template expression sits inside a single-line string
/// value, the file is parsed once and only those values are rendered per
/// cluster (structural templating). A cluster whose rendered value would have
/// read back differently as text (quotes, YAML indicators, newlines) falls
/// back to text templating, so both paths give the same objects.
enum Plan {
    Text,
    Structural {
        docs: Arc<Vec<Value>>,
        slots: Vec<Slot>,
    },
}

struct Slot {
    doc: usize,
    path: Vec<Seg>,
    style: ScalarStyle,
    /// Name of the slot's compiled template in the environment.
    template: String,
    line: usize,
}

/// Reads a rendered scalar back the way text templating would have, or
/// `None` when only re-parsing the whole text could say what it becomes.
fn read_back(out: String, style: ScalarStyle) -> Option<Value> {
    if out.contains('\n') || out.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    match style {
        ScalarStyle::DoubleQuoted if !out.contains(['"', '\\']) => Some(Value::String(out)),
        ScalarStyle::SingleQuoted if !out.contains('\'') => Some(Value::String(out)),
        ScalarStyle::Plain => {
            let risky = out.is_empty()
                || out.trim() != out
                || out.contains(": ")
                || out.contains(" #")
                || out.ends_with(':')
                || out.contains([',', '[', ']', '{', '}'])
                || out.starts_with([
                    '-', '?', ':', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`',
                ]);
            if risky {
                return None;
            }
            Some(plain_scalar(&out).unwrap_or(Value::String(out)))
        }
        _ => None,
    }
}

/// One object a cluster should run.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub key: ObjectKey,
    /// Index of the workload it belongs to.
    pub workload: usize,
    /// The manifest file it came from.
    pub source: String,
    pub value: Value,
}

/// Everything computed once per run and shared by every cluster's render.
pub struct Renderer<'a> {
    pub checked: &'a Checked,
    /// Shared with the [`crate::core::carry::Carry`] the next revision's
    /// placement takes over.
    pub placements: Vec<Option<Arc<WorkloadPlacement>>>,
    env: Environment<'a>,
    /// Each cluster's template context and its hash (for
    /// [`Self::fingerprints`]).
    cluster_facts: Arc<ClusterFacts>,
    workload_ctx: Vec<minijinja::Value>,
    /// `override_on[o][c]`: override `o` selects cluster `c`.
    override_on: Vec<Vec<bool>>,
    /// Per workload, per manifest: how templates are rendered (`None` for
    /// plain files, which are parsed once during validation).
    plans: Vec<Vec<Option<Plan>>>,
    /// Diagnostics found while preparing (schedule errors, template syntax).
    pub diagnostics: Diagnostics,
    /// By (workload, relay cluster) failed over here: the replicas the
    /// relay's subtree would have without the failover ([`Self::handed_share`]).
    unfailed: BTreeMap<(usize, usize), u32>,
}

/// Template values of every cluster: its ancestors' `spec.values` deep-merged
/// from the root down, nearest winning.
pub fn inherited_values(checked: &Checked) -> Vec<Map<String, Value>> {
    let topo = &checked.topo;
    let mut out: Vec<Map<String, Value>> = vec![Map::new(); topo.len()];
    for &c in topo.preorder() {
        let mut v = topo.parent(c).map(|p| out[p].clone()).unwrap_or_default();
        deep_merge(&mut v, &checked.cluster(c).spec.values);
        out[c] = v;
    }
    out
}

/// Every cluster's facts as templates see them (`cluster.*`: name,
/// labels, parent, path from the root, depth and inherited values), with a
/// hash of each. The hash of every cluster is made at once (fingerprints
/// need them all); the template value of a cluster only when a render or a
/// Helm values file first asks for it, since a `watch` round or a settled
/// `apply` renders a few clusters of a large fleet, and building the values
/// of all 100,000 took about as long as the rest of the round.
pub struct ClusterFacts {
    /// Per cluster, its inherited `spec.values`.
    values: Vec<Map<String, Value>>,
    ctx: Vec<std::sync::OnceLock<minijinja::Value>>,
    pub hash: Vec<u64>,
}

impl std::fmt::Debug for ClusterFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterFacts({} clusters)", self.hash.len())
    }
}

/// One cluster's facts as they are serialized: fields in the order of
/// their names, as a JSON object's keys are kept, so that the hash below
/// is the hash of the JSON object `{"depth", "labels", "name", "parent",
/// "path", "values"}` that earlier builds made (fingerprints and rollout
/// keys outlive a build), and templates see the keys in the same order.
#[derive(serde::Serialize)]
struct Facts<'a> {
    depth: usize,
    labels: &'a BTreeMap<String, String>,
    name: &'a str,
    parent: &'a Option<String>,
    path: Vec<&'a str>,
    values: &'a Map<String, Value>,
}

impl ClusterFacts {
    fn facts<'a>(&'a self, checked: &'a Checked, c: usize) -> Facts<'a> {
        let cl = checked.cluster(c);
        Facts {
            depth: checked.topo.depth(c),
            labels: &cl.meta.labels,
            name: cl.name(),
            parent: &cl.spec.parent,
            path: checked.topo.path(c),
            values: &self.values[c],
        }
    }

    /// Cluster `c`'s facts as a template value (`checked` is the fleet
    /// these facts were made of).
    pub fn ctx(&self, checked: &Checked, c: usize) -> minijinja::Value {
        self.ctx[c]
            .get_or_init(|| minijinja::Value::from(minijinja::value::Serde(self.facts(checked, c))))
            .clone()
    }
}

/// [`ClusterFacts`] of a checked fleet, made once per fleet.
pub fn cluster_facts(checked: &Checked) -> Arc<ClusterFacts> {
    checked
        .cluster_facts
        .get_or_init(|| make_facts(checked, &[]))
        .clone()
}

/// Makes the [`ClusterFacts`] of `checked` now, taking the hash of each
/// cluster `known` has one for ([`crate::core::carry`]) instead of making
/// it; nothing when they were made already.
pub fn seed_cluster_facts(checked: &Checked, known: &[Option<u64>]) {
    checked
        .cluster_facts
        .get_or_init(|| make_facts(checked, known));
}

fn make_facts(checked: &Checked, known: &[Option<u64>]) -> Arc<ClusterFacts> {
    let values = inherited_values(checked);
    let n = values.len();
    let mut facts = ClusterFacts {
        values,
        ctx: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
        hash: Vec::new(),
    };
    facts.hash = (0..n)
        .into_par_iter()
        .map(|c| {
            if let Some(&Some(h)) = known.get(c) {
                return h;
            }
            let bytes =
                serde_json::to_vec(&facts.facts(checked, c)).expect("cluster facts serialize");
            crate::core::hash::StableHasher::new()
                .bytes(&bytes)
                .finish()
        })
        .collect();
    Arc::new(facts)
}

fn deep_merge(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => deep_merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Per workload, the clusters failed over (`spec.failover.after` elapsed
/// since each was first found unreachable).
pub fn failed_over(
    checked: &Checked,
    health: &crate::core::failover::Health,
    now: std::time::SystemTime,
) -> Vec<Vec<bool>> {
    checked
        .fleet
        .workloads
        .iter()
        .map(|w| health.failed(&checked.topo, w.spec.failover.after(), now))
        .collect()
}

impl<'a> Renderer<'a> {
    /// Schedules every workload and compiles every template once.
    pub fn new(checked: &'a Checked) -> Renderer<'a> {
        Self::with_failover(checked, &[])
    }

    /// As [`Self::new`], with failover: `failed[wi]` are the clusters whose
    /// Divided replicas of workload `wi` move to their healthy siblings
    /// ([`failed_over`]; an empty slice: none).
    pub fn with_failover(checked: &'a Checked, failed: &[Vec<bool>]) -> Renderer<'a> {
        Self::carrying(checked, failed, None)
    }

    /// As [`Self::with_failover`], taking over from `carry` (what the
    /// placement of the last revision computed) what still stands.
    pub fn carrying(
        checked: &'a Checked,
        failed: &[Vec<bool>],
        carry: Option<&crate::core::carry::Carry>,
    ) -> Renderer<'a> {
        if let Some(c) = carry {
            seed_cluster_facts(checked, &c.facts(checked));
        }
        let same = carry.filter(|c| c.same_clusters(checked));
        let placed = (0..checked.fleet.workloads.len())
            .into_par_iter()
            .map(|wi| {
                let f = failed.get(wi).map(Vec::as_slice).unwrap_or_default();
                match same.and_then(|c| c.placement(checked, wi, f)) {
                    Some(p) => Ok(p),
                    None => schedule::place(checked, wi, false, f).map(Arc::new),
                }
            })
            .collect();
        Self::build(checked, placed)
            .note_unfailed(failed, |wi, f| schedule::place(checked, wi, false, f).ok())
    }

    /// The renderer a relay runs for the subtree of `root`: each workload
    /// placed there alone ([`schedule::place_subtree`]), a Divided one with
    /// the share its parent level gave the subtree (`shares`, by workload;
    /// absent: none). For the subtree's clusters it renders exactly what
    /// the full fleet's renderer renders.
    /// `failed[wi]` are the subtree's clusters whose Divided replicas of
    /// workload `wi` move to their healthy siblings inside it (an empty
    /// slice: none).
    pub fn for_subtree(
        checked: &'a Checked,
        root: usize,
        shares: &BTreeMap<String, u32>,
        failed: &[Vec<bool>],
    ) -> Renderer<'a> {
        let placed = (0..checked.fleet.workloads.len())
            .into_par_iter()
            .map(|wi| {
                let share = shares
                    .get(checked.fleet.workloads[wi].name())
                    .copied()
                    .unwrap_or(0);
                let f = failed.get(wi).map(Vec::as_slice).unwrap_or_default();
                schedule::place_subtree(checked, wi, root, share, f).map(Arc::new)
            })
            .collect();
        Self::build(checked, placed).note_unfailed(failed, |wi, f| {
            let share = shares
                .get(checked.fleet.workloads[wi].name())
                .copied()
                .unwrap_or(0);
            schedule::place_subtree(checked, wi, root, share, f).ok()
        })
    }

    /// Compiles every template once over the placements given.
    fn build(
        checked: &'a Checked,
        placed: Vec<Result<Arc<WorkloadPlacement>, schedule::ScheduleError>>,
    ) -> Renderer<'a> {
        let mut diagnostics = Diagnostics::default();
        let fleet = &checked.fleet;
        let topo = &checked.topo;
        let placements: Vec<Option<Arc<WorkloadPlacement>>> = placed
            .into_iter()
            .enumerate()
            .map(|(wi, r)| match r {
                Ok(p) => {
                    if let Some((want, placed)) = p.assignment.as_ref().and_then(|a| a.shortfall) {
                        let w = &fleet.workloads[wi];
                        diagnostics.push(
                            Diagnostic::warning(format!(
                                "workload {:?}: {placed} of {want} replicas placed: that is what fits in the chosen clusters' capacity",
                                w.name()
                            ))
                            .at(&w.source.loc_str("spec.placement.replicas"))
                            .hint("add capacity or clusters, or lower the total; `canopy explain` shows what fits where"),
                        );
                    }
                    Some(p)
                }
                Err(e) => {
                    let w = &fleet.workloads[wi];
                    let hint = match e {
                        schedule::ScheduleError::Shortfall { .. } => "add capacity or clusters, lower the total, or set `onShortfall: PlaceWhatFits` to place what fits",
                        _ => "widen spec.placement.clusters, add tolerations, or give the chosen clusters weight (static weights or capacity)",
                    };
                    diagnostics.push(
                        Diagnostic::error(format!("workload {:?}: {e}", w.name()))
                            .at(&w.source.loc_str("spec.placement"))
                            .hint(hint),
                    );
                    None
                }
            })
            .collect();

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        // minijinja would JSON-escape `.yaml` templates (quoting every value);
        // manifests want plain substitution, as Helm users expect.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // A template may include (import, extend) only templates of its own
        // workload: another workload's file may be a Secret its owners did
        // not mean to share, and a ConfigMap including it would publish it.
        let owner: Arc<HashMap<String, usize>> = Arc::new(
            fleet
                .workloads
                .iter()
                .enumerate()
                .flat_map(|(wi, w)| w.manifests.iter().map(move |m| (m.path.clone(), wi)))
                .collect(),
        );
        env.set_path_join_callback(move |name, parent| {
            // Structural slots are registered as `path#n`.
            let of = |t: &str| {
                owner
                    .get(t)
                    .or_else(|| {
                        let (path, n) = t.rsplit_once('#')?;
                        n.parse::<usize>().ok().and(owner.get(path))
                    })
                    .copied()
            };
            match (of(name), of(parent)) {
                // No template has this name: the include fails as not
                // found, and the diagnostic's hint says why.
                (Some(a), Some(b)) if a != b => {
                    std::borrow::Cow::Owned(format!("{name} (of another workload)"))
                }
                _ => std::borrow::Cow::Borrowed(name),
            }
        });
        let mut plans = Vec::with_capacity(fleet.workloads.len());
        for w in &fleet.workloads {
            let mut wp = Vec::with_capacity(w.manifests.len());
            for m in &w.manifests {
                if !m.is_template() {
                    wp.push(None);
                    continue;
                }
                if let Err(e) = env.add_template_owned(m.path.clone(), m.text.clone()) {
                    diagnostics.push(template_diag(&m.path, None, &e));
                    wp.push(Some(Plan::Text));
                    continue;
                }
                let plan = match parse_template_slots(&m.text) {
                    Some((docs, found)) => {
                        let mut slots = Vec::with_capacity(found.len());
                        let mut ok = true;
                        for (i, f) in found.into_iter().enumerate() {
                            let name = format!("{}#{i}", m.path);
                            if env.add_template_owned(name.clone(), f.source).is_err() {
                                ok = false;
                                break;
                            }
                            slots.push(Slot {
                                doc: f.doc,
                                path: f.path,
                                style: f.style,
                                template: name,
                                line: f.line,
                            });
                        }
                        let docs = Arc::new(docs.into_iter().map(|d| d.value).collect());
                        if ok {
                            Plan::Structural { docs, slots }
                        } else {
                            Plan::Text
                        }
                    }
                    None => Plan::Text,
                };
                wp.push(Some(plan));
            }
            plans.push(wp);
        }

        let cluster_facts = cluster_facts(checked);
        let workload_ctx = fleet
            .workloads
            .iter()
            .map(|w| {
                minijinja::Value::from(minijinja::value::Serde(json!({
                    "name": w.name(),
                    "namespace": w.spec.namespace,
                    "labels": w.meta.labels,
                })))
            })
            .collect();
        let override_on = fleet
            .overrides
            .iter()
            .map(|o| {
                let picked = checked.labels.select(o.spec.clusters.as_ref(), topo);
                (0..topo.len()).map(|c| picked.contains(c)).collect()
            })
            .collect();
        Renderer {
            checked,
            placements,
            env,
            cluster_facts,
            workload_ctx,
            override_on,
            plans,
            diagnostics,
            unfailed: BTreeMap::new(),
        }
    }

    /// For each relay whose subtree below is failed over for a Divided
    /// workload (its agent went silent: every cluster below it counts as
    /// down here), the share that subtree has with the same failures but
    /// its own (placed again by `again`). Only workloads with such a relay
    /// cost another placement.
    fn note_unfailed(
        mut self,
        failed: &[Vec<bool>],
        again: impl Fn(usize, &[bool]) -> Option<WorkloadPlacement>,
    ) -> Self {
        let checked = self.checked;
        let topo = &checked.topo;
        let relays: Vec<usize> = (0..topo.len())
            .filter(|&c| checked.cluster(c).spec.relay.is_some() && topo.subtree(c).len() > 1)
            .collect();
        if relays.is_empty() {
            return self;
        }
        for (wi, f) in failed.iter().enumerate() {
            if self.placements.get(wi).and_then(Option::as_ref).is_none() {
                continue;
            }
            for &rl in &relays {
                let below = || topo.subtree(rl).iter().copied().filter(move |&c| c != rl);
                if !below().all(|c| f.get(c).copied().unwrap_or(false)) {
                    continue;
                }
                let mut without = f.clone();
                for c in below() {
                    without[c] = false;
                }
                if let Some(a) = again(wi, &without).and_then(|p| p.assignment) {
                    self.unfailed.insert((wi, rl), a.share[rl]);
                }
            }
        }
        self
    }

    /// The replicas of Divided workload `wi` to hand relay `relay`'s
    /// subtree: its share, or, where this level fails the relay's subtree
    /// over (its agent went silent), the share it has without that
    /// failover. The
    /// replicas have moved to other clusters here either way; a returning
    /// agent then keeps its subtree as it was instead of scaling it down
    /// until the level above has heard it again and given the share back.
    pub fn handed_share(&self, wi: usize, relay: usize) -> Option<u32> {
        if let Some(&n) = self.unfailed.get(&(wi, relay)) {
            return Some(n);
        }
        let p = self.placements.get(wi)?.as_ref()?;
        Some(p.assignment.as_ref()?.share[relay])
    }

    /// Whether override `o` selects cluster `c`.
    pub fn override_on(&self, o: usize, c: usize) -> bool {
        self.override_on[o][c]
    }

    /// Renders every template file as text, never structurally: the
    /// reference the structural path is tested against.
    pub fn text_only(mut self) -> Self {
        for wp in &mut self.plans {
            for p in wp.iter_mut().flatten() {
                *p = Plan::Text;
            }
        }
        self
    }

    /// Per cluster, a hash of everything its render reads: the fleet's name,
    /// the cluster's template context (name, labels, parent, path, depth,
    /// inherited values), and for each workload that lands there its
    /// document, manifest files and replicas there, and each override that
    /// selects it. Rendering is a pure function of these, so a cluster whose
    /// fingerprint did not change renders exactly as before: `watch` skips
    /// it, which makes a change cost what it touches, not the fleet's size.
    /// The hash is stable across builds ([`crate::core::hash`]).
    pub fn fingerprints(&self) -> Vec<u64> {
        let fleet = &self.checked.fleet;
        let workload_hash: Vec<u64> = (0..fleet.workloads.len())
            .map(|wi| self.workload_hash(wi, false))
            .collect();
        let variant_hash: Vec<Vec<u64>> = (0..fleet.workloads.len())
            .map(|wi| self.variant_hashes(wi, false))
            .collect();
        let override_hash: Vec<u64> = fleet
            .overrides
            .iter()
            .map(|o| crate::core::hash::json(&json!({"meta": o.meta, "spec": o.spec})))
            .collect();
        let own = (0..self.checked.topo.len())
            .into_par_iter()
            .map(|c| {
                let mut h = StableHasher::new();
                h.str(&fleet.name).u64(self.cluster_facts.hash[c]);
                for (wi, p) in self.placements.iter().enumerate() {
                    if let Some(p) = p.as_ref().filter(|p| p.lands_on(c)) {
                        h.usize(wi).u64(workload_hash[wi]).opt_u32(p.replicas(c));
                        for mi in self.manifests_on(wi, c) {
                            if let Some(&vh) = variant_hash[wi].get(mi) {
                                h.u64(vh);
                            }
                        }
                    }
                }
                for (oi, on) in self.override_on.iter().enumerate() {
                    if on[c] {
                        h.usize(oi).u64(override_hash[oi]);
                    }
                }
                h.finish()
            })
            .collect::<Vec<u64>>();
        // A relay also holds its subtree's handoff, which changes whenever
        // a render below it does.
        let topo = &self.checked.topo;
        let mut out = own.clone();
        for (c, fp) in out.iter_mut().enumerate() {
            if self.checked.cluster(c).spec.relay.is_some() {
                let mut h = StableHasher::new();
                h.u64(*fp);
                for &d in topo.subtree(c) {
                    h.u64(own[d]);
                }
                *fp = h.finish();
            }
        }
        out
    }

    /// A hash of workload `wi`'s document and manifest files. Where it lands
    /// and its replicas there are left to the caller. With `rollout`, only
    /// what reaches its objects counts (not its rollout, failover, retain or
    /// ignore rules), and no manifest's replica field: that is the content a
    /// staged rollout rolls out.
    fn workload_hash(&self, wi: usize, rollout: bool) -> u64 {
        let w = &self.checked.fleet.workloads[wi];
        // Where the workload lands and its replicas there are hashed per
        // cluster; of its placement only the replica paths reach the render
        // itself. So a new total or new weights touch the clusters whose
        // replicas move, not all of them.
        let paths = w.spec.placement.replicas.paths.clone();
        let spec = if rollout {
            json!({"namespace": w.spec.namespace, "paths": paths})
        } else {
            let mut spec = w.spec.clone();
            spec.placement = crate::core::model::Placement {
                replicas: crate::core::model::ReplicaSpec {
                    paths,
                    ..Default::default()
                },
                ..Default::default()
            };
            json!(spec)
        };
        let mut h = StableHasher::new();
        h.json(&json!({"meta": w.meta, "spec": spec, "dir": w.dir}));
        // A manifest that only some clusters get (a Helm output) is hashed
        // per cluster ([`Self::variant_hashes`]).
        if self.checked.facts[wi].variant.is_none() {
            for mi in 0..w.manifests.len() {
                h.u64(self.manifest_hash(wi, mi, rollout));
            }
        }
        h.finish()
    }

    /// A hash of manifest `mi` of workload `wi` (see [`Self::workload_hash`]).
    fn manifest_hash(&self, wi: usize, mi: usize, rollout: bool) -> u64 {
        let w = &self.checked.fleet.workloads[wi];
        let m = &w.manifests[mi];
        let divided = w.spec.placement.replicas.mode == crate::core::model::ReplicaMode::Divided;
        let mut h = StableHasher::new();
        h.str(&m.path);
        match &self.checked.facts[wi].parsed[mi] {
            // Render overwrites a Divided object's replicas with the
            // cluster's share (hashed per cluster), so the manifest's own
            // value never reaches a cluster: a new `spec.replicas` moves
            // only the clusters whose share moves.
            Some(docs) if divided || rollout => {
                for d in docs.iter() {
                    let mut d = d.clone();
                    if let Some(ptr) = ObjectKey::of(&d).and_then(|k| {
                        kinds::replica_pointer(&k.group, &k.kind, &w.spec.placement.replicas.paths)
                    }) {
                        crate::core::pointer::remove(&mut d, ptr);
                    }
                    h.json(&d);
                }
            }
            _ => {
                h.str(&m.text);
            }
        }
        h.finish()
    }

    /// For a workload whose clusters get different manifests, the hash of
    /// each manifest; empty for any other workload.
    fn variant_hashes(&self, wi: usize, rollout: bool) -> Vec<u64> {
        if self.checked.facts[wi].variant.is_none() {
            return Vec::new();
        }
        (0..self.checked.fleet.workloads[wi].manifests.len())
            .map(|mi| self.manifest_hash(wi, mi, rollout))
            .collect()
    }

    /// The manifests of workload `wi` that cluster `c` gets.
    fn manifests_on(&self, wi: usize, c: usize) -> std::ops::Range<usize> {
        let n = self.checked.fleet.workloads[wi].manifests.len();
        match &self.checked.facts[wi].variant {
            None => 0..n,
            Some(v) => match v.get(c).copied().flatten() {
                Some(mi) => mi as usize..(mi as usize + 1).min(n),
                None => 0..0,
            },
        }
    }

    /// Per cluster, a hash of what workload `wi` rolls out there (`None`
    /// where it does not land): its content ([`Self::workload_hash`]), the
    /// cluster's template context, and the overrides that select the
    /// cluster and may touch the workload. Replica counts are left out, so
    /// scaling and failover are never held back by a rollout.
    pub fn rollout_hashes(&self, wi: usize) -> Vec<Option<u64>> {
        let fleet = &self.checked.fleet;
        let name = fleet.workloads[wi].name();
        let content = self.workload_hash(wi, true);
        let variant_hash = self.variant_hashes(wi, true);
        let overrides: Vec<(usize, u64)> = fleet
            .overrides
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                o.spec
                    .workloads
                    .as_ref()
                    .is_none_or(|ws| ws.iter().any(|w| w == name))
            })
            .map(|(oi, o)| {
                (
                    oi,
                    crate::core::hash::json(&json!({"meta": o.meta, "spec": o.spec})),
                )
            })
            .collect();
        let Some(p) = self.placements[wi].as_ref() else {
            return vec![None; self.checked.topo.len()];
        };
        (0..self.checked.topo.len())
            .map(|c| {
                p.lands_on(c).then(|| {
                    let mut h = StableHasher::new();
                    h.str(&fleet.name)
                        .u64(content)
                        .u64(self.cluster_facts.hash[c]);
                    for mi in self.manifests_on(wi, c) {
                        if let Some(&vh) = variant_hash.get(mi) {
                            h.u64(vh);
                        }
                    }
                    for &(oi, oh) in &overrides {
                        if self.override_on[oi][c] {
                            h.usize(oi).u64(oh);
                        }
                    }
                    h.finish()
                })
            })
            .collect()
    }

    /// Workloads that land on cluster `c`, with their replicas there.
    pub fn workloads_on(&self, c: usize) -> Vec<(usize, Option<u32>)> {
        self.placements
            .iter()
            .enumerate()
            .filter_map(|(wi, p)| {
                p.as_ref()
                    .filter(|p| p.lands_on(c))
                    .map(|p| (wi, p.replicas(c)))
            })
            .collect()
    }

    /// Renders cluster `c`: its objects in apply order, or every problem found.
    pub fn render_cluster(&self, c: usize) -> Result<Vec<Rendered>, Vec<Diagnostic>> {
        let fleet = &self.checked.fleet;
        let cluster = self.checked.cluster(c);
        let mut errors = Vec::new();
        // (workload, file, object, rendered from a template here)
        let mut raw: Vec<(usize, &str, Value, bool)> = Vec::new();
        for (wi, p) in self.placements.iter().enumerate() {
            if !p.as_ref().is_some_and(|p| p.lands_on(c)) {
                continue;
            }
            let w = &fleet.workloads[wi];
            for mi in self.manifests_on(wi, c) {
                let m = &w.manifests[mi];
                let templated = self.checked.facts[wi].parsed[mi].is_none();
                match self.manifest_docs(wi, mi, c) {
                    Ok(docs) => raw.extend(
                        docs.iter()
                            .cloned()
                            .map(|v| (wi, m.path.as_str(), v, templated)),
                    ),
                    Err(d) => errors.push(d),
                }
            }
        }
        let crd_scope = custom_scopes(raw.iter().map(|(_, _, v, _)| v));

        let mut out: Vec<Rendered> = Vec::with_capacity(raw.len());
        for (docno, (wi, file, mut obj, templated)) in raw.into_iter().enumerate() {
            let w = &fleet.workloads[wi];
            let Some(key) = ObjectKey::of(&obj).filter(|_| obj.is_object()) else {
                errors.push(
                    Diagnostic::error(format!(
                        "object #{} of {file} (rendered for cluster {}) has no apiVersion, kind or metadata.name",
                        docno + 1,
                        cluster.name()
                    ))
                    .in_file(file, 0)
                    .hint("every manifest document must be a Kubernetes object with apiVersion, kind and metadata.name"),
                );
                continue;
            };
            // 1. default namespace
            let namespaced = is_namespaced(&key, &crd_scope);
            if namespaced && key.namespace.is_empty() {
                if let Some(ns) = &w.spec.namespace {
                    obj["metadata"]["namespace"] = Value::String(ns.clone());
                }
            }
            // 1b. a templated object, as rendered here (plain ones were
            // checked once, with the fleet): no metadata of canopy's own,
            // and a tenant's within the tenant's rules.
            if templated {
                if let Some(p) = crate::core::reserved::problem(&obj) {
                    errors.push(crate::core::reserved::diagnostic(
                        &p,
                        file,
                        0,
                        Some(cluster.name()),
                    ));
                    continue;
                }
            }
            let tenant = self.checked.tenancy.owner[wi].map(|t| (t, &fleet.tenants[t]));
            if let Some((t, tenant)) = tenant.filter(|_| templated) {
                let ns = w.spec.namespace.as_deref();
                if let Some(b) = self.checked.tenancy.breach(tenant, t, &key, ns, namespaced) {
                    errors.push(crate::core::tenancy::breach_diag(
                        tenant,
                        w.name(),
                        file,
                        0,
                        &format!("{b} (rendered for cluster {})", cluster.name()),
                    ));
                    continue;
                }
            }
            // 2. replicas from the schedule
            if let Some(n) = self.placements[wi].as_ref().and_then(|p| p.replicas(c)) {
                if let Some(ptr) =
                    kinds::replica_pointer(&key.group, &key.kind, &w.spec.placement.replicas.paths)
                {
                    crate::core::pointer::set(&mut obj, ptr, Value::from(n));
                }
            }
            // 3. overrides, ascending priority then name
            let before = ObjectKey::of(&obj).unwrap_or(key);
            let mut patched_by = None;
            for (oi, o) in fleet.overrides.iter().enumerate() {
                if !self.override_on[oi][c] || !override_targets(o, w.name(), &before) {
                    continue;
                }
                if let Err(d) = apply_override(o, &mut obj, &before, cluster.name()) {
                    errors.push(d);
                }
                patched_by = Some(o);
            }
            // A patch places a value (read within the limit) at a path:
            // together they may nest deeper than canopy reads back.
            if let Some(o) = patched_by.filter(|_| depth(&obj) > MAX_DEPTH) {
                errors.push(
                    Diagnostic::error(format!(
                        "overrides make {before} on cluster {} nest deeper than {MAX_DEPTH} levels (canopy's limit)",
                        cluster.name()
                    ))
                    .at(&o.source.loc(&YamlPath::parse("spec.patches")))
                    .hint("patch a shallower path, or flatten the patched value"),
                );
                continue;
            }
            // 4. ownership
            let Some(key) = ObjectKey::of(&obj) else {
                errors.push(
                    Diagnostic::error(format!(
                        "overrides removed the identity of {before} on cluster {}",
                        cluster.name()
                    ))
                    .in_file(file, 0)
                    .hint("an override must keep apiVersion, kind and metadata.name"),
                );
                continue;
            };
            // A tenant's object is held to the tenant's rules as it is
            // written: an override that moved it (to another namespace, or
            // to another kind) is checked again.
            if let Some((t, tenant)) = tenant.filter(|_| patched_by.is_some() && key != before) {
                let ns = w.spec.namespace.as_deref();
                let namespaced = is_namespaced(&key, &crd_scope);
                if let Some(b) = self.checked.tenancy.breach(tenant, t, &key, ns, namespaced) {
                    let o = patched_by.expect("filtered");
                    errors.push(
                        Diagnostic::error(format!(
                            "workload {:?} of tenant {:?}: {b}, after override {:?} (rendered for cluster {})",
                            w.name(),
                            tenant.name(),
                            o.name(),
                            cluster.name()
                        ))
                        .at(&o.source.loc(&YamlPath::parse("spec.patches")))
                        .hint(format!(
                            "a tenant's objects stay within the rules of {} after overrides: narrow the override's targets",
                            tenant.source.file
                        )),
                    );
                    continue;
                }
            }
            if let Some(d) = name_problem(&key, file, cluster.name()) {
                errors.push(d);
                continue;
            }
            label(&mut obj, &fleet.name, w.name(), cluster.name(), file);
            if w.spec.replace_on_immutable && !crate::core::model::never_replaced(&obj) {
                obj["metadata"]["annotations"][crate::core::model::ANNOTATION_REPLACE] =
                    Value::from(crate::core::model::REPLACE_ON_IMMUTABLE);
            }
            out.push(Rendered {
                key,
                workload: wi,
                source: file.to_string(),
                value: obj,
            });
        }

        // Two objects with one identity on one cluster would overwrite each other.
        let mut seen: HashMap<&ObjectKey, &Rendered> = HashMap::new();
        for r in &out {
            if let Some(prev) = seen.insert(&r.key, r) {
                errors.push(
                    Diagnostic::error(format!(
                        "{} is rendered twice for cluster {}: by workload {:?} from {} and by workload {:?} from {}",
                        r.key,
                        cluster.name(),
                        fleet.workloads[prev.workload].name(),
                        prev.source,
                        fleet.workloads[r.workload].name(),
                        r.source
                    ))
                    .in_file(&r.source, 0)
                    .hint("keep each object in one workload; share config through a workload of its own placed on both sets of clusters"),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        sort_objects(&mut out);
        Ok(out)
    }

    /// Documents of manifest `mi` of workload `wi` for cluster `c`.
    fn manifest_docs(&self, wi: usize, mi: usize, c: usize) -> Result<Arc<Vec<Value>>, Diagnostic> {
        if let Some(parsed) = &self.checked.facts[wi].parsed[mi] {
            return Ok(parsed.clone());
        }
        let w = &self.checked.fleet.workloads[wi];
        let m = &w.manifests[mi];
        let cluster = self.checked.cluster(c).name();
        let ctx = minijinja::context! {
            cluster => self.cluster_facts.ctx(self.checked, c),
            workload => self.workload_ctx[wi].clone(),
        };
        if let Some(Some(Plan::Structural { docs, slots })) = self.plans[wi].get(mi) {
            if let Some(done) = self.render_slots(docs, slots, &ctx, &m.path, cluster)? {
                return Ok(done);
            }
        }
        self.render_text(m, &ctx, cluster)
    }

    /// Structural templating; `Ok(None)` asks for text templating instead.
    fn render_slots(
        &self,
        docs: &Arc<Vec<Value>>,
        slots: &[Slot],
        ctx: &minijinja::Value,
        file: &str,
        cluster: &str,
    ) -> Result<Option<Arc<Vec<Value>>>, Diagnostic> {
        let mut out: Vec<Value> = docs.as_ref().clone();
        for s in slots {
            let tmpl = self
                .env
                .get_template(&s.template)
                .map_err(|e| template_diag(file, Some(cluster), &e))?;
            let text = render_bounded(&tmpl, ctx, file, cluster).map_err(|e| {
                let mut d = template_diag(file, Some(cluster), &e);
                d.line = s.line;
                d
            })?;
            let Some(v) = read_back(text, s.style) else {
                return Ok(None);
            };
            match out.get_mut(s.doc).and_then(|d| value_at_mut(d, &s.path)) {
                Some(slot) => *slot = v,
                None => return Ok(None),
            }
        }
        out.retain(|v| !v.is_null());
        Ok(Some(Arc::new(out)))
    }

    fn render_text(
        &self,
        m: &ManifestFile,
        ctx: &minijinja::Value,
        cluster: &str,
    ) -> Result<Arc<Vec<Value>>, Diagnostic> {
        let tmpl = self
            .env
            .get_template(&m.path)
            .map_err(|e| template_diag(&m.path, Some(cluster), &e))?;
        let text = render_bounded(&tmpl, ctx, &m.path, cluster)
            .map_err(|e| template_diag(&m.path, Some(cluster), &e))?;
        let docs = parse_stream(&text, false).map_err(|e| {
            // The rendered line helps, unless the file renders a Secret:
            // then it may hold the value, and only its number is given.
            let shown = if renders_secret(&text) {
                "(not shown: this file renders a Secret)".to_string()
            } else {
                text.lines()
                    .nth(e.line.saturating_sub(1))
                    .unwrap_or("")
                    .trim()
                    .to_string()
            };
            Diagnostic::error(format!(
                "rendered manifest is not valid YAML for cluster {cluster}: {} at rendered line {}: {shown}",
                e.message, e.line
            ))
            .in_file(&m.path, 0)
            .hint("a value with quotes, `: ` or ` #` breaks the YAML around it: write `{{ value | tojson }}` without surrounding quotes")
        })?;
        Ok(Arc::new(
            docs.into_iter()
                .map(|d| d.value)
                .filter(|v| !v.is_null())
                .collect(),
        ))
    }
}

/// The work one render of one template may do, in minijinja fuel: one unit
/// per step and one per 64 bytes of data the template makes (strings built
/// with `~` or `+`, filter results, output). So it bounds time and memory
/// alike: at most about 19 MB per render, which keeps a template that
/// doubles a string in a loop from taking gigabytes, and a loop of loops
/// stops in well under a second. Ordinary manifests use a few thousand.
pub const TEMPLATE_FUEL: u64 = 300_000;

/// The most text one render of one manifest file may produce.
pub const TEMPLATE_OUTPUT: usize = 8 << 20;

/// A writer that refuses to grow past [`TEMPLATE_OUTPUT`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > TEMPLATE_OUTPUT {
            return Err(std::io::Error::other(OUTPUT_LIMIT));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const OUTPUT_LIMIT: &str = "the rendered text passed 8 MiB (canopy's limit per manifest file)";

/// The memory one render of one template may acquire, counted by the
/// binary's allocator ([`crate::alloc`]): a backstop behind fuel, for paths
/// minijinja does not charge. Fuel stops ordinary templates at about 19 MB
/// of data, but a string or list is allocated before it is charged, so the
/// last doubling can take as much again: over three times fuel's bound
/// keeps this from firing before fuel's clearer error. Running out ends
/// the process (exit 2) with a message naming the file and cluster. Two
/// renders at once (this machine's two cores) stay under 256 MiB.
pub const TEMPLATE_MEMORY: usize = 64 << 20;

/// The end of the message when a render passes [`TEMPLATE_MEMORY`]
/// (formatted once, not for every render).
static MEMORY_LIMIT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        " took more than {} MiB of memory (canopy's limit per template render); canopy stopped before applying anything of this revision\n  help: look for lists or strings built up in a loop (`x = x + x`)\n",
        TEMPLATE_MEMORY >> 20
    )
});

/// Renders `tmpl` within canopy's limits on fuel, output and memory.
fn render_bounded(
    tmpl: &minijinja::Template<'_, '_>,
    ctx: &minijinja::Value,
    file: &str,
    cluster: &str,
) -> Result<String, minijinja::Error> {
    let message = [
        "error: ",
        file,
        ": rendering for cluster ",
        cluster,
        MEMORY_LIMIT.as_str(),
    ];
    let mut out = Bounded(Vec::new());
    {
        let _allowance = crate::alloc::allow(TEMPLATE_MEMORY, &message);
        tmpl.render_captured_to(ctx, &mut out)?;
    }
    String::from_utf8(out.0).map_err(|_| {
        minijinja::Error::new(
            minijinja::ErrorKind::BadSerialization,
            "the template rendered text that is not UTF-8",
        )
    })
}

/// Whether rendered text holds a Secret (any spelling YAML allows for the
/// kind), so that an error about it quotes none of it.
fn renders_secret(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start_matches(['-', ' ']);
        l.strip_prefix("kind:")
            .or_else(|| l.strip_prefix("\"kind\":"))
            .is_some_and(|k| k.trim().trim_matches(['"', '\'', ',']) == "Secret")
    })
}

fn template_diag(file: &str, cluster: Option<&str>, e: &minijinja::Error) -> Diagnostic {
    let what = match e.kind() {
        minijinja::ErrorKind::OutOfFuel => format!(
            "the template used more than {TEMPLATE_FUEL} fuel (canopy's limit per render: one per step and one per 64 bytes of data it makes); look for loops over large ranges or strings built up in a loop"
        ),
        minijinja::ErrorKind::WriteFailure => OUTPUT_LIMIT.to_string(),
        _ => e
            .detail()
            .map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind())),
    };
    let msg = match cluster {
        Some(c) => format!("template error while rendering for cluster {c}: {what}"),
        None => format!("template error: {what}"),
    };
    let hint = match e.kind() {
        minijinja::ErrorKind::TemplateNotFound => "a template includes (imports, extends) only templated files of its own workload, named by their path from the repository root",
        _ => "templates see `cluster` (name, labels, parent, path, depth, values) and `workload` (name, namespace, labels); undefined names are errors",
    };
    Diagnostic::error(msg)
        .in_file(file, e.line().unwrap_or(0))
        .hint(hint)
}

/// An error when a rendered object's name or namespace is one the API
/// server would refuse (see [`crate::core::names`]); the name is shown with
/// its control characters escaped.
fn name_problem(key: &ObjectKey, file: &str, cluster: &str) -> Option<Diagnostic> {
    use crate::core::names::{problem, rule_for, shown, Rule};
    let what = match problem(rule_for(&key.group, &key.kind), &key.name) {
        Some(why) => format!("metadata.name is not valid: {why}"),
        None if key.namespace.is_empty() => return None,
        None => format!(
            "metadata.namespace \"{}\" is not valid: {}",
            shown(&key.namespace),
            problem(Rule::Label, &key.namespace)?
        ),
    };
    Some(
        Diagnostic::error(format!(
            "{} \"{}\" rendered for cluster {cluster}: {what}",
            key.kind,
            shown(&key.name)
        ))
        .in_file(file, 0)
        .hint("Kubernetes would refuse this object; fix the name in the manifest, the template or the override that sets it"),
    )
}

/// Custom kinds a CustomResourceDefinition in this render declares
/// cluster-scoped.
/// Whether an object is namespaced: built-in kinds by canopy's table,
/// custom kinds unless a CRD among the objects (`crd_scope`, from
/// [`custom_scopes`]) makes them cluster-scoped.
pub fn is_namespaced(key: &ObjectKey, crd_scope: &BTreeSet<(String, String)>) -> bool {
    !kinds::is_builtin_cluster_scoped(&key.group, &key.kind)
        && !crd_scope.contains(&(key.group.clone(), key.kind.clone()))
}

/// The custom kinds the CRDs among `objs` make cluster-scoped.
pub fn custom_scopes<'v>(objs: impl Iterator<Item = &'v Value>) -> BTreeSet<(String, String)> {
    objs.filter(|o| o.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .filter(|o| o.pointer("/spec/scope").and_then(Value::as_str) == Some("Cluster"))
        .filter_map(|o| {
            let g = o.pointer("/spec/group")?.as_str()?;
            let k = o.pointer("/spec/names/kind")?.as_str()?;
            Some((g.to_string(), k.to_string()))
        })
        .collect()
}

fn override_targets(o: &Override, workload: &str, key: &ObjectKey) -> bool {
    o.spec
        .workloads
        .as_ref()
        .is_none_or(|ws| ws.iter().any(|w| w == workload))
        && o.spec
            .resources
            .as_ref()
            .is_none_or(|rs| rs.iter().any(|r| r.matches(key)))
}

fn apply_override(
    o: &Override,
    obj: &mut Value,
    key: &ObjectKey,
    cluster: &str,
) -> Result<(), Diagnostic> {
    for (pi, p) in o.spec.patches.iter().enumerate() {
        let base = YamlPath::parse("spec.patches").index(pi);
        match p {
            PatchSpec::JsonPatch(patch) => {
                if let Err(e) = json_patch::patch(obj, &patch.0) {
                    let loc = o.source.loc(&base.key("jsonPatch").index(e.operation));
                    return Err(Diagnostic::error(format!(
                        "override {:?}: jsonPatch operation {} on path {} does not apply to {key} on cluster {cluster}: {}",
                        o.name(),
                        e.operation,
                        if e.path.is_empty() { "/".to_string() } else { e.path.to_string() },
                        e.kind
                    ))
                    .at(&loc)
                    .hint("check the path exists in the rendered object (`canopy render --cluster`), or use `add` / a mergePatch to create it"));
                }
            }
            PatchSpec::MergePatch(m) => json_patch::merge(obj, m),
            PatchSpec::Image(r) => {
                rewrite_images(obj, r);
            }
        }
    }
    Ok(())
}

/// Ownership labels and the source annotation.
fn label(obj: &mut Value, fleet: &str, workload: &str, cluster: &str, file: &str) {
    let meta = obj
        .as_object_mut()
        .expect("checked to be an object")
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let meta = meta
        .as_object_mut()
        .expect("metadata with a name is an object");
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if !labels.is_object() {
        *labels = Value::Object(Map::new());
    }
    let labels = labels.as_object_mut().expect("just made an object");
    labels.insert(LABEL_FLEET.into(), fleet.into());
    labels.insert(LABEL_WORKLOAD.into(), workload.into());
    labels.insert(LABEL_CLUSTER.into(), cluster.into());
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !ann.is_object() {
        *ann = Value::Object(Map::new());
    }
    ann.as_object_mut()
        .expect("just made an object")
        .insert(ANNOTATION_SOURCE.into(), file.into());
}

/// Apply order: kind rank (Namespaces, CRDs first), then group, kind,
/// namespace, name.
pub fn sort_objects(objs: &mut [Rendered]) {
    objs.sort_by(|a, b| kinds::apply_order(&a.key).cmp(&kinds::apply_order(&b.key)));
}

/// The rendered fleet: clusters in tree order with their objects.
pub struct RenderedFleet {
    /// (cluster index, objects), in pre-order.
    pub clusters: Vec<(usize, Vec<Rendered>)>,
}

impl RenderedFleet {
    /// Masks Secret values (see [`crate::core::mask`]) before anything is printed.
    pub fn mask_secrets(&mut self) {
        for (_, objs) in &mut self.clusters {
            mask_objects(objs);
        }
    }
}

/// Masks the Secrets among one cluster's objects.
pub fn mask_objects(objs: &mut [Rendered]) {
    let mut vals: Vec<&mut Value> = objs.iter_mut().map(|o| &mut o.value).collect();
    crate::core::mask::mask_secrets(&mut vals);
}

/// Renders the given clusters (all when `only` is `None`) in parallel and
/// turns each cluster's objects into a `T` right away (YAML text, a count),
/// so a 10,000-cluster render never holds every object at once. The result
/// is in tree order whatever the thread timing; on any error, every error
/// is returned and no result.
pub fn render_map<T: Send>(
    r: &Renderer<'_>,
    only: Option<&[usize]>,
    f: impl Fn(usize, Vec<Rendered>) -> T + Sync,
) -> Result<Vec<(usize, T)>, Diagnostics> {
    if r.diagnostics.has_errors() {
        return Err(r.diagnostics.clone());
    }
    let order: Vec<usize> = match only {
        Some(list) => r
            .checked
            .topo
            .preorder()
            .iter()
            .copied()
            .filter(|c| list.contains(c))
            .collect(),
        None => r.checked.topo.preorder().to_vec(),
    };
    let results: Vec<(usize, Result<T, Vec<Diagnostic>>)> = order
        .par_iter()
        .map(|&c| (c, r.render_cluster(c).map(|objs| f(c, objs))))
        .collect();
    let mut diags = Diagnostics::default();
    let mut out = Vec::with_capacity(results.len());
    // The same template error would repeat for every cluster; keep the first
    // few per place to stay readable, and count the rest.
    let mut per_source: BTreeMap<(Option<String>, usize), usize> = BTreeMap::new();
    for (c, res) in results {
        match res {
            Ok(t) => out.push((c, t)),
            Err(ds) => {
                for d in ds {
                    let n = per_source.entry((d.file.clone(), d.line)).or_default();
                    *n += 1;
                    if *n <= 3 {
                        diags.push(d);
                    }
                }
            }
        }
    }
    for ((file, line), n) in per_source {
        if n > 3 {
            let mut d = Diagnostic::error(format!(
                "… and {} more errors like the above on other clusters",
                n - 3
            ));
            d.file = file;
            d.line = line;
            diags.push(d);
        }
    }
    if diags.has_errors() {
        return Err(diags.sorted());
    }
    Ok(out)
}

/// Renders and keeps every object (for small fleets and tests).
pub fn render_all(r: &Renderer<'_>, only: Option<&[usize]>) -> Result<RenderedFleet, Diagnostics> {
    render_map(r, only, |_, objs| objs).map(|clusters| RenderedFleet { clusters })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_merge_nearest_wins() {
        let mut base = json!({"a": {"x": 1, "y": 2}, "b": [1]})
            .as_object()
            .unwrap()
            .clone();
        let over = json!({"a": {"y": 3}, "b": [2]})
            .as_object()
            .unwrap()
            .clone();
        deep_merge(&mut base, &over);
        assert_eq!(
            Value::Object(base),
            json!({"a": {"x": 1, "y": 3}, "b": [2]})
        );
    }

    /// The facts' hash is the hash of the JSON object earlier builds made
    /// (fingerprints and rollout keys outlive a build), and their template
    /// value is that object's.
    #[test]
    fn cluster_facts_hash_and_template_value_are_those_of_the_json_object() {
        let text = "apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: hub, labels: {tier: hub, z: last}}
spec: {values: {registry: {host: r.example, port: 5000}, list: [1, 2]}}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: eu}
spec: {parent: hub, values: {registry: {host: eu.example}}}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: eu-1, labels: {env: prod}}
spec: {parent: eu}
";
        let (fleet, d) = crate::core::load::load_files(
            "f".into(),
            vec![("clusters.yaml".into(), text.as_bytes().to_vec())],
        );
        assert!(!d.has_errors(), "{d:?}");
        let (checked, d) = crate::core::validate::check(fleet);
        let checked = checked.unwrap_or_else(|| panic!("{d:?}"));
        let facts = cluster_facts(&checked);
        let topo = &checked.topo;
        let values = inherited_values(&checked);
        for (c, values) in values.iter().enumerate() {
            let cl = checked.cluster(c);
            let object = json!({
                "name": cl.name(),
                "labels": cl.meta.labels,
                "parent": cl.spec.parent,
                "path": topo.path(c),
                "depth": topo.depth(c),
                "values": values,
            });
            assert_eq!(
                facts.hash[c],
                crate::core::hash::json(&object),
                "{}",
                cl.name()
            );
            let want = minijinja::Value::from(minijinja::value::Serde(&object));
            let got = facts.ctx(&checked, c);
            assert_eq!(got, want, "{}", cl.name());
            assert_eq!(got.to_string(), want.to_string());
        }
        let eu1 = facts.ctx(&checked, topo.get("eu-1").unwrap());
        let port = eu1
            .get_attr("values")
            .and_then(|v| v.get_attr("registry"))
            .and_then(|v| v.get_attr("port"))
            .unwrap();
        assert_eq!(port, minijinja::Value::from(5000));
    }

    #[test]
    fn crd_scope_is_read() {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "x"}, "spec": {"group": "acme.io", "scope": "Cluster", "names": {"kind": "Gadget"}}});
        let s = custom_scopes([crd].iter());
        assert!(s.contains(&("acme.io".to_string(), "Gadget".to_string())));
    }
}
