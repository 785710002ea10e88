//! The backend of each cluster of a fleet: a Kubernetes API server for a
//! cluster with `spec.connection`, the embedded local store for the rest.
//! Operations ask for a cluster's backend by name and never care which.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::kube::{KubeFleet, KubeOptions};
use super::local::LocalStore;
use super::ClusterBackend;
use crate::core::model::{Connection, Fleet};

/// Hands out the backend of a cluster by name.
pub trait Backends: Sync {
    fn backend(&self, cluster: &str) -> Box<dyn ClusterBackend + '_>;
}

impl Backends for LocalStore {
    fn backend(&self, cluster: &str) -> Box<dyn ClusterBackend + '_> {
        Box::new(self.cluster(cluster))
    }
}

/// The backends of a fleet's clusters: a Kubernetes API server for each
/// cluster with `spec.connection`, the embedded local backend for the rest.
///
/// It outlives one revision of the fleet: `watch` keeps it across rounds,
/// so the Kubernetes runtime, each cluster's client, rate limiter and
/// discovery cache are made once, and [`FleetBackends::follow`] only
/// reconnects the clusters whose connection changed.
pub struct FleetBackends {
    local: LocalStore,
    /// Where relative kubeconfig paths start (the fleet folder).
    base: PathBuf,
    options: KubeOptions,
    kube: Option<KubeFleet>,
    connections: BTreeMap<String, Connection>,
}

impl FleetBackends {
    /// Backends over `local` only, until [`FleetBackends::follow`] is given a
    /// fleet.
    pub fn new(local: LocalStore, base: PathBuf, options: KubeOptions) -> Self {
        FleetBackends {
            local,
            base,
            options,
            kube: None,
            connections: BTreeMap::new(),
        }
    }

    /// Takes `fleet`'s clusters and connections. The Kubernetes side is set
    /// up when a first cluster has a connection (and again if the fleet's
    /// name changes, since every request names it); a cluster whose
    /// connection changed, that left, or whose kubeconfig could not be used
    /// is connected afresh when next asked for.
    pub fn follow(&mut self, fleet: &Fleet) -> std::io::Result<()> {
        self.connections = fleet
            .clusters
            .iter()
            .filter_map(|c| c.spec.connection.clone().map(|k| (c.name().to_string(), k)))
            .collect();
        if self.connections.is_empty() {
            return Ok(());
        }
        match &self.kube {
            Some(k) if k.fleet() == fleet.name => k.keep_only(&self.connections),
            _ => {
                self.kube = Some(KubeFleet::new(
                    &fleet.name,
                    self.base.clone(),
                    self.options.clone(),
                )?)
            }
        }
        Ok(())
    }

    /// The embedded local store (the state folder).
    pub fn local(&self) -> &LocalStore {
        &self.local
    }
}

impl Backends for FleetBackends {
    fn backend(&self, cluster: &str) -> Box<dyn ClusterBackend + '_> {
        match (self.connections.get(cluster), &self.kube) {
            (Some(conn), Some(kube)) => kube.cluster(cluster, conn),
            _ => self.local.backend(cluster),
        }
    }
}
