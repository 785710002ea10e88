//! Relays through the `canopy` binary, on the embedded local backend:
//! which clusters a relay reconciles (`tree`, `explain`, `status`), the
//! handoff `apply` writes into a relay cluster, and `canopy agent`
//! reconciling the relay's subtree from it and reporting back: drift,
//! refused handoffs, nested relays and leader election.

mod common;
use common::*;

/// The clusters below `eu` in fleet-example.
const BELOW_EU: [&str; 4] = [
    "eu-west-1",
    "eu-central-1",
    "eu-edge-paris",
    "eu-edge-berlin",
];

/// A copy of fleet-example with `eu` marked a relay.
fn example_with_eu_relay() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    copy_dir(&repo_root().join("fleet-example"), &dir);
    let eu = dir.join("clusters/eu.yaml");
    let text = std::fs::read_to_string(&eu).unwrap();
    let marked = text.replacen(
        "spec:\n  parent: hub\n",
        "spec:\n  relay: {}\n  parent: hub\n",
        1,
    );
    assert_ne!(marked, text, "eu has a spec to mark:\n{text}");
    std::fs::write(&eu, marked).unwrap();
    (tmp, dir)
}

#[test]
fn tree_says_which_relay_reconciles_each_cluster() {
    let (tmp, dir) = example_with_eu_relay();

    let (code, out, err) = canopy(&["tree", dir.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by: Vec<(String, Option<String>, bool)> = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["reconciledBy"].as_str().map(str::to_string),
                c["relay"].as_bool().unwrap(),
            )
        })
        .collect();
    for (name, via, relay) in &by {
        let below_eu = name.starts_with("eu-");
        assert_eq!(via.as_deref(), below_eu.then_some("eu"), "{name}: {by:?}");
        assert_eq!(*relay, name == "eu", "{name}");
    }
    let (code, out, _) = canopy(&["tree", dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("eu  ") && out.contains("(relay: reconciles its subtree)"),
        "{out}"
    );
    assert!(
        out.contains("eu-west-1") && out.contains("via relay eu"),
        "{out}"
    );

    // explain and status say it too.
    let (code, out, err) = canopy(&["explain", dir.to_str().unwrap(), "web"]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("eu-west-1 "))
        .unwrap();
    assert!(line.contains("; reconciled by relay eu"), "{out}");
    let hub = out
        .lines()
        .find(|l| l.trim_start().starts_with("hub "))
        .unwrap();
    assert!(!hub.contains("relay"), "{out}");
    let state = tmp.path().join("state");
    let (code, out, err) = canopy(&[
        "status",
        dir.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("eu-edge-paris "))
        .unwrap();
    assert!(
        line.contains("pending") && line.contains("via relay eu"),
        "{out}"
    );
    assert!(line.contains("relay eu has not reported yet"), "{out}");
    let (_, out, _) = canopy(&[
        "status",
        dir.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for c in v["clusters"].as_array().unwrap() {
        let name = c["cluster"].as_str().unwrap();
        let want = name.starts_with("eu-").then_some("eu");
        assert_eq!(c["via_relay"].as_str(), want, "{name}");
    }

    let (code, out, err) = canopy(&["validate", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !err.contains("relay"),
        "the agent is built: no warning\n{err}"
    );
}

/// `apply` writes the relay's handoff into the relay cluster: the
/// Namespace, the CRD, the chunk Secrets and the index. Read back from the
/// relay's stored objects, it is the handoff the fleet gives, and it opens
/// on the relay's side. A second apply writes nothing. A change below the
/// relay writes a new index, and the chunks of the old slice are pruned.
#[test]
fn apply_writes_the_handoff_into_the_relay_cluster() {
    use canopy::core::{chunks, relay, render::Renderer};
    let (tmp, dir) = example_with_eu_relay();
    let state = tmp.path().join("state");
    let (d, st) = (dir.to_str().unwrap(), state.to_str().unwrap());
    // No agent runs: the handoff is written, and apply says it waited.
    // No agent holds the relay's Lease: apply does not wait out its
    // timeout for it.
    let started = std::time::Instant::now();
    let (code, out, err) = canopy(&["apply", d, "--state", st, "--timeout", "5m"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("eu (via relay, 4 cluster(s) below): no agent holds its Lease, so nothing takes revision unversioned")
            && out.contains("help: start `canopy agent --cluster eu`"),
        "{out}"
    );
    assert!(
        !out.contains("eu-west-1"),
        "the root does not reconcile below the relay:\n{out}"
    );

    // The relay's stored objects.
    let stored = |cluster: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read(state.join(format!("clusters/{cluster}.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        v["objects"]
            .as_object()
            .unwrap()
            .values()
            .cloned()
            .collect()
    };
    let read_back = |objs: &[serde_json::Value]| {
        let index = objs
            .iter()
            .find(|o| o["kind"] == "Handoff")
            .expect("the index is stored")
            .clone();
        let secrets: std::collections::BTreeMap<String, serde_json::Value> = objs
            .iter()
            .filter(|o| o["kind"] == "Secret" && o["metadata"]["namespace"] == chunks::NAMESPACE)
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                    o.clone(),
                )
            })
            .collect();
        (
            chunks::decode(&index, &secrets).expect("the stored handoff reads back"),
            secrets.len(),
        )
    };
    let eu = stored("eu");
    assert!(eu.iter().any(|o| o["kind"] == "CustomResourceDefinition"
        && o["metadata"]["name"] == "handoffs.canopy.dev"));
    let (got, _) = read_back(&eu);

    // What the fleet gives eu, computed here from the same folder.
    let input = canopy::source::input::Input::Dir(dir.clone());
    let (checked, _) = canopy::source::input::check_all(&input, None, &Default::default()).unwrap();
    let checked = checked.unwrap();
    let full = Renderer::new(&checked);
    let want = relay::handoff(
        &full,
        checked.topo.get("eu").unwrap(),
        &got.revision,
        &relay::Above::default(),
        &relay::Bases::new(),
    );
    assert_eq!(got, want);
    let opened = relay::open(&got).unwrap_or_else(|d| panic!("{d:?}"));
    assert!(opened.checked.topo.get("eu-edge-paris").is_some());
    assert!(
        opened.checked.topo.get("us").is_none(),
        "the slice holds eu's subtree and its ancestors"
    );
    // Only the relay holds a handoff.
    assert!(!stored("us").iter().any(|o| o["kind"] == "Handoff"));

    let (code, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 4);
    assert!(out.contains("  eu: no changes"), "{out}");

    // A change below eu: a new slice, a new index; the old chunks go.
    let file = dir.join("workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("web:1.4.2", "web:1.4.3")).unwrap();
    let (code, out, err) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 4, "{out}{err}");
    let (next, chunk_count) = read_back(&stored("eu"));
    assert_ne!(next.digest, got.digest);
    assert!(next.files.values().any(|t| t.contains("web:1.4.3")));
    assert_eq!(
        chunk_count,
        chunks::encode(&next).chunks.len(),
        "only the new slice's chunks are kept"
    );
}

/// The objects a cluster holds in a local state folder, by identity,
/// without what the store sets itself (uid, resourceVersion, times).
fn held(
    state: &std::path::Path,
    cluster: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let Ok(text) = std::fs::read(state.join(format!("clusters/{cluster}.json"))) else {
        return Default::default();
    };
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    v["objects"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, o)| {
            let mut o = o.clone();
            let m = o["metadata"].as_object_mut().unwrap();
            for f in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
                m.remove(f);
            }
            (k.clone(), o)
        })
        .collect()
}

/// `canopy agent --once` for `relay`, its cluster in `home`, its own state
/// in `own`.
fn agent_once(
    relay: &str,
    home: &std::path::Path,
    own: &std::path::Path,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "agent",
        "--cluster",
        relay,
        "--local",
        home.to_str().unwrap(),
        "--state",
        own.to_str().unwrap(),
        "--once",
        "--identity",
        "once",
    ];
    if !extra.contains(&"--lease-duration") {
        args.extend_from_slice(&["--lease-duration", "10m"]);
    }
    args.extend_from_slice(extra);
    canopy(&args)
}

/// Appends `spec` lines to the web workload.
fn add_to_web(dir: &std::path::Path, lines: &str) {
    let web = dir.join("workloads/web/workload.yaml");
    let text = std::fs::read_to_string(&web).unwrap();
    std::fs::write(&web, format!("{text}{lines}")).unwrap();
}

/// Whether `cluster` runs web at `tag` in the state folder `state`.
fn runs_web(state: &std::path::Path, cluster: &str, tag: &str) -> bool {
    image_of(state, cluster, "web").is_some_and(|i| i.ends_with(&format!("/web:{tag}")))
}

fn image_of(state: &std::path::Path, cluster: &str, name: &str) -> Option<String> {
    held(state, cluster)
        .get(&obj_id("apps", "Deployment", "shop", name))?
        .pointer("/spec/template/spec/containers/0/image")?
        .as_str()
        .map(str::to_string)
}

/// Issue 14: the agent reconciles the relay's subtree from its handoff,
/// exactly as a direct apply of the fleet would (same objects, cluster by
/// cluster), the root process never writes below the relay, the root's
/// apply and status read the relay's report, and with the root process
/// gone the agent corrects drift and takes a new handoff.
#[test]
fn an_agent_reconciles_its_subtree_as_a_direct_apply_would() {
    let (tmp, dir) = example_with_eu_relay();
    let (root, own) = (tmp.path().join("root"), tmp.path().join("eu"));
    let (d, st) = (dir.to_str().unwrap(), root.to_str().unwrap());
    let (code, out, err) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 4, "no agent has reported yet\n{out}{err}");

    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("reconciled revision unversioned: 4 cluster(s): 4 applied (0 in sync)\n"),
        "{out}"
    );
    assert!(out.contains("  web: 5/5 replicas ready"), "{out}");

    // The same fleet without the relay, applied directly.
    let (flat_tmp, flat_dir) = example_copy();
    let flat = flat_tmp.path().join("flat");
    let (code, out, _) = canopy(&[
        "apply",
        flat_dir.to_str().unwrap(),
        "--state",
        flat.to_str().unwrap(),
        "--fleet-name",
        "fleet",
    ]);
    assert_eq!(code, 0, "{out}");
    for c in BELOW_EU {
        assert!(
            !root.join(format!("clusters/{c}.json")).exists(),
            "the root wrote {c}"
        );
        let (got, want) = (held(&own, c), held(&flat, c));
        assert!(!want.is_empty(), "{c}");
        assert_eq!(got, want, "{c}: the relay's objects are the direct apply's");
    }

    // A cluster below the relay cannot be named from the root.
    let (code, _, err) = canopy(&["apply", d, "--state", st, "--cluster", "eu-west-1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: cluster eu-west-1 is reconciled by relay eu, not from here")
            && err.contains("`--subtree eu` hands eu its handoff"),
        "{err}"
    );

    // The root's apply now reads the report on the handoff it wrote.
    let (code, out, err) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("eu (via relay, 4 cluster(s) below): revision unversioned: 4 cluster(s): 4 applied (0 in sync)"),
        "{out}"
    );
    let (code, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s", "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["relays"][0]["status"], "reported", "{v}");
    assert_eq!(v["relays"][0]["report"]["clusters"]["applied"], 4, "{v}");
    let (code, out, _) = canopy(&["diff", d, "--state", st]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("eu (via relay, 4 cluster(s) below): in sync with revision unversioned as of"),
        "{out}"
    );
    let (code, out, _) = canopy(&["status", d, "--state", st]);
    assert_eq!(code, 0);
    let paris = out
        .lines()
        .find(|l| l.trim_start().starts_with("eu-edge-paris "))
        .unwrap();
    assert!(
        paris.contains("in-sync") && paris.contains("via relay eu"),
        "{out}"
    );
    // Per workload, the replicas below the relay are what it reported:
    // the totals and eu's subtree line are the direct apply's.
    let sums = |dir: &str, state: &str| {
        let args = [
            "status",
            dir,
            "--state",
            state,
            "--fleet-name",
            "fleet",
            "-o",
            "json",
        ];
        let (code, out, _) = canopy(&args);
        assert_eq!(code, 0, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let eu = w["clusters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l["cluster"] == "eu")
                    .map(|l| l["subtree"].clone());
                (
                    w["workload"].as_str().unwrap().to_string(),
                    w["total"].clone(),
                    eu,
                )
            })
            .collect::<Vec<_>>()
    };
    let relayed = sums(d, st);
    assert_eq!(
        relayed,
        sums(flat_dir.to_str().unwrap(), flat.to_str().unwrap())
    );
    assert!(
        relayed.iter().any(|(w, _, eu)| w == "web" && eu.is_some()),
        "{relayed:?}"
    );

    // Drift below the relay, with no root process: the agent puts it back.
    edit_state(&own, "eu-west-1", |v| {
        v["objects"][obj_id("apps", "Deployment", "shop", "api")]["spec"]["replicas"] = 7.into();
    });
    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 applied (3 in sync)"), "{out}");
    assert_eq!(held(&own, "eu-west-1"), held(&flat, "eu-west-1"));

    // A new revision: the root hands it down, the agent takes it.
    let file = dir.join("workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("web:1.4.2", "web:1.4.3")).unwrap();
    let (code, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("last report: revision unversioned at"),
        "{out}"
    );
    // diff through the relay: its subtree is not at what apply hands it.
    let (code, out, _) = canopy(&["diff", d, "--state", st]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("eu (via relay, 4 cluster(s) below): DIFFERS: it works from revision unversioned, not from what apply would hand it now"),
        "{out}"
    );
    assert!(runs_web(&own, "eu-west-1", "1.4.2"));
    // The chunks of the handoff the relay works from stay until it takes
    // the new one; the next apply after that collects them.
    let chunks = |state: &std::path::Path| -> Vec<String> {
        held(state, "eu")
            .keys()
            .filter(|k| k.starts_with("/Secret/canopy-system/"))
            .cloned()
            .collect()
    };
    let both = chunks(&root);
    assert!(both.len() >= 2, "old and new chunks: {both:?}");
    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(runs_web(&own, "eu-west-1", "1.4.3"));
    let (code, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("- Secret canopy-system/"),
        "the old chunks go:\n{out}"
    );
    assert!(chunks(&root).len() < both.len());
    let (code, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert!(out.contains("no changes"), "{code} {out}");
}

/// Issue 14: a handoff whose chunk does not match its hash is refused:
/// the agent keeps working from its last good handoff, says why, and the
/// root's apply reports the refusal. Once the parent writes the handoff
/// again, the agent takes it.
#[test]
fn a_damaged_handoff_is_refused_and_the_last_good_one_kept() {
    let (tmp, dir) = example_with_eu_relay();
    let (root, own) = (tmp.path().join("root"), tmp.path().join("eu"));
    let (d, st) = (dir.to_str().unwrap(), root.to_str().unwrap());
    canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    assert_eq!(code, 0, "{out}{err}");

    let file = dir.join("workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("web:1.4.2", "web:1.4.3")).unwrap();
    canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    // One byte of the new handoff's chunk changes on the way.
    edit_state(&root, "eu", |v| {
        let objects = v["objects"].as_object_mut().unwrap();
        let name = objects["canopy.dev/Handoff/canopy-system/handoff"]["spec"]["chunks"][0]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let chunk = objects
            .get_mut(&format!("/Secret/canopy-system/{name}"))
            .unwrap();
        let data = chunk["data"]["chunk"].as_str().unwrap().to_string();
        let flipped = if data.starts_with('A') { "B" } else { "A" };
        chunk["data"]["chunk"] = format!("{flipped}{}", &data[1..]).into();
    });
    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.starts_with("REFUSED the handoff of revision unversioned: chunk canopy-handoff-"),
        "{out}"
    );
    assert!(out.contains("working from the last good one"), "{out}");
    assert!(
        runs_web(&own, "eu-west-1", "1.4.2"),
        "the last good handoff stays applied"
    );
    // The root reports the refusal, and writes the chunk again.
    let (code, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("eu (via relay, 4 cluster(s) below): REFUSED the handoff of revision unversioned: chunk canopy-handoff-"), "{out}");
    assert!(
        out.contains("~ Secret canopy-system/"),
        "the chunk is written again:\n{out}"
    );
    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(runs_web(&own, "eu-west-1", "1.4.3"));

    // The agent keeps its last good handoff across a restart, even when
    // its parent's copy is gone.
    let kept = std::fs::read(own.join("handoff.json")).unwrap();
    edit_state(&root, "eu", |v| {
        v["objects"]
            .as_object_mut()
            .unwrap()
            .retain(|k, _| !k.contains("canopy-system"));
    });
    edit_state(&own, "eu-west-1", |v| {
        v["objects"].as_object_mut().unwrap().clear();
    });
    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    // The report cannot be written (its index is gone), but the subtree
    // is put back from the kept handoff.
    assert!(out.contains("4 applied"), "{code} {out}{err}");
    assert!(runs_web(&own, "eu-west-1", "1.4.3"));
    assert_eq!(std::fs::read(own.join("handoff.json")).unwrap(), kept);
}

/// Issue 14: nested relays (root → eu → eu-west-1 → eu-edge-paris): each
/// agent reconciles its own clusters and hands down to the relay below,
/// and the outer relay's report folds the inner one's in.
#[test]
fn nested_relays_hand_down_and_report_up() {
    let (tmp, dir) = example_with_eu_relay();
    let eu = dir.join("clusters/eu.yaml");
    let text = std::fs::read_to_string(&eu).unwrap();
    let marked = text.replacen(
        "name: eu-west-1\n  labels: {env: prod, tier: workload, provider: aws, region: eu}\nspec:\n",
        "name: eu-west-1\n  labels: {env: prod, tier: workload, provider: aws, region: eu}\nspec:\n  relay: {}\n",
        1,
    );
    assert_ne!(marked, text);
    std::fs::write(&eu, marked).unwrap();
    let root = tmp.path().join("root");
    let (outer, inner) = (tmp.path().join("eu"), tmp.path().join("eu-west-1"));
    let (d, st) = (dir.to_str().unwrap(), root.to_str().unwrap());
    let (code, _, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 4);

    // eu reconciles eu-west-1 (handing it its handoff), eu-central-1 and
    // eu-edge-berlin; eu-edge-paris waits for eu-west-1's agent.
    let (code, out, err) = agent_once("eu", &root, &outer, &["--relay-timeout", "0s"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("4 cluster(s): 3 applied (0 in sync), 1 pending below a relay"),
        "{out}"
    );
    assert!(
        out.contains(
            "eu-west-1: pending: no agent holds its Lease, so nothing takes revision unversioned"
        ),
        "{out}"
    );
    assert!(held(&outer, "eu-edge-paris").is_empty());

    let (code, out, err) = agent_once("eu-west-1", &outer, &inner, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("reconciled revision unversioned: 1 cluster(s): 1 applied"),
        "{out}"
    );

    let (code, out, err) = agent_once("eu", &root, &outer, &["--relay-timeout", "0s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 cluster(s): 4 applied (3 in sync)"), "{out}");
    let (code, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 cluster(s): 4 applied"), "{out}");

    // eu-edge-paris holds what a direct apply gives it.
    let (flat_tmp, flat_dir) = example_copy();
    let flat = flat_tmp.path().join("flat");
    canopy(&[
        "apply",
        flat_dir.to_str().unwrap(),
        "--state",
        flat.to_str().unwrap(),
        "--fleet-name",
        "fleet",
    ]);
    assert_eq!(held(&inner, "eu-edge-paris"), held(&flat, "eu-edge-paris"));
    assert!(!held(&flat, "eu-edge-paris").is_empty());
}

/// A running `canopy agent`, killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(home: &std::path::Path, own: &std::path::Path, identity: &str) -> Running {
    start_agent_with(home, own, identity, &[])
}

/// As [`start_agent`], with more arguments.
fn start_agent_with(
    home: &std::path::Path,
    own: &std::path::Path,
    identity: &str,
    more: &[&str],
) -> Running {
    start_agent_env(home, own, identity, more, &[])
}

/// As [`start_agent_with`], with variables in its environment.
fn start_agent_env(
    home: &std::path::Path,
    own: &std::path::Path,
    identity: &str,
    more: &[&str],
    env: &[(&str, &std::path::Path)],
) -> Running {
    let child = std::process::Command::new(canopy_bin())
        .args([
            "agent",
            "--cluster",
            "eu",
            "--local",
            home.to_str().unwrap(),
            "--state",
            own.to_str().unwrap(),
            "--identity",
            identity,
            "--lease-duration",
            "2s",
            "--poll",
            "100ms",
        ])
        .args(more)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        // Its log beside its state folder, for a failing test to show.
        .stderr(std::fs::File::create(agent_log_path(own, identity)).unwrap())
        .spawn()
        .unwrap();
    Running(child)
}

fn agent_log_path(own: &std::path::Path, identity: &str) -> std::path::PathBuf {
    own.with_file_name(format!("agent-{identity}.log"))
}

/// What the agent `identity` with state folder `own` logged so far.
fn agent_log(own: &std::path::Path, identity: &str) -> String {
    std::fs::read_to_string(agent_log_path(own, identity)).unwrap_or_default()
}

/// The holder of the agent's Lease in the relay's cluster.
fn lease_holder(root: &std::path::Path) -> Option<String> {
    let text = std::fs::read(root.join("clusters/eu.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v["objects"]["coordination.k8s.io/Lease/canopy-system/canopy-agent"]["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Issue 14: two replicas of an agent elect one leader through the Lease;
/// only the leader writes. Killed, the leader is replaced within the
/// lease's duration by the other, which had written nothing; and the root's
/// apply waits for the running agent's report.
#[test]
fn two_agents_elect_one_leader_and_the_other_takes_over() {
    let (tmp, dir) = example_with_eu_relay();
    let root = tmp.path().join("root");
    let (a_state, b_state) = (tmp.path().join("a"), tmp.path().join("b"));
    let (d, st) = (dir.to_str().unwrap(), root.to_str().unwrap());
    canopy(&["apply", d, "--state", st, "--timeout", "0s"]);

    let a = start_agent(&root, &a_state, "a");
    eventually("a to reconcile", || !held(&a_state, "eu-west-1").is_empty());
    assert_eq!(lease_holder(&root).as_deref(), Some("a"));
    let b = start_agent(&root, &b_state, "b");
    // b stands by through several of a's renewals.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(lease_holder(&root).as_deref(), Some("a"));
    assert!(
        state_files(&b_state).is_empty(),
        "the follower wrote nothing"
    );

    // The root's apply with the leader running: a takes the new handoff.
    let file = dir.join("workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("web:1.4.2", "web:1.4.3")).unwrap();
    let (code, out, err) = canopy(&["apply", d, "--state", st, "--timeout", "30s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "eu (via relay, 4 cluster(s) below): revision unversioned: 4 cluster(s): 4 applied"
        ),
        "{out}"
    );
    assert!(runs_web(&a_state, "eu-west-1", "1.4.3"));

    // The leader dies without releasing its Lease: b takes over once it
    // expires and reconciles the subtree.
    drop(a);
    eventually("b to take over", || {
        lease_holder(&root).as_deref() == Some("b")
    });
    eventually("b to reconcile", || {
        runs_web(&b_state, "eu-west-1", "1.4.3")
    });
    drop(b);
}

fn replicas_of(state: &std::path::Path, cluster: &str, name: &str) -> Option<u64> {
    held(state, cluster)
        .get(&obj_id("apps", "Deployment", "shop", name))?
        .pointer("/spec/replicas")?
        .as_u64()
}

/// Issue 14, item 6: when the root stops hearing from a relay (its agent's
/// Lease expired) for a workload's `failover.after`, the relay's subtree
/// counts as down and its Divided replicas move around it; once the agent
/// renews its Lease they come back.
#[test]
fn a_silent_relay_subtree_is_failed_over_around() {
    let (tmp, dir) = example_with_eu_relay();
    add_to_web(&dir, "  failover: {after: 1s}\n");
    let (root, own) = (tmp.path().join("root"), tmp.path().join("eu"));
    let (d, st) = (dir.to_str().unwrap(), root.to_str().unwrap());
    // The agent runs (and renews) before the first apply that counts.
    canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 0, "{out}");
    let before = replicas_of(&root, "us-east-1", "web").unwrap();
    let eu_before = replicas_of(&own, "eu-west-1", "web");
    assert!(eu_before.is_some_and(|n| n > 0));

    // The agent goes silent: its Lease runs out.
    let (code, out, err) = agent_once("eu", &root, &own, &["--lease-duration", "1s"]);
    assert_eq!(code, 0, "{out}{err}");
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let (code, out, _) = canopy(&["status", d, "--state", st]);
    assert_eq!(code, 0);
    assert!(out.contains("stale"), "{out}");
    // The first apply records since when; past failover.after, the next
    // moves web's replicas off eu's subtree.
    canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    let (_, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    let after = replicas_of(&root, "us-east-1", "web").unwrap();
    assert!(
        after > before,
        "us-east-1 took eu's share: {before} -> {after}\n{out}"
    );

    // The agent is back: its subtree counts again, and the share returns.
    // The handoff written while it was silent kept the subtree's share, so
    // the returning agent scales nothing down in the meantime.
    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    assert!(code == 0 || code == 4, "{out}{err}");
    assert_eq!(
        replicas_of(&own, "eu-west-1", "web"),
        eu_before,
        "no flap: {out}"
    );
    canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(replicas_of(&root, "us-east-1", "web"), Some(before));
    let (code, out, err) = agent_once("eu", &root, &own, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(replicas_of(&own, "eu-west-1", "web"), eu_before);
}

/// Issue 14: a staged rollout whose second stage lies below a relay, with
/// the fleet in Git. The stage goes down to the relay in the run that
/// starts it (the run hands the relay a new handoff and waits for its gate
/// verdict), and a stage the relay reports unhealthy fails and is rolled
/// back by the relay: the level above hands it the old revision's slice,
/// and the relay keeps the stage's clusters there, drift included, while
/// nothing outside the stage moves.
#[test]
fn a_rollout_stage_below_a_relay_takes_the_relays_gate_and_is_rolled_back_by_it() {
    let (tmp, dir) = example_with_eu_relay();
    add_to_web(
        &dir,
        "  rollout:\n    stages:\n      - {name: canary, clusters: {names: [us-east-1]}}\n      - {name: eu, clusters: {names: [eu-west-1, eu-central-1]}}\n      - {name: rest, percent: 100}\n    rollback: auto\n",
    );
    let repo = init_main(&dir);
    let v1 = commit_all(&repo, "v1");
    let root = tmp.path().join("root");
    let (d, st) = (dir.to_str().unwrap(), root.to_str().unwrap());
    let own = tmp.path().join("eu");
    let apply = || canopy(&["apply", d, "--state", st, "--timeout", "20s"]);

    // Version 1, no agent yet: the canary passes, the eu stage goes down
    // to the relay at once, and its gate waits for a report none gives.
    let (code, out, err) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert_eq!(code, 4, "no agent yet: {out}{err}");
    assert!(
        out.contains("eu goes down to the clusters below relay eu with a new handoff")
            && out.contains("eu waits for relay eu's report on its handoff"),
        "{out}"
    );
    // With the agent, one run takes the rollout through eu to the end.
    // (It looks again every 300ms, so drift below is soon put back.)
    let _agent = start_agent_with(&root, &own, "a", &["--resync", "300ms"]);
    let (code, out, err) = apply();
    assert_eq!(code, 0, "{out}{err}\nagent:\n{}", agent_log(&own, "a"));
    assert!(
        out.contains(&format!("rollout web: rollout of {v1} complete")),
        "{out}"
    );
    assert!(runs_web(&own, "eu-west-1", "1.4.2"));

    // Version 2 is unhealthy on eu-west-1.
    let file = dir.join("workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("web:1.4.2", "web:1.4.3")).unwrap();
    std::fs::write(
        dir.join("overrides/bad-eu-west.yaml"),
        "apiVersion: canopy.dev/v1alpha1\nkind: Override\nmetadata: {name: bad-eu-west}\nspec:\n  clusters: {names: [eu-west-1]}\n  resources: [{group: apps, kind: Deployment, name: web}]\n  patches:\n    - mergePatch: {metadata: {annotations: {canopy.dev/local-health: \"unhealthy: crash loop\"}}}\n",
    )
    .unwrap();
    let v2 = commit_all(&repo, "v2");
    // One run: the canary, then the eu stage through the relay, whose
    // report fails the gate; the relay rolls the stage back.
    let (code, out, err) = apply();
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("rollout web: canary healthy; eu starts")
            && out.contains("rollout web FAILED: eu: 1 cluster(s) unhealthy")
            && out.contains(&format!("rolled back 0 cluster(s) of eu to {v1}; handed down to roll back: 2 below relay eu (the relay's report follows)"))
            && out.contains("stages after eu did not start"),
        "{out}"
    );
    assert!(runs_web(&root, "us-east-1", "1.4.3"), "the canary keeps v2");
    for c in ["eu-west-1", "eu-central-1"] {
        assert!(runs_web(&own, c, "1.4.2"), "{c} rolled back\n{out}");
        let rev = held(&own, c)[&obj_id("apps", "Deployment", "shop", "web")]["metadata"]
            ["annotations"]["canopy.dev/revision"]
            .clone();
        assert_eq!(rev, v1.as_str(), "{c} says the revision it runs");
    }
    assert!(
        runs_web(&root, "us-west-2", "1.4.2"),
        "the rest did not start"
    );
    assert!(
        runs_web(&own, "eu-edge-paris", "1.4.2")
            || image_of(&own, "eu-edge-paris", "web").is_none(),
        "the rest below the relay did not start"
    );
    let (_, out, _) = canopy(&["rollout", "status", d, "web", "--state", st]);
    assert!(
        out.starts_with(&format!(
            "rollout of web: rolled back (revision {v2}, from {v1})"
        )),
        "{out}"
    );
    let line = out
        .lines()
        .skip_while(|l| !l.contains("eu-west-1"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        line.contains("rolled back")
            && line.contains("crash loop (reported by relay eu)")
            && line.contains("by relay eu"),
        "{out}"
    );

    // The relay keeps the rollback: drift on a rolled-back cluster is put
    // back to the old revision, not to the failed one.
    edit_state(&own, "eu-central-1", |v| {
        v["objects"][obj_id("apps", "Deployment", "shop", "web")]["spec"]["template"]["spec"]
            ["containers"][0]["image"] = "example/web:drifted".into();
    });
    eventually("the relay puts the rollback back", || {
        runs_web(&own, "eu-central-1", "1.4.2")
    });
    // Running again changes nothing anywhere and still fails.
    let (code, out, _) = apply();
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("rollout web FAILED: eu of"), "{out}");
    assert!(runs_web(&own, "eu-west-1", "1.4.2"));
}

/// Issue 14: a leaf below a relay goes down: failover is the relay's own.
/// Its siblings below the same relay take its Divided replicas, and
/// nothing outside the relay's subtree moves.
#[test]
fn a_down_leaf_below_a_relay_is_failed_over_by_the_relay_alone() {
    let (tmp, dir) = example_with_eu_relay();
    add_to_web(&dir, "  failover: {after: 0s}\n");
    let (root, own) = (tmp.path().join("root"), tmp.path().join("eu"));
    let (d, st) = (dir.to_str().unwrap(), root.to_str().unwrap());
    // With failover at once, eu's subtree counts as down until its agent
    // first holds its Lease: the second apply gives eu its share back.
    for _ in 0..2 {
        canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
        let (code, out, err) = agent_once("eu", &root, &own, &[]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let outside = |c: &str| replicas_of(&root, c, "web");
    let before = (
        outside("us-east-1"),
        outside("us-west-2"),
        outside("staging"),
    );
    let (west, central) = (
        replicas_of(&own, "eu-west-1", "web").unwrap(),
        replicas_of(&own, "eu-central-1", "web").unwrap_or(0),
    );
    assert!(west > 0);

    // eu-west-1 stops answering; the agent records it, then moves its
    // replicas to eu-central-1.
    edit_state(&own, "eu-west-1", |v| v["unreachable"] = true.into());
    let (code, out, _) = agent_once("eu", &root, &own, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("eu-west-1: failed:"), "{out}");
    agent_once("eu", &root, &own, &[]);
    assert_eq!(
        replicas_of(&own, "eu-central-1", "web"),
        Some(west + central)
    );
    // The root's view of eu's share is unchanged: nothing outside moves.
    let (code, out, _) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    for c in ["us", "us-east-1", "us-west-2", "staging"] {
        assert!(out.contains(&format!("{c}: no changes")), "{code} {out}");
    }
    assert_eq!(
        (
            outside("us-east-1"),
            outside("us-west-2"),
            outside("staging")
        ),
        before
    );
}

/// `watch` as the root: it writes the relay's handoff and never reaches
/// below the relay; a running agent takes what it hands down.
#[test]
fn watch_as_the_root_hands_down_and_leaves_the_subtree_to_the_relay() {
    let (tmp, dir) = example_with_eu_relay();
    let (root, own) = (tmp.path().join("root"), tmp.path().join("eu"));
    let watch = std::process::Command::new(canopy_bin())
        .args([
            "watch",
            dir.to_str().unwrap(),
            "--state",
            root.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _watch = Running(watch);
    let _agent = start_agent(&root, &own, "a");
    eventually("the agent to apply what watch handed down", || {
        runs_web(&own, "eu-west-1", "1.4.2")
    });
    let file = dir.join("workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("web:1.4.2", "web:1.4.3")).unwrap();
    eventually(
        "a commit to reach eu-west-1 through watch and the agent",
        || runs_web(&own, "eu-west-1", "1.4.3"),
    );
    for c in BELOW_EU {
        assert!(
            !root.join(format!("clusters/{c}.json")).exists(),
            "watch wrote {c}"
        );
    }
}

/// A listener on loopback that accepts connections and never answers (a
/// leaf whose API server hangs), counting the connections it takes.
struct BlackHole {
    port: u16,
    taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t = taken.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in listener.incoming().flatten() {
                t.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(c);
            }
        });
        BlackHole { port, taken }
    }

    fn taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A kubeconfig for it, written into `dir`.
    fn kubeconfig(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"https://127.0.0.1:{}\", insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
                self.port
            ),
        )
        .unwrap();
        path
    }
}

/// Adds `eu-hang` below the relay eu, beside eu-west-1 and eu-central-1: a
/// Kubernetes cluster whose kubeconfig is `$HANG_KUBECONFIG` in the
/// environment of the agent that reaches it.
fn add_hanging_leaf(dir: &std::path::Path) {
    let eu = dir.join("clusters/eu.yaml");
    let text = std::fs::read_to_string(&eu).unwrap();
    std::fs::write(
        &eu,
        format!("{text}---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: eu-hang\n  labels: {{env: prod, tier: workload, provider: onprem, region: eu}}\nspec:\n  parent: eu\n  connection: {{kubeconfig: \"${{HANG_KUBECONFIG}}\"}}\n"),
    )
    .unwrap();
}

/// Issue 28, item 6: one writer per subtree, even when a round is slow. A
/// leaf below the relay hangs (its API server accepts connections and
/// never answers), so the leading agent's round outlasts its Lease many
/// times over; it renews the Lease while the round runs, so the standby
/// never takes over and writes nothing, the hanging leaf included, while
/// the first agent still holds a round. Once the first agent is gone, the
/// standby takes over. Each agent reaches the leaf through a listener of
/// its own (the leaf's kubeconfig path comes from the agent's
/// environment), so the test sees whose connection the leaf takes.
#[test]
fn a_slow_round_keeps_its_lease_and_the_standby_writes_nothing() {
    let (tmp, dir) = example_with_eu_relay();
    add_hanging_leaf(&dir);
    let root = tmp.path().join("root");
    let (a_state, b_state) = (tmp.path().join("a"), tmp.path().join("b"));
    let (d, st) = (dir.to_str().unwrap(), root.to_str().unwrap());
    let (code, out, err) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert!(code == 0 || code == 4, "{out}{err}");
    let (hole_a, hole_b) = (BlackHole::start(), BlackHole::start());
    let spawn = |state: &std::path::Path, identity: &str, hole: &BlackHole| {
        let kc = hole.kubeconfig(tmp.path(), identity);
        start_agent_env(
            &root,
            state,
            identity,
            &["--request-timeout", "60s"],
            &[("HANG_KUBECONFIG", &kc)],
        )
    };
    let a = spawn(&a_state, "a", &hole_a);
    eventually("a to reconcile the leaves that answer", || {
        !held(&a_state, "eu-west-1").is_empty()
    });
    eventually("a's round to reach the hanging leaf", || hole_a.taken() > 0);
    assert_eq!(lease_holder(&root).as_deref(), Some("a"));
    let b = spawn(&b_state, "b", &hole_b);
    // Four times the Lease's duration, while a's round hangs on the leaf.
    std::thread::sleep(std::time::Duration::from_secs(8));
    assert_eq!(
        lease_holder(&root).as_deref(),
        Some("a"),
        "a renews while its round runs:\n{}",
        agent_log(&a_state, "a")
    );
    assert!(
        !agent_log(&a_state, "a").contains("reconciled the subtree"),
        "a's round still runs:\n{}",
        agent_log(&a_state, "a")
    );
    assert_eq!(
        hole_b.taken(),
        0,
        "the leaf took no connection from the standby"
    );
    assert!(
        state_files(&b_state).is_empty(),
        "the standby wrote nothing"
    );
    assert!(
        agent_log(&b_state, "b").contains("another replica leads; standing by"),
        "{}",
        agent_log(&b_state, "b")
    );

    // a stops (killed, its Lease not released): b, having watched the
    // Lease unchanged for its duration, takes over and reconciles.
    drop(a);
    eventually("b to take over", || {
        lease_holder(&root).as_deref() == Some("b")
    });
    eventually("b to reconcile the leaves that answer", || {
        !held(&b_state, "eu-west-1").is_empty()
    });
    eventually("b's round to reach the hanging leaf", || hole_b.taken() > 0);
    drop(b);
}

/// Issue 28, item 6: an agent that cannot renew its Lease during a round
/// stops writing before its Lease could expire for anyone else. Its round
/// hangs on a leaf of the first level below the relay; meanwhile the
/// relay's own cluster, where the Lease is, becomes unusable; when the
/// hang times out, the next level (the edge sites) is not written.
#[test]
fn a_round_that_cannot_renew_its_lease_stops_writing() {
    let (tmp, dir) = example_with_eu_relay();
    add_hanging_leaf(&dir);
    let root = tmp.path().join("root");
    let own = tmp.path().join("a");
    let (d, st) = (dir.to_str().unwrap(), root.to_str().unwrap());
    let (code, out, err) = canopy(&["apply", d, "--state", st, "--timeout", "0s"]);
    assert!(code == 0 || code == 4, "{out}{err}");
    let hole = BlackHole::start();
    let kc = hole.kubeconfig(tmp.path(), "a");
    let a = start_agent_env(
        &root,
        &own,
        "a",
        &["--request-timeout", "4s"],
        &[("HANG_KUBECONFIG", &kc)],
    );
    eventually("a to reconcile the first level", || {
        !held(&own, "eu-west-1").is_empty()
    });
    eventually("a's round to reach the hanging leaf", || hole.taken() > 0);
    assert!(
        held(&own, "eu-edge-paris").is_empty(),
        "the next level waits"
    );
    // The relay's own cluster (here: its record in the level above's state
    // folder) cannot be read any more: the Lease cannot be renewed.
    std::fs::write(root.join("clusters/eu.json"), "not json").unwrap();
    eventually("a to stop writing", || {
        agent_log(&own, "a").contains("this round stops writing")
    });
    eventually("a's round to end", || {
        let log = agent_log(&own, "a");
        log.contains("round failed") || log.contains("reconciled the subtree")
    });
    assert!(
        held(&own, "eu-edge-paris").is_empty() && held(&own, "eu-edge-berlin").is_empty(),
        "nothing written after the Lease could not be renewed:\n{}",
        agent_log(&own, "a")
    );
    drop(a);
}
