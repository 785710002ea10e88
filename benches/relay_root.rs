//! The root's work with relays at the first level, against the same fleet
//! pushed flat from one process.
//!
//! `cargo bench --bench relay_root` (options after `--`: `--sizes
//! 10000,30000,100000`, `--flat-max 30000`) generates the synthetic fleet
//! (depth 4, 20 workloads) at each size, and once more with every child of
//! the root marked `spec.relay`. Each first apply runs in its own child
//! process of this binary, through the same run sequence as `canopy apply`
//! (local backend, no wait for relay reports), and reports its wall time,
//! its peak memory, the objects it wrote and, with relays, the bytes of
//! the handoffs it wrote. The flat apply is the baseline of the same run,
//! up to `--flat-max` clusters.

mod support;
use support::{field, peak_rss_mib, run_child};

/// The binary's allocator, as `canopy` itself runs.
#[global_allocator]
static GLOBAL: canopy::alloc::Canopy = canopy::alloc::Canopy;

use std::path::{Path, PathBuf};
use std::time::Instant;

use canopy::backend::kube::KubeOptions;
use canopy::ops::apply::Options;
use canopy::ops::{Access, FleetSource, Location, Selection, Session};

fn child_apply(fleet: &Path, state: &Path) {
    let t = Instant::now();
    let src = FleetSource::open(Location::Dir(fleet.to_path_buf())).expect("source");
    let loaded = src.load(Some("bench")).expect("valid fleet");
    let mut s = Session::open(
        &src.input,
        state.to_path_buf(),
        Access::Write,
        src.base.clone(),
        KubeOptions::default(),
    )
    .expect("state");
    let run = s
        .run(&loaded, &Selection::default(), Options::default(), true)
        .expect("renders");
    let secs = t.elapsed().as_secs_f64();
    let tt = run.report.totals();
    assert_eq!(tt.failed + tt.skipped, 0, "every cluster applies");
    // What the handoffs weigh, as stored (base64 of gzip in the chunks).
    let handoff_bytes: usize = run
        .desired
        .clusters()
        .map(|(c, objs)| {
            objs.iter()
                .enumerate()
                .filter(|(_, (wi, key))| wi.is_none() && key.kind == "Secret")
                .map(|(i, _)| {
                    run.desired.value(c, i)["data"]["chunk"]
                        .as_str()
                        .map_or(0, str::len)
                })
                .sum::<usize>()
        })
        .sum();
    println!(
        "RESULT secs={secs:.4} created={} clusters={} handoff_bytes={handoff_bytes} peak_mib={:.1}",
        tt.created,
        run.report.clusters.len(),
        peak_rss_mib()
    );
}

/// Marks every child of the synthetic root `c00000` a relay.
fn mark_relays(fleet: &Path) {
    for e in std::fs::read_dir(fleet.join("clusters")).expect("clusters") {
        let p = e.expect("entry").path();
        let text = std::fs::read_to_string(&p).expect("read");
        let marked = text.replace("  parent: c00000\n", "  parent: c00000\n  relay: {}\n");
        if marked != text {
            std::fs::write(&p, marked).expect("write");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child_apply(&PathBuf::from(&args[i + 1]), &PathBuf::from(&args[i + 2]));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map_or("10000,30000,100000", String::as_str)
        .split(',')
        .map(|n| n.parse().expect("a number"))
        .collect();
    let flat_max = support::arg("--flat-max", 30_000);
    let s = |p: &Path| p.to_str().expect("UTF-8").to_string();
    println!(
        "{:<8} {:<7} {:>9} {:>10} {:>9} {:>10} {:>13}",
        "clusters", "shape", "seconds", "peak MiB", "written", "reached", "handoff MiB"
    );
    for &n in &sizes {
        for relays in [false, true] {
            if !relays && n > flat_max {
                continue;
            }
            let tmp = tempfile::tempdir().expect("temp dir");
            let fleet = tmp.path().join("fleet");
            canopy::core::synth::generate(
                &fleet,
                canopy::core::synth::Spec {
                    clusters: n,
                    workloads: 20,
                },
            )
            .expect("generate");
            if relays {
                mark_relays(&fleet);
            }
            let r = run_child(&[&s(&fleet), &s(&tmp.path().join("state"))]);
            println!(
                "{n:<8} {:<7} {:>9.2} {:>10.0} {:>9} {:>10} {:>13.1}",
                if relays { "relays" } else { "flat" },
                field(&r, "secs"),
                field(&r, "peak_mib"),
                field(&r, "created"),
                field(&r, "clusters"),
                field(&r, "handoff_bytes") / 1_048_576.0
            );
        }
    }
}
