//! canopy against `kubectl apply --server-side` on one real kube-apiserver.
//!
//! `cargo bench --bench kube` (options after `--`: `--objects 1000`,
//! `--rounds 3`) starts the test suite's API server (tests/apiserver, etcd
//! included), builds kubectl from the same Kubernetes release (tests/
//! kubectl, `k8s.io/kubernetes/cmd/kubectl` v1.36.3), and per round applies
//! the same objects — half ConfigMaps, half Deployments, plus their
//! Namespace — into an empty namespace of each tool's own:
//! 1. the first apply (every object created);
//! 2. a no-op re-apply (nothing changed).
//!
//! kubectl is the baseline: each figure is reported as kubectl's wall time
//! over canopy's, both measured in the same run on the same server, the
//! order of the two tools alternating between rounds. Wall times are of
//! whole processes (`canopy apply DIR`, `kubectl apply --server-side -f
//! DIR`), start-up, discovery and rendering included.
//!
//! Every round runs twice: on loopback, and through a proxy that delays
//! each direction by half of `--rtt-ms` (default 2), as a cluster in the
//! same region would. On loopback with two cores the API server itself is
//! the limit (it needs ~1.7 ms of CPU per created object, measured from its
//! /proc stat); with a round trip, a tool that waits for one request before
//! sending the next pays it once per object.

#[path = "../tests/support/apiserver.rs"]
mod apiserver;
mod support;
use support::{arg, median};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// kubectl from the same Kubernetes release as the API server.
fn kubectl() -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kubectl");
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubectl");
    apiserver::go_build(&src, "k8s.io/kubernetes/cmd/kubectl", &bin);
    bin
}

/// The objects, as one multi-document YAML file, in namespace `ns`.
fn manifests(ns: &str, n: usize) -> String {
    let mut docs = vec![format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    )];
    for i in 0..n / 2 {
        docs.push(format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:05}\n  namespace: {ns}\ndata:\n  key: value-{i}\n  other: \"{}\"\n",
            i * 7
        ));
    }
    for i in 0..n - n / 2 {
        docs.push(format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i:05}
  namespace: {ns}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: app-{i:05}}}
  template:
    metadata:
      labels: {{app: app-{i:05}}}
    spec:
      containers:
        - name: app
          image: registry.example.com/app:1.{i}
          ports: [{{containerPort: 8080}}]
          resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
"#
        ));
    }
    docs.join("---\n")
}

/// Runs a command and returns its wall time in seconds; it must succeed
/// and print `expect`.
fn timed(cmd: &mut Command, expect: &str) -> f64 {
    let t = Instant::now();
    let out = cmd.output().expect("runs");
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(expect),
        "{cmd:?} failed or did not print {expect:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

struct Round {
    canopy_first: f64,
    canopy_noop: f64,
    kubectl_first: f64,
    kubectl_noop: f64,
    /// CPU seconds the API server spent on each tool's first apply.
    server_cpu_canopy: f64,
    server_cpu_kubectl: f64,
}

/// A TCP proxy to `upstream` that delays every chunk, each direction, by
/// `delay`, without holding back the chunks behind it (a pipe with
/// latency, not a slow pipe). Returns the port it listens on.
fn delay_proxy(rt: &tokio::runtime::Runtime, upstream: String, delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        delay: Duration,
    ) {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
        let writer = tokio::spawn(async move {
            while let Some((at, buf)) = rx.recv().await {
                tokio::time::sleep_until(at + delay).await;
                if to.write_all(&buf).await.is_err() {
                    return;
                }
            }
            let _ = to.shutdown().await;
        });
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now(), buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
        drop(tx);
        let _ = writer.await;
    }
    rt.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pump(cr, sw, delay), pump(sr, cw, delay));
            });
        }
    });
    port
}

/// The `host:port` of a kubeconfig's server.
fn server_of(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("server: https://"))
        .expect("a server line");
    line.trim_start()["server: https://".len()..].to_string()
}

/// A copy of `kubeconfig` whose server is `127.0.0.1:port`.
fn via_port(kubeconfig: &Path, port: u16, out: &Path) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let p = out.join("kubeconfig-via-proxy");
    let text = text.replace(&server_of(kubeconfig), &format!("127.0.0.1:{port}"));
    std::fs::write(&p, text).expect("write");
    p
}

