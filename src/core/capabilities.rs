//! What a cluster is, as a Helm chart asks it (`.Capabilities`): the
//! Kubernetes version it runs and the API group/versions (and their kinds)
//! it serves.
//!
//! `helm template` alone renders for the version compiled into the helm
//! binary and answers `.Capabilities.APIVersions.Has` from its built-in
//! list, never for the cluster the output goes to. So each cluster's
//! capabilities are, field by field:
//! - the version: `spec.kubernetesVersion` when declared, else the one the
//!   level that reconciles the cluster read from it ([`Observed`], kept in
//!   the state folder's `capabilities.json`), else [`DEFAULT_VERSION`];
//! - the API versions: the ones read from the cluster, with
//!   `spec.apiVersions` added (Helm adds them all to its own built-in set).
//!
//! Pure: what was read comes in with the cluster ([`ClusterSpec::observed`]).
//!
//! Charts are rendered by the root for the whole fleet, but only a relay
//! reaches the clusters below it. So a handoff carries what the level above
//! knows of the relay's subtree ([`Table`]); the relay's agent reads the
//! clusters it reconciles, and its report carries what differs
//! ([`differences`], bounded); the level above takes it in ([`learn`],
//! only for clusters below that relay, each value checked as a declared one
//! is) and renders for it from its next round on.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::model::{Cluster, Fleet};

/// The version a cluster with neither a declared nor a read version is
/// rendered for: the newest Kubernetes minor the Kubernetes API crate
/// canopy is built with supports (k8s-openapi's `v1_36` feature), not
/// whatever helm was compiled with.
pub const DEFAULT_VERSION: &str = "v1.36.0";

/// What the level that reconciles a Kubernetes cluster read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `/version`'s `gitVersion`.
    pub kubernetes_version: String,
    /// Every group/version it serves, and every `group/version/Kind` (as
    /// Argo CD gives Helm), sorted; shared by the clusters that serve the
    /// same set.
    pub api_versions: Arc<Vec<String>>,
    /// Seconds since the Unix epoch.
    pub read_at: u64,
}

/// Clusters' capabilities as they are kept and sent: each distinct API set
/// once, since clusters mostly serve the same APIs (the state folder's
/// `capabilities.json`, a handoff's and a relay report's `capabilities`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Distinct API sets, each sorted.
    #[serde(default)]
    pub sets: Vec<Vec<String>>,
    #[serde(default)]
    pub clusters: BTreeMap<String, Entry>,
}

/// One cluster as it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub kubernetes_version: String,
    /// Its API set, an index into [`Table::sets`].
    pub set: usize,
    /// Seconds since the Unix epoch.
    pub read_at: u64,
}

impl Table {
    /// Every cluster's capabilities, the clusters that serve one set
    /// sharing it. An entry whose set is missing is left out.
    pub fn observed(&self) -> BTreeMap<String, Arc<Observed>> {
        let sets: Vec<Arc<Vec<String>>> = self.sets.iter().cloned().map(Arc::new).collect();
        self.clusters
            .iter()
            .filter_map(|(name, s)| {
                Some((
                    name.clone(),
                    Arc::new(Observed {
                        kubernetes_version: s.kubernetes_version.clone(),
                        api_versions: sets.get(s.set)?.clone(),
                        read_at: s.read_at,
                    }),
                ))
            })
            .collect()
    }

    /// The table of `observed`, each distinct set once.
    pub fn of(observed: &BTreeMap<String, Arc<Observed>>) -> Table {
        let mut out = Table::default();
        for (name, o) in observed {
            out.add(name, o);
        }
        out
    }

