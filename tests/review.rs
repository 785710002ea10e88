//! Issue 18: the pull-request comment shows one change once, with the
//! clusters it reaches. Golden Markdown on fleet-example for an image
//! change, a replica change, a new workload, a removed cluster and a Secret
//! change; and on a generated 1,000-cluster fleet, one group per registry
//! variant, placed by subtree, under GitHub's size limit, the same groups in
//! JSON.
//!
//! `UPDATE_GOLDEN=1 cargo test --test review` rewrites the snapshots.

mod common;
use common::*;

use std::path::Path;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// fleet-example committed in a repository; the fleet folder.
fn example_repo() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (_repo, _) = repo_with_fleet(tmp.path());
    let fleet = tmp.path().join("fleet");
    (tmp, fleet)
}

fn edit(fleet: &Path, file: &str, from: &str, to: &str) {
    let path = fleet.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace(from, to);
    assert_ne!(text, edited, "{file}: {from:?} not found");
    std::fs::write(path, edited).unwrap();
}

/// `diff --base HEAD -o markdown`, which exits 1 when something differs.
fn comment(fleet: &Path) -> String {
    let (code, md, err) = canopy(&["diff", p(fleet), "--base", "HEAD", "-o", "markdown"]);
    assert_eq!(code, 1, "{md}{err}");
    assert!(md.len() < 65_536);
    md
}

/// The generated 1,000-cluster fleet (6 workloads), committed; its folder.
fn synth_repo() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = tmp.path().join("synth");
    canopy::core::synth::generate(
        &fleet,
        canopy::core::synth::Spec {
            clusters: 1000,
            workloads: 6,
        },
    )
    .unwrap();
    let repo = init_main(&fleet);
    commit_all(&repo, "synth");
    (tmp, fleet)
}

#[test]
fn an_image_change_is_one_group_per_variant() {
    let (_tmp, fleet) = example_repo();
    edit(
        &fleet,
        "workloads/web/deployment.yaml",
        "web:1.4.2",
        "web:1.4.3",
    );
    let md = comment(&fleet);
    // The EU registry mirror is one variant, the rest another.
    assert_eq!(md.matches("<details>").count(), 2, "{md}");
    golden("review-image.md", &md);
}

#[test]
fn a_replica_change_shows_the_division() {
    let (_tmp, fleet) = example_repo();
    edit(
        &fleet,
        "workloads/web/deployment.yaml",
        "replicas: 12",
        "replicas: 18",
    );
    let md = comment(&fleet);
    assert!(
        md.contains("| `web` | 4 | 0 | 4 | 0 | Deployment | 10 → 16 |"),
        "{md}"
    );
    golden("review-replicas.md", &md);
}

#[test]
fn a_new_workload_joins_its_clusters() {
    let (_tmp, fleet) = example_repo();
    let dir = fleet.join("workloads/cache");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("workload.yaml"),
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: cache}\nspec:\n  namespace: shop\n  placement:\n    clusters: {selector: {matchLabels: {tier: workload}}}\n    replicas: {mode: Divided, total: 6}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cache}\nspec:\n  replicas: 6\n  template:\n    spec:\n      containers: [{name: redis, image: redis:7}]\n",
    )
    .unwrap();
    let md = comment(&fleet);
    assert!(
        md.contains("| `cache` | 5 | 5 | 0 | 0 | Deployment | 0 → 6 | 5 | 0 |"),
        "{md}"
    );
    golden("review-new-workload.md", &md);
}

#[test]
fn a_removed_cluster_is_said_and_its_share_moves() {
    let (_tmp, fleet) = example_repo();
    remove_staging(&fleet);
    let md = comment(&fleet);
    assert!(md.contains("- staging (left the fleet): orphaned"), "{md}");
    golden("review-removed-cluster.md", &md);
}

#[test]
fn a_secret_change_is_grouped_by_its_masked_text() {
    let (_tmp, fleet) = example_repo();
    edit(
        &fleet,
        "workloads/platform-config/config.yaml.j2",
        "example-token-",
        "example-token-v2-",
    );
    let md = comment(&fleet);
    assert!(!md.contains("example-token"), "no Secret value: {md}");
    assert!(md.contains("Secret shop/platform-secrets"), "{md}");
    golden("review-secret.md", &md);
}

