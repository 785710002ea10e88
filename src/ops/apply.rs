//! Apply (and its dry run, `diff`): push the rendered fleet down the tree.
//!
//! Everything is rendered first; a render with any error applies nothing and
//! prunes nothing. Then clusters are reconciled level by level from the roots,
//! clusters of one level in parallel (bounded by `concurrency`), and a child
//! only after its parent succeeded: a parent that fails or is skipped has its
//! whole subtree reported as skipped, with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::fleet::Backends;
use crate::backend::{ApplyMeta, BackendError, ClusterBackend, Planned, TypeRef};
use crate::core::diag::Diagnostics;
use crate::core::diff::{self, Change, ClusterChanges};
use crate::core::model::ObjectKey;
use crate::core::render::{render_map, Rendered, Renderer};
use serde_json::Value;

/// What a run was asked to do (the command's flags), the same for every
/// pass of the run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Delete owned objects that are no longer desired.
    pub prune: bool,
    /// Delete the owned objects of clusters that left the fleet.
    pub prune_clusters: bool,
    /// Clusters of one level reconciled at once.
    pub concurrency: usize,
    /// Keep each change's objects in the report (for diffs); otherwise only
    /// actions and identities are kept.
    pub keep_values: bool,
    /// After a cluster is written (or found in sync), wait this long for
    /// its desired objects to be healthy; an unhealthy cluster fails and
    /// its subtree is skipped.
    pub wait: Option<std::time::Duration>,
    /// A dry run that only reads (`diff`, `status`) still looks at the
    /// children of a parent that failed, and reports the parent's failure
    /// beside them: reading a child needs nothing of its parent. Apply, its
    /// dry run included, skips them, as writing would.
    pub read_under_failed_parents: bool,
    /// After writing the handoff of a relay child, wait this long for the
    /// relay's report on it (`None`: do not wait; a dry run never does).
    pub relay_wait: Option<std::time::Duration>,
    /// Leave out of the render, and report in sync without reading them,
    /// the clusters found in sync before whose render inputs and state
    /// have not changed since ([`super::settled`]); a run that writes
    /// records what it found. Off for runs that read objects (`status`)
    /// and for `--full`.
    pub skip_settled: bool,
    /// Raised when this process may no longer write (a relay agent whose
    /// Lease could not be renewed in time): a cluster's write refuses then,
    /// on every backend (the Kubernetes one also checks it per object).
    pub fence: Option<Arc<AtomicBool>>,
    /// How long a workload another one depends on (`dependsOn`) may take
    /// to be healthy on a cluster before its dependents there are left
    /// pending.
    pub depends_timeout: std::time::Duration,
}

/// How the operation running the executor steers one pass over the
/// rendered clusters: which of them, which workloads where, when to stop,
/// and where to count. A staged rollout makes several passes (waves) of one
/// run with the same [`Options`].
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// Only these clusters (indexes) of those rendered; `None` for all.
    pub targets: Option<BTreeSet<usize>>,
    /// Which workloads' objects are reconciled where (a staged rollout
    /// holds some back).
    pub scope: Scope,
    /// Set (by a signal handler) to stop between clusters: a cluster being
    /// reconciled finishes, the ones not started are reported as skipped.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Counted as clusters are done, for a progress line.
    pub progress: Option<Arc<super::progress::Progress>>,
}

/// Workloads left out of a run on some clusters: their desired objects are
/// not applied there, and their live objects are neither compared nor
/// pruned, so they stay exactly as they are.
#[derive(Debug, Clone, Default)]
pub enum Scope {
    #[default]
    All,
    /// By cluster name, the workloads held back there (a staged rollout's
    /// stages not reached yet).
    Hold(Arc<BTreeMap<String, BTreeSet<String>>>),
    /// This workload alone (a rollback).
    Only(String),
}

impl Scope {
    /// Whether `workload`'s objects on `cluster` are left out.
    pub fn excludes(&self, cluster: &str, workload: &str) -> bool {
        match self {
            Scope::All => false,
            Scope::Hold(h) => h.get(cluster).is_some_and(|ws| ws.contains(workload)),
            Scope::Only(w) => w != workload,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            prune: true,
            prune_clusters: false,
            concurrency: 8,
            keep_values: false,
            wait: None,
            read_under_failed_parents: false,
            relay_wait: None,
            skip_settled: false,
            fence: None,
            depends_timeout: std::time::Duration::from_secs(300),
        }
    }
}

