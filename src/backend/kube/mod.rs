//! The Kubernetes backend: server-side apply through kube-rs.
//!
//! One [`KubeFleet`] owns a Tokio runtime and a client per cluster for as
//! long as its session lives (a `watch` keeps it across rounds); apply's
//! worker threads call in and block on their cluster's requests, so the rest
//! of canopy stays synchronous. Here: the fleet, each cluster's requests and
//! the `ClusterBackend` over them; beside it `discovery.rs` (kind → resource,
//! cached), `errors.rs` (failures as typed `BackendError`s, the one conflict
//! parser), `connect.rs`, `noop.rs`, `health.rs`, `retry.rs`,
//! `inventory.rs`; the write waves are `core::kinds::write_waves`, next to
//! apply order. Per cluster:
//! - **read**: the inventory, then one paginated list per kind, by the
//!   ownership label (`canopy.dev/fleet`);
//! - **preview**: an object that is provably unchanged costs nothing (see
//!   [`noop`]); any other existing object gets a server-side dry-run apply,
//!   so the diff compares what the server *would* hold with what it holds,
//!   and defaulted fields or admission changes never show as drift;
//! - **write**: the inventory first, then waves in apply order (Namespaces,
//!   CRDs — waited on until `Established` — then the rest; deletions last,
//!   in reverse), each wave's requests in parallel up to a bound, every
//!   request rate-limited and retried on 429/5xx/transport failures only.

mod capabilities;
mod capacity;
pub mod connect;
mod discovery;
mod errors;
pub mod health;
pub mod inventory;
pub mod join;
pub mod noop;
pub mod pin;
pub mod pulled;
pub mod retry;
pub mod seal;
mod takeover;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kube::core::params::{
    DeleteParams, GetParams, ListParams, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy, ValidationDirective,
};
use kube::core::Request;
use serde_json::Value;

use super::{ApplyMeta, BackendError, ClusterBackend, Planned, TypeRef, WriteFailure};
use crate::core::diff::{Change, ServerView};
use crate::core::kinds;
use crate::core::model::{Connection, ObjectKey, LABEL_FLEET};
use discovery::{Resource, Served};
use errors::{field_conflicts, only_updates};
use health::Health;
use inventory::Inventory;

/// The field manager of every apply canopy makes.
pub const FIELD_MANAGER: &str = "canopy";

/// How long an object deleted to be replaced may take to go.
const REPLACE_WAIT: Duration = Duration::from_secs(60);

/// How canopy talks to Kubernetes clusters; the CLI's flags.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Take over fields another field manager owns.
    pub force_conflicts: bool,
    /// How long to wait for a CRD to become Established before applying
    /// its custom resources.
    pub crd_timeout: Duration,
    /// Requests in flight per cluster.
    pub requests: usize,
    /// Requests per second per cluster, and the burst above it.
    pub qps: u32,
    pub burst: u32,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Raised when this process may no longer write (a relay agent whose
    /// Lease could not be renewed in time): every write refuses then.
    pub fence: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            force_conflicts: false,
            crd_timeout: Duration::from_secs(60),
            requests: 16,
            qps: 500,
            burst: 1000,
            request_timeout: Duration::from_secs(30),
            fence: None,
        }
    }
}

/// The Kubernetes side of a run: one runtime, one client per cluster,
/// made when a cluster is first used.
pub struct KubeFleet {
    runtime: tokio::runtime::Runtime,
    fleet: String,
    fleet_dir: PathBuf,
    opts: KubeOptions,
    /// Each cluster's backend, with the connection it was made from.
    clusters: Mutex<BTreeMap<String, (Connection, Connected)>>,
}

impl KubeFleet {
    pub fn new(fleet: &str, fleet_dir: PathBuf, opts: KubeOptions) -> std::io::Result<KubeFleet> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("canopy-kube")
            .enable_all()
            .build()?;
        Ok(KubeFleet {
            runtime,
            fleet: fleet.to_string(),
            fleet_dir,
            opts,
            clusters: Mutex::new(BTreeMap::new()),
        })
    }

    /// The backend of a cluster with `spec.connection`. A kubeconfig that
    /// cannot be used gives a backend whose every call fails with why.
    pub fn cluster(&self, name: &str, conn: &Connection) -> Box<dyn ClusterBackend + '_> {
        let mut cache = self.clusters.lock().expect("cluster cache");
        let (_, entry) = cache.entry(name.to_string()).or_insert_with(|| {
            // A pull-mode member is reached through its hub's store.
            let (reach, via) = match conn.pulled_via.as_deref() {
                Some(hub) => (hub, Some(conn.clone())),
                None => (conn, None),
            };
            let hub_name = format!("{name} (its hub)");
            let connected = self.runtime.block_on(connect::connect(
                if via.is_some() { &hub_name } else { name },
                reach,
                &self.fleet_dir,
                self.opts.request_timeout,
            ));
            let connected = match (connected, via) {
                (Ok(c), Some(_)) => Ok(Made::Pulled(Arc::new(pulled::Pulled {
                    name: name.to_string(),
                    hub: join::Api {
                        client: c.client,
                        cluster: c.context,
                    },
                    handle: self.runtime.handle().clone(),
                }))),
                (connected, _) => connected.map(|c| {
                    Made::Kube(Arc::new(KubeCluster::new(
                        name,
                        &self.fleet,
                        c,
                        self.runtime.handle().clone(),
                        self.opts.clone(),
                    )))
                }),
            };
            let connected = match connected {
                Ok(made) => Ok(made),
                Err(BackendError::Connect { detail, help, .. }) => Err(Unusable {
                    cluster: name.to_string(),
                    detail,
                    help,
                }),
                Err(e) => Err(Unusable {
                    cluster: name.to_string(),
                    detail: e.to_string(),
                    help: "check the cluster's spec.connection".into(),
                }),
            };
            (conn.clone(), connected)
        });
        match entry {
            Ok(Made::Kube(c)) => Box::new(Arc::clone(c)),
            Ok(Made::Pulled(p)) => Box::new(Arc::clone(p)),
            Err(u) => Box::new(u.clone()),
        }
    }

    /// The fleet name every request of this runtime carries.
    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    /// Forgets the clusters that are not in `connections` with the same
    /// connection, and those whose kubeconfig could not be used (it may
    /// have been fixed since): they are connected afresh when next asked
    /// for. The others keep their client and discovery cache.
    pub fn keep_only(&self, connections: &BTreeMap<String, Connection>) {
        self.clusters
            .lock()
            .expect("cluster cache")
            .retain(|name, (conn, c)| c.is_ok() && connections.get(name) == Some(conn));
    }
}

