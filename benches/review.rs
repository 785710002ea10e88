//! The pull-request comment at fleet scale: `diff --base` on a synthetic
//! fleet with one image change, the grouped Markdown against the
//! per-cluster Markdown (`--no-group`) in the same run.
//!
//! `cargo bench --bench review` generates a 10,000-cluster fleet
//! (6 workloads) in a Git repository, commits it, moves one workload's image
//! to the next patch, computes the diff against `HEAD` once (what both forms
//! share: both revisions rendered and compared), then prints it both ways,
//! five times each, median reported. The command's time for each form is
//! the diff plus its printing.
//!
//! Options (after `--`): `--clusters 10000`.

mod support;
use std::time::Instant;
use support::median;

use canopy::cli::{output, review};
use canopy::core::diff::Sides;
use canopy::core::synth;
use canopy::ops::run::{FleetSource, Location, Selection};

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .expect("git runs")
        .success();
    assert!(ok, "git {args:?}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clusters = args
        .iter()
        .position(|a| a == "--clusters")
        .and_then(|i| args.get(i + 1))
        .map_or(10_000, |s| s.parse().expect("a number"));
    let tmp = tempfile::tempdir().expect("temp dir");
    let fleet = tmp.path().join("fleet");
    synth::generate(
        &fleet,
        synth::Spec {
            clusters,
            workloads: 6,
        },
    )
    .expect("generate");
    git(&fleet, &["init", "-q", "-b", "main"]);
    git(&fleet, &["add", "-A"]);
    git(
        &fleet,
        &[
            "-c",
            "user.email=b@canopy.invalid",
            "-c",
            "user.name=bench",
            "commit",
            "-qm",
            "synth",
        ],
    );
    let app = fleet.join("workloads/w03/app.yaml");
    let text = std::fs::read_to_string(&app).expect("w03");
    std::fs::write(&app, text.replace(":1.0.3", ":1.0.4")).expect("edit");

    let src = FleetSource::open(Location::Dir(fleet.clone())).expect("open");
    let t = Instant::now();
    let loaded = src.load(None).expect("valid");
    let (report, _) = canopy::ops::diff::against_base(&src, &loaded, "HEAD", &Selection::default())
        .expect("diff");
    let diff_secs = t.elapsed().as_secs_f64();
    let sides = Sides {
        old: "HEAD",
        new: "working-tree",
    };
    let none = |_: &str, _: &str| None;
    let runs = 5;
    let (mut flat, mut grouped) = (Vec::new(), Vec::new());
    let (mut flat_len, mut grouped_len, mut groups) = (0, 0, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let md = output::diff_markdown(&report, sides);
        flat.push(t.elapsed().as_secs_f64());
        flat_len = md.len();
        let t = Instant::now();
        let r = review::review_of(&report, sides, &loaded.checked.topo);
        let md = review::markdown(&report, &r, &none);
        grouped.push(t.elapsed().as_secs_f64());
        grouped_len = md.len();
        groups = r.groups.len();
    }
    let (f, g) = (median(flat), median(grouped));
    let changed = report.totals().changed;
    println!(
        "\ndiff --base on {clusters} clusters, one image change: {changed} clusters change; load + diff {diff_secs:.3} s"
    );
    println!(
        "{:<26} {:>10} {:>12} {:>11} {:>10}",
        "comment", "print s", "command s", "characters", "×per-cluster"
    );
    println!(
        "{:<26} {:>10.4} {:>12.3} {:>11} {:>10.2}",
        "per-cluster (--no-group)",
        f,
        diff_secs + f,
        flat_len,
        1.0
    );
    println!(
        "{:<26} {:>10.4} {:>12.3} {:>11} {:>10.2}",
        format!("grouped ({groups} groups)"),
        g,
        diff_secs + g,
        grouped_len,
        (diff_secs + g) / (diff_secs + f)
    );
}
