//! Joining (pure): what a join token allows, whether a join request is
//! admitted, and how joined members become clusters of the fleet.
//!
//! A token is created in the *hub* of a parent: the cluster whose
//! reconciler will reach the newcomer (the parent's nearest relay, else the
//! top of the parent's tree). A newcomer presents a request there; the
//! reconciler admits it only within the token's policy and otherwise
//! writes a refusal on it. Admitted requests become *members*: clusters
//! that are part of the fleet from the next reconcile, beside the ones in
//! Git, which stay the source of truth (a Cluster document of the same
//! name wins).
//!
//! The Kubernetes side (objects, credentials) is `backend::kube::join`;
//! here is only what can be decided from values.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::model::{Cluster, ClusterSpec, Connection, Credentials, Fleet, ObjectMeta};

/// Annotation on a cluster that joined (its identity): `tree`, `status` and
/// `explain` mark it as joined, and `members export` writes it so a
/// committed member is recognised when it joins again.
pub const ANNOTATION_JOINED: &str = "canopy.dev/joined";
/// The longest cluster name a member may have: its hub namespace is
/// `canopy-member-<name>`, itself a DNS-1123 label.
pub const MAX_MEMBER_NAME: usize = 63 - "canopy-member-".len();

/// How the member is reconciled once joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The newcomer hands its parent's reconciler credentials to reach it,
    /// and is reconciled like any cluster with a connection.
    #[default]
    Push,
    /// The newcomer hands over nothing: its parent's reconciler keeps what
    /// it should run in the hub, and the newcomer's own agent pulls and
    /// applies it (for a cluster its parent cannot reach).
    Pull,
}

/// What a join token allows. Kept beside the token in its hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenPolicy {
    /// The only parent a newcomer with this token may join.
    pub parent: String,
    /// The labels a newcomer may carry: key → value, `*` for any value. A
    /// key with a fixed value is given to every member that joins with it.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch after which requests are refused.
    pub expires_at: u64,
    /// How many new members the token may admit (none: no bound).
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// New members admitted so far (a re-join of the same cluster does not
    /// count).
    #[serde(default)]
    pub uses: u32,
    pub created_at: u64,
}

/// What a newcomer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSpec {
    /// The cluster name it asks for.
    pub cluster: String,
    /// Who it is, independently of its name: the UID of its `kube-system`
    /// namespace, so the same cluster joining again is recognised.
    pub identity: String,
    /// The parent it asks for; absent: the token's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub mode: Mode,
    /// The newcomer's one-time public key (X25519, base64): the member
    /// credentials the hub hands back are sealed to it.
    pub public_key: String,
    /// Push mode: the Secret, in the token's namespace, with what reaches
    /// the newcomer (only the hub can read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_secret: Option<String>,
    /// The newcomer's long-lived identity key (Ed25519, base64): made at
    /// its first join and kept in its own cluster; the hub registers it, and
    /// a later request for the same member must be signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<String>,
    /// The signature (Ed25519, base64) of [`signed_message`] with the
    /// identity key: over every field of the request and what it hands
    /// over, so a copied signature carries nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// A cluster that joined, as its hub keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub name: String,
    pub identity: String,
    pub parent: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub mode: Mode,
    /// The token it joined with (its id).
    pub token: String,
    pub joined_at: u64,
    /// The identity key registered at its first join ([`RequestSpec::identity_key`]);
    /// a request for this member must be signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<String>,
}

