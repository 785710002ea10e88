//! `canopy watch` end to end: the real binary as a child process, following
//! a Git repository (or a folder) on the local backend, driven by commits,
//! edits behind its back and signals, and read through its JSON logs, its
//! state files and its /metrics endpoint.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `canopy watch` and its log lines.
struct Watcher {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watcher {
    /// Starts `canopy ARGS… --log-format json`; `args` begin with `watch`.
    fn start(home: &Path, args: &[&str]) -> Watcher {
        let mut child = Command::new(canopy_bin())
            .args(args)
            .args(["--log-format", "json"])
            .current_dir(home)
            .env("HOME", home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("CANOPY_CACHE_DIR", home.join("cache"))
            .env("XDG_STATE_HOME", home.join("state-home"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("canopy watch starts");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The next log line (as JSON) that `pred` accepts, within 30 s.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no log line for {what} within 30 s; lines so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits (up to 30 s, keeping the log) until `done` holds.
    fn until(&mut self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what} within 30 s; log:\n{}",
                self.seen.join("\n")
            );
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line);
            }
        }
    }

    /// Waits for the round that reconciled `revision` after `trigger`.
    fn reconciled(&mut self, trigger: &str, revision: &str) -> Value {
        self.wait_for(&format!("{trigger} round at {revision}"), |v| {
            v["message"] == "reconciled" && v["trigger"] == trigger && v["revision"] == revision
        })
    }

