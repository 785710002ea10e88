//! Relays: clusters marked `spec.relay` run `canopy agent` and reconcile
//! their descendants, and a parent level hands each relay child what it
//! needs to do so.
//!
//! Who reconciles a cluster: its nearest relay ancestor, or the root
//! process when it has none. A relay itself is reconciled by whoever
//! reaches its parent ([`reconcilers`]).
//!
//! What a relay gets is a [`Handoff`]: one full snapshot per parent→child
//! edge, not one object per workload × cluster, and not a stream of events
//! (Karmada's `Work` objects and argocd-agent's event sync are the lessons).
//! It holds:
//! - the fleet *slice* the subtree needs, as fleet files: the Cluster
//!   documents of the relay's subtree and of its ancestors (their labels,
//!   values and names feed templates, inheritance and `subtreeOf`), the
//!   workloads that land below the relay with their manifest files, the
//!   overrides that select a cluster below it, and the Defaults;
//! - per Divided workload, the replicas the parent level gave the relay's
//!   subtree. The scheduler is idempotent per subtree
//!   ([`schedule::divide_subtree`]), so the relay divides that share
//!   exactly as the root would;
//! - a digest over all of it, so a relay can refuse a handoff that was
//!   damaged on the way and keep its last good one.
//!
//! The promise, checked by a property test on random trees with random and
//! nested relays: what a relay renders from its handoff is byte for byte
//! what the root's full render gives those clusters.
//!
//! Failover inside the subtree is the relay's own: the scheduler keeps a
//! subtree's share while any of it is healthy, so the relay divides around
//! its failed clusters ([`Renderer::for_subtree`] with `failed`) and
//! nothing outside moves. Failover above the relay reaches it as its share.
//!
//! Staged rollouts are the level above's: a rollout's stages span the
//! fleet, so the handoff says which workloads that level rolls out and
//! where each is held back ([`Above`]); the relay follows and reports the
//! health of what it applied, which the level above's gate takes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::core::capabilities::Table;
use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::hash::StableHasher;
use crate::core::model::ReplicaMode;
use crate::core::render::Renderer;
use crate::core::validate::Checked;

/// For each cluster, the relay that reconciles it: its nearest relay
/// ancestor (not itself), or `None` for the root process.
pub fn reconcilers(checked: &Checked) -> Vec<Option<usize>> {
    let topo = &checked.topo;
    let mut out = vec![None; topo.len()];
    for &c in topo.preorder() {
        out[c] = topo.parent(c).and_then(|p| {
            if checked.cluster(p).spec.relay.is_some() {
                Some(p)
            } else {
                out[p]
            }
        });
    }
    out
}

/// Whether any cluster of the fleet is a relay.
pub fn any_relay(checked: &Checked) -> bool {
    checked
        .fleet
        .clusters
        .iter()
        .any(|c| c.spec.relay.is_some())
}

/// The clusters the level `by` reconciles (`None`: the root process):
/// those whose reconciler it is. `None` when that is every cluster of the
/// fleet, as for the root of a fleet without relays.
pub fn reconciled_by(checked: &Checked, by: Option<usize>) -> Option<BTreeSet<usize>> {
    let all = reconcilers(checked);
    if by.is_none() && all.iter().all(Option::is_none) {
        return None;
    }
    Some((0..all.len()).filter(|&c| all[c] == by).collect())
}

/// What a parent level hands a relay child (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handoff {
    /// The fleet's name (the `canopy.dev/fleet` label on every object).
    pub fleet: String,
    /// The relay cluster this is for.
    pub relay: String,
    /// The fleet revision the slice was cut from.
    pub revision: String,
    /// The slice, as fleet files by path: canopy documents written as one
    /// JSON document each, manifest files as they are in the repository.
    pub files: BTreeMap<String, String>,
    /// Per Divided workload landing below the relay: the replicas its
    /// parent level gave the relay's subtree.
    pub shares: BTreeMap<String, u32>,
    /// The staged rollouts decided above the relay.
    #[serde(default)]
    pub above: Above,
    /// By revision: the slice of the fleet at each revision a workload is
    /// rolled back to below the relay ([`Above::back`]), holding just the
    /// workloads rolled back to it. A relay has no Git history, so the
    /// level above, which has, hands it the old fleet as it hands the new.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bases: BTreeMap<String, Slice>,
    /// Per workload whose clusters get different manifests (Helm: one
    /// output per distinct set of values), by cluster below the relay: the
    /// manifest file it gets. The relay renders from these outputs and
    /// needs no Helm.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub picks: Picks,
    /// When the level above renders Helm charts for clusters below the
    /// relay: what it knows of their capabilities. The relay reads the
    /// clusters it reconciles and reports what differs, which the level
    /// above renders for from then on ([`crate::core::capabilities`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Table>,
    /// Hex of the stable hash over everything above.
    pub digest: String,
}

