//! Each command: turn its flags into an operation's arguments, call
//! [`crate::ops`], print what came back, and say which exit code it means.
//! The run sequence itself is not here (it is `ops::Session`).

use crate::state::Record;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::args::{
    AgentCommand, Cli, Command, DiffFormat, KubeArgs, RolloutCommand, SourceArgs, Target,
    TextOrJson, YamlOrJson,
};
use super::exit::{
    git_failure, load_failure, print_diags, summary, Failure, EXIT_CLUSTERS, EXIT_DIFF, EXIT_IO,
};
use super::output;
use super::progress::Ticker;
use crate::backend::kube::KubeOptions;
use crate::core::diag::Diagnostics;
use crate::core::failover::Health;
use crate::core::render::{render_all, render_map};
use crate::core::{explain, schema};
use crate::ops::apply::Options;
use crate::ops::join::{Joiner, Role};
use crate::ops::progress::Progress;
use crate::ops::{Access, FleetSource, Location, OpsError, Selection, Session};
use crate::source::input::{Input, Loaded, PipelineError, SourceError};
use crate::source::remote::{self, RepoSpec};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    let name = cli.fleet_name.as_deref();
    let quiet = cli.quiet;
    match cli.command {
        Command::Validate {
            source,
            output: fmt,
        } => validate(&open(&source)?, name, fmt),
        Command::Tree {
            source,
            output: fmt,
        } => {
            let loaded = load(&open(&source)?, name, Some(Role::Look))?;
            // The fleet as placed with every cluster healthy.
            let r = crate::ops::run::placed_healthy(&loaded.checked)?;
            match fmt {
                TextOrJson::Text => stdout(&output::tree_text(&r)),
                TextOrJson::Json => json_out(&output::tree_json(&r)),
            }
        }
        Command::Token(cmd) => super::joining::token(cmd, name),
        Command::Join(a) => super::joining::join_cmd(a),
        Command::Members(cmd) => super::joining::members(cmd, name),
        Command::Leave { own } => super::joining::leave(own),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "canopy", &mut out);
            stdout(&String::from_utf8_lossy(&out))
        }
        Command::Render {
            source,
            clusters,
            out,
            output: fmt,
            show_secrets,
        } => render(&open(&source)?, name, &clusters, out, fmt, show_secrets),
        Command::Explain {
            mut source,
            workload,
            cluster,
            output: fmt,
        } => {
            let workload = workload_arg(&mut source, workload, "canopy explain fleet-example web")?;
            let src = open(&source)?;
            let c = load(&src, name, Some(Role::Look))?.checked;
            let wi = c
                .fleet
                .workloads
                .iter()
                .position(|w| w.name() == workload)
                .ok_or_else(|| OpsError::unknown_workload(&c, &workload))?;
            let only = cluster
                .as_deref()
                .map(|n| {
                    c.topo
                        .get(n)
                        .ok_or_else(|| OpsError::unknown_cluster(&c, n))
                })
                .transpose()?;
            // Failover as the default state folder records it.
            let health = Health::load(&src.state_dir(None)?).map_err(OpsError::State)?;
            let e = explain::explain(&c, wi, only, &health, std::time::SystemTime::now());
            match fmt {
                TextOrJson::Text => stdout(&output::explain_text(&e)),
                TextOrJson::Json => json_out(&e),
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
            full,
            output: fmt,
            kube,
        } => {
            let mut kube = kube_options(&kube);
            kube.force_conflicts = force_conflicts;
            let opts = Options {
                dry_run,
                prune,
                prune_clusters,
                concurrency: usize::from(concurrency),
                wait: wait.then_some(timeout),
                relay_wait: Some(timeout),
                depends_timeout: timeout,
                skip_settled: !full,
                ..Options::default()
            };
            let src = open(&source)?;
            let shown = Shown { fmt, quiet };
            let role = if dry_run { Role::Look } else { Role::Reconcile };
            let (loaded, unread) = load_members(&src, name, Some(role))?;
            // Without a hub's members, they would look like clusters that
            // left the fleet: never prune on what could not be read.
            if prune_clusters && !unread.is_empty() {
                return Err(Failure::user(format!(
                    "error: --prune-clusters with hub(s) {} unread: their joined clusters would be taken for clusters that left, and pruned\n  help: run again when the hub answers, or without --prune-clusters",
                    unread.join(", ")
                )));
            }
            apply(&src, &loaded, &target, opts, kube, shown)
        }
        Command::Diff {
            source,
            target,
            output: fmt,
            base,
            no_group,
            full,
            kube,
        } => {
            let src = open(&source)?;
            let loaded = load(&src, name, Some(Role::Look))?;
            let selection = selection(&target);
            let (report, old, relays) = match &base {
                None => {
                    let mut s = session(&src, &target.state, Access::Read, kube_options(&kube))?;
                    let ticker = progress_line(&mut s, "diffing", quiet);
                    let got =
                        crate::ops::diff::live_through_relays(&mut s, &loaded, &selection, !full);
                    drop(ticker);
                    let (report, relays) = got?;
                    (report, "live".to_string(), relays)
                }
                Some(rev) => {
                    let (report, warnings) =
                        crate::ops::diff::against_base(&src, &loaded, rev, &selection)?;
                    print_diags(&warnings);
                    (report, rev.clone(), Vec::new())
                }
            };
            let sides = crate::core::diff::Sides {
                old: &old,
                new: if base.is_some() {
                    "working-tree"
                } else {
                    "desired"
                },
            };
            let checked = &loaded.checked;
            let grouped =
                (!no_group).then(|| super::review::review_of(&report, sides, &checked.topo));
            let stages = first_stages(checked, grouped.as_ref());
            let stage_of = |c: &str, w: &str| stages.get(&(c.to_string(), w.to_string())).cloned();
            match (fmt, &grouped) {
                (DiffFormat::Text, None) => stdout(&format!(
                    "{}{}",
                    output::diff_text(&report, sides),
                    output::standings_text(&relays)
                ))?,
                (DiffFormat::Text, Some(r)) => stdout(&format!(
                    "{}{}",
                    super::review::text(&report, r, &stage_of),
                    output::standings_text(&relays)
                ))?,
                (DiffFormat::Json, r) => {
                    let mut v = output::diff_json(&report, sides);
                    v["relays"] = output::standings_json(&relays);
                    if let Some(r) = r {
                        v["review"] = super::review::json(r, &stage_of);
                    }
                    json_out(&v)?
                }
                (DiffFormat::Markdown, None) => stdout(&format!(
                    "{}{}",
                    output::diff_markdown(&report, sides),
                    output::standings_text(&relays)
                ))?,
                (DiffFormat::Markdown, Some(r)) => stdout(&format!(
                    "{}{}",
                    super::review::markdown(&report, r, &stage_of),
                    output::standings_text(&relays)
                ))?,
            }
            if report.totals().failed > 0 {
                return Err(Failure::silent(EXIT_CLUSTERS));
            }
            if report.differs() || relays.iter().any(|r| r.differs()) {
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
            let src = open(&source)?;
            let loaded = load(&src, name, Some(Role::Look))?;
            let mut s = session(&src, &state, Access::Read, kube_options(&kube))?;
            let st = crate::ops::status::status(&mut s, &loaded)?;
            match fmt {
                TextOrJson::Text => stdout(&format!(
                    "{}{}",
                    output::status_text(&st.clusters),
                    output::workloads_text(&st.workloads)
                )),
                TextOrJson::Json => json_out(&st),
            }?;
            // The report is out; a state file canopy cannot read is still a
            // state error (exit 3), not a healthy fleet.
            if st.clusters.iter().any(|l| l.record_unreadable) {
                return Err(Failure::silent(EXIT_IO));
            }
            Ok(())
        }
        Command::Watch {
            source,
            target,
            poll,
            resync,
            no_correct_drift,
            join_poll,
            prune,
            concurrency,
            force_conflicts,
            max_backoff,
            log_format,
            listen,
            kube,
        } => {
            init_logs(log_format);
            let src = open(&source)?;
            let mut kube = kube_options(&kube);
            kube.force_conflicts = force_conflicts;
            let opts = crate::watch::WatchOptions {
                poll,
                resync: (!resync.is_zero()).then_some(resync),
                correct_drift: !no_correct_drift,
                apply: Options {
                    prune,
                    concurrency: usize::from(concurrency),
                    ..Options::default()
                },
                selection: selection(&target),
                max_backoff,
                debounce: std::time::Duration::from_millis(50),
                fleet_name: name.map(str::to_string),
                join_poll: (!join_poll.is_zero()).then_some(join_poll),
                base: src.base.clone(),
            };
            watch(&src, &target.state, opts, kube, listen, quiet)
        }
        Command::Agent {
            command:
                Some(AgentCommand::Joined {
                    own,
                    poll,
                    resync,
                    once,
                    log_format,
                    output: fmt,
                    kube,
                }),
            ..
        } => {
            init_logs(log_format);
            super::joining::agent_joined(own, poll, resync, once, fmt, kube_options(&kube))
        }
        Command::Agent {
            command:
                Some(AgentCommand::Manifests {
                    cluster,
                    image,
                    replicas,
                    output: fmt,
                }),
            ..
        } => {
            let objs = crate::agent::manifests::objects(&crate::agent::manifests::Spec {
                relay: &cluster,
                image: &image,
                replicas,
            });
            match fmt {
                YamlOrJson::Yaml => {
                    let docs: Vec<String> =
                        objs.iter().map(crate::core::yaml_out::to_yaml).collect();
                    stdout(&format!("---\n{}", docs.join("---\n")))
                }
                YamlOrJson::Json => json_out(&objs),
            }
        }
        Command::Agent {
            command: None,
            run: a,
        } => {
            init_logs(a.log_format);
            let mut kube = kube_options(&a.kube);
            kube.force_conflicts = a.force_conflicts;
            let home = match a.local {
                Some(dir) => crate::agent::Home::Local(dir),
                None => crate::agent::Home::Kube(crate::core::model::Connection {
                    kubeconfig: a.kubeconfig,
                    context: a.context,
                    ..Default::default()
                }),
            };
            let cfg = crate::agent::Config {
                relay: a.cluster.unwrap_or_default(),
                home,
                state: a.state.unwrap_or_default(),
                base: std::env::current_dir().unwrap_or_default(),
                kube,
                identity: a.identity.unwrap_or_else(default_identity),
                lease: a.lease_duration,
                apply: Options {
                    prune: a.prune,
                    concurrency: usize::from(a.concurrency),
                    // A running agent waits at most a third of its
                    // lease for the relays below, so that the wait never
                    // costs it the lease; the next poll folds in what came
                    // later.
                    relay_wait: Some(if a.once {
                        a.relay_timeout
                    } else {
                        a.relay_timeout.min(a.lease_duration / 3)
                    }),
                    ..Options::default()
                },
            };
            let follow = crate::agent::Follow {
                poll: a.poll,
                renew: (a.lease_duration / 3).max(std::time::Duration::from_millis(100)),
                resync: a.resync,
            };
            agent(cfg, a.once, follow, a.output)
        }
        Command::Rollout(cmd) => rollout(cmd, name, quiet),
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
                    json_out(&v)
                }
            }
        }
    }
}

