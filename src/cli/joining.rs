//! `canopy token`, `join`, `members` and `leave`: the command-line edge of
//! joining. The decisions are `core::join`; the objects and credentials
//! `backend::kube::join`; the reconcilers' side `ops::join`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::args::{JoinArgs, MembersCommand, OwnCluster, TextOrJson, TokenCommand};
use super::exit::{print_diags, Failure};
use crate::backend::kube::connect;
use crate::backend::kube::join::{self as hub, Api, JoinError};
use crate::backend::kube::pin;
use crate::core::join::{self, TokenPolicy};
use crate::core::model::{Connection, Fleet};
use crate::ops::run::FleetSource;

fn failure(e: JoinError) -> Failure {
    match e {
        JoinError::Refused(_) | JoinError::Pin(_) | JoinError::Invalid(_) => {
            Failure::user(format!("error: {e}"))
        }
        JoinError::Api { .. } | JoinError::Timeout { .. } => Failure::io(format!("error: {e}")),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::io(format!("error: cannot start the runtime: {e}")))
}

/// A hub's client and configuration, from its Cluster document.
fn hub_client(
    rt: &tokio::runtime::Runtime,
    src: &FleetSource,
    fleet: &Fleet,
    hub_name: &str,
) -> Result<(Api, kube::Config), Failure> {
    let conn = fleet
        .clusters
        .iter()
        .find(|c| c.name() == hub_name)
        .and_then(|c| c.spec.connection.clone())
        .filter(|c| !c.joined)
        .ok_or_else(|| {
            Failure::user(format!(
                "error: hub {hub_name} has no spec.connection: join requests are kept in a Kubernetes cluster\n  help: give {hub_name} a kubeconfig in its Cluster document"
            ))
        })?;
    client_of(rt, hub_name, &conn, &src.base, Duration::from_secs(30))
}

/// Every hub the root can reach: tree tops and relays with a connection.
fn all_hubs(fleet: &Fleet) -> Vec<String> {
    let mut out: Vec<String> = fleet
        .clusters
        .iter()
        .filter(|c| c.spec.parent.is_none() || c.spec.relay.is_some())
        .filter(|c| c.spec.connection.as_ref().is_some_and(|k| !k.joined))
        .map(|c| c.name().to_string())
        .collect();
    out.sort();
    out
}

fn open_fleet(
    source: &super::args::SourceArgs,
    name: Option<&str>,
) -> Result<(FleetSource, Fleet), Failure> {
    let src = super::commands::open(source)?;
    let loaded = src.load(name)?;
    print_diags(&loaded.warnings);
    let fleet = loaded.checked.fleet.clone();
    Ok((src, fleet))
}

/// The CA a newcomer pins: the hub kubeconfig's, else the root-most
/// certificate the hub presents.
fn ca_pin(config: &kube::Config) -> Result<String, Failure> {
    if let Some(ca) = config.root_cert.as_ref().and_then(|c| c.last()) {
        return pin::spki_sha256(ca)
            .map_err(|e| Failure::user(format!("error: the hub's CA: {e}")));
    }
    let chain = pin::presented_chain(
        config.cluster_url.to_string().trim_end_matches('/'),
        Duration::from_secs(10),
    )
    .map_err(|e| Failure::io(format!("error: {e}")))?;
    pin::spki_sha256(pin::presented_ca(&chain).expect("a chain is never empty"))
        .map_err(|e| Failure::user(format!("error: the hub's CA: {e}")))
}

