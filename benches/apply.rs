//! Apply benchmark on the embedded local backend, with the synthetic fleet.
//!
//! `cargo bench --bench apply` (options after `--`: `--clusters 10000`,
//! `--diff-clusters 1000`) measures, each step in its own child process of
//! this binary (so each reports its own peak memory), each apply through
//! the run sequence `canopy apply` uses:
//! 1. the first apply into an empty state;
//! 2. a no-op re-apply with `--full` (every cluster rendered and diffed);
//! 3. a no-op re-apply as `canopy apply` does it (clusters found in sync
//!    before and unchanged since are neither rendered nor read);
//! 4. a re-apply after changing one workload's image (it must write only
//!    the changed objects), then another with `--full`;
//! 5. `diff --base` between two Git revisions of a smaller fleet.
//!
//! The baseline, measured in the same run, is reading and parsing every
//! state file: the floor of any no-op check that reads the state.

#[global_allocator]
static GLOBAL: canopy::alloc::Canopy = canopy::alloc::Canopy;

mod support;
use support::{field, peak_rss_mib, run_child};

use std::path::{Path, PathBuf};
use std::time::Instant;

use canopy::backend::ApplyMeta;
use canopy::core::render::Renderer;
use canopy::ops::apply::{self, Options, Pass};
use canopy::ops::base::render_at_revision;
use canopy::ops::{Access, FleetSource, Location, Selection, Session};
use canopy::source::input::load_checked;

fn meta() -> ApplyMeta {
    ApplyMeta {
        revision: "bench".into(),
        at: "2026-01-01T00:00:00Z".into(),
        impersonate: Default::default(),
    }
}

/// `canopy apply FLEET --state STATE` in-process (`full`: with `--full`).
fn child_apply(fleet: &Path, state: &Path, full: bool) {
    let t = Instant::now();
    let src = FleetSource::open(Location::Dir(fleet.to_path_buf())).expect("fleet");
    let loaded = src.load(Some("bench")).expect("valid fleet");
    let mut session = Session::open(
        &src.input,
        state.to_path_buf(),
        Access::Write,
        src.base.clone(),
        Default::default(),
    )
    .expect("state");
    let opts = Options {
        skip_settled: !full,
        ..Options::default()
    };
    let run = session
        .run(&loaded, &Selection::default(), opts, true)
        .expect("renders");
    let secs = t.elapsed().as_secs_f64();
    let rendered = run.desired.clusters().count();
    let tt = run.report.totals();
    assert_eq!(tt.failed + tt.skipped, 0, "every cluster applies");
    println!(
        "RESULT secs={secs:.4} rendered={rendered} created={} updated={} deleted={} changed_clusters={} unchanged_clusters={} peak_mib={:.1}",
        tt.created,
        tt.updated,
        tt.deleted,
        tt.changed,
        tt.unchanged,
        peak_rss_mib()
    );
}

