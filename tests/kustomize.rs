//! Kustomize workloads through the binary, with the real `kustomize` built
//! from Go modules by the suite (tests/tools): a base and an overlay with an
//! image change, a patch and a ConfigMap generated from a `.env` file, then
//! canopy's own namespace, division, override and labels; a folder and a
//! Git revision; once per workload whatever the clusters; a relay; a missing
//! binary, a remote base and a path out of the folder refused with nothing
//! applied.

mod common;
use common::*;

#[path = "support/apiserver.rs"]
mod apiserver;
#[path = "support/tools.rs"]
mod tools;

use std::path::Path;

const CLUSTERS: &str = "apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: hub, labels: {tier: hub}}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: mid, labels: {tier: region}}
spec: {parent: hub}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: edge-a, labels: {tier: edge}}
spec: {parent: mid}
---
apiVersion: canopy.dev/v1alpha1
kind: Cluster
metadata: {name: edge-b, labels: {tier: edge}}
spec: {parent: mid}
";

const WORKLOAD: &str = "apiVersion: canopy.dev/v1alpha1
kind: Workload
metadata: {name: shop}
spec:
  namespace: shop
  kustomize: {path: overlays/prod}
  placement:
    replicas: {mode: Divided, total: 8}
";

fn files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("clusters.yaml", CLUSTERS),
        ("workloads/shop/workload.yaml", WORKLOAD),
        (
            "workloads/shop/base/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [deployment.yaml]\nlabels:\n  - pairs: {app: shop}\n    includeSelectors: true\nconfigMapGenerator:\n  - name: shop-config\n    envs: [config.env]\n",
        ),
        (
            "workloads/shop/base/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: shop}\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: shop\n          image: nginx:1.27\n          envFrom: [{configMapRef: {name: shop-config}}]\n",
        ),
        ("workloads/shop/base/config.env", "MODE=fast\n"),
        (
            "workloads/shop/overlays/prod/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../../base]\nimages:\n  - {name: nginx, newTag: \"1.27.1\"}\npatches:\n  - path: memory.yaml\n",
        ),
        (
            "workloads/shop/overlays/prod/memory.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: shop}\nspec:\n  template:\n    spec:\n      containers:\n        - name: shop\n          resources: {limits: {memory: 256Mi}}\n",
        ),
        (
            "overrides/edge.yaml",
            "apiVersion: canopy.dev/v1alpha1\nkind: Override\nmetadata: {name: edge}\nspec:\n  clusters: {selector: {matchLabels: {tier: edge}}}\n  patches:\n    - image: {registry: mirror.example.com}\n",
        ),
    ]
}

/// Writes [`files`] into `dir`, each text passed through `edit`.
fn write_fleet(dir: &Path, edit: impl Fn(&str, &str) -> String) {
    for (p, t) in files() {
        let at = dir.join(p);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, edit(p, t)).unwrap();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// canopy with the suite's kustomize.
fn run_k(home: &Path, args: &[&str]) -> (i32, String, String) {
    let k = tools::kustomize();
    canopy_in(home, &[("CANOPY_KUSTOMIZE", s(k))], args)
}

/// The Deployment and the generated ConfigMap's name on a cluster.
fn shop_on(state: &Path, cluster: &str) -> (serde_json::Value, String) {
    let objs = state_objects(state, cluster);
    let d = objs[obj_id("apps", "Deployment", "shop", "shop")].clone();
    let cm = objs
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.contains("ConfigMap/shop/shop-config-"))
        .cloned()
        .unwrap_or_default();
    (d, cm)
}

