//! Render fingerprints (what `watch` uses to skip clusters a change does
//! not touch): equal fingerprints must mean equal rendered objects, and a
//! change must move only the fingerprints of the clusters it reaches.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::Path;

use canopy::core::render::{render_all, Renderer};
use canopy::source::input::load_checked;

/// cluster → (fingerprint, rendered objects as JSON text).
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, String)> {
    let (checked, _) = load_checked(dir, Some("fp")).expect("valid fleet");
    let r = Renderer::new(&checked);
    let fps = r.fingerprints();
    let rendered = render_all(&r, None).expect("renders");
    rendered
        .clusters
        .into_iter()
        .map(|(c, objs)| {
            let values: Vec<&serde_json::Value> = objs.iter().map(|o| &o.value).collect();
            (
                checked.topo.name(c).to_string(),
                (fps[c], serde_json::to_string(&values).unwrap()),
            )
        })
        .collect()
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

/// Applies `change` to a copy of fleet-example; checks that every cluster
/// whose fingerprint stayed renders exactly as before; returns the clusters
/// whose fingerprint moved.
fn moved_by(change: impl Fn(&Path)) -> Vec<String> {
    let (_t1, base) = example_copy();
    let (_t2, changed) = example_copy();
    change(&changed);
    let before = snapshot(&base);
    let after = snapshot(&changed);
    let mut moved = Vec::new();
    for (cluster, (fp, objs)) in &after {
        match before.get(cluster) {
            Some((old_fp, old_objs)) if old_fp == fp => {
                assert_eq!(
                    old_objs, objs,
                    "{cluster}: same fingerprint, different render"
                )
            }
            _ => moved.push(cluster.clone()),
        }
    }
    moved
}

#[test]
fn an_override_moves_only_the_clusters_it_selects() {
    let moved = moved_by(|d| {
        edit(
            d,
            "overrides/staging.yaml",
            "revisionHistoryLimit: 2",
            "revisionHistoryLimit: 3",
        )
    });
    assert_eq!(moved, vec!["staging"]);
}

#[test]
fn inherited_values_move_their_subtree_only() {
    let moved = moved_by(|d| {
        edit(
            d,
            "clusters/eu.yaml",
            "domain: eu.example.com",
            "domain: eu2.example.com",
        )
    });
    assert!(moved.iter().all(|c| c.starts_with("eu")), "{moved:?}");
    assert!(moved.contains(&"eu-west-1".to_string()), "{moved:?}");
}

#[test]
fn a_new_total_moves_only_the_clusters_whose_replicas_move() {
    let moved = moved_by(|d| edit(d, "workloads/api/workload.yaml", "total: 24", "total: 25"));
    assert_eq!(
        moved.len(),
        1,
        "one more replica lands on one cluster: {moved:?}"
    );
}

#[test]
fn a_manifest_edit_moves_every_cluster_of_its_workload() {
    let moved = moved_by(|d| {
        edit(
            d,
            "workloads/web/deployment.yaml",
            "image: ",
            "imagePullPolicy: Always\n          image: ",
        )
    });
    assert_eq!(
        moved,
        vec![
            "eu-central-1",
            "eu-west-1",
            "staging",
            "us-east-1",
            "us-west-2"
        ],
    );
}

#[test]
fn a_divided_manifests_replicas_move_only_the_clusters_whose_share_moves() {
    // web divides its Deployment's own 12 replicas: 12 → 13 gives one more
    // replica to one cluster, and the manifest's value never reaches any.
    let moved = moved_by(|d| {
        edit(
            d,
            "workloads/web/deployment.yaml",
            "replicas: 12",
            "replicas: 13",
        )
    });
    assert_eq!(moved.len(), 1, "{moved:?}");
}

#[test]
fn a_new_cluster_moves_itself_and_what_its_arrival_redivides() {
    let moved = moved_by(|d| {
        std::fs::write(
            d.join("clusters/us-edge-la.yaml"),
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: us-edge-la\n  labels: {env: prod, provider: onprem, region: us, tier: edge}\nspec:\n  parent: us-west-2\n",
        )
        .unwrap();
    });
    assert_eq!(
        moved,
        vec!["us-edge-la"],
        "an edge site takes no Divided replicas here"
    );
}

#[test]
fn label_and_placement_changes_are_sound() {
    // Whatever moves, no cluster with an unchanged fingerprint renders
    // differently (checked inside moved_by).
    moved_by(|d| {
        edit(
            d,
            "clusters/us.yaml",
            "provider: aws, region: us}",
            "provider: gcp, region: us}",
        )
    });
    moved_by(|d| edit(d, "workloads/web/workload.yaml", "weight: 2", "weight: 5"));
    moved_by(|d| {
        edit(
            d,
            "workloads/node-agent/daemonset.yaml.j2",
            "app: node-agent",
            "app: agent",
        )
    });
}
