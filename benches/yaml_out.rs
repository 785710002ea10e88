//! Writing rendered objects as YAML: `core::yaml_out::to_yaml` against
//! `serde_yaml::to_string` (what it replaces) on the same objects, same
//! run: the synthetic fleet's render (1,000 clusters × 20 workloads by
//! default), every object written five times each way, median reported;
//! the two texts must be equal byte for byte.
//!
//! Options (after `--`): `--clusters 1000`, `--workloads 20`.

mod support;
use support::{arg, median};

use std::time::Instant;

use canopy::core::render::{render_all, Renderer};
use canopy::core::synth;
use canopy::core::yaml_out::to_yaml;
use canopy::source::input::load_checked;

fn main() {
    let clusters = arg("--clusters", 1000);
    let workloads = arg("--workloads", 20);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("fleet");
    synth::generate(
        &dir,
        synth::Spec {
            clusters,
            workloads,
        },
    )
    .expect("generate");
    let (checked, _) = load_checked(&dir, Some("synth")).expect("valid");
    let r = Renderer::new(&checked);
    let rf = render_all(&r, None).expect("renders");
    let objects: Vec<&serde_json::Value> = rf
        .clusters
        .iter()
        .flat_map(|(_, objs)| objs.iter().map(|o| &o.value))
        .collect();
    let write = |f: &dyn Fn(&serde_json::Value) -> String| {
        let mut total = 0usize;
        for o in &objects {
            total += f(o).len();
        }
        total
    };
    let serde = |v: &serde_json::Value| serde_yaml::to_string(v).expect("serializes");
    let fast = |v: &serde_json::Value| to_yaml(v);
    let same = objects.iter().all(|o| serde(o) == fast(o));
    assert!(same, "to_yaml differs from serde_yaml");
    let runs = 5;
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        bytes = write(&serde);
        a.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        write(&fast);
        b.push(t.elapsed().as_secs_f64());
    }
    let (a, b) = (median(a), median(b));
    println!(
        "\nYAML of {} objects ({:.1} MB), {clusters} clusters x {workloads} workloads, median of {runs}, same run:",
        objects.len(),
        bytes as f64 / 1e6
    );
    println!(
        "serde_yaml::to_string  {a:.3} s  {:.0} MB/s",
        bytes as f64 / 1e6 / a
    );
    println!(
        "yaml_out::to_yaml      {b:.3} s  {:.0} MB/s  ({:.1}x faster, output identical)",
        bytes as f64 / 1e6 / b,
        a / b
    );
}