/// What happened to one cluster.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Changes were written (or, in a dry run, would be).
    Changed(ClusterChanges),
    /// Live state already matches.
    Unchanged(ClusterChanges),
    /// The cluster could not be reconciled; `changed` lists exactly the
    /// objects written before the failure. `error.reason()` says why in a
    /// form status, health records and rollouts read.
    Failed {
        error: Arc<BackendError>,
        changed: Vec<ObjectKey>,
    },
    /// Not attempted, and why.
    Skipped { reason: Skip },
}

/// Why a cluster was not attempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its parent failed.
    ParentFailed(String),
    /// Its parent was skipped.
    ParentSkipped(String),
    /// canopy is stopping (a signal arrived).
    Stopping,
    /// It left the fleet and still holds objects canopy owns (only
    /// `--prune-clusters` deletes them).
    Orphaned { objects: usize },
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::ParentFailed(p) => write!(f, "parent {p} failed"),
            Skip::ParentSkipped(p) => write!(f, "parent {p} was skipped"),
            Skip::Stopping => f.write_str("canopy is stopping"),
            Skip::Orphaned { objects } => write!(
                f,
                "orphaned: the cluster left the fleet and still holds {objects} object(s) canopy owns; --prune-clusters deletes them"
            ),
        }
    }
}

impl Outcome {
    /// A failure of `error` after `changed` were written.
    pub fn failed(error: BackendError, changed: Vec<ObjectKey>) -> Outcome {
        Outcome::Failed {
            error: Arc::new(error),
            changed,
        }
    }
}

impl Outcome {
    fn blocks_children(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::Skipped { .. })
    }

    pub fn changes(&self) -> Option<&ClusterChanges> {
        match self {
            Outcome::Changed(c) | Outcome::Unchanged(c) => Some(c),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterResult {
    pub cluster: String,
    pub depth: usize,
    pub outcome: Outcome,
    /// The hash of the cluster's stored state once it was written or found
    /// in sync, where its backend can tell ([`ClusterBackend::version`]);
    /// what [`super::settled`] records.
    pub version: Option<u64>,
}

/// A cluster with state that is no longer in the fleet.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub cluster: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In tree order.
    pub clusters: Vec<ClusterResult>,
    pub orphans: Vec<Orphan>,
}

/// Totals over a report: created, updated, deleted objects; clusters
/// changed, unchanged, failed, skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Report {
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let outcomes = self
            .clusters
            .iter()
            .map(|c| &c.outcome)
            .chain(self.orphans.iter().map(|o| &o.outcome));
        for o in outcomes {
            match o {
                Outcome::Changed(c) => {
                    let (a, b, d) = c.counts();
                    t.created += a;
                    t.updated += b;
                    t.deleted += d;
                    t.changed += 1;
                }
                Outcome::Unchanged(_) => t.unchanged += 1,
                Outcome::Failed { .. } => t.failed += 1,
                Outcome::Skipped { .. } => t.skipped += 1,
            }
        }
        t
    }

    /// Whether `diff` should report differences: a cluster with changes, or
    /// a cluster that left the fleet and still holds objects canopy owns.
    pub fn differs(&self) -> bool {
        self.totals().changed > 0
            || self
                .orphans
                .iter()
                .any(|o| matches!(o.outcome, Outcome::Skipped { .. }))
    }
}

/// The desired objects of one run, rendered once: per cluster, its objects
/// in apply order, waiting as compact JSON (a JSON tree per object would
/// hold several times the memory for a large fleet). Every wave of a
/// staged rollout, each health gate and `status` read them from here
/// instead of rendering again.
#[derive(Default)]
pub struct Desired {
    clusters: BTreeMap<usize, Vec<Packed>>,
    /// By relay cluster: the handoff its objects carry (revision and
    /// digest), for the steps after the write that ask about it.
    handoffs: BTreeMap<usize, crate::core::relay_report::Seen>,
    /// By cluster name: workloads to keep as they run there, beside the
    /// rollouts' holds (a rollback a relay was handed and cannot render).
    kept: BTreeMap<String, BTreeSet<String>>,
    /// By cluster: objects rendered at another revision than the run's (a
    /// rollback), stamped with that revision when written.
    pinned: BTreeMap<usize, BTreeMap<ObjectKey, String>>,
    /// Clusters not rendered because they were found in sync at the same
    /// render and their state has not changed since ([`super::settled`]).
    settled: BTreeMap<usize, super::settled::InSync>,
}

