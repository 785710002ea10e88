//! One plain API request to the server a kubeconfig names: how the
//! Kubernetes tests (and the join bench) check or disturb a cluster
//! without going through canopy.
#![allow(dead_code)]

use std::path::Path;

use serde_json::Value;

/// One request; `body` is sent as JSON with its content type (merge
/// patch, apply patch).
pub fn send(
    kubeconfig: &Path,
    method: &str,
    path: &str,
    body: Option<(&str, Value)>,
) -> Result<Value, kube::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let mut req = http::Request::builder().method(method).uri(path);
        let bytes = match body {
            Some((ct, v)) => {
                req = req.header("content-type", ct);
                serde_json::to_vec(&v).unwrap()
            }
            None => Vec::new(),
        };
        client.request::<Value>(req.body(bytes).unwrap()).await
    })
}

/// Installs a CRD for `kind` (plural: lower case with an `s`) in `group`,
/// version v1, `scope` `Namespaced` or `Cluster`, that takes any object
/// (what an operator's chart would install), and waits until it is
/// Established.
pub fn install_crd(kubeconfig: &Path, group: &str, kind: &str, scope: &str) {
    let plural = format!("{}s", kind.to_lowercase());
    let name = format!("{plural}.{group}");
    send(
        kubeconfig,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some((
            "application/json",
            serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": name},
                "spec": {"group": group, "scope": scope,
                    "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
            }),
        )),
    )
    .unwrap_or_else(|e| panic!("creating CRD {name}: {e}"));
    let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let crd = send(kubeconfig, "GET", &path, None).unwrap();
        let established = crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if established {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CRD {name} is not established after 30s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
