//! Desired vs live, per cluster (pure).
//!
//! Both sides are normalized first: fields an API server sets (status,
//! managedFields, resourceVersion, uid, creationTimestamp, generation,
//! selfLink) and the fields a workload's `ignoreDifferences` names are
//! removed, so only what canopy manages can show up as drift. Secret values
//! are masked jointly on both sides before any text is made.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::core::kinds;
use crate::core::model::{FieldRule, ObjectKey, ANNOTATION_PRUNE};

/// Metadata fields the server owns.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
];

/// Removes what the server sets, leaving what canopy manages.
pub fn normalize(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for f in SERVER_METADATA {
                meta.remove(*f);
            }
            for f in ["labels", "annotations"] {
                if meta
                    .get(f)
                    .is_some_and(|m| m.as_object().is_some_and(|o| o.is_empty()))
                {
                    meta.remove(f);
                }
            }
        }
    }
    v
}

/// Removes the fields the rules name for this object (a missing field is
/// fine: it simply has nothing to ignore).
pub fn strip_ignored(obj: &mut Value, key: &ObjectKey, rules: &[FieldRule]) {
    for r in rules.iter().filter(|r| r.matches(key)) {
        for ptr in &r.json_pointers {
            crate::core::pointer::remove(obj, ptr);
        }
    }
}

/// Whether a live object asks never to be pruned.
pub fn prune_disabled(live: &Value) -> bool {
    live.pointer(&format!(
        "/metadata/annotations/{}",
        ANNOTATION_PRUNE.replace('/', "~1")
    ))
    .and_then(Value::as_str)
        == Some("disabled")
}

/// One object's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Change {
    Create {
        key: ObjectKey,
        desired: Value,
    },
    Update {
        key: ObjectKey,
        live: Value,
        /// What canopy sends.
        desired: Value,
        /// What the server would hold after the apply (its dry run), when
        /// the backend can tell: the diff shows this against `live`, so
        /// defaulted fields and admission changes are not shown as drift.
        #[serde(skip_serializing_if = "Option::is_none")]
        merged: Option<Value>,
        /// The immutable fields this change touches, when the object asks
        /// to be replaced for them (`canopy.dev/replace: on-immutable`):
        /// the apply deletes it and creates it again. Empty: in place.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replace: Vec<String>,
    },
    Delete {
        key: ObjectKey,
        live: Value,
    },
}

impl Change {
    /// The object the change is about: what is written for a create or an
    /// update, what is deleted for a delete.
    pub fn object(&self) -> &Value {
        match self {
            Change::Create { desired, .. } | Change::Update { desired, .. } => desired,
            Change::Delete { live, .. } => live,
        }
    }

    pub fn key(&self) -> &ObjectKey {
        match self {
            Change::Create { key, .. }
            | Change::Update { key, .. }
            | Change::Delete { key, .. } => key,
        }
    }
}

/// What one cluster needs, with what was left alone and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterChanges {
    /// Creates and updates in apply order, then deletes in reverse order.
    pub changes: Vec<Change>,
    /// Owned objects not desired but kept: `canopy.dev/prune: disabled`, or
    /// prune turned off.
    pub kept: Vec<ObjectKey>,
    pub unchanged: usize,
    /// The workloads whose objects change (filled in before values are
    /// dropped): what a staged rollout asks of a cluster's outcome.
    #[serde(skip)]
    pub workloads: std::collections::BTreeSet<String>,
    /// Workloads not written on this cluster, and why: they wait for a
    /// workload they depend on that is not healthy there (`dependsOn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<(String, String)>,
}

impl ClusterChanges {
    /// Records in `workloads` the workload label of every changed object.
    pub fn note_workloads(&mut self) {
        for c in &self.changes {
            if let Some(w) = c
                .object()
                .pointer("/metadata/labels")
                .and_then(|l| l.get(crate::core::model::LABEL_WORKLOAD))
                .and_then(Value::as_str)
            {
                if !self.workloads.contains(w) {
                    self.workloads.insert(w.to_string());
                }
            }
        }
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for ch in &self.changes {
            match ch {
                Change::Create { .. } => c.0 += 1,
                Change::Update { .. } => c.1 += 1,
                Change::Delete { .. } => c.2 += 1,
            }
        }
        c
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Drops the objects, keeping each change's action and identity: what an
    /// apply report needs, at a fraction of the memory for a large fleet.
    pub fn forget_values(&mut self) {
        for c in &mut self.changes {
            match c {
                Change::Create { desired, .. } => *desired = Value::Null,
                Change::Update {
                    live,
                    desired,
                    merged,
                    ..
                } => {
                    *live = Value::Null;
                    *desired = Value::Null;
                    *merged = None;
                }
                Change::Delete { live, .. } => *live = Value::Null,
            }
        }
    }
}

/// A desired object with the ignore rules of its workload.
pub struct Desired<'a> {
    pub key: &'a ObjectKey,
    pub value: &'a Value,
    pub ignore: &'a [FieldRule],
    /// What the backend says applying `value` would leave.
    pub server: ServerView,
}

