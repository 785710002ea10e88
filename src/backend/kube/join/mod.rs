//! Joining, on Kubernetes: the objects of tokens, requests and members in a
//! hub, and the newcomer's side of `canopy join`.
//!
//! In the hub (the cluster whose reconciler reaches the newcomer):
//! - a **token** is a namespace `canopy-join-<id>` holding its policy (an
//!   annotation), a ServiceAccount `join` and a Role that lets it do one
//!   thing: create JoinRequests (and the Secret a push-mode newcomer hands
//!   over) in that namespace. The token is a TokenRequest token of that
//!   ServiceAccount, so the API server checks it, and deleting the
//!   ServiceAccount revokes it at once. The namespace, not anything in the
//!   request, says which token a request was made with;
//! - a **request** (`joinrequests.canopy.dev`) names the cluster, its
//!   identity, labels, mode and a one-time public key; the reconciler writes
//!   `status.phase` Approved (with the member credentials sealed to that
//!   key) or Refused (with the reason);
//! - a **member** is a namespace `canopy-member-<name>` holding the member
//!   (an annotation), a ServiceAccount `member` with a Role over that
//!   namespace only, and, in push mode, the Secret `push` with what reaches
//!   the member, which the reconciler renews before it expires.
//!
//! Credentials never reach an error or a log line: errors name objects and
//! the server's message only.
//!
//! Here: the client, its errors and the Secret helpers both sides use;
//! `hub.rs` is the hub's side, `newcomer.rs` the newcomer's.

mod hub;
mod newcomer;

pub use hub::*;
pub use newcomer::*;

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use serde_json::{json, Value};

use super::seal;
use crate::core::model::Credentials;

const GROUP_VERSION: &str = "canopy.dev/v1alpha1";
const MANAGER: &str = "canopy-join";
/// Label on token namespaces (value: the token id).
pub const LABEL_TOKEN: &str = "canopy.dev/join-token";
/// Label on member namespaces (value: the member's name).
pub const LABEL_MEMBER: &str = "canopy.dev/member";
const ANNOTATION_POLICY: &str = "canopy.dev/join-policy";
/// Where a newcomer keeps its membership, and what reaches it.
pub const NEWCOMER_NAMESPACE: &str = "canopy-system";
const MEMBERSHIP_SECRET: &str = "canopy-membership";
const PARENT_ACCOUNT: &str = "canopy-parent";
/// Pull mode: the Secret in a member's namespace with what it should run.
pub const DESIRED_SECRET: &str = "desired";
/// Pull mode: the ConfigMap in a member's namespace where its agent says
/// what it applied.
pub const APPLIED_REPORT: &str = "applied";
/// TokenRequest's shortest lifetime.
const MIN_TOKEN_SECONDS: u64 = 600;

pub fn token_namespace(id: &str) -> String {
    format!("canopy-join-{id}")
}

pub fn member_namespace(name: &str) -> String {
    format!("canopy-member-{name}")
}

/// Why a join step failed. None of them carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{cluster}: {what}: {detail}\n  help: {help}")]
    Api {
        cluster: String,
        what: String,
        detail: String,
        help: String,
    },
    #[error("the join was refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Pin(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no answer to join request {request} in {waited:?}: is the parent's reconciler (canopy watch, apply or agent) running?\n  help: run `canopy apply` (or keep `canopy watch` / the relay agent running) for the parent, then join again; the same cluster keeps its name")]
    Timeout { request: String, waited: Duration },
}

/// What a newcomer gets back, sealed: a token of its member
/// ServiceAccount, scoped to its member namespace.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Handback {
    pub(super) namespace: String,
    pub(super) token: String,
    pub(super) expires_at: u64,
    pub(super) parent: String,
}

/// A client and the name used for it in messages.
#[derive(Clone)]
pub struct Api {
    pub client: kube::Client,
    pub cluster: String,
}

impl Api {
    fn fail(&self, what: impl Into<String>, e: kube::Error) -> JoinError {
        let (detail, help) = match &e {
            kube::Error::Api(s) if s.code == 401 => (
                format!("{} ({})", s.message, s.code),
                "the credentials were rejected: a join token expires or is revoked; ask for a new one (`canopy token create`)",
            ),
            kube::Error::Api(s) if s.code == 403 => (
                format!("{} ({})", s.message, s.code),
                "the credentials are not allowed to do this: creating tokens needs admin rights on the hub; a join token only creates join requests",
            ),
            kube::Error::Api(s) => (format!("{} ({} {})", s.message, s.code, s.reason), "see the server's message"),
            e => (e.to_string(), "check that the server is reachable"),
        };
        JoinError::Api {
            cluster: self.cluster.clone(),
            what: what.into(),
            detail,
            help: help.into(),
        }
    }