/// A cluster's backend, or why its kubeconfig cannot be used.
type Connected = Result<Made, Unusable>;

/// A cluster's backend: its API server, or (a member that joined in pull
/// mode) its store in its hub.
enum Made {
    Kube(Arc<KubeCluster>),
    Pulled(Arc<pulled::Pulled>),
}

/// A cluster whose kubeconfig or context cannot be used.
#[derive(Clone)]
struct Unusable {
    cluster: String,
    detail: String,
    help: String,
}

impl Unusable {
    fn error(&self) -> BackendError {
        BackendError::Connect {
            cluster: self.cluster.clone(),
            detail: self.detail.clone(),
            help: self.help.clone(),
        }
    }
}

impl ClusterBackend for Unusable {
    fn reachable(&self) -> Result<(), BackendError> {
        Err(self.error())
    }
    fn list_owned(&self, _: &str, _: &[TypeRef]) -> Result<Vec<Value>, BackendError> {
        Err(self.error())
    }
    fn write(&self, _: &[Change], _: &ApplyMeta) -> Result<(), WriteFailure> {
        Err(WriteFailure {
            error: self.error(),
            changed: Vec::new(),
        })
    }
    fn last_applied(&self) -> Result<Option<ApplyMeta>, BackendError> {
        Err(self.error())
    }
    fn get(&self, _: &TypeRef, _: &ObjectKey) -> Result<Option<Value>, BackendError> {
        Err(self.error())
    }
    fn set_status(&self, _: &TypeRef, _: &ObjectKey, _: &Value) -> Result<(), BackendError> {
        Err(self.error())
    }
    fn put(&self, _: &Value) -> Result<Option<Value>, BackendError> {
        Err(self.error())
    }
}

/// The tenant (and its user) that writes `obj`, by its workload label.
fn tenant_of<'m>(meta: &'m ApplyMeta, obj: &Value) -> Option<(&'m str, &'m str)> {
    let workload = obj
        .pointer("/metadata/labels")
        .and_then(|l| l.get(crate::core::model::LABEL_WORKLOAD))
        .and_then(Value::as_str)?;
    meta.impersonate.user_for(workload)
}

/// A failure of a write done as a tenant's ServiceAccount, saying so.
fn as_tenant(e: BackendError, tenant: &str, user: &str) -> BackendError {
    match e {
        BackendError::Api(mut f) => {
            f.detail = format!("as tenant {tenant:?} ({user}): {}", f.detail);
            if f.code == Some(403) {
                f.help = Some(format!(
                    "the cluster's RBAC does not let tenant {tenant:?}'s ServiceAccount do this: grant it in the cluster, or take the object out of the tenant's workload"
                ));
            }
            BackendError::Api(f)
        }
        other => other,
    }
}

tokio::task_local! {
    /// The user a change is written as (a tenant's ServiceAccount), for
    /// every request [`KubeCluster::send`] makes within it.
    static AS_USER: Option<String>;
}

pub struct KubeCluster {
    name: String,
    fleet: String,
    context: String,
    client: kube::Client,
    handle: tokio::runtime::Handle,
    opts: KubeOptions,
    limiter: DefaultDirectRateLimiter,
    retry: retry::Policy,
    /// Discovery: apiVersion → kinds, kept while the backend lives; an
    /// unknown kind is asked again, an applied CRD clears it.
    discovery: Mutex<HashMap<String, Served>>,
    /// The inventory as last read or written.
    inventory: Mutex<Option<Inventory>>,
}

