//! Printers for `tree`, `render`, `explain` and diagnostics: text, YAML and
//! JSON, kept apart from the logic that computes what they print. Output is
//! deterministic: clusters in tree order, objects in apply order, map keys
//! sorted.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::core::explain::Explanation;
use crate::core::render::{Rendered, RenderedFleet, Renderer};
use crate::core::select::taint_text;
use crate::core::validate::Checked;

/// `canopy tree`: the forest with labels, taints and the workloads landing on
/// each cluster (`web 3/12` = 3 of a Divided workload's 12 replicas).
pub fn tree_text(r: &Renderer<'_>) -> String {
    let checked = r.checked;
    let topo = &checked.topo;
    let fleet = &checked.fleet;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fleet {}: {} clusters, {} workloads, {} overrides",
        fleet.name,
        topo.len(),
        fleet.workloads.len(),
        fleet.overrides.len()
    );
    let roots = topo.roots();
    let by = crate::core::relay::reconcilers(checked);
    for (i, &root) in roots.iter().enumerate() {
        tree_node(r, &by, root, "", i + 1 == roots.len(), true, &mut out);
    }
    // Which tenant owns which workloads (a fleet without tenants: nothing).
    for (t, tenant) in fleet.tenants.iter().enumerate() {
        let owned: Vec<&str> = (0..fleet.workloads.len())
            .filter(|&wi| checked.tenancy.owner[wi] == Some(t))
            .map(|wi| fleet.workloads[wi].name())
            .collect();
        let _ = writeln!(
            out,
            "tenant {} ({}): {}",
            tenant.name(),
            tenant.source.file,
            if owned.is_empty() {
                "no workloads".to_string()
            } else {
                owned.join(", ")
            }
        );
    }
    out
}

/// `canopy tree -o json`: the fleet's clusters in tree order (each with
/// its parent and depth, so a script needs no text parsing), with the
/// workloads placed on each as if every cluster were healthy.
pub fn tree_json(r: &Renderer<'_>) -> Value {
    let checked = r.checked;
    let topo = &checked.topo;
    let fleet = &checked.fleet;
    let reconcilers = crate::core::relay::reconcilers(checked);
    let clusters: Vec<Value> = topo
        .preorder()
        .iter()
        .map(|&c| {
            let cl = checked.cluster(c);
            let workloads: Vec<Value> = r
                .workloads_on(c)
                .into_iter()
                .map(|(wi, reps)| {
                    let mut w = json!({"name": fleet.workloads[wi].name()});
                    if let Some(t) = checked.tenancy.owner[wi] {
                        w["tenant"] = json!(fleet.tenants[t].name());
                    }
                    if let Some(n) = reps {
                        w["replicas"] = json!(n);
                        w["total"] = json!(checked.facts[wi].total.unwrap_or(0));
                    }
                    w
                })
                .collect();
            json!({
                "name": cl.name(),
                "parent": topo.parent(c).map(|p| topo.name(p)),
                "depth": topo.depth(c),
                "labels": cl.meta.labels,
                "taints": cl.spec.taints.iter().map(taint_text).collect::<Vec<_>>(),
                "kubernetes": cl.spec.connection.is_some(),
                "relay": cl.spec.relay.is_some(),
                "joined": crate::core::join::is_joined(cl),
                "reconciledBy": reconcilers[c].map(|r| topo.name(r)),
                "workloads": workloads,
            })
        })
        .collect();
    json!({
        "fleet": fleet.name,
        "workloads": fleet.workloads.len(),
        "overrides": fleet.overrides.len(),
        "clusters": clusters,
    })
}

/// One cluster of `tree`, then its children. `by` is each cluster's
/// reconciling relay ([`crate::core::relay::reconcilers`]).
fn tree_node(
    r: &Renderer<'_>,
    by: &[Option<usize>],
    c: usize,
    prefix: &str,
    last: bool,
    top: bool,
    out: &mut String,
) {
    let checked = r.checked;
    let topo = &checked.topo;
    let cl = checked.cluster(c);
    let (branch, cont) = match (top, last) {
        (true, _) => ("", ""),
        (false, true) => ("└── ", "    "),
        (false, false) => ("├── ", "│   "),
    };
    let mut head = format!("{prefix}{branch}{}", cl.name());
    if !cl.meta.labels.is_empty() {
        let labels: Vec<String> = cl
            .meta
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(head, "  [{}]", labels.join(", "));
    }
    for t in &cl.spec.taints {
        let _ = write!(head, "  taint {}", taint_text(t));
    }
    if crate::core::join::is_joined(cl) {
        head.push_str("  (joined)");
    } else if cl.spec.connection.is_some() {
        head.push_str("  (kubeconfig)");
    }
    if cl.spec.relay.is_some() {
        head.push_str("  (relay: reconciles its subtree)");
    }
    if let Some(relay) = by[c] {
        let _ = write!(head, "  via relay {}", topo.name(relay));
    }
    let _ = writeln!(out, "{head}");
    let child_prefix = format!("{prefix}{cont}");
    let kids = topo.children(c);
    let bar = if kids.is_empty() { "    " } else { "│   " };
    let ws: Vec<String> = r
        .workloads_on(c)
        .into_iter()
        .map(|(wi, reps)| {
            let name = checked.fleet.workloads[wi].name();
            match reps {
                Some(n) => {
                    // Under a capacity bound, a cluster that holds all that
                    // fits in it is full: more goes to its siblings.
                    let full = r.placements[wi].as_ref().is_some_and(|p| {
                        n > 0
                            && crate::core::schedule::bound_of(
                                checked,
                                &checked.fleet.workloads[wi],
                            )
                            .capacity
                            && u64::from(n) >= p.weight[c]
                    });
                    let mark = if full { " (full)" } else { "" };
                    format!("{name} {n}/{}{mark}", checked.facts[wi].total.unwrap_or(0))
                }
                None => name.to_string(),
            }
        })
        .collect();
    let list = if ws.is_empty() {
        "(none)".to_string()
    } else {
        ws.join(", ")
    };
    let _ = writeln!(out, "{child_prefix}{bar}workloads: {list}");
    for (i, &k) in kids.iter().enumerate() {
        tree_node(r, by, k, &child_prefix, i + 1 == kids.len(), false, out);
    }
}

