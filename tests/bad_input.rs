//! Bad input: every problem is reported with its file, line and YAML path,
//! says what to do, and nothing stops at the first error.

mod common;
use common::*;

#[test]
fn base_fleet_is_valid() {
    let dir = with(&[]);
    let p = problems(dir.path());
    assert!(p.iter().all(|l| !l.starts_with("error")), "{p:#?}");
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let dir = with(&[("clusters.yaml", "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: hub\n  labels: {tier: hub\n")]);
    let e = the_error(dir.path());
    assert!(
        e.starts_with("error: clusters.yaml:6: malformed YAML: "),
        "{e}"
    );
    assert!(e.contains("help: fix the YAML syntax near line 6"), "{e}");
}

#[test]
fn unknown_kind_is_reported() {
    let dir = with(&[(
        "extra.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Clustr\nmetadata:\n  name: x\n",
    )]);
    let e = the_error(dir.path());
    assert_eq!(
        e,
        "error: extra.yaml:2: kind: unknown kind \"Clustr\"\n  help: canopy.dev/v1alpha1 kinds are Cluster, Workload, Override, Defaults and Tenant"
    );
}

#[test]
fn rollout_mistakes_are_reported_with_their_lines() {
    let dir = with(&[(
        "defaults.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Defaults\nmetadata: {name: d}\nspec:\n  rollout:\n    pause: soon\n    stages:\n      - {percent: 50}\n      - {percent: 20}\n      - {clusters: {names: [nowhere]}, percent: 10}\n    maxUnavailable: \"lots\"\n",
    )]);
    let errs: Vec<String> = problems(dir.path())
        .into_iter()
        .filter(|p| p.starts_with("error"))
        .collect();
    let expect = [
        "defaults.yaml:6: spec.rollout.pause: pause \"soon\" is neither `manual` nor a duration",
        "defaults.yaml:9: spec.rollout.stages[1].percent: stage percent 20 must be within 1..=100 and not below the stage before (50)",
        "defaults.yaml:10: spec.rollout.stages[2]: a rollout stage needs exactly one of `clusters` and `percent`",
        "defaults.yaml:11: spec.rollout.maxUnavailable: maxUnavailable \"lots\" is neither a count nor a percentage",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|x| x.contains(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn kubernetes_manifest_outside_a_workload_is_an_unknown_kind() {
    let dir = with(&[(
        "stray.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
    )]);
    let e = the_error(dir.path());
    assert!(
        e.starts_with(
            "error: stray.yaml:2: kind: unknown kind ConfigMap (v1) outside a workload's manifests"
        ),
        "{e}"
    );
    assert!(e.contains("workloads/<name>/"), "{e}");
}

#[test]
fn unknown_field_is_denied_with_its_path_and_line() {
    let dir = with(&[(
        "clusters.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: hub\nspec:\n  capacity:\n    cpu: \"4\"\n    gpus: 2\n",
    )]);
    let e = the_error(dir.path());
    assert!(
        e.starts_with(
            "error: clusters.yaml:8: spec.capacity.gpus: unknown field `gpus`, expected one of"
        ),
        "{e}"
    );
    assert!(
        e.contains("help: remove the field or fix its spelling"),
        "{e}"
    );
}

#[test]
fn live_capacity_needs_a_kubernetes_cluster() {
    let dir = with(&[(
        "clusters.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: hub\nspec:\n  liveCapacity: true\n",
    )]);
    assert_eq!(
        the_error(dir.path()),
        "error: clusters.yaml:6: spec.liveCapacity: liveCapacity needs a Kubernetes cluster (spec.connection)\n  help: a cluster in the local backend has no nodes to read: give it spec.capacity instead"
    );
}

#[test]
fn unknown_parent_suggests_the_right_name() {
    let dir = with(&[(
        "clusters.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: hub\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: edge\nspec:\n  parent: hbu\n",
    )]);
    assert_eq!(
        the_error(dir.path()),
        "error: clusters.yaml:11: spec.parent: unknown parent \"hbu\": no Cluster has that name\n  help: did you mean \"hub\"?"
    );
}

#[test]
fn a_cycle_is_reported_at_every_member() {
    let dir = with(&[(
        "clusters.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec: {parent: c}\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: b}\nspec: {parent: a}\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec: {parent: b}\n",
    )]);
    let errs: Vec<String> = problems(dir.path())
        .into_iter()
        .filter(|p| p.starts_with("error"))
        .collect();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    for (line, e) in [4, 9, 14].iter().zip(&errs) {
        assert_eq!(
            e,
            &format!("error: clusters.yaml:{line}: spec.parent: cycle in cluster parents: a → c → b → a\n  help: every chain of parents must end at a root (a cluster without spec.parent)")
        );
    }
}

#[test]
fn duplicate_cluster_names_name_both_places() {
    let dir = with(&[(
        "more.yaml",
        "# another hub\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: hub\n",
    )]);
    let e = the_error(dir.path());
    assert_eq!(
        e,
        "error: more.yaml:5: metadata.name: duplicate Cluster name \"hub\": also defined in clusters.yaml:4\n  help: Cluster names must be unique across the fleet; rename one of them"
    );
}

#[test]
fn invalid_selector_operator() {
    let dir = with(&[(
        "workloads/web/workload.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  placement:\n    clusters:\n      selector:\n        matchExpressions:\n          - {key: tier, operator: Equals, values: [edge]}\n",
    )]);
    let e = the_error(dir.path());
    assert!(
        e.starts_with("error: workloads/web/workload.yaml:10: spec.placement.clusters.selector.matchExpressions[0].operator: unknown variant `Equals`, expected one of `In`, `NotIn`, `Exists`, `DoesNotExist`"),
        "{e}"
    );
}

#[test]
fn selector_operator_values_follow_kubernetes_rules() {
    let dir = with(&[(
        "workloads/web/workload.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  placement:\n    clusters:\n      selector:\n        matchExpressions:\n          - key: tier\n            operator: In\n",
    )]);
    assert_eq!(
        the_error(dir.path()),
        "error: workloads/web/workload.yaml:11: spec.placement.clusters.selector.matchExpressions[0].operator: operator In needs at least one value\n  help: add values: [...], or use Exists / DoesNotExist"
    );
}

#[test]
fn json_patch_that_does_not_apply_names_override_cluster_object_and_path() {
    let dir = with(&[(
        "overrides.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Override\nmetadata:\n  name: edge-limits\nspec:\n  clusters: {names: [edge]}\n  patches:\n    - jsonPatch:\n        - {op: replace, path: /spec/replicas, value: 1}\n        - {op: replace, path: /spec/template/spec/containers/3/image, value: x}\n",
    )]);
    assert_eq!(
        the_error(dir.path()),
        "error: overrides.yaml:10: spec.patches[0].jsonPatch[1]: override \"edge-limits\": jsonPatch operation 1 on path /spec/template/spec/containers/3/image does not apply to Deployment.apps shop/web on cluster edge: path is invalid\n  help: check the path exists in the rendered object (`canopy render --cluster`), or use `add` / a mergePatch to create it"
    );
}

#[test]
fn template_error_names_file_line_and_cluster() {
    let dir = with(&[(
        "workloads/web/config.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  region: \"{{ cluster.values.region }}\"\n",
    )]);
    let errs: Vec<String> = problems(dir.path())
        .into_iter()
        .filter(|p| p.starts_with("error"))
        .collect();
    assert_eq!(errs.len(), 2, "one per cluster: {errs:#?}");
    assert!(
        errs[0].starts_with(
            "error: workloads/web/config.yaml.j2:6: template error while rendering for cluster "
        ),
        "{}",
        errs[0]
    );
    assert!(errs[0].contains("undefined value"), "{}", errs[0]);
    assert!(
        errs[0].contains("undefined names are errors"),
        "{}",
        errs[0]
    );
}

#[test]
fn template_error_inside_a_block_tag_still_has_its_line() {
    // `{% if %}` makes this a text template; the line comes from minijinja.
    let dir = with(&[(
        "workloads/web/config.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n{% if cluster.name == 'edge' %}\n  edge: \"{{ cluster.nope }}\"\n{% endif %}\n",
    )]);
    let e = the_error(dir.path());
    assert!(
        e.starts_with(
            "error: workloads/web/config.yaml.j2:7: template error while rendering for cluster edge"
        ),
        "{e}"
    );
}

#[test]
fn path_escaping_the_repo_root_is_refused() {
    let dir = with(&[(
        "workloads/web/workload.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  manifests:\n    - deployment.yaml\n    - ../../../etc/*.yaml\n",
    )]);
    assert_eq!(
        the_error(dir.path()),
        "error: workloads/web/workload.yaml:8: spec.manifests[1]: manifest glob \"../../../etc/*.yaml\" escapes the repo root\n  help: globs are relative to the workload's folder and may not use `..` or start with `/`"
    );
}

#[cfg(unix)]
#[test]
fn symlink_out_of_the_repo_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
    )
    .unwrap();
    let dir = with(&[]);
    std::os::unix::fs::symlink(
        outside.path().join("secret.yaml"),
        dir.path().join("workloads/web/linked.yaml"),
    )
    .unwrap();
    let e = the_error(dir.path());
    assert!(
        e.starts_with(
            "error: workloads/web/linked.yaml: symbolic link points outside the fleet repository"
        ),
        "{e}"
    );
}

/// A loop of links, a dangling link and a FIFO each get their own error
/// (they used to be "points outside the fleet repository", or for the
/// FIFO, nothing), and reading never blocks on the FIFO.
#[cfg(unix)]
#[test]
fn links_that_cannot_be_read_and_fifos_are_named_for_what_they_are() {
    use std::os::unix::fs::symlink;
    let dir = with(&[]);
    let web = dir.path().join("workloads/web");
    symlink(web.join("a.yaml"), web.join("a.yaml")).unwrap();
    let e = the_error(dir.path());
    assert!(
        e.starts_with("error: workloads/web/a.yaml: symbolic link cannot be followed:")
            && e.contains("loop of links"),
        "{e}"
    );
    std::fs::remove_file(web.join("a.yaml")).unwrap();
    symlink(web.join("missing.yaml"), web.join("b.yaml")).unwrap();
    let e = the_error(dir.path());
    assert!(
        e.starts_with("error: workloads/web/b.yaml: symbolic link cannot be followed:")
            && e.contains("dangling"),
        "{e}"
    );
    std::fs::remove_file(web.join("b.yaml")).unwrap();
    let fifo = std::ffi::CString::new(web.join("pipe.yaml").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert_eq!(
        the_error(dir.path()),
        "error: workloads/web/pipe.yaml: not a regular file (a FIFO, socket or device)\n  help: canopy reads only regular files; remove it or rename it away from .yaml"
    );
    symlink(web.join("pipe.yaml"), web.join("to-pipe.yaml")).unwrap();
    std::fs::remove_file(web.join("pipe.yaml")).unwrap();
    std::fs::create_dir(web.join("dir.yaml")).unwrap();
    std::fs::remove_file(web.join("to-pipe.yaml")).unwrap();
    symlink(web.join("dir.yaml"), web.join("to-dir.yaml")).unwrap();
    let e = the_error(dir.path());
    assert!(
        e.starts_with("error: workloads/web/to-dir.yaml: symbolic link points to something that is not a regular file"),
        "{e}"
    );
}

#[test]
fn divided_workload_without_replicas_field() {
    let dir = with(&[
        (
            "workloads/web/workload.yaml",
            "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  placement:\n    replicas:\n      mode: Divided\n",
        ),
        (
            "workloads/web/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template: {}\n",
        ),
    ]);
    assert_eq!(
        the_error(dir.path()),
        "error: workloads/web/workload.yaml:7: spec.placement.replicas: Deployment.apps web in workloads/web/deployment.yaml has no spec.replicas to divide\n  help: set spec.replicas in the manifest or spec.placement.replicas.total here"
    );
}

#[test]
fn divided_workload_with_nothing_replicated() {
    let dir = with(&[
        (
            "workloads/web/workload.yaml",
            "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  placement:\n    replicas: {mode: Divided}\n",
        ),
        ("workloads/web/deployment.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n"),
    ]);
    let e = the_error(dir.path());
    assert!(
        e.contains("spec.placement.replicas: Divided workload has no object with a replicas field"),
        "{e}"
    );
}

#[test]
fn all_zero_weights_is_an_error() {
    let dir = with(&[(
        "workloads/web/workload.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  placement:\n    replicas:\n      mode: Divided\n      weights: {dynamic: capacity}\n",
    )]);
    assert_eq!(
        the_error(dir.path()),
        "error: workloads/web/workload.yaml:6: spec.placement: workload \"web\": every chosen cluster has weight 0, so 4 replicas cannot be divided\n  help: widen spec.placement.clusters, add tolerations, or give the chosen clusters weight (static weights or capacity)"
    );
}

#[test]
fn two_objects_with_one_identity_name_both_sources() {
    let dir = with(&[
        ("workloads/web/again.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec: {replicas: 1}\n"),
    ]);
    let errs: Vec<String> = problems(dir.path())
        .into_iter()
        .filter(|p| p.starts_with("error"))
        .collect();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].contains("Deployment.apps shop/web is rendered twice for cluster edge: by workload \"web\" from workloads/web/again.yaml and by workload \"web\" from workloads/web/deployment.yaml")
        || errs[0].contains("Deployment.apps shop/web is rendered twice for cluster edge: by workload \"web\" from workloads/web/deployment.yaml and by workload \"web\" from workloads/web/again.yaml"), "{errs:#?}");
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let dir = with(&[
        (
            "clusters.yaml",
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: Hub\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: edge\nspec:\n  parent: nowhere\n  capacity: {cpu: lots}\n",
        ),
        ("broken.yaml", "a: [\n"),
        (
            "workloads/web/workload.yaml",
            "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  placement:\n    clusters: {names: [edg]}\n",
        ),
    ]);
    let errs: Vec<String> = problems(dir.path())
        .into_iter()
        .filter(|p| p.starts_with("error"))
        .collect();
    let joined = errs.join("\n");
    for want in [
        "broken.yaml:2: malformed YAML",
        "clusters.yaml:4: metadata.name: Cluster name \"Hub\" is not a DNS-1123 label",
        "clusters.yaml:11: spec.parent: unknown parent \"nowhere\"",
        "clusters.yaml:12: spec.capacity.cpu: \"lots\" is not a Kubernetes quantity",
        "workloads/web/workload.yaml:7: spec.placement.clusters.names[0]: unknown cluster \"edg\"",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert_eq!(errs.len(), 5, "{joined}");
}

#[test]
fn cli_exit_codes() {
    let dir = with(&[("clusters.yaml", "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: hub}\nspec: {parent: ghost}\n")]);
    let out = run(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clusters.yaml:4: spec.parent: unknown parent \"ghost\""),
        "{err}"
    );
    let out = run(&["validate", "/no/such/fleet"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["render", "fleet-example", "--cluster", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown cluster \"nope\""));
    let out = run(&["explain", "fleet-example", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["validate", "fleet-example"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_retained_field_must_be_a_json_pointer() {
    let dir = with(&[(
        "workloads/web/workload.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  namespace: shop\n  retain:\n    - kind: Deployment\n      jsonPointers: [/spec/replicas, spec.template]\n",
    )]);
    let e = the_error(dir.path());
    assert_eq!(
        e,
        "error: workloads/web/workload.yaml:9: spec.retain[0].jsonPointers[1]: \"spec.template\" is not a JSON pointer to a field\n  help: write it like /spec/replicas (RFC 6901: `~1` for `/` inside a key)"
    );
}

const TENANT: &str = "apiVersion: canopy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: shop}\nspec:\n  workloads: [web]\n  clusters: {names: [edge]}\n  namespaces: [shop, shop-*]\n";
const ON_EDGE: &str = "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: web\nspec:\n  namespace: shop\n  placement:\n    clusters: {names: [edge]}\n";

/// Tenancy rules, each broken once, through `validate`'s checks (load,
/// validate, the dry render): the exact message, and the allowed case.
#[test]
fn tenancy_rules_break_validate_with_the_rule_and_the_place() {
    // Allowed: the tenant's workload on the tenant's cluster and namespace.
    let ok = with(&[
        ("tenants/shop.yaml", TENANT),
        ("workloads/web/workload.yaml", ON_EDGE),
    ]);
    assert!(
        problems(ok.path()).iter().all(|p| !p.starts_with("error")),
        "{:#?}",
        problems(ok.path())
    );
    let denying = format!("{TENANT}  deny: [{{group: rbac.authorization.k8s.io, kind: '*'}}]\n");
    let cases: Vec<(Vec<(&'static str, &str)>, &str)> = vec![
        // Placed beyond the tenant's clusters.
        (
            vec![("tenants/shop.yaml", TENANT)],
            "error: workloads/web/workload.yaml:5: spec.placement.clusters: workload \"web\" of tenant \"shop\" is placed on clusters outside the tenant's: hub\n  help: narrow spec.placement.clusters to the clusters tenants/shop.yaml gives the tenant (spec.clusters)",
        ),
        // A cluster-scoped kind it is not allowed.
        (
            vec![
                ("tenants/shop.yaml", TENANT),
                ("workloads/web/workload.yaml", ON_EDGE),
                ("workloads/web/rbac.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: shop-admin}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects: [{kind: User, name: mallory}]\n"),
            ],
            "error: workloads/web/rbac.yaml:5: workload \"web\" of tenant \"shop\": ClusterRoleBinding shop-admin: cluster-scoped kind ClusterRoleBinding.rbac.authorization.k8s.io is not allowed to tenant \"shop\"\n  help: the tenant's rules are in tenants/shop.yaml: move the object to one of its namespaces, or ask the platform to allow the kind",
        ),
        // Another team's namespace.
        (
            vec![
                ("tenants/shop.yaml", TENANT),
                ("workloads/web/workload.yaml", ON_EDGE),
                ("workloads/web/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: steal, namespace: payments}\n"),
            ],
            "error: workloads/web/cm.yaml:1: workload \"web\" of tenant \"shop\": ConfigMap steal: namespace \"payments\" is not one of tenant \"shop\"'s namespaces (shop, shop-*)\n  help: the tenant's rules are in tenants/shop.yaml: move the object to one of its namespaces, or ask the platform to allow the kind",
        ),
        // A denied kind, even namespaced.
        (
            vec![
                ("tenants/shop.yaml", &denying),
                ("workloads/web/workload.yaml", ON_EDGE),
                ("workloads/web/role.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\nrules: []\n"),
            ],
            "error: workloads/web/role.yaml:1: workload \"web\" of tenant \"shop\": Role r: kind Role.rbac.authorization.k8s.io is denied to tenant \"shop\"\n  help: the tenant's rules are in tenants/shop.yaml: move the object to one of its namespaces, or ask the platform to allow the kind",
        ),
        // A template renders into another namespace on one cluster.
        (
            vec![
                ("tenants/shop.yaml", TENANT),
                ("workloads/web/workload.yaml", ON_EDGE),
                ("workloads/web/cm.yaml.j2", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: \"{{ cluster.name }}-ns\"}\n"),
            ],
            "error: workloads/web/cm.yaml.j2: workload \"web\" of tenant \"shop\": ConfigMap c: namespace \"edge-ns\" is not one of tenant \"shop\"'s namespaces (shop, shop-*) (rendered for cluster edge)\n  help: the tenant's rules are in tenants/shop.yaml: move the object to one of its namespaces, or ask the platform to allow the kind",
        ),
        // Strict mode: a workload no tenant owns.
        (
            vec![
                ("defaults.yaml", "apiVersion: canopy.dev/v1alpha1\nkind: Defaults\nmetadata: {name: d}\nspec:\n  tenancy: {strict: true}\n"),
            ],
            "error: workloads/web/workload.yaml:4: metadata.name: workload \"web\" belongs to no tenant, and the fleet is strict (Defaults spec.tenancy.strict)\n  help: list the workload in a Tenant's spec.workloads",
        ),
        // Two tenants claim one workload.
        (
            vec![
                ("tenants/shop.yaml", TENANT),
                ("tenants/web.yaml", "apiVersion: canopy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: webteam}\nspec:\n  workloads: [w*]\n  namespaces: [shop]\n"),
                ("workloads/web/workload.yaml", ON_EDGE),
            ],
            "error: workloads/web/workload.yaml:4: metadata.name: workload \"web\" is claimed by tenants shop and webteam\n  help: a workload belongs to one tenant: narrow the tenants' spec.workloads",
        ),
    ];
    let got: Vec<(String, &str)> = cases
        .into_iter()
        .map(|(files, want)| (the_error(with(&files).path()), want))
        .collect();
    for (got, want) in &got {
        assert_eq!(got, want);
    }
}
