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
    #[error("cluster {cluster} ({context}): {object}{detail}")]
    Api {
        cluster: String,
        context: String,
        object: String,
        detail: String,
    },
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
    fn wait_healthy(
        &self,
        _objects: &[&Value],
        _timeout: std::time::Duration,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    /// What the last successful apply recorded.
    fn last_applied(&self) -> Result<Option<ApplyMeta>, BackendError>;
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
}
