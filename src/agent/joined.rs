//! `canopy agent joined`: the agent of a cluster that joined in pull mode.
//!
//! Its parent's reconciler keeps what it should run in its hub (the
//! `desired` Secret of its member namespace, [`crate::backend::kube::pulled`]);
//! this agent, running in or beside the member with the member's own
//! kubeconfig, reads it with the member credentials `canopy join` stored,
//! applies it to the member as any apply does (waves, server-side apply,
//! prune of what canopy owns here and no longer runs), and says what it
//! applied in the hub (the `applied` ConfigMap). It renews its member
//! credentials before they expire. When the hub does not answer, the
//! member keeps running what it has.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::backend::kube::join::{self as hub, Api, Membership};
use crate::backend::kube::{connect, KubeFleet, KubeOptions};
use crate::backend::local::object_id;
use crate::backend::{ApplyMeta, TypeRef};
use crate::core::diff::Change;
use crate::core::kinds::apply_order;
use crate::core::model::{label, Connection, ObjectKey, LABEL_CLUSTER, LABEL_FLEET};

/// How a member's agent runs.
pub struct Config {
    /// The member's own cluster.
    pub own: Connection,
    pub base: PathBuf,
    pub kube: KubeOptions,
    pub timeout: Duration,
    /// Renew the member credentials that expire within this.
    pub renew_before: Duration,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub cluster: String,
    /// The revision the parent applied to the store.
    pub revision: String,
    pub objects: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Nothing new in the hub since the last round.
    pub unchanged: bool,
}

/// A member's agent, kept across rounds.
pub struct Agent {
    cfg: Config,
    runtime: tokio::runtime::Runtime,
    own: Option<Api>,
    /// The Kubernetes side for the member's own cluster, by fleet name.
    kube: Option<KubeFleet>,
    /// The store's version last applied.
    seen: Option<String>,
}

impl Agent {
    pub fn new(cfg: Config) -> std::io::Result<Agent> {
        Ok(Agent {
            cfg,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            own: None,
            kube: None,
            seen: None,
        })
    }

    fn own(&mut self) -> Result<Api, String> {
        if let Some(a) = &self.own {
            return Ok(a.clone());
        }
        let here = self.cfg.base.clone();
        let c = self
            .runtime
            .block_on(connect::connect(
                "this cluster",
                &self.cfg.own,
                &here,
                self.cfg.timeout,
            ))
            .map_err(|e| e.to_string())?;
        let api = Api {
            client: c.client,
            cluster: "this cluster".into(),
        };
        self.own = Some(api.clone());
        Ok(api)
    }

    /// One round: renew, read the store, apply what changed (all of it
    /// when `force`), report. `Err` when the round could not apply; what
    /// the member runs is then left as it is.
    pub fn round(&mut self, force: bool) -> Result<Applied, String> {
        let own = self.own()?;
        let timeout = self.cfg.timeout;
        let mut m: Membership = self
            .runtime
            .block_on(hub::membership(&own))
            .map_err(|e| e.to_string())?
            .ok_or("this cluster has not joined a fleet (no canopy-system/canopy-membership Secret): run `canopy join --mode pull` first")?;
        if m.expires_at
            .is_some_and(|e| e <= hub::now() + self.cfg.renew_before.as_secs())
        {
            let secs = 3600;
            self.runtime
                .block_on(hub::renew_membership(&own, &mut m, secs, timeout))
                .map_err(|e| e.to_string())?;
            tracing::info!("renewed this member's credentials for its hub");
        }
        let hub_api = {
            // The client spawns its connection pool on the runtime.
            let _in = self.runtime.enter();
            hub::connect_with(&m.hub, "the parent's hub", timeout).map_err(|e| e.to_string())?
        };
        let stored = self
            .runtime
            .block_on(hub::pulled(&hub_api, &m))
            .map_err(|e| e.to_string())?;
        let Some((version, desired)) = stored else {
            return Ok(Applied {
                cluster: m.name,
                unchanged: true,
                ..Applied::default()
            });
        };
        if !force && self.seen.as_deref() == Some(version.as_str()) {
            return Ok(Applied {
                cluster: m.name,
                revision: desired.applied.map(|a| a.revision).unwrap_or_default(),
                objects: desired.objects.len(),
                unchanged: true,
                ..Applied::default()
            });
        }
        let applied = self.apply(&m, &desired);
        let report = match &applied {
            Ok(a) => json!({ "ok": true, "applied": a, "at": hub::now() }),
            Err(e) => json!({ "ok": false, "error": e, "at": hub::now() }),
        };
        if let Err(e) = self
            .runtime
            .block_on(hub::report_applied(&hub_api, &m, &report))
        {
            tracing::warn!(error = %e, "cannot report what this cluster applied");
        }
        let a = applied?;
        self.seen = Some(version);
        Ok(a)
    }

