//! The newcomer's side of joining: `canopy join` and `canopy leave`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::backend::kube::{pin, seal};
use crate::core::join::{Mode, RequestSpec};
use crate::core::model::Credentials;

/// What `canopy join` was asked.
pub struct Ask {
    pub url: String,
    pub token: String,
    pub ca_sha256: String,
    pub name: String,
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub mode: Mode,
    /// How the parent reaches the newcomer (push mode): its API server URL
    /// as the parent sees it; absent: the newcomer's kubeconfig's.
    pub advertise: Option<String>,
    /// Lifetime of the credentials handed over (renewed by the parent).
    pub credential_seconds: u64,
    pub timeout: Duration,
}

/// A newcomer that joined.
#[derive(Debug, Clone)]
pub struct Joined {
    pub name: String,
    pub parent: String,
    pub namespace: String,
    pub rejoin: bool,
    pub identity: String,
}

/// The namespace a join token belongs to, from the token itself (a
/// ServiceAccount token names it; the server checks the rest).
fn namespace_of_token(token: &str) -> Result<String, JoinError> {
    let bad = || {
        JoinError::Invalid("--token is not a canopy join token (from `canopy token create`)".into())
    };
    let claims = claims(token).ok_or_else(bad)?;
    let sub = claims["sub"].as_str().ok_or_else(bad)?;
    let ns = sub
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.strip_suffix(":join"))
        .filter(|ns| ns.starts_with("canopy-join-"))
        .ok_or_else(bad)?;
    Ok(ns.to_string())
}

/// The CA of the newcomer's own API server, as the parent will pin it: its
/// kubeconfig's, else the root-most certificate its server presents.
fn own_ca(config: &kube::Config, server: &str, timeout: Duration) -> Result<String, JoinError> {
    if let Some(certs) = config.root_cert.as_ref().filter(|c| !c.is_empty()) {
        return Ok(certs.iter().map(|c| pin::to_pem(c)).collect());
    }
    let chain = pin::presented_chain(server, timeout).map_err(JoinError::Pin)?;
    Ok(pin::to_pem(
        pin::presented_ca(&chain).expect("a chain is never empty"),
    ))
}

