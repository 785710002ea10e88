//! Capabilities in every run: before a fleet with Helm workloads is
//! validated (and its charts rendered), each cluster is given what is known
//! of its Kubernetes version and APIs ([`crate::core::capabilities`]). A
//! run that reaches clusters (`apply`, `watch`, `diff`, `status`) first
//! reads them from the Kubernetes clusters its level reconciles, in
//! parallel, each bounded by the request timeout; one that reconciles
//! records what it read in the state folder (`capabilities.json`). Every
//! other run (`render`, `validate`, `explain`, `tree`, `diff --base`)
//! renders for the record. A cluster that does not answer keeps what was
//! recorded; one never read renders for its declaration or the default.
//!
//! Charts are rendered by the root for the whole fleet (a relay is handed
//! the outputs), so the clusters below a relay, which only the relay
//! reaches, render for their declared capabilities or the default.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::kube::{KubeFleet, KubeOptions};
use crate::core::capabilities::{self, Observed};
use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::model::Fleet;
use crate::state::capabilities::CapabilitiesRecord;
use crate::state::Record;

/// Reads at once at most.
const PARALLEL_READS: usize = 16;

/// What a run does about capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Only the record (a run that reaches no cluster).
    Record,
    /// Read the clusters the root process reconciles whose record is older
    /// than `fresh_for` (zero: every one), and keep what was read when
    /// `keep`.
    Live { fresh_for: Duration, keep: bool },
}

/// Reads capabilities for the runs of one process (`watch` keeps it
/// across rounds, so its clients are made once).
pub struct Observer {
    base: PathBuf,
    opts: KubeOptions,
    kube: Option<KubeFleet>,
}

impl Observer {
    /// `base`: where relative kubeconfig paths start.
    pub fn new(base: PathBuf, opts: KubeOptions) -> Observer {
        Observer {
            base,
            opts,
            kube: None,
        }
    }

    /// Gives the clusters of `fleet` their capabilities (see the module
    /// docs), from the record in `state` and, as `read` says, the clusters
    /// themselves. Nothing for a fleet without a Helm workload.
    pub fn observe(&mut self, fleet: &mut Fleet, state: &Path, read: Read) -> Diagnostics {
        let mut diags = Diagnostics::default();
        if !fleet.workloads.iter().any(|w| w.spec.helm.is_some()) {
            return diags;
        }
        let mut known = recorded(state);
        if let Read::Live { fresh_for, keep } = read {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let due: Vec<usize> = capabilities::reconciled_by(fleet, None)
                .into_iter()
                .filter(|&i| {
                    let c = &fleet.clusters[i];
                    let kube = c
                        .spec
                        .connection
                        .as_ref()
                        .is_some_and(|conn| conn.pulled_via.is_none());
                    let age = known
                        .get(c.name())
                        .map(|o| Duration::from_secs(now.saturating_sub(o.read_at)));
                    kube && age.is_none_or(|a| a >= fresh_for)
                })
                .collect();
            if !due.is_empty() {
                if self.kube.is_none() {
                    match KubeFleet::new(&fleet.name, self.base.clone(), self.opts.clone()) {
                        Ok(k) => self.kube = Some(k),
                        Err(e) => {
                            diags.push(Diagnostic::warning(format!(
                                "cannot start the Kubernetes client runtime to read clusters' capabilities: {e}"
                            )));
                            return diags;
                        }
                    }
                }
                let kube = self.kube.as_ref().expect("made above");
                let read = crate::sys::parallel::map(&due, PARALLEL_READS, |&i| {
                    let c = &fleet.clusters[i];
                    let conn = c.spec.connection.as_ref().expect("a Kubernetes cluster");
                    (c.name(), kube.cluster(c.name(), conn).capabilities())
                });
                // Clusters that serve the same APIs share one list.
                let mut sets: HashMap<Vec<String>, Arc<Vec<String>>> = known
                    .values()
                    .map(|o| (o.api_versions.to_vec(), o.api_versions.clone()))
                    .collect();
                for (name, got) in read {
                    match got {
                        Ok(Some((version, apis))) => {
                            let shared = sets
                                .entry(apis.clone())
                                .or_insert_with(|| Arc::new(apis))
                                .clone();
                            known.insert(
                                name.to_string(),
                                Arc::new(Observed {
                                    kubernetes_version: version,
                                    api_versions: shared,
                                    read_at: now,
                                }),
                            );
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(
                            cluster = name,
                            error = %e,
                            "cannot read the cluster's Kubernetes version and APIs; its charts render for what was read last"
                        ),
                    }
                }
                if keep {
                    // Clusters that left the fleet are forgotten.
                    let names: std::collections::BTreeSet<&str> =
                        fleet.clusters.iter().map(|c| c.name()).collect();
                    known.retain(|c, _| names.contains(c.as_str()));
                    if let Err(e) = CapabilitiesRecord::of(&known).save(state) {
                        tracing::warn!(error = %e, "cannot record the clusters' capabilities");
                    }
                }
            }
        }
        capabilities::give(fleet, &known);
        diags
    }
}

/// What the state folder `state` records of the clusters' capabilities
/// (none when it cannot be read, with a warning).
pub fn recorded(state: &Path) -> BTreeMap<String, Arc<Observed>> {
    CapabilitiesRecord::load_or_warn(state, "rendering for declared capabilities").observed()
}