    /// SIGTERM, then the exit code (within 15 s).
    fn terminate(mut self) -> (i32, Vec<String>) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return (status.code().unwrap_or(-1), std::mem::take(&mut self.seen));
            }
            assert!(
                Instant::now() < deadline,
                "canopy watch did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// A copy of fleet-example whose `web` workload spec starts with `spec`
/// (the `namespace: shop` line and what follows it); returns the temp dir,
/// the fleet folder, its parent (the home) and its default state folder.
fn example_with_web_spec(spec: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let (tmp, fleet) = example_copy();
    let home: PathBuf = fleet.parent().unwrap().to_path_buf();
    let state = fleet.join(".canopy/state");
    replace_in(
        &fleet.join("workloads/web/workload.yaml"),
        "  namespace: shop\n",
        spec,
    );
    (tmp, fleet, home, state)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn object(state: &Path, cluster: &str, id: &str) -> Value {
    let v: Value = serde_json::from_slice(
        &std::fs::read(state.join("clusters").join(format!("{cluster}.json"))).unwrap(),
    )
    .unwrap();
    v["objects"][id].clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> String {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics server");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn follows_commits_skips_a_broken_one_corrects_drift_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let (repo, sha1) = repo_with_fleet(&origin);
    let state = tmp.path().join("st");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut w = Watcher::start(
        tmp.path(),
        &[
            on_repo("watch", s(&origin), "main", s(&state)),
            vec!["--resync", "1s", "--listen", &listen],
        ]
        .concat(),
    );
    let start = w.reconciled("start", &sha1);
    assert_eq!(start["failed"], 0, "{start}");
    assert_eq!(start["clusters"], 12, "{start}");
    assert_eq!(state_files(&state).len(), 12);

    // A new commit is applied, and only to the clusters it changes.
    let web = obj_id("apps", "Deployment", "shop", "web");
    let dep = origin.join("fleet/workloads/web/deployment.yaml");
    replace_in(&dep, "replicas: 12", "replicas: 16");
    let sha2 = commit_all(&repo, "web to 16");
    let round = w.reconciled("change", &sha2);
    assert_eq!(round["failed"], 0, "{round}");
    // web divides its manifest's replicas: only the clusters whose share
    // moved are reconciled, and each of them changed.
    let n = round["clusters"].as_u64().unwrap();
    assert!(n > 0 && n < 5, "{round}");
    assert_eq!(round["changed"], n, "{round}");
    let live = object(&state, "eu-west-1", &web);
    assert_eq!(
        live["metadata"]["annotations"]["canopy.dev/revision"],
        sha2.as_str()
    );

    // A broken commit is reported and skipped; nothing is written.
    let before = state_files(&state);
    let hub = origin.join("fleet/clusters/hub.yaml");
    let hub_text = std::fs::read_to_string(&hub).unwrap();
    std::fs::write(
        &hub,
        "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: [broken\n",
    )
    .unwrap();
    let sha3 = commit_all(&repo, "broken");
    let bad = w.wait_for("the broken revision's report", |v| {
        v["revision"] == sha3.as_str()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("revision is invalid: skipped"))
    });
    assert_eq!(bad["last_good"], sha2.as_str(), "{bad}");
    w.wait_for("the file and line of the problem", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("clusters/hub.yaml:4: malformed YAML"))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        state_files(&state),
        before,
        "a broken revision writes nothing"
    );

    // The fix after it is applied.
    std::fs::write(&hub, hub_text).unwrap();
    replace_in(&dep, "replicas: 16", "replicas: 20");
    let sha4 = commit_all(&repo, "fix, web to 20");
    let round = w.reconciled("change", &sha4);
    assert_eq!(round["failed"], 0, "{round}");
    let live = object(&state, "eu-west-1", &web);
    assert_eq!(
        live["metadata"]["annotations"]["canopy.dev/revision"],
        sha4.as_str()
    );
    let replicas = live["spec"]["replicas"].as_u64().unwrap();

    // Drift made behind canopy's back is put back by the periodic check.
    edit_state(&state, "eu-west-1", |v| {
        v["objects"][&web]["spec"]["replicas"] = serde_json::json!(99);
    });
    w.wait_for("drift corrected on eu-west-1", |v| {
        v["message"] == "drift corrected" && v["cluster"] == "eu-west-1"
    });
    assert_eq!(
        object(&state, "eu-west-1", &web)["spec"]["replicas"],
        replicas
    );

    // /healthz and /metrics.
    let health = http_get(port, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = http_get(port, "/metrics");
    assert!(
        !metrics.contains(&format!(r#"revision="{sha1}""#)),
        "{metrics}"
    );
    for want in [
        r#"canopy_reconciles_total{trigger="start",result="success"} 1"#.to_string(),
        r#"canopy_reconciles_total{trigger="change",result="skipped"} 1"#.to_string(),
        format!(r#"canopy_cluster_applied_revision{{cluster="eu-west-1",revision="{sha4}"}} 1"#),
        // The drift checks reconciled every cluster at the last revision.
        format!(r#"canopy_cluster_applied_revision{{cluster="hub",revision="{sha4}"}} 1"#),
        "canopy_reconcile_duration_seconds_count".to_string(),
    ] {
        assert!(metrics.contains(&want), "missing {want} in:\n{metrics}");
    }
    let drifted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("canopy_drifted_objects_total "))
        .and_then(|n| n.parse().ok())
        .expect("drift counter");
    assert!(drifted >= 1.0, "{metrics}");

    let (code, lines) = w.terminate();
    assert_eq!(code, 0, "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("stopped")),
        "{}",
        lines.join("\n")
    );
    // The state lock is released: a one-shot apply can run right after.
    let (code, out, err) = canopy_in(
        tmp.path(),
        &[],
        &on_repo("apply", s(&origin), "main", s(&state)),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no changes"), "{out}");
}

#[test]
fn a_folder_is_watched_and_drift_is_only_reported_when_asked() {
    let (_tmp, fleet) = example_copy();
    let home = fleet.parent().unwrap().to_path_buf();
    let state = fleet.join(".canopy/state");
    let mut w = Watcher::start(
        &home,
        &["watch", s(&fleet), "--resync", "1s", "--no-correct-drift"],
    );
    w.reconciled("start", "unversioned");

    // An edited file is applied (no commit needed for a folder).
    let cm = obj_id("", "ConfigMap", "shop", "platform-config");
    let before = object(&state, "eu", &cm);
    let file = fleet.join("workloads/platform-config/config.yaml.j2");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replacen("\ndata:\n", "\ndata:\n  added: \"yes\"\n", 1);
    assert_ne!(text, edited, "{text}");
    std::fs::write(&file, edited).unwrap();
    let round = w.wait_for("the edit's round", |v| {
        v["message"] == "reconciled" && v["trigger"] == "change" && v["changed"].as_u64() > Some(0)
    });
    assert_eq!(round["failed"], 0, "{round}");
    let after = object(&state, "eu", &cm);
    assert_eq!(after["data"]["added"], "yes", "{after}");
    assert_ne!(before, after);

    // Drift is reported, and left as it is.
    edit_state(&state, "eu", |v| {
        v["objects"][&cm]["data"]["added"] = serde_json::json!("changed by hand");
    });
    w.wait_for("drift found on eu", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("drift found"))
            && v["cluster"] == "eu"
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        object(&state, "eu", &cm)["data"]["added"],
        "changed by hand"
    );
    let (code, lines) = w.terminate();
    assert_eq!(code, 0, "{}", lines.join("\n"));
}

#[test]
fn a_failing_cluster_backs_off_without_holding_up_the_others() {
    let (_tmp, fleet) = example_copy();
    let home: PathBuf = fleet.parent().unwrap().to_path_buf();
    let state = fleet.join(".canopy/state");
    let mut w = Watcher::start(
        &home,
        &["watch", s(&fleet), "--resync", "0s", "--max-backoff", "2s"],
    );
    w.reconciled("start", "unversioned");

    edit_state(&state, "eu", |v| v["unreachable"] = serde_json::json!(true));
    let agent = obj_id("apps", "DaemonSet", "monitoring", "node-agent");
    let ds = fleet.join("workloads/node-agent/daemonset.yaml.j2");
    let text = std::fs::read_to_string(&ds).unwrap();
    let edited = text.replacen(
        "metadata:\n",
        "metadata:\n  annotations: {rollout: \"2\"}\n",
        1,
    );
    assert_ne!(text, edited);
    std::fs::write(&ds, edited).unwrap();
    let failed = w.wait_for("eu's failure", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("cluster failed"))
            && v["cluster"] == "eu"
    });
    assert!(
        failed["error"].as_str().unwrap().contains("unreachable"),
        "{failed}"
    );
    assert_eq!(failed["retry_in"], "1s", "{failed}");
    let round = w.wait_for("the change round", |v| {
        v["message"] == "reconciled" && v["trigger"] == "change"
    });
    assert_eq!(round["failed"], 1, "{round}");
    assert_eq!(round["skipped"], 4, "eu's subtree waits: {round}");
    assert_eq!(
        round["changed"], 7,
        "every other cluster is applied: {round}"
    );
    assert_eq!(
        object(&state, "us-edge-sfo", &agent)["metadata"]["annotations"]["rollout"],
        "2"
    );

    // Still down: the retry fails again and waits longer (2s, the cap).
    w.wait_for("eu's second failure", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("cluster failed"))
            && v["cluster"] == "eu"
            && v["retry_in"] == "2s"
    });
    edit_state(&state, "eu", |v| {
        v.as_object_mut().unwrap().remove("unreachable");
    });
    let retry = w.wait_for("the retry that succeeds", |v| {
        v["message"] == "reconciled" && v["trigger"] == "retry" && v["failed"] == 0
    });
    assert_eq!(retry["clusters"], 5, "eu and its subtree: {retry}");
    for c in ["eu", "eu-west-1", "eu-edge-paris"] {
        assert_eq!(
            object(&state, c, &agent)["metadata"]["annotations"]["rollout"],
            "2",
            "{c}"
        );
    }
    let (code, _) = w.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_remote_is_polled_and_an_unreachable_one_keeps_the_last_good_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let (repo, sha1) = repo_with_fleet(&origin);
    let url = format!("file://{}", origin.display());
    let state = tmp.path().join("st");
    let mut w = Watcher::start(
        tmp.path(),
        &[
            on_repo("watch", &url, "main", s(&state)),
            vec!["--poll", "200ms", "--resync", "0s"],
        ]
        .concat(),
    );
    w.reconciled("start", &sha1);

    // A commit on the remote is fetched by the next poll.
    replace_in(
        &origin.join("fleet/workloads/web/deployment.yaml"),
        "image: ghcr.io/acme/web:1.4.2",
        "image: ghcr.io/acme/web:1.4.3",
    );
    let sha2 = commit_all(&repo, "web 1.4.3");
    let round = w.reconciled("change", &sha2);
    assert_eq!(round["clusters"], 5, "every web cluster: {round}");
    assert_eq!(round["updated"], 5, "{round}");

    // The remote goes away: each poll reports it, nothing is undone.
    let before = state_files(&state);
    let moved = tmp.path().join("origin-away");
    std::fs::rename(&origin, &moved).unwrap();
    let e = w.wait_for("the fetch error", |v| {
        v["level"] == "ERROR"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cannot fetch the repository"))
    });
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains(&format!("cannot fetch {url}")),
        "{e}"
    );
    assert_eq!(state_files(&state), before);

    // Back again, with a new commit: applied.
    std::fs::rename(&moved, &origin).unwrap();
    let repo = git2::Repository::open(&origin).unwrap();
    replace_in(
        &origin.join("fleet/workloads/web/deployment.yaml"),
        "image: ghcr.io/acme/web:1.4.3",
        "image: ghcr.io/acme/web:1.4.4",
    );
    let sha3 = commit_all(&repo, "web 1.4.4");
    w.reconciled("change", &sha3);
    let (code, _) = w.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_cluster_down_past_failover_after_hands_its_replicas_to_its_sibling_and_takes_them_back() {
    let (_tmp, fleet, home, state) =
        example_with_web_spec("  namespace: shop\n  failover: {after: 1s}\n");
    let mut w = Watcher::start(
        &home,
        &["watch", s(&fleet), "--resync", "0s", "--max-backoff", "1s"],
    );
    w.reconciled("start", "unversioned");
    let web = obj_id("apps", "Deployment", "shop", "web");
    let replicas = |c: &str| object(&state, c, &web)["spec"]["replicas"].as_u64();
    assert_eq!(replicas("eu-central-1"), Some(2));

    edit_state(&state, "eu-west-1", |v| {
        v["unreachable"] = serde_json::json!(true)
    });
    // Any change starts a round; eu-west-1 is found down there.
    replace_in(
        &fleet.join("workloads/web/service.yaml"),
        "metadata:\n",
        "metadata:\n  annotations: {touched: \"1\"}\n",
    );
    w.wait_for("eu-west-1 found down", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("cluster failed"))
            && v["cluster"] == "eu-west-1"
    });
    // A retry past failover.after moves eu-west-1's share to eu-central-1.
    w.until("eu-central-1 took eu-west-1's share", || {
        replicas("eu-central-1") == Some(5)
    });
    edit_state(&state, "eu-west-1", |v| {
        v.as_object_mut().unwrap().remove("unreachable");
    });
    w.until("the replicas moved back", || {
        replicas("eu-central-1") == Some(2) && replicas("eu-west-1") == Some(3)
    });
    let (code, _) = w.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_rollout_waits_at_a_manual_pause_until_continue_reaches_the_running_watch() {
    let (_tmp, fleet, home, state) = example_with_web_spec("  namespace: shop\n  rollout:\n    stages:\n      - {name: canary, clusters: {names: [staging]}, pause: manual}\n      - {name: prod, percent: 100}\n");
    let mut w = Watcher::start(&home, &["watch", s(&fleet), "--resync", "0s"]);
    w.reconciled("start", "unversioned");
    let web = obj_id("apps", "Deployment", "shop", "web");
    let image = |c: &str| {
        object(&state, c, &web)["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .map(str::to_string)
    };
    assert!(image("staging").is_some());
    assert_eq!(image("eu-west-1"), None, "prod waits for the canary");

    // `rollout continue` while watch holds the state: watch goes on.
    let (code, out, err) = canopy_in(&home, &[], &["rollout", "continue", s(&fleet), "web"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("goes on with it"), "{out}");
    w.until("prod got web", || image("eu-west-1").is_some());

    // A new image reaches the canary only, until continued again.
    replace_in(
        &fleet.join("workloads/web/deployment.yaml"),
        "web:1.4.2",
        "web:1.5.0",
    );
    w.until("the canary got 1.5.0", || {
        image("staging").is_some_and(|i| i.ends_with(":1.5.0"))
    });
    assert!(image("eu-west-1").unwrap().ends_with(":1.4.2"));
    let (code, out, err) = canopy_in(&home, &[], &["rollout", "continue", s(&fleet), "web"]);
    assert_eq!(code, 0, "{out}{err}");
    w.until("prod got 1.5.0", || {
        image("eu-west-1").is_some_and(|i| i.ends_with(":1.5.0"))
    });
    let (code, _) = w.terminate();
    assert_eq!(code, 0);
}

/// Hostile commits under a running watch (issue 13): an endless template
/// loop, an alias bomb, deep nesting and a NUL byte are each a bad revision,
/// logged with its file and skipped; the fixing commit after them is
/// applied, and the watch stops at the first SIGTERM.
#[test]
fn hostile_commits_are_skipped_and_the_fix_after_them_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let (repo, sha1) = repo_with_fleet(&origin);
    let state = tmp.path().join("st");
    let mut w = Watcher::start(
        tmp.path(),
        &[
            on_repo("watch", s(&origin), "main", s(&state)),
            vec!["--resync", "0s"],
        ]
        .concat(),
    );
    w.reconciled("start", &sha1);
    let before = state_files(&state);
    let bad = origin.join("fleet/workloads/web/bad.yaml.j2");
    let bombs = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\ndata:\n{}",
        alias_bomb("  ")
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "loop",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: loop}\ndata:\n  n: \"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\"\n".to_vec(),
            "fuel (canopy's limit per render",
        ),
        (
            "doubling",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: double}\ndata:\n  n: \"{% set ns = namespace(x='x' * 1000000) %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x | length }}\"\n".to_vec(),
            "fuel (canopy's limit per render",
        ),
        ("aliases", bombs.into_bytes(), "more than 100000 nodes"),
        (
            "nesting",
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\nx: {}{}\n", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            "deeper than 100 levels",
        ),
        (
            "nul",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nul}\n\0data: {}\n".to_vec(),
            "NUL byte",
        ),
    ];
    for (what, bytes, says) in cases {
        std::fs::write(&bad, bytes).unwrap();
        let sha = commit_all(&repo, what);
        w.wait_for(&format!("the {what} revision skipped"), |v| {
            v["revision"] == sha.as_str()
                && v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("skipped, nothing of it applied or pruned"))
        });
        w.wait_for(&format!("why the {what} revision is bad"), |v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("workloads/web/bad.yaml.j2") && m.contains(says))
        });
        assert_eq!(state_files(&state), before, "{what}: nothing written");
    }
    std::fs::remove_file(&bad).unwrap();
    replace_in(
        &origin.join("fleet/workloads/web/deployment.yaml"),
        "replicas: 12",
        "replicas: 16",
    );
    let fix = commit_all(&repo, "fix");
    let round = w.reconciled("change", &fix);
    assert_eq!(round["failed"], 0, "{round}");
    let (code, _) = w.terminate();
    assert_eq!(code, 0);
}