    /// Adds cluster `name`, its set shared with an equal one already here.
    /// The bytes its set added (zero when shared).
    fn add(&mut self, name: &str, o: &Observed) -> usize {
        let (set, added) = match self.sets.iter().position(|s| *s == *o.api_versions) {
            Some(i) => (i, 0),
            None => {
                self.sets.push(o.api_versions.to_vec());
                (
                    self.sets.len() - 1,
                    o.api_versions.iter().map(|a| a.len() + 3).sum(),
                )
            }
        };
        self.clusters.insert(
            name.to_string(),
            Entry {
                kubernetes_version: o.kubernetes_version.clone(),
                set,
                read_at: o.read_at,
            },
        );
        added
    }
}

/// The most clusters one relay report names (more wait for the next one).
pub const MAX_REPORTED: usize = 1_000;

/// The most bytes of API sets one relay report carries.
pub const MAX_REPORTED_SET_BYTES: usize = 256 * 1024;

/// The table of `handed`'s clusters in `fleet` (those `below` says): what
/// a level above knows of a relay's subtree, handed down so that the relay
/// reports only what differs.
pub fn handed(fleet: &Fleet, below: impl Fn(&str) -> bool) -> Table {
    let mut out = Table::default();
    for c in &fleet.clusters {
        if let Some(o) = c.spec.observed.as_ref().filter(|_| below(c.name())) {
            out.add(c.name(), o);
        }
    }
    out
}

/// What a relay reports up: the clusters of `mine` (what it read, or
/// learned from relays below it) that `below` says are its subtree's and
/// whose version or API set is not what it was `handed`, in name order
/// and bounded ([`MAX_REPORTED`], [`MAX_REPORTED_SET_BYTES`]: the rest
/// waits for the next report, by when the level above has taken these).
/// `None` when nothing differs.
pub fn differences(
    handed: &Table,
    mine: &BTreeMap<String, Arc<Observed>>,
    below: impl Fn(&str) -> bool,
) -> Option<Table> {
    let known = handed.observed();
    let mut out = Table::default();
    let mut bytes = 0;
    for (name, o) in mine {
        if !below(name) {
            continue;
        }
        let same = known.get(name).is_some_and(|k| {
            k.kubernetes_version == o.kubernetes_version && k.api_versions == o.api_versions
        });
        if same {
            continue;
        }
        if out.clusters.len() == MAX_REPORTED {
            break;
        }
        // The first set always goes, so that one larger than the budget
        // is not left out for ever.
        let fits = out.sets.is_empty()
            || out.sets.iter().any(|s| *s == *o.api_versions)
            || bytes + o.api_versions.iter().map(|a| a.len() + 3).sum::<usize>()
                <= MAX_REPORTED_SET_BYTES;
        if fits {
            bytes += out.add(name, o);
        }
    }
    (!out.clusters.is_empty()).then_some(out)
}

/// Takes what a relay reported ([`differences`]) into `known`: only
/// clusters `allowed` says are below that relay, at most [`MAX_REPORTED`]
/// of them, each version and API version checked as a declared one is
/// (they reach Helm's command line), read times no later than `now`. A
/// relay's admin can so change how charts render for their own subtree
/// and for nothing else. What was refused, one line each.
pub fn learn(
    known: &mut BTreeMap<String, Arc<Observed>>,
    reported: &Table,
    allowed: impl Fn(&str) -> bool,
    now: u64,
) -> Vec<String> {
    let mut refused = Vec::new();
    // Clusters that serve one set keep sharing it: the distinct sets
    // already known, found by identity first.
    let mut seen = std::collections::HashSet::new();
    let mut shared: std::collections::HashMap<Vec<String>, Arc<Vec<String>>> = known
        .values()
        .filter(|o| seen.insert(Arc::as_ptr(&o.api_versions)))
        .map(|o| (o.api_versions.to_vec(), o.api_versions.clone()))
        .collect();
    let sets: Vec<Option<Arc<Vec<String>>>> = reported
        .sets
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.sort();
            s.dedup();
            let ok = s.iter().all(|a| api_version_problem(a).is_none());
            ok.then(|| {
                shared
                    .entry(s.clone())
                    .or_insert_with(|| Arc::new(s))
                    .clone()
            })
        })
        .collect();
    for (name, e) in reported.clusters.iter().take(MAX_REPORTED) {
        if !allowed(name) {
            refused.push(format!(
                "cluster {name:?}: not below the relay that reported it"
            ));
            continue;
        }
        if version_problem(&e.kubernetes_version).is_some() {
            refused.push(format!(
                "cluster {name:?}: {:?} is not a Kubernetes version",
                e.kubernetes_version
            ));
            continue;
        }
        let Some(set) = sets.get(e.set).cloned().flatten() else {
            refused.push(format!(
                "cluster {name:?}: its API set is missing or holds something that is not an API version"
            ));
            continue;
        };
        known.insert(
            name.clone(),
            Arc::new(Observed {
                kubernetes_version: e.kubernetes_version.clone(),
                api_versions: set,
                read_at: e.read_at.min(now),
            }),
        );
    }
    refused
}

