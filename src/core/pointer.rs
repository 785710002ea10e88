//! Writing through JSON pointers (RFC 6901), which serde_json only reads.
//!
//! Render sets replica counts by pointer, diff removes ignored fields, and
//! retain copies a cluster's values in: one set of rules for all three.

use serde_json::{Map, Value};

/// The tokens of a pointer, unescaped (`~1` is `/`, `~0` is `~`).
fn tokens(ptr: &str) -> Vec<String> {
    ptr.split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Sets the value at `ptr`. Missing parents, and parents that are neither
/// object nor array (a `null`, a scalar), become objects; an array index
/// addresses an element or the one just past the end, and any other index
/// leaves the value unchanged.
pub fn set(obj: &mut Value, ptr: &str, value: Value) {
    let toks = tokens(ptr);
    let Some((last, parents)) = toks.split_last() else {
        return;
    };
    let mut cur = obj;
    for t in parents {
        if !cur.is_object() && !cur.is_array() {
            *cur = Value::Object(Map::new());
        }
        cur = match cur {
            Value::Array(a) => match t.parse::<usize>() {
                Ok(i) if i < a.len() => &mut a[i],
                _ => return,
            },
            Value::Object(m) => m
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            _ => unreachable!("made an object or array above"),
        };
    }
    match cur {
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => a[i] = value,
            Ok(i) if i == a.len() => a.push(value),
            _ => {}
        },
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        other => {
            let mut m = Map::new();
            m.insert(last.clone(), value);
            *other = Value::Object(m);
        }
    }
}

/// Removes the value at `ptr`; a missing one is fine.
pub fn remove(obj: &mut Value, ptr: &str) {
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

    #[test]
    fn set_creates_parents_escapes_and_appends() {
        let mut v = json!({"spec": {}, "a": [1], "n": null});
        set(&mut v, "/spec/replicas", json!(3));
        set(&mut v, "/b/c~1d", json!(true));
        set(&mut v, "/a/1", json!(2));
        set(&mut v, "/a/5", json!(9));
        set(&mut v, "/n/x", json!(0));
        assert_eq!(
            v,
            json!({"spec": {"replicas": 3}, "a": [1, 2], "b": {"c/d": true}, "n": {"x": 0}})
        );
    }

    #[test]
    fn remove_drops_fields_and_elements() {
        let mut v = json!({"a": [1, 2], "b": {"c/d": true}});
        remove(&mut v, "/a/0");
        remove(&mut v, "/b/c~1d");
        remove(&mut v, "/x/y");
        assert_eq!(v, json!({"a": [2], "b": {}}));
    }
}
