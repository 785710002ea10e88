//! What tenancy costs: load + validate + render of the synthetic fleet
//! (10,000 clusters × 20 workloads by default), without tenants (the
//! baseline) and with every workload owned by a tenant of its own whose
//! rules every object must pass (namespaces, kinds, placement), same run.
//! Each case runs five times in a fresh process; medians are reported.
//!
//! Options (after `--`): `--clusters 10000`, `--workloads 20`.

mod support;
use support::{arg, field, median, run_child};

use std::path::Path;
use std::time::Instant;

use canopy::core::render::{render_map, Renderer};
use canopy::core::synth;
use canopy::source::input::load_checked;

/// Child: the pipeline on `dir`, timed.
fn child(dir: &Path) {
    let t = Instant::now();
    let (checked, _) = load_checked(dir, Some("synth")).expect("a valid fleet");
    let r = Renderer::new(&checked);
    let objects: usize = render_map(&r, None, |_, objs| objs.len())
        .expect("renders")
        .into_iter()
        .map(|(_, n)| n)
        .sum();
    let owned = checked.tenancy.owner.iter().flatten().count();
    println!(
        "RESULT secs={:.4} objects={objects} owned={owned}",
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(Path::new(&args[i + 1]));
        return;
    }
    let clusters = arg("--clusters", 10_000);
    let workloads = arg("--workloads", 20);
    let tmp = tempfile::tempdir().expect("temp dir");
    let plain = tmp.path().join("plain");
    synth::generate(
        &plain,
        synth::Spec {
            clusters,
            workloads,
        },
    )
    .expect("generate");
    let tenants = tmp.path().join("tenants");
    synth::generate(
        &tenants,
        synth::Spec {
            clusters,
            workloads,
        },
    )
    .expect("generate");
    // A tenant per workload, owning it by name, with rules every object of
    // the synthetic fleet passes: the checks run in full and find nothing.
    let (loaded, _) = load_checked(&plain, Some("synth")).expect("valid");
    let mut text = String::new();
    for w in &loaded.fleet.workloads {
        text.push_str(&format!(
            "apiVersion: canopy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: team-{0}}}\nspec:\n  workloads: [{0}]\n  namespaces: ['*']\n  allow: [{{group: '*', kind: '*'}}]\n---\n",
            w.name()
        ));
    }
    std::fs::write(tenants.join("tenants.yaml"), text).expect("write");
    let runs = 5;
    let time = |dir: &Path| {
        let lines: Vec<String> = (0..runs)
            .map(|_| run_child(&[dir.to_str().expect("UTF-8")]))
            .collect();
        let secs = median(lines.iter().map(|l| field(l, "secs")).collect());
        (secs, lines[0].clone())
    };
    let (base, base_line) = time(&plain);
    let (with, with_line) = time(&tenants);
    println!(
        "\ntenancy: {clusters} clusters x {workloads} workloads, load+validate+render, median of {runs}"
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>9}",
        "case", "seconds", "×base", "objects", "owned"
    );
    println!(
        "{:<40} {:>9.3} {:>9.3} {:>9} {:>9}",
        "no tenants (baseline)",
        base,
        1.0,
        field(&base_line, "objects"),
        field(&base_line, "owned")
    );
    println!(
        "{:<40} {:>9.3} {:>9.3} {:>9} {:>9}",
        "a tenant per workload, every rule checked",
        with,
        with / base,
        field(&with_line, "objects"),
        field(&with_line, "owned")
    );
}
