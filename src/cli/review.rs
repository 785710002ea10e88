//! Printers of a grouped diff ([`crate::core::review`]): each distinct
//! change once, with the clusters it reaches, for text, Markdown (the pull
//! request comment, kept under GitHub's size limit whatever the fleet) and
//! JSON. `--no-group` keeps the per-cluster printers in `output.rs`.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::core::diff::{unified, Sides};
use crate::core::review::{self, ClusterChanges, Group, Place, Review, WorkloadSummary};
use crate::core::topology::Topology;
use crate::ops::apply::{Outcome, Report};

/// Where a workload's rollout first reaches a cluster: (stage index,
/// stage name), by cluster name and workload; `None` without a rollout.
pub type StageOf<'a> = &'a dyn Fn(&str, &str) -> Option<(usize, String)>;

use super::output::MD_BUDGET;
/// Lines of one group's diff shown in Markdown.
const MD_LINES: usize = 120;
/// Places named for one group; the rest are counted.
const PLACES_SHOWN: usize = 8;

/// The review of `report`'s changes, grouped over `topo`.
pub fn review_of(report: &Report, sides: Sides<'_>, topo: &Topology) -> Review {
    let mut clusters: Vec<ClusterChanges<'_>> = Vec::new();
    for c in &report.clusters {
        if let Outcome::Changed(ch) = &c.outcome {
            clusters.push(ClusterChanges {
                index: topo.get(&c.cluster),
                name: &c.cluster,
                changes: &ch.changes,
            });
        }
    }
    for o in &report.orphans {
        if let Outcome::Changed(ch) = &o.outcome {
            clusters.push(ClusterChanges {
                index: None,
                name: &o.cluster,
                changes: &ch.changes,
            });
        }
    }
    review::review(topo, &clusters, |c| unified(c, 3, sides))
}

/// `3000` → `3,000`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn sign(action: &str) -> char {
    match action {
        "create" => '+',
        "delete" => '-',
        _ => '~',
    }
}

/// "`eu` subtree (240), us-west-2, … and 3 more cluster(s)"; with
/// `html`, names in `<code>` for a Markdown summary line.
fn places_text(g: &Group, html_names: bool) -> String {
    let q = |s: &str| {
        if html_names {
            format!("<code>{}</code>", html(s))
        } else {
            s.to_string()
        }
    };
    let mut parts: Vec<String> = g
        .places
        .iter()
        .take(PLACES_SHOWN)
        .map(|p| match p {
            Place::Subtree { root, clusters } => {
                format!("{} subtree ({})", q(root), thousands(*clusters))
            }
            Place::Cluster { name } => q(name),
        })
        .collect();
    if g.places.len() > PLACES_SHOWN {
        let shown: usize = g
            .places
            .iter()
            .take(PLACES_SHOWN)
            .map(|p| match p {
                Place::Subtree { clusters, .. } => *clusters,
                Place::Cluster { .. } => 1,
            })
            .sum();
        parts.push(format!(
            "and {} more cluster(s)",
            thousands(g.clusters.len() - shown)
        ));
    }
    parts.join(", ")
}

/// The stage of `g`'s workload's rollout its clusters reach first.
fn first_stage(g: &Group, stage_of: StageOf<'_>) -> Option<String> {
    let w = g.workload.as_deref()?;
    g.clusters
        .iter()
        .filter_map(|c| stage_of(c, w))
        .min()
        .map(|(_, name)| name)
}

fn replicas_text(w: &WorkloadSummary) -> String {
    match w.replicas {
        None => String::new(),
        Some(r) if r.before == r.after => format!("{} → {} ({} moved)", r.before, r.after, r.added),
        Some(r) => format!("{} → {}", r.before, r.after),
    }
}

fn head(g: &Group, code: bool) -> String {
    let obj = if code {
        format!("<code>{}</code>", html(&g.object))
    } else {
        g.object.clone()
    };
    let variant = if g.variants > 0 {
        format!(" (one of {} variants)", g.variants + 1)
    } else {
        String::new()
    };
    format!(
        "{} {obj}{variant} on {} cluster(s)",
        sign(g.action),
        thousands(g.clusters.len())
    )
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Failed and skipped clusters, and clusters that left the fleet, one
/// line each, as the per-cluster text says them.
fn problems(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = report
        .clusters
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Failed { error, .. } => Some(format!("{}: cannot diff: {error}", c.cluster)),
            Outcome::Skipped { reason } => Some(format!("{}: skipped: {reason}", c.cluster)),
            _ => None,
        })
        .collect();
    out.extend(report.orphans.iter().filter_map(|o| match &o.outcome {
        Outcome::Failed { error, .. } => Some(format!(
            "{} (left the fleet): cannot diff: {error}",
            o.cluster
        )),
        Outcome::Skipped { reason } => Some(format!("{} (left the fleet): {reason}", o.cluster)),
        _ => None,
    }));
    out
}

