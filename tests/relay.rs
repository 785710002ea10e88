//! Relays through the `canopy` binary: which clusters a relay reconciles
//! (`tree`, `explain`, `status`), and what `validate` says while the agent
//! is not built; and the handoff `apply` writes into a relay cluster.

mod common;
use common::*;

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
    assert!(line.ends_with("via relay eu"), "{out}");
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
        err.contains(
            "spec.relay: relay: the relay's agent (`canopy agent`) is not part of this build yet"
        ),
        "{err}"
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
    let (code, out, err) = canopy(&["apply", d, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");

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
    let (checked, _) = canopy::source::input::check_all(&input, None).unwrap();
    let checked = checked.unwrap();
    let full = Renderer::new(&checked);
    let want = relay::handoff(&full, checked.topo.get("eu").unwrap(), &got.revision);
    assert_eq!(got, want);
    let opened = relay::open(&got).unwrap_or_else(|d| panic!("{d:?}"));
    assert!(opened.checked.topo.get("eu-edge-paris").is_some());
    assert!(
        opened.checked.topo.get("us").is_none(),
        "the slice holds eu's subtree and its ancestors"
    );
    // Only the relay holds a handoff.
    assert!(!stored("us").iter().any(|o| o["kind"] == "Handoff"));

    let (code, out, _) = canopy(&["apply", d, "--state", st]);
    assert_eq!(code, 0);
    assert!(out.contains("  eu: no changes"), "{out}");

    // A change below eu: a new slice, a new index; the old chunks go.
    let file = dir.join("workloads/web/deployment.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("web:1.4.2", "web:1.4.3")).unwrap();
    let (code, out, err) = canopy(&["apply", d, "--state", st]);
    assert_eq!(code, 0, "{out}{err}");
    let (next, chunk_count) = read_back(&stored("eu"));
    assert_ne!(next.digest, got.digest);
    assert!(next.files.values().any(|t| t.contains("web:1.4.3")));
    assert_eq!(
        chunk_count,
        chunks::encode(&next).chunks.len(),
        "only the new slice's chunks are kept"
    );
}