/// A fleet slice for a relay: fleet files by path, and per Divided
/// workload the replicas its parent level gave the relay's subtree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slice {
    pub files: BTreeMap<String, String>,
    pub shares: BTreeMap<String, u32>,
    /// As [`Handoff::picks`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub picks: Picks,
}

/// By workload, by cluster: the manifest file (path) the cluster gets.
pub type Picks = BTreeMap<String, BTreeMap<String, String>>;

fn hash_picks(h: &mut StableHasher, picks: &Picks) {
    // Most fleets have no Helm workload: their digest keeps its shape.
    if picks.is_empty() {
        return;
    }
    h.usize(picks.len());
    for (w, by) in picks {
        h.str(w).usize(by.len());
        for (c, path) in by {
            h.str(c).str(path);
        }
    }
}

/// A rollback decided above a relay: on `clusters` below it, the workload
/// runs as it was at `revision`, rendered from the handoff's slice of that
/// revision ([`Handoff::bases`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Back {
    /// As the revision annotation writes it (`v1.0.0@<sha>`).
    pub revision: String,
    /// The commit the level above renders it from; the relay needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub clusters: BTreeSet<String>,
}

/// By revision: the fleet at each revision a rollback goes back to, as the
/// level that hands down renders it (the root's full fleet at that commit;
/// a relay's own base slice, placed for its subtree).
pub type Bases<'a> = BTreeMap<String, Renderer<'a>>;

/// Staged rollouts as a level above a relay decides them. A rollout's
/// stages span the whole fleet (a percent stage is a share of every
/// cluster the workload lands on), so the level that runs the rollout
/// decides, and a relay only follows: it runs no stages of its own for
/// these workloads, holds them back where told, and reports the health of
/// the clusters it applied them to (the gate verdict).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Above {
    /// Workloads whose rollout a level above runs.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub rolled: BTreeSet<String>,
    /// By cluster: the workloads held back there, their stage not reached.
    /// The clusters keep what they run of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, BTreeSet<String>>,
    /// By workload: where a failed stage was rolled back below the relay,
    /// and to which revision. Those clusters run the workload as it was
    /// then, and are not held back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub back: BTreeMap<String, Back>,
}

impl Above {
    /// What of it concerns the clusters below `relay`.
    pub fn below(&self, checked: &Checked, relay: usize) -> Above {
        let topo = &checked.topo;
        let held = self
            .held
            .iter()
            .filter(|(c, _)| {
                topo.get(c)
                    .is_some_and(|i| i != relay && topo.in_subtree(i, relay))
            })
            .map(|(c, ws)| (c.clone(), ws.clone()))
            .collect();
        let back = self
            .back
            .iter()
            .filter_map(|(w, b)| {
                let clusters: BTreeSet<String> = b
                    .clusters
                    .iter()
                    .filter(|c| {
                        topo.get(c)
                            .is_some_and(|i| i != relay && topo.in_subtree(i, relay))
                    })
                    .cloned()
                    .collect();
                (!clusters.is_empty()).then(|| {
                    (
                        w.clone(),
                        Back {
                            clusters,
                            ..b.clone()
                        },
                    )
                })
            })
            .collect();
        Above {
            rolled: self.rolled.clone(),
            held,
            back,
        }
    }

    /// Whether workload `w` on cluster `c` runs as an older revision.
    pub fn rolled_back(&self, c: &str, w: &str) -> bool {
        self.back.get(w).is_some_and(|b| b.clusters.contains(c))
    }
}

