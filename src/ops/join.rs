//! Members in every run: before a fleet is validated, its hubs are read
//! and their joined members become clusters of it. A reconciler (`apply`,
//! `watch`, the relay agent) first answers the join requests waiting in
//! its hubs, retires members that asked to leave and renews the
//! credentials that reach push-mode members; a command that only looks
//! (`tree`, `explain`, `status`, `diff`) reads the members as they are.
//!
//! A hub that cannot be reached costs its members for this run only (a
//! warning says so); nothing of theirs is pruned, because a cluster that
//! is not in the fleet is pruned only with `--prune-clusters`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;

use crate::backend::kube::connect;
use crate::backend::kube::join::{self as hub, Api, JoinError, Kept};
use crate::core::diag::{Diagnostic, Diagnostics};
use crate::core::join::{self, Known, Reachable, Refusal};
use crate::core::model::{Connection, Fleet};

/// What a reconciler did in its hubs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Admitted {
        hub: String,
        cluster: String,
        parent: String,
        rejoin: bool,
        /// The token a new member used up one use of.
        token: Option<String>,
    },
    Refused {
        hub: String,
        request: String,
        cluster: String,
        reason: String,
    },
    Renewed {
        hub: String,
        cluster: String,
    },
    Left {
        hub: String,
        cluster: String,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Admitted {
                hub,
                cluster,
                parent,
                rejoin,
                ..
            } => write!(
                f,
                "{} {cluster} under {parent} (hub {hub})",
                if *rejoin { "joined again:" } else { "joined:" }
            ),
            Event::Refused {
                hub,
                request,
                cluster,
                reason,
            } => write!(
                f,
                "refused join request {request} for {cluster:?} (hub {hub}): {reason}"
            ),
            Event::Renewed { hub, cluster } => {
                write!(
                    f,
                    "renewed the credentials that reach {cluster} (hub {hub})"
                )
            }
            Event::Left { hub, cluster } => write!(f, "left: {cluster} (hub {hub})"),
        }
    }
}

/// How a run treats its hubs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Answer requests, retire leavers, renew credentials, then read.
    Reconcile,
    /// Only read the members.
    Look,
}

/// The hubs of a reconciler, kept across rounds (`watch`, the agent): one
/// runtime and one client per hub.
pub struct Joiner {
    runtime: tokio::runtime::Runtime,
    /// Where relative kubeconfig paths start.
    base: PathBuf,
    /// The relay this reconciler runs in; `None` for the root process.
    relay: Option<String>,
    /// The relay's own cluster (its hub), when it runs in one.
    home: Option<Connection>,
    role: Role,
    clients: BTreeMap<String, (Connection, Api)>,
    /// What the last read saw, per hub: to tell a poll whether to run.
    seen: BTreeMap<String, u64>,
    /// The hubs of the last fleet gathered.
    last_hubs: Vec<(String, Connection, BTreeSet<String>)>,
    /// The members the last gather found.
    last_members: Vec<Reachable>,
    /// The hubs the last gather could not read.
    unread: Vec<String>,
    /// Lifetime of the member credentials handed back.
    pub credential_seconds: u64,
    /// Renew push credentials that expire within this.
    pub renew_before: Duration,
    pub timeout: Duration,
}

/// The fingerprint of what a hub holds that changes the fleet: pending
/// requests, members and their credentials.
fn fingerprint(pending: usize, members: &BTreeMap<String, Kept>) -> u64 {
    let mut h = crate::core::hash::StableHasher::new();
    h.u64(pending as u64);
    for (name, k) in members {
        h.str(name);
        h.str(&serde_json::to_string(&k.member).unwrap_or_default());
        h.str(
            k.credentials
                .as_ref()
                .map(|c| c.token.as_str())
                .unwrap_or_default(),
        );
        h.u64(u64::from(k.leaving));
    }
    h.finish()
}