impl Desired {
    /// Renders the clusters `only` names (`None`: all). Every cluster is
    /// rendered before anything is written, so that a render error stops
    /// the whole run.
    pub fn render(r: &Renderer<'_>, only: Option<&BTreeSet<usize>>) -> Result<Self, Diagnostics> {
        let only: Option<Vec<usize>> = only.map(|t| t.iter().copied().collect());
        let clusters = render_map(r, only.as_deref(), |_, objs| {
            objs.into_iter().map(Packed::new).collect::<Vec<_>>()
        })?
        .into_iter()
        .collect();
        Ok(Desired {
            clusters,
            handoffs: BTreeMap::new(),
            kept: BTreeMap::new(),
            pinned: BTreeMap::new(),
            settled: BTreeMap::new(),
        })
    }

    /// Takes `settled` clusters into the run unrendered: each is reported
    /// in sync without being read, its subtree reconciled after it as
    /// usual.
    pub fn settle(&mut self, settled: BTreeMap<usize, super::settled::InSync>) {
        self.settled = settled;
    }

    /// Puts relay cluster `c`'s handoff `seen` among its objects, in place
    /// of the one it carried (a run that hands down again after a stage
    /// moved).
    pub fn hand(
        &mut self,
        c: usize,
        seen: crate::core::relay_report::Seen,
        objects: Vec<(ObjectKey, Value)>,
    ) {
        // canopy's own objects on a cluster are its handoff's.
        if self.handoffs.contains_key(&c) {
            if let Some(list) = self.clusters.get_mut(&c) {
                list.retain(|p| p.workload.is_some());
            }
        }
        self.add(c, objects);
        self.handoffs.insert(c, seen);
    }

    /// Cluster `c`'s objects of workload `wi` become `objects`, rendered at
    /// `revision` (a rollback), which is what their revision annotation
    /// says when they are written.
    pub fn replace_workload(
        &mut self,
        c: usize,
        wi: usize,
        objects: Vec<Rendered>,
        revision: &str,
    ) {
        let pins = self.pinned.entry(c).or_default();
        for o in &objects {
            pins.insert(o.key.clone(), revision.to_string());
        }
        let list = self.clusters.entry(c).or_default();
        list.retain(|p| p.workload != Some(wi));
        list.extend(objects.into_iter().map(|o| Packed {
            workload: Some(wi),
            ..Packed::new(o)
        }));
        list.sort_by(|a, b| {
            crate::core::kinds::apply_order(&a.key).cmp(&crate::core::kinds::apply_order(&b.key))
        });
    }

    /// Keeps workload `w` on cluster `cluster` as it runs there.
    pub fn keep(&mut self, cluster: &str, w: &str) {
        self.kept
            .entry(cluster.to_string())
            .or_default()
            .insert(w.to_string());
    }

    /// By cluster name, the workloads kept as they run ([`Desired::keep`]).
    pub fn kept(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.kept
    }

    /// The handoff relay cluster `c`'s objects carry, if it is one.
    pub fn handoff(&self, c: usize) -> Option<&crate::core::relay_report::Seen> {
        self.handoffs.get(&c)
    }

    /// Whether cluster `c` is in the run: rendered, or found settled.
    pub fn has(&self, c: usize) -> bool {
        self.clusters.contains_key(&c) || self.settled.contains_key(&c)
    }

    /// Adds objects canopy itself puts on cluster `c` (a relay's handoff),
    /// which belong to no workload, and keeps the cluster's apply order.
    pub fn add(&mut self, c: usize, objects: Vec<(ObjectKey, Value)>) {
        let list = self.clusters.entry(c).or_default();
        for (key, value) in objects {
            // The fleet's own object of that identity stands (a workload
            // may declare the `canopy-system` Namespace itself).
            if list.iter().any(|p| p.key == key) {
                continue;
            }
            list.push(Packed {
                key,
                workload: None,
                json: serde_json::to_vec(&value)
                    .expect("JSON values serialize")
                    .into_boxed_slice(),
            });
        }
        list.sort_by(|a, b| {
            crate::core::kinds::apply_order(&a.key).cmp(&crate::core::kinds::apply_order(&b.key))
        });
    }

