//! Trust boundaries (issue 28), tried as a hostile pull request's author
//! would: fleet values that reach a command line are data, never flags; the
//! outside tools canopy drives (the real `helm` and `kustomize` the suite
//! builds) see none of the runner's environment; kustomize never fetches,
//! whichever spelling of a remote reference the repository holds (a Git
//! server on loopback counts every request it gets).

mod common;
use common::*;

#[path = "support/api.rs"]
mod api;
#[path = "support/apiserver.rs"]
mod apiserver;
#[path = "support/git_http.rs"]
mod git_http;
#[path = "support/tools.rs"]
mod tools;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Marks every value of the runner's secrets in these tests: it must show
/// up nowhere a tool or a chart could put it.
const CANARY: &str = "canary-7d2e41";

/// What a CI runner holds: credentials and settings, each set to a value
/// with the canary in it.
fn runner_env() -> Vec<(&'static str, String)> {
    [
        "CANOPY_TEST_CANARY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AZURE_CLIENT_SECRET",
        "KUBECONFIG",
        "SSH_AUTH_SOCK",
        "GIT_ASKPASS",
        "CANOPY_GIT_TOKEN",
        "GITHUB_TOKEN",
    ]
    .into_iter()
    .map(|k| (k, format!("/{CANARY}/{k}")))
    .collect()
}

const CLUSTERS: &str = "apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: hub}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: edge}
spec: {parent: hub}
";

/// Workload `shop` of plain manifests, in namespace `shop`.
const SHOP: &str = "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: shop}\nspec: {namespace: shop}\n";
/// Workload `shop`, built with kustomize from its folder.
const SHOP_KUSTOMIZE: &str = "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: shop}\nspec:\n  namespace: shop\n  kustomize: {path: .}\n";

/// Writes `text` at `path` below the fleet folder `dir`.
fn put(dir: &Path, path: &str, text: &str) {
    let at = dir.join(path);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::write(at, text).unwrap();
}

fn helm_workload(helm: &str) -> String {
    format!(
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {{name: web}}\nspec:\n  namespace: web\n  helm:\n{helm}"
    )
}

