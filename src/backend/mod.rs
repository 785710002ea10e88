//! Cluster backends: where live state is read from and written to.
//!
//! Apply and diff only need four things from a cluster: whether it answers,
//! the objects canopy owns there, a way to write a set of changes, and what
//! was last applied. The embedded local backend keeps state in files; the
//! Kubernetes backend (kube-rs, server-side apply) comes with issue 4.

pub mod local;
pub mod rendered;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diff::Change;
use crate::model::ObjectKey;

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
    #[error("cluster {cluster} has spec.connection ({kubeconfig}), and this canopy has no Kubernetes backend yet, so nothing was sent to it; remove spec.connection to use the embedded local backend")]
    NoKubernetesBackend { cluster: String, kubeconfig: String },
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
    /// Objects labelled `canopy.dev/fleet=<fleet>`.
    fn list_owned(&self, fleet: &str) -> Result<Vec<Value>, BackendError>;
    /// Writes the changes in order and records `meta`. Writing no changes
    /// writes nothing at all.
    fn write(&self, changes: &[Change], meta: &ApplyMeta) -> Result<(), WriteFailure>;
    /// What the last successful apply recorded.
    fn last_applied(&self) -> Result<Option<ApplyMeta>, BackendError>;
}