/// Opens the fleet source the flags name.
pub(super) fn open(a: &SourceArgs) -> Result<FleetSource, Failure> {
    let at = match (&a.dir, &a.repo) {
        (Some(dir), None) => Location::Dir(dir.clone()),
        (None, Some(url)) => Location::Repo(RepoSpec {
            url: url.clone(),
            reference: a.reference.clone().unwrap_or_default(),
            path: a.path.clone().unwrap_or_default(),
            auth: remote::Auth {
                token_env: a.git_token_env.clone(),
                ssh_key: a.ssh_key.clone(),
            },
        }),
        (Some(_), Some(_)) => {
            return Err(Failure::user(
                "error: pass a fleet folder or --repo, not both",
            ))
        }
        (None, None) => {
            return Err(Failure::user(
                "error: pass a fleet folder, or --repo URL --ref REF",
            ))
        }
    };
    Ok(FleetSource::open(at)?)
}

/// Loads and checks the fleet, printing its warnings. With a `role`, the
/// members that joined the fleet's hubs are part of it (a reconciling
/// command answers their hubs' join requests first, and says what it did
/// on stderr).
fn load(src: &FleetSource, name: Option<&str>, role: Option<Role>) -> Result<Loaded, Failure> {
    load_members(src, name, role).map(|(l, _)| l)
}

