//! Whether a server-side apply would change nothing (pure).
//!
//! A re-apply of an unchanged fleet should cost one list per kind, not one
//! request per object. Two facts, both read from the live object, make an
//! apply by field manager `canopy` a no-op:
//! 1. every field canopy sends already has that value live (the sent object
//!    is a *subset* of the live one; lists must have the same length), and
//! 2. every field canopy owns live (its `Apply` entry in `managedFields`) is
//!    still sent, since a field canopy owns and stops sending is removed.
//!
//! Anything this cannot prove — a quantity written `0.5` that the server
//! keeps as `500m`, a list key the server defaulted — answers "not a no-op",
//! and the caller asks the server with a dry run. So this only ever saves
//! requests; it never hides a change.

use serde_json::{Map, Value};

/// True when applying `desired` as `manager` would leave `live` unchanged.
pub fn apply_is_noop(desired: &Value, live: &Value, manager: &str) -> bool {
    let desired = &with_port_protocols(desired);
    if !subset(desired, live) {
        return false;
    }
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return false;
    };
    let owned = entries.iter().find(|e| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
    });
    match owned
        .and_then(|e| e.get("fieldsV1"))
        .and_then(Value::as_object)
    {
        Some(fields) => covered(fields, desired),
        None => false,
    }
}

/// The one defaulted field that is part of a list key in common manifests:
/// a container's or a Service's port without `protocol` is `TCP`, and the
/// server keys the port by both. Filling it in lets an unchanged Deployment
/// or Service be proven unchanged; anything else left out stays left out
/// (and a wrong guess only costs a dry run: the subset test then fails).
pub(super) fn with_port_protocols(v: &Value) -> Value {
    let mut v = v.clone();
    fill_protocols(&mut v);
    v
}

fn fill_protocols(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "ports" {
                    for p in child.as_array_mut().into_iter().flatten() {
                        if let Some(p) = p.as_object_mut() {
                            let numbered = p.get("containerPort").is_some_and(Value::is_u64)
                                || p.get("port").is_some_and(Value::is_u64);
                            if numbered && !p.contains_key("protocol") {
                                p.insert("protocol".into(), Value::String("TCP".into()));
                            }
                        }
                    }
                } else {
                    fill_protocols(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(fill_protocols),
        _ => {}
    }
}

/// `small` has nothing `big` lacks: equal scalars, objects whose every key
/// is a subset, lists of equal length whose elements are subsets in order.
fn subset(small: &Value, big: &Value) -> bool {
    match (small, big) {
        (Value::Object(s), Value::Object(b)) => s
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|bv| subset(v, bv))),
        (Value::Array(s), Value::Array(b)) => {
            s.len() == b.len() && s.iter().zip(b).all(|(x, y)| subset(x, y))
        }
        _ => small == big,
    }
}

/// Every path in a `fieldsV1` set exists in `obj`. Keys: `f:<field>`,
/// `k:<json key fields>` (an element of a keyed list), `v:<json value>` (an
/// element of a set), `i:<index>`, and `.` (the node itself).
fn covered(fields: &Map<String, Value>, obj: &Value) -> bool {
    fields.iter().all(|(k, sub)| {
        if k == "." {
            return true;
        }
        let child = if let Some(name) = k.strip_prefix("f:") {
            obj.get(name)
        } else if let Some(key) = k.strip_prefix("k:") {
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else {
                return false;
            };
            obj.as_array().and_then(|items| {
                items
                    .iter()
                    .find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
            })
        } else if let Some(v) = k.strip_prefix("v:") {
            let Ok(v) = serde_json::from_str::<Value>(v) else {
                return false;
            };
            obj.as_array()
                .and_then(|items| items.iter().find(|item| **item == v))
        } else if let Some(i) = k.strip_prefix("i:") {
            i.parse::<usize>()
                .ok()
                .and_then(|i| obj.as_array().and_then(|a| a.get(i)))
        } else {
            None
        };
        match (child, sub.as_object()) {
            (None, _) => false,
            (Some(c), Some(sub)) => covered(sub, c),
            (Some(_), None) => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(fields: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7",
                "labels": {"app": "web"},
                "managedFields": [
                    {"manager": "kube-controller-manager", "operation": "Update",
                     "subresource": "status", "fieldsV1": {"f:status": {}}},
                    {"manager": "canopy", "operation": "Apply", "fieldsV1": fields}
                ]},
            "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate"},
                "template": {"spec": {"containers": [
                    {"name": "app", "image": "web:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
                ]}}}
        })
    }

    fn canopy_fields() -> Value {
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:image": {}}
            }}}}
        })
    }

    fn desired() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "app", "image": "web:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
            ]}}}
        })
    }

    #[test]
    fn an_unchanged_object_is_a_noop() {
        assert!(apply_is_noop(&desired(), &live(canopy_fields()), "canopy"));
    }

    #[test]
    fn a_changed_value_is_not() {
        let mut d = desired();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        assert!(!apply_is_noop(&d, &live(canopy_fields()), "canopy"));
    }

    #[test]
    fn a_field_canopy_owns_and_no_longer_sends_is_not() {
        let mut d = desired();
        d["metadata"]["labels"] = json!({});
        d["metadata"].as_object_mut().unwrap().remove("labels");
        assert!(!apply_is_noop(&d, &live(canopy_fields()), "canopy"));
    }

    #[test]
    fn without_canopy_ownership_it_is_not() {
        assert!(!apply_is_noop(
            &desired(),
            &live(canopy_fields()),
            "someone-else"
        ));
        let mut l = live(canopy_fields());
        l["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert!(!apply_is_noop(&desired(), &l, "canopy"));
    }

    #[test]
    fn a_value_the_server_rewrites_is_left_to_the_server() {
        // 0.5 CPU is kept as "500m": not provably equal, so not a no-op.
        let mut d = desired();
        d["spec"]["replicas"] = json!(3.0);
        assert!(!apply_is_noop(&d, &live(canopy_fields()), "canopy"));
    }

    #[test]
    fn a_port_without_protocol_is_keyed_as_tcp() {
        let mut fields = canopy_fields();
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]
            ["f:ports"] = json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}});
        let mut d = desired();
        d["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
        assert!(apply_is_noop(&d, &live(fields.clone()), "canopy"));
        // Someone switched the port to UDP: not provably unchanged.
        let mut l = live(fields);
        l["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("UDP");
        assert!(!apply_is_noop(&d, &l, "canopy"));
    }

    #[test]
    fn list_lengths_must_match() {
        let mut d = desired();
        d["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar"}));
        assert!(!apply_is_noop(&d, &live(canopy_fields()), "canopy"));
    }
}