impl Handoff {
    /// The digest of this handoff's content (its `digest` field aside).
    pub fn compute_digest(&self) -> String {
        let mut h = StableHasher::new();
        h.str(&self.fleet).str(&self.relay).str(&self.revision);
        h.usize(self.files.len());
        for (path, text) in &self.files {
            h.str(path).str(text);
        }
        h.usize(self.shares.len());
        for (w, n) in &self.shares {
            h.str(w).u64(u64::from(*n));
        }
        h.usize(self.above.rolled.len());
        for w in &self.above.rolled {
            h.str(w);
        }
        h.usize(self.above.held.len());
        for (c, ws) in &self.above.held {
            h.str(c).usize(ws.len());
            for w in ws {
                h.str(w);
            }
        }
        // Rollbacks are rare: a handoff without one keeps the digest it
        // had before they were handed down.
        if !self.above.back.is_empty() || !self.bases.is_empty() {
            h.usize(self.above.back.len());
            for (w, b) in &self.above.back {
                h.str(w)
                    .str(&b.revision)
                    .str(b.commit.as_deref().unwrap_or(""));
                h.usize(b.clusters.len());
                for c in &b.clusters {
                    h.str(c);
                }
            }
            h.usize(self.bases.len());
            for (rev, slice) in &self.bases {
                h.str(rev).usize(slice.files.len());
                for (path, text) in &slice.files {
                    h.str(path).str(text);
                }
                h.usize(slice.shares.len());
                for (w, n) in &slice.shares {
                    h.str(w).u64(u64::from(*n));
                }
                hash_picks(&mut h, &slice.picks);
            }
        }
        hash_picks(&mut h, &self.picks);
        // Most handoffs carry no Helm output: their digest keeps its shape.
        if let Some(t) = &self.capabilities {
            h.str("capabilities").usize(t.sets.len());
            for set in &t.sets {
                h.usize(set.len());
                for a in set {
                    h.str(a);
                }
            }
            h.usize(t.clusters.len());
            for (c, e) in &t.clusters {
                h.str(c)
                    .str(&e.kubernetes_version)
                    .usize(e.set)
                    .u64(e.read_at);
            }
        }
        format!("{:016x}", h.finish())
    }
}

/// Cuts the handoff for relay `relay` from a renderer of the level above
/// (the root's full renderer, or a relay's own for a nested relay), with
/// the staged rollouts that level follows or runs (`above`) and the fleet
/// at each revision it rolls back to (`bases`).
pub fn handoff(
    r: &Renderer<'_>,
    relay: usize,
    revision: &str,
    above: &Above,
    bases: &Bases<'_>,
) -> Handoff {
    let checked = r.checked;
    let mut above = above.below(checked, relay);
    let relay_name = checked.topo.name(relay);
    // The workloads rolled back below the relay, by revision.
    let mut wanted: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (w, b) in &above.back {
        wanted.entry(&b.revision).or_default().insert(w.clone());
    }
    let mut cut = BTreeMap::new();
    for (rev, ws) in wanted {
        let at = bases
            .get(rev)
            .and_then(|br| Some((br, br.checked.topo.get(relay_name)?)));
        if let Some((br, rl)) = at {
            cut.insert(rev.to_string(), slice(br, rl, Some(&ws)));
        }
    }
    // A rollback whose fleet the level above could not give (the relay is
    // not in it) leaves the clusters as they are: held back.
    let unserved: Vec<String> = above
        .back
        .iter()
        .filter(|(_, b)| !cut.contains_key(&b.revision))
        .map(|(w, _)| w.clone())
        .collect();
    for w in unserved {
        let b = above.back.remove(&w).expect("listed");
        for c in b.clusters {
            above.held.entry(c).or_default().insert(w.clone());
        }
    }
    let Slice {
        files,
        shares,
        picks,
    } = slice(r, relay, None);
    let capabilities = asks_capabilities(r, relay).then(|| {
        let topo = &checked.topo;
        crate::core::capabilities::handed(&checked.fleet, |c| {
            topo.get(c)
                .is_some_and(|i| i != relay && topo.in_subtree(i, relay))
        })
    });
    let mut h = Handoff {
        fleet: checked.fleet.name.clone(),
        relay: relay_name.to_string(),
        revision: revision.to_string(),
        files,
        shares,
        above,
        bases: cut,
        picks,
        capabilities,
        digest: String::new(),
    };
    h.digest = h.compute_digest();
    h
}

/// Whether the clusters below `relay` get Helm output this level renders
/// (or, in a relay's own slice, that the level above renders), so their
/// capabilities matter.
pub fn asks_capabilities(r: &Renderer<'_>, relay: usize) -> bool {
    let checked = r.checked;
    if checked.fleet.capabilities_asked {
        return true;
    }
    let topo = &checked.topo;
    checked.fleet.workloads.iter().enumerate().any(|(wi, w)| {
        w.spec.helm.is_some()
            && r.placements[wi].as_ref().is_some_and(|p| {
                topo.subtree(relay)
                    .iter()
                    .any(|&c| c != relay && p.lands_on(c))
            })
    })
}

