//! The hub's side of joining: the JoinRequest CRD, tokens, answering
//! requests, members and the renewal of what reaches them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::core::join::{Evidence, Member, Mode, RequestSpec, TokenPolicy};
use crate::core::model::Credentials;

/// Label on an admission record (value: the member's name).
pub const LABEL_ADMITTED: &str = "canopy.dev/admitted";

/// Where the hub keeps its admission records: canopy's own namespace,
/// which neither a token's nor a member's role reaches.
fn record_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NEWCOMER_NAMESPACE}/configmaps/member-{name}")
}

/// The JoinRequest CRD: namespaced, with a status subresource, so that a
/// token (which may create requests) cannot write their verdict.
pub fn request_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "joinrequests.canopy.dev" },
        "spec": {
            "group": "canopy.dev",
            "scope": "Namespaced",
            "names": { "plural": "joinrequests", "singular": "joinrequest", "kind": "JoinRequest" },
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "additionalPrinterColumns": [
                    { "name": "Cluster", "type": "string", "jsonPath": ".spec.cluster" },
                    { "name": "Phase", "type": "string", "jsonPath": ".status.phase" },
                    { "name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1 }
                ],
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                        "status": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
                    }
                }}
            }]
        }
    })
}

/// Installs the JoinRequest CRD and waits (up to `wait`) until it is
/// established.
pub async fn ensure_crd(api: &Api, wait: Duration) -> Result<(), JoinError> {
    let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/joinrequests.canopy.dev";
    api.apply(path, request_crd())
        .await
        .map_err(|e| api.fail("installing the JoinRequest CRD", e))?;
    let start = Instant::now();
    loop {
        let crd = api
            .get(path)
            .await
            .map_err(|e| api.fail("reading the JoinRequest CRD", e))?;
        let established = crd
            .as_ref()
            .and_then(|c| c["status"]["conditions"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if established {
            return Ok(());
        }
        if start.elapsed() > wait {
            return Err(JoinError::Invalid(format!(
                "{}: the JoinRequest CRD was not established in {wait:?}",
                api.cluster
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new token id: six lowercase letters and digits.
fn token_id() -> Result<String, JoinError> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 6];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| JoinError::Invalid("no randomness for a token id".into()))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// A created token: its id and the bearer token (printed once, in the join
/// command, and nowhere else).
pub struct NewToken {
    pub id: String,
    pub token: String,
}

/// Creates a token in the hub with `policy`; it authenticates until the
/// policy expires (at least ten minutes, TokenRequest's floor; the policy's
/// own expiry is what the reconciler enforces).
pub async fn create_token(api: &Api, policy: &TokenPolicy) -> Result<NewToken, JoinError> {
    ensure_crd(api, Duration::from_secs(30)).await?;
    let id = token_id()?;
    let ns = token_namespace(&id);
    let fail = |what: &str, e| api.fail(format!("creating token {id}: {what}"), e);
    account(
        api,
        &ns,
        "join",
        json!({ LABEL_TOKEN: id }),
        json!({ ANNOTATION_POLICY: serde_json::to_string(policy).unwrap_or_default() }),
        json!([
            { "apiGroups": ["canopy.dev"], "resources": ["joinrequests"], "verbs": ["create", "get"] },
            { "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] }
        ]),
    )
    .await
    .map_err(|(what, e)| fail(what, e))?;
    let (token, _) = api
        .token_for(&ns, "join", policy.expires_at.saturating_sub(now()))
        .await
        .map_err(|e| fail("token", e))?;
    Ok(NewToken { id, token })
}

/// Every token of the hub with its policy, by id.
pub async fn list_tokens(api: &Api) -> Result<BTreeMap<String, TokenPolicy>, JoinError> {
    let list = api
        .get(&format!("/api/v1/namespaces?labelSelector={LABEL_TOKEN}"))
        .await
        .map_err(|e| api.fail("listing join tokens", e))?
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for ns in list["items"].as_array().into_iter().flatten() {
        if !ns["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let (Some(id), Some(policy)) = (
            ns["metadata"]["labels"][LABEL_TOKEN].as_str(),
            ns["metadata"]["annotations"][ANNOTATION_POLICY]
                .as_str()
                .and_then(|p| serde_json::from_str::<TokenPolicy>(p).ok()),
        ) else {
            continue;
        };
        out.insert(id.to_string(), policy);
    }
    Ok(out)
}

/// Revokes a token: its ServiceAccount goes first (the API server stops
/// accepting the token at once), then its Role, binding and namespace.
/// `false` if there was no such token.
pub async fn revoke_token(api: &Api, id: &str) -> Result<bool, JoinError> {
    let ns = token_namespace(id);
    withdraw(api, &ns, "join", &[])
        .await
        .map_err(|e| api.fail(format!("revoking token {id}"), e))
}

/// A request no reconciler has answered yet.
#[derive(Debug, Clone)]
pub struct Pending {
    pub namespace: String,
    pub name: String,
    /// The token it was made with (from its namespace).
    pub token: String,
    /// The request, or why it cannot be read.
    pub spec: Result<RequestSpec, String>,
}

impl Pending {
    /// Push mode: the Secret in the token namespace with what reaches it.
    fn push_secret(&self) -> Option<&str> {
        self.spec.as_ref().ok()?.push_secret.as_deref()
    }
}

/// The unanswered requests of the hub, oldest first; `None` when the hub
/// never had a token (no JoinRequest CRD), so it has no members either.
pub async fn pending(api: &Api) -> Result<Option<Vec<Pending>>, JoinError> {
    let list = match api
        .get(&format!("/apis/{GROUP_VERSION}/joinrequests"))
        .await
    {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(None),
        Err(e) => return Err(api.fail("listing join requests", e)),
    };
    let mut out = Vec::new();
    let mut items: Vec<&Value> = list["items"].as_array().into_iter().flatten().collect();
    items.sort_by_key(|r| {
        (
            r["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            r["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    });
    for r in items {
        if !r["status"]["phase"].is_null() {
            continue;
        }
        let namespace = r["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(token) = namespace.strip_prefix("canopy-join-").map(str::to_string) else {
            continue;
        };
        out.push(Pending {
            name: r["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            token,
            spec: serde_json::from_value::<RequestSpec>(r["spec"].clone())
                .map_err(|e| e.to_string()),
            namespace,
        });
    }
    Ok(Some(out))
}

/// The policy of token `id`, if it is still there (not revoked).
pub async fn token_policy(api: &Api, id: &str) -> Result<Option<TokenPolicy>, JoinError> {
    let ns = token_namespace(id);
    let fail = |e| api.fail(format!("reading token {id}"), e);
    let Some(n) = api
        .get(&format!("/api/v1/namespaces/{ns}"))
        .await
        .map_err(fail)?
    else {
        return Ok(None);
    };
    if !n["metadata"]["deletionTimestamp"].is_null()
        || api
            .get(&format!("/api/v1/namespaces/{ns}/serviceaccounts/join"))
            .await
            .map_err(fail)?
            .is_none()
    {
        return Ok(None);
    }
    Ok(n["metadata"]["annotations"][ANNOTATION_POLICY]
        .as_str()
        .and_then(|p| serde_json::from_str(p).ok()))
}

/// Refuses a request: the reason on its status, and the Secret it handed
/// over deleted, so nothing of it stays.
pub async fn refuse(api: &Api, p: &Pending, reason: &str) -> Result<(), JoinError> {
    let fail = |e| {
        api.fail(
            format!("refusing join request {}/{}", p.namespace, p.name),
            e,
        )
    };
    if let Some(s) = p.push_secret() {
        api.delete(&format!("/api/v1/namespaces/{}/secrets/{s}", p.namespace))
            .await
            .map_err(fail)?;
    }
    api.merge(
        &format!("{}/{}/status", requests_path(&p.namespace), p.name),
        json!({ "status": { "phase": "Refused", "reason": reason, "at": now() } }),
    )
    .await
    .map_err(fail)?;
    Ok(())
}

/// The push Secret a newcomer handed over, read and checked.
async fn handed_over(api: &Api, p: &Pending) -> Result<Credentials, String> {
    let name = p
        .push_secret()
        .ok_or("a push-mode request names no pushSecret")?;
    let s = api
        .get(&format!(
            "/api/v1/namespaces/{}/secrets/{name}",
            p.namespace
        ))
        .await
        .map_err(|e| format!("its pushSecret cannot be read: {e}"))?
        .ok_or("its pushSecret is not there")?;
    // The Secret must be this request's own: made with the same one-time
    // key, so another holder of the token cannot name someone else's.
    let key = p
        .spec
        .as_ref()
        .map(|s| s.public_key.as_str())
        .unwrap_or_default();
    if field(&s, "publicKey").as_deref() != Some(key) {
        return Err("its pushSecret was not made with this request's key".into());
    }
    credentials_of(&s).ok_or_else(|| "its pushSecret lacks server, ca.crt or token".to_string())
}

/// What the hub finds out itself about a request before it decides: in push
/// mode, the credentials handed over (read from the token's namespace and
/// bound to the request's one-time key), their digest, and the UID of
/// `kube-system` read through them, so the request's `identity` is not
/// taken on its word. `Err(why)` when the handed-over Secret does not do.
pub async fn evidence(
    api: &Api,
    p: &Pending,
    timeout: Duration,
) -> Result<(Evidence, Option<Credentials>), String> {
    let Ok(spec) = &p.spec else {
        return Ok((Evidence::default(), None));
    };
    if spec.mode == Mode::Pull {
        return Ok((Evidence::default(), None));
    }
    let creds = handed_over(api, p).await?;
    let observed = match connect_with(&creds, &spec.cluster, timeout) {
        Ok(member) => match member.get("/api/v1/namespaces/kube-system").await {
            Ok(Some(ns)) => ns["metadata"]["uid"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "its kube-system namespace has no UID".to_string()),
            Ok(None) => Err("it has no kube-system namespace".to_string()),
            Err(e) => Err(member
                .fail("reading its kube-system namespace", e)
                .to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    Ok((
        Evidence {
            push_digest: Some(crate::core::join::push_digest(&creds)),
            observed_identity: Some(observed),
        },
        Some(creds),
    ))
}

/// Admits a request: the member namespace, its ServiceAccount and Role, the
/// push credentials (`push`, read by [`evidence`]) moved there, the
/// admission record in `canopy-system`, and the member credentials sealed
/// to the request's key on its status (the caller counts the token's use).
pub async fn admit(
    api: &Api,
    p: &Pending,
    member: &Member,
    rejoin: bool,
    push: Option<&Credentials>,
    credential_seconds: u64,
) -> Result<(), JoinError> {
    let spec = p.spec.as_ref().map_err(|e| JoinError::Invalid(e.clone()))?;
    let ns = member_namespace(&member.name);
    let fail = |what: &str, e| api.fail(format!("admitting {}: {what}", member.name), e);
    account(
        api,
        &ns,
        "member",
        json!({ LABEL_MEMBER: member.name }),
        json!({}),
        json!([
            // Renew its own token; read and say what it has; ask to leave.
            { "apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": ["member"], "verbs": ["create"] },
            { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create", "update", "patch"] },
            // Pull mode: what its parent's reconciler keeps for it.
            { "apiGroups": [""], "resources": ["secrets"], "resourceNames": [DESIRED_SECRET], "verbs": ["get"] }
        ]),
    )
    .await
    .map_err(|(what, e)| fail(what, e))?;
    if let Some(c) = push {
        store_push(api, &ns, c, token_expiry(&c.token))
            .await
            .map_err(|e| fail("push secret", e))?;
        if let Some(s) = p.push_secret() {
            api.delete(&format!("/api/v1/namespaces/{}/secrets/{s}", p.namespace))
                .await
                .map_err(|e| fail("handed-over secret", e))?;
        }
    }
    // The record last but for the answer: what it names exists.
    api.apply(
        &format!("/api/v1/namespaces/{NEWCOMER_NAMESPACE}"),
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NEWCOMER_NAMESPACE } }),
    )
    .await
    .map_err(|e| fail("canopy-system namespace", e))?;
    api.apply(
        &record_path(&member.name),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": format!("member-{}", member.name), "namespace": NEWCOMER_NAMESPACE,
                "labels": { LABEL_ADMITTED: member.name }
            },
            "data": {
                "member": serde_json::to_string(member).unwrap_or_default(),
                "namespace": ns,
            }
        }),
    )
    .await
    .map_err(|e| fail("admission record", e))?;
    let (token, expires_at) = api
        .token_for(&ns, "member", credential_seconds)
        .await
        .map_err(|e| fail("member token", e))?;
    let back = serde_json::to_vec(&Handback {
        namespace: ns.clone(),
        token,
        expires_at,
        parent: member.parent.clone(),
    })
    .unwrap_or_default();
    let sealed = seal::seal(&spec.public_key, &back).map_err(JoinError::Invalid)?;
    api.merge(
        &format!("{}/{}/status", requests_path(&p.namespace), p.name),
        json!({ "status": {
            "phase": "Approved", "member": member.name, "namespace": ns,
            "parent": member.parent, "rejoin": rejoin, "sealed": sealed, "at": now()
        }}),
    )
    .await
    .map_err(|e| fail("request status", e))?;
    Ok(())
}

async fn store_push(
    api: &Api,
    ns: &str,
    c: &Credentials,
    expires: Option<u64>,
) -> Result<Value, kube::Error> {
    let expires = expires.map(|e| e.to_string()).unwrap_or_default();
    let mut data = vec![
        ("server", c.server.as_str()),
        ("ca.crt", c.ca_pem.as_str()),
        ("token", c.token.as_str()),
    ];
    if !expires.is_empty() {
        data.push(("expires", expires.as_str()));
    }
    api.apply(
        &format!("/api/v1/namespaces/{ns}/secrets/push"),
        secret("push", ns, json!({ LABEL_MEMBER: "push" }), &data),
    )
    .await
}

/// `n` more new members for token `id` (the reconciler is its only
/// writer; a round counts each token's uses once).
pub async fn count_uses(api: &Api, id: &str, n: u32) -> Result<(), JoinError> {
    count(api, id, n)
        .await
        .map_err(|e| api.fail(format!("counting the uses of token {id}"), e))
}

async fn count(api: &Api, id: &str, n: u32) -> Result<(), kube::Error> {
    let path = format!("/api/v1/namespaces/{}", token_namespace(id));
    let Some(ns) = api.get(&path).await? else {
        return Ok(());
    };
    let Some(mut policy) = ns["metadata"]["annotations"][ANNOTATION_POLICY]
        .as_str()
        .and_then(|p| serde_json::from_str::<TokenPolicy>(p).ok())
    else {
        return Ok(());
    };
    policy.uses += n;
    api.merge(
        &path,
        json!({ "metadata": {
            "resourceVersion": ns["metadata"]["resourceVersion"],
            "annotations": { ANNOTATION_POLICY: serde_json::to_string(&policy).unwrap_or_default() }
        }}),
    )
    .await
    .map(|_| ())
}

/// A member as its hub keeps it, with what reaches it (push mode) and when
/// that expires.
#[derive(Debug, Clone)]
pub struct Kept {
    pub member: Member,
    pub credentials: Option<Arc<Credentials>>,
    pub expires_at: Option<u64>,
    /// It asked to leave (`canopy leave`).
    pub leaving: bool,
}

/// The members of a hub, and what claims to be one and is not.
#[derive(Debug, Clone, Default)]
pub struct Members {
    pub kept: BTreeMap<String, Kept>,
    /// A namespace labelled as a member that canopy never admitted (no
    /// admission record names it), or a record whose namespace is gone:
    /// left out, each said once per read.
    pub ignored: Vec<String>,
}

/// Every member of the hub, by name: a member exists only through its
/// admission record in `canopy-system` (written by the reconciler alone),
/// which names it and so its namespace `canopy-member-<name>`, where its
/// push credentials are. Someone who can create a namespace, and label
/// it, creates no member.
pub async fn members(api: &Api) -> Result<Members, JoinError> {
    let list = |path: String| async move {
        api.get(&path)
            .await
            .map_err(|e| api.fail("listing members", e))
            .map(Option::unwrap_or_default)
    };
    let records = list(format!(
        "/api/v1/namespaces/{NEWCOMER_NAMESPACE}/configmaps?labelSelector={LABEL_ADMITTED}"
    ))
    .await?;
    let list_ns = list(format!("/api/v1/namespaces?labelSelector={LABEL_MEMBER}")).await?;
    let secrets = list(format!(
        "/api/v1/secrets?labelSelector={LABEL_MEMBER}%3Dpush"
    ))
    .await?;
    let leaving = list(format!(
        "/api/v1/configmaps?labelSelector={LABEL_MEMBER}%3Dleave"
    ))
    .await?;
    let by_ns = |list: &Value| -> BTreeMap<String, Value> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["metadata"]["namespace"].as_str()?.to_string(), s.clone())))
            .collect()
    };
    let pushes = by_ns(&secrets);
    let leaves = by_ns(&leaving);
    let live: std::collections::BTreeSet<&str> = list_ns["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ns| ns["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|ns| ns["metadata"]["name"].as_str())
        .collect();
    let mut out = Members::default();
    let mut named = std::collections::BTreeSet::new();
    for r in records["items"].as_array().into_iter().flatten() {
        let Some(member) = r["data"]["member"]
            .as_str()
            .and_then(|m| serde_json::from_str::<Member>(m).ok())
        else {
            out.ignored.push(format!(
                "admission record {NEWCOMER_NAMESPACE}/{} cannot be read",
                r["metadata"]["name"].as_str().unwrap_or_default()
            ));
            continue;
        };
        let ns = member_namespace(&member.name);
        named.insert(ns.clone());
        if !live.contains(ns.as_str()) {
            out.ignored.push(format!(
                "member {} has no namespace {ns} (being removed, or removed by hand)",
                member.name
            ));
            continue;
        }
        let push = pushes.get(&ns);
        out.kept.insert(
            member.name.clone(),
            Kept {
                credentials: push.and_then(credentials_of).map(Arc::new),
                expires_at: push.and_then(|s| field(s, "expires")?.parse().ok()),
                leaving: leaves.contains_key(&ns),
                member,
            },
        );
    }
    for ns in live.iter().filter(|ns| !named.contains(**ns)) {
        out.ignored.push(format!(
            "namespace {ns} is labelled as a member, but canopy never admitted it (no admission record in {NEWCOMER_NAMESPACE}): ignored"
        ));
    }
    Ok(out)
}

/// Removes member `name` from the hub: its ServiceAccount (its token stops
/// working), Role, binding, Secrets and namespace. `false` if unknown.
pub async fn remove_member(api: &Api, name: &str) -> Result<bool, JoinError> {
    let ns = member_namespace(name);
    let fail = |e| api.fail(format!("removing member {name}"), e);
    let had = withdraw(api, &ns, "member", &["push", DESIRED_SECRET])
        .await
        .map_err(fail)?;
    // The record goes last: until then, what is left is still a member
    // being removed, not a stray namespace.
    let recorded = api.get(&record_path(name)).await.map_err(fail)?.is_some();
    api.delete(&record_path(name)).await.map_err(fail)?;
    Ok(had || recorded)
}

/// Renews what reaches a push-mode member, with the credentials it handed
/// over: a fresh token of its `canopy-parent` ServiceAccount, which may ask
/// for its own tokens. Returns the new credentials.
pub async fn renew_push(
    api: &Api,
    kept: &Kept,
    seconds: u64,
    timeout: Duration,
) -> Result<Arc<Credentials>, JoinError> {
    let creds = kept.credentials.as_ref().ok_or_else(|| {
        JoinError::Invalid(format!(
            "member {} has no push credentials",
            kept.member.name
        ))
    })?;
    let member = connect_with(creds, &kept.member.name, timeout)?;
    let (token, expires) = member
        .token_for(NEWCOMER_NAMESPACE, PARENT_ACCOUNT, seconds)
        .await
        .map_err(|e| member.fail("renewing the credentials it handed over", e))?;
    let fresh = Credentials {
        server: creds.server.clone(),
        ca_pem: creds.ca_pem.clone(),
        token,
    };
    store_push(
        api,
        &member_namespace(&kept.member.name),
        &fresh,
        Some(expires),
    )
    .await
    .map_err(|e| {
        api.fail(
            format!("storing {}'s renewed credentials", kept.member.name),
            e,
        )
    })?;
    // A push member runs no agent of its own: the hub renews the member
    // credentials it keeps too (what `canopy leave` uses), with the
    // access it was handed.
    let ns = member_namespace(&kept.member.name);
    let (member_token, member_expires) = api
        .token_for(&ns, "member", seconds)
        .await
        .map_err(|e| api.fail(format!("renewing {}'s member token", kept.member.name), e))?;
    member
        .merge(
            &format!("/api/v1/namespaces/{NEWCOMER_NAMESPACE}/secrets/{MEMBERSHIP_SECRET}"),
            json!({ "data": {
                "token": B64.encode(member_token),
                "expires": B64.encode(member_expires.to_string()),
            }}),
        )
        .await
        .map_err(|e| member.fail("storing its renewed member token", e))?;
    Ok(Arc::new(fresh))
}

/// A namespace with one ServiceAccount allowed `rules` in it and nothing
/// else: what a token and a member each are. Idempotent (server-side
/// apply); on failure, which object failed.
async fn account(
    api: &Api,
    ns: &str,
    name: &str,
    labels: Value,
    annotations: Value,
    rules: Value,
) -> Result<(), (&'static str, kube::Error)> {
    api.apply(
        &format!("/api/v1/namespaces/{ns}"),
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": ns, "labels": labels, "annotations": annotations }
        }),
    )
    .await
    .map_err(|e| ("namespace", e))?;
    api.apply(
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}"),
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name, "namespace": ns } }),
    )
    .await
    .map_err(|e| ("service account", e))?;
    api.apply(
        &role_path(ns, "roles", name),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": name, "namespace": ns },
            "rules": rules
        }),
    )
    .await
    .map_err(|e| ("role", e))?;
    api.apply(
        &role_path(ns, "rolebindings", name),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": name, "namespace": ns },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }]
        }),
    )
    .await
    .map_err(|e| ("role binding", e))?;
    Ok(())
}

/// Undoes [`account`]: the ServiceAccount first (the API server refuses
/// its tokens at once), then its Role, binding, the named Secrets and the
/// namespace. `false` when there was no such namespace.
async fn withdraw(api: &Api, ns: &str, name: &str, secrets: &[&str]) -> Result<bool, kube::Error> {
    if api
        .get(&format!("/api/v1/namespaces/{ns}"))
        .await?
        .is_none()
    {
        return Ok(false);
    }
    api.delete(&format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}"))
        .await?;
    api.delete(&role_path(ns, "rolebindings", name)).await?;
    api.delete(&role_path(ns, "roles", name)).await?;
    for s in secrets {
        api.delete(&format!("/api/v1/namespaces/{ns}/secrets/{s}"))
            .await?;
    }
    api.delete(&format!("/api/v1/namespaces/{ns}")).await?;
    Ok(true)
}
