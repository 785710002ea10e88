//! `capabilities.json`: what the last run that read them found each
//! Kubernetes cluster to be (its version and the API versions it serves),
//! so that `render`, `validate`, `explain` and `diff --base` render Helm
//! charts for the clusters as that run did, and a cluster that cannot be
//! read keeps what it was last. Clusters mostly serve the same APIs, so
//! each distinct set is kept once. Replaced atomically.

pub use crate::core::capabilities::Table as CapabilitiesRecord;

impl super::Record for CapabilitiesRecord {
    const FILE: &'static str = "capabilities.json";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::capabilities::Observed;
    use crate::state::Record;
    use std::collections::BTreeMap;
    use std::sync::Arc;

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
