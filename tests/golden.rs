//! Golden (snapshot) tests of `tree`, `render` and `explain` on
//! fleet-example, plus determinism: output does not depend on how the fleet
//! is split into files or on thread timing, and structural templating gives
//! exactly what text templating gives.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the snapshots; review
//! the diff before committing.

mod common;
use common::*;

use std::path::Path;

use canopy::core::render::{render_all, Renderer};
use canopy::source::input::load_checked;

fn stdout_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "canopy {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn tree_snapshot() {
    golden("tree.txt", &stdout_of(&["tree", "fleet-example"]));
}

/// `tree -o json` says what the text tree says, so scripts need not
/// scrape it: every cluster in tree order with its parent and depth, and
/// the same placements.
#[test]
fn tree_json_matches_the_text_tree() {
    let v: serde_json::Value =
        serde_json::from_str(&stdout_of(&["tree", "fleet-example", "-o", "json"])).unwrap();
    golden(
        "tree.json",
        &(serde_json::to_string_pretty(&v).unwrap() + "\n"),
    );
    let text = stdout_of(&["tree", "fleet-example"]);
    let clusters = v["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 12);
    for c in clusters {
        let name = c["name"].as_str().unwrap();
        let line = text
            .lines()
            .find(|l| {
                l.trim_start_matches(['│', '├', '└', '─', ' '])
                    .split("  ")
                    .next()
                    == Some(name)
            })
            .unwrap_or_else(|| panic!("{name} is not in the text tree"));
        let indent = line.chars().take_while(|ch| !ch.is_alphanumeric()).count();
        assert_eq!(c["depth"].as_u64().unwrap() as usize * 4, indent, "{line}");
        for w in c["workloads"].as_array().unwrap() {
            let shown = match w.get("replicas") {
                Some(n) => format!("{} {n}/{}", w["name"].as_str().unwrap(), w["total"]),
                None => w["name"].as_str().unwrap().to_string(),
            };
            assert!(text.contains(&shown), "{shown} is not in the text tree");
        }
    }
    assert_eq!(clusters[1]["parent"], "hub");
}

#[test]
fn completion_scripts_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completion", shell]);
        for cmd in ["apply", "diff", "status", "watch", "rollout", "tree"] {
            assert!(script.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    let out = run(&["completion", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn render_snapshot() {
    golden("render.yaml", &stdout_of(&["render", "fleet-example"]));
}

#[test]
fn explain_snapshots() {
    golden(
        "explain-web.txt",
        &stdout_of(&["explain", "fleet-example", "web"]),
    );
    golden(
        "explain-api.txt",
        &stdout_of(&["explain", "fleet-example", "api"]),
    );
    golden(
        "explain-node-agent-paris.txt",
        &stdout_of(&[
            "explain",
            "fleet-example",
            "node-agent",
            "--cluster",
            "eu-edge-paris",
        ]),
    );
}

#[test]
fn secrets_are_masked_unless_asked() {
    let masked = stdout_of(&["render", "fleet-example", "--cluster", "staging"]);
    assert!(
        !masked.contains("example-token"),
        "Secret value printed:\n{masked}"
    );
    assert!(masked.contains("API_TOKEN: ++++++++"));
    let shown = stdout_of(&[
        "render",
        "fleet-example",
        "--cluster",
        "staging",
        "--show-secrets",
    ]);
    assert!(shown.contains("API_TOKEN: example-token-eu"));
    let json = stdout_of(&["render", "fleet-example", "-o", "json"]);
    assert!(!json.contains("example-token"));
}

#[test]
fn render_out_dir_mirrors_the_tree() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("rendered");
    let o = run(&["render", "fleet-example", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success());
    let paris =
        std::fs::read_to_string(dir.join("hub/eu/eu-west-1/eu-edge-paris/manifests.yaml")).unwrap();
    assert!(paris.contains("registry.eu.example.com/acme/node-agent:0.9.0"));
    assert!(dir.join("staging/manifests.yaml").exists());
    // A second run leaves every file as it is: same bytes, not rewritten.
    let mtime = |p: &str| std::fs::metadata(dir.join(p)).unwrap().modified().unwrap();
    let before = mtime("hub/eu/eu-west-1/eu-edge-paris/manifests.yaml");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = run(&["render", "fleet-example", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success());
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        said.contains(
            ": 0 cluster file(s) written, 12 unchanged, 0 stale file(s) or folder(s) removed"
        ),
        "{said}"
    );
    assert_eq!(
        mtime("hub/eu/eu-west-1/eu-edge-paris/manifests.yaml"),
        before
    );
    // A cluster that leaves the fleet leaves the folder, and the others'
    // files stay as they are.
    let (_tmp, fleet) = example_copy();
    remove_staging(&fleet);
    let o = run(&[
        "render",
        fleet.to_str().unwrap(),
        "--fleet-name",
        "fleet-example",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.join("staging").exists());
    assert_eq!(
        mtime("hub/eu/eu-west-1/eu-edge-paris/manifests.yaml"),
        before
    );
    // Another format replaces the files of the first.
    let o = run(&[
        "render",
        "fleet-example",
        "--out",
        dir.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(o.status.success());
    assert!(dir.join("staging/manifests.json").exists());
    assert!(!dir.join("staging/manifests.yaml").exists());
    assert!(!dir.join("hub/manifests.yaml").exists());
}

/// The whole render of a fleet folder as YAML text, or its errors.
fn try_render(dir: &Path, text_only: bool) -> Result<String, Vec<String>> {
    let (checked, _) = load_checked(dir, Some("fleet-example")).expect("valid");
    let mut r = Renderer::new(&checked);
    if text_only {
        r = r.text_only();
    }
    let rf =
        render_all(&r, None).map_err(|d| d.0.iter().map(|x| x.to_string()).collect::<Vec<_>>())?;
    Ok(rf
        .clusters
        .iter()
        .map(|(c, objs)| {
            format!(
                "# {}\n{}",
                checked.topo.name(*c),
                canopy::cli::output::objects_yaml(objs)
            )
        })
        .collect())
}

fn render_text(dir: &Path, text_only: bool) -> String {
    try_render(dir, text_only).expect("renders")
}

#[test]
fn output_does_not_depend_on_file_layout() {
    // All canopy documents of fleet-example in one file, in reverse order.
    let root = repo_root().join("fleet-example");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("fleet-example");
    let mut docs: Vec<String> = Vec::new();
    let walk = walkdir::WalkDir::new(&root)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walk {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&root).unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        if text.contains("kind: Workload") || !canopy::core::load::declares_canopy_api(&text) {
            let dest = copy.join(rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(dest, text).unwrap();
        } else {
            docs.extend(text.split("\n---\n").map(str::to_string));
        }
    }
    docs.reverse();
    std::fs::write(copy.join("all.yaml"), docs.join("\n---\n")).unwrap();
    assert_eq!(render_text(&root, false), render_text(&copy, false));
}

#[test]
fn structural_templating_equals_text_templating() {
    let root = repo_root().join("fleet-example");
    assert_eq!(render_text(&root, false), render_text(&root, true));
    // Values that text templating would read back differently force the
    // fallback; for each, both paths must agree (objects or errors).
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("'42'", "x{{ cluster.values.v }}", Some("k: x42")),
        ("'42'", "\"{{ cluster.values.v }}\"", Some("k: '42'")),
        ("'7'", "{{ cluster.values.v | int }}0", None),
        ("'true'", "\"{{ cluster.values.v }}\"", Some("k: 'true'")),
        (
            "'say \"hi\"'",
            "'{{ cluster.values.v }}'",
            Some("k: say \"hi\""),
        ),
        ("'say \"hi\"'", "\"{{ cluster.values.v }}\"", None),
        ("'a: b'", "v{{ cluster.values.v }}", None),
        ("'x #y'", "v{{ cluster.values.v }}", Some("k: vx\n")),
        ("''", "\"{{ cluster.values.v }}\"", Some("k: ''")),
        ("'[1]'", "v{{ cluster.values.v }}", None),
        ("' pad'", "\"{{ cluster.values.v }}\"", Some("k: ' pad'")),
        ("'tab\there'", "\"{{ cluster.values.v }}\"", None),
        ("'back\\\\slash'", "\"{{ cluster.values.v }}\"", None),
        ("'it''s'", "'{{ cluster.values.v }}'", None),
    ];
    for (value, template, want) in cases {
        let dir = with(&[
            (
                "clusters.yaml",
                &format!("apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: hub}}\nspec:\n  values: {{v: {value}}}\n"),
            ),
            (
                "workloads/web/config.yaml.j2",
                &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  k: {template}\n"),
            ),
        ]);
        let structural = try_render(dir.path(), false);
        assert_eq!(
            structural,
            try_render(dir.path(), true),
            "value {value}, template {template}"
        );
        if let Some(w) = want {
            let text =
                structural.unwrap_or_else(|e| panic!("value {value}, template {template}: {e:#?}"));
            assert!(
                text.contains(w),
                "value {value}, template {template}: want {w:?} in\n{text}"
            );
        }
    }
}

#[test]
fn render_is_stable_across_runs() {
    let root = repo_root().join("fleet-example");
    let first = stdout_of(&["render", "fleet-example"]);
    for _ in 0..3 {
        assert_eq!(first, stdout_of(&["render", "fleet-example"]));
    }
    assert_eq!(render_text(&root, false), render_text(&root, false));
}
