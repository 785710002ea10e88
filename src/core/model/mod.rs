//! The fleet's document types (`apiVersion: canopy.dev/v1alpha1`) and the
//! loaded fleet they make up.
//!
//! The serde types deny unknown fields so a typo such as `spec.parnet` is an
//! error with a line, not a silently ignored key; the same types generate the
//! JSON Schemas in `schemas/`, so editors and canopy agree on the format.

pub mod quantity;

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::diag::Loc;
use crate::core::yaml::{Doc, YamlPath};

pub use quantity::Quantity;

/// The only apiVersion canopy reads and writes today.
pub const API_VERSION: &str = "canopy.dev/v1alpha1";
/// The API group of canopy's own documents and of its labels and annotations.
pub const GROUP: &str = "canopy.dev";

/// Ownership labels written on every rendered object: the fleet, the workload
/// and the cluster. Prune selects on these, so canopy never deletes what it
/// did not create.
pub const LABEL_FLEET: &str = "canopy.dev/fleet";
pub const LABEL_WORKLOAD: &str = "canopy.dev/workload";
pub const LABEL_CLUSTER: &str = "canopy.dev/cluster";

/// The value of label `key` on a Kubernetes object, if it has it.
pub fn label<'v>(obj: &'v serde_json::Value, key: &str) -> Option<&'v str> {
    obj.get("metadata")?.get("labels")?.get(key)?.as_str()
}
/// Annotation naming the repository file an object was rendered from.
pub const ANNOTATION_SOURCE: &str = "canopy.dev/source";
/// The revision that last wrote an object (`<sha>`, `<tag>@<sha>`). Set when
/// canopy creates or changes the object; an object that is already right
/// keeps the revision that wrote it, so a new commit that does not touch it
/// costs no write.
pub const ANNOTATION_REVISION: &str = "canopy.dev/revision";
/// `canopy.dev/local-health: unhealthy: <why>` on an object: the embedded
/// local backend reports it unhealthy (it runs nothing, so everything else
/// it holds is healthy). Rehearses a bad release without a cluster.
pub const ANNOTATION_LOCAL_HEALTH: &str = "canopy.dev/local-health";
/// `canopy.dev/prune: disabled` on a live object: prune never deletes it.
pub const ANNOTATION_PRUNE: &str = "canopy.dev/prune";
/// `canopy.dev/replace: on-immutable` on an object: when the API server
/// refuses a change because a field is immutable, canopy deletes the object
/// and creates it again ([`REPLACE_ON_IMMUTABLE`] is the only value).
pub const ANNOTATION_REPLACE: &str = "canopy.dev/replace";
/// The value of [`ANNOTATION_REPLACE`].
pub const REPLACE_ON_IMMUTABLE: &str = "on-immutable";
/// Kinds never replaced: deleting them deletes data (a Namespace its
/// objects, a CRD its custom resources, a claim its volume).
pub const NEVER_REPLACED: [(&str, &str); 3] = [
    ("", "Namespace"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("", "PersistentVolumeClaim"),
];

/// Whether `obj` asks to be replaced when an immutable field changes, and
/// may be.
pub fn replace_on_immutable(obj: &serde_json::Value) -> bool {
    let asks = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_REPLACE))
        .and_then(serde_json::Value::as_str)
        == Some(REPLACE_ON_IMMUTABLE);
    asks && !never_replaced(obj)
}

