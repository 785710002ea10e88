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

use crate::model::{FieldRule, ObjectKey};

/// Makes `desired` carry `live`'s value at every retained pointer of the
/// rules that match `key`; a pointer `live` does not have is removed from
/// `desired` (the cluster dropped it, and canopy must not put it back).
pub fn retain(desired: &mut Value, live: &Value, key: &ObjectKey, rules: &[FieldRule]) {
    for rule in rules.iter().filter(|r| r.matches(key)) {
        for ptr in &rule.json_pointers {
            match live.pointer(ptr) {
                Some(v) => set_pointer(desired, ptr, v.clone()),
                None => remove_pointer(desired, ptr),
            }
        }
    }
}

/// The tokens of a JSON pointer, unescaped (`~1` is `/`, `~0` is `~`).
fn tokens(ptr: &str) -> Vec<String> {
    ptr.split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Sets the value at `ptr`, creating missing objects on the way. An array
/// index may address an element or the one just past the end.
pub fn set_pointer(obj: &mut Value, ptr: &str, value: Value) {
    let toks = tokens(ptr);
    let Some((last, parents)) = toks.split_last() else {
        return;
    };
    let mut cur = obj;
    for t in parents {
        cur = match cur {
            Value::Object(m) => m
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Default::default())),
            Value::Array(a) => match t.parse::<usize>() {
                Ok(i) if i < a.len() => &mut a[i],
                _ => return,
            },
            _ => return,
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => a[i] = value,
            Ok(i) if i == a.len() => a.push(value),
            _ => {}
        },
        _ => {}
    }
}

/// Removes the value at `ptr`; a missing one is fine.
pub fn remove_pointer(obj: &mut Value, ptr: &str) {
    let Some((parent, last)) = ptr.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let target = if parent.is_empty() {
        Some(obj)
    } else {
        obj.pointer_mut(parent)
    };
    match target {
        Some(Value::Object(m)) => {
            m.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        _ => {}
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

    #[test]
    fn pointers_create_parents_escape_and_append() {
        let mut v = json!({"a": [1]});
        set_pointer(&mut v, "/b/c~1d", json!(true));
        set_pointer(&mut v, "/a/1", json!(2));
        set_pointer(&mut v, "/a/5", json!(9));
        assert_eq!(v, json!({"a": [1, 2], "b": {"c/d": true}}));
        remove_pointer(&mut v, "/a/0");
        remove_pointer(&mut v, "/x/y");
        assert_eq!(v, json!({"a": [2], "b": {"c/d": true}}));
    }
}