/// Why a request was refused; written on the request, so each says what to
/// do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token was revoked (or never existed here): ask for a new one with `canopy token create --parent <parent>`")]
    Revoked,
    #[error("the token expired {ago}s ago: ask for a new one with `canopy token create`")]
    Expired { ago: u64 },
    #[error("the token was already used {max} time(s), its limit: ask for a new one, or one with a higher --max-uses")]
    UsedUp { max: u32 },
    #[error("the request asks for parent {asked:?}, but the token allows only {allowed:?}: leave --parent out, or use a token for {asked:?}")]
    WrongParent { asked: String, allowed: String },
    #[error("parent {parent:?} is not a cluster this hub reconciles: create the token in the hub of {parent:?}")]
    ParentNotHere { parent: String },
    #[error("cluster name {name:?} is not usable: {why}")]
    BadName { name: String, why: String },
    #[error("label {key}={value:?} is not allowed by the token (it allows {allowed}): drop the label or ask for a token that allows it")]
    LabelNotAllowed {
        key: String,
        value: String,
        allowed: String,
    },
    #[error("label {key}={value:?} is not a valid Kubernetes label: {why}")]
    BadLabel {
        key: String,
        value: String,
        why: String,
    },
    #[error("the name {name:?} is taken by {by}: join with another --name")]
    NameTaken { name: String, by: String },
    #[error("this cluster already joined as {name:?}: run `canopy leave` first, or join again with --name {name}")]
    AlreadyMember { name: String },
    #[error("the request is malformed: {why}")]
    Malformed { why: String },
    #[error("the request's signature does not verify with the identity key it carries: join again with `canopy join`")]
    BadSignature,
    #[error("cluster {name:?} is a member whose identity key is another: only the member itself (signing with the key registered at its first join) may join as it")]
    NotTheMember { name: String },
    #[error("cluster {name:?} was admitted before identity keys were registered, so no request can prove to be it: remove it with `canopy members remove {name}` and join again")]
    NoRegisteredKey { name: String },
    #[error("the credentials handed over reach a cluster whose kube-system UID is {seen:?}, not {claimed:?} as the request says")]
    IdentityMismatch { claimed: String, seen: String },
    #[error("the hub cannot reach the cluster with the credentials handed over: {why}; check --advertise (the URL the parent reaches it at) and join again")]
    Unreachable { why: String },
}

/// What the hub found out itself about a request, beyond what it says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Push mode: [`push_digest`] of the credentials handed over.
    pub push_digest: Option<String>,
    /// Push mode: the UID of `kube-system` as read through those
    /// credentials, or why it could not be read.
    pub observed_identity: Option<Result<String, String>>,
}

/// The digest a push-mode request's signature covers for what it hands
/// over (SHA-256 of server, CA and token, hex).
pub fn push_digest(creds: &Credentials) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [&creds.server, &creds.ca_pem, &creds.token] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a request's identity key signs: a fixed prefix, then each field
/// length-prefixed (so no two requests give one message), the labels in
/// key order, and the digest of what it hands over (empty in pull mode).
pub fn signed_message(req: &RequestSpec, push_digest: &str) -> Vec<u8> {
    let mut out = b"canopy.dev join request v1\n".to_vec();
    let mut part = |s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let mode = match req.mode {
        Mode::Push => "push",
        Mode::Pull => "pull",
    };
    part(&req.cluster);
    part(&req.identity);
    part(req.parent.as_deref().unwrap_or(""));
    part(mode);
    part(&req.public_key);
    part(req.push_secret.as_deref().unwrap_or(""));
    part(req.identity_key.as_deref().unwrap_or(""));
    part(&req.labels.len().to_string());
    for (k, v) in &req.labels {
        part(k);
        part(v);
    }
    part(push_digest);
    out
}

/// Whether `req` is signed with the identity key it carries.
fn signed(req: &RequestSpec, push_digest: &str) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(key), Some(sig)) = (&req.identity_key, &req.signature) else {
        return false;
    };
    let (Ok(key), Ok(sig)) = (b64.decode(key), b64.decode(sig)) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(&signed_message(req, push_digest), &sig)
        .is_ok()
}

/// What the hub knows when it decides.
pub struct Known<'a> {
    /// Every cluster in Git by name (a member `members export` wrote
    /// included: it is Git's now).
    pub git: &'a std::collections::BTreeSet<&'a str>,
    /// The hub's members by name.
    pub members: &'a BTreeMap<String, Member>,
    /// Whether this hub's reconciler reconciles the children of a cluster.
    pub serves: &'a dyn Fn(&str) -> bool,
}

/// An admitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub member: Member,
    /// The same cluster (identity) joining again: it keeps its name and
    /// does not use the token up.
    pub rejoin: bool,
}

