//! What `canopy status` reads besides drift: per workload, the replicas
//! each cluster should run (from the render) and the replicas ready there
//! (from the cluster), summed up the tree by [`crate::core::aggregate`].

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde_json::Value;

use crate::backend::fleet::Backends;
use crate::backend::TypeRef;
use crate::core::aggregate::{aggregate, cluster_counts, Counts, WorkloadStatus};
use crate::core::diag::Diagnostics;
use crate::core::kinds;
use crate::core::model::ObjectKey;
use crate::core::render::{render_map, Renderer};

/// A desired object that carries replicas: (workload index, identity,
/// replica pointer, object).
type Replicated = (usize, ObjectKey, String, Value);

/// Every workload's desired and ready replicas, per cluster and per subtree.
/// A cluster that cannot be read counts nothing as ready.
pub fn workloads(
    r: &Renderer<'_>,
    backends: &dyn Backends,
) -> Result<Vec<WorkloadStatus>, Diagnostics> {
    let checked = r.checked;
    let fleet = &checked.fleet;
    let topo = &checked.topo;
    let rendered: Vec<(usize, Vec<Replicated>)> = render_map(r, None, |_, objs| {
        objs.into_iter()
            .filter_map(|o| {
                let w = &fleet.workloads[o.workload];
                let ptr = kinds::replica_pointer(
                    &o.key.group,
                    &o.key.kind,
                    &w.spec.placement.replicas.paths,
                )?;
                Some((o.workload, o.key, ptr.to_string(), o.value))
            })
            .collect()
    })?;
    let per_cluster: Vec<(usize, BTreeMap<String, Counts>)> = rendered
        .into_par_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(c, mut items)| {
            let backend = backends.backend(topo.name(c));
            let kinds: Vec<TypeRef> = items
                .iter()
                .filter_map(|(_, _, _, v)| TypeRef::of(v))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            // As apply does: a namespaced object without a namespace lives
            // in `default` on a real cluster.
            if let Ok(scopes) = backend.scopes(&kinds) {
                for (_, key, _, v) in &mut items {
                    let namespaced = TypeRef::of(v).and_then(|t| scopes.get(&t).copied());
                    if namespaced == Some(true) && key.namespace.is_empty() {
                        key.namespace = "default".into();
                    }
                }
            }
            let live = backend.list_owned(&fleet.name, &kinds).ok();
            let counts = cluster_counts(
                items
                    .iter()
                    .map(|(wi, key, ptr, v)| (fleet.workloads[*wi].name(), key, ptr.as_str(), v)),
                live.as_deref(),
                backend.has_controllers(),
            );
            (c, counts)
        })
        .collect();
    let mut own: BTreeMap<String, BTreeMap<usize, Counts>> = BTreeMap::new();
    for (c, counts) in per_cluster {
        for (w, n) in counts {
            own.entry(w).or_default().insert(c, n);
        }
    }
    Ok(aggregate(topo, &own))
}