    /// Cluster `c`'s objects: (workload index, none for canopy's own,
    /// identity, object).
    pub fn objects(
        &self,
        c: usize,
    ) -> impl Iterator<Item = (Option<usize>, &ObjectKey, Value)> + '_ {
        self.clusters
            .get(&c)
            .into_iter()
            .flatten()
            .map(|p| (p.workload, &p.key, p.value()))
    }

    /// Each rendered cluster with its objects' identities and workloads
    /// (values are unpacked only where asked for, with [`Desired::value`]).
    pub fn clusters(&self) -> impl Iterator<Item = (usize, Vec<(Option<usize>, &ObjectKey)>)> + '_ {
        self.clusters
            .iter()
            .map(|(&c, objs)| (c, objs.iter().map(|p| (p.workload, &p.key)).collect()))
    }

    /// The `i`th object of cluster `c`.
    pub fn value(&self, c: usize, i: usize) -> Value {
        self.clusters[&c][i].value()
    }
}

/// Renders the clusters of `pass.targets`, then reconciles them down the
/// tree, then the `orphans` (clusters with state that left the fleet).
pub fn run(
    r: &Renderer<'_>,
    backends: &dyn Backends,
    orphans: &[String],
    meta: &ApplyMeta,
    opts: &Options,
    pass: &Pass,
) -> Result<Report, Diagnostics> {
    let desired = Desired::render(r, pass.targets.as_ref())?;
    Ok(run_rendered(
        r, &desired, backends, orphans, meta, opts, pass,
    ))
}

/// Reconciles the clusters of `desired` (those of `pass.targets`, if
/// given) down the tree, then the `orphans`.
pub fn run_rendered(
    r: &Renderer<'_>,
    desired: &Desired,
    backends: &dyn Backends,
    orphans: &[String],
    meta: &ApplyMeta,
    opts: &Options,
    pass: &Pass,
) -> Report {
    let checked = r.checked;
    let topo = &checked.topo;
    let workloads = &checked.fleet.workloads;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.concurrency.max(1))
        .build()
        .expect("thread pool");
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    let mut versions: BTreeMap<usize, u64> = BTreeMap::new();
    let levels: Vec<Vec<usize>> = topo
        .levels()
        .into_iter()
        .map(|level| {
            level
                .into_iter()
                .filter(|&c| desired.has(c) && pass.targets.as_ref().is_none_or(|t| t.contains(&c)))
                .collect::<Vec<usize>>()
        })
        .filter(|members| !members.is_empty())
        .collect();
    if let Some(p) = &pass.progress {
        p.begin(levels.iter().map(Vec::len).sum(), levels.len());
    }
    for (i, members) in levels.into_iter().enumerate() {
        if let Some(p) = &pass.progress {
            p.level(i + 1);
        }
        let results: Vec<(usize, Outcome, Option<u64>)> = pool.install(|| {
            members
                .par_iter()
                .map(|&c| {
                    let parent = topo
                        .parent(c)
                        .and_then(|p| outcomes.get(&p).map(|o| (p, o)));
                    let reads_on = opts.dry_run && opts.read_under_failed_parents;
                    if let Some((p, o)) = parent.filter(|(_, o)| o.blocks_children() && !reads_on) {
                        let p = topo.name(p).to_string();
                        let reason = match o {
                            Outcome::Failed { .. } => Skip::ParentFailed(p),
                            _ => Skip::ParentSkipped(p),
                        };
                        return (c, Outcome::Skipped { reason }, None);
                    }
                    if pass
                        .cancel
                        .as_ref()
                        .is_some_and(|f| f.load(Ordering::SeqCst))
                    {
                        return (
                            c,
                            Outcome::Skipped {
                                reason: Skip::Stopping,
                            },
                            None,
                        );
                    }
                    if let Some(s) = desired.settled.get(&c) {
                        return (c, s.outcome(), Some(s.state));
                    }
                    let name = topo.name(c);
                    // Workloads a staged rollout holds back here stay out.
                    let packed: Vec<&Packed> = desired.clusters[&c]
                        .iter()
                        .filter(|o| {
                            let w = o.workload.map_or("", |w| workloads[w].name());
                            !pass.scope.excludes(name, w)
                        })
                        .collect();
                    let backend = backends.backend(name);
                    let pins = desired.pinned.get(&c);
                    let outcome = reconcile(
                        r,
                        backend.as_ref(),
                        name,
                        (&packed, pins),
                        meta,
                        opts,
                        &pass.scope,
                    );
                    // What the cluster holds now, for the record of
                    // clusters in sync (a dry run changed nothing).
                    let version = match &outcome {
                        Outcome::Changed(_) | Outcome::Unchanged(_) if !opts.dry_run => {
                            backend.version()
                        }
                        _ => None,
                    };
                    (c, outcome, version)
                })
                .inspect(|_| {
                    if let Some(p) = &pass.progress {
                        p.cluster_done();
                    }
                })
                .collect()
        });
        for (c, outcome, version) in results {
            outcomes.insert(c, outcome);
            if let Some(v) = version {
                versions.insert(c, v);
            }
        }
    }
    let clusters = topo
        .preorder()
        .iter()
        .filter_map(|&c| {
            outcomes.remove(&c).map(|outcome| ClusterResult {
                cluster: topo.name(c).to_string(),
                depth: topo.depth(c),
                outcome,
                version: versions.get(&c).copied(),
            })
        })
        .collect();
    let orphans = orphans
        .iter()
        .map(|name| Orphan {
            cluster: name.clone(),
            outcome: reconcile_orphan(r, backends.backend(name).as_ref(), meta, opts),
        })
        .collect();
    Report { clusters, orphans }
}