/// `canopy diff` grouped: each distinct change once, with where it lands.
pub fn text(report: &Report, review: &Review, stage_of: StageOf<'_>) -> String {
    let mut out = String::new();
    for g in &review.groups {
        let _ = write!(out, "# {}: {}", head(g, false), places_text(g, false));
        if let Some(s) = first_stage(g, stage_of) {
            let _ = write!(out, "; lands first in stage {s}");
        }
        out.push('\n');
        out.push_str(&g.diff);
        if !g.diff.ends_with('\n') {
            out.push('\n');
        }
    }
    for p in problems(report) {
        let _ = writeln!(out, "# {p}");
    }
    out.push_str(&super::output::diff_summary(report));
    out
}

/// `apply --dry-run`: what would change, each distinct object change once
/// with where it lands (`diff` shows how each changes).
pub fn dry_run_text(review: &Review) -> String {
    if review.groups.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "would change, each distinct change once ({} in all):\n",
        review.groups.len()
    );
    for g in &review.groups {
        let _ = writeln!(out, "  {}: {}", head(g, false), places_text(g, false));
    }
    out
}

/// `canopy diff -o markdown` grouped: the summary per workload first, then
/// each distinct change once, in a collapsible section naming where it
/// lands; under [`MD_BUDGET`] characters for any fleet, saying what it
/// left out.
pub fn markdown(report: &Report, review: &Review, stage_of: StageOf<'_>) -> String {
    let t = report.totals();
    let mut out = String::new();
    if t.changed == 0 && t.failed == 0 && t.skipped == 0 {
        return super::output::md_no_changes(thousands(t.unchanged));
    }
    let _ = writeln!(
        out,
        "### canopy diff: {} cluster(s) change (+{} ~{} -{}) in {} distinct change(s)\n",
        thousands(t.changed),
        t.created,
        t.updated,
        t.deleted,
        review.groups.len()
    );
    if !review.workloads.is_empty() {
        out.push_str("| workload | clusters | create | update | delete | kinds | replicas | joins | leaves |\n|---|---:|---:|---:|---:|---|---|---:|---:|\n");
        for w in &review.workloads {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                w.workload,
                thousands(w.clusters),
                thousands(w.created),
                thousands(w.updated),
                thousands(w.deleted),
                w.kinds.iter().cloned().collect::<Vec<_>>().join(", "),
                replicas_text(w),
                thousands(w.joins),
                thousands(w.leaves)
            );
        }
    }
    if t.unchanged > 0 {
        let _ = writeln!(out, "\n{} cluster(s) in sync.", thousands(t.unchanged));
    }
    let probs = problems(report);
    if !probs.is_empty() {
        let _ = writeln!(out, "\n**Not diffed ({}):**\n", probs.len());
        for p in probs.iter().take(20) {
            let _ = writeln!(out, "- {}", p.replace('|', "\\|"));
        }
        if probs.len() > 20 {
            let _ = writeln!(out, "- … and {} more", probs.len() - 20);
        }
    }
    let mut left_out = (0usize, 0usize);
    for g in &review.groups {
        let mut section = String::new();
        let _ = write!(
            section,
            "\n<details><summary>{}: {}</summary>\n\n",
            head(g, true),
            places_text(g, true)
        );
        if let Some(s) = first_stage(g, stage_of) {
            let _ = writeln!(
                section,
                "Lands first in rollout stage `{s}` of `{}`.\n",
                g.workload.as_deref().unwrap_or("")
            );
        }
        let lines: Vec<&str> = g.diff.lines().collect();
        let kept = lines.len().min(MD_LINES);
        let _ = writeln!(
            section,
            "```diff\n{}\n```",
            lines[..kept].join("\n").replace("```", "'''")
        );
        if kept < lines.len() {
            let _ = writeln!(
                section,
                "\n… {} more line(s) cut; `canopy diff --cluster {}` shows all of it.",
                lines.len() - kept,
                g.clusters[0]
            );
        }
        section.push_str("</details>\n");
        if out.len() + section.len() > MD_BUDGET {
            left_out.0 += 1;
            left_out.1 += g.clusters.len();
            continue;
        }
        out.push_str(&section);
    }
    if left_out.0 > 0 {
        let _ = writeln!(
            out,
            "\n… {} more distinct change(s), on {} cluster(s) in all, left out to keep this comment under GitHub's size limit; `canopy diff -o json` has every one.",
            thousands(left_out.0),
            thousands(left_out.1)
        );
    }
    out
}

/// The review as JSON (beside the per-cluster report): per workload, and
/// each group with its clusters, places, first stage and diff.
pub fn json(review: &Review, stage_of: StageOf<'_>) -> Value {
    let groups: Vec<Value> = review
        .groups
        .iter()
        .map(|g| {
            let mut v = serde_json::to_value(g).expect("a group serializes");
            if let Some(s) = first_stage(g, stage_of) {
                v["firstStage"] = Value::from(s);
            }
            v
        })
        .collect();
    json!({
        "workloads": review.workloads,
        "groups": groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
