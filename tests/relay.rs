//! Relays through the `canopy` binary: which clusters a relay reconciles
//! (`tree`, `explain`, `status`), and what `validate` says while the agent
//! is not built.

mod common;
use common::*;

#[test]
fn tree_says_which_relay_reconciles_each_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fleet");
    copy_dir(&repo_root().join("fleet-example"), &dir);
    // Mark eu a relay: its descendants are reconciled by it.
    let eu = dir.join("clusters/eu.yaml");
    let text = std::fs::read_to_string(&eu).unwrap();
    let marked = text.replacen(
        "spec:\n  parent: hub\n",
        "spec:\n  relay: {}\n  parent: hub\n",
        1,
    );
    assert_ne!(marked, text, "eu has a spec to mark:\n{text}");
    std::fs::write(&eu, marked).unwrap();

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
