//! Health rules users write, for kinds canopy's own rules (and kstatus's
//! generic one) misread: `Workload spec.health` and `Defaults spec.health`,
//! one rule per group and kind, in CEL — the language of Kubernetes' own
//! validation rules and of Flux's `healthCheckExprs`, evaluated by the
//! `cel` crate rather than a language of canopy's own.
//!
//! Each expression sees the live object as `self`, and its `metadata`,
//! `spec` and `status` by name (an absent one is an empty map), and gives a
//! bool. `failed` is asked first, then `progressing`, then `healthy`; when
//! none holds the object is progressing, and the message names the rule.
//! An expression that cannot be evaluated (a field not written yet) does
//! not hold. Validation compiles every expression ([`check`]); a run uses
//! the compiled rules ([`HealthRules::of`]), a workload's before the
//! fleet's.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::model::{Fleet, HealthRule, Source, LABEL_WORKLOAD};
use crate::core::yaml::YamlPath;

/// Whether an object is healthy, as a rule says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Not there yet; the reason says what is awaited.
    Progressing(String),
    /// Will not get there without a change.
    Failed(String),
}

/// One compiled rule.
struct Compiled {
    /// Where it is written, for messages: `Workload web spec.health[0]`.
    source: String,
    failed: Option<(String, cel::Program)>,
    progressing: Option<(String, cel::Program)>,
    healthy: (String, cel::Program),
}

/// The fleet's health rules, compiled: by (group, kind), the fleet's
/// (`Defaults`) and each workload's.
#[derive(Default)]
pub struct HealthRules {
    fleet: BTreeMap<(String, String), Compiled>,
    workloads: BTreeMap<(String, String, String), Compiled>,
}

impl std::fmt::Debug for HealthRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthRules")
            .field("fleet", &self.fleet.len())
            .field("workloads", &self.workloads.len())
            .finish()
    }
}

fn compile(rule: &HealthRule, source: String) -> Result<Compiled, (&'static str, String)> {
    let one = |field: &'static str, expr: &str| {
        cel::Program::compile(expr)
            .map(|p| (expr.to_string(), p))
            .map_err(|e| (field, e.to_string()))
    };
    Ok(Compiled {
        source,
        failed: rule
            .failed
            .as_deref()
            .map(|e| one("failed", e))
            .transpose()?,
        progressing: rule
            .progressing
            .as_deref()
            .map(|e| one("progressing", e))
            .transpose()?,
        healthy: one("healthy", &rule.healthy)?,
    })
}

impl HealthRules {
    /// The rules of `fleet`, compiled; one that does not compile is left
    /// out (validation reports it).
    pub fn of(fleet: &Fleet) -> HealthRules {
        let mut out = HealthRules::default();
        for d in &fleet.defaults {
            for (i, r) in d.spec.health.iter().enumerate() {
                if let Ok(c) = compile(r, format!("Defaults spec.health[{i}]")) {
                    out.fleet
                        .entry((r.group.clone(), r.kind.clone()))
                        .or_insert(c);
                }
            }
        }
        for w in &fleet.workloads {
            for (i, r) in w.spec.health.iter().enumerate() {
                if let Ok(c) = compile(r, format!("Workload {} spec.health[{i}]", w.name())) {
                    out.workloads
                        .entry((w.name().to_string(), r.group.clone(), r.kind.clone()))
                        .or_insert(c);
                }
            }
        }
        out
    }

    /// The rules that judge the objects of workload `w`, as `Kind.group:
    /// where the rule is written`, its own first: what `explain` says.
    pub fn for_workload(&self, w: &str) -> Vec<String> {
        let name = |g: &str, k: &str| {
            if g.is_empty() {
                k.to_string()
            } else {
                format!("{k}.{g}")
            }
        };
        let own: Vec<(String, String)> = self
            .workloads
            .iter()
            .filter(|((wl, _, _), _)| wl == w)
            .map(|((_, g, k), c)| (name(g, k), c.source.clone()))
            .collect();
        let fleet = self
            .fleet
            .iter()
            .map(|((g, k), c)| (name(g, k), c.source.clone()))
            .filter(|(kind, _)| !own.iter().any(|(o, _)| o == kind));
        own.iter()
            .cloned()
            .chain(fleet)
            .map(|(kind, src)| format!("{kind}: {src}"))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.fleet.is_empty() && self.workloads.is_empty()
    }

