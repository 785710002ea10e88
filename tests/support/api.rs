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
