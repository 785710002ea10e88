//! `capabilities.json`: what the last run that read them found each
//! Kubernetes cluster to be (its version and the API versions it serves),
//! so that `render`, `validate`, `explain` and `diff --base` render Helm
//! charts for the clusters as that run did, and a cluster that cannot be
//! read keeps what it was last. Clusters mostly serve the same APIs, so
//! each distinct set is kept once. Replaced atomically.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::capabilities::Observed;

/// The clusters' capabilities, each API set once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapabilitiesRecord {
    /// Distinct API sets, each sorted.
    #[serde(default)]
    pub sets: Vec<Vec<String>>,
    #[serde(default)]
    pub clusters: BTreeMap<String, Seen>,
}

/// One cluster as it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub kubernetes_version: String,
    /// Its API set, an index into [`CapabilitiesRecord::sets`].
    pub set: usize,
    /// Seconds since the Unix epoch.
    pub read_at: u64,
}

impl super::Record for CapabilitiesRecord {
    const FILE: &'static str = "capabilities.json";
}

impl CapabilitiesRecord {
    /// Every cluster's capabilities, the clusters that serve one set
    /// sharing it.
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

    /// The record of `observed`, each distinct set once.
    pub fn of(observed: &BTreeMap<String, Arc<Observed>>) -> CapabilitiesRecord {
        let mut index: BTreeMap<&[String], usize> = BTreeMap::new();
        let mut out = CapabilitiesRecord::default();
        for (name, o) in observed {
            let n = index.len();
            let set = *index.entry(o.api_versions.as_slice()).or_insert(n);
            if set == out.sets.len() {
                out.sets.push(o.api_versions.to_vec());
            }
            out.clusters.insert(
                name.clone(),
                Seen {
                    kubernetes_version: o.kubernetes_version.clone(),
                    set,
                    read_at: o.read_at,
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Record;

    #[test]
    fn each_set_is_kept_once_and_shared_again_when_read() {
        let set = |v: &[&str]| Arc::new(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (a, b) = (
            set(&["apps/v1", "v1"]),
            set(&["apps/v1", "monitoring.coreos.com/v1", "v1"]),
        );
        let seen = |v: &str, s: &Arc<Vec<String>>| {
            Arc::new(Observed {
                kubernetes_version: v.into(),
                api_versions: s.clone(),
                read_at: 7,
            })
        };
        let observed: BTreeMap<String, Arc<Observed>> = [
            ("eu".to_string(), seen("v1.34.2", &a)),
            ("us".to_string(), seen("v1.34.2", &b)),
            ("asia".to_string(), seen("v1.33.1", &a)),
        ]
        .into();
        let record = CapabilitiesRecord::of(&observed);
        assert_eq!(record.sets.len(), 2);
        let dir = tempfile::tempdir().unwrap();
        record.save(dir.path()).unwrap();
        let back = CapabilitiesRecord::load(dir.path()).unwrap().observed();
        assert_eq!(back, observed);
        assert!(Arc::ptr_eq(
            &back["eu"].api_versions,
            &back["asia"].api_versions
        ));
    }
}
