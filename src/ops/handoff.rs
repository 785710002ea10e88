//! A relay's handoff as part of the relay cluster's desired state.
//!
//! When a run renders a relay cluster, the handoff to it
//! ([`crate::core::relay::handoff`]) joins the cluster's objects:
//! - the `Handoff` CustomResourceDefinition;
//! - the chunk Secrets and the `Handoff` index ([`crate::core::chunks`]),
//!   in namespace `canopy-system`, which the Kubernetes backend keeps for
//!   its inventory and writes before any object (so it is not one of ours:
//!   two writers of one Namespace would take each other's labels away).
//!
//! Apply then writes them like any other object, with the same diff,
//! server-side apply, ordering and ownership. The chunks come before the
//! index (Secrets rank before custom resources), an unchanged chunk is no
//! write at all, and the chunks of an older slice are pruned after the new
//! index is written, since deletions come last.
//!
//! These objects belong to no workload: a rollback of one workload leaves
//! them alone, and a staged rollout does not hold them back.
//!
//! On the relay's side, [`read`] takes the handoff back out of the relay's
//! cluster (the agent), and the relay's report goes into the index's
//! status ([`write_report`]), where the level above reads it
//! ([`read_report`]).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::backend::{BackendError, ClusterBackend, TypeRef};
use crate::core::chunks::{self, ChunkError};
use crate::core::model::{ObjectKey, ANNOTATION_SOURCE, LABEL_CLUSTER, LABEL_FLEET};
use crate::core::relay::{self, Handoff};
use crate::core::relay_report::{RelayReport, Seen};
use crate::core::render::Renderer;

use super::apply::Desired;

/// The `canopy.dev/source` of the handoff's objects.
pub const SOURCE: &str = "canopy: relay handoff";

/// The objects that carry relay `relay`'s handoff at `revision`, with the
/// staged rollouts decided above it and the fleets its rollbacks go back
/// to; and which handoff that is.
pub fn objects(
    r: &Renderer<'_>,
    relay: usize,
    revision: &str,
    above: &relay::Above,
    bases: &relay::Bases<'_>,
) -> (Seen, Vec<(ObjectKey, Value)>) {
    let h = relay::handoff(r, relay, revision, above, bases);
    let stored = chunks::encode(&h);
    let seen = Seen {
        revision: h.revision,
        digest: h.digest,
    };
    let fleet = &r.checked.fleet.name;
    let cluster = r.checked.topo.name(relay);
    let mut all = vec![chunks::crd()];
    all.extend(stored.chunks);
    all.push(stored.index);
    let objects = all
        .into_iter()
        .map(|mut v| {
            let meta = &mut v["metadata"];
            meta["labels"][LABEL_FLEET] = Value::from(fleet.as_str());
            meta["labels"][LABEL_CLUSTER] = Value::from(cluster);
            meta["annotations"][ANNOTATION_SOURCE] = Value::from(SOURCE);
            let key = ObjectKey::of(&v).expect("canopy's own objects have an identity");
            (key, v)
        })
        .collect();
    (seen, objects)
}

/// Adds the handoff of every relay cluster `desired` holds, or puts a new
/// one in place of the one it carries. The relays whose handoff changed.
pub fn add_to(
    desired: &mut Desired,
    r: &Renderer<'_>,
    revision: &str,
    above: &relay::Above,
    bases: &relay::Bases<'_>,
) -> Vec<usize> {
    let checked = r.checked;
    let mut changed = Vec::new();
    for c in 0..checked.topo.len() {
        if desired.has(c) && checked.cluster(c).spec.relay.is_some() {
            let (seen, objects) = objects(r, c, revision, above, bases);
            if desired.handoff(c) != Some(&seen) {
                desired.hand(c, seen, objects);
                changed.push(c);
            }
        }
    }
    changed
}

/// The kind of the index object.
fn index_type() -> TypeRef {
    TypeRef {
        api_version: "canopy.dev/v1alpha1".into(),
        kind: "Handoff".into(),
    }
}

fn index_key() -> ObjectKey {
    ObjectKey {
        group: "canopy.dev".into(),
        kind: "Handoff".into(),
        namespace: chunks::NAMESPACE.into(),
        name: chunks::INDEX_NAME.into(),
    }
}

/// The kind and identity of the relay agent's Lease
/// ([`crate::core::lease`]), beside the handoff.
pub fn lease_ref() -> (TypeRef, ObjectKey) {
    (
        TypeRef {
            api_version: "coordination.k8s.io/v1".into(),
            kind: "Lease".into(),
        },
        ObjectKey {
            group: "coordination.k8s.io".into(),
            kind: "Lease".into(),
            namespace: chunks::NAMESPACE.into(),
            name: crate::core::lease::NAME.into(),
        },
    )
}

/// The relay agent's Lease in its cluster, `None` when there is none or it
/// cannot be read (a relay its level above cannot hear).
pub fn read_lease(backend: &dyn ClusterBackend) -> Option<Value> {
    let (t, key) = lease_ref();
    backend.get(&t, &key).ok().flatten()
}

