//! Folders are layers and imports point one way:
//! cli → watch → ops → backend, source, state → core.
//! This scans every source file for `crate::` paths (comments aside) and
//! fails when a layer names one above it, so an upward import cannot land
//! unnoticed.

use std::path::Path;

/// Each layer, with the layers it must never name.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "core",
        &[
            "backend", "source", "state", "ops", "watch", "agent", "cli", "sys",
        ],
    ),
    (
        "alloc",
        &[
            "core", "backend", "source", "state", "ops", "watch", "agent", "cli", "sys",
        ],
    ),
    (
        "sys",
        &[
            "core", "backend", "source", "state", "ops", "watch", "agent", "cli",
        ],
    ),
    (
        "backend",
        &["source", "state", "ops", "watch", "agent", "cli"],
    ),
    (
        "source",
        &["backend", "state", "ops", "watch", "agent", "cli"],
    ),
    (
        "state",
        &["backend", "source", "ops", "watch", "agent", "cli"],
    ),
    ("ops", &["watch", "agent", "cli"]),
    ("watch", &["agent", "cli"]),
    ("agent", &["watch", "cli"]),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The layers a file's code names through `crate::…`, with line numbers.
fn named_layers(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((i + 1, name));
            rest = after;
        }
    }
    out
}

#[test]
fn layers_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    let mut scanned = 0;
    for (layer, forbidden) in FORBIDDEN {
        let dir = src.join(layer);
        let file = src.join(format!("{layer}.rs"));
        let mut files = Vec::new();
        if dir.exists() {
            rust_files(&dir, &mut files);
        } else if file.exists() {
            files.push(file);
        } else {
            continue;
        }
        for f in files {
            scanned += 1;
            let text = std::fs::read_to_string(&f).unwrap();
            for (line, name) in named_layers(&text) {
                if forbidden.contains(&name.as_str()) {
                    broken.push(format!(
                        "{}:{line}: the {layer} layer names crate::{name}",
                        f.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(scanned > 40, "only {scanned} files scanned: did src/ move?");
    assert!(broken.is_empty(), "upward imports:\n{}", broken.join("\n"));
}

#[test]
fn the_scan_sees_paths_and_skips_comments() {
    let text = "use crate::ops::apply;\n// crate::cli in a comment\nlet x = crate::core::render::f(); // crate::watch\n";
    let names: Vec<String> = named_layers(text).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, vec!["ops", "core"]);
}