/// Whether `obj` is of a kind in [`NEVER_REPLACED`].
pub fn never_replaced(obj: &serde_json::Value) -> bool {
    let group = obj
        .get("apiVersion")
        .and_then(serde_json::Value::as_str)
        .and_then(|a| a.rsplit_once('/'))
        .map_or("", |(g, _)| g);
    let kind = obj
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    NEVER_REPLACED.contains(&(group, kind))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Unique name of the document within its kind.
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

// ---------------------------------------------------------------- Cluster

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Name of the parent cluster; absent for a root. Several roots make a forest.
    #[serde(default)]
    pub parent: Option<String>,
    /// How to reach the cluster; absent means canopy's embedded local backend.
    #[serde(default)]
    pub connection: Option<Connection>,
    /// What the cluster can hold; used by `weights: {dynamic: capacity}`.
    #[serde(default)]
    pub capacity: Capacity,
    /// Read what the cluster can still hold from the cluster itself (its
    /// nodes' allocatable resources minus what its running pods request)
    /// on every `apply`, `diff` and `watch` round, and divide by that
    /// instead of `capacity`, which stays the value until the first read
    /// and whenever a read fails. Kubernetes clusters only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live_capacity: bool,
    /// Taints keep workloads off the cluster unless they tolerate them.
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// Template values, deep-merged down the tree (nearest ancestor wins).
    #[serde(default)]
    pub values: Map<String, Value>,
    /// A canopy agent runs in this cluster and reconciles its descendants
    /// from the handoff its parent level writes there; the cluster itself
    /// is reconciled by whoever reaches its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<Relay>,
    /// The Kubernetes version Helm charts are rendered for on this cluster
    /// (`.Capabilities.KubeVersion`, a chart's `kubeVersion`), as
    /// `/version` says it (`v1.34.2`). Absent: the version read from the
    /// cluster by the level that reconciles it, else canopy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// API versions the cluster serves that Helm charts may ask about
    /// (`.Capabilities.APIVersions.Has`), beyond what is read from it:
    /// `group/version`, optionally with a kind
    /// (`monitoring.coreos.com/v1/ServiceMonitor`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<String>,
    /// What the level that reconciles the cluster last read from it; set
    /// for a run, never read from or written to a document.
    #[serde(skip)]
    #[schemars(skip)]
    pub observed: Option<std::sync::Arc<crate::core::capabilities::Observed>>,
}

/// A capacity as numbers, each resource `None` when not declared: what
/// the division compares. Parsed once per cluster when the fleet is
/// checked ([`crate::core::validate::Checked::capacity_values`]), since
/// the division asks every cluster once per capacity-weighted workload and
/// parsing the quantities each time was most of scheduling a large fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CapacityValues {
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub pods: Option<f64>,
}

impl CapacityValues {
    /// The values of `cap`; a quantity that does not parse counts as not
    /// declared (validation refuses such a fleet before it is scheduled).
    pub fn of(cap: &Capacity) -> CapacityValues {
        let v = |q: &Option<Quantity>| q.as_ref().and_then(|q| q.value().ok());
        CapacityValues {
            cpu: v(&cap.cpu),
            memory: v(&cap.memory),
            pods: v(&cap.pods),
        }
    }

    pub fn declares_nothing(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none() && self.pods.is_none()
    }
}

/// What a cluster could still hold when it was last asked (live capacity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveCapacity {
    pub capacity: Capacity,
    /// When it was read, in seconds since the Unix epoch.
    pub read_at: u64,
}

/// A relay's settings (`relay: {}` marks the cluster).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Relay {
    /// Clusters may join below this relay (`canopy token create --parent`
    /// a cluster of its subtree): its agent answers their requests, and
    /// its handoff carries every workload and override a newcomer below
    /// it could be chosen for by labels, not only those that land on its
    /// Git clusters. A Divided workload reaches a newcomer only within
    /// the share the relay's subtree receives.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub members: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Connection {
    /// Path to a kubeconfig file (`~` and `$VARS` are expanded, relative
    /// paths are taken from the fleet folder). Absent: `$KUBECONFIG`, else
    /// `~/.kube/config`, as kubectl does.
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// Context in that kubeconfig; absent means its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Reach the cluster with the credentials it handed over when it
    /// joined (`canopy join --mode push`), which its hub keeps and renews:
    /// how a joined member committed to Git (`canopy members export`)
    /// stays reachable. Excludes `kubeconfig` and `context`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
    /// The joined member's credentials, as read from its hub for this run;
    /// never read from or written to a document.
    #[serde(skip)]
    #[schemars(skip)]
    pub credentials: Option<std::sync::Arc<Credentials>>,
    /// A member that joined in pull mode: what is applied to it is kept in
    /// its hub, reached with this connection, and its own agent applies it
    /// (`canopy agent joined`). Set for a run, never read from a document.
    #[serde(skip)]
    #[schemars(skip)]
    pub pulled_via: Option<std::sync::Arc<Connection>>,
}

