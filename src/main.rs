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

use canopy::backend::fleet::{Backends, FleetBackends};
use canopy::backend::kube::KubeOptions;
use canopy::backend::local::LocalStore;
use canopy::backend::ApplyMeta;
use canopy::cli::args::{
    Cli, Command, DiffFormat, KubeArgs, SourceArgs, Target, TextOrJson, YamlOrJson,
};
use canopy::cli::output;
use canopy::core::diag::Diagnostics;
use canopy::core::failover::Health;
use canopy::core::load::LoadError;
use canopy::core::render::{render_all, render_map, Renderer};
use canopy::core::validate::Checked;
use canopy::core::{explain, schema};
use canopy::ops::apply::{self, Options};
use canopy::source::git::GitError;
use canopy::source::input::{Input, Loaded, PipelineError, SourceError};
use canopy::source::remote::{self, GitRepo, RepoSpec};

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

/// The fleet source a command was given, opened.
struct Src {
    input: Input,
    /// Where relative kubeconfig paths start: the fleet folder, or the
    /// current folder for a repository.
    base: std::path::PathBuf,
    /// The local backend's default state folder.
    state: std::path::PathBuf,
    /// How messages name the fleet.
    label: String,
}

/// `$XDG_STATE_HOME/canopy`, else `~/.local/state/canopy`: where a fleet
/// read from a repository keeps its local-backend state (a cache could be
/// wiped; this is the state of clusters).
fn state_home() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(d).join("canopy");
    }
    std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join(".local/state/canopy")
}

fn open_source(a: &SourceArgs) -> Result<Src, Failure> {
    match (&a.dir, &a.repo) {
        (Some(dir), None) => Ok(Src {
            input: Input::Dir(dir.clone()),
            base: dir.clone(),
            state: dir.join(".canopy").join("state"),
            label: dir.display().to_string(),
        }),
        (None, Some(url)) => {
            let reference = a.reference.clone().unwrap_or_default();
            let spec = RepoSpec {
                url: url.clone(),
                reference: reference.clone(),
                path: a.path.clone().unwrap_or_default(),
                auth: remote::Auth {
                    token_env: a.git_token_env.clone(),
                    ssh_key: a.ssh_key.clone(),
                },
            };
            let repo = GitRepo::open(spec).map_err(git_failure)?;
            let path = &repo.spec().path;
            let state = state_home().join(remote::cache_name(&format!(
                "{}/{path}",
                repo.display_url().trim_end_matches('/')
            )));
            let label = if path.is_empty() {
                format!("{} at {reference}", repo.display_url())
            } else {
                format!("{} at {reference}, folder {path}", repo.display_url())
            };
            Ok(Src {
                input: Input::Git(repo),
                base: std::env::current_dir().unwrap_or_default(),
                state,
                label,
            })
        }
        (Some(_), Some(_)) => Err(Failure::user(
            "error: pass a fleet folder or --repo, not both",
        )),
        (None, None) => Err(Failure::user(
            "error: pass a fleet folder, or --repo URL --ref REF",
        )),
    }
}

/// A Git failure: something wrong with the arguments is a usage error; a
/// remote that cannot be reached or refuses us, or a cache that cannot be
/// written, is an I/O error.
fn git_failure(e: GitError) -> Failure {
    let msg = format!("error: {e}");
    match e {
        GitError::Unreachable { .. }
        | GitError::Auth { .. }
        | GitError::Certificate { .. }
        | GitError::Cache { .. }
        | GitError::Read { .. } => Failure::io(msg),
        _ => Failure::user(msg),
    }
}

