//! Fleet → every diagnostic at once, and a [`Checked`] fleet when there is no
//! error.
//!
//! Validation is where cross-document facts are checked (a parent that
//! exists, a selector naming real clusters, a Divided workload that has
//! something to divide). Each diagnostic points at the exact YAML node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::kinds;
use crate::core::model::*;
use crate::core::select::LabelIndex;
use crate::core::topology::{Topology, TopologyError};
use crate::core::yaml::{parse_stream, YamlPath};

/// Facts about a workload worked out once during validation.
#[derive(Debug, Clone, Default)]
pub struct WorkloadFacts {
    /// For `Divided`: the number of replicas to divide.
    pub total: Option<u32>,
    /// Per manifest file: its documents, parsed once, when it is not a template.
    pub parsed: Vec<Option<Arc<Vec<Value>>>>,
    /// A workload whose manifests differ by cluster (Helm: one output per
    /// distinct set of values): per cluster, the one manifest it gets
    /// (`None`: none, the workload is not chosen there). `None`: every
    /// cluster gets every manifest.
    pub variant: Option<Arc<Vec<Option<u32>>>>,
}

/// One object of a workload that is the same on every cluster (a plain
/// manifest's, a Helm output's), as parsed once.
pub struct ParsedObject<'c> {
    pub workload: usize,
    pub file: &'c crate::core::model::ManifestFile,
    /// Its place among the file's (non-empty) documents.
    pub index: usize,
    pub value: &'c Value,
}

impl ParsedObject<'_> {
    /// Its line in the file: the file parsed again, so only for an object
    /// a message is about (0 when it cannot be found).
    pub fn line(&self) -> usize {
        parse_stream(&self.file.text, false)
            .ok()
            .and_then(|all| {
                all.into_iter()
                    .filter(|x| !x.value.is_null())
                    .nth(self.index)
                    .map(|x| x.line)
            })
            .unwrap_or(0)
    }
}

/// A fleet without errors, with its tree built.
#[derive(Debug, Clone)]
pub struct Checked {
    pub fleet: Fleet,
    /// Shared with the next revision's check when its clusters are the
    /// same documents ([`check_after`]).
    pub topo: Arc<Topology>,
    /// Cluster labels indexed for fast selection.
    pub labels: Arc<LabelIndex>,
    /// Parallel to `fleet.workloads`.
    pub facts: Vec<WorkloadFacts>,
    /// Every cluster's template facts, made once when first asked for
    /// ([`crate::core::render::cluster_facts`]): Helm's values and the
    /// renderer both need them.
    pub cluster_facts: std::sync::OnceLock<Arc<crate::core::render::ClusterFacts>>,
    /// Each cluster's `spec.capacity` as numbers (parsed once, when
    /// checked; [`Self::capacity_values`]).
    capacity: Vec<CapacityValues>,
    /// The live capacity of the clusters that ask for it, as the run last
    /// read it ([`Self::capacity`]); set by the run before it places.
    pub measured: RunInput<BTreeMap<String, LiveCapacity>>,
    /// By workload, by cluster: the replicas the last apply gave it, for
    /// calm rescheduling; set by the run before it places.
    pub previous: RunInput<BTreeMap<String, BTreeMap<String, u32>>>,
    /// Which tenant owns each workload, and the tenants' rules compiled.
    pub tenancy: crate::core::tenancy::Tenancy,
    /// The health rules users wrote, compiled.
    pub health: Arc<crate::core::health_rules::HealthRules>,
}

impl Checked {
    /// Every object of workloads `which` that is the same on every cluster
    /// (templated manifests are rendered per cluster, and not here).
    pub fn parsed_objects(
        &self,
        which: impl Fn(usize) -> bool,
    ) -> impl Iterator<Item = ParsedObject<'_>> {
        self.fleet
            .workloads
            .iter()
            .enumerate()
            .filter(move |(wi, _)| which(*wi))
            .flat_map(move |(wi, w)| {
                w.manifests.iter().enumerate().flat_map(move |(mi, file)| {
                    let parsed = self.facts[wi].parsed.get(mi).and_then(Option::as_ref);
                    parsed.into_iter().flat_map(move |docs| {
                        docs.iter()
                            .enumerate()
                            .map(move |(index, value)| ParsedObject {
                                workload: wi,
                                file,
                                index,
                                value,
                            })
                    })
                })
            })
    }

    pub fn cluster(&self, i: usize) -> &Cluster {
        &self.fleet.clusters[i]
    }

    /// What cluster `c` can hold, as the division uses it: its live
    /// capacity when it asks for it and the run has read it, else its
    /// `spec.capacity`.
    pub fn capacity(&self, c: usize) -> std::borrow::Cow<'_, Capacity> {
        let cl = self.cluster(c);
        if cl.spec.live_capacity {
            if let Some(live) = self.measured.get(cl.name()) {
                return std::borrow::Cow::Owned(live.capacity);
            }
        }
        std::borrow::Cow::Borrowed(&cl.spec.capacity)
    }

    /// [`Self::capacity`] as numbers, without parsing `spec.capacity`
    /// again.
    pub fn capacity_values(&self, c: usize) -> CapacityValues {
        let cl = self.cluster(c);
        if cl.spec.live_capacity {
            if let Some(live) = self.measured.get(cl.name()) {
                return CapacityValues::of(&live.capacity);
            }
        }
        self.capacity[c]
    }
}

/// What a run reads beside the fleet and gives to its placement (live
/// capacity, the replicas last applied): replaced whole by each run, since
/// the fleet itself is shared by the run's stages and, in `watch`, kept
/// across rounds.
#[derive(Default)]
pub struct RunInput<T>(std::sync::RwLock<Arc<T>>);