impl KubeCluster {
    fn new(
        name: &str,
        fleet: &str,
        c: connect::Connected,
        handle: tokio::runtime::Handle,
        opts: KubeOptions,
    ) -> KubeCluster {
        let qps = NonZeroU32::new(opts.qps.max(1)).expect("at least one");
        let burst = NonZeroU32::new(opts.burst.max(opts.qps).max(1)).expect("at least one");
        KubeCluster {
            name: name.to_string(),
            fleet: fleet.to_string(),
            context: c.context,
            client: c.client,
            handle,
            limiter: RateLimiter::direct(Quota::per_second(qps).allow_burst(burst)),
            retry: retry::Policy::default(),
            discovery: Mutex::new(HashMap::new()),
            inventory: Mutex::new(None),
            opts,
        }
    }

    /// Sends a request (built anew for each try), rate-limited and retried
    /// by the retry policy.
    async fn send(
        &self,
        build: impl Fn() -> Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<Value, kube::Error> {
        let mut attempt = 1;
        loop {
            self.limiter.until_ready().await;
            let mut req = build().map_err(kube::Error::BuildRequest)?;
            if let Ok(Some(user)) = AS_USER.try_with(Clone::clone) {
                let value = http::HeaderValue::from_str(&user).map_err(|e| {
                    kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e.into()))
                })?;
                req.headers_mut().insert("Impersonate-User", value);
            }
            match self.client.request::<Value>(req).await {
                Ok(v) => return Ok(v),
                Err(e) => match self.retry.delay(retry::Failure::of(&e), attempt) {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        attempt += 1;
                    }
                    None => return Err(e),
                },
            }
        }
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.handle.block_on(f)
    }

    async fn read_inventory(&self) -> Result<Inventory, BackendError> {
        let path = format!("/api/v1/namespaces/{}/configmaps", inventory::NAMESPACE);
        let name = inventory::name(&self.fleet);
        let inv = match self
            .send(|| Request::new(&path).get(&name, &GetParams::default()))
            .await
        {
            Ok(cm) => Inventory::from_configmap(&cm),
            Err(kube::Error::Api(s)) if s.code == 404 => Inventory::default(),
            Err(e) => return Err(self.error(None, e)),
        };
        *self.inventory.lock().expect("inventory") = Some(inv.clone());
        Ok(inv)
    }

    async fn write_inventory(&self, inv: &Inventory) -> Result<(), BackendError> {
        self.may_write()?;
        let ns = inventory::namespace_object();
        let cm = inv.to_configmap(&self.fleet);
        for obj in [ns, cm] {
            let r = Resource {
                api_version: "v1".into(),
                plural: if obj["kind"] == "Namespace" {
                    "namespaces".into()
                } else {
                    "configmaps".into()
                },
                namespaced: obj["kind"] != "Namespace",
            };
            self.apply(&r, &obj, false, true)
                .await
                .map_err(|error| self.error(ObjectKey::of(&obj).as_ref(), error))?;
        }
        *self.inventory.lock().expect("inventory") = Some(inv.clone());
        Ok(())
    }

    /// Every owned object of one kind, page by page.
    async fn list(&self, r: &Resource, kind: &str) -> Result<Vec<Value>, kube::Error> {
        let path = r.path(None);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let lp = ListParams {
                label_selector: Some(format!("{LABEL_FLEET}={}", self.fleet)),
                limit: Some(500),
                continue_token: token.clone(),
                ..ListParams::default()
            };
            let page = self.send(|| Request::new(&path).list(&lp)).await?;
            for mut item in page["items"].as_array().cloned().unwrap_or_default() {
                // List items carry no apiVersion or kind of their own.
                item["apiVersion"] = Value::String(r.api_version.clone());
                item["kind"] = Value::String(kind.to_string());
                out.push(item);
            }
            token = page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// A server-side apply, or its dry run.
    /// An error when this process may no longer write ([`KubeOptions::fence`]).
    fn may_write(&self) -> Result<(), BackendError> {
        match &self.opts.fence {
            Some(f) if f.load(std::sync::atomic::Ordering::SeqCst) => Err(BackendError::Fenced {
                cluster: self.name.clone(),
            }),
            _ => Ok(()),
        }
    }

    async fn apply(
        &self,
        r: &Resource,
        obj: &Value,
        dry_run: bool,
        force: bool,
    ) -> Result<Value, kube::Error> {
        let (path, name) = r.locate(obj);
        let pp = PatchParams {
            dry_run,
            force,
            field_manager: Some(FIELD_MANAGER.to_string()),
            field_validation: Some(ValidationDirective::Strict),
        };
        self.send(|| Request::new(&path).patch(name, &pp, &Patch::Apply(obj)))
            .await
    }

    /// Deletes one object if it is still the one listed (same uid);
    /// `false` when it was already gone.
    async fn delete(&self, r: &Resource, live: &Value) -> Result<bool, kube::Error> {
        let (path, name) = r.locate(live);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: live
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(|uid| Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
            ..DeleteParams::default()
        };
        match self.send(|| Request::new(&path).delete(name, &dp)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces `live` by `desired` when the server refuses to change an
    /// immutable field of it in place (the object asked for it,
    /// [`crate::core::model::replace_on_immutable`]): deletes it if it is
    /// still the one read (same uid), waits until its name is free, and
    /// applies `desired`, which creates it.
    ///
    /// Deleted in the background, as `kubectl delete` does: the object goes
    /// at once and the cluster's garbage collector removes what it ran (a
    /// Job's Pods, a Deployment's ReplicaSets) right after. A foreground
    /// deletion would hold the name until every Pod has terminated, so the
    /// new object would wait out the old one's grace periods. An object
    /// with finalizers of its own is waited for up to [`REPLACE_WAIT`].
    async fn replace(
        &self,
        key: &ObjectKey,
        r: &Resource,
        desired: &Value,
        live: &Value,
    ) -> Result<(), BackendError> {
        let fail = |error| self.error(Some(key), error);
        self.delete(r, live).await.map_err(fail)?;
        let uid = live.pointer("/metadata/uid");
        let deadline = Instant::now() + REPLACE_WAIT;
        loop {
            match self.get(r, live).await {
                Err(kube::Error::Api(s)) if s.code == 404 => break,
                // Someone made it again meanwhile: the apply takes it over.
                Ok(v) if v.pointer("/metadata/uid") != uid => break,
                Ok(_) if Instant::now() >= deadline => {
                    return Err(self.api_error(
                        key,
                        504,
                        &format!(
                            "deleted to be replaced (an immutable field changed), and still there after {}: its finalizers have not run",
                            humantime::format_duration(REPLACE_WAIT)
                        ),
                        Some("look at the object's metadata.finalizers and the controller that owns them"),
                    ))
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => return Err(fail(e)),
            }
        }
        tracing::info!(cluster = %self.name, object = %key, "replaced: deleted and created again, since an immutable field changed");
        self.apply(r, desired, false, self.opts.force_conflicts)
            .await
            .map(|_| ())
            .map_err(fail)
    }

    async fn get(&self, r: &Resource, obj: &Value) -> Result<Value, kube::Error> {
        let (path, name) = r.locate(obj);
        let mut v = self
            .send(|| Request::new(&path).get(name, &GetParams::default()))
            .await?;
        v["apiVersion"] = Value::String(r.api_version.clone());
        Ok(v)
    }

    /// One create, update or delete; `Ok(false)` when nothing was changed.
    /// [`Self::change`], as the tenant that owns the object's workload
    /// when it names a ServiceAccount (every request of the change carries
    /// `Impersonate-User`), so the cluster's RBAC decides; a refusal says
    /// as whom.
    async fn change_as(&self, ch: &Change, meta: &ApplyMeta) -> Result<bool, BackendError> {
        self.may_write()?;
        let obj = match ch {
            Change::Create { desired, .. } | Change::Update { desired, .. } => desired,
            Change::Delete { live, .. } => live,
        };
        let Some((tenant, user)) = tenant_of(meta, obj) else {
            return self.change(ch).await;
        };
        AS_USER
            .scope(Some(user.to_string()), self.change(ch))
            .await
            .map_err(|e| as_tenant(e, tenant, user))
    }

    /// Before a write, every object a tenant writes as its ServiceAccount
    /// is applied as it with a server-side dry run: one the cluster's RBAC
    /// refuses stops the write before any object of it is written. Other
    /// failures are left to the write itself (a kind whose CRD the same
    /// write creates, a conflict).
    async fn tenants_may(&self, changes: &[Change], meta: &ApplyMeta) -> Result<(), BackendError> {
        if meta.impersonate.0.is_empty() {
            return Ok(());
        }
        let theirs: Vec<(&ObjectKey, &Value, &str, &str)> = changes
            .iter()
            .filter_map(|ch| match ch {
                Change::Create { key, desired } | Change::Update { key, desired, .. } => {
                    tenant_of(meta, desired).map(|(t, u)| (key, desired, t, u))
                }
                Change::Delete { .. } => None,
            })
            .collect();
        let results: Vec<Result<(), BackendError>> = stream::iter(theirs.into_iter().map(
            |(key, desired, tenant, user)| async move {
                let Ok(r) = self.resource_of(key, desired).await else {
                    return Ok(());
                };
                let tried = AS_USER
                    .scope(
                        Some(user.to_string()),
                        self.apply(&r, desired, true, self.opts.force_conflicts),
                    )
                    .await;
                match tried {
                    Err(kube::Error::Api(s)) if s.code == 403 => Err(as_tenant(
                        self.error(Some(key), kube::Error::Api(s)),
                        tenant,
                        user,
                    )),
                    _ => Ok(()),
                }
            },
        ))
        .buffered(self.opts.requests.max(1))
        .collect()
        .await;
        results.into_iter().collect()
    }

    async fn change(&self, ch: &Change) -> Result<bool, BackendError> {
        let fail = |error| self.error(Some(ch.key()), error);
        match ch {
            Change::Update {
                key,
                desired,
                live,
                replace,
                ..
            } if !replace.is_empty() => {
                let r = self.resource_of(key, desired).await?;
                self.replace(key, &r, desired, live).await?;
                Ok(true)
            }
            Change::Create { key, desired } | Change::Update { key, desired, .. } => {
                let r = self.resource_of(key, desired).await?;
                if let Change::Update { live, .. } = ch {
                    self.take_over(&r, desired, live).await.map_err(fail)?;
                }
                match self
                    .apply(&r, desired, false, self.opts.force_conflicts)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        // Fields taken by an imperative edit (kubectl edit,
                        // scale, patch: operation Update) are drift, and
                        // canopy takes them back. Fields another *applier*
                        // owns are a real dispute: --force-conflicts.
                        let managers: BTreeSet<String> =
                            field_conflicts(&s).into_iter().map(|c| c.manager).collect();
                        let live = self.get(&r, desired).await.map_err(fail)?;
                        if !managers.is_empty() && managers.iter().all(|m| only_updates(&live, m)) {
                            self.apply(&r, desired, false, true).await.map_err(fail)?;
                            Ok(true)
                        } else {
                            Err(fail(kube::Error::Api(s)))
                        }
                    }
                    // An immutable field that changed after the preview
                    // (the object was edited meanwhile).
                    Err(e) => match (fail(e), ch) {
                        (BackendError::Immutable(_), Change::Update { key, live, .. })
                            if crate::core::model::replace_on_immutable(desired) =>
                        {
                            self.replace(key, &r, desired, live).await?;
                            Ok(true)
                        }
                        (e, _) => Err(e),
                    },
                }
            }
            Change::Delete { key, live } => {
                let r = self.resource_of(key, live).await?;
                self.delete(&r, live).await.map_err(fail)
            }
        }
    }

    /// Moves to canopy, before it applies `desired`, the fields of
    /// imperative edits in `live` that `desired` sets or whose items took
    /// the place of one it sends ([`takeover`]), so the apply puts back
    /// canopy's values and removes the replacing items; what the edits
    /// added beside canopy's fields stays theirs. The write names the
    /// resourceVersion it read: an object changed since is read again once.
    async fn take_over(
        &self,
        r: &Resource,
        desired: &Value,
        live: &Value,
    ) -> Result<(), kube::Error> {
        if !takeover::has_imperative(live) {
            return Ok(());
        }
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let api_version = desired
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or(&r.api_version);
        let mut live = live.clone();
        for attempt in 0..2 {
            let Some(fields) = takeover::takeover(&live, desired, FIELD_MANAGER, api_version, &now)
            else {
                return Ok(());
            };
            let body = serde_json::json!({"metadata": {
                "resourceVersion": live.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null),
                "managedFields": fields,
            }});
            let (path, name) = r.locate(desired);
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            match self
                .send(|| Request::new(&path).patch(name, &pp, &Patch::Merge(&body)))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 && attempt == 0 => {
                    live = self.get(r, desired).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits until each CRD is Established, then forgets discovery so that
    /// the kinds it defines are found.
    async fn established(&self, crds: &[&Value]) -> Result<(), BackendError> {
        let r = Resource {
            api_version: "apiextensions.k8s.io/v1".into(),
            plural: "customresourcedefinitions".into(),
            namespaced: false,
        };
        let wait = self.opts.crd_timeout;
        for crd in crds {
            let deadline = Instant::now() + wait;
            loop {
                let live = self
                    .get(&r, crd)
                    .await
                    .map_err(|error| self.error(ObjectKey::of(crd).as_ref(), error))?;
                match health::health(&live) {
                    Health::Healthy => break,
                    h if Instant::now() >= deadline => {
                        let key = ObjectKey::of(crd).expect("a rendered CRD has a key");
                        return Err(self.api_error(
                            &key,
                            504,
                            &format!(
                                "not Established after {}: {h:?}",
                                humantime::format_duration(wait)
                            ),
                            None,
                        ));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        self.discovery.lock().expect("discovery").clear();
        Ok(())
    }

    /// Polls the objects until all are healthy, one has failed, or
    /// `timeout` passes.
    async fn wait_healthy(
        &self,
        objects: &[&Value],
        timeout: Duration,
        rules: &crate::core::health_rules::HealthRules,
    ) -> Result<(), BackendError> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<(ObjectKey, &Value)> = objects
            .iter()
            .filter_map(|o| ObjectKey::of(o).map(|k| (k, *o)))
            .collect();
        loop {
            let checks: Vec<Health> = stream::iter(pending.iter().map(|(key, obj)| async move {
                let r = match self.resource_of(key, obj).await {
                    Ok(r) => r,
                    Err(e) => return Health::Failed(e.to_string()),
                };
                match self.get(&r, obj).await {
                    Ok(live) => health::judged(&live, rules),
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        Health::Progressing("not found".into())
                    }
                    Err(e) => Health::Progressing(e.to_string()),
                }
            }))
            .buffered(self.opts.requests.max(1))
            .collect()
            .await;
            let mut failed = Vec::new();
            let mut waiting = Vec::new();
            let mut still = Vec::new();
            for ((key, obj), h) in pending.into_iter().zip(checks) {
                match h {
                    Health::Healthy => {}
                    Health::Failed(m) => failed.push(format!("{key}: {m}")),
                    Health::Progressing(m) => {
                        waiting.push(format!("{key}: {m}"));
                        still.push((key, obj));
                    }
                }
            }
            if failed.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            if !failed.is_empty() || Instant::now() >= deadline {
                failed.extend(waiting);
                return Err(BackendError::Unhealthy {
                    cluster: self.name.clone(),
                    waited: humantime::format_duration(timeout).to_string(),
                    objects: failed.join("\n    "),
                });
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn write_all(&self, changes: &[Change], meta: &ApplyMeta) -> Result<(), WriteFailure> {
        let fail = |error, changed: &[ObjectKey]| WriteFailure {
            error,
            changed: changed.to_vec(),
        };
        let mut changed: Vec<ObjectKey> = Vec::new();
        // The inventory learns new kinds before any object of them exists.
        let known = self.inventory.lock().expect("inventory").clone();
        let mut inv = match known {
            Some(i) => i,
            None => self.read_inventory().await.map_err(|e| fail(e, &changed))?,
        };
        let written: BTreeSet<TypeRef> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Create { desired, .. } | Change::Update { desired, .. } => {
                    TypeRef::of(desired)
                }
                Change::Delete { .. } => None,
            })
            .collect();
        if !written.is_subset(&inv.kinds) {
            inv.kinds.extend(written);
            self.write_inventory(&inv)
                .await
                .map_err(|e| fail(e, &changed))?;
        }
        self.tenants_may(changes, meta)
            .await
            .map_err(|e| fail(e, &changed))?;
        let class = |c: &Change| {
            let delete = matches!(c, Change::Delete { .. });
            (delete, kinds::write_stage(&c.key().kind))
        };
        for wave in kinds::write_waves(changes, class) {
            let results: Vec<(&Change, Result<bool, BackendError>)> = stream::iter(
                wave.iter()
                    .map(|ch| async move { (ch, self.change_as(ch, meta).await) }),
            )
            .buffered(self.opts.requests.max(1))
            .collect()
            .await;
            let mut first_error = None;
            for (ch, r) in results {
                match r {
                    Ok(true) => changed.push(ch.key().clone()),
                    Ok(false) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(fail(e, &changed));
            }
            let crds: Vec<&Value> = wave
                .iter()
                .filter_map(|c| match c {
                    Change::Create { key, desired } | Change::Update { key, desired, .. }
                        if key.kind == "CustomResourceDefinition" =>
                    {
                        Some(desired)
                    }
                    _ => None,
                })
                .collect();
            if !crds.is_empty() {
                self.established(&crds)
                    .await
                    .map_err(|e| fail(e, &changed))?;
            }
        }
        inv.applied = Some(meta.clone());
        self.write_inventory(&inv)
            .await
            .map_err(|e| fail(e, &changed))?;
        Ok(())
    }

    async fn preview_all(&self, objects: &[Planned<'_>]) -> Result<Vec<ServerView>, BackendError> {
        // Kinds a CRD of this same apply defines: their objects may be
        // created although the server does not know the kind yet.
        let defined: BTreeSet<(String, String)> = objects
            .iter()
            .filter(|p| p.key.kind == "CustomResourceDefinition")
            .filter_map(|p| {
                Some((
                    p.desired.pointer("/spec/group")?.as_str()?.to_string(),
                    p.desired.pointer("/spec/names/kind")?.as_str()?.to_string(),
                ))
            })
            .collect();
        let views = stream::iter(objects.iter().map(|p| async {
            let Some(live) = p.live else {
                let t = TypeRef::of(p.desired);
                let known = match &t {
                    Some(t) => self
                        .resource(t)
                        .await
                        .map_err(|error| self.error(Some(p.key), error))?,
                    None => None,
                };
                if known.is_none() && !defined.contains(&(p.key.group.clone(), p.key.kind.clone()))
                {
                    self.resource_of(p.key, p.desired).await?;
                }
                return Ok(ServerView::AsSent);
            };
            // An item an imperative edit put in the place of one canopy
            // sends is drift the apply removes, even where all canopy sends
            // is there; every other field an edit added stays the editor's.
            let replaced = !takeover::taken(live, p.desired).replaced.is_empty();
            if !replaced && noop::apply_is_noop(p.desired, live, FIELD_MANAGER) {
                return Ok(ServerView::SameAsLive);
            }
            let r = self.resource_of(p.key, p.desired).await?;
            // Forced: the preview shows what the apply would leave; a
            // conflict is reported by the apply itself.
            match self.apply(&r, p.desired, true, true).await {
                Ok(mut merged) => {
                    merged["apiVersion"] = p.desired["apiVersion"].clone();
                    if replaced {
                        merged = takeover::without_replaced(&merged, live, p.desired);
                    }
                    Ok(ServerView::Merged(merged))
                }
                // The dry run merges the replacing item beside the one
                // canopy sends, which can be invalid (two ports named
                // alike); the apply takes the edit's item first, so it is
                // not.
                Err(kube::Error::Api(s))
                    if replaced && s.code == 422 && errors::immutable_fields(&s).is_empty() =>
                {
                    let mut view = takeover::laid_over(live, p.desired);
                    view["apiVersion"] = p.desired["apiVersion"].clone();
                    Ok(ServerView::Merged(view))
                }
                // An immutable field changes: replaced when the object
                // asks for it, else the cluster fails here, before any
                // of its objects is written.
                Err(error) => match self.error(Some(p.key), error) {
                    BackendError::Immutable(i)
                        if crate::core::model::replace_on_immutable(p.desired) =>
                    {
                        Ok(ServerView::Replace(i.fields))
                    }
                    e => Err(e),
                },
            }
        }))
        .buffered(self.opts.requests.max(1))
        .collect::<Vec<Result<ServerView, BackendError>>>()
        .await;
        views.into_iter().collect()
    }
}

impl ClusterBackend for Arc<KubeCluster> {
    fn has_controllers(&self) -> bool {
        true
    }

    fn not_ready(&self) -> Option<String> {
        self.block_on(async {
            let nodes = self
                .send(|| {
                    http::Request::get("/api/v1/nodes")
                        .body(Vec::new())
                        .map_err(kube::core::request::Error::BuildRequest)
                })
                .await
                .ok()?;
            health::nodes_down(&nodes)
        })
    }

    fn capabilities(&self) -> Result<Option<(String, Vec<String>)>, BackendError> {
        self.block_on(async {
            let get = |path: &'static str, accept: &'static str| {
                self.send(move || {
                    http::Request::get(path)
                        .header(http::header::ACCEPT, accept)
                        .body(Vec::new())
                        .map_err(kube::core::request::Error::BuildRequest)
                })
            };
            let fail = |error| self.error(None, error);
            let version = get("/version", "application/json").await.map_err(fail)?;
            let version = version["gitVersion"].as_str().unwrap_or_default().to_string();
            // Aggregated discovery (one answer per path with every version
            // and kind), else the plain group list.
            const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;q=0.9";
            let core = get("/api", AGGREGATED).await.map_err(fail)?;
            let groups = get("/apis", AGGREGATED).await.map_err(fail)?;
            Ok(Some((version, capabilities::api_versions(&core, &groups))))
        })
    }

    fn free_capacity(&self) -> Result<Option<crate::core::model::Capacity>, BackendError> {
        self.block_on(async {
            let get = |path: &'static str| {
                self.send(move || {
                    http::Request::get(path)
                        .body(Vec::new())
                        .map_err(kube::core::request::Error::BuildRequest)
                })
            };
            let nodes = get("/api/v1/nodes")
                .await
                .map_err(|error| self.error(None, error))?;
            // Pods that finished hold nothing; the server leaves them out.
            let pods = get(
                "/api/v1/pods?fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed",
            )
            .await
            .map_err(|error| self.error(None, error))?;
            Ok(Some(capacity::free(&nodes, &pods)))
        })
    }

    fn reachable(&self) -> Result<(), BackendError> {
        self.block_on(async {
            self.send(|| {
                http::Request::get("/version")
                    .body(Vec::new())
                    .map_err(kube::core::request::Error::BuildRequest)
            })
            .await
            .map(|_| ())
            .map_err(|error| self.error(None, error))
        })
    }

    fn list_owned(&self, _fleet: &str, kinds: &[TypeRef]) -> Result<Vec<Value>, BackendError> {
        self.block_on(async {
            let inv = self.read_inventory().await?;
            // The desired apiVersion of a kind first; the inventory adds the
            // kinds no desired object has.
            let mut types: Vec<TypeRef> = kinds.to_vec();
            let group_kind = |t: &TypeRef| {
                (
                    crate::core::model::group_of(&t.api_version).to_string(),
                    t.kind.clone(),
                )
            };
            let mut seen: BTreeSet<(String, String)> = types.iter().map(group_kind).collect();
            for t in &inv.kinds {
                if seen.insert(group_kind(t)) {
                    types.push(t.clone());
                }
            }
            let lists = stream::iter(types.iter().map(|t| async move {
                match self.resource(t).await? {
                    Some(r) => self.list(&r, &t.kind).await,
                    // Not served (a CRD not installed yet, or removed): no
                    // objects of it can exist.
                    None => Ok(Vec::new()),
                }
            }))
            .buffered(self.opts.requests.max(1))
            .collect::<Vec<_>>()
            .await;
            let mut out = Vec::new();
            for l in lists {
                out.extend(l.map_err(|error| self.error(None, error))?);
            }
            Ok(out)
        })
    }

    fn scopes(&self, kinds: &[TypeRef]) -> Result<BTreeMap<TypeRef, bool>, BackendError> {
        self.block_on(async {
            let mut out = BTreeMap::new();
            for t in kinds {
                let r = self
                    .resource(t)
                    .await
                    .map_err(|error| self.error(None, error))?;
                if let Some(r) = r {
                    out.insert(t.clone(), r.namespaced);
                }
            }
            Ok(out)
        })
    }

    fn preview(&self, objects: &[Planned<'_>]) -> Result<Vec<ServerView>, BackendError> {
        self.block_on(self.preview_all(objects))
    }

    fn write(&self, changes: &[Change], meta: &ApplyMeta) -> Result<(), WriteFailure> {
        if changes.is_empty() {
            return Ok(());
        }
        self.block_on(self.write_all(changes, meta))
    }

    fn wait_healthy(
        &self,
        objects: &[&Value],
        timeout: Duration,
        rules: &crate::core::health_rules::HealthRules,
    ) -> Result<(), BackendError> {
        self.block_on(KubeCluster::wait_healthy(self, objects, timeout, rules))
    }

    fn last_applied(&self) -> Result<Option<ApplyMeta>, BackendError> {
        if let Some(inv) = self.inventory.lock().expect("inventory").as_ref() {
            return Ok(inv.applied.clone());
        }
        self.block_on(self.read_inventory()).map(|i| i.applied)
    }

    fn get(&self, t: &TypeRef, key: &ObjectKey) -> Result<Option<Value>, BackendError> {
        self.block_on(async {
            let fail = |error| self.error(Some(key), error);
            let Some(r) = self.resource(t).await.map_err(fail)? else {
                return Ok(None);
            };
            match KubeCluster::get(self, &r, &locator(t, key)).await {
                Ok(mut v) => {
                    v["kind"] = Value::String(t.kind.clone());
                    Ok(Some(v))
                }
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(fail(e)),
            }
        })
    }

    fn set_status(&self, t: &TypeRef, key: &ObjectKey, status: &Value) -> Result<(), BackendError> {
        self.may_write()?;
        self.block_on(async {
            let fail = |error| self.error(Some(key), error);
            let obj = locator(t, key);
            let r = self.resource_of(key, &obj).await?;
            let (path, name) = r.locate(&obj);
            let body = serde_json::json!({ "status": status });
            self.send(|| {
                Request::new(&path).patch_subresource(
                    "status",
                    name,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.to_string()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(&body),
                )
            })
            .await
            .map(|_| ())
            .map_err(fail)
        })
    }

    fn put(&self, obj: &Value) -> Result<Option<Value>, BackendError> {
        self.may_write()?;
        let Some(key) = ObjectKey::of(obj) else {
            return Err(BackendError::Api(Box::new(super::ApiFailure {
                cluster: self.name.clone(),
                context: format!("context {}", self.context),
                object: String::new(),
                detail: "an object without apiVersion, kind or name".into(),
                code: Some(400),
                help: None,
            })));
        };
        self.block_on(async {
            let fail = |error| self.error(Some(&key), error);
            let r = self.resource_of(&key, obj).await?;
            let (path, name) = r.locate(obj);
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PostParams::default()
            };
            let body = serde_json::to_vec(obj).expect("JSON values serialize");
            let replace = obj.pointer("/metadata/resourceVersion").is_some();
            let sent = self
                .send(|| {
                    if replace {
                        Request::new(&path).replace(name, &pp, body.clone())
                    } else {
                        Request::new(&path).create(&pp, body.clone())
                    }
                })
                .await;
            match sent {
                Ok(mut v) => {
                    v["apiVersion"] = obj["apiVersion"].clone();
                    v["kind"] = obj["kind"].clone();
                    Ok(Some(v))
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
                Err(e) => Err(fail(e)),
            }
        })
    }
}

/// The smallest object that names `key` of kind `t`: what finding its
/// path needs.
fn locator(t: &TypeRef, key: &ObjectKey) -> Value {
    serde_json::json!({
        "apiVersion": t.api_version,
        "kind": t.kind,
        "metadata": {"name": key.name, "namespace": key.namespace},
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeconfig with contexts `a` and `b` (a client is made without a
    /// request, so no server needs to listen).
    fn kubeconfig(dir: &std::path::Path) -> String {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n- name: b\n  context: {cluster: c, user: u}\ncurrent-context: a\n",
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    }

    fn cached(kf: &KubeFleet) -> Vec<(String, bool)> {
        kf.clusters
            .lock()
            .unwrap()
            .iter()
            .map(|(n, (_, c))| (n.clone(), c.is_ok()))
            .collect()
    }

    fn client_of(kf: &KubeFleet, name: &str) -> *const KubeCluster {
        match &kf.clusters.lock().unwrap()[name].1 {
            Ok(Made::Kube(c)) => Arc::as_ptr(c),
            _ => panic!("{name} has no client"),
        }
    }

    /// What a `watch` relies on across rounds: a cluster keeps its client
    /// (and with it its rate limiter and discovery cache) while its
    /// connection stays; a changed connection, a cluster that left and a
    /// kubeconfig that could not be used are connected afresh.
    #[test]
    fn clients_are_kept_until_their_connection_changes() {
        let dir = tempfile::tempdir().unwrap();
        let kf = KubeFleet::new("f", dir.path().to_path_buf(), KubeOptions::default()).unwrap();
        let conn = |context: &str| Connection {
            kubeconfig: Some(kubeconfig(dir.path())),
            context: Some(context.into()),
            ..Default::default()
        };
        let broken = Connection {
            kubeconfig: Some(dir.path().join("missing").to_string_lossy().into_owned()),
            ..Default::default()
        };
        let _ = kf.cluster("x", &conn("a"));
        let _ = kf.cluster("y", &conn("a"));
        let _ = kf.cluster("z", &broken);
        assert_eq!(
            cached(&kf),
            vec![("x".into(), true), ("y".into(), true), ("z".into(), false)]
        );
        let x = client_of(&kf, "x");

        let same: BTreeMap<String, Connection> = [
            ("x".to_string(), conn("a")),
            ("y".to_string(), conn("a")),
            ("z".to_string(), broken.clone()),
        ]
        .into();
        kf.keep_only(&same);
        assert_eq!(
            cached(&kf),
            vec![("x".into(), true), ("y".into(), true)],
            "an unusable kubeconfig is tried again"
        );
        let _ = kf.cluster("x", &conn("a"));
        assert_eq!(client_of(&kf, "x"), x, "the same client");

        let moved: BTreeMap<String, Connection> = [("x".to_string(), conn("b"))].into();
        kf.keep_only(&moved);
        assert!(cached(&kf).is_empty(), "x changed context, y left");
        let _ = kf.cluster("x", &conn("b"));
        assert_eq!(cached(&kf), vec![("x".into(), true)]);
    }
}