/// Loads and checks the fleet, printing warnings; an invalid fleet prints
/// every diagnostic and fails with the user-error code.
fn checked(src: &Src, name: Option<&str>) -> Result<Loaded, Failure> {
    match src.input.load(name) {
        Ok(l) => {
            print_diags(&l.warnings);
            Ok(l)
        }
        Err(SourceError::Pipeline(PipelineError::Invalid(d))) => {
            print_diags(&d);
            Err(Failure::user(format!(
                "fleet {} is invalid: {}",
                src.label,
                summary(&d)
            )))
        }
        Err(SourceError::Pipeline(PipelineError::Load(e))) => Err(load_failure(e)),
        Err(SourceError::Git(e)) => Err(git_failure(e)),
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

/// Schedules and prepares the render; `failed` are the clusters failed over
/// per workload (empty: every cluster placed as healthy).
fn renderer<'a>(c: &'a Checked, failed: &[Vec<bool>]) -> Result<Renderer<'a>, Failure> {
    let r = Renderer::with_failover(c, failed);
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

/// The clusters failed over per workload, from the health records in the
/// state folder after asking every cluster recorded down whether it answers
/// now. Returns the records (for [`canopy::ops::health::record`]) and the time.
fn failover(
    c: &Checked,
    state: &Path,
    backends: &dyn Backends,
) -> Result<(Health, std::time::SystemTime, Vec<Vec<bool>>), Failure> {
    let mut health = Health::load(state).map_err(|e| Failure::io(format!("error: {e}")))?;
    canopy::ops::health::recheck(&mut health, backends);
    let now = std::time::SystemTime::now();
    let failed = canopy::core::render::failed_over(c, &health, now);
    Ok((health, now, failed))
}

/// The state folder: `--state`, or the source's default.
fn state_dir(src: &Src, state: &Option<std::path::PathBuf>) -> std::path::PathBuf {
    state.clone().unwrap_or_else(|| src.state.clone())
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

fn apply_meta(revision: &canopy::source::Revision) -> ApplyMeta {
    ApplyMeta {
        revision: revision.to_string(),
        at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}

/// Runs the apply pipeline (dry or not) and maps a render failure.
fn run_apply(
    r: &Renderer<'_>,
    store: &dyn Backends,
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

/// `canopy apply` (and what `rollout continue` runs): load, place with
/// failover, apply with staged rollouts, record health, report.
fn apply_fleet(
    src: &Src,
    name: Option<&str>,
    target: &Target,
    mut opts: Options,
    kube: KubeOptions,
) -> Result<(), Failure> {
    let loaded = checked(src, name)?;
    let c = loaded.checked;
    let state = state_dir(src, &target.state);
    let store = if opts.dry_run {
        LocalStore::open_read_only(&state)
    } else {
        LocalStore::open(&state).map_err(|e| Failure::io(format!("error: {e}")))?
    };
    let backends = fleet_backends(&c, &src.base, &store, kube)?;
    let (mut health, now, failed) = failover(&c, &state, &backends)?;
    let r = renderer(&c, &failed)?;
    opts.targets = targets(&c, target)?;
    let orphans = orphans(&c, &store, opts.targets.is_none())?;
    let (report, events) = run_staged(
        &r,
        &backends,
        &orphans,
        &opts,
        &staged_ctx(src, &loaded.revision, &state, now),
    )?;
    if !opts.dry_run {
        canopy::ops::health::record(&mut health, &report, &c.topo, &backends, now);
        health
            .save(&state)
            .map_err(|e| Failure::io(format!("error: {e}")))?;
    }
    stdout(&format!(
        "{}{}",
        output::apply_text(&report, opts.dry_run),
        output::rollout_events_text(&events)
    ))?;
    // An orphan left in place is reported, not a failure; a cluster of the
    // fleet that failed or was skipped is, and so is a failed health gate.
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
        || events.iter().any(|e| e.failed)
    {
        return Err(Failure::silent(EXIT_CLUSTERS));
    }
    Ok(())
}

/// The apply pipeline with staged rollouts (dry or not): the rollouts
/// recorded in the context's state folder decide which workloads are held
/// back where.
fn run_staged(
    r: &Renderer<'_>,
    backends: &dyn Backends,
    orphans: &[String],
    opts: &Options,
    ctx: &canopy::ops::rollout::Ctx<'_>,
) -> Result<(apply::Report, Vec<canopy::ops::rollout::Event>), Failure> {
    use canopy::ops::rollout::{self, RolloutError};
    let mut rollouts = canopy::state::rollouts::Rollouts::load(ctx.state)
        .map_err(|e| Failure::io(format!("error: {e}")))?;
    let meta = apply_meta(ctx.revision);
    rollout::apply(r, backends, orphans, &meta, opts, &mut rollouts, ctx).map_err(|e| match e {
        RolloutError::Render(d) => {
            print_diags(&d);
            Failure::user(format!(
                "render failed, so nothing was applied and nothing pruned: {}",
                summary(&d)
            ))
        }
        RolloutError::State(e) => Failure::io(format!("error: {e}")),
    })
}

/// What a staged run needs besides the render and the backends.
fn staged_ctx<'a>(
    src: &'a Src,
    revision: &'a canopy::source::Revision,
    state: &'a Path,
    now: std::time::SystemTime,
) -> canopy::ops::rollout::Ctx<'a> {
    canopy::ops::rollout::Ctx {
        input: &src.input,
        revision,
        state,
        now,
    }
}

/// The workload named on a command line where, with `--repo`, it is the
/// only positional argument.
fn workload_arg(
    source: &mut SourceArgs,
    workload: Option<String>,
    example: &str,
) -> Result<String, Failure> {
    match (workload, &source.repo) {
        (Some(w), _) => Ok(w),
        (None, Some(_)) => source
            .dir
            .take()
            .map(|d| d.to_string_lossy().into_owned())
            .ok_or_else(|| Failure::user("error: name the workload")),
        (None, None) => Err(Failure::user(format!(
            "error: name the workload, e.g. `{example}`"
        ))),
    }
}

/// The rollout plan of the named workload; an error names the workloads
/// that have one.
fn rollout_plan(r: &Renderer<'_>, workload: &str) -> Result<canopy::ops::rollout::Plan, Failure> {
    let c = r.checked;
    if c.fleet.workload(workload).is_none() {
        let known: Vec<&str> = c.fleet.workloads.iter().map(|w| w.name()).collect();
        return Err(Failure::user(format!(
            "error: unknown workload {workload:?}\n  help: workloads of this fleet: {}",
            known.join(", ")
        )));
    }
    let mut plans = canopy::ops::rollout::plans(r);
    let with: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    match plans.iter().position(|p| p.name == workload) {
        Some(i) => Ok(plans.swap_remove(i)),
        None => Err(Failure::user(format!(
            "error: workload {workload:?} has no staged rollout (it goes to every cluster at once)\n  help: give it spec.rollout.stages, or give the fleet a Defaults document with spec.rollout; workloads with one: {}",
            if with.is_empty() { "none".to_string() } else { with.join(", ") }
        ))),
    }
}

fn rollout_command(
    cmd: canopy::cli::args::RolloutCommand,
    name: Option<&str>,
) -> Result<(), Failure> {
    use canopy::cli::args::RolloutCommand;
    use canopy::state::rollouts::Rollouts;
    match cmd {
        RolloutCommand::Status {
            mut source,
            workload,
            state,
            output: fmt,
        } => {
            let workload = workload_arg(
                &mut source,
                workload,
                "canopy rollout status fleet-example web",
            )?;
            let src = open_source(&source)?;
            let c = checked(&src, name)?.checked;
            let r = renderer(&c, &[])?;
            let p = rollout_plan(&r, &workload)?;
            let rollouts = Rollouts::load(&state_dir(&src, &state))
                .map_err(|e| Failure::io(format!("error: {e}")))?;
            let v = canopy::ops::rollout::view(&p, rollouts.workloads.get(&workload), &r);
            match fmt {
                TextOrJson::Text => stdout(&output::rollout_text(&v)),
                TextOrJson::Json => {
                    stdout(&(serde_json::to_string_pretty(&v).expect("serializes") + "\n"))
                }
            }
        }
        RolloutCommand::Continue {
            mut source,
            workload,
            state,
            concurrency,
            kube,
        } => {
            let workload = workload_arg(
                &mut source,
                workload,
                "canopy rollout continue fleet-example web",
            )?;
            let src = open_source(&source)?;
            let c = checked(&src, name)?.checked;
            let r = renderer(&c, &[])?;
            let p = rollout_plan(&r, &workload)?;
            let state = state_dir(&src, &state);
            let rollouts =
                Rollouts::load(&state).map_err(|e| Failure::io(format!("error: {e}")))?;
            let Some(rec) = rollouts.workloads.get(&workload) else {
                return Err(Failure::user(format!(
                    "error: no rollout of {workload} is recorded in {}\n  help: `canopy apply` starts it",
                    state.display()
                )));
            };
            if rec.target != p.target {
                return Err(Failure::user(format!(
                    "error: the recorded rollout of {workload} ({}) is not of this revision's change\n  help: `canopy apply` starts the rollout of the new change",
                    rec.revision.revision
                )));
            }
            // Checked here so that a mistaken continue says why at once.
            rec.clone()
                .resume(std::time::SystemTime::now())
                .map_err(|e| Failure::user(format!("error: {workload}: {e}")))?;
            canopy::state::rollouts::request_continue(&state, &workload, &p.target)
                .map_err(|e| Failure::io(format!("error: {e}")))?;
            drop(r);
            // A watch holding the state folder acts on the request itself.
            match LocalStore::open(&state) {
                Err(canopy::backend::BackendError::Locked { pid, .. }) => stdout(&format!(
                    "continue of {workload} requested; canopy watch (pid {pid}) goes on with it\n"
                )),
                Err(e) => Err(Failure::io(format!("error: {e}"))),
                Ok(lock) => {
                    drop(lock);
                    let target = Target {
                        clusters: Vec::new(),
                        subtrees: Vec::new(),
                        state: Some(state),
                    };
                    let opts = Options {
                        concurrency: usize::from(concurrency),
                        ..Options::default()
                    };
                    apply_fleet(&src, name, &target, opts, kube_options(&kube))
                }
            }
        }
    }
}

/// Renders the fleet at `--base REF` (the "live" side of `diff --base`).
fn render_base(
    input: &Input,
    rev: &str,
    head: &Checked,
    only: Option<&std::collections::BTreeSet<usize>>,
) -> Result<canopy::backend::rendered::RenderedState, Failure> {
    use canopy::ops::base::BaseError;
    let (state, warnings) =
        canopy::ops::base::render_at_revision(input, rev, head, only).map_err(|e| match e {
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

/// Logs of `canopy watch`, on stderr: text, or one JSON object a line.
fn init_logs(format: canopy::cli::args::LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    match format {
        canopy::cli::args::LogFormat::Text => builder.init(),
        canopy::cli::args::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let name = cli.fleet_name.as_deref();
    match cli.command {
        Command::Validate {
            source,
            output: fmt,
        } => {
            let src = open_source(&source)?;
            let (checked, diags) =
                canopy::source::input::check_all(&src.input, name).map_err(|e| match e {
                    SourceError::Pipeline(PipelineError::Load(e)) => load_failure(e),
                    SourceError::Pipeline(PipelineError::Invalid(_)) => {
                        unreachable!("check_all lists problems instead")
                    }
                    SourceError::Git(e) => git_failure(e),
                })?;
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
                    src.label,
                    summary(&diags)
                )));
            }
            Ok(())
        }
        Command::Tree { source } => {
            let c = checked(&open_source(&source)?, name)?.checked;
            // The fleet as placed with every cluster healthy.
            let r = renderer(&c, &[])?;
            stdout(&output::tree_text(&r))
        }
        Command::Render {
            source,
            clusters,
            out,
            output: fmt,
            show_secrets,
        } => {
            let c = checked(&open_source(&source)?, name)?.checked;
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
            // The fleet as placed with every cluster healthy.
            let r = renderer(&c, &[])?;
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
                    canopy::core::render::mask_objects(&mut objs);
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
            mut source,
            workload,
            cluster,
            output: fmt,
        } => {
            let workload = workload_arg(&mut source, workload, "canopy explain fleet-example web")?;
            let src = open_source(&source)?;
            let c = checked(&src, name)?.checked;
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
            // Failover as the default state folder records it.
            let health = Health::load(&state_dir(&src, &None))
                .map_err(|e| Failure::io(format!("error: {e}")))?;
            let e = explain::explain(&c, wi, only, &health, std::time::SystemTime::now());
            match fmt {
                TextOrJson::Text => stdout(&output::explain_text(&e)),
                TextOrJson::Json => {
                    stdout(&(serde_json::to_string_pretty(&e).expect("serializes") + "\n"))
                }
            }
        }
        Command::Apply {
            source,
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
            let src = open_source(&source)?;
            let mut kube = kube_options(&kube);
            kube.force_conflicts = force_conflicts;
            let opts = Options {
                dry_run,
                prune,
                prune_clusters,
                concurrency: usize::from(concurrency),
                wait: wait.then_some(timeout),
                ..Options::default()
            };
            apply_fleet(&src, name, &target, opts, kube)
        }
        Command::Diff {
            source,
            target,
            output: fmt,
            base,
            kube,
        } => {
            let src = open_source(&source)?;
            let loaded = checked(&src, name)?;
            let c = loaded.checked;
            let opts = Options {
                dry_run: true,
                targets: targets(&c, &target)?,
                keep_values: true,
                ..Options::default()
            };
            let (report, old_label) = match &base {
                None => {
                    let state = state_dir(&src, &target.state);
                    let store = LocalStore::open_read_only(&state);
                    let backends = fleet_backends(&c, &src.base, &store, kube_options(&kube))?;
                    let (_, now, failed) = failover(&c, &state, &backends)?;
                    let r = renderer(&c, &failed)?;
                    let orphans = orphans(&c, &store, opts.targets.is_none())?;
                    // What apply would do now: workloads a rollout holds
                    // back stay out.
                    let (report, _) = run_staged(
                        &r,
                        &backends,
                        &orphans,
                        &opts,
                        &staged_ctx(&src, &loaded.revision, &state, now),
                    )?;
                    (report, "live".to_string())
                }
                Some(rev) => {
                    // Two revisions, no cluster: placed as if every cluster
                    // were healthy.
                    let r = renderer(&c, &[])?;
                    let base_state = render_base(&src.input, rev, &c, opts.targets.as_ref())?;
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
                        run_apply(
                            &r,
                            &base_state,
                            &orphans,
                            &apply_meta(&loaded.revision),
                            &opts,
                        )?,
                        rev.clone(),
                    )
                }
            };
            let new_label = if base.is_some() {
                "working-tree"
            } else {
                "desired"
            };
            let sides = canopy::core::diff::Sides {
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
            source,
            state,
            output: fmt,
            kube,
        } => {
            let src = open_source(&source)?;
            let loaded = checked(&src, name)?;
            let c = loaded.checked;
            let state = state_dir(&src, &state);
            let store = LocalStore::open_read_only(&state);
            let opts = Options {
                dry_run: true,
                ..Options::default()
            };
            let backends = fleet_backends(&c, &src.base, &store, kube_options(&kube))?;
            let (_, now, failed) = failover(&c, &state, &backends)?;
            let r = renderer(&c, &failed)?;
            // A workload a rollout holds back is not drift.
            let (report, _) = run_staged(
                &r,
                &backends,
                &[],
                &opts,
                &staged_ctx(&src, &loaded.revision, &state, now),
            )?;
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
            let workloads = canopy::ops::status::workloads(&r, &backends).map_err(|d| {
                print_diags(&d);
                Failure::user(format!("render failed: {}", summary(&d)))
            })?;
            match fmt {
                TextOrJson::Text => stdout(&format!(
                    "{}{}",
                    output::status_text(&lines),
                    output::workloads_text(&workloads)
                )),
                TextOrJson::Json => {
                    let v = serde_json::json!({"clusters": lines, "workloads": workloads});
                    stdout(&(serde_json::to_string_pretty(&v).expect("serializes") + "\n"))
                }
            }
        }
        Command::Watch {
            source,
            target,
            poll,
            resync,
            no_correct_drift,
            prune,
            concurrency,
            force_conflicts,
            max_backoff,
            log_format,
            listen,
            kube,
        } => {
            init_logs(log_format);
            let src = open_source(&source)?;
            let store = LocalStore::open(&state_dir(&src, &target.state))
                .map_err(|e| Failure::io(format!("error: {e}")))?;
            let mut kube = kube_options(&kube);
            kube.force_conflicts = force_conflicts;
            let opts = canopy::watch::WatchOptions {
                poll,
                resync: (!resync.is_zero()).then_some(resync),
                correct_drift: !no_correct_drift,
                apply: Options {
                    prune,
                    concurrency: usize::from(concurrency),
                    ..Options::default()
                },
                clusters: target.clusters.clone(),
                subtrees: target.subtrees.clone(),
                max_backoff,
                debounce: std::time::Duration::from_millis(50),
                fleet_name: name.map(str::to_string),
                kube,
                base: src.base.clone(),
            };
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (tx, rx) = std::sync::mpsc::channel();
            canopy::watch::trigger::on_signals(stop.clone(), tx.clone())
                .map_err(|e| Failure::io(format!("error: cannot handle signals: {e}")))?;
            // Local sources are watched; a remote is polled by the loop.
            let _watcher = match &src.input {
                Input::Dir(dir) => Some(canopy::watch::trigger::watch_paths(
                    dir,
                    canopy::watch::trigger::fleet_path_matters,
                    tx.clone(),
                )),
                Input::Git(repo) => repo.watch_path().map(|p| {
                    canopy::watch::trigger::watch_paths(
                        p,
                        canopy::watch::trigger::git_path_matters,
                        tx.clone(),
                    )
                }),
            }
            .transpose()
            .map_err(|e| Failure::io(format!("error: cannot watch {}: {e}", src.label)))?;
            let metrics = canopy::watch::metrics::Metrics::new();
            let server = match listen {
                Some(addr) => Some(
                    canopy::watch::metrics::serve(addr, metrics.clone(), stop.clone())
                        .map_err(|e| Failure::io(format!("error: cannot listen on {addr}: {e}")))?,
                ),
                None => None,
            };
            tracing::info!(
                source = src.label.as_str(),
                state = %state_dir(&src, &target.state).display(),
                listen = listen.map(|a| a.to_string()).unwrap_or_default(),
                "watching"
            );
            let mut w = canopy::watch::Watch::new(&src.input, &store, opts, metrics);
            w.run(&rx, &stop);
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(h) = server {
                let _ = h.join();
            }
            Ok(())
        }
        Command::Rollout(cmd) => rollout_command(cmd, name),
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
