//! The Kubernetes backend against real kube-apiservers (with etcd) that the
//! suite starts on loopback (tests/apiserver): a tree of three clusters,
//! each its own API server, driven through the real `canopy` binary, and
//! checked — or disturbed, as another field manager — with plain API
//! requests. The servers are shared by the tests of this file; each test
//! uses its own fleet name and namespace, so they do not see each other.

#[path = "support/api.rs"]
mod api;
#[path = "support/apiserver.rs"]
mod apiserver;
mod common;
#[path = "support/cut_proxy.rs"]
mod cut_proxy;
#[path = "support/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};

fn servers() -> &'static [apiserver::ApiServer] {
    static SERVERS: OnceLock<Vec<apiserver::ApiServer>> = OnceLock::new();
    // Servers 3 and 4 are only the relays of the relay tests.
    SERVERS.get_or_init(|| apiserver::start_many(5))
}

fn kubeconfig(i: usize) -> PathBuf {
    servers()[i].kubeconfig.clone()
}

/// A kubeconfig like server 0's, but pointing at a port nothing listens on.
fn dead_kubeconfig(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig(0)).unwrap();
    let start = text.find("server: ").expect("a server line");
    let end = start + text[start..].find('\n').unwrap();
    let dead = format!(
        "{}server: https://127.0.0.1:{}{}",
        &text[..start],
        closed_port(),
        &text[end..]
    );
    let p = dir.join("dead-kubeconfig");
    std::fs::write(&p, dead).unwrap();
    p
}

fn closed_port() -> u16 {
    // Bind and drop: the port is free, and nothing listens on it.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fleet: `clusters` are (name, parent, kubeconfig); `files` are the
/// workload files, relative to the fleet folder.
fn fleet(clusters: &[(&str, Option<&str>, &Path)], files: &[(&str, &str)]) -> tempfile::TempDir {
    let mut text = String::new();
    for (name, parent, kc) in clusters {
        text.push_str(&format!(
            "---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  connection: {{kubeconfig: {}}}\n",
            kc.display()
        ));
        if let Some(p) = parent {
            text.push_str(&format!("  parent: {p}\n"));
        }
    }
    let mut all: Vec<(&str, &str)> = vec![("clusters.yaml", &text)];
    all.extend_from_slice(files);
    common::fleet(&all)
}

/// The three servers as a tree: `root` (server 0) with children `a` (1)
/// and `b` (2).
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let (k0, k1, k2) = (kubeconfig(0), kubeconfig(1), kubeconfig(2));
    fleet(
        &[
            ("root", None, &k0),
            ("a", Some("root"), &k1),
            ("b", Some("root"), &k2),
        ],
        files,
    )
}

fn workload(ns: &str) -> String {
    format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: app\nspec:\n  namespace: {ns}\n")
}

/// A namespace, a ConfigMap and a Deployment whose manifest leaves out
/// what the server defaults (strategy, revisionHistoryLimit, a port's
/// protocol) and writes a CPU request as `0.5` (kept as `500m`).
fn objects(ns: &str, color: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: {color}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports: [{{containerPort: 80}}]
          resources: {{requests: {{cpu: "0.5"}}}}
"#
    )
}

/// Runs canopy on a fleet under a fleet name of the test's own.
fn canopy_on(dir: &Path, fleet_name: &str, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = vec!["--fleet-name", fleet_name];
    all.extend_from_slice(args);
    let dir = dir.to_str().unwrap();
    let all: Vec<&str> = all
        .into_iter()
        .map(|a| if a == "DIR" { dir } else { a })
        .collect();
    canopy(&all)
}

/// One API request to server `i`; `body` is sent as JSON with its content
/// type (merge patch, apply patch).
fn request(
    i: usize,
    method: &str,
    path: &str,
    body: Option<(&str, Value)>,
) -> Result<Value, kube::Error> {
    request_at(&kubeconfig(i), method, path, body)
}

/// One API request to the server a kubeconfig names.
fn request_at(
    kubeconfig: &Path,
    method: &str,
    path: &str,
    body: Option<(&str, Value)>,
) -> Result<Value, kube::Error> {
    api::send(kubeconfig, method, path, body)
}

fn get(i: usize, path: &str) -> Value {
    request(i, "GET", path, None).unwrap_or_else(|e| panic!("GET {path} on server {i}: {e}"))
}

fn exists(i: usize, path: &str) -> bool {
    match request(i, "GET", path, None) {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => panic!("GET {path}: {e}"),
    }
}

/// resourceVersion of every object in a namespace (ConfigMaps and
/// Deployments), and of the fleet's inventory.
fn versions(i: usize, ns: &str, fleet: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for path in [
        format!("/api/v1/namespaces/{ns}/configmaps"),
        format!("/apis/apps/v1/namespaces/{ns}/deployments"),
    ] {
        for item in get(i, &path)["items"].as_array().unwrap() {
            out.push((
                item["metadata"]["name"].as_str().unwrap().to_string(),
                item["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ));
        }
    }
    let inv = get(
        i,
        &format!("/api/v1/namespaces/canopy-system/configmaps/inventory-{fleet}"),
    );
    out.push((
        "inventory".into(),
        inv["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string(),
    ));
    out
}

fn cm_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps/{name}")
}

fn write(dir: &Path, rel: &str, text: &str) {
    std::fs::write(dir.join(rel), text).unwrap();
}

#[test]
fn a_tree_of_three_servers_is_applied_and_a_noop_reapply_writes_nothing() {
    let ns = "t-noop";
    let f = tree(&[
        ("workloads/app/workload.yaml", &workload(ns)),
        ("workloads/app/objects.yaml", &objects(ns, "blue")),
    ]);
    let (code, out, err) = canopy_on(f.path(), "noop", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("applied: 9 created, 0 updated, 0 deleted in 3 cluster(s)"),
        "{out}"
    );
    for i in 0..3 {
        let cm = get(i, &cm_path(ns, "settings"));
        assert_eq!(cm["data"]["color"], "blue");
        assert_eq!(cm["metadata"]["labels"]["canopy.dev/fleet"], "noop");
        let managers: Vec<&str> = cm["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["canopy"]);
    }
    let before: Vec<_> = (0..3).map(|i| versions(i, ns, "noop")).collect();
    let (code, out, _) = canopy_on(f.path(), "noop", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("no changes: 3 cluster(s) in sync\n"), "{out}");
    let after: Vec<_> = (0..3).map(|i| versions(i, ns, "noop")).collect();
    assert_eq!(before, after, "a no-op apply must write nothing");
    // Defaulted fields (strategy, revisionHistoryLimit, protocol) and the
    // server's spelling of the CPU request are no drift.
    let (code, out, _) = canopy_on(f.path(), "noop", &["diff", "DIR"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = canopy_on(f.path(), "noop", &["status", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("in-sync").count(), 3, "{out}");
}

#[test]
fn drift_by_an_imperative_edit_is_reported_exactly_and_restored() {
    let ns = "t-drift";
    let f = tree(&[
        ("workloads/app/workload.yaml", &workload(ns)),
        ("workloads/app/objects.yaml", &objects(ns, "blue")),
    ]);
    assert_eq!(canopy_on(f.path(), "drift", &["apply", "DIR"]).0, 0);
    // `kubectl edit` on cluster a: a merge patch by another field manager.
    request(
        1,
        "PATCH",
        &format!("{}?fieldManager=kubectl-edit", cm_path(ns, "settings")),
        Some((
            "application/merge-patch+json",
            json!({"data": {"color": "red"}}),
        )),
    )
    .unwrap();
    let (code, out, _) = canopy_on(f.path(), "drift", &["diff", "DIR"]);
    assert_eq!(code, 1, "{out}");
    let changed: Vec<&str> = out
        .lines()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("---")
                && !l.starts_with("+++")
        })
        .collect();
    assert_eq!(changed, vec!["-  color: red", "+  color: blue"], "{out}");
    assert!(
        out.contains("# ~ ConfigMap t-drift/settings on 1 cluster(s): a\n"),
        "{out}"
    );
    let (code, out, _) = canopy_on(f.path(), "drift", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("  a: applied +0 ~1 -0"), "{out}");
    assert_eq!(get(1, &cm_path(ns, "settings"))["data"]["color"], "blue");
    assert_eq!(canopy_on(f.path(), "drift", &["diff", "DIR"]).0, 0);
}

#[test]
fn a_crd_and_its_custom_resource_apply_together_and_unknown_kinds_are_named() {
    let ns = "t-crd";
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
---
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
spec:
  size: 3
"#;
    let k = kubeconfig(0);
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &objects(ns, "blue")),
            ("workloads/app/crd.yaml", crd),
        ],
    );
    // Before anything exists, the diff already knows the Widget comes with
    // its CRD.
    let (code, out, _) = canopy_on(f.path(), "crd", &["diff", "DIR"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("+++ desired Widget.example.com t-crd/w1"),
        "{out}"
    );
    let (code, out, err) = canopy_on(f.path(), "crd", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let w = get(0, "/apis/example.com/v1/namespaces/t-crd/widgets/w1");
    assert_eq!(w["spec"]["size"], 3);
    assert_eq!(
        canopy_on(f.path(), "crd", &["apply", "DIR"]).1,
        "root: no changes\nno changes: 1 cluster(s) in sync\n"
    );
    // A kind nothing defines is an error naming the object.
    write(
        f.path(),
        "workloads/app/gadget.yaml",
        "apiVersion: nowhere.example.com/v1\nkind: Gadget\nmetadata:\n  name: g1\n",
    );
    let (code, out, _) = canopy_on(f.path(), "crd", &["apply", "DIR"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("root: FAILED: cluster root (context test): Gadget.nowhere.example.com t-crd/g1: the server does not serve kind Gadget in nowhere.example.com/v1"),
        "{out}"
    );
}

#[test]
fn prune_deletes_what_canopy_owned_and_never_what_it_did_not() {
    let ns = "t-prune";
    let k = kubeconfig(0);
    let extra = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata: {a: \"1\"}\n";
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &objects(ns, "blue")),
            ("workloads/app/extra.yaml", extra),
        ],
    );
    assert_eq!(canopy_on(f.path(), "prune", &["apply", "DIR"]).0, 0);
    // Someone else's ConfigMaps in the same namespace: one without labels,
    // one owned by another fleet.
    for (name, labels) in [
        ("foreign", json!({})),
        ("other-fleet", json!({"canopy.dev/fleet": "someone-else"})),
    ] {
        request(
            0,
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            Some((
                "application/json",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "labels": labels}, "data": {"x": "y"}}),
            )),
        )
        .unwrap();
    }
    // Remove one ConfigMap and every Deployment: the Deployment's kind is
    // no longer rendered at all, and the inventory still finds it.
    std::fs::remove_file(f.path().join("workloads/app/extra.yaml")).unwrap();
    let text = objects(ns, "blue");
    let without_deploy = &text[..text.find("---\napiVersion: apps/v1").unwrap()];
    write(f.path(), "workloads/app/objects.yaml", without_deploy);
    let (code, out, _) = canopy_on(f.path(), "prune", &["diff", "DIR"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("# - ConfigMap t-prune/extra on 1 cluster(s): root\n")
            && out.contains("# - Deployment.apps t-prune/web on 1 cluster(s): root\n"),
        "{out}"
    );
    assert!(
        out.ends_with("1 cluster(s) differ: +0 ~0 -2; 0 in sync, 0 failed, 0 skipped\n"),
        "{out}"
    );
    let (code, out, _) = canopy_on(f.path(), "prune", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("  - Deployment.apps t-prune/web")
            && out.contains("  - ConfigMap t-prune/extra"),
        "{out}"
    );
    assert!(!exists(0, &cm_path(ns, "extra")));
    assert!(!exists(
        0,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/web")
    ));
    for kept in ["settings", "foreign", "other-fleet"] {
        assert!(exists(0, &cm_path(ns, kept)), "{kept} must stay");
    }
}

#[test]
fn a_conflict_with_another_applier_needs_force_conflicts() {
    let ns = "t-conflict";
    let k = kubeconfig(0);
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &objects(ns, "blue")),
        ],
    );
    assert_eq!(canopy_on(f.path(), "conflict", &["apply", "DIR"]).0, 0);
    // Another declarative owner takes the field with its own apply.
    request(
        0,
        "PATCH",
        &format!(
            "{}?fieldManager=team-tool&force=true",
            cm_path(ns, "settings")
        ),
        Some((
            "application/apply-patch+yaml",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": ns}, "data": {"color": "red"}}),
        )),
    )
    .unwrap();
    let (code, out, _) = canopy_on(f.path(), "conflict", &["apply", "DIR"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("ConfigMap t-conflict/settings: apply conflicts: .data.color is owned by field manager \"team-tool\"; nothing of it was changed"),
        "{out}"
    );
    assert!(out.contains("help: rerun with --force-conflicts"), "{out}");
    assert!(
        out.contains("objects changed before the failure: none"),
        "{out}"
    );
    assert_eq!(get(0, &cm_path(ns, "settings"))["data"]["color"], "red");
    let (code, out, _) = canopy_on(f.path(), "conflict", &["apply", "DIR", "--force-conflicts"]);
    assert_eq!(code, 0, "{out}");
    let cm = get(0, &cm_path(ns, "settings"));
    assert_eq!(cm["data"]["color"], "blue");
}

