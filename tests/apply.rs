//! Apply, diff and status on the embedded local backend, run through the
//! real `canopy` binary: idempotence, drift, prune, ordering down the tree,
//! and faults (unreachable, corrupt or locked state, render errors, crashes).

mod common;
use common::*;

use serde_json::json;

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn apply_then_noop_reapply_writes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let st = s(state.path());
    let (code, out, err) = canopy(&["apply", "fleet-example", "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("applied: 66 created, 0 updated, 0 deleted in 12 cluster(s)"),
        "{out}"
    );
    let before = state_files(state.path());
    assert_eq!(before.len(), 12);
    let (code, out, _) = canopy(&["apply", "fleet-example", "--state", st]);
    assert_eq!(code, 0);
    assert!(
        out.ends_with("no changes: 12 cluster(s) in sync\n"),
        "{out}"
    );
    assert_eq!(
        before,
        state_files(state.path()),
        "a no-op apply must not touch state (resourceVersions stay)"
    );
    let (code, out, _) = canopy(&["diff", "fleet-example", "--state", st]);
    assert_eq!(code, 0, "{out}");
}

/// `apply -o json` reports what the text report says, for scripts; with
/// stderr not a terminal no progress line is drawn.
#[test]
fn apply_json_reports_every_cluster_and_the_totals() {
    let state = tempfile::tempdir().unwrap();
    let st = s(state.path());
    let (code, out, err) = canopy(&[
        "apply",
        "fleet-example",
        "--state",
        st,
        "--dry-run",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !err.contains('\r'),
        "no progress line off a terminal: {err:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dryRun"], true);
    assert_eq!(v["summary"]["created"], 66);
    assert_eq!(v["summary"]["clustersChanged"], 12);
    assert_eq!(v["clusters"].as_array().unwrap().len(), 12);
    assert_eq!(v["clusters"][0]["name"], "hub");
    assert_eq!(v["clusters"][0]["status"], "changed");
    assert!(
        state_files(state.path()).is_empty(),
        "a dry run wrote nothing"
    );

    let (code, out, err) = canopy(&["apply", "fleet-example", "--state", st, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dryRun"], false);
    let web = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "eu-west-1")
        .unwrap();
    assert!(web["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["action"] == "create" && c["object"]["kind"] == "Deployment"));
    let (_, out, _) = canopy(&["apply", "fleet-example", "--state", st, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["unchanged"], 12);
    assert!(v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "in-sync"));
}

#[test]
fn objects_get_server_metadata_and_parents_apply_first() {
    let state = tempfile::tempdir().unwrap();
    let (code, out, _) = canopy(&["apply", "fleet-example", "--state", s(state.path())]);
    assert_eq!(code, 0);
    // Tree order in the report: hub before eu before eu-central-1.
    let pos = |c: &str| {
        out.find(&format!("{c}: "))
            .unwrap_or_else(|| panic!("{c} missing:\n{out}"))
    };
    assert!(pos("hub") < pos("  eu") && pos("  eu") < pos("    eu-central-1"));
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.path().join("clusters/eu-west-1.json")).unwrap(),
    )
    .unwrap();
    let web = &v["objects"][obj_id("apps", "Deployment", "shop", "web")];
    assert_eq!(web["spec"]["replicas"], 3);
    for f in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
        assert!(!web["metadata"][f].is_null(), "{f} missing");
    }
    assert_eq!(
        web["metadata"]["labels"]["canopy.dev/fleet"],
        "fleet-example"
    );
    assert!(v["lastApplied"]["revision"].is_string());
}

#[test]
fn drift_is_reported_exactly_and_apply_restores_it() {
    let state = tempfile::tempdir().unwrap();
    let st = s(state.path());
    assert_eq!(canopy(&["apply", "fleet-example", "--state", st]).0, 0);
    edit_state(state.path(), "us-east-1", |v| {
        v["objects"][obj_id("apps", "Deployment", "shop", "web")]["spec"]["replicas"] = json!(9);
    });
    let (code, out, _) = canopy(&["diff", "fleet-example", "--state", st]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("# ~ Deployment.apps shop/web on 1 cluster(s): us-east-1\n"),
        "{out}"
    );
    assert!(out.contains("-  replicas: 9\n+  replicas: 3\n"), "{out}");
    assert_eq!(
        out.matches("\n-  ").count() + out.matches("\n+  ").count(),
        2,
        "only the drifted field differs:\n{out}"
    );
    let (code, out, _) = canopy(&["diff", "fleet-example", "--state", st, "-o", "json"]);
    assert_eq!(code, 1);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["summary"]["updated"], 1);
    let (code, _, _) = canopy(&["status", "fleet-example", "--state", st]);
    assert_eq!(code, 0);
    let (_, status, _) = canopy(&["status", "fleet-example", "--state", st]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("us-east-1") && l.contains("drifted (1)")),
        "{status}"
    );
    let (code, out, _) = canopy(&["apply", "fleet-example", "--state", st]);
    assert_eq!(code, 0);
    assert!(out.contains("us-east-1: applied +0 ~1 -0"), "{out}");
    assert_eq!(canopy(&["diff", "fleet-example", "--state", st]).0, 0);
}