impl<T: Default> RunInput<T> {
    pub fn set(&self, v: T) {
        *self.0.write().expect("not poisoned") = Arc::new(v);
    }

    pub fn all(&self) -> Arc<T> {
        self.0.read().expect("not poisoned").clone()
    }
}

impl RunInput<BTreeMap<String, LiveCapacity>> {
    pub fn get(&self, cluster: &str) -> Option<LiveCapacity> {
        self.0.read().expect("not poisoned").get(cluster).cloned()
    }
}

impl<T: Default> Clone for RunInput<T> {
    fn clone(&self) -> Self {
        RunInput(std::sync::RwLock::new(self.all()))
    }
}

impl<T> std::fmt::Debug for RunInput<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunInput")
    }
}

/// Checks the fleet; returns it as [`Checked`] only if no error was found.
/// Warnings come back either way.
pub fn check(fleet: Fleet) -> (Option<Checked>, Diagnostics) {
    check_after(fleet, None)
}

/// Whether `now` holds the very cluster documents of `before`, in the same
/// order (see [`check_after`]): then each has what its document says
/// (name, parent, labels, annotations, taints, capacity), nothing after
/// loading changes those.
pub(crate) fn same_clusters(before: &[Arc<Cluster>], now: &[Arc<Cluster>]) -> bool {
    before.len() == now.len()
        && before
            .iter()
            .zip(now)
            .all(|(a, b)| Arc::ptr_eq(&a.source, &b.source))
}

/// As [`check`], after `prev`, the last revision's fleet as checked: when
/// the clusters are the very documents `prev` was made of (the loader
/// hands an unchanged file's documents over as parsed), what was made of
/// them alone is taken over: they had no error then and have none now,
/// and the tree, the label index and their capacities are the same. A
/// `watch` round whose commit touched no cluster skips the three quarters
/// of validation that look at every cluster (see [`crate::core::carry`]).
pub fn check_after(mut fleet: Fleet, prev: Option<&Checked>) -> (Option<Checked>, Diagnostics) {
    let mut d = Diagnostics::default();
    let same = prev.filter(|p| same_clusters(&p.fleet.clusters, &fleet.clusters));

    if same.is_none() {
        dedupe(
            &mut fleet.clusters,
            "Cluster",
            |c| (c.name(), &c.source),
            &mut d,
        );
    }
    dedupe(
        &mut fleet.workloads,
        "Workload",
        |w| (w.name(), &w.source),
        &mut d,
    );
    dedupe(
        &mut fleet.overrides,
        "Override",
        |o| (o.name(), &o.source),
        &mut d,
    );

    let names = Known {
        set: fleet.clusters.iter().map(|c| c.name()).collect(),
        slice: fleet.slice,
    };
    let (capacity_values, topo) = match same {
        Some(p) => (p.capacity.clone(), Some(p.topo.clone())),
        None => {
            let capacity_values: Vec<CapacityValues> = fleet
                .clusters
                .iter()
                .map(|c| check_cluster(c, &mut d))
                .collect();
            (capacity_values, tree(&fleet, &mut d).map(Arc::new))
        }
    };
    if fleet.clusters.is_empty() && !fleet.incomplete {
        d.push(
            Diagnostic::error("the fleet has no Cluster documents")
                .hint("add at least one `kind: Cluster` document (see fleet-example/clusters/)"),
        );
    }

    let workload_names = Known {
        set: fleet.workloads.iter().map(Workload::name).collect(),
        slice: fleet.slice,
    };
    let mut facts = Vec::with_capacity(fleet.workloads.len());
    for w in &fleet.workloads {
        facts.push(check_workload(w, &names, &mut d));
    }
    for o in &fleet.overrides {
        check_override(o, &names, &workload_names, &mut d);
    }
    let tenancy = crate::core::tenancy::Tenancy::new(&fleet, &mut d);
    for t in &fleet.tenants {
        if let Some(sel) = &t.spec.clusters {
            check_selector(
                sel,
                &YamlPath::parse("spec.clusters"),
                &t.source,
                &names,
                &mut d,
            );
        }
    }
    for (i, def) in fleet.defaults.iter().enumerate() {
        if i > 0 {
            d.push(
                Diagnostic::error(format!(
                    "second Defaults document {:?}: the fleet has one, in {}",
                    def.meta.name, fleet.defaults[0].source.file
                ))
                .at(&def.source.loc_str("kind"))
                .hint("merge them into one Defaults document"),
            );
        }
        if let Some(r) = &def.spec.rollout {
            check_rollout(r, &def.source, &names, &mut d);
        }
    }

    d.extend(crate::core::health_rules::check(&fleet));
    d.extend(crate::core::depends::check_names(&fleet));

    let d = d.sorted();
    match topo {
        Some(topo) if !d.has_errors() => {
            let labels = match same {
                Some(p) => p.labels.clone(),
                None => Arc::new(LabelIndex::new(&fleet.clusters)),
            };
            let health = Arc::new(crate::core::health_rules::HealthRules::of(&fleet));
            let checked = Checked {
                fleet,
                topo,
                labels,
                facts,
                cluster_facts: Default::default(),
                capacity: capacity_values,
                measured: Default::default(),
                previous: Default::default(),
                tenancy,
                health,
            };
            // A tenant's workloads land only on the tenant's clusters.
            let mut more = Diagnostics::default();
            for (wi, owner) in checked.tenancy.owner.iter().enumerate() {
                let Some(t) = owner.map(|t| &checked.fleet.tenants[t]) else {
                    continue;
                };
                let Some(sel) = &t.spec.clusters else {
                    continue;
                };
                let allowed = checked.labels.select(Some(sel), &checked.topo);
                let chosen = crate::core::schedule::choose(&checked, &checked.fleet.workloads[wi]);
                if let Some(diag) = crate::core::tenancy::placement_breach(
                    &checked.fleet,
                    &checked.topo,
                    wi,
                    t,
                    &chosen,
                    |c| allowed.contains(c),
                ) {
                    more.push(diag);
                }
            }
            // A dependency lands where its dependent does (not in a
            // relay's slice, which holds only the subtree's clusters).
            let ordered = checked
                .fleet
                .workloads
                .iter()
                .any(|w| !w.spec.depends_on.is_empty());
            if ordered && !checked.fleet.slice {
                let chosen: Vec<Vec<bool>> = checked
                    .fleet
                    .workloads
                    .iter()
                    .map(|w| crate::core::schedule::choose(&checked, w))
                    .collect();
                more.extend(crate::core::depends::check_landing(&checked.fleet, &chosen));
            }
            if more.has_errors() {
                let mut d = d;
                d.extend(more);
                return (None, d.sorted());
            }
            (Some(checked), d)
        }
        _ => (None, d),
    }
}

