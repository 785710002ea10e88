//! Printers for `tree`, `render`, `explain` and diagnostics: text, YAML and
//! JSON, kept apart from the logic that computes what they print. Output is
//! deterministic: clusters in tree order, objects in apply order, map keys
//! sorted.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::explain::Explanation;
use crate::render::{Rendered, RenderedFleet, Renderer};
use crate::select::taint_text;
use crate::validate::Checked;

/// `canopy tree`: the forest with labels, taints and the workloads landing on
/// each cluster (`web 3/12` = 3 of a Divided workload's 12 replicas).
pub fn tree_text(r: &Renderer<'_>) -> String {
    let checked = r.checked;
    let topo = &checked.topo;
    let fleet = &checked.fleet;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fleet {}: {} clusters, {} workloads, {} overrides",
        fleet.name,
        topo.len(),
        fleet.workloads.len(),
        fleet.overrides.len()
    );
    let roots = topo.roots();
    for (i, &root) in roots.iter().enumerate() {
        tree_node(r, root, "", i + 1 == roots.len(), true, &mut out);
    }
    out
}

fn tree_node(r: &Renderer<'_>, c: usize, prefix: &str, last: bool, top: bool, out: &mut String) {
    let checked = r.checked;
    let topo = &checked.topo;
    let cl = checked.cluster(c);
    let (branch, cont) = match (top, last) {
        (true, _) => ("", ""),
        (false, true) => ("└── ", "    "),
        (false, false) => ("├── ", "│   "),
    };
    let mut head = format!("{prefix}{branch}{}", cl.name());
    if !cl.meta.labels.is_empty() {
        let labels: Vec<String> = cl
            .meta
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(head, "  [{}]", labels.join(", "));
    }
    for t in &cl.spec.taints {
        let _ = write!(head, "  taint {}", taint_text(t));
    }
    if cl.spec.connection.is_some() {
        head.push_str("  (kubeconfig)");
    }
    let _ = writeln!(out, "{head}");
    let child_prefix = format!("{prefix}{cont}");
    let kids = topo.children(c);
    let bar = if kids.is_empty() { "    " } else { "│   " };
    let ws: Vec<String> = r
        .workloads_on(c)
        .into_iter()
        .map(|(wi, reps)| {
            let name = checked.fleet.workloads[wi].name();
            match reps {
                Some(n) => format!("{name} {n}/{}", checked.facts[wi].total.unwrap_or(0)),
                None => name.to_string(),
            }
        })
        .collect();
    let list = if ws.is_empty() {
        "(none)".to_string()
    } else {
        ws.join(", ")
    };
    let _ = writeln!(out, "{child_prefix}{bar}workloads: {list}");
    for (i, &k) in kids.iter().enumerate() {
        tree_node(r, k, &child_prefix, i + 1 == kids.len(), false, out);
    }
}

/// Objects as a multi-document YAML stream.
pub fn objects_yaml(objs: &[Rendered]) -> String {
    let mut out = String::new();
    for o in objs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&o.value).expect("JSON values always serialize"));
    }
    out
}

/// Objects as a pretty JSON array.
pub fn objects_json(objs: &[Rendered]) -> String {
    let v: Vec<&Value> = objs.iter().map(|o| &o.value).collect();
    serde_json::to_string_pretty(&v).expect("JSON values serialize") + "\n"
}

/// Masks the Secrets among one cluster's objects.
pub fn mask(objs: &mut [Rendered]) {
    let mut vals: Vec<&mut Value> = objs.iter_mut().map(|o| &mut o.value).collect();
    crate::mask::mask_secrets(&mut vals);
}

/// One cluster's rendered objects as text, and how many there are.
#[derive(Debug, Clone)]
pub struct ClusterText {
    pub objects: usize,
    pub text: String,
}