/// How to reach a joined member: its API server, the CA it was pinned to,
/// and a bearer token that its hub renews. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub server: String,
    /// PEM of the certificate authority the member's server presents.
    pub ca_pem: String,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("token", &"<hidden>")
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capacity {
    #[serde(default)]
    pub cpu: Option<Quantity>,
    #[serde(default)]
    pub memory: Option<Quantity>,
    #[serde(default)]
    pub pods: Option<Quantity>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

// ---------------------------------------------------------------- selection

/// Which clusters a placement, weight rule or override applies to:
/// `(selector AND subtreeOf) OR names`, minus `exclude`. With none of
/// selector, subtreeOf and names, every cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSelector {
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub names: Vec<String>,
    /// A cluster and all its descendants.
    #[serde(default)]
    pub subtree_of: Option<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl ClusterSelector {
    /// Whether a cluster that is not in the fleet yet, joining below a
    /// relay (`related`: the relay's ancestors, itself and its subtree),
    /// could be chosen: by labels or by a subtree that holds it, not by
    /// name.
    pub fn could_choose_newcomer(&self, related: impl Fn(&str) -> bool) -> bool {
        let open = self.selector.is_some() || self.subtree_of.is_some() || self.names.is_empty();
        open && self.subtree_of.as_deref().is_none_or(related)
    }
}

/// A Kubernetes label selector, with Kubernetes semantics exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Kubernetes semantics: every matchLabels pair and every expression must
    /// hold; `NotIn` and `DoesNotExist` hold for a missing key; an empty
    /// selector matches everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let got = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => got.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => got.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => got.is_some(),
                    SelectorOperator::DoesNotExist => got.is_none(),
                }
            })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

/// A Kubernetes toleration: an empty key with `Exists` tolerates every taint;
/// an absent effect matches every effect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub operator: TolerationOperator,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    pub fn tolerates(&self, t: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != t.effect) {
            return false;
        }
        match (&self.key, self.operator) {
            (None, TolerationOperator::Exists) => true,
            (None, TolerationOperator::Equal) => false,
            (Some(k), _) if *k != t.key => false,
            (Some(_), TolerationOperator::Exists) => true,
            (Some(_), TolerationOperator::Equal) => {
                self.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or("")
            }
        }
    }
}

// ---------------------------------------------------------------- Workload

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Globs relative to the workload's folder; default: every other YAML file there. A file named *.yaml.j2 (or *.yml.j2) is a minijinja template rendered per cluster; every other manifest is applied as written.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// Namespace for namespaced objects that do not name one.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub placement: Placement,
    /// Fields that controllers in the member clusters own: never reported as
    /// drift (like Argo CD's ignoreDifferences). canopy still sets them.
    #[serde(default)]
    pub ignore_differences: Vec<FieldRule>,
    /// Fields the member clusters own once an object exists (like Karmada's
    /// retain hook): canopy sets them when it creates the object, then keeps
    /// the cluster's value on every later apply and never reports them as
    /// drift. Typical: `/spec/replicas` under a HorizontalPodAutoscaler.
    #[serde(default)]
    pub retain: Vec<FieldRule>,
    /// When a cluster's Divided replicas move to its healthy siblings.
    #[serde(default)]
    pub failover: Failover,
    /// How a change reaches the workload's clusters: in stages with health
    /// gates. Absent: the fleet's `Defaults` document, else every cluster
    /// at once.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// The workload's manifests are what `kustomize build` makes of a
    /// kustomization in its folder (instead of the folder's YAML files),
    /// then namespaced, divided, overridden and labelled like any others.
    #[serde(default)]
    pub kustomize: Option<KustomizeSource>,
    /// The workload's manifests are what `helm template` makes of a chart
    /// (a folder in the workload's folder, a chart repository or an
    /// `oci://` reference) with values rendered per cluster, then
    /// namespaced, divided, overridden and labelled like any others.
    #[serde(default)]
    pub helm: Option<HelmSource>,
    /// When the API server refuses a change because a field is immutable
    /// (a Job's template, a Deployment's selector), delete the object and
    /// create it again, in the same run, instead of failing the cluster:
    /// every object of the workload gets `canopy.dev/replace: on-immutable`,
    /// except Namespaces, CRDs and PersistentVolumeClaims (replacing them
    /// deletes data).
    #[serde(default)]
    pub replace_on_immutable: bool,
    /// How objects of a kind are judged healthy, for kinds canopy's own
    /// rules misread; before the fleet's `Defaults` rules.
    #[serde(default)]
    pub health: Vec<HealthRule>,
    /// Workloads applied, and healthy, before this one on each cluster
    /// where both land (Flux's `dependsOn`, per cluster): an operator
    /// before its custom resources, a migration before the new version.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// A health rule for one kind, in CEL: each expression sees the live
