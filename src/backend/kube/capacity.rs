//! What a Kubernetes cluster can still hold (live capacity): the
//! allocatable resources of its schedulable nodes minus what the pods
//! running on them request, as the scheduler counts them. One list of
//! nodes and one of pods per read.

use serde_json::Value;

use crate::core::model::quantity::parse_quantity;
use crate::core::model::{Capacity, Quantity};

/// Resources of one kind: cpu (cores), memory (bytes), pods.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Amount {
    cpu: f64,
    memory: f64,
    pods: f64,
}

impl Amount {
    fn of(list: Option<&Value>) -> Amount {
        let get = |k: &str| {
            list.and_then(|l| l.get(k))
                .and_then(|q| match q {
                    Value::String(s) => parse_quantity(s).ok(),
                    Value::Number(n) => n.as_f64(),
                    _ => None,
                })
                .unwrap_or(0.0)
        };
        Amount {
            cpu: get("cpu"),
            memory: get("memory"),
            pods: get("pods"),
        }
    }

    fn add(&mut self, o: Amount) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.pods += o.pods;
    }

    fn max(self, o: Amount) -> Amount {
        Amount {
            cpu: self.cpu.max(o.cpu),
            memory: self.memory.max(o.memory),
            pods: self.pods.max(o.pods),
        }
    }
}

/// What one pod takes from its node: the larger of its containers'
/// requests together and any one init container's (init containers run
/// one at a time, before the others), plus its overhead, and one pod slot.
fn pod_requests(pod: &Value) -> Amount {
    let spec = &pod["spec"];
    let requests = |c: &Value| Amount::of(c.pointer("/resources/requests"));
    let mut run = Amount::default();
    for c in spec["containers"].as_array().into_iter().flatten() {
        run.add(requests(c));
    }
    let mut init = Amount::default();
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        init = init.max(requests(c));
    }
    let mut total = run.max(init);
    total.add(Amount::of(spec.get("overhead")));
    total.pods = 1.0;
    total
}

/// The free capacity of a cluster from its node list and pod list (API
/// list responses): schedulable nodes' allocatable resources minus the
/// requests of pods bound to them that have not finished, never below 0.
pub fn free(nodes: &Value, pods: &Value) -> Capacity {
    let items = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
    let mut schedulable = std::collections::BTreeSet::new();
    let mut have = Amount::default();
    for n in items(nodes) {
        if n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(name) = n.pointer("/metadata/name").and_then(Value::as_str) {
            schedulable.insert(name.to_string());
        }
        have.add(Amount::of(n.pointer("/status/allocatable")));
    }
    let mut used = Amount::default();
    for p in items(pods) {
        let on = p.pointer("/spec/nodeName").and_then(Value::as_str);
        let done = matches!(
            p.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        if done || !on.is_some_and(|n| schedulable.contains(n)) {
            continue;
        }
        used.add(pod_requests(&p));
    }
    let left = |h: f64, u: f64| Some(Quantity::Number((h - u).max(0.0)));
    Capacity {
        cpu: left(have.cpu, used.cpu),
        memory: left(have.memory, used.memory),
        pods: left(have.pods, used.pods),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(q: &Option<Quantity>) -> f64 {
        q.as_ref().unwrap().value().unwrap()
    }

    #[test]
    fn free_capacity_is_allocatable_minus_running_requests() {
        let nodes = json!({"items": [
            {"metadata": {"name": "a"}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}},
            {"metadata": {"name": "b"}, "status": {"allocatable": {"cpu": "3500m", "memory": "4Gi", "pods": "110"}}},
            {"metadata": {"name": "cordoned"}, "spec": {"unschedulable": true},
             "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"}}},
        ]});
        let pods = json!({"items": [
            // Two containers, an init container smaller than them, overhead.
            {"spec": {"nodeName": "a",
                "containers": [
                    {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                    {"resources": {"requests": {"cpu": "250m"}}}],
                "initContainers": [{"resources": {"requests": {"cpu": "100m", "memory": "2Gi"}}}],
                "overhead": {"cpu": "250m"}},
             "status": {"phase": "Running"}},
            // No requests: a pod slot only.
            {"spec": {"nodeName": "b", "containers": [{}]}, "status": {"phase": "Pending"}},
            // Finished, unbound, or on a cordoned node: not counted.
            {"spec": {"nodeName": "a", "containers": [{"resources": {"requests": {"cpu": "3"}}}]},
             "status": {"phase": "Succeeded"}},
            {"spec": {"containers": [{"resources": {"requests": {"cpu": "3"}}}]}, "status": {"phase": "Pending"}},
            {"spec": {"nodeName": "cordoned", "containers": [{"resources": {"requests": {"cpu": "3"}}}]},
             "status": {"phase": "Running"}},
        ]});
        let c = free(&nodes, &pods);
        // cpu: 7.5 − (max(0.75, 0.1) + 0.25) = 6.5
        assert!((num(&c.cpu) - 6.5).abs() < 1e-9, "{c:?}");
        // memory: 12Gi − max(1Gi, 2Gi) = 10Gi (the init container is larger)
        assert_eq!(num(&c.memory), 10.0 * 1024f64.powi(3));
        assert_eq!(num(&c.pods), 218.0);
    }

    #[test]
    fn an_overcommitted_cluster_has_nothing_left() {
        let nodes = json!({"items": [
            {"metadata": {"name": "a"}, "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "2"}}}]});
        let pods = json!({"items": [
            {"spec": {"nodeName": "a", "containers": [{"resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]},
             "status": {"phase": "Running"}}]});
        let c = free(&nodes, &pods);
        assert_eq!((num(&c.cpu), num(&c.memory), num(&c.pods)), (0.0, 0.0, 1.0));
        assert_eq!(
            free(&json!({}), &json!({})),
            Capacity {
                cpu: Some(Quantity::Number(0.0)),
                memory: Some(Quantity::Number(0.0)),
                pods: Some(Quantity::Number(0.0)),
            }
        );
    }
}
