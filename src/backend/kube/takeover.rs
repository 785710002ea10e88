//! Taking fields back from imperative edits (pure).
//!
//! Server-side apply removes a field only when its applier owns it and
//! stops sending it. A field an imperative edit wrote (`kubectl edit`,
//! `patch`, `scale`, `set`, a client-side `kubectl apply`: operation
//! `Update`) is owned by that edit's manager, so apply leaves it in place.
//! For a plain field that is a conflict canopy can force; for a new item
//! of a keyed list it is no conflict at all: a Service port patched from
//! 6379 to 6380 keeps the 6380 item (owned by `kubectl-patch`) beside the
//! 6379 item canopy sends, and the merged Service is invalid. The same goes
//! for a renamed container or env var.
//!
//! So before it applies, canopy moves the `managedFields` entries of
//! imperative managers into its own `Apply` entry ([`takeover`]), as Flux
//! does: what an edit wrote is then canopy's, and what canopy does not send
//! is removed by the apply. A real other applier (operation `Apply`) keeps
//! its fields and still conflicts. Controllers' status and other managers'
//! `Update`s are left alone: only managers named `kubectl…` and the server's
//! `before-first-apply` count as imperative.
//!
//! A dry run cannot take ownership first, so the preview `diff` shows is
//! the dry run's result with the fields the takeover would remove taken out
//! ([`without_imperative`]).

use serde_json::{Map, Value};

/// Whether a `managedFields` entry is an imperative edit's.
fn imperative(entry: &Value) -> bool {
    let manager = entry.get("manager").and_then(Value::as_str).unwrap_or("");
    let operation = entry.get("operation").and_then(Value::as_str);
    let subresource = entry
        .get("subresource")
        .and_then(Value::as_str)
        .unwrap_or("");
    operation == Some("Update")
        && (manager.starts_with("kubectl") || manager == "before-first-apply")
        && (subresource.is_empty() || subresource == "scale")
}

fn entries(obj: &Value) -> &[Value] {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Whether `live` holds fields an imperative edit owns.
pub fn has_imperative(live: &Value) -> bool {
    entries(live).iter().any(imperative)
}

/// The union of two `fieldsV1` trees.
fn union(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => union(a, b),
            (None, v) => {
                into.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// `live`'s `managedFields` with every imperative entry's fields moved
/// into `manager`'s `Apply` entry for `api_version` (made if there is
/// none, stamped `now`); `None` when there is no imperative entry.
pub fn takeover(live: &Value, manager: &str, api_version: &str, now: &str) -> Option<Vec<Value>> {
    let all = entries(live);
    if !all.iter().any(imperative) {
        return None;
    }
    let mut taken = Map::new();
    for e in all.iter().filter(|e| imperative(e)) {
        if let Some(f) = e.get("fieldsV1").and_then(Value::as_object) {
            union(&mut taken, f);
        }
    }
    let mut out: Vec<Value> = all.iter().filter(|e| !imperative(e)).cloned().collect();
    let mine = out.iter_mut().find(|e| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("apiVersion").and_then(Value::as_str) == Some(api_version)
            && e.get("subresource")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
    });
    match mine {
        Some(e) => {
            let fields = e
                .as_object_mut()
                .expect("an entry is an object")
                .entry("fieldsV1")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(f) = fields {
                union(f, &taken);
            }
            e["time"] = Value::from(now);
        }
        None => out.push(serde_json::json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": taken,
        })),
    }
    Some(out)
}

/// `a` minus what `b` holds: the fields of `a` that no field of `b`
/// shares.
fn minus(a: &Map<String, Value>, b: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in a {
        match (v, b.get(k)) {
            (_, None) => {
                out.insert(k.clone(), v.clone());
            }
            // Owned by `b` too (or in part): shared, so it stays.
            (Value::Object(av), Some(Value::Object(bv))) if !av.is_empty() && !bv.is_empty() => {
                let mut rest = minus(av, bv);
                // `b` holds part of this node, so the node itself stays:
                // only what is `a`'s alone below it goes.
                rest.remove(".");
                if !rest.is_empty() {
                    out.insert(k.clone(), Value::Object(rest));
                }
            }
            _ => {}
        }
    }
    out
}