fn child_read_state(state: &Path) {
    let t = Instant::now();
    let mut objects = 0usize;
    for e in std::fs::read_dir(state.join("clusters")).expect("state") {
        // Only the state files (a cluster's lock file sits beside its own).
        let path = e.expect("entry").path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let bytes = std::fs::read(path).expect("read");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        objects += v["objects"].as_object().map_or(0, |o| o.len());
    }
    println!(
        "RESULT secs={:.4} objects={objects} peak_mib={:.1}",
        t.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
}

fn child_diff_base(fleet: &Path, rev: &str) {
    let t = Instant::now();
    let (checked, _) = load_checked(fleet, None).expect("valid fleet");
    let r = Renderer::new(&checked);
    let input = canopy::source::input::Input::Dir(fleet.to_path_buf());
    let (base, _) = render_at_revision(&input, rev, &checked, None).expect("base renders");
    let opts = Options {
        dry_run: true,
        keep_values: true,
        ..Options::default()
    };
    let report = apply::run(&r, &base, &[], &meta(), &opts, &Pass::default()).expect("renders");
    let tt = report.totals();
    println!(
        "RESULT secs={:.4} changed_clusters={} updated={} peak_mib={:.1}",
        t.elapsed().as_secs_f64(),
        tt.changed,
        tt.updated,
        peak_rss_mib()
    );
}

/// Changes the image tag of workload `w` (every cluster running it changes).
fn bump_image(fleet: &Path, w: &str) {
    let path = fleet.join("workloads").join(w).join("app.yaml");
    let text = std::fs::read_to_string(&path).expect("app.yaml");
    let bumped = text.replace(
        &format!("ghcr.io/acme/{w}:1.0."),
        &format!("ghcr.io/acme/{w}:2.0."),
    );
    assert_ne!(text, bumped, "the image line is there");
    std::fs::write(&path, bumped).expect("write");
}

fn commit_all(repo: &git2::Repository, message: &str) {
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.update_all(["*"], None).expect("update");
    index.write().expect("write");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = git2::Signature::now("bench", "bench@canopy.invalid").expect("sig");
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .expect("commit");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let p = |k: usize| PathBuf::from(&args[i + k]);
        match args[i + 1].as_str() {
            "apply" => child_apply(&p(2), &p(3), false),
            "apply-full" => child_apply(&p(2), &p(3), true),
            "read-state" => child_read_state(&p(2)),
            _ => child_diff_base(&p(2), &args[i + 3]),
        }
        return;
    }
    let opt = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let n = opt("--clusters", 10_000);
    let n_diff = opt("--diff-clusters", 1_000);
    let tmp = tempfile::tempdir().expect("temp dir");
    let fleet = tmp.path().join("fleet");
    let state = tmp.path().join("state");
    canopy::core::synth::generate(
        &fleet,
        canopy::core::synth::Spec {
            clusters: n,
            workloads: 20,
        },
    )
    .expect("generate");
    let s = |p: &Path| p.to_str().expect("UTF-8").to_string();

    let first = run_child(&["apply", &s(&fleet), &s(&state)]);
    let noop_full = run_child(&["apply-full", &s(&fleet), &s(&state)]);
    let noop = run_child(&["apply", &s(&fleet), &s(&state)]);
    for r in [&noop_full, &noop] {
        assert_eq!(
            field(r, "changed_clusters"),
            0.0,
            "a no-op apply changes nothing: {r}"
        );
    }
    assert_eq!(field(&noop, "rendered"), 0.0, "in sync: nothing rendered");
    let base = run_child(&["read-state", &s(&state)]);
    bump_image(&fleet, "w05");
    let change = run_child(&["apply", &s(&fleet), &s(&state)]);
    // A workload placed as w05 is, so that both changes reach as many
    // clusters.
    bump_image(&fleet, "w09");
    let change_full = run_child(&["apply-full", &s(&fleet), &s(&state)]);

    // diff --base on a Git repository holding a smaller fleet.
    let repo_dir = tmp.path().join("repo");
    let small = repo_dir.join("fleet");
    canopy::core::synth::generate(
        &small,
        canopy::core::synth::Spec {
            clusters: n_diff,
            workloads: 20,
        },
    )
    .expect("generate");
    let repo = git2::Repository::init(&repo_dir).expect("git init");
    commit_all(&repo, "base");
    bump_image(&small, "w05");
    commit_all(&repo, "bump w05");
    let diff_base = run_child(&["diff-base", &s(&small), "HEAD~1"]);

    let objects = field(&base, "objects");
    println!("\ncanopy apply benchmark: {n} clusters x 20 workloads, local backend ({objects} objects in state)");
    println!(
        "{:<34} {:>9} {:>10} {:>30}",
        "step", "seconds", "peak MiB", "what it did"
    );
    let row = |name: &str, r: &str, what: String| {
        println!(
            "{name:<34} {:>9.3} {:>10.0} {what:>30}",
            field(r, "secs"),
            field(r, "peak_mib")
        );
    };
    row(
        "first apply (empty state)",
        &first,
        format!("{} created", field(&first, "created")),
    );
    row(
        "no-op re-apply --full",
        &noop_full,
        format!(
            "{} rendered, {} unchanged",
            field(&noop_full, "rendered"),
            field(&noop_full, "unchanged_clusters")
        ),
    );
    row(
        "no-op re-apply",
        &noop,
        format!(
            "{} rendered, {} unchanged",
            field(&noop, "rendered"),
            field(&noop, "unchanged_clusters")
        ),
    );
    for (name, r) in [
        ("re-apply after one image change", &change),
        ("the same (another workload), --full", &change_full),
    ] {
        row(
            name,
            r,
            format!(
                "{} rendered, {} updated in {}",
                field(r, "rendered"),
                field(r, "updated"),
                field(r, "changed_clusters")
            ),
        );
    }
    row(
        "baseline: read+parse all state",
        &base,
        format!("{objects} objects"),
    );
    row(
        &format!("diff --base, {n_diff} clusters"),
        &diff_base,
        format!("{} clusters differ", field(&diff_base, "changed_clusters")),
    );
    println!(
        "ratios: no-op / baseline {:.2}x (--full {:.2}x); change / no-op {:.2}x (--full {:.2}x)",
        field(&noop, "secs") / field(&base, "secs"),
        field(&noop_full, "secs") / field(&base, "secs"),
        field(&change, "secs") / field(&noop, "secs"),
        field(&change_full, "secs") / field(&noop_full, "secs"),
    );
}
