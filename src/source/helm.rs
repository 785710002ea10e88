//! Helm charts as a workload's source: `spec.helm` names a chart (a folder
//! in the workload's folder, a chart in a chart repository, or an `oci://`
//! reference), and the workload's manifests on each cluster are what the
//! real `helm template` makes of it with that cluster's values (as Argo CD
//! runs Helm), then namespaced, divided, overridden and labelled like any
//! plain manifest.
//!
//! - **Which binary.** `CANOPY_HELM` (a path), else `helm` on `PATH`. None
//!   is an error naming the workload, with the install hint; nothing is
//!   applied.
//! - **Values per cluster.** `spec.helm.values` is rendered for every
//!   cluster the placement chooses, with the cluster's facts (as a `.j2`
//!   manifest sees them); values files come first, in order.
//! - **For the cluster it goes to.** Each run gets the cluster's
//!   Kubernetes version (`--kube-version`) and the API versions it serves
//!   (`--api-versions`), declared or read ([`crate::core::capabilities`]),
//!   so `.Capabilities` and a chart's `kubeVersion` answer for that cluster,
//!   not for whatever helm was compiled with.
//! - **Once per distinct input.** Clusters whose values come out equal,
//!   and whose capabilities are equal when the chart asks for them
//!   ([`asks_capabilities`]), share one `helm template` run: the run is
//!   keyed by the chart's bytes, release, namespace, values and
//!   capabilities, runs in parallel with the others, and its output is
//!   kept for the life of the process (bounded), so a `watch` round whose
//!   inputs did not change runs Helm not at all.
//! - **Remote charts** are pulled once per (repository, chart, version)
//!   into canopy's cache folder (`CANOPY_CACHE_DIR`, else
//!   `$XDG_CACHE_HOME/canopy`, else `~/.cache/canopy`) with `helm pull`,
//!   using Helm's own credentials; the version must be exact.
//! - **What is rendered.** `crds/` (unless `includeCrds: false`), chart
//!   dependencies (vendored in `charts/`, as `helm dependency build` leaves
//!   them, or packed in a pulled chart), release name and namespace set;
//!   test hooks are left out (`--skip-tests`). Other hooks are rendered as
//!   ordinary objects and applied with the rest: canopy has no install or
//!   upgrade phases to run them in.
//! - **Relays** get the outputs their subtree needs in the handoff
//!   ([`crate::core::relay`]), so a relay needs no Helm and renders what
//!   the level above renders.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;
use serde_json::Value;

use super::kustomize::FolderFiles;
use crate::core::capabilities::{self, Capabilities};
use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::hash::StableHasher;
use crate::core::model::{Fleet, HelmSource, ManifestFile, Workload};
use crate::core::validate::Checked;
use crate::core::yaml::parse_stream;

/// Outputs kept at most (all of them dropped when it is reached).
const CACHE_ENTRIES: usize = 1024;

/// The `helm` binary: `CANOPY_HELM`, else `helm` on `PATH`.
fn tool() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CANOPY_HELM").filter(|p| !p.is_empty()) {
        let bin = PathBuf::from(p);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "CANOPY_HELM names {}, which is not a file",
                bin.display()
            ))
        };
    }
    super::run::on_path("helm").ok_or_else(|| "no helm binary: `helm` is not on PATH".into())
}

/// Reads the folder of every Helm workload (its chart, when the chart is
/// local, and its values files) into the workload, for [`expand`] after
/// validation.
pub fn gather(fleet: &mut Fleet, files: &dyn FolderFiles) -> Diagnostics {
    let mut diags = Diagnostics::default();
    for w in fleet.workloads.iter_mut().filter(|w| w.spec.helm.is_some()) {
        match files.folder(&w.dir) {
            Ok(f) => w.helm_inputs = Arc::new(f),
            Err(e) => diags.push(
                Diagnostic::error(format!("cannot read {}: {e}", w.dir))
                    .at(&w.source.loc_str("spec.helm"))
                    .hint("fix or remove the file"),
            ),
        }
    }
    diags
}

/// Where canopy keeps what it fetched (pulled charts).
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CANOPY_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("canopy");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/canopy")
}

