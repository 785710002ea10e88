//! A pull-mode member, as its parent's reconciler sees it: a store in the
//! member's hub namespace (the Secret `desired`: its objects, gzipped, and
//! what the last apply recorded), written like any cluster and read back
//! as its live state. The member's own agent (`canopy agent joined`,
//! [`crate::agent::joined`]) mirrors it into the member's cluster and says
//! what it applied in the ConfigMap `applied`. A Secret, because what a
//! cluster runs may hold Secrets: only the hub's admins and the member's
//! ServiceAccount may read it.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use super::join::{member_namespace, Api, DESIRED_SECRET, LABEL_MEMBER};
use crate::backend::local::object_id;
use crate::backend::{ApplyMeta, BackendError, ClusterBackend, TypeRef, WriteFailure};
use crate::core::diff::Change;
use crate::core::model::{label, ObjectKey, LABEL_FLEET};

/// The most a member's objects may take, gzipped (a Secret holds 1 MiB).
const MAX_STORED: usize = 900 * 1024;

/// What is kept for a member.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Desired {
    /// By `group/kind/namespace/name`.
    pub objects: BTreeMap<String, Value>,
    pub applied: Option<ApplyMeta>,
}

impl Desired {
    /// Reads the Secret's data (absent: nothing kept yet).
    pub fn of_secret(secret: Option<&Value>) -> Result<Desired, String> {
        let Some(raw) = secret.and_then(|s| s["data"]["desired.json.gz"].as_str()) else {
            return Ok(Desired::default());
        };
        let gz = B64.decode(raw).map_err(|e| format!("not base64: {e}"))?;
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .take(64 << 20)
            .read_to_end(&mut text)
            .map_err(|e| format!("not gzip: {e}"))?;
        serde_json::from_slice(&text).map_err(|e| format!("not JSON: {e}"))
    }

    fn to_secret(&self, ns: &str) -> Result<Value, String> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&serde_json::to_vec(self).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let bytes = gz.finish().map_err(|e| e.to_string())?;
        if bytes.len() > MAX_STORED {
            return Err(format!(
                "its objects take {} KiB gzipped, more than the {} KiB a Secret may hold",
                bytes.len() / 1024,
                MAX_STORED / 1024
            ));
        }
        Ok(json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": { "name": DESIRED_SECRET, "namespace": ns, "labels": { LABEL_MEMBER: "desired" } },
            "data": { "desired.json.gz": B64.encode(bytes) }
        }))
    }
}

/// A pull-mode member's store in its hub.
pub struct Pulled {
    pub(super) name: String,
    pub(super) hub: Api,
    pub(super) handle: tokio::runtime::Handle,
}

impl Pulled {
    fn path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/secrets/{DESIRED_SECRET}",
            member_namespace(&self.name)
        )
    }

    fn error(&self, e: impl std::fmt::Display) -> BackendError {
        BackendError::Unreachable {
            cluster: self.name.clone(),
            reason: format!(
                "joined in pull mode; its hub {} (where what it runs is kept) did not answer: {e}",
                self.hub.cluster
            ),
        }
    }

    fn load(&self) -> Result<Desired, BackendError> {
        let got = self
            .handle
            .block_on(self.hub.get(&self.path()))
            .map_err(|e| self.error(e))?;
        Desired::of_secret(got.as_ref()).map_err(|e| {
            BackendError::Api(Box::new(crate::backend::ApiFailure {
                cluster: self.name.clone(),
                context: format!("hub {}", self.hub.cluster),
                object: format!("Secret {}/{DESIRED_SECRET}: ", member_namespace(&self.name)),
                detail: e,
                code: None,
                help: Some("delete the Secret: the next apply writes it whole".into()),
            }))
        })
    }
}

impl ClusterBackend for std::sync::Arc<Pulled> {
    fn reachable(&self) -> Result<(), BackendError> {
        let ns = format!("/api/v1/namespaces/{}", member_namespace(&self.name));
        match self.handle.block_on(self.hub.get(&ns)) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(self.error("its member namespace is gone (it left)")),
            Err(e) => Err(self.error(e)),
        }
    }

    fn list_owned(&self, fleet: &str, _kinds: &[TypeRef]) -> Result<Vec<Value>, BackendError> {
        Ok(self
            .load()?
            .objects
            .into_values()
            .filter(|o| label(o, LABEL_FLEET) == Some(fleet))
            .collect())
    }

    fn write(&self, changes: &[Change], meta: &ApplyMeta) -> Result<(), WriteFailure> {
        let fail = |error| WriteFailure {
            error,
            changed: Vec::new(),
        };
        if changes.is_empty() {
            return Ok(());
        }
        let mut kept = self.load().map_err(fail)?;
        for ch in changes {
            let id = object_id(ch.key());
            match ch {
                Change::Create { desired, .. } | Change::Update { desired, .. } => {
                    kept.objects.insert(id, desired.clone());
                }
                Change::Delete { .. } => {
                    kept.objects.remove(&id);
                }
            }
        }
        kept.applied = Some(meta.clone());
        let secret = kept
            .to_secret(&member_namespace(&self.name))
            .map_err(|e| fail(self.error(e)))?;
        // One write of the whole store: on failure nothing changed.
        self.handle
            .block_on(self.hub.apply(&self.path(), secret))
            .map(|_| ())
            .map_err(|e| fail(self.error(e)))
    }

    fn last_applied(&self) -> Result<Option<ApplyMeta>, BackendError> {
        Ok(self.load()?.applied)
    }

    fn get(&self, _: &TypeRef, _: &ObjectKey) -> Result<Option<Value>, BackendError> {
        Ok(None)
    }

    fn set_status(&self, _: &TypeRef, key: &ObjectKey, _: &Value) -> Result<(), BackendError> {
        Err(self.error(format!("{key}: a pull-mode member holds no canopy records")))
    }

    fn put(&self, obj: &Value) -> Result<Option<Value>, BackendError> {
        Err(self.error(format!(
            "{}: a pull-mode member holds no canopy records",
            obj["metadata"]["name"]
        )))
    }
}
