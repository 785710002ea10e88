//! Pipeline benchmark: load + validate + schedule + render of synthetic fleets.
//!
//! `cargo bench --bench pipeline` generates fleets of 1,000 and 10,000
//! clusters × 20 workloads and runs each measurement in a child process of
//! this binary, so every case reports its own peak memory (VmHWM). The
//! baseline, measured in the same run on the same files, is the least any
//! tool must do: read every YAML file and parse it with serde_yaml.
//!
//! Options (after `--`): `--sizes 1000,10000`, `--workloads 20`.

#[global_allocator]
static GLOBAL: canopy::alloc::Canopy = canopy::alloc::Canopy;

mod support;
use support::{field, peak_rss_mib, run_child};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use canopy::core::render::Renderer;
use canopy::core::schedule;
use canopy::core::synth;
use canopy::source::input::load_checked;

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "j2") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Child: read and parse every file with serde_yaml, nothing else.
fn child_baseline(dir: &Path) {
    let t = Instant::now();
    let mut docs = 0usize;
    for f in yaml_files(dir) {
        let text = std::fs::read_to_string(&f).expect("read");
        // Templates are not YAML before rendering; parse what parses.
        for d in serde_yaml::Deserializer::from_str(&text) {
            use serde::Deserialize;
            if serde_yaml::Value::deserialize(d).is_ok() {
                docs += 1;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "RESULT baseline secs={secs:.4} docs={docs} peak_mib={:.1}",
        peak_rss_mib()
    );
}

/// Child: the full pipeline, rendering every cluster to YAML text.
fn child_pipeline(dir: &Path) {
    let t0 = Instant::now();
    let (checked, _) = load_checked(dir, Some("bench")).expect("synthetic fleet is valid");
    let t_load = t0.elapsed();
    let t1 = Instant::now();
    let renderer = Renderer::new(&checked);
    assert!(
        !renderer.diagnostics.has_errors(),
        "{:?}",
        renderer.diagnostics
    );
    let t_sched = t1.elapsed();
    let t2 = Instant::now();
    // What `canopy render` does: each cluster to YAML text as it is rendered.
    let texts = canopy::core::render::render_map(&renderer, None, |_, objs| {
        (objs.len(), canopy::cli::output::objects_yaml(&objs))
    })
    .expect("renders");
    let objects: usize = texts.iter().map(|(_, (n, _))| n).sum();
    let bytes: usize = texts.iter().map(|(_, (_, t))| t.len()).sum();
    let t_render = t2.elapsed();
    let total = t0.elapsed();

    // One Divided placement across every cluster: time the division alone
    // and the whole placement (selection + weights + division).
    let n = checked.topo.len();
    let chosen = vec![true; n];
    let weight: Vec<u64> = (0..n as u64).map(|i| 1 + i % 5).collect();
    let divide = median(200, || {
        std::hint::black_box(
            schedule::divide(&checked.topo, &chosen, &weight, 10_000, false).expect("divides"),
        );
    });
    // The same division bounded by capacity (each cluster's weight is
    // what fits), with a total of 80% of what fits so the bounds bind,
    // against the unbounded division of that total (same run).
    let fits: u64 = weight.iter().sum();
    let near = (fits * 4 / 5) as u32;
    let bound = &schedule::Bound::capacity(false);
    let unbounded_near = median(200, || {
        std::hint::black_box(
            schedule::divide(&checked.topo, &chosen, &weight, near, false).expect("divides"),
        );
    });
    let bounded_near = median(200, || {
        std::hint::black_box(
            schedule::divide_bounded(&checked.topo, &chosen, &weight, &[], near, false, bound)
                .expect("fits"),
        );
    });
    // Calm: the same bounded division, from the replicas a total 10%
    // smaller gave (so every level keeps what it held and divides the
    // rest).
    let before = schedule::divide_bounded(
        &checked.topo,
        &chosen,
        &weight,
        &[],
        near * 9 / 10,
        false,
        bound,
    )
    .expect("fits");
    let calm_bound = schedule::Bound {
        previous: Some(before.replicas),
        ..schedule::Bound::capacity(false)
    };
    let calm_near = median(200, || {
        std::hint::black_box(
            schedule::divide_bounded(
                &checked.topo,
                &chosen,
                &weight,
                &[],
                near,
                false,
                &calm_bound,
            )
            .expect("fits"),
        );
    });
    let wi = checked
        .fleet
        .workloads
        .iter()
        .position(|w| w.spec.placement.replicas.mode == canopy::core::model::ReplicaMode::Divided)
        .expect("a Divided workload");
    let place = median(50, || {
        std::hint::black_box(schedule::place(&checked, wi, false, &[]).expect("places"));
    });
    println!(
        "RESULT pipeline secs={:.4} load_validate={:.4} schedule={:.4} render={:.4} objects={objects} yaml_mib={:.1} divide_ms={:.3} place_ms={:.3} unbounded_ms={:.3} bounded_ms={:.3} calm_ms={:.3} bounded_total={near} peak_mib={:.1}",
        total.as_secs_f64(),
        t_load.as_secs_f64(),
        t_sched.as_secs_f64(),
        t_render.as_secs_f64(),
        bytes as f64 / 1048576.0,
        divide.as_secs_f64() * 1e3,
        place.as_secs_f64() * 1e3,
        unbounded_near.as_secs_f64() * 1e3,
        bounded_near.as_secs_f64() * 1e3,
        calm_near.as_secs_f64() * 1e3,
        peak_rss_mib()
    );
}

fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[runs / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let dir = PathBuf::from(&args[i + 2]);
        match args[i + 1].as_str() {
            "baseline" => child_baseline(&dir),
            _ => child_pipeline(&dir),
        }
        return;
    }
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<usize> = opt("--sizes")
        .unwrap_or_else(|| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--sizes takes numbers"))
        .collect();
    let workloads: usize =
        opt("--workloads").map_or(20, |s| s.parse().expect("--workloads takes a number"));

    let mut rows = Vec::new();
    for &n in &sizes {
        let dir = tempfile::tempdir().expect("temp dir");
        let fleet = dir.path().join(format!("synth-{n}"));
        synth::generate(
            &fleet,
            synth::Spec {
                clusters: n,
                workloads,
            },
        )
        .expect("generate");
        let dir = fleet.to_str().expect("UTF-8 path");
        let base = run_child(&["baseline", dir]);
        let pipe = run_child(&["pipeline", dir]);
        rows.push((n, base, pipe));
    }
    println!(
        "\ncanopy pipeline benchmark ({} workloads; each case in its own process)",
        workloads
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "clusters",
        "total s",
        "load+val",
        "schedule",
        "render",
        "objects",
        "peak MiB",
        "divide ms",
        "place ms",
        "baseline s",
        "×baseline"
    );
    for (n, base, pipe) in &rows {
        let total = field(pipe, "secs");
        let b = field(base, "secs");
        println!(
            "{:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>9} {:>10.0} {:>10.3} {:>10.3} {:>10.3} {:>9.2}",
            n,
            total,
            field(pipe, "load_validate"),
            field(pipe, "schedule"),
            field(pipe, "render"),
            field(pipe, "objects"),
            field(pipe, "peak_mib"),
            field(pipe, "divide_ms"),
            field(pipe, "place_ms"),
            b,
            total / b
        );
    }
    println!("\none Divided division over every cluster, capacity-bound (a total of 80% of what fits) against unbounded, same run:");
    for (n, _, pipe) in &rows {
        println!(
            "{:>8} clusters: total {:.0}, unbounded {:.3} ms, bounded {:.3} ms ({:.2}×), bounded and calm from a total 10% smaller {:.3} ms ({:.2}×)",
            n,
            field(pipe, "bounded_total"),
            field(pipe, "unbounded_ms"),
            field(pipe, "bounded_ms"),
            field(pipe, "bounded_ms") / field(pipe, "unbounded_ms"),
            field(pipe, "calm_ms"),
            field(pipe, "calm_ms") / field(pipe, "unbounded_ms")
        );
    }
    if rows.len() >= 2 {
        let (n0, _, p0) = &rows[0];
        let (n1, _, p1) = &rows[rows.len() - 1];
        println!(
            "scaling: {n1} clusters take {:.2}× the time of {n0} ({:.0}× the clusters)",
            field(p1, "secs") / field(p0, "secs"),
            *n1 as f64 / *n0 as f64
        );
    }
}