/// A generated 1,000-cluster fleet: one image change of a workload that
/// lands everywhere is one group per registry variant (one override per
/// region subtree), each placed as its subtree, and the comment stays
/// small; JSON has the same groups for bots, and `--no-group` the old form.
#[test]
fn a_thousand_clusters_take_one_image_change_in_a_few_groups() {
    let (_tmp, fleet) = synth_repo();
    // Workload w03 runs on every cluster but the hub (synth's placement
    // kinds rotate); its image moves to the next patch.
    let app = fleet.join("workloads/w03/app.yaml");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, text.replace(":1.0.3", ":1.0.4")).unwrap();
    let (code, md, err) = canopy(&["diff", p(&fleet), "--base", "HEAD", "-o", "markdown"]);
    assert_eq!(code, 1, "{err}");
    assert!(md.len() < 65_536, "{} characters", md.len());
    let (code, json, _) = canopy(&["diff", p(&fleet), "--base", "HEAD", "-o", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let groups = v["review"]["groups"].as_array().unwrap();
    let changed = v["summary"]["clustersDiffer"].as_u64().unwrap() as usize;
    assert!(changed > 100, "{changed} clusters change");
    let covered: usize = groups
        .iter()
        .map(|g| g["clusters"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        covered, changed,
        "each changed cluster in exactly one group"
    );
    assert!(
        groups.len() <= 6,
        "one group per registry variant, not per cluster: {}",
        groups.len()
    );
    for g in groups {
        let places = g["places"].as_array().unwrap();
        assert!(
            places.iter().any(|p| p["kind"] == "subtree"),
            "{}",
            serde_json::to_string(&g["places"]).unwrap()
        );
        assert!(places.len() <= 8, "placed compactly: {}", places.len());
    }
    assert_eq!(md.matches("<details>").count(), groups.len());
    assert!(md.contains(" subtree ("), "{md}");
    let (_, flat, _) = canopy(&[
        "diff",
        p(&fleet),
        "--base",
        "HEAD",
        "-o",
        "markdown",
        "--no-group",
    ]);
    assert!(
        flat.contains("omitted to keep this comment under GitHub's size limit"),
        "the per-cluster form shows a fraction of the clusters"
    );
    assert!(flat.len() < 65_536, "{} characters", flat.len());
}

/// With a staged rollout, each group says which stage it reaches first;
/// `apply --dry-run` lists each distinct change once with where it lands.
#[test]
fn groups_say_their_first_stage_and_a_dry_run_lists_them() {
    let (_tmp, fleet) = example_repo();
    let wl = fleet.join("workloads/web/workload.yaml");
    let text = std::fs::read_to_string(&wl).unwrap();
    std::fs::write(
        &wl,
        format!("{text}  rollout:\n    stages:\n      - {{name: canary, clusters: {{names: [staging]}}}}\n      - {{name: rest, percent: 100}}\n"),
    )
    .unwrap();
    let repo = git2::Repository::open(fleet.parent().unwrap()).unwrap();
    commit_all(&repo, "rollout");
    edit(
        &fleet,
        "workloads/web/deployment.yaml",
        "web:1.4.2",
        "web:1.4.3",
    );
    let md = comment(&fleet);
    assert!(
        md.contains("Lands first in rollout stage `canary` of `web`."),
        "{md}"
    );
    assert!(
        md.contains("Lands first in rollout stage `rest` of `web`."),
        "{md}"
    );
    let (code, text, _) = canopy(&["diff", p(&fleet), "--base", "HEAD"]);
    assert_eq!(code, 1);
    assert!(
        text.contains("# ~ Deployment.apps shop/web (one of 2 variants) on 3 cluster(s): us subtree (2), staging; lands first in stage canary\n"),
        "{text}"
    );

    let state = tempfile::tempdir().unwrap();
    let (code, out, _) = canopy(&["apply", p(&fleet), "--state", p(state.path()), "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("would change, each distinct change once (9 in all):\n")
            && out
                .contains("  + Namespace monitoring on 12 cluster(s): hub subtree (11), staging\n"),
        "{out}"
    );
    let (_, json, _) = canopy(&[
        "apply",
        p(&fleet),
        "--state",
        p(state.path()),
        "--dry-run",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["review"]["groups"].as_array().unwrap().len(), 9);
}

/// The generated 1,000-cluster fleet with a replica change of a Divided
/// workload, a new workload and a removed cluster in one diff: the summary
/// says each, and the comment stays under the limit, saying what it left
/// out. The image change alone is a golden comment.
#[test]
fn a_thousand_clusters_review_every_kind_of_change_within_the_limit() {
    let (_tmp, fleet) = synth_repo();
    let app = fleet.join("workloads/w03/app.yaml");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, text.replace(":1.0.3", ":1.0.4")).unwrap();
    golden("review-1000-image.md", &comment(&fleet));
    std::fs::write(&app, text).unwrap();

    // w01 is Divided by static weights: 3000 replicas become 3600.
    edit(
        &fleet,
        "workloads/w01/app.yaml",
        "replicas: 3000",
        "replicas: 3600",
    );
    // A new workload on every cluster.
    let w9 = fleet.join("workloads/w99");
    std::fs::create_dir_all(&w9).unwrap();
    std::fs::write(
        w9.join("workload.yaml"),
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: w99}\nspec:\n  namespace: ns-w99\n",
    )
    .unwrap();
    std::fs::write(
        w9.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: w99}\ndata: {on: \"yes\"}\n",
    )
    .unwrap();
    // The last cluster document of the last file: a leaf.
    let mut files: Vec<_> = std::fs::read_dir(fleet.join("clusters"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let last = files.last().unwrap();
    let text = std::fs::read_to_string(last).unwrap();
    let cut = text.rfind("---\n").unwrap();
    let gone = text[cut..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: "))
        .unwrap()
        .to_string();
    std::fs::write(last, &text[..cut]).unwrap();

    let md = comment(&fleet);
    // w99 tolerates no taint: it joins every cluster without one.
    assert!(
        md.contains("| `w99` | 872 | 872 | 0 | 0 | ConfigMap |  | 872 | 0 |"),
        "{md}"
    );
    let w01 = md.lines().find(|l| l.starts_with("| `w01` |")).unwrap();
    assert!(w01.contains("→") && w01.contains("Deployment"), "{w01}");
    assert!(
        md.contains(&format!("- {gone} (left the fleet): orphaned")),
        "{gone}: {md}"
    );
    // The removed leaf's share moved to its siblings (w02 divides by
    // capacity over the edge), and few distinct changes cover it all.
    assert!(md.lines().any(|l| l.starts_with("| `w02` |")), "{md}");
    let groups = md.matches("<details>").count();
    assert!((3..=12).contains(&groups), "{groups} groups\n{md}");
}
