//! A failed request as a [`BackendError`] that names the cluster, its
//! context and the object, with the server's status kept (so the failure's
//! reason is typed), and the one reader of server-side apply's
//! FieldManagerConflict causes.

use serde_json::Value;

use super::KubeCluster;
use crate::backend::{ApiFailure, BackendError, FieldConflict};
use crate::core::model::ObjectKey;

impl KubeCluster {
    /// The error for a failed request, naming the cluster, its context and
    /// the object.
    pub(super) fn error(&self, about: Option<&ObjectKey>, error: kube::Error) -> BackendError {
        let object = about.map(|k| format!("{k}: ")).unwrap_or_default();
        match error {
            kube::Error::Api(s) => {
                let conflicts = field_conflicts(&s);
                if s.code == 409 && !conflicts.is_empty() {
                    return BackendError::Conflict {
                        cluster: self.name.clone(),
                        context: format!("context {}", self.context),
                        object,
                        conflicts,
                    };
                }
                let fields = immutable_fields(&s);
                if s.code == 422 && !fields.is_empty() {
                    return BackendError::Immutable(Box::new(crate::backend::ImmutableFailure {
                        cluster: self.name.clone(),
                        context: format!("context {}", self.context),
                        object,
                        fields,
                        detail: s.message,
                    }));
                }
                let help = match s.code {
                    401 => Some("the credentials of this context were rejected; refresh them (they may have expired)"),
                    403 => Some("the context's user needs RBAC permission for this (get, list, patch and delete on the kinds canopy applies)"),
                    _ => None,
                };
                BackendError::Api(Box::new(ApiFailure {
                    cluster: self.name.clone(),
                    context: format!("context {}", self.context),
                    object,
                    detail: format!("{} ({} {})", s.message, s.code, s.reason),
                    code: Some(s.code),
                    help: help.map(str::to_string),
                }))
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) => BackendError::Unreachable {
                cluster: self.name.clone(),
                reason: format!("context {}: {object}{}", self.context, error),
            },
            e => BackendError::Api(Box::new(ApiFailure {
                cluster: self.name.clone(),
                context: format!("context {}", self.context),
                object,
                detail: e.to_string(),
                code: None,
                help: None,
            })),
        }
    }

    pub(super) fn api_error(
        &self,
        key: &ObjectKey,
        code: u16,
        detail: &str,
        help: Option<&str>,
    ) -> BackendError {
        BackendError::Api(Box::new(ApiFailure {
            cluster: self.name.clone(),
            context: format!("context {}", self.context),
            object: format!("{key}: "),
            detail: detail.to_string(),
            code: Some(code),
            help: help.map(str::to_string),
        }))
    }
}

/// The fields a 409 from server-side apply names, with their managers:
/// the one place a FieldManagerConflict is read.
pub(super) fn field_conflicts(s: &kube::core::response::Status) -> Vec<FieldConflict> {
    s.details
        .iter()
        .flat_map(|d| &d.causes)
        .filter(|c| c.reason == "FieldManagerConflict")
        .map(|c| FieldConflict {
            field: c.field.clone(),
            manager: c
                .message
                .split('"')
                .nth(1)
                .unwrap_or("another manager")
                .to_string(),
        })
        .collect()
}

/// The fields a 422 names as immutable: the API server's validation says
/// "field is immutable" (`ValidateImmutableField`) or, for a Service's
/// cluster IPs, "may not change once set". Empty for any other refusal.
pub(super) fn immutable_fields(s: &kube::core::response::Status) -> Vec<String> {
    let immutable =
        |m: &str| m.contains("field is immutable") || m.contains("may not change once set");
    let mut fields: Vec<String> = s
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .filter(|c| immutable(&c.message))
        .map(|c| c.field.clone())
        .collect();
    if fields.is_empty() && s.code == 422 && immutable(&s.message) {
        // No causes: the field is the message's first word, as the server
        // writes it (`spec.template: Invalid value: …`).
        if let Some(field) = s
            .message
            .split(": ")
            .nth(1)
            .and_then(|m| m.split(':').next())
        {
            fields.push(field.trim().to_string());
        }
    }
    fields.sort();
    fields.dedup();
    fields
}

/// Whether every `managedFields` entry of `manager` is an Update (an
/// imperative write), none an Apply.
pub(super) fn only_updates(live: &Value, manager: &str) -> bool {
    let entries: Vec<&Value> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("manager").and_then(Value::as_str) == Some(manager))
        .collect();
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.get("operation").and_then(Value::as_str) == Some("Update"))
}
