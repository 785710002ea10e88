//! Helm workloads through the binary, with the real `helm` built from Go
//! modules by the suite (tests/tools): a chart of ours with a vendored
//! dependency, a `crds/` folder, a test hook, a helper template and a
//! values file, given values per cluster; `helm template` run once per
//! distinct set of values; the chart from a folder, a Git revision and a
//! chart repository served on loopback (an `index.yaml` over HTTP); a relay
//! without Helm; a missing binary and a version range refused with nothing
//! applied.

mod common;
use common::*;

#[path = "support/api.rs"]
mod api;
#[path = "support/apiserver.rs"]
mod apiserver;
#[path = "support/tools.rs"]
mod tools;

use std::path::Path;

const CLUSTERS: &str = "apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: hub, labels: {tier: hub}}
spec: {values: {mirror: registry.hub}}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: mid, labels: {tier: region}}
spec: {parent: hub, values: {mirror: registry.eu}}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: edge-a, labels: {tier: edge}}
spec: {parent: mid}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: edge-b, labels: {tier: edge}}
spec: {parent: mid}
";

const WORKLOAD: &str = "apiVersion: canopy.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  namespace: web
  helm:
    chart: chart
    releaseName: shop
    valuesFiles: [values-prod.yaml]
    values:
      tier: \"{{ cluster.labels.tier }}\"
      image: {registry: \"{{ cluster.values.mirror }}\"}
      greeting: \"hello from {{ cluster.values.mirror }}\"
  placement:
    replicas: {mode: Divided, total: 8}
";

/// The chart, relative to its own folder.
fn chart() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n  - name: settings\n    version: 0.1.0\n",
        ),
        (
            "values.yaml",
            "replicaCount: 1\nimage: {registry: docker.io, tag: \"1.0\"}\ntier: none\ngreeting: hi\n",
        ),
        (
            "templates/_helpers.tpl",
            "{{- define \"web.fullname\" -}}{{ .Release.Name }}-web{{- end }}\n",
        ),
        (
            "templates/deployment.yaml",
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include \"web.fullname\" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    tier: {{ .Values.tier | quote }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels: {app: {{ include \"web.fullname\" . }}}
  template:
    metadata:
      labels: {app: {{ include \"web.fullname\" . }}}
    spec:
      containers:
        - name: web
          image: \"{{ .Values.image.registry }}/web:{{ .Values.image.tag }}\"
          env:
            - {name: GREETING, value: {{ .Values.greeting | quote }}}
",
        ),
        (
            "templates/tests/test-connection.yaml",
            "apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations: {\"helm.sh/hook\": test}
spec:
  containers: [{name: t, image: busybox}]
",
        ),
        (
            "crds/widgets.yaml",
            "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
",
        ),
        (
            "charts/settings/Chart.yaml",
            "apiVersion: v2\nname: settings\nversion: 0.1.0\n",
        ),
        (
            "charts/settings/templates/configmap.yaml",
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  color: {{ .Values.color | default \"green\" | quote }}
",
        ),
    ]
}

/// The fleet with the chart in the workload's folder, each text passed
/// through `edit` (by path).
fn write_fleet(dir: &Path, edit: impl Fn(&str, &str) -> String) {
    let mut files: Vec<(String, String)> = vec![
        ("clusters.yaml".into(), CLUSTERS.into()),
        ("workloads/web/workload.yaml".into(), WORKLOAD.into()),
        (
            "workloads/web/values-prod.yaml".into(),
            "image: {tag: \"2.0\"}\n".into(),
        ),
        (
            "overrides/edge.yaml".into(),
            "apiVersion: canopy.dev/v1alpha1\nkind: Override\nmetadata: {name: edge}\nspec:\n  clusters: {selector: {matchLabels: {tier: edge}}}\n  resources: [{group: apps, kind: Deployment}]\n  patches:\n    - mergePatch: {metadata: {labels: {edge: \"yes\"}}}\n".into(),
        ),
    ];
    for (p, t) in chart() {
        files.push((format!("workloads/web/chart/{p}"), t.to_string()));
    }
    for (p, t) in files {
        let at = dir.join(&p);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, edit(&p, &t)).unwrap();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// canopy with the suite's helm.
fn run_h(home: &Path, args: &[&str]) -> (i32, String, String) {
    canopy_in(home, &[("CANOPY_HELM", s(tools::helm()))], args)
}

/// A wrapper around the suite's helm that logs each run's arguments.
fn counting_helm(home: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = home.join("helm-runs.log");
    let wrapper = home.join("helm-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$1\" >> {}\nexec {} \"$@\"\n",
            log.display(),
            tools::helm().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, log)
}

fn runs(log: &Path, verb: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == verb)
        .count()
}

/// What every cluster of the fleet must run: the chart's objects with the
/// cluster's values, divided and labelled by canopy.
fn check_rendered(state: &Path) {
    let mut total = 0;
    for (c, tier, registry) in [
        ("hub", "hub", "registry.hub"),
        ("mid", "region", "registry.eu"),
        ("edge-a", "edge", "registry.eu"),
        ("edge-b", "edge", "registry.eu"),
    ] {
        let objs = state_objects(state, c);
        let d = &objs[obj_id("apps", "Deployment", "web", "shop-web")];
        assert!(d.is_object(), "{c}: {objs}");
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        // Per-cluster values over the values file over the chart's own.
        assert_eq!(container["image"], format!("{registry}/web:2.0"), "{c}");
        assert_eq!(d["metadata"]["labels"]["tier"], tier, "{c}");
        assert_eq!(
            container["env"][0]["value"],
            format!("hello from {registry}"),
            "{c}"
        );
        // canopy's override and ownership on Helm's objects.
        assert_eq!(
            d["metadata"]["labels"]["edge"].as_str(),
            c.starts_with("edge").then_some("yes"),
            "{c}"
        );
        assert_eq!(d["metadata"]["labels"]["canopy.dev/workload"], "web");
        total += d["spec"]["replicas"].as_u64().unwrap();
        // The dependency's ConfigMap, the CRD from crds/, no test hook.
        assert_eq!(
            objs[obj_id("", "ConfigMap", "web", "shop-settings")]["data"]["color"],
            "green",
            "{c}"
        );
        assert!(
            objs[obj_id(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                "",
                "widgets.example.com"
            )]
            .is_object(),
            "{c}: the chart's CRD"
        );
        assert!(
            objs[obj_id("", "Pod", "web", "shop-test")].is_null(),
            "{c}: the test hook is left out"
        );
    }
    assert_eq!(total, 8, "canopy divides the chart's Deployment");
}

#[test]
fn a_chart_renders_once_per_distinct_values_and_is_placed_like_any_manifest() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    write_fleet(&dir, |_, t| t.to_string());
    let state = home.path().join("state");
    let (wrapper, log) = counting_helm(home.path());
    let helm = [("CANOPY_HELM", s(&wrapper))];
    let (code, out, err) = canopy_in(
        home.path(),
        &helm,
        &["apply", s(&dir), "--state", s(&state)],
    );
    assert_eq!(code, 0, "{out}{err}");
    // hub, mid and the two edges: three distinct sets of values.
    assert_eq!(
        runs(&log, "template"),
        3,
        "one helm template per distinct values"
    );
    check_rendered(&state);

    let (code, out, err) = run_h(home.path(), &["explain", s(&dir), "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "helm template workloads/web/chart (3 distinct renders for 4 chosen clusters)"
        ),
        "{out}"
    );

    // Applied again: nothing to write.
    let (code, out, _) = run_h(home.path(), &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");

    // A new value for the edges only: only the edges change.
    std::fs::write(
        dir.join("workloads/web/workload.yaml"),
        WORKLOAD.replace(
            "greeting: \"hello from {{ cluster.values.mirror }}\"",
            "greeting: \"{{ 'hey' if cluster.labels.tier == 'edge' else 'hello from ' ~ cluster.values.mirror }}\"",
        ),
    )
    .unwrap();
    let (code, out, err) = run_h(
        home.path(),
        &["diff", s(&dir), "--state", s(&state), "-o", "json"],
    );
    assert_eq!(code, 1, "a diff: {out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let changed: Vec<&str> = report["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "in-sync")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["edge-a", "edge-b"], "{out}");

    // The same fleet from a Git revision renders the same objects (the
    // helper template is a non-YAML file of the revision).
    let repo = init_main(&dir);
    commit_all(&repo, "web");
    let (code, from_dir, err) = run_h(home.path(), &["render", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    let url = format!("file://{}", dir.display());
    let (code, from_git, err) = run_h(
        home.path(),
        &[
            "render",
            "--repo",
            &url,
            "--ref",
            "main",
            "--fleet-name",
            "fleet",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(from_git, from_dir);
    assert!(
        from_git.contains("image: registry.hub/web:2.0"),
        "{from_git}"
    );
}

/// Serves `dir`'s files over HTTP on loopback until dropped.
struct Served {
    server: std::sync::Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(dir: &Path) -> Served {
    let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let port = server.server_addr().to_ip().unwrap().port();
    let (srv, root) = (server.clone(), dir.to_path_buf());
    let thread = std::thread::spawn(move || {
        for req in srv.incoming_requests() {
            let name = req.url().trim_start_matches('/').to_string();
            let file = root.join(&name);
            let resp = if !name.contains("..") && file.is_file() {
                tiny_http::Response::from_data(std::fs::read(file).unwrap())
            } else {
                tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404)
            };
            let _ = req.respond(resp);
        }
    });
    Served {
        server,
        thread: Some(thread),
        url: format!("http://127.0.0.1:{port}"),
    }
}

#[test]
fn a_chart_from_a_chart_repository_is_pulled_once_and_kept() {
    let home = tempfile::tempdir().unwrap();
    // The chart packed and indexed by the real helm, served on loopback.
    let src = home.path().join("src");
    write_fleet(&src, |_, t| t.to_string());
    let repo_dir = home.path().join("charts");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let helm = tools::helm();
    let ok = std::process::Command::new(helm)
        .args(["package", "--destination"])
        .arg(&repo_dir)
        .arg(src.join("workloads/web/chart"))
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let served = serve(&repo_dir);
    let ok = std::process::Command::new(helm)
        .args(["repo", "index", "--url", &served.url])
        .arg(&repo_dir)
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // The fleet names the chart in the repository; no chart folder.
    let dir = home.path().join("fleet");
    let url = served.url.clone();
    write_fleet(&dir, |p, t| {
        if p == "workloads/web/workload.yaml" {
            t.replace(
                "chart: chart\n",
                &format!("chart: web\n    repo: {url}\n    version: 0.1.0\n"),
            )
        } else {
            t.to_string()
        }
    });
    std::fs::remove_dir_all(dir.join("workloads/web/chart")).unwrap();
    let state = home.path().join("state");
    let (wrapper, log) = counting_helm(home.path());
    let env = [("CANOPY_HELM", s(&wrapper))];
    let (code, out, err) = canopy_in(home.path(), &env, &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
    check_rendered(&state);
    assert_eq!(runs(&log, "pull"), 1, "pulled once for four clusters");
    let (code, out, err) = canopy_in(home.path(), &env, &["explain", s(&dir), "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "helm template web 0.1.0 from {url} (3 distinct renders"
        )),
        "{out}"
    );

    // The repository gone: the pulled chart is in canopy's cache.
    drop(served);
    let (code, out, err) = canopy_in(home.path(), &env, &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no changes"), "{out}");
    assert_eq!(runs(&log, "pull"), 1, "not pulled again");

    // A version that is not there is an error naming the chart; nothing
    // changes.
    let before = state_files(&state);
    std::fs::write(
        dir.join("workloads/web/workload.yaml"),
        std::fs::read_to_string(dir.join("workloads/web/workload.yaml"))
            .unwrap()
            .replace("version: 0.1.0", "version: 0.2.0"),
    )
    .unwrap();
    let (code, out, err) = canopy_in(home.path(), &env, &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("helm pull web 0.2.0"), "{err}");
    assert_eq!(state_files(&state), before);
}

#[test]
fn a_relay_gets_the_outputs_and_renders_what_the_root_renders() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    write_fleet(&dir, |p, t| {
        if p == "clusters.yaml" {
            t.replace(
                "spec: {parent: hub, values: {mirror: registry.eu}}",
                "spec: {parent: hub, relay: {}, values: {mirror: registry.eu}}",
            )
        } else {
            t.to_string()
        }
    });
    // The same fleet without the relay, applied directly; the agent has
    // no helm at all.
    let flat_dir = home.path().join("flat-fleet");
    write_fleet(&flat_dir, |_, t| t.to_string());
    relay_renders_as_direct(
        home.path(),
        &[("CANOPY_HELM", s(tools::helm()))],
        &dir,
        "mid",
        &flat_dir,
        &["edge-a", "edge-b"],
    );
}

#[test]
fn without_helm_or_with_a_version_range_nothing_is_applied() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    write_fleet(&dir, |_, t| t.to_string());
    let state = home.path().join("state");
    let (code, out, err) = run_h(home.path(), &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
    let before = state_files(&state);

    // No binary anywhere.
    let empty = home.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, out, err) = canopy_in(
        home.path(),
        &[("PATH", s(&empty))],
        &["apply", s(&dir), "--state", s(&state)],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("workload \"web\" is rendered with Helm: no helm binary")
            && err.contains("install Helm 3"),
        "{err}"
    );
    assert_eq!(
        state_files(&state),
        before,
        "nothing applied, nothing pruned"
    );

    // A chart that fails to render: Helm's message, with the chart's path.
    std::fs::write(
        dir.join("workloads/web/chart/templates/broken.yaml"),
        "{{ .Values.nope.deeper }}\n",
    )
    .unwrap();
    let (code, out, err) = run_h(home.path(), &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("helm template failed")
            && err.contains("web/templates/broken.yaml:1:10")
            && err.contains("nil pointer evaluating"),
        "{err}"
    );
    assert_eq!(state_files(&state), before);
    std::fs::remove_file(dir.join("workloads/web/chart/templates/broken.yaml")).unwrap();

    // A remote chart at a range, and a values file outside the folder.
    std::fs::write(
        dir.join("workloads/web/workload.yaml"),
        WORKLOAD
            .replace(
                "chart: chart\n",
                "chart: web\n    repo: https://charts.example.com\n    version: ^1.2.0\n",
            )
            .replace("[values-prod.yaml]", "[../../secrets.yaml]"),
    )
    .unwrap();
    let (code, out, err) = run_h(home.path(), &["validate", s(&dir)]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("spec.helm.version \"^1.2.0\" is not an exact version"),
        "{err}"
    );
    assert!(
        err.contains("values file \"../../secrets.yaml\" is not a file inside the workload's folder workloads/web"),
        "{err}"
    );
}

/// A chart that asks what it is rendered for, as popular charts do: a
/// `kubeVersion` constraint, a `semverCompare` choice of API version, and
/// a ServiceMonitor only where the Prometheus operator's API is served.
fn capabilities_chart(dir: &Path) {
    for (p, t) in [
        (
            "Chart.yaml",
            "apiVersion: v2\nname: caps\nversion: 0.1.0\nkubeVersion: \">=1.23.0-0\"\n",
        ),
        (
            "templates/facts.yaml",
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: facts
  namespace: {{ .Release.Namespace }}
data:
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  monitoring: {{ .Capabilities.APIVersions.Has \"monitoring.coreos.com/v1\" | quote }}
  servicemonitorKind: {{ .Capabilities.APIVersions.Has \"monitoring.coreos.com/v1/ServiceMonitor\" | quote }}
",
        ),
        (
            "templates/pdb.yaml",
            "{{- if semverCompare \">=1.25-0\" .Capabilities.KubeVersion.GitVersion }}
apiVersion: policy/v1
{{- else }}
apiVersion: policy/v1beta1
{{- end }}
kind: PodDisruptionBudget
metadata:
  name: web
  namespace: {{ .Release.Namespace }}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
",
        ),
        (
            "templates/servicemonitor.yaml",
            "{{- if .Capabilities.APIVersions.Has \"monitoring.coreos.com/v1\" }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: web
  namespace: {{ .Release.Namespace }}
spec:
  selector: {matchLabels: {app: web}}
  endpoints: [{port: http}]
{{- end }}
",
        ),
    ] {
        let at = dir.join(p);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, t).unwrap();
    }
}

/// An object without what canopy adds (its labels and annotations), to
/// compare with what `helm template` made.
fn without_canopy(mut o: serde_json::Value) -> serde_json::Value {
    for field in ["labels", "annotations"] {
        if let Some(m) = o["metadata"][field].as_object_mut() {
            m.retain(|k, _| !k.starts_with("canopy.dev/"));
            if m.is_empty() {
                o["metadata"].as_object_mut().unwrap().remove(field);
            }
        }
    }
    o
}

/// Issue 33: each cluster's charts render for its own Kubernetes version
/// and APIs (declared here), exactly as `helm template --kube-version
/// --api-versions` renders by hand; a cluster that declares nothing renders
/// for canopy's default, not helm's compiled-in version; a version below
/// the chart's `kubeVersion` is the chart's error, naming the cluster.
#[test]
fn each_cluster_renders_charts_for_its_own_kubernetes_version_and_apis() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    capabilities_chart(&dir.join("workloads/web/chart"));
    std::fs::write(
        dir.join("clusters.yaml"),
        "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: new}\nspec:\n  kubernetesVersion: v1.34.2\n  apiVersions: [monitoring.coreos.com/v1, monitoring.coreos.com/v1/ServiceMonitor]\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: old}\nspec: {parent: new, kubernetesVersion: v1.24.3}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: plain}\nspec: {parent: new}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("workloads/web/workload.yaml"),
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: web}\nspec:\n  namespace: web\n  helm: {chart: chart}\n",
    )
    .unwrap();
    let (helm, log) = counting_helm(home.path());
    let (code, out, err) = canopy_in(
        home.path(),
        &[("CANOPY_HELM", s(&helm))],
        &["render", s(&dir), "-o", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        runs(&log, "template"),
        3,
        "one run per distinct version and APIs"
    );
    let rendered: serde_json::Value = serde_json::from_str(&out).unwrap();
    let objects = |cluster: &str| -> Vec<serde_json::Value> {
        let c = rendered["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == cluster)
            .unwrap();
        let mut all: Vec<serde_json::Value> = c["objects"]
            .as_array()
            .unwrap()
            .iter()
            .cloned()
            .map(without_canopy)
            .collect();
        all.sort_by_key(|o| o.to_string());
        all
    };
    for (cluster, version, apis, pdb, monitor) in [
        (
            "new",
            "v1.34.2",
            &[
                "monitoring.coreos.com/v1",
                "monitoring.coreos.com/v1/ServiceMonitor",
            ][..],
            "policy/v1",
            true,
        ),
        ("old", "v1.24.3", &[][..], "policy/v1beta1", false),
        ("plain", "v1.36.0", &[][..], "policy/v1", false),
    ] {
        // The same chart through helm by hand, for that cluster.
        let mut args = vec![
            "template".to_string(),
            "web".into(),
            dir.join("workloads/web/chart").display().to_string(),
            "--namespace".into(),
            "web".into(),
            "--kube-version".into(),
            version.into(),
        ];
        for a in apis {
            args.extend(["--api-versions".to_string(), a.to_string()]);
        }
        let by_hand = std::process::Command::new(tools::helm())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            by_hand.status.success(),
            "{}",
            String::from_utf8_lossy(&by_hand.stderr)
        );
        let mut expected: Vec<serde_json::Value> =
            serde_yaml::Deserializer::from_slice(&by_hand.stdout)
                .filter_map(|d| {
                    let v: serde_json::Value = serde::Deserialize::deserialize(d).ok()?;
                    (!v.is_null()).then_some(v)
                })
                .collect();
        expected.sort_by_key(|o| o.to_string());
        let got = objects(cluster);
        assert_eq!(got, expected, "{cluster}");
        let facts = got.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        assert_eq!(facts["data"]["kube"], version, "{cluster}");
        assert!(got
            .iter()
            .any(|o| o["kind"] == "PodDisruptionBudget" && o["apiVersion"] == pdb));
        assert_eq!(
            got.iter().any(|o| o["kind"] == "ServiceMonitor"),
            monitor,
            "{cluster}"
        );
    }

    // explain says what each cluster's charts were rendered for.
    let (code, out, err) = canopy_in(
        home.path(),
        &[("CANOPY_HELM", s(&helm))],
        &["explain", s(&dir), "web"],
    );
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "new: Kubernetes v1.34.2 (declared in spec.kubernetesVersion)",
        "old: Kubernetes v1.24.3 (declared in spec.kubernetesVersion)",
        "plain: Kubernetes v1.36.0 (canopy's default: neither declared nor read)",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }

    // Below the chart's kubeVersion: the chart says so, for that cluster.
    let clusters = std::fs::read_to_string(dir.join("clusters.yaml")).unwrap();
    std::fs::write(
        dir.join("clusters.yaml"),
        clusters.replace("v1.24.3", "v1.20.0"),
    )
    .unwrap();
    let (code, out, err) = canopy_in(
        home.path(),
        &[("CANOPY_HELM", s(&helm))],
        &["validate", s(&dir)],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(
            "chart requires kubeVersion: >=1.23.0-0 which is incompatible with Kubernetes v1.20.0"
        ),
        "{err}"
    );
    // A declared version or API version is checked before helm sees it.
    std::fs::write(
        dir.join("clusters.yaml"),
        clusters
            .replace("v1.24.3", "\"1.24\"")
            .replace("monitoring.coreos.com/v1,", "\"--set=x\","),
    )
    .unwrap();
    let (code, out, err) = canopy_in(
        home.path(),
        &[("CANOPY_HELM", s(&helm))],
        &["validate", s(&dir)],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("spec.kubernetesVersion \"1.24\" is not a Kubernetes version")
            && err.contains("spec.apiVersions entry \"--set=x\" is not an API version"),
        "{err}"
    );
}

/// The suite's helm is built as Helm's release build is: it reports its
/// version and, without `--kube-version`, renders for the Kubernetes
/// version its Kubernetes libraries are, not v1.20.0.
#[test]
fn the_suites_helm_is_built_like_a_release() {
    let out = std::process::Command::new(tools::helm())
        .args(["version", "--template", "{{.Version}}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v3.22.0");
    let home = tempfile::tempdir().unwrap();
    let chart = home.path().join("chart");
    capabilities_chart(&chart);
    let out = std::process::Command::new(tools::helm())
        .args(["template", "web"])
        .arg(&chart)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("v1.20.0"), "{text}");
    assert!(text.contains("kube: \"v1.3"), "{text}");
}

/// Issue 33, on a real API server: a cluster that declares nothing has
/// its version and APIs read by the apply that reconciles it, and
/// recorded; once the Prometheus operator's CRD is installed, the next
/// apply renders the chart's ServiceMonitor for it, and `render`, which
/// reaches no cluster, renders for what was recorded.
#[test]
fn a_clusters_version_and_apis_are_read_and_a_new_crd_brings_its_objects() {
    let server = apiserver::start();
    let send = |method: &str, path: &str, body: Option<serde_json::Value>| {
        api::send(
            &server.kubeconfig,
            method,
            path,
            body.map(|b| ("application/json", b)),
        )
    };
    send(
        "POST",
        "/api/v1/namespaces",
        Some(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    capabilities_chart(&dir.join("workloads/web/chart"));
    std::fs::write(
        dir.join("clusters.yaml"),
        format!(
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: prod}}\nspec: {{connection: {{kubeconfig: {}}}}}\n",
            server.kubeconfig.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("workloads/web/workload.yaml"),
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: web}\nspec:\n  namespace: web\n  helm: {chart: chart}\n",
    )
    .unwrap();
    let env = [("CANOPY_HELM", s(tools::helm()))];
    let apply = || canopy_in(home.path(), &env, &["apply", s(&dir)]);
    let (code, out, err) = apply();
    assert_eq!(code, 0, "{out}{err}");
    let version = send("GET", "/version", None).unwrap()["gitVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let facts = send("GET", "/api/v1/namespaces/web/configmaps/facts", None).unwrap();
    assert_eq!(
        facts["data"]["kube"],
        version.as_str(),
        "rendered for the cluster's own version"
    );
    assert_eq!(facts["data"]["monitoring"], "false");
    let monitor = "/apis/monitoring.coreos.com/v1/namespaces/web/servicemonitors/web";

    // The Prometheus operator's CRD arrives.
    api::install_crd(
        &server.kubeconfig,
        "monitoring.coreos.com",
        "ServiceMonitor",
        "Namespaced",
    );
    let (code, out, err) = apply();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        send("GET", monitor, None).is_ok(),
        "the ServiceMonitor is applied"
    );
    let facts = send("GET", "/api/v1/namespaces/web/configmaps/facts", None).unwrap();
    assert_eq!(facts["data"]["monitoring"], "true");
    assert_eq!(
        facts["data"]["servicemonitorKind"], "true",
        "kinds are read too"
    );

    // Recorded, and what commands that reach no cluster render for.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(".canopy/state/capabilities.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["clusters"]["prod"]["kubernetesVersion"],
        version.as_str()
    );
    let (code, out, err) = canopy_in(home.path(), &env, &["render", s(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kind: ServiceMonitor"), "{out}");
    let (code, out, err) = canopy_in(home.path(), &env, &["explain", s(&dir), "web"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "prod: Kubernetes {version} (read from the cluster"
        )),
        "{out}"
    );
}

/// Issue 33: a relay's leaves get their charts rendered for their own
/// Kubernetes version and APIs (declared here), handed down rendered: the
/// agent needs no helm and applies exactly what a direct apply does.
#[test]
fn a_relay_applies_charts_rendered_for_each_leaf() {
    let home = tempfile::tempdir().unwrap();
    let write = |dir: &Path, relay: &str| {
        capabilities_chart(&dir.join("workloads/web/chart"));
        std::fs::write(
            dir.join("clusters.yaml"),
            format!("apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: hub}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: mid}}\nspec: {{parent: hub{relay}}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: edge-a}}\nspec: {{parent: mid, kubernetesVersion: v1.24.3}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: edge-b}}\nspec: {{parent: mid, kubernetesVersion: v1.34.2, apiVersions: [monitoring.coreos.com/v1]}}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("workloads/web/workload.yaml"),
            "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: web}\nspec:\n  namespace: web\n  helm: {chart: chart}\n",
        )
        .unwrap();
    };
    let (dir, flat_dir) = (home.path().join("fleet"), home.path().join("flat-fleet"));
    write(&dir, ", relay: {}");
    write(&flat_dir, "");
    relay_renders_as_direct(
        home.path(),
        &[("CANOPY_HELM", s(tools::helm()))],
        &dir,
        "mid",
        &flat_dir,
        &["edge-a", "edge-b"],
    );
    let own = home.path().join("mid");
    let a = state_objects(&own, "edge-a");
    let b = state_objects(&own, "edge-b");
    assert!(
        a[obj_id("policy", "PodDisruptionBudget", "web", "web")]["apiVersion"] == "policy/v1beta1",
        "{a}"
    );
    assert!(
        b[obj_id("policy", "PodDisruptionBudget", "web", "web")]["apiVersion"] == "policy/v1",
        "{b}"
    );
    assert!(a[obj_id("monitoring.coreos.com", "ServiceMonitor", "web", "web")].is_null());
    assert!(
        b[obj_id("monitoring.coreos.com", "ServiceMonitor", "web", "web")].is_object(),
        "{b}"
    );
}

/// Issue 33, through a relay on a real API server: only the relay reaches
/// its leaf, so its agent reads the leaf's version and APIs and reports
/// them up; the root keeps them and, from its next round, renders the
/// leaf's charts for them (here: the ServiceMonitor of a cluster that
/// serves the Prometheus operator's API). What the agent reported stays
/// within its own subtree.
#[test]
fn a_relay_reads_its_leaves_capabilities_and_the_root_renders_for_them() {
    let server = apiserver::start();
    let send = |method: &str, path: &str, body: Option<serde_json::Value>| {
        api::send(
            &server.kubeconfig,
            method,
            path,
            body.map(|b| ("application/json", b)),
        )
    };
    send(
        "POST",
        "/api/v1/namespaces",
        Some(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})),
    )
    .unwrap();
    api::install_crd(
        &server.kubeconfig,
        "monitoring.coreos.com",
        "ServiceMonitor",
        "Namespaced",
    );
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    capabilities_chart(&dir.join("workloads/web/chart"));
    std::fs::write(
        dir.join("clusters.yaml"),
        format!(
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: hub}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: mid}}\nspec: {{parent: hub, relay: {{}}}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: edge}}\nspec: {{parent: mid, connection: {{kubeconfig: {}}}}}\n",
            server.kubeconfig.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("workloads/web/workload.yaml"),
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: web}\nspec:\n  namespace: web\n  helm: {chart: chart}\n  placement: {clusters: {names: [edge]}}\n",
    )
    .unwrap();
    // The root's state is the fleet's own, which `explain` reads.
    let (root, own) = (dir.join(".canopy/state"), home.path().join("mid"));
    let env = [("CANOPY_HELM", s(tools::helm()))];
    let apply = || canopy_in(home.path(), &env, &["apply", s(&dir), "--timeout", "0s"]);
    let agent = || {
        let (code, out, err) = canopy_in(
            home.path(),
            &[],
            &[
                "agent",
                "--cluster",
                "mid",
                "--local",
                s(&root),
                "--state",
                s(&own),
                "--once",
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
    };
    let facts = || send("GET", "/api/v1/namespaces/web/configmaps/facts", None).unwrap();
    let monitor = "/apis/monitoring.coreos.com/v1/namespaces/web/servicemonitors/web";

    // The root has never seen the leaf: it renders for the default.
    let (code, out, err) = apply();
    assert_eq!(code, 4, "no agent yet: {out}{err}");
    agent();
    assert_eq!(facts()["data"]["kube"], "v1.36.0", "the default");
    assert!(send("GET", monitor, None).is_err());
    let version = send("GET", "/version", None).unwrap()["gitVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let record = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("capabilities.json")).unwrap()).unwrap()
    };
    assert_eq!(
        record(&own)["clusters"]["edge"]["kubernetesVersion"],
        version.as_str(),
        "the agent read the leaf it reconciles"
    );

    // The root takes the report in, then renders for what it says.
    let (code, out, err) = apply();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        record(&root)["clusters"]["edge"]["kubernetesVersion"],
        version.as_str(),
        "the root learned it from the relay's report"
    );
    let (code, out, err) = canopy_in(home.path(), &env, &["explain", s(&dir), "web"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "edge: Kubernetes {version} (read from the cluster"
        )),
        "{out}"
    );
    let (code, out, err) = apply();
    assert_eq!(code, 4, "a new handoff, not reported on yet: {out}{err}");
    agent();
    assert_eq!(facts()["data"]["kube"], version.as_str());
    assert_eq!(facts()["data"]["monitoring"], "true");
    assert!(
        send("GET", monitor, None).is_ok(),
        "the ServiceMonitor is applied"
    );
    // Nothing differs any more: the root keeps what it had.
    let before = record(&root);
    let (code, out, err) = apply();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(record(&root), before);
}
