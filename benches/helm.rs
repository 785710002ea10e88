//! Helm workloads at fleet scale: load + validate + Helm + schedule +
//! render of one Helm workload, against the same fleet with the chart's
//! output as plain manifests (the baseline, measured in the same run).
//!
//! `cargo bench --bench helm` generates, for 10,000 clusters (a root, 100
//! regions, their leaves), one workload:
//! - **plain**: the Deployment and ConfigMap the chart makes, as files;
//! - **helm, 3 value sets**: the chart, with values that take one of three
//!   values by the cluster's tier label: `helm template` runs 3 times;
//! - **helm, 3 value sets × 2 Kubernetes versions**: the same, with the
//!   clusters declaring one of two Kubernetes versions in turn; the chart
//!   does not ask for them (no `.Capabilities`, no `kubeVersion`), so it
//!   still renders once per value set: 3 runs;
//! - **the same, the chart asking**: its ConfigMap also says
//!   `.Capabilities.KubeVersion.Version`, so each value set renders for
//!   each version: 6 runs, and every cluster's capabilities are worked out;
//!
//! and for 1,000 clusters the same two, plus
//! - **helm, once per cluster**: values that name the cluster, so every
//!   cluster needs its own `helm template` (what a tool that renders per
//!   cluster or per bundle deployment pays).
//!
//! Each case runs in a process of its own (Helm's outputs are kept per
//! process), five times, median reported (once for the slow per-cluster case). The real `helm` is `CANOPY_HELM`, else built from
//! `tests/tools` with Go.
//!
//! Options (after `--`): `--sizes 1000,10000`.

mod support;
use support::{field, median, run_child};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use canopy::core::render::{render_map, Renderer};
use canopy::source::input::load_checked;

const CHART_YAML: &str = "apiVersion: v2\nname: web\nversion: 0.1.0\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {tier: {{ .Values.tier | quote }}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: \"registry.example.com/web:{{ .Values.tag }}\"
          env:
            - {name: TIER, value: {{ .Values.tier | quote }}}
";
const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data:
  tier: {{ .Values.tier | quote }}
  greeting: {{ .Values.greeting | quote }}
";

/// What the chart makes with tier `a` (the plain fleet's manifests).
fn plain_output() -> String {
    let fill = |t: &str| {
        t.replace("{{ .Values.tier | quote }}", "\"a\"")
            .replace("{{ .Values.tag }}", "1.0")
            .replace("{{ .Values.greeting | quote }}", "\"hello\"")
    };
    format!("{}---\n{}", fill(DEPLOYMENT), fill(CONFIGMAP))
}

/// Writes a fleet of `n` clusters (a root, 100 regions, leaves under them,
/// tiers a/b/c in turn) with one workload whose source is `how`: `plain`,
/// `helm3`, `helm3-versions` (the leaves declaring one of two Kubernetes
/// versions in turn) or `helm-each`.
fn generate(dir: &Path, n: usize, how: &str) {
    let mut clusters = String::new();
    let regions = 100.min(n.saturating_sub(1)).max(1);
    let versions = how.starts_with("helm3-versions");
    let doc = |out: &mut String, name: &str, tier: &str, parent: Option<&str>, i: usize| {
        let _ = write!(
            out,
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}, labels: {{tier: {tier}}}}}\n"
        );
        let version = ["v1.33.4", "v1.34.2"][i % 2];
        match (parent, versions) {
            (Some(p), true) => {
                let _ = writeln!(out, "spec: {{parent: {p}, kubernetesVersion: {version}}}");
            }
            (Some(p), false) => {
                let _ = writeln!(out, "spec: {{parent: {p}}}");
            }
            (None, true) => {
                let _ = writeln!(out, "spec: {{kubernetesVersion: {version}}}");
            }
            (None, false) => {}
        }
        out.push_str("---\n");
    };
    doc(&mut clusters, "root", "a", None, 0);
    for r in 0..regions {
        doc(&mut clusters, &format!("region-{r}"), "a", Some("root"), r);
    }
    for i in 0..n.saturating_sub(1 + regions) {
        let tier = ["a", "b", "c"][i % 3];
        doc(
            &mut clusters,
            &format!("leaf-{i}"),
            tier,
            Some(&format!("region-{}", i % regions)),
            i / 3,
        );
    }
    std::fs::create_dir_all(dir.join("workloads/web")).expect("mkdir");
    std::fs::write(dir.join("clusters.yaml"), clusters).expect("write");
    let w = "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: web}\nspec:\n  namespace: web\n";
    match how {
        "plain" => {
            std::fs::write(dir.join("workloads/web/workload.yaml"), w).expect("write");
            std::fs::write(dir.join("workloads/web/web.yaml"), plain_output()).expect("write");
        }
        _ => {
            let greeting = if how == "helm-each" {
                "hello {{ cluster.name }}"
            } else {
                "hello"
            };
            std::fs::write(
                dir.join("workloads/web/workload.yaml"),
                format!("{w}  helm:\n    chart: chart\n    values:\n      tier: \"{{{{ cluster.labels.tier }}}}\"\n      tag: \"1.0\"\n      greeting: \"{greeting}\"\n"),
            )
            .expect("write");
            let chart = dir.join("workloads/web/chart");
            std::fs::create_dir_all(chart.join("templates")).expect("mkdir");
            std::fs::write(chart.join("Chart.yaml"), CHART_YAML).expect("write");
            std::fs::write(chart.join("templates/deployment.yaml"), DEPLOYMENT).expect("write");
            let configmap = if how == "helm3-versions-asks" {
                CONFIGMAP.replace(
                    "data:\n",
                    "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n",
                )
            } else {
                CONFIGMAP.to_string()
            };
            std::fs::write(chart.join("templates/configmap.yaml"), configmap).expect("write");
        }
    }
}