/// object as `self` (and its `metadata`, `spec` and `status`) and gives a
/// bool. `failed` is asked first, then `progressing`, then `healthy`; when
/// none holds the object is progressing. An expression that cannot be
/// evaluated (a field not there yet) does not hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthRule {
    /// API group; `""` (the default) is the core group.
    #[serde(default)]
    pub group: String,
    pub kind: String,
    /// When the object is healthy, e.g. `status.phase == 'Ready'`.
    pub healthy: String,
    /// When it will not get there by itself, e.g. `status.phase == 'Failed'`.
    #[serde(default)]
    pub failed: Option<String>,
    /// When it is on its way (said before `healthy` is asked).
    #[serde(default)]
    pub progressing: Option<String>,
}

/// A Helm chart as a workload's source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HelmSource {
    /// The chart: a folder relative to the workload's folder (`chart`),
    /// a chart's name in the repository `repo`, or an `oci://` reference.
    pub chart: String,
    /// A chart repository's URL (one with an `index.yaml`); `chart` is then
    /// the chart's name there.
    #[serde(default)]
    pub repo: Option<String>,
    /// The exact version of a chart from a repository or registry (a
    /// range would let the same commit deploy different charts).
    #[serde(default)]
    pub version: Option<String>,
    /// The release name Helm renders with (`.Release.Name`); default: the
    /// workload's name.
    #[serde(default)]
    pub release_name: Option<String>,
    /// Values files in the workload's folder, in order (later ones win).
    #[serde(default)]
    pub values_files: Vec<String>,
    /// Values, given last. Every string is a template with the cluster's
    /// facts (`cluster.name`, `cluster.labels`, `cluster.values`, …); a
    /// string that is one `{{ expression }}` takes the expression's value
    /// with its type (a number stays a number).
    #[serde(default)]
    pub values: Map<String, Value>,
    /// Render the chart's `crds/` folder too (default: yes).
    #[serde(default = "yes")]
    pub include_crds: bool,
}

fn yes() -> bool {
    true
}

/// A kustomization as a workload's source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizeSource {
    /// The folder of the kustomization, relative to the workload's folder
    /// (default: the workload's folder itself). It, and every base,
    /// component and file it uses, lies inside the workload's folder.
    #[serde(default = "default_kustomize_path")]
    pub path: String,
}

fn default_kustomize_path() -> String {
    ".".into()
}

/// A staged rollout: a change of the workload reaches its clusters stage by
/// stage, each stage only after the one before is healthy (and its pause is
/// over). Replica counts are not a change to roll out (as in Argo
/// Rollouts): scaling and failover reach every cluster at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollout {
    /// In order. A cluster matched by no stage belongs to the last one; a
    /// cluster is never in an earlier stage than its parent (it waits for
    /// the parent's stage). Empty: every cluster at once.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Clusters of a stage that may fail its health gate while the stage
    /// still passes: a count, or a share of the stage such as `"25%"`
    /// (rounded down). Default 0.
    #[serde(default)]
    pub max_unavailable: Option<IntOrPercent>,
    /// After each stage (but the last): a duration such as `10m`, or
    /// `manual` (`canopy rollout continue WORKLOAD` resumes). A stage that
    /// changed nothing is not paused after.
    #[serde(default)]
    pub pause: Option<String>,
    /// How long a stage's objects may take to become healthy, e.g. `5m`.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: String,
    /// `auto`: a stage that fails its health gate is applied again at the
    /// revision the rollout started from. `none`: it is left as it is.
    #[serde(default)]
    pub rollback: RollbackPolicy,
}

fn default_health_timeout() -> String {
    "5m".into()
}

/// One stage: `clusters` (a selector, as in placement) or `percent` (a
/// cumulative share of the clusters no selector stage takes, parents first:
/// 10, 30, 100 divide them 1:2:7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Stage {
    /// Shown by `canopy rollout status`; default `stage-N`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub clusters: Option<ClusterSelector>,
    #[serde(default)]
    pub percent: Option<u32>,
    /// Overrides the rollout's `pause` after this stage.
    #[serde(default)]
    pub pause: Option<String>,
}

/// A count, or a percentage written as a string (`"25%"`), as Kubernetes'
/// IntOrString.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum IntOrPercent {
    Count(u32),
    Percent(String),
}