    /// One request; `Ok(None)` when the object is not there (404) for a
    /// read or a delete. A write that finds nothing (its namespace, or the
    /// object it patches, is gone) is an error: it changed nothing.
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> Result<Option<Value>, kube::Error> {
        let missing_ok = method == http::Method::GET || method == http::Method::DELETE;
        let mut b = http::Request::builder().method(method).uri(path);
        let bytes = match body {
            Some((ct, v)) => {
                b = b.header(http::header::CONTENT_TYPE, ct);
                serde_json::to_vec(&v).unwrap_or_default()
            }
            None => Vec::new(),
        };
        let req = b
            .body(bytes)
            .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
        match self.client.request::<Value>(req).await {
            Ok(v) => Ok(Some(v)),
            Err(kube::Error::Api(s)) if s.code == 404 && missing_ok => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Option<Value>, kube::Error> {
        self.call(http::Method::GET, path, None).await
    }

    /// Server-side apply of `obj` at `path` (create or update, idempotent).
    pub(crate) async fn apply(&self, path: &str, obj: Value) -> Result<Value, kube::Error> {
        let path = format!("{path}?fieldManager={MANAGER}&force=true");
        self.call(
            http::Method::PATCH,
            &path,
            Some(("application/apply-patch+yaml", obj)),
        )
        .await
        .map(Option::unwrap_or_default)
    }

    async fn post(&self, path: &str, obj: Value) -> Result<Value, kube::Error> {
        self.call(http::Method::POST, path, Some(("application/json", obj)))
            .await
            .map(Option::unwrap_or_default)
    }

    async fn merge(&self, path: &str, patch: Value) -> Result<Option<Value>, kube::Error> {
        self.call(
            http::Method::PATCH,
            path,
            Some(("application/merge-patch+json", patch)),
        )
        .await
    }

    async fn delete(&self, path: &str) -> Result<(), kube::Error> {
        self.call(http::Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    /// A token of ServiceAccount `ns/name` for `seconds` (at least ten
    /// minutes, TokenRequest's floor), with when it expires.
    pub(crate) async fn token_for(
        &self,
        ns: &str,
        name: &str,
        seconds: u64,
    ) -> Result<(String, u64), kube::Error> {
        let v = self
            .post(
                &format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"),
                json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": { "expirationSeconds": seconds.max(MIN_TOKEN_SECONDS) }
                }),
            )
            .await?;
        let token = v["status"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let expires = v["status"]["expirationTimestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .map(secs)
            .unwrap_or_else(|| now() + seconds);
        Ok((token, expires))
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    secs(SystemTime::now())
}

fn role_path(ns: &str, kind: &str, name: &str) -> String {
    format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/{kind}/{name}")
}

fn requests_path(ns: &str) -> String {
    format!("/apis/{GROUP_VERSION}/namespaces/{ns}/joinrequests")
}

fn field(secret: &Value, key: &str) -> Option<String> {
    let raw = secret["data"][key].as_str()?;
    String::from_utf8(B64.decode(raw).ok()?).ok()
}

fn credentials_of(secret: &Value) -> Option<Credentials> {
    Some(Credentials {
        server: field(secret, "server")?,
        ca_pem: field(secret, "ca.crt")?,
        token: field(secret, "token")?,
    })
}

fn secret(name: &str, ns: &str, labels: Value, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(B64.encode(v))))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": { "name": name, "namespace": ns, "labels": labels },
        "data": data
    })
}

/// A client from pinned credentials.
pub fn connect_with(creds: &Credentials, name: &str, timeout: Duration) -> Result<Api, JoinError> {
    let mut config = super::connect::pinned_config(creds)
        .map_err(|d| JoinError::Invalid(format!("{name}: {d}")))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    let client = kube::Client::try_from(config)
        .map_err(|e| JoinError::Invalid(format!("{name}: cannot build a client: {e}")))?;
    Ok(Api {
        client,
        cluster: name.to_string(),
    })
}

/// When a ServiceAccount token expires (its `exp` claim), if it says.
pub fn token_expiry(token: &str) -> Option<u64> {
    claims(token)?["exp"].as_u64()
}

/// The claims of a JWT, unverified (the server verifies; canopy only reads
/// which namespace a token is for and when it expires).
fn claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&B64URL.decode(payload.trim_end_matches('=')).ok()?).ok()
}