impl Joiner {
    pub fn new(base: PathBuf, role: Role) -> std::io::Result<Joiner> {
        Ok(Joiner {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            base,
            relay: None,
            home: None,
            role,
            clients: BTreeMap::new(),
            seen: BTreeMap::new(),
            last_hubs: Vec::new(),
            last_members: Vec::new(),
            unread: Vec::new(),
            credential_seconds: 3600,
            renew_before: renew_before(),
            timeout: Duration::from_secs(10),
        })
    }

    /// A relay agent's joiner: its own cluster is its hub.
    pub fn for_relay(base: PathBuf, relay: String, home: Connection) -> std::io::Result<Joiner> {
        let mut j = Joiner::new(base, Role::Reconcile)?;
        j.relay = Some(relay);
        j.home = Some(home);
        Ok(j)
    }

    /// The hubs this reconciler serves in `fleet`, with their connections.
    fn hubs(&self, fleet: &Fleet) -> Vec<(String, Connection, BTreeSet<String>)> {
        join::hubs(fleet, self.relay.as_deref())
            .into_iter()
            .filter_map(|(hub, parents)| {
                let conn = match (&self.relay, &self.home) {
                    (Some(r), Some(home)) if *r == hub => home.clone(),
                    _ => fleet
                        .clusters
                        .iter()
                        .find(|c| c.name() == hub)?
                        .spec
                        .connection
                        .clone()
                        .filter(|c| !c.joined)?,
                };
                Some((hub, conn, parents))
            })
            .collect()
    }

    fn client(&mut self, hub: &str, conn: &Connection) -> Result<Api, JoinError> {
        if let Some((c, api)) = self.clients.get(hub) {
            if c == conn {
                return Ok(api.clone());
            }
        }
        let connected = self
            .runtime
            .block_on(connect::connect(hub, conn, &self.base, self.timeout))
            .map_err(|e| JoinError::Invalid(e.to_string()))?;
        let api = Api {
            client: connected.client,
            cluster: hub.to_string(),
        };
        self.clients
            .insert(hub.to_string(), (conn.clone(), api.clone()));
        Ok(api)
    }

    /// Adds the members of this reconciler's hubs to `fleet` (answering
    /// requests first when it reconciles). Warnings for hubs that could
    /// not be read; the events for the caller to print or log.
    pub fn gather(&mut self, fleet: &mut Fleet) -> (Diagnostics, Vec<Event>) {
        let mut diags = Diagnostics::default();
        let mut events = Vec::new();
        let mut reachable = Vec::new();
        self.unread.clear();
        self.last_hubs = self.hubs(fleet);
        for (hub, conn, parents) in self.last_hubs.clone() {
            let got = self
                .client(&hub, &conn)
                .and_then(|api| self.runtime.block_on(self_hub(self, &api, fleet, &parents)));
            match got {
                Ok((kept, ignored, evs, fp)) => {
                    self.seen.insert(hub.clone(), fp);
                    events.extend(evs);
                    for why in ignored {
                        diags.push(Diagnostic::warning(format!("hub {hub}: {why}")));
                    }
                    let via = std::sync::Arc::new(conn.clone());
                    reachable.extend(kept.into_values().filter(|k| !k.leaving).map(|k| {
                        Reachable {
                            via: (k.member.mode == join::Mode::Pull).then(|| via.clone()),
                            member: k.member,
                            hub: hub.clone(),
                            credentials: k.credentials,
                        }
                    }));
                }
                Err(e) => {
                    self.clients.remove(&hub);
                    self.unread.push(hub.clone());
                    diags.push(Diagnostic::warning(format!(
                        "the members of hub {hub} are left out of this run: {e}"
                    )));
                }
            }
        }
        diags.extend(join::add_members(fleet, &reachable));
        self.last_members = reachable;
        (diags, events)
    }

    /// The hubs the last [`Joiner::gather`] could not read: their members
    /// are missing from the fleet, not gone.
    pub fn unread(&self) -> &[String] {
        &self.unread
    }