/// Child: the whole pipeline on `dir`, timed.
fn child(dir: &Path) {
    let t = Instant::now();
    let (checked, _) = load_checked(dir, Some("bench")).expect("a valid fleet");
    let r = Renderer::new(&checked);
    let objects = render_map(&r, None, |_, objs| objs.len())
        .expect("renders")
        .into_iter()
        .map(|(_, n)| n)
        .sum::<usize>();
    let secs = t.elapsed().as_secs_f64();
    let manifests = checked.fleet.workloads[0].manifests.len();
    println!("RESULT secs={secs:.4} objects={objects} outputs={manifests}");
}

fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_HELM") {
        return PathBuf::from(p);
    }
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools");
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("canopy-bench-helm");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("helm.sh/helm/v3/cmd/helm")
        .current_dir(module)
        .status()
        .expect("go runs");
    assert!(built.success(), "building helm failed");
    bin
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(Path::new(&args[i + 1]));
        return;
    }
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map_or(vec![1000, 10000], |s| {
            s.split(',').map(|x| x.parse().expect("a number")).collect()
        });
    let helm = helm();
    // The children find helm through the environment.
    std::env::set_var("CANOPY_HELM", &helm);
    let tmp = tempfile::tempdir().expect("temp dir");
    println!(
        "\nhelm: one workload, pipeline (load+validate+helm+schedule+render), one process per case"
    );
    println!(
        "{:>8}  {:<28} {:>9} {:>10} {:>9} {:>9}",
        "clusters", "case", "seconds", "×plain", "renders", "objects"
    );
    for &n in &sizes {
        let mut cases = vec!["plain", "helm3", "helm3-versions", "helm3-versions-asks"];
        if n <= 1000 {
            cases.push("helm-each");
        }
        let mut plain = 0.0;
        for how in cases {
            let dir = tmp.path().join(format!("{how}-{n}"));
            generate(&dir, n, how);
            // The median of five runs, each in a fresh process (Helm's
            // outputs are kept per process, so each pays its Helm runs).
            let runs = if how == "helm-each" { 1 } else { 5 };
            let lines: Vec<String> = (0..runs)
                .map(|_| run_child(&[dir.to_str().expect("UTF-8")]))
                .collect();
            let secs = median(lines.iter().map(|l| field(l, "secs")).collect());
            let line = &lines[0];
            if how == "plain" {
                plain = secs;
            }
            let runs = if how == "plain" {
                "-".to_string()
            } else {
                format!("{}", field(line, "outputs") as usize)
            };
            let label = match how {
                "plain" => "plain manifests (baseline)",
                "helm3" => "helm, 3 value sets",
                "helm3-versions" => "helm, 3 sets × 2 versions",
                "helm3-versions-asks" => "  … the chart asking",
                _ => "helm, once per cluster",
            };
            println!(
                "{n:>8}  {label:<28} {secs:>9.3} {:>10.2} {runs:>9} {:>9}",
                secs / plain,
                field(line, "objects") as usize
            );
        }
    }
}