impl IntOrPercent {
    /// The count for a stage of `n` clusters (a percentage rounds down);
    /// `None` for a string that is not `N%` (validation reports it).
    pub fn of(&self, n: usize) -> Option<usize> {
        match self {
            IntOrPercent::Count(c) => Some(*c as usize),
            IntOrPercent::Percent(s) => {
                let p: usize = s.strip_suffix('%')?.trim().parse().ok()?;
                Some(n * p / 100)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RollbackPolicy {
    #[default]
    None,
    Auto,
}

/// When to go on after a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    None,
    For(std::time::Duration),
    Manual,
}

impl Pause {
    /// Reads `pause`: `manual`, or a duration (validation has checked it).
    pub fn parse(s: Option<&str>) -> Result<Pause, String> {
        match s.map(str::trim) {
            None => Ok(Pause::None),
            Some("manual") => Ok(Pause::Manual),
            Some(d) => humantime::parse_duration(d)
                .map(|d| {
                    if d.is_zero() {
                        Pause::None
                    } else {
                        Pause::For(d)
                    }
                })
                .map_err(|e| format!("pause {d:?} is neither `manual` nor a duration: {e}")),
        }
    }
}

impl Rollout {
    /// The pause after stage `i`.
    pub fn pause_after(&self, i: usize) -> Pause {
        let s = self
            .stages
            .get(i)
            .and_then(|s| s.pause.as_deref())
            .or(self.pause.as_deref());
        Pause::parse(s).unwrap_or(Pause::Manual)
    }

    /// `health_timeout` as a duration; validation has checked it parses.
    pub fn health_timeout(&self) -> std::time::Duration {
        humantime::parse_duration(&self.health_timeout)
            .unwrap_or(std::time::Duration::from_secs(300))
    }

    /// The name stage `i` is shown with.
    pub fn stage_name(&self, i: usize) -> String {
        self.stages
            .get(i)
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| format!("stage-{}", i + 1))
    }
}

/// `kind: Defaults`: fleet-wide defaults (at most one document).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DefaultsSpec {
    /// The rollout of every workload that has no `spec.rollout`.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// How tenants are enforced.
    #[serde(default)]
    pub tenancy: TenancyDefaults,
    /// How objects of a kind are judged healthy, for every workload
    /// (a workload's own `spec.health` comes first).
    #[serde(default)]
    pub health: Vec<HealthRule>,
}

/// `Defaults.spec.tenancy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TenancyDefaults {
    /// Every workload must belong to a tenant (strict mode); without it,
    /// a workload no tenant owns is the platform's and unrestricted.
    #[serde(default)]
    pub strict: bool,
}

/// Who may put what where: the workloads a tenant owns, and the clusters,
/// namespaces and kinds those workloads may write to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TenantSpec {
    /// The workloads it owns: names, or globs such as `shop-*`. A workload
    /// belongs to at most one tenant.
    pub workloads: Vec<String>,
    /// Where its workloads may land; absent: every cluster.
    #[serde(default)]
    pub clusters: Option<ClusterSelector>,
    /// The namespaces its objects may be in (names or globs); a Namespace
    /// object it writes must be one of them.
    pub namespaces: Vec<String>,
    /// Kinds it may write beyond the namespaced ones (which it may write
    /// unless denied): cluster-scoped kinds are denied unless listed.
    #[serde(default)]
    pub allow: Vec<KindRule>,
    /// Kinds it may never write (wins over `allow`).
    #[serde(default)]
    pub deny: Vec<KindRule>,
    /// On Kubernetes clusters, canopy applies and prunes the tenant's
    /// objects as this ServiceAccount (impersonating it), so the cluster's
    /// RBAC has the last word.
    #[serde(default)]
    pub service_account: Option<ServiceAccountRef>,
}

/// A kind by API group (`""` for the core group) and kind; `*` matches any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KindRule {
    #[serde(default)]
    pub group: String,
    pub kind: String,
}

/// A ServiceAccount, by namespace and name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccountRef {
    /// The user Kubernetes knows the ServiceAccount as.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub meta: ObjectMeta,
    pub spec: TenantSpec,
    pub source: Arc<Source>,
}

impl Tenant {
    pub fn name(&self) -> &str {
        &self.meta.name
    }
}