/// Admits `req`, made with token `token_id` whose policy is `policy` (none:
/// revoked), or says why not. Checks run cheapest and most telling first:
/// the token, then the parent, the name and the labels, then who the
/// request proves to be (its signature; in push mode the identity the hub
/// read itself through what was handed over, `evidence`), then
/// collisions. A name in Git is never a member's, even one `members
/// export` wrote; a member's name is only for the cluster that signs with
/// the key it registered.
pub fn decide(
    token_id: &str,
    policy: Option<&TokenPolicy>,
    req: &RequestSpec,
    evidence: &Evidence,
    now: u64,
    known: &Known<'_>,
) -> Result<Admitted, Refusal> {
    let policy = policy.ok_or(Refusal::Revoked)?;
    if now >= policy.expires_at {
        return Err(Refusal::Expired {
            ago: now - policy.expires_at,
        });
    }
    if let Some(asked) = req.parent.as_deref().filter(|p| *p != policy.parent) {
        return Err(Refusal::WrongParent {
            asked: asked.to_string(),
            allowed: policy.parent.clone(),
        });
    }
    if !(known.serves)(&policy.parent) {
        return Err(Refusal::ParentNotHere {
            parent: policy.parent.clone(),
        });
    }
    if let Some(why) = name_problem(&req.cluster) {
        return Err(Refusal::BadName {
            name: req.cluster.clone(),
            why,
        });
    }
    if req.identity.is_empty() || req.identity.len() > 128 {
        return Err(Refusal::Malformed {
            why: "spec.identity must be 1 to 128 characters".into(),
        });
    }
    let labels = allowed_labels(policy, &req.labels)?;
    if req.identity_key.is_none() || req.signature.is_none() {
        return Err(Refusal::Malformed {
            why: "it carries no identity key or signature (a newcomer of this canopy version signs its request)".into(),
        });
    }
    let digest = match (req.mode, &evidence.push_digest) {
        (Mode::Push, Some(d)) => d.as_str(),
        (Mode::Push, None) => {
            return Err(Refusal::Malformed {
                why: "a push-mode request hands over nothing".into(),
            })
        }
        (Mode::Pull, _) => "",
    };
    if !signed(req, digest) {
        return Err(Refusal::BadSignature);
    }
    if req.mode == Mode::Push {
        match &evidence.observed_identity {
            Some(Ok(seen)) if *seen == req.identity => {}
            Some(Ok(seen)) => {
                return Err(Refusal::IdentityMismatch {
                    claimed: req.identity.clone(),
                    seen: seen.clone(),
                })
            }
            Some(Err(why)) => return Err(Refusal::Unreachable { why: why.clone() }),
            None => {
                return Err(Refusal::Unreachable {
                    why: "it was not tried".into(),
                })
            }
        }
    }
    if known.git.contains(req.cluster.as_str()) {
        return Err(Refusal::NameTaken {
            name: req.cluster.clone(),
            by: "a cluster in the fleet's Git repository".into(),
        });
    }
    let same = |m: &Member| m.identity == req.identity;
    if let Some(other) = known
        .members
        .values()
        .find(|m| same(m) && m.name != req.cluster)
    {
        return Err(Refusal::AlreadyMember {
            name: other.name.clone(),
        });
    }
    let rejoin = match known.members.get(&req.cluster) {
        Some(m) if !same(m) => {
            return Err(Refusal::NameTaken {
                name: req.cluster.clone(),
                by: "another joined cluster".into(),
            })
        }
        Some(m) => match &m.identity_key {
            None => {
                return Err(Refusal::NoRegisteredKey {
                    name: m.name.clone(),
                })
            }
            Some(k) if Some(k) != req.identity_key.as_ref() => {
                return Err(Refusal::NotTheMember {
                    name: m.name.clone(),
                })
            }
            Some(_) => true,
        },
        None => false,
    };
    if !rejoin {
        if let Some(max) = policy.max_uses.filter(|m| policy.uses >= *m) {
            return Err(Refusal::UsedUp { max });
        }
    }
    Ok(Admitted {
        member: Member {
            name: req.cluster.clone(),
            identity: req.identity.clone(),
            parent: policy.parent.clone(),
            labels,
            mode: req.mode,
            token: token_id.to_string(),
            joined_at: now,
            identity_key: req.identity_key.clone(),
        },
        rejoin,
    })
}