/// The cluster's own word on scope: a namespaced object without a namespace
/// lands in `default`, and a cluster-scoped one has none, so that rendered
/// keys are exactly the keys listed back from the cluster. `scopes` is what
/// [`ClusterBackend::scopes`] said; a kind it does not know is left as
/// rendered.
pub fn place_in_scope(scopes: &BTreeMap<TypeRef, bool>, key: &mut ObjectKey, v: &mut Value) {
    let Some(&namespaced) = TypeRef::of(v).and_then(|t| scopes.get(&t)) else {
        return;
    };
    let meta = &mut v["metadata"];
    match (namespaced, key.namespace.is_empty()) {
        (true, true) => {
            meta["namespace"] = Value::String("default".into());
            key.namespace = "default".into();
        }
        (false, false) => {
            if let Some(m) = meta.as_object_mut() {
                m.remove("namespace");
            }
            key.namespace.clear();
        }
        _ => {}
    }
}

/// A tenant's objects judged by the scope the cluster's discovery reports
/// for their kinds (`scopes`), before anything of the cluster is read or
/// written: canopy judged them offline by its table of built-in kinds and
/// the render's CRDs, which cannot know a custom kind the cluster already
/// has (a cert-manager ClusterIssuer is cluster-scoped; offline it looks
/// namespaced). A breach fails the cluster with nothing written.
fn tenants_in_scope(
    r: &Renderer<'_>,
    cluster: &str,
    packed: &[&Packed],
    values: &[serde_json::Value],
    scopes: &BTreeMap<TypeRef, bool>,
) -> Result<(), BackendError> {
    let checked = r.checked;
    let mut breaches: Vec<String> = Vec::new();
    for (p, v) in packed.iter().zip(values) {
        let Some(wi) = p.workload else {
            continue;
        };
        let Some(t) = checked.tenancy.owner[wi] else {
            continue;
        };
        let Some(&namespaced) = TypeRef::of(v).and_then(|ty| scopes.get(&ty)) else {
            continue;
        };
        let w = &checked.fleet.workloads[wi];
        let tenant = &checked.fleet.tenants[t];
        if let Some(b) =
            checked
                .tenancy
                .breach(tenant, t, &p.key, w.spec.namespace.as_deref(), namespaced)
        {
            breaches.push(format!(
                "workload {:?} of tenant {:?}: {b}",
                w.name(),
                tenant.name()
            ));
        }
    }
    if breaches.is_empty() {
        return Ok(());
    }
    Err(BackendError::Tenancy {
        cluster: cluster.to_string(),
        breaches: breaches.join("; "),
    })
}

/// A rendered object waiting for its cluster's turn, as compact JSON.
struct Packed {
    key: ObjectKey,
    /// `None` for canopy's own objects (a relay's handoff).
    workload: Option<usize>,
    json: Box<[u8]>,
}

impl Packed {
    fn new(o: Rendered) -> Packed {
        Packed {
            key: o.key,
            workload: Some(o.workload),
            json: serde_json::to_vec(&o.value)
                .expect("JSON values serialize")
                .into_boxed_slice(),
        }
    }

    fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.json).expect("canopy wrote this JSON itself")
    }
}