/// Objects as a multi-document YAML stream.
pub fn objects_yaml(objs: &[Rendered]) -> String {
    let mut out = String::new();
    for o in objs {
        out.push_str("---\n");
        out.push_str(&crate::core::yaml_out::to_yaml(&o.value));
    }
    out
}

/// Objects as a pretty JSON array.
pub fn objects_json(objs: &[Rendered]) -> String {
    let v: Vec<&Value> = objs.iter().map(|o| &o.value).collect();
    serde_json::to_string_pretty(&v).expect("JSON values serialize") + "\n"
}

/// One cluster's rendered objects as text, and how many there are.
#[derive(Debug, Clone)]
pub struct ClusterText {
    pub objects: usize,
    pub text: String,
}

/// `canopy render -o yaml`: every cluster's YAML (from [`objects_yaml`]),
/// each introduced by a comment naming the cluster and its path in the tree.
pub fn render_yaml(checked: &Checked, clusters: &[(usize, ClusterText)]) -> String {
    let mut out = String::new();
    for (c, ct) in clusters {
        let _ = writeln!(
            out,
            "# cluster {} ({}): {} objects",
            checked.topo.name(*c),
            checked.topo.path(*c).join("/"),
            ct.objects
        );
        out.push_str(&ct.text);
    }
    out
}