    /// What the rule for `obj`'s kind says of it (its workload's, else the
    /// fleet's); `None` when no rule is written for it.
    pub fn judge(&self, obj: &Value) -> Option<Health> {
        if self.is_empty() {
            return None;
        }
        let (group, kind) = group_kind(obj);
        let workload = obj
            .pointer("/metadata/labels")
            .and_then(|l| l.get(LABEL_WORKLOAD))
            .and_then(Value::as_str);
        let rule = workload
            .and_then(|w| {
                self.workloads
                    .get(&(w.to_string(), group.to_string(), kind.to_string()))
            })
            .or_else(|| self.fleet.get(&(group.to_string(), kind.to_string())))?;
        Some(evaluate(rule, obj))
    }
}

/// An object's API group and kind.
fn group_kind(obj: &Value) -> (&str, &str) {
    (
        obj.get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|a| a.rsplit_once('/'))
            .map_or("", |(g, _)| g),
        obj.get("kind").and_then(Value::as_str).unwrap_or(""),
    )
}

fn evaluate(rule: &Compiled, obj: &Value) -> Health {
    let mut ctx = cel::Context::default();
    let empty = Value::Object(serde_json::Map::new());
    let mut add = |name: &str, v: &Value| ctx.add_variable(name, v.clone()).is_ok();
    let ok = add("self", obj)
        && ["metadata", "spec", "status"]
            .iter()
            .all(|f| add(f, obj.get(*f).unwrap_or(&empty)));
    if !ok {
        return Health::Progressing(format!(
            "{}: the object cannot be given to its expressions",
            rule.source
        ));
    }
    let mut errors = Vec::new();
    let mut holds = |(expr, program): &(String, cel::Program)| match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => b,
        Ok(other) => {
            errors.push(format!("`{expr}` gave {other:?}, not a bool"));
            false
        }
        Err(e) => {
            errors.push(format!("`{expr}`: {e}"));
            false
        }
    };
    if let Some(f) = rule.failed.as_ref().filter(|f| holds(f)) {
        return Health::Failed(format!("{}: failed holds: `{}`", rule.source, f.0));
    }
    if let Some(p) = rule.progressing.as_ref().filter(|p| holds(p)) {
        return Health::Progressing(format!("{}: progressing holds: `{}`", rule.source, p.0));
    }
    if holds(&rule.healthy) {
        return Health::Healthy;
    }
    let why = if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    };
    Health::Progressing(format!(
        "{}: healthy does not hold yet: `{}`{why}",
        rule.source, rule.healthy.0
    ))
}

/// Validation: every rule names a kind, once per document, and every
/// expression compiles; each error at its YAML path.
pub fn check(fleet: &Fleet) -> Diagnostics {
    let mut d = Diagnostics::default();
    let docs = fleet
        .defaults
        .iter()
        .map(|x| (&x.spec.health, &x.source))
        .chain(fleet.workloads.iter().map(|w| (&w.spec.health, &w.source)));
    for (rules, src) in docs {
        check_rules(rules, src, &mut d);
    }
    d
}