/// [`load`], with the hubs whose members could not be read.
fn load_members(
    src: &FleetSource,
    name: Option<&str>,
    role: Option<Role>,
) -> Result<(Loaded, Vec<String>), Failure> {
    let mut joiner = match role {
        Some(r) => Some(
            Joiner::new(src.base.clone(), r)
                .map_err(|e| Failure::io(format!("error: cannot start the runtime: {e}")))?,
        ),
        None => None,
    };
    let mut events = Vec::new();
    let state = src.state_dir(None)?;
    // Helm charts render for the clusters: an apply reads them, every
    // other command renders for what the last apply read.
    let mut observer =
        crate::ops::capabilities::Observer::new(src.base.clone(), KubeOptions::default());
    let read = match role {
        Some(Role::Reconcile) => crate::ops::capabilities::Read::Live {
            fresh_for: std::time::Duration::ZERO,
            keep: true,
        },
        _ => crate::ops::capabilities::Read::Record,
    };
    let loaded = src.load_with(name, &mut |fleet| {
        let mut diags = match joiner.as_mut() {
            Some(j) => {
                let (diags, evs) = j.gather(fleet);
                events.extend(evs);
                diags
            }
            None => Diagnostics::default(),
        };
        diags.extend(observer.observe(fleet, &state, read, None));
        diags
    })?;
    for e in &events {
        eprintln!("{e}");
    }
    print_diags(&loaded.warnings);
    // Commands that do not read clusters divide by the live capacity the
    // last run recorded; a run that reads clusters reads it afresh.
    crate::ops::capacity::from_record(&loaded.checked, &state);
    crate::ops::calm::previous(&loaded.checked, &state);
    let unread = joiner.map(|j| j.unread().to_vec()).unwrap_or_default();
    Ok((loaded, unread))
}

