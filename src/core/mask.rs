//! Secret masking, as Argo CD does it: every value under a Secret's `data`
//! and `stringData` becomes a run of `+`. Equal values get runs of equal
//! length and different values runs of different lengths, so a reviewer sees
//! *which* key changed and never the content.
//!
//! Masking takes several objects at once (desired and live, in a diff) so the
//! same value is masked the same way on both sides.

use std::collections::HashMap;

use serde_json::Value;

/// Annotation kubectl writes with the whole last-applied object, Secret data
/// included; masked like the data itself.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Secret, whatever its apiVersion is spelled: masking one object too
/// many is harmless, one too few is a leak.
fn is_secret(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("Secret")
}

/// A `List` (or `SecretList`, …): objects in `items`, as `kubectl get -o
/// yaml` writes them and as some upstream manifests ship.
fn is_list(v: &Value) -> bool {
    v.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array)
}

/// Masks every Secret among `objs` in place, the items of lists included;
/// other objects are untouched.
pub fn mask_secrets(objs: &mut [&mut Value]) {
    let mut runs: HashMap<String, usize> = HashMap::new();
    for obj in objs.iter_mut() {
        mask_one(obj, &mut runs);
    }
}

fn mask_one(obj: &mut Value, runs: &mut HashMap<String, usize>) {
    if is_list(obj) {
        if let Some(Value::Array(items)) = obj.get_mut("items") {
            for item in items {
                mask_one(item, runs);
            }
        }
    }
    if !is_secret(obj) {
        return;
    }
    for field in ["data", "stringData"] {
        if let Some(Value::Object(map)) = obj.get_mut(field) {
            // serde_json maps iterate in key order: assignment is stable.
            for v in map.values_mut() {
                let text = match &*v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let next = runs.len();
                let n = *runs.entry(text).or_insert(next);
                *v = Value::String("+".repeat(8 + n));
            }
        }
    }
    if let Some(Value::Object(ann)) = obj.pointer_mut("/metadata/annotations") {
        if let Some(v) = ann.get_mut(LAST_APPLIED) {
            *v = Value::String("++++++++ (masked: holds Secret data)".into());
        }
    }
}

/// `text` with the user name and password of every URL in it removed, for messages and cache
/// names: `https://user:token@host/x` → `https://host/x`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_equal_runs_different_values_different_runs() {
        let mut a = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "c2VjcmV0", "b": "c2VjcmV0", "c": "b3RoZXI="}, "stringData": {"d": "plain"}});
        let mut b = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "c2VjcmV0", "b": "Y2hhbmdlZA=="}});
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "visible"}});
        mask_secrets(&mut [&mut a, &mut b, &mut cm]);
        let s = |v: &Value, p: &str| v.pointer(p).unwrap().as_str().unwrap().to_string();
        assert_eq!(s(&a, "/data/a"), s(&a, "/data/b"));
        assert_ne!(s(&a, "/data/a"), s(&a, "/data/c"));
        assert_eq!(
            s(&a, "/data/a"),
            s(&b, "/data/a"),
            "same value on both sides"
        );
        assert_ne!(s(&a, "/data/b"), s(&b, "/data/b"), "a changed value shows");
        assert!(s(&a, "/stringData/d").chars().all(|c| c == '+'));
        assert_eq!(s(&cm, "/data/a"), "visible");
        let text = serde_json::to_string(&[&a, &b]).unwrap();
        for secret in ["c2VjcmV0", "b3RoZXI=", "plain", "Y2hhbmdlZA=="] {
            assert!(!text.contains(secret));
        }
    }

    /// Issue 13, case 5: a Secret inside a List, or spelled with another
    /// apiVersion, is masked like any other.
    #[test]
    fn secrets_in_lists_and_any_api_version_are_masked() {
        let mut list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}, "stringData": {"pw": "hunter2"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"k": "v"}}
        ]});
        let mut odd = json!({"apiVersion": "core/v1", "kind": "Secret", "metadata": {"name": "c"}, "data": {"pw": "aHVudGVyMg=="}});
        mask_secrets(&mut [&mut list, &mut odd]);
        let text = format!("{list}{odd}");
        assert!(
            !text.contains("hunter2") && !text.contains("aHVudGVyMg=="),
            "{text}"
        );
        assert_eq!(list["items"][0]["stringData"]["pw"], "++++++++");
        assert_eq!(
            list["items"][1]["data"]["k"], "v",
            "a ConfigMap is left alone"
        );
    }
}
