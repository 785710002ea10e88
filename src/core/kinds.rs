//! What canopy knows about Kubernetes kinds without asking an API server:
//! which are cluster-scoped, where built-in kinds keep their replicas, and the
//! order objects are applied in.
//!
//! Render and plan both sort with [`apply_rank`], so the order a user sees in
//! `canopy render` is the order `apply` writes in.

use crate::core::model::{ObjectKey, ReplicaPath};

/// The API groups of Kubernetes itself (the release the suite's API server
/// is, every alpha and beta included). A kind in one of them is built in:
/// its scope is known offline ([`is_builtin_cluster_scoped`]); a kind of any
/// other group is a custom resource, whose scope only a CRD in the same
/// render, or the cluster's discovery, can tell.
pub const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// Whether `group` is one of Kubernetes' own ([`BUILTIN_GROUPS`]).
pub fn is_builtin_group(group: &str) -> bool {
    BUILTIN_GROUPS.contains(&group)
}

/// Built-in cluster-scoped kinds, by (group, kind): every one the API server
/// serves with every API enabled (a test compares this table with its
/// discovery). Custom resources are namespaced unless a
/// CustomResourceDefinition in the same render says `scope: Cluster`, or,
/// on apply, the cluster's discovery says otherwise.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "ComponentStatus"),
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("authentication.k8s.io", "SelfSubjectReview"),
    ("authentication.k8s.io", "TokenReview"),
    ("authorization.k8s.io", "SelfSubjectAccessReview"),
    ("authorization.k8s.io", "SelfSubjectRulesReview"),
    ("authorization.k8s.io", "SubjectAccessReview"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("internal.apiserver.k8s.io", "StorageVersion"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("node.k8s.io", "RuntimeClass"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "DeviceTaintRule"),
    ("resource.k8s.io", "ResourcePoolStatusRequest"),
    ("resource.k8s.io", "ResourceSlice"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("storagemigration.k8s.io", "StorageVersionMigration"),
];

/// The built-in cluster-scoped kinds, as (group, kind).
pub fn builtin_cluster_scoped() -> &'static [(&'static str, &'static str)] {
    CLUSTER_SCOPED
}

/// Whether the scope of `kind` in `group` is known without a cluster: a
/// built-in kind, or one a CRD among the render's objects defines
/// (`crd_kinds`: (group, kind) of every CRD there, whatever its scope).
pub fn known_offline(
    group: &str,
    kind: &str,
    crd_kinds: &std::collections::BTreeSet<(String, String)>,
) -> bool {
    is_builtin_group(group) || crd_kinds.contains(&(group.to_string(), kind.to_string()))
}

pub fn is_builtin_cluster_scoped(group: &str, kind: &str) -> bool {
    CLUSTER_SCOPED
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
}

/// JSON pointer to the replica count of a kind: the workload's own `paths`
/// first, then the built-in workload kinds of group `apps`.
pub fn replica_pointer<'a>(group: &str, kind: &str, custom: &'a [ReplicaPath]) -> Option<&'a str> {
    if let Some(p) = custom.iter().find(|p| p.group == group && p.kind == kind) {
        return Some(p.path.as_str());
    }
    match (group, kind) {
        ("apps", "Deployment") | ("apps", "StatefulSet") | ("apps", "ReplicaSet") => {
            Some("/spec/replicas")
        }
        _ => None,
    }
}

/// Apply order by kind: Namespaces and CRDs first (everything else may live in
/// or depend on them), then the order Helm and Argo CD use, so that config and
/// identities exist before the workloads that mount them. Unknown kinds (custom
/// resources) go last, after their CRDs.
const ORDER: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// Rank of a kind in apply order; lower applies first.
pub fn apply_rank(kind: &str) -> usize {
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// The sort key of an object in apply order: its kind's rank, then its
/// identity (group, kind, namespace, name). Render, diff and the objects
/// a run adds to a cluster all sort by it.
pub fn apply_order(key: &ObjectKey) -> (usize, &ObjectKey) {
    (apply_rank(&key.kind), key)
}

/// Which stage of a write a kind is in: Namespaces (0), then CRDs (1,
/// waited on until Established), then everything else (2).
pub fn write_stage(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        _ => 2,
    }
}

/// The waves of a write, like Flux's stages: `items` (in apply order, with
/// deletions after the rest) cut wherever the class `(is a deletion,
/// [`write_stage`])` changes, so Namespaces, then CRDs, then everything else
/// at once, and deletions the other way round. Each wave is written in
/// parallel, waves one after another. Only Namespaces and CRDs must exist
/// before what depends on them; everything else Kubernetes reconciles in any
/// order, so waiting between, say, ConfigMaps and Deployments would only add
/// time.
pub fn write_waves<T>(items: &[T], class: impl Fn(&T) -> (bool, u8)) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=items.len() {
        if i == items.len() || class(&items[i]) != class(&items[start]) {
            if start < i {
                out.push(&items[start..i]);
            }
            start = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_crds_first_custom_last() {
        assert!(apply_rank("Namespace") < apply_rank("CustomResourceDefinition"));
        assert!(apply_rank("CustomResourceDefinition") < apply_rank("ConfigMap"));
        assert!(apply_rank("ConfigMap") < apply_rank("Deployment"));
        assert!(apply_rank("Deployment") < apply_rank("CloneSet"));
    }

    #[test]
    fn replica_pointers() {
        let custom = vec![ReplicaPath {
            group: "apps.kruise.io".into(),
            kind: "CloneSet".into(),
            path: "/spec/replicas".into(),
        }];
        assert_eq!(
            replica_pointer("apps", "Deployment", &[]),
            Some("/spec/replicas")
        );
        assert_eq!(
            replica_pointer("apps.kruise.io", "CloneSet", &custom),
            Some("/spec/replicas")
        );
        assert_eq!(replica_pointer("", "ConfigMap", &custom), None);
        assert!(is_builtin_cluster_scoped("", "Namespace"));
        assert!(!is_builtin_cluster_scoped("apps", "Deployment"));
    }

    #[test]
    fn waves_split_namespaces_crds_rest_and_direction() {
        let items = [
            ("Namespace", false),
            ("ConfigMap", false),
            ("ConfigMap", false),
            ("Deployment", false),
            ("Deployment", true),
            ("ConfigMap", true),
        ];
        let class = |(kind, delete): &(&str, bool)| (*delete, write_stage(kind));
        let sizes: Vec<usize> = write_waves(&items, class).iter().map(|w| w.len()).collect();
        assert_eq!(sizes, vec![1, 3, 2]);
        let none: [(&str, bool); 0] = [];
        assert!(write_waves(&none, class).is_empty());
        assert_eq!(write_stage("CustomResourceDefinition"), 1);
    }
}
