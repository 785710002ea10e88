//! Cluster backends: where live state is read from and written to.
//!
//! Apply and diff only need five things from a cluster: whether it answers,
//! the objects canopy owns there, what applying a desired object would leave
//! (a server's dry run), a way to write a set of changes, and what was last
//! applied. The embedded local backend keeps state in files; the Kubernetes
//! backend talks to an API server with server-side apply.

pub mod fleet;
pub mod kube;
pub mod local;
pub mod rendered;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::diff::{Change, ServerView};
use crate::core::model::ObjectKey;

/// A kind as the API names it: what listing owned objects needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TypeRef {
    pub api_version: String,
    pub kind: String,
}

impl TypeRef {
    pub fn of(obj: &Value) -> Option<TypeRef> {
        Some(TypeRef {
            api_version: obj.get("apiVersion")?.as_str()?.to_string(),
            kind: obj.get("kind")?.as_str()?.to_string(),
        })
    }
}

impl std::fmt::Display for TypeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.api_version, self.kind)
    }
}

/// A desired object with its live counterpart, if any, for a preview.
pub struct Planned<'a> {
    pub key: &'a ObjectKey,
    pub desired: &'a Value,
    pub live: Option<&'a Value>,
}

/// What was applied last, recorded per cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyMeta {
    /// Git commit (with `-dirty` for uncommitted changes), or `unversioned`.
    pub revision: String,
    /// RFC 3339 time of the apply.
    pub at: String,
    /// Whom a Kubernetes cluster's objects are written as, by workload
    /// (tenants with a ServiceAccount); not recorded.
    #[serde(skip, default)]
    pub impersonate: Impersonation,
}

/// The tenants that write as a ServiceAccount, each with its workload
/// patterns compiled and its user. An object is created, changed and
/// pruned as the tenant of the workload its `canopy.dev/workload` label
/// names, so a tenant never writes, nor deletes, what is not its own with
/// more than its own rights.
#[derive(Debug, Clone, Default)]
pub struct Impersonation(pub std::sync::Arc<Vec<TenantUser>>);

/// A tenant that writes as a ServiceAccount.
#[derive(Debug, Clone)]
pub struct TenantUser {
    pub tenant: String,
    /// Its `spec.workloads`, compiled once per run.
    workloads: globset::GlobSet,
    pub user: String,
}

/// Two runs write as the same users when the same tenants name the same
/// accounts (their patterns come from the same documents).
impl PartialEq for Impersonation {
    fn eq(&self, o: &Self) -> bool {
        self.0.len() == o.0.len()
            && self
                .0
                .iter()
                .zip(o.0.iter())
                .all(|(a, b)| a.tenant == b.tenant && a.user == b.user)
    }
}

impl Eq for Impersonation {}

impl Impersonation {
    /// The tenants of `checked` that name a ServiceAccount.
    pub fn of(checked: &crate::core::validate::Checked) -> Impersonation {
        Impersonation(std::sync::Arc::new(
            checked
                .fleet
                .tenants
                .iter()
                .filter_map(|t| {
                    let sa = t.spec.service_account.as_ref()?;
                    Some(TenantUser {
                        tenant: t.name().to_string(),
                        // Validation compiled the same patterns already.
                        workloads: crate::core::tenancy::globs(&t.spec.workloads).ok()?,
                        user: sa.user(),
                    })
                })
                .collect(),
        ))
    }

    /// (tenant, user) that writes the objects of `workload`.
    pub fn user_for(&self, workload: &str) -> Option<(&str, &str)> {
        self.0
            .iter()
            .find(|t| t.workloads.is_match(workload))
            .map(|t| (t.tenant.as_str(), t.user.as_str()))
    }
}

