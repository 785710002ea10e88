//! Metadata that is canopy's own: labels and annotations under
//! `canopy.dev/`. canopy sets them on what it applies (fleet, workload,
//! cluster, source, revision) and reads them back to decide what it owns,
//! what it prunes, which namespace is a member and which object is a
//! handoff. A manifest that wrote them could claim another workload's
//! objects, hide from prune or pose as a member, so only the documented
//! opt-ins may come from a manifest: `canopy.dev/prune: disabled` and the
//! local backend's `canopy.dev/local-health`.

use serde_json::Value;

use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::model::{ANNOTATION_LOCAL_HEALTH, ANNOTATION_PRUNE};

/// The prefix of canopy's own labels and annotations.
pub const PREFIX: &str = "canopy.dev/";

/// Annotations a manifest may set under [`PREFIX`].
const OPT_INS: [&str; 2] = [ANNOTATION_PRUNE, ANNOTATION_LOCAL_HEALTH];

/// The first label or annotation of `obj` that is canopy's and not an
/// opt-in, as `label canopy.dev/x`; `None` when there is none.
pub fn problem(obj: &Value) -> Option<String> {
    let meta = obj.get("metadata")?;
    let keys = |field: &str| {
        meta.get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.keys())
    };
    if let Some(k) = keys("labels").find(|k| k.starts_with(PREFIX)) {
        return Some(format!("label {k}"));
    }
    keys("annotations")
        .find(|k| k.starts_with(PREFIX) && !OPT_INS.contains(&k.as_str()))
        .map(|k| format!("annotation {k}"))
}

/// The diagnostic for `what` (from [`problem`]) on an object of `file`.
pub fn diagnostic(what: &str, file: &str, line: usize, on: Option<&str>) -> Diagnostic {
    let on = on
        .map(|c| format!(" (rendered for cluster {c})"))
        .unwrap_or_default();
    Diagnostic::error(format!(
        "{what} is canopy's own: a manifest may not set it{on}"
    ))
    .in_file(file, line)
    .hint(format!(
        "remove it; canopy sets its labels and annotations itself, and a manifest may set only {}",
        OPT_INS.join(" and ")
    ))
}

/// Checks, once per fleet, every object of every workload that is the same
/// on every cluster (plain manifests, Helm outputs), with its line.
/// Templated manifests are checked as they render.
pub fn check_manifests(checked: &crate::core::validate::Checked) -> Diagnostics {
    let mut d = Diagnostics::default();
    for o in checked.parsed_objects(|_| true) {
        if let Some(what) = problem(o.value) {
            d.push(diagnostic(&what, &o.file.path, o.line(), None));
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
            problem(&obj(json!({"canopy.dev/workload": "payments"}), json!({}))).as_deref(),
            Some("label canopy.dev/workload")
        );
        assert_eq!(
            problem(&obj(json!({"canopy.dev/member": "edge"}), json!({}))).as_deref(),
            Some("label canopy.dev/member")
        );
        assert_eq!(
            problem(&obj(json!({}), json!({"canopy.dev/source": "x"}))).as_deref(),
            Some("annotation canopy.dev/source")
        );
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
