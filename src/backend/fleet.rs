//! The backend of each cluster of a fleet: a Kubernetes API server for a
//! cluster with `spec.connection`, the embedded local store for the rest.
//! Operations ask for a cluster's backend by name and never care which.

use std::collections::BTreeMap;

use super::ClusterBackend;

/// Hands out the backend of a cluster by name.
pub trait Backends: Sync {
    fn backend(&self, cluster: &str) -> Box<dyn ClusterBackend + '_>;
}

impl Backends for super::local::LocalStore {
    fn backend(&self, cluster: &str) -> Box<dyn ClusterBackend + '_> {
        Box::new(self.cluster(cluster))
    }
}

/// The backends of a fleet's clusters: a Kubernetes API server for each
/// cluster with `spec.connection`, the embedded local backend for the rest.
pub struct FleetBackends<'a> {
    pub local: &'a super::local::LocalStore,
    kube: Option<super::kube::KubeFleet>,
    connections: BTreeMap<String, crate::core::model::Connection>,
}

impl<'a> FleetBackends<'a> {
    /// `dir` is the fleet folder (relative kubeconfig paths start there).
    /// The Kubernetes side is only set up when some cluster has a
    /// connection.
    pub fn new(
        fleet: &crate::core::model::Fleet,
        dir: &std::path::Path,
        local: &'a super::local::LocalStore,
        kube: super::kube::KubeOptions,
    ) -> std::io::Result<Self> {
        let connections: BTreeMap<String, crate::core::model::Connection> = fleet
            .clusters
            .iter()
            .filter_map(|c| c.spec.connection.clone().map(|k| (c.name().to_string(), k)))
            .collect();
        let kube = if connections.is_empty() {
            None
        } else {
            Some(super::kube::KubeFleet::new(
                &fleet.name,
                dir.to_path_buf(),
                kube,
            )?)
        };
        Ok(FleetBackends {
            local,
            kube,
            connections,
        })
    }
}

impl Backends for FleetBackends<'_> {
    fn backend(&self, cluster: &str) -> Box<dyn ClusterBackend + '_> {
        match (self.connections.get(cluster), &self.kube) {
            (Some(conn), Some(kube)) => kube.cluster(cluster, conn),
            _ => self.local.backend(cluster),
        }
    }
}
