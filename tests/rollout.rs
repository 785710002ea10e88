//! Staged rollouts through the real `canopy` binary on the local backend,
//! with the fleet in a Git repository (a rollback renders an old commit):
//! a stage that fails its health gate stops the rollout and is rolled back;
//! a manual pause waits for `canopy rollout continue`; a timed pause for
//! its time; `watch` goes on by itself.

mod common;
use common::*;

use std::path::Path;

const CLUSTERS: &str = "apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: hub}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: r1}
spec: {parent: hub}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: r2}
spec: {parent: hub}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: r3}
spec: {parent: hub}
";

fn configmap(version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app}}\ndata: {{version: {version}}}\n"
    )
}

/// A repository with four clusters and workload `app` (one ConfigMap) whose
/// workload document is `workload`.
fn fleet_repo(dir: &Path, workload: &str, extra: &[(&str, &str)]) -> git2::Repository {
    let repo = init_main(dir);
    write(dir, "clusters/c.yaml", CLUSTERS);
    write(dir, "workloads/app/workload.yaml", workload);
    write(dir, "workloads/app/cm.yaml", &configmap("v1"));
    for (p, t) in extra {
        write(dir, p, t);
    }
    commit_all(&repo, "v1");
    repo
}

fn write(dir: &Path, path: &str, text: &str) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The `version` and revision annotation of `app` on each cluster.
fn versions(state: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for c in ["hub", "r1", "r2", "r3"] {
        // A cluster never written has no file yet.
        let v: serde_json::Value = std::fs::read(state.join("clusters").join(format!("{c}.json")))
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_default();
        let obj = &v["objects"][obj_id("", "ConfigMap", "demo", "app")];
        out.push((
            c.to_string(),
            obj["data"]["version"].as_str().unwrap_or("-").to_string(),
            obj["metadata"]["annotations"]["canopy.dev/revision"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
        ));
    }
    out
}

fn at(state: &Path, cluster: &str) -> String {
    versions(state)
        .into_iter()
        .find(|(c, _, _)| c == cluster)
        .map(|(_, v, _)| v)
        .unwrap()
}

fn status_json(home: &Path, dir: &str, state: &str) -> serde_json::Value {
    let (code, out, err) = canopy_in(
        home,
        &[],
        &[
            "rollout", "status", dir, "app", "--state", state, "-o", "json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

fn stage_states(v: &serde_json::Value) -> Vec<(String, String)> {
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const THREE_STAGES: &str = "apiVersion: canopy.dev/v1alpha1
kind: Workload
metadata: {name: app}
spec:
  namespace: demo
  rollout:
    stages:
      - {name: canary, clusters: {names: [hub, r1]}}
      - {name: second, clusters: {names: [r2]}}
      - {name: rest, percent: 100}
    rollback: auto
";

#[test]
fn a_stage_that_fails_its_health_gate_stops_the_rollout_and_is_rolled_back() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    let state = home.path().join("state");
    let (d, st) = (s(&dir), s(&state));
    let repo = fleet_repo(&dir, THREE_STAGES, &[]);
    let v1 = repo
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();

    // The first rollout: every stage changes something and is healthy.
    let (code, out, err) = canopy_in(home.path(), &[], &["apply", d, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("rollout app: rollout of {v1} complete")),
        "{out}"
    );

    // v2 breaks on r2 only (the second stage): an override marks it
    // unhealthy there, as a bad config for one region would.
    write(&dir, "workloads/app/cm.yaml", &configmap("v2"));
    write(
        &dir,
        "overrides/bad.yaml",
        "apiVersion: canopy.dev/v1alpha1\nkind: Override\nmetadata: {name: bad}\nspec:\n  clusters: {names: [r2]}\n  patches:\n    - mergePatch: {metadata: {annotations: {canopy.dev/local-health: \"unhealthy: crash loop\"}}}\n",
    );
    let v2 = commit_all(&repo, "v2");
    let (code, out, err) = canopy_in(home.path(), &[], &["apply", d, "--state", st]);
    assert_eq!(code, 4, "a failed health gate fails the apply\n{out}{err}");
    assert!(
        out.contains("rollout app: canary healthy; second starts"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "rollout app FAILED: second: 1 cluster(s) unhealthy, 0 allowed (maxUnavailable); rolled back 1 cluster(s) of second to {v1} (r2: ~ ConfigMap demo/app); stages after second did not start"
        )),
        "{out}"
    );
    // Canary at v2; r2 back at v1, written by the v1 revision; r3 never
    // started.
    assert_eq!(
        versions(&state),
        vec![
            ("hub".into(), "v2".into(), v2.clone()),
            ("r1".into(), "v2".into(), v2.clone()),
            ("r2".into(), "v1".into(), v1.clone()),
            ("r3".into(), "v1".into(), v1.clone()),
        ]
    );
    let v = status_json(home.path(), d, st);
    assert_eq!(v["phase"], "rolled back");
    assert_eq!(v["revision"], v2.as_str());
    assert_eq!(v["from"], v1.as_str());
    assert_eq!(
        stage_states(&v),
        vec![
            ("canary".into(), "healthy".into()),
            ("second".into(), "rolled back".into()),
            ("rest".into(), "pending".into())
        ]
    );
    let r2 = &v["stages"][1]["clusters"][0];
    assert_eq!(r2["cluster"], "r2");
    assert_eq!(r2["state"], "rolled back");
    assert!(
        r2["detail"]
            .as_str()
            .unwrap()
            .contains("ConfigMap demo/app: unhealthy: crash loop"),
        "{r2}"
    );
    let (_, text, _) = canopy_in(
        home.path(),
        &[],
        &["rollout", "status", d, "app", "--state", st],
    );
    assert!(
        text.starts_with(&format!(
            "rollout of app: rolled back (revision {v2}, from {v1})\n"
        )),
        "{text}"
    );

    // Running again changes nothing (r2 and r3 are held at v1) and still
    // fails, so a CI re-run does not turn green by itself.
    let before = state_files(&state);
    let (code, out, _) = canopy_in(home.path(), &[], &["apply", d, "--state", st]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("no changes: 4 cluster(s) in sync"), "{out}");
    assert!(out.contains("rollout app FAILED: second of"), "{out}");
    assert_eq!(state_files(&state), before);
    // Nor is a held workload drift.
    let (code, out, _) = canopy_in(home.path(), &[], &["diff", d, "--state", st]);
    assert_eq!(code, 0, "{out}");

    // A fix starts a new rollout from v1 (v2 never completed), to the end.
    std::fs::remove_file(dir.join("overrides/bad.yaml")).unwrap();
    let v3 = commit_all(&repo, "v3: fixed");
    let (code, out, err) = canopy_in(home.path(), &[], &["apply", d, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("rollout app: rollout of {v3} complete")),
        "{out}"
    );
    assert!(versions(&state).iter().all(|(_, v, _)| v == "v2"));
    let v = status_json(home.path(), d, st);
    assert_eq!(v["phase"], "complete");
    assert_eq!(v["from"], v1.as_str());
}

#[test]
fn a_manual_pause_waits_for_rollout_continue_and_a_timed_one_for_its_time() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    let state = home.path().join("state");
    let (d, st) = (s(&dir), s(&state));
    // The rollout comes from the fleet's Defaults document.
    let workload = "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: app}\nspec: {namespace: demo}\n";
    let defaults = "apiVersion: canopy.dev/v1alpha1\nkind: Defaults\nmetadata: {name: defaults}\nspec:\n  rollout:\n    pause: manual\n    stages:\n      - {name: canary, clusters: {names: [hub]}}\n      - {percent: 50}\n      - {percent: 100}\n";
    let repo = fleet_repo(&dir, workload, &[("defaults.yaml", defaults)]);
    let run = |args: &[&str]| canopy_in(home.path(), &[], args);

    let (code, out, err) = run(&["apply", d, "--state", st]);
    assert_eq!(code, 0, "a pause is not a failure\n{out}{err}");
    assert!(
        out.contains("rollout app: canary is healthy; `canopy rollout continue` starts stage-2"),
        "{out}"
    );
    assert_eq!(at(&state, "hub"), "v1");
    assert!(!state.join("clusters/r1.json").exists(), "r1 is held back");
    let v = status_json(home.path(), d, st);
    assert_eq!(v["phase"], "paused");
    assert_eq!(
        stage_states(&v),
        vec![
            ("canary".into(), "healthy".into()),
            ("stage-2".into(), "pending".into()),
            ("stage-3".into(), "pending".into())
        ]
    );
    // Applying again does not go on.
    let (code, out, _) = run(&["apply", d, "--state", st]);
    assert_eq!(code, 0);
    assert!(!state.join("clusters/r1.json").exists(), "{out}");

    // Continue: stage-2 (half of r1..r3, rounded up: r1, r2) pauses again.
    let (code, out, err) = run(&["rollout", "continue", d, "app", "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rollout app: continued: stage-2"), "{out}");
    assert_eq!(
        (at(&state, "r1"), at(&state, "r2")),
        ("v1".into(), "v1".into())
    );
    assert!(!state.join("clusters/r3.json").exists());
    let (code, out, _) = run(&["rollout", "continue", d, "app", "--state", st, "-o", "json"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(at(&state, "r3"), "v1");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["workload"] == "app"
                && e["message"] == "continued: stage-3"
                && e["failed"] == false),
        "{v}"
    );
    assert_eq!(v["summary"]["created"], 1, "r3's ConfigMap");
    assert_eq!(status_json(home.path(), d, st)["phase"], "complete");
    let (code, _, err) = run(&["rollout", "continue", d, "app", "--state", st]);
    assert_eq!(code, 2);
    assert!(
        err.contains("the rollout is complete: there is nothing to continue"),
        "{err}"
    );

    // A timed pause: v2 reaches the canary, the rest waits 2s.
    write(
        &dir,
        "defaults.yaml",
        &defaults.replace("pause: manual", "pause: 2s"),
    );
    write(&dir, "workloads/app/cm.yaml", &configmap("v2"));
    commit_all(&repo, "v2");
    let (code, out, _) = run(&["apply", d, "--state", st]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("canary is healthy; stage-2 starts after 2s"),
        "{out}"
    );
    assert_eq!(at(&state, "hub"), "v2");
    assert_eq!(at(&state, "r1"), "v1");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, out, _) = run(&["apply", d, "--state", st]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pause over: stage-2 starts"), "{out}");
    assert_eq!(at(&state, "r1"), "v2");
    assert_eq!(at(&state, "r3"), "v1", "stage-2 pauses again");
}

#[test]
fn rollout_status_and_continue_explain_bad_requests() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    let state = home.path().join("state");
    let (d, st) = (s(&dir), s(&state));
    fleet_repo(&dir, THREE_STAGES, &[]);
    let run = |args: &[&str]| canopy_in(home.path(), &[], args);
    let (code, out, _) = run(&["rollout", "status", d, "app", "--state", st]);
    assert_eq!(code, 0);
    assert!(out.starts_with("rollout of app: not started\n"), "{out}");
    let (code, _, err) = run(&["rollout", "continue", d, "app", "--state", st]);
    assert_eq!(code, 2);
    assert!(err.contains("no rollout of app is recorded"), "{err}");
    let (code, _, err) = run(&["rollout", "status", d, "nope", "--state", st]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown workload \"nope\""), "{err}");
}

