//! Synthetic fleets for benchmarks and scale tests: N clusters in a tree of
//! depth 4 (fan-out chosen to reach N) and M workloads of every placement
//! kind, written as real files so loading is measured too.
//!
//! The output is a pure function of (N, M): the same arguments always give
//! byte-identical files.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// Shape of the generated fleet.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub clusters: usize,
    pub workloads: usize,
}

/// The fan-out that lets a tree of depth 4 (root + 3 levels) hold `n`.
pub fn fan_out(n: usize) -> usize {
    (1..).find(|f| 1 + f + f * f + f * f * f >= n).unwrap_or(1)
}

fn cluster_name(i: usize) -> String {
    format!("c{i:05}")
}

/// (name, parent, depth) of every cluster, breadth-first.
pub fn tree(n: usize) -> Vec<(String, Option<String>, usize)> {
    let f = fan_out(n);
    let mut out: Vec<(String, Option<String>, usize)> = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    out.push((cluster_name(0), None, 0));
    let mut next_parent = 0;
    while out.len() < n {
        let (pname, pdepth) = (out[next_parent].0.clone(), out[next_parent].2);
        for _ in 0..f {
            if out.len() >= n {
                break;
            }
            let i = out.len();
            out.push((cluster_name(i), Some(pname.clone()), pdepth + 1));
        }
        next_parent += 1;
    }
    out
}

const TIERS: [&str; 4] = ["hub", "regional", "zone", "edge"];
const PROVIDERS: [&str; 3] = ["aws", "gcp", "azure"];

/// Writes the fleet into `dir` (which should be empty).
pub fn generate(dir: &Path, spec: Spec) -> io::Result<()> {
    std::fs::create_dir_all(dir.join("clusters"))?;
    std::fs::create_dir_all(dir.join("overrides"))?;
    let nodes = tree(spec.clusters);
    // Region = the depth-1 ancestor, so a region is a subtree.
    let mut region = vec![0usize; nodes.len()];
    let index: std::collections::HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.0.as_str(), i))
        .collect();
    for i in 0..nodes.len() {
        region[i] = match (&nodes[i].1, nodes[i].2) {
            (_, 0) => 0,
            (_, 1) => i,
            (Some(p), _) => region[index[p.as_str()]],
            (None, _) => 0,
        };
    }
    for (chunk_no, chunk) in nodes.chunks(100).enumerate() {
        let mut text = String::new();
        for (k, (name, parent, depth)) in chunk.iter().enumerate() {
            let i = chunk_no * 100 + k;
            let tier = TIERS[(*depth).min(3)];
            let provider = PROVIDERS[i % 3];
            let env = if i % 10 == 9 { "staging" } else { "prod" };
            let _ = writeln!(
                text,
                "---\napiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata:"
            );
            let _ = writeln!(text, "  name: {name}");
            let _ = writeln!(
                text,
                "  labels: {{tier: {tier}, provider: {provider}, env: {env}, region: r{}}}",
                region[i]
            );
            let _ = writeln!(text, "spec:");
            if let Some(p) = parent {
                let _ = writeln!(text, "  parent: {p}");
            }
            let cpu = 8 << (3 - (*depth).min(3));
            let _ = writeln!(
                text,
                "  capacity: {{cpu: \"{cpu}\", memory: {}Gi, pods: \"{}\"}}",
                cpu * 4,
                cpu * 10
            );
            if *depth == 3 && i % 7 == 0 {
                let _ = writeln!(
                    text,
                    "  taints: [{{key: power, value: battery, effect: NoSchedule}}]"
                );
            }
            if *depth <= 1 {
                let _ = writeln!(
                    text,
                    "  values: {{domain: r{}.example.com, logLevel: info}}",
                    region[i]
                );
            }
        }
        std::fs::write(
            dir.join("clusters")
                .join(format!("clusters-{chunk_no:04}.yaml")),
            text,
        )?;
    }
    for w in 0..spec.workloads {
        write_workload(dir, w)?;
    }
    write_overrides(dir, &nodes)?;
    Ok(())
}

