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
//! them alone, and a staged rollout does not hold them back. Until
//! `canopy agent` reads them, they are written but nothing acts on them.

use serde_json::Value;

use crate::core::chunks;
use crate::core::model::{ObjectKey, ANNOTATION_SOURCE, LABEL_CLUSTER, LABEL_FLEET};
use crate::core::relay;
use crate::core::render::Renderer;

use super::apply::Desired;

/// The `canopy.dev/source` of the handoff's objects.
pub const SOURCE: &str = "canopy: relay handoff";

/// The objects that carry relay `relay`'s handoff at `revision`.
pub fn objects(r: &Renderer<'_>, relay: usize, revision: &str) -> Vec<(ObjectKey, Value)> {
    let h = relay::handoff(r, relay, revision);
    let stored = chunks::encode(&h);
    let fleet = &r.checked.fleet.name;
    let cluster = r.checked.topo.name(relay);
    let mut all = vec![chunks::crd()];
    all.extend(stored.chunks);
    all.push(stored.index);
    all.into_iter()
        .map(|mut v| {
            let meta = &mut v["metadata"];
            meta["labels"][LABEL_FLEET] = Value::from(fleet.as_str());
            meta["labels"][LABEL_CLUSTER] = Value::from(cluster);
            meta["annotations"][ANNOTATION_SOURCE] = Value::from(SOURCE);
            let key = ObjectKey::of(&v).expect("canopy's own objects have an identity");
            (key, v)
        })
        .collect()
}

/// Adds the handoff of every relay cluster `desired` holds.
pub fn add_to(desired: &mut Desired, r: &Renderer<'_>, revision: &str) {
    let checked = r.checked;
    for c in 0..checked.topo.len() {
        if desired.has(c) && checked.cluster(c).spec.relay.is_some() {
            desired.add(c, objects(r, c, revision));
        }
    }
}