/// Whether an agent holds the relay's Lease at `now`: someone serves it.
pub fn lease_alive(backend: &dyn ClusterBackend, now: std::time::SystemTime) -> bool {
    read_lease(backend)
        .and_then(|l| crate::core::lease::live_until(&l, now))
        .is_some()
}

/// A handoff found in a relay's cluster: which one the index names, and
/// the handoff itself, or why its stored objects do not make one.
pub struct Found {
    pub seen: Seen,
    pub handoff: Result<Handoff, ChunkError>,
    /// The chunks the index names.
    pub chunks: Vec<String>,
    /// The index itself, for a relay to keep.
    pub index: Value,
}

/// The handoff stored in a relay's cluster, `None` when none is there yet.
/// Chunks are written before their index and pruned after a newer one, so
/// a chunk missing here is most likely a handoff being replaced: the next
/// read finds the new one whole.
pub fn read(backend: &dyn ClusterBackend) -> Result<Option<Found>, BackendError> {
    let Some(index) = backend.get(&index_type(), &index_key())? else {
        return Ok(None);
    };
    read_from(backend, &index).map(Some)
}

/// The handoff an index names, from its chunks in the relay's cluster:
/// the live index, or one a relay kept (its last good handoff, whose
/// chunks stay until it takes a newer one).
pub fn read_from(backend: &dyn ClusterBackend, index: &Value) -> Result<Found, BackendError> {
    let spec = |k: &str| {
        index
            .pointer(&format!("/spec/{k}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let seen = Seen {
        revision: spec("revision"),
        digest: spec("digest"),
    };
    let names = match chunks::chunk_names(index) {
        Ok(n) => n,
        Err(e) => {
            return Ok(Found {
                seen,
                handoff: Err(e),
                chunks: Vec::new(),
                index: index.clone(),
            })
        }
    };
    let secret = TypeRef {
        api_version: "v1".into(),
        kind: "Secret".into(),
    };
    let mut found = BTreeMap::new();
    for name in names.iter().cloned() {
        let key = ObjectKey {
            group: String::new(),
            kind: "Secret".into(),
            namespace: chunks::NAMESPACE.into(),
            name: name.clone(),
        };
        if let Some(chunk) = backend.get(&secret, &key)? {
            found.insert(name, chunk);
        }
    }
    Ok(Found {
        seen,
        handoff: chunks::decode(index, &found),
        chunks: names,
        index: index.clone(),
    })
}

/// The digest the stored index names, `None` without one: whether there
/// is anything new to read, for one request.
pub fn stored_digest(backend: &dyn ClusterBackend) -> Result<Option<String>, BackendError> {
    Ok(backend.get(&index_type(), &index_key())?.and_then(|i| {
        i.pointer("/spec/digest")
            .and_then(Value::as_str)
            .map(str::to_string)
    }))
}

/// The chunks of the handoff a relay works from, as its report in the
/// live index names them: they stay until the relay has taken a newer
/// handoff, so a relay reading the index it last saw never finds its
/// chunks gone. Empty for a cluster that is no relay, or whose agent has
/// not reported.
pub fn acknowledged_chunks(live: &[Value]) -> std::collections::BTreeSet<String> {
    live.iter()
        .find(|o| {
            o["kind"] == "Handoff"
                && o.pointer("/metadata/namespace").and_then(Value::as_str)
                    == Some(chunks::NAMESPACE)
                && o.pointer("/metadata/name").and_then(Value::as_str) == Some(chunks::INDEX_NAME)
        })
        .and_then(|i| i.pointer("/status/chunks"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `obj` is one of the chunk Secrets named in `names`.
pub fn is_chunk_of(obj: &Value, names: &std::collections::BTreeSet<String>) -> bool {
    obj["kind"] == "Secret"
        && obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(chunks::NAMESPACE)
        && obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_some_and(|n| names.contains(n))
}

/// The report of the relay whose cluster this is, with the digest of the
/// handoff it was written on; `None` before the relay's first report (or
/// before any handoff).
pub fn read_report(
    backend: &dyn ClusterBackend,
) -> Result<Option<(String, RelayReport)>, BackendError> {
    let Some(index) = backend.get(&index_type(), &index_key())? else {
        return Ok(None);
    };
    let digest = index
        .pointer("/spec/digest")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let report = index
        .get("status")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
        .and_then(|s| serde_json::from_value::<RelayReport>(s.clone()).ok());
    Ok(report.map(|r| (digest, r)))
}

/// Writes the relay's report into its handoff's status.
pub fn write_report(
    backend: &dyn ClusterBackend,
    report: &RelayReport,
) -> Result<(), BackendError> {
    let status = serde_json::to_value(report).expect("a report serializes");
    backend.set_status(&index_type(), &index_key(), &status)
}