fn write_workload(dir: &Path, w: usize) -> io::Result<()> {
    let name = format!("w{w:02}");
    let wdir = dir.join("workloads").join(&name);
    std::fs::create_dir_all(&wdir)?;
    // Four kinds in rotation: Duplicated everywhere, Divided static,
    // Divided by capacity, Duplicated config on a label selection.
    let placement = match w % 4 {
        0 => "  placement:\n    tolerations: [{key: power, operator: Exists}]\n".to_string(),
        1 => "  placement:\n    clusters:\n      selector: {matchLabels: {env: prod}}\n    replicas:\n      mode: Divided\n      weights:\n        static:\n          - {clusters: {selector: {matchLabels: {provider: aws}}}, weight: 3}\n          - {clusters: {selector: {matchExpressions: [{key: provider, operator: In, values: [gcp, azure]}]}}, weight: 1}\n".to_string(),
        2 => "  placement:\n    clusters:\n      selector: {matchExpressions: [{key: tier, operator: In, values: [zone, edge]}]}\n    replicas:\n      mode: Divided\n      total: 5000\n      onShortfall: PlaceWhatFits\n      weights: {dynamic: capacity, perReplica: {cpu: 500m, memory: 1Gi}}\n".to_string(),
        _ => "  placement:\n    clusters:\n      selector: {matchExpressions: [{key: tier, operator: NotIn, values: [hub]}]}\n".to_string(),
    };
    std::fs::write(
        wdir.join("workload.yaml"),
        format!("apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  namespace: ns-{name}\n{placement}"),
    )?;
    let replicas = if w % 4 == 1 {
        "\n  replicas: 3000"
    } else {
        "\n  replicas: 2"
    };
    let kind = if w.is_multiple_of(4) {
        "DaemonSet"
    } else {
        "Deployment"
    };
    let replicas = if kind == "DaemonSet" { "" } else { replicas };
    // Half the workloads template their manifests with cluster facts.
    let templated = w.is_multiple_of(2);
    let env_value = if templated {
        "\"{{ cluster.name }}\""
    } else {
        "static"
    };
    // Templating is asked for by name (`.yaml.j2`).
    let ext = if templated { "yaml.j2" } else { "yaml" };
    std::fs::write(
        wdir.join(format!("app.{ext}")),
        format!(
            "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:{replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: main\n          image: ghcr.io/acme/{name}:1.0.{w}\n          env:\n            - {{name: CLUSTER, value: {env_value}}}\n          resources:\n            requests: {{cpu: 100m, memory: 128Mi}}\n            limits: {{cpu: 500m, memory: 256Mi}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
        ),
    )?;
    let data = if templated {
        "  DOMAIN: \"{{ cluster.values.domain | default('example.com') }}\"\n  DEPTH: \"{{ cluster.depth }}\"\n"
    } else {
        "  DOMAIN: example.com\n  MODE: plain\n"
    };
    std::fs::write(
        wdir.join(format!("config.{ext}")),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-config\ndata:\n{data}"),
    )?;
    Ok(())
}

fn write_overrides(dir: &Path, nodes: &[(String, Option<String>, usize)]) -> io::Result<()> {
    let mut text = String::new();
    // A registry per region subtree (up to 5 regions) and edge limits.
    for (i, (name, _, _)) in nodes.iter().filter(|n| n.2 == 1).take(5).enumerate() {
        let _ = write!(
            text,
            "---\napiVersion: canopy.dev/v1alpha1\nkind: Override\nmetadata:\n  name: registry-{i}\nspec:\n  priority: 10\n  clusters: {{subtreeOf: {name}}}\n  patches:\n    - image: {{registry: registry-{i}.example.com}}\n"
        );
    }
    text.push_str("---\napiVersion: canopy.dev/v1alpha1\nkind: Override\nmetadata:\n  name: edge-limits\nspec:\n  priority: 20\n  clusters: {selector: {matchLabels: {tier: edge}}}\n  resources: [{group: apps, kind: Deployment}]\n  patches:\n    - jsonPatch:\n        - {op: replace, path: /spec/template/spec/containers/0/resources/limits/memory, value: 128Mi}\n    - mergePatch: {metadata: {annotations: {example.com/edge: \"true\"}}}\n");
    std::fs::write(dir.join("overrides").join("overrides.yaml"), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_reaches_n_with_depth_four() {
        for n in [1, 10, 1000, 10_000] {
            let t = tree(n);
            assert_eq!(t.len(), n);
            assert!(t.iter().all(|(_, _, d)| *d <= 3));
        }
        assert_eq!(fan_out(1000), 10);
    }
}