#[derive(Debug, Clone)]
pub struct Defaults {
    pub meta: ObjectMeta,
    pub spec: DefaultsSpec,
    pub source: Arc<Source>,
}

/// Failover of Divided replicas (Duplicated workloads are unaffected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Failover {
    /// How long a cluster must stay unreachable before its replicas are
    /// re-divided among its healthy siblings, e.g. `90s`, `5m`. They move
    /// back once it answers again.
    #[serde(default = "default_failover_after")]
    pub after: String,
}

fn default_failover_after() -> String {
    "5m".into()
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            after: default_failover_after(),
        }
    }
}

impl Failover {
    /// `after` as a duration; validation has checked it parses.
    pub fn after(&self) -> std::time::Duration {
        humantime::parse_duration(&self.after).unwrap_or(std::time::Duration::from_secs(300))
    }
}

/// Fields, by JSON pointer, of the objects that match group, kind, name and
/// namespace (an absent one matches any).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FieldRule {
    /// API group; `""` is the core group. Absent: any.
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// JSON pointers such as `/spec/replicas`.
    pub json_pointers: Vec<String>,
}

impl FieldRule {
    pub fn matches(&self, key: &ObjectKey) -> bool {
        identity_matches([&self.group, &self.kind, &self.name, &self.namespace], key)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    /// Absent: every cluster.
    #[serde(default)]
    pub clusters: Option<ClusterSelector>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub replicas: ReplicaSpec,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReplicaMode {
    /// Every chosen cluster runs the manifest's replicas.
    #[default]
    Duplicated,
    /// The total is divided across the chosen clusters, down the tree.
    Divided,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicaSpec {
    #[serde(default)]
    pub mode: ReplicaMode,
    #[serde(default)]
    pub weights: Option<Weights>,
    /// Replicas to divide; default: the manifest's own `spec.replicas`.
    #[serde(default)]
    pub total: Option<u32>,
    /// Where replicas live in kinds canopy does not know (Deployment,
    /// StatefulSet and ReplicaSet are built in).
    #[serde(default)]
    pub paths: Vec<ReplicaPath>,
    /// With `weights: {dynamic: capacity}` no cluster gets more replicas
    /// than fit; when the chosen clusters hold fewer than the total:
    /// `Error` (the default) or `PlaceWhatFits` (a warning).
    #[serde(default)]
    pub on_shortfall: OnShortfall,
    /// The least and most replicas the subtree of each cluster a rule
    /// selects runs (a leaf: the cluster itself), honoured by every level
    /// of the division: "at least 2 in every region, at most 10 on each
    /// edge cluster". A cluster several rules select takes the largest
    /// `min` and the smallest `max`.
    #[serde(default)]
    pub limits: Vec<Limit>,
    /// How a new total, new weights or a new cluster change the division:
    /// `Fresh` (the default) divides anew, which may move replicas between
    /// clusters that did not need to move; `Calm` keeps each party's
    /// replicas from the last apply and divides only the difference, at
    /// every level.
    #[serde(default)]
    pub rescheduling: Rescheduling,
}

/// See [`ReplicaSpec::rescheduling`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Rescheduling {
    #[default]
    Fresh,
    Calm,
}

/// One rule of `placement.replicas.limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limit {
    pub clusters: ClusterSelector,
    #[serde(default)]
    pub min: Option<u32>,
    #[serde(default)]
    pub max: Option<u32>,
}

/// What a capacity-bound division does when the total does not fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnShortfall {
    #[default]
    Error,
    PlaceWhatFits,
}