/// Waits (up to 30 s) for a watch to exit by itself: its exit code and
/// what it wrote to stderr.
fn exits_by_itself(mut w: Watcher) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = w.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the watch is still up");
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(line) = w.lines.recv_timeout(Duration::from_millis(200)) {
        w.seen.push(line);
    }
    (status.code(), std::mem::take(&mut w.seen).join("\n"))
}

/// A template minijinja's fuel does not stop (a list doubled 40 times):
/// canopy's allowance per render ends the process.
const KILLING_TEMPLATE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lists}\ndata:\n  n: \"{% set ns = namespace(x=['x' * 1000]) %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x | join(',') | length }}\"\n";

/// A template that passes canopy's memory limit per render ends the
/// process (an allocator cannot fail a render another way). Under a
/// supervisor that restarts it, the revision gets one more try, and after
/// the second death it is skipped: the third process stays up, logs why,
/// and applies the fix that comes next. No crash loop.
#[test]
fn a_revision_that_kills_the_watch_twice_is_skipped_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    let (repo, sha1) = repo_with_fleet(&origin);
    let state = tmp.path().join("st");
    let args = [
        on_repo("watch", s(&origin), "main", s(&state)),
        vec!["--resync", "0s"],
    ]
    .concat();
    let mut w = Watcher::start(tmp.path(), &args);
    w.reconciled("start", &sha1);
    let before = state_files(&state);
    std::fs::write(
        origin.join("fleet/workloads/web/bad.yaml.j2"),
        KILLING_TEMPLATE,
    )
    .unwrap();
    let bad = commit_all(&repo, "bad");

    let limit = "workloads/web/bad.yaml.j2: rendering for cluster";
    let (code, log) = exits_by_itself(w);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(limit) && log.contains("of memory (canopy's limit per template render)"),
        "{log}"
    );
    // The supervisor restarts it: one more try, since a death may have
    // had another cause.
    let (code, log) = exits_by_itself(Watcher::start(tmp.path(), &args));
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains(limit), "{log}");
    assert_eq!(state_files(&state), before, "nothing of it was applied");

    let mut w = Watcher::start(tmp.path(), &args);
    w.wait_for("the killing revision skipped", |v| {
        v["revision"] == bad.as_str()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("skipped, nothing of it applied or pruned"))
    });
    w.wait_for("why it was skipped", |v| {
        v["message"].as_str().is_some_and(|m| {
            m.contains("this revision ended the watch process each time it was rendered (2 times")
        })
    });
    std::fs::remove_file(origin.join("fleet/workloads/web/bad.yaml.j2")).unwrap();
    replace_in(
        &origin.join("fleet/workloads/web/deployment.yaml"),
        "replicas: 12",
        "replicas: 16",
    );
    let fix = commit_all(&repo, "fix");
    let round = w.reconciled("change", &fix);
    assert_eq!(round["failed"], 0, "{round}");
    assert_ne!(state_files(&state), before, "the fix was applied");
    assert!(
        !state.join("rendering.json").exists(),
        "a finished render leaves no record"
    );
    let (code, _) = w.terminate();
    assert_eq!(code, 0);
}

