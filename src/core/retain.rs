//! Retained fields (pure): what a member cluster owns once an object exists.
//!
//! A workload's `spec.retain` names fields, by JSON pointer, that something in
//! the member cluster changes on purpose: replicas under an autoscaler, a
//! sidecar a webhook injects. Simply leaving such a field out of an apply
//! would be wrong under server-side apply: a field canopy set on create and
//! no longer sends is *removed* by the server (a Deployment would fall back
//! to one replica). So for an object that already exists, canopy sends the
//! live value instead: the apply keeps it, and the diff has nothing to report.
//! For an object being created, the rendered value is sent as it is.

use serde_json::Value;

use crate::core::model::{FieldRule, ObjectKey};
use crate::core::pointer;

/// Makes `desired` carry `live`'s value at every retained pointer of the
/// rules that match `key`; a pointer `live` does not have is removed from
/// `desired` (the cluster dropped it, and canopy must not put it back).
pub fn retain(desired: &mut Value, live: &Value, key: &ObjectKey, rules: &[FieldRule]) {
    for rule in rules.iter().filter(|r| r.matches(key)) {
        for ptr in &rule.json_pointers {
            match live.pointer(ptr) {
                Some(v) => pointer::set(desired, ptr, v.clone()),
                None => pointer::remove(desired, ptr),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> ObjectKey {
        ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
        }
    }

    fn rule(kind: &str, ptrs: &[&str]) -> FieldRule {
        FieldRule {
            kind: Some(kind.into()),
            json_pointers: ptrs.iter().map(|p| p.to_string()).collect(),
            ..FieldRule::default()
        }
    }

    #[test]
    fn live_value_wins_for_an_existing_object() {
        let mut desired = json!({"spec": {"replicas": 3, "template": {}}});
        let live = json!({"spec": {"replicas": 7}});
        retain(
            &mut desired,
            &live,
            &deploy(),
            &[rule("Deployment", &["/spec/replicas"])],
        );
        assert_eq!(desired["spec"]["replicas"], json!(7));
        assert_eq!(desired["spec"]["template"], json!({}));
    }

    #[test]
    fn a_field_the_cluster_dropped_is_not_put_back() {
        let mut desired = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}});
        let live = json!({"metadata": {"annotations": {"b": "2"}}});
        retain(
            &mut desired,
            &live,
            &deploy(),
            &[rule("Deployment", &["/metadata/annotations/a"])],
        );
        assert_eq!(desired, json!({"metadata": {"annotations": {"b": "2"}}}));
    }

    #[test]
    fn rules_for_other_kinds_do_nothing() {
        let mut desired = json!({"spec": {"replicas": 3}});
        let before = desired.clone();
        retain(
            &mut desired,
            &json!({"spec": {"replicas": 9}}),
            &deploy(),
            &[rule("StatefulSet", &["/spec/replicas"])],
        );
        assert_eq!(desired, before);
    }
}