/// The slice of `r`'s fleet that relay `relay`'s subtree needs (module
/// docs); with `only`, of those workloads alone.
fn slice<'a>(r: &Renderer<'a>, relay: usize, only: Option<&BTreeSet<String>>) -> Slice {
    let checked = r.checked;
    let fleet = &checked.fleet;
    let topo = &checked.topo;
    let below: Vec<usize> = topo
        .subtree(relay)
        .iter()
        .copied()
        .filter(|&c| c != relay)
        .collect();

    // Documents by file, each with its line so a file keeps its order.
    let mut docs: BTreeMap<&str, Vec<(usize, std::borrow::Cow<'a, serde_json::Value>)>> =
        BTreeMap::new();
    let mut add_doc = |source: &'a crate::core::model::Source,
                       value: std::borrow::Cow<'a, serde_json::Value>| {
        docs.entry(source.file.as_str())
            .or_default()
            .push((source.doc.line, value));
    };
    let as_is =
        |source: &'a crate::core::model::Source| std::borrow::Cow::Borrowed(&source.doc.value);
    let mut chain = Vec::new();
    let mut at = Some(relay);
    while let Some(c) = at {
        chain.push(c);
        at = topo.parent(c);
    }
    for &c in chain.iter().chain(&below) {
        let src = &checked.cluster(c).source;
        add_doc(src, as_is(src));
    }
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut shares = BTreeMap::new();
    let mut picks = Picks::new();
    // A relay that takes members may see clusters join below it that
    // this level never saw: it gets what a newcomer could be chosen for.
    let takes_members = checked
        .cluster(relay)
        .spec
        .relay
        .as_ref()
        .is_some_and(|rl| rl.members);
    let related = |name: &str| {
        topo.get(name)
            .is_some_and(|c| chain.contains(&c) || below.contains(&c))
    };
    let newcomer_may = |sel: Option<&crate::core::model::ClusterSelector>| {
        takes_members && sel.is_none_or(|s| s.could_choose_newcomer(related))
    };
    for (wi, w) in fleet.workloads.iter().enumerate() {
        let Some(p) = r.placements[wi].as_ref() else {
            continue;
        };
        let lands = below.iter().any(|&c| p.lands_on(c));
        let may =
            p.mode != ReplicaMode::Divided && newcomer_may(w.spec.placement.clusters.as_ref());
        if only.is_some_and(|o| !o.contains(w.name())) || !(lands || may) {
            continue;
        }
        if w.spec.kustomize.is_some() || w.spec.helm.is_some() {
            // The relay gets kustomize's or Helm's output as the workload's
            // plain manifests (`source::kustomize`, `source::helm`): it
            // needs neither tool, and renders what this level renders.
            let mut doc = w.source.doc.value.clone();
            if let Some(spec) = doc
                .get_mut("spec")
                .and_then(serde_json::Value::as_object_mut)
            {
                spec.remove("kustomize");
                spec.remove("helm");
            }
            add_doc(&w.source, std::borrow::Cow::Owned(doc));
        } else {
            add_doc(&w.source, as_is(&w.source));
        }
        match &checked.facts[wi].variant {
            // Only the outputs the subtree's clusters get, and who gets which.
            Some(v) => {
                let by = picks.entry(w.name().to_string()).or_default();
                for &c in &below {
                    if let Some(m) = v
                        .get(c)
                        .copied()
                        .flatten()
                        .and_then(|mi| w.manifests.get(mi as usize))
                    {
                        by.insert(topo.name(c).to_string(), m.path.clone());
                        files.insert(m.path.clone(), m.text.clone());
                    }
                }
            }
            None => {
                for m in &w.manifests {
                    files.insert(m.path.clone(), m.text.clone());
                }
            }
        }
        if p.mode == ReplicaMode::Divided {
            if let Some(n) = r.handed_share(wi, relay) {
                shares.insert(w.name().to_string(), n);
            }
        }
    }
    for (oi, o) in fleet.overrides.iter().enumerate() {
        if below.iter().any(|&c| r.override_on(oi, c)) || newcomer_may(o.spec.clusters.as_ref()) {
            add_doc(&o.source, as_is(&o.source));
        }
    }
    for d in &fleet.defaults {
        add_doc(&d.source, as_is(&d.source));
    }
    // The relay holds its subtree's workloads to their tenants' rules too.
    for t in &fleet.tenants {
        add_doc(&t.source, as_is(&t.source));
    }
    for (file, mut list) in docs {
        list.sort_by_key(|(line, _)| *line);
        let text: Vec<String> = list
            .iter()
            .map(|(_, v)| serde_json::to_string(v).expect("JSON values serialize"))
            .collect();
        files.insert(file.to_string(), text.join("\n---\n") + "\n");
    }
    Slice {
        files,
        shares,
        picks,
    }
}

/// What a relay works from: its handoff's slice, checked, and where the
/// relay is in it.
pub struct Opened {
    pub checked: Checked,
    pub relay: usize,
    /// By revision: the slice of each fleet a rollback goes back to.
    pub bases: BTreeMap<String, BaseFleet>,
}

