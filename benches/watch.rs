//! `canopy watch` end to end on a large fleet (local backend).
//!
//! `cargo bench --bench watch` (options after `--`: `--clusters 10000`,
//! `--rounds 3`, `--log FILE` to keep the watch's own log lines) generates the synthetic fleet (`src/core/synth.rs`) into a Git
//! repository, starts the real `canopy watch --repo DIR --ref main` on it
//! and waits for its first full apply. Then, `--rounds` times each, it
//! commits and measures the time from the commit to the end of the round
//! that applied it (the round's log line, written after every state file):
//! 1. a commit that registers one new cluster (a new file, one leaf);
//! 2. a commit that changes one Divided workload's replicas through its
//!    `placement.replicas.total`, and 3. through its manifest's
//!    `spec.replicas`: either way only the clusters whose share moves are
//!    written;
//! 4. a commit that adds a label to a Divided workload's Deployment: every
//!    copy of it, on ~3,000 clusters, is rewritten.
//!
//! The baseline, measured in the same run on the same repository, is the
//! one-shot `canopy apply --repo DIR --ref main` of one more change of each
//! kind: what CI on push costs for the same change.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{commit_all, init_main};
use support::{arg, median};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

struct Watch {
    child: Child,
    /// Each log line with the moment it was read.
    lines: Receiver<(Instant, String)>,
}

