//! `canopy watch` end to end on a large fleet (local backend).
//!
//! `cargo bench --bench watch` (options after `--`: `--clusters 10000`,
//! `--rounds 3`) generates the synthetic fleet (`src/synth.rs`) into a Git
//! repository, starts the real `canopy watch --repo DIR --ref main` on it
//! and waits for its first full apply. Then, `--rounds` times each, it
//! commits and measures the time from the commit to the end of the round
//! that applied it (the round's log line, written after every state file):
//! 1. a commit that registers one new cluster (a new file, one leaf);
//! 2. a commit that changes one Divided workload's replicas
//!    (`placement.replicas.total`): only the clusters whose share moves;
//! 3. a commit that edits that workload's manifest (every cluster that runs
//!    it renders anew).
//!
//! The baseline, measured in the same run on the same repository, is the
//! one-shot `canopy apply --repo DIR --ref main` of a further commit of the
//! same kind as (2): what CI on push costs for the same change.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn commit_all(repo: &git2::Repository, message: &str) -> String {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("bench", "bench@canopy.invalid").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

struct Watch {
    child: Child,
    /// Each log line with the moment it was read.
    lines: Receiver<(Instant, String)>,
}

impl Watch {
    fn start(repo: &Path, state: &Path) -> Watch {
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
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let clusters = arg("--clusters", 10_000);
    let rounds = arg("--rounds", 3);
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let fleet = repo_dir.join("fleet");
    canopy::synth::generate(
        &fleet,
        canopy::synth::Spec {
            clusters,
            workloads: 20,
        },
    )
    .unwrap();
    let mut opts = git2::RepositoryInitOptions::new();
    opts.initial_head("main");
    let repo = git2::Repository::init_opts(&repo_dir, &opts).unwrap();
    let first = commit_all(&repo, "fleet");
    let state: PathBuf = tmp.path().join("state");

    let t = Instant::now();
    let watch = Watch::start(&repo_dir, &state);
    let (_, start) = watch.round_of(&first, Duration::from_secs(600));
    println!(
        "first round: {} clusters, {} objects created in {:.2} s",
        start["clusters"],
        start["created"],
        t.elapsed().as_secs_f64()
    );

    let nodes = canopy::synth::tree(clusters);
    let leaf_parent = nodes.iter().rev().find(|n| n.2 == 2).unwrap().0.clone();
    let workload = fleet.join("workloads/w01/workload.yaml");
    let manifest = fleet.join("workloads/w01/app.yaml");
    let mut results: Vec<Case> = [
        "new cluster",
        "replicas (placement total)",
        "replicas (manifest edit)",
    ]
    .into_iter()
    .map(|what| Case {
        what,
        ..Case::default()
    })
    .collect();
    let mut total = 3000;
    for round in 0..rounds {
        // 1. one new cluster.
        let name = format!("new-{round:03}");
        std::fs::write(
            fleet.join("clusters").join(format!("{name}.yaml")),
            format!("apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels: {{tier: edge, provider: aws, env: prod, region: r1}}\nspec:\n  parent: {leaf_parent}\n  capacity: {{cpu: \"8\", memory: 32Gi, pods: \"80\"}}\n"),
        )
        .unwrap();
        for (i, case) in results.iter_mut().enumerate() {
            match i {
                1 => {
                    total += 7;
                    set_total(&workload, total);
                }
                2 => {
                    let text = std::fs::read_to_string(&manifest).unwrap();
                    let edited =
                        text.replacen("app: w01}\nspec:", "app: w01, edit: \"x\"}\nspec:", 1);
                    assert_ne!(text, edited);
                    std::fs::write(&manifest, edited).unwrap();
                }
                _ => {}
            }
            let sha = commit_all(&repo, "change");
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
        // Undo the manifest edit so the next round edits again.
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, text.replacen(", edit: \"x\"}", "}", 1)).unwrap();
        let sha = commit_all(&repo, "undo");
        watch.round_of(&sha, Duration::from_secs(120));
    }
    drop(watch);

    // Baseline: a one-shot apply of a further new total.
    total += 7;
    let text = std::fs::read_to_string(&workload).unwrap();
    let i = text.find("      total: ").unwrap();
    let end = text[i..].find('\n').unwrap() + i;
    std::fs::write(
        &workload,
        format!("{}      total: {total}{}", &text[..i], &text[end..]),
    )
    .unwrap();
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
    let baseline = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    println!("\n{clusters} clusters, median of {rounds} rounds, commit → every affected cluster applied:");
    println!("| change | commit → applied | of which the round | clusters reconciled | vs one-shot apply |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for c in &results {
        let m = median(c.end_to_end.clone());
        let mut n = c.clusters.clone();
        n.sort_unstable();
        println!(
            "| {} | {:.3} s | {:.3} s | {} | {:.1}× faster |",
            c.what,
            m,
            median(c.round.clone()),
            n[n.len() / 2],
            baseline / m
        );
    }
    println!("| baseline: one-shot `canopy apply` of a new total | {baseline:.3} s | | all | 1× |");
}
