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
//! the outputs), but only a relay reaches the clusters below it: its agent
//! reads the clusters it reconciles as the root reads its own, keeps them
//! in its own state folder, and reports what differs from its handoff; the
//! level above takes that in ([`learn`]) after waiting for its relays, so
//! its next round renders those clusters' charts for them. Until then they
//! render for their declaration, the record, or the default.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::fleet::Backends;
use crate::backend::kube::{KubeFleet, KubeOptions};
use crate::core::capabilities::{self, Observed};
use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::model::Fleet;
use crate::core::render::Renderer;
use crate::core::validate::Checked;
use crate::ops::relays::{RelayOutcome, RelayResult};
use crate::state::capabilities::CapabilitiesRecord;
use crate::state::Record;

/// How long a cluster's Kubernetes version and APIs, as `watch` or a relay
/// agent read them, are taken as they are before they are read again: an
/// upgrade or a new CRD reaches the charts within it, and a round does not
/// cost every cluster two discovery requests.
pub const FRESH_FOR: Duration = Duration::from_secs(300);

/// Reads at once at most.
const PARALLEL_READS: usize = 16;

/// What a run does about capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Only the record (a run that reaches no cluster).
    Record,
    /// Read the clusters the level reconciles whose record is older
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
    /// the level `level` reconciles (`None`: the root process; a relay's
    /// name: its agent). Nothing for a fleet without a Helm workload, or
    /// for a relay's slice the level above did not ask about.
    pub fn observe(
        &mut self,
        fleet: &mut Fleet,
        state: &Path,
        read: Read,
        level: Option<&str>,
    ) -> Diagnostics {
        let mut diags = Diagnostics::default();
        if !fleet.capabilities_asked && !fleet.workloads.iter().any(|w| w.spec.helm.is_some()) {
            return diags;
        }
        let mut known = recorded(state);
        if let Read::Live { fresh_for, keep } = read {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let due: Vec<usize> = capabilities::reconciled_by(fleet, level)
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

/// Takes into the record in `state` what the relays this level
/// reconciles reported of their subtrees' capabilities
/// ([`capabilities::learn`]): each relay only for the clusters below it.
/// The reports the run waited for (`relays`) are used as they are; a relay
/// the run wrote nothing to (its handoff unchanged, in sync) is asked for
/// its last report, once, when charts render below it. A report written
/// before this run counts too (a silent relay's last one): what it read is
/// no less true for being late. `targets`: the clusters the run reconciled
/// (`None`: all).
pub fn learn(
    state: &Path,
    r: &Renderer<'_>,
    targets: Option<&BTreeSet<usize>>,
    relays: &[RelayResult],
    backends: &dyn Backends,
) {
    let checked = r.checked;
    let topo = &checked.topo;
    let waited: BTreeSet<&str> = relays.iter().map(|x| x.relay.as_str()).collect();
    let mut reports: Vec<(String, capabilities::Table)> = relays
        .iter()
        .filter_map(|x| {
            let report = match &x.outcome {
                RelayOutcome::Reported(rep) => Some(rep),
                RelayOutcome::Waiting { last, .. } | RelayOutcome::Silent { last } => last.as_ref(),
                RelayOutcome::Refused(_) | RelayOutcome::Unreadable(_) => None,
            }?;
            Some((x.relay.clone(), report.capabilities.clone()?))
        })
        .collect();
    let others: Vec<usize> = (0..topo.len())
        .filter(|c| targets.is_none_or(|t| t.contains(c)))
        .filter(|&c| checked.cluster(c).spec.relay.is_some() && !waited.contains(topo.name(c)))
        .filter(|&c| crate::core::relay::asks_capabilities(r, c))
        .collect();
    let read = crate::sys::parallel::map(&others, PARALLEL_READS, |&c| {
        let backend = backends.backend(topo.name(c));
        crate::ops::handoff::read_report(backend.as_ref())
    });
    for (&c, got) in others.iter().zip(read) {
        match got {
            Ok(Some((_, report))) => {
                if let Some(t) = report.capabilities {
                    reports.push((topo.name(c).to_string(), t));
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(relay = topo.name(c), error = %e, "cannot read the relay's report for its subtree's capabilities")
            }
        }
    }
    if reports.is_empty() {
        return;
    }
    let mut known = recorded(state);
    let before = known.clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for (relay, table) in &reports {
        let Some(rl) = topo.get(relay) else { continue };
        let below = |c: &str| {
            topo.get(c)
                .is_some_and(|i| i != rl && topo.in_subtree(i, rl))
        };
        for why in capabilities::learn(&mut known, table, below, now) {
            tracing::warn!(
                relay = relay.as_str(),
                "refused what the relay reported of a cluster's capabilities: {why}"
            );
        }
    }
    if known != before {
        if let Err(e) = CapabilitiesRecord::of(&known).save(state) {
            tracing::warn!(error = %e, "cannot record the capabilities the relays reported");
        }
    }
}

/// What a relay reports of its subtree's capabilities: what its record in
/// `state` holds of the clusters below it (`me` in `checked`) that differs
/// from what it was handed ([`capabilities::differences`]). `None` when
/// the level above did not ask, or nothing differs.
pub fn report(
    state: &Path,
    checked: &Checked,
    me: usize,
    handed: Option<&capabilities::Table>,
) -> Option<capabilities::Table> {
    let handed = handed?;
    let topo = &checked.topo;
    capabilities::differences(handed, &recorded(state), |c| {
        topo.get(c)
            .is_some_and(|i| i != me && topo.in_subtree(i, me))
    })
}