/// Removes the fields of the `fieldsV1` tree `gone` from `v`.
fn remove(v: &mut Value, gone: &Map<String, Value>) {
    for (k, sub) in gone {
        if k == "." {
            continue;
        }
        let whole = sub
            .as_object()
            .is_none_or(|m| m.is_empty() || m.contains_key("."));
        let empty = Map::new();
        let sub = sub.as_object().unwrap_or(&empty);
        if let Some(name) = k.strip_prefix("f:") {
            if let Value::Object(m) = v {
                if whole {
                    m.remove(name);
                } else if let Some(child) = m.get_mut(name) {
                    remove(child, sub);
                }
            }
        } else if let Some(list) = v.as_array_mut() {
            let Some(at) = list_item(list, k) else {
                continue;
            };
            if whole {
                list.remove(at);
            } else {
                remove(&mut list[at], sub);
            }
        }
    }
}

/// The index of the list item a `fieldsV1` key names: `k:{…}` (the item
/// whose fields equal the key's), `v:…` (the item equal to the value), or
/// `i:N`.
fn list_item(list: &[Value], key: &str) -> Option<usize> {
    if let Some(json) = key.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(json).ok()?;
        return list.iter().position(|item| {
            want.iter()
                .all(|(f, val)| item.get(f).is_some_and(|got| same(got, val)))
        });
    }
    if let Some(json) = key.strip_prefix("v:") {
        let want: Value = serde_json::from_str(json).ok()?;
        return list.iter().position(|item| same(item, &want));
    }
    key.strip_prefix("i:")?
        .parse::<usize>()
        .ok()
        .filter(|&i| i < list.len())
}

/// Equal as JSON values, with numbers compared by value (`6380` and
/// `6380.0` are one port).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// What an apply after [`takeover`] leaves, from the dry run's result
/// `merged` (an apply without the takeover): the fields only imperative
/// managers hold there are removed, as canopy would own them and not send
/// them. `merged` as it is when no imperative manager holds a field.
pub fn without_imperative(merged: &Value) -> Value {
    let all = entries(merged);
    let mut theirs = Map::new();
    let mut others = Map::new();
    for e in all {
        let Some(f) = e.get("fieldsV1").and_then(Value::as_object) else {
            continue;
        };
        let subresource = e.get("subresource").and_then(Value::as_str).unwrap_or("");
        if imperative(e) {
            union(&mut theirs, f);
        } else if subresource.is_empty() {
            union(&mut others, f);
        }
    }
    if theirs.is_empty() {
        return merged.clone();
    }
    let gone = minus(&theirs, &others);
    let mut out = merged.clone();
    remove(&mut out, &gone);
    out
}

/// The preview when the server refuses the dry run's merged object (a
/// Service holding the patched port beside canopy's, both named alike, is
/// invalid): `live` without what only imperative edits hold, with
/// `desired` laid over it. A keyed list keeps each live item that an item
/// sent has the key of (so defaulted fields stay), matched by the keys
/// `managedFields` records for that list (else by `name`, else by place).
/// An approximation of what the server would merge, used only to show the
/// change; the apply itself is the server's.
pub fn laid_over(live: &Value, desired: &Value) -> Value {
    let mut base = without_imperative(live);
    let mut fields = Map::new();
    for e in entries(live) {
        if let Some(f) = e.get("fieldsV1").and_then(Value::as_object) {
            union(&mut fields, f);
        }
    }
    if let Some(m) = base.as_object_mut() {
        m.remove("status");
    }
    overlay(&mut base, desired, Some(&fields));
    base
}