/// A chart ready to render: its files and the path of the chart in them.
struct Chart {
    files: Arc<Vec<(String, Vec<u8>)>>,
    /// The chart (a folder or a `.tgz`), relative to the files' root.
    path: String,
    /// A hash of everything of the chart that reaches the output.
    digest: u64,
    /// Whether what it renders can depend on the cluster's Kubernetes
    /// version and APIs ([`asks_capabilities`]).
    asks: bool,
}

/// Whether a chart's output can depend on the cluster it is rendered for:
/// Helm gives a chart the cluster's version and APIs only as
/// `.Capabilities` (in a template, a helper, or a value a template passes
/// to `tpl`) and checks a `kubeVersion` constraint of a `Chart.yaml`
/// (its dependencies' too). A chart whose files say neither renders the
/// same for every cluster of the same values, so those share one run. A
/// packed chart (pulled) is not looked into: it counts as asking.
fn asks_capabilities(files: &[(String, Vec<u8>)], chart: &str) -> bool {
    let below = format!("{chart}/");
    let has = |b: &[u8], what: &[u8]| b.windows(what.len()).any(|w| w == what);
    files.iter().any(|(p, b)| {
        let here = p.starts_with(&below);
        (here || p.ends_with(".tgz"))
            && (p.ends_with(".tgz")
                || has(b, b"Capabilities")
                || (p.ends_with("Chart.yaml") && has(b, b"kubeVersion")))
    })
}

/// Pulled charts by (repository, chart, version), for the process.
type Pulled = Mutex<HashMap<String, Result<Arc<Vec<u8>>, String>>>;

fn pulled() -> &'static Pulled {
    static PULLED: OnceLock<Pulled> = OnceLock::new();
    PULLED.get_or_init(Default::default)
}

/// The packed chart `h` names in a repository or registry: from canopy's
/// cache folder, else pulled with `helm pull` into it.
fn pull(helm: &std::path::Path, h: &HelmSource) -> Result<Arc<Vec<u8>>, String> {
    let version = h.version.clone().unwrap_or_default();
    let id = format!(
        "{}\n{}\n{version}",
        h.repo.as_deref().unwrap_or(""),
        h.chart
    );
    if let Some(r) = pulled().lock().expect("not poisoned").get(&id) {
        return r.clone();
    }
    let r = pull_to_cache(helm, h, &id, &version).map(Arc::new);
    pulled().lock().expect("not poisoned").insert(id, r.clone());
    r
}