/// Diffs one cluster and, unless this is a dry run, writes the changes.
/// `pins`: the objects rendered at another revision than the run's.
fn reconcile(
    r: &Renderer<'_>,
    backend: &dyn ClusterBackend,
    cluster: &str,
    (packed, pins): (&[&Packed], Option<&BTreeMap<ObjectKey, String>>),
    meta: &ApplyMeta,
    opts: &Options,
    scope: &Scope,
) -> Outcome {
    let fleet = &r.checked.fleet;
    let failed = |e: BackendError| Outcome::failed(e, Vec::new());
    let mut values: Vec<serde_json::Value> = packed.iter().map(|p| p.value()).collect();
    let kinds: Vec<TypeRef> = values
        .iter()
        .filter_map(TypeRef::of)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let scopes = match backend.scopes(&kinds) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    if let Err(e) = tenants_in_scope(r, cluster, packed, &values, &scopes) {
        return failed(e);
    }
    let mut keys: Vec<ObjectKey> = packed.iter().map(|o| o.key.clone()).collect();
    for (key, v) in keys.iter_mut().zip(values.iter_mut()) {
        place_in_scope(&scopes, key, v);
    }
    let pinned: BTreeMap<&ObjectKey, &str> = pins
        .map(|pins| {
            packed
                .iter()
                .zip(&keys)
                .filter_map(|(p, k)| Some((k, pins.get(&p.key)?.as_str())))
                .collect()
        })
        .unwrap_or_default();
    let mut live = match backend.list_owned(&fleet.name, &kinds) {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    // A relay's chunks that its agent still works from are not pruned
    // until it has taken a newer handoff.
    let acked = super::handoff::acknowledged_chunks(&live);
    if !acked.is_empty() {
        let wanted: BTreeSet<&ObjectKey> = keys.iter().collect();
        live.retain(|l| {
            !super::handoff::is_chunk_of(l, &acked)
                || ObjectKey::of(l).is_some_and(|k| wanted.contains(&k))
        });
    }
    if !matches!(scope, Scope::All) {
        live.retain(|l| {
            let w = l
                .pointer("/metadata/labels")
                .and_then(|ls| ls.get(crate::core::model::LABEL_WORKLOAD))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            !scope.excludes(cluster, w)
        });
    }
    let live_by_key: BTreeMap<ObjectKey, &serde_json::Value> = live
        .iter()
        .filter_map(|l| ObjectKey::of(l).map(|k| (k, l)))
        .collect();
    // An existing object keeps the cluster's value of every retained field,
    // and the revision that last wrote it (a new one is stamped on write).
    for ((o, key), v) in packed.iter().zip(&keys).zip(values.iter_mut()) {
        if let Some(l) = live_by_key.get(key) {
            if let Some(w) = o.workload {
                crate::core::retain::retain(v, l, key, &fleet.workloads[w].spec.retain);
            }
            keep_revision(v, l);
        }
    }
    let planned: Vec<Planned<'_>> = keys
        .iter()
        .zip(&values)
        .map(|(key, v)| Planned {
            key,
            desired: v,
            live: live_by_key.get(key).copied(),
        })
        .collect();
    let views = match backend.preview(&planned) {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let desired: Vec<diff::Desired<'_>> = packed
        .iter()
        .zip(&keys)
        .zip(&values)
        .zip(views)
        .map(|(((o, key), value), server)| diff::Desired {
            key,
            value,
            ignore: o
                .workload
                .map_or(&[][..], |w| &fleet.workloads[w].spec.ignore_differences),
            server,
        })
        .collect();
    let changes = diff::diff_cluster(&desired, &live, opts.prune);
    let fenced = opts
        .fence
        .as_ref()
        .is_some_and(|f| f.load(Ordering::SeqCst));
    if fenced && !opts.dry_run && !changes.is_empty() {
        return failed(BackendError::Fenced {
            cluster: cluster.to_string(),
        });
    }
    let present: BTreeSet<usize> = packed.iter().filter_map(|o| o.workload).collect();
    let order = crate::core::depends::Order::on(fleet, &present).filter(|_| !opts.dry_run);
    let outcome = match order {
        Some(order) => write_in_order(r, backend, changes, &values, &order, meta, opts, &pinned),
        None => write(backend, changes, meta, opts, &pinned),
    };
    match (opts.wait, &outcome) {
        (Some(timeout), Outcome::Changed(_) | Outcome::Unchanged(_)) if !opts.dry_run => {
            let objects: Vec<&serde_json::Value> = values.iter().collect();
            match backend.wait_healthy(&objects, timeout, &r.checked.health) {
                Ok(()) => outcome,
                Err(e) => Outcome::failed(
                    e,
                    outcome
                        .changes()
                        .map(|c| c.changes.iter().map(|ch| ch.key().clone()).collect())
                        .unwrap_or_default(),
                ),
            }
        }
        _ => outcome,
    }
}

fn write(
    backend: &dyn ClusterBackend,
    mut changes: ClusterChanges,
    meta: &ApplyMeta,
    opts: &Options,
    pinned: &BTreeMap<&ObjectKey, &str>,
) -> Outcome {
    if changes.is_empty() {
        return Outcome::Unchanged(changes);
    }
    changes.note_workloads();
    let written = if opts.dry_run {
        Ok(())
    } else {
        stamp_revision(&mut changes.changes, &meta.revision, pinned);
        backend.write(&changes.changes, meta)
    };
    if !opts.keep_values {
        changes.forget_values();
    }
    match written {
        Ok(()) => Outcome::Changed(changes),
        Err(f) => Outcome::failed(f.error, f.changed),
    }
}

/// The workload (fleet index) an object of the cluster belongs to, by its
/// label; `None` for canopy's own objects (a relay's handoff).
fn workload_of(fleet: &crate::core::model::Fleet, v: &serde_json::Value) -> Option<usize> {
    let name = v
        .pointer("/metadata/labels")?
        .get(crate::core::model::LABEL_WORKLOAD)?
        .as_str()?;
    fleet.workloads.iter().position(|w| w.name() == name)
}

/// [`write`] for a cluster where workloads wait for others (`dependsOn`):
/// level by level, each level's changes written and the workloads later
/// ones wait for healthy (within `opts.depends_timeout`) before the next.
/// A dependency that is not healthy in time leaves the workloads waiting
/// for it, and their deletions, pending with the reason; the rest of the
/// cluster goes on, and deletions come last as always.
#[allow(clippy::too_many_arguments)]
fn write_in_order(
    r: &Renderer<'_>,
    backend: &dyn ClusterBackend,
    changes: ClusterChanges,
    values: &[serde_json::Value],
    order: &crate::core::depends::Order,
    meta: &ApplyMeta,
    opts: &Options,
    pinned: &BTreeMap<&ObjectKey, &str>,
) -> Outcome {
    let fleet = &r.checked.fleet;
    let level_of = |ch: &Change| {
        workload_of(fleet, ch.object())
            .and_then(|w| order.level[w])
            .unwrap_or(0)
    };
    let top = order.level.iter().flatten().copied().max().unwrap_or(0);
    let ClusterChanges {
        changes: all,
        kept,
        unchanged,
        ..
    } = changes;
    let (deletes, mut writes): (Vec<Change>, Vec<Change>) = all
        .into_iter()
        .partition(|c| matches!(c, Change::Delete { .. }));
    let mut done = ClusterChanges {
        kept,
        unchanged,
        ..ClusterChanges::default()
    };
    // Workload → why it waits (itself or a dependency not healthy).
    let mut pending: BTreeMap<usize, String> = BTreeMap::new();
    let mut written: Vec<ObjectKey> = Vec::new();
    let mut run = |batch: Vec<Change>, done: &mut ClusterChanges| -> Result<(), Outcome> {
        if batch.is_empty() {
            return Ok(());
        }
        let keys: Vec<ObjectKey> = batch.iter().map(|c| c.key().clone()).collect();
        let part = ClusterChanges {
            changes: batch,
            ..ClusterChanges::default()
        };
        match write(backend, part, meta, opts, pinned) {
            Outcome::Changed(c) | Outcome::Unchanged(c) => {
                written.extend(keys);
                done.workloads.extend(c.workloads);
                done.changes.extend(c.changes);
                Ok(())
            }
            Outcome::Failed { error, mut changed } => {
                let mut all = written.clone();
                all.append(&mut changed);
                Err(Outcome::Failed {
                    error,
                    changed: all,
                })
            }
            s @ Outcome::Skipped { .. } => Err(s),
        }
    };
    for level in 0..=top {
        let (now, later): (Vec<Change>, Vec<Change>) =
            writes.into_iter().partition(|c| level_of(c) == level);
        writes = later;
        let blocked =
            |c: &Change| workload_of(fleet, c.object()).is_some_and(|w| pending.contains_key(&w));
        let batch: Vec<Change> = now.into_iter().filter(|c| !blocked(c)).collect();
        if let Err(o) = run(batch, &mut done) {
            return o;
        }
        // The workloads of this level that later ones wait for: healthy
        // before the next level is written.
        let awaited: Vec<usize> = (0..fleet.workloads.len())
            .filter(|&w| order.level[w] == Some(level) && order.is_awaited(w))
            .filter(|w| !pending.contains_key(w))
            .collect();
        for w in awaited {
            // Nothing of its dependents left to write: nothing to wait for
            // (a re-apply that finds them in sync reads no health).
            let dependents = order.dependents_of(w);
            let waiting = writes
                .iter()
                .any(|c| workload_of(fleet, c.object()).is_some_and(|d| dependents.contains(&d)));
            if !waiting {
                continue;
            }
            let objects: Vec<&serde_json::Value> = values
                .iter()
                .filter(|v| workload_of(fleet, v) == Some(w))
                .collect();
            if let Err(e) = backend.wait_healthy(&objects, opts.depends_timeout, &r.checked.health)
            {
                let name = fleet.workloads[w].name();
                let why = format!("waits for {name}, not healthy: {}", e.summary());
                for d in order.dependents_of(w) {
                    pending.entry(d).or_insert_with(|| why.clone());
                }
            }
        }
    }
    let deletes: Vec<Change> = deletes
        .into_iter()
        .filter(|c| {
            let Change::Delete { live, .. } = c else {
                return true;
            };
            workload_of(fleet, live).is_none_or(|w| !pending.contains_key(&w))
        })
        .collect();
    if let Err(o) = run(deletes, &mut done) {
        return o;
    }
    done.pending = pending
        .into_iter()
        .map(|(w, why)| (fleet.workloads[w].name().to_string(), why))
        .collect();
    if done.changes.is_empty() {
        Outcome::Unchanged(done)
    } else {
        Outcome::Changed(done)
    }
}

/// The annotation's place in an object's metadata.
fn revision_annotation(v: &serde_json::Value) -> Option<&serde_json::Value> {
    v.get("metadata")?
        .get("annotations")?
        .get(crate::core::model::ANNOTATION_REVISION)
}

/// Sets the revision annotation (render gives every object annotations).
fn set_revision(obj: &mut serde_json::Value, revision: serde_json::Value) {
    if let Some(ann) = obj
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(serde_json::Value::as_object_mut)
    {
        ann.insert(crate::core::model::ANNOTATION_REVISION.into(), revision);
    }
}

/// Carries the live object's revision annotation into the desired one, so
/// that an object a new commit does not change compares equal (and, under
/// server-side apply, stays provably unchanged).
fn keep_revision(desired: &mut serde_json::Value, live: &serde_json::Value) {
    if let Some(rev) = revision_annotation(live).cloned() {
        set_revision(desired, rev);
    }
}

/// Records `revision` on every object about to be created or changed, or
/// the revision it was rendered at where that is another (`pinned`).
fn stamp_revision(
    changes: &mut [crate::core::diff::Change],
    revision: &str,
    pinned: &BTreeMap<&ObjectKey, &str>,
) {
    for ch in changes {
        if let crate::core::diff::Change::Create { key, desired }
        | crate::core::diff::Change::Update { key, desired, .. } = ch
        {
            let rev = pinned.get(&*key).copied().unwrap_or(revision);
            set_revision(desired, serde_json::Value::String(rev.to_string()));
        }
    }
}

/// A cluster that left the fleet: its owned objects are deleted only with
/// `prune_clusters`; otherwise it is reported with what it still holds.
fn reconcile_orphan(
    r: &Renderer<'_>,
    backend: &dyn ClusterBackend,
    meta: &ApplyMeta,
    opts: &Options,
) -> Outcome {
    let live = match backend.list_owned(&r.checked.fleet.name, &[]) {
        Ok(l) => l,
        Err(e) => return Outcome::failed(e, Vec::new()),
    };
    if live.is_empty() {
        return Outcome::Unchanged(ClusterChanges::default());
    }
    if !opts.prune_clusters {
        return Outcome::Skipped {
            reason: Skip::Orphaned {
                objects: live.len(),
            },
        };
    }
    write(
        backend,
        diff::diff_cluster(&[], &live, true),
        meta,
        opts,
        &BTreeMap::new(),
    )
}