/// `canopy render -o json`: `{fleet, clusters: [{name, path, objects}]}`.
pub fn render_json(checked: &Checked, rf: &RenderedFleet) -> Value {
    json!({
        "fleet": checked.fleet.name,
        "clusters": rf.clusters.iter().map(|(c, objs)| json!({
            "name": checked.topo.name(*c),
            "path": checked.topo.path(*c),
            "objects": objs.iter().map(|o| o.value.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Marker file that tells `render --out` a folder is its own to replace.
pub const OUT_MARKER: &str = ".canopy-render";

#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    #[error("{dir} exists and was not written by `canopy render --out`; refusing to replace it")]
    NotOurs { dir: String },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What `render --out` did to the folder.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutDirWritten {
    /// Cluster files written (new or changed).
    pub written: usize,
    /// Cluster files whose bytes were already right: not touched.
    pub unchanged: usize,
    /// Files and folders removed (clusters that left the fleet, the other
    /// format's files).
    pub removed: usize,
}

/// `canopy render --out DIR`: one folder per cluster, nested like the tree
/// (`DIR/global/eu/eu-west-1/manifests.yaml`). A folder a previous render
/// wrote is brought up to date in place: a file whose bytes are already
/// right is not rewritten (its mtime stays, so tools that watch the folder
/// see only what changed), and what the render no longer has (a cluster
/// that left, the other format's file) is removed. Any other non-empty
/// folder is left untouched and reported.
pub fn write_out_dir(
    checked: &Checked,
    clusters: &[(usize, ClusterText)],
    dir: &Path,
    json: bool,
) -> Result<OutDirWritten, OutDirError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| OutDirError::Io { path, source }
    };
    if dir.exists() {
        let nonempty = std::fs::read_dir(dir).map_err(io(dir))?.next().is_some();
        if nonempty && !dir.join(OUT_MARKER).exists() {
            return Err(OutDirError::NotOurs {
                dir: dir.display().to_string(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let marker = dir.join(OUT_MARKER);
    let marker_text = "written by canopy render --out; kept up to date in place on every run\n";
    if std::fs::read(&marker).ok().as_deref() != Some(marker_text.as_bytes()) {
        std::fs::write(&marker, marker_text).map_err(io(&marker))?;
    }
    let name = if json {
        "manifests.json"
    } else {
        "manifests.yaml"
    };
    let mut done = OutDirWritten::default();
    let mut wanted: std::collections::BTreeSet<std::path::PathBuf> = Default::default();
    wanted.insert(marker);
    for (c, body) in clusters {
        let mut folder = dir.to_path_buf();
        for part in checked.topo.path(*c) {
            folder.push(part);
            wanted.insert(folder.clone());
        }
        let file = folder.join(name);
        if std::fs::read(&file).ok().as_deref() == Some(body.text.as_bytes()) {
            done.unchanged += 1;
        } else {
            std::fs::create_dir_all(&folder).map_err(io(&folder))?;
            std::fs::write(&file, &body.text).map_err(io(&file))?;
            done.written += 1;
        }
        wanted.insert(file);
    }
    // What the render no longer has; deepest first, so a folder is empty
    // by the time it is looked at.
    let mut found: Vec<walkdir::DirEntry> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .contents_first(true)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| OutDirError::Io {
            path: dir.display().to_string(),
            source: e.into(),
        })?;
    found.retain(|e| !wanted.contains(e.path()));
    for e in found {
        let path = e.path();
        if e.file_type().is_dir() {
            std::fs::remove_dir(path).map_err(io(path))?;
        } else {
            std::fs::remove_file(path).map_err(io(path))?;
        }
        done.removed += 1;
    }
    Ok(done)
}

/// `canopy explain` as text.
pub fn explain_text(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "workload {} ({})", e.workload, e.source);
    if let Some(t) = &e.tenant {
        let _ = writeln!(out, "tenant: {t}");
    }
    if let Some(from) = &e.manifests_from {
        let _ = writeln!(out, "manifests: {from}");
    }
    let _ = write!(out, "replicas: {}", e.mode);
    if let Some((t, from)) = &e.total {
        let _ = write!(out, ", total {t} from {from}");
    }
    if let Some(w) = &e.weights {
        let _ = write!(out, ", weights {w}");
    }
    out.push('\n');
    if let Some(calm) = &e.calm {
        let _ = writeln!(out, "{calm}");
    }
    if let Some(err) = &e.error {
        let _ = writeln!(out, "error: {err}");
    }
    out.push_str("\nclusters:\n");
    let width = e
        .clusters
        .iter()
        .map(|c| c.cluster.len() + 2 * c.depth)
        .max()
        .unwrap_or(0);
    for c in &e.clusters {
        let name = format!("{}{}", "  ".repeat(c.depth), c.cluster);
        let mark = if c.chosen { "chosen    " } else { "not chosen" };
        let _ = write!(out, "  {name:<width$}  {mark}  {}", c.reason);
        if let Some(w) = c.weight {
            let _ = write!(out, "; weight {w}");
        }
        if let Some(r) = c.replicas {
            let _ = write!(out, "; replicas {r}");
        }
        if c.joined {
            out.push_str(" (joined)");
        }
        out.push('\n');
    }
    if !e.rendered_for.is_empty() {
        out.push_str("\nhelm renders for:\n");
        for (cluster, caps) in &e.rendered_for {
            let _ = writeln!(out, "  {cluster}: {caps}");
        }
    }
    if !e.health_rules.is_empty() {
        out.push_str("\nhealth judged by rules written for the kind (before canopy's own):\n");
        for r in &e.health_rules {
            let _ = writeln!(out, "  {r}");
        }
    }
    if !e.steps.is_empty() {
        out.push_str(
            "\ndivision, top-down (Webster: next replica to the highest weight/(2·replicas+1)):\n",
        );
        for s in &e.steps {
            let parts: Vec<String> = s
                .parties
                .iter()
                .map(|(label, w, n)| format!("{label} (weight {w}) → {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  {} divides {}: {}",
                s.node,
                s.share,
                parts.join(", ")
            );
        }
    }
    out
}

// ---------------------------------------------------------------- apply, diff, status

use crate::core::diff::{unified, Change, ClusterChanges, Sides};
use crate::ops::apply::{Outcome, Report};
use crate::ops::status::StatusLine;

fn counts_text(c: &ClusterChanges) -> String {
    let (a, u, d) = c.counts();
    format!("+{a} ~{u} -{d}")
}

fn failed_text(error: &str, changed: &[crate::core::model::ObjectKey]) -> String {
    let changed = if changed.is_empty() {
        "none".to_string()
    } else {
        changed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // A multi-line error (a help line, a list of objects) is indented
    // under its cluster like the rest of the report.
    let error = error
        .lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n    ");
    format!("FAILED: {error}\n    objects changed before the failure: {changed}")
}

/// `canopy apply`: one line per cluster in tree order, then the totals.
pub fn apply_text(report: &Report, dry_run: bool) -> String {
    let mut out = String::new();
    let verb = if dry_run { "would apply" } else { "applied" };
    for c in &report.clusters {
        let pad = "  ".repeat(c.depth);
        let line = match &c.outcome {
            Outcome::Changed(ch) => format!("{verb} {}", counts_text(ch)),
            Outcome::Unchanged(_) => "no changes".to_string(),
            Outcome::Failed { error, changed } => {
                failed_text(&error.to_string(), changed).replace("\n    ", &format!("\n{pad}    "))
            }
            Outcome::Skipped { reason } => format!("skipped: {reason}"),
        };
        let _ = writeln!(out, "{pad}{}: {line}", c.cluster);
        if let Outcome::Changed(ch) = &c.outcome {
            for change in &ch.changes {
                let (sign, key, note) = match change {
                    Change::Create { key, .. } => ('+', key, String::new()),
                    Change::Update { key, replace, .. } if !replace.is_empty() => (
                        '~',
                        key,
                        format!(
                            " ({} by delete and create: immutable {})",
                            if dry_run {
                                "would be replaced"
                            } else {
                                "replaced"
                            },
                            replace.join(", ")
                        ),
                    ),
                    Change::Update { key, .. } => ('~', key, String::new()),
                    Change::Delete { key, .. } => ('-', key, String::new()),
                };
                let _ = writeln!(out, "{pad}  {sign} {key}{note}");
            }
        }
        if let Outcome::Changed(ch) | Outcome::Unchanged(ch) = &c.outcome {
            for (w, why) in &ch.pending {
                let _ = writeln!(out, "{pad}  … workload {w} pending: {why}");
            }
        }
    }
    for o in &report.orphans {
        let line = match &o.outcome {
            Outcome::Changed(ch) => format!("{verb} {} (cluster left the fleet)", counts_text(ch)),
            Outcome::Unchanged(_) => "left the fleet; holds nothing canopy owns".to_string(),
            Outcome::Failed { error, changed } => failed_text(&error.to_string(), changed),
            Outcome::Skipped { reason } => reason.to_string(),
        };
        let _ = writeln!(out, "{} (not in the fleet): {line}", o.cluster);
    }
    let t = report.totals();
    if t.changed == 0 && t.failed == 0 && t.skipped == 0 {
        let _ = writeln!(out, "no changes: {} cluster(s) in sync", t.unchanged);
    } else {
        let _ = writeln!(
            out,
            "{verb}: {} created, {} updated, {} deleted in {} cluster(s); {} unchanged, {} failed, {} skipped",
            t.created, t.updated, t.deleted, t.changed, t.unchanged, t.failed, t.skipped
        );
    }
    out
}

/// A cluster's summary line, then a unified diff per changed object.
fn push_changes(out: &mut String, title: &str, ch: &ClusterChanges, sides: Sides<'_>) {
    let _ = writeln!(out, "# {title}: {}", counts_text(ch));
    for change in &ch.changes {
        out.push_str(&unified(change, 3, sides));
    }
}

/// `canopy diff`: per cluster in tree order, a summary line and a unified
/// diff per changed object (Secrets masked).
pub fn diff_text(report: &Report, sides: Sides<'_>) -> String {
    let mut out = String::new();
    for c in &report.clusters {
        match &c.outcome {
            Outcome::Changed(ch) => push_changes(&mut out, &c.cluster, ch, sides),
            Outcome::Unchanged(_) => {}
            Outcome::Failed { error, .. } => {
                let _ = writeln!(out, "# {}: cannot diff: {error}", c.cluster);
            }
            Outcome::Skipped { reason } => {
                let _ = writeln!(out, "# {}: skipped: {reason}", c.cluster);
            }
        }
    }
    for o in &report.orphans {
        match &o.outcome {
            Outcome::Changed(ch) => push_changes(
                &mut out,
                &format!("{} (left the fleet)", o.cluster),
                ch,
                sides,
            ),
            Outcome::Skipped { reason } => {
                let _ = writeln!(out, "# {} (left the fleet): {reason}", o.cluster);
            }
            _ => {}
        }
    }
    out.push_str(&diff_summary(report));
    out
}

/// The last line of `canopy diff`'s text: the totals.
pub fn diff_summary(report: &Report) -> String {
    let t = report.totals();
    let left = report
        .orphans
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Skipped { .. }))
        .count();
    let mut out = format!(
        "{} cluster(s) differ: +{} ~{} -{}; {} in sync, {} failed, {} skipped",
        t.changed,
        t.created,
        t.updated,
        t.deleted,
        t.unchanged,
        t.failed,
        t.skipped - left
    );
    if left > 0 {
        let _ = write!(out, "; {left} left the fleet");
    }
    out.push('\n');
    out
}

/// `canopy diff -o json`: a stable, machine-readable form.
pub fn diff_json(report: &Report, sides: Sides<'_>) -> Value {
    let t = report.totals();
    json!({
        "clusters": report.clusters.iter().map(|c| cluster_json(&c.cluster, &c.outcome, Some(sides))).collect::<Vec<_>>(),
        "orphans": report.orphans.iter().map(|o| cluster_json(&o.cluster, &o.outcome, Some(sides))).collect::<Vec<_>>(),
        "summary": {"clustersDiffer": t.changed, "created": t.created, "updated": t.updated,
            "deleted": t.deleted, "inSync": t.unchanged, "failed": t.failed, "skipped": t.skipped},
    })
}

/// `canopy apply -o json`: per cluster what was written (or, in a dry
/// run, would be), each failure with its typed reason and the objects it
/// changed first, and the rollouts' events.
pub fn apply_json(report: &Report, events: &[crate::ops::rollout::Event], dry_run: bool) -> Value {
    let t = report.totals();
    json!({
        "dryRun": dry_run,
        "clusters": report.clusters.iter().map(|c| cluster_json(&c.cluster, &c.outcome, None)).collect::<Vec<_>>(),
        "orphans": report.orphans.iter().map(|o| cluster_json(&o.cluster, &o.outcome, None)).collect::<Vec<_>>(),
        "summary": {"clustersChanged": t.changed, "created": t.created, "updated": t.updated,
            "deleted": t.deleted, "unchanged": t.unchanged, "failed": t.failed, "skipped": t.skipped},
        "rollouts": events.iter().map(|e| json!({"workload": e.workload, "message": e.message, "failed": e.failed})).collect::<Vec<_>>(),
    })
}

/// One cluster of a report; with `sides`, each change carries its unified
/// diff (`diff` keeps the values, `apply` does not).
fn cluster_json(name: &str, outcome: &Outcome, sides: Option<Sides<'_>>) -> Value {
    let mut v = json!({"name": name});
    match outcome {
        Outcome::Changed(ch) | Outcome::Unchanged(ch) => {
            let (a, u, d) = ch.counts();
            v["status"] = json!(match (ch.is_empty(), sides.is_some()) {
                (true, _) => "in-sync",
                (false, true) => "differs",
                (false, false) => "changed",
            });
            v["created"] = json!(a);
            v["updated"] = json!(u);
            v["deleted"] = json!(d);
            v["changes"] = ch
                .changes
                .iter()
                .map(|c| {
                    let action = match c {
                        Change::Create { .. } => "create",
                        Change::Update { .. } => "update",
                        Change::Delete { .. } => "delete",
                    };
                    let mut x = json!({"action": action, "object": c.key()});
                    if let Change::Update { replace, .. } = c {
                        if !replace.is_empty() {
                            x["replace"] = json!(replace);
                        }
                    }
                    if let Some(sides) = sides {
                        x["diff"] = json!(unified(c, 3, sides));
                    }
                    x
                })
                .collect();
            v["kept"] = json!(ch.kept);
            if !ch.pending.is_empty() {
                v["pending"] = ch
                    .pending
                    .iter()
                    .map(|(w, why)| json!({"workload": w, "reason": why}))
                    .collect();
            }
        }
        Outcome::Failed { error, changed } => {
            v["status"] = json!("failed");
            v["error"] = json!(error.to_string());
            v["failure"] = json!(error.reason());
            v["changedBeforeFailure"] = json!(changed);
        }
        Outcome::Skipped { reason } => {
            v["status"] = json!("skipped");
            v["reason"] = json!(reason.to_string());
        }
    }
    v
}

/// Lines of diff kept per cluster in Markdown, and the whole comment's size
/// budget (GitHub rejects comments over 65,536 characters).
const MD_LINES_PER_CLUSTER: usize = 400;
pub(crate) const MD_BUDGET: usize = 60_000;

/// The whole comment when nothing differs; `in_sync` counts the clusters.
pub(crate) fn md_no_changes(in_sync: impl std::fmt::Display) -> String {
    format!("### canopy diff: no changes\n\nAll {in_sync} cluster(s) are in sync.\n")
}

/// `canopy diff -o markdown`: a summary table, then one collapsible section
/// per changed cluster, long diffs cut with a count of what was cut.
pub fn diff_markdown(report: &Report, sides: Sides<'_>) -> String {
    let t = report.totals();
    let mut out = String::new();
    if t.changed == 0 && t.failed == 0 && t.skipped == 0 {
        return md_no_changes(t.unchanged);
    }
    let _ = writeln!(
        out,
        "### canopy diff: {} cluster(s) change (+{} ~{} -{})\n",
        t.changed, t.created, t.updated, t.deleted
    );
    out.push_str("| cluster | create | update | delete | status |\n|---|---:|---:|---:|---|\n");
    let all = report
        .clusters
        .iter()
        .map(|c| (c.cluster.as_str(), &c.outcome))
        .chain(
            report
                .orphans
                .iter()
                .map(|o| (o.cluster.as_str(), &o.outcome)),
        );
    let mut rows_left_out = 0usize;
    for (name, o) in all.clone() {
        // The table too stays within the comment's budget (half of it).
        if out.len() > MD_BUDGET / 2 && !matches!(o, Outcome::Unchanged(_)) {
            rows_left_out += 1;
            continue;
        }
        match o {
            Outcome::Changed(ch) => {
                let (a, u, d) = ch.counts();
                let _ = writeln!(out, "| `{name}` | {a} | {u} | {d} | differs |");
            }
            Outcome::Failed { error, .. } => {
                let _ = writeln!(
                    out,
                    "| `{name}` | | | | failed: {} |",
                    error.to_string().replace('|', "\\|")
                );
            }
            Outcome::Skipped { reason } => {
                let _ = writeln!(
                    out,
                    "| `{name}` | | | | skipped: {} |",
                    reason.to_string().replace('|', "\\|")
                );
            }
            Outcome::Unchanged(_) => {}
        }
    }
    if rows_left_out > 0 {
        let _ = writeln!(
            out,
            "| … {rows_left_out} more cluster(s) | | | | left out to keep this comment under GitHub's size limit |"
        );
    }
    if t.unchanged > 0 {
        let _ = writeln!(out, "\n{} cluster(s) in sync.", t.unchanged);
    }
    let mut omitted = 0;
    for (name, o) in all {
        let Outcome::Changed(ch) = o else { continue };
        if out.len() > MD_BUDGET {
            omitted += 1;
            continue;
        }
        let body: String = ch.changes.iter().map(|c| unified(c, 3, sides)).collect();
        let lines: Vec<&str> = body.lines().collect();
        let kept = lines.len().min(MD_LINES_PER_CLUSTER);
        let _ = write!(
            out,
            "\n<details><summary><code>{name}</code> {}</summary>\n\n```diff\n{}\n```\n",
            counts_text(ch),
            lines[..kept].join("\n").replace("```", "'''")
        );
        if kept < lines.len() {
            let _ = writeln!(
                out,
                "\n… {} more line(s) cut; run `canopy diff --cluster {name}` for all of it.",
                lines.len() - kept
            );
        }
        out.push_str("</details>\n");
    }
    if omitted > 0 {
        let _ = writeln!(out, "\n… diffs of {omitted} more cluster(s) omitted to keep this comment under GitHub's size limit.");
    }
    out
}

pub fn status_text(lines: &[StatusLine]) -> String {
    let width = lines
        .iter()
        .map(|l| l.cluster.len() + 2 * l.depth)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        let name = format!("{}{}", "  ".repeat(l.depth), l.cluster);
        let state = match l.state.as_str() {
            "drifted" => format!("drifted ({})", l.drifted),
            "not-applied" => format!("not applied ({})", l.drifted),
            s => s.to_string(),
        };
        let rev = match (&l.revision, &l.applied_at) {
            (Some(r), Some(at)) => format!("revision {} at {at}", short_rev(r)),
            _ if l.record_unreadable || !l.reachable => "last apply unknown".to_string(),
            _ => "never applied".to_string(),
        };
        let _ = write!(out, "{name:<width$}  {state:<16}  {rev}");
        if let Some(relay) = &l.via_relay {
            let _ = write!(out, "  via relay {relay}");
        }
        if l.joined {
            out.push_str("  (joined)");
        }
        if let Some(d) = &l.detail {
            let _ = write!(out, "  ({d})");
        }
        out.push('\n');
    }
    out
}

/// Each workload's replicas, ready over desired, down the tree: a cluster's
/// line sums its subtree, and `(here r/d)` is what runs on the cluster
/// itself when its descendants run some too.
pub fn workloads_text(ws: &[crate::core::aggregate::WorkloadStatus]) -> String {
    let mut out = String::new();
    for w in ws {
        let _ = writeln!(
            out,
            "\nworkload {}: {}/{} replicas ready",
            w.workload, w.total.ready, w.total.desired
        );
        let width = w
            .clusters
            .iter()
            .map(|c| c.cluster.len() + 2 * c.depth)
            .max()
            .unwrap_or(0);
        for c in &w.clusters {
            let name = format!("{}{}", "  ".repeat(c.depth), c.cluster);
            let _ = write!(
                out,
                "  {name:<width$}  {}/{}",
                c.subtree.ready, c.subtree.desired
            );
            match c.here {
                Some(h) if h != c.subtree => {
                    let _ = write!(out, "  (here {}/{})", h.ready, h.desired);
                }
                _ => {}
            }
            out.push('\n');
        }
    }
    out
}

/// A revision with its commit cut to 12 characters: `<sha12>`,
/// `<tag>@<sha12>`, `<sha12>-dirty`.
fn short_rev(r: &str) -> String {
    let (tag, rest) = match r.rsplit_once('@') {
        Some((t, rest)) => (Some(t), rest),
        None => (None, r),
    };
    let is_sha = rest.len() >= 40 && rest[..40].chars().all(|c| c.is_ascii_hexdigit());
    let short = if is_sha {
        format!("{}{}", &rest[..12], &rest[40..])
    } else {
        rest.to_string()
    };
    match tag {
        Some(t) => format!("{t}@{short}"),
        None => short,
    }
}

/// What staged rollouts did in an apply, one line each.
pub fn rollout_events_text(events: &[crate::ops::rollout::Event]) -> String {
    let mut out = String::new();
    for e in events {
        let _ = writeln!(
            out,
            "rollout {}{}: {}",
            e.workload,
            if e.failed { " FAILED" } else { "" },
            e.message
        );
    }
    out
}

/// `canopy rollout status`: the rollout, then each stage and its clusters.
pub fn rollout_text(v: &crate::ops::rollout::View) -> String {
    let mut out = String::new();
    let _ = write!(out, "rollout of {}: {}", v.workload, v.phase);
    if let Some(r) = &v.revision {
        let _ = write!(out, " (revision {r}");
        if let Some(f) = &v.from {
            let _ = write!(out, ", from {f}");
        }
        out.push(')');
    }
    out.push('\n');
    if let Some(m) = &v.message {
        let _ = writeln!(out, "  {m}");
    }
    if let Some(u) = &v.paused_until {
        let _ = writeln!(out, "  paused until {u}");
    }
    if v.outdated {
        let _ = writeln!(
            out,
            "  the fleet has a newer change of {}: the next apply starts a new rollout",
            v.workload
        );
    }
    let width = v
        .stages
        .iter()
        .flat_map(|s| s.clusters.iter().map(|c| c.cluster.len() + 2))
        .chain(v.stages.iter().map(|s| s.name.len()))
        .max()
        .unwrap_or(0);
    for s in &v.stages {
        let _ = writeln!(out, "  {:<width$}  {}", s.name, s.state);
        for c in &s.clusters {
            let name = format!("  {}", c.cluster);
            let _ = write!(out, "  {name:<width$}  {}", c.state);
            if let Some(d) = &c.detail {
                let _ = write!(out, "  {}", d.replace('\n', "\n      "));
            }
            out.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------- relays

use crate::core::relay_report::RelayReport;
use crate::ops::relays::{RelayOutcome, RelayResult};

/// A report's counts in words: "3 cluster(s): 2 applied (1 in sync), 1 failed".
fn tally_text(r: &RelayReport) -> String {
    let c = r.clusters;
    let mut parts = vec![format!("{} applied ({} in sync)", c.applied, c.in_sync)];
    for (n, what) in [
        (c.failed, "failed"),
        (c.skipped, "skipped"),
        (c.pending, "pending below a relay"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    format!("{} cluster(s): {}", c.total, parts.join(", "))
}

/// The failures a report names, one per line under `pad`, and how many
/// it does not name.
fn failures_text(out: &mut String, r: &RelayReport, pad: &str) {
    for f in &r.failed {
        let msg = f.message.lines().collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "{pad}{}: {}: {msg}", f.cluster, f.outcome);
    }
    let more = r.unnamed_failures();
    if more > 0 {
        let _ = writeln!(out, "{pad}… and {more} more");
    }
}

/// How a relay's paragraph starts.
fn relay_head(relay: &str, below: usize) -> String {
    format!("{relay} (via relay, {below} cluster(s) below)")
}

/// A relay's last report in one line, if it has one on a handoff;
/// whether it had.
fn last_report(out: &mut String, last: Option<&RelayReport>) -> bool {
    let Some((l, o)) = last.and_then(|l| l.observed.as_ref().map(|o| (l, o))) else {
        return false;
    };
    let _ = writeln!(
        out,
        "    last report: revision {} at {}: {}",
        short_rev(&o.revision),
        l.at,
        tally_text(l)
    );
    true
}

/// `apply` through relays: one paragraph per relay child, from its report.
pub fn relays_text(relays: &[RelayResult]) -> String {
    let mut out = String::new();
    for r in relays {
        let head = relay_head(&r.relay, r.below);
        let rev = short_rev(&r.handed.revision);
        match &r.outcome {
            RelayOutcome::Reported(rep) => {
                let _ = writeln!(out, "{head}: revision {rev}: {}", tally_text(rep));
                failures_text(&mut out, rep, "    ");
            }
            RelayOutcome::Refused(why) => {
                let _ = writeln!(
                    out,
                    "{head}: REFUSED the handoff of revision {rev}: {why}\n    the relay keeps working from its last good handoff"
                );
            }
            RelayOutcome::Waiting { waited, last } => {
                let _ = writeln!(
                    out,
                    "{head}: no report on revision {rev} after {}",
                    humantime::format_duration(std::time::Duration::from_secs(waited.as_secs()))
                );
                if !last_report(&mut out, last.as_ref()) {
                    let _ = writeln!(out, "    no report yet");
                }
                let _ = writeln!(
                    out,
                    "    help: is `canopy agent --cluster {}` running? Its handoff is written; it takes it when it runs (or raise --timeout)",
                    r.relay
                );
            }
            RelayOutcome::Silent { last } => {
                let _ = writeln!(
                    out,
                    "{head}: no agent holds its Lease, so nothing takes revision {rev}"
                );
                last_report(&mut out, last.as_ref());
                let _ = writeln!(
                    out,
                    "    help: start `canopy agent --cluster {}` (see `canopy agent manifests`); its handoff is written and waits for it",
                    r.relay
                );
            }
            RelayOutcome::Unreadable(e) => {
                let _ = writeln!(out, "{head}: cannot read its report: {e}");
            }
        }
    }
    out
}

/// The same for scripts.
pub fn relays_json(relays: &[RelayResult]) -> Value {
    Value::Array(
        relays
            .iter()
            .map(|r| {
                let mut v = json!({
                    "relay": r.relay,
                    "below": r.below,
                    "handed": r.handed,
                    "failed": r.failed(),
                });
                match &r.outcome {
                    RelayOutcome::Reported(rep) => {
                        v["status"] = json!("reported");
                        v["report"] = json!(rep);
                    }
                    RelayOutcome::Refused(why) => {
                        v["status"] = json!("refused");
                        v["reason"] = json!(why);
                    }
                    RelayOutcome::Waiting { waited, last } => {
                        v["status"] = json!("waiting");
                        v["waitedSeconds"] = json!(waited.as_secs_f64());
                        v["lastReport"] = json!(last);
                    }
                    RelayOutcome::Silent { last } => {
                        v["status"] = json!("silent");
                        v["lastReport"] = json!(last);
                    }
                    RelayOutcome::Unreadable(e) => {
                        v["status"] = json!("unreadable");
                        v["reason"] = json!(e);
                    }
                }
                v
            })
            .collect(),
    )
}

/// `canopy agent --once`: what the round did.
pub fn agent_round_text(round: &crate::agent::Round) -> String {
    use crate::agent::Round;
    let mut out = String::new();
    match round {
        Round::Standby { holder } => {
            let _ = writeln!(out, "another replica leads ({holder}); this one stands by");
        }
        Round::NoHandoff => {
            let _ = writeln!(
                out,
                "no handoff in the relay's cluster yet: nothing to reconcile until its parent level applies"
            );
        }
        Round::Reconciled {
            seen,
            report,
            unreported,
        } => {
            if let Some(r) = &report.refused {
                let _ = writeln!(
                    out,
                    "REFUSED the handoff of revision {}: {}\n    working from the last good one",
                    short_rev(&r.handoff.revision),
                    r.reason
                );
            }
            let _ = writeln!(
                out,
                "reconciled revision {}: {}",
                short_rev(&seen.revision),
                tally_text(report)
            );
            failures_text(&mut out, report, "    ");
            for (w, n) in &report.workloads {
                let _ = writeln!(out, "  {w}: {}/{} replicas ready", n.ready, n.desired);
            }
            if let Some(e) = unreported {
                let _ = writeln!(out, "warning: the report could not be written: {e}");
            }
        }
        Round::Failed(why) => {
            let _ = writeln!(out, "error: the round failed: {why}");
        }
    }
    out
}

/// The same for scripts.
pub fn agent_round_json(round: &crate::agent::Round) -> Value {
    use crate::agent::Round;
    match round {
        Round::Standby { holder } => json!({"round": "standby", "holder": holder}),
        Round::NoHandoff => json!({"round": "no-handoff"}),
        Round::Reconciled {
            seen,
            report,
            unreported,
        } => {
            json!({"round": "reconciled", "handoff": seen, "report": report, "unreported": unreported})
        }
        Round::Failed(why) => json!({"round": "failed", "error": why}),
    }
}

/// `diff` through relays: per relay, where its subtree stands against the
/// handoff it would be given now.
pub fn standings_text(relays: &[crate::ops::relays::Standing]) -> String {
    use crate::ops::relays::RelayState;
    let mut out = String::new();
    for r in relays {
        let head = relay_head(&r.relay, r.below);
        let rev = short_rev(&r.handing.revision);
        match &r.state {
            RelayState::InSync(rep) => {
                let _ = writeln!(
                    out,
                    "{head}: in sync with revision {rev} as of {} ({}; its last round wrote {} object(s))",
                    rep.at,
                    tally_text(rep),
                    rep.written
                );
            }
            RelayState::Differs(rep) => {
                let from = rep
                    .observed
                    .as_ref()
                    .map_or("(none)".to_string(), |o| short_rev(&o.revision));
                let why = if rep.observed.as_ref() == Some(&r.handing) {
                    "its last round did not reconcile every cluster".to_string()
                } else {
                    format!("it works from revision {from}, not from what apply would hand it now")
                };
                let _ = writeln!(
                    out,
                    "{head}: DIFFERS: {why} (as of {}: {})",
                    rep.at,
                    tally_text(rep)
                );
                failures_text(&mut out, rep, "    ");
            }
            RelayState::Silent(_) => {
                let _ = writeln!(out, "{head}: DIFFERS: no agent holds its Lease, so nothing below it is kept in sync");
            }
            RelayState::Unreported => {
                let _ = writeln!(out, "{head}: DIFFERS: its agent has not reported yet");
            }
        }
    }
    out
}

/// The same for scripts.
pub fn standings_json(relays: &[crate::ops::relays::Standing]) -> Value {
    use crate::ops::relays::RelayState;
    Value::Array(
        relays
            .iter()
            .map(|r| {
                let (state, report) = match &r.state {
                    RelayState::InSync(rep) => ("in-sync", Some(rep)),
                    RelayState::Differs(rep) => ("differs", Some(rep)),
                    RelayState::Silent(rep) => ("silent", rep.as_ref()),
                    RelayState::Unreported => ("unreported", None),
                };
                json!({"relay": r.relay, "below": r.below, "handing": r.handing,
                    "state": state, "report": report})
            })
            .collect(),
    )
}
