//! Tenancy: who may put what where. A `Tenant` owns workloads (by name or
//! glob) and says where they may land, which namespaces their objects may
//! be in and which kinds they may write (namespaced kinds unless denied,
//! cluster-scoped kinds only when allowed). The workload's own manifests
//! are the tenant's; overrides are the platform's and are not held to it.
//! Checked without clusters, so every pull request sees a breach before
//! anything is applied: placement and plain manifests once per fleet,
//! templated manifests per cluster as they render.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::model::{Fleet, KindRule, ObjectKey, Tenant};
use crate::core::yaml::YamlPath;

/// The tenants of a fleet, compiled, and which workload each owns.
#[derive(Debug, Clone, Default)]
pub struct Tenancy {
    /// Per workload (parallel to `fleet.workloads`): its tenant's index
    /// in `fleet.tenants`, `None` for the platform's.
    pub owner: Vec<Option<usize>>,
    /// Per tenant: its namespaces.
    namespaces: Vec<Names>,
}

/// Names matched by patterns: literal names by a set and `*` by a flag, so
/// the common cases cost no glob match; real globs by a [`GlobSet`].
#[derive(Debug, Clone, Default)]
struct Names {
    any: bool,
    exact: std::collections::HashSet<String>,
    globs: Option<GlobSet>,
}

impl Names {
    fn new(patterns: &[String]) -> Result<Names, String> {
        let mut n = Names::default();
        let mut wild = Vec::new();
        for p in patterns {
            if p == "*" {
                n.any = true;
            } else if p.contains(['*', '?', '[', '{']) {
                wild.push(p.clone());
            } else {
                n.exact.insert(p.clone());
            }
        }
        if !wild.is_empty() {
            n.globs = Some(globs(&wild)?);
        }
        Ok(n)
    }

    fn is_match(&self, name: &str) -> bool {
        self.any
            || self.exact.contains(name)
            || self.globs.as_ref().is_some_and(|g| g.is_match(name))
    }
}

/// `patterns` (names or globs) compiled into one matcher.
pub fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| format!("{p:?} is not a valid pattern: {e}"))?);
    }
    b.build().map_err(|e| e.to_string())
}

fn kind_matches(rules: &[KindRule], group: &str, kind: &str) -> bool {
    rules
        .iter()
        .any(|r| (r.group == "*" || r.group == group) && (r.kind == "*" || r.kind == kind))
}

impl Tenancy {
    /// Compiles the tenants of `fleet` and finds each workload's owner;
    /// problems (a bad pattern, a workload two tenants claim, a workload
    /// no tenant owns in strict mode) go to `d`.
    pub fn new(fleet: &Fleet, d: &mut Diagnostics) -> Tenancy {
        let mut seen: std::collections::BTreeMap<&str, &Tenant> = Default::default();
        let mut workloads = Vec::with_capacity(fleet.tenants.len());
        let mut namespaces = Vec::with_capacity(fleet.tenants.len());
        for t in &fleet.tenants {
            if let Some(first) = seen.insert(t.name(), t) {
                d.push(
                    Diagnostic::error(format!(
                        "second Tenant {:?}: the first is in {}",
                        t.name(),
                        first.source.file
                    ))
                    .at(&t.source.loc_str("metadata.name"))
                    .hint("give each tenant its own name"),
                );
            }
            let compiled = |field: &str, patterns: &[String], d: &mut Diagnostics| {
                globs(patterns).unwrap_or_else(|e| {
                    d.push(
                        Diagnostic::error(e)
                            .at(&t.source.loc_str(&format!("spec.{field}")))
                            .hint("write names, or globs with * and ?"),
                    );
                    GlobSet::empty()
                })
            };
            workloads.push(compiled("workloads", &t.spec.workloads, d));
            namespaces.push(Names::new(&t.spec.namespaces).unwrap_or_else(|e| {
                d.push(
                    Diagnostic::error(e)
                        .at(&t.source.loc_str("spec.namespaces"))
                        .hint("write names, or globs with * and ?"),
                );
                Names::default()
            }));
            if let Some(sa) = &t.spec.service_account {
                if sa.namespace.is_empty() || sa.name.is_empty() {
                    d.push(
                        Diagnostic::error("spec.serviceAccount needs a namespace and a name")
                            .at(&t.source.loc_str("spec.serviceAccount")),
                    );
                }
            }
        }
        let strict = fleet
            .defaults
            .first()
            .is_some_and(|d| d.spec.tenancy.strict);
        let owner = fleet
            .workloads
            .iter()
            .map(|w| {
                let claims: Vec<usize> = (0..fleet.tenants.len())
                    .filter(|&t| workloads[t].is_match(w.name()))
                    .collect();
                match claims.as_slice() {
                    [] => {
                        if strict {
                            d.push(
                                Diagnostic::error(format!(
                                    "workload {:?} belongs to no tenant, and the fleet is strict (Defaults spec.tenancy.strict)",
                                    w.name()
                                ))
                                .at(&w.source.loc_str("metadata.name"))
                                .hint("list the workload in a Tenant's spec.workloads"),
                            );
                        }
                        None
                    }
                    [t] => Some(*t),
                    many => {
                        let names: Vec<&str> =
                            many.iter().map(|&t| fleet.tenants[t].name()).collect();
                        d.push(
                            Diagnostic::error(format!(
                                "workload {:?} is claimed by tenants {}",
                                w.name(),
                                names.join(" and ")
                            ))
                            .at(&w.source.loc_str("metadata.name"))
                            .hint("a workload belongs to one tenant: narrow the tenants' spec.workloads"),
                        );
                        Some(many[0])
                    }
                }
            })
            .collect();
        Tenancy { owner, namespaces }
    }

