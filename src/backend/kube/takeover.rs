//! Taking fields back from imperative edits (pure).
//!
//! Server-side apply removes a field only when its applier owns it and
//! stops sending it, and it leaves alone every field another manager set
//! and nobody applies: a label `kubectl label` added, an env var `kubectl
//! set env` added, a port someone patched in. Those are theirs, not drift,
//! and canopy keeps them (issue 29).
//!
//! Two kinds of imperative edit (`kubectl edit`, `patch`, `scale`, `set`, a
//! client-side `kubectl apply`: operation `Update`) do touch what canopy
//! manages, and canopy takes them back by moving their fields into its own
//! `Apply` entry before it applies ([`takeover`]), as Flux does, but only
//! those fields ([`Taken`]):
//! - a field canopy sends, whose value the edit changed (`kubectl set
//!   image`, `scale`, `edit`): canopy owns it again and its value is put
//!   back;
//! - an item of a keyed list that took the place of an item canopy sends
//!   (a Service port patched from 6379 to 6380, a renamed env var or
//!   container): canopy's item is gone from the live list, and the edit's
//!   item beside the one canopy sends again would leave two ports named
//!   alike, an invalid Service. Such an item is canopy's to remove.
//!
//! Everything else an imperative manager holds stays its own. A real other
//! applier (operation `Apply`) and controllers keep their fields: only
//! managers named `kubectl…` and the server's `before-first-apply` count as
//! imperative.
//!
//! A dry run cannot take ownership first, so the preview `diff` shows is
//! the dry run's result without the replaced items ([`without_replaced`]).

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

/// The fields of one `fieldsV1` tree that canopy takes over.
#[derive(Debug, Default, PartialEq)]
pub struct Taken {
    /// Fields `desired` sets: canopy sends them, so owning them changes
    /// nothing but their value, which the apply puts back.
    pub sent: Map<String, Value>,
    /// Items of keyed lists (or sets) that took the place of one `desired`
    /// has and live lacks: canopy owns them and does not send them, so the
    /// apply removes them.
    pub replaced: Map<String, Value>,
}

impl Taken {
    fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.replaced.is_empty()
    }

    fn all(&self) -> Map<String, Value> {
        let mut all = self.sent.clone();
        union(&mut all, &self.replaced);
        all
    }
}

/// What canopy takes of the `fieldsV1` tree `fields` (an imperative
/// manager's) when it applies `desired` over `live`.
fn split(fields: &Map<String, Value>, desired: &Value, live: Option<&Value>) -> Taken {
    let mut out = Taken::default();
    // A list whose live items lack one canopy sends: someone removed or
    // re-keyed it, and their items there took its place.
    let lost = live.is_some_and(|l| lost_item(fields, desired, l));
    for (k, sub) in fields {
        if k == "." {
            // The node itself: `desired` has it (the caller found it there).
            out.sent.insert(k.clone(), sub.clone());
            continue;
        }
        let (d, l) = match k.strip_prefix("f:") {
            Some(name) => (desired.get(name), live.and_then(|l| l.get(name))),
            None => (
                desired
                    .as_array()
                    .and_then(|list| list_item(list, k).map(|i| &list[i])),
                live.and_then(Value::as_array)
                    .and_then(|list| list_item(list, k).map(|i| &list[i])),
            ),
        };
        match (d, sub.as_object().filter(|m| !m.is_empty())) {
            (Some(_), None) => {
                out.sent.insert(k.clone(), sub.clone());
            }
            (Some(d), Some(sub)) => {
                let below = split(sub, d, l);
                if !below.sent.is_empty() {
                    out.sent.insert(k.clone(), Value::Object(below.sent));
                }
                if !below.replaced.is_empty() {
                    out.replaced
                        .insert(k.clone(), Value::Object(below.replaced));
                }
            }
            (None, _) if lost && !k.starts_with("f:") => {
                out.replaced.insert(k.clone(), sub.clone());
            }
            (None, _) => {}
        }
    }
    out
}

/// Whether `desired` is a list with an item that `live` (a list) lacks,
/// judged by the key fields of the `k:` entries of `fields` (the item's
/// value for `v:` entries). Keys `desired` leaves for the server to
/// default (a port's protocol) are left out of the comparison.
fn lost_item(fields: &Map<String, Value>, desired: &Value, live: &Value) -> bool {
    let (Some(want), Some(have)) = (desired.as_array(), live.as_array()) else {
        return false;
    };
    let key_names: Option<Vec<String>> = fields
        .keys()
        .filter_map(|k| k.strip_prefix("k:"))
        .filter_map(|j| serde_json::from_str::<Map<String, Value>>(j).ok())
        .map(|m| m.keys().cloned().collect())
        .next();
    if let Some(names) = key_names {
        return want.iter().any(|item| {
            let named: Vec<&String> = names
                .iter()
                .filter(|n| item.get(n.as_str()).is_some())
                .collect();
            !named.is_empty()
                && !have.iter().any(|h| {
                    named.iter().all(|n| {
                        h.get(n.as_str())
                            .is_some_and(|v| same(v, &item[n.as_str()]))
                    })
                })
        });
    }
    fields.keys().any(|k| k.starts_with("v:"))
        && want.iter().any(|item| !have.iter().any(|h| same(h, item)))
}