    /// Adds the members the last [`Joiner::gather`] found to another fleet
    /// of the same run (a relay's base revisions), without asking again.
    pub fn add_last(&self, fleet: &mut Fleet) -> Diagnostics {
        join::add_members(fleet, &self.last_members)
    }

    /// Whether this reconciler has any hub (a Kubernetes cluster to keep
    /// join requests in).
    pub fn has_hubs(&self) -> bool {
        !self.last_hubs.is_empty()
    }

    /// Whether a hub changed since the last [`Joiner::gather`] (a request
    /// waits, a member came, went or got new credentials): `watch` and the
    /// agent poll this between rounds, which costs two lists per hub.
    pub fn changed(&mut self) -> bool {
        for (hub, conn, _) in self.last_hubs.clone() {
            let Ok(api) = self.client(&hub, &conn) else {
                continue;
            };
            let fp = self.runtime.block_on(async {
                let Some(pending) = hub::pending(&api).await.ok()? else {
                    return Some(0);
                };
                let pending = pending.len();
                let kept = hub::members(&api).await.ok()?.kept;
                let renew = kept.values().any(|k| self.due(k));
                Some(fingerprint(pending, &kept) ^ u64::from(renew && self.role == Role::Reconcile))
            });
            if fp.is_some_and(|fp| self.seen.get(&hub) != Some(&fp)) {
                return true;
            }
        }
        false
    }

    /// Whether a member's push credentials should be renewed now.
    fn due(&self, k: &Kept) -> bool {
        k.credentials.is_some()
            && k.expires_at
                .is_some_and(|e| e <= hub::now() + self.renew_before.as_secs())
    }
}