fn pull_to_cache(
    helm: &std::path::Path,
    h: &HelmSource,
    id: &str,
    version: &str,
) -> Result<Vec<u8>, String> {
    let key = format!("{:016x}", StableHasher::new().str(id).finish());
    let dir = cache_dir().join("charts");
    let file = dir.join(format!("{key}.tgz"));
    if let Ok(bytes) = std::fs::read(&file) {
        return Ok(bytes);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = tempfile::tempdir_in(&dir).map_err(|e| format!("a temporary folder: {e}"))?;
    let mut cmd = Command::new(helm);
    cmd.args(pull_args(h, version, tmp.path()));
    let home = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
    for_pull(&mut cmd, home.path());
    let what = match &h.repo {
        Some(repo) => format!(
            "helm pull {} {version} from {}",
            h.chart,
            super::remote::redact(repo)
        ),
        None => format!("helm pull {} {version}", h.chart),
    };
    super::run::bounded(cmd, &what, tmp.path())?;
    let got = std::fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .ok_or_else(|| format!("{what} left no chart archive"))?;
    let bytes = std::fs::read(&got).map_err(|e| e.to_string())?;
    // Renamed into place whole: a reader never sees half a chart.
    std::fs::rename(&got, &file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(bytes)
}

/// `helm pull`'s arguments for `h` at `version` into `dest`: every flag
/// first, then `--`, then the chart, so a chart name from the fleet is
/// never read as a flag (validation refuses one that looks like it too).
fn pull_args(h: &HelmSource, version: &str, dest: &std::path::Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["pull".into()];
    if let Some(repo) = &h.repo {
        args.extend(["--repo".into(), repo.into()]);
    }
    args.extend([
        "--version".into(),
        version.into(),
        "--destination".into(),
        dest.into(),
        "--".into(),
        h.chart.as_str().into(),
    ]);
    args
}

/// The folder Helm keeps something in for the user running canopy:
/// `HELM_<what>_HOME`, else `XDG_<what>_HOME/helm`, else `~/<dflt>/helm`
/// (Helm's own rule on Linux).
fn helm_home(what: &str, dflt: &str) -> PathBuf {
    let var = |n: String| {
        std::env::var_os(n)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var(format!("HELM_{what}_HOME"))
        .or_else(|| var(format!("XDG_{what}_HOME")).map(|d| d.join("helm")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
                .join(dflt)
                .join("helm")
        })
}

/// `helm pull` reaches a repository or registry, with the credentials the
/// user gave Helm (`helm registry login`, `helm repo add`): it runs
/// isolated like any tool, given back only Helm's credential and
/// repository files and the variables a download needs (proxies, CA
/// bundles).
fn for_pull(cmd: &mut Command, home: &std::path::Path) {
    let registry = std::env::var_os("HELM_REGISTRY_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| helm_home("CONFIG", ".config").join("registry/config.json"));
    let repositories = std::env::var_os("HELM_REPOSITORY_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| helm_home("CONFIG", ".config").join("repositories.yaml"));
    let repo_cache = std::env::var_os("HELM_REPOSITORY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| helm_home("CACHE", ".cache").join("repository"));
    super::run::isolate(cmd, home);
    cmd.env("HELM_REGISTRY_CONFIG", registry)
        .env("HELM_REPOSITORY_CONFIG", repositories)
        .env("HELM_REPOSITORY_CACHE", repo_cache);
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
}

/// The chart of workload `w`.
fn chart(helm: &std::path::Path, w: &Workload, h: &HelmSource) -> Result<Chart, String> {
    let remote = h.repo.is_some() || h.chart.starts_with("oci://");
    if remote {
        let bytes = pull(helm, h)?;
        let mut files = (*w.helm_inputs).clone();
        let path = format!("{}/.canopy-chart.tgz", w.dir);
        let digest = StableHasher::new().bytes(&bytes).finish();
        files.push((path.clone(), bytes.to_vec()));
        return Ok(Chart {
            files: Arc::new(files),
            path,
            digest,
            asks: true,
        });
    }
    let path = crate::core::paths::inside(&w.dir, &h.chart)
        .ok_or_else(|| format!("chart folder {:?} leaves the workload's folder", h.chart))?;
    let prefix = format!("{path}/");
    if !w
        .helm_inputs
        .iter()
        .any(|(p, _)| p.starts_with(&prefix) && p.ends_with("/Chart.yaml"))
    {
        return Err(format!("{path} holds no Chart.yaml"));
    }
    let mut h = StableHasher::new();
    for (p, b) in w.helm_inputs.iter() {
        h.str(p).usize(b.len()).bytes(b);
    }
    Ok(Chart {
        asks: asks_capabilities(&w.helm_inputs, &path),
        files: w.helm_inputs.clone(),
        path,
        digest: h.finish(),
    })
}

/// `spec.helm.values` compiled once: every string with `{{`/`{%` a
/// template, a string that is one `{{ expression }}` an expression (its
/// value keeps its type), anything else as written.
enum Compiled<'e, 's> {
    Lit(&'s Value),
    Expr {
        expr: minijinja::Expression<'e, 's>,
        text: &'s str,
        at: String,
    },
    Text {
        tmpl: minijinja::Template<'e, 's>,
        at: String,
    },
    Obj(Vec<(&'s str, Compiled<'e, 's>)>),
    Arr(Vec<Compiled<'e, 's>>),
}

impl<'e, 's> Compiled<'e, 's> {
    /// Compiles `v`, found at `at` (for messages).
    fn new(env: &'e minijinja::Environment<'s>, v: &'s Value, at: &str) -> Result<Self, String> {
        Ok(match v {
            Value::String(s) if s.contains("{{") || s.contains("{%") => {
                let t = s.trim();
                let single = t
                    .strip_prefix("{{")
                    .and_then(|r| r.strip_suffix("}}"))
                    .filter(|inner| !inner.contains("{{") && !inner.contains("}}"));
                match single {
                    Some(expr) => Compiled::Expr {
                        expr: env
                            .compile_expression(expr.trim())
                            .map_err(|e| format!("{at}: {e}"))?,
                        text: expr.trim(),
                        at: at.to_string(),
                    },
                    None => Compiled::Text {
                        tmpl: env.template_from_str(s).map_err(|e| format!("{at}: {e}"))?,
                        at: at.to_string(),
                    },
                }
            }
            Value::Object(m) => Compiled::Obj(
                m.iter()
                    .map(|(k, x)| Ok((k.as_str(), Self::new(env, x, &format!("{at}.{k}"))?)))
                    .collect::<Result<_, String>>()?,
            ),
            Value::Array(a) => Compiled::Arr(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| Self::new(env, x, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            other => Compiled::Lit(other),
        })
    }

    /// The values for one cluster (`ctx`: its facts).
    fn eval(&self, ctx: &minijinja::Value) -> Result<Value, String> {
        Ok(match self {
            Compiled::Lit(v) => (*v).clone(),
            Compiled::Expr { expr, text, at } => {
                let out = expr.eval(ctx).map_err(|e| format!("{at}: {e}"))?;
                if out.is_undefined() {
                    return Err(format!("{at}: {text} is undefined"));
                }
                serde_json::to_value(&out).map_err(|e| format!("{at}: {e}"))?
            }
            Compiled::Text { tmpl, at } => {
                Value::String(tmpl.render(ctx).map_err(|e| format!("{at}: {e}"))?)
            }
            Compiled::Obj(m) => Value::Object(
                m.iter()
                    .map(|(k, c)| Ok((k.to_string(), c.eval(ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
            Compiled::Arr(a) => {
                Value::Array(a.iter().map(|c| c.eval(ctx)).collect::<Result<_, _>>()?)
            }
        })
    }
}

/// One `helm template` run's input.
struct Job<'c> {
    chart: &'c Chart,
    release: String,
    namespace: String,
    values_files: Vec<String>,
    values: String,
    include_crds: bool,
    /// The Kubernetes version it renders for.
    kube_version: String,
    /// The API versions Helm adds to its own for `.Capabilities`.
    api_versions: Vec<String>,
}

impl Job<'_> {
    fn key(&self, helm: &std::path::Path) -> u64 {
        let mut h = StableHasher::new();
        h.str(&helm.display().to_string())
            .u64(self.chart.digest)
            .str(&self.chart.path)
            .str(&self.release)
            .str(&self.namespace)
            .usize(self.values_files.len());
        for f in &self.values_files {
            h.str(f);
        }
        h.str(&self.values).u64(u64::from(self.include_crds));
        h.str(&self.kube_version).usize(self.api_versions.len());
        for a in &self.api_versions {
            h.str(a);
        }
        h.finish()
    }

    /// `helm template`'s arguments, the chart's files written under
    /// `base`: every flag first, then `--`, then the release name and the
    /// chart, so nothing from the fleet is read as a flag.
    fn args(&self, base: &std::path::Path, values: &std::path::Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "template".into(),
            "--namespace".into(),
            self.namespace.as_str().into(),
            "--skip-tests".into(),
            "--kube-version".into(),
            self.kube_version.as_str().into(),
        ];
        for a in &self.api_versions {
            args.extend(["--api-versions".into(), a.as_str().into()]);
        }
        if self.include_crds {
            args.push("--include-crds".into());
        }
        for f in &self.values_files {
            args.extend(["--values".into(), base.join(f).into()]);
        }
        args.extend([
            "--values".into(),
            values.into(),
            "--".into(),
            self.release.as_str().into(),
            base.join(&self.chart.path).into(),
        ]);
        args
    }

    /// Renders the chart in a temporary folder, isolated and offline
    /// ([`super::run::isolate`], [`super::run::offline`]): a render needs
    /// neither the user's Helm configuration nor the network.
    fn run(&self, helm: &std::path::Path) -> Result<String, String> {
        // Validation refused such a name; a render never runs with one.
        if let Some(why) = crate::core::names::helm_release_problem(&self.release) {
            return Err(format!("release name {:?}: {why}", self.release));
        }
        let tmp = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
        let base = tmp.path().join("in");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).map_err(|e| format!("a temporary folder: {e}"))?;
        super::run::write_tree(&base, &self.chart.files)?;
        let values = base.join(".canopy-values.json");
        std::fs::write(&values, &self.values).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(helm);
        cmd.args(self.args(&base, &values)).current_dir(&base);
        super::run::isolate(&mut cmd, &home);
        super::run::offline(&mut cmd);
        // A render is a short process whose heap stays small: Go's
        // collector would run several times for nothing (a quarter of its
        // CPU on a small chart). It runs only past 512 MiB instead, unless
        // the user tuned the collector.
        if std::env::var_os("GOGC").is_none() && std::env::var_os("GOMEMLIMIT").is_none() {
            cmd.env("GOGC", "off").env("GOMEMLIMIT", "512MiB");
        }
        super::run::bounded(cmd, "helm template", &base)
    }
}

/// One `helm template` run's output, or why it failed.
type Output = Result<Arc<str>, String>;

/// `helm template` outputs by input key.
type Outputs = Mutex<HashMap<u64, Output>>;

/// Outputs by input, for the life of the process.
fn outputs() -> &'static Outputs {
    static CACHE: OnceLock<Outputs> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// How many `helm` processes run at once. Each is a short, mostly
/// single-threaded process: more of them than cores keeps the cores busy
/// while others start or write their output.
const PARALLEL_RUNS: usize = 16;

/// Every job's output, from the cache or a run of `helm template`.
fn run_all(jobs: &[Job<'_>], helm: &std::path::Path) -> Vec<Output> {
    crate::sys::parallel::map(jobs, PARALLEL_RUNS, |job| {
        let key = job.key(helm);
        let cached = outputs().lock().expect("not poisoned").get(&key).cloned();
        cached.unwrap_or_else(|| {
            let r = job.run(helm).map(Arc::from);
            let mut c = outputs().lock().expect("not poisoned");
            // A long `watch` sees many revisions: keep the cache bounded
            // (the current ones are rendered again once).
            if c.len() >= CACHE_ENTRIES {
                c.clear();
            }
            c.insert(key, r.clone());
            r
        })
    })
}

/// A Helm workload rendered: its outputs as manifests, each parsed, and
/// per cluster the one it gets.
struct Expanded {
    files: Vec<ManifestFile>,
    parsed: Vec<Arc<Vec<Value>>>,
    pick: Vec<Option<u32>>,
}

/// Renders every Helm workload of a validated fleet for the clusters its
/// placement chooses and makes the outputs its manifests, one per distinct
/// input, with each cluster's pick ([`crate::core::validate::WorkloadFacts::variant`]).
pub fn expand(checked: &mut Checked) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let wanted: Vec<usize> = (0..checked.fleet.workloads.len())
        .filter(|&wi| checked.fleet.workloads[wi].spec.helm.is_some())
        .collect();
    if wanted.is_empty() {
        return diags;
    }
    let helm = tool();
    let facts = crate::core::render::cluster_facts(checked);
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(crate::core::render::TEMPLATE_FUEL));
    let mut done: BTreeMap<usize, Expanded> = BTreeMap::new();
    for wi in wanted {
        let w = &checked.fleet.workloads[wi];
        let h = w.spec.helm.as_ref().expect("filtered");
        let loc = w.source.loc_str("spec.helm");
        let fail = |msg: String, hint: &str| Diagnostic::error(msg).at(&loc).hint(hint.to_string());
        let helm = match &helm {
            Ok(b) => b.as_path(),
            Err(e) => {
                diags.push(fail(
                    format!("workload {:?} is rendered with Helm: {e}", w.name()),
                    "install Helm 3 (https://helm.sh/docs/intro/install/) or set CANOPY_HELM to its path",
                ));
                continue;
            }
        };
        let chart = match chart(helm, w, h) {
            Ok(c) => c,
            Err(e) => {
                diags.push(fail(
                    format!("workload {:?}: {e}", w.name()),
                    "check spec.helm.chart (and repo, version); run `helm pull` or `helm template` by hand to see more",
                ));
                continue;
            }
        };
        let values_files: Vec<String> = h
            .values_files
            .iter()
            .filter_map(|f| crate::core::paths::inside(&w.dir, f))
            .collect();
        if let Some(f) = values_files
            .iter()
            .find(|f| !w.helm_inputs.iter().any(|(p, _)| p == *f))
        {
            diags.push(
                Diagnostic::error(format!("values file {f} does not exist"))
                    .at(&w.source.loc_str("spec.helm.valuesFiles"))
                    .hint("add the file or remove it from spec.helm.valuesFiles"),
            );
            continue;
        }
        let release = h
            .release_name
            .clone()
            .unwrap_or_else(|| w.name().to_string());
        let namespace = w.spec.namespace.clone().unwrap_or_else(|| "default".into());
        let workload_ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
            "name": w.name(),
            "namespace": w.spec.namespace,
            "labels": w.meta.labels,
        })));
        let chosen = crate::core::schedule::choose(checked, w);
        let values_doc = Value::Object(h.values.clone());
        let compiled = Compiled::new(&env, &values_doc, "spec.helm.values");
        // Values per chosen cluster, and the distinct ones.
        let values: Vec<Option<Result<String, String>>> = chosen
            .par_iter()
            .enumerate()
            .map(|(c, &on)| {
                on.then(|| {
                    let ctx = minijinja::context! {
                        cluster => facts.ctx(checked, c),
                        workload => workload_ctx.clone(),
                    };
                    compiled
                        .as_ref()
                        .map_err(Clone::clone)?
                        .eval(&ctx)
                        .map(|v| v.to_string())
                })
            })
            .collect();
        // A run per distinct (values, capabilities): clusters of the same
        // Kubernetes version and APIs share one, as those of equal values
        // do. A chart that cannot ask (and whose values do not pass
        // `.Capabilities` to `tpl`) renders for the default, once per
        // distinct values.
        let unasked = capabilities::default_for_all();
        let values_ask = values_files.iter().any(|f| {
            w.helm_inputs
                .iter()
                .any(|(p, b)| p == f && b.windows(12).any(|x| x == b"Capabilities"))
        });
        let mut failed = false;
        type RunKey<'t> = (&'t str, (String, usize, Vec<String>));
        let mut distinct: BTreeMap<RunKey<'_>, u32> = BTreeMap::new();
        let mut order: Vec<(&str, Capabilities)> = Vec::new();
        let mut pick: Vec<Option<u32>> = vec![None; values.len()];
        for (c, v) in values.iter().enumerate() {
            match v {
                None => {}
                Some(Err(e)) => {
                    diags.push(
                        Diagnostic::error(format!(
                            "workload {:?}: values for cluster {}: {e}",
                            w.name(),
                            checked.cluster(c).name()
                        ))
                        .at(&w.source.loc_str("spec.helm.values"))
                        .hint("a value may use cluster.name, cluster.labels, cluster.values, cluster.path, cluster.depth and workload.*"),
                    );
                    failed = true;
                    break;
                }
                Some(Ok(text)) => {
                    let asks = chart.asks || values_ask || text.contains("Capabilities");
                    let cap = if asks {
                        capabilities::of(checked.cluster(c))
                    } else {
                        unasked.clone()
                    };
                    let n = distinct.len() as u32;
                    let run = *distinct.entry((text.as_str(), cap.key())).or_insert(n);
                    if run == n {
                        order.push((text.as_str(), cap));
                    }
                    pick[c] = Some(run);
                }
            }
        }
        if failed {
            continue;
        }
        let jobs: Vec<Job<'_>> = order
            .iter()
            .map(|(text, cap)| Job {
                chart: &chart,
                release: release.clone(),
                namespace: namespace.clone(),
                values_files: values_files.clone(),
                values: text.to_string(),
                include_crds: h.include_crds,
                kube_version: cap.version.clone(),
                api_versions: cap.api_versions(),
            })
            .collect();
        let results = run_all(&jobs, helm);
        // One manifest per distinct output, named by its content: the name
        // is each object's source annotation, so it must not change while
        // the output does not (whichever binary or values produced it).
        let mut files: Vec<ManifestFile> = Vec::with_capacity(results.len());
        let mut parsed = Vec::with_capacity(results.len());
        let mut index_of_run: Vec<u32> = Vec::with_capacity(results.len());
        let mut by_path: HashMap<String, u32> = HashMap::new();
        for r in results {
            let text = match r {
                Ok(t) => t,
                Err(e) => {
                    diags.push(fail(
                        format!("workload {:?}: {e}", w.name()),
                        "run `helm template` on the chart with the same values to see the whole error",
                    ));
                    failed = true;
                    break;
                }
            };
            let path = format!(
                "{}/helm-{:016x}.yaml",
                w.dir,
                StableHasher::new().str(&text).finish()
            );
            if let Some(&i) = by_path.get(&path) {
                index_of_run.push(i);
                continue;
            }
            by_path.insert(path.clone(), files.len() as u32);
            index_of_run.push(files.len() as u32);
            match parse_stream(&text, false) {
                Ok(docs) => parsed.push(Arc::new(
                    docs.into_iter()
                        .map(|d| d.value)
                        .filter(|v| !v.is_null())
                        .collect(),
                )),
                Err(e) => {
                    diags.push(fail(
                        format!(
                            "workload {:?}: helm template wrote YAML canopy cannot read: {} at line {}",
                            w.name(),
                            e.message,
                            e.line
                        ),
                        "run `helm template` on the chart to see its output",
                    ));
                    failed = true;
                    break;
                }
            }
            files.push(ManifestFile {
                path,
                text: text.to_string(),
            });
        }
        if !failed {
            let pick = pick
                .into_iter()
                .map(|p| p.map(|run| index_of_run[run as usize]))
                .collect();
            done.insert(
                wi,
                Expanded {
                    files,
                    parsed,
                    pick,
                },
            );
        }
    }
    for (wi, e) in done {
        checked.fleet.workloads[wi].manifests = e.files;
        let f = &mut checked.facts[wi];
        f.parsed = e.parsed.into_iter().map(Some).collect();
        f.variant = Some(Arc::new(e.pick));
    }
    diags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> minijinja::Value {
        minijinja::context! {
            cluster => minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
                "name": "eu-west-1",
                "labels": {"region": "eu"},
                "values": {"replicas": 3, "mirror": "registry.eu"},
            }))),
        }
    }

    #[test]
    fn a_chart_asks_for_capabilities_only_where_its_files_say_so() {
        let f = |p: &str, t: &str| (p.to_string(), t.as_bytes().to_vec());
        let plain = vec![
            f(
                "w/chart/Chart.yaml",
                "apiVersion: v2\nname: x\nversion: 1.0.0\n",
            ),
            f("w/chart/templates/cm.yaml", "kind: ConfigMap\n"),
            f("w/other/Capabilities.yaml", "not the chart's"),
        ];
        assert!(!asks_capabilities(&plain, "w/chart"));
        for (p, t) in [
            (
                "w/chart/templates/_helpers.tpl",
                "{{ .Capabilities.KubeVersion }}",
            ),
            ("w/chart/charts/sub/Chart.yaml", "kubeVersion: \">=1.23\""),
            ("w/chart/charts/sub-1.0.0.tgz", "packed"),
        ] {
            let mut files = plain.clone();
            files.push(f(p, t));
            assert!(asks_capabilities(&files, "w/chart"), "{p}");
        }
    }

    #[test]
    fn values_are_rendered_per_cluster_with_their_types() {
        let env = minijinja::Environment::new();
        let v = serde_json::json!({
            "replicaCount": "{{ cluster.values.replicas }}",
            "image": {"registry": "{{ cluster.values.mirror }}", "tag": "1.2"},
            "name": "app-{{ cluster.name }}",
            "regions": ["{{ cluster.labels.region }}", 7],
            "flag": true,
        });
        let out = Compiled::new(&env, &v, "values")
            .unwrap()
            .eval(&ctx())
            .unwrap();
        assert_eq!(
            out,
            serde_json::json!({
                "replicaCount": 3,
                "image": {"registry": "registry.eu", "tag": "1.2"},
                "name": "app-eu-west-1",
                "regions": ["eu", 7],
                "flag": true,
            })
        );
    }

    #[test]
    fn an_undefined_value_names_its_path() {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let v = serde_json::json!({"a": {"b": ["{{ cluster.values.nope }}"]}});
        let e = Compiled::new(&env, &v, "spec.helm.values")
            .unwrap()
            .eval(&ctx())
            .unwrap_err();
        assert!(e.starts_with("spec.helm.values.a.b[0]"), "{e}");
        let v = serde_json::json!({"a": "x-{{ cluster.values.nope.deeper }}"});
        let e = Compiled::new(&env, &v, "spec.helm.values")
            .unwrap()
            .eval(&ctx())
            .unwrap_err();
        assert!(e.starts_with("spec.helm.values.a"), "{e}");
    }
}
