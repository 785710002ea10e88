//! A cluster joining, end to end, on real API servers.
//!
//! `cargo bench --bench join` (options after `--`: `--newcomers 20`,
//! `--poll-ms 250`) starts the test suite's API server (tests/apiserver,
//! etcd included) for a hub and for each newcomer, writes a fleet whose
//! workload goes to every cluster labelled tier=edge (a Namespace and a
//! ConfigMap naming the cluster), and runs `canopy watch` on it with
//! `--join-poll`. Then:
//! 1. **one at a time**: each newcomer runs `canopy join` (a whole
//!    process: pin, hand over, ask, wait, store) and the clock stops when
//!    its ConfigMap is on its own API server. Median and p95.
//! 2. **baseline**, same run: `watch` stopped, each newcomer's ConfigMap
//!    deleted, then a plain `canopy apply DIR --cluster NAME` (a whole
//!    process too) puts it back. Median; the join figure is reported as a
//!    ratio to it.
//! 3. **all at once**: the members removed, every newcomer joins again
//!    under a new name at the same moment (`watch` running again); the time
//!    until every one has its ConfigMap.

#[path = "../tests/support/api.rs"]
mod api;
#[path = "../tests/support/apiserver.rs"]
mod apiserver;
mod support;
use support::{arg, median};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn canopy(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(args)
        .output()
        .expect("canopy runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn request(kubeconfig: &Path, method: &str, path: &str) -> Option<serde_json::Value> {
    api::send(kubeconfig, method, path, None).ok()
}

const HELLO: &str = "/api/v1/namespaces/edge-web/configmaps/hello";

/// Waits until the newcomer's ConfigMap names `name`.
fn applied(kubeconfig: &Path, name: &str, deadline: Instant) {
    loop {
        if request(kubeconfig, "GET", HELLO)
            .is_some_and(|v| v["data"]["cluster"].as_str() == Some(name))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{name} was never applied");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn fleet(dir: &Path, hub: &Path) {
    let k = hub.display();
    std::fs::create_dir_all(dir.join("workloads/web")).unwrap();
    std::fs::write(
        dir.join("clusters.yaml"),
        format!(
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: hub}}\nspec:\n  connection: {{kubeconfig: {k}}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: eu}}\nspec:\n  parent: hub\n  connection: {{kubeconfig: {k}}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("workloads/web/workload.yaml"),
        "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: web}\nspec:\n  namespace: edge-web\n  placement:\n    clusters:\n      selector: {matchLabels: {tier: edge}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("workloads/web/ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: edge-web}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("workloads/web/cm.yaml.j2"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello}\ndata: {cluster: \"{{ cluster.name }}\"}\n",
    )
    .unwrap();
}

struct Token {
    url: String,
    token: String,
    ca: String,
}

fn token(dir: &str) -> Token {
    let (ok, out) = canopy(&[
        "token",
        "create",
        dir,
        "--parent",
        "eu",
        "--labels",
        "tier=edge",
        "--ttl",
        "1h",
    ]);
    assert!(ok, "{out}");
    let w: Vec<&str> = out.split_whitespace().collect();
    let after = |f: &str| w[w.iter().position(|x| *x == f).unwrap() + 1].to_string();
    Token {
        url: w[w.iter().position(|x| *x == "join").unwrap() + 1].to_string(),
        token: after("--token"),
        ca: after("--ca-sha256"),
    }
}

fn join(t: &Token, kubeconfig: &Path, name: &str) {
    let (ok, out) = canopy(&[
        "join",
        &t.url,
        "--token",
        &t.token,
        "--ca-sha256",
        &t.ca,
        "--name",
        name,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert!(ok, "join {name}: {out}");
}

fn watch(dir: &str, state: &Path, poll_ms: usize) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["watch", dir, "--state"])
        .arg(state)
        .args(["--join-poll", &format!("{poll_ms}ms"), "--resync", "0s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch starts")
}

fn p95(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64) * 0.95).ceil() as usize - 1]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = arg("--newcomers", 20);
    let poll_ms = arg("--poll-ms", 250);
    let started = Instant::now();
    let servers = apiserver::start_many(n + 1);
    eprintln!("{} API servers up in {:.1?}", n + 1, started.elapsed());
    let (hub, newcomers) = servers.split_first().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir: PathBuf = work.path().join("fleet");
    fleet(&dir, &hub.kubeconfig);
    let dir_s = dir.to_str().unwrap().to_string();
    let state = work.path().join("state");
    let t = token(&dir_s);

    // 1. One at a time, watch running.
    let mut w = watch(&dir_s, &state, poll_ms);
    std::thread::sleep(Duration::from_secs(2));
    let mut joins = Vec::new();
    for (i, s) in newcomers.iter().enumerate() {
        let name = format!("seq-{i:02}");
        let t0 = Instant::now();
        join(&t, &s.kubeconfig, &name);
        applied(
            &s.kubeconfig,
            &name,
            Instant::now() + Duration::from_secs(60),
        );
        joins.push(t0.elapsed().as_secs_f64());
    }
    let _ = w.kill();
    let _ = w.wait();

    // 2. Baseline: a plain apply of the same cluster puts its ConfigMap back.
    let mut applies = Vec::new();
    for (i, s) in newcomers.iter().enumerate() {
        let name = format!("seq-{i:02}");
        request(&s.kubeconfig, "DELETE", HELLO).expect("the ConfigMap is there");
        let t0 = Instant::now();
        let (ok, out) = canopy(&[
            "apply",
            &dir_s,
            "--state",
            state.to_str().unwrap(),
            "--cluster",
            &name,
        ]);
        assert!(ok, "{out}");
        applied(
            &s.kubeconfig,
            &name,
            Instant::now() + Duration::from_secs(60),
        );
        applies.push(t0.elapsed().as_secs_f64());
    }

    // 3. All at once, under new names.
    for i in 0..newcomers.len() {
        let (ok, out) = canopy(&["members", "remove", &dir_s, &format!("seq-{i:02}")]);
        assert!(ok, "{out}");
    }
    let mut w = watch(&dir_s, &state, poll_ms);
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for (i, s) in newcomers.iter().enumerate() {
            let t = &t;
            sc.spawn(move || join(t, &s.kubeconfig, &format!("par-{i:02}")));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, s) in newcomers.iter().enumerate() {
        applied(&s.kubeconfig, &format!("par-{i:02}"), deadline);
    }
    let all = t0.elapsed().as_secs_f64();
    let _ = w.kill();
    let _ = w.wait();

    let (jm, jp, am) = (median(joins.clone()), p95(joins), median(applies));
    println!(
        "join bench: {n} newcomers, real API servers on loopback, watch --join-poll {poll_ms}ms"
    );
    println!("  join -> first workload applied (one at a time): median {jm:.3} s, p95 {jp:.3} s");
    println!("  plain `canopy apply --cluster` of the same cluster:  median {am:.3} s");
    println!("  join / apply: {:.2}x", jm / am);
    println!("  {n} joins at once -> all applied: {all:.3} s");
}