/// `CANOPY_JOIN_RENEW_BEFORE` (seconds), else half an hour: renew push
/// credentials that expire within it.
fn renew_before() -> Duration {
    std::env::var("CANOPY_JOIN_RENEW_BEFORE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800))
}

/// A hub's members as one run reads them, what claims to be one and is
/// not, what the run did there, and the hub's fingerprint.
type HubRead = (BTreeMap<String, Kept>, Vec<String>, Vec<Event>, u64);

/// One hub: answer, retire, renew (when reconciling), then read.
async fn self_hub(
    j: &Joiner,
    api: &Api,
    fleet: &Fleet,
    parents: &BTreeSet<String>,
) -> Result<HubRead, JoinError> {
    let hub = api.cluster.clone();
    let mut events = Vec::new();
    // One list for a hub that never had a token.
    let Some(pending) = hub::pending(api).await? else {
        return Ok((BTreeMap::new(), Vec::new(), events, 0));
    };
    let hub::Members {
        kept: mut members,
        mut ignored,
    } = hub::members(api).await?;
    let mut pending_left = pending.len();
    if j.role == Role::Reconcile {
        pending_left = 0;
        for name in members
            .iter()
            .filter(|(_, k)| k.leaving)
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
        {
            hub::remove_member(api, &name).await?;
            members.remove(&name);
            events.push(Event::Left {
                hub: hub.clone(),
                cluster: name,
            });
        }
        // Decide every request first, one after another (each decision
        // sees the ones before: two newcomers asking for one name in the
        // same round do not both get it), then write the answers at once.
        let mut policies = BTreeMap::new();
        let mut by_member: BTreeMap<String, join::Member> = members
            .iter()
            .map(|(n, k)| (n.clone(), k.member.clone()))
            .collect();
        // Every name in Git, a member `members export` wrote included: the
        // fleet holds only Git's documents here (members are added after
        // every hub is read).
        let git: BTreeSet<&str> = fleet.clusters.iter().map(|c| c.name()).collect();
        let serves = |c: &str| parents.contains(c);
        // What the hub finds out itself (push credentials, the identity
        // read through them), for every request at once.
        let found: Vec<_> = futures::stream::iter(pending.iter())
            .map(|p| hub::evidence(api, p, j.timeout))
            .buffered(8)
            .collect()
            .await;
        let mut verdicts = Vec::new();
        for (p, found) in pending.into_iter().zip(found) {
            if !policies.contains_key(&p.token) {
                let pol = hub::token_policy(api, &p.token).await?;
                policies.insert(p.token.clone(), pol);
            }
            let known = Known {
                git: &git,
                members: &by_member,
                serves: &serves,
            };
            let policy = policies.get(&p.token).and_then(Option::as_ref);
            let (evidence, push) = match found {
                Ok(f) => f,
                Err(why) => {
                    verdicts.push((p, Err(Refusal::Malformed { why }), None));
                    continue;
                }
            };
            let verdict = match &p.spec {
                Ok(spec) => join::decide(&p.token, policy, spec, &evidence, hub::now(), &known),
                Err(why) => Err(Refusal::Malformed { why: why.clone() }),
            };
            if let Ok(a) = &verdict {
                by_member.insert(a.member.name.clone(), a.member.clone());
                if let Some(pol) = policies.get_mut(&p.token).and_then(Option::as_mut) {
                    pol.uses += u32::from(!a.rejoin);
                }
            }
            verdicts.push((p, verdict, push));
        }
        let answered: Vec<Result<Event, JoinError>> = futures::stream::iter(verdicts)
            .map(|(p, verdict, push)| {
                let hub = hub.clone();
                async move {
                    let cluster = p
                        .spec
                        .as_ref()
                        .map(|s| s.cluster.clone())
                        .unwrap_or_default();
                    let refused = |reason: String| Event::Refused {
                        hub: hub.clone(),
                        request: format!("{}/{}", p.namespace, p.name),
                        cluster: cluster.clone(),
                        reason,
                    };
                    match verdict {
                        Ok(a) => {
                            hub::admit(
                                api,
                                &p,
                                &a.member,
                                a.rejoin,
                                push.as_ref(),
                                j.credential_seconds,
                            )
                            .await?;
                            Ok(Event::Admitted {
                                hub: hub.clone(),
                                cluster: cluster.clone(),
                                parent: a.member.parent.clone(),
                                rejoin: a.rejoin,
                                token: (!a.rejoin).then(|| a.member.token.clone()),
                            })
                        }
                        Err(refusal) => {
                            let reason = refusal.to_string();
                            hub::refuse(api, &p, &reason).await?;
                            Ok(refused(reason))
                        }
                    }
                }
            })
            .buffered(8)
            .collect()
            .await;
        let mut uses: BTreeMap<String, u32> = BTreeMap::new();
        for e in answered {
            let e = e?;
            if let Event::Admitted { token: Some(t), .. } = &e {
                *uses.entry(t.clone()).or_default() += 1;
            }
            events.push(e);
        }
        for (token, n) in uses {
            hub::count_uses(api, &token, n).await?;
        }
        // What was admitted is read back whole (its push credentials
        // included); leavers were taken out above.
        if events.iter().any(|e| matches!(e, Event::Admitted { .. })) {
            let again = hub::members(api).await?;
            members = again.kept;
            ignored = again.ignored;
        }
        for k in members.values_mut().filter(|k| j.due(k)) {
            match hub::renew_push(api, k, j.credential_seconds, j.timeout).await {
                Ok(fresh) => {
                    k.expires_at = hub::token_expiry(&fresh.token);
                    k.credentials = Some(fresh);
                    events.push(Event::Renewed {
                        hub: hub.clone(),
                        cluster: k.member.name.clone(),
                    });
                }
                // An unreachable member keeps running what it has; its
                // credentials are renewed when it answers again.
                Err(e) => {
                    tracing::warn!(cluster = k.member.name.as_str(), error = %e, "cannot renew the credentials that reach a joined cluster")
                }
            }
        }
    }
    let fp = fingerprint(pending_left, &members);
    Ok((members, ignored, events, fp))
}
