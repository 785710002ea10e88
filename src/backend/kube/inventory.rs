//! The inventory canopy keeps in each cluster (pure encoding).
//!
//! Prune lists owned objects kind by kind, so it must know every kind canopy
//! ever applied there — including kinds no workload renders any more, whose
//! objects are exactly the ones to delete. Like kapp's app ConfigMap, the
//! list lives in the cluster itself (ConfigMap `inventory-<fleet>` in
//! namespace `canopy-system`), next to what was applied last. It is written
//! *before* any object of a new kind, so a crash mid-apply cannot leave an
//! owned object of a kind prune would not look at.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::backend::{ApplyMeta, TypeRef};

pub const NAMESPACE: &str = "canopy-system";

/// The ConfigMap name for a fleet.
pub fn name(fleet: &str) -> String {
    format!("inventory-{fleet}")
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub kinds: BTreeSet<TypeRef>,
    pub applied: Option<ApplyMeta>,
}

impl Inventory {
    /// Reads the ConfigMap; unknown or missing entries read as empty, so an
    /// inventory written by an older canopy still loads.
    pub fn from_configmap(cm: &Value) -> Inventory {
        let data = |k: &str| cm.pointer(&format!("/data/{k}")).and_then(Value::as_str);
        let kinds = data("kinds")
            .unwrap_or("")
            .lines()
            .filter_map(|l| {
                let (api_version, kind) = l.trim().split_once(' ')?;
                Some(TypeRef {
                    api_version: api_version.to_string(),
                    kind: kind.to_string(),
                })
            })
            .collect();
        let applied = match (data("revision"), data("appliedAt")) {
            (Some(r), Some(a)) => Some(ApplyMeta {
                revision: r.to_string(),
                at: a.to_string(),
                impersonate: Default::default(),
            }),
            _ => None,
        };
        Inventory { kinds, applied }
    }

    /// The ConfigMap to apply. It carries no `canopy.dev/fleet` label: it is
    /// canopy's bookkeeping, not an object prune may delete.
    pub fn to_configmap(&self, fleet: &str) -> Value {
        let kinds: String = self.kinds.iter().map(|k| format!("{k}\n")).collect();
        let mut data = json!({ "kinds": kinds });
        if let Some(m) = &self.applied {
            data["revision"] = json!(m.revision);
            data["appliedAt"] = json!(m.at);
        }
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name(fleet),
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/managed-by": "canopy", "canopy.dev/inventory": fleet},
            },
            "data": data,
        })
    }
}

/// The namespace the inventory lives in.
pub fn namespace_object() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "canopy"}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let inv = Inventory {
            kinds: [("apps/v1", "Deployment"), ("v1", "ConfigMap")]
                .into_iter()
                .map(|(a, k)| TypeRef {
                    api_version: a.into(),
                    kind: k.into(),
                })
                .collect(),
            applied: Some(ApplyMeta {
                revision: "abc".into(),
                at: "2026-11-22T10:00:00Z".into(),
                impersonate: Default::default(),
            }),
        };
        let cm = inv.to_configmap("shop");
        assert_eq!(cm["metadata"]["name"], "inventory-shop");
        assert!(cm.pointer("/metadata/labels/canopy.dev~1fleet").is_none());
        assert_eq!(Inventory::from_configmap(&cm), inv);
        assert_eq!(Inventory::from_configmap(&json!({})), Inventory::default());
    }
}