/// Where a cluster's Kubernetes version comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// `spec.kubernetesVersion`.
    Declared,
    /// Read from the cluster at (seconds since the Unix epoch).
    Read(u64),
    /// Neither: [`DEFAULT_VERSION`].
    Default,
}

/// A cluster's capabilities as a render uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub version: String,
    pub from: From,
    /// Read from the cluster, if anything was.
    pub read: Option<Arc<Vec<String>>>,
    /// `spec.apiVersions`, added to what was read.
    pub declared: Vec<String>,
}

impl Capabilities {
    /// Every API version Helm is given, sorted and without repeats.
    pub fn api_versions(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .read
            .iter()
            .flat_map(|r| r.iter())
            .chain(&self.declared)
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// What tells two clusters' capabilities apart cheaply within a run:
    /// the version, the read set by identity (clusters that serve the same
    /// set share it) and the declared additions.
    pub fn key(&self) -> (String, usize, Vec<String>) {
        (
            self.version.clone(),
            self.read.as_ref().map_or(0, |r| Arc::as_ptr(r) as usize),
            self.declared.clone(),
        )
    }

    /// Says where the version came from, for `explain` (`now`: seconds
    /// since the Unix epoch).
    pub fn describe(&self, now: u64) -> String {
        let from = match self.from {
            From::Declared => "declared in spec.kubernetesVersion".to_string(),
            From::Read(at) => format!(
                "read from the cluster {} ago",
                humantime::format_duration(std::time::Duration::from_secs(now.saturating_sub(at)))
            ),
            From::Default => "canopy's default: neither declared nor read".to_string(),
        };
        let read = self.read.as_ref().map_or(0, |r| r.len());
        format!(
            "Kubernetes {} ({from}), {} API version(s) beyond Helm's own ({read} read, {} declared)",
            self.version,
            self.api_versions().len(),
            self.declared.len()
        )
    }
}

/// Gives each cluster of `fleet` what `known` holds of it
/// ([`crate::core::model::ClusterSpec::observed`]), copying a cluster the
/// loader still shares only when that changes.
pub fn give(fleet: &mut Fleet, known: &BTreeMap<String, Arc<Observed>>) {
    for c in fleet.clusters.iter_mut() {
        let want = known.get(c.name());
        let same = match (&c.spec.observed, want) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        };
        if !same {
            Arc::make_mut(c).spec.observed = want.cloned();
        }
    }
}

/// What `fleet`'s clusters were given ([`give`]): so that another revision
/// of the same fleet (`diff --base`, a rollback) renders for the same
/// clusters.
pub fn known(fleet: &Fleet) -> BTreeMap<String, Arc<Observed>> {
    fleet
        .clusters
        .iter()
        .filter_map(|c| Some((c.name().to_string(), c.spec.observed.clone()?)))
        .collect()
}

