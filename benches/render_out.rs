//! `canopy render --out DIR` on a synthetic fleet: how long bringing the
//! folder up to date takes when it already holds the last render.
//!
//! `cargo bench --bench render_out` renders a 1,000-cluster fleet once and
//! then writes it to a folder, five times per case, median reported:
//! - **replace** (the baseline, what `render --out` did before it wrote in
//!   place): delete the folder, then create every cluster folder and write
//!   every file;
//! - **in place, nothing changed** and **in place, one cluster changed**:
//!   [`canopy::cli::output::write_out_dir`] over the folder a render wrote.
//!
//! Options (after `--`): `--clusters 1000`, `--workloads 20`.

mod support;
use std::path::Path;
use std::time::Instant;
use support::median;

use canopy::cli::output::{self, ClusterText};
use canopy::core::render::{render_all, Renderer};
use canopy::core::synth;
use canopy::source::input::load_checked;

/// The previous `render --out`: the folder deleted and written whole.
fn replace(checked: &canopy::core::validate::Checked, texts: &[(usize, ClusterText)], dir: &Path) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove");
    }
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(output::OUT_MARKER), "marker\n").expect("marker");
    for (c, body) in texts {
        let mut folder = dir.to_path_buf();
        for part in checked.topo.path(*c) {
            folder.push(part);
        }
        std::fs::create_dir_all(&folder).expect("mkdir");
        std::fs::write(folder.join("manifests.yaml"), &body.text).expect("write");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|s| s.parse::<usize>().expect("a number"))
    };
    let clusters = opt("--clusters").unwrap_or(1000);
    let workloads = opt("--workloads").unwrap_or(20);
    let tmp = tempfile::tempdir().expect("temp dir");
    let fleet = tmp.path().join("fleet");
    synth::generate(
        &fleet,
        synth::Spec {
            clusters,
            workloads,
        },
    )
    .expect("generate");
    let (checked, _) = load_checked(&fleet, Some("synth")).expect("valid");
    let r = Renderer::new(&checked);
    let rf = render_all(&r, None).expect("renders");
    let mut texts: Vec<(usize, ClusterText)> = rf
        .clusters
        .iter()
        .map(|(c, objs)| {
            (
                *c,
                ClusterText {
                    objects: objs.len(),
                    text: output::objects_yaml(objs),
                },
            )
        })
        .collect();
    let bytes: usize = texts.iter().map(|(_, t)| t.text.len()).sum();
    let runs = 5;
    let base_dir = tmp.path().join("replace");
    let mut base = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        replace(&checked, &texts, &base_dir);
        base.push(t.elapsed().as_secs_f64());
    }
    let dir = tmp.path().join("in-place");
    output::write_out_dir(&checked, &texts, &dir, false).expect("first write");
    let mut same = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let done = output::write_out_dir(&checked, &texts, &dir, false).expect("write");
        same.push(t.elapsed().as_secs_f64());
        assert_eq!(done.written, 0);
    }
    let mut one = Vec::new();
    for i in 0..runs {
        texts[0].1.text.push_str(&format!("# change {i}\n"));
        let t = Instant::now();
        let done = output::write_out_dir(&checked, &texts, &dir, false).expect("write");
        one.push(t.elapsed().as_secs_f64());
        assert_eq!(done.written, 1);
    }
    let (b, s, o) = (median(base), median(same), median(one));
    println!(
        "\nrender --out: {clusters} clusters x {workloads} workloads, {:.1} MB of manifests; median of {runs}",
        bytes as f64 / 1e6
    );
    println!("{:<34} {:>9} {:>10}", "case", "seconds", "×replace");
    println!(
        "{:<34} {:>9.4} {:>10.2}",
        "replace (baseline, previous)", b, 1.0
    );
    println!(
        "{:<34} {:>9.4} {:>10.2}",
        "in place, nothing changed",
        s,
        s / b
    );
    println!(
        "{:<34} {:>9.4} {:>10.2}",
        "in place, one cluster changed",
        o,
        o / b
    );
}