/// The fleet at a revision a rollback goes back to, checked: the root's
/// whole fleet at that commit, or a relay's base slice.
pub struct BaseFleet {
    pub checked: Checked,
    /// The relay whose subtree a slice is for; `None` for a whole fleet.
    pub relay: Option<usize>,
    /// A slice's shares ([`Slice::shares`]).
    pub shares: BTreeMap<String, u32>,
}

impl BaseFleet {
    /// The whole fleet at an older commit, as the root renders it.
    pub fn whole(checked: Checked) -> BaseFleet {
        BaseFleet {
            checked,
            relay: None,
            shares: BTreeMap::new(),
        }
    }

    /// Placed as the level that holds it places it: the whole fleet as a
    /// rollback renders it (no failover), a slice for its relay's subtree
    /// with the shares handed down and the relay's own failover.
    pub fn renderer(&self, failed: &[Vec<bool>]) -> Renderer<'_> {
        match self.relay {
            None => Renderer::new(&self.checked),
            Some(rl) => Renderer::for_subtree(&self.checked, rl, &self.shares, failed),
        }
    }
}

/// Opens a handoff on the relay's side: checks its digest, loads and
/// validates the slice (names outside it are the full fleet's) and each
/// base slice, and finds the relay. A bad handoff is refused whole, with
/// why.
pub fn open(h: &Handoff) -> Result<Opened, Diagnostics> {
    open_with(h, &mut |_| Diagnostics::default())
}

/// [`open`], with `extra` adding to each slice before it is checked (the
/// members that joined the relay's own hub).
pub fn open_with(
    h: &Handoff,
    extra: &mut dyn FnMut(&mut crate::core::model::Fleet) -> Diagnostics,
) -> Result<Opened, Diagnostics> {
    let refuse = |msg: String, hint: &str| {
        let mut d = Diagnostics::default();
        d.push(Diagnostic::error(msg).hint(hint));
        d
    };
    let digest = h.compute_digest();
    if digest != h.digest {
        return Err(refuse(
            format!(
                "the handoff for relay {} at revision {} does not match its digest (says {}, content is {digest})",
                h.relay, h.revision, h.digest
            ),
            "the handoff was damaged or cut short on the way; the relay keeps its last good one until its parent writes it again",
        ));
    }
    let (checked, relay) = open_slice(h, &h.files, &h.picks, &h.revision, extra)?;
    let mut bases = BTreeMap::new();
    for (rev, s) in &h.bases {
        let (checked, relay) = open_slice(h, &s.files, &s.picks, rev, extra)?;
        bases.insert(
            rev.clone(),
            BaseFleet {
                checked,
                relay: Some(relay),
                shares: s.shares.clone(),
            },
        );
    }
    Ok(Opened {
        checked,
        relay,
        bases,
    })
}

/// Gives each cluster of a slice the manifest its handoff picked for it
/// (a Helm workload's output for that cluster's values).
fn apply_picks(checked: &mut Checked, picks: &Picks) -> Result<(), String> {
    for (name, by) in picks {
        let Some(wi) = checked
            .fleet
            .workloads
            .iter()
            .position(|w| w.name() == name)
        else {
            return Err(format!(
                "picks name workload {name:?}, which the slice does not hold"
            ));
        };
        let w = &checked.fleet.workloads[wi];
        let mut v = vec![None; checked.topo.len()];
        for (c, path) in by {
            let (Some(ci), Some(mi)) = (
                checked.topo.get(c),
                w.manifests.iter().position(|m| &m.path == path),
            ) else {
                return Err(format!(
                    "workload {name:?} on cluster {c} picks {path}, which the slice does not hold"
                ));
            };
            v[ci] = Some(mi as u32);
        }
        checked.facts[wi].variant = Some(std::sync::Arc::new(v));
    }
    Ok(())
}

