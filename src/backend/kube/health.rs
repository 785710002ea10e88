//! Whether an applied object is healthy (pure), one rule per kind, like
//! Argo CD's health checks and `kubectl rollout status`.
//!
//! `apply --wait` polls objects through these until all are healthy or the
//! timeout passes; the report then names each object that is not, and why.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Not there yet; the reason says what is awaited.
    Progressing(String),
    /// Will not get there without a change (a failed Job).
    Failed(String),
}

fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn condition_true(obj: &Value, kind: &str) -> bool {
    condition(obj, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// Why a cluster cannot run workloads although its API server answers:
/// it has nodes and none of them is `Ready`. A cluster that lists no node
/// at all (a control plane alone, as in the tests) cannot tell, so `None`.
pub fn nodes_down(nodes: &Value) -> Option<String> {
    let items = nodes.get("items")?.as_array()?;
    if items.is_empty() || items.iter().any(|n| condition_true(n, "Ready")) {
        return None;
    }
    Some(format!("none of its {} node(s) is Ready", items.len()))
}

/// The controller has seen the latest spec.
fn observed(obj: &Value) -> Result<(), Health> {
    let generation = int(obj, "/metadata/generation");
    let observed = int(obj, "/status/observedGeneration");
    if observed < generation {
        return Err(Health::Progressing(format!(
            "observedGeneration {observed} < generation {generation}: its controller has not processed the latest spec"
        )));
    }
    Ok(())
}

pub fn health(obj: &Value) -> Health {
    let group_kind = (
        obj.get("apiVersion")
            .and_then(Value::as_str)
            .map(|a| a.rsplit_once('/').map_or("", |(g, _)| g))
            .unwrap_or(""),
        obj.get("kind").and_then(Value::as_str).unwrap_or(""),
    );
    let checked = match group_kind {
        ("apps", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => statefulset(obj),
        ("apps", "DaemonSet") => daemonset(obj),
        ("batch", "Job") => job(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        _ => Ok(()),
    };
    match checked {
        Ok(()) => Health::Healthy,
        Err(h) => h,
    }
}

fn deployment(obj: &Value) -> Result<(), Health> {
    observed(obj)?;
    if let Some(c) = condition(obj, "Progressing") {
        if c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded") {
            return Err(Health::Failed("progress deadline exceeded".into()));
        }
    }
    let want = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let updated = int(obj, "/status/updatedReplicas");
    let total = int(obj, "/status/replicas");
    let available = int(obj, "/status/availableReplicas");
    if updated < want {
        return Err(Health::Progressing(format!(
            "{updated} of {want} replicas updated"
        )));
    }
    if total > updated {
        return Err(Health::Progressing(format!(
            "{} old replica(s) pending termination",
            total - updated
        )));
    }
    if available < updated {
        return Err(Health::Progressing(format!(
            "{available} of {updated} updated replicas available"
        )));
    }
    Ok(())
}

fn statefulset(obj: &Value) -> Result<(), Health> {
    observed(obj)?;
    let want = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let ready = int(obj, "/status/readyReplicas");
    let updated = int(obj, "/status/updatedReplicas");
    let on_delete = obj
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete");
    if !on_delete && updated < want {
        return Err(Health::Progressing(format!(
            "{updated} of {want} replicas updated"
        )));
    }
    if ready < want {
        return Err(Health::Progressing(format!(
            "{ready} of {want} replicas ready"
        )));
    }
    Ok(())
}

fn daemonset(obj: &Value) -> Result<(), Health> {
    observed(obj)?;
    let want = int(obj, "/status/desiredNumberScheduled");
    let updated = int(obj, "/status/updatedNumberScheduled");
    let available = int(obj, "/status/numberAvailable");
    if updated < want {
        return Err(Health::Progressing(format!(
            "{updated} of {want} pods updated"
        )));
    }
    if available < want {
        return Err(Health::Progressing(format!(
            "{available} of {want} pods available"
        )));
    }
    Ok(())
}

fn job(obj: &Value) -> Result<(), Health> {
    if condition_true(obj, "Failed") {
        let why = condition(obj, "Failed")
            .and_then(|c| c.get("message").or_else(|| c.get("reason")))
            .and_then(Value::as_str)
            .unwrap_or("failed");
        return Err(Health::Failed(format!("job failed: {why}")));
    }
    if !condition_true(obj, "Complete") {
        return Err(Health::Progressing("job not complete yet".into()));
    }
    Ok(())
}

fn crd(obj: &Value) -> Result<(), Health> {
    if !condition_true(obj, "Established") {
        return Err(Health::Progressing("not Established yet".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn a_cluster_without_a_ready_node_is_down() {
        let node =
            |ready: &str| json!({"status": {"conditions": [{"type": "Ready", "status": ready}]}});
        assert_eq!(
            nodes_down(&json!({"items": []})),
            None,
            "no node: cannot tell"
        );
        assert_eq!(
            nodes_down(&json!({"items": [node("False"), node("True")]})),
            None
        );
        assert_eq!(
            nodes_down(&json!({"items": [node("False"), node("Unknown")]})).as_deref(),
            Some("none of its 2 node(s) is Ready")
        );
    }

    #[test]
    fn deployment_rollout() {
        assert!(
            matches!(health(&deploy(json!({}))), Health::Progressing(m) if m.contains("observedGeneration 0 < generation 2"))
        );
        let s = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3});
        assert!(
            matches!(health(&deploy(s)), Health::Progressing(m) if m.contains("1 old replica"))
        );
        let s = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2});
        assert!(
            matches!(health(&deploy(s)), Health::Progressing(m) if m == "2 of 3 updated replicas available")
        );
        let s = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert_eq!(health(&deploy(s)), Health::Healthy);
        let s = json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]});
        assert!(matches!(health(&deploy(s)), Health::Failed(_)));
    }

    #[test]
    fn jobs_crds_and_plain_objects() {
        let job = |conds: Value| json!({"apiVersion": "batch/v1", "kind": "Job", "status": {"conditions": conds}});
        assert_eq!(
            health(&job(json!([{"type": "Complete", "status": "True"}]))),
            Health::Healthy
        );
        assert!(
            matches!(health(&job(json!([{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]))), Health::Failed(m) if m.contains("BackoffLimitExceeded"))
        );
        assert!(matches!(health(&job(json!([]))), Health::Progressing(_)));
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "status": {"conditions": [{"type": "Established", "status": "True"}]}});
        assert_eq!(health(&crd), Health::Healthy);
        assert_eq!(
            health(&json!({"apiVersion": "v1", "kind": "ConfigMap"})),
            Health::Healthy
        );
    }

    #[test]
    fn statefulsets_and_daemonsets() {
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 1},
            "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "updatedReplicas": 2, "readyReplicas": 1}});
        assert!(matches!(health(&sts), Health::Progressing(m) if m == "1 of 2 replicas ready"));
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}});
        assert_eq!(health(&ds), Health::Healthy);
    }
}