    /// Whether tenant `t` may write the object `key` (`namespaced` as the
    /// render scoped it; an object that names no namespace is in the
    /// workload's, `workload_ns`, else in `default`); `None` when it may,
    /// else the rule broken. The render asks for every object of every
    /// cluster: an allowed object costs a few comparisons and no
    /// allocation.
    pub fn breach(
        &self,
        tenant: &Tenant,
        t: usize,
        key: &ObjectKey,
        workload_ns: Option<&str>,
        namespaced: bool,
    ) -> Option<String> {
        let spec = &tenant.spec;
        let ns = match (key.namespace.as_str(), workload_ns) {
            ("", Some(w)) if !w.is_empty() => w,
            ("", _) => "default",
            (ns, _) => ns,
        };
        let denied = kind_matches(&spec.deny, &key.group, &key.kind);
        let own_namespace = key.group.is_empty()
            && key.kind == "Namespace"
            && self.namespaces[t].is_match(&key.name);
        let allowed = if namespaced {
            self.namespaces[t].is_match(ns)
        } else {
            own_namespace || kind_matches(&spec.allow, &key.group, &key.kind)
        };
        if allowed && !denied {
            return None;
        }
        let what = format!("{} {}", key.kind, key.name);
        Some(if denied {
            format!(
                "{what}: kind {} is denied to tenant {:?}",
                group_kind(key),
                tenant.name()
            )
        } else if namespaced || key.kind == "Namespace" {
            let ns = if namespaced { ns } else { key.name.as_str() };
            format!(
                "{what}: namespace {ns:?} is not one of tenant {:?}'s namespaces ({})",
                tenant.name(),
                spec.namespaces.join(", ")
            )
        } else {
            format!(
                "{what}: cluster-scoped kind {} is not allowed to tenant {:?}",
                group_kind(key),
                tenant.name()
            )
        })
    }
}

fn group_kind(key: &ObjectKey) -> String {
    if key.group.is_empty() {
        key.kind.clone()
    } else {
        format!("{}.{}", key.kind, key.group)
    }
}

/// The diagnostic for a breach of tenant `tenant` by workload `workload`'s
/// object in `file` (at `line`, 0 when unknown).
pub fn breach_diag(
    tenant: &Tenant,
    workload: &str,
    file: &str,
    line: usize,
    breach: &str,
) -> Diagnostic {
    Diagnostic::error(format!("workload {workload:?} of tenant {:?}: {breach}", tenant.name()))
        .in_file(file, line)
        .hint(format!(
            "the tenant's rules are in {}: move the object to one of its namespaces, or ask the platform to allow the kind",
            tenant.source.file
        ))
}

/// The placement check: a tenant's workload lands only where the tenant
/// may (`chosen`: the clusters its placement chooses; `allowed`: the
/// tenant's).
pub fn placement_breach(
    fleet: &Fleet,
    topo: &crate::core::topology::Topology,
    wi: usize,
    tenant: &Tenant,
    chosen: &[bool],
    allowed: impl Fn(usize) -> bool,
) -> Option<Diagnostic> {
    let outside: Vec<&str> = (0..topo.len())
        .filter(|&c| chosen[c] && !allowed(c))
        .map(|c| topo.name(c))
        .collect();
    if outside.is_empty() {
        return None;
    }
    let w = &fleet.workloads[wi];
    let shown = outside.len().min(5);
    let more = if outside.len() > shown {
        format!(" and {} more", outside.len() - shown)
    } else {
        String::new()
    };
    Some(
        Diagnostic::error(format!(
            "workload {:?} of tenant {:?} is placed on clusters outside the tenant's: {}{more}",
            w.name(),
            tenant.name(),
            outside[..shown].join(", ")
        ))
        .at(&w.source.loc(&YamlPath::parse("spec.placement.clusters")))
        .hint(format!(
            "narrow spec.placement.clusters to the clusters {} gives the tenant (spec.clusters)",
            tenant.source.file
        )),
    )
}