/// What applying a desired object would leave in the cluster, as far as
/// the backend knows before writing.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ServerView {
    /// Exactly what is sent (a store that keeps objects as written).
    #[default]
    AsSent,
    /// The live object, unchanged: the apply would be a no-op.
    SameAsLive,
    /// The server's dry-run result: `value` merged into the live object,
    /// with defaults and admission changes.
    Merged(Value),
    /// The server refuses the change in place for these immutable fields,
    /// and the object asks to be replaced: deleted and created again as
    /// `value`.
    Replace(Vec<String>),
}

/// Compares one cluster. `live` holds the objects canopy owns there (by its
/// ownership label); anything live and not desired is deleted when `prune`
/// is on, unless the object disables pruning.
pub fn diff_cluster(desired: &[Desired<'_>], live: &[Value], prune: bool) -> ClusterChanges {
    let mut live_by_key: BTreeMap<ObjectKey, &Value> = BTreeMap::new();
    for l in live {
        if let Some(k) = ObjectKey::of(l) {
            live_by_key.insert(k, l);
        }
    }
    let mut out = ClusterChanges::default();
    for d in desired {
        let want = match d.server {
            ServerView::AsSent => comparable(d.value, d.key, d.ignore),
            _ => Value::Null,
        };
        match live_by_key.remove(d.key) {
            None => out.changes.push(Change::Create {
                key: d.key.clone(),
                desired: d.value.clone(),
            }),
            Some(l) => {
                let same = match &d.server {
                    ServerView::SameAsLive => true,
                    ServerView::Replace(_) => false,
                    ServerView::AsSent => comparable(l, d.key, d.ignore) == want,
                    ServerView::Merged(m) => {
                        comparable(l, d.key, d.ignore) == comparable(m, d.key, d.ignore)
                    }
                };
                if same {
                    out.unchanged += 1;
                } else {
                    out.changes.push(Change::Update {
                        key: d.key.clone(),
                        live: l.clone(),
                        desired: d.value.clone(),
                        merged: match &d.server {
                            ServerView::Merged(m) => Some(m.clone()),
                            _ => None,
                        },
                        replace: match &d.server {
                            ServerView::Replace(fields) => fields.clone(),
                            _ => Vec::new(),
                        },
                    });
                }
            }
        }
    }
    out.changes
        .sort_by(|a, b| kinds::apply_order(a.key()).cmp(&kinds::apply_order(b.key())));
    let mut deletes: Vec<Change> = Vec::new();
    for (k, l) in live_by_key {
        if prune && !prune_disabled(l) {
            deletes.push(Change::Delete {
                key: k,
                live: l.clone(),
            });
        } else {
            out.kept.push(k);
        }
    }
    // Deletions in reverse apply order: workloads before their Namespace.
    deletes.sort_by(|a, b| kinds::apply_order(b.key()).cmp(&kinds::apply_order(a.key())));
    out.changes.extend(deletes);
    out
}

fn comparable(v: &Value, key: &ObjectKey, ignore: &[FieldRule]) -> Value {
    let mut n = normalize(v);
    strip_ignored(&mut n, key, ignore);
    n
}

/// What the two sides of a diff are called in its headers.
#[derive(Debug, Clone, Copy)]
pub struct Sides<'a> {
    pub old: &'a str,
    pub new: &'a str,
}

/// Live state against the rendered fleet.
pub const LIVE: Sides<'static> = Sides {
    old: "live",
    new: "desired",
};