/// Loads and validates one slice of `h` (the fleet at `revision`).
fn open_slice(
    h: &Handoff,
    files: &BTreeMap<String, String>,
    picks: &Picks,
    revision: &str,
    extra: &mut dyn FnMut(&mut crate::core::model::Fleet) -> Diagnostics,
) -> Result<(Checked, usize), Diagnostics> {
    let files = files
        .iter()
        .map(|(p, t)| (p.clone(), t.clone().into_bytes()))
        .collect();
    let (mut fleet, mut diags) = crate::core::load::load_files(h.fleet.clone(), files);
    fleet.slice = true;
    fleet.capabilities_asked = h.capabilities.is_some();
    diags.extend(extra(&mut fleet));
    let (checked, more) = crate::core::validate::check(fleet);
    diags.extend(more);
    let mut checked = match checked.filter(|_| !diags.has_errors()) {
        Some(c) => c,
        None => return Err(diags),
    };
    apply_picks(&mut checked, picks).map_err(|e| {
        let mut d = Diagnostics::default();
        d.push(
            Diagnostic::error(format!("the handoff's slice at revision {revision}: {e}"))
                .hint("the parent level cut a wrong slice; this is a bug in canopy"),
        );
        d
    })?;
    let Some(relay) = checked.topo.get(&h.relay) else {
        let mut d = Diagnostics::default();
        d.push(
            Diagnostic::error(format!(
                "the handoff's slice at revision {revision} does not hold the Cluster of relay {}",
                h.relay
            ))
            .hint("the parent level cut a wrong slice; this is a bug in canopy"),
        );
        return Err(d);
    };
    Ok((checked, relay))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::render::Rendered;
    use proptest::prelude::*;

    /// What a render gives one cluster, independent of workload indices.
    fn objects(r: &Renderer<'_>, c: usize) -> Vec<(String, String, String)> {
        r.render_cluster(c)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .into_iter()
            .map(|o: Rendered| {
                (
                    r.checked.fleet.workloads[o.workload].name().to_string(),
                    o.source,
                    serde_json::to_string(&o.value).unwrap(),
                )
            })
            .collect()
    }

    fn synth_fleet(clusters: usize, workloads: usize) -> (tempfile::TempDir, Checked) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fleet");
        crate::core::synth::generate(
            &root,
            crate::core::synth::Spec {
                clusters,
                workloads,
            },
        )
        .unwrap();
        let (fleet, d) = crate::core::load::load(&root, Some("synth")).unwrap();
        assert!(!d.has_errors(), "{d:?}");
        let (checked, d) = crate::core::validate::check(fleet);
        (dir, checked.unwrap_or_else(|| panic!("{d:?}")))
    }

    /// Marks `relays` (by index) in a copy of `checked`'s fleet, in the
    /// model and in the documents a handoff carries.
    fn with_relays(checked: &Checked, relays: &[usize]) -> Checked {
        let mut fleet = checked.fleet.clone();
        for &c in relays {
            let cl = std::sync::Arc::make_mut(&mut fleet.clusters[c]);
            cl.spec.relay = Some(Default::default());
            let mut src = (*cl.source).clone();
            src.doc.value["spec"]["relay"] = serde_json::json!({});
            cl.source = std::sync::Arc::new(src);
        }
        crate::core::validate::check(fleet).0.unwrap()
    }

    #[test]
    fn each_cluster_is_reconciled_by_its_nearest_relay_ancestor() {
        let (_d, checked) = synth_fleet(40, 2);
        let topo = &checked.topo;
        let r1 = topo.children(topo.roots()[0])[0];
        let r2 = topo.children(r1)[0];
        let checked = with_relays(&checked, &[r1, r2]);
        let by = reconcilers(&checked);
        let topo = &checked.topo;
        for (c, got) in by.iter().enumerate() {
            let want = if topo.in_subtree(c, r2) && c != r2 {
                Some(r2)
            } else if topo.in_subtree(c, r1) && c != r1 {
                Some(r1)
            } else {
                None
            };
            assert_eq!(*got, want, "{}", topo.name(c));
        }
        // Each cluster is reconciled by exactly one level.
        let root = reconciled_by(&checked, None).unwrap();
        let one = reconciled_by(&checked, Some(r1)).unwrap();
        let two = reconciled_by(&checked, Some(r2)).unwrap();
        assert!(root.contains(&r1) && one.contains(&r2) && !one.contains(&r1));
        assert_eq!(root.len() + one.len() + two.len(), topo.len());
        assert!(root.is_disjoint(&one) && one.is_disjoint(&two) && root.is_disjoint(&two));
        let (_d, plain) = synth_fleet(10, 1);
        assert_eq!(reconciled_by(&plain, None), None, "no relays: everyone");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Failover inside a relay's subtree, rendered: with clusters below
        /// the relay down, the relay's render from its handoff (the shares
        /// the full run gave) equals the full run's failover render below
        /// it, and no cluster outside its subtree renders differently from
        /// a run without the failures.
        #[test]
        fn a_relay_fails_over_inside_its_subtree_as_the_root_would(
            clusters in 12usize..80,
            workloads in 1usize..8,
            pick in any::<prop::sample::Index>(),
            seed in any::<u64>(),
        ) {
            let (_d, plain) = synth_fleet(clusters, workloads);
            let inner: Vec<usize> = (0..plain.topo.len())
                .filter(|&c| plain.topo.children(c).len() > 1)
                .collect();
            prop_assume!(!inner.is_empty());
            let relay = inner[pick.index(inner.len())];
            let checked = with_relays(&plain, &[relay]);
            let topo = &checked.topo;
            let down: Vec<bool> = (0..topo.len())
                .map(|c| c != relay && topo.in_subtree(c, relay) && (seed >> (c % 64)) & 1 == 1)
                .collect();
            let before = Renderer::new(&checked);
            // Every Divided workload keeps a healthy weighted cluster below
            // the relay, or has none there: else the level above re-divides.
            for p in before.placements.iter().flatten() {
                let weighted: Vec<usize> = topo
                    .subtree(relay)
                    .iter()
                    .copied()
                    .filter(|&c| p.chosen[c] && p.weight[c] > 0)
                    .collect();
                prop_assume!(weighted.is_empty() || weighted.iter().any(|&c| !down[c]));
            }
            let failed = vec![down.clone(); checked.fleet.workloads.len()];
            let full = Renderer::with_failover(&checked, &failed);
            prop_assert!(!full.diagnostics.has_errors(), "{:?}", full.diagnostics);
            let h = handoff(&full, relay, "rev", &Above::default(), &Bases::new());
            let o = open(&h).unwrap_or_else(|d| panic!("{d:?}"));
            let local_down: Vec<bool> = (0..o.checked.topo.len())
                .map(|l| down[topo.get(o.checked.topo.name(l)).unwrap()])
                .collect();
            let mine = Renderer::for_subtree(
                &o.checked,
                o.relay,
                &h.shares,
                &vec![local_down; o.checked.fleet.workloads.len()],
            );
            prop_assert!(!mine.diagnostics.has_errors(), "{:?}", mine.diagnostics);
            for c in 0..topo.len() {
                let name = topo.name(c);
                if c == relay {
                    // The relay is a party of its own subtree's division
                    // (it may take a failed child's replicas); the level
                    // above reconciles it.
                    continue;
                }
                if topo.in_subtree(c, relay) {
                    let local = o.checked.topo.get(name).unwrap();
                    prop_assert_eq!(objects(&mine, local), objects(&full, c), "{} under {}", name, topo.name(relay));
                } else {
                    prop_assert_eq!(objects(&full, c), objects(&before, c), "{} outside {} moved", name, topo.name(relay));
                }
            }
        }
    }

    /// A rollback handed down through nested relays: each level cuts the
    /// old fleet's slice from its own base (the root from the whole old
    /// fleet, a relay from the base slice it was handed), holding only the
    /// rolled-back workload, and the innermost relay renders that workload
    /// on a leaf exactly as the root renders the old fleet there.
    #[test]
    fn a_rollback_handed_through_nested_relays_renders_the_old_fleet() {
        let (_d, plain) = synth_fleet(60, 4);
        let topo = &plain.topo;
        let r1 = *topo
            .children(topo.roots()[0])
            .iter()
            .find(|&&c| {
                topo.children(c)
                    .iter()
                    .any(|&k| !topo.children(k).is_empty())
            })
            .expect("a child with grandchildren");
        let r2 = *topo
            .children(r1)
            .iter()
            .find(|&&k| !topo.children(k).is_empty())
            .unwrap();
        let new = with_relays(&plain, &[r1, r2]);
        // The old fleet: as the new, without the relay marks.
        let old = Renderer::new(&plain);
        let full = Renderer::new(&new);
        let leaf = topo.subtree(r2).iter().copied().find(|&c| c != r2).unwrap();
        let (wi, w) = plain
            .fleet
            .workloads
            .iter()
            .enumerate()
            .find(|(wi, _)| {
                old.placements[*wi]
                    .as_ref()
                    .is_some_and(|p| p.lands_on(leaf))
            })
            .expect("a workload on the leaf");
        let w = w.name().to_string();
        let above = Above {
            back: BTreeMap::from([(
                w.clone(),
                Back {
                    revision: "v0".into(),
                    commit: Some("c0".into()),
                    clusters: [topo.name(leaf).to_string()].into(),
                },
            )]),
            ..Above::default()
        };
        let bases = Bases::from([("v0".to_string(), Renderer::new(&plain))]);
        let h1 = handoff(&full, r1, "v1", &above, &bases);
        // The old slice holds the rolled-back workload alone.
        let mut old_workloads = Vec::new();
        for text in h1.bases["v0"].files.values() {
            for doc in text.split("\n---\n") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(doc.trim()) {
                    if v["kind"] == "Workload" {
                        old_workloads.push(v["metadata"]["name"].as_str().unwrap().to_string());
                    }
                }
            }
        }
        assert_eq!(old_workloads, vec![w.clone()]);
        let o1 = open(&h1).unwrap_or_else(|d| panic!("{d:?}"));
        let base1 = &o1.bases["v0"];
        let mine1 = Renderer::for_subtree(&o1.checked, o1.relay, &h1.shares, &[]);
        let bases1 = Bases::from([("v0".to_string(), base1.renderer(&[]))]);
        let r2_local = o1.checked.topo.get(topo.name(r2)).unwrap();
        let h2 = handoff(&mine1, r2_local, "v1", &h1.above, &bases1);
        assert_eq!(h2.above.back[&w].clusters.len(), 1);
        let o2 = open(&h2).unwrap_or_else(|d| panic!("{d:?}"));
        let base2 = &o2.bases["v0"];
        let br = base2.renderer(&[]);
        let got: Vec<_> = objects(&br, br.checked.topo.get(topo.name(leaf)).unwrap())
            .into_iter()
            .filter(|(name, _, _)| *name == w)
            .collect();
        let want: Vec<_> = objects(&old, leaf)
            .into_iter()
            .filter(|(name, _, _)| *name == w)
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "workload {w} (#{wi}) on {}", topo.name(leaf));
        // A handoff without the rollback keeps its digest shape: no bases.
        let plain_h = handoff(&full, r1, "v1", &Above::default(), &bases);
        assert!(plain_h.bases.is_empty());
    }

    #[test]
    fn a_damaged_handoff_is_refused() {
        let (_d, checked) = synth_fleet(30, 3);
        let r = Renderer::new(&checked);
        let relay = checked.topo.children(checked.topo.roots()[0])[0];
        let mut h = handoff(&r, relay, "rev1", &Above::default(), &Bases::new());
        assert!(open(&h).is_ok());
        let (path, text) = h
            .files
            .iter()
            .next()
            .map(|(p, t)| (p.clone(), t.clone()))
            .unwrap();
        h.files.insert(path, text[..text.len() / 2].to_string());
        let err = format!("{:?}", open(&h).err().expect("refused"));
        assert!(err.contains("does not match its digest"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// Equivalence: for random synthetic fleets and random relays
        /// (nested too), a relay's render of each cluster it reconciles,
        /// from its handoff alone (the handoff of a nested relay cut from
        /// its outer relay's slice), equals the full fleet's render.
        #[test]
        fn a_relay_renders_what_the_root_would(
            clusters in 8usize..80,
            workloads in 1usize..8,
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..4),
        ) {
            let (_d, plain) = synth_fleet(clusters, workloads);
            // Relays among the clusters with children (a leaf relay has
            // nothing to reconcile).
            let inner: Vec<usize> = (0..plain.topo.len())
                .filter(|&c| !plain.topo.children(c).is_empty())
                .collect();
            let relays: Vec<usize> = picks.iter().map(|i| inner[i.index(inner.len())]).collect();
            let mut compared = 0;
            let checked = with_relays(&plain, &relays);
            let full = Renderer::new(&checked);
            prop_assert!(!full.diagnostics.has_errors(), "{:?}", full.diagnostics);
            let by = reconcilers(&checked);
            for &relay in &relays {
                // The relay's handoff: from the root, or through each relay
                // above it, level by level.
                let mut chain = vec![relay];
                while let Some(up) = by[*chain.last().unwrap()] {
                    chain.push(up);
                }
                chain.reverse();
                let mut opened: Option<(Opened, Handoff)> = None;
                for &level in &chain {
                    let name = checked.topo.name(level);
                    let h = match &opened {
                        None => handoff(&full, level, "rev", &Above::default(), &Bases::new()),
                        Some((o, oh)) => {
                            let up = Renderer::for_subtree(&o.checked, o.relay, &oh.shares, &[]);
                            handoff(&up, o.checked.topo.get(name).unwrap(), "rev", &Above::default(), &Bases::new())
                        }
                    };
                    let o = open(&h).unwrap_or_else(|d| panic!("{d:?}"));
                    opened = Some((o, h));
                }
                let (o, h) = opened.unwrap();
                let mine = Renderer::for_subtree(&o.checked, o.relay, &h.shares, &[]);
                // A relay's slice holds fewer clusters than the fleet, unless
                // it is under a root's only child.
                prop_assert!(o.checked.topo.len() <= checked.topo.len());
                prop_assert!(!mine.diagnostics.has_errors(), "{:?}", mine.diagnostics);
                for &c in checked.topo.subtree(relay) {
                    if c == relay {
                        continue;
                    }
                    let name = checked.topo.name(c);
                    let local = o.checked.topo.get(name).expect("the slice holds the subtree");
                    let want = objects(&full, c);
                    compared += want.len();
                    prop_assert_eq!(objects(&mine, local), want, "cluster {} under relay {}", name, checked.topo.name(relay));
                }
            }
            prop_assert!(compared > 0, "the relays reconcile some objects");
        }
    }
}