/// `fields` without the paths `gone` holds (a leaf or a whole item in
/// `gone` takes everything below it); a node left with nothing below it
/// goes too, since an empty node would mean the node's own value.
fn without(fields: &Map<String, Value>, gone: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in fields {
        match (v.as_object(), gone.get(k).and_then(Value::as_object)) {
            (_, None) => {
                out.insert(k.clone(), v.clone());
            }
            (Some(v), Some(g)) if !v.is_empty() && !g.is_empty() => {
                let rest = without(v, g);
                if !rest.is_empty() {
                    out.insert(k.clone(), Value::Object(rest));
                }
            }
            _ => {}
        }
    }
    out
}

/// What canopy takes from every imperative manager of `live` when it
/// applies `desired`.
pub fn taken(live: &Value, desired: &Value) -> Taken {
    let desired = super::noop::with_port_protocols(desired);
    let mut out = Taken::default();
    for e in entries(live).iter().filter(|e| imperative(e)) {
        let Some(f) = e.get("fieldsV1").and_then(Value::as_object) else {
            continue;
        };
        let t = split(f, &desired, Some(live));
        union(&mut out.sent, &t.sent);
        union(&mut out.replaced, &t.replaced);
    }
    out
}

/// `live`'s `managedFields` with what canopy takes of each imperative
/// entry ([`Taken`]) moved into `manager`'s `Apply` entry for
/// `api_version` (made if there is none, stamped `now`); an imperative
/// entry left with nothing is dropped. `None` when there is nothing to
/// take: an apply then leaves every imperative field as it is.
pub fn takeover(
    live: &Value,
    desired: &Value,
    manager: &str,
    api_version: &str,
    now: &str,
) -> Option<Vec<Value>> {
    let desired = super::noop::with_port_protocols(desired);
    let mut taken = Map::new();
    let mut out: Vec<Value> = Vec::new();
    for e in entries(live) {
        let fields = e.get("fieldsV1").and_then(Value::as_object);
        let Some(fields) = fields.filter(|_| imperative(e)) else {
            out.push(e.clone());
            continue;
        };
        let t = split(fields, &desired, Some(live));
        if t.is_empty() {
            out.push(e.clone());
            continue;
        }
        let all = t.all();
        union(&mut taken, &all);
        let rest = without(fields, &all);
        if !rest.is_empty() {
            let mut kept = e.clone();
            kept["fieldsV1"] = Value::Object(rest);
            out.push(kept);
        }
    }
    if taken.is_empty() {
        return None;
    }
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

/// What an apply after [`takeover`] leaves, from `merged` (the dry run's
/// result, an apply without the takeover, or `live` itself): the items
/// [`taken`] finds replaced are removed where no other manager than the
/// imperative ones holds them, as canopy would own them and not send them.
/// Everything else, foreign fields included, stays as it is in `merged`.
pub fn without_replaced(merged: &Value, live: &Value, desired: &Value) -> Value {
    let replaced = taken(live, desired).replaced;
    if replaced.is_empty() {
        return merged.clone();
    }
    let mut others = Map::new();
    for e in entries(merged) {
        let Some(f) = e.get("fieldsV1").and_then(Value::as_object) else {
            continue;
        };
        let subresource = e.get("subresource").and_then(Value::as_str).unwrap_or("");
        if !imperative(e) && subresource.is_empty() {
            union(&mut others, f);
        }
    }
    let gone = minus(&replaced, &others);
    let mut out = merged.clone();
    remove(&mut out, &gone);
    out
}

/// The preview when the server refuses the dry run's merged object (a
/// Service holding the patched port beside canopy's, both named alike, is
/// invalid): `live` without the replaced items, with
/// `desired` laid over it. A keyed list keeps each live item that an item
/// sent has the key of (so defaulted fields stay), matched by the keys
/// `managedFields` records for that list (else by `name`, else by place).
/// An approximation of what the server would merge, used only to show the
/// change; the apply itself is the server's.
pub fn laid_over(live: &Value, desired: &Value) -> Value {
    let mut base = without_replaced(live, live, desired);
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

    /// A Deployment canopy applied, then edited by hand four ways that add
    /// only what canopy does not set: an annotation, a label, an env var
    /// and a container port.
    fn deployment_with_foreign_fields() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web",
                "labels": {"app": "web", "example.com/cost-center": "42"},
                "annotations": {"example.com/on-call": "team-b"},
                "managedFields": [
                    {"manager": "canopy", "operation": "Apply", "apiVersion": "apps/v1",
                     "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:template": {"f:spec": {"f:containers": {
                            "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {},
                                "f:env": {"k:{\"name\":\"MODE\"}": {".": {}, "f:name": {}, "f:value": {}}},
                                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}}},
                    {"manager": "kubectl-annotate", "operation": "Update", "apiVersion": "apps/v1",
                     "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:example.com/on-call": {}}}}},
                    {"manager": "kubectl-label", "operation": "Update", "apiVersion": "apps/v1",
                     "fieldsV1": {"f:metadata": {"f:labels": {"f:example.com/cost-center": {}}}}},
                    {"manager": "kubectl-set", "operation": "Update", "apiVersion": "apps/v1",
                     "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                        "k:{\"name\":\"web\"}": {"f:env": {".": {}, "k:{\"name\":\"DEBUG\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}}},
                    {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "apps/v1",
                     "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                        "k:{\"name\":\"web\"}": {"f:ports": {"k:{\"containerPort\":9090,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:protocol": {}}}}}}}}}}
                ]
            },
            "spec": {"template": {"spec": {"containers": [{
                "name": "web", "image": "web:1",
                "env": [{"name": "MODE", "value": "fast"}, {"name": "DEBUG", "value": "1"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 9090, "protocol": "TCP"}]
            }]}}}
        })
    }

    fn desired_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"template": {"spec": {"containers": [{
                "name": "web", "image": "web:1",
                "env": [{"name": "MODE", "value": "fast"}],
                "ports": [{"containerPort": 80}]
            }]}}}
        })
    }

    #[test]
    fn fields_only_an_edit_set_stay_the_editors() {
        let live = deployment_with_foreign_fields();
        let desired = desired_deployment();
        let t = taken(&live, &desired);
        assert!(t.replaced.is_empty(), "{t:?}");
        // All that is taken is the env list's own node, which canopy sends
        // too: nothing changes hands that the apply would remove.
        assert_eq!(
            Value::Object(t.sent),
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {"f:env": {".": {}}}}}}}})
        );
        assert_eq!(without_replaced(&live, &live, &desired), live);
        let out = takeover(&live, &desired, "canopy", "apps/v1", "t").unwrap();
        let owner = |m: &str| out.iter().find(|e| e["manager"] == m).cloned();
        let set = owner("kubectl-set").expect("kubectl-set keeps its env var");
        assert!(set["fieldsV1"].pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/f:env/k:{\"name\":\"DEBUG\"}").is_some());
        assert_eq!(
            owner("kubectl-annotate").unwrap(),
            live["metadata"]["managedFields"][1]
        );
        assert_eq!(
            owner("kubectl-label").unwrap(),
            live["metadata"]["managedFields"][2]
        );
        assert_eq!(
            owner("kubectl-patch").unwrap(),
            live["metadata"]["managedFields"][4]
        );
        // Without the env list in canopy's object, there is nothing at all.
        let mut bare = desired.clone();
        bare["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("env");
        assert_eq!(takeover(&live, &bare, "canopy", "apps/v1", "t"), None);
    }

    #[test]
    fn a_value_canopy_sends_is_taken_from_the_edit_that_changed_it() {
        let mut live = deployment_with_foreign_fields();
        // `kubectl set image`: the edit now owns the image too.
        live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        live["metadata"]["managedFields"][3]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
            ["f:containers"]["k:{\"name\":\"web\"}"]["f:image"] = json!({});
        let desired = desired_deployment();
        let out = takeover(&live, &desired, "canopy", "apps/v1", "2026-12-08T00:00:00Z").unwrap();
        let names: Vec<&str> = out.iter().map(|e| e["manager"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            vec![
                "canopy",
                "kubectl-annotate",
                "kubectl-label",
                "kubectl-set",
                "kubectl-patch"
            ]
        );
        let web = "/fieldsV1/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}";
        assert!(out[0].pointer(&format!("{web}/f:image")).is_some());
        assert_eq!(out[0]["time"], "2026-12-08T00:00:00Z");
        assert!(
            out[3].pointer(&format!("{web}/f:image")).is_none(),
            "{}",
            out[3]
        );
        assert!(out[3]
            .pointer(&format!("{web}/f:env/k:{{\"name\":\"DEBUG\"}}"))
            .is_some());
        // An edit left with nothing is dropped; an object canopy never
        // applied gets an entry of its own.
        let mut adopted = live.clone();
        adopted["metadata"]["managedFields"] = json!([{
            "manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}}
        }]);
        let out = takeover(&adopted, &desired, "canopy", "apps/v1", "t").unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["manager"], "canopy");
        assert_eq!(out[0]["operation"], "Apply");
        assert_eq!(
            out[0]["fieldsV1"],
            adopted["metadata"]["managedFields"][0]["fieldsV1"]
        );
    }

    #[test]
    fn a_port_that_took_the_place_of_canopys_is_replaced() {
        // `kubectl patch` moved the port from 6379 to 6380: canopy's item
        // is gone from the live list, the edit's is there alone.
        let live = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "redis",
                "annotations": {"team": "cache"},
                "managedFields": [
                {"manager": "canopy", "operation": "Apply", "apiVersion": "v1",
                 "fieldsV1": {"f:spec": {"f:selector": {}}}},
                {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "v1",
                 "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":6380,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}}}}}},
                {"manager": "kubectl-annotate", "operation": "Update", "apiVersion": "v1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:team": {}}}}}
            ]},
            "spec": {"selector": {"app": "redis"},
                "ports": [{"name": "redis", "port": 6380, "protocol": "TCP"}]}
        });
        let desired = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis"},
            "spec": {"selector": {"app": "redis"}, "ports": [{"name": "redis", "port": 6379}]}
        });
        let t = taken(&live, &desired);
        assert_eq!(
            Value::Object(t.replaced),
            json!({"f:spec": {"f:ports": {"k:{\"port\":6380,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}}}}})
        );
        let out = takeover(&live, &desired, "canopy", "v1", "t").unwrap();
        let names: Vec<&str> = out.iter().map(|e| e["manager"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            vec!["canopy", "kubectl-annotate"],
            "the annotation stays its editor's"
        );
        // The dry run merges both ports; the preview leaves out the
        // replaced one and keeps the foreign annotation.
        let mut merged = merged_service();
        merged["metadata"]["managedFields"][2]["fieldsV1"] =
            live["metadata"]["managedFields"][2]["fieldsV1"].clone();
        let got = without_replaced(&merged, &live, &desired);
        assert_eq!(
            got["spec"]["ports"],
            json!([{"name": "redis", "port": 6379, "protocol": "TCP", "targetPort": 6379}])
        );
        assert_eq!(got["metadata"]["annotations"], json!({"team": "cache"}));
        assert_eq!(got["spec"]["selector"], json!({"app": "redis"}));
        assert_eq!(got["status"], json!({"loadBalancer": {}}));
        // A port added beside canopy's, which is still there, is not.
        let mut beside = live.clone();
        beside["spec"]["ports"] = json!([
            {"name": "redis", "port": 6379, "protocol": "TCP"},
            {"name": "admin", "port": 6380, "protocol": "TCP"}
        ]);
        assert_eq!(taken(&beside, &desired), Taken::default());
    }

    #[test]
    fn a_renamed_env_var_and_container_are_found_by_their_keys() {
        // `kubectl patch` renamed env var MODE to MODE2 and container
        // `web2` to `sidecar`; the dry run merges canopy's items back in.
        let fields = json!([
            {"manager": "canopy", "operation": "Apply", "apiVersion": "apps/v1",
             "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {},
                    "f:env": {"k:{\"name\":\"MODE\"}": {".": {}, "f:name": {}, "f:value": {}}}},
                "k:{\"name\":\"web2\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}}},
            {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "apps/v1",
             "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {"f:env": {"k:{\"name\":\"MODE2\"}": {".": {}, "f:name": {}, "f:value": {}}}},
                "k:{\"name\":\"sidecar\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}}}
        ]);
        let live = json!({
            "metadata": {"managedFields": fields},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "env": [{"name": "MODE2", "value": "a"}]},
                {"name": "sidecar", "image": "web:1"}
            ]}}}
        });
        let merged = json!({
            "metadata": {"managedFields": fields},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "env": [
                    {"name": "MODE", "value": "a"}, {"name": "MODE2", "value": "a"}]},
                {"name": "sidecar", "image": "web:1"},
                {"name": "web2", "image": "web:1"}
            ]}}}
        });
        let desired = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1", "env": [{"name": "MODE", "value": "a"}]},
            {"name": "web2", "image": "web:1"}
        ]}}}});
        let got = without_replaced(&merged, &live, &desired);
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "web", "image": "web:1", "env": [{"name": "MODE", "value": "a"}]},
                {"name": "web2", "image": "web:1"}
            ])
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