fn overlay(base: &mut Value, d: &Value, fields: Option<&Map<String, Value>>) {
    match (base, d) {
        (Value::Object(b), Value::Object(dm)) => {
            for (k, dv) in dm {
                let sub = fields
                    .and_then(|f| f.get(&format!("f:{k}")))
                    .and_then(Value::as_object);
                match b.get_mut(k) {
                    Some(bv) => overlay(bv, dv, sub),
                    None => {
                        b.insert(k.clone(), dv.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(dl)) => {
            let keys: Vec<String> = fields
                .into_iter()
                .flat_map(|f| f.keys())
                .filter_map(|k| k.strip_prefix("k:"))
                .filter_map(|j| serde_json::from_str::<Map<String, Value>>(j).ok())
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .next()
                .unwrap_or_default();
            let mut out = Vec::with_capacity(dl.len());
            for (i, item) in dl.iter().enumerate() {
                let matches = |cand: &Value| {
                    let named: Vec<&String> = keys
                        .iter()
                        .filter(|k| item.get(k.as_str()).is_some())
                        .collect();
                    if !named.is_empty() {
                        named.iter().all(|k| {
                            cand.get(k.as_str())
                                .is_some_and(|v| same(v, &item[k.as_str()]))
                        })
                    } else if let Some(n) = item.get("name") {
                        cand.get("name") == Some(n)
                    } else {
                        false
                    }
                };
                let found = match b.iter().position(matches) {
                    Some(at) => Some(at),
                    None if keys.is_empty() && item.get("name").is_none() && i < b.len() => Some(i),
                    None => None,
                };
                match found {
                    Some(at) => {
                        let mut m = b[at].clone();
                        overlay(&mut m, item, None);
                        out.push(m);
                    }
                    None => out.push(item.clone()),
                }
            }
            *b = out;
        }
        (b, d) => *b = d.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Service as the server holds it after `kubectl patch` moved its
    /// port from 6379 to 6380 and canopy applied 6379 again: both items,
    /// the 6380 one owned by `kubectl-patch` alone.
    fn merged_service() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "redis",
                "annotations": {"team": "cache"},
                "managedFields": [
                    {
                        "manager": "canopy", "operation": "Apply", "apiVersion": "v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:ports": {
                            "k:{\"port\":6379,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}}
                        }, "f:selector": {}}}
                    },
                    {
                        "manager": "kubectl-patch", "operation": "Update", "apiVersion": "v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:ports": {
                            "k:{\"port\":6380,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}}
                        }}}
                    },
                    {
                        "manager": "kubectl-annotate", "operation": "Update", "apiVersion": "v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:team": {}}}}
                    },
                    {
                        "manager": "helm", "operation": "Apply", "apiVersion": "v1",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:selector": {}}}
                    },
                    {
                        "manager": "kube-controller-manager", "operation": "Update",
                        "apiVersion": "v1", "subresource": "status",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:status": {"f:loadBalancer": {}}}
                    }
                ]
            },
            "spec": {
                "selector": {"app": "redis"},
                "ports": [
                    {"name": "redis", "port": 6379, "protocol": "TCP", "targetPort": 6379},
                    {"name": "redis", "port": 6380, "protocol": "TCP", "targetPort": 6380}
                ]
            },
            "status": {"loadBalancer": {}}
        })
    }

    #[test]
    fn only_kubectl_updates_are_imperative() {
        let m = merged_service();
        let managers: Vec<&str> = entries(&m)
            .iter()
            .filter(|e| imperative(e))
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["kubectl-patch", "kubectl-annotate"]);
        assert!(has_imperative(&m));
    }

    #[test]
    fn the_takeover_moves_imperative_fields_into_canopys_entry() {
        let m = merged_service();
        let out = takeover(&m, "canopy", "v1", "2026-11-30T00:00:00Z").unwrap();
        let names: Vec<&str> = out.iter().map(|e| e["manager"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["canopy", "helm", "kube-controller-manager"]);
        let ports = &out[0]["fieldsV1"]["f:spec"]["f:ports"];
        assert!(ports
            .get("k:{\"port\":6379,\"protocol\":\"TCP\"}")
            .is_some());
        assert!(ports
            .get("k:{\"port\":6380,\"protocol\":\"TCP\"}")
            .is_some());
        assert!(out[0]["fieldsV1"]["f:metadata"]["f:annotations"]["f:team"].is_object());
        assert_eq!(out[0]["time"], "2026-11-30T00:00:00Z");
        // Without an imperative entry: nothing to do.
        let mut clean = m.clone();
        clean["metadata"]["managedFields"] = json!([m["metadata"]["managedFields"][0]]);
        assert_eq!(takeover(&clean, "canopy", "v1", "t"), None);
        // An object canopy never applied gets an entry of its own.
        let mut adopted = m.clone();
        adopted["metadata"]["managedFields"] = json!([m["metadata"]["managedFields"][1]]);
        let out = takeover(&adopted, "canopy", "v1", "t").unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["manager"], "canopy");
        assert_eq!(out[0]["operation"], "Apply");
    }

    #[test]
    fn the_preview_leaves_out_what_only_imperative_edits_hold() {
        let got = without_imperative(&merged_service());
        // The patched port goes, canopy's stays; the annotation only
        // `kubectl annotate` wrote goes; the selector (shared with another
        // applier) and the status stay.
        assert_eq!(
            got["spec"]["ports"],
            json!([{"name": "redis", "port": 6379, "protocol": "TCP", "targetPort": 6379}])
        );
        assert!(got["metadata"].get("annotations").is_none(), "{got}");
        assert_eq!(got["spec"]["selector"], json!({"app": "redis"}));
        assert_eq!(got["status"], json!({"loadBalancer": {}}));
    }

    #[test]
    fn a_renamed_env_var_and_container_are_found_by_their_keys() {
        let merged = json!({
            "metadata": {"managedFields": [
                {"manager": "canopy", "operation": "Apply", "apiVersion": "apps/v1",
                 "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {},
                        "f:env": {"k:{\"name\":\"MODE\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}}},
                {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "apps/v1",
                 "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {"f:env": {"k:{\"name\":\"MODE2\"}": {".": {}, "f:name": {}, "f:value": {}}}},
                    "k:{\"name\":\"sidecar\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}}}
            ]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "env": [
                    {"name": "MODE", "value": "a"}, {"name": "MODE2", "value": "a"}]},
                {"name": "sidecar", "image": "web:1"}
            ]}}}
        });
        let got = without_imperative(&merged);
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "web:1", "env": [{"name": "MODE", "value": "a"}]}])
        );
    }

    #[test]
    fn a_refused_dry_run_shows_the_sent_port_over_the_live_service() {
        let live = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "redis", "managedFields": [
                {"manager": "canopy", "operation": "Apply", "apiVersion": "v1",
                 "fieldsV1": {"f:spec": {"f:selector": {}}}},
                {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "v1",
                 "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":6380,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}, "f:name": {}, "f:targetPort": {}, "f:protocol": {}}}}}}
            ]},
            "spec": {
                "clusterIP": "10.0.0.7",
                "selector": {"app": "redis"},
                "ports": [{"name": "redis", "port": 6380, "protocol": "TCP", "targetPort": 6379}]
            }
        });
        let desired = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis"},
            "spec": {"selector": {"app": "redis"}, "ports": [{"name": "redis", "port": 6379, "targetPort": 6379}]}
        });
        let got = laid_over(&live, &desired);
        assert_eq!(
            got["spec"]["ports"],
            json!([{"name": "redis", "port": 6379, "targetPort": 6379}])
        );
        assert_eq!(got["spec"]["clusterIP"], "10.0.0.7", "defaults stay");
        // An env list keyed by name keeps the live item's other fields.
        let live = json!({"spec": {"env": [{"name": "A", "value": "1", "extra": true}]}});
        let desired = json!({"spec": {"env": [{"name": "A", "value": "2"}]}});
        assert_eq!(
            laid_over(&live, &desired)["spec"]["env"],
            json!([{"name": "A", "value": "2", "extra": true}])
        );
    }
}