/// Rollout keys written before canopy used a stable hash (16 bare hex
/// digits from std's `DefaultHasher`) are read without error: the recorded
/// rollout restarts once, finds every stage already applied, and completes in
/// the same run without writing an object.
#[test]
fn a_rollout_recorded_with_the_old_hash_restarts_once_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    let state = home.path().join("state");
    let (d, st) = (s(&dir), s(&state));
    fleet_repo(&dir, THREE_STAGES, &[]);
    let (code, out, err) = canopy_in(home.path(), &[], &["apply", d, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    let file = state.join("rollouts.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let target = v["workloads"]["app"]["target"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(target.starts_with("xxh3:"), "{target}");
    v["workloads"]["app"]["target"] = "9f3c2a61b07e44d5".into();
    std::fs::write(&file, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let clusters = |dir: &Path| {
        std::fs::read_dir(dir.join("clusters"))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect::<Vec<_>>()
    };
    let before = clusters(&state);

    let (code, out, err) = canopy_in(home.path(), &[], &["apply", d, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no changes: 4 cluster(s) in sync"), "{out}");
    assert!(out.contains("rollout app: rollout of"), "{out}");
    assert!(out.contains("complete"), "{out}");
    assert_eq!(clusters(&state), before, "no object was written");
    let v = status_json(home.path(), d, st);
    assert_eq!(v["phase"], "complete");
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        again["workloads"]["app"]["target"].as_str(),
        Some(target.as_str())
    );
}

/// A run narrowed by `--cluster` touches only those clusters: a stage
/// member outside it stays pending, and the stage's gate waits for a run
/// that covers the stage.
#[test]
fn a_selected_run_leaves_the_rest_of_a_stage_pending() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    let state = home.path().join("state");
    let (d, st) = (s(&dir), s(&state));
    fleet_repo(&dir, THREE_STAGES, &[]);
    let (code, out, err) = canopy_in(
        home.path(),
        &[],
        &["apply", d, "--state", st, "--cluster", "hub"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(at(&state, "hub"), "v1");
    assert_eq!(at(&state, "r1"), "-", "r1 was not selected");
    let v = status_json(home.path(), d, st);
    let canary: Vec<(String, String)> = v["stages"][0]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["cluster"].as_str().unwrap().to_string(),
                c["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        canary,
        vec![
            ("hub".to_string(), "applying".to_string()),
            ("r1".to_string(), "pending".to_string())
        ]
    );
    // The whole fleet: the canary passes and the rollout completes.
    let (code, out, err) = canopy_in(home.path(), &[], &["apply", d, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(status_json(home.path(), d, st)["phase"], "complete");
}