/// Joins the cluster of `own` (its kubeconfig's) to a parent through the
/// hub at `ask.url`: pins the hub's CA, hands over credentials (push
/// mode), asks, waits for the verdict, and keeps the sealed answer in its
/// own cluster.
pub async fn join(own: &Api, own_config: &kube::Config, ask: &Ask) -> Result<Joined, JoinError> {
    if let Some(why) = crate::core::join::name_problem(&ask.name) {
        return Err(JoinError::Invalid(format!("--name {:?}: {why}", ask.name)));
    }
    let token_ns = namespace_of_token(&ask.token)?;
    // Pin before anything is sent: the token never reaches a server that
    // does not hold the pinned key.
    let url = ask.url.clone();
    let timeout = ask.timeout;
    let chain = tokio::task::spawn_blocking(move || pin::presented_chain(&url, timeout))
        .await
        .map_err(|e| JoinError::Pin(e.to_string()))?
        .map_err(JoinError::Pin)?;
    let ca = pin::pinned(&chain, &ask.ca_sha256).map_err(JoinError::Pin)?;
    let hub = connect_with(
        &Credentials {
            server: ask.url.clone(),
            ca_pem: pin::to_pem(&ca),
            token: ask.token.clone(),
        },
        "the parent's hub",
        ask.timeout,
    )?;
    let identity = own
        .get("/api/v1/namespaces/kube-system")
        .await
        .map_err(|e| {
            own.fail(
                "reading the kube-system namespace (the cluster's identity)",
                e,
            )
        })?
        .and_then(|n| n["metadata"]["uid"].as_str().map(str::to_string))
        .ok_or_else(|| {
            JoinError::Invalid(format!(
                "{}: has no kube-system namespace to identify it",
                own.cluster
            ))
        })?;

    let opener = seal::Opener::new().map_err(JoinError::Invalid)?;
    let public_key = opener.public_key();
    // The identity key made at this cluster's first join (a new one if it
    // never joined): a member's name is only for the key it registered.
    let key_pkcs8 = match membership(own).await?.and_then(|m| m.identity_key) {
        Some(k) => k,
        None => new_identity_key()?,
    };
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(&key_pkcs8).map_err(|_| {
        JoinError::Invalid(
            "this cluster's identity key is damaged: run `canopy leave`, then join again".into(),
        )
    })?;
    let (push_secret, digest) = match ask.mode {
        Mode::Push => {
            let (name, creds) =
                hand_over_secret(own, own_config, ask, &hub, &token_ns, &public_key).await?;
            (name, crate::core::join::push_digest(&creds))
        }
        Mode::Pull => (None, String::new()),
    };
    let mut spec = RequestSpec {
        cluster: ask.name.clone(),
        identity: identity.clone(),
        parent: ask.parent.clone(),
        labels: ask.labels.clone(),
        mode: ask.mode,
        public_key,
        push_secret,
        identity_key: Some(B64.encode(ring::signature::KeyPair::public_key(&key).as_ref())),
        signature: None,
    };
    let message = crate::core::join::signed_message(&spec, &digest);
    spec.signature = Some(B64.encode(key.sign(&message).as_ref()));
    let spec_json = serde_json::to_value(&spec).unwrap_or_default();
    let created = hub
        .post(
            &requests_path(&token_ns),
            json!({
                "apiVersion": GROUP_VERSION, "kind": "JoinRequest",
                "metadata": { "generateName": format!("{}-", ask.name) },
                "spec": spec_json
            }),
        )
        .await
        .map_err(|e| hub.fail("creating the join request", e))?;
    let request = created["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let path = format!("{}/{request}", requests_path(&token_ns));
    let start = Instant::now();
    let status = loop {
        let r = hub
            .get(&path)
            .await
            .map_err(|e| hub.fail("reading the join request", e))?
            .unwrap_or_default();
        if !r["status"]["phase"].is_null() {
            break r["status"].clone();
        }
        if start.elapsed() > ask.timeout {
            return Err(JoinError::Timeout {
                request: format!("{token_ns}/{request}"),
                waited: ask.timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    if status["phase"] != "Approved" {
        return Err(JoinError::Refused(
            status["reason"]
                .as_str()
                .unwrap_or("no reason given")
                .to_string(),
        ));
    }
    ensure_namespace(own).await?;
    let back: Handback = opener
        .open(status["sealed"].as_str().unwrap_or_default())
        .map_err(JoinError::Invalid)
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| JoinError::Invalid(e.to_string())))?;
    store_membership(
        own,
        &Membership {
            name: ask.name.clone(),
            parent: back.parent.clone(),
            namespace: back.namespace.clone(),
            hub: Credentials {
                server: ask.url.clone(),
                ca_pem: pin::to_pem(&ca),
                token: back.token,
            },
            expires_at: Some(back.expires_at),
            identity_key: Some(key_pkcs8),
        },
    )
    .await
    .map_err(|e| own.fail("storing the membership", e))?;
    Ok(Joined {
        name: ask.name.clone(),
        parent: back.parent,
        namespace: back.namespace,
        rejoin: status["rejoin"].as_bool().unwrap_or(false),
        identity,
    })
}

/// A new identity key (Ed25519, PKCS#8).
fn new_identity_key() -> Result<Vec<u8>, JoinError> {
    ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| JoinError::Invalid("no randomness for an identity key".into()))
}

/// Push mode: hands over what reaches this cluster, in a Secret only the
/// hub can read (the token may create Secrets, not read them), bound to
/// this request by its one-time key. Returns the Secret's name and what it
/// holds (the request's signature covers it).
async fn hand_over_secret(
    own: &Api,
    own_config: &kube::Config,
    ask: &Ask,
    hub: &Api,
    token_ns: &str,
    public_key: &str,
) -> Result<(Option<String>, Credentials), JoinError> {
    let creds = hand_over(own, own_config, ask).await?;
    let mut handed = secret(
        "",
        token_ns,
        json!({ LABEL_MEMBER: "handed-over" }),
        &[
            ("server", creds.server.as_str()),
            ("ca.crt", creds.ca_pem.as_str()),
            ("token", creds.token.as_str()),
            ("publicKey", public_key),
        ],
    );
    handed["metadata"]["generateName"] = json!("push-");
    if let Some(m) = handed["metadata"].as_object_mut() {
        m.remove("name");
    }
    let name = hub
        .post(&format!("/api/v1/namespaces/{token_ns}/secrets"), handed)
        .await
        .map_err(|e| hub.fail("handing over the credentials to reach this cluster", e))?
        ["metadata"]["name"]
        .as_str()
        .map(str::to_string);
    Ok((name, creds))
}

/// The newcomer's `canopy-system` namespace, where it keeps its
/// membership (and, in push mode, the ServiceAccount its parent uses).
async fn ensure_namespace(own: &Api) -> Result<(), JoinError> {
    own.apply(
        &format!("/api/v1/namespaces/{NEWCOMER_NAMESPACE}"),
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NEWCOMER_NAMESPACE } }),
    )
    .await
    .map_err(|e| own.fail("creating the canopy-system namespace", e))?;
    Ok(())
}

