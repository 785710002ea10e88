//! YAML text of rendered objects, byte for byte what `serde_yaml` writes,
//! several times faster for the objects manifests are made of.
//!
//! serde_yaml drives libyaml's emitter, which analyses every scalar and
//! writes through a generic event pipeline: at fleet scale it is most of a
//! render's time. Most of what a manifest holds is plain: mappings,
//! block sequences, integers, booleans and names. Those are written
//! directly here, as libyaml would; a string that is not obviously plain
//! gets serde_yaml's own spelling of that scalar (when the spelling cannot
//! depend on where it stands), and anything else (a float, a multi-line or
//! long string, an unusual key, a sequence in a sequence) sends the whole
//! object to serde_yaml. A property test holds the two equal.

use serde_json::{Map, Value};

/// `v` as serde_yaml writes it (`serde_yaml::to_string`).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::with_capacity(512);
    match doc(v, &mut out) {
        Some(()) => out,
        None => serde_yaml::to_string(v).expect("JSON values always serialize"),
    }
}

/// `None`: this document needs serde_yaml.
fn doc(v: &Value, out: &mut String) -> Option<()> {
    match v {
        Value::Object(m) if !m.is_empty() => map(m, 0, false, out),
        Value::Array(a) if !a.is_empty() => seq(a, 0, out),
        _ => {
            scalar(v, out)?;
            out.push('\n');
            Some(())
        }
    }
}

fn indent(n: usize, out: &mut String) {
    for _ in 0..n {
        out.push(' ');
    }
}

/// A block mapping at `ind`; with `inline`, its first key continues the
/// current line (a mapping that is a sequence item).
fn map(m: &Map<String, Value>, ind: usize, inline: bool, out: &mut String) -> Option<()> {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !inline {
            indent(ind, out);
        }
        // A key is written plain only when it is short and plain.
        if !plain(k) || k.len() >= 128 {
            return None;
        }
        out.push_str(k);
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                map(inner, ind + 2, false, out)?;
            }
            // libyaml does not indent a sequence under its mapping key.
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                seq(a, ind, out)?;
            }
            _ => {
                out.push(' ');
                scalar(v, out)?;
                out.push('\n');
            }
        }
    }
    Some(())
}

/// A block sequence at `ind`.
fn seq(a: &[Value], ind: usize, out: &mut String) -> Option<()> {
    for item in a {
        indent(ind, out);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => map(m, ind + 2, true, out)?,
            Value::Array(inner) if !inner.is_empty() => return None,
            _ => {
                scalar(item, out)?;
                out.push('\n');
            }
        }
    }
    Some(())
}

/// Most scalar spellings kept per thread (all dropped when it is reached).
const SPELLED_MAX: usize = 1 << 16;

thread_local! {
    /// serde_yaml's spelling of the short single-line strings that are not
    /// plain, by string (`None`: it needs the whole document).
    static SPELLED: std::cell::RefCell<std::collections::HashMap<String, Option<String>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn scalar(v: &Value, out: &mut String) -> Option<()> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(itoa::Buffer::new().format(i));
            } else if let Some(u) = n.as_u64() {
                out.push_str(itoa::Buffer::new().format(u));
            } else {
                return None;
            }
        }
        Value::String(s) if plain(s) => out.push_str(s),
        Value::String(s) => {
            // serde_yaml's spelling of a scalar that cannot be folded or
            // broken over lines stands the same anywhere in a block.
            if s.len() > 60 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return None;
            }
            // The same few values ("500m", "80", "1Gi") come back on every
            // cluster: serde_yaml is asked once per thread for each.
            let spelled = SPELLED.with(|cache| {
                let mut cache = cache.borrow_mut();
                if let Some(one) = cache.get(s.as_str()) {
                    return one.clone();
                }
                let one = serde_yaml::to_string(s)
                    .ok()
                    .and_then(|t| t.strip_suffix('\n').map(str::to_string))
                    .filter(|t| !t.contains('\n'));
                if cache.len() >= SPELLED_MAX {
                    cache.clear();
                }
                cache.insert(s.clone(), one.clone());
                one
            })?;
            out.push_str(&spelled);
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
    Some(())
}

/// Whether `s` is written plain by serde_yaml whatever its place: a name
/// of letters, digits and `-._/`, with inner colons, that starts with a
/// letter and reads back as no other type.
fn plain(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    if !first.is_ascii_alphabetic() || b[b.len() - 1] == b':' {
        return false;
    }
    if !b
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'/' | b':'))
    {
        return false;
    }
    // Words YAML 1.1 or 1.2 read as booleans, nulls or numbers.
    const WORDS: [&str; 11] = [
        "null", "true", "false", "yes", "no", "on", "off", "y", "n", "nan", "inf",
    ];
    s.len() > 5 || !WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_manifest_is_written_as_serde_yaml_writes_it() {
        let v = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "web", "canopy.dev/fleet": "f"},
                         "annotations": {"canopy.dev/source": "workloads/web/deployment.yaml"}},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "containers": [{"name": "web", "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "MODE", "value": "fast"}, {"name": "PORT", "value": "8080"},
                                {"name": "EMPTY", "value": ""}, {"name": "YES", "value": "yes"}],
                        "args": ["--v=2", "serve"],
                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}],
                    "tolerations": [], "nodeSelector": {}, "hostNetwork": false, "x": null}}
            }
        });
        assert_eq!(to_yaml(&v), serde_yaml::to_string(&v).unwrap());
        // And it took the fast way, every string and key included.
        let mut fast = String::new();
        assert!(doc(&v, &mut fast).is_some());
        for s in [
            "a:b", "a:", ":a", "-a", "a-", "a.", "1.27", "v1.2", "x/y", "Y", "NULL", "0x1F", "a b",
        ] {
            let v = json!({ s: s, "k": [s, {s: s}] });
            assert_eq!(to_yaml(&v), serde_yaml::to_string(&v).unwrap(), "{s}");
        }
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9./:-]{0,12}",
            "[0-9][0-9.e+]{0,5}",
            "(yes|No|ON|off|y|n|null|true|False|nan|inf|~)",
            "[ -~]{0,20}",
            ".{0,8}",
            "[a-z ]{60,90}",
            "[a-z]{1,3}\n[a-z ]{0,5}",
        ]
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            arb_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(arb_string(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn equal_to_serde_yaml(v in arb_value()) {
            prop_assert_eq!(to_yaml(&v), serde_yaml::to_string(&v).unwrap());
        }
    }
}
