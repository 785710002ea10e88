//! Whether an applied object is healthy (pure), like Argo CD's health
//! checks, `kubectl rollout status` and kstatus, the library Flux and kpt
//! judge objects with.
//!
//! Kinds whose controllers say readiness their own way have a rule each
//! (workloads, Jobs, CRDs, claims, load balancers, Ingresses, APIServices,
//! disruption budgets, autoscalers). Every other kind, custom resources
//! above all, is judged by kstatus's generic rule
//! (sigs.k8s.io/cli-utils `pkg/kstatus`, its README's "conditions"
//! convention): being deleted or a status not yet caught up with the spec
//! (`observedGeneration`) is progress, `Stalled` is failure, `Reconciling`
//! is progress, and `Ready` (else `Available`) says the rest; an object
//! with no status at all is healthy, as kstatus has it, since nothing will
//! ever write one.
//!
//! `apply --wait`, staged rollouts' health gates and relays' gate reports
//! poll objects through [`health`] until all are healthy or the timeout
//! passes; the report then names each object that is not, and why.

use serde_json::Value;

pub use crate::core::health_rules::Health;

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

/// How `obj` is doing: the rule a user wrote for its kind, else canopy's
/// own for it, else the generic one.
pub fn judged(obj: &Value, rules: &crate::core::health_rules::HealthRules) -> Health {
    rules.judge(obj).unwrap_or_else(|| health(obj))
}

/// How `obj` is doing by canopy's own rules: its kind's, else the generic
/// one.
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
        ("", "PersistentVolumeClaim") => claim(obj),
        ("", "Service") => service(obj),
        ("networking.k8s.io", "Ingress") => ingress(obj),
        ("apiregistration.k8s.io", "APIService") => api_service(obj),
        ("policy", "PodDisruptionBudget") => disruption_budget(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => autoscaler(obj),
        _ => generic(obj),
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

/// Whether a condition's reason says it will not get there by itself:
/// controllers name such reasons `…Failed`, `…Failure`, `…Error` or
/// `…Aborted` (Flux's `ReconciliationFailed`, cert-manager's `Failed`,
/// Argo Rollouts' `RolloutAborted`), or `ProgressDeadlineExceeded`.
fn failure_reason(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    ["failed", "failure", "error", "aborted"]
        .iter()
        .any(|s| r.ends_with(s))
        || r == "progressdeadlineexceeded"
}

/// `reason: message` of a condition, whichever it has.
fn why(c: &Value) -> String {
    let field = |k: &str| c.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    match (field("reason"), field("message")) {
        (Some(r), Some(m)) => format!("{r}: {m}"),
        (Some(x), None) | (None, Some(x)) => x.to_string(),
        (None, None) => "no reason given".into(),
    }
}

/// kstatus's generic rule (see the module docs), for every kind without a
/// rule of its own.
fn generic(obj: &Value) -> Result<(), Health> {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Err(Health::Progressing("being deleted".into()));
    }
    let status = match obj.get("status") {
        Some(Value::Object(m)) if !m.is_empty() => m,
        // No status: nothing judges it, and nothing ever will.
        _ => return Ok(()),
    };
    // Some controllers write it as a string (Argo Rollouts); one that is
    // not a number says nothing.
    let seen = status.get("observedGeneration").and_then(|v| match v {
        Value::String(s) => s.parse::<i64>().ok(),
        v => v.as_i64(),
    });
    if let Some(seen) = seen {
        let generation = int(obj, "/metadata/generation");
        if seen < generation {
            return Err(Health::Progressing(format!(
                "observedGeneration {seen} < generation {generation}: its controller has not processed the latest spec"
            )));
        }
    }
    let holds = |kind: &str| {
        condition(obj, kind).filter(|c| c.get("status").and_then(Value::as_str) == Some("True"))
    };
    if let Some(c) = holds("Stalled") {
        return Err(Health::Failed(format!("Stalled: {}", why(c))));
    }
    if let Some(c) = holds("Reconciling") {
        return Err(Health::Progressing(format!("Reconciling: {}", why(c))));
    }
    let Some((kind, c)) = ["Ready", "Available"]
        .iter()
        .find_map(|k| condition(obj, k).map(|c| (*k, c)))
    else {
        return Ok(());
    };
    match c.get("status").and_then(Value::as_str) {
        Some("True") => Ok(()),
        Some("False")
            if c.get("reason")
                .and_then(Value::as_str)
                .is_some_and(failure_reason) =>
        {
            Err(Health::Failed(format!("{kind} is False: {}", why(c))))
        }
        Some("False") => Err(Health::Progressing(format!("{kind} is False: {}", why(c)))),
        _ => Err(Health::Progressing(format!(
            "{kind} is Unknown: {}",
            why(c)
        ))),
    }
}

/// A claim is healthy once Bound (a volume holds it), failed when Lost
/// (its volume is gone), else waiting for a volume — which, for a storage
/// class that binds on first use, means until a Pod uses it.
fn claim(obj: &Value) -> Result<(), Health> {
    match obj.pointer("/status/phase").and_then(Value::as_str) {
        Some("Bound") => Ok(()),
        Some("Lost") => Err(Health::Failed("Lost: its volume is gone".into())),
        phase => Err(Health::Progressing(format!(
            "{}: not bound to a volume yet",
            phase.unwrap_or("no phase")
        ))),
    }
}