/// Checks, once per fleet, every object of the tenants' workloads that is
/// the same on every cluster (plain manifests, Helm outputs): the object
/// with its line. Templated manifests are checked as they render.
pub fn check_manifests(checked: &crate::core::validate::Checked) -> Diagnostics {
    let mut d = Diagnostics::default();
    let fleet = &checked.fleet;
    let owner = |wi: usize| checked.tenancy.owner[wi];
    // Kinds any CRD of the fleet defines: their scope is known offline.
    let crd_kinds: std::collections::BTreeSet<(String, String)> = checked
        .parsed_objects(|_| true)
        .map(|o| o.value)
        .filter(|o| {
            o.get("kind").and_then(serde_json::Value::as_str) == Some("CustomResourceDefinition")
        })
        .filter_map(|o| {
            Some((
                o.pointer("/spec/group")?.as_str()?.to_string(),
                o.pointer("/spec/names/kind")?.as_str()?.to_string(),
            ))
        })
        .collect();
    // Scoped as the render scopes them, by each workload's own CRDs.
    let crd_scope: std::collections::BTreeMap<usize, _> = (0..fleet.workloads.len())
        .filter(|&wi| owner(wi).is_some())
        .map(|wi| {
            let own = checked.parsed_objects(|w| w == wi).map(|o| o.value);
            (wi, crate::core::render::custom_scopes(own))
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut unknown_seen = std::collections::BTreeSet::new();
    for o in checked.parsed_objects(|wi| owner(wi).is_some()) {
        let t = owner(o.workload).expect("only tenants' workloads");
        let tenant = &fleet.tenants[t];
        let w = &fleet.workloads[o.workload];
        let Some(key) = ObjectKey::of(o.value) else {
            continue;
        };
        let namespaced = crate::core::render::is_namespaced(&key, &crd_scope[&o.workload]);
        let ns = w.spec.namespace.as_deref();
        if !crate::core::kinds::known_offline(&key.group, &key.kind, &crd_kinds)
            && unknown_seen.insert((o.workload, key.group.clone(), key.kind.clone()))
        {
            d.push(
                Diagnostic::warning(format!(
                    "workload {:?} of tenant {:?}: kind {} is neither built in nor defined by a CRD of the fleet, so its scope is unknown here; it is checked against each cluster's discovery before anything of that cluster is written",
                    w.name(),
                    tenant.name(),
                    group_kind(&key)
                ))
                .in_file(&o.file.path, 0)
                .hint("nothing to do if the kind is namespaced; if the cluster serves it cluster-scoped, apply stops that cluster unless the tenant's spec.allow lists it"),
            );
        }
        let Some(b) = checked.tenancy.breach(tenant, t, &key, ns, namespaced) else {
            continue;
        };
        if !seen.insert((o.file.path.clone(), b.clone())) {
            continue;
        }
        d.push(breach_diag(tenant, w.name(), &o.file.path, o.line(), &b));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, kind: &str, ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn kinds_and_namespaces_follow_the_rules() {
        let fleet_text = "apiVersion: canopy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: shop}\nspec:\n  workloads: [shop-*]\n  namespaces: [shop, shop-*]\n  allow: [{group: example.com, kind: Widget}]\n  deny: [{group: rbac.authorization.k8s.io, kind: '*'}]\n";
        let (fleet, d) = crate::core::load::load_files(
            "f".into(),
            vec![("tenants.yaml".into(), fleet_text.as_bytes().to_vec())],
        );
        assert!(!d.has_errors(), "{d:?}");
        let mut d = Diagnostics::default();
        let t = Tenancy::new(&fleet, &mut d);
        assert!(!d.has_errors());
        let tenant = &fleet.tenants[0];
        let b = |k: ObjectKey, namespaced: bool| t.breach(tenant, 0, &k, None, namespaced);
        assert_eq!(b(key("apps", "Deployment", "shop", "web"), true), None);
        assert_eq!(b(key("", "ConfigMap", "shop-eu", "c"), true), None);
        assert_eq!(b(key("", "Namespace", "", "shop-eu"), false), None);
        assert_eq!(b(key("example.com", "Widget", "", "w"), false), None);
        assert_eq!(
            b(key("", "ConfigMap", "payments", "c"), true).unwrap(),
            "ConfigMap c: namespace \"payments\" is not one of tenant \"shop\"'s namespaces (shop, shop-*)"
        );
        assert_eq!(
            b(key("", "Secret", "", "s"), true).unwrap(),
            "Secret s: namespace \"default\" is not one of tenant \"shop\"'s namespaces (shop, shop-*)"
        );
        assert_eq!(
            b(key("", "Namespace", "", "kube-system"), false).unwrap(),
            "Namespace kube-system: namespace \"kube-system\" is not one of tenant \"shop\"'s namespaces (shop, shop-*)"
        );
        assert_eq!(
            b(key("rbac.authorization.k8s.io", "ClusterRoleBinding", "", "admin"), false).unwrap(),
            "ClusterRoleBinding admin: kind ClusterRoleBinding.rbac.authorization.k8s.io is denied to tenant \"shop\""
        );
        assert_eq!(
            b(key("rbac.authorization.k8s.io", "Role", "shop", "r"), true).unwrap(),
            "Role r: kind Role.rbac.authorization.k8s.io is denied to tenant \"shop\""
        );
        assert_eq!(
            b(key("storage.k8s.io", "StorageClass", "", "fast"), false).unwrap(),
            "StorageClass fast: cluster-scoped kind StorageClass.storage.k8s.io is not allowed to tenant \"shop\""
        );
    }
}