/// The fleet's tree, joined clusters marked; `None` (with the errors in
/// `d`) when a parent is unknown or the parents make a cycle.
fn tree(fleet: &Fleet, d: &mut Diagnostics) -> Option<Topology> {
    let pairs: Vec<(&str, Option<&str>)> = fleet
        .clusters
        .iter()
        .map(|c| (c.name(), c.spec.parent.as_deref()))
        .collect();
    match Topology::build(&pairs) {
        Ok(mut t) => {
            t.set_joined(
                fleet
                    .clusters
                    .iter()
                    .map(|c| crate::core::join::is_joined(c))
                    .collect(),
            );
            Some(t)
        }
        Err(errors) => {
            for e in errors {
                topology_diag(fleet, e, d);
            }
            None
        }
    }
}

/// Removes documents whose name repeats an earlier one, reporting both
/// places. Names are compared in name order, without copying them: the
/// loader sorts clusters and workloads by name already (then this is one
/// pass), and a map of 100,000 copied names took a third of validating
/// such a fleet.
fn dedupe<T>(
    items: &mut Vec<T>,
    kind: &str,
    key: impl Fn(&T) -> (&str, &Arc<Source>),
    d: &mut Diagnostics,
) {
    let name = |i: usize| key(&items[i]).0;
    let mut order: Vec<usize> = (0..items.len()).collect();
    if !order.is_sorted_by(|&a, &b| name(a) <= name(b)) {
        // Stable: of equal names, the earlier document comes first.
        order.sort_by(|&a, &b| name(a).cmp(name(b)));
    }
    let mut repeats = vec![false; items.len()];
    let mut first = None;
    for &i in &order {
        match first {
            Some(f) if name(f) == name(i) => {
                let (n, src) = key(&items[i]);
                let prev = key(&items[f]).1;
                d.push(
                    Diagnostic::error(format!(
                        "duplicate {kind} name {n:?}: also defined in {}:{}",
                        prev.file,
                        prev.doc.line_of(&YamlPath::parse("metadata.name"))
                    ))
                    .at(&src.loc_str("metadata.name"))
                    .hint(format!(
                        "{kind} names must be unique across the fleet; rename one of them"
                    )),
                );
                repeats[i] = true;
            }
            _ => first = Some(i),
        }
    }
    if repeats.contains(&true) {
        let mut i = 0;
        items.retain(|_| {
            i += 1;
            !repeats[i - 1]
        });
    }
}

/// DNS-1123 label: what Kubernetes requires of namespace names and what canopy
/// requires of cluster and workload names (they become label values).
pub fn is_dns1123_label(s: &str) -> bool {
    crate::core::names::problem(crate::core::names::Rule::Label, s).is_none()
}

fn check_name(kind: &str, source: &Source, name: &str, d: &mut Diagnostics) {
    if !is_dns1123_label(name) {
        d.push(
            Diagnostic::error(format!("{kind} name {name:?} is not a DNS-1123 label"))
                .at(&source.loc_str("metadata.name"))
                .hint("use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"),
        );
    }
}