/// The capabilities a render that does not depend on them is given: the
/// default version, nothing added.
pub fn default_for_all() -> Capabilities {
    Capabilities {
        version: DEFAULT_VERSION.to_string(),
        from: From::Default,
        read: None,
        declared: Vec::new(),
    }
}

/// The capabilities of `c`.
pub fn of(c: &Cluster) -> Capabilities {
    let observed = c.spec.observed.as_deref();
    // A version the cluster reports that is none (a development build's
    // `v0.0.0-master+$Format:%H$`) renders for the default.
    let usable = observed.filter(|o| version_problem(&o.kubernetes_version).is_none());
    let (version, from) = match (&c.spec.kubernetes_version, usable) {
        (Some(v), _) => (v.clone(), From::Declared),
        (None, Some(o)) => (o.kubernetes_version.clone(), From::Read(o.read_at)),
        (None, None) => (DEFAULT_VERSION.to_string(), From::Default),
    };
    Capabilities {
        version,
        from,
        read: observed.map(|o| o.api_versions.clone()),
        declared: c.spec.api_versions.clone(),
    }
}

/// Why `v` cannot be a Kubernetes version, or `None`: `v` and three
/// numbers (`v1.34.2`), with a pre-release or build part allowed.
pub fn version_problem(v: &str) -> Option<&'static str> {
    let core = v.strip_prefix('v').unwrap_or("");
    let core = core.split(['-', '+']).next().unwrap_or("");
    let ok = v.starts_with('v')
        && core.split('.').count() == 3
        && core
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "v.-+".contains(c));
    (!ok).then_some("write v, then major.minor.patch, as the API server's /version says (v1.34.2)")
}

/// Why `api` cannot be an API version Helm is given, or `None`: a
/// group/version (`monitoring.coreos.com/v1`, or `v1` for the core
/// group), optionally with a kind (`monitoring.coreos.com/v1/ServiceMonitor`).
/// It reaches Helm's command line, which splits on commas.
pub fn api_version_problem(api: &str) -> Option<&'static str> {
    let parts: Vec<&str> = api.split('/').collect();
    let lower = |s: &str| {
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    };
    let kind = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && s.chars().all(|c| c.is_ascii_alphanumeric())
    };
    let ok = match parts.as_slice() {
        [v] => lower(v),
        // A group/version, or a core kind (`v1/Pod`, as discovery gives it).
        [g, v] => lower(g) && (lower(v) || kind(v)),
        [g, v, k] => lower(g) && lower(v) && kind(k),
        _ => false,
    };
    (!ok).then_some(
        "write group/version (monitoring.coreos.com/v1), optionally with a kind (monitoring.coreos.com/v1/ServiceMonitor)",
    )
}