/// The same in a folder outside Git, where every revision is
/// `unversioned`: the record names the content too, so after the killing
/// edit is skipped, the next edit is not mistaken for it and applies.
#[test]
fn a_killing_edit_in_a_folder_is_skipped_and_the_next_edit_applies() {
    let (_tmp, fleet) = example_copy();
    let home = fleet.parent().unwrap().to_path_buf();
    let state = fleet.join(".canopy/state");
    let args = ["watch", s(&fleet), "--resync", "0s"];
    let mut w = Watcher::start(&home, &args);
    w.reconciled("start", "unversioned");
    let bad = fleet.join("workloads/web/bad.yaml.j2");
    std::fs::write(&bad, KILLING_TEMPLATE).unwrap();
    let (code, log) = exits_by_itself(w);
    assert_eq!(code, Some(2), "{log}");
    let (code, log) = exits_by_itself(Watcher::start(&home, &args));
    assert_eq!(code, Some(2), "{log}");
    let mut w = Watcher::start(&home, &args);
    w.wait_for("why it was skipped", |v| {
        v["message"].as_str().is_some_and(|m| {
            m.contains("this revision ended the watch process each time it was rendered")
        })
    });
    std::fs::remove_file(&bad).unwrap();
    replace_in(
        &fleet.join("workloads/web/deployment.yaml"),
        "replicas: 12",
        "replicas: 16",
    );
    let round = w.wait_for("the fix applied", |v| {
        v["message"] == "reconciled" && v["trigger"] == "change" && v["changed"].as_u64() > Some(0)
    });
    assert_eq!(round["failed"], 0, "{round}");
    assert!(!state.join("rendering.json").exists());
    let (code, _) = w.terminate();
    assert_eq!(code, 0);
}