/// Checks one cluster; gives back its capacity as numbers (parsed here
/// anyway, to check it).
fn check_cluster(c: &Cluster, d: &mut Diagnostics) -> CapacityValues {
    check_name("Cluster", &c.source, c.name(), d);
    if c.spec.live_capacity && c.spec.connection.is_none() {
        d.push(
            Diagnostic::error("liveCapacity needs a Kubernetes cluster (spec.connection)")
                .at(&c.source.loc_str("spec.liveCapacity"))
                .hint("a cluster in the local backend has no nodes to read: give it spec.capacity instead"),
        );
    }
    let cap = &c.spec.capacity;
    let mut values = CapacityValues::default();
    for (field, q, v) in [
        ("cpu", &cap.cpu, &mut values.cpu),
        ("memory", &cap.memory, &mut values.memory),
        ("pods", &cap.pods, &mut values.pods),
    ] {
        if let Some(q) = q {
            match q.value() {
                Ok(x) => *v = Some(x),
                Err(m) => d.push(
                    Diagnostic::error(m)
                        .at(&c.source.loc_str(&format!("spec.capacity.{field}")))
                        .hint("write a Kubernetes quantity"),
                ),
            }
        }
    }
    // Both reach Helm's command line.
    if let Some(v) = &c.spec.kubernetes_version {
        if let Some(why) = crate::core::capabilities::version_problem(v) {
            d.push(
                Diagnostic::error(format!(
                    "spec.kubernetesVersion \"{}\" is not a Kubernetes version",
                    crate::core::names::shown(v)
                ))
                .at(&c.source.loc_str("spec.kubernetesVersion"))
                .hint(why),
            );
        }
    }
    for (i, api) in c.spec.api_versions.iter().enumerate() {
        if let Some(why) = crate::core::capabilities::api_version_problem(api) {
            d.push(
                Diagnostic::error(format!(
                    "spec.apiVersions entry \"{}\" is not an API version",
                    crate::core::names::shown(api)
                ))
                .at(&c.source.loc(&YamlPath::parse("spec.apiVersions").index(i)))
                .hint(why),
            );
        }
    }
    for (i, t) in c.spec.taints.iter().enumerate() {
        if t.key.is_empty() {
            d.push(
                Diagnostic::error("taint has an empty key").at(&c
                    .source
                    .loc(&YamlPath::parse("spec.taints").index(i).key("key"))),
            );
        }
    }
    if let Some(conn) = &c.spec.connection {
        if conn.joined && (conn.kubeconfig.is_some() || conn.context.is_some()) {
            d.push(
                Diagnostic::error("connection.joined cannot be combined with kubeconfig or context")
                    .at(&c.source.loc_str("spec.connection"))
                    .hint("a joined member is reached with the credentials it handed its hub: keep `joined: true` alone, or remove it and name a kubeconfig"),
            );
        }
        if conn
            .kubeconfig
            .as_deref()
            .is_some_and(|k| k.trim().is_empty())
        {
            d.push(
                Diagnostic::error("connection.kubeconfig is empty")
                    .at(&c.source.loc_str("spec.connection.kubeconfig"))
                    .hint("give the path of a kubeconfig file, leave kubeconfig out to use $KUBECONFIG or ~/.kube/config, or remove spec.connection to use the embedded local backend"),
            );
        }
    }
    values
}

fn topology_diag(fleet: &Fleet, e: TopologyError, d: &mut Diagnostics) {
    match e {
        TopologyError::UnknownParent { cluster, parent } => {
            let c = &fleet.clusters[cluster];
            d.push(
                Diagnostic::error(format!(
                    "unknown parent {parent:?}: no Cluster has that name"
                ))
                .at(&c.source.loc_str("spec.parent"))
                .hint(suggest(
                    &parent,
                    fleet.clusters.iter().map(|c| c.name()),
                    "remove spec.parent to make this cluster a root",
                )),
            );
        }
        TopologyError::Cycle { members } => {
            let names: Vec<&str> = members.iter().map(|&i| fleet.clusters[i].name()).collect();
            let text = format!("{} → {}", names.join(" → "), names[0]);
            for &i in &members {
                let c = &fleet.clusters[i];
                d.push(
                    Diagnostic::error(format!("cycle in cluster parents: {text}"))
                        .at(&c.source.loc_str("spec.parent"))
                        .hint("every chain of parents must end at a root (a cluster without spec.parent)"),
                );
            }
        }
    }
}