#[test]
fn secrets_never_appear_in_diff_output() {
    let state = tempfile::tempdir().unwrap();
    let st = s(state.path());
    // Before the first apply every object is a create: the Secret is shown whole.
    for fmt in ["text", "json", "markdown"] {
        let (code, out, _) = canopy(&["diff", "fleet-example", "--state", st, "-o", fmt]);
        assert_eq!(code, 1);
        assert!(
            !out.contains("example-token"),
            "{fmt} leaks a Secret value:\n{out}"
        );
    }
    assert_eq!(canopy(&["apply", "fleet-example", "--state", st]).0, 0);
    edit_state(state.path(), "staging", |v| {
        v["objects"][obj_id("", "Secret", "shop", "platform-secrets")]["stringData"]["API_TOKEN"] =
            json!("leaked-value");
    });
    for fmt in ["text", "json", "markdown"] {
        let (code, out, _) = canopy(&["diff", "fleet-example", "--state", st, "-o", fmt]);
        assert_eq!(code, 1);
        assert!(
            !out.contains("leaked-value") && !out.contains("example-token"),
            "{fmt}:\n{out}"
        );
        assert!(
            out.contains("API_TOKEN: +"),
            "{fmt} should show which key changed:\n{out}"
        );
    }
    // Nor in the stored state's diff after apply, nor in apply's report.
    let (_, out, err) = canopy(&["apply", "fleet-example", "--state", st]);
    assert!(!out.contains("leaked-value") && !err.contains("leaked-value"));
}

#[test]
fn prune_deletes_only_what_canopy_owns_and_may_be_disabled() {
    let (_tmp, fleet) = example_copy();
    let state = tempfile::tempdir().unwrap();
    let (f, st) = (s(&fleet), s(state.path()));
    assert_eq!(canopy(&["apply", f, "--state", st]).0, 0);
    // Someone else's object in the same cluster, and one canopy must keep.
    edit_state(state.path(), "staging", |v| {
        v["objects"][obj_id("", "ConfigMap", "shop", "theirs")] = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs", "namespace": "shop"}});
        let svc = &mut v["objects"][obj_id("", "Service", "shop", "web")];
        svc["metadata"]["annotations"]["canopy.dev/prune"] = json!("disabled");
    });
    std::fs::remove_file(fleet.join("workloads/web/ingress.yaml.j2")).unwrap();
    std::fs::remove_file(fleet.join("workloads/web/service.yaml")).unwrap();
    let (code, out, _) = canopy(&["apply", f, "--state", st, "--prune=false"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("no changes"),
        "--prune=false deletes nothing:\n{out}"
    );
    let (code, out, _) = canopy(&["apply", f, "--state", st]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("- Ingress.networking.k8s.io shop/web"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("clusters/staging.json")).unwrap())
            .unwrap();
    let objs = v["objects"].as_object().unwrap();
    assert!(!objs.contains_key(&obj_id("networking.k8s.io", "Ingress", "shop", "web")));
    assert!(
        objs.contains_key(&obj_id("", "ConfigMap", "shop", "theirs")),
        "not owned: never deleted"
    );
    assert!(
        objs.contains_key(&obj_id("", "Service", "shop", "web")),
        "prune disabled: kept"
    );
    // Services on other clusters had no annotation and were pruned.
    let eu: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.path().join("clusters/eu-west-1.json")).unwrap(),
    )
    .unwrap();
    assert!(!eu["objects"]
        .as_object()
        .unwrap()
        .contains_key(&obj_id("", "Service", "shop", "web")));
}

#[test]
fn a_failing_parent_skips_its_subtree_and_the_next_apply_completes() {
    let state = tempfile::tempdir().unwrap();
    let st = s(state.path());
    std::fs::create_dir_all(state.path().join("clusters")).unwrap();
    std::fs::write(
        state.path().join("clusters/eu.json"),
        r#"{"unreachable": true}"#,
    )
    .unwrap();
    let (code, out, _) = canopy(&["apply", "fleet-example", "--state", st]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("  eu: FAILED: cluster eu is unreachable"),
        "{out}"
    );
    assert!(
        out.contains("objects changed before the failure: none"),
        "{out}"
    );
    for child in ["eu-central-1", "eu-west-1"] {
        assert!(
            out.contains(&format!("    {child}: skipped: parent eu failed")),
            "{out}"
        );
    }
    for grandchild in ["eu-edge-berlin", "eu-edge-paris"] {
        assert!(
            out.contains(&format!("{grandchild}: skipped: parent")),
            "{out}"
        );
    }
    assert!(out.contains("  us: applied +"), "siblings go on:\n{out}");
    assert!(out.contains("staging: applied +"), "{out}");
    assert!(
        !state.path().join("clusters/eu-west-1.json").exists(),
        "a skipped cluster is not touched"
    );
    // The cluster comes back: the next apply does exactly the rest.
    std::fs::write(state.path().join("clusters/eu.json"), "{}").unwrap();
    let (code, out, _) = canopy(&["apply", "fleet-example", "--state", st]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("applied: 28 created, 0 updated, 0 deleted in 5 cluster(s); 7 unchanged"),
        "{out}"
    );
}