/// `canopy render -o yaml`: every cluster's YAML (from [`objects_yaml`]),
/// each introduced by a comment naming the cluster and its path in the tree.
pub fn render_yaml(checked: &Checked, clusters: &[(usize, ClusterText)]) -> String {
    let mut out = String::new();
    for (c, ct) in clusters {
        let _ = writeln!(
            out,
            "# cluster {} ({}): {} objects",
            checked.topo.name(*c),
            checked.topo.path(*c).join("/"),
            ct.objects
        );
        out.push_str(&ct.text);
    }
    out
}

/// `canopy render -o json`: `{fleet, clusters: [{name, path, objects}]}`.
pub fn render_json(checked: &Checked, rf: &RenderedFleet) -> Value {
    json!({
        "fleet": checked.fleet.name,
        "clusters": rf.clusters.iter().map(|(c, objs)| json!({
            "name": checked.topo.name(*c),
            "path": checked.topo.path(*c),
            "objects": objs.iter().map(|o| o.value.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Marker file that tells `render --out` a folder is its own to replace.
pub const OUT_MARKER: &str = ".canopy-render";

#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    #[error("{dir} exists and was not written by `canopy render --out`; refusing to replace it")]
    NotOurs { dir: String },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `canopy render --out DIR`: one folder per cluster, nested like the tree
/// (`DIR/global/eu/eu-west-1/manifests.yaml`). A folder a previous render
/// wrote is replaced whole, so clusters that left the fleet do not linger;
/// any other non-empty folder is left untouched and reported.
pub fn write_out_dir(
    checked: &Checked,
    clusters: &[(usize, ClusterText)],
    dir: &Path,
    json: bool,
) -> Result<usize, OutDirError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| OutDirError::Io { path, source }
    };
    if dir.exists() {
        let nonempty = std::fs::read_dir(dir).map_err(io(dir))?.next().is_some();
        if nonempty && !dir.join(OUT_MARKER).exists() {
            return Err(OutDirError::NotOurs {
                dir: dir.display().to_string(),
            });
        }
        if nonempty {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::write(
        dir.join(OUT_MARKER),
        "written by canopy render --out; replaced on every run\n",
    )
    .map_err(io(dir))?;
    let mut files = 0;
    let name = if json {
        "manifests.json"
    } else {
        "manifests.yaml"
    };
    for (c, body) in clusters {
        let mut folder = dir.to_path_buf();
        for part in checked.topo.path(*c) {
            folder.push(part);
        }
        std::fs::create_dir_all(&folder).map_err(io(&folder))?;
        let file = folder.join(name);
        std::fs::write(&file, &body.text).map_err(io(&file))?;
        files += 1;
    }
    Ok(files)
}

/// `canopy explain` as text.
pub fn explain_text(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "workload {} ({})", e.workload, e.source);
    let _ = write!(out, "replicas: {}", e.mode);
    if let Some((t, from)) = &e.total {
        let _ = write!(out, ", total {t} from {from}");
    }
    if let Some(w) = &e.weights {
        let _ = write!(out, ", weights {w}");
    }
    out.push('\n');
    if let Some(err) = &e.error {
        let _ = writeln!(out, "error: {err}");
    }
    out.push_str("\nclusters:\n");
    let width = e
        .clusters
        .iter()
        .map(|c| c.cluster.len() + 2 * c.depth)
        .max()
        .unwrap_or(0);
    for c in &e.clusters {
        let name = format!("{}{}", "  ".repeat(c.depth), c.cluster);
        let mark = if c.chosen { "chosen    " } else { "not chosen" };
        let _ = write!(out, "  {name:<width$}  {mark}  {}", c.reason);
        if let Some(w) = c.weight {
            let _ = write!(out, "; weight {w}");
        }
        if let Some(r) = c.replicas {
            let _ = write!(out, "; replicas {r}");
        }
        out.push('\n');
    }
    if !e.steps.is_empty() {
        out.push_str(
            "\ndivision, top-down (Webster: next replica to the highest weight/(2·replicas+1)):\n",
        );
        for s in &e.steps {
            let parts: Vec<String> = s
                .parties
                .iter()
                .map(|(label, w, n)| format!("{label} (weight {w}) → {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  {} divides {}: {}",
                s.node,
                s.share,
                parts.join(", ")
            );
        }
    }
    out
}