#[test]
fn an_unreachable_child_skips_its_subtree_and_siblings_are_applied() {
    let ns = "t-unreach";
    let tmp = tempfile::tempdir().unwrap();
    let dead = dead_kubeconfig(tmp.path());
    let (k0, k1, k2) = (kubeconfig(0), kubeconfig(1), kubeconfig(2));
    let f = fleet(
        &[
            ("root", None, &k0),
            ("a", Some("root"), &dead),
            ("a1", Some("a"), &k1),
            ("b", Some("root"), &k2),
        ],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &objects(ns, "blue")),
        ],
    );
    let (code, out, _) = canopy_on(f.path(), "unreach", &["apply", "DIR"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("  a: FAILED: cluster a is unreachable: context test: "),
        "{out}"
    );
    assert!(out.contains("    a1: skipped: parent a failed"), "{out}");
    assert!(out.contains("  b: applied +3 ~0 -0"), "{out}");
    assert!(exists(2, &cm_path(ns, "settings")));
    assert!(!exists(1, &cm_path(ns, "settings")), "a1 was skipped");
    let (code, out, _) = canopy_on(f.path(), "unreach", &["status", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("  a ") && l.contains("unreachable")),
        "{out}"
    );
}

#[test]
fn secrets_never_appear_in_diffs() {
    let ns = "t-secret";
    let k = kubeconfig(0);
    let secret = |v: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: {v}\n  user: admin-user-name\n")
    };
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &objects(ns, "blue")),
            ("workloads/app/secret.yaml", &secret("hunter2-old")),
        ],
    );
    assert_eq!(canopy_on(f.path(), "secret", &["apply", "DIR"]).0, 0);
    write(
        f.path(),
        "workloads/app/secret.yaml",
        &secret("hunter2-new"),
    );
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for fmt in ["text", "json", "markdown"] {
        let (code, out, err) = canopy_on(f.path(), "secret", &["diff", "DIR", "-o", fmt]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(out.contains("Secret t-secret/creds"), "{out}");
        for secret in ["hunter2-old", "hunter2-new", "admin-user-name"] {
            for form in [secret.to_string(), b64(secret)] {
                assert!(
                    !out.contains(&form) && !err.contains(&form),
                    "{fmt} shows {form}:\n{out}"
                );
            }
        }
    }
}

#[test]
fn a_retained_field_changed_in_the_cluster_survives_reapply() {
    let ns = "t-retain";
    let k = kubeconfig(0);
    let wl = format!(
        "{}  retain:\n    - kind: Deployment\n      jsonPointers: [/spec/replicas]\n",
        workload(ns)
    );
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &wl),
            ("workloads/app/objects.yaml", &objects(ns, "blue")),
        ],
    );
    assert_eq!(canopy_on(f.path(), "retain", &["apply", "DIR"]).0, 0);
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    assert_eq!(get(0, &path)["spec"]["replicas"], 2, "set on create");
    // An autoscaler scales the Deployment through its scale subresource.
    request(
        0,
        "PATCH",
        &format!("{path}/scale?fieldManager=horizontal-pod-autoscaler"),
        Some((
            "application/merge-patch+json",
            json!({"spec": {"replicas": 5}}),
        )),
    )
    .unwrap();
    let (code, out, _) = canopy_on(f.path(), "retain", &["diff", "DIR"]);
    assert_eq!(code, 0, "a retained field is no drift:\n{out}");
    // Even a new value in Git does not overwrite the cluster's.
    write(
        f.path(),
        "workloads/app/objects.yaml",
        &objects(ns, "green").replace("replicas: 2", "replicas: 3"),
    );
    let (code, out, _) = canopy_on(f.path(), "retain", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(get(0, &path)["spec"]["replicas"], 5);
    assert_eq!(get(0, &cm_path(ns, "settings"))["data"]["color"], "green");
}