/// `diff` only reads, so a parent that cannot be diffed hides nothing
/// below it (issue 16, item 4): its children's drift is still shown, and
/// the parent's failure beside it, with exit 4. `apply` still skips them.
#[test]
fn diff_reads_the_children_of_a_parent_that_failed() {
    let state = tempfile::tempdir().unwrap();
    let st = s(state.path());
    assert_eq!(canopy(&["apply", "fleet-example", "--state", st]).0, 0);
    std::fs::write(state.path().join("clusters/us.json"), "{\"objects\": [").unwrap();
    edit_state(state.path(), "us-east-1", |v| {
        v["objects"][obj_id("apps", "Deployment", "shop", "web")]["spec"]["replicas"] = json!(1);
    });
    let (code, out, _) = canopy(&["diff", "fleet-example", "--state", st]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("# us: cannot diff: state file"), "{out}");
    assert!(
        out.contains("us-east-1") && out.contains("-  replicas: 1"),
        "the child's drift is shown: {out}"
    );
    assert!(out.contains("1 failed, 0 skipped"), "{out}");
    let (code, out, _) = canopy(&["apply", "fleet-example", "--state", st, "--dry-run"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("us-east-1: skipped: parent us failed"),
        "{out}"
    );
}

#[test]
fn corrupt_state_is_named_and_nothing_else_is_touched() {
    let state = tempfile::tempdir().unwrap();
    let st = s(state.path());
    assert_eq!(canopy(&["apply", "fleet-example", "--state", st]).0, 0);
    std::fs::write(state.path().join("clusters/us.json"), "{\"objects\": [").unwrap();
    edit_state(state.path(), "staging", |v| {
        v["objects"][obj_id("apps", "Deployment", "shop", "web")]["spec"]["replicas"] = json!(1);
    });
    let before = state_files(state.path());
    let (code, out, _) = canopy(&["apply", "fleet-example", "--state", st, "--dry-run"]);
    assert_eq!(code, 4);
    assert!(
        out.contains("us: FAILED: state file") && out.contains("clusters/us.json is corrupt"),
        "{out}"
    );
    assert_eq!(
        before,
        state_files(state.path()),
        "a dry run writes nothing"
    );
    // status shows the cluster's record as unreadable (not "never
    // applied") and exits 3, a state error, after printing everything.
    let (code, out, _) = canopy(&["status", "fleet-example", "--state", st]);
    assert_eq!(code, 3, "{out}");
    let us = out
        .lines()
        .find(|l| l.trim_start().starts_with("us "))
        .unwrap();
    assert!(
        us.contains("error")
            && us.contains("last apply unknown")
            && us.contains("us.json is corrupt"),
        "{out}"
    );
    assert!(
        out.contains("staging "),
        "the other clusters are still shown: {out}"
    );
    let (code, out, _) = canopy(&["status", "fleet-example", "--state", st, "-o", "json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let flagged: Vec<&str> = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["record_unreadable"] == json!(true))
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(flagged, ["us"]);
    let (code, out, _) = canopy(&["apply", "fleet-example", "--state", st]);
    assert_eq!(code, 4);
    assert!(
        out.contains("us-east-1: skipped: parent us failed"),
        "{out}"
    );
    let after = state_files(state.path());
    assert_eq!(
        after["us"], before["us"],
        "the corrupt file is left as it was"
    );
    assert_ne!(
        after["staging"], before["staging"],
        "the rest of the tree is still reconciled"
    );
}

#[test]
fn a_locked_state_names_the_holder() {
    let state = tempfile::tempdir().unwrap();
    let _held = canopy::backend::local::LocalStore::open(state.path()).unwrap();
    let (code, _, err) = canopy(&["apply", "fleet-example", "--state", s(state.path())]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!(
            "is locked by canopy process {}",
            std::process::id()
        )),
        "{err}"
    );
    // Reading does not need the lock.
    assert_eq!(
        canopy(&["diff", "fleet-example", "--state", s(state.path())]).0,
        1
    );
}

#[test]
fn a_render_error_applies_and_prunes_nothing() {
    let (_tmp, fleet) = example_copy();
    let state = tempfile::tempdir().unwrap();
    let (f, st) = (s(&fleet), s(state.path()));
    assert_eq!(canopy(&["apply", f, "--state", st]).0, 0);
    let before = state_files(state.path());
    // One workload's template breaks; another's manifest is removed (a prune
    // candidate). Neither may reach the state.
    std::fs::write(
        fleet.join("workloads/web/ingress.yaml.j2"),
        "host: \"{{ cluster.nope }}\"\n",
    )
    .unwrap();
    std::fs::remove_file(fleet.join("workloads/node-agent/daemonset.yaml.j2")).unwrap();
    let (code, out, err) = canopy(&["apply", f, "--state", st]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("render failed, so nothing was applied and nothing pruned"),
        "{err}"
    );
    assert!(
        err.contains("workloads/web/ingress.yaml.j2:1: template error"),
        "{err}"
    );
    assert_eq!(before, state_files(state.path()));
}

#[test]
fn unknown_cluster_is_a_usage_error() {
    let state = tempfile::tempdir().unwrap();
    for cmd in ["apply", "diff"] {
        let (code, _, err) = canopy(&[
            cmd,
            "fleet-example",
            "--state",
            s(state.path()),
            "--cluster",
            "eu-wst-1",
        ]);
        assert_eq!(code, 2);
        assert!(err.contains("unknown cluster \"eu-wst-1\""), "{err}");
    }
    assert!(state_files(state.path()).is_empty());
}

#[test]
fn cluster_and_subtree_filters() {
    let state = tempfile::tempdir().unwrap();
    let st = s(state.path());
    let (code, out, _) = canopy(&["apply", "fleet-example", "--state", st, "--subtree", "us"]);
    assert_eq!(code, 0, "{out}");
    let names: Vec<String> = state_files(state.path()).into_keys().collect();
    assert_eq!(
        names,
        ["us", "us-east-1", "us-edge-nyc", "us-edge-sfo", "us-west-2"]
    );
    let (code, _, _) = canopy(&[
        "apply",
        "fleet-example",
        "--state",
        st,
        "--cluster",
        "staging",
        "--dry-run",
    ]);
    assert_eq!(code, 0);
    assert!(
        !state.path().join("clusters/staging.json").exists(),
        "--dry-run writes nothing"
    );
    assert_eq!(
        canopy(&[
            "apply",
            "fleet-example",
            "--state",
            st,
            "--cluster",
            "staging"
        ])
        .0,
        0
    );
    assert!(state.path().join("clusters/staging.json").exists());
}

#[test]
fn clusters_that_leave_the_fleet_are_orphans_until_pruned() {
    let (_tmp, fleet) = example_copy();
    let state = tempfile::tempdir().unwrap();
    let (f, st) = (s(&fleet), s(state.path()));
    assert_eq!(canopy(&["apply", f, "--state", st]).0, 0);
    // The cluster goes, with everything that names it.
    remove_staging(&fleet);
    let (code, out, _) = canopy(&["apply", f, "--state", st]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("staging (not in the fleet): orphaned"),
        "{out}"
    );
    assert!(out.contains("--prune-clusters deletes them"), "{out}");
    let (code, out, _) = canopy(&["apply", f, "--state", st, "--prune-clusters"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("staging (not in the fleet): applied +0 ~0 -8"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("clusters/staging.json")).unwrap())
            .unwrap();
    assert!(v["objects"].as_object().unwrap().is_empty());
}

#[test]
fn an_apply_killed_midway_leaves_whole_files_and_the_next_one_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = tmp.path().join("synth");
    canopy::core::synth::generate(
        &fleet,
        canopy::core::synth::Spec {
            clusters: 1500,
            workloads: 8,
        },
    )
    .unwrap();
    let state = tmp.path().join("state");
    let mut child = std::process::Command::new(canopy_bin())
        .args(["apply", s(&fleet), "--state", s(&state)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some clusters, but not all, have been written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = state_files(&state).len();
        if n >= 20 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let written = state_files(&state);
    assert!(!written.is_empty(), "the apply should have started writing");
    for (name, bytes) in &written {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .unwrap_or_else(|e| panic!("{name}.json is torn: {e}"));
    }
    let (code, out, _) = canopy(&["apply", s(&fleet), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}");
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("applied: "),
        "the rest is applied and reported: {last}"
    );
    let (code, out, _) = canopy(&["apply", s(&fleet), "--state", s(&state)]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().last().unwrap(),
        "no changes: 1500 cluster(s) in sync"
    );
}

#[test]
fn markdown_report_is_bounded() {
    let state = tempfile::tempdir().unwrap();
    let (code, md, _) = canopy(&[
        "diff",
        "fleet-example",
        "--state",
        s(state.path()),
        "-o",
        "markdown",
    ]);
    assert_eq!(code, 1);
    // Grouped: each distinct object change once, with where it lands.
    assert!(
        md.starts_with("### canopy diff: 12 cluster(s) change (+66 ~0 -0) in "),
        "{md}"
    );
    assert!(
        md.contains("| `node-agent` | 12 | 24 | 0 | 0 | DaemonSet, Namespace |  | 12 | 0 |"),
        "{md}"
    );
    let groups = md.matches("<details>").count();
    assert!(
        groups > 0 && groups < 66,
        "{groups} groups for 66 changes\n{md}"
    );
    assert!(
        md.contains("+ <code>Namespace monitoring</code> on 12 cluster(s): <code>hub</code> subtree (11), <code>staging</code>"),
        "{md}"
    );
    assert!(
        md.contains("| `web` | 5 | 15 | 0 | 0 | Deployment, Ingress, Service | 0 → 12 | 5 | 0 |"),
        "{md}"
    );
    assert!(md.len() < 65_536);
    // --no-group: one section per cluster, as before.
    let (code, md, _) = canopy(&[
        "diff",
        "fleet-example",
        "--state",
        s(state.path()),
        "-o",
        "markdown",
        "--no-group",
    ]);
    assert_eq!(code, 1);
    assert!(
        md.starts_with("### canopy diff: 12 cluster(s) change (+66 ~0 -0)"),
        "{md}"
    );
    assert!(md.contains("| `eu-west-1` | 9 | 0 | 0 | differs |"), "{md}");
    assert_eq!(md.matches("<details>").count(), 12);
    assert!(md.len() < 65_536);
}

#[test]
fn a_cluster_whose_kubeconfig_is_missing_fails_by_name_and_is_never_written_locally() {
    let (_tmp, fleet) = example_copy();
    let state = tempfile::tempdir().unwrap();
    let us = fleet.join("clusters/us.yaml");
    let text = std::fs::read_to_string(&us).unwrap().replacen(
        "  parent: hub\n",
        "  parent: hub\n  connection: {kubeconfig: ~/.kube/us.yaml, context: us}\n",
        1,
    );
    std::fs::write(&us, text).unwrap();
    let (code, out, _) = canopy(&["apply", s(&fleet), "--state", s(state.path())]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("  us: FAILED: cluster us: kubeconfig ")
            && out.contains("/.kube/us.yaml cannot be read: No such file or directory"),
        "{out}"
    );
    assert!(
        out.contains("\n      help: check the cluster's spec.connection.kubeconfig (or $KUBECONFIG) names a readable kubeconfig file\n"),
        "{out}"
    );
    assert!(
        out.contains("    us-east-1: skipped: parent us failed"),
        "{out}"
    );
    assert!(out.contains("  eu: applied +"), "{out}");
    assert!(
        !state.path().join("clusters/us.json").exists(),
        "nothing written locally for it"
    );
    let (code, out, _) = canopy(&["diff", s(&fleet), "--state", s(state.path())]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("# us: cannot diff: cluster us: kubeconfig "),
        "{out}"
    );
}

#[test]
fn status_tells_never_applied_from_drifted() {
    let state = tempfile::tempdir().unwrap();
    let st = s(state.path());
    let (_, out, _) = canopy(&["status", "fleet-example", "--state", st]);
    let hub = out.lines().next().unwrap();
    assert!(
        hub.starts_with("hub ")
            && hub.contains("not applied (2)")
            && hub.ends_with("never applied"),
        "{out}"
    );
    assert_eq!(
        canopy(&["apply", "fleet-example", "--state", st, "--cluster", "hub"]).0,
        0
    );
    let (_, out, _) = canopy(&["status", "fleet-example", "--state", st, "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lines = &status["clusters"];
    assert_eq!(lines[0]["cluster"], "hub");
    assert_eq!(lines[0]["state"], "in-sync");
    assert_eq!(lines[1]["state"], "not-applied");
}

#[test]
fn status_sums_replicas_up_the_tree_and_an_unreachable_cluster_has_none_ready() {
    let (_tmp, fleet) = example_copy();
    let state = fleet.join(".canopy/state");
    let f = s(&fleet);
    assert_eq!(canopy(&["apply", f]).0, 0);
    let web = |out: &str| {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        let ws = v["workloads"].as_array().unwrap().clone();
        let names: Vec<&str> = ws.iter().map(|w| w["workload"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["api", "web"], "workloads with replicas, sorted");
        ws[1].clone()
    };
    let (_, out, _) = canopy(&["status", f, "-o", "json"]);
    let w = web(&out);
    assert_eq!(w["total"], serde_json::json!({"desired": 12, "ready": 12}));
    let line = |w: &serde_json::Value, c: &str| {
        w["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["cluster"] == c)
            .unwrap_or_else(|| panic!("no line for {c}: {w}"))
            .clone()
    };
    assert_eq!(line(&w, "hub")["subtree"]["desired"], 9);
    assert!(
        line(&w, "hub").get("here").is_none(),
        "web does not run on hub"
    );
    assert_eq!(line(&w, "eu")["subtree"]["desired"], 5);

    edit_state(&state, "eu-west-1", |v| {
        v["unreachable"] = serde_json::json!(true)
    });
    let (_, out, _) = canopy(&["status", f, "-o", "json"]);
    let w = web(&out);
    assert_eq!(w["total"], serde_json::json!({"desired": 12, "ready": 9}));
    assert_eq!(
        line(&w, "eu")["subtree"],
        serde_json::json!({"desired": 5, "ready": 2})
    );
    assert_eq!(
        line(&w, "eu-west-1")["here"],
        serde_json::json!({"desired": 3, "ready": 0})
    );
    let (_, again, _) = canopy(&["status", f, "-o", "json"]);
    assert_eq!(out, again, "repeated runs give identical output");
    let (_, text, _) = canopy(&["status", f]);
    assert!(
        text.contains("workload web: 9/12 replicas ready\n"),
        "{text}"
    );
    assert!(text.contains("\n    eu              2/5\n"), "{text}");
}

#[test]
fn failover_moves_divided_replicas_to_healthy_siblings_and_back() {
    let (_tmp, fleet) = example_copy();
    let state = fleet.join(".canopy/state");
    let f = s(&fleet);
    // web fails over at once; api keeps the default 5m.
    let web_doc = fleet.join("workloads/web/workload.yaml");
    let text = std::fs::read_to_string(&web_doc).unwrap();
    std::fs::write(
        &web_doc,
        text.replace(
            "  namespace: shop\n",
            "  namespace: shop\n  failover: {after: 0s}\n",
        ),
    )
    .unwrap();
    let web = obj_id("apps", "Deployment", "shop", "web");
    let api = obj_id("apps", "Deployment", "shop", "api");
    let replicas = |cluster: &str, id: &str| {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(state.join(format!("clusters/{cluster}.json"))).unwrap(),
        )
        .unwrap();
        v["objects"][id]["spec"]["replicas"].as_u64()
    };
    assert_eq!(canopy(&["apply", f]).0, 0);
    assert_eq!(replicas("eu-central-1", &web), Some(2));
    assert_eq!(replicas("eu-central-1", &api), Some(3));

    // eu-west-1 goes down: the first run finds out and records it.
    edit_state(&state, "eu-west-1", |v| {
        v["unreachable"] = serde_json::json!(true)
    });
    let (code, out, _) = canopy(&["apply", f]);
    assert_eq!(code, 4, "{out}");
    let health = std::fs::read_to_string(state.join("health.json")).unwrap();
    assert!(health.contains("\"eu-west-1\""), "{health}");
    assert_eq!(
        replicas("eu-central-1", &web),
        Some(2),
        "found down only now"
    );

    // The next run re-divides web's eu share within eu; api waits 5m.
    let (code, out, _) = canopy(&["apply", f]);
    assert_eq!(code, 4, "eu-west-1 is still down: {out}");
    assert!(out.contains("eu-central-1: applied +0 ~1 -0"), "{out}");
    assert_eq!(replicas("eu-central-1", &web), Some(5));
    assert_eq!(
        replicas("us-east-1", &web),
        Some(3),
        "other subtrees keep theirs"
    );
    assert_eq!(
        replicas("eu-central-1", &api),
        Some(3),
        "api's failover.after is 5m"
    );
    let (_, out, _) = canopy(&["status", f, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let web_status = v["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == "web")
        .unwrap()
        .clone();
    assert_eq!(
        web_status["total"]["desired"], 12,
        "the total is unchanged: {web_status}"
    );
    let (_, out, _) = canopy(&["explain", f, "web"]);
    assert!(
        out.contains("failed over, its replicas moved to its healthy siblings"),
        "{out}"
    );
    assert!(
        out.contains("subtree eu-west-1 [failed over] (weight 0) → 0"),
        "{out}"
    );

    // Back again: the replicas move back in the run that finds it up.
    edit_state(&state, "eu-west-1", |v| {
        v.as_object_mut().unwrap().remove("unreachable");
    });
    let (code, out, _) = canopy(&["apply", f]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(replicas("eu-central-1", &web), Some(2));
    assert_eq!(replicas("eu-west-1", &web), Some(3));
    let health = std::fs::read_to_string(state.join("health.json")).unwrap();
    assert!(!health.contains("eu-west-1"), "{health}");
}

/// Issue 16: templating is asked for by name. A plain manifest with
/// another tool's `{{ … }}` (a Prometheus alert's `{{ $labels.instance }}`)
/// is applied as written, a `.yaml.j2` file is rendered per cluster, and a
/// plain manifest that uses canopy's own variables is applied as written
/// with a warning that says how to make it a template.
#[test]
fn only_files_named_as_templates_are_rendered() {
    let rule = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: alerts}\ndata:\n  summary: \"Instance {{ $labels.instance }} down\"\n  note: '{% raw %}kept{% endraw %}'\n";
    let dir = with(&[
        ("workloads/web/alerts.yaml", rule),
        (
            "workloads/web/site.yaml.j2",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata:\n  cluster: \"{{ cluster.name }}\"\n",
        ),
        (
            "workloads/web/old.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: old}\ndata:\n  cluster: \"{{ cluster.name }}\"\n",
        ),
    ]);
    let d = s(dir.path());
    let (code, out, err) = canopy(&["validate", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: workloads/web/old.yaml:5: this manifest uses canopy's template variables (cluster, workload) but is not a template: it is applied as written")
            && err.contains("help: rename it to old.yaml.j2 to render it per cluster"),
        "{err}"
    );
    assert!(
        !err.contains("alerts.yaml"),
        "another tool's braces are no warning: {err}"
    );
    let state = tempfile::tempdir().unwrap();
    let (code, out, err) = canopy(&["apply", d, "--state", s(state.path())]);
    assert_eq!(code, 0, "{out}{err}");
    let edge: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("clusters/edge.json")).unwrap())
            .unwrap();
    let data = |name: &str| edge["objects"][obj_id("", "ConfigMap", "shop", name)]["data"].clone();
    assert_eq!(
        data("alerts")["summary"],
        "Instance {{ $labels.instance }} down"
    );
    assert_eq!(data("alerts")["note"], "{% raw %}kept{% endraw %}");
    assert_eq!(data("site")["cluster"], "edge");
    assert_eq!(data("old")["cluster"], "{{ cluster.name }}");
}

/// Issue 17: with `weights: {dynamic: capacity}`, capacity is a bound.
/// Three clusters that each fit 3 pods and `total: 12`: `validate` fails
/// and says what fits where; with `onShortfall: PlaceWhatFits`, 9 are
/// placed, 3 per cluster, with a warning.
#[test]
fn capacity_bounds_a_division_and_a_shortfall_is_said() {
    let clusters = "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: hub}\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a}\nspec: {parent: hub, capacity: {pods: \"3\"}}\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: b}\nspec: {parent: hub, capacity: {pods: \"3\"}}\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec: {parent: hub, capacity: {pods: \"3\"}}\n";
    let workload = |extra: &str| {
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {{name: web}}\nspec:\n  namespace: shop\n  placement:\n    replicas:\n      mode: Divided\n      total: 12\n      weights: {{dynamic: capacity}}\n{extra}")
    };
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  template: {spec: {containers: [{name: web, image: nginx}]}}\n";
    let strict = workload("");
    let dir = fleet(&[
        ("clusters.yaml", clusters),
        ("workloads/web/workload.yaml", &strict),
        ("workloads/web/deployment.yaml", deploy),
    ]);
    let (code, _, err) = canopy(&["validate", s(dir.path())]);
    assert_eq!(code, 2);
    assert!(
        err.contains("workload \"web\": 12 replicas do not fit: the chosen clusters hold 9 (a fits 3, b fits 3, c fits 3)")
            && err.contains("set `onShortfall: PlaceWhatFits` to place what fits"),
        "{err}"
    );
    let lenient = workload("      onShortfall: PlaceWhatFits\n");
    std::fs::write(dir.path().join("workloads/web/workload.yaml"), lenient).unwrap();
    let (code, _, err) = canopy(&["validate", s(dir.path())]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: workloads/web/workload.yaml:7: spec.placement.replicas: workload \"web\": 9 of 12 replicas placed"),
        "{err}"
    );
    let (code, out, _) = canopy(&["tree", s(dir.path())]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("web 3/12 (full)").count(), 3, "{out}");
    let (code, out, _) = canopy(&["explain", s(dir.path()), "web"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("total 12 from spec.placement.replicas.total; 9 placed: what fits (onShortfall: PlaceWhatFits)")
            && out.contains("subtree a [full: at most 3] (weight 3) → 3"),
        "{out}"
    );
    let state = tempfile::tempdir().unwrap();
    let (code, out, err) = canopy(&["apply", s(dir.path()), "--state", s(state.path())]);
    assert_eq!(code, 0, "{out}{err}");
    for c in ["a", "b", "c"] {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(state.path().join(format!("clusters/{c}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v["objects"][obj_id("apps", "Deployment", "shop", "web")]["spec"]["replicas"],
            3,
            "{c}"
        );
    }
}

/// Issue 17: `limits` bound each selected cluster's subtree. fleet-example's
/// web (12 replicas, AWS weighted 2:1): at most 2 on us-east-1, at least 4
/// in eu's subtree; a min above a max, and a total below the minimums, are
/// errors that say so.
#[test]
fn limits_bound_the_division_down_the_tree() {
    let (_tmp, fleet) = example_copy();
    let wl = fleet.join("workloads/web/workload.yaml");
    let text = std::fs::read_to_string(&wl).unwrap();
    let with = |limits: &str| {
        std::fs::write(
            &wl,
            text.replace(
                "      mode: Divided\n",
                &format!("      mode: Divided\n      limits:\n{limits}"),
            ),
        )
        .unwrap();
    };
    with("        - {clusters: {names: [us-east-1]}, max: 2}\n        - {clusters: {names: [eu]}, min: 4}\n");
    let state = tempfile::tempdir().unwrap();
    let (code, out, err) = canopy(&["apply", s(&fleet), "--state", s(state.path())]);
    assert_eq!(code, 0, "{out}{err}");
    let replicas = |c: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(state.path().join(format!("clusters/{c}.json"))).unwrap(),
        )
        .unwrap();
        v["objects"][obj_id("apps", "Deployment", "shop", "web")]["spec"]["replicas"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(replicas("us-east-1"), 2);
    let (_, explained, _) = canopy(&["explain", s(&fleet), "web"]);
    assert!(
        explained.contains("; 2 limit rule(s) on subtrees")
            && explained.contains("subtree us-east-1 [full: at most 2] (weight 2) → 2")
            && explained.contains("subtree eu [at least 4] (weight 3) → 5"),
        "{explained}"
    );
    assert!(replicas("eu-west-1") + replicas("eu-central-1") >= 4);
    let all: u64 = [
        "us-east-1",
        "us-west-2",
        "eu-west-1",
        "eu-central-1",
        "staging",
    ]
    .iter()
    .map(|c| replicas(c))
    .sum();
    assert_eq!(all, 12);

    with("        - {clusters: {names: [staging]}, min: 5, max: 3}\n");
    let (code, _, err) = canopy(&["validate", s(&fleet)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("spec.placement.replicas.limits[0]: limit min 5 is above its max 3"),
        "{err}"
    );
    with("        - {clusters: {selector: {matchLabels: {env: prod}}}, min: 4}\n");
    let (code, _, err) = canopy(&["validate", s(&fleet)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("workload \"web\": 12 replicas are fewer than the limits' minimums need"),
        "{err}"
    );
}

/// Issue 17: static weights can be bound by declared capacity too
/// (`boundByCapacity`): a cluster that declares capacity takes no more
/// than fits, its overflow goes to its siblings by the same weights, and a
/// cluster that declares none is unbounded.
#[test]
fn static_weights_bound_by_declared_capacity() {
    let clusters = "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: hub}\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: a, labels: {provider: aws}}\nspec: {parent: hub, capacity: {pods: \"2\"}}\n---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: b, labels: {provider: gcp}}\nspec: {parent: hub}\n";
    let workload = |bound: bool| {
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {{name: web}}\nspec:\n  namespace: shop\n  placement:\n    clusters: {{names: [a, b]}}\n    replicas:\n      mode: Divided\n      total: 9\n      weights:\n        boundByCapacity: {bound}\n        static:\n          - {{clusters: {{selector: {{matchLabels: {{provider: aws}}}}}}, weight: 2}}\n          - {{clusters: {{selector: {{matchLabels: {{provider: gcp}}}}}}, weight: 1}}\n")
    };
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  template: {spec: {containers: [{name: web, image: nginx}]}}\n";
    let unbounded = workload(false);
    let dir = fleet(&[
        ("clusters.yaml", clusters),
        ("workloads/web/workload.yaml", &unbounded),
        ("workloads/web/deployment.yaml", deploy),
    ]);
    let replicas = |out: &str, c: &str| -> String {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{c} ")) && l.contains("replicas"))
            .and_then(|l| l.rsplit("replicas ").next())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let (code, out, err) = canopy(&["explain", s(dir.path()), "web"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (replicas(&out, "a"), replicas(&out, "b")),
        ("6".into(), "3".into()),
        "{out}"
    );
    let bounded = workload(true);
    std::fs::write(dir.path().join("workloads/web/workload.yaml"), bounded).unwrap();
    let (code, out, err) = canopy(&["explain", s(dir.path()), "web"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (replicas(&out, "a"), replicas(&out, "b")),
        ("2".into(), "7".into()),
        "{out}"
    );
    assert!(
        out.contains("subtree a [full: at most 2] (weight 2) → 2"),
        "{out}"
    );
}

/// Calm rescheduling through the binary (the fleet's own state folder):
/// a new cluster takes no replicas until the total grows, a larger total
/// goes where replicas are short by the weights, a smaller one comes off
/// without moving any, and `explain` says what a fresh division would give.
#[test]
fn calm_rescheduling_keeps_replicas_where_they_are() {
    let cluster = |name: &str, parent: Option<&str>| {
        let p = parent.map_or(String::new(), |p| format!("spec: {{parent: {p}}}\n"));
        let tier = if parent.is_some() { "edge" } else { "hub" };
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}, labels: {{tier: {tier}}}}}\n{p}---\n")
    };
    let clusters = |names: &[&str]| {
        let mut t = cluster("hub", None);
        for n in names {
            t.push_str(&cluster(n, Some("hub")));
        }
        t
    };
    let workload = |total: u32| {
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {{name: web}}\nspec:\n  namespace: shop\n  placement:\n    clusters: {{selector: {{matchLabels: {{tier: edge}}}}}}\n    replicas: {{mode: Divided, total: {total}, rescheduling: Calm}}\n")
    };
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers: [{name: web, image: nginx}]\n";
    let dir = fleet(&[
        ("clusters.yaml", &clusters(&["a", "b"])),
        ("workloads/web/workload.yaml", &workload(6)),
        ("workloads/web/deployment.yaml", deployment),
    ]);
    let d = s(dir.path());
    let state = dir.path().join(".canopy/state");
    let replicas = |cluster: &str| -> Option<u64> {
        let text = std::fs::read(state.join(format!("clusters/{cluster}.json"))).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        v["objects"][obj_id("apps", "Deployment", "shop", "web")]["spec"]["replicas"].as_u64()
    };
    let (code, out, err) = canopy(&["apply", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!((replicas("a"), replicas("b")), (Some(3), Some(3)));

    // A third cluster joins: nothing moves, it takes none yet; a fresh
    // division would give each 2.
    std::fs::write(dir.path().join("clusters.yaml"), clusters(&["a", "b", "c"])).unwrap();
    let (code, out, err) = canopy(&["explain", d, "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("calm: keeps the replicas last applied and divides only the difference; a fresh division would give a 2 (calm 3), b 2 (calm 3), c 2 (calm 0)"),
        "{out}"
    );
    let (code, out, err) = canopy(&["apply", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        (replicas("a"), replicas("b"), replicas("c")),
        (Some(3), Some(3), None)
    );

    // The total grows by 3: they go where replicas are short (c).
    std::fs::write(dir.path().join("workloads/web/workload.yaml"), workload(9)).unwrap();
    let (code, out, err) = canopy(&["apply", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        (replicas("a"), replicas("b"), replicas("c")),
        (Some(3), Some(3), Some(3))
    );
    // It shrinks to 5: four come off, none moves to another cluster.
    std::fs::write(dir.path().join("workloads/web/workload.yaml"), workload(5)).unwrap();
    let (code, out, err) = canopy(&["apply", d]);
    assert_eq!(code, 0, "{out}{err}");
    let now: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|c| replicas(c).unwrap())
        .collect();
    assert_eq!(now.iter().sum::<u64>(), 5);
    assert!(now.iter().all(|&n| n <= 3), "{now:?}");
}