/// A chart whose templates try every way Helm offers to read files, the
/// cluster or the network beyond the chart.
const PROBE: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: probe}
data:
  environ: {{ .Files.Get \"/proc/self/environ\" | b64enc | quote }}
  climbed: {{ .Files.Get \"../../../../../../../../proc/self/environ\" | b64enc | quote }}
  files: \"{{ range $p, $_ := .Files.Glob \"**\" }}{{ $p }};{{ end }}\"
  lookup: {{ lookup \"v1\" \"Secret\" \"kube-system\" \"\" | toJson | quote }}
  dns: {{ getHostByName \"localhost\" | quote }}
  release: {{ .Release.Name | quote }}
";

/// A fleet of two local clusters and one Helm workload (`helm`: the lines
/// under `spec.helm`) with the probing chart in `workloads/web/chart`.
fn helm_fleet(dir: &Path, helm: &str) {
    put(dir, "clusters.yaml", CLUSTERS);
    put(dir, "workloads/web/workload.yaml", &helm_workload(helm));
    put(
        dir,
        "workloads/web/chart/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    );
    put(dir, "workloads/web/chart/templates/probe.yaml", PROBE);
    put(
        dir,
        "workloads/web/chart/files/note.txt",
        "a file of the chart\n",
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A wrapper around `real` that writes each run's arguments (one per line,
/// then a blank line) to `<log>.args` and its environment to
/// `<log>.<pid>.env`, then runs the real tool. The paths are written into
/// the script: the tool's environment may hold nothing of the caller's.
fn spying(home: &Path, name: &str, real: &Path) -> (PathBuf, PathBuf) {
    let log = home.join(format!("{name}-spy"));
    let wrapper = home.join(format!("{name}-wrapper"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nenv > '{log}.'$$'.env'\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> '{log}.args'; done\necho >> '{log}.args'\nexec '{real}' \"$@\"\n",
            log = log.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (wrapper, log)
}

/// Each run's arguments, as the wrapper logged them.
fn runs(log: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(format!("{}.args", log.display())).unwrap_or_default();
    text.split("\n\n")
        .filter(|r| !r.trim().is_empty())
        .map(|r| r.lines().map(str::to_string).collect())
        .collect()
}

/// Each run's environment, as (name, value) pairs.
fn envs(log: &Path) -> Vec<Vec<(String, String)>> {
    let dir = log.parent().unwrap();
    let prefix = format!("{}.", log.file_name().unwrap().to_string_lossy());
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".env") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            out.push(
                text.lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
    }
    out
}

/// What a tool canopy ran may see: where programs are, a home of its own,
/// the Go runtime's tuning, and the settings that keep it offline.
fn allowed_in_a_tool(name: &str) -> bool {
    matches!(
        name,
        "PATH" | "HOME" | "TMPDIR" | "GOGC" | "GOMEMLIMIT" | "GOMAXPROCS" | "PWD" | "SHLVL" | "_"
    ) || name.starts_with("XDG_")
        || name.starts_with("GIT_")
        || name.to_ascii_lowercase().ends_with("_proxy")
}

fn assert_isolated(tool: &str, log: &Path, home: &Path) {
    let all = envs(log);
    assert!(!all.is_empty(), "{tool} never ran");
    for env in all {
        for (k, v) in &env {
            assert!(allowed_in_a_tool(k), "{tool} was given {k}={v}");
            assert!(!v.contains(CANARY), "{tool} was given {k}={v}");
            if k == "HOME" {
                assert_ne!(Path::new(v), home, "{tool} got the runner's home");
            }
        }
    }
}

fn with_runner_env<'a>(
    extra: &'a [(&'a str, &'a str)],
    runner: &'a [(&'static str, String)],
) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = runner.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    all
}

#[test]
fn a_release_name_or_chart_from_the_fleet_is_never_a_flag() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    let (helm, log) = spying(home.path(), "helm", tools::helm());
    let env = [("CANOPY_HELM", s(&helm))];
    for (spec, field, says) in [
        (
            "    chart: chart\n    releaseName: \"--set-file=x=/proc/self/environ\"\n",
            "spec.helm.releaseName",
            "Helm release name \"--set-file=x=/proc/self/environ\" is not valid",
        ),
        (
            "    chart: chart\n    releaseName: --post-renderer=/bin/sh\n",
            "spec.helm.releaseName",
            "Helm release name \"--post-renderer=/bin/sh\" is not valid",
        ),
        (
            "    chart: --untardir=/etc\n    repo: https://charts.example.com\n    version: 1.0.0\n",
            "spec.helm.chart",
            "spec.helm.chart \"--untardir=/etc\" must be a chart's name",
        ),
        (
            "    chart: web\n    repo: \"https://charts.example.com --insecure-skip-tls-verify\"\n    version: 1.0.0\n",
            "spec.helm.repo",
            "is not an http(s) URL",
        ),
        (
            "    chart: \"oci://-x --plain-http\"\n    version: 1.0.0\n",
            "spec.helm.chart",
            "is not an OCI reference",
        ),
    ] {
        helm_fleet(&dir, spec);
        for cmd in ["validate", "render"] {
            let (code, out, err) = canopy_in(home.path(), &env, &[cmd, s(&dir)]);
            assert_eq!(code, 2, "{cmd} {spec}: {out}{err}");
            assert!(err.contains(says), "{spec}: {err}");
            assert!(
                err.contains("workloads/web/workload.yaml:") && err.contains(field),
                "the error names the file and the field: {err}"
            );
        }
    }
    assert_eq!(runs(&log), Vec::<Vec<String>>::new(), "helm never ran");

    // A name Helm accepts renders, and it comes after `--`, as every
    // positional argument does.
    helm_fleet(&dir, "    chart: chart\n    releaseName: shop\n");
    let (code, out, err) = canopy_in(home.path(), &env, &["render", s(&dir), "--cluster", "edge"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("  release: shop\n"), "{out}");
    let runs = runs(&log);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let args = &runs[0];
    let dashes = args.iter().position(|a| a == "--").expect("a `--`");
    assert_eq!(args[dashes + 1], "shop", "{args:?}");
    assert!(args[..dashes].iter().all(|a| a != "shop"), "{args:?}");
}

#[test]
fn helm_and_kustomize_run_without_the_runners_environment() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    helm_fleet(&dir, "    chart: chart\n");
    put(&dir, "workloads/shop/workload.yaml", SHOP_KUSTOMIZE);
    put(
        &dir,
        "workloads/shop/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nconfigMapGenerator:\n  - name: settings\n    literals: [mode=fast]\n    envs: [app.env]\n",
    );
    put(&dir, "workloads/shop/app.env", "COLOR=blue\n");
    let (helm, helm_log) = spying(home.path(), "helm", tools::helm());
    let (kustomize, kustomize_log) = spying(home.path(), "kustomize", tools::kustomize());
    let runner = runner_env();
    let tools_env = [
        ("CANOPY_HELM", s(&helm)),
        ("CANOPY_KUSTOMIZE", s(&kustomize)),
    ];
    let env = with_runner_env(&tools_env, &runner);
    let state = home.path().join("state");
    let (code, out, err) = canopy_in(home.path(), &env, &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!format!("{out}{err}").contains(CANARY));
    assert_isolated("helm", &helm_log, home.path());
    assert_isolated("kustomize", &kustomize_log, home.path());

    // What the chart could read: nothing outside it, no cluster, no DNS.
    let objs = state_objects(&state, "edge");
    let probe = &objs[obj_id("", "ConfigMap", "web", "probe")]["data"];
    assert!(probe.is_object(), "{objs}");
    use base64::Engine;
    for key in ["environ", "climbed"] {
        let b = base64::engine::general_purpose::STANDARD
            .decode(probe[key].as_str().unwrap())
            .unwrap();
        assert!(b.is_empty(), "{key}: {}", String::from_utf8_lossy(&b));
    }
    assert_eq!(probe["files"], "files/note.txt;");
    assert_eq!(probe["lookup"], "{}");
    assert_eq!(probe["dns"], "");
    let everything = serde_json::to_string(&objs).unwrap();
    assert!(!everything.contains(CANARY));
    let settings = &objs[obj_id("", "ConfigMap", "shop", "settings")];
    assert!(
        settings.is_null(),
        "kustomize's ConfigMap has a hashed name"
    );
    assert!(everything.contains("\"COLOR\":\"blue\""), "{everything}");

    // Sprig's environment functions are not Helm's: a chart that asks is
    // an error that names it, and shows nothing of the environment.
    std::fs::write(
        dir.join("workloads/web/chart/templates/env.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: env}\ndata: {a: {{ env \"CANOPY_TEST_CANARY\" | quote }}, b: {{ expandenv \"$AWS_SECRET_ACCESS_KEY\" | quote }}}\n",
    )
    .unwrap();
    let (code, out, err) = canopy_in(home.path(), &env, &["render", s(&dir)]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("function \"env\" not defined"), "{err}");
    assert!(!format!("{out}{err}").contains(CANARY));
}

/// A kustomization (in `workloads/shop/`) whose `field` holds `entry`.
fn kustomization_with(field: &str, entry: &str) -> String {
    let e = format!("'{entry}'");
    let body = match field {
        "resources"
        | "bases"
        | "components"
        | "crds"
        | "configurations"
        | "generators"
        | "transformers"
        | "validators"
        | "patchesStrategicMerge" => format!("{field}: [{e}]\n"),
        "patches" | "patchesJson6902" | "replacements" => {
            format!("{field}: [{{path: {e}, target: {{kind: ConfigMap}}}}]\n")
        }
        "openapi" => format!("openapi: {{path: {e}}}\n"),
        "configMapGenerator.files" => format!("configMapGenerator: [{{name: c, files: [{e}]}}]\n"),
        "secretGenerator.envs" => format!("secretGenerator: [{{name: c, envs: [{e}]}}]\n"),
        other => panic!("no such field {other}"),
    };
    format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n{body}")
}

/// A Git server on loopback with one repository holding a kustomization,
/// so that a fetch, if one were made, would succeed.
fn served_base(home: &Path) -> git_http::GitHttp {
    let root = home.join("served");
    let repo = init_main(&root.join("base.git"));
    let work = root.join("base.git");
    std::fs::write(work.join("kustomization.yaml"), "resources: [cm.yaml]\n").unwrap();
    std::fs::write(
        work.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fetched}\n",
    )
    .unwrap();
    commit_all(&repo, "base");
    git_http::GitHttp::start(&root, "bot", "pw")
}

#[test]
fn kustomize_never_fetches_whichever_way_a_remote_is_written() {
    let home = tempfile::tempdir().unwrap();
    let server = served_base(home.path());
    let url = server.url("base.git");
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let dir = home.path().join("fleet");
    let (kustomize, log) = spying(home.path(), "kustomize", tools::kustomize());
    let env = [("CANOPY_KUSTOMIZE", s(&kustomize))];
    let file_url = format!("{url}/cm.yaml");
    let tried: Vec<(&str, String)> = vec![
        ("resources", url.clone()),
        (
            "resources",
            url.to_uppercase().replace("BASE.GIT", "base.git"),
        ),
        ("resources", format!("git::{url}")),
        ("resources", format!("GIT::{url}//?ref=main")),
        ("resources", format!("ssh://git@{hostport}/base.git")),
        ("resources", format!("git@{hostport}:base.git")),
        ("resources", "GitHub.com/acme/base".into()),
        ("bases", "github.com:acme/base".into()),
        ("components", format!("{url}//")),
        ("crds", file_url.clone()),
        ("configurations", file_url.clone()),
        ("generators", file_url.clone()),
        ("transformers", file_url.clone()),
        ("validators", file_url.clone()),
        ("patchesStrategicMerge", file_url.clone()),
        ("patches", file_url.clone()),
        ("patchesJson6902", file_url.clone()),
        ("replacements", file_url.clone()),
        ("openapi", file_url.clone()),
        ("configMapGenerator.files", format!("key={file_url}")),
        ("secretGenerator.envs", file_url.clone()),
    ];
    put(&dir, "clusters.yaml", CLUSTERS);
    put(&dir, "workloads/shop/workload.yaml", SHOP_KUSTOMIZE);
    for (field, entry) in &tried {
        put(
            &dir,
            "workloads/shop/kustomization.yaml",
            &kustomization_with(field, entry),
        );
        let (code, out, err) = canopy_in(home.path(), &env, &["render", s(&dir)]);
        assert_eq!(code, 2, "{field} {entry}: {out}{err}");
        assert!(
            err.contains("workloads/shop/kustomization.yaml") && err.contains("is remote"),
            "{field} {entry}: {err}"
        );
    }
    assert_eq!(runs(&log).len(), 0, "kustomize never ran");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        0,
        "no request reached the server"
    );

    // The second wall, alone: kustomize run as canopy runs it, with the
    // check left out, may use no Git transport.
    for entry in [
        format!("git::{url}"),
        format!("ssh://git@{hostport}/base.git"),
    ] {
        let files = vec![(
            "workloads/shop/kustomization.yaml".to_string(),
            kustomization_with("resources", &entry).into_bytes(),
        )];
        let r = canopy::source::kustomize::build_without_check(
            tools::kustomize(),
            "workloads/shop",
            "workloads/shop",
            &files,
        );
        assert!(r.is_err(), "{entry}: {r:?}");
    }
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        0,
        "no request reached the server"
    );

    // The server does count: a plain clone of the same URL reaches it.
    let clone = std::process::Command::new("git")
        .args(["ls-remote", "--", &url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(!clone.status.success(), "it asks for credentials");
    assert!(server.requests.load(Ordering::SeqCst) > 0);
}

/// A tenant owns `workloads/<name>/`, nothing else: a Cluster with its
/// own kubeconfig (to be sent other teams' workloads) or an Override (to
/// move its objects into kube-system) written there is refused, naming
/// the file, and nothing of the revision is applied.
#[test]
fn a_workload_folder_holds_no_cluster_override_defaults_or_tenant() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    let state = home.path().join("state");
    let write = |p: &str, t: &str| put(&dir, p, t);
    write("clusters.yaml", CLUSTERS);
    write("workloads/shop/workload.yaml", SHOP);
    write(
        "workloads/shop/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n",
    );
    let (code, out, err) = canopy_in(home.path(), &[], &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
    let before = state_files(&state);
    for (kind, body) in [
        (
            "Cluster",
            "metadata: {name: stolen}\nspec: {parent: hub, connection: {kubeconfig: /tmp/mine.yaml}}\n",
        ),
        (
            "Override",
            "metadata: {name: escape}\nspec:\n  patches: [{mergePatch: {metadata: {namespace: kube-system}}}]\n",
        ),
        ("Defaults", "metadata: {name: d}\nspec: {}\n"),
        (
            "Tenant",
            "metadata: {name: me}\nspec: {workloads: ['*'], namespaces: ['*']}\n",
        ),
    ] {
        write(
            "workloads/shop/extra.yaml",
            &format!("apiVersion: canopy.dev/v1alpha1\nkind: {kind}\n{body}"),
        );
        for cmd in ["validate", "apply"] {
            let (code, out, err) =
                canopy_in(home.path(), &[], &[cmd, s(&dir), "--state", s(&state)][..if cmd == "validate" { 2 } else { 4 }]);
            assert_eq!(code, 2, "{kind} {cmd}: {out}{err}");
            assert!(
                err.contains("workloads/shop/extra.yaml:2")
                    && err.contains(&format!("a {kind} document must live outside workloads/")),
                "{kind}: {err}"
            );
        }
        assert_eq!(state_files(&state), before, "{kind}: nothing applied");
    }
}

/// canopy judges a tenant's object by its scope before any cluster is
/// asked, so its table of built-in cluster-scoped kinds must be complete:
/// it is compared, both ways, with the discovery of an API server that
/// serves every group and version of its release (alpha and beta too), and
/// every group that server serves must be one canopy knows as built in.
#[test]
fn canopys_built_in_kinds_are_the_api_servers() {
    let server = apiserver::start_all_apis();
    let get = |path: &str| {
        api::send(&server.kubeconfig, "GET", path, None)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };
    let mut served: std::collections::BTreeSet<(String, String)> = Default::default();
    let mut groups: std::collections::BTreeSet<String> = Default::default();
    let mut cluster_scoped = |group: &str, list: &serde_json::Value| {
        for r in list["resources"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            if !name.contains('/') && r["namespaced"] == false {
                served.insert((group.to_string(), r["kind"].as_str().unwrap().to_string()));
            }
        }
    };
    groups.insert(String::new());
    cluster_scoped("", &get("/api/v1"));
    for g in get("/apis")["groups"].as_array().unwrap() {
        let group = g["name"].as_str().unwrap();
        groups.insert(group.to_string());
        for v in g["versions"].as_array().unwrap() {
            cluster_scoped(
                group,
                &get(&format!("/apis/{}", v["groupVersion"].as_str().unwrap())),
            );
        }
    }
    let known: std::collections::BTreeSet<(String, String)> =
        canopy::core::kinds::builtin_cluster_scoped()
            .iter()
            .map(|(g, k)| (g.to_string(), k.to_string()))
            .collect();
    let missing: Vec<_> = served.difference(&known).collect();
    let extra: Vec<_> = known.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "cluster-scoped kinds canopy does not know: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "kinds canopy takes for cluster-scoped that the server does not serve so: {extra:?}"
    );
    let unknown_groups: Vec<_> = groups
        .iter()
        .filter(|g| !canopy::core::kinds::is_builtin_group(g))
        .collect();
    assert!(
        unknown_groups.is_empty(),
        "built-in groups canopy does not know: {unknown_groups:?}"
    );
    assert!(served.len() >= 39, "{served:?}");
}

/// A tenant's object of a kind canopy cannot judge offline (cert-manager's
/// ClusterIssuer, which the cluster already serves, cluster-scoped) looks
/// namespaced to `validate`, which says so; `apply` asks the cluster's
/// discovery first, and the breach stops the cluster with nothing of it
/// written. Allowed to the tenant, it is applied.
#[test]
fn a_tenants_kind_the_cluster_serves_cluster_scoped_is_judged_before_any_write() {
    let server = apiserver::start();
    let send = |method: &str, path: &str, body: Option<(&str, serde_json::Value)>| {
        api::send(&server.kubeconfig, method, path, body)
    };
    api::install_crd(
        &server.kubeconfig,
        "cert-manager.io",
        "ClusterIssuer",
        "Cluster",
    );

    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    let tenant = |allow: &str| {
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: shop}}\nspec:\n  workloads: [shop]\n  namespaces: [shop]\n{allow}")
    };
    put(
        &dir,
        "clusters.yaml",
        &format!(
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: prod}}\nspec: {{connection: {{kubeconfig: {}}}}}\n",
            server.kubeconfig.display()
        ),
    );
    put(&dir, "tenants.yaml", &tenant(""));
    put(&dir, "workloads/shop/workload.yaml", SHOP);
    put(
        &dir,
        "workloads/shop/objects.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n---\napiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata: {name: letsencrypt}\nspec: {acme: {server: https://acme.example.com}}\n",
    );
    let run = |args: &[&str]| canopy_in(home.path(), &[], args);
    let (code, out, err) = run(&["validate", s(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: workloads/shop/objects.yaml")
            && err.contains("kind ClusterIssuer.cert-manager.io is neither built in nor defined by a CRD of the fleet"),
        "{err}"
    );
    let says = "workload \"shop\" of tenant \"shop\": ClusterIssuer letsencrypt: cluster-scoped kind ClusterIssuer.cert-manager.io is not allowed to tenant \"shop\"";
    for cmd in ["diff", "apply"] {
        let (code, out, err) = run(&[cmd, s(&dir)]);
        assert_eq!(code, 4, "{cmd}: {out}{err}");
        let all = format!("{out}{err}");
        assert!(
            all.contains(says) && all.contains("nothing of the cluster was written"),
            "{cmd}: {all}"
        );
    }
    let missing =
        |path: &str| matches!(send("GET", path, None), Err(kube::Error::Api(s)) if s.code == 404);
    assert!(missing("/api/v1/namespaces/shop"), "nothing written");
    assert!(missing(
        "/apis/cert-manager.io/v1/clusterissuers/letsencrypt"
    ));
    // The root cluster keeps canopy's run records in canopy-system; the
    // fleet's inventory of this cluster was not written.
    let configmaps = send("GET", "/api/v1/namespaces/canopy-system/configmaps", None)
        .map(|l| l.to_string())
        .unwrap_or_default();
    assert!(
        !configmaps.contains("inventory-"),
        "not even canopy's inventory: {configmaps}"
    );

    std::fs::write(
        dir.join("tenants.yaml"),
        tenant("  allow: [{group: cert-manager.io, kind: ClusterIssuer}]\n"),
    )
    .unwrap();
    let (code, out, err) = run(&["apply", s(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!missing(
        "/apis/cert-manager.io/v1/clusterissuers/letsencrypt"
    ));
    assert!(!missing("/api/v1/namespaces/shop/configmaps/settings"));
}

/// A tenant's object is held to the tenant's rules as it is written, after
/// overrides; and no manifest (plain, template or chart output) may set
/// canopy's own labels and annotations, so none can claim another
/// workload's objects or pose as a member. Each refused with nothing
/// applied.
#[test]
fn tenancy_holds_after_overrides_and_canopys_metadata_is_canopys() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    let state = home.path().join("state");
    let write = |p: &str, t: &str| put(&dir, p, t);
    write("clusters.yaml", CLUSTERS);
    write(
        "tenants.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: shop}\nspec: {workloads: [shop], namespaces: [shop]}\n",
    );
    write("workloads/shop/workload.yaml", SHOP);
    let plain = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n";
    write("workloads/shop/cm.yaml", plain);
    let run = |args: &[&str]| canopy_in(home.path(), &[], args);
    let (code, out, err) = run(&["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
    let before = state_files(&state);
    let refused = |says: &[&str]| {
        for cmd in [
            vec!["validate", s(&dir)],
            vec!["apply", s(&dir), "--state", s(&state)],
        ] {
            let (code, out, err) = run(&cmd);
            assert_eq!(code, 2, "{cmd:?}: {out}{err}");
            for x in says {
                assert!(err.contains(x), "{cmd:?}: {x:?} in\n{err}");
            }
        }
        assert_eq!(state_files(&state), before, "nothing applied");
    };

    // A platform override that moves the tenant's ConfigMap to kube-system
    // on the edge cluster.
    write(
        "overrides/move.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Override\nmetadata: {name: move}\nspec:\n  clusters: {names: [edge]}\n  patches:\n    - mergePatch: {metadata: {namespace: kube-system}}\n",
    );
    refused(&[
        "error: overrides/move.yaml:6: spec.patches: ",
        "workload \"shop\" of tenant \"shop\": ConfigMap settings: namespace \"kube-system\" is not one of tenant \"shop\"'s namespaces (shop), after override \"move\" (rendered for cluster edge)",
    ]);
    std::fs::remove_file(dir.join("overrides/move.yaml")).unwrap();

    // canopy's labels and annotations in a plain manifest, with its line.
    for (meta, what) in [
        (
            "labels: {canopy.dev/workload: payments}",
            "label canopy.dev/workload",
        ),
        (
            "labels: {canopy.dev/member: edge}",
            "label canopy.dev/member",
        ),
        (
            "annotations: {canopy.dev/revision: abc}",
            "annotation canopy.dev/revision",
        ),
    ] {
        write(
            "workloads/shop/cm.yaml",
            &format!(
                "{plain}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n  {meta}\n"
            ),
        );
        refused(&[&format!(
            "error: workloads/shop/cm.yaml:6: {what} is canopy's own: a manifest may not set it"
        )]);
    }
    // ... and in a template, as it renders.
    write("workloads/shop/cm.yaml", plain);
    write(
        "workloads/shop/member.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: m-{{ cluster.name }}\n  labels: {canopy.dev/fleet: other}\n",
    );
    refused(&[
        "label canopy.dev/fleet is canopy's own: a manifest may not set it (rendered for cluster",
    ]);
    std::fs::remove_file(dir.join("workloads/shop/member.yaml.j2")).unwrap();

    // The documented opt-ins stay a manifest's.
    write(
        "workloads/shop/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  annotations: {canopy.dev/prune: disabled}\ndata: {a: b}\n",
    );
    let (code, out, err) = run(&["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
}