/// An address given out by a load balancer (`status.loadBalancer.ingress`).
fn has_address(obj: &Value) -> bool {
    obj.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// A Service of type LoadBalancer waits for its address; others have
/// nothing to wait for.
fn service(obj: &Value) -> Result<(), Health> {
    if obj.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") || has_address(obj)
    {
        return Ok(());
    }
    Err(Health::Progressing(
        "no load balancer address yet (status.loadBalancer.ingress)".into(),
    ))
}

/// An Ingress waits for its controller to give it an address.
fn ingress(obj: &Value) -> Result<(), Health> {
    if has_address(obj) {
        return Ok(());
    }
    Err(Health::Progressing(
        "no address yet (status.loadBalancer.ingress): no ingress controller has taken it".into(),
    ))
}

/// An aggregated API is healthy when its server answers (`Available`).
fn api_service(obj: &Value) -> Result<(), Health> {
    match condition(obj, "Available") {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => Ok(()),
        Some(c) => Err(Health::Progressing(format!(
            "Available is not True: {}",
            why(c)
        ))),
        None => Err(Health::Progressing("not Available yet".into())),
    }
}

/// A disruption budget is met when at least as many Pods are healthy as
/// it asks for (kstatus's rule for it).
fn disruption_budget(obj: &Value) -> Result<(), Health> {
    if obj.get("status").is_none() {
        return Err(Health::Progressing("no status yet".into()));
    }
    observed(obj)?;
    let (current, desired) = (
        int(obj, "/status/currentHealthy"),
        int(obj, "/status/desiredHealthy"),
    );
    if current < desired {
        return Err(Health::Progressing(format!(
            "budget not met: {current} of {desired} Pods healthy"
        )));
    }
    Ok(())
}

/// An autoscaler is unhealthy while it cannot scale: `ScalingActive` False
/// (its metrics cannot be read, as on a new HPA before the metrics server
/// answers) or `AbleToScale` False. Either may pass, so it is progress, and
/// the timeout says when it has lasted too long.
fn autoscaler(obj: &Value) -> Result<(), Health> {
    for kind in ["ScalingActive", "AbleToScale"] {
        if let Some(c) = condition(obj, kind)
            .filter(|c| c.get("status").and_then(Value::as_str) == Some("False"))
        {
            return Err(Health::Progressing(format!("{kind} is False: {}", why(c))));
        }
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

    fn progressing(h: Health, has: &str) -> bool {
        matches!(&h, Health::Progressing(m) if m.contains(has))
    }

    fn failed(h: Health, has: &str) -> bool {
        matches!(&h, Health::Failed(m) if m.contains(has))
    }

    /// Custom resources, with the status their controllers write: each
    /// example's conditions are as the project documents them.
    #[test]
    fn custom_resources_by_kstatus_conditions() {
        // cert-manager's Certificate (cert-manager.io docs, "Certificate
        // resources": `kubectl describe certificate` while issuing and once
        // issued).
        let cert = |status: Value| {
            json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "web", "generation": 1}, "status": status})
        };
        assert!(progressing(
            health(&cert(json!({"conditions": [
                {"type": "Ready", "status": "False", "reason": "DoesNotExist",
                 "message": "Issuing certificate as Secret does not exist", "observedGeneration": 1},
                {"type": "Issuing", "status": "True", "reason": "DoesNotExist"}]}))),
            "Ready is False: DoesNotExist: Issuing certificate as Secret does not exist"
        ));
        assert_eq!(
            health(&cert(
                json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                "message": "Certificate is up to date and has not expired"}]})
            )),
            Health::Healthy
        );
        // Flux's Kustomization (fluxcd.io, kustomize-controller's status
        // conditions): Reconciling while it works, Stalled when it gives
        // up, Ready False with a `…Failed` reason when an attempt failed.
        let ks = |status: Value| {
            json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "generation": 3}, "status": status})
        };
        assert!(progressing(
            health(&ks(json!({"observedGeneration": 2, "conditions": []}))),
            "observedGeneration 2 < generation 3"
        ));
        assert!(progressing(
            health(&ks(json!({"observedGeneration": 3, "conditions": [
                {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "Building manifests"},
                {"type": "Ready", "status": "Unknown", "reason": "Progressing"}]}))),
            "Reconciling: Progressing: Building manifests"
        ));
        assert!(failed(
            health(&ks(json!({"observedGeneration": 3, "conditions": [
                {"type": "Stalled", "status": "True", "reason": "InvalidPath", "message": "path not found"},
                {"type": "Ready", "status": "False", "reason": "InvalidPath"}]}))),
            "Stalled: InvalidPath: path not found"
        ));
        assert!(failed(
            health(&ks(json!({"observedGeneration": 3, "conditions": [
                {"type": "Ready", "status": "False", "reason": "HealthCheckFailed",
                 "message": "timeout waiting for: [Deployment/apps/web status: 'InProgress']"}]}))),
            "Ready is False: HealthCheckFailed"
        ));
        // CloudNativePG's Cluster (cloudnative-pg.io docs, "Cluster
        // status"): Ready False while its instances come up.
        let pg = json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": "db", "generation": 1},
            "status": {"phase": "Setting up primary", "conditions": [
                {"type": "Ready", "status": "False", "reason": "ClusterIsNotReady", "message": "Cluster Is Not Ready"}]}});
        assert!(progressing(health(&pg), "ClusterIsNotReady"));
        // Crossplane's managed resources (crossplane.io docs, "Managed
        // resources"): Ready False reason Creating, then True reason
        // Available; `Synced` is not readiness.
        let bucket = |ready: &str, reason: &str| {
            json!({"apiVersion": "s3.aws.upbound.io/v1beta1", "kind": "Bucket",
            "metadata": {"name": "b", "generation": 1},
            "status": {"conditions": [{"type": "Synced", "status": "True", "reason": "ReconcileSuccess"},
                {"type": "Ready", "status": ready, "reason": reason}]}})
        };
        assert!(progressing(
            health(&bucket("False", "Creating")),
            "Creating"
        ));
        assert_eq!(health(&bucket("True", "Available")), Health::Healthy);
        // No status at all, or one without conditions: nothing says it is
        // not there (kstatus: "Current").
        assert_eq!(
            health(
                &json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"generation": 4}})
            ),
            Health::Healthy
        );
        assert_eq!(
            health(
                &json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"phase": "Whatever"}})
            ),
            Health::Healthy
        );
        assert!(progressing(
            health(&json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})),
            "being deleted"
        ));
        // Argo Rollouts' Rollout (argoproj.github.io/argo-rollouts, "Rollout
        // status"): aborted, it still says Available True and puts the
        // abort in `Progressing` and `status.phase`. The generic rule reads
        // it as healthy: such kinds need a rule of their own.
        let aborted = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"generation": 2},
            "status": {"observedGeneration": "2", "phase": "Degraded", "message": "RolloutAborted: Rollout aborted update to revision 2",
                "conditions": [{"type": "Available", "status": "True", "reason": "AvailableReason"},
                    {"type": "Progressing", "status": "False", "reason": "RolloutAborted"}]}});
        assert_eq!(health(&aborted), Health::Healthy);
    }

    /// Built-in kinds with a rule of their own; statuses as the Kubernetes
    /// API reference and `kubectl get -o yaml` show them.
    #[test]
    fn claims_load_balancers_ingresses_api_services_budgets_and_autoscalers() {
        let pvc = |phase: &str| json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": phase}});
        assert_eq!(health(&pvc("Bound")), Health::Healthy);
        assert!(progressing(health(&pvc("Pending")), "Pending: not bound"));
        assert!(failed(health(&pvc("Lost")), "Lost"));

        let svc = |ty: &str, status: Value| json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": ty}, "status": status});
        assert_eq!(
            health(&svc("ClusterIP", json!({"loadBalancer": {}}))),
            Health::Healthy
        );
        assert!(progressing(
            health(&svc("LoadBalancer", json!({"loadBalancer": {}}))),
            "no load balancer address"
        ));
        assert_eq!(
            health(&svc(
                "LoadBalancer",
                json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})
            )),
            Health::Healthy
        );

        let ing = |status: Value| json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "status": status});
        assert!(progressing(
            health(&ing(json!({"loadBalancer": {}}))),
            "no address yet"
        ));
        assert_eq!(
            health(&ing(
                json!({"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}})
            )),
            Health::Healthy
        );

        // kube-aggregator's condition when the server behind it is down.
        let api = |status: &str, reason: &str| {
            json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "status": {"conditions": [{"type": "Available", "status": status, "reason": reason,
                "message": "failing or missing response from https://10.96.0.12:443/apis/metrics.k8s.io/v1beta1"}]}})
        };
        assert!(progressing(
            health(&api("False", "FailedDiscoveryCheck")),
            "FailedDiscoveryCheck"
        ));
        assert_eq!(health(&api("True", "Passed")), Health::Healthy);

        let pdb = |current: i64| {
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "currentHealthy": current, "desiredHealthy": 2,
                "disruptionsAllowed": 0, "expectedPods": 3}})
        };
        assert!(progressing(health(&pdb(1)), "budget not met: 1 of 2"));
        assert_eq!(health(&pdb(3)), Health::Healthy);

        // The HPA controller's condition before it can read metrics.
        let hpa = |status: &str| {
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "status": {"conditions": [
                {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale"},
                {"type": "ScalingActive", "status": status, "reason": if status == "True" { "ValidMetricFound" } else { "FailedGetResourceMetric" },
                 "message": "the HPA was unable to compute the replica count"}]}})
        };
        assert!(progressing(
            health(&hpa("False")),
            "ScalingActive is False: FailedGetResourceMetric"
        ));
        assert_eq!(health(&hpa("True")), Health::Healthy);
    }
}