/// A change as a unified diff of YAML, Secrets masked on both sides.
pub fn unified(change: &Change, context: usize, sides: Sides<'_>) -> String {
    let (mut before, mut after) = match change {
        Change::Create { desired, .. } => (Value::Null, normalize(desired)),
        Change::Update {
            live,
            desired,
            merged,
            ..
        } => (
            normalize(live),
            normalize(merged.as_ref().unwrap_or(desired)),
        ),
        Change::Delete { live, .. } => (normalize(live), Value::Null),
    };
    crate::core::mask::mask_secrets(&mut [&mut before, &mut after]);
    let text = |v: &Value| {
        if v.is_null() {
            String::new()
        } else {
            crate::core::yaml_out::to_yaml(v)
        }
    };
    let (a, b) = (text(&before), text(&after));
    let key = change.key().to_string();
    let replaced = match change {
        Change::Update { replace, .. } if !replace.is_empty() => format!(
            "# {key} is replaced (deleted, then created as below): the API server refuses to change {} in place\n",
            replace.join(", ")
        ),
        _ => String::new(),
    };
    replaced
        + &similar::TextDiff::from_lines(&a, &b)
            .unified_diff()
            .context_radius(context)
            .header(
                &format!("{} {key}", sides.old),
                &format!("{} {key}", sides.new),
            )
            .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: if kind == "Deployment" {
                "apps".into()
            } else {
                String::new()
            },
            kind: kind.into(),
            namespace: if kind == "Namespace" {
                String::new()
            } else {
                "shop".into()
            },
            name: name.into(),
        }
    }

    fn obj(kind: &str, name: &str, extra: Value) -> Value {
        let api = if kind == "Deployment" {
            "apps/v1"
        } else {
            "v1"
        };
        let mut v = json!({"apiVersion": api, "kind": kind, "metadata": {"name": name}});
        if kind != "Namespace" {
            v["metadata"]["namespace"] = json!("shop");
        }
        json_patch::merge(&mut v, &extra);
        v
    }

    #[test]
    fn server_fields_are_not_drift() {
        let desired = obj("Deployment", "web", json!({"spec": {"replicas": 3}}));
        let mut live = desired.clone();
        live["metadata"]["resourceVersion"] = json!("42");
        live["metadata"]["uid"] = json!("u");
        live["metadata"]["generation"] = json!(2);
        live["status"] = json!({"readyReplicas": 3});
        let k = key("Deployment", "web");
        let d = [Desired {
            key: &k,
            value: &desired,
            ignore: &[],
            server: ServerView::AsSent,
        }];
        let c = diff_cluster(&d, &[live], true);
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(c.unchanged, 1);
    }

    #[test]
    fn create_update_delete_in_order() {
        let ns = obj("Namespace", "shop", json!({}));
        let dep = obj("Deployment", "web", json!({"spec": {"replicas": 3}}));
        let cm_old = obj("ConfigMap", "old", json!({"data": {"a": "1"}}));
        let live_dep = obj("Deployment", "web", json!({"spec": {"replicas": 2}}));
        let (kns, kdep) = (key("Namespace", "shop"), key("Deployment", "web"));
        let d = [
            Desired {
                key: &kdep,
                value: &dep,
                ignore: &[],
                server: ServerView::AsSent,
            },
            Desired {
                key: &kns,
                value: &ns,
                ignore: &[],
                server: ServerView::AsSent,
            },
        ];
        let c = diff_cluster(&d, &[live_dep, cm_old], true);
        assert_eq!(c.counts(), (1, 1, 1));
        assert!(matches!(&c.changes[0], Change::Create { key, .. } if key.kind == "Namespace"));
        assert!(matches!(&c.changes[1], Change::Update { key, .. } if key.kind == "Deployment"));
        assert!(matches!(&c.changes[2], Change::Delete { key, .. } if key.name == "old"));
        let text = unified(&c.changes[1], 3, LIVE);
        assert!(
            text.contains("-  replicas: 2") && text.contains("+  replicas: 3"),
            "{text}"
        );
    }

    #[test]
    fn prune_off_and_prune_disabled_keep_objects() {
        let keep = obj(
            "ConfigMap",
            "keep",
            json!({"metadata": {"annotations": {"canopy.dev/prune": "disabled"}}}),
        );
        let gone = obj("ConfigMap", "gone", json!({}));
        let c = diff_cluster(&[], &[keep.clone(), gone.clone()], true);
        assert_eq!(c.counts(), (0, 0, 1));
        assert_eq!(c.kept, vec![key("ConfigMap", "keep")]);
        let c = diff_cluster(&[], &[keep, gone], false);
        assert_eq!(c.counts(), (0, 0, 0));
        assert_eq!(c.kept.len(), 2);
    }

    #[test]
    fn ignore_differences_hide_controller_fields() {
        let desired = obj(
            "Deployment",
            "web",
            json!({"spec": {"replicas": 3, "paused": false}}),
        );
        let live = obj(
            "Deployment",
            "web",
            json!({"spec": {"replicas": 9, "paused": false}}),
        );
        let k = key("Deployment", "web");
        let rules = [FieldRule {
            kind: Some("Deployment".into()),
            json_pointers: vec!["/spec/replicas".into()],
            ..FieldRule::default()
        }];
        let d = [Desired {
            key: &k,
            value: &desired,
            ignore: &rules,
            server: ServerView::AsSent,
        }];
        assert!(diff_cluster(&d, std::slice::from_ref(&live), true).is_empty());
        let d = [Desired {
            key: &k,
            value: &desired,
            ignore: &[],
            server: ServerView::AsSent,
        }];
        assert_eq!(diff_cluster(&d, &[live], true).counts(), (0, 1, 0));
    }

    #[test]
    fn secrets_are_masked_in_diffs() {
        let live = obj(
            "Secret",
            "s",
            json!({"data": {"token": "b2xk", "same": "c2FtZQ=="}}),
        );
        let desired = obj(
            "Secret",
            "s",
            json!({"data": {"token": "bmV3", "same": "c2FtZQ=="}}),
        );
        let change = Change::Update {
            key: key("Secret", "s"),
            live,
            desired,
            merged: None,
            replace: Vec::new(),
        };
        let text = unified(&change, 3, LIVE);
        for secret in ["b2xk", "bmV3", "c2FtZQ=="] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            text.contains("-  token: +") && text.contains("+  token: +"),
            "{text}"
        );
        assert!(
            !text.contains("-  same:"),
            "an unchanged value shows no change: {text}"
        );
    }
}
