//! A read-only backend whose "live" state is another rendering of the fleet:
//! what `canopy diff --base REF` compares the working tree with, so a pull
//! request gets a full diff without any cluster or credential.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fleet::Backends;
use super::{ApplyMeta, BackendError, ClusterBackend, WriteFailure};
use crate::core::diff::Change;

/// The objects every cluster had in the base rendering.
#[derive(Debug, Default)]
pub struct RenderedState {
    pub clusters: BTreeMap<String, Vec<Value>>,
}

struct RenderedCluster<'a> {
    objects: &'a [Value],
}

impl ClusterBackend for RenderedCluster<'_> {
    fn reachable(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn list_owned(
        &self,
        _fleet: &str,
        _kinds: &[super::TypeRef],
    ) -> Result<Vec<Value>, BackendError> {
        Ok(self.objects.to_vec())
    }

    fn write(&self, changes: &[Change], _meta: &ApplyMeta) -> Result<(), WriteFailure> {
        assert!(
            changes.is_empty(),
            "a rendered base is only compared with, never written"
        );
        Ok(())
    }

    fn last_applied(&self) -> Result<Option<ApplyMeta>, BackendError> {
        Ok(None)
    }

    fn get(
        &self,
        _t: &super::TypeRef,
        key: &crate::core::model::ObjectKey,
    ) -> Result<Option<Value>, BackendError> {
        Ok(self
            .objects
            .iter()
            .find(|o| crate::core::model::ObjectKey::of(o).as_ref() == Some(key))
            .cloned())
    }

    fn set_status(
        &self,
        _t: &super::TypeRef,
        _key: &crate::core::model::ObjectKey,
        _status: &Value,
    ) -> Result<(), BackendError> {
        unreachable!("a rendered base is only compared with, never written")
    }

    fn put(&self, _obj: &Value) -> Result<Option<Value>, BackendError> {
        unreachable!("a rendered base is only compared with, never written")
    }
}

impl Backends for RenderedState {
    fn backend(&self, cluster: &str) -> Box<dyn ClusterBackend + '_> {
        let objects = self.clusters.get(cluster).map(Vec::as_slice).unwrap_or(&[]);
        Box::new(RenderedCluster { objects })
    }
}