impl ApplyMeta {
    /// What an apply of `revision` at `at` records.
    pub fn new(revision: impl ToString, at: std::time::SystemTime) -> ApplyMeta {
        ApplyMeta {
            revision: revision.to_string(),
            at: humantime::format_rfc3339_seconds(at).to_string(),
            impersonate: Impersonation::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cluster {cluster} is unreachable: {reason}")]
    Unreachable { cluster: String, reason: String },
    /// The kubeconfig or context of a cluster cannot be used.
    #[error("cluster {cluster}: {detail}\n  help: {help}")]
    Connect {
        cluster: String,
        detail: String,
        help: String,
    },
    /// The API server answered with an error about one object, or about
    /// the cluster as a whole (`object` empty).
    #[error("cluster {} ({}): {}{}{}", .0.cluster, .0.context, .0.object, .0.detail, help_line(&.0.help))]
    Api(Box<ApiFailure>),
    /// Server-side apply refused to take fields that another applier owns.
    #[error("cluster {cluster} ({context}): {object}apply conflicts: {}; nothing of it was changed\n  help: rerun with --force-conflicts to take these fields over, or list them in the workload's spec.retain (the cluster keeps its value) or ignoreDifferences", conflicts_text(conflicts))]
    Conflict {
        cluster: String,
        context: String,
        object: String,
        conflicts: Vec<FieldConflict>,
    },
    /// The API server refuses a change to a field it does not let change
    /// (a Job's template, a Deployment's selector, a Service's clusterIP).
    #[error("{}\n  help: {}", .0.summary(), IMMUTABLE_HELP)]
    Immutable(Box<ImmutableFailure>),
    /// Objects were written but did not become healthy in time.
    #[error("cluster {cluster}: not healthy after {waited}:\n    {objects}\n  help: look at the objects' events (kubectl describe), or raise --timeout")]
    Unhealthy {
        cluster: String,
        waited: String,
        objects: String,
    },
    /// The local backend was told an object is unhealthy.
    #[error("cluster {cluster}: unhealthy (local backend):\n    {objects}\n  help: the objects carry the annotation canopy.dev/local-health: unhealthy, which makes the local backend report them unhealthy; remove it to make them healthy")]
    Simulated { cluster: String, objects: String },
    /// A tenant's object breaks the tenant's rules once the cluster says
    /// what scope its kind has; nothing of the cluster was written.
    #[error("cluster {cluster}: {breaches}; nothing of the cluster was written\n  help: the cluster serves these kinds cluster-scoped: allow the kind to the tenant (spec.allow) or take the object out of its workload")]
    Tenancy { cluster: String, breaches: String },
    /// An agent that may no longer write (it could not renew its Lease in
    /// time, or another replica holds it) refused a write.
    #[error("cluster {cluster}: not written: this agent could not renew its Lease in time, or another replica took it, so it stopped writing; the replica that leads applies it\n  help: check that the agent reaches its relay's own cluster")]
    Fenced { cluster: String },
    #[error("state file {path} is corrupt: {detail}; canopy left it untouched (restore it from backup or delete it to start this cluster empty)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("state {path} is locked by canopy process {pid}; wait for it to finish (or, if no such process runs, delete {path})")]
    Locked { path: PathBuf, pid: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to have an object re-created when one of its immutable fields
/// changes.
pub const IMMUTABLE_HELP: &str = "to have canopy delete the object and create it again when this happens, annotate it canopy.dev/replace: on-immutable, or set spec.replaceOnImmutable: true on its Workload (replacing deletes what the object runs: its Pods, a Job's run)";

fn help_line(help: &Option<String>) -> String {
    help.as_deref()
        .map(|h| format!("\n  help: {h}"))
        .unwrap_or_default()
}

fn conflicts_text(conflicts: &[FieldConflict]) -> String {
    conflicts
        .iter()
        .map(|c| format!("{} is owned by field manager {:?}", c.field, c.manager))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error answer of an API server (boxed in [`BackendError::Api`]: the
/// error travels in every `Result` of the backends, and most never fail).
#[derive(Debug)]
pub struct ApiFailure {
    pub cluster: String,
    /// `context NAME`: which kubeconfig context was used.
    pub context: String,
    /// `KEY: ` for an error about one object, empty for the cluster.
    pub object: String,
    pub detail: String,
    /// The HTTP status the server answered (or, for an object canopy
    /// cannot send, the one it would answer); `None` for other failures of
    /// the client.
    pub code: Option<u16>,
    pub help: Option<String>,
}

/// A change the API server refuses for immutable fields (boxed in
/// [`BackendError::Immutable`], as [`ApiFailure`] is).
#[derive(Debug)]
pub struct ImmutableFailure {
    pub cluster: String,
    /// `context NAME`.
    pub context: String,
    /// `KEY: `.
    pub object: String,
    /// The fields, as the server names them (`spec.template`).
    pub fields: Vec<String>,
    /// The server's message.
    pub detail: String,
}

impl ImmutableFailure {
    fn summary(&self) -> String {
        format!(
            "cluster {} ({}): {}the API server refuses to change immutable field(s) {}: {}",
            self.cluster,
            self.context,
            self.object,
            self.fields.join(", "),
            self.detail
        )
    }
}

/// A field that server-side apply would not take, and who owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldConflict {
    pub field: String,
    pub manager: String,
}

/// Why a cluster could not be reconciled, as status, the health records and
/// rollouts read it (without parsing the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum FailReason {
    /// The cluster did not answer.
    Unreachable,
    /// Its kubeconfig or context cannot be used.
    Connection,
    /// Its API server rejected the credentials (401).
    Unauthorized,
    /// The credentials lack a permission (403).
    Forbidden,
    /// Fields another field manager owns, and who.
    Conflict { conflicts: Vec<FieldConflict> },
    /// The server refused an object, or does not serve its kind (400, 404,
    /// 422).
    Invalid,
    /// The server refuses to change these immutable fields of an object
    /// that does not ask to be replaced.
    Immutable { fields: Vec<String> },
    /// Objects were written but are not healthy.
    Unhealthy,
    /// The server timed out (408, 504).
    Timeout,
    /// canopy's own record of the cluster cannot be used (corrupt, locked,
    /// unreadable).
    State,
    /// Any other answer of the API server.
    Api,
}

impl BackendError {
    /// The typed reason.
    pub fn reason(&self) -> FailReason {
        match self {
            BackendError::Unreachable { .. } => FailReason::Unreachable,
            BackendError::Connect { .. } => FailReason::Connection,
            BackendError::Tenancy { .. } => FailReason::Forbidden,
            BackendError::Fenced { .. } => FailReason::State,
            BackendError::Api(a) => match a.code {
                Some(401) => FailReason::Unauthorized,
                Some(403) => FailReason::Forbidden,
                Some(400 | 404 | 422) => FailReason::Invalid,
                Some(408 | 504) => FailReason::Timeout,
                Some(_) | None => FailReason::Api,
            },
            BackendError::Conflict { conflicts, .. } => FailReason::Conflict {
                conflicts: conflicts.clone(),
            },
            BackendError::Immutable(i) => FailReason::Immutable {
                fields: i.fields.clone(),
            },
            BackendError::Unhealthy { .. } | BackendError::Simulated { .. } => {
                FailReason::Unhealthy
            }
            BackendError::Corrupt { .. }
            | BackendError::Locked { .. }
            | BackendError::Io { .. } => FailReason::State,
        }
    }

    /// What happened, without the advice: what a rollout record keeps (the
    /// advice is in the run's own report).
    pub fn summary(&self) -> String {
        match self {
            BackendError::Connect {
                cluster, detail, ..
            } => format!("cluster {cluster}: {detail}"),
            BackendError::Api(a) => format!(
                "cluster {} ({}): {}{}",
                a.cluster, a.context, a.object, a.detail
            ),
            BackendError::Conflict {
                cluster,
                context,
                object,
                conflicts,
            } => format!(
                "cluster {cluster} ({context}): {object}apply conflicts: {}; nothing of it was changed",
                conflicts_text(conflicts)
            ),
            BackendError::Unhealthy {
                cluster,
                waited,
                objects,
            } => format!("cluster {cluster}: not healthy after {waited}:\n    {objects}"),
            BackendError::Simulated { cluster, objects } => {
                format!("cluster {cluster}: unhealthy (local backend):\n    {objects}")
            }
            BackendError::Tenancy { cluster, breaches } => {
                format!("cluster {cluster}: {breaches}; nothing of the cluster was written")
            }
            BackendError::Immutable(i) => i.summary(),
            e => e.to_string(),
        }
    }
}

/// A write that failed, and exactly which objects it changed before failing.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct WriteFailure {
    pub error: BackendError,
    pub changed: Vec<ObjectKey>,
}

/// One cluster as apply and diff see it.
pub trait ClusterBackend: Send + Sync {
    /// Ok when the cluster answers.
    fn reachable(&self) -> Result<(), BackendError>;
    /// Objects labelled `canopy.dev/fleet=<fleet>`. `kinds` are those of the
    /// desired objects; a backend that must list kind by kind adds every kind
    /// it has written before, so that nothing owned is missed by prune.
    fn list_owned(&self, fleet: &str, kinds: &[TypeRef]) -> Result<Vec<Value>, BackendError>;
    /// Which of these kinds are namespaced, as far as the backend knows
    /// better than canopy's table of built-in kinds (an API server's
    /// discovery does). Kinds it does not know are left out.
    fn scopes(&self, _kinds: &[TypeRef]) -> Result<BTreeMap<TypeRef, bool>, BackendError> {
        Ok(BTreeMap::new())
    }
    /// What applying each object would leave, one view per object in order.
    /// A backend that stores objects as written has nothing to add.
    fn preview(&self, objects: &[Planned<'_>]) -> Result<Vec<ServerView>, BackendError> {
        Ok(vec![ServerView::AsSent; objects.len()])
    }
    /// Writes the changes in order and records `meta`. Writing no changes
    /// writes nothing at all.
    fn write(&self, changes: &[Change], meta: &ApplyMeta) -> Result<(), WriteFailure>;
    /// Waits until the objects are healthy (rolled out, complete,
    /// established), at most `timeout`. A store that keeps objects as
    /// written has nothing to wait for.
    /// `rules`: the health rules users wrote, which come before canopy's.
    fn wait_healthy(
        &self,
        _objects: &[&Value],
        _timeout: std::time::Duration,
        _rules: &crate::core::health_rules::HealthRules,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    /// What the last successful apply recorded.
    fn last_applied(&self) -> Result<Option<ApplyMeta>, BackendError>;
    /// One object by kind and identity, `None` when there is none (or its
    /// kind is not served). canopy's own records are read this way: a
    /// relay's handoff and its agent's Lease, which belong to no fleet
    /// listing.
    fn get(&self, t: &TypeRef, key: &ObjectKey) -> Result<Option<Value>, BackendError>;
    /// Replaces the `status` of an existing object and nothing else (its
    /// status subresource): a relay reports on its handoff this way, and a
    /// parent's apply of the handoff never takes the report away.
    fn set_status(&self, t: &TypeRef, key: &ObjectKey, status: &Value) -> Result<(), BackendError>;
    /// Creates `obj`, or, when it carries `metadata.resourceVersion`,
    /// replaces the object if that is still its live version. `Ok(None)`
    /// when another writer came first (the object exists, or has changed):
    /// the compare-and-swap leader election needs.
    fn put(&self, obj: &Value) -> Result<Option<Value>, BackendError>;
    /// Whether controllers run the objects and report their readiness in
    /// `status` (a real cluster). Without them (the local backend), an
    /// object held counts as ready as written.
    fn has_controllers(&self) -> bool {
        false
    }
    /// Why the cluster cannot run workloads although it answers (a
    /// Kubernetes cluster none of whose nodes is Ready): failover counts it
    /// as down. `None` when it can, or when the backend cannot tell.
    fn not_ready(&self) -> Option<String> {
        None
    }
    /// The cluster's Kubernetes version and every API group/version (and
    /// `group/version/Kind`) it serves, sorted, as Helm's `.Capabilities`
    /// asks them; `None` when the backend is no Kubernetes cluster.
    fn capabilities(&self) -> Result<Option<(String, Vec<String>)>, BackendError> {
        Ok(None)
    }
    /// What the cluster can still hold (its nodes' allocatable resources
    /// minus its running pods' requests), for a cluster with
    /// `liveCapacity`; `None` when the backend has no nodes to read.
    fn free_capacity(&self) -> Result<Option<crate::core::model::Capacity>, BackendError> {
        Ok(None)
    }
    /// A hash of the cluster's whole stored state, as this handle last
    /// read or wrote it (read now if it has not), where the backend keeps a
    /// cluster's state in one file it alone writes (the local backend):
    /// equal hashes mean nothing in the cluster changed, which lets a run
    /// skip a cluster found in sync before ([`crate::state::settled`]).
    /// `None` for a backend that cannot tell without listing (a real
    /// cluster changes under canopy all the time).
    fn version(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: Option<u16>, help: Option<&str>) -> BackendError {
        BackendError::Api(Box::new(ApiFailure {
            cluster: "eu".into(),
            context: "context eu-admin".into(),
            object: "ConfigMap demo/app: ".into(),
            detail: "denied".into(),
            code,
            help: help.map(str::to_string),
        }))
    }

    #[test]
    fn reasons_come_from_the_error_not_its_text() {
        assert_eq!(api(Some(401), None).reason(), FailReason::Unauthorized);
        assert_eq!(api(Some(403), None).reason(), FailReason::Forbidden);
        assert_eq!(api(Some(422), None).reason(), FailReason::Invalid);
        assert_eq!(api(Some(504), None).reason(), FailReason::Timeout);
        assert_eq!(api(Some(500), None).reason(), FailReason::Api);
        assert_eq!(api(None, None).reason(), FailReason::Api);
        let conflicts = vec![FieldConflict {
            field: ".data.version".into(),
            manager: "kubectl".into(),
        }];
        let e = BackendError::Conflict {
            cluster: "eu".into(),
            context: "context eu-admin".into(),
            object: "ConfigMap demo/app: ".into(),
            conflicts: conflicts.clone(),
        };
        assert_eq!(e.reason(), FailReason::Conflict { conflicts });
        assert_eq!(
            e.to_string(),
            "cluster eu (context eu-admin): ConfigMap demo/app: apply conflicts: .data.version is owned by field manager \"kubectl\"; nothing of it was changed\n  help: rerun with --force-conflicts to take these fields over, or list them in the workload's spec.retain (the cluster keeps its value) or ignoreDifferences"
        );
        assert!(!e.summary().contains("help:"));
        assert!(e.summary().ends_with("nothing of it was changed"));
    }

    #[test]
    fn the_summary_drops_the_advice_the_message_keeps() {
        let e = api(Some(401), Some("refresh the credentials"));
        assert_eq!(
            e.to_string(),
            "cluster eu (context eu-admin): ConfigMap demo/app: denied\n  help: refresh the credentials"
        );
        assert_eq!(
            e.summary(),
            "cluster eu (context eu-admin): ConfigMap demo/app: denied"
        );
        let e = BackendError::Simulated {
            cluster: "r2".into(),
            objects: "ConfigMap demo/app: unhealthy: crash loop".into(),
        };
        assert_eq!(e.reason(), FailReason::Unhealthy);
        assert_eq!(
            e.summary(),
            "cluster r2: unhealthy (local backend):\n    ConfigMap demo/app: unhealthy: crash loop"
        );
    }
}
