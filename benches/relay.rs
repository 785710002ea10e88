//! Commit → leaf applied, through relays, on real API servers.
//!
//! `cargo bench --bench relay` (options after `--`: `--rounds 7`,
//! `--poll-ms 200`) starts five of the test suite's API servers (etcd
//! included) on loopback: a root, three relay clusters and one leaf, and
//! three fleets that end on the same leaf server, each in its own
//! namespace:
//! - `direct`: root → leaf, the root process applies the leaf itself
//!   (the baseline);
//! - `one`: root → relay → leaf, one running `canopy agent`;
//! - `two`: root → relay → relay → leaf, two running agents, nested.
//!
//! Agents run in follow mode with `--poll` (default 200 ms). Per round and
//! fleet, the ConfigMap the workload holds changes in the fleet folder
//! (the commit), `canopy apply` starts, and the clock stops when the leaf's
//! API server serves the new value (read every 10 ms). The three fleets go
//! in a different order each round. Also reported: how long the root's
//! `apply` ran, which waits for the relay's report to come back up.

#[path = "../tests/support/apiserver.rs"]
mod apiserver;
mod support;
use support::{arg, median};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A kube client for one server, for reading the leaf.
struct Reader {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Reader {
    fn new(kubeconfig: &Path) -> Reader {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(cfg).unwrap()
        });
        Reader { rt, client }
    }

    /// The ConfigMap's value, `None` while it does not exist.
    fn value(&self, ns: &str) -> Option<String> {
        let req = http::Request::get(format!("/api/v1/namespaces/{ns}/configmaps/bench"))
            .body(Vec::new())
            .unwrap();
        let v: serde_json::Value = self.rt.block_on(self.client.request(req)).ok()?;
        v["data"]["value"].as_str().map(str::to_string)
    }
}

/// One fleet: its folder, its namespace, and its agents.
struct Scenario {
    name: &'static str,
    dir: PathBuf,
    state: PathBuf,
    agents: Vec<Child>,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for a in &mut self.agents {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

/// A cluster of the chain below the root: (name, server, relay).
type Link = (&'static str, usize, bool);

fn cluster(name: &str, parent: Option<&str>, relay: bool, kc: &Path) -> String {
    let mut spec = format!("connection: {{kubeconfig: {}}}", kc.display());
    if let Some(p) = parent {
        spec.push_str(&format!(", parent: {p}"));
    }
    if relay {
        spec.push_str(", relay: {}");
    }
    format!("---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n")
}

fn write_value(dir: &Path, value: &str) {
    std::fs::write(
        dir.join("workloads/app/cm.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench\ndata:\n  value: \"{value}\"\n"),
    )
    .unwrap();
}

fn apply(s: &Scenario) -> Child {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["--fleet-name", s.name, "apply"])
        .arg(&s.dir)
        .arg("--state")
        .arg(&s.state)
        .args(["--timeout", "60s", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = arg("--rounds", 7);
    let poll_ms = arg("--poll-ms", 200);
    let servers = apiserver::start_many(5);
    let kc = |i: usize| servers[i].kubeconfig.clone();
    let tmp = tempfile::tempdir().unwrap();
    let leaf = Reader::new(&kc(4));

    let chains: [(&'static str, Vec<Link>); 3] = [
        ("direct", vec![("leaf", 4, false)]),
        ("one", vec![("r1", 1, true), ("leaf", 4, false)]),
        (
            "two",
            vec![("r1", 2, true), ("r2", 3, true), ("leaf", 4, false)],
        ),
    ];
    let mut scenarios = Vec::new();
    for (name, chain) in &chains {
        let dir = tmp.path().join(name).join("fleet");
        std::fs::create_dir_all(dir.join("workloads/app")).unwrap();
        let mut clusters = cluster("root", None, false, &kc(0));
        let mut parent = "root";
        for (c, server, relay) in chain {
            clusters.push_str(&cluster(c, Some(parent), *relay, &kc(*server)));
            parent = c;
        }
        std::fs::write(dir.join("clusters.yaml"), clusters).unwrap();
        let ns = format!("bench-{name}");
        std::fs::write(
            dir.join("workloads/app/workload.yaml"),
            format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {{name: app}}\nspec:\n  namespace: {ns}\n  placement: {{clusters: {{names: [leaf]}}}}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("workloads/app/ns.yaml"),
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
        )
        .unwrap();
        write_value(&dir, "start");
        let mut s = Scenario {
            name,
            state: tmp.path().join(name).join("state"),
            dir,
            agents: Vec::new(),
        };
        for (c, server, relay) in chain {
            if !relay {
                continue;
            }
            let child = Command::new(env!("CARGO_BIN_EXE_canopy"))
                .args(["agent", "--cluster", c, "--kubeconfig"])
                .arg(kc(*server))
                .arg("--state")
                .arg(tmp.path().join(name).join(format!("agent-{c}")))
                .args(["--poll", &format!("{poll_ms}ms"), "--resync", "1h"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            s.agents.push(child);
        }
        let mut a = apply(&s);
        a.wait().unwrap();
        let t = Instant::now();
        while leaf.value(&ns).as_deref() != Some("start") {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{name}: the leaf never got its first apply"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        scenarios.push(s);
    }

    let mut leaf_s: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut apply_s: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..rounds {
        for k in 0..3 {
            let i = (round + k) % 3;
            let s = &scenarios[i];
            let ns = format!("bench-{}", s.name);
            let value = format!("round-{round}");
            write_value(&s.dir, &value);
            let t = Instant::now();
            let mut a = apply(s);
            while leaf.value(&ns).as_deref() != Some(value.as_str()) {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "{}: round {round} never reached the leaf",
                    s.name
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            leaf_s[i].push(t.elapsed().as_secs_f64());
            let ok = a.wait().unwrap().success();
            apply_s[i].push(t.elapsed().as_secs_f64());
            assert!(ok, "{}: round {round}: apply failed", s.name);
        }
    }
    println!("commit → leaf applied, {rounds} rounds, agents polling every {poll_ms} ms:");
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "path", "median s", "min s", "max s", "× direct", "apply ran s"
    );
    let base = median(leaf_s[0].clone());
    for (i, (name, _)) in chains.iter().enumerate() {
        let v = &leaf_s[i];
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        let m = median(v.clone());
        println!(
            "{name:<8} {m:>10.3} {min:>10.3} {max:>10.3} {:>12.2} {:>14.3}",
            m / base,
            median(apply_s[i].clone())
        );
    }
}