/// The member's labels: the token's fixed labels, then the request's, each
/// of which the token must allow.
fn allowed_labels(
    policy: &TokenPolicy,
    asked: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut out: BTreeMap<String, String> = policy
        .labels
        .iter()
        .filter(|(_, v)| *v != "*")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in asked {
        if let Some(why) = label_problem(k, v) {
            return Err(Refusal::BadLabel {
                key: k.clone(),
                value: v.clone(),
                why,
            });
        }
        match policy.labels.get(k) {
            Some(allowed) if allowed == "*" || allowed == v => {
                out.insert(k.clone(), v.clone());
            }
            _ => {
                return Err(Refusal::LabelNotAllowed {
                    key: k.clone(),
                    value: v.clone(),
                    allowed: if policy.labels.is_empty() {
                        "no labels".into()
                    } else {
                        policy
                            .labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                })
            }
        }
    }
    Ok(out)
}

/// Why `name` cannot be a member's name, if it cannot.
pub fn name_problem(name: &str) -> Option<String> {
    if let Some(p) = crate::core::names::problem(crate::core::names::Rule::Label, name) {
        return Some(format!("{p} (a DNS-1123 label is needed)"));
    }
    (name.len() > MAX_MEMBER_NAME)
        .then(|| format!("it is longer than {MAX_MEMBER_NAME} characters"))
}

/// Why `key=value` is not a Kubernetes label, if it is not: an optional
/// DNS subdomain prefix and `/`, then a name of at most 63 alphanumerics,
/// `-`, `_` and `.`, alphanumeric at both ends; the value likewise or empty.
pub fn label_problem(key: &str, value: &str) -> Option<String> {
    fn part(s: &str) -> bool {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
    }
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if crate::core::names::problem(crate::core::names::Rule::Subdomain, prefix).is_some() {
                return Some(format!(
                    "the key's prefix {prefix:?} is not a DNS subdomain"
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !part(name) {
        return Some("the key must be at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends".into());
    }
    if !part(value) {
        return Some("the value must be at most 63 letters, digits, '-', '_' or '.', alphanumeric at both ends".into());
    }
    None
}

/// Parses `k=v,k2=v2` (the `--labels` flag). `allow_any`: a value may be
/// `*` (a token's policy).
pub fn parse_labels(s: &str, allow_any: bool) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        if !(allow_any && v == "*") {
            if let Some(why) = label_problem(k, v) {
                return Err(format!("{pair:?}: {why}"));
            }
        } else if let Some(why) = label_problem(k, "") {
            return Err(format!("{pair:?}: {why}"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// A member with what its hub holds to reach it (push mode).
#[derive(Debug, Clone)]
pub struct Reachable {
    pub member: Member,
    /// The hub cluster that keeps it (for messages and `members`).
    pub hub: String,
    pub credentials: Option<Arc<Credentials>>,
    /// Pull mode: the hub's connection, where what it runs is kept.
    pub via: Option<Arc<Connection>>,
}

/// Adds the members to `fleet` as clusters, marked joined. A Cluster
/// document of the same name in Git wins (its spec stays; if it says
/// `connection: {joined: true}`, the member's credentials are filled in);
/// a member whose parent is no longer in the fleet is left out, with a
/// warning.
pub fn add_members(fleet: &mut Fleet, members: &[Reachable]) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let mut known: BTreeMap<String, usize> = fleet
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name().to_string(), i))
        .collect();
    for r in members {
        let m = &r.member;
        if let Some(&i) = known.get(&m.name) {
            // Copied when shared with the loader's kept parse: the
            // credentials are this run's, not the document's.
            let c = Arc::make_mut(&mut fleet.clusters[i]);
            let exported = c.meta.annotations.get(ANNOTATION_JOINED) == Some(&m.identity);
            if let Some(conn) = c.spec.connection.as_mut().filter(|c| c.joined) {
                if exported {
                    conn.credentials = r.credentials.clone();
                    conn.pulled_via = r.via.clone();
                }
            }
            continue;
        }
        if !known.contains_key(&m.parent) {
            diags.push(Diagnostic::warning(format!(
                "joined cluster {:?} (hub {}) is left out: its parent {:?} is not in the fleet; it runs what it has until its parent is back or it is removed with `canopy members remove {}`",
                m.name, r.hub, m.parent, m.name
            )));
            continue;
        }
        let mut annotations = BTreeMap::new();
        annotations.insert(ANNOTATION_JOINED.to_string(), m.identity.clone());
        let connection = Some(Connection {
            joined: true,
            credentials: r.credentials.clone(),
            pulled_via: r.via.clone(),
            ..Default::default()
        });
        known.insert(m.name.clone(), fleet.clusters.len());
        fleet.clusters.push(Arc::new(Cluster {
            meta: ObjectMeta {
                name: m.name.clone(),
                labels: m.labels.clone(),
                annotations,
            },
            spec: ClusterSpec {
                parent: Some(m.parent.clone()),
                connection,
                ..Default::default()
            },
            source: Arc::new(crate::core::model::Source {
                file: format!("(joined, hub {})", r.hub),
                doc: crate::core::yaml::Doc {
                    line: 0,
                    value: serde_json::Value::Null,
                    lines: Default::default(),
                },
            }),
        }));
    }
    // Cluster indexes follow name order (ties in a division go to the
    // smaller name), so members take their places among the others.
    fleet.clusters.sort_by(|a, b| a.name().cmp(b.name()));
    diags
}

/// Which hub serves newcomers under each parent, for the reconciler that
/// runs at `relay` (`None`: the root process). A parent's hub is its
/// nearest relay at or above it (whose agent reconciles its children),
/// else the top of its tree; this reconciler serves the parents whose hub
/// is its own: for the root, every parent with no relay at or above it;
/// for a relay, the parents of its subtree with no nearer relay. Read
/// before validation, so a cycle or a missing parent only ends the walk.
pub fn hubs(
    fleet: &Fleet,
    relay: Option<&str>,
) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let by_name: BTreeMap<&str, &Cluster> =
        fleet.clusters.iter().map(|c| (c.name(), &**c)).collect();
    let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for c in &fleet.clusters {
        let Some((hub, is_relay)) = walk_to_hub(&by_name, c) else {
            continue;
        };
        let ours = match relay {
            None => !is_relay,
            Some(r) => is_relay && hub == r,
        };
        if ours {
            out.entry(hub.to_string())
                .or_default()
                .insert(c.name().to_string());
        }
    }
    out
}

/// The hub of parent `cluster` (see [`hubs`]) and whether it is a relay.
pub fn hub_of(fleet: &Fleet, cluster: &str) -> Option<(String, bool)> {
    let by_name: BTreeMap<&str, &Cluster> =
        fleet.clusters.iter().map(|c| (c.name(), &**c)).collect();
    let c = by_name.get(cluster)?;
    walk_to_hub(&by_name, c).map(|(h, r)| (h.to_string(), r))
}

/// From `c` up to its nearest relay (inclusive), else to its top; `None`
/// on a cycle.
fn walk_to_hub<'a>(
    by_name: &BTreeMap<&str, &'a Cluster>,
    c: &'a Cluster,
) -> Option<(&'a str, bool)> {
    let mut at = c;
    for _ in 0..=by_name.len() {
        if at.spec.relay.is_some() {
            return Some((at.name(), true));
        }
        match at.spec.parent.as_deref().and_then(|p| by_name.get(p)) {
            Some(p) => at = p,
            None => return Some((at.name(), false)),
        }
    }
    None
}

/// Whether a cluster joined (rather than being written in Git).
pub fn is_joined(c: &Cluster) -> bool {
    c.meta.annotations.contains_key(ANNOTATION_JOINED)
}

/// The Cluster document that commits member `m` to Git: its parent and
/// labels, reached with the credentials it handed over (push mode), and
/// its identity, so the same cluster joining again is recognised.
pub fn cluster_document(m: &Member) -> String {
    let spec = serde_json::json!({ "parent": m.parent, "connection": { "joined": true } });
    let mut meta = serde_json::json!({
        "name": m.name,
        "annotations": { ANNOTATION_JOINED: m.identity },
    });
    if !m.labels.is_empty() {
        meta["labels"] = serde_json::to_value(&m.labels).unwrap_or_default();
    }
    let doc = serde_json::json!({
        "apiVersion": crate::core::model::API_VERSION,
        "kind": "Cluster",
        "metadata": meta,
        "spec": spec,
    });
    crate::core::yaml_out::to_yaml(&doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TokenPolicy {
        TokenPolicy {
            parent: "eu".into(),
            labels: [("tier", "edge"), ("site", "*")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            expires_at: 1000,
            max_uses: Some(2),
            uses: 0,
            created_at: 0,
        }
    }

    /// The digest of what a test's push-mode newcomer hands over.
    const DIGEST: &str = "digest-of-what-it-hands-over";

    /// A test identity key, the same for the same seed.
    fn key(seed: u8) -> ring::signature::Ed25519KeyPair {
        ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    /// `r` with key `seed`'s identity key and its signature over `digest`.
    fn sign(mut r: RequestSpec, seed: u8, digest: &str) -> RequestSpec {
        use base64::Engine;
        use ring::signature::KeyPair;
        let b64 = base64::engine::general_purpose::STANDARD;
        let k = key(seed);
        r.identity_key = Some(b64.encode(k.public_key().as_ref()));
        r.signature = None;
        r.signature = Some(b64.encode(k.sign(&signed_message(&r, digest)).as_ref()));
        r
    }

    /// A push-mode request of cluster `id`, signed with its own key.
    fn req(name: &str, id: &str) -> RequestSpec {
        let r = RequestSpec {
            cluster: name.into(),
            identity: id.into(),
            parent: None,
            labels: [("site".to_string(), "berlin".to_string())].into(),
            mode: Mode::Push,
            public_key: "k".into(),
            push_secret: Some("push-x".into()),
            identity_key: None,
            signature: None,
        };
        sign(r, id.bytes().fold(7, u8::wrapping_add), DIGEST)
    }

    /// What the hub finds for a push request that told the truth.
    fn truthful(r: &RequestSpec) -> Evidence {
        Evidence {
            push_digest: Some(DIGEST.into()),
            observed_identity: Some(Ok(r.identity.clone())),
        }
    }

    fn decide_with(
        p: Option<&TokenPolicy>,
        r: &RequestSpec,
        members: &BTreeMap<String, Member>,
        git: &[&str],
    ) -> Result<Admitted, Refusal> {
        decide_found(p, r, &truthful(r), members, git)
    }

    fn decide_found(
        p: Option<&TokenPolicy>,
        r: &RequestSpec,
        evidence: &Evidence,
        members: &BTreeMap<String, Member>,
        git: &[&str],
    ) -> Result<Admitted, Refusal> {
        let serves = |c: &str| c == "eu" || c == "us";
        let git = git.iter().copied().collect();
        let known = Known {
            git: &git,
            members,
            serves: &serves,
        };
        decide("abc", p, r, evidence, 500, &known)
    }

    #[test]
    fn admits_within_policy_with_fixed_labels() {
        let a = decide_with(Some(&policy()), &req("shop-1", "u1"), &BTreeMap::new(), &[]).unwrap();
        assert!(!a.rejoin);
        assert_eq!(a.member.parent, "eu");
        assert_eq!(
            a.member.labels,
            [("site", "berlin"), ("tier", "edge")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        );
    }

    #[test]
    fn refuses_outside_policy() {
        let none = BTreeMap::new();
        let p = policy();
        assert_eq!(
            decide_with(None, &req("a", "u"), &none, &[]),
            Err(Refusal::Revoked)
        );
        let mut old = p.clone();
        old.expires_at = 400;
        assert_eq!(
            decide_with(Some(&old), &req("a", "u"), &none, &[]),
            Err(Refusal::Expired { ago: 100 })
        );
        let mut used = p.clone();
        used.uses = 2;
        assert_eq!(
            decide_with(Some(&used), &req("a", "u"), &none, &[]),
            Err(Refusal::UsedUp { max: 2 })
        );
        let mut other = req("a", "u");
        other.parent = Some("us".into());
        assert!(matches!(
            decide_with(Some(&p), &other, &none, &[]),
            Err(Refusal::WrongParent { .. })
        ));
        let mut lab = req("a", "u");
        lab.labels.insert("tier".into(), "core".into());
        assert!(matches!(
            decide_with(Some(&p), &lab, &none, &[]),
            Err(Refusal::LabelNotAllowed { .. })
        ));
        let mut lab = req("a", "u");
        lab.labels.insert("team".into(), "x".into());
        assert!(matches!(
            decide_with(Some(&p), &lab, &none, &[]),
            Err(Refusal::LabelNotAllowed { .. })
        ));
        assert!(matches!(
            decide_with(Some(&p), &req("Bad_Name", "u"), &none, &[]),
            Err(Refusal::BadName { .. })
        ));
        let mut far = p.clone();
        far.parent = "asia".into();
        assert!(matches!(
            decide_with(Some(&far), &req("a", "u"), &none, &[]),
            Err(Refusal::ParentNotHere { .. })
        ));
    }

    #[test]
    fn names_identities_and_rejoins() {
        let p = policy();
        let first = decide_with(Some(&p), &req("shop", "u1"), &BTreeMap::new(), &[])
            .unwrap()
            .member;
        let members: BTreeMap<String, Member> = [("shop".to_string(), first)].into();
        // The same cluster again: admitted, same member, no use counted.
        let mut used = p.clone();
        used.uses = 2;
        let again = decide_with(Some(&used), &req("shop", "u1"), &members, &[]).unwrap();
        assert!(again.rejoin);
        // Another cluster with the same name: refused.
        assert!(matches!(
            decide_with(Some(&p), &req("shop", "u2"), &members, &[]),
            Err(Refusal::NameTaken { .. })
        ));
        // The same cluster under another name: refused.
        assert_eq!(
            decide_with(Some(&p), &req("shop-b", "u1"), &members, &[]),
            Err(Refusal::AlreadyMember {
                name: "shop".into()
            })
        );
        // A Git cluster's name: refused, also when `members export` wrote
        // it from this very member.
        assert!(matches!(
            decide_with(Some(&p), &req("eu", "u3"), &BTreeMap::new(), &["eu"]),
            Err(Refusal::NameTaken { .. })
        ));
        assert!(matches!(
            decide_with(Some(&p), &req("shop", "u1"), &members, &["shop"]),
            Err(Refusal::NameTaken { .. })
        ));
    }

    #[test]
    fn a_member_is_only_the_cluster_that_signs_with_its_key() {
        let p = policy();
        let first = decide_with(Some(&p), &req("shop", "u1"), &BTreeMap::new(), &[])
            .unwrap()
            .member;
        assert!(first.identity_key.is_some(), "its key is registered");
        let members: BTreeMap<String, Member> = [("shop".to_string(), first.clone())].into();
        // Its UID is no secret: a request that claims it, signed with
        // another key, is not the member.
        let forged = sign(req("shop", "u1"), 99, DIGEST);
        assert_eq!(
            decide_with(Some(&p), &forged, &members, &[]),
            Err(Refusal::NotTheMember {
                name: "shop".into()
            })
        );
        // A member an older canopy admitted has no key to prove.
        let mut keyless = first.clone();
        keyless.identity_key = None;
        let old: BTreeMap<String, Member> = [("shop".to_string(), keyless)].into();
        assert_eq!(
            decide_with(Some(&p), &req("shop", "u1"), &old, &[]),
            Err(Refusal::NoRegisteredKey {
                name: "shop".into()
            })
        );
        // A signature covers every field and what is handed over.
        let mut tampered = req("shop", "u1");
        tampered.labels.insert("site".into(), "munich".into());
        assert_eq!(
            decide_with(Some(&p), &tampered, &members, &[]),
            Err(Refusal::BadSignature)
        );
        let swapped = Evidence {
            push_digest: Some("credentials of another cluster".into()),
            ..truthful(&req("shop", "u1"))
        };
        assert_eq!(
            decide_found(Some(&p), &req("shop", "u1"), &swapped, &members, &[]),
            Err(Refusal::BadSignature)
        );
        let mut unsigned = req("shop-2", "u2");
        unsigned.signature = None;
        assert!(matches!(
            decide_with(Some(&p), &unsigned, &BTreeMap::new(), &[]),
            Err(Refusal::Malformed { .. })
        ));
        // In push mode the hub reads the identity itself.
        let elsewhere = Evidence {
            observed_identity: Some(Ok("u9".into())),
            ..truthful(&req("shop", "u1"))
        };
        assert_eq!(
            decide_found(Some(&p), &req("shop", "u1"), &elsewhere, &members, &[]),
            Err(Refusal::IdentityMismatch {
                claimed: "u1".into(),
                seen: "u9".into()
            })
        );
        let unreachable = Evidence {
            observed_identity: Some(Err("connection refused".into())),
            ..truthful(&req("shop", "u1"))
        };
        assert!(matches!(
            decide_found(Some(&p), &req("shop", "u1"), &unreachable, &members, &[]),
            Err(Refusal::Unreachable { .. })
        ));
        // The member itself, with its key: again, in pull mode too.
        assert!(
            decide_with(Some(&p), &req("shop", "u1"), &members, &[])
                .unwrap()
                .rejoin
        );
        let mut pull = req("shop", "u1");
        pull.mode = Mode::Pull;
        pull.push_secret = None;
        let pull = sign(pull, "u1".bytes().fold(7, u8::wrapping_add), "");
        let a = decide_found(Some(&p), &pull, &Evidence::default(), &members, &[]).unwrap();
        assert!(a.rejoin);
    }

    #[test]
    fn each_parent_has_one_hub() {
        let text = "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: top}\nspec: {connection: {}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: eu}\nspec: {parent: top}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: relay}\nspec: {parent: eu, relay: {}}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: shop}\nspec: {parent: relay}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: other}\n";
        let (fleet, diags) = crate::core::load::load_files(
            "f".into(),
            vec![("c.yaml".into(), text.as_bytes().to_vec())],
        );
        assert!(!diags.has_errors(), "{diags:?}");
        let root = hubs(&fleet, None);
        let names = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(root["top"], names(&["top", "eu"]));
        assert_eq!(root["other"], names(&["other"]));
        assert!(!root.contains_key("relay"));
        let below = hubs(&fleet, Some("relay"));
        assert_eq!(below.len(), 1);
        assert_eq!(below["relay"], names(&["relay", "shop"]));
    }

    /// Replicas of workload `web` per cluster, by name.
    fn replicas(fleet: Fleet) -> BTreeMap<String, u32> {
        let (checked, diags) = crate::core::validate::check(fleet);
        assert!(!diags.has_errors(), "{diags:?}");
        let checked = checked.unwrap();
        let r = crate::core::render::Renderer::new(&checked);
        (0..checked.topo.len())
            .filter_map(|c| {
                let n = r.workloads_on(c).into_iter().find_map(|(_, n)| n)?;
                Some((checked.topo.name(c).to_string(), n))
            })
            .collect()
    }

    #[test]
    fn a_member_takes_part_of_its_parents_share_and_nothing_else_moves() {
        let text = "apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: top}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: eu, labels: {run: x}}\nspec: {parent: top}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: us, labels: {run: x}}\nspec: {parent: top}\n---\n\
apiVersion: canopy.dev/v1alpha1\nkind: Cluster\nmetadata: {name: us-2, labels: {run: x}}\nspec: {parent: us}\n";
        let workload = "apiVersion: canopy.dev/v1alpha1\nkind: Workload\nmetadata: {name: web}\nspec:\n  placement:\n    clusters: {selector: {matchLabels: {run: x}}}\n    replicas: {mode: Divided, total: 12}\n";
        let files = vec![
            ("f.yaml".to_string(), text.as_bytes().to_vec()),
            ("workloads/web/workload.yaml".to_string(), workload.as_bytes().to_vec()),
            (
                "workloads/web/d.yaml".to_string(),
                b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n".to_vec(),
            ),
        ];
        let (before, d) = crate::core::load::load_files("f".into(), files.clone());
        assert!(!d.has_errors(), "{d:?}");
        let before = replicas(before);
        let (mut after, _) = crate::core::load::load_files("f".into(), files);
        let member = |name: &str, parent: &str| Reachable {
            member: Member {
                name: name.into(),
                identity: format!("id-{name}"),
                parent: parent.into(),
                labels: [("run".to_string(), "x".to_string())].into(),
                mode: Mode::Push,
                token: "t".into(),
                joined_at: 0,
                identity_key: None,
            },
            hub: "top".into(),
            credentials: None,
            via: None,
        };
        add_members(
            &mut after,
            &[member("eu-shop", "eu"), member("eu-cell", "eu")],
        );
        let names: Vec<&str> = after.clusters.iter().map(|c| c.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "members keep the name order");
        let after = replicas(after);
        // us and its subtree keep exactly what they had; eu's share is now
        // divided among eu and its two members.
        for c in ["us", "us-2"] {
            assert_eq!(before.get(c), after.get(c), "{c}: {before:?} -> {after:?}");
        }
        let eu_before = before["eu"];
        let eu_after: u32 = ["eu", "eu-shop", "eu-cell"].iter().map(|c| after[*c]).sum();
        assert_eq!(eu_before, eu_after, "{before:?} -> {after:?}");
        assert!(after["eu-shop"] > 0 && after["eu-cell"] > 0, "{after:?}");
    }

    #[test]
    fn label_flags() {
        assert_eq!(parse_labels("a=b, example.com/c=*", true).unwrap().len(), 2);
        assert!(parse_labels("a=*", false).is_err());
        assert!(parse_labels("a", true).is_err());
        assert!(parse_labels("-a=b", true).is_err());
        assert!(label_problem("x/y/z", "v").is_some());
        assert!(label_problem("app", "").is_none());
    }

    #[test]
    fn exported_document_loads_back_as_the_member() {
        let m = Member {
            name: "shop".into(),
            identity: "u1".into(),
            parent: "eu".into(),
            labels: [("site".to_string(), "berlin".to_string())].into(),
            mode: Mode::Push,
            token: "abc".into(),
            joined_at: 1,
            identity_key: Some("a-key".into()),
        };
        let text = cluster_document(&m);
        let (fleet, diags) = crate::core::load::load_files(
            "f".into(),
            vec![("shop.yaml".into(), text.into_bytes())],
        );
        assert!(!diags.has_errors(), "{diags:?}");
        let c = &fleet.clusters[0];
        assert_eq!(c.spec.parent.as_deref(), Some("eu"));
        assert!(c.spec.connection.as_ref().unwrap().joined);
        assert!(is_joined(c));
        assert_eq!(c.meta.labels, m.labels);
    }
}