/// "did you mean …" for a misspelt name, else the fallback advice.
fn suggest<'a>(wrong: &str, candidates: impl Iterator<Item = &'a str>, fallback: &str) -> String {
    let best = candidates
        .map(|c| (edit_distance(wrong, c), c))
        .filter(|(dist, _)| *dist <= 2)
        .min();
    match best {
        Some((_, c)) => format!("did you mean {c:?}?"),
        None => fallback.to_string(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The names a reference may use. In a relay's slice of a fleet, a name
/// outside the slice belongs to the full fleet, which the root validated,
/// so every name is taken as known there (and selects nothing).
struct Known<'a> {
    set: BTreeSet<&'a str>,
    slice: bool,
}

impl Known<'_> {
    fn has(&self, name: &str) -> bool {
        self.slice || self.set.contains(name)
    }
}

/// Checks `spec.rollout` (of a Workload or of Defaults): each stage is a
/// selector or a percentage, percentages grow, durations parse.
fn check_rollout(r: &Rollout, src: &Source, names: &Known<'_>, d: &mut Diagnostics) {
    let base = YamlPath::parse("spec.rollout");
    let mut last_percent = 0;
    let mut stage_names = BTreeSet::new();
    for (i, st) in r.stages.iter().enumerate() {
        let at = base.key("stages").index(i);
        match (&st.clusters, st.percent) {
            (Some(sel), None) => check_selector(sel, &at.key("clusters"), src, names, d),
            (None, Some(p)) => {
                if p == 0 || p > 100 || p < last_percent {
                    d.push(
                        Diagnostic::error(format!(
                            "stage percent {p} must be within 1..=100 and not below the stage before ({last_percent})"
                        ))
                        .at(&src.loc(&at.key("percent")))
                        .hint("percentages are cumulative: 10, 30, 100 take 10%, then 30%, then every remaining cluster"),
                    );
                }
                last_percent = p;
            }
            _ => d.push(
                Diagnostic::error("a rollout stage needs exactly one of `clusters` and `percent`")
                    .at(&src.loc(&at))
                    .hint("write `clusters: {names: [...]}` (a selector, as in placement) or `percent: 10`"),
            ),
        }
        if let Some(n) = &st.name {
            if !is_dns1123_label(n) || !stage_names.insert(n.clone()) {
                d.push(
                    Diagnostic::error(format!("stage name {n:?} is not a unique DNS-1123 label"))
                        .at(&src.loc(&at.key("name")))
                        .hint(
                            "name each stage differently, with lowercase letters, digits and '-'",
                        ),
                );
            }
        }
        if let Err(e) = Pause::parse(st.pause.as_deref()) {
            d.push(
                Diagnostic::error(e)
                    .at(&src.loc(&at.key("pause")))
                    .hint("write `manual` or a duration such as 10m"),
            );
        }
    }
    if let Err(e) = Pause::parse(r.pause.as_deref()) {
        d.push(
            Diagnostic::error(e)
                .at(&src.loc(&base.key("pause")))
                .hint("write `manual` or a duration such as 10m"),
        );
    }
    if let Err(e) = humantime::parse_duration(&r.health_timeout) {
        d.push(
            Diagnostic::error(format!(
                "healthTimeout {:?} is not a duration: {e}",
                r.health_timeout
            ))
            .at(&src.loc(&base.key("healthTimeout")))
            .hint("write a duration such as 90s, 5m or 1h"),
        );
    }
    if let Some(m @ IntOrPercent::Percent(s)) = &r.max_unavailable {
        if m.of(100).is_none_or(|p| p > 100) {
            d.push(
                Diagnostic::error(format!(
                    "maxUnavailable {s:?} is neither a count nor a percentage"
                ))
                .at(&src.loc(&base.key("maxUnavailable")))
                .hint("write a count such as 1, or a share such as \"25%\""),
            );
        }
    }
}

/// Checks a selector's references and Kubernetes' rules for expressions.
fn check_selector(
    sel: &ClusterSelector,
    base: &YamlPath,
    src: &Source,
    names: &Known<'_>,
    d: &mut Diagnostics,
) {
    let unknown = |n: &str, path: YamlPath, d: &mut Diagnostics| {
        if !names.has(n) {
            d.push(
                Diagnostic::error(format!("unknown cluster {n:?}"))
                    .at(&src.loc(&path))
                    .hint(suggest(
                        n,
                        names.set.iter().copied(),
                        "name a Cluster defined in the fleet",
                    )),
            );
        }
    };
    for (i, n) in sel.names.iter().enumerate() {
        unknown(n, base.key("names").index(i), d);
    }
    for (i, n) in sel.exclude.iter().enumerate() {
        unknown(n, base.key("exclude").index(i), d);
    }
    if let Some(n) = &sel.subtree_of {
        unknown(n, base.key("subtreeOf"), d);
    }
    if let Some(ls) = &sel.selector {
        for (i, e) in ls.match_expressions.iter().enumerate() {
            let p = base.key("selector").key("matchExpressions").index(i);
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => d.push(
                    Diagnostic::error(format!(
                        "operator {:?} needs at least one value",
                        e.operator
                    ))
                    .at(&src.loc(&p.key("operator")))
                    .hint("add values: [...], or use Exists / DoesNotExist"),
                ),
                SelectorOperator::Exists | SelectorOperator::DoesNotExist
                    if !e.values.is_empty() =>
                {
                    d.push(
                        Diagnostic::error(format!("operator {:?} takes no values", e.operator))
                            .at(&src.loc(&p.key("values")))
                            .hint("remove values, or use In / NotIn"),
                    )
                }
                _ => {}
            }
        }
    }
}