    /// Applies the store to the member: creates and updates what it
    /// holds, deletes what canopy applied here before and it no longer
    /// holds.
    fn apply(
        &mut self,
        m: &Membership,
        desired: &crate::backend::kube::pulled::Desired,
    ) -> Result<Applied, String> {
        let Some(fleet) = desired
            .objects
            .values()
            .find_map(|o| label(o, LABEL_FLEET))
            .map(str::to_string)
        else {
            return Ok(Applied {
                cluster: m.name.clone(),
                ..Applied::default()
            });
        };
        if self.kube.as_ref().is_none_or(|k| k.fleet() != fleet) {
            self.kube = Some(
                KubeFleet::new(&fleet, self.cfg.base.clone(), self.cfg.kube.clone())
                    .map_err(|e| e.to_string())?,
            );
        }
        let kube = self.kube.as_ref().expect("made above");
        let backend = kube.cluster(&m.name, &self.cfg.own);
        let mut kinds: Vec<TypeRef> = desired.objects.values().filter_map(TypeRef::of).collect();
        kinds.sort();
        kinds.dedup();
        let live: BTreeMap<String, Value> = backend
            .list_owned(&fleet, &kinds)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|o| label(o, LABEL_CLUSTER) == Some(m.name.as_str()))
            .filter_map(|o| Some((object_id(&ObjectKey::of(&o)?), o)))
            .collect();
        let mut changes = Vec::new();
        let mut out = Applied {
            cluster: m.name.clone(),
            revision: desired
                .applied
                .as_ref()
                .map(|a| a.revision.clone())
                .unwrap_or_default(),
            objects: desired.objects.len(),
            ..Applied::default()
        };
        for (id, obj) in &desired.objects {
            let Some(key) = ObjectKey::of(obj) else {
                continue;
            };
            match live.get(id) {
                None => {
                    out.created += 1;
                    changes.push(Change::Create {
                        key,
                        desired: obj.clone(),
                    });
                }
                Some(l) => {
                    out.updated += 1;
                    changes.push(Change::Update {
                        key,
                        live: l.clone(),
                        desired: obj.clone(),
                        merged: None,
                        replace: Vec::new(),
                    });
                }
            }
        }
        // In apply order (Namespaces and CRDs first); deletions after, in
        // reverse, as every apply writes.
        changes.sort_by(|a, b| apply_order(a.key()).cmp(&apply_order(b.key())));
        let mut deletes = Vec::new();
        for (id, l) in &live {
            if !desired.objects.contains_key(id) && !crate::core::diff::prune_disabled(l) {
                if let Some(key) = ObjectKey::of(l) {
                    out.deleted += 1;
                    deletes.push(Change::Delete {
                        key,
                        live: l.clone(),
                    });
                }
            }
        }
        deletes.sort_by(|a, b| apply_order(b.key()).cmp(&apply_order(a.key())));
        changes.extend(deletes);
        let meta = desired
            .applied
            .clone()
            .unwrap_or_else(|| ApplyMeta::new("pulled", std::time::SystemTime::now()));
        backend
            .write(&changes, &meta)
            .map_err(|f| f.error.to_string())?;
        Ok(out)
    }
}