fn when(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn token(cmd: TokenCommand, name: Option<&str>) -> Result<(), Failure> {
    let rt = runtime()?;
    match cmd {
        TokenCommand::Create {
            source,
            parent,
            ttl,
            labels,
            max_uses,
        } => {
            let (src, fleet) = open_fleet(&source, name)?;
            let labels = join::parse_labels(&labels, true)
                .map_err(|e| Failure::user(format!("error: --labels {e}")))?;
            let (hub_name, _) = join::hub_of(&fleet, &parent).ok_or_else(|| {
                Failure::user(format!(
                    "error: --parent {parent:?} is not a cluster of the fleet\n  help: `canopy tree` lists them"
                ))
            })?;
            let takes =
                |c: &crate::core::model::Cluster| c.spec.relay.as_ref().is_none_or(|r| r.members);
            if let Some(relay) = fleet
                .clusters
                .iter()
                .find(|c| c.name() == hub_name)
                .filter(|c| !takes(c))
            {
                return Err(Failure::user(format!(
                    "error: clusters below {parent} are reconciled by relay {}, which does not take members\n  help: set `relay: {{members: true}}` in its Cluster document ({}), apply, then create the token",
                    relay.name(),
                    relay.source.file
                )));
            }
            let (api, config) = hub_client(&rt, &src, &fleet, &hub_name)?;
            let now = hub::now();
            let policy = TokenPolicy {
                parent: parent.clone(),
                labels: labels.clone(),
                expires_at: now + ttl.as_secs().max(1),
                max_uses,
                uses: 0,
                created_at: now,
            };
            let made = rt
                .block_on(hub::create_token(&api, &policy))
                .map_err(failure)?;
            let ca = ca_pin(&config)?;
            let url = config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_string();
            let choose: Vec<String> = labels
                .iter()
                .filter(|(_, v)| *v == "*")
                .map(|(k, _)| format!("{k}=<VALUE>"))
                .collect();
            let mut out = format!(
                "token {} for parent {parent} (hub {hub_name}): expires {}, {}, labels {}\nRun on the new cluster, with its own kubeconfig (the token is shown only now):\n  canopy join {url} --token {} --ca-sha256 {ca} --name <NAME>",
                made.id,
                when(policy.expires_at),
                match max_uses {
                    Some(n) => format!("admits {n} new cluster(s)"),
                    None => "admits any number of new clusters".into(),
                },
                labels_text(&labels),
                made.token,
            );
            if !choose.is_empty() {
                out.push_str(&format!(" --labels {}", choose.join(",")));
            }
            out.push('\n');
            super::commands::stdout(&out)
        }
        TokenCommand::List { source, output } => {
            let (src, fleet) = open_fleet(&source, name)?;
            let mut rows = Vec::new();
            for h in all_hubs(&fleet) {
                let (api, _) = hub_client(&rt, &src, &fleet, &h)?;
                for (id, p) in rt.block_on(hub::list_tokens(&api)).map_err(failure)? {
                    rows.push((h.clone(), id, p));
                }
            }
            match output {
                TextOrJson::Json => super::commands::json_out(
                    &rows
                        .iter()
                        .map(|(h, id, p)| serde_json::json!({ "hub": h, "id": id, "policy": p, "expired": p.expires_at <= hub::now() }))
                        .collect::<Vec<_>>(),
                ),
                TextOrJson::Text => {
                    let mut out = String::from("ID      HUB  PARENT  USES  EXPIRES  LABELS\n");
                    for (h, id, p) in &rows {
                        out.push_str(&format!(
                            "{id}  {h}  {}  {}/{}  {}{}  {}\n",
                            p.parent,
                            p.uses,
                            p.max_uses.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                            when(p.expires_at),
                            if p.expires_at <= hub::now() { " (expired)" } else { "" },
                            labels_text(&p.labels)
                        ));
                    }
                    super::commands::stdout(&out)
                }
            }
        }
        TokenCommand::Revoke { mut source, id } => {
            let id = super::commands::second_arg(
                &mut source,
                id,
                "the token",
                "canopy token revoke fleet-example k3x9qa",
            )?;
            let (src, fleet) = open_fleet(&source, name)?;
            for h in all_hubs(&fleet) {
                let (api, _) = hub_client(&rt, &src, &fleet, &h)?;
                if rt.block_on(hub::revoke_token(&api, &id)).map_err(failure)? {
                    return super::commands::stdout(&format!("revoked token {id} (hub {h})\n"));
                }
            }
            Err(Failure::user(format!(
                "error: no token {id:?} in any hub of the fleet\n  help: `canopy token list` shows them"
            )))
        }
    }
}

fn own_api(rt: &tokio::runtime::Runtime, own: &OwnCluster) -> Result<(Api, kube::Config), Failure> {
    let conn = Connection {
        kubeconfig: own.kubeconfig.clone(),
        context: own.context.clone(),
        ..Default::default()
    };
    let here = std::env::current_dir().unwrap_or_default();
    client_of(rt, "this cluster", &conn, &here, own.timeout)
}

/// A client of the cluster `conn` reaches (named `name` in messages), and
/// its configuration (`token create` reads the server and CA from it,
/// `join` the newcomer's own).
fn client_of(
    rt: &tokio::runtime::Runtime,
    name: &str,
    conn: &Connection,
    base: &std::path::Path,
    timeout: Duration,
) -> Result<(Api, kube::Config), Failure> {
    let (config, context) = rt
        .block_on(connect::configure(name, conn, base))
        .map_err(|e| Failure::user(format!("error: {e}")))?;
    let fail = |detail: String, help: &str| crate::backend::BackendError::Connect {
        cluster: name.to_string(),
        detail,
        help: help.to_string(),
    };
    let connected = {
        // The client spawns its connection pool on the runtime.
        let _guard = rt.enter();
        connect::client(config.clone(), context, timeout, &fail)
            .map_err(|e| Failure::user(format!("error: {e}")))?
    };
    Ok((
        Api {
            client: connected.client,
            cluster: name.to_string(),
        },
        config,
    ))
}

pub fn join_cmd(a: JoinArgs) -> Result<(), Failure> {
    let rt = runtime()?;
    let labels = join::parse_labels(&a.labels, false)
        .map_err(|e| Failure::user(format!("error: --labels {e}")))?;
    let (own, config) = own_api(&rt, &a.own)?;
    let ask = hub::Ask {
        url: a.url.trim_end_matches('/').to_string(),
        token: a.token,
        ca_sha256: a.ca_sha256,
        name: a.name,
        parent: a.parent,
        labels,
        mode: match a.mode {
            super::args::JoinMode::Push => crate::core::join::Mode::Push,
            super::args::JoinMode::Pull => crate::core::join::Mode::Pull,
        },
        advertise: a.advertise_url,
        credential_seconds: a.credential_ttl.as_secs(),
        timeout: a.own.timeout,
    };
    let started = std::time::Instant::now();
    let joined = rt
        .block_on(hub::join(&own, &config, &ask))
        .map_err(failure)?;
    super::commands::stdout(&format!(
        "{} {} under {} in {} ms (member namespace {} in the hub); the parent's reconciler applies its workloads from its next round\n",
        if joined.rejoin { "joined again as" } else { "joined as" },
        joined.name,
        joined.parent,
        started.elapsed().as_millis(),
        joined.namespace
    ))
}

pub fn leave(own: OwnCluster) -> Result<(), Failure> {
    let rt = runtime()?;
    let (api, _) = own_api(&rt, &own)?;
    match rt.block_on(hub::leave(&api, own.timeout)).map_err(failure)? {
        Some(name) => super::commands::stdout(&format!(
            "{name} asked to leave: its parent's reconciler retires it on its next round; the objects it runs stay unless the parent applies with --prune-clusters\n"
        )),
        None => Err(Failure::user(
            "error: this cluster has not joined a fleet (no canopy-system/canopy-membership Secret)",
        )),
    }
}

pub fn members(mut cmd: MembersCommand, name: Option<&str>) -> Result<(), Failure> {
    let rt = runtime()?;
    let mut removing = None;
    if let MembersCommand::Remove { source, name: m } = &mut cmd {
        removing = Some(super::commands::second_arg(
            source,
            m.take(),
            "the joined cluster",
            "canopy members remove fleet-example shop-17",
        )?);
    }
    let source = match &cmd {
        MembersCommand::List { source, .. }
        | MembersCommand::Export { source, .. }
        | MembersCommand::Remove { source, .. } => source.clone(),
    };
    let (src, fleet) = open_fleet(&source, name)?;
    let mut all = Vec::new();
    for h in all_hubs(&fleet) {
        let (api, _) = hub_client(&rt, &src, &fleet, &h)?;
        let members = rt.block_on(hub::members(&api)).map_err(failure)?;
        for why in &members.ignored {
            eprintln!("warning: hub {h}: {why}");
        }
        for (_, k) in members.kept {
            all.push((h.clone(), api.clone(), k));
        }
    }
    match cmd {
        MembersCommand::List { output, .. } => match output {
            TextOrJson::Json => super::commands::json_out(
                &all.iter()
                    .map(|(h, _, k)| {
                        serde_json::json!({
                            "hub": h, "member": k.member, "leaving": k.leaving,
                            "credentialsExpireAt": k.expires_at,
                        })
                    })
                    .collect::<Vec<_>>(),
            ),
            TextOrJson::Text => {
                let mut out =
                    String::from("NAME  PARENT  HUB  MODE  LABELS  JOINED  CREDENTIALS-EXPIRE\n");
                for (h, _, k) in &all {
                    out.push_str(&format!(
                        "{}  {}  {h}  {}  {}  {}  {}{}\n",
                        k.member.name,
                        k.member.parent,
                        match k.member.mode {
                            crate::core::join::Mode::Push => "push",
                            crate::core::join::Mode::Pull => "pull",
                        },
                        labels_text(&k.member.labels),
                        when(k.member.joined_at),
                        k.expires_at.map(when).unwrap_or_else(|| "-".into()),
                        if k.leaving { "  (leaving)" } else { "" }
                    ));
                }
                super::commands::stdout(&out)
            }
        },
        MembersCommand::Export { out, .. } => {
            let dir = out.unwrap_or_else(|| match &src.input {
                crate::source::input::Input::Dir(d) => d.join("clusters").join("joined"),
                crate::source::input::Input::Git(_) => PathBuf::from("joined"),
            });
            std::fs::create_dir_all(&dir)
                .map_err(|e| Failure::io(format!("error: {}: {e}", dir.display())))?;
            let mut n = 0;
            for (_, _, k) in &all {
                let path = dir.join(format!("{}.yaml", k.member.name));
                std::fs::write(&path, join::cluster_document(&k.member))
                    .map_err(|e| Failure::io(format!("error: {}: {e}", path.display())))?;
                n += 1;
            }
            super::commands::stdout(&format!(
                "wrote {n} Cluster document(s) to {}: commit them, and Git holds these clusters\n",
                dir.display()
            ))
        }
        MembersCommand::Remove { .. } => {
            let member = removing.unwrap_or_default();
            for (h, api, k) in &all {
                if k.member.name == member {
                    rt.block_on(hub::remove_member(api, &member))
                        .map_err(failure)?;
                    return super::commands::stdout(&format!(
                        "removed {member} (hub {h}): it leaves the fleet on the next reconcile; its objects stay unless that run has --prune-clusters\n"
                    ));
                }
            }
            Err(Failure::user(format!(
                "error: no joined cluster {member:?}\n  help: `canopy members list` shows them"
            )))
        }
    }
}

/// `canopy agent joined`: rounds until a signal (or one, with `--once`).
pub fn agent_joined(
    own: OwnCluster,
    poll: Duration,
    resync: Duration,
    once: bool,
    fmt: TextOrJson,
    kube: crate::backend::kube::KubeOptions,
) -> Result<(), Failure> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let cfg = crate::agent::joined::Config {
        own: Connection {
            kubeconfig: own.kubeconfig.clone(),
            context: own.context.clone(),
            ..Default::default()
        },
        base: std::env::current_dir().unwrap_or_default(),
        kube,
        timeout: own.timeout,
        renew_before: Duration::from_secs(
            std::env::var("CANOPY_JOIN_RENEW_BEFORE")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1800),
        ),
    };
    let mut agent = crate::agent::joined::Agent::new(cfg)
        .map_err(|e| Failure::io(format!("error: cannot start the runtime: {e}")))?;
    if once {
        let a = agent
            .round(true)
            .map_err(|e| Failure::io(format!("error: {e}")))?;
        return match fmt {
            TextOrJson::Json => super::commands::json_out(&a),
            TextOrJson::Text => super::commands::stdout(&format!(
                "{}: {} object(s) at revision {}: {} created, {} updated, {} deleted\n",
                a.cluster,
                a.objects,
                if a.revision.is_empty() {
                    "-"
                } else {
                    &a.revision
                },
                a.created,
                a.updated,
                a.deleted
            )),
        };
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let mut last_full = std::time::Instant::now();
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        let force = first || last_full.elapsed() >= resync;
        first = false;
        if force {
            last_full = std::time::Instant::now();
        }
        match agent.round(force) {
            Ok(a) if a.unchanged => {}
            Ok(a) => tracing::info!(
                cluster = a.cluster.as_str(),
                revision = a.revision.as_str(),
                objects = a.objects,
                created = a.created,
                updated = a.updated,
                deleted = a.deleted,
                "applied what the parent keeps for this cluster"
            ),
            Err(e) => tracing::error!(error = %e, "round failed; this cluster keeps what it runs"),
        }
        let end = std::time::Instant::now() + poll;
        while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}