impl Watch {
    /// Starts the watch; with `log`, every line it logs is also written there.
    fn start(repo: &Path, state: &Path, log: Option<PathBuf>) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(["watch", "--repo"])
            .arg(repo)
            .args(["--ref", "main", "--path", "fleet", "--state"])
            .arg(state)
            .args([
                "--resync",
                "0s",
                "--log-format",
                "json",
                "--fleet-name",
                "bench",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("canopy watch starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            let mut log = log.map(|p| std::fs::File::create(p).expect("--log file"));
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    /// Waits for the round that reconciled `revision`; returns the moment
    /// its log line was read, and the line.
    fn round_of(&self, revision: &str, timeout: Duration) -> (Instant, serde_json::Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (read_at, line) = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no round for {revision} within {timeout:?}"));
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("revision"))
            {
                panic!("revision skipped: {line}");
            }
            if v["message"] == "reconciled" && v["revision"] == revision {
                assert_eq!(v["failed"], 0, "{line}");
                return (read_at, v);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// One kind of change and its measurements, one per round.
#[derive(Default)]
struct Case {
    what: &'static str,
    /// Commit → the round's log line, seconds.
    end_to_end: Vec<f64>,
    /// The round itself (its `duration_ms`), seconds.
    round: Vec<f64>,
    /// Clusters the round reconciled.
    clusters: Vec<u64>,
    /// The baseline: a one-shot apply of one more such change, seconds.
    one_shot: f64,
}

/// Sets (or adds) `placement.replicas.total` in a synthetic Divided
/// workload's document.
fn set_total(workload: &Path, total: u32) {
    let text = std::fs::read_to_string(workload).unwrap();
    let text = match text.find("      total: ") {
        Some(i) => {
            let end = text[i..].find('\n').unwrap() + i;
            format!("{}      total: {total}{}", &text[..i], &text[end..])
        }
        None => text.replacen(
            "      mode: Divided\n",
            &format!("      mode: Divided\n      total: {total}\n"),
            1,
        ),
    };
    std::fs::write(workload, text).unwrap();
}

fn main() {
    let clusters = arg("--clusters", 10_000);
    let rounds = arg("--rounds", 3);
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let fleet = repo_dir.join("fleet");
    canopy::core::synth::generate(
        &fleet,
        canopy::core::synth::Spec {
            clusters,
            workloads: 20,
        },
    )
    .unwrap();
    let repo = init_main(&repo_dir);
    let first = commit_all(&repo, "fleet");
    let state: PathBuf = tmp.path().join("state");

    let t = Instant::now();
    let log = std::env::args()
        .skip_while(|a| a != "--log")
        .nth(1)
        .map(PathBuf::from);
    let watch = Watch::start(&repo_dir, &state, log);
    let (_, start) = watch.round_of(&first, Duration::from_secs(600));
    println!(
        "first round: {} clusters, {} objects created in {:.2} s",
        start["clusters"],
        start["created"],
        t.elapsed().as_secs_f64()
    );

    let nodes = canopy::core::synth::tree(clusters);
    let leaf_parent = nodes.iter().rev().find(|n| n.2 == 2).unwrap().0.clone();
    let mut changes = Changes {
        fleet: fleet.clone(),
        leaf_parent,
        made: 0,
        total: 3000,
        replicas: 3000,
    };
    let mut results: Vec<Case> = CASES
        .iter()
        .map(|&what| Case {
            what,
            ..Case::default()
        })
        .collect();
    for round in 0..rounds {
        for (i, case) in results.iter_mut().enumerate() {
            changes.make(i);
            let sha = commit_all(&repo, case.what);
            let committed = Instant::now();
            let (done, line) = watch.round_of(&sha, Duration::from_secs(120));
            let secs = done.duration_since(committed).as_secs_f64();
            case.end_to_end.push(secs);
            case.round
                .push(line["duration_ms"].as_f64().unwrap() / 1000.0);
            case.clusters.push(line["clusters"].as_u64().unwrap());
            println!(
                "round {round} {}: {secs:.3} s commit → applied (round {} ms, {} clusters reconciled, {} changed, +{} ~{} -{})",
                case.what,
                line["duration_ms"],
                line["clusters"],
                line["changed"],
                line["created"],
                line["updated"],
                line["deleted"]
            );
        }
    }
    drop(watch);

    // The baseline: one more change of each kind, applied by a one-shot
    // `canopy apply` (every cluster rendered and diffed).
    for (i, case) in results.iter_mut().enumerate() {
        changes.make(i);
        commit_all(&repo, "baseline");
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(["apply", "--repo"])
            .arg(&repo_dir)
            .args(["--ref", "main", "--path", "fleet", "--state"])
            .arg(&state)
            .args(["--fleet-name", "bench"])
            .output()
            .unwrap();
        case.one_shot = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    println!(
        "\n{clusters} clusters, median of {rounds} rounds; baseline: the same kind of change applied by a one-shot `canopy apply`"
    );
    println!("| change | commit → applied (watch) | of which the round | clusters reconciled | one-shot apply | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for c in &results {
        let m = median(c.end_to_end.clone());
        let mut n = c.clusters.clone();
        n.sort_unstable();
        println!(
            "| {} | {:.3} s | {:.3} s | {} | {:.3} s | {:.1}× |",
            c.what,
            m,
            median(c.round.clone()),
            n[n.len() / 2],
            c.one_shot,
            c.one_shot / m
        );
    }
}

const CASES: [&str; 4] = [
    "one new cluster",
    "one workload's replicas (placement total)",
    "one workload's replicas (manifest spec.replicas)",
    "one workload's manifest (a label on every copy)",
];

/// Makes changes of the measured kinds to the synthetic fleet, each on a
/// workload of its own (all three are Divided by static weights), so that
/// no kind masks another.
struct Changes {
    fleet: PathBuf,
    leaf_parent: String,
    made: usize,
    total: u32,
    replicas: u32,
}

impl Changes {
    fn make(&mut self, case: usize) {
        self.made += 1;
        let n = self.made;
        match case {
            0 => std::fs::write(
                self.fleet.join("clusters").join(format!("new-{n:03}.yaml")),
                format!(
                    "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: new-{n:03}\n  labels: {{tier: edge, provider: aws, env: prod, region: r1}}\nspec:\n  parent: {}\n  capacity: {{cpu: \"8\", memory: 32Gi, pods: \"80\"}}\n",
                    self.leaf_parent
                ),
            )
            .unwrap(),
            1 => {
                self.total += 7;
                set_total(&self.fleet.join("workloads/w01/workload.yaml"), self.total);
            }
            2 => {
                let next = self.replicas + 7;
                edit(
                    &self.fleet.join("workloads/w05/app.yaml"),
                    &format!("replicas: {}\n", self.replicas),
                    &format!("replicas: {next}\n"),
                );
                self.replicas = next;
            }
            _ => {
                // The Deployment's own labels line (the first), rewritten.
                let path = self.fleet.join("workloads/w09/app.yaml");
                let text = std::fs::read_to_string(&path).unwrap();
                let i = text.find("\n  labels: {").expect("a labels line") + 1;
                let end = i + text[i..].find('\n').unwrap();
                let line = format!("  labels: {{app: w09, edit: \"{n}\"}}");
                std::fs::write(&path, format!("{}{line}{}", &text[..i], &text[end..])).unwrap();
            }
        }
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}
