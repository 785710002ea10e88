//! The API versions an API server serves, from its discovery (pure), as
//! Helm's `.Capabilities.APIVersions` holds them: every `group/version`
//! (`v1` for the core group) and every `group/version/Kind`, as Argo CD
//! gives Helm.
//!
//! `/api` and `/apis` are asked for aggregated discovery
//! (`apidiscovery.k8s.io/v2`, Kubernetes 1.30 and later): one answer each,
//! with every version and its resources. A server that answers with the
//! plain lists (`APIVersions`, `APIGroupList`) gives versions only.

use serde_json::Value;

/// The API versions in the answers of `/api` (`core`) and `/apis`
/// (`groups`), sorted, without repeats.
pub fn api_versions(core: &Value, groups: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for answer in [core, groups] {
        match answer.get("kind").and_then(Value::as_str) {
            Some("APIGroupDiscoveryList") => aggregated(answer, &mut out),
            Some("APIVersions") => {
                for v in answer["versions"].as_array().into_iter().flatten() {
                    if let Some(v) = v.as_str() {
                        out.push(v.to_string());
                    }
                }
            }
            Some("APIGroupList") => {
                for g in answer["groups"].as_array().into_iter().flatten() {
                    for v in g["versions"].as_array().into_iter().flatten() {
                        if let Some(gv) = v["groupVersion"].as_str() {
                            out.push(gv.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

fn aggregated(list: &Value, out: &mut Vec<String>) {
    for group in list["items"].as_array().into_iter().flatten() {
        let name = group
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        for version in group["versions"].as_array().into_iter().flatten() {
            let Some(v) = version["version"].as_str() else {
                continue;
            };
            let gv = if name.is_empty() {
                v.to_string()
            } else {
                format!("{name}/{v}")
            };
            for r in version["resources"].as_array().into_iter().flatten() {
                if let Some(kind) = r.pointer("/responseKind/kind").and_then(Value::as_str) {
                    if !kind.is_empty() {
                        out.push(format!("{gv}/{kind}"));
                    }
                }
            }
            out.push(gv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aggregated_discovery_gives_versions_and_kinds() {
        let core = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "items": [{"metadata": {"name": ""}, "versions": [{"version": "v1", "resources": [
                {"resource": "configmaps", "responseKind": {"group": "", "version": "v1", "kind": "ConfigMap"}},
                {"resource": "pods", "responseKind": {"group": "", "version": "v1", "kind": "Pod"},
                 "subresources": [{"subresource": "status"}]}]}]}]});
        let groups = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
        "items": [
            {"metadata": {"name": "apps"}, "versions": [{"version": "v1", "resources": [
                {"resource": "deployments", "responseKind": {"group": "apps", "version": "v1", "kind": "Deployment"}}]}]},
            {"metadata": {"name": "monitoring.coreos.com"}, "versions": [{"version": "v1", "resources": [
                {"resource": "servicemonitors", "responseKind": {"group": "monitoring.coreos.com", "version": "v1", "kind": "ServiceMonitor"}}]}]}
        ]});
        assert_eq!(
            api_versions(&core, &groups),
            vec![
                "apps/v1",
                "apps/v1/Deployment",
                "monitoring.coreos.com/v1",
                "monitoring.coreos.com/v1/ServiceMonitor",
                "v1",
                "v1/ConfigMap",
                "v1/Pod",
            ]
        );
    }

    #[test]
    fn plain_discovery_gives_versions() {
        let core = json!({"kind": "APIVersions", "versions": ["v1"]});
        let groups = json!({"kind": "APIGroupList", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]},
            {"name": "autoscaling", "versions": [
                {"groupVersion": "autoscaling/v2", "version": "v2"},
                {"groupVersion": "autoscaling/v1", "version": "v1"}]}]});
        assert_eq!(
            api_versions(&core, &groups),
            vec!["apps/v1", "autoscaling/v1", "autoscaling/v2", "v1"]
        );
    }
}
