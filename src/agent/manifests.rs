//! `canopy agent manifests`: what runs a relay's agent in its own cluster.
//!
//! Least privilege: in the relay's cluster the agent only reads its
//! handoff (the `Handoff` index and its chunk Secrets), writes the index's
//! status (its report), holds its Lease and keeps its records (one
//! ConfigMap), all in `canopy-system`. It
//! writes nothing else there: the relay cluster itself is reconciled by
//! the level above, and the clusters below are reached with their own
//! credentials, mounted from a Secret the operator creates.

use serde_json::{json, Value};

use crate::core::chunks::{self, NAMESPACE};

/// The agent's name in its cluster (ServiceAccount, Role, Deployment).
pub const NAME: &str = "canopy-agent";

/// Where the Secret of the subtree's kubeconfigs is mounted.
pub const KUBECONFIGS: &str = "/etc/canopy/kubeconfigs";

/// How the agent is run.
pub struct Spec<'a> {
    pub relay: &'a str,
    pub image: &'a str,
    pub replicas: u32,
}

/// The objects, in apply order: Namespace, CRD, ServiceAccount, Role,
/// RoleBinding, Deployment.
pub fn objects(s: &Spec<'_>) -> Vec<Value> {
    let labels = json!({"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "canopy", "canopy.dev/relay": s.relay});
    let meta = |name: &str| json!({"name": name, "namespace": NAMESPACE, "labels": labels});
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "canopy"}}}),
        chunks::crd(),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(NAME)}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(NAME),
        "rules": [
            {"apiGroups": ["canopy.dev"], "resources": ["handoffs"], "verbs": ["get"]},
            {"apiGroups": ["canopy.dev"], "resources": ["handoffs/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
            // Its own records (health, last good handoff), one ConfigMap.
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [super::records::NAME], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(NAME),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(NAME),
        "spec": {
            "replicas": s.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "agent",
                        "image": s.image,
                        // The pod's name is its identity in the Lease.
                        "args": ["agent", "--cluster", s.relay, "--state", "/var/lib/canopy",
                            "--identity", "$(POD_NAME)", "--log-format", "json"],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "KUBECONFIGS", "value": KUBECONFIGS},
                        ],
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
                        "volumeMounts": [
                            {"name": "state", "mountPath": "/var/lib/canopy"},
                            {"name": "kubeconfigs", "mountPath": KUBECONFIGS, "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "state", "emptyDir": {}},
                        {"name": "kubeconfigs", "secret": {"secretName": format!("{NAME}-kubeconfigs"), "optional": true}},
                    ],
                },
            },
        }}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Role allows exactly what the agent does in its own cluster:
    /// read the index and its chunks, patch the index's status, hold the
    /// Lease. Nothing cluster-wide, no write outside those.
    #[test]
    fn the_role_is_what_the_agent_does_and_no_more() {
        let objs = objects(&Spec {
            relay: "eu",
            image: "canopy:dev",
            replicas: 2,
        });
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "CustomResourceDefinition",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Deployment"
            ]
        );
        let role = &objs[3];
        let mut rules: Vec<String> = Vec::new();
        for r in role["rules"].as_array().unwrap() {
            for res in r["resources"].as_array().unwrap() {
                for v in r["verbs"].as_array().unwrap() {
                    rules.push(format!("{}/{}", res.as_str().unwrap(), v.as_str().unwrap()));
                }
            }
        }
        assert_eq!(
            rules,
            [
                "handoffs/get",
                "handoffs/status/patch",
                "secrets/get",
                "leases/get",
                "leases/create",
                "leases/update",
                "configmaps/get",
                "configmaps/update",
                "configmaps/create"
            ]
        );
        let d = &objs[5];
        assert_eq!(d["spec"]["replicas"], 2);
        let args = &d["spec"]["template"]["spec"]["containers"][0]["args"];
        assert_eq!(args[2], "eu");
    }
}