fn check_workload(w: &Workload, names: &Known<'_>, d: &mut Diagnostics) -> WorkloadFacts {
    let src = &w.source;
    check_name("Workload", src, w.name(), d);
    if let Some(ns) = &w.spec.namespace {
        if !is_dns1123_label(ns) {
            d.push(
                Diagnostic::error(format!("namespace {ns:?} is not a DNS-1123 label"))
                    .at(&src.loc_str("spec.namespace")),
            );
        }
    }
    if let Err(e) = humantime::parse_duration(&w.spec.failover.after) {
        d.push(
            Diagnostic::error(format!(
                "failover.after {:?} is not a duration: {e}",
                w.spec.failover.after
            ))
            .at(&src.loc_str("spec.failover.after"))
            .hint("write a duration such as 90s, 5m or 1h"),
        );
    }
    if let Some(r) = &w.spec.rollout {
        check_rollout(r, src, names, d);
    }
    for (field, rules) in [
        ("ignoreDifferences", &w.spec.ignore_differences),
        ("retain", &w.spec.retain),
    ] {
        for (i, rule) in rules.iter().enumerate() {
            for (j, ptr) in rule.json_pointers.iter().enumerate() {
                if !ptr.starts_with('/') || ptr == "/" {
                    d.push(
                        Diagnostic::error(format!("{ptr:?} is not a JSON pointer to a field"))
                            .at(&src.loc(
                                &YamlPath::parse("spec")
                                    .key(field)
                                    .index(i)
                                    .key("jsonPointers")
                                    .index(j),
                            ))
                            .hint("write it like /spec/replicas (RFC 6901: `~1` for `/` inside a key)"),
                    );
                }
            }
        }
    }
    let placement = &w.spec.placement;
    if let Some(sel) = &placement.clusters {
        check_selector(
            sel,
            &YamlPath::parse("spec.placement.clusters"),
            src,
            names,
            d,
        );
    }
    let rp = &placement.replicas;
    let rpath = YamlPath::parse("spec.placement.replicas");
    for (i, l) in rp.limits.iter().enumerate() {
        let lpath = rpath.key("limits").index(i);
        check_selector(&l.clusters, &lpath.key("clusters"), src, names, d);
        if let (Some(min), Some(max)) = (l.min, l.max) {
            if min > max {
                d.push(
                    Diagnostic::error(format!("limit min {min} is above its max {max}"))
                        .at(&src.loc(&lpath))
                        .hint(
                            "a limit bounds each selected cluster's subtree to min..=max replicas",
                        ),
                );
            }
        }
        if l.min.is_none() && l.max.is_none() {
            d.push(
                Diagnostic::warning("this limit has neither min nor max")
                    .at(&src.loc(&lpath))
                    .hint("give it `min`, `max` or both"),
            );
        }
    }
    if !rp.limits.is_empty() && rp.mode == ReplicaMode::Duplicated {
        d.push(
            Diagnostic::warning("limits are ignored in mode Duplicated")
                .at(&src.loc(&rpath.key("limits")))
                .hint("set mode: Divided to divide replicas within these limits"),
        );
    }
    if let Some(weights) = &rp.weights {
        let wpath = rpath.key("weights");
        if rp.mode == ReplicaMode::Duplicated {
            d.push(
                Diagnostic::warning("weights are ignored in mode Duplicated")
                    .at(&src.loc(&wpath))
                    .hint("set mode: Divided to divide replicas by these weights"),
            );
        }
        match (&weights.static_weights, &weights.dynamic) {
            (Some(_), Some(_)) | (None, None) => d.push(
                Diagnostic::error("weights need exactly one of static or dynamic")
                    .at(&src.loc(&wpath))
                    .hint("use `static: [{clusters: ..., weight: N}]` or `dynamic: capacity`"),
            ),
            (Some(rules), None) => {
                if rules.is_empty() {
                    d.push(
                        Diagnostic::error("static weights list is empty")
                            .at(&src.loc(&wpath.key("static"))),
                    );
                }
                for (i, r) in rules.iter().enumerate() {
                    check_selector(
                        &r.clusters,
                        &wpath.key("static").index(i).key("clusters"),
                        src,
                        names,
                        d,
                    );
                }
                if weights.per_replica.is_some() && !weights.bound_by_capacity {
                    d.push(
                        Diagnostic::error(
                            "perReplica only applies to dynamic: capacity or boundByCapacity",
                        )
                        .at(&src.loc(&wpath.key("perReplica"))),
                    );
                }
            }
            (None, Some(_)) => {
                if let Some(per) = &weights.per_replica {
                    for (field, q) in [
                        ("cpu", &per.cpu),
                        ("memory", &per.memory),
                        ("pods", &per.pods),
                    ] {
                        match q.as_ref().map(Quantity::value) {
                            Some(Err(m)) => d.push(
                                Diagnostic::error(m)
                                    .at(&src.loc(&wpath.key("perReplica").key(field))),
                            ),
                            Some(Ok(v)) if v <= 0.0 => d.push(
                                Diagnostic::error("a per-replica request must be more than zero")
                                    .at(&src.loc(&wpath.key("perReplica").key(field))),
                            ),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    for (i, p) in rp.paths.iter().enumerate() {
        if !p.path.starts_with('/') {
            d.push(
                Diagnostic::error(format!("replica path {:?} is not a JSON pointer", p.path))
                    .at(&src.loc(&rpath.key("paths").index(i).key("path")))
                    .hint("write it like /spec/replicas"),
            );
        }
    }
    if rp.mode == ReplicaMode::Duplicated && rp.total.is_some() {
        d.push(
            Diagnostic::warning("total is ignored in mode Duplicated")
                .at(&src.loc(&rpath.key("total")))
                .hint("in Duplicated mode every cluster runs the manifest's own replicas"),
        );
    }

    // Parse the plain (non-template) manifests once: syntax errors show up even
    // for a workload placed nowhere, and every cluster shares the result.
    let mut facts = WorkloadFacts::default();
    for m in &w.manifests {
        if m.is_template() {
            facts.parsed.push(None);
            continue;
        }
        if let Some(line) = canopy_template_line(&m.text) {
            d.push(
                Diagnostic::warning(
                    "this manifest uses canopy's template variables (cluster, workload) but is not a template: it is applied as written",
                )
                .in_file(&m.path, line)
                .hint(format!(
                    "rename it to {}.j2 to render it per cluster; a manifest whose {{{{ … }}}} is for another tool (Prometheus, Alertmanager, Grafana) stays as it is",
                    m.path.rsplit('/').next().unwrap_or(&m.path)
                )),
            );
        }
        match parse_stream(&m.text, false) {
            Ok(docs) => {
                let values: Vec<Value> = docs
                    .into_iter()
                    .map(|d| d.value)
                    .filter(|v| !v.is_null())
                    .collect();
                facts.parsed.push(Some(Arc::new(values)));
            }
            Err(e) => {
                d.push(
                    Diagnostic::error(format!("malformed YAML: {}", e.message))
                        .in_file(&m.path, e.line)
                        .hint(format!(
                            "fix the YAML syntax near line {}, column {}",
                            e.line, e.col
                        )),
                );
                facts.parsed.push(None);
            }
        }
    }
    if let Some(h) = &w.spec.helm {
        check_helm(w, h, d);
    }
    // A kustomize workload whose build failed has its error already; a
    // Helm workload's manifests come after validation.
    if w.manifests.is_empty() && w.spec.kustomize.is_none() && w.spec.helm.is_none() {
        d.push(
            Diagnostic::warning(format!("workload {:?} has no manifests", w.name()))
                .at(&src.loc_str("spec.manifests"))
                .hint(format!("put Kubernetes YAML files in {}/", w.dir)),
        );
    }
    if rp.mode == ReplicaMode::Divided {
        if w.spec.helm.is_some() && rp.total.is_none() {
            d.push(
                Diagnostic::error("a Divided Helm workload needs spec.placement.replicas.total")
                    .at(&src.loc_str("spec.placement.replicas"))
                    .hint("set replicas.total: the chart's objects are known only once Helm renders them for each cluster"),
            );
        } else {
            facts.total = divided_total(w, &facts, d);
        }
    }
    facts
}

/// One version, as `1.4.2`, `v2.0.0-rc.1` or `0.1.0+build.5`: no range,
/// wildcard or constraint operator.
fn is_exact_version(v: &str) -> bool {
    let core = v.strip_prefix('v').unwrap_or(v);
    let core = core.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    !v.contains([' ', ',', '|', '*', '^', '~', '<', '>', '='])
        && (1..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// What `spec.helm` must say before Helm runs: a local chart and values
/// files inside the workload's folder, a remote chart at an exact version.
fn check_helm(w: &Workload, h: &crate::core::model::HelmSource, d: &mut Diagnostics) {
    let src = &w.source;
    let remote = h.repo.is_some() || h.chart.starts_with("oci://");
    // Every value here reaches Helm's command line: each is checked so that
    // it can only be what its field says, never a flag.
    let release = h.release_name.as_deref().unwrap_or(w.name());
    if let Some(why) = crate::core::names::helm_release_problem(release) {
        let (field, hint) = match h.release_name {
            Some(_) => ("spec.helm.releaseName", "write a release name as Helm requires: lower-case letters, digits, '-' and '.', at most 53"),
            None => ("metadata.name", "set spec.helm.releaseName to a name Helm accepts (at most 53 characters)"),
        };
        d.push(
            Diagnostic::error(format!(
                "Helm release name \"{}\" is not valid: {why}",
                crate::core::names::shown(release)
            ))
            .at(&src.loc_str(field))
            .hint(hint),
        );
    }
    if let Some(repo) = &h.repo {
        let url = url::Url::parse(repo).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && !repo.chars().any(|c| c.is_whitespace() || c.is_control())
        });
        if url.is_none() {
            d.push(
                Diagnostic::error(format!(
                    "spec.helm.repo \"{}\" is not an http(s) URL",
                    crate::core::names::shown(&crate::core::mask::redact(repo))
                ))
                .at(&src.loc_str("spec.helm.repo"))
                .hint("name a chart repository (a URL that serves index.yaml), or write an oci:// reference in spec.helm.chart"),
            );
        }
        if let Some(why) = crate::core::names::chart_name_problem(&h.chart) {
            d.push(
                Diagnostic::error(format!(
                    "spec.helm.chart \"{}\" must be a chart's name in spec.helm.repo: {why}",
                    crate::core::names::shown(&h.chart)
                ))
                .at(&src.loc_str("spec.helm.chart"))
                .hint("write the chart's name as the repository's index.yaml lists it"),
            );
        }
    } else if let Some(reference) = h.chart.strip_prefix("oci://") {
        let ok = reference
            .split_once('/')
            .is_some_and(|(host, path)| !host.is_empty() && !path.is_empty())
            && !reference.starts_with('-')
            && !reference
                .chars()
                .any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            d.push(
                Diagnostic::error(format!(
                    "spec.helm.chart \"{}\" is not an OCI reference",
                    crate::core::names::shown(&h.chart)
                ))
                .at(&src.loc_str("spec.helm.chart"))
                .hint("write oci://<registry>/<path>/<chart>, without spaces"),
            );
        }
    }
    if remote {
        match h.version.as_deref() {
            None | Some("") => d.push(
                Diagnostic::error("a chart from a repository or registry needs spec.helm.version")
                    .at(&src.loc_str("spec.helm"))
                    .hint("pin the exact chart version, so a commit always deploys the same chart"),
            ),
            Some(v) if !is_exact_version(v) => d.push(
                Diagnostic::error(format!("spec.helm.version {v:?} is not an exact version"))
                    .at(&src.loc_str("spec.helm.version"))
                    .hint("write one version (1.4.2), not a range: a range lets the same commit deploy different charts"),
            ),
            Some(_) => {}
        }
    } else {
        if h.version.is_some() {
            d.push(
                Diagnostic::error("spec.helm.version applies to a chart from a repository or registry")
                    .at(&src.loc_str("spec.helm.version"))
                    .hint("a chart in the repository is at the version its Chart.yaml says; remove version"),
            );
        }
        if crate::core::paths::inside(&w.dir, &h.chart).is_none() {
            d.push(
                Diagnostic::error(format!("chart folder {:?} leaves the workload's folder {}", h.chart, w.dir))
                    .at(&src.loc_str("spec.helm.chart"))
                    .hint("put the chart inside the workload's folder, or name a chart repository with spec.helm.repo"),
            );
        }
    }
    for (i, f) in h.values_files.iter().enumerate() {
        if crate::core::paths::inside(&w.dir, f).is_none_or(|p| p == w.dir) {
            d.push(
                Diagnostic::error(format!(
                    "values file {f:?} is not a file inside the workload's folder {}",
                    w.dir
                ))
                .at(&src.loc(&YamlPath::parse("spec.helm.valuesFiles").index(i)))
                .hint("values files live in the workload's folder"),
            );
        }
    }
}

/// The 1-based line of the first `{{ cluster… }}` or `{{ workload… }}` in a
/// plain manifest: what was written as a canopy template before templating
/// had to be asked for by name. Another tool's `{{ $labels.x }}` is not.
fn canopy_template_line(text: &str) -> Option<usize> {
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("{{") {
            let inner = rest[at + 2..].trim_start_matches(['-', ' ']);
            let word: String = inner
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if word == "cluster" || word == "workload" {
                return Some(i + 1);
            }
            rest = &rest[at + 2..];
        }
    }
    None
}

/// The total a Divided workload divides: `total`, or the `spec.replicas` its
/// replicated objects agree on.
fn divided_total(w: &Workload, facts: &WorkloadFacts, d: &mut Diagnostics) -> Option<u32> {
    let rp = &w.spec.placement.replicas;
    if let Some(t) = rp.total {
        return Some(t);
    }
    let mut found: Vec<(String, String, Option<u64>)> = Vec::new();
    for (m, parsed) in w.manifests.iter().zip(&facts.parsed) {
        for obj in parsed.iter().flat_map(|p| p.iter()) {
            let Some(key) = ObjectKey::of(obj) else {
                continue;
            };
            if let Some(ptr) = kinds::replica_pointer(&key.group, &key.kind, &rp.paths) {
                let n = obj.pointer(ptr).and_then(Value::as_u64);
                found.push((m.path.clone(), key.to_string(), n));
            }
        }
    }
    let loc = w.source.loc_str("spec.placement.replicas");
    let templated = w.manifests.iter().any(ManifestFile::is_template);
    if found.is_empty() {
        let msg = if templated {
            "Divided workload has templated manifests and no replicas.total"
        } else {
            "Divided workload has no object with a replicas field (Deployment, StatefulSet, ReplicaSet or a kind listed in replicas.paths)"
        };
        d.push(
            Diagnostic::error(msg)
                .at(&loc)
                .hint("set spec.placement.replicas.total, or add spec.replicas to the workload's Deployment/StatefulSet"),
        );
        return None;
    }
    let mut total = None;
    for (file, obj, n) in &found {
        match n {
            None => {
                d.push(
                    Diagnostic::error(format!("{obj} in {file} has no spec.replicas to divide"))
                        .at(&loc)
                        .hint("set spec.replicas in the manifest or spec.placement.replicas.total here"),
                );
                return None;
            }
            Some(n) => match total {
                None => total = Some(*n),
                Some(t) if t != *n => {
                    d.push(
                        Diagnostic::error(format!(
                            "replicated objects disagree on replicas ({} has {t}, {obj} has {n})",
                            found[0].1
                        ))
                        .at(&loc)
                        .hint("set spec.placement.replicas.total, or split them into separate workloads"),
                    );
                    return None;
                }
                Some(_) => {}
            },
        }
    }
    total.and_then(|t| u32::try_from(t).ok())
}

fn check_override(o: &Override, names: &Known<'_>, workloads: &Known<'_>, d: &mut Diagnostics) {
    let src = &o.source;
    check_name("Override", src, o.name(), d);
    if let Some(sel) = &o.spec.clusters {
        check_selector(sel, &YamlPath::parse("spec.clusters"), src, names, d);
    }
    for (i, w) in o.spec.workloads.iter().flatten().enumerate() {
        if !workloads.has(w) {
            d.push(
                Diagnostic::error(format!("unknown workload {w:?}"))
                    .at(&src.loc(&YamlPath::parse("spec.workloads").index(i)))
                    .hint(suggest(
                        w,
                        workloads.set.iter().copied(),
                        "name a Workload defined in the fleet",
                    )),
            );
        }
    }
    if o.spec.patches.is_empty() {
        d.push(
            Diagnostic::error("override has no patches")
                .at(&src.loc_str("spec.patches"))
                .hint("add jsonPatch, mergePatch or image items"),
        );
    }
    for (i, p) in o.spec.patches.iter().enumerate() {
        if let PatchSpec::Image(img) = p {
            if img.registry.is_none() && img.repository.is_none() && img.tag.is_none() {
                d.push(
                    Diagnostic::error("image patch changes nothing")
                        .at(&src.loc(&YamlPath::parse("spec.patches").index(i).key("image")))
                        .hint("set at least one of registry, repository, tag"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns1123_label("eu-west-1"));
        assert!(!is_dns1123_label("EU"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    /// Out of name order (overrides come in priority order): each later
    /// document of a name is removed and reported against the first.
    #[test]
    fn a_repeated_name_keeps_the_first_document_in_any_order() {
        let doc = |file: &str, name: &str| {
            (
                name.to_string(),
                Arc::new(Source {
                    file: file.to_string(),
                    doc: crate::core::yaml::Doc {
                        line: 1,
                        value: serde_json::Value::Null,
                        lines: Default::default(),
                    },
                }),
            )
        };
        let mut items = vec![
            doc("1.yaml", "b"),
            doc("2.yaml", "a"),
            doc("3.yaml", "b"),
            doc("4.yaml", "a"),
            doc("5.yaml", "c"),
        ];
        let mut d = Diagnostics::default();
        dedupe(&mut items, "Override", |(n, s)| (n.as_str(), s), &mut d);
        let kept: Vec<&str> = items.iter().map(|(_, s)| s.file.as_str()).collect();
        assert_eq!(kept, ["1.yaml", "2.yaml", "5.yaml"]);
        let text: Vec<String> = d.sorted().errors().map(|x| x.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("3.yaml") && text[0].contains("\"b\": also defined in 1.yaml"),
            "{text:?}"
        );
        assert!(
            text[1].contains("4.yaml") && text[1].contains("\"a\": also defined in 2.yaml"),
            "{text:?}"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("eu-wst", ["eu-west", "us-east"].into_iter(), "x"),
            "did you mean \"eu-west\"?"
        );
        assert_eq!(
            suggest("zzz", ["eu-west"].into_iter(), "fallback"),
            "fallback"
        );
    }
}
