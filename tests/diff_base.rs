//! `canopy diff --base REF`: the fleet at a Git revision (read from the
//! object database) against the working tree, with no cluster at all.

mod common;
use common::*;

use std::path::Path;

/// A repository holding fleet-example in `fleet/`, committed once.
fn example_repo() -> (tempfile::TempDir, git2::Repository, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(tmp.path()).unwrap();
    let fleet = tmp.path().join("fleet");
    copy_dir(&repo_root().join("fleet-example"), &fleet);
    commit_all(&repo, "fleet");
    (tmp, repo, fleet)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn no_change_no_diff() {
    let (_tmp, _repo, fleet) = example_repo();
    let (code, out, err) = canopy(&["diff", p(&fleet), "--base", "HEAD"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.ends_with("0 cluster(s) differ: +0 ~0 -0; 12 in sync, 0 failed, 0 skipped\n"),
        "{out}"
    );
    assert!(!fleet.join(".canopy").exists(), "--base needs no state");
}

#[test]
fn working_tree_changes_show_against_the_base() {
    let (_tmp, repo, fleet) = example_repo();
    // Scale web from 12 to 16 replicas and drop the staging cluster.
    let dep = fleet.join("workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&dep)
        .unwrap()
        .replace("replicas: 12", "replicas: 16");
    std::fs::write(&dep, text).unwrap();
    remove_staging(&fleet);

    let (code, out, err) = canopy(&["diff", p(&fleet), "--base", "HEAD"]);
    assert_eq!(code, 1, "{out}{err}");
    // Each changed cluster shows its replicas, headed by the revision and
    // the working tree.
    assert!(
        out.contains(
            "--- HEAD Deployment.apps shop/web\n+++ working-tree Deployment.apps shop/web"
        ),
        "{out}"
    );
    // As `apply` would: the cluster that left is reported with what it
    // still holds, not silently emptied.
    assert!(out.contains("# staging (left the fleet): orphaned: the cluster left the fleet and still holds 8 object(s)"), "{out}");
    let (code, md, _) = canopy(&["diff", p(&fleet), "--base", "HEAD", "-o", "markdown"]);
    assert_eq!(code, 1);
    assert!(
        md.contains("- staging (left the fleet): orphaned: the cluster left the fleet and still holds 8 object(s)"),
        "{md}"
    );
    // Scaling web divides 16 where it divided 12: the summary says so.
    assert!(
        md.contains("| `web` | 4 | 0 | 4 | 0 | Deployment | 9 → 16 |"),
        "{md}"
    );
    assert!(
        !md.contains("example-token"),
        "no Secret values in the PR comment"
    );

    // Committing the change makes HEAD equal to the working tree again, and
    // HEAD~1 still shows it.
    commit_all(&repo, "scale web, drop staging");
    assert_eq!(canopy(&["diff", p(&fleet), "--base", "HEAD"]).0, 0);
    // A removed cluster alone is a difference too.
    let only_removal = canopy(&["diff", p(&fleet), "--base", "HEAD~1", "--cluster", "hub"]);
    assert_eq!(
        only_removal.0, 0,
        "--cluster hub leaves orphans out: {}",
        only_removal.1
    );
    assert_eq!(canopy(&["diff", p(&fleet), "--base", "HEAD~1"]).0, 1);
}

#[test]
fn unknown_ref_and_missing_fleet_are_clear_errors() {
    let (_tmp, repo, fleet) = example_repo();
    let (code, _, err) = canopy(&["diff", p(&fleet), "--base", "no-such-branch"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown revision \"no-such-branch\""), "{err}");
    assert!(
        err.contains("help: pass a branch, tag or commit that exists"),
        "{err}"
    );
    // A fleet folder that did not exist at the base revision.
    let moved = fleet.parent().unwrap().join("fleet2");
    std::fs::rename(&fleet, &moved).unwrap();
    let (code, _, err) = canopy(&["diff", p(&moved), "--base", "HEAD"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("the fleet folder \"fleet2\" does not exist at HEAD"),
        "{err}"
    );
    drop(repo);
    let outside = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("fleet-example"), outside.path());
    let (code, _, err) = canopy(&["diff", p(outside.path()), "--base", "HEAD"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not inside a Git repository"), "{err}");
}

#[test]
fn an_invalid_base_is_reported_as_such() {
    let (_tmp, repo, fleet) = example_repo();
    std::fs::write(fleet.join("clusters/broken.yaml"), "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: x}\nspec: {parent: ghost}\n").unwrap();
    commit_all(&repo, "broken");
    std::fs::remove_file(fleet.join("clusters/broken.yaml")).unwrap();
    let (code, _, err) = canopy(&["diff", p(&fleet), "--base", "HEAD"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("clusters/broken.yaml:4: spec.parent: unknown parent \"ghost\""),
        "{err}"
    );
    assert!(err.contains("the fleet at HEAD ("), "{err}");
}

#[test]
fn a_removed_cluster_alone_is_a_difference() {
    let (_tmp, _repo, fleet) = example_repo();
    // us-edge-sfo runs only the Duplicated node-agent: removing it changes
    // no other cluster.
    let us = fleet.join("clusters/us.yaml");
    let text = std::fs::read_to_string(&us).unwrap();
    let cut = text
        .rfind(
            "---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: us-edge-sfo",
        )
        .unwrap();
    std::fs::write(&us, &text[..cut]).unwrap();
    let (code, out, err) = canopy(&["diff", p(&fleet), "--base", "HEAD"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("# us-edge-sfo (left the fleet): orphaned"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "0 cluster(s) differ: +0 ~0 -0; 11 in sync, 0 failed, 0 skipped; 1 left the fleet\n"
        ),
        "{out}"
    );
}
