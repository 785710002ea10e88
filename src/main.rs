//! The `canopy` binary: parse the command line, run one command, map the
//! outcome to an exit code. Everything else lives in the library.

/// mimalloc: rendering allocates millions of small JSON nodes, and with the
/// system allocator a 1,000-cluster render took 922 ms against 554 ms with
/// mimalloc (`cargo bench --bench pipeline`, same machine, same run shape).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use canopy::apply::{self, Backends, FleetBackends, Options};
use canopy::backend::kube::KubeOptions;
use canopy::backend::local::LocalStore;
use canopy::backend::ApplyMeta;
use canopy::cli::{Cli, Command, DiffFormat, KubeArgs, Target, TextOrJson, YamlOrJson};
use canopy::diag::Diagnostics;
use canopy::load::LoadError;
use canopy::pipeline::{load_checked, PipelineError};
use canopy::render::{render_all, render_map, Renderer};
use canopy::validate::Checked;
use canopy::{explain, output, schema};

/// Exit codes (also in `--help`): 0 ok, 1 differences (diff), 2 user
/// error, 3 I/O or state error, 4 some cluster failed or was skipped.
const EXIT_DIFF: u8 = 1;
const EXIT_USER: u8 = 2;
const EXIT_IO: u8 = 3;
const EXIT_CLUSTERS: u8 = 4;

/// A failed command: what to print and which code to exit with.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn user(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USER,
            message: message.into(),
        }
    }
    /// The command already printed its report; only the exit code remains.
    fn silent(code: u8) -> Self {
        Failure {
            code,
            message: String::new(),
        }
    }
    fn io(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_IO,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("{}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn print_diags(d: &Diagnostics) {
    let mut err = std::io::stderr().lock();
    for x in &d.0 {
        let _ = writeln!(err, "{x}");
    }
}

fn summary(d: &Diagnostics) -> String {
    let errors = d.errors().count();
    let warnings = d.0.len() - errors;
    format!("{errors} error(s), {warnings} warning(s)")
}

/// Loads and checks the fleet, printing warnings; an invalid fleet prints
/// every diagnostic and fails with the user-error code.
fn checked(dir: &Path, name: Option<&str>) -> Result<Checked, Failure> {
    match load_checked(dir, name) {
        Ok((c, warnings)) => {
            print_diags(&warnings);
            Ok(c)
        }
        Err(PipelineError::Invalid(d)) => {
            print_diags(&d);
            Err(Failure::user(format!(
                "fleet {} is invalid: {}",
                dir.display(),
                summary(&d)
            )))
        }
        Err(PipelineError::Load(e)) => Err(load_failure(e)),
    }
}

fn load_failure(e: LoadError) -> Failure {
    let msg = format!("error: {e}");
    match &e {
        LoadError::Root { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Failure::user(format!("{msg}\n  help: pass the folder that holds the fleet, e.g. `canopy validate fleet-example`"))
        }
        LoadError::NotADirectory { .. } => Failure::user(msg),
        LoadError::Root { .. } => Failure::io(msg),
    }
}

fn cluster_index(c: &Checked, name: &str) -> Result<usize, Failure> {
    c.topo.get(name).ok_or_else(|| {
        let known: Vec<&str> = c.topo.preorder().iter().map(|&i| c.topo.name(i)).collect();
        Failure::user(format!(
            "error: unknown cluster {name:?}\n  help: clusters of this fleet: {}",
            known.join(", ")
        ))
    })
}

fn renderer(c: &Checked) -> Result<Renderer<'_>, Failure> {
    let r = Renderer::new(c);
    if r.diagnostics.has_errors() {
        print_diags(&r.diagnostics);
        return Err(Failure::user(format!(
            "cannot place the fleet's workloads: {}",
            summary(&r.diagnostics)
        )));
    }
    Ok(r)
}