/// Weights for `Divided`: either static rules or the clusters' capacity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Weights {
    #[serde(default, rename = "static")]
    pub static_weights: Option<Vec<StaticWeight>>,
    #[serde(default)]
    pub dynamic: Option<DynamicWeight>,
    /// With `dynamic: capacity`: what one replica needs. A cluster's weight is
    /// how many replicas fit in its capacity (default: one pod per replica).
    /// With `static` and `boundByCapacity`: what bounds each cluster.
    #[serde(default)]
    pub per_replica: Option<Capacity>,
    /// With `static` weights: a cluster that declares `capacity` takes no
    /// more replicas than fit there (as `dynamic: capacity` always does);
    /// one that declares none is unbounded.
    #[serde(default)]
    pub bound_by_capacity: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DynamicWeight {
    Capacity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticWeight {
    pub clusters: ClusterSelector,
    /// A cluster matched by several rules takes the largest weight.
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicaPath {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    /// JSON pointer to the replica count, e.g. `/spec/replicas`.
    pub path: String,
}

// ---------------------------------------------------------------- Override

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverrideSpec {
    /// Overrides apply in ascending priority, ties by name: higher wins.
    #[serde(default)]
    pub priority: i32,
    /// Absent: every cluster.
    #[serde(default)]
    pub clusters: Option<ClusterSelector>,
    /// Workload names; absent: every workload.
    #[serde(default)]
    pub workloads: Option<Vec<String>>,
    /// Object filters, any of which may match; absent: every object.
    #[serde(default)]
    pub resources: Option<Vec<ResourceFilter>>,
    pub patches: Vec<PatchSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceFilter {
    /// API group; `""` is the core group. Absent: any.
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

impl ResourceFilter {
    pub fn matches(&self, key: &ObjectKey) -> bool {
        identity_matches([&self.group, &self.kind, &self.name, &self.namespace], key)
    }
}

/// Whether an object's group, kind, name and namespace match the wanted
/// ones (in that order); an absent one matches anything.
fn identity_matches(want: [&Option<String>; 4], key: &ObjectKey) -> bool {
    let got = [&key.group, &key.kind, &key.name, &key.namespace];
    want.iter()
        .zip(got)
        .all(|(w, g)| w.as_deref().is_none_or(|w| w == g))
}

/// One patch of an Override; exactly one key per list item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PatchSpec {
    /// RFC 6902 operations.
    JsonPatch(json_patch::Patch),
    /// RFC 7386 merge patch.
    MergePatch(Value),
    /// Rewrite every container and initContainer image.
    Image(ImageRewrite),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageRewrite {
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
}

// ---------------------------------------------------------------- objects

/// Identity of a Kubernetes object within one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// Reads the identity of a manifest; `None` when apiVersion, kind or
    /// metadata.name is missing.
    pub fn of(obj: &Value) -> Option<ObjectKey> {
        let api_version = obj.get("apiVersion")?.as_str()?;
        let kind = obj.get("kind")?.as_str()?;
        let meta = obj.get("metadata")?;
        let name = meta.get("name")?.as_str()?;
        let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        Some(ObjectKey {
            group: group_of(api_version).to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.kind)?;
        } else {
            write!(f, "{}.{}", self.kind, self.group)?;
        }
        if self.namespace.is_empty() {
            write!(f, " {}", self.name)
        } else {
            write!(f, " {}/{}", self.namespace, self.name)
        }
    }
}

/// The API group of an apiVersion: `apps/v1` → `apps`, `v1` → `` (core).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

// ---------------------------------------------------------------- loaded fleet

/// Where a document came from, with the line of every node in it.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: String,
    pub doc: Doc,
}

impl Source {
    pub fn loc(&self, path: &YamlPath) -> Loc {
        Loc {
            file: self.file.clone(),
            line: self.doc.line_of(path),
            path: path.clone(),
        }
    }

    pub fn loc_str(&self, dotted: &str) -> Loc {
        self.loc(&YamlPath::parse(dotted))
    }
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub meta: ObjectMeta,
    pub spec: ClusterSpec,
    pub source: Arc<Source>,
}

impl Cluster {
    pub fn name(&self) -> &str {
        &self.meta.name
    }
}

/// One manifest file of a workload, as text: it may be a template.
#[derive(Debug, Clone)]
pub struct ManifestFile {
    /// Path relative to the fleet root.
    pub path: String,
    pub text: String,
}

impl ManifestFile {
    /// Whether the file is a template (named `*.yaml.j2`), rendered per
    /// cluster with minijinja. Any other manifest is applied as written, so
    /// it is parsed once and shared by every cluster.
    pub fn is_template(&self) -> bool {
        crate::core::load::is_template_file(&self.path)
    }
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub meta: ObjectMeta,
    pub spec: WorkloadSpec,
    /// The workload's folder, relative to the fleet root (`workloads/web`).
    pub dir: String,
    pub manifests: Vec<ManifestFile>,
    pub source: Arc<Source>,
    /// A Helm workload's files as read (its folder: a local chart and the
    /// values files), kept for `helm template` after validation.
    pub helm_inputs: Arc<Vec<(String, Vec<u8>)>>,
}

impl Workload {
    pub fn name(&self) -> &str {
        &self.meta.name
    }
}

#[derive(Debug, Clone)]
pub struct Override {
    pub meta: ObjectMeta,
    pub spec: OverrideSpec,
    pub source: Arc<Source>,
}

impl Override {
    pub fn name(&self) -> &str {
        &self.meta.name
    }
}

/// Everything read from a fleet repository, each list sorted by name
/// (overrides by priority, then name) so that nothing depends on file order.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// The fleet's name, written in the `canopy.dev/fleet` label.
    pub name: String,
    pub clusters: Vec<Arc<Cluster>>,
    pub workloads: Vec<Workload>,
    pub overrides: Vec<Override>,
    /// The `Defaults` documents (validation allows one).
    pub defaults: Vec<Defaults>,
    /// The `Tenant` documents, by name.
    pub tenants: Vec<Tenant>,
    /// Some document could not be read (its error is already reported), so
    /// errors about what is missing would only repeat it.
    pub incomplete: bool,
    /// A relay's slice of a fleet (see [`crate::core::relay`]): selectors
    /// may name clusters outside it, which the full fleet has and which
    /// select nothing here.
    pub slice: bool,
    /// A relay's slice whose level above renders Helm charts for clusters
    /// below the relay: the relay reads the capabilities of the clusters
    /// it reconciles and hands them down again ([`crate::core::capabilities`]).
    pub capabilities_asked: bool,
}

impl Fleet {
    /// The rollout of workload `w`: its own, else the fleet's default; `None`
    /// (or no stages): every cluster at once.
    pub fn rollout_of<'a>(&'a self, w: &'a Workload) -> Option<&'a Rollout> {
        w.spec
            .rollout
            .as_ref()
            .or_else(|| self.defaults.first().and_then(|d| d.spec.rollout.as_ref()))
            .filter(|r| !r.stages.is_empty())
    }

    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads
            .binary_search_by(|w| w.name().cmp(name))
            .ok()
            .map(|i| &self.workloads[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op,
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn selector_semantics_match_kubernetes() {
        use SelectorOperator::*;
        let l = labels(&[("env", "prod"), ("region", "eu")]);
        let sel = |e| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![e],
        };
        assert!(LabelSelector::default().matches(&l));
        assert!(sel(expr("env", In, &["prod", "stage"])).matches(&l));
        assert!(!sel(expr("env", In, &["dev"])).matches(&l));
        assert!(!sel(expr("tier", In, &["x"])).matches(&l));
        assert!(
            sel(expr("tier", NotIn, &["x"])).matches(&l),
            "NotIn holds for a missing key"
        );
        assert!(!sel(expr("env", NotIn, &["prod"])).matches(&l));
        assert!(sel(expr("region", Exists, &[])).matches(&l));
        assert!(!sel(expr("region", DoesNotExist, &[])).matches(&l));
        let ml = LabelSelector {
            match_labels: labels(&[("env", "prod"), ("region", "us")]),
            match_expressions: vec![],
        };
        assert!(!ml.matches(&l));
    }

    #[test]
    fn tolerations_match_kubernetes() {
        let taint = Taint {
            key: "tier".into(),
            value: Some("edge".into()),
            effect: TaintEffect::NoSchedule,
        };
        let t = |key: Option<&str>, op, value: Option<&str>, effect| Toleration {
            key: key.map(Into::into),
            operator: op,
            value: value.map(Into::into),
            effect,
        };
        use TolerationOperator::*;
        assert!(t(Some("tier"), Equal, Some("edge"), None).tolerates(&taint));
        assert!(!t(Some("tier"), Equal, Some("core"), None).tolerates(&taint));
        assert!(t(Some("tier"), Exists, None, Some(TaintEffect::NoSchedule)).tolerates(&taint));
        assert!(!t(Some("tier"), Exists, None, Some(TaintEffect::NoExecute)).tolerates(&taint));
        assert!(t(None, Exists, None, None).tolerates(&taint));
        assert!(!t(Some("other"), Exists, None, None).tolerates(&taint));
    }

    #[test]
    fn object_key_reads_group_and_namespace() {
        let obj = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"}});
        let k = ObjectKey::of(&obj).unwrap();
        assert_eq!(k.group, "apps");
        assert_eq!(k.to_string(), "Deployment.apps shop/web");
        assert_eq!(group_of("v1"), "");
    }
}
