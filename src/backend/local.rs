//! The embedded local backend: every cluster's live objects in one JSON file
//! under a state folder (default `.canopy/state/` beside the fleet).
//!
//! Layout (chosen by measurement, see the README's performance section): one
//! file per cluster, `clusters/<name>.json`, holding its objects by identity.
//! Apply touches only the clusters that change, and each file is replaced
//! atomically (write a temporary file, fsync, rename, fsync the folder), so a
//! crash leaves every cluster — and so every object — either old or new,
//! never torn. A lock file with the holder's pid keeps two canopy processes
//! from writing the same state. Objects get the metadata an API server would
//! set (resourceVersion, uid, creationTimestamp, generation), so diff
//! normalization is exercised for real.

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ApplyMeta, BackendError, ClusterBackend, WriteFailure};
use crate::core::diff::Change;
use crate::core::model::{ObjectKey, ANNOTATION_LOCAL_HEALTH, LABEL_FLEET};

/// One cluster's file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterState {
    /// Last resourceVersion handed out in this cluster.
    #[serde(default)]
    resource_version: u64,
    /// Fault injection: an unreachable cluster refuses every call, as a
    /// cluster whose API server is down would.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unreachable: bool,
    #[serde(default)]
    last_applied: Option<ApplyMeta>,
    /// Objects by `group/kind/namespace/name`.
    #[serde(default)]
    objects: BTreeMap<String, Value>,
}

/// The id an object is kept under in a store of objects (a state file, a
/// pull-mode member's store in its hub).
pub fn object_id(k: &ObjectKey) -> String {
    format!("{}/{}/{}/{}", k.group, k.kind, k.namespace, k.name)
}

/// The state folder, opened for writing (locked) or for reading.
pub struct LocalStore {
    dir: PathBuf,
    /// Held while the store is open for writing; the OS drops the lock when
    /// the process ends, even on a crash.
    lock: Option<File>,
}