/// The clusters whose reconciler is `level` (`None`: the root process; a
/// relay's name: its agent), by index in `fleet.clusters`: each cluster is
/// reconciled by its nearest relay ancestor, else by the root. A cluster in
/// a cycle (which validation refuses) is nobody's.
pub fn reconciled_by(fleet: &Fleet, level: Option<&str>) -> Vec<usize> {
    let by_name: BTreeMap<&str, &Cluster> =
        fleet.clusters.iter().map(|c| (c.name(), &**c)).collect();
    let reconciler = |c: &Cluster| -> Option<Option<&str>> {
        let mut at = c;
        for _ in 0..=by_name.len() {
            match at.spec.parent.as_deref().and_then(|p| by_name.get(p)) {
                Some(p) if p.spec.relay.is_some() => return Some(Some(p.name())),
                Some(p) => at = p,
                None => return Some(None),
            }
        }
        None
    };
    (0..fleet.clusters.len())
        .filter(|&i| reconciler(&fleet.clusters[i]) == Some(level))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(text: &str) -> Fleet {
        let (fleet, d) = crate::core::load::load_files(
            "f".into(),
            vec![("c.yaml".into(), text.as_bytes().to_vec())],
        );
        assert!(!d.has_errors(), "{d:?}");
        fleet
    }

    #[test]
    fn declared_wins_then_read_then_the_default() {
        let f = fleet(
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec:\n  kubernetesVersion: v1.34.2\n  apiVersions: [monitoring.coreos.com/v1]\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: b}\n",
        );
        let read = Arc::new(Observed {
            kubernetes_version: "v1.31.4".into(),
            api_versions: Arc::new(vec!["apps/v1".into(), "monitoring.coreos.com/v1".into()]),
            read_at: 100,
        });
        let mut a = (*f.clusters[0]).clone();
        let mut b = (*f.clusters[1]).clone();
        assert_eq!(of(&b).version, DEFAULT_VERSION);
        assert_eq!(of(&b).from, From::Default);
        a.spec.observed = Some(read.clone());
        b.spec.observed = Some(read);
        let (ca, cb) = (of(&a), of(&b));
        assert_eq!((ca.version.as_str(), ca.from), ("v1.34.2", From::Declared));
        assert_eq!((cb.version.as_str(), cb.from), ("v1.31.4", From::Read(100)));
        assert_eq!(
            ca.api_versions(),
            vec!["apps/v1", "monitoring.coreos.com/v1"]
        );
        assert!(
            cb.describe(160).contains("read from the cluster 1m ago"),
            "{}",
            cb.describe(160)
        );
        // The same read set is one key for both; a declared addition differs.
        assert_eq!(ca.key().1, cb.key().1);
        assert_ne!(ca.key(), cb.key());
    }

    #[test]
    fn declared_values_are_checked_as_what_helm_takes() {
        for ok in ["v1.34.2", "v1.30.0-eks-1", "v1.28.3+k3s1"] {
            assert_eq!(version_problem(ok), None, "{ok}");
        }
        for bad in [
            "1.34.2",
            "v1.34",
            "--kube-version=1",
            "v1.3x.0",
            "v1.34.2 ",
            "",
        ] {
            assert!(version_problem(bad).is_some(), "{bad}");
        }
        for ok in [
            "v1",
            "apps/v1",
            "monitoring.coreos.com/v1",
            "monitoring.coreos.com/v1/ServiceMonitor",
            "v1/Pod",
        ] {
            assert_eq!(api_version_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a,b/v1",
            "Apps/v1",
            "a/v1/service",
            "a/b/C/d",
            "x/v1 ",
        ] {
            assert!(api_version_problem(bad).is_some(), "{bad}");
        }
    }

    fn seen(version: &str, set: &[&str], at: u64) -> Arc<Observed> {
        Arc::new(Observed {
            kubernetes_version: version.into(),
            api_versions: Arc::new(set.iter().map(|s| s.to_string()).collect()),
            read_at: at,
        })
    }

    #[test]
    fn a_relay_reports_what_differs_from_its_handoff_and_no_more() {
        let handed = Table::of(
            &[
                ("a".to_string(), seen("v1.34.2", &["apps/v1"], 1)),
                ("b".to_string(), seen("v1.34.2", &["apps/v1"], 1)),
            ]
            .into(),
        );
        let mine: BTreeMap<String, Arc<Observed>> = [
            // Read again later, the same: nothing to say.
            ("a".to_string(), seen("v1.34.2", &["apps/v1"], 99)),
            // Upgraded.
            ("b".to_string(), seen("v1.35.0", &["apps/v1"], 99)),
            // Never handed.
            (
                "c".to_string(),
                seen("v1.33.1", &["apps/v1", "x.io/v1"], 99),
            ),
            // Not below this relay.
            ("up".to_string(), seen("v1.30.0", &["apps/v1"], 99)),
        ]
        .into();
        let out = differences(&handed, &mine, |c| c != "up").unwrap();
        assert_eq!(out.clusters.keys().collect::<Vec<_>>(), vec!["b", "c"]);
        assert_eq!(out.sets.len(), 2, "each set once");
        assert_eq!(out.observed()["c"], mine["c"]);
        assert!(differences(&Table::of(&mine), &mine, |_| true).is_none());

        // Bounded: as many clusters as fit, in name order; the rest wait.
        let many: BTreeMap<String, Arc<Observed>> = (0..MAX_REPORTED + 5)
            .map(|i| (format!("c{i:05}"), seen("v1.34.2", &["apps/v1"], 1)))
            .collect();
        let out = differences(&Table::default(), &many, |_| true).unwrap();
        assert_eq!(out.clusters.len(), MAX_REPORTED);
        assert!(out.clusters.contains_key("c00000"));
        let huge: Vec<String> = (0..MAX_REPORTED_SET_BYTES / 30)
            .map(|i| format!("g{i:07}.io/v1"))
            .collect();
        let big = |i: usize| {
            let mut set = huge.clone();
            set.push(format!("z{i}.io/v1"));
            Arc::new(Observed {
                kubernetes_version: "v1.34.2".into(),
                api_versions: Arc::new(set),
                read_at: 1,
            })
        };
        let two: BTreeMap<String, Arc<Observed>> =
            [("p".to_string(), big(1)), ("q".to_string(), big(2))].into();
        let out = differences(&Table::default(), &two, |_| true).unwrap();
        assert_eq!(out.clusters.keys().collect::<Vec<_>>(), vec!["p"]);
    }

    #[test]
    fn what_a_relay_reports_is_taken_only_for_its_own_subtree_and_only_when_well_formed() {
        let mut report = Table::of(
            &[
                (
                    "mine".to_string(),
                    seen("v1.34.2", &["apps/v1", "x.io/v1"], 50),
                ),
                ("later".to_string(), seen("v1.34.2", &["apps/v1"], 10_000)),
                ("elsewhere".to_string(), seen("v1.34.2", &["apps/v1"], 50)),
                (
                    "flag".to_string(),
                    seen("--post-renderer=/bin/sh", &["apps/v1"], 50),
                ),
                ("comma".to_string(), seen("v1.34.2", &["a/v1,b/v1"], 50)),
            ]
            .into(),
        );
        report.clusters.insert(
            "dangling".into(),
            Entry {
                kubernetes_version: "v1.34.2".into(),
                set: 99,
                read_at: 1,
            },
        );
        let mut known: BTreeMap<String, Arc<Observed>> =
            [("elsewhere".to_string(), seen("v1.30.0", &["apps/v1"], 1))].into();
        let refused = learn(&mut known, &report, |c| c != "elsewhere", 1_000);
        assert_eq!(refused.len(), 4, "{refused:?}");
        assert!(refused
            .iter()
            .any(|r| r.contains("\"elsewhere\": not below")));
        assert_eq!(known["elsewhere"].kubernetes_version, "v1.30.0");
        assert_eq!(known["mine"], seen("v1.34.2", &["apps/v1", "x.io/v1"], 50));
        assert_eq!(known["later"].read_at, 1_000, "no read time in the future");
        assert!(Arc::ptr_eq(
            &known["later"].api_versions,
            &known["elsewhere"].api_versions
        ));
        for c in ["flag", "comma", "dangling"] {
            assert!(!known.contains_key(c), "{c}");
        }
    }

    #[test]
    fn each_level_reconciles_up_to_the_next_relay() {
        let f = fleet(
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: hub}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: eu}\nspec: {parent: hub, relay: {}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: shop}\nspec: {parent: eu}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: till}\nspec: {parent: shop}\n",
        );
        let names =
            |idx: Vec<usize>| -> Vec<&str> { idx.iter().map(|&i| f.clusters[i].name()).collect() };
        assert_eq!(names(reconciled_by(&f, None)), vec!["eu", "hub"]);
        assert_eq!(names(reconciled_by(&f, Some("eu"))), vec!["shop", "till"]);
    }
}
