//! Metadata that is canopy's own: labels and annotations under
//! `canopy.dev/`. canopy sets them on what it applies (fleet, workload,
//! cluster, source, revision) and reads them back to decide what it owns,
//! what it prunes, which namespace is a member and which object is a
//! handoff. A manifest that wrote them could claim another workload's
//! objects, hide from prune or pose as a member, so only the documented
//! opt-ins may come from a manifest: `canopy.dev/prune: disabled`, the
//! local backend's `canopy.dev/local-health`, and
//! `canopy.dev/replace: on-immutable` (never on a kind whose replacement
//! deletes data).

use serde_json::Value;

use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::model::{
    ANNOTATION_LOCAL_HEALTH, ANNOTATION_PRUNE, ANNOTATION_REPLACE, REPLACE_ON_IMMUTABLE,
};

/// The prefix of canopy's own labels and annotations.
pub const PREFIX: &str = "canopy.dev/";

/// Annotations a manifest may set under [`PREFIX`].
const OPT_INS: [&str; 3] = [
    ANNOTATION_PRUNE,
    ANNOTATION_LOCAL_HEALTH,
    ANNOTATION_REPLACE,
];

/// What is wrong with an object's canopy metadata, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub hint: String,
}

/// The first label or annotation of `obj` that is canopy's and not an
/// opt-in, or an opt-in written wrong; `None` when there is none.
pub fn problem(obj: &Value) -> Option<Problem> {
    let meta = obj.get("metadata")?;
    let keys = |field: &str| {
        meta.get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.keys())
    };
    let own = |what: String| {
        Problem {
        what: format!("{what} is canopy's own: a manifest may not set it"),
        hint: format!(
            "remove it; canopy sets its labels and annotations itself, and a manifest may set only {}",
            OPT_INS.join(", ")
        ),
    }
    };
    if let Some(k) = keys("labels").find(|k| k.starts_with(PREFIX)) {
        return Some(own(format!("label {k}")));
    }
    if let Some(k) =
        keys("annotations").find(|k| k.starts_with(PREFIX) && !OPT_INS.contains(&k.as_str()))
    {
        return Some(own(format!("annotation {k}")));
    }
    let replace = meta.get("annotations")?.get(ANNOTATION_REPLACE)?;
    if replace.as_str() != Some(REPLACE_ON_IMMUTABLE) {
        return Some(Problem {
            what: format!("annotation {ANNOTATION_REPLACE}: {replace} is not a value it takes"),
            hint: format!("write {ANNOTATION_REPLACE}: {REPLACE_ON_IMMUTABLE}, or remove it"),
        });
    }
    if crate::core::model::never_replaced(obj) {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
        return Some(Problem {
            what: format!("annotation {ANNOTATION_REPLACE} on a {kind}: canopy never replaces one, since deleting it deletes what it holds"),
            hint: "remove the annotation; change the field by hand (or create a new object under another name) if you mean to lose its data".into(),
        });
    }
    None
}

/// The diagnostic for `p` (from [`problem`]) on an object of `file`.
pub fn diagnostic(p: &Problem, file: &str, line: usize, on: Option<&str>) -> Diagnostic {
    let on = on
        .map(|c| format!(" (rendered for cluster {c})"))
        .unwrap_or_default();
    Diagnostic::error(format!("{}{on}", p.what))
        .in_file(file, line)
        .hint(p.hint.clone())
}

/// Checks, once per fleet, every object of every workload that is the same
/// on every cluster (plain manifests, Helm outputs), with its line.
/// Templated manifests are checked as they render.
pub fn check_manifests(checked: &crate::core::validate::Checked) -> Diagnostics {
    let mut d = Diagnostics::default();
    for o in checked.parsed_objects(|_| true) {
        if let Some(p) = problem(o.value) {
            d.push(diagnostic(&p, &o.file.path, o.line(), None));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_opt_ins_are_a_manifests() {
        let obj = |labels: Value, annotations: Value| json!({"metadata": {"name": "x", "labels": labels, "annotations": annotations}});
        assert_eq!(problem(&obj(json!({"app": "web"}), json!({}))), None);
        assert_eq!(
            problem(&obj(
                json!({}),
                json!({"canopy.dev/prune": "disabled", "canopy.dev/local-health": "unhealthy: x"})
            )),
            None
        );
        assert_eq!(
            problem(&obj(json!({"canopy.dev/workload": "payments"}), json!({}))).map(|p| p.what),
            Some(
                "label canopy.dev/workload is canopy's own: a manifest may not set it".to_string()
            )
        );
        assert_eq!(
            problem(&obj(json!({"canopy.dev/member": "edge"}), json!({}))).map(|p| p.what),
            Some("label canopy.dev/member is canopy's own: a manifest may not set it".to_string())
        );
        assert_eq!(
            problem(&obj(json!({}), json!({"canopy.dev/source": "x"}))).map(|p| p.what),
            Some(
                "annotation canopy.dev/source is canopy's own: a manifest may not set it"
                    .to_string()
            )
        );
        // Replace on immutable: the one value, never on a kind that holds data.
        let kinded = |kind: &str, api: &str, value: &str| {
            json!({"apiVersion": api, "kind": kind,
            "metadata": {"name": "x", "annotations": {"canopy.dev/replace": value}}})
        };
        assert_eq!(problem(&kinded("Job", "batch/v1", "on-immutable")), None);
        assert!(problem(&kinded("Job", "batch/v1", "always"))
            .unwrap()
            .what
            .contains("is not a value it takes"));
        for (kind, api) in [
            ("Namespace", "v1"),
            ("PersistentVolumeClaim", "v1"),
            ("CustomResourceDefinition", "apiextensions.k8s.io/v1"),
        ] {
            let p = problem(&kinded(kind, api, "on-immutable")).unwrap();
            assert!(
                p.what
                    .contains(&format!("on a {kind}: canopy never replaces")),
                "{p:?}"
            );
        }
        // Another tool's own domain is not canopy's.
        assert_eq!(
            problem(&obj(
                json!({"example.canopy.dev/x": "1", "canopy.dev.example.com/y": "2"}),
                json!({})
            )),
            None
        );
        assert_eq!(problem(&json!({"kind": "ConfigMap"})), None);
    }
}
