//! `settled.json`: per cluster of the local backend, the render it was last
//! found in sync with and the state file it was in sync as.
//!
//! A one-shot `apply` or `diff` of a large fleet where almost nothing
//! changed spends its time rendering every cluster and parsing every state
//! file only to find them equal. An entry here lets it skip both for a
//! cluster whose render inputs hash to the same `key` (its render
//! fingerprint, the canopy build and the prune setting) and whose state file
//! still hashes to `state`: the render is a pure function of the key, and the
//! file is byte for byte what was found in sync, so a diff would find
//! nothing. Anything else that touches the file (a hand edit, a fault
//! switch, another writer) changes its hash, and the cluster is rendered
//! and diffed as before. The record is a cache: deleting it costs one full
//! run, and one that does not parse is warned about and started afresh.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StateError;

/// By cluster name, its entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    #[serde(default)]
    pub clusters: BTreeMap<String, Entry>,
}

/// One cluster found in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What its render read, hashed with the build and the prune setting.
    pub key: u64,
    /// The hash of its state file's bytes as found in sync (or written).
    pub state: u64,
    /// Its desired objects, all unchanged then: what a report of the
    /// cluster counts as unchanged.
    pub objects: usize,
}

impl super::Record for Settled {
    const FILE: &'static str = "settled.json";

    /// As compact JSON (an entry per cluster: at 100,000 clusters pretty
    /// printing triples its size).
    fn save(&self, dir: &Path) -> Result<(), StateError> {
        super::replace(
            dir,
            Self::FILE,
            &serde_json::to_vec(self).expect("the record serializes"),
        )
    }
}

impl Settled {
    /// The entry of `cluster` if it was found in sync at `key` with a state
    /// file of hash `state`.
    pub fn holds(&self, cluster: &str, key: u64, state: u64) -> Option<&Entry> {
        self.clusters
            .get(cluster)
            .filter(|e| e.key == key && e.state == state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Record;

    #[test]
    fn saved_and_loaded_whole_and_an_entry_holds_only_for_its_key_and_state() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settled::load(dir.path()).unwrap(), Settled::default());
        let mut s = Settled::default();
        s.clusters.insert(
            "eu-1".into(),
            Entry {
                key: u64::MAX,
                state: 7,
                objects: 3,
            },
        );
        s.save(dir.path()).unwrap();
        let back = Settled::load(dir.path()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.holds("eu-1", u64::MAX, 7).map(|e| e.objects), Some(3));
        assert!(back.holds("eu-1", u64::MAX, 8).is_none());
        assert!(back.holds("eu-1", 1, 7).is_none());
        assert!(back.holds("us-1", u64::MAX, 7).is_none());
    }
}