fn round(
    r: usize,
    n: usize,
    server: &apiserver::ApiServer,
    kubeconfig: &Path,
    kubectl: &Path,
    work: &Path,
) -> Round {
    // canopy: a one-cluster fleet whose workload holds the objects.
    let fleet = work.join(format!("fleet-{r}"));
    let ns_c = format!("bench-canopy-{r}");
    std::fs::create_dir_all(fleet.join("workloads/bench")).unwrap();
    std::fs::write(
        fleet.join("clusters.yaml"),
        format!(
            "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: bench\nspec:\n  connection: {{kubeconfig: {}}}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    std::fs::write(
        fleet.join("workloads/bench/workload.yaml"),
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: bench\nspec:\n  namespace: {ns_c}\n"),
    )
    .unwrap();
    std::fs::write(
        fleet.join("workloads/bench/objects.yaml"),
        manifests(&ns_c, n),
    )
    .unwrap();
    // kubectl: the same objects in a folder of their own.
    let kdir = work.join(format!("kubectl-{r}"));
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::write(
        kdir.join("objects.yaml"),
        manifests(&format!("bench-kubectl-{r}"), n),
    )
    .unwrap();

    let canopy = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_canopy"));
        c.args(["--fleet-name", &format!("bench-{r}"), "apply"])
            .arg(&fleet);
        c
    };
    let kubectl_apply = || {
        let mut c = Command::new(kubectl);
        c.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["apply", "--server-side", "-f"])
            .arg(&kdir);
        c
    };
    let created = format!("applied: {} created", n + 1);
    let run_canopy = || {
        let cpu = server.cpu_seconds();
        let first = timed(&mut canopy(), &created);
        let cpu = server.cpu_seconds() - cpu;
        let noop = timed(&mut canopy(), "no changes: 1 cluster(s) in sync");
        (first, noop, cpu)
    };
    let run_kubectl = || {
        let cpu = server.cpu_seconds();
        let first = timed(&mut kubectl_apply(), "serverside-applied");
        let cpu = server.cpu_seconds() - cpu;
        let noop = timed(&mut kubectl_apply(), "serverside-applied");
        (first, noop, cpu)
    };
    let (
        (canopy_first, canopy_noop, server_cpu_canopy),
        (kubectl_first, kubectl_noop, server_cpu_kubectl),
    ) = if r % 2 == 1 {
        let c = run_canopy();
        (c, run_kubectl())
    } else {
        let k = run_kubectl();
        (run_canopy(), k)
    };
    Round {
        canopy_first,
        canopy_noop,
        kubectl_first,
        kubectl_noop,
        server_cpu_canopy,
        server_cpu_kubectl,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks what benches exist
    }
    let n = arg("--objects", 1000);
    let rounds = arg("--rounds", 3).max(1);
    let rtt_ms = arg("--rtt-ms", 2);
    let kubectl = kubectl();
    let server = apiserver::start();
    let work = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let delay = Duration::from_micros(rtt_ms as u64 * 500);
    let port = delay_proxy(&rt, server_of(&server.kubeconfig), delay);
    let proxied = via_port(&server.kubeconfig, port, work.path());
    println!(
        "{n} objects ({} ConfigMaps, {} Deployments) + 1 Namespace per apply, {rounds} round(s), one real kube-apiserver",
        n / 2,
        n - n / 2
    );
    table("loopback", rounds, |r| {
        round(r, n, &server, &server.kubeconfig, &kubectl, work.path())
    });
    table(
        &format!("{rtt_ms} ms round trip (delay proxy)"),
        rounds,
        |r| round(r + rounds, n, &server, &proxied, &kubectl, work.path()),
    );
}

fn table(title: &str, rounds: usize, mut one: impl FnMut(usize) -> Round) {
    println!("\n{title}");
    println!("round  canopy first  kubectl first  ratio   canopy no-op  kubectl no-op  ratio");
    let mut all = Vec::new();
    for r in 1..=rounds {
        let x = one(r);
        println!(
            "{r:>5}  {:>10.3} s  {:>11.3} s  {:>4.1}×  {:>10.3} s  {:>11.3} s  {:>4.1}×",
            x.canopy_first,
            x.kubectl_first,
            x.kubectl_first / x.canopy_first,
            x.canopy_noop,
            x.kubectl_noop,
            x.kubectl_noop / x.canopy_noop
        );
        all.push(x);
    }
    let m = |f: fn(&Round) -> f64| median(all.iter().map(f).collect());
    let (cf, kf, cn, kn) = (
        m(|x| x.canopy_first),
        m(|x| x.kubectl_first),
        m(|x| x.canopy_noop),
        m(|x| x.kubectl_noop),
    );
    println!(
        "median {cf:>9.3} s  {kf:>11.3} s  {:>4.1}×  {cn:>10.3} s  {kn:>11.3} s  {:>4.1}×",
        kf / cf,
        kn / cn
    );
    let (sc, sk) = (m(|x| x.server_cpu_canopy), m(|x| x.server_cpu_kubectl));
    println!(
        "API server CPU on the first apply (median): canopy {sc:.2} s, kubectl {sk:.2} s; with {} core(s), canopy's first apply cannot take less than {:.2} s",
        cores(),
        sc / cores() as f64
    );
    println!(
        "RESULT case={:?} server_cpu_canopy_s={sc:.2} server_cpu_kubectl_s={sk:.2} first_canopy_s={cf:.3} first_kubectl_s={kf:.3} first_ratio={:.2} noop_canopy_s={cn:.3} noop_kubectl_s={kn:.3} noop_ratio={:.2}",
        title,
        kf / cf,
        kn / cn
    );
}