#[test]
fn a_kustomization_is_built_once_and_then_placed_like_any_manifest() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    write_fleet(&dir, |_, t| t.to_string());
    let state = home.path().join("state");
    // A wrapper counts the builds.
    let log = home.path().join("builds.log");
    let wrapper = home.path().join("kustomize-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec {} \"$@\"\n",
            log.display(),
            tools::kustomize().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = canopy_in(
        home.path(),
        &[("CANOPY_KUSTOMIZE", s(&wrapper))],
        &["apply", s(&dir), "--state", s(&state)],
    );
    assert_eq!(code, 0, "{out}{err}");
    let builds = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        builds.lines().count(),
        1,
        "one build for four clusters: {builds}"
    );

    let mut total = 0;
    for c in ["hub", "mid", "edge-a", "edge-b"] {
        let (d, cm) = shop_on(&state, c);
        let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap();
        // The overlay's image tag, and on the edge canopy's override.
        let want = if c.starts_with("edge") {
            "mirror.example.com/nginx:1.27.1"
        } else {
            "nginx:1.27.1"
        };
        assert_eq!(image, want, "{c}");
        // The overlay's patch, the base's labels, the generated ConfigMap
        // and canopy's namespace and ownership.
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "256Mi"
        );
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "shop");
        assert!(!cm.is_empty(), "{c}: a generated ConfigMap");
        let cm_name = cm.rsplit('/').next().unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
            cm_name,
            "kustomize's name reference"
        );
        assert_eq!(d["metadata"]["labels"]["canopy.dev/workload"], "shop");
        assert_eq!(
            d["metadata"]["annotations"]["canopy.dev/source"],
            "workloads/shop/overlays/prod/kustomize-build.yaml"
        );
        total += d["spec"]["replicas"].as_u64().unwrap();
    }
    assert_eq!(total, 8, "canopy divides the kustomized Deployment");
    let (code, out, err) = run_k(home.path(), &["explain", s(&dir), "shop"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("manifests: kustomize build workloads/shop/overlays/prod (one build, shared by every cluster)"),
        "{out}"
    );

    // A changed input file: a new ConfigMap hash, the old one pruned; a
    // second apply of the same input runs kustomize again (a new process)
    // but writes nothing.
    let (code, out, _) = run_k(home.path(), &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no changes"), "{out}");
    let (_, before) = shop_on(&state, "edge-a");
    std::fs::write(dir.join("workloads/shop/base/config.env"), "MODE=slow\n").unwrap();
    let (code, out, err) = run_k(home.path(), &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, after) = shop_on(&state, "edge-a");
    assert_ne!(before, after);
    assert!(
        state_objects(&state, "edge-a").get(&before).is_none(),
        "the old ConfigMap is pruned"
    );

    // The same fleet from a Git revision renders the same objects.
    let repo = init_main(&dir);
    commit_all(&repo, "shop");
    let (code, from_dir, err) = run_k(home.path(), &["render", s(&dir)]);
    assert_eq!(code, 0, "{err}");
    let url = format!("file://{}", dir.display());
    let (code, from_git, err) = run_k(
        home.path(),
        &[
            "render",
            "--repo",
            &url,
            "--ref",
            "main",
            "--fleet-name",
            "fleet",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(from_git, from_dir);
    assert!(from_git.contains("name: shop-config-"), "{from_git}");
}

#[test]
fn a_relay_gets_the_build_and_renders_what_the_root_renders() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    for (p, t) in files() {
        let at = dir.join(p);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        let t = if p == "clusters.yaml" {
            t.replace(
                "metadata: {name: mid, labels: {tier: region}}\nspec: {parent: hub}",
                "metadata: {name: mid, labels: {tier: region}}\nspec: {parent: hub, relay: {}}",
            )
        } else {
            t.to_string()
        };
        std::fs::write(at, t).unwrap();
    }
    // The same fleet without the relay, applied directly; the agent has
    // no kustomize at all.
    let flat_dir = home.path().join("flat-fleet");
    write_fleet(&flat_dir, |_, t| t.to_string());
    relay_renders_as_direct(
        home.path(),
        &[("CANOPY_KUSTOMIZE", s(tools::kustomize()))],
        &dir,
        "mid",
        &flat_dir,
        &["edge-a", "edge-b"],
    );
}

#[test]
fn without_kustomize_or_with_a_base_from_outside_nothing_is_applied() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("fleet");
    write_fleet(&dir, |_, t| t.to_string());
    let state = home.path().join("state");
    let (code, out, err) = run_k(home.path(), &["apply", s(&dir), "--state", s(&state)]);
    assert_eq!(code, 0, "{out}{err}");
    let before = state_files(&state);

    // No binary anywhere.
    let empty = home.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, out, err) = canopy_in(
        home.path(),
        &[("PATH", s(&empty))],
        &["apply", s(&dir), "--state", s(&state)],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("workloads/shop/workload.yaml:6: spec.kustomize.path: workload \"shop\" is built with kustomize: no kustomize binary: neither `kustomize` nor `kubectl` is on PATH")
            && err.contains("or set CANOPY_KUSTOMIZE to its path"),
        "{err}"
    );
    assert_eq!(
        state_files(&state),
        before,
        "nothing applied, nothing pruned"
    );

    // A remote base, a base out of the folder, a patch that is not there
    // (kustomize would try to fetch it), and a build that fails: each
    // refused with its file.
    let overlay = dir.join("workloads/shop/overlays/prod/kustomization.yaml");
    let good = std::fs::read_to_string(&overlay).unwrap();
    for (text, says) in [
        (
            good.replace("resources: [../../base]", "resources: [\"https://github.com/acme/shop//base?ref=v1\"]"),
            "error: workloads/shop/overlays/prod/kustomization.yaml: resources entry \"https://github.com/acme/shop//base?ref=v1\" is remote",
        ),
        (
            good.replace("resources: [../../base]", "resources: [../../../../outside]"),
            "leaves the workload's folder workloads/shop",
        ),
        (
            good.replace("patches:\n  - path: memory.yaml\n", "patches:\n  - path: missing.yaml\n"),
            "error: workloads/shop/overlays/prod/kustomization.yaml: patches[].path entry \"missing.yaml\" is no file or folder of the workload's folder",
        ),
        (
            good.replace("resources: [../../base]", "resources: [../../base, ../../base]"),
            "error: workloads/shop/overlays/prod/kustomization.yaml: kustomize build failed:",
        ),
    ] {
        std::fs::write(&overlay, text).unwrap();
        let (code, out, err) = run_k(home.path(), &["apply", s(&dir), "--state", s(&state)]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains(says), "{says}\n{err}");
        let shown = err.replace(s(&dir), "FLEET");
        assert!(!shown.contains("/tmp/"), "no temporary paths: {err}");
        assert_eq!(state_files(&state), before);
    }
    std::fs::write(&overlay, good).unwrap();
    let wl = dir.join("workloads/shop/workload.yaml");
    std::fs::write(
        &wl,
        WORKLOAD.replace("path: overlays/prod", "path: ../other"),
    )
    .unwrap();
    let (code, _, err) = run_k(home.path(), &["validate", s(&dir)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("kustomize path \"../other\" leaves the workload's folder workloads/shop"),
        "{err}"
    );
}
