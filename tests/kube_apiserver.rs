//! The test suite's real Kubernetes: three kube-apiservers (with etcd),
//! started on loopback by the suite itself, accept server-side apply from
//! kube-rs, answer server-side dry runs with defaulted fields, and are
//! independent of each other. The Kubernetes backend (issue 4) is tested on
//! these servers.

#[path = "support/apiserver.rs"]
mod apiserver;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

async fn client(kubeconfig: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(cfg).expect("client")
}

#[test]
fn three_real_api_servers_take_server_side_apply() {
    let servers = apiserver::start_many(3);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let clients = [
            client(&servers[0].kubeconfig).await,
            client(&servers[1].kubeconfig).await,
            client(&servers[2].kubeconfig).await,
        ];
        // Server-side apply with canopy's field manager, on the first server.
        let cms: Api<ConfigMap> = Api::namespaced(clients[0].clone(), "default");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "hello", "labels": {"canopy.dev/fleet": "t"}}, "data": {"a": "1"}});
        let applied = cms
            .patch("hello", &PatchParams::apply("canopy"), &Patch::Apply(&cm))
            .await
            .expect("server-side apply");
        assert_eq!(applied.data.unwrap()["a"], "1");
        let managers: Vec<String> = applied
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert_eq!(managers, ["canopy"]);
        let rv = applied.metadata.resource_version.expect("resourceVersion");
        // Re-applying the same object is a no-op: the resourceVersion stays.
        let again = cms
            .patch("hello", &PatchParams::apply("canopy"), &Patch::Apply(&cm))
            .await
            .expect("re-apply");
        assert_eq!(again.metadata.resource_version.as_deref(), Some(rv.as_str()));

        // A server-side dry run returns the defaulted object and stores nothing.
        let deps: Api<Deployment> = Api::namespaced(clients[1].clone(), "default");
        let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
        let dry = deps
            .patch("web", &PatchParams::apply("canopy").dry_run(), &Patch::Apply(&dep))
            .await
            .expect("dry-run apply");
        let spec = dry.spec.expect("spec");
        assert_eq!(spec.revision_history_limit, Some(10), "defaulted by the server");
        assert_eq!(spec.strategy.and_then(|s| s.type_).as_deref(), Some("RollingUpdate"));
        assert!(deps.get_opt("web").await.expect("get").is_none(), "a dry run stores nothing");

        // The servers are separate clusters.
        for c in &clients[1..] {
            let other: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
            assert!(other.get_opt("hello").await.expect("get").is_none());
        }
    });
    drop(servers);
}