fn session<'i>(
    src: &'i FleetSource,
    state: &Option<PathBuf>,
    access: Access,
    kube: KubeOptions,
) -> Result<Session<'i>, Failure> {
    Ok(Session::open(
        &src.input,
        src.state_dir(state.as_ref())?,
        access,
        src.base.clone(),
        kube,
    )?)
}

/// Counts the session's runs and draws them on a terminal until the
/// returned ticker is dropped.
fn progress_line(s: &mut Session<'_>, verb: &'static str, quiet: bool) -> Option<Ticker> {
    let progress = Arc::new(Progress::default());
    s.progress = Some(progress.clone());
    Ticker::start(&progress, verb, quiet)
}

fn selection(t: &Target) -> Selection {
    Selection {
        clusters: t.clusters.clone(),
        subtrees: t.subtrees.clone(),
    }
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

pub(super) fn stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`canopy render | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::io(format!("error: writing output: {e}"))),
    }
}

pub(super) fn json_out<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    stdout(&(serde_json::to_string_pretty(v).expect("serializes") + "\n"))
}

/// `canopy validate`: every problem at once, placement included.
fn validate(src: &FleetSource, name: Option<&str>, fmt: TextOrJson) -> Result<(), Failure> {
    // Helm charts render for the clusters as the last apply read them.
    let known = crate::ops::capabilities::recorded(&src.state_dir(None)?);
    let (checked, diags) =
        crate::source::input::check_all(&src.input, name, &known).map_err(|e| match e {
            SourceError::Pipeline(PipelineError::Load(e)) => load_failure(e),
            SourceError::Pipeline(PipelineError::Invalid(_)) => {
                unreachable!("check_all lists problems instead")
            }
            SourceError::Git(e) => git_failure(e),
        })?;
    match fmt {
        TextOrJson::Text => {
            print_diags(&diags);
            if let Some(c) = checked.filter(|_| !diags.has_errors()) {
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
            json_out(&serde_json::json!({"valid": !diags.has_errors(), "diagnostics": diags.0}))?
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

/// `canopy render`: every cluster (or those named), printed or written as
/// one folder per cluster. Nothing is printed or written unless every
/// cluster rendered.
fn render(
    src: &FleetSource,
    name: Option<&str>,
    clusters: &[String],
    out: Option<PathBuf>,
    fmt: YamlOrJson,
    show_secrets: bool,
) -> Result<(), Failure> {
    let c = load(src, name, None)?.checked;
    let only: Option<Vec<usize>> = if clusters.is_empty() {
        None
    } else {
        Some(
            clusters
                .iter()
                .map(|n| {
                    c.topo
                        .get(n)
                        .ok_or_else(|| OpsError::unknown_cluster(&c, n))
                })
                .collect::<Result<_, _>>()?,
        )
    };
    // The fleet as placed with every cluster healthy.
    let r = crate::ops::run::placed_healthy(&c)?;
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
        return json_out(&output::render_json(&c, &rf));
    }
    // Each cluster becomes text as soon as it is rendered, in parallel.
    let texts = render_map(&r, only.as_deref(), |_, mut objs| {
        if !show_secrets {
            crate::core::render::mask_objects(&mut objs);
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
            let done = output::write_out_dir(&c, &texts, &dir, json).map_err(|e| match e {
                output::OutDirError::NotOurs { .. } => Failure::user(format!(
                    "error: {e}\n  help: choose a new or empty folder; canopy only replaces folders it wrote"
                )),
                output::OutDirError::Io { .. } => Failure::io(format!("error: {e}")),
            })?;
            eprintln!(
                "{}: {} cluster file(s) written, {} unchanged, {} stale file(s) or folder(s) removed",
                dir.display(),
                done.written,
                done.unchanged,
                done.removed
            );
            Ok(())
        }
        None => stdout(&output::render_yaml(&c, &texts)),
    }
}

/// For a grouped diff: the rollout stage (index, name) each changed
/// cluster is in, per workload with a rollout; empty when no workload in
/// the review has one (no placement is computed then).
fn first_stages(
    checked: &crate::core::validate::Checked,
    review: Option<&crate::core::review::Review>,
) -> std::collections::BTreeMap<(String, String), (usize, String)> {
    let mut out = std::collections::BTreeMap::new();
    let Some(review) = review else {
        return out;
    };
    let fleet = &checked.fleet;
    let rolled: std::collections::BTreeSet<&str> = review
        .workloads
        .iter()
        .map(|w| w.workload.as_str())
        .filter(|w| {
            fleet
                .workloads
                .iter()
                .any(|x| x.name() == *w && fleet.rollout_of(x).is_some())
        })
        .collect();
    if rolled.is_empty() {
        return out;
    }
    let r = crate::core::render::Renderer::new(checked);
    for p in crate::ops::rollout::plans(&r) {
        if !rolled.contains(p.name.as_str()) {
            continue;
        }
        for (c, s) in p.assigned.stage.iter().enumerate() {
            if let Some(s) = s {
                out.insert(
                    (checked.topo.name(c).to_string(), p.name.clone()),
                    (*s, p.spec.stage_name(*s)),
                );
            }
        }
    }
    out
}

/// `canopy apply` (and what `rollout continue` runs when no watch holds
/// the state folder).
/// How a command's report is shown: its format, and whether a progress
/// line may be drawn.
#[derive(Clone, Copy)]
struct Shown {
    fmt: TextOrJson,
    quiet: bool,
}

fn apply(
    src: &FleetSource,
    loaded: &Loaded,
    target: &Target,
    opts: Options,
    kube: KubeOptions,
    shown: Shown,
) -> Result<(), Failure> {
    let access = if opts.dry_run {
        Access::Read
    } else {
        Access::Write
    };
    let dry_run = opts.dry_run;
    let mut s = session(src, &target.state, access, kube)?;
    let ticker = progress_line(&mut s, "applying", shown.quiet);
    let run = s.run(loaded, &selection(target), opts, true);
    drop(ticker);
    let run = run?;
    // A dry run also says each distinct change once, with where it lands.
    let grouped = dry_run.then(|| {
        super::review::review_of(&run.report, crate::core::diff::LIVE, &loaded.checked.topo)
    });
    let none = |_: &str, _: &str| None;
    match shown.fmt {
        TextOrJson::Text => stdout(&format!(
            "{}{}{}{}",
            output::apply_text(&run.report, dry_run),
            grouped
                .as_ref()
                .map(super::review::dry_run_text)
                .unwrap_or_default(),
            output::relays_text(&run.relays),
            output::rollout_events_text(&run.events)
        ))?,
        TextOrJson::Json => {
            let mut v = output::apply_json(&run.report, &run.events, dry_run);
            v["relays"] = output::relays_json(&run.relays);
            if let Some(r) = &grouped {
                v["review"] = super::review::json(r, &none);
            }
            json_out(&v)?
        }
    }
    if let Some(e) = run.unrecorded {
        return Err(e.into());
    }
    if run.failed() {
        return Err(Failure::silent(EXIT_CLUSTERS));
    }
    Ok(())
}

/// `canopy watch`: signals and file triggers, `/metrics`, then the loop.
fn watch(
    src: &FleetSource,
    state: &Option<PathBuf>,
    opts: crate::watch::WatchOptions,
    kube: KubeOptions,
    listen: Option<std::net::SocketAddr>,
    quiet: bool,
) -> Result<(), Failure> {
    use crate::watch::{metrics, trigger};
    let state = src.state_dir(state.as_ref())?;
    let session = Session::open_lenient(
        &src.input,
        state.clone(),
        Access::Write,
        src.base.clone(),
        kube,
    )?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    trigger::on_signals(stop.clone(), tx.clone())
        .map_err(|e| Failure::io(format!("error: cannot handle signals: {e}")))?;
    // Local sources are watched; a remote is polled by the loop.
    let _watcher = match &src.input {
        Input::Dir(dir) => Some(trigger::watch_paths(
            dir,
            trigger::fleet_path_matters,
            tx.clone(),
        )),
        Input::Git(repo) => repo
            .watch_path()
            .map(|p| trigger::watch_paths(p, trigger::git_path_matters, tx.clone())),
    }
    .transpose()
    .map_err(|e| Failure::io(format!("error: cannot watch {}: {e}", src.label)))?;
    let m = metrics::Metrics::new();
    let server = match listen {
        Some(addr) => Some(
            metrics::serve(addr, m.clone(), stop.clone())
                .map_err(|e| Failure::io(format!("error: cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    tracing::info!(
        source = src.label.as_str(),
        state = %state.display(),
        listen = listen.map(|a| a.to_string()).unwrap_or_default(),
        "watching"
    );
    // The first round reconciles every cluster: on a terminal it shows
    // how far it is (the round's log lines come after it).
    let progress = Arc::new(Progress::default());
    let ticker = Ticker::start(&progress, "first round", quiet);
    let mut w = crate::watch::Watch::new(session, opts, m).first_round_progress(progress);
    w.run(&rx, &stop);
    drop(ticker);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(h) = server {
        let _ = h.join();
    }
    Ok(())
}

/// This replica's default name in the Lease: the host and the pid, as
/// client-go's leader election names replicas.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "canopy".into());
    format!("{host}_{}", std::process::id())
}

/// `canopy agent`: one round (`--once`), or rounds until a signal.
fn agent(
    cfg: crate::agent::Config,
    once: bool,
    follow: crate::agent::Follow,
    fmt: TextOrJson,
) -> Result<(), Failure> {
    use crate::agent::{Agent, Round};
    let mut a = Agent::open(cfg)?;
    if once {
        let round = a.round_once();
        match fmt {
            TextOrJson::Text => stdout(&output::agent_round_text(&round))?,
            TextOrJson::Json => json_out(&output::agent_round_json(&round))?,
        }
        return match round {
            Round::Standby { .. } | Round::NoHandoff => Ok(()),
            Round::Reconciled { report, .. }
                if report.applied.is_some() && report.refused.is_none() =>
            {
                Ok(())
            }
            Round::Reconciled { .. } => Err(Failure::silent(EXIT_CLUSTERS)),
            Round::Failed(_) => Err(Failure::silent(EXIT_IO)),
        };
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, _rx) = std::sync::mpsc::channel();
    crate::watch::trigger::on_signals(stop.clone(), tx)
        .map_err(|e| Failure::io(format!("error: cannot handle signals: {e}")))?;
    a.cancel_on(stop.clone());
    a.follow(&follow, &stop);
    Ok(())
}

fn rollout(cmd: RolloutCommand, name: Option<&str>, quiet: bool) -> Result<(), Failure> {
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
            let src = open(&source)?;
            let loaded = load(&src, name, Some(Role::Look))?;
            let mut s = session(&src, &state, Access::Read, KubeOptions::default())?;
            let rollouts = s.rollout_records(&loaded.checked)?;
            let v = crate::ops::rollout::status(&loaded, rollouts, &workload)?;
            match fmt {
                TextOrJson::Text => stdout(&output::rollout_text(&v)),
                TextOrJson::Json => json_out(&v),
            }
        }
        RolloutCommand::Continue {
            mut source,
            workload,
            state,
            concurrency,
            output: fmt,
            kube,
        } => {
            let workload = workload_arg(
                &mut source,
                workload,
                "canopy rollout continue fleet-example web",
            )?;
            let src = open(&source)?;
            let loaded = load(&src, name, Some(Role::Look))?;
            let requested = {
                let mut s = session(&src, &state, Access::Read, kube_options(&kube))?;
                let rollouts = s.rollout_records(&loaded.checked)?;
                crate::ops::rollout::request_continue(
                    &loaded,
                    &src.state_dir(state.as_ref())?,
                    rollouts,
                    &workload,
                )?
            };
            let state = src.state_dir(state.as_ref())?;
            match requested {
                Some(pid) => match fmt {
                    TextOrJson::Text => stdout(&format!(
                        "continue of {workload} requested; canopy watch (pid {pid}) goes on with it\n"
                    )),
                    TextOrJson::Json => {
                        json_out(&serde_json::json!({"requested": workload, "watchPid": pid}))
                    }
                },
                None => {
                    let target = Target {
                        clusters: Vec::new(),
                        subtrees: Vec::new(),
                        state: Some(state),
                    };
                    let opts = Options {
                        concurrency: usize::from(concurrency),
                        ..Options::default()
                    };
                    let shown = Shown { fmt, quiet };
                    apply(&src, &loaded, &target, opts, kube_options(&kube), shown)
                }
            }
        }
    }
}

/// The workload named on a command line where, with `--repo`, it is the
/// only positional argument.
fn workload_arg(
    source: &mut SourceArgs,
    workload: Option<String>,
    example: &str,
) -> Result<String, Failure> {
    second_arg(source, workload, "the workload", example)
}

/// The positional argument after the fleet folder (a workload, a token
/// id, a member), which with `--repo` is the only one, and so lands in the
/// folder's place.
pub(super) fn second_arg(
    source: &mut SourceArgs,
    value: Option<String>,
    what: &str,
    example: &str,
) -> Result<String, Failure> {
    match (value, &source.repo) {
        (Some(w), _) => Ok(w),
        (None, Some(_)) => source
            .dir
            .take()
            .map(|d| d.to_string_lossy().into_owned())
            .ok_or_else(|| Failure::user(format!("error: name {what}"))),
        (None, None) => Err(Failure::user(format!(
            "error: name {what}, e.g. `{example}`"
        ))),
    }
}

/// Logs of `canopy watch`, on stderr: text, or one JSON object a line.
pub(super) fn init_logs(format: super::args::LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    match format {
        super::args::LogFormat::Text => builder.init(),
        super::args::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