#[test]
fn wait_reports_what_is_not_healthy_and_passes_once_rolled_out() {
    let ns = "t-wait";
    let k = kubeconfig(0);
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &objects(ns, "blue")),
        ],
    );
    // These API servers run no controllers: nothing rolls the Deployment out.
    let (code, out, _) = canopy_on(
        f.path(),
        "wait",
        &["apply", "DIR", "--wait", "--timeout", "1s"],
    );
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("root: FAILED: cluster root: not healthy after 1s:\n    Deployment.apps t-wait/web: observedGeneration 0 < generation 1"),
        "{out}"
    );
    assert!(
        out.contains("objects changed before the failure: Namespace t-wait, ConfigMap t-wait/settings, Deployment.apps t-wait/web"),
        "{out}"
    );
    // Play the Deployment controller: report the rollout done.
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/web/status");
    request(
        0,
        "PATCH",
        &path,
        Some((
            "application/merge-patch+json",
            json!({"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                "readyReplicas": 2, "availableReplicas": 2}}),
        )),
    )
    .unwrap();
    let (code, out, _) = canopy_on(
        f.path(),
        "wait",
        &["apply", "DIR", "--wait", "--timeout", "5s"],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_missing_context_names_the_cluster_and_the_contexts_there_are() {
    let k = kubeconfig(0);
    let f = fleet(
        &[("root", None, &k)],
        &[("workloads/app/workload.yaml", &workload("t-ctx"))],
    );
    let clusters = std::fs::read_to_string(f.path().join("clusters.yaml")).unwrap();
    write(
        f.path(),
        "clusters.yaml",
        &clusters.replace("}\n", ", context: prod}\n"),
    );
    let (code, out, _) = canopy_on(f.path(), "ctx", &["apply", "DIR"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!(
            "root: FAILED: cluster root: context \"prod\" is not in kubeconfig {}",
            k.display()
        )),
        "{out}"
    );
    assert!(
        out.contains("help: set spec.connection.context to one of: test"),
        "{out}"
    );
}

#[test]
fn rejected_credentials_name_the_cluster_and_never_print_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(kubeconfig(0)).unwrap();
    assert!(text.contains("canopy-test-token"));
    let wrong = tmp.path().join("expired-kubeconfig");
    std::fs::write(
        &wrong,
        text.replace("canopy-test-token", "expired-secret-token"),
    )
    .unwrap();
    let k1 = kubeconfig(1);
    let f = fleet(
        &[("root", None, &k1), ("old", Some("root"), &wrong)],
        &[
            ("workloads/app/workload.yaml", &workload("t-creds")),
            ("workloads/app/objects.yaml", &objects("t-creds", "blue")),
        ],
    );
    let (code, out, err) = canopy_on(f.path(), "creds", &["apply", "DIR"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("root: applied +3 ~0 -0"), "{out}");
    assert!(
        out.contains("  old: FAILED: cluster old (context test): ")
            && out.contains("(401 Unauthorized)"),
        "{out}"
    );
    assert!(
        out.contains("help: the credentials of this context were rejected; refresh them (they may have expired)"),
        "{out}"
    );
    assert!(!out.contains("expired-secret-token") && !err.contains("expired-secret-token"));
}

#[test]
fn an_object_without_a_namespace_lands_in_default_and_stays_in_sync() {
    let k = kubeconfig(2);
    let wl = "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: app\n";
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: t-default-ns\ndata: {a: \"1\"}\n";
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", wl),
            ("workloads/app/cm.yaml", cm),
        ],
    );
    let (code, out, _) = canopy_on(f.path(), "defaultns", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("+ ConfigMap default/t-default-ns"), "{out}");
    assert!(exists(2, &cm_path("default", "t-default-ns")));
    let (code, out, _) = canopy_on(f.path(), "defaultns", &["apply", "DIR"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "root: no changes\nno changes: 1 cluster(s) in sync\n")
    );
}

#[test]
fn a_cluster_scoped_kind_canopy_cannot_know_takes_its_scope_from_the_server() {
    // A cluster-scoped CRD installed outside canopy: only the server knows
    // its scope, and the workload's namespace must not stick to its objects.
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.example.org"},
        "spec": {"group": "example.org", "scope": "Cluster",
            "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    request(
        2,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some(("application/json", crd)),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !exists(2, "/apis/example.org/v1/gizmos") {
        assert!(std::time::Instant::now() < deadline, "CRD never served");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let k = kubeconfig(2);
    let gizmo = "apiVersion: example.org/v1\nkind: Gizmo\nmetadata:\n  name: g1\nspec: {size: 1}\n";
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload("t-scope")),
            ("workloads/app/gizmo.yaml", gizmo),
        ],
    );
    let (code, out, _) = canopy_on(f.path(), "scope", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("+ Gizmo.example.org g1"), "{out}");
    let (code, out, _) = canopy_on(f.path(), "scope", &["apply", "DIR"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "root: no changes\nno changes: 1 cluster(s) in sync\n")
    );
    std::fs::remove_file(f.path().join("workloads/app/gizmo.yaml")).unwrap();
    let (code, out, _) = canopy_on(f.path(), "scope", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("- Gizmo.example.org g1"), "{out}");
    assert!(!exists(2, "/apis/example.org/v1/gizmos/g1"));
}

#[test]
fn status_sums_ready_replicas_from_each_cluster_up_the_tree() {
    let ns = "t-status";
    let objs = objects(ns, "blue");
    let f = tree(&[
        ("workloads/app/workload.yaml", &workload(ns)),
        ("workloads/app/objects.yaml", &objs),
    ]);
    let (code, out, _) = canopy_on(f.path(), "status", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    // No controllers run here: nothing is ready yet.
    let status = |f: &tempfile::TempDir| {
        let (code, out, err) = canopy_on(f.path(), "status", &["status", "DIR", "-o", "json"]);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<Value>(&out).unwrap()["workloads"][0].clone()
    };
    let w = status(&f);
    assert_eq!(w["workload"], "app");
    assert_eq!(w["total"], json!({"desired": 6, "ready": 0}), "{w}");
    // Play cluster a's Deployment controller: 2 ready there.
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/web/status");
    request(
        1,
        "PATCH",
        &path,
        Some((
            "application/merge-patch+json",
            json!({"status": {"replicas": 2, "readyReplicas": 2}}),
        )),
    )
    .unwrap();
    let w = status(&f);
    assert_eq!(
        w["clusters"],
        json!([
            {"cluster": "root", "depth": 0, "subtree": {"desired": 6, "ready": 2}, "here": {"desired": 2, "ready": 0}},
            {"cluster": "a", "depth": 1, "subtree": {"desired": 2, "ready": 2}, "here": {"desired": 2, "ready": 2}},
            {"cluster": "b", "depth": 1, "subtree": {"desired": 2, "ready": 0}, "here": {"desired": 2, "ready": 0}},
        ]),
        "{w}"
    );
    let (_, text, _) = canopy_on(f.path(), "status", &["status", "DIR"]);
    assert!(
        text.contains(
            "workload app: 2/6 replicas ready\n  root  2/6  (here 0/2)\n    a   2/2\n    b   0/2\n"
        ),
        "{text}"
    );
}

/// Root (server 0) with children `a` (server 1) and `other` (its own
/// kubeconfig), and workload `app` Divided 4 over `a` and `other`, failing
/// over at once.
fn failover_fleet(ns: &str, other: &str, kubeconfig_of_other: &Path) -> tempfile::TempDir {
    let (k0, k1) = (kubeconfig(0), kubeconfig(1));
    let app = format!(
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: app\nspec:\n  namespace: {ns}\n  placement:\n    clusters: {{names: [a, {other}]}}\n    replicas: {{mode: Divided, total: 4}}\n  failover: {{after: 0s}}\n"
    );
    let objs = objects(ns, "blue");
    fleet(
        &[
            ("root", None, &k0),
            ("a", Some("root"), &k1),
            (other, Some("root"), kubeconfig_of_other),
        ],
        &[
            ("workloads/app/workload.yaml", &app),
            ("workloads/app/objects.yaml", &objs),
        ],
    )
}

#[test]
fn failover_moves_replicas_off_a_stopped_api_server_and_back() {
    let ns = "t-failover";
    let x_server = apiserver::start();
    // x's kubeconfig outlives its server (the server's own copy goes with it).
    let keep = tempfile::tempdir().unwrap();
    let x_kubeconfig = keep.path().join("x-kubeconfig");
    std::fs::copy(&x_server.kubeconfig, &x_kubeconfig).unwrap();
    let f = failover_fleet(ns, "x", &x_kubeconfig);
    let deploy = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    let (code, out, _) = canopy_on(f.path(), "failover", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(get(1, &deploy)["spec"]["replicas"], 2);

    // x's API server stops: the first run finds it down, the next fails over.
    drop(x_server);
    let (code, out, _) = canopy_on(f.path(), "failover", &["apply", "DIR"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("x: FAILED: cluster x is unreachable"), "{out}");
    let (code, out, _) = canopy_on(f.path(), "failover", &["apply", "DIR"]);
    assert_eq!(code, 4, "x is still down: {out}");
    assert_eq!(
        get(1, &deploy)["spec"]["replicas"],
        4,
        "a took x's replicas"
    );

    // x comes back (a new API server in its place): the replicas return.
    let back = apiserver::start();
    let clusters = std::fs::read_to_string(f.path().join("clusters.yaml")).unwrap();
    write(
        f.path(),
        "clusters.yaml",
        &clusters.replace(
            x_kubeconfig.to_str().unwrap(),
            back.kubeconfig.to_str().unwrap(),
        ),
    );
    let (code, out, _) = canopy_on(f.path(), "failover", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(get(1, &deploy)["spec"]["replicas"], 2);
    let on_x = request_at(&back.kubeconfig, "GET", &deploy, None).expect("x has web again");
    assert_eq!(on_x["spec"]["replicas"], 2);
}

#[test]
fn failover_counts_a_cluster_with_no_ready_node_as_down() {
    let ns = "t-nodes";
    let n_server = apiserver::start();
    let f = failover_fleet(ns, "n", &n_server.kubeconfig);
    let deploy = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    let on_n = |method: &str, path: &str, body: Option<(&str, Value)>| {
        request_at(&n_server.kubeconfig, method, path, body)
    };
    // Cluster n has one node, and it is not Ready (its kubelet is gone).
    on_n(
        "POST",
        "/api/v1/nodes",
        Some((
            "application/json",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}),
        )),
    )
    .unwrap();
    let set_ready = |status: &str| {
        on_n(
            "PATCH",
            "/api/v1/nodes/node-1/status",
            Some((
                "application/merge-patch+json",
                json!({"status": {"conditions": [{"type": "Ready", "status": status,
                    "reason": "Test", "message": "set by the test",
                    "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
            )),
        )
        .unwrap();
    };
    set_ready("False");

    // The first apply writes n (its API server answers) and finds no Ready
    // node there; the next moves n's replicas to a.
    let (code, out, _) = canopy_on(f.path(), "nodes", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(on_n("GET", &deploy, None).unwrap()["spec"]["replicas"], 2);
    let (code, out, _) = canopy_on(f.path(), "nodes", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(get(1, &deploy)["spec"]["replicas"], 4, "{out}");
    assert_eq!(
        on_n("GET", &deploy, None).unwrap()["spec"]["replicas"],
        0,
        "n keeps its objects, scaled to 0 (its Namespace is not deleted)"
    );
    let (_, out, _) = canopy_on(f.path(), "nodes", &["explain", "DIR", "app"]);
    assert!(out.contains("failed over"), "{out}");

    // The node is Ready again: the replicas move back.
    set_ready("True");
    let (code, out, _) = canopy_on(f.path(), "nodes", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(get(1, &deploy)["spec"]["replicas"], 2, "{out}");
    assert_eq!(on_n("GET", &deploy, None).unwrap()["spec"]["replicas"], 2);
}

/// A relay cluster gets its handoff through its API server: the CRD, the
/// chunk Secrets and the `Handoff` index (in `canopy-system`, which the
/// backend keeps for its inventory) are applied with the rest, read back from the server they decode to a
/// handoff that opens on the relay's side, and a re-apply writes nothing.
#[test]
fn a_relay_cluster_gets_its_handoff_through_its_api_server() {
    use canopy::core::{chunks, relay};
    let ns = "t-relay";
    let (k0, k1, k2) = (kubeconfig(0), kubeconfig(1), kubeconfig(2));
    let f = fleet(
        &[
            ("root", None, &k0),
            ("a", Some("root"), &k1),
            ("b", Some("root"), &k2),
        ],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &objects(ns, "green")),
        ],
    );
    // root is the relay.
    let clusters = f.path().join("clusters.yaml");
    let text = std::fs::read_to_string(&clusters).unwrap();
    let marked = text.replacen("name: root\nspec:\n", "name: root\nspec:\n  relay: {}\n", 1);
    assert_ne!(marked, text);
    std::fs::write(&clusters, marked).unwrap();

    // No agent runs: the root writes the handoff and reports the wait.
    let (code, out, err) = canopy_on(f.path(), "relayed", &["apply", "DIR", "--timeout", "0s"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("root (via relay, 2 cluster(s) below): no agent holds its Lease"),
        "{out}"
    );
    let index = get(
        0,
        "/apis/canopy.dev/v1alpha1/namespaces/canopy-system/handoffs/handoff",
    );
    assert_eq!(index["spec"]["relay"], "root", "{index}");
    assert_eq!(index["metadata"]["labels"]["canopy.dev/fleet"], "relayed");
    let secrets: std::collections::BTreeMap<String, Value> = chunks::chunk_names(&index)
        .unwrap()
        .into_iter()
        .map(|n| {
            let s = get(0, &format!("/api/v1/namespaces/canopy-system/secrets/{n}"));
            (n, s)
        })
        .collect();
    let h = chunks::decode(&index, &secrets).expect("the handoff reads back from the server");
    let opened = relay::open(&h).unwrap_or_else(|d| panic!("{d:?}"));
    assert!(opened.checked.topo.get("a").is_some() && opened.checked.topo.get("b").is_some());
    // Only the relay's server has the kind.
    assert!(!exists(
        1,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/handoffs.canopy.dev"
    ));

    let (code, out, _) = canopy_on(f.path(), "relayed", &["apply", "DIR", "--timeout", "0s"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("no changes: 1 cluster(s) in sync\n"),
        "the root reconciles root alone:\n{out}"
    );
}

/// A fleet of `clusters` (name, parent, relay, kubeconfig as written in
/// the Cluster), with the app of [`objects`] in `ns` on clusters a and b.
fn relayed_fleet(ns: &str, clusters: &[(&str, Option<&str>, bool, &str)]) -> tempfile::TempDir {
    let mut text = String::new();
    for (name, parent, relay, kc) in clusters {
        let mut spec = format!("connection: {{kubeconfig: \"{kc}\"}}");
        if let Some(p) = parent {
            spec.push_str(&format!(", parent: {p}"));
        }
        if *relay {
            spec.push_str(", relay: {}");
        }
        text.push_str(&format!(
            "---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n"
        ));
    }
    let wl = format!(
        "{}  placement:\n    clusters: {{names: [a, b]}}\n",
        workload(ns)
    );
    common::fleet(&[
        ("clusters.yaml", &text),
        ("workloads/app/workload.yaml", &wl),
        ("workloads/app/objects.yaml", &objects(ns, "green")),
    ])
}

/// Runs canopy with only the environment given (beside PATH and HOME):
/// what a process on another machine would have.
fn canopy_env(envs: &[(&str, &Path)], args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(canopy_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .envs(envs.iter().map(|(k, v)| (k, v.as_os_str())))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 14 on four real API servers: root (server 0) → relay (server 3)
/// → leaves a and b (servers 1 and 2). The leaves' kubeconfigs are named
/// through variables that only the agent's environment sets, so the root
/// process cannot reach a leaf at all; it writes the relay's handoff, the
/// agent applies the leaves and reports, the root reads the report. With
/// the root process gone, drift on a leaf is corrected by the agent, and
/// a new commit reaches both leaves through a running agent.
#[test]
fn a_relay_agent_reconciles_leaves_only_it_can_reach() {
    let ns = "t-relayed";
    let (k0, k1, k2, k3) = (kubeconfig(0), kubeconfig(1), kubeconfig(2), kubeconfig(3));
    let f = relayed_fleet(
        ns,
        &[
            ("root", None, false, &k0.display().to_string()),
            ("relay", Some("root"), true, &k3.display().to_string()),
            ("a", Some("relay"), false, "${LEAF_A}"),
            ("b", Some("relay"), false, "${LEAF_B}"),
        ],
    );
    let tmp = tempfile::tempdir().unwrap();
    let (root_state, agent_state) = (tmp.path().join("root"), tmp.path().join("agent"));
    let d = f.path().to_str().unwrap();
    let root = |extra: &[&str]| {
        let mut args = vec!["--fleet-name", "relayed-kube", "apply", d, "--state"];
        args.push(root_state.to_str().unwrap());
        args.extend_from_slice(extra);
        canopy_env(&[], &args)
    };
    let agent_args: Vec<String> = [
        "agent",
        "--cluster",
        "relay",
        "--kubeconfig",
        k3.to_str().unwrap(),
        "--state",
        agent_state.to_str().unwrap(),
        "--identity",
        "relay-agent",
        "--lease-duration",
        "3s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let leaves: [(&str, &Path); 2] = [("LEAF_A", &k1), ("LEAF_B", &k2)];
    let agent_once = || {
        let mut args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
        args.push("--once");
        canopy_env(&leaves, &args)
    };

    let (code, out, err) = root(&["--timeout", "0s"]);
    assert_eq!(code, 4, "no agent has reported yet\n{out}{err}");
    assert!(
        out.contains("relay (via relay, 2 cluster(s) below): no agent holds its Lease"),
        "{out}{err}"
    );
    assert!(!exists(1, &cm_path(ns, "settings")) && !exists(2, &cm_path(ns, "settings")));

    let (code, out, err) = agent_once();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("reconciled revision unversioned: 2 cluster(s): 2 applied (0 in sync)"),
        "{out}"
    );
    for leaf in [1, 2] {
        assert_eq!(
            get(leaf, &cm_path(ns, "settings"))["data"]["color"],
            "green"
        );
    }
    let (code, out, err) = root(&["--timeout", "0s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "relay (via relay, 2 cluster(s) below): revision unversioned: 2 cluster(s): 2 applied"
        ),
        "{out}"
    );
    // The report and the Lease are on the relay's server.
    let index = get(
        3,
        "/apis/canopy.dev/v1alpha1/namespaces/canopy-system/handoffs/handoff",
    );
    assert_eq!(index["status"]["clusters"]["applied"], 2, "{index}");
    let lease = get(
        3,
        "/apis/coordination.k8s.io/v1/namespaces/canopy-system/leases/canopy-agent",
    );
    assert_eq!(lease["spec"]["holderIdentity"], "relay-agent");

    // From here on the agent runs as the ServiceAccount `canopy agent
    // manifests` sets up, with its Role alone: what it needs in its own
    // cluster, it is allowed.
    let (code, out, err) = canopy(&["agent", "manifests", "--cluster", "relay", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let manifests: Vec<Value> = serde_json::from_str(&out).unwrap();
    for m in &manifests {
        let name = m["metadata"]["name"].as_str().unwrap();
        let path = match m["kind"].as_str().unwrap() {
            "Namespace" => format!("/api/v1/namespaces/{name}"),
            "CustomResourceDefinition" => {
                format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            }
            "ServiceAccount" => format!("/api/v1/namespaces/canopy-system/serviceaccounts/{name}"),
            "Role" => {
                format!("/apis/rbac.authorization.k8s.io/v1/namespaces/canopy-system/roles/{name}")
            }
            "RoleBinding" => format!(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/canopy-system/rolebindings/{name}"
            ),
            "Deployment" => format!("/apis/apps/v1/namespaces/canopy-system/deployments/{name}"),
            k => panic!("unexpected kind {k}"),
        };
        request(
            3,
            "PATCH",
            &format!("{path}?fieldManager=operator&force=true"),
            Some(("application/apply-patch+yaml", m.clone())),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let mut kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&k3).unwrap()).unwrap();
    let user = &mut kc["users"][0]["user"];
    user["as"] = "system:serviceaccount:canopy-system:canopy-agent".into();
    user["as-groups"] =
        serde_yaml::to_value(["system:serviceaccounts", "system:authenticated"]).unwrap();
    let as_agent = tmp.path().join("agent-kubeconfig");
    std::fs::write(&as_agent, serde_yaml::to_string(&kc).unwrap()).unwrap();
    // The control: another ServiceAccount, without the Role, is refused.
    kc["users"][0]["user"]["as"] = "system:serviceaccount:canopy-system:nobody".into();
    let as_nobody = tmp.path().join("nobody-kubeconfig");
    std::fs::write(&as_nobody, serde_yaml::to_string(&kc).unwrap()).unwrap();
    let mut args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let k3_at = args
        .iter()
        .position(|a| *a == k3.to_str().unwrap())
        .unwrap();
    args[k3_at] = as_nobody.to_str().unwrap();
    args.push("--once");
    let (code, out, err) = canopy_env(&leaves, &args);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("forbidden"), "{out}{err}");
    let agent_args: Vec<String> = agent_args
        .iter()
        .map(|a| {
            if a == k3.to_str().unwrap() {
                as_agent.to_str().unwrap().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let agent_once = || {
        let mut args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
        args.push("--once");
        canopy_env(&leaves, &args)
    };

    // Drift on a leaf, the root process gone: the agent puts it back.
    request(
        1,
        "PATCH",
        &format!("{}?fieldManager=kubectl-edit", cm_path(ns, "settings")),
        Some((
            "application/merge-patch+json",
            json!({"data": {"color": "red"}}),
        )),
    )
    .unwrap();
    let (code, out, err) = agent_once();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 applied (1 in sync)"), "{out}");
    assert_eq!(get(1, &cm_path(ns, "settings"))["data"]["color"], "green");

    // A new commit through a running agent: apply waits for its report.
    std::fs::write(
        f.path().join("workloads/app/objects.yaml"),
        objects(ns, "blue"),
    )
    .unwrap();
    let child = std::process::Command::new(canopy_bin())
        .args(&agent_args)
        .env("LEAF_A", &k1)
        .env("LEAF_B", &k2)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(child);
    let (code, out, err) = root(&["--timeout", "60s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 cluster(s): 2 applied"), "{out}");
    for leaf in [1, 2] {
        assert_eq!(get(leaf, &cm_path(ns, "settings"))["data"]["color"], "blue");
    }
    let (code, out, err) = canopy_env(
        &[],
        &[
            "--fleet-name",
            "relayed-kube",
            "status",
            d,
            "--state",
            root_state.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let a = out
        .lines()
        .find(|l| l.trim_start().starts_with("a "))
        .unwrap();
    assert!(
        a.contains("in-sync") && a.contains("via relay relay"),
        "{out}"
    );

    // The agent is gone, and its pod's state folder with it. A new commit
    // arrives damaged (one byte of its chunk). A new agent, with an empty
    // state folder, refuses it and takes up the last good handoff from
    // what the relay's cluster keeps (its index in the agent's records,
    // its chunks kept until a newer handoff is taken): it puts drift back.
    drop(_agent);
    std::fs::write(
        f.path().join("workloads/app/objects.yaml"),
        objects(ns, "purple"),
    )
    .unwrap();
    let (code, out, err) = root(&["--timeout", "0s"]);
    assert_eq!(code, 4, "{out}{err}");
    let index = get(
        3,
        "/apis/canopy.dev/v1alpha1/namespaces/canopy-system/handoffs/handoff",
    );
    let chunk = index["spec"]["chunks"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = format!("/api/v1/namespaces/canopy-system/secrets/{chunk}");
    let data = get(3, &secret)["data"]["chunk"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = if data.starts_with('A') { "B" } else { "A" };
    request(
        3,
        "PATCH",
        &secret,
        Some((
            "application/merge-patch+json",
            json!({"data": {"chunk": format!("{flipped}{}", &data[1..])}}),
        )),
    )
    .unwrap();
    request(
        1,
        "PATCH",
        &format!("{}?fieldManager=kubectl-edit", cm_path(ns, "settings")),
        Some((
            "application/merge-patch+json",
            json!({"data": {"color": "red"}}),
        )),
    )
    .unwrap();
    let fresh = tmp.path().join("fresh-agent");
    let mut args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let at = args
        .iter()
        .position(|a| *a == agent_state.to_str().unwrap())
        .unwrap();
    args[at] = fresh.to_str().unwrap();
    args.push("--once");
    let (code, out, err) = canopy_env(&leaves, &args);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.starts_with("REFUSED the handoff of revision unversioned"),
        "{out}"
    );
    assert_eq!(get(1, &cm_path(ns, "settings"))["data"]["color"], "blue");
}

/// Issue 14, autonomy on real API servers: root (server 0) → relay (server
/// 4, which the root reaches through a proxy) → leaf a (server 1), and
/// root → b (server 2). The proxy cuts the root off from the relay: the
/// root's apply fails the relay and still takes b to the new commit; the
/// relay's agent, which reaches its own server directly, keeps correcting
/// drift on a from its last handoff and does not advance. Once the link
/// heals, the next apply hands the commit down and a converges.
#[test]
fn a_relay_cut_off_from_its_parent_keeps_its_subtree_and_converges_after() {
    let ns = "t-cut";
    let (k0, k1, k2, k4) = (kubeconfig(0), kubeconfig(1), kubeconfig(2), kubeconfig(4));
    let text = std::fs::read_to_string(&k4).unwrap();
    let start =
        text.find("server: https://127.0.0.1:").unwrap() + "server: https://127.0.0.1:".len();
    let end = start + text[start..].find(|c: char| !c.is_ascii_digit()).unwrap();
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", &text[start..end]).parse().unwrap();
    let proxy = cut_proxy::CutProxy::start(target);
    let tmp = tempfile::tempdir().unwrap();
    let via_proxy = tmp.path().join("relay-via-proxy");
    std::fs::write(
        &via_proxy,
        format!("{}{}{}", &text[..start], proxy.port, &text[end..]),
    )
    .unwrap();

    let f = relayed_fleet(
        ns,
        &[
            ("root", None, false, &k0.display().to_string()),
            (
                "relay",
                Some("root"),
                true,
                &via_proxy.display().to_string(),
            ),
            ("a", Some("relay"), false, &k1.display().to_string()),
            ("b", Some("root"), false, &k2.display().to_string()),
        ],
    );
    let root_state = tmp.path().join("root");
    let d = f.path().to_str().unwrap();
    let apply = |timeout: &str| {
        canopy(&[
            "--fleet-name",
            "cut",
            "apply",
            d,
            "--state",
            root_state.to_str().unwrap(),
            "--timeout",
            timeout,
            "--request-timeout",
            "3s",
        ])
    };
    // The agent reaches the relay's server directly, not through the proxy.
    let child = std::process::Command::new(canopy_bin())
        .args(["agent", "--cluster", "relay", "--kubeconfig"])
        .arg(&k4)
        .arg("--state")
        .arg(tmp.path().join("agent"))
        .args([
            "--poll",
            "200ms",
            "--resync",
            "1s",
            "--lease-duration",
            "6s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(child);
    let color = |i: usize| {
        request(i, "GET", &cm_path(ns, "settings"), None)
            .ok()
            .and_then(|v| v["data"]["color"].as_str().map(str::to_string))
    };
    let eventually = |what: &str, f: &dyn Fn() -> bool| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !f() {
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // The agent may start after the first apply: it takes the handoff then.
    let (code, out, err) = apply("60s");
    assert!(code == 0 || code == 4, "{out}{err}");
    eventually("a to get the first commit", &|| {
        color(1).as_deref() == Some("green")
    });
    assert_eq!(color(2).as_deref(), Some("green"));

    // The cut. A new commit reaches b; the relay fails, a keeps green.
    proxy.cut();
    std::fs::write(
        f.path().join("workloads/app/objects.yaml"),
        objects(ns, "blue"),
    )
    .unwrap();
    let (code, out, err) = apply("5s");
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("relay: FAILED"), "{out}");
    assert_eq!(color(2).as_deref(), Some("blue"));
    // Drift on a: the relay corrects it from its last handoff (green),
    // and does not advance to the commit it was not handed.
    request(
        1,
        "PATCH",
        &format!("{}?fieldManager=kubectl-edit", cm_path(ns, "settings")),
        Some((
            "application/merge-patch+json",
            json!({"data": {"color": "red"}}),
        )),
    )
    .unwrap();
    eventually("the relay to correct the drift on a", &|| {
        color(1).as_deref() == Some("green")
    });

    // Healed: the commit goes down, a converges and the relay reports.
    proxy.heal();
    let (code, out, err) = apply("60s");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "relay (via relay, 1 cluster(s) below): revision unversioned: 1 cluster(s): 1 applied"
        ),
        "{out}"
    );
    assert_eq!(color(1).as_deref(), Some("blue"));
}

/// A Namespace and a ConfigMap: healthy as soon as written, on a server
/// that runs no controllers.
fn settings(ns: &str, color: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: {color}\n")
}

/// Issue 14, item 7: where the root is a Kubernetes cluster, the rollout
/// and health records live in it too, so a run with an empty state folder
/// (a fresh CI runner) continues a paused rollout instead of starting it
/// over (which would find the canary done, skip its pause and roll the
/// change out everywhere).
#[test]
fn run_state_in_the_root_cluster_carries_a_rollout_across_fresh_runners() {
    let ns = "t-records";
    let wl = format!(
        "{}  placement:\n    clusters: {{names: [a, b]}}\n",
        workload(ns)
    );
    let f = tree(&[
        ("workloads/app/workload.yaml", &wl),
        ("workloads/app/objects.yaml", &settings(ns, "green")),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let d = f.path().to_str().unwrap();
    let run = |state: &str, args: &[&str]| {
        let st = tmp.path().join(state);
        let mut all = vec!["--fleet-name", "records"];
        all.extend(args.iter().map(|a| if *a == "DIR" { d } else { a }));
        all.extend_from_slice(&["--state", st.to_str().unwrap()]);
        canopy(&all)
    };
    let (code, out, err) = run("first", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let color = |i: usize| get(i, &cm_path(ns, "settings"))["data"]["color"].clone();

    // A change with a rollout: the canary (a), then a manual pause.
    std::fs::write(
        f.path().join("workloads/app/workload.yaml"),
        format!("{wl}  rollout:\n    stages:\n      - {{name: canary, clusters: {{names: [a]}}, pause: manual}}\n      - {{name: rest, percent: 100}}\n    healthTimeout: 30s\n"),
    )
    .unwrap();
    std::fs::write(
        f.path().join("workloads/app/objects.yaml"),
        settings(ns, "blue"),
    )
    .unwrap();
    let (code, out, err) = run("first", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!((color(1), color(2)), (json!("blue"), json!("green")));
    let records = get(
        0,
        "/api/v1/namespaces/canopy-system/configmaps/canopy-records-records",
    );
    assert!(
        records["data"]["rollouts.json"]
            .as_str()
            .unwrap()
            .contains("\"paused\""),
        "{records}"
    );

    // Another runner, with an empty state folder: still paused.
    let (code, out, err) = run("second", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        color(2),
        json!("green"),
        "the rest waits for the manual continue:\n{out}"
    );
    let (code, out, _) = run("third", &["rollout", "status", "DIR", "app"]);
    assert!(out.contains("paused"), "{code} {out}");
    let (code, out, err) = run("third", &["rollout", "continue", "DIR", "app"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(color(2), json!("blue"));
}

/// Issue 16, item 1: an octal file mode as upstream manifests write it
/// (`defaultMode: 0644`) is 420 for the API server, and for canopy: the
/// apply is accepted, and a re-apply finds nothing to change.
#[test]
fn octal_file_modes_are_read_as_the_api_server_reads_them() {
    let ns = "t-octal";
    let deployment = format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          volumeMounts: [{{name: config, mountPath: /etc/web}}]
      volumes:
        - name: config
          configMap:
            name: web
            defaultMode: 0644
"#
    );
    let f = tree(&[
        ("workloads/app/workload.yaml", &workload(ns)),
        ("workloads/app/objects.yaml", &deployment),
    ]);
    let (code, out, err) = canopy_on(f.path(), "octal", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let live = get(1, &format!("/apis/apps/v1/namespaces/{ns}/deployments/web"));
    assert_eq!(
        live["spec"]["template"]["spec"]["volumes"][0]["configMap"]["defaultMode"],
        420
    );
    let (code, out, _) = canopy_on(f.path(), "octal", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("no changes: 3 cluster(s) in sync\n"), "{out}");
}

/// Issue 16: `kubectl patch` of a key of a keyed list (a Service's port,
/// an env var's name, a container's name) leaves an item owned by the
/// edit beside canopy's under server-side apply alone. canopy takes the
/// edit's fields over before it applies, so each edit is drift that
/// `diff` reports and `apply` puts back; no `kubectl-*` manager is left.
#[test]
fn imperative_edits_of_list_keys_are_drift_that_apply_takes_back() {
    let ns = "t-takeover";
    let k = kubeconfig(1);
    let objects = format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  selector: {{app: web}}
  ports:
    - {{name: redis, port: 6379, targetPort: 6379}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          env:
            - {{name: MODE, value: fast}}
"#
    );
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &objects),
        ],
    );
    let (code, out, err) = canopy_on(f.path(), "takeover", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let svc = format!("/api/v1/namespaces/{ns}/services/redis");
    let deploy = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    let patch = |path: &str, ops: Value| {
        request(
            1,
            "PATCH",
            &format!("{path}?fieldManager=kubectl-patch"),
            Some(("application/json-patch+json", ops)),
        )
        .unwrap_or_else(|e| panic!("patch {path}: {e}"));
    };
    let managers = |path: &str| -> Vec<String> {
        get(1, path)["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap().to_string())
            .collect()
    };
    let ports = || -> Vec<u64> {
        get(1, &svc)["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect()
    };
    let container = || get(1, &deploy)["spec"]["template"]["spec"]["containers"].clone();

    // The port, then an env var's name, each put back.
    patch(
        &svc,
        json!([{"op": "replace", "path": "/spec/ports/0/port", "value": 6380}]),
    );
    patch(
        &deploy,
        json!([{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/name", "value": "MODE2"}]),
    );
    assert_eq!(ports(), vec![6380]);
    let (code, out, err) = canopy_on(f.path(), "takeover", &["diff", "DIR"]);
    assert_eq!(code, 1, "drift is reported, not an error: {out}{err}");
    // The port's dry run is refused (two ports named redis), so its
    // preview is the sent port laid over the live Service: the defaulted
    // protocol shows as removed there.
    for line in [
        "-    port: 6380",
        "+    port: 6379",
        "-        - name: MODE2",
        "+        - name: MODE",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    assert!(
        out.ends_with("1 cluster(s) differ: +0 ~2 -0; 0 in sync, 0 failed, 0 skipped\n"),
        "{out}"
    );
    let (code, out, err) = canopy_on(f.path(), "takeover", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ports(), vec![6379]);
    let env = container()[0]["env"].clone();
    assert_eq!(env, json!([{"name": "MODE", "value": "fast"}]));
    for path in [&svc, &deploy] {
        let m = managers(path);
        assert!(!m.iter().any(|m| m.starts_with("kubectl")), "{path}: {m:?}");
    }
    let (code, out, _) = canopy_on(f.path(), "takeover", &["diff", "DIR"]);
    assert_eq!(code, 0, "in sync after: {out}");

    // A container's name.
    patch(
        &deploy,
        json!([{"op": "replace", "path": "/spec/template/spec/containers/0/name", "value": "web2"}]),
    );
    let (code, out, err) = canopy_on(f.path(), "takeover", &["diff", "DIR"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("-        name: web2\n+        name: web\n"),
        "{out}"
    );
    let (code, out, err) = canopy_on(f.path(), "takeover", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let names: Vec<String> = container()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["web"]);
    assert_eq!(canopy_on(f.path(), "takeover", &["diff", "DIR"]).0, 0);
}

/// `kubectl` from the API server's release, run on server `i`'s
/// kubeconfig with a private cache; its output on success.
fn kubectl(i: usize, args: &[&str]) -> String {
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(tools::kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig(i))
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .env_clear()
        .env("HOME", cache.path())
        .output()
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

/// Issue 29: metadata, env vars and list items that someone else adds
/// with kubectl, and canopy never sets, are theirs: not drift, never
/// written, kept when canopy writes the object for its own reasons. A
/// value canopy sets that kubectl changes (`set image`, `scale`) is
/// drift, and apply puts canopy's value back.
#[test]
fn fields_others_add_stay_theirs_and_values_canopy_sets_are_put_back() {
    let ns = "t-foreign";
    let k = kubeconfig(1);
    let objects = |image: &str| {
        format!(
            r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: Service
metadata:
  name: frontend
spec:
  selector: {{app: frontend}}
  ports:
    - {{name: http, port: 80, targetPort: 8080}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  annotations: {{team: shop}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: frontend}}
  template:
    metadata:
      labels: {{app: frontend}}
    spec:
      containers:
        - name: web
          image: {image}
          env:
            - {{name: MODE, value: fast}}
"#
        )
    };
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &objects("nginx:1.27")),
        ],
    );
    let run = |args: &[&str]| canopy_on(f.path(), "foreign", args);
    let (code, out, err) = run(&["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let svc = format!("/api/v1/namespaces/{ns}/services/frontend");
    let deploy = format!("/apis/apps/v1/namespaces/{ns}/deployments/frontend");
    let version = |path: &str| get(1, path)["metadata"]["resourceVersion"].clone();

    kubectl(
        1,
        &[
            "-n",
            ns,
            "annotate",
            "deployment/frontend",
            "example.com/on-call=team-b",
        ],
    );
    kubectl(
        1,
        &[
            "-n",
            ns,
            "label",
            "service/frontend",
            "example.com/cost-center=42",
        ],
    );
    kubectl(
        1,
        &["-n", ns, "set", "env", "deployment/frontend", "DEBUG=1"],
    );
    kubectl(
        1,
        &[
            "-n",
            ns,
            "patch",
            "service/frontend",
            "-p",
            r#"{"spec":{"ports":[{"name":"admin","port":9090,"targetPort":9090}]}}"#,
        ],
    );
    let foreign_fields_are_there = |when: &str| {
        let d = get(1, &deploy);
        let s = get(1, &svc);
        assert_eq!(
            d["metadata"]["annotations"]["example.com/on-call"], "team-b",
            "{when}"
        );
        assert_eq!(
            s["metadata"]["labels"]["example.com/cost-center"], "42",
            "{when}"
        );
        let env = d["spec"]["template"]["spec"]["containers"][0]["env"].clone();
        assert!(
            env.as_array()
                .unwrap()
                .contains(&json!({"name": "DEBUG", "value": "1"})),
            "{when}: {env}"
        );
        let mut ports: Vec<u64> = s["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, vec![80, 9090], "{when}");
    };
    foreign_fields_are_there("after kubectl");
    let before = (version(&svc), version(&deploy));

    let (code, out, err) = run(&["diff", "DIR"]);
    assert_eq!(code, 0, "what others added is not drift: {out}{err}");
    // The Service's extra port makes its comparison a server dry run, the
    // Deployment's annotation a comparison with live: both say nothing.
    let (code, out, err) = run(&["apply", "DIR", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.ends_with("no changes: 1 cluster(s) in sync\n"),
        "nor a dry run: {out}"
    );
    let (code, out, err) = run(&["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("no changes: 1 cluster(s) in sync\n"), "{out}");
    assert_eq!(
        (version(&svc), version(&deploy)),
        before,
        "apply wrote nothing"
    );
    foreign_fields_are_there("after a no-op apply");

    // A change in Git writes the Deployment; what others added stays.
    write(
        f.path(),
        "workloads/app/objects.yaml",
        &objects("nginx:1.28"),
    );
    let (code, out, err) = run(&["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied +0 ~1 -0"), "{out}");
    foreign_fields_are_there("after canopy wrote the Deployment");
    assert_eq!(
        get(1, &deploy)["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );

    // Values canopy sets, changed by hand, are drift and are put back.
    kubectl(
        1,
        &[
            "-n",
            ns,
            "set",
            "image",
            "deployment/frontend",
            "web=nginx:1.29",
        ],
    );
    kubectl(
        1,
        &["-n", ns, "scale", "deployment/frontend", "--replicas=3"],
    );
    kubectl(
        1,
        &[
            "-n",
            ns,
            "annotate",
            "--overwrite",
            "deployment/frontend",
            "team=ops",
        ],
    );
    let (code, out, err) = run(&["diff", "DIR"]);
    assert_eq!(code, 1, "{out}{err}");
    for line in [
        "-    team: ops",
        "+    team: shop",
        "-  replicas: 3",
        "+  replicas: 1",
        "-        image: nginx:1.29",
        "+        image: nginx:1.28",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in\n{out}");
    }
    // Only context lines may name what others added.
    let changed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with(['-', '+']) && !l.starts_with("---") && !l.starts_with("+++"))
        .collect();
    assert_eq!(changed.len(), 6, "{out}");
    assert!(
        !changed
            .iter()
            .any(|l| l.contains("on-call") || l.contains("DEBUG")),
        "{out}"
    );
    let (code, out, err) = run(&["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let d = get(1, &deploy);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["metadata"]["annotations"]["team"], "shop");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    foreign_fields_are_there("after apply put canopy's values back");
    let (code, out, _) = run(&["diff", "DIR"]);
    assert_eq!(code, 0, "in sync after: {out}");
}

#[test]
fn live_capacity_is_read_from_nodes_and_pods_and_divides_the_replicas() {
    let ns = "t-capacity";
    let x = apiserver::start();
    let on_x = |method: &str, path: &str, body: Option<(&str, Value)>| {
        request_at(&x.kubeconfig, method, path, body)
    };
    let post = |path: &str, obj: Value| {
        on_x("POST", path, Some(("application/json", obj))).unwrap();
    };
    // Cluster a: one node that takes 5 pods and 4 cores, two pods on it
    // (one of them finished), and a cordoned node that counts for nothing.
    for (name, cordoned) in [("node-1", false), ("node-2", true)] {
        post(
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                   "spec": {"unschedulable": cordoned}}),
        );
        on_x(
            "PATCH",
            &format!("/api/v1/nodes/{name}/status"),
            Some((
                "application/merge-patch+json",
                json!({"status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "5"},
                                  "capacity": {"cpu": "4", "memory": "8Gi", "pods": "5"},
                                  "conditions": [{"type": "Ready", "status": "True",
                                      "reason": "Test", "message": "set by the test",
                                      "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}),
            )),
        )
        .unwrap();
    }
    // No controller makes the default ServiceAccount that pods need.
    post(
        "/api/v1/namespaces/default/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
    );
    let pod = |name: &str, cpu: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"nodeName": "node-1", "automountServiceAccountToken": false,
                        "containers": [{"name": "c", "image": "busybox",
                                        "resources": {"requests": {"cpu": cpu}}}]}})
    };
    post("/api/v1/namespaces/default/pods", pod("busy-1", "1"));
    post("/api/v1/namespaces/default/pods", pod("busy-2", "500m"));
    post("/api/v1/namespaces/default/pods", pod("done", "2"));
    on_x(
        "PATCH",
        "/api/v1/namespaces/default/pods/done/status",
        Some((
            "application/merge-patch+json",
            json!({"status": {"phase": "Succeeded"}}),
        )),
    )
    .unwrap();

    // Git says a holds 1 pod; b holds 3. Six replicas fit only with what a
    // really has free (5 − 2 = 3 pods).
    let (k0, k1) = (kubeconfig(0), kubeconfig(1));
    let clusters = format!(
        "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: root}}\nspec: {{connection: {{kubeconfig: {}}}}}\n---\n\
         apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: a}}\nspec: {{parent: root, liveCapacity: true, capacity: {{pods: 1}}, connection: {{kubeconfig: {}}}}}\n---\n\
         apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: b}}\nspec: {{parent: root, capacity: {{pods: 3}}, connection: {{kubeconfig: {}}}}}\n",
        k0.display(),
        x.kubeconfig.display(),
        k1.display()
    );
    let app = format!(
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: app\nspec:\n  namespace: {ns}\n  placement:\n    clusters: {{names: [a, b]}}\n    replicas:\n      mode: Divided\n      total: 6\n      weights: {{dynamic: capacity}}\n"
    );
    let objs = objects(ns, "blue");
    let f = common::fleet(&[
        ("clusters.yaml", &clusters),
        ("workloads/app/workload.yaml", &app),
        ("workloads/app/objects.yaml", &objs),
    ]);
    // Before any read, the division is Git's: 4 of 6 fit.
    let (code, _, err) = canopy_on(f.path(), "capacity", &["render", "DIR"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("6 replicas do not fit: the chosen clusters hold 4"),
        "{err}"
    );

    let deploy = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
    let (code, out, err) = canopy_on(f.path(), "capacity", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(on_x("GET", &deploy, None).unwrap()["spec"]["replicas"], 3);
    assert_eq!(get(1, &deploy)["spec"]["replicas"], 3);
    // explain divides by the recorded read and says how old it is; the
    // cordoned node and the finished pod count for nothing.
    let (code, out, err) = canopy_on(f.path(), "capacity", &["explain", "DIR", "app"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("live capacity read") && out.contains("cpu 2.5, memory 8589934592, pods 3"),
        "{out}"
    );

    // A pod goes away: the next apply reads 4 free pods on a.
    // (No kubelet confirms a graceful delete: the pod goes at once.)
    on_x(
        "DELETE",
        "/api/v1/namespaces/default/pods/busy-2?gracePeriodSeconds=0",
        None,
    )
    .unwrap();
    let (code, out, err) = canopy_on(f.path(), "capacity", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = canopy_on(f.path(), "capacity", &["explain", "DIR", "app"]);
    assert!(out.contains("cpu 3, memory 8589934592, pods 4"), "{out}");
    let on_a = on_x("GET", &deploy, None).unwrap()["spec"]["replicas"]
        .as_u64()
        .unwrap();
    let on_b = get(1, &deploy)["spec"]["replicas"].as_u64().unwrap();
    assert_eq!((on_a + on_b, on_a >= on_b), (6, true));
}

/// A tenant's objects are written and pruned as its ServiceAccount: what
/// the cluster's RBAC refuses it (a ClusterRoleBinding canopy's own rules
/// allow) fails the apply before anything is written, saying as whom; what
/// it may write applies; a removed workload's objects are pruned as their
/// own tenant, never as another.
#[test]
fn a_tenant_writes_and_prunes_as_its_service_account() {
    let post = |path: &str, obj: Value| {
        request(2, "POST", path, Some(("application/json", obj))).unwrap();
    };
    for (ns, verbs) in [
        (
            "t-shop",
            json!(["get", "list", "create", "patch", "update"]),
        ),
        (
            "t-pay",
            json!(["get", "list", "create", "patch", "update", "delete"]),
        ),
    ] {
        post(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
        post(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer"}}),
        );
        post(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "deploy"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]}),
        );
        post(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "deploy"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deploy"},
                   "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}]}),
        );
    }
    let tenant = |name: &str, ns: &str, extra: &str| {
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  workloads: [{name}]\n  namespaces: [{ns}]\n  serviceAccount: {{namespace: {ns}, name: deployer}}\n{extra}")
    };
    let workload = |name: &str, ns: &str| {
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}}}\nspec: {{namespace: {ns}}}\n")
    };
    let cm = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: v}}\n")
    };
    let crb = "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: t-shop-admin}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\nsubjects: [{kind: ServiceAccount, name: deployer, namespace: t-shop}]\n";
    let shop_tenant = tenant(
        "shop",
        "t-shop",
        "  allow: [{group: rbac.authorization.k8s.io, kind: ClusterRoleBinding}]\n",
    );
    let pay_tenant = tenant("pay", "t-pay", "");
    let (shop_w, pay_w) = (workload("shop", "t-shop"), workload("pay", "t-pay"));
    let shop_objs = format!("{}{crb}", cm("settings"));
    let pay_objs = cm("ledger");
    let f = fleet(
        &[("root", None, &kubeconfig(2))],
        &[
            ("tenants/shop.yaml", &shop_tenant),
            ("tenants/pay.yaml", &pay_tenant),
            ("workloads/shop/workload.yaml", &shop_w),
            ("workloads/shop/objects.yaml", &shop_objs),
            ("workloads/pay/workload.yaml", &pay_w),
            ("workloads/pay/objects.yaml", &pay_objs),
        ],
    );
    let settings = "/api/v1/namespaces/t-shop/configmaps/settings";
    let ledger = "/api/v1/namespaces/t-pay/configmaps/ledger";
    let (code, out, err) = canopy_on(f.path(), "tenants", &["apply", "DIR"]);
    assert_eq!(code, 4, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains("as tenant \"shop\" (system:serviceaccount:t-shop:deployer)")
            && all.contains("ClusterRoleBinding.rbac.authorization.k8s.io t-shop-admin")
            && all.contains("cannot patch resource \"clusterrolebindings\"")
            && all.contains("objects changed before the failure: none"),
        "{all}"
    );
    assert!(
        !exists(2, settings),
        "nothing of the refused write is written"
    );
    assert!(!exists(
        2,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/t-shop-admin"
    ));

    // Without the binding, both tenants' objects apply as their accounts.
    write(f.path(), "workloads/shop/objects.yaml", &cm("settings"));
    let (code, out, err) = canopy_on(f.path(), "tenants", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(exists(2, settings) && exists(2, ledger));

    // pay leaves the fleet (its tenant stays): its ConfigMap is pruned as
    // pay's account, which may delete in t-pay; shop's, which may not
    // delete anything, would be refused.
    std::fs::remove_dir_all(f.path().join("workloads/pay")).unwrap();
    let (code, out, err) = canopy_on(f.path(), "tenants", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!exists(2, ledger), "{out}");
    assert!(exists(2, settings));
    // shop leaves too: its account may not delete, so the prune is refused
    // and says as whom; the ConfigMap stays.
    std::fs::remove_dir_all(f.path().join("workloads/shop")).unwrap();
    let (code, out, err) = canopy_on(f.path(), "tenants", &["apply", "DIR"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        format!("{out}{err}")
            .contains("as tenant \"shop\" (system:serviceaccount:t-shop:deployer)"),
        "{out}{err}"
    );
    assert!(exists(2, settings));
}

/// A CRD with a status subresource, a Namespace and one of its custom
/// resources of `size`; the group is the namespace's (`NS.example.com`),
/// so tests that run at once on one server share no CRD.
fn widget(ns: &str, size: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{ns}.example.com
spec:
  group: {ns}.example.com
  scope: Namespaced
  names: {{kind: Widget, plural: widgets, singular: widget}}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {{status: {{}}}}
      schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
---
apiVersion: {ns}.example.com/v1
kind: Widget
metadata:
  name: w
spec:
  size: {size}
"#
    )
}

/// Issue 30, item 1: a custom resource is judged by its conditions, as
/// kstatus reads them: `--wait` names why it is not ready; a staged
/// rollout's gate holds until its controller (played by the test, through
/// the status subresource) says Ready for the new generation, and fails
/// and rolls back when it says Stalled.
#[test]
fn custom_resources_are_judged_by_their_conditions_in_wait_and_in_a_rollouts_gate() {
    let ns = "t-cr";
    let f = tree(&[]);
    let dir = f.path();
    let repo = init_main(dir);
    let put = |path: &str, text: &str| std::fs::write(dir.join(path), text).unwrap();
    std::fs::create_dir_all(dir.join("workloads/app")).unwrap();
    // The state folder is the fleet's own, and no part of its history.
    put(".gitignore", ".canopy/\n");
    let wl = format!(
        "{}  placement:\n    clusters: {{names: [a, b]}}\n",
        workload(ns)
    );
    put("workloads/app/workload.yaml", &wl);
    put("workloads/app/objects.yaml", &widget(ns, 1));
    commit_all(&repo, "v1");
    let (code, out, err) = canopy_on(dir, "cr", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let path = format!("/apis/{ns}.example.com/v1/namespaces/{ns}/widgets/w");
    let set_status = |status: Value| {
        request(
            1,
            "PATCH",
            &format!("{path}/status"),
            Some(("application/merge-patch+json", json!({ "status": status }))),
        )
        .unwrap();
    };
    let ready = |generation: i64, status: &str, reason: &str, message: &str| {
        json!({"observedGeneration": generation, "conditions": [
            {"type": "Ready", "status": status, "reason": reason, "message": message}]})
    };

    // --wait: not ready, and why; then ready.
    set_status(ready(1, "False", "Provisioning", "waiting for capacity"));
    let (code, out, _) = canopy_on(dir, "cr", &["apply", "DIR", "--wait", "--timeout", "1s"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!(
            "Widget.{ns}.example.com {ns}/w: Ready is False: Provisioning: waiting for capacity"
        )),
        "{out}"
    );
    set_status(ready(1, "True", "Provisioned", "ok"));
    let (code, out, _) = canopy_on(dir, "cr", &["apply", "DIR", "--wait", "--timeout", "5s"]);
    assert_eq!(code, 0, "{out}");

    // A staged rollout: the canary's gate waits for the new generation to
    // be Ready; the controller says so a moment after it sees it.
    let controller = |generation: i64, status: Value| {
        let path = path.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while get(1, &path)["metadata"]["generation"] != json!(generation) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "generation {generation} never came"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            std::thread::sleep(std::time::Duration::from_millis(700));
            request(
                1,
                "PATCH",
                &format!("{path}/status"),
                Some(("application/merge-patch+json", json!({ "status": status }))),
            )
            .unwrap();
        })
    };
    put(
        "workloads/app/workload.yaml",
        &format!("{wl}  rollout:\n    stages:\n      - {{name: canary, clusters: {{names: [a]}}}}\n      - {{name: rest, percent: 100}}\n    healthTimeout: 60s\n    rollback: auto\n"),
    );
    put("workloads/app/objects.yaml", &widget(ns, 2));
    let v2 = commit_all(&repo, "v2");
    let playing = controller(2, ready(2, "True", "Provisioned", "ok"));
    let (code, out, err) = canopy_on(dir, "cr", &["apply", "DIR"]);
    playing.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rollout app: canary healthy"), "{out}");
    let size = |i: usize| get(i, &path)["spec"]["size"].clone();
    assert_eq!((size(1), size(2)), (json!(2), json!(2)));

    // The next change stalls on the canary: the gate fails at once and the
    // canary goes back to v2; the rest never gets it.
    put("workloads/app/objects.yaml", &widget(ns, 3));
    commit_all(&repo, "v3");
    let playing = controller(
        3,
        json!({"observedGeneration": 3, "conditions": [
            {"type": "Stalled", "status": "True", "reason": "QuotaExceeded", "message": "no quota for size 3"},
            {"type": "Ready", "status": "False", "reason": "QuotaExceeded"}]}),
    );
    let started = std::time::Instant::now();
    let (code, out, err) = canopy_on(dir, "cr", &["apply", "DIR"]);
    playing.join().unwrap();
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(50),
        "a stalled object fails the gate without waiting out healthTimeout"
    );
    assert!(
        out.contains(&format!("rolled back 1 cluster(s) of canary to {v2}")),
        "{out}"
    );
    assert_eq!((size(1), size(2)), (json!(2), json!(2)));
    let (_, text, _) = canopy_on(dir, "cr", &["rollout", "status", "DIR", "app"]);
    assert!(
        text.contains("Stalled: QuotaExceeded: no quota for size 3"),
        "{text}"
    );
}

/// A namespace and a Job running `image`.
fn job(ns: &str, image: &str, annotations: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations: {{{annotations}}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: {image}
          command: [sh, -c, "echo migrate"]
"#
    )
}

/// Issue 30, item 5: a Job's template is immutable. A change to it fails
/// the cluster before anything is written, typed, naming the object and
/// the field and how to opt in; with `canopy.dev/replace: on-immutable`
/// (or the workload's `replaceOnImmutable`) the Job is deleted and created
/// again in the same run, and a dry run says it would be.
#[test]
fn an_immutable_field_fails_typed_unless_the_object_asks_to_be_replaced() {
    let ns = "t-immutable";
    let k = kubeconfig(0);
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &job(ns, "busybox:1.36", "")),
        ],
    );
    let (code, out, err) = canopy_on(f.path(), "immutable", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let path = format!("/apis/batch/v1/namespaces/{ns}/jobs/migrate");
    let first = get(0, &path);
    let image = |j: &Value| j["spec"]["template"]["spec"]["containers"][0]["image"].clone();

    write(
        f.path(),
        "workloads/app/objects.yaml",
        &job(ns, "busybox:1.37", ""),
    );
    let (code, out, _) = canopy_on(f.path(), "immutable", &["apply", "DIR", "-o", "json"]);
    assert_eq!(code, 4, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let failure = &v["clusters"][0]["failure"];
    assert_eq!(failure["reason"], "immutable", "{v}");
    assert_eq!(failure["fields"], json!(["spec.template"]), "{v}");
    let (code, out, _) = canopy_on(f.path(), "immutable", &["apply", "DIR"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!("Job.batch {ns}/migrate: the API server refuses to change immutable field(s) spec.template")),
        "{out}"
    );
    assert!(out.contains("canopy.dev/replace: on-immutable"), "{out}");
    assert_eq!(get(0, &path)["metadata"]["uid"], first["metadata"]["uid"]);

    // Opted in on the object: a dry run says so and writes nothing; the
    // apply replaces it.
    write(
        f.path(),
        "workloads/app/objects.yaml",
        &job(ns, "busybox:1.37", "canopy.dev/replace: on-immutable"),
    );
    let (code, out, _) = canopy_on(f.path(), "immutable", &["apply", "DIR", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("~ Job.batch {ns}/migrate (would be replaced by delete and create: immutable spec.template)")),
        "{out}"
    );
    let (code, out, _) = canopy_on(f.path(), "immutable", &["diff", "DIR"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is replaced (deleted, then created as below)"),
        "{out}"
    );
    assert_eq!(image(&get(0, &path)), json!("busybox:1.36"));
    let (code, out, err) = canopy_on(f.path(), "immutable", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("(replaced by delete and create: immutable spec.template)"),
        "{out}"
    );
    let second = get(0, &path);
    assert_ne!(second["metadata"]["uid"], first["metadata"]["uid"]);
    assert_eq!(image(&second), json!("busybox:1.37"));
    let (code, out, _) = canopy_on(f.path(), "immutable", &["diff", "DIR"]);
    assert_eq!(code, 0, "in sync after the replace: {out}");

    // Opted in on the workload: every object but the Namespace.
    write(
        f.path(),
        "workloads/app/workload.yaml",
        &format!("{}  replaceOnImmutable: true\n", workload(ns)),
    );
    write(
        f.path(),
        "workloads/app/objects.yaml",
        &job(ns, "busybox:1.38", ""),
    );
    let (code, out, err) = canopy_on(f.path(), "immutable", &["apply", "DIR"]);
    assert_eq!(code, 0, "{out}{err}");
    let third = get(0, &path);
    assert_ne!(third["metadata"]["uid"], second["metadata"]["uid"]);
    assert_eq!(image(&third), json!("busybox:1.38"));
    assert_eq!(
        get(0, &format!("/api/v1/namespaces/{ns}"))["metadata"]["annotations"]
            .get("canopy.dev/replace"),
        None
    );

    // Never on what holds data: refused before anything runs.
    write(
        f.path(),
        "workloads/app/objects.yaml",
        &job(ns, "busybox:1.38", "").replacen(
            "  name: t-immutable\n",
            "  name: t-immutable\n  annotations: {canopy.dev/replace: on-immutable}\n",
            1,
        ),
    );
    let (code, _, err) = canopy_on(f.path(), "immutable", &["validate", "DIR"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("workloads/app/objects.yaml:1: annotation canopy.dev/replace on a Namespace: canopy never replaces one"),
        "{err}"
    );
}

/// Issue 30, item 2: a health rule in CEL for a kind whose status has no
/// conditions (a phase): `--wait` holds until it holds, says which rule
/// judged the object, and fails at once when its `failed` holds.
#[test]
fn a_health_rule_in_cel_judges_a_kind_by_its_phase() {
    let ns = "t-cel";
    let k = kubeconfig(0);
    let f = fleet(
        &[("root", None, &k)],
        &[
            ("workloads/app/workload.yaml", &workload(ns)),
            ("workloads/app/objects.yaml", &widget(ns, 1)),
            (
                "defaults.yaml",
                "apiVersion: canopy.dev/v1alpha1\nkind: Defaults\nmetadata: {name: defaults}\nspec:\n  health:\n    - group: t-cel.example.com\n      kind: Widget\n      healthy: status.phase == 'Running'\n      failed: status.phase == 'Broken'\n",
            ),
        ],
    );
    let (code, out, _) = canopy_on(
        f.path(),
        "cel",
        &["apply", "DIR", "--wait", "--timeout", "1s"],
    );
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!("Widget.{ns}.example.com {ns}/w: Defaults spec.health[0]: healthy does not hold yet: `status.phase == 'Running'`")),
        "{out}"
    );
    let (code, out, _) = canopy_on(f.path(), "cel", &["explain", "DIR", "app"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("health judged by rules written for the kind (before canopy's own):\n  Widget.t-cel.example.com: Defaults spec.health[0]"),
        "{out}"
    );
    let path = format!("/apis/{ns}.example.com/v1/namespaces/{ns}/widgets/w/status");
    let phase = |p: &str| {
        request(
            0,
            "PATCH",
            &path,
            Some((
                "application/merge-patch+json",
                json!({"status": {"phase": p}}),
            )),
        )
        .unwrap();
    };
    phase("Running");
    let (code, out, _) = canopy_on(
        f.path(),
        "cel",
        &["apply", "DIR", "--wait", "--timeout", "5s"],
    );
    assert_eq!(code, 0, "{out}");
    phase("Broken");
    let started = std::time::Instant::now();
    let (code, out, _) = canopy_on(
        f.path(),
        "cel",
        &["apply", "DIR", "--wait", "--timeout", "60s"],
    );
    assert_eq!(code, 4, "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(50),
        "failed at once"
    );
    assert!(
        out.contains("Defaults spec.health[0]: failed holds: `status.phase == 'Broken'`"),
        "{out}"
    );
    // A rule that is not CEL is refused where it is written.
    write(
        f.path(),
        "defaults.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Defaults\nmetadata: {name: defaults}\nspec:\n  health:\n    - {group: t-cel.example.com, kind: Widget, healthy: \"status.phase ==\"}\n",
    );
    let (code, _, err) = canopy_on(f.path(), "cel", &["validate", "DIR"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "defaults.yaml:6: spec.health[0].healthy: health rule healthy is not a CEL expression"
        ),
        "{err}"
    );
}

/// Issue 30, item 3: an operator workload (its CRD and its Deployment) and
/// a workload of its custom resources that depends on it. The custom
/// resources are not written while the operator is not healthy (no
/// controller runs here: its Deployment never rolls out by itself); they
/// are left pending with the reason and the apply says so. Once the
/// operator is healthy, they are written.
#[test]
fn a_workload_waits_on_each_cluster_for_the_one_it_depends_on() {
    let ns = "t-depends";
    let k = kubeconfig(0);
    let operator = widget(ns, 1)
        .split(&format!("---\napiVersion: {ns}.example.com/v1"))
        .next()
        .unwrap()
        .to_string()
        + &format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: widget-operator\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: widget-operator}}\n  template:\n    metadata:\n      labels: {{app: widget-operator}}\n    spec:\n      containers:\n        - {{name: operator, image: example.com/widget-operator:1.0}}\n"
        );
    let f = fleet(
        &[("root", None, &k)],
        &[
            (
                "workloads/operator/workload.yaml",
                "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: operator\n",
            ),
            ("workloads/operator/objects.yaml", &operator),
            (
                "workloads/widgets/workload.yaml",
                &format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: widgets\nspec:\n  namespace: {ns}\n  dependsOn: [operator]\n"),
            ),
            (
                "workloads/widgets/w.yaml",
                 &format!("apiVersion: {ns}.example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  size: 1\n"),
            ),
        ],
    );
    let widget_path = format!("/apis/{ns}.example.com/v1/namespaces/{ns}/widgets/w");
    let (code, out, err) = canopy_on(f.path(), "depends", &["apply", "DIR", "--timeout", "2s"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("… workload widgets pending: waits for operator, not healthy: cluster root: not healthy after 2s:")
            && out.contains(&format!("Deployment.apps {ns}/widget-operator: observedGeneration 0 < generation 1")),
        "{out}"
    );
    assert!(!exists(0, &widget_path), "nothing of the dependent written");
    let deployment = format!("/apis/apps/v1/namespaces/{ns}/deployments/widget-operator");
    assert!(exists(0, &deployment));

    // Play the Deployment controller: the operator is up.
    request(
        0,
        "PATCH",
        &format!("{deployment}/status"),
        Some((
            "application/merge-patch+json",
            json!({"status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                "readyReplicas": 1, "availableReplicas": 1}}),
        )),
    )
    .unwrap();
    let (code, out, err) = canopy_on(f.path(), "depends", &["apply", "DIR", "--timeout", "10s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("+ Widget.{ns}.example.com {ns}/w")),
        "{out}"
    );
    let rv = |p: &str| -> u64 {
        get(0, p)["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        rv(&widget_path) > rv(&deployment),
        "written after the operator"
    );
    let (code, out, _) = canopy_on(f.path(), "depends", &["diff", "DIR"]);
    assert_eq!(code, 0, "{out}");

    // A cycle is refused, with its path.
    write(
        f.path(),
        "workloads/operator/workload.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: operator\nspec:\n  dependsOn: [widgets]\n",
    );
    let (code, _, err) = canopy_on(f.path(), "depends", &["validate", "DIR"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("dependsOn makes a cycle: operator → widgets → operator"),
        "{err}"
    );
}