/// Push mode: a ServiceAccount in the newcomer that its parent reconciles
/// it with (cluster-admin: it applies whatever the fleet places there) and
/// may renew its own token, and a first token of it.
async fn hand_over(own: &Api, config: &kube::Config, ask: &Ask) -> Result<Credentials, JoinError> {
    let fail = |what: &str, e| own.fail(format!("preparing the parent's access: {what}"), e);
    ensure_namespace(own).await?;
    own.apply(
        &format!("/api/v1/namespaces/{NEWCOMER_NAMESPACE}/serviceaccounts/{PARENT_ACCOUNT}"),
        json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": { "name": PARENT_ACCOUNT, "namespace": NEWCOMER_NAMESPACE } }),
    )
    .await
    .map_err(|e| fail("service account", e))?;
    own.apply(
        &format!("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{PARENT_ACCOUNT}"),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": PARENT_ACCOUNT },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
            "subjects": [{ "kind": "ServiceAccount", "name": PARENT_ACCOUNT, "namespace": NEWCOMER_NAMESPACE }]
        }),
    )
    .await
    .map_err(|e| fail("cluster role binding", e))?;
    let (token, _) = own
        .token_for(NEWCOMER_NAMESPACE, PARENT_ACCOUNT, ask.credential_seconds)
        .await
        .map_err(|e| fail("token", e))?;
    let server = ask.advertise.clone().unwrap_or_else(|| {
        config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string()
    });
    let s = server.clone();
    let cfg = config.clone();
    let timeout = ask.timeout;
    let ca_pem = tokio::task::spawn_blocking(move || own_ca(&cfg, &s, timeout))
        .await
        .map_err(|e| JoinError::Invalid(e.to_string()))??;
    Ok(Credentials {
        server,
        ca_pem,
        token,
    })
}

/// The membership a newcomer keeps: where its hub is and its member
/// credentials there.
pub struct Membership {
    pub name: String,
    pub parent: String,
    pub namespace: String,
    pub hub: Credentials,
    /// When the member token in `hub` expires.
    pub expires_at: Option<u64>,
    /// This cluster's identity key (Ed25519, PKCS#8), registered at its
    /// first join; `None` for a membership an older canopy made.
    pub identity_key: Option<Vec<u8>>,
}

pub async fn membership(own: &Api) -> Result<Option<Membership>, JoinError> {
    let Some(s) = own
        .get(&format!(
            "/api/v1/namespaces/{NEWCOMER_NAMESPACE}/secrets/{MEMBERSHIP_SECRET}"
        ))
        .await
        .map_err(|e| own.fail("reading the membership", e))?
    else {
        return Ok(None);
    };
    let hub = credentials_of(&s)
        .ok_or_else(|| JoinError::Invalid("the membership secret is incomplete".into()))?;
    Ok(Some(Membership {
        name: field(&s, "name").unwrap_or_default(),
        parent: field(&s, "parent").unwrap_or_default(),
        namespace: field(&s, "namespace").unwrap_or_default(),
        expires_at: field(&s, "expires").and_then(|e| e.parse().ok()),
        identity_key: field(&s, "identityKey").and_then(|k| B64.decode(k).ok()),
        hub,
    }))
}