impl LocalStore {
    /// Opens (creating) the state folder and takes its exclusive lock.
    pub fn open(dir: &Path) -> Result<LocalStore, BackendError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BackendError::Io { path, source }
        };
        // The folder is canopy's own: private, and no link in it is followed.
        crate::sys::files::own_dir(dir).map_err(io(dir))?;
        crate::sys::files::own_dir(&dir.join("clusters")).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let mut lock = crate::sys::files::private()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(BackendError::Locked {
                    path: lock_path.clone(),
                    pid: if pid.is_empty() {
                        "(unknown)".into()
                    } else {
                        pid.to_string()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        lock.set_len(0).map_err(io(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io(&lock_path))?;
        lock.sync_all().map_err(io(&lock_path))?;
        // Under the lock no other writer is at work: what temporary files
        // remain are an interrupted run's.
        crate::sys::files::sweep(&dir.join("clusters"));
        crate::sys::files::sweep(dir);
        Ok(LocalStore {
            dir: dir.to_path_buf(),
            lock: Some(lock),
        })
    }

    /// Opens the state folder for reading only (diff, status): no lock, since
    /// every file is replaced atomically and a reader sees old or new.
    pub fn open_read_only(dir: &Path) -> LocalStore {
        LocalStore {
            dir: dir.to_path_buf(),
            lock: None,
        }
    }

    /// The state folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cluster(&self, name: &str) -> LocalCluster {
        LocalCluster {
            name: name.to_string(),
            path: self.dir.join("clusters").join(format!("{name}.json")),
            dir: self.dir.join("clusters"),
            writable: self.lock.is_some(),
            seen: std::sync::Mutex::new(None),
        }
    }

    /// Names of the clusters that have state, sorted.
    pub fn clusters_on_disk(&self) -> Result<Vec<String>, BackendError> {
        let dir = self.dir.join("clusters");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(BackendError::Io { path: dir, source }),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".json")
                    .filter(|s| !s.starts_with('.'))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

/// One cluster of the local store.
pub struct LocalCluster {
    name: String,
    path: PathBuf,
    dir: PathBuf,
    writable: bool,
    /// The hash of the file's bytes as this handle last read or wrote
    /// them ([`ClusterBackend::version`]).
    seen: std::sync::Mutex<Option<u64>>,
}

/// The hash of a state file's bytes; a missing file hashes as no bytes (a
/// file canopy writes is never empty).
fn state_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

impl LocalCluster {
    /// The file's bytes (`None`: no file, the cluster holds nothing yet),
    /// noted as seen ([`ClusterBackend::version`]).
    fn read(&self) -> Result<Option<Vec<u8>>, BackendError> {
        match crate::sys::files::read(&self.path) {
            Ok(b) => {
                self.saw(&b);
                Ok(Some(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.saw(&[]);
                Ok(None)
            }
            Err(source) => Err(BackendError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn load(&self) -> Result<ClusterState, BackendError> {
        let Some(bytes) = self.read()? else {
            return Ok(ClusterState::default());
        };
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })
    }

    fn check_reachable(&self, st: &ClusterState) -> Result<(), BackendError> {
        if st.unreachable {
            return Err(BackendError::Unreachable {
                cluster: self.name.clone(),
                reason: format!("marked unreachable in {}", self.path.display()),
            });
        }
        Ok(())
    }

    /// Holds this cluster's own lock until dropped. The store's lock keeps
    /// two canopy runs from writing one state folder; this one orders the
    /// writes to one cluster's file of that run and of a relay agent
    /// writing its report and Lease there (an API server orders them the
    /// same way), so neither loses the other's update.
    fn hold(&self) -> Result<File, BackendError> {
        let path = self.dir.join(format!(".{}.lock", self.name));
        let io = |source| BackendError::Io {
            path: path.clone(),
            source,
        };
        let f = crate::sys::files::private()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    /// Replaces the file atomically.
    fn store(&self, st: &ClusterState) -> Result<(), BackendError> {
        let io = |source| BackendError::Io {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(st).expect("state serializes");
        crate::sys::files::replace(&self.dir, &format!("{}.json", self.name), &body).map_err(io)?;
        self.saw(&body);
        Ok(())
    }

    /// Notes the bytes of the file as last read or written.
    fn saw(&self, bytes: &[u8]) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(state_hash(bytes));
    }

    /// Marks the cluster (un)reachable: the local backend's fault switch,
    /// used by tests and by `canopy` users rehearsing an outage.
    pub fn set_unreachable(&self, unreachable: bool) -> Result<(), BackendError> {
        let _held = self.hold()?;
        let mut st = self.load()?;
        st.unreachable = unreachable;
        self.store(&st)
    }
}

impl LocalCluster {
    /// Gives `obj`, about to be stored as `id`, the metadata a server
    /// sets: a new resourceVersion, and the uid, creation time and
    /// generation it keeps or starts.
    fn stamp(&self, st: &mut ClusterState, id: &str, obj: &mut Value) {
        st.resource_version += 1;
        let rv = st.resource_version;
        let (uid, created, generation) = match st.objects.get(id) {
            Some(old) => {
                let m = &old["metadata"];
                let gen = m["generation"].as_u64().unwrap_or(1);
                let bumped = if spec_part(old) != spec_part(obj) {
                    gen + 1
                } else {
                    gen
                };
                (m["uid"].clone(), m["creationTimestamp"].clone(), bumped)
            }
            None => (json!(new_uid(&self.name, id, rv)), json!(now_rfc3339()), 1),
        };
        let m = &mut obj["metadata"];
        m["uid"] = uid;
        m["creationTimestamp"] = created;
        m["generation"] = json!(generation);
        m["resourceVersion"] = json!(rv.to_string());
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A unique, UUID-shaped id for a new object.
fn new_uid(cluster: &str, id: &str, rv: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (i, cluster, id, rv, nanos, std::process::id()).hash(&mut h);
        *w = h.finish();
    }
    let hex = format!("{:016x}{:016x}", words[0], words[1]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Everything but metadata and status: a change here bumps `generation`.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

impl ClusterBackend for LocalCluster {
    fn reachable(&self) -> Result<(), BackendError> {
        self.check_reachable(&self.load()?)
    }

    fn list_owned(
        &self,
        fleet: &str,
        _kinds: &[super::TypeRef],
    ) -> Result<Vec<Value>, BackendError> {
        let st = self.load()?;
        self.check_reachable(&st)?;
        Ok(st
            .objects
            .into_values()
            .filter(|o| crate::core::model::label(o, LABEL_FLEET) == Some(fleet))
            .collect())
    }

    /// The local backend runs nothing, so an object it holds is healthy as
    /// written, unless it carries `canopy.dev/local-health: unhealthy…`:
    /// the switch tests and users rehearsing a bad release use to make a
    /// health gate fail. It follows the object, so a revision without it
    /// (a rollback) is healthy again. Nothing changes by waiting, so the
    /// answer is immediate.
    fn wait_healthy(
        &self,
        objects: &[&Value],
        _timeout: std::time::Duration,
        _rules: &crate::core::health_rules::HealthRules,
    ) -> Result<(), BackendError> {
        let st = self.load()?;
        self.check_reachable(&st)?;
        let mut bad = Vec::new();
        for o in objects {
            let Some(key) = ObjectKey::of(o) else {
                continue;
            };
            match st.objects.get(&object_id(&key)) {
                None => bad.push(format!("{key}: not found")),
                Some(live) => {
                    if let Some(why) = live
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(ANNOTATION_LOCAL_HEALTH))
                        .and_then(Value::as_str)
                        .filter(|v| v.starts_with("unhealthy"))
                    {
                        bad.push(format!("{key}: {why}"));
                    }
                }
            }
        }
        if bad.is_empty() {
            return Ok(());
        }
        Err(BackendError::Simulated {
            cluster: self.name.clone(),
            objects: bad.join("\n    "),
        })
    }

    fn write(&self, changes: &[Change], meta: &ApplyMeta) -> Result<(), WriteFailure> {
        let fail = |error| WriteFailure {
            error,
            changed: Vec::new(),
        };
        if changes.is_empty() {
            return Ok(());
        }
        assert!(self.writable, "write on a read-only local store");
        let _held = self.hold().map_err(fail)?;
        let mut st = self.load().map_err(fail)?;
        self.check_reachable(&st).map_err(fail)?;
        for ch in changes {
            let id = object_id(ch.key());
            match ch {
                Change::Create { desired, .. } | Change::Update { desired, .. } => {
                    let mut obj = desired.clone();
                    // As an API server does for a kind with a status
                    // subresource: a write of the object keeps its status.
                    if obj.get("status").is_none() {
                        if let Some(status) = st.objects.get(&id).and_then(|o| o.get("status")) {
                            obj["status"] = status.clone();
                        }
                    }
                    self.stamp(&mut st, &id, &mut obj);
                    st.objects.insert(id, obj);
                }
                Change::Delete { .. } => {
                    st.objects.remove(&id);
                }
            }
        }
        st.last_applied = Some(meta.clone());
        // One atomic replace: on failure nothing changed.
        self.store(&st).map_err(fail)
    }

    fn last_applied(&self) -> Result<Option<ApplyMeta>, BackendError> {
        Ok(self.load()?.last_applied)
    }

    /// Reads the file only to hash it when this handle has not seen it:
    /// a run asks this of every cluster before deciding what to render.
    fn version(&self) -> Option<u64> {
        if let Some(v) = *self.seen.lock().unwrap_or_else(|p| p.into_inner()) {
            return Some(v);
        }
        self.read().ok()?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, _t: &super::TypeRef, key: &ObjectKey) -> Result<Option<Value>, BackendError> {
        let mut st = self.load()?;
        self.check_reachable(&st)?;
        Ok(st.objects.remove(&object_id(key)))
    }

    /// Allowed on a store opened read-only: a relay agent writes its report
    /// into its own cluster, which lives in its parent's state folder, while
    /// the parent's run may hold that folder's lock.
    fn set_status(
        &self,
        _t: &super::TypeRef,
        key: &ObjectKey,
        status: &Value,
    ) -> Result<(), BackendError> {
        let _held = self.hold()?;
        let mut st = self.load()?;
        self.check_reachable(&st)?;
        let id = object_id(key);
        let Some(mut obj) = st.objects.get(&id).cloned() else {
            return Err(BackendError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{key} is not in cluster {}", self.name),
                ),
            });
        };
        obj["status"] = status.clone();
        self.stamp(&mut st, &id, &mut obj);
        st.objects.insert(id, obj);
        self.store(&st)
    }

    /// Allowed on a store opened read-only, as [`Self::set_status`].
    fn put(&self, obj: &Value) -> Result<Option<Value>, BackendError> {
        let key = ObjectKey::of(obj).ok_or_else(|| BackendError::Io {
            path: self.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an object without kind or name",
            ),
        })?;
        let _held = self.hold()?;
        let mut st = self.load()?;
        self.check_reachable(&st)?;
        let id = object_id(&key);
        let expected = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        let live = st
            .objects
            .get(&id)
            .and_then(|o| o.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str);
        if expected != live {
            return Ok(None);
        }
        let mut obj = obj.clone();
        self.stamp(&mut st, &id, &mut obj);
        st.objects.insert(id, obj.clone());
        self.store(&st)?;
        Ok(Some(obj))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn cm(name: &str, data: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ns", "labels": {"canopy.dev/fleet": "f"}},
            "data": {"k": data}})
    }

    fn meta() -> ApplyMeta {
        ApplyMeta {
            revision: "r1".into(),
            at: now_rfc3339(),
            impersonate: Default::default(),
        }
    }

    #[test]
    fn server_metadata_and_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let c = store.cluster("a");
        c.write(
            &[Change::Create {
                key: key("x"),
                desired: cm("x", "1"),
            }],
            &meta(),
        )
        .unwrap();
        let live = c.list_owned("f", &[]).unwrap();
        let m = &live[0]["metadata"];
        assert_eq!(m["resourceVersion"], "1");
        assert_eq!(m["generation"], 1);
        let uid = m["uid"].clone();
        assert_eq!(uid.as_str().unwrap().len(), 36);
        c.write(
            &[Change::Update {
                key: key("x"),
                live: live[0].clone(),
                desired: cm("x", "2"),
                merged: None,
                replace: Vec::new(),
            }],
            &meta(),
        )
        .unwrap();
        let live = c.list_owned("f", &[]).unwrap();
        let m = &live[0]["metadata"];
        assert_eq!(m["resourceVersion"], "2");
        assert_eq!(m["generation"], 2);
        assert_eq!(m["uid"], uid, "uid survives updates");
        assert!(c.list_owned("other-fleet", &[]).unwrap().is_empty());
        assert_eq!(c.last_applied().unwrap().unwrap().revision, "r1");
    }

    /// What a relay agent writes into its parent's state folder while the
    /// parent's run holds the folder's lock: a status that the parent's
    /// next write of the object keeps, and a Lease written only over the
    /// version read.
    #[test]
    fn status_and_compare_and_swap_writes_beside_a_locked_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let c = store.cluster("a");
        c.write(
            &[Change::Create {
                key: key("x"),
                desired: cm("x", "1"),
            }],
            &meta(),
        )
        .unwrap();
        let t = crate::backend::TypeRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
        };
        // Another process's view: read-only, no store lock.
        let other = LocalStore::open_read_only(dir.path()).cluster("a");
        other
            .set_status(&t, &key("x"), &json!({"seen": 1}))
            .unwrap();
        assert!(other.set_status(&t, &key("y"), &json!({})).is_err());
        let live = c.get(&t, &key("x")).unwrap().unwrap();
        assert_eq!(live["status"]["seen"], 1);
        c.write(
            &[Change::Update {
                key: key("x"),
                live: live.clone(),
                desired: cm("x", "2"),
                merged: None,
                replace: Vec::new(),
            }],
            &meta(),
        )
        .unwrap();
        let live = c.get(&t, &key("x")).unwrap().unwrap();
        assert_eq!(
            (live["data"]["k"].clone(), live["status"]["seen"].clone()),
            (json!("2"), json!(1))
        );

        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l", "namespace": "ns"}, "spec": {"holderIdentity": "p"}});
        let made = other.put(&lease).unwrap().expect("created");
        assert_eq!(
            other.put(&lease).unwrap(),
            None,
            "it exists: a create loses"
        );
        let mut next = made.clone();
        next["spec"]["holderIdentity"] = json!("q");
        let taken = other.put(&next).unwrap().expect("the version read is live");
        assert_ne!(
            taken["metadata"]["resourceVersion"],
            made["metadata"]["resourceVersion"]
        );
        assert_eq!(other.put(&next).unwrap(), None, "a stale version loses");
    }

    #[test]
    fn second_writer_is_told_the_lock_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _first = LocalStore::open(dir.path()).unwrap();
        let err = LocalStore::open(dir.path()).err().expect("locked");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("locked by canopy process {}", std::process::id())),
            "{msg}"
        );
    }

    #[test]
    fn corrupt_file_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let path = dir.path().join("clusters/a.json");
        std::fs::write(&path, "{not json").unwrap();
        let c = store.cluster("a");
        let err = c.list_owned("f", &[]).unwrap_err().to_string();
        assert!(err.contains("clusters/a.json is corrupt"), "{err}");
        let err = c
            .write(
                &[Change::Create {
                    key: key("x"),
                    desired: cm("x", "1"),
                }],
                &meta(),
            )
            .unwrap_err();
        assert!(err.changed.is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
    }

    #[test]
    fn unreachable_refuses_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let c = store.cluster("a");
        c.set_unreachable(true).unwrap();
        assert!(c.reachable().is_err());
        assert!(c.list_owned("f", &[]).is_err());
        c.set_unreachable(false).unwrap();
        assert!(c.reachable().is_ok());
        assert_eq!(store.clusters_on_disk().unwrap(), vec!["a".to_string()]);
    }
}
