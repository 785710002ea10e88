//! Discovery: which resource (path, scope) serves a kind, asked of the API
//! server once and cached for as long as the backend lives; a kind the
//! cache does not know is asked again (a CRD may have been installed since),
//! and an applied CRD clears the cache.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::KubeCluster;
use crate::backend::{BackendError, TypeRef};
use crate::core::model::ObjectKey;

/// Where the objects of one kind live: its resource name and scope.
#[derive(Debug, Clone)]
pub(super) struct Resource {
    pub(super) api_version: String,
    pub(super) plural: String,
    pub(super) namespaced: bool,
}

impl Resource {
    /// The collection path, in a namespace for namespaced kinds (all
    /// namespaces when `namespace` is `None`).
    pub(super) fn path(&self, namespace: Option<&str>) -> String {
        let base = if self.api_version.contains('/') {
            format!("/apis/{}", self.api_version)
        } else {
            format!("/api/{}", self.api_version)
        };
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", self.plural),
            None => format!("{base}/{}", self.plural),
        }
    }

    /// An object's collection path and name: where to send requests
    /// about it.
    pub(super) fn locate<'v>(&self, obj: &'v Value) -> (String, &'v str) {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        (self.path_of(obj), name)
    }

    /// The collection path of one object.
    pub(super) fn path_of(&self, obj: &Value) -> String {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        self.path(Some(ns))
    }
}

/// Kinds of one apiVersion, as discovery served them (`None`: the server
/// does not serve that apiVersion).
pub(super) type Served = Option<Arc<HashMap<String, Resource>>>;

impl KubeCluster {
    /// The kinds an apiVersion serves, fetched once while cached.
    pub(super) async fn served(&self, api_version: &str) -> Result<Served, kube::Error> {
        if let Some(s) = self.discovery.lock().expect("discovery").get(api_version) {
            return Ok(s.clone());
        }
        let path = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let served = match self
            .send(|| {
                http::Request::get(&path)
                    .body(Vec::new())
                    .map_err(kube::core::request::Error::BuildRequest)
            })
            .await
        {
            Ok(list) => {
                let mut kinds = HashMap::new();
                for r in list["resources"].as_array().into_iter().flatten() {
                    let (Some(plural), Some(kind)) = (r["name"].as_str(), r["kind"].as_str())
                    else {
                        continue;
                    };
                    if plural.contains('/') {
                        continue; // a subresource
                    }
                    kinds.insert(
                        kind.to_string(),
                        Resource {
                            api_version: api_version.to_string(),
                            plural: plural.to_string(),
                            namespaced: r["namespaced"].as_bool().unwrap_or(true),
                        },
                    );
                }
                Some(Arc::new(kinds))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => return Err(e),
        };
        self.discovery
            .lock()
            .expect("discovery")
            .insert(api_version.to_string(), served.clone());
        Ok(served)
    }

    /// The resource of a kind. A kind discovery did not list is asked for
    /// once more: the cache lives as long as the backend (across `watch`
    /// rounds), and a CRD may have been installed since it was filled.
    pub(super) async fn resource(&self, t: &TypeRef) -> Result<Option<Resource>, kube::Error> {
        let known = |served: Served| served.and_then(|kinds| kinds.get(&t.kind).cloned());
        if let Some(r) = known(self.served(&t.api_version).await?) {
            return Ok(Some(r));
        }
        self.discovery
            .lock()
            .expect("discovery")
            .remove(&t.api_version);
        Ok(known(self.served(&t.api_version).await?))
    }

    /// A resource that must exist: an unknown kind is an error naming the
    /// object.
    pub(super) async fn resource_of(
        &self,
        key: &ObjectKey,
        obj: &Value,
    ) -> Result<Resource, BackendError> {
        // Refused as the server would refuse them: 400 for an object
        // without a kind, 404 for a kind discovery does not list.
        let t = TypeRef::of(obj).ok_or_else(|| {
            self.api_error(key, 400, "the object has no apiVersion or kind", None)
        })?;
        match self.resource(&t).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(self.api_error(
                key,
                404,
                &format!("the server does not serve kind {} in {}", t.kind, t.api_version),
                Some("install its CustomResourceDefinition first, or add the CRD to a workload so canopy applies it before its objects"),
            )),
            Err(e) => Err(self.error(Some(key), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_paths() {
        let r = Resource {
            api_version: "apps/v1".into(),
            plural: "deployments".into(),
            namespaced: true,
        };
        assert_eq!(r.path(None), "/apis/apps/v1/deployments");
        assert_eq!(
            r.path_of(&json!({"metadata": {"namespace": "shop"}})),
            "/apis/apps/v1/namespaces/shop/deployments"
        );
        let ns = Resource {
            api_version: "v1".into(),
            plural: "namespaces".into(),
            namespaced: false,
        };
        assert_eq!(ns.path_of(&json!({"metadata": {}})), "/api/v1/namespaces");
    }
}