fn check_rules(rules: &[HealthRule], src: &Source, d: &mut Diagnostics) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let at = YamlPath::parse("spec.health").index(i);
        if r.kind.is_empty() {
            d.push(
                Diagnostic::error("a health rule names no kind")
                    .at(&src.loc(&at.key("kind")))
                    .hint("write the kind it judges, and its group (`cert-manager.io`; `\"\"` or nothing for the core group)"),
            );
        }
        if !seen.insert((&r.group, &r.kind)) {
            d.push(
                Diagnostic::error(format!(
                    "a second health rule for {}{}{}",
                    r.kind,
                    if r.group.is_empty() { "" } else { "." },
                    r.group
                ))
                .at(&src.loc(&at))
                .hint("one rule per group and kind: merge them"),
            );
        }
        if let Err((field, e)) = compile(r, String::new()) {
            d.push(
                Diagnostic::error(format!("health rule {field} is not a CEL expression: {e}"))
                    .at(&src.loc(&at.key(field)))
                    .hint("write a CEL expression that gives a bool, e.g. status.phase == 'Ready'"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A fleet of `defaults.yaml` and `workloads/web/workload.yaml`
    /// (documents split at a line `---`).
    fn fleet(text: &str) -> (Fleet, Diagnostics) {
        let files: Vec<(String, Vec<u8>)> = text
            .split("---\n")
            .map(|doc| {
                let path = if doc.contains("kind: Workload") {
                    "workloads/web/workload.yaml"
                } else {
                    "defaults.yaml"
                };
                (path.to_string(), doc.as_bytes().to_vec())
            })
            .collect();
        let (fleet, d) = crate::core::load::load_files("f".into(), files);
        assert!(!d.has_errors(), "{d:?}");
        let checked = check(&fleet);
        (fleet, checked)
    }

    const DEFAULTS: &str = "apiVersion: canopy.dev/v1alpha1
kind: Defaults
metadata: {name: d}
spec:
  health:
    - group: example.com
      kind: Widget
      healthy: status.phase == 'Ready'
      failed: status.phase == 'Failed'
      progressing: status.phase == 'Pending'
---
apiVersion: canopy.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  health:
    - {group: example.com, kind: Widget, healthy: \"has(status.ready) && status.ready\"}
";

    fn widget(workload: &str, status: Value) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "labels": {"canopy.dev/workload": workload}}, "status": status})
    }

    /// A kind whose status has no conditions (a phase field): the rule
    /// says what the generic rule cannot.
    #[test]
    fn a_phase_is_judged_by_the_rule_a_workloads_own_first() {
        let (f, d) = fleet(DEFAULTS);
        assert!(!d.has_errors(), "{d:?}");
        let rules = HealthRules::of(&f);
        let judge = |w: &str, s: Value| rules.judge(&widget(w, s)).unwrap();
        assert_eq!(judge("api", json!({"phase": "Ready"})), Health::Healthy);
        assert!(matches!(judge("api", json!({"phase": "Failed"})),
            Health::Failed(m) if m == "Defaults spec.health[0]: failed holds: `status.phase == 'Failed'`"));
        assert!(matches!(judge("api", json!({"phase": "Pending"})),
            Health::Progressing(m) if m.contains("progressing holds")));
        // Nothing written yet: the expression cannot read the field.
        assert!(matches!(judge("api", json!(null)),
            Health::Progressing(m) if m.starts_with("Defaults spec.health[0]: healthy does not hold yet: `status.phase == 'Ready'` (")));
        // The workload's own rule comes first.
        assert_eq!(judge("web", json!({"ready": true})), Health::Healthy);
        assert!(matches!(judge("web", json!({"phase": "Ready"})),
            Health::Progressing(m) if m.starts_with("Workload web spec.health[0]")));
        assert_eq!(
            rules.for_workload("web"),
            vec!["Widget.example.com: Workload web spec.health[0]"]
        );
        assert_eq!(
            rules.for_workload("api"),
            vec!["Widget.example.com: Defaults spec.health[0]"]
        );
        // Another kind has no rule here.
        assert_eq!(
            rules.judge(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
            ),
            None
        );
    }

    #[test]
    fn a_rule_that_does_not_compile_is_reported_where_it_is_written() {
        let (_, d) = fleet(
            "apiVersion: canopy.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  health:
    - {group: example.com, kind: Widget, healthy: \"status.phase ==\"}
    - {group: example.com, kind: Widget, healthy: \"true\"}
    - {kind: \"\", healthy: \"true\"}
",
        );
        let text = format!("{d:?}");
        assert_eq!(d.errors().count(), 3, "{text}");
        assert!(
            text.contains("health rule healthy is not a CEL expression"),
            "{text}"
        );
        assert!(
            text.contains("a second health rule for Widget.example.com"),
            "{text}"
        );
        assert!(text.contains("a health rule names no kind"), "{text}");
        let first = d.errors().next().unwrap().to_string();
        assert!(first.contains("workloads/web/workload.yaml:6"), "{first}");
    }
}