fn stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`canopy render | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::io(format!("error: writing output: {e}"))),
    }
}

/// The state folder: `--state`, or `.canopy/state` inside the fleet folder.
fn state_dir(dir: &Path, state: &Option<std::path::PathBuf>) -> std::path::PathBuf {
    state
        .clone()
        .unwrap_or_else(|| dir.join(".canopy").join("state"))
}

/// The cluster indexes `--cluster` and `--subtree` name, `None` for all.
fn targets(c: &Checked, t: &Target) -> Result<Option<std::collections::BTreeSet<usize>>, Failure> {
    if t.clusters.is_empty() && t.subtrees.is_empty() {
        return Ok(None);
    }
    let mut set = std::collections::BTreeSet::new();
    for n in &t.clusters {
        set.insert(cluster_index(c, n)?);
    }
    for n in &t.subtrees {
        let root = cluster_index(c, n)?;
        set.extend(c.topo.subtree(root).iter().copied());
    }
    Ok(Some(set))
}

/// Clusters with local state that the fleet no longer has (only looked at
/// when the whole fleet is targeted).
fn orphans(c: &Checked, store: &LocalStore, whole_fleet: bool) -> Result<Vec<String>, Failure> {
    if !whole_fleet {
        return Ok(Vec::new());
    }
    let on_disk = store
        .clusters_on_disk()
        .map_err(|e| Failure::io(format!("error: {e}")))?;
    Ok(on_disk
        .into_iter()
        .filter(|n| c.topo.get(n).is_none())
        .collect())
}

fn kube_options(k: &KubeArgs) -> KubeOptions {
    KubeOptions {
        requests: usize::from(k.kube_requests),
        qps: k.kube_qps,
        burst: k.kube_burst,
        request_timeout: k.request_timeout,
        ..KubeOptions::default()
    }
}

fn fleet_backends<'a>(
    c: &Checked,
    dir: &Path,
    store: &'a LocalStore,
    kube: KubeOptions,
) -> Result<FleetBackends<'a>, Failure> {
    FleetBackends::new(&c.fleet, dir, store, kube).map_err(|e| {
        Failure::io(format!(
            "error: cannot start the Kubernetes client runtime: {e}"
        ))
    })
}

fn apply_meta(dir: &Path) -> ApplyMeta {
    ApplyMeta {
        revision: canopy::source::git::revision(dir),
        at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}

/// Runs the apply pipeline (dry or not) and maps a render failure.
fn run_apply(
    r: &Renderer<'_>,
    store: &dyn apply::Backends,
    orphans: &[String],
    meta: &ApplyMeta,
    opts: &Options,
) -> Result<apply::Report, Failure> {
    apply::run(r, store, orphans, meta, opts).map_err(|d| {
        print_diags(&d);
        Failure::user(format!(
            "render failed, so nothing was applied and nothing pruned: {}",
            summary(&d)
        ))
    })
}

/// Renders the fleet at `--base REF` (the "live" side of `diff --base`).
fn render_base(
    dir: &Path,
    rev: &str,
    head: &Checked,
    only: Option<&std::collections::BTreeSet<usize>>,
) -> Result<canopy::backend::rendered::RenderedState, Failure> {
    use canopy::pipeline::BaseError;
    let (state, warnings) =
        canopy::pipeline::render_at_revision(dir, rev, head, only).map_err(|e| match e {
            BaseError::Git(e) => Failure::user(format!(
            "error: {e}\n  help: pass a branch, tag or commit that exists, e.g. --base origin/main"
        )),
            BaseError::Invalid { commit, diags } => {
                print_diags(&diags);
                Failure::user(format!(
                    "the fleet at {rev} ({commit}) is invalid: {}",
                    summary(&diags)
                ))
            }
            BaseError::Render { commit, diags } => {
                print_diags(&diags);
                Failure::user(format!(
                    "the fleet at {rev} ({commit}) does not render: {}",
                    summary(&diags)
                ))
            }
        })?;
    print_diags(&warnings);
    Ok(state)
}

fn run(cli: Cli) -> Result<(), Failure> {
    let name = cli.fleet_name.as_deref();
    match cli.command {
        Command::Validate { dir, output: fmt } => {
            let (checked, diags) = canopy::pipeline::check_all(&dir, name).map_err(load_failure)?;
            match fmt {
                TextOrJson::Text => {
                    print_diags(&diags);
                    if !diags.has_errors() {
                        let c = checked.expect("no errors means checked");
                        stdout(&format!(
                            "fleet {} is valid: {} clusters, {} workloads, {} overrides ({} warning(s))\n",
                            c.fleet.name,
                            c.topo.len(),
                            c.fleet.workloads.len(),
                            c.fleet.overrides.len(),
                            diags.0.len()
                        ))?;
                    }
                }
                TextOrJson::Json => {
                    let v =
                        serde_json::json!({"valid": !diags.has_errors(), "diagnostics": diags.0});
                    stdout(&(serde_json::to_string_pretty(&v).expect("serializes") + "\n"))?;
                }
            }
            if diags.has_errors() {
                return Err(Failure::user(format!(
                    "fleet {} is invalid: {}",
                    dir.display(),
                    summary(&diags)
                )));
            }
            Ok(())
        }
        Command::Tree { dir } => {
            let c = checked(&dir, name)?;
            let r = renderer(&c)?;
            stdout(&output::tree_text(&r))
        }
        Command::Render {
            dir,
            clusters,
            out,
            output: fmt,
            show_secrets,
        } => {
            let c = checked(&dir, name)?;
            let only: Option<Vec<usize>> = if clusters.is_empty() {
                None
            } else {
                Some(
                    clusters
                        .iter()
                        .map(|n| cluster_index(&c, n))
                        .collect::<Result<_, _>>()?,
                )
            };
            let r = renderer(&c)?;
            let fail = |d: Diagnostics| {
                print_diags(&d);
                Failure::user(format!("render failed: {}", summary(&d)))
            };
            let json = fmt == YamlOrJson::Json;
            if out.is_none() && json {
                let mut rf = render_all(&r, only.as_deref()).map_err(fail)?;
                if !show_secrets {
                    rf.mask_secrets();
                }
                let v = output::render_json(&c, &rf);
                return stdout(&(serde_json::to_string_pretty(&v).expect("serializes") + "\n"));
            }
            // Each cluster becomes text as soon as it is rendered, in parallel;
            // nothing is printed or written unless every cluster rendered.
            let texts = render_map(&r, only.as_deref(), |_, mut objs| {
                if !show_secrets {
                    canopy::render::mask_objects(&mut objs);
                }
                let text = if json {
                    output::objects_json(&objs)
                } else {
                    output::objects_yaml(&objs)
                };
                output::ClusterText {
                    objects: objs.len(),
                    text,
                }
            })
            .map_err(fail)?;
            match out {
                Some(dir) => {
                    let n = output::write_out_dir(&c, &texts, &dir, json).map_err(|e| match e {
                        output::OutDirError::NotOurs { .. } => Failure::user(format!(
                            "error: {e}\n  help: choose a new or empty folder; canopy only replaces folders it wrote"
                        )),
                        output::OutDirError::Io { .. } => Failure::io(format!("error: {e}")),
                    })?;
                    eprintln!("wrote {n} cluster folder(s) to {}", dir.display());
                    Ok(())
                }
                None => stdout(&output::render_yaml(&c, &texts)),
            }
        }
        Command::Explain {
            dir,
            workload,
            cluster,
            output: fmt,
        } => {
            let c = checked(&dir, name)?;
            let wi = c
                .fleet
                .workloads
                .iter()
                .position(|w| w.name() == workload)
                .ok_or_else(|| {
                    let known: Vec<&str> = c.fleet.workloads.iter().map(|w| w.name()).collect();
                    Failure::user(format!(
                        "error: unknown workload {workload:?}\n  help: workloads of this fleet: {}",
                        known.join(", ")
                    ))
                })?;
            let only = cluster
                .as_deref()
                .map(|n| cluster_index(&c, n))
                .transpose()?;
            let e = explain::explain(&c, wi, only);
            match fmt {
                TextOrJson::Text => stdout(&output::explain_text(&e)),
                TextOrJson::Json => {
                    stdout(&(serde_json::to_string_pretty(&e).expect("serializes") + "\n"))
                }
            }
        }
        Command::Apply {
            dir,
            target,
            dry_run,
            prune,
            prune_clusters,
            concurrency,
            force_conflicts,
            wait,
            timeout,
            kube,
        } => {
            let c = checked(&dir, name)?;
            let r = renderer(&c)?;
            let state = state_dir(&dir, &target.state);
            let store = if dry_run {
                LocalStore::open_read_only(&state)
            } else {
                LocalStore::open(&state).map_err(|e| Failure::io(format!("error: {e}")))?
            };
            let opts = Options {
                dry_run,
                prune,
                prune_clusters,
                concurrency: usize::from(concurrency),
                targets: targets(&c, &target)?,
                keep_values: false,
                wait: wait.then_some(timeout),
            };
            let orphans = orphans(&c, &store, opts.targets.is_none())?;
            let mut kube = kube_options(&kube);
            kube.force_conflicts = force_conflicts;
            let report = run_apply(
                &r,
                &fleet_backends(&c, &dir, &store, kube)?,
                &orphans,
                &apply_meta(&dir),
                &opts,
            )?;
            stdout(&output::apply_text(&report, dry_run))?;
            // An orphan left in place is reported, not a failure; a cluster of
            // the fleet that failed or was skipped is.
            let blocked = |o: &apply::Outcome| {
                matches!(
                    o,
                    apply::Outcome::Failed { .. } | apply::Outcome::Skipped { .. }
                )
            };
            if report.clusters.iter().any(|c| blocked(&c.outcome))
                || report
                    .orphans
                    .iter()
                    .any(|o| matches!(o.outcome, apply::Outcome::Failed { .. }))
            {
                return Err(Failure::silent(EXIT_CLUSTERS));
            }
            Ok(())
        }
        Command::Diff {
            dir,
            target,
            output: fmt,
            base,
            kube,
        } => {
            let c = checked(&dir, name)?;
            let r = renderer(&c)?;
            let opts = Options {
                dry_run: true,
                targets: targets(&c, &target)?,
                keep_values: true,
                ..Options::default()
            };
            let (report, old_label) = match &base {
                None => {
                    let store = LocalStore::open_read_only(&state_dir(&dir, &target.state));
                    let orphans = orphans(&c, &store, opts.targets.is_none())?;
                    (
                        run_apply(
                            &r,
                            &fleet_backends(&c, &dir, &store, kube_options(&kube))?,
                            &orphans,
                            &apply_meta(&dir),
                            &opts,
                        )?,
                        "live".to_string(),
                    )
                }
                Some(rev) => {
                    let base_state = render_base(&dir, rev, &c, opts.targets.as_ref())?;
                    let orphans: Vec<String> = if opts.targets.is_none() {
                        base_state
                            .clusters
                            .keys()
                            .filter(|n| c.topo.get(n).is_none())
                            .cloned()
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (
                        run_apply(&r, &base_state, &orphans, &apply_meta(&dir), &opts)?,
                        rev.clone(),
                    )
                }
            };
            let new_label = if base.is_some() {
                "working-tree"
            } else {
                "desired"
            };
            let sides = canopy::diff::Sides {
                old: &old_label,
                new: new_label,
            };
            match fmt {
                DiffFormat::Text => stdout(&output::diff_text(&report, sides))?,
                DiffFormat::Json => stdout(
                    &(serde_json::to_string_pretty(&output::diff_json(&report, sides))
                        .expect("serializes")
                        + "\n"),
                )?,
                DiffFormat::Markdown => stdout(&output::diff_markdown(&report, sides))?,
            }
            let t = report.totals();
            if t.failed > 0 {
                return Err(Failure::silent(EXIT_CLUSTERS));
            }
            if report.differs() {
                return Err(Failure::silent(EXIT_DIFF));
            }
            Ok(())
        }
        Command::Status {
            dir,
            state,
            output: fmt,
            kube,
        } => {
            let c = checked(&dir, name)?;
            let r = renderer(&c)?;
            let store = LocalStore::open_read_only(&state_dir(&dir, &state));
            let opts = Options {
                dry_run: true,
                ..Options::default()
            };
            let backends = fleet_backends(&c, &dir, &store, kube_options(&kube))?;
            let report = run_apply(&r, &backends, &[], &apply_meta(&dir), &opts)?;
            let lines: Vec<output::StatusLine> = report
                .clusters
                .iter()
                .map(|cr| {
                    let backend = backends.backend(&cr.cluster);
                    let last = backend.last_applied().ok().flatten();
                    let (reachable, state, drifted, detail) = match &cr.outcome {
                        apply::Outcome::Unchanged(_) => (true, "in-sync", 0, None),
                        apply::Outcome::Changed(ch) => {
                            let state = if last.is_some() {
                                "drifted"
                            } else {
                                "not-applied"
                            };
                            (true, state, ch.changes.len(), None)
                        }
                        apply::Outcome::Failed { error, .. } => {
                            let reachable = backend.reachable().is_ok();
                            (
                                reachable,
                                if reachable { "error" } else { "unreachable" },
                                0,
                                Some(error.clone()),
                            )
                        }
                        apply::Outcome::Skipped { reason } => {
                            (true, "skipped", 0, Some(reason.clone()))
                        }
                    };
                    output::StatusLine {
                        cluster: cr.cluster.clone(),
                        depth: cr.depth,
                        reachable,
                        state: state.to_string(),
                        drifted,
                        detail,
                        revision: last.as_ref().map(|m| m.revision.clone()),
                        applied_at: last.map(|m| m.at),
                    }
                })
                .collect();
            match fmt {
                TextOrJson::Text => stdout(&output::status_text(&lines)),
                TextOrJson::Json => {
                    stdout(&(serde_json::to_string_pretty(&lines).expect("serializes") + "\n"))
                }
            }
        }
        Command::Schema { out } => {
            let all = schema::schemas();
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        Failure::io(format!("error: creating {}: {e}", dir.display()))
                    })?;
                    for (file, v) in &all {
                        let path = dir.join(file);
                        std::fs::write(&path, schema::to_text(v)).map_err(|e| {
                            Failure::io(format!("error: writing {}: {e}", path.display()))
                        })?;
                    }
                    eprintln!("wrote {} schema(s) to {}", all.len(), dir.display());
                    Ok(())
                }
                None => {
                    let v: serde_json::Map<String, serde_json::Value> = all.into_iter().collect();
                    stdout(&(serde_json::to_string_pretty(&v).expect("serializes") + "\n"))
                }
            }
        }
    }
}