/// Keeps `m` in this cluster: the one writer of the Secret
/// [`membership`] reads.
async fn store_membership(own: &Api, m: &Membership) -> Result<Value, kube::Error> {
    let expires = m.expires_at.map(|e| e.to_string()).unwrap_or_default();
    let key = m
        .identity_key
        .as_ref()
        .map(|k| B64.encode(k))
        .unwrap_or_default();
    own.apply(
        &format!("/api/v1/namespaces/{NEWCOMER_NAMESPACE}/secrets/{MEMBERSHIP_SECRET}"),
        secret(
            MEMBERSHIP_SECRET,
            NEWCOMER_NAMESPACE,
            json!({ LABEL_MEMBER: "membership" }),
            &[
                ("server", m.hub.server.as_str()),
                ("ca.crt", m.hub.ca_pem.as_str()),
                ("token", m.hub.token.as_str()),
                ("namespace", m.namespace.as_str()),
                ("name", m.name.as_str()),
                ("parent", m.parent.as_str()),
                ("expires", expires.as_str()),
                ("identityKey", key.as_str()),
            ],
        ),
    )
    .await
}

/// Renews the member token this cluster keeps for its hub (its member
/// ServiceAccount may ask for its own tokens) and stores it: a member
/// never needs to join again for its credentials to stay valid.
pub async fn renew_membership(
    own: &Api,
    m: &mut Membership,
    seconds: u64,
    timeout: Duration,
) -> Result<(), JoinError> {
    let hub = connect_with(&m.hub, "the parent's hub", timeout)?;
    let (token, expires) = hub
        .token_for(&m.namespace, "member", seconds)
        .await
        .map_err(|e| hub.fail("renewing this member's credentials", e))?;
    m.hub.token = token;
    m.expires_at = Some(expires);
    store_membership(own, m)
        .await
        .map_err(|e| own.fail("storing the renewed membership", e))?;
    Ok(())
}

/// Pull mode: what the parent keeps for this member in its hub (the
/// `desired` Secret's resourceVersion and content), `None` before the
/// parent's first apply.
pub async fn pulled(
    hub: &Api,
    m: &Membership,
) -> Result<Option<(String, crate::backend::kube::pulled::Desired)>, JoinError> {
    let Some(s) = hub
        .get(&format!(
            "/api/v1/namespaces/{}/secrets/{DESIRED_SECRET}",
            m.namespace
        ))
        .await
        .map_err(|e| hub.fail("reading what the parent keeps for this cluster", e))?
    else {
        return Ok(None);
    };
    let desired = crate::backend::kube::pulled::Desired::of_secret(Some(&s))
        .map_err(|e| JoinError::Invalid(format!("the parent's store for this cluster: {e}")))?;
    let version = s["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Some((version, desired)))
}

/// Pull mode: says in the hub what this member applied.
pub async fn report_applied(hub: &Api, m: &Membership, report: &Value) -> Result<(), JoinError> {
    hub.apply(
        &format!("/api/v1/namespaces/{}/configmaps/{APPLIED_REPORT}", m.namespace),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": APPLIED_REPORT, "namespace": m.namespace, "labels": { LABEL_MEMBER: "applied" } },
            "data": { "report": report.to_string() }
        }),
    )
    .await
    .map_err(|e| hub.fail("reporting what this cluster applied", e))?;
    Ok(())
}

/// `canopy leave`: asks the hub (with the member credentials) to retire
/// this cluster, then forgets the membership and the parent's access.
pub async fn leave(own: &Api, timeout: Duration) -> Result<Option<String>, JoinError> {
    let Some(m) = membership(own).await? else {
        return Ok(None);
    };
    let hub = connect_with(&m.hub, "the parent's hub", timeout)?;
    hub.apply(
        &format!("/api/v1/namespaces/{}/configmaps/leave", m.namespace),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "leave", "namespace": m.namespace, "labels": { LABEL_MEMBER: "leave" } },
            "data": { "at": now().to_string() }
        }),
    )
    .await
    .map_err(|e| hub.fail("asking to leave", e))?;
    let fail = |e| own.fail("forgetting the membership", e);
    own.delete(&format!(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{PARENT_ACCOUNT}"
    ))
    .await
    .map_err(fail)?;
    own.delete(&format!(
        "/api/v1/namespaces/{NEWCOMER_NAMESPACE}/serviceaccounts/{PARENT_ACCOUNT}"
    ))
    .await
    .map_err(fail)?;
    own.delete(&format!(
        "/api/v1/namespaces/{NEWCOMER_NAMESPACE}/secrets/{MEMBERSHIP_SECRET}"
    ))
    .await
    .map_err(fail)?;
    Ok(Some(m.name))
}
